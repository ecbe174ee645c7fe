#include "security/pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <utility>

#include "base/file_util.h"
#include "security/openssl_util.h"
#include "base/sha256.h"

namespace shoal::security {
namespace {

using security::NoPassphrase;
using security::OpenSslError;

using nlohmann::json;

#define SHOAL_PKI_DELETER(Type, free_fn)           \
  struct Type##Deleter {                           \
    void operator()(Type* p) const { free_fn(p); } \
  };                                               \
  using Type##Ptr = std::unique_ptr<Type, Type##Deleter>

SHOAL_PKI_DELETER(EVP_PKEY, EVP_PKEY_free);
SHOAL_PKI_DELETER(X509, X509_free);
SHOAL_PKI_DELETER(X509_REQ, X509_REQ_free);
SHOAL_PKI_DELETER(X509_EXTENSION, X509_EXTENSION_free);
SHOAL_PKI_DELETER(X509_STORE, X509_STORE_free);
SHOAL_PKI_DELETER(X509_STORE_CTX, X509_STORE_CTX_free);
SHOAL_PKI_DELETER(BIO, BIO_free);
SHOAL_PKI_DELETER(BIGNUM, BN_free);
SHOAL_PKI_DELETER(GENERAL_NAMES, GENERAL_NAMES_free);
#undef SHOAL_PKI_DELETER

struct OpenSslStringDeleter {
  void operator()(char* p) const { OPENSSL_free(p); }
};
struct Utf8Deleter {
  void operator()(unsigned char* p) const { OPENSSL_free(p); }
};

constexpr size_t kMaxPemBytes = 64 * 1024;
constexpr size_t kMaxJsonBytes = 64ull << 20;
constexpr size_t kMaxTokenChars = 1024;
constexpr size_t kMaxAddressChars = 255;
constexpr size_t kTokenIdBytes = 8;
constexpr size_t kTokenSecretBytes = 16;
constexpr int64_t kMaxTokenTtlSeconds = 30 * 24 * 3600;
// Certificates start 5 minutes in the past so that a peer whose clock is a little behind still
// accepts them.
constexpr int64_t kBackdateSeconds = 300;
constexpr const char* kTokenPrefix = "shoal1";

// ---- small helpers ----------------------------------------------------------------------------



int64_t NowOr(int64_t now) { return now != 0 ? now : static_cast<int64_t>(std::time(nullptr)); }

std::string LowerHex(const unsigned char* data, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 0xf]);
  }
  return out;
}

bool IsLowerHex(const std::string& s, size_t length) {
  if (s.size() != length) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// `hex` must already have passed IsLowerHex.
std::string HexToBytes(const std::string& hex) {
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>(HexValue(hex[2 * i]) * 16 + HexValue(hex[2 * i + 1]));
  }
  return out;
}

std::string Sha256Hex(const std::string& bytes) {
  return ToHex(Sha256::Of(bytes.data(), bytes.size()));
}

Result<std::string> RandomHex(size_t bytes) {
  std::string buf(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(buf.data()), static_cast<int>(bytes)) != 1) {
    return Internal("RAND_bytes failed: " + OpenSslError());
  }
  return LowerHex(reinterpret_cast<const unsigned char*>(buf.data()), buf.size());
}

constexpr char kBase64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string Base64UrlEncode(const std::string& in) {
  std::string out;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out.push_back(kBase64Url[(v >> 18) & 63]);
    out.push_back(kBase64Url[(v >> 12) & 63]);
    out.push_back(kBase64Url[(v >> 6) & 63]);
    out.push_back(kBase64Url[v & 63]);
  }
  size_t rest = in.size() - i;
  if (rest == 1) {
    uint32_t v = uint8_t(in[i]) << 16;
    out.push_back(kBase64Url[(v >> 18) & 63]);
    out.push_back(kBase64Url[(v >> 12) & 63]);
  } else if (rest == 2) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out.push_back(kBase64Url[(v >> 18) & 63]);
    out.push_back(kBase64Url[(v >> 12) & 63]);
    out.push_back(kBase64Url[(v >> 6) & 63]);
  }
  return out;
}

// Strict unpadded base64url: rejects other characters, a length of 1 mod 4 and non-zero
// trailing bits, so every encoding is canonical.
Result<std::string> Base64UrlDecode(const std::string& in) {
  if (in.size() % 4 == 1) return InvalidArgument("base64url text has an impossible length");
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const char* p = std::strchr(kBase64Url, c);
    if (c == '\0' || p == nullptr) {
      return InvalidArgument("base64url text contains a character outside [A-Za-z0-9_-]");
    }
    acc = (acc << 6) | static_cast<uint32_t>(p - kBase64Url);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return InvalidArgument("base64url text has trailing bits");
  return out;
}

Status Errno(const std::string& what, const std::string& path) { return ErrnoStatus(what, path); }

// A private key file: created 0600 from the first byte and never overwriting an existing key.
Status WriteKeyFile(const std::string& path, const std::string& pem) {
  return CreateFileAtomic(path, pem, 0600);
}

