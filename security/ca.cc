// The CA itself: its directory's file names, the name and address rules every issuing path
// checks, creating a CA, and its fingerprint.
#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "base/hex.h"
#include "security/ca_store.h"
#include "security/pki.h"
#include "security/x509.h"

namespace shoal::security {
namespace {

using nlohmann::json;

constexpr size_t kMaxAddressChars = 255;

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

}  // namespace

std::string UtcText(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string CaKeyPath(const std::string& d) { return d + "/ca.key"; }
std::string CaCertPath(const std::string& d) { return d + "/ca.crt"; }
std::string CoordinatorKeyPath(const std::string& d) { return d + "/coordinator.key"; }
std::string CoordinatorCertPath(const std::string& d) { return d + "/coordinator.crt"; }
std::string EnrollmentKeyPath(const std::string& d) { return d + "/enrollment.key"; }
std::string EnrollmentCertPath(const std::string& d) { return d + "/enrollment.crt"; }
std::string DefaultRootDir(const std::string& ca_dir) {
  std::string d = ca_dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d + "-root";
}
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
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  for (const char* reserved : kReservedWorkerNames) {
    if (lower == reserved) {
      return InvalidArgument("bad worker name \"" + name + "\": \"" + reserved +
                             "\" is reserved (the coordinator's certificate carries "
                             "\"coordinator\"); pick another name");
    }
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

namespace {

// Whether `inner` is `outer` or lies inside it (lexically, after normalisation).
bool SameOrInside(const std::string& inner, const std::string& outer) {
  const std::string a = std::filesystem::absolute(inner).lexically_normal().string() + "/";
  const std::string b = std::filesystem::absolute(outer).lexically_normal().string() + "/";
  return a.compare(0, b.size(), b) == 0;
}

Status CheckEnrollmentDays(int64_t days) {
  if (days < 1 || days > kMaxEnrollmentCaValidityDays) {
    return InvalidArgument("enrollment CA validity of " + std::to_string(days) +
                           " days is outside 1 to " + std::to_string(kMaxEnrollmentCaValidityDays));
  }
  return Status::Ok();
}

// Issues an enrollment CA from the root and writes it to `ca_dir` (replacing an earlier one).
Status WriteEnrollmentCa(const std::string& ca_dir, X509* root_cert, EVP_PKEY* root_key,
                         int64_t days, int64_t now) {
  SHOAL_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey());
  CertSpec spec;
  spec.common_name = kEnrollmentCaCommonName;
  spec.days = days;
  spec.ca = true;
  spec.path_len = 0;                       // it issues leaves only, never another CA
  spec.extended_key_usage = "clientAuth";  // and only worker (client) certificates
  SHOAL_ASSIGN_OR_RETURN(X509Ptr cert, IssueCert(spec, key.get(), root_cert, root_key, now));
  SHOAL_ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));
  Status st = WriteFileAtomic(EnrollmentKeyPath(ca_dir), key_pem, 0600);
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  SHOAL_RETURN_IF_ERROR(st);
  SHOAL_ASSIGN_OR_RETURN(std::string pem, CertPem(cert.get()));
  return WriteFileAtomic(EnrollmentCertPath(ca_dir), pem);
}

}  // namespace

