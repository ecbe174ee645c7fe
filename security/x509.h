// X.509 building blocks of the PKI (pki.h), internal to security/: parsing and writing PEM,
// P-256 keys, certificate fields, and issuing a certificate. Every function starts from a
// clean OpenSSL error queue or leaves its error text in the Status it returns.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "security/openssl_util.h"

namespace shoal::security {

// Lowercase hex SHA-256 of `bytes`.
std::string Sha256Hex(const std::string& bytes);

// The contents of a memory BIO.
Result<std::string> BioText(BIO* bio);
// A read-only memory BIO over `pem`; InvalidArgument (naming `what`) when it is empty or larger
// than kMaxPemBytes.
Result<BioPtr> PemBio(const std::string& pem, const char* what);
// The first certificate / unencrypted private key in `pem`; InvalidArgument naming `what`.
Result<X509Ptr> ParseCert(const std::string& pem, const char* what);
Result<EvpPkeyPtr> ParseKey(const std::string& pem, const char* what);
Result<std::string> CertPem(X509* cert);
Result<std::string> KeyPem(EVP_PKEY* key);  // PKCS#8, unencrypted

Result<EvpPkeyPtr> GenerateKey();  // ECDSA P-256
bool IsP256(EVP_PKEY* key);

// SHA-256 hex of the certificate's DER encoding.
Result<std::string> Fingerprint(X509* cert);
// The serial number in lowercase hex ("" when OpenSSL cannot convert it).
std::string SerialHex(X509* cert);
// Unix seconds of an ASN.1 time (0 when it is unreadable).
int64_t ToUnix(const ASN1_TIME* t);
// The single commonName of `name`; InvalidArgument when it has none, several, or bad UTF-8.
Result<std::string> CommonName(const X509_NAME* name, const char* what);

struct CertSpec {
  std::string common_name;
  int64_t days = 0;
  bool ca = false;
  int path_len = -1;                         // a CA's pathLenConstraint; -1 = none
  const char* extended_key_usage = nullptr;  // "serverAuth" / "clientAuth"; also restricts a CA
  int64_t not_after = 0;                     // when set, the validity ends no later than this
  std::string subject_alt_names;             // OpenSSL config syntax, already validated
};

// Builds and signs a certificate for `subject_key`, valid from a little before `now` (a peer
// whose clock lags still accepts it) for spec.days. `issuer` null means self-signed (the CA).
Result<X509Ptr> IssueCert(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                          EVP_PKEY* issuer_key, int64_t now);

}  // namespace shoal::security