// Creates `dir` mode 0700 when it is missing (it will hold private keys).
Status MakePrivateDir(const std::string& dir) {
  if (PathExists(dir)) return Status::Ok();
  SHOAL_RETURN_IF_ERROR(MakeDirs(dir));
  if (::chmod(dir.c_str(), 0700) != 0) return Errno("chmod 0700", dir);
  return Status::Ok();
}

// An exclusive flock on <ca_dir>/.lock for read-modify-write of the CA's JSON files.
class CaLock {
 public:
  static Result<std::unique_ptr<CaLock>> Acquire(const std::string& ca_dir) {
    const std::string path = ca_dir + "/.lock";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return Errno("open lock file", path);
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      Status st = Errno("flock", path);
      ::close(fd);
      return st;
    }
    return std::unique_ptr<CaLock>(new CaLock(fd));
  }
  ~CaLock() { ::close(fd_); }  // closing releases the flock
  CaLock(const CaLock&) = delete;
  CaLock& operator=(const CaLock&) = delete;

 private:
  explicit CaLock(int fd) : fd_(fd) {}
  int fd_;
};

// ---- JSON files -------------------------------------------------------------------------------

std::string CaJsonPath(const std::string& d) { return d + "/ca.json"; }
std::string IssuedPath(const std::string& d) { return d + "/issued.json"; }
std::string TokensPath(const std::string& d) { return d + "/tokens.json"; }
std::string RevokedPath(const std::string& d) { return d + "/revoked.json"; }

// Reads a JSON object; when the file is missing, returns `missing` (or NotFound when null).
Result<json> LoadJson(const std::string& path, const json& missing) {
  auto text = ReadFile(path, kMaxJsonBytes);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound && !missing.is_null()) return missing;
    return text.status();
  }
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Corrupt(path + ": not a JSON object");
  return j;
}

Status SaveJson(const std::string& path, const json& j) {
  return WriteFileAtomic(path, j.dump(2) + "\n");
}

// Returns j[key] when it is an array (an absent key counts as an empty array).
Result<json> ArrayField(const json& j, const char* key, const std::string& path) {
  if (!j.contains(key)) return json::array();
  if (!j[key].is_array()) return Corrupt(path + ": \"" + key + "\" is not an array");
  return j[key];
}

// Whether `t` is a token record with this id (tolerates records of any shape).
bool HasId(const json& t, const std::string& id) {
  if (!t.is_object()) return false;
  auto it = t.find("id");
  return it != t.end() && it->is_string() && it->get_ref<const std::string&>() == id;
}

// ---- OpenSSL objects ---------------------------------------------------------------------------

Result<std::string> BioText(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len < 0 || (len > 0 && data == nullptr)) return Internal("OpenSSL memory BIO is unreadable");
  return std::string(data, static_cast<size_t>(len));
}

Result<BIOPtr> PemBio(const std::string& pem, const char* what) {
  if (pem.empty()) return InvalidArgument(std::string(what) + " is empty");
  if (pem.size() > kMaxPemBytes) {
    return InvalidArgument(std::string(what) + " is " + std::to_string(pem.size()) +
                           " bytes, more than the limit of " + std::to_string(kMaxPemBytes));
  }
  BIOPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Internal("BIO_new_mem_buf failed");
  return bio;
}

Result<X509Ptr> ParseCert(const std::string& pem, const char* what) {
  ERR_clear_error();
  SHOAL_ASSIGN_OR_RETURN(BIOPtr bio, PemBio(pem, what));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!cert)
    return InvalidArgument(std::string(what) + " is not a PEM certificate: " + OpenSslError());
  return cert;
}

Result<EVP_PKEYPtr> ParseKey(const std::string& pem, const char* what) {
  ERR_clear_error();
  SHOAL_ASSIGN_OR_RETURN(BIOPtr bio, PemBio(pem, what));
  EVP_PKEYPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key)
    return InvalidArgument(std::string(what) +
                           " is not an unencrypted PEM private key: " + OpenSslError());
  return key;
}

Result<std::string> CertPem(X509* cert) {
  BIOPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return Internal("write certificate PEM: " + OpenSslError());
  }
  return BioText(bio.get());
}

Result<std::string> KeyPem(EVP_PKEY* key) {
  BIOPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Internal("write private key PEM: " + OpenSslError());
  }
  return BioText(bio.get());
}

Result<EVP_PKEYPtr> GenerateKey() {
  ERR_clear_error();
  EVP_PKEYPtr key(EVP_EC_gen("P-256"));
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
  BIGNUMPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (!bn) return "";
  std::unique_ptr<char, OpenSslStringDeleter> hex(BN_bn2hex(bn.get()));
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

// The single commonName of `name`; InvalidArgument when it has none, several, or bad UTF-8.
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
  std::unique_ptr<unsigned char, Utf8Deleter> owned(utf8);
  return std::string(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
}

struct CertSpec {
  std::string common_name;
  int64_t days = 0;
  bool ca = false;
  const char* extended_key_usage = nullptr;  // "serverAuth" / "clientAuth" for leaves
  std::string subject_alt_names;             // OpenSSL config syntax, already validated
};

Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509_EXTENSIONPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value.c_str()));
  if (!ext) {
    return Internal(std::string("build X.509 extension ") + OBJ_nid2sn(nid) + "=" + value + ": " +
                    OpenSslError());
  }
  if (X509_add_ext(cert, ext.get(), -1) != 1) {
    return Internal(std::string("add X.509 extension ") + OBJ_nid2sn(nid) + ": " + OpenSslError());
  }
  return Status::Ok();
}

