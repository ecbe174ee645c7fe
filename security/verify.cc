// Peer-certificate checks against the federation CA (pki.h).
#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>
#include <string>

#include "security/ca_store.h"
#include "security/pki.h"
#include "security/x509.h"

namespace shoal::security {
namespace {

struct X509StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackFree>;

}  // namespace

Result<CertInfo> VerifyPeerCert(const std::string& ca_cert_pem, const std::string& cert_pem,
                                int64_t now) {
  SHOAL_ASSIGN_OR_RETURN(X509Ptr ca, ParseCert(ca_cert_pem, "CA certificate"));
  SHOAL_ASSIGN_OR_RETURN(X509Ptr cert, ParseCert(cert_pem, "peer certificate"));
  if (X509_check_ca(cert.get()) != 0) {
    return Rejected("peer certificate is a CA certificate, not a worker or coordinator one");
  }
  // Certificates after the leaf: intermediates (the enrollment CA), untrusted until they chain
  // to the root.
  SHOAL_ASSIGN_OR_RETURN(BioPtr bio, PemBio(cert_pem, "peer certificate"));
  X509StackPtr untrusted(sk_X509_new_null());
  if (!untrusted) return Internal("sk_X509_new_null failed");
  bool first = true;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr)) {
    if (first) {
      X509_free(x);
      first = false;
      continue;
    }
    if (sk_X509_push(untrusted.get(), x) <= 0) {
      X509_free(x);
      return Internal("sk_X509_push failed");
    }
  }
  ERR_clear_error();  // the end of the PEM text
  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), untrusted.get()) != 1) {
    return Internal("set up certificate verification: " + OpenSslError());
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(NowOr(now)));
  X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_X509_STRICT);
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return Rejected(std::string("peer certificate does not verify against the federation CA: ") +
                    X509_verify_cert_error_string(err));
  }

  CertInfo info;
  SHOAL_ASSIGN_OR_RETURN(info.common_name,
                         CommonName(X509_get_subject_name(cert.get()), "peer certificate"));
  info.serial = SerialHex(cert.get());
  SHOAL_ASSIGN_OR_RETURN(info.fingerprint, Fingerprint(cert.get()));
  info.not_before = ToUnix(X509_get0_notBefore(cert.get()));
  info.not_after = ToUnix(X509_get0_notAfter(cert.get()));
  const uint32_t xku = X509_get_extended_key_usage(cert.get());
  info.client_auth =
      (X509_get_extension_flags(cert.get()) & EXFLAG_XKUSAGE) && (xku & XKU_SSL_CLIENT);
  info.server_auth =
      (X509_get_extension_flags(cert.get()) & EXFLAG_XKUSAGE) && (xku & XKU_SSL_SERVER);
  // A use counts only when every CA between the leaf and the root allows it: a clientAuth-only
  // enrollment CA cannot vouch for a server certificate.
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx.get());
  for (int i = 1; chain != nullptr && i + 1 < sk_X509_num(chain); ++i) {
    X509* intermediate = sk_X509_value(chain, i);
    if (X509_check_purpose(intermediate, X509_PURPOSE_SSL_CLIENT, 1) != 1) {
      info.client_auth = false;
    }
    if (X509_check_purpose(intermediate, X509_PURPOSE_SSL_SERVER, 1) != 1) {
      info.server_auth = false;
    }
  }
  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type == GEN_DNS) {
      const ASN1_IA5STRING* s = gn->d.dNSName;
      info.sans.push_back("DNS:" +
                          std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                      static_cast<size_t>(ASN1_STRING_length(s))));
    } else if (gn->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* s = gn->d.iPAddress;
      const int len = ASN1_STRING_length(s);
      char buf[INET6_ADDRSTRLEN] = {0};
      const int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
      if (family != -1 && inet_ntop(family, ASN1_STRING_get0_data(s), buf, sizeof(buf))) {
        info.sans.push_back(std::string("IP:") + buf);
      }
    }
  }
  return info;
}

}  // namespace shoal::security
