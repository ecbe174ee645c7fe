// Certificates made with OpenSSL directly, independently of the code under test: what an
// attacker holding some private key can issue (tests of issue #20).
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <string>
#include <utility>
#include <vector>

namespace shoal::testing {

struct ForgedCert {
  std::string cert_pem;
  std::string key_pem;
};

// A leaf for `common_name` with extendedKeyUsage `eku` ("serverAuth" / "clientAuth") and, when
// not empty, subjectAltName `san`, valid for the hour around now, issued by `issuer` and signed
// with `signer` (any key: the point is to see what the verifier makes of it).
inline ForgedCert ForgeLeaf(X509* issuer, EVP_PKEY* signer, const std::string& common_name,
                            const char* eku, const char* san = nullptr) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 4242);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert, X509_get_subject_name(issuer));
  X509_set_pubkey(cert, key);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::vector<std::pair<int, const char*>> exts = {{NID_basic_constraints, "critical,CA:FALSE"},
                                                   {NID_key_usage, "critical,digitalSignature"},
                                                   {NID_ext_key_usage, eku}};
  if (san != nullptr) exts.emplace_back(NID_subject_alt_name, san);
  for (const auto& [nid, value] : exts) {
    X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_sign(cert, signer, EVP_sha256());
  ForgedCert out;
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  out.cert_pem.assign(data, static_cast<size_t>(len));
  BIO_free(bio);
  bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  len = BIO_get_mem_data(bio, &data);
  out.key_pem.assign(data, static_cast<size_t>(len));
  BIO_free(bio);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

// The first certificate / private key of a PEM text (null when there is none).
inline X509* ParsePemCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return cert;
}
inline EVP_PKEY* ParsePemKey(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return key;
}

}  // namespace shoal::testing