// Builds and signs a certificate for `subject_key`. `issuer` null means self-signed (the CA).
Result<X509Ptr> IssueCert(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                          EVP_PKEY* issuer_key, int64_t now) {
  ERR_clear_error();
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return Internal("X509_new: " + OpenSslError());
  }
  // 128 random bits, never zero (RFC 5280 wants a positive serial).
  BIGNUMPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
    return Internal("random serial: " + OpenSslError());
  }
  if (BN_is_zero(serial.get()) && BN_set_word(serial.get(), 1) != 1) {
    return Internal("random serial: " + OpenSslError());
  }
  if (BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return Internal("set serial: " + OpenSslError());
  }
  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(now - kBackdateSeconds)) ==
          nullptr ||
      ASN1_TIME_adj(X509_getm_notAfter(cert.get()), static_cast<time_t>(now),
                    static_cast<int>(spec.days), 0) == nullptr) {
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
    SHOAL_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE"));
    SHOAL_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
    SHOAL_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
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

// Checks "DNS:name" / "IP:address" entries and joins them in OpenSSL's config syntax.
Result<std::string> SanConfig(const std::vector<std::string>& sans) {
  if (sans.empty()) return InvalidArgument("the coordinator certificate needs at least one SAN");
  std::string out;
  for (const auto& san : sans) {
    if (san.rfind("DNS:", 0) == 0) {
      std::string host = san.substr(4);
      bool ok = !host.empty() && host.size() <= 253 &&
                std::all_of(host.begin(), host.end(), [](unsigned char c) {
                  return std::isalnum(c) || c == '.' || c == '-' || c == '*';
                });
      if (!ok) {
        return InvalidArgument("SAN \"" + san + "\": DNS names are 1-253 of [A-Za-z0-9.-*]");
      }
    } else if (san.rfind("IP:", 0) == 0) {
      unsigned char buf[16];
      std::string ip = san.substr(3);
      if (inet_pton(AF_INET, ip.c_str(), buf) != 1 && inet_pton(AF_INET6, ip.c_str(), buf) != 1) {
        return InvalidArgument("SAN \"" + san + "\": not an IPv4 or IPv6 address");
      }
    } else {
      return InvalidArgument("SAN \"" + san + "\": expected DNS:name or IP:address");
    }
    out += (out.empty() ? "" : ",") + san;
  }
  return out;
}

// ---- the CA on disk ----------------------------------------------------------------------------

struct Ca {
  X509Ptr cert;
  EVP_PKEYPtr key;
  std::string cert_pem;
  std::string fingerprint;
  std::string coordinator_address;
};

Status RequireCa(const std::string& ca_dir) {
  if (ca_dir.empty()) return InvalidArgument("no CA directory given");
  if (!PathExists(CaCertPath(ca_dir)) || !PathExists(CaKeyPath(ca_dir))) {
    return NotFound(ca_dir +
                    " holds no Shoal CA (no ca.crt/ca.key; create one with "
                    "`shoalctl ca init`)");
  }
  return Status::Ok();
}

Result<Ca> LoadCa(const std::string& ca_dir) {
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  Ca ca;
  SHOAL_ASSIGN_OR_RETURN(ca.cert_pem, ReadFile(CaCertPath(ca_dir), kMaxPemBytes));
  SHOAL_ASSIGN_OR_RETURN(ca.cert, ParseCert(ca.cert_pem, CaCertPath(ca_dir).c_str()));
  SHOAL_ASSIGN_OR_RETURN(std::string key_pem, ReadFile(CaKeyPath(ca_dir), kMaxPemBytes));
  auto key = ParseKey(key_pem, CaKeyPath(ca_dir).c_str());
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  if (!key.ok()) return key.status();
  ca.key = std::move(key).value();
  if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1) {
    ERR_clear_error();
    return Corrupt(CaKeyPath(ca_dir) + " does not match " + CaCertPath(ca_dir));
  }
  SHOAL_ASSIGN_OR_RETURN(ca.fingerprint, Fingerprint(ca.cert.get()));
  SHOAL_ASSIGN_OR_RETURN(json info, LoadJson(CaJsonPath(ca_dir), json()));
  auto address = info.find("coordinator_address");
  if (address == info.end() || !address->is_string()) {
    return Corrupt(CaJsonPath(ca_dir) + ": \"coordinator_address\" is missing or not a string");
  }
  ca.coordinator_address = address->get<std::string>();
  return ca;
}

struct IssuedRecord {
  std::string name;
  std::string serial;
  std::string fingerprint;
  int64_t issued_at = 0;
  int64_t not_after = 0;
  std::string how;
};