Status InitCa(const std::string& dir, const CaOptions& options) {
  SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(options.coordinator_address));
  SHOAL_ASSIGN_OR_RETURN(std::string sans, SanConfig(options.coordinator_sans));
  SHOAL_RETURN_IF_ERROR(CheckEnrollmentDays(options.enrollment_days));
  if (dir.empty()) return InvalidArgument("no CA directory given");
  const std::string root = options.root_dir.empty() ? DefaultRootDir(dir) : options.root_dir;
  if (SameOrInside(root, dir)) {
    return InvalidArgument("the root CA directory " + root + " must not be " + dir +
                           " or inside it: the coordinator mounts " + dir +
                           " and must never hold the root key");
  }
  for (const std::string& path :
       {CaKeyPath(dir), CaCertPath(dir), CaJsonPath(dir), CaKeyPath(root), CaCertPath(root)}) {
    if (PathExists(path)) {
      return Rejected(dir + " already holds a CA (" + path + " exists); refusing to overwrite it");
    }
  }
  const int64_t now = NowOr(options.now);
  SHOAL_RETURN_IF_ERROR(MakePrivateDir(root));
  SHOAL_RETURN_IF_ERROR(MakePrivateDir(dir));

  SHOAL_ASSIGN_OR_RETURN(EvpPkeyPtr ca_key, GenerateKey());
  CertSpec ca_spec;
  ca_spec.common_name = kCaCommonName;
  ca_spec.days = kCaValidityDays;
  ca_spec.ca = true;
  SHOAL_ASSIGN_OR_RETURN(X509Ptr ca_cert,
                         IssueCert(ca_spec, ca_key.get(), nullptr, ca_key.get(), now));

  SHOAL_ASSIGN_OR_RETURN(EvpPkeyPtr coord_key, GenerateKey());
  CertSpec coord_spec;
  coord_spec.common_name = kCoordinatorCommonName;
  coord_spec.days = kCoordinatorValidityDays;
  coord_spec.extended_key_usage = "serverAuth";
  coord_spec.subject_alt_names = sans;
  SHOAL_ASSIGN_OR_RETURN(X509Ptr coord_cert,
                         IssueCert(coord_spec, coord_key.get(), ca_cert.get(), ca_key.get(), now));

  SHOAL_ASSIGN_OR_RETURN(std::string ca_key_pem, KeyPem(ca_key.get()));
  Status st = WriteKeyFile(CaKeyPath(root), ca_key_pem);
  OPENSSL_cleanse(ca_key_pem.data(), ca_key_pem.size());
  SHOAL_RETURN_IF_ERROR(st);
  SHOAL_ASSIGN_OR_RETURN(std::string ca_pem, CertPem(ca_cert.get()));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(CaCertPath(root), ca_pem));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(CaCertPath(dir), ca_pem));

  SHOAL_ASSIGN_OR_RETURN(std::string coord_key_pem, KeyPem(coord_key.get()));
  st = WriteKeyFile(CoordinatorKeyPath(dir), coord_key_pem);
  OPENSSL_cleanse(coord_key_pem.data(), coord_key_pem.size());
  SHOAL_RETURN_IF_ERROR(st);
  SHOAL_ASSIGN_OR_RETURN(std::string coord_pem, CertPem(coord_cert.get()));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(CoordinatorCertPath(dir), coord_pem));
  SHOAL_RETURN_IF_ERROR(
      WriteEnrollmentCa(dir, ca_cert.get(), ca_key.get(), options.enrollment_days, now));

  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, Fingerprint(ca_cert.get()));
  json info = {{"format", 1},
               {"ca_fingerprint", fingerprint},
               {"created_at", UtcText(now)},
               {"coordinator_address", options.coordinator_address},
               {"coordinator_sans", options.coordinator_sans}};
  return SaveJson(CaJsonPath(dir), info);
}

Status RenewEnrollmentCa(const std::string& ca_dir, const std::string& root_dir, int64_t days,
                         int64_t now) {
  SHOAL_RETURN_IF_ERROR(CheckEnrollmentDays(days));
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  const std::string root = root_dir.empty() ? DefaultRootDir(ca_dir) : root_dir;
  if (SameOrInside(root, ca_dir)) {
    return InvalidArgument("the root CA directory " + root + " must not be " + ca_dir +
                           " or inside it");
  }
  SHOAL_ASSIGN_OR_RETURN(auto lock, CaLock::Acquire(ca_dir));
  // The old layout: move the root key out of the coordinator's directory first (copy, sync,
  // then delete, so a crash in between leaves a key in both places, never in none).
  if (PathExists(CaKeyPath(ca_dir))) {
    if (PathExists(CaKeyPath(root))) {
      return Rejected("both " + CaKeyPath(ca_dir) + " and " + CaKeyPath(root) +
                      " exist; remove the one that is not the root key of " + ca_dir);
    }
    SHOAL_RETURN_IF_ERROR(MakePrivateDir(root));
    SHOAL_ASSIGN_OR_RETURN(std::string key_pem, ReadFile(CaKeyPath(ca_dir), kMaxPemBytes));
    Status st = WriteKeyFile(CaKeyPath(root), key_pem);
    OPENSSL_cleanse(key_pem.data(), key_pem.size());
    SHOAL_RETURN_IF_ERROR(st);
    SHOAL_ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(CaCertPath(ca_dir), kMaxPemBytes));
    SHOAL_RETURN_IF_ERROR(WriteFileAtomic(CaCertPath(root), ca_pem));
  }
  SHOAL_ASSIGN_OR_RETURN(Ca ca, LoadCa(ca_dir));
  SHOAL_RETURN_IF_ERROR(LoadRootSigner(ca_dir, root, &ca));
  SHOAL_RETURN_IF_ERROR(
      WriteEnrollmentCa(ca_dir, ca.signer_cert.get(), ca.signer_key.get(), days, NowOr(now)));
  if (PathExists(CaKeyPath(ca_dir)) && ::unlink(CaKeyPath(ca_dir).c_str()) != 0) {
    return ErrnoStatus("remove the root key from the CA directory", CaKeyPath(ca_dir));
  }
  return SyncDirectory(ca_dir);
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

}  // namespace shoal::security
