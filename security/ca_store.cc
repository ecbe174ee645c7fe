#include "security/ca_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
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
  if (PathExists(dir)) return CheckPrivateDir(dir);
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
  if (!PathExists(CaCertPath(ca_dir)) || !PathExists(CaJsonPath(ca_dir))) {
    return NotFound(ca_dir +
                    " holds no Shoal CA (no ca.crt/ca.json; create one with "
                    "`shoalctl ca init`)");
  }
  return Status::Ok();
}

Result<Ca> LoadCa(const std::string& ca_dir) {
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  Ca ca;
  SHOAL_ASSIGN_OR_RETURN(ca.cert_pem, ReadFile(CaCertPath(ca_dir), kMaxPemBytes));
  SHOAL_ASSIGN_OR_RETURN(ca.cert, ParseCert(ca.cert_pem, CaCertPath(ca_dir).c_str()));
  SHOAL_ASSIGN_OR_RETURN(ca.fingerprint, Fingerprint(ca.cert.get()));
  SHOAL_ASSIGN_OR_RETURN(json info, LoadJson(CaJsonPath(ca_dir), json()));
  auto address = info.find("coordinator_address");
  if (address == info.end() || !address->is_string()) {
    return Corrupt(CaJsonPath(ca_dir) + ": \"coordinator_address\" is missing or not a string");
  }
  ca.coordinator_address = address->get<std::string>();
  return ca;
}

namespace {

// A certificate and its key from two files; Corrupt when the key is not the certificate's.
Status LoadKeyPair(const std::string& cert_path, const std::string& key_path, X509Ptr* cert,
                   EvpPkeyPtr* key, std::string* cert_pem) {
  SHOAL_ASSIGN_OR_RETURN(*cert_pem, ReadFile(cert_path, kMaxPemBytes));
  SHOAL_ASSIGN_OR_RETURN(*cert, ParseCert(*cert_pem, cert_path.c_str()));
  SHOAL_ASSIGN_OR_RETURN(std::string key_pem, ReadFile(key_path, kMaxPemBytes));
  auto parsed = ParseKey(key_pem, key_path.c_str());
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  if (!parsed.ok()) return parsed.status();
  *key = std::move(parsed).value();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return Corrupt(key_path + " does not match " + cert_path);
  }
  return Status::Ok();
}

}  // namespace

Status LoadRootSigner(const std::string& ca_dir, const std::string& root_dir, Ca* ca) {
  std::string dir = root_dir.empty() ? DefaultRootDir(ca_dir) : root_dir;
  if (root_dir.empty() && !PathExists(CaKeyPath(dir)) && PathExists(CaKeyPath(ca_dir))) {
    dir = ca_dir;  // the old layout: the root key still in the CA directory
  }
  if (!PathExists(CaKeyPath(dir))) {
    return NotFound("no root CA key at " + CaKeyPath(dir) +
                    ": offline bundles and enrollment-CA renewal need the root directory "
                    "(--root DIR, made by `shoalctl ca init`)");
  }
  SHOAL_RETURN_IF_ERROR(CheckPrivateDir(dir));
  X509Ptr cert;
  EvpPkeyPtr key;
  std::string pem;
  SHOAL_RETURN_IF_ERROR(LoadKeyPair(CaCertPath(dir), CaKeyPath(dir), &cert, &key, &pem));
  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, Fingerprint(cert.get()));
  if (fingerprint != ca->fingerprint) {
    return Corrupt(CaCertPath(dir) + " is not the root CA of " + ca_dir + " (" +
                   CaCertPath(ca_dir) + ")");
  }
  ca->signer_cert = std::move(cert);
  ca->signer_key = std::move(key);
  ca->chain_pem.clear();
  return Status::Ok();
}