Result<std::vector<IssuedRecord>> ReadIssued(const std::string& ca_dir) {
  const std::string path = IssuedPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json certs, ArrayField(j, "certificates", path));
  std::vector<IssuedRecord> out;
  try {
    for (const auto& c : certs) {
      IssuedRecord r;
      r.name = c.at("name").get<std::string>();
      r.serial = c.at("serial").get<std::string>();
      r.fingerprint = c.at("fingerprint").get<std::string>();
      r.issued_at = c.at("issued_at").get<int64_t>();
      r.not_after = c.at("not_after").get<int64_t>();
      r.how = c.at("how").get<std::string>();
      out.push_back(std::move(r));
    }
  } catch (const json::exception& e) {
    return Corrupt(path + ": bad certificate record: " + e.what());
  }
  return out;
}

// Appends a record of `cert` to issued.json. The caller holds the CA lock.
Status RecordIssued(const std::string& ca_dir, X509* cert, const std::string& name,
                    const std::string& how, int64_t now) {
  const std::string path = IssuedPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json certs, ArrayField(j, "certificates", path));
  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, Fingerprint(cert));
  const int64_t not_after = ToUnix(X509_get0_notAfter(cert));
  certs.push_back({{"name", name},
                   {"serial", SerialHex(cert)},
                   {"fingerprint", fingerprint},
                   {"issued_at", now},
                   {"not_after", not_after},
                   {"not_after_utc", UtcText(not_after)},
                   {"how", how}});
  j["certificates"] = std::move(certs);
  return SaveJson(path, j);
}

struct RevokedEntry {
  std::string name;
  std::set<std::string> serials;
};

Result<std::vector<RevokedEntry>> ReadRevoked(const std::string& ca_dir) {
  const std::string path = RevokedPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json entries, ArrayField(j, "revoked", path));
  std::vector<RevokedEntry> out;
  try {
    for (const auto& e : entries) {
      RevokedEntry r;
      r.name = e.at("name").get<std::string>();
      for (const auto& s : e.at("serials")) r.serials.insert(s.get<std::string>());
      out.push_back(std::move(r));
    }
  } catch (const json::exception& e) {
    return Corrupt(path + ": bad revocation record: " + e.what());
  }
  return out;
}

Status CheckNotRevoked(const std::string& ca_dir, const std::string& name) {
  SHOAL_ASSIGN_OR_RETURN(auto revoked, ReadRevoked(ca_dir));
  for (const auto& r : revoked) {
    if (r.name == name) {
      return Rejected("worker \"" + name +
                      "\" is revoked; a revoked name cannot be enrolled again");
    }
  }
  return Status::Ok();
}

Result<std::string> AddressOrDefault(const Ca& ca, const std::string& address) {
  const std::string& a = address.empty() ? ca.coordinator_address : address;
  SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(a));
  return a;
}

}  // namespace

std::string UtcText(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---- public API
// ----------------------------------------------------------------------------------

std::string CaKeyPath(const std::string& d) { return d + "/ca.key"; }
std::string CaCertPath(const std::string& d) { return d + "/ca.crt"; }
std::string CoordinatorKeyPath(const std::string& d) { return d + "/coordinator.key"; }
std::string CoordinatorCertPath(const std::string& d) { return d + "/coordinator.crt"; }
std::string BundleKeyPath(const std::string& d) { return d + "/worker.key"; }
std::string BundleCertPath(const std::string& d) { return d + "/worker.crt"; }
std::string BundleCaPath(const std::string& d) { return d + "/ca.crt"; }

Status ValidateWorkerName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && name != "." && name != ".." &&
            std::all_of(name.begin(), name.end(), [](unsigned char c) {
              return std::isalnum(c) || c == '.' || c == '_' || c == '-';
            });
  if (!ok) {
    return InvalidArgument("bad worker name \"" + name +
                           "\": use 1-64 characters of [A-Za-z0-9._-] (not . or ..)");
  }
  return Status::Ok();
}

Status ValidateCoordinatorAddress(const std::string& address) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument("bad coordinator address \"" + address + "\": " + why +
                           " (expected tcp://HOST:PORT)");
  };
  if (address.size() > kMaxAddressChars) return bad("longer than 255 characters");
  if (address.rfind("tcp://", 0) != 0) return bad("it does not start with tcp://");
  const std::string rest = address.substr(6);
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos) return bad("no port");
  const std::string host = rest.substr(0, colon);
  const std::string port = rest.substr(colon + 1);
  if (host.empty()) return bad("empty host");
  const bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
  const std::string inner = bracketed ? host.substr(1, host.size() - 2) : host;
  for (unsigned char c : inner) {
    bool ok = std::isalnum(c) || c == '.' || c == '-' || (bracketed && c == ':');
    if (!ok) return bad("the host has a character outside [A-Za-z0-9.-]");
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return bad("the port is not a number");
  }
  const int p = std::stoi(port);
  if (p < 1 || p > 65535) return bad("the port is not in 1-65535");
  return Status::Ok();
}

