// The one set of OpenSSL helpers Shoal's adapters share (security/: PKI and signing;
// protocols/: the TLS session): owning pointers for OpenSSL's objects, the error-queue text
// every error message carries, the passphrase callback that refuses to prompt, and the size
// limit on PEM text read from a file or a peer.
//
// Header-only on purpose: a deleter is instantiated only where its pointer is used, so a
// library that includes this header links only the OpenSSL library its own objects come from
// (shoal_security links libcrypto alone, protocols/ adds libssl for SslPtr and SslCtxPtr).
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <cstddef>
#include <memory>
#include <string>

namespace shoal::security {

// A unique_ptr deleter calling OpenSSL's free function `Free`.
template <auto Free>
struct OpenSslDeleter {
  template <class T>
  void operator()(T* p) const {
    Free(p);
  }
};

// BIO_free_all frees a lone BIO as BIO_free does, and a chain (a filter over a sink) whole.
using BioPtr = std::unique_ptr<BIO, OpenSslDeleter<BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpenSslDeleter<BN_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslDeleter<EVP_PKEY_free>>;
using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OpenSslDeleter<EVP_PKEY_CTX_free>>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, OpenSslDeleter<EVP_MD_CTX_free>>;
using X509Ptr = std::unique_ptr<X509, OpenSslDeleter<X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, OpenSslDeleter<X509_REQ_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, OpenSslDeleter<X509_EXTENSION_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OpenSslDeleter<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpenSslDeleter<X509_STORE_CTX_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, OpenSslDeleter<GENERAL_NAMES_free>>;
using SslPtr = std::unique_ptr<SSL, OpenSslDeleter<SSL_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, OpenSslDeleter<SSL_CTX_free>>;

// Memory OpenSSL allocated for the caller (BN_bn2hex text, ASN1_STRING_to_UTF8 output).
struct OpenSslFree {
  void operator()(void* p) const { OPENSSL_free(p); }
};
template <class T>
using OpenSslOwned = std::unique_ptr<T, OpenSslFree>;

// Largest PEM text (a key, a certificate, a CSR) parsed from a file or a peer. Shoal's are
// well under 4 KB; the cap bounds what a bad file or a hostile CSR makes OpenSSL read.
inline constexpr size_t kMaxPemBytes = 64 * 1024;

// Every error queued on this thread's OpenSSL error queue, oldest first and joined by "; ",
// for an error message; empties the queue, so that the next failure reports only its own.
inline std::string OpenSslError() {
  std::string text;
  char buf[256];
  while (unsigned long code = ERR_get_error()) {
    ERR_error_string_n(code, buf, sizeof(buf));
    if (!text.empty()) text += "; ";
    text += buf;
  }
  ERR_clear_error();
  return text.empty() ? "no OpenSSL error recorded" : text;
}

// PEM passphrase callback that refuses to prompt on the terminal: encrypted keys fail to load.
inline int NoPassphrase(char*, int, int, void*) { return 0; }

}  // namespace shoal::security
