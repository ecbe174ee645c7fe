// The CA itself: its directory's file names, the name and address rules every issuing path
// checks, creating a CA, and its fingerprint.
#include <arpa/inet.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>
#include <ctime>
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

}  // namespace shoal::security