Status InitCa(const std::string& dir, const CaOptions& options) {
  SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(options.coordinator_address));
  SHOAL_ASSIGN_OR_RETURN(std::string sans, SanConfig(options.coordinator_sans));
  if (dir.empty()) return InvalidArgument("no CA directory given");
  for (const std::string& path : {CaKeyPath(dir), CaCertPath(dir), CaJsonPath(dir)}) {
    if (PathExists(path)) {
      return Rejected(dir + " already holds a CA (" + path + " exists); refusing to overwrite it");
    }
  }
  const int64_t now = NowOr(options.now);
  SHOAL_RETURN_IF_ERROR(MakePrivateDir(dir));

  SHOAL_ASSIGN_OR_RETURN(EVP_PKEYPtr ca_key, GenerateKey());
  CertSpec ca_spec;
  ca_spec.common_name = kCaCommonName;
  ca_spec.days = kCaValidityDays;
  ca_spec.ca = true;
  SHOAL_ASSIGN_OR_RETURN(X509Ptr ca_cert,
                         IssueCert(ca_spec, ca_key.get(), nullptr, ca_key.get(), now));

  SHOAL_ASSIGN_OR_RETURN(EVP_PKEYPtr coord_key, GenerateKey());
  CertSpec coord_spec;
  coord_spec.common_name = kCoordinatorCommonName;
  coord_spec.days = kCoordinatorValidityDays;
  coord_spec.extended_key_usage = "serverAuth";
  coord_spec.subject_alt_names = sans;
  SHOAL_ASSIGN_OR_RETURN(X509Ptr coord_cert,
                         IssueCert(coord_spec, coord_key.get(), ca_cert.get(), ca_key.get(), now));

  SHOAL_ASSIGN_OR_RETURN(std::string ca_key_pem, KeyPem(ca_key.get()));
  Status st = WriteKeyFile(CaKeyPath(dir), ca_key_pem);
  OPENSSL_cleanse(ca_key_pem.data(), ca_key_pem.size());
  SHOAL_RETURN_IF_ERROR(st);
  SHOAL_ASSIGN_OR_RETURN(std::string ca_pem, CertPem(ca_cert.get()));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(CaCertPath(dir), ca_pem));

  SHOAL_ASSIGN_OR_RETURN(std::string coord_key_pem, KeyPem(coord_key.get()));
  st = WriteKeyFile(CoordinatorKeyPath(dir), coord_key_pem);
  OPENSSL_cleanse(coord_key_pem.data(), coord_key_pem.size());
  SHOAL_RETURN_IF_ERROR(st);
  SHOAL_ASSIGN_OR_RETURN(std::string coord_pem, CertPem(coord_cert.get()));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(CoordinatorCertPath(dir), coord_pem));

  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, Fingerprint(ca_cert.get()));
  json info = {{"format", 1},
               {"ca_fingerprint", fingerprint},
               {"created_at", UtcText(now)},
               {"coordinator_address", options.coordinator_address},
               {"coordinator_sans", options.coordinator_sans}};
  return SaveJson(CaJsonPath(dir), info);
}

Result<std::string> CaFingerprint(const std::string& ca_cert_pem) {
  SHOAL_ASSIGN_OR_RETURN(X509Ptr cert, ParseCert(ca_cert_pem, "CA certificate"));
  return Fingerprint(cert.get());
}

Status CheckCertMatchesFingerprint(const std::string& ca_cert_pem,
                                   const std::string& expected_hex) {
  std::string expected = expected_hex;
  std::transform(expected.begin(), expected.end(), expected.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (!IsLowerHex(expected, 64)) {
    return InvalidArgument("expected CA fingerprint \"" + expected_hex +
                           "\" is not 64 hex characters");
  }
  SHOAL_ASSIGN_OR_RETURN(std::string actual, CaFingerprint(ca_cert_pem));
  if (CRYPTO_memcmp(actual.data(), expected.data(), expected.size()) != 0) {
    return Corrupt("CA certificate fingerprint " + actual + " does not match the expected " +
                   expected);
  }
  return Status::Ok();
}

Status Enroll(const std::string& ca_dir, const std::string& name, const std::string& out_dir,
              const std::string& coordinator_address) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  if (!coordinator_address.empty()) {
    SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(coordinator_address));
  }
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  if (out_dir.empty()) return InvalidArgument("no bundle directory given");
  if (PathExists(BundleKeyPath(out_dir))) {
    return Rejected(out_dir + " already holds an enrollment bundle (" + BundleKeyPath(out_dir) +
                    " exists); refusing to overwrite it");
  }
  SHOAL_ASSIGN_OR_RETURN(auto lock, CaLock::Acquire(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(Ca ca, LoadCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(std::string address, AddressOrDefault(ca, coordinator_address));
  SHOAL_RETURN_IF_ERROR(CheckNotRevoked(ca_dir, name));

  const int64_t now = NowOr(0);
  SHOAL_ASSIGN_OR_RETURN(EVP_PKEYPtr key, GenerateKey());
  CertSpec spec;
  spec.common_name = name;
  spec.days = kWorkerValidityDays;
  spec.extended_key_usage = "clientAuth";
  SHOAL_ASSIGN_OR_RETURN(X509Ptr cert,
                         IssueCert(spec, key.get(), ca.cert.get(), ca.key.get(), now));
  SHOAL_ASSIGN_OR_RETURN(std::string cert_pem, CertPem(cert.get()));
  SHOAL_ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));

  // Record first: a certificate that was issued but never delivered is harmless, one that was
  // delivered but not recorded could not be listed or revoked by serial.
  SHOAL_RETURN_IF_ERROR(RecordIssued(ca_dir, cert.get(), name, "bundle", now));
  Status st = WriteBundle(out_dir, name, key_pem, cert_pem, ca.cert_pem, address);
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  return st;
}