Status LoadEnrollmentSigner(const std::string& ca_dir, int64_t now, Ca* ca) {
  if (!PathExists(EnrollmentCertPath(ca_dir))) {
    return NotFound(ca_dir + " has no enrollment CA (" + EnrollmentCertPath(ca_dir) +
                    "); make one with `shoalctl ca renew-enrollment " + ca_dir +
                    " --root ROOT_DIR` (which also moves an old layout's ca.key out)");
  }
  X509Ptr cert;
  EvpPkeyPtr key;
  std::string pem;
  SHOAL_RETURN_IF_ERROR(
      LoadKeyPair(EnrollmentCertPath(ca_dir), EnrollmentKeyPath(ca_dir), &cert, &key, &pem));
  // It must be a CA issued by this root and valid now: a worker certificate it issues would
  // otherwise not verify anywhere.
  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca->cert.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
    return Internal("set up certificate verification: " + OpenSslError());
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(NowOr(now)));
  if (X509_check_ca(cert.get()) == 0 || X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return Rejected(EnrollmentCertPath(ca_dir) + " is not a valid enrollment CA of " +
                    CaCertPath(ca_dir) + ": " + X509_verify_cert_error_string(err) +
                    " (renew it with `shoalctl ca renew-enrollment`)");
  }
  ca->signer_cert = std::move(cert);
  ca->signer_key = std::move(key);
  ca->chain_pem = std::move(pem);
  return Status::Ok();
}

Status CheckNotIssued(const std::string& ca_dir, const std::string& name) {
  SHOAL_ASSIGN_OR_RETURN(auto issued, ReadIssued(ca_dir));
  for (const auto& r : issued) {
    if (r.name == name) {
      return Rejected("worker \"" + name + "\" already has a certificate (serial " + r.serial +
                      "); to replace it, reissue (--reissue), which revokes the old one");
    }
  }
  return Status::Ok();
}

Result<size_t> SupersedeCertificates(const std::string& ca_dir, const std::string& name,
                                     int64_t now) {
  SHOAL_ASSIGN_OR_RETURN(auto issued, ReadIssued(ca_dir));
  const std::string path = RevokedPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json entries, ArrayField(j, "superseded", path));
  SHOAL_ASSIGN_OR_RETURN(std::set<std::string> known, ReadSuperseded(ca_dir));
  size_t added = 0;
  for (const auto& r : issued) {
    if (r.name != name || known.count(r.serial)) continue;
    entries.push_back({{"name", name}, {"serial", r.serial}, {"revoked_at", now}});
    ++added;
  }
  if (added == 0) return added;
  j["superseded"] = std::move(entries);
  SHOAL_RETURN_IF_ERROR(SaveJson(path, j));
  return added;
}

Result<std::set<std::string>> ReadSuperseded(const std::string& ca_dir) {
  const std::string path = RevokedPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json entries, ArrayField(j, "superseded", path));
  std::set<std::string> out;
  try {
    for (const auto& e : entries) out.insert(e.at("serial").get<std::string>());
  } catch (const json::exception& e) {
    return Corrupt(path + ": bad superseded record: " + e.what());
  }
  return out;
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

Status CheckPrivateDir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("no such directory: " + dir);
    return ErrnoStatus("stat", dir);
  }
  if (S_ISLNK(st.st_mode)) {
    return Rejected(dir +
                    " is a symbolic link; a directory holding private keys must be a real "
                    "directory");
  }
  if (!S_ISDIR(st.st_mode)) return Rejected(dir + " is not a directory");
  if (st.st_uid != ::geteuid()) {
    return Rejected(dir + " belongs to uid " + std::to_string(st.st_uid) + ", not to this user (" +
                    std::to_string(::geteuid()) +
                    "); it holds private keys: use a directory of your own");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Rejected(dir + " has mode " + mode +
                    ": it holds private keys, so group and others must have no access "
                    "(chmod 700 " +
                    dir + ")");
  }
  return Status::Ok();
}

Result<std::string> AddressOrDefault(const Ca& ca, const std::string& address) {
  const std::string& a = address.empty() ? ca.coordinator_address : address;
  SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(a));
  return a;
}

}  // namespace shoal::security
