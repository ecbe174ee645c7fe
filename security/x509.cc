#include "security/x509.h"

#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <memory>

#include "base/sha256.h"

namespace shoal::security {
namespace {

// Certificates start 5 minutes in the past so that a peer whose clock is a little behind still
// accepts them.
constexpr int64_t kBackdateSeconds = 300;

Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509ExtensionPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value.c_str()));
  if (!ext) {
    return Internal(std::string("build X.509 extension ") + OBJ_nid2sn(nid) + "=" + value + ": " +
                    OpenSslError());
  }
  if (X509_add_ext(cert, ext.get(), -1) != 1) {
    return Internal(std::string("add X.509 extension ") + OBJ_nid2sn(nid) + ": " + OpenSslError());
  }
  return Status::Ok();
}

}  // namespace

std::string Sha256Hex(const std::string& bytes) {
  return ToHex(Sha256::Of(bytes.data(), bytes.size()));
}

Result<std::string> BioText(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len < 0 || (len > 0 && data == nullptr)) return Internal("OpenSSL memory BIO is unreadable");
  return std::string(data, static_cast<size_t>(len));
}

Result<BioPtr> PemBio(const std::string& pem, const char* what) {
  if (pem.empty()) return InvalidArgument(std::string(what) + " is empty");
  if (pem.size() > kMaxPemBytes) {
    return InvalidArgument(std::string(what) + " is " + std::to_string(pem.size()) +
                           " bytes, more than the limit of " + std::to_string(kMaxPemBytes));
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Internal("BIO_new_mem_buf failed");
  return bio;
}

Result<X509Ptr> ParseCert(const std::string& pem, const char* what) {
  ERR_clear_error();
  SHOAL_ASSIGN_OR_RETURN(BioPtr bio, PemBio(pem, what));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!cert)
    return InvalidArgument(std::string(what) + " is not a PEM certificate: " + OpenSslError());
  return cert;
}

Result<EvpPkeyPtr> ParseKey(const std::string& pem, const char* what) {
  ERR_clear_error();
  SHOAL_ASSIGN_OR_RETURN(BioPtr bio, PemBio(pem, what));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key)
    return InvalidArgument(std::string(what) +
                           " is not an unencrypted PEM private key: " + OpenSslError());
  return key;
}

Result<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return Internal("write certificate PEM: " + OpenSslError());
  }
  return BioText(bio.get());
}

Result<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Internal("write private key PEM: " + OpenSslError());
  }
  return BioText(bio.get());
}

Result<EvpPkeyPtr> GenerateKey() {
  ERR_clear_error();
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return Internal("generate a P-256 key: " + OpenSslError());
  return key;
}

bool IsP256(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC") != 1) return false;
  char group[64] = {0};
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) !=
      1) {
    return false;
  }
  return std::string(group, len) == "prime256v1";
}

Result<std::string> Fingerprint(X509* cert) {
  int len = i2d_X509(cert, nullptr);
  if (len <= 0) return Internal("encode certificate as DER: " + OpenSslError());
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_X509(cert, &p) != len) return Internal("encode certificate as DER: " + OpenSslError());
  return Sha256Hex(der);
}

std::string SerialHex(X509* cert) {
  BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (!bn) return "";
  OpenSslOwned<char> hex(BN_bn2hex(bn.get()));
  if (!hex) return "";
  std::string s(hex.get());
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

int64_t ToUnix(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

Result<std::string> CommonName(const X509_NAME* name, const char* what) {
  int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) return InvalidArgument(std::string(what) + " has no common name (CN)");
  if (X509_NAME_get_index_by_NID(name, NID_commonName, index) >= 0) {
    return InvalidArgument(std::string(what) + " has more than one common name (CN)");
  }
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return InvalidArgument(std::string(what) + " has an undecodable common name");
  OpenSslOwned<unsigned char> owned(utf8);
  return std::string(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
}

Result<X509Ptr> IssueCert(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                          EVP_PKEY* issuer_key, int64_t now) {
  ERR_clear_error();
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return Internal("X509_new: " + OpenSslError());
  }
  // 128 random bits, never zero (RFC 5280 wants a positive serial).
  BignumPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
    return Internal("random serial: " + OpenSslError());
  }
  if (BN_is_zero(serial.get()) && BN_set_word(serial.get(), 1) != 1) {
    return Internal("random serial: " + OpenSslError());
  }
  if (BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return Internal("set serial: " + OpenSslError());
  }
  int64_t not_after = now + spec.days * 24 * 3600;
  if (spec.not_after != 0 && spec.not_after < not_after) not_after = spec.not_after;
  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(now - kBackdateSeconds)) ==
          nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(not_after)) == nullptr) {
    return Internal("set validity: " + OpenSslError());
  }
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(spec.common_name.c_str()),
                                 -1, -1, 0) != 1) {
    return Internal("set subject CN: " + OpenSslError());
  }
  X509_NAME* issuer_name = issuer != nullptr ? X509_get_subject_name(issuer) : subject;
  if (X509_set_issuer_name(cert.get(), issuer_name) != 1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return Internal("set issuer and public key: " + OpenSslError());
  }

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  if (spec.ca) {
    std::string constraints = "critical,CA:TRUE";
    if (spec.path_len >= 0) constraints += ",pathlen:" + std::to_string(spec.path_len);
    SHOAL_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, constraints));
    SHOAL_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
    // An intermediate CA's extendedKeyUsage limits what its certificates are accepted for:
    // OpenSSL checks the purpose against every CA in the chain.
    if (spec.extended_key_usage != nullptr) {
      SHOAL_RETURN_IF_ERROR(
          AddExtension(cert.get(), &ctx, NID_ext_key_usage, spec.extended_key_usage));
    }
    SHOAL_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
    if (issuer != nullptr) {
      SHOAL_RETURN_IF_ERROR(
          AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
    }
  } else {
    SHOAL_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
    SHOAL_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature"));
    SHOAL_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_ext_key_usage, spec.extended_key_usage));
    if (!spec.subject_alt_names.empty()) {
      SHOAL_RETURN_IF_ERROR(
          AddExtension(cert.get(), &ctx, NID_subject_alt_name, spec.subject_alt_names));
    }
    SHOAL_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
    SHOAL_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) {
    return Internal("sign certificate: " + OpenSslError());
  }
  return cert;
}

}  // namespace shoal::security