Status WriteBundle(const std::string& out_dir, const std::string& name, const std::string& key_pem,
                   const std::string& cert_pem, const std::string& ca_pem,
                   const std::string& coordinator_address) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(coordinator_address));
  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, CaFingerprint(ca_pem));
  if (PathExists(BundleKeyPath(out_dir))) {
    return Rejected(out_dir + " already holds an enrollment bundle (" + BundleKeyPath(out_dir) +
                    " exists); refusing to overwrite it");
  }
  SHOAL_RETURN_IF_ERROR(MakePrivateDir(out_dir));
  SHOAL_RETURN_IF_ERROR(WriteKeyFile(BundleKeyPath(out_dir), key_pem));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(BundleCertPath(out_dir), cert_pem));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(BundleCaPath(out_dir), ca_pem));
  json bundle = {{"name", name}, {"coordinator", coordinator_address}, {"ca_fingerprint", fingerprint}};
  return SaveJson(out_dir + "/bundle.json", bundle);
}

Result<Bundle> LoadBundle(const std::string& dir) {
  const std::string meta_path = dir + "/bundle.json";
  if (!PathExists(meta_path)) {
    return NotFound(dir + " is not an enrollment bundle (no bundle.json; make one with "
                          "`shoalctl enroll NAME --ca CA_DIR --out " + dir + "`)");
  }
  SHOAL_ASSIGN_OR_RETURN(json meta, LoadJson(meta_path, json::object()));
  Bundle b;
  if (!meta.is_object() || !meta.contains("name") || !meta["name"].is_string() ||
      !meta.contains("coordinator") || !meta["coordinator"].is_string()) {
    return Corrupt(meta_path + ": expected {name, coordinator, ca_fingerprint}");
  }
  b.name = meta["name"].get<std::string>();
  b.coordinator_address = meta["coordinator"].get<std::string>();
  SHOAL_ASSIGN_OR_RETURN(b.key_pem, ReadFile(BundleKeyPath(dir), 1 << 20));
  SHOAL_ASSIGN_OR_RETURN(b.cert_pem, ReadFile(BundleCertPath(dir), 1 << 20));
  SHOAL_ASSIGN_OR_RETURN(b.ca_pem, ReadFile(BundleCaPath(dir), 1 << 20));
  SHOAL_ASSIGN_OR_RETURN(b.ca_fingerprint, CaFingerprint(b.ca_pem));
  if (meta.contains("ca_fingerprint") && meta["ca_fingerprint"].is_string() &&
      meta["ca_fingerprint"].get<std::string>() != b.ca_fingerprint) {
    return Corrupt(BundleCaPath(dir) + " is not the CA recorded in " + meta_path);
  }
  return b;
}

Result<std::string> CreateJoinToken(const std::string& ca_dir, const std::string& name,
                                    int64_t ttl_seconds, const std::string& coordinator_address,
                                    int64_t now) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  if (ttl_seconds < 1 || ttl_seconds > kMaxTokenTtlSeconds) {
    return InvalidArgument("join token TTL of " + std::to_string(ttl_seconds) +
                           " s is outside 1 s to 30 days");
  }
  if (!coordinator_address.empty()) {
    SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(coordinator_address));
  }
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto lock, CaLock::Acquire(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(Ca ca, LoadCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(std::string address, AddressOrDefault(ca, coordinator_address));
  SHOAL_RETURN_IF_ERROR(CheckNotRevoked(ca_dir, name));

  const std::string path = TokensPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json tokens, ArrayField(j, "tokens", path));
  std::string id;
  for (bool unique = false; !unique;) {
    SHOAL_ASSIGN_OR_RETURN(id, RandomHex(kTokenIdBytes));
    unique =
        std::none_of(tokens.begin(), tokens.end(), [&](const json& t) { return HasId(t, id); });
  }
  SHOAL_ASSIGN_OR_RETURN(std::string secret, RandomHex(kTokenSecretBytes));
  now = NowOr(now);
  tokens.push_back({{"id", id},
                    {"secret_sha256", Sha256Hex(HexToBytes(secret))},
                    {"name", name},
                    {"created_at", now},
                    {"expires_at", now + ttl_seconds},
                    {"expires_at_utc", UtcText(now + ttl_seconds)},
                    {"used", false}});
  j["tokens"] = std::move(tokens);
  SHOAL_RETURN_IF_ERROR(SaveJson(path, j));
  return std::string(kTokenPrefix) + "." + id + "." + secret + "." + ca.fingerprint + "." +
         Base64UrlEncode(address);
}

