#include "security/ca_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <utility>

#include "base/file_util.h"
#include "security/pki.h"
#include "security/x509.h"

namespace shoal::security {

using nlohmann::json;

int64_t NowOr(int64_t now) { return now != 0 ? now : static_cast<int64_t>(std::time(nullptr)); }

Status WriteKeyFile(const std::string& path, const std::string& pem) {
  return CreateFileAtomic(path, pem, 0600);
}

Status MakePrivateDir(const std::string& dir) {
  if (PathExists(dir)) return Status::Ok();
  SHOAL_RETURN_IF_ERROR(MakeDirs(dir));
  if (::chmod(dir.c_str(), 0700) != 0) return ErrnoStatus("chmod 0700", dir);
  return Status::Ok();
}

Result<std::unique_ptr<CaLock>> CaLock::Acquire(const std::string& ca_dir) {
  const std::string path = ca_dir + "/.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("open lock file", path);
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    Status st = ErrnoStatus("flock", path);
    ::close(fd);
    return st;
  }
  return std::unique_ptr<CaLock>(new CaLock(fd));
}

CaLock::~CaLock() { ::close(fd_); }

std::string CaJsonPath(const std::string& d) { return d + "/ca.json"; }
std::string IssuedPath(const std::string& d) { return d + "/issued.json"; }
std::string TokensPath(const std::string& d) { return d + "/tokens.json"; }
std::string RevokedPath(const std::string& d) { return d + "/revoked.json"; }

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

Result<json> ArrayField(const json& j, const char* key, const std::string& path) {
  if (!j.contains(key)) return json::array();
  if (!j[key].is_array()) return Corrupt(path + ": \"" + key + "\" is not an array");
  return j[key];
}

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

}  // namespace shoal::security