Result<ParsedToken> ParseJoinToken(const std::string& token) {
  if (token.size() > kMaxTokenChars) {
    return InvalidArgument("join token is " + std::to_string(token.size()) +
                           " characters, more than the limit of " + std::to_string(kMaxTokenChars));
  }
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = token.find('.', start);
    parts.push_back(
        token.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (parts.size() != 5) {
    return InvalidArgument("join token has " + std::to_string(parts.size()) +
                           " dot-separated parts, expected 5 "
                           "(shoal1.ID.SECRET.CA_SHA256.COORDINATOR)");
  }
  if (parts[0] != kTokenPrefix) {
    return InvalidArgument("join token does not start with \"" + std::string(kTokenPrefix) + ".\"");
  }
  ParsedToken out;
  out.id = parts[1];
  out.secret = parts[2];
  out.ca_fingerprint = parts[3];
  if (!IsLowerHex(out.id, 2 * kTokenIdBytes)) {
    return InvalidArgument("join token id is not 16 lowercase hex characters");
  }
  if (!IsLowerHex(out.secret, 2 * kTokenSecretBytes)) {
    return InvalidArgument("join token secret is not 32 lowercase hex characters");
  }
  if (!IsLowerHex(out.ca_fingerprint, 64)) {
    return InvalidArgument("join token CA fingerprint is not 64 lowercase hex characters");
  }
  if (parts[4].empty()) return InvalidArgument("join token has no coordinator address");
  auto address = Base64UrlDecode(parts[4]);
  if (!address.ok()) {
    return InvalidArgument("join token coordinator address: " + address.status().message());
  }
  SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(*address).Annotate("join token"));
  out.coordinator_address = std::move(address).value();
  return out;
}

Result<std::string> RedeemJoinToken(const std::string& ca_dir, const std::string& token_id,
                                    const std::string& secret, const std::string& csr_pem,
                                    int64_t now) {
  if (!IsLowerHex(token_id, 2 * kTokenIdBytes)) {
    return InvalidArgument("join token id is not 16 lowercase hex characters");
  }
  if (!IsLowerHex(secret, 2 * kTokenSecretBytes)) {
    return InvalidArgument("join token secret is not 32 lowercase hex characters");
  }
  now = NowOr(now);
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto lock, CaLock::Acquire(ca_dir));

  const std::string path = TokensPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json tokens, ArrayField(j, "tokens", path));
  json* token = nullptr;
  for (auto& t : tokens) {
    if (HasId(t, token_id)) token = &t;
  }
  if (token == nullptr) return NotFound("unknown join token " + token_id);
  std::string name, stored_hash;
  bool used = false;
  int64_t expires_at = 0;
  try {
    name = token->at("name").get<std::string>();
    stored_hash = token->at("secret_sha256").get<std::string>();
    used = token->at("used").get<bool>();
    expires_at = token->at("expires_at").get<int64_t>();
  } catch (const json::exception& e) {
    return Corrupt(path + ": bad record for join token " + token_id + ": " + e.what());
  }
  if (!IsLowerHex(stored_hash, 64)) {
    return Corrupt(path + ": join token " + token_id + " has a malformed secret hash");
  }
  // The secret is checked before the token's state, so that only its holder learns whether
  // the token was used or has expired.
  const Digest actual = Sha256::Of(HexToBytes(secret).data(), kTokenSecretBytes);
  const std::string expected = HexToBytes(stored_hash);
  if (CRYPTO_memcmp(actual.data(), expected.data(), actual.size()) != 0) {
    return Rejected("wrong secret for join token " + token_id);
  }
  if (used) return Rejected("join token " + token_id + " was already used");
  if (now >= expires_at) {
    return Rejected("join token " + token_id + " expired at " + UtcText(expires_at));
  }

  // The CSR: well formed, self-signature valid, a P-256 key, CN = the token's name.
  ERR_clear_error();
  SHOAL_ASSIGN_OR_RETURN(BIOPtr bio, PemBio(csr_pem, "CSR"));
  X509_REQPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!req) return InvalidArgument("bad CSR: not a PEM certificate request: " + OpenSslError());
  EVP_PKEY* csr_key = X509_REQ_get0_pubkey(req.get());
  if (csr_key == nullptr)
    return InvalidArgument("bad CSR: no readable public key: " + OpenSslError());
  if (X509_REQ_verify(req.get(), csr_key) != 1) {
    ERR_clear_error();
    return InvalidArgument("bad CSR: its signature does not verify");
  }
  if (!IsP256(csr_key)) return InvalidArgument("bad CSR: the key is not ECDSA P-256");
  auto cn = CommonName(X509_REQ_get_subject_name(req.get()), "bad CSR: the subject");
  if (!cn.ok()) return cn.status();
  if (*cn != name) {
    return Rejected("CSR common name \"" + *cn + "\" is not the join token's worker name \"" +
                    name + "\"");
  }
  SHOAL_RETURN_IF_ERROR(CheckNotRevoked(ca_dir, name));

  SHOAL_ASSIGN_OR_RETURN(Ca ca, LoadCa(ca_dir));
  CertSpec spec;
  spec.common_name = name;
  spec.days = kWorkerValidityDays;
  spec.extended_key_usage = "clientAuth";
  SHOAL_ASSIGN_OR_RETURN(X509Ptr cert, IssueCert(spec, csr_key, ca.cert.get(), ca.key.get(), now));
  SHOAL_ASSIGN_OR_RETURN(std::string cert_pem, CertPem(cert.get()));

  // Burn the token before anything leaves this function.
  (*token)["used"] = true;
  (*token)["used_at"] = now;
  (*token)["serial"] = SerialHex(cert.get());
  j["tokens"] = std::move(tokens);
  SHOAL_RETURN_IF_ERROR(SaveJson(path, j));
  SHOAL_RETURN_IF_ERROR(RecordIssued(ca_dir, cert.get(), name, "token", now));
  return cert_pem;
}

Result<KeyAndCsr> MakeKeyAndCsr(const std::string& name) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  SHOAL_ASSIGN_OR_RETURN(EVP_PKEYPtr key, GenerateKey());
  X509_REQPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1) {
    return Internal("X509_REQ_new: " + OpenSslError());
  }
  X509_NAME* subject = X509_REQ_get_subject_name(req.get());
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1,
                                 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), key.get()) != 1 ||
      X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) {
    return Internal("build CSR: " + OpenSslError());
  }
  BIOPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return Internal("write CSR PEM: " + OpenSslError());
  }
  KeyAndCsr out;
  SHOAL_ASSIGN_OR_RETURN(out.csr_pem, BioText(bio.get()));
  SHOAL_ASSIGN_OR_RETURN(out.key_pem, KeyPem(key.get()));
  return out;
}

Status Revoke(const std::string& ca_dir, const std::string& name) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto lock, CaLock::Acquire(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto issued, ReadIssued(ca_dir));
  std::set<std::string> serials;
  for (const auto& r : issued) {
    if (r.name == name) serials.insert(r.serial);
  }
  if (serials.empty()) {
    return NotFound("no certificate was issued to worker \"" + name + "\" by the CA in " + ca_dir);
  }
  const std::string path = RevokedPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json entries, ArrayField(j, "revoked", path));
  SHOAL_RETURN_IF_ERROR(ReadRevoked(ca_dir).status());  // validates the records' shape
  json* entry = nullptr;
  for (auto& e : entries) {
    if (e.value("name", "") == name) entry = &e;
  }
  if (entry == nullptr) {
    entries.push_back({{"name", name}, {"revoked_at", NowOr(0)}, {"serials", json::array()}});
    entry = &entries.back();
  }
  for (const auto& s : (*entry)["serials"]) serials.insert(s.get<std::string>());
  (*entry)["serials"] = serials;
  j["revoked"] = std::move(entries);
  return SaveJson(path, j);
}

Result<std::set<std::string>> RevokedNames(const std::string& ca_dir) {
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto revoked, ReadRevoked(ca_dir));
  std::set<std::string> out;
  for (const auto& r : revoked) out.insert(r.name);
  return out;
}

Result<std::set<std::string>> RevokedSerials(const std::string& ca_dir) {
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto revoked, ReadRevoked(ca_dir));
  std::set<std::string> out;
  for (const auto& r : revoked) out.insert(r.serials.begin(), r.serials.end());
  return out;
}

Result<CertInfo> VerifyPeerCert(const std::string& ca_cert_pem, const std::string& cert_pem,
                                int64_t now) {
  SHOAL_ASSIGN_OR_RETURN(X509Ptr ca, ParseCert(ca_cert_pem, "CA certificate"));
  SHOAL_ASSIGN_OR_RETURN(X509Ptr cert, ParseCert(cert_pem, "peer certificate"));
  if (X509_check_ca(cert.get()) != 0) {
    return Rejected("peer certificate is a CA certificate, not a worker or coordinator one");
  }
  ERR_clear_error();
  X509_STOREPtr store(X509_STORE_new());
  X509_STORE_CTXPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
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
  GENERAL_NAMESPtr names(static_cast<GENERAL_NAMES*>(
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

Result<std::vector<WorkerRecord>> ListEnrolled(const std::string& ca_dir) {
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto issued, ReadIssued(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto revoked, ReadRevoked(ca_dir));
  std::set<std::string> names, serials;
  for (const auto& r : revoked) {
    names.insert(r.name);
    serials.insert(r.serials.begin(), r.serials.end());
  }
  std::vector<WorkerRecord> out;
  for (const auto& r : issued) {
    WorkerRecord w;
    w.name = r.name;
    w.serial = r.serial;
    w.fingerprint = r.fingerprint;
    w.issued_at = r.issued_at;
    w.not_after = r.not_after;
    w.how = r.how;
    w.revoked = names.count(r.name) > 0 || serials.count(r.serial) > 0;
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace shoal::security
