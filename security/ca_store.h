// The CA directory on disk (layout in pki.h), internal to security/: its lock, its JSON files
// (ca.json, issued.json, tokens.json, revoked.json) and the loaded CA. Every read-modify-write
// of a JSON file happens under CaLock; every file is replaced atomically.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "security/openssl_util.h"

namespace shoal::security {

// Largest CA JSON file read (issued.json grows by one record per certificate).
inline constexpr size_t kMaxJsonBytes = size_t{64} << 20;

// `now`, or the current time when it is 0.
int64_t NowOr(int64_t now);

// A private key file: created 0600 from the first byte and never overwriting an existing key.
Status WriteKeyFile(const std::string& path, const std::string& pem);
// Creates `dir` mode 0700 when it is missing (it will hold private keys); an existing one must
// pass CheckPrivateDir.
Status MakePrivateDir(const std::string& dir);

// An exclusive flock on <ca_dir>/.lock for read-modify-write of the CA's JSON files.
class CaLock {
 public:
  static Result<std::unique_ptr<CaLock>> Acquire(const std::string& ca_dir);
  ~CaLock();  // closing releases the flock
  CaLock(const CaLock&) = delete;
  CaLock& operator=(const CaLock&) = delete;

 private:
  explicit CaLock(int fd) : fd_(fd) {}
  int fd_;
};

std::string CaJsonPath(const std::string& ca_dir);
std::string IssuedPath(const std::string& ca_dir);
std::string TokensPath(const std::string& ca_dir);
std::string RevokedPath(const std::string& ca_dir);

// Reads a JSON object; when the file is missing, returns `missing` (or NotFound when null).
Result<nlohmann::json> LoadJson(const std::string& path, const nlohmann::json& missing);
Status SaveJson(const std::string& path, const nlohmann::json& j);
// Returns j[key] when it is an array (an absent key counts as an empty array).
Result<nlohmann::json> ArrayField(const nlohmann::json& j, const char* key,
                                  const std::string& path);

struct Ca {
  X509Ptr cert;  // the root
  std::string cert_pem;
  std::string fingerprint;
  std::string coordinator_address;
  // Who signs: the root (offline bundles) or the enrollment CA (join tokens); null until one of
  // the Load*Signer functions ran. chain_pem is the signer's certificate when it is not the
  // root, so that a leaf it issues travels with it.
  X509Ptr signer_cert;
  EvpPkeyPtr signer_key;
  std::string chain_pem;
};

// NotFound (with how to make one) unless `ca_dir` holds ca.crt and ca.json.
Status RequireCa(const std::string& ca_dir);
// The root certificate and ca.json's address; no key.
Result<Ca> LoadCa(const std::string& ca_dir);
// Adds the root key from `root_dir` (empty = DefaultRootDir(ca_dir); a CA directory of the old
// layout still holding ca.key is used as its own root) as the signer. Corrupt when it is not the
// key of ca_dir's ca.crt.
Status LoadRootSigner(const std::string& ca_dir, const std::string& root_dir, Ca* ca);
// Adds the enrollment CA (enrollment.key/.crt in ca_dir, which must chain to ca.crt and be
// valid at `now`) as the signer.
Status LoadEnrollmentSigner(const std::string& ca_dir, int64_t now, Ca* ca);
// Rejected when `name` already has a certificate in issued.json (how to reissue in the text).
Status CheckNotIssued(const std::string& ca_dir, const std::string& name);
// Adds every serial issued to `name` so far to revoked.json's "superseded" list: they are
// refused like revoked certificates, but the name itself stays allowed. The caller holds the
// CA lock. Returns how many serials were added.
Result<size_t> SupersedeCertificates(const std::string& ca_dir, const std::string& name,
                                     int64_t now);
// Every serial in revoked.json's "superseded" list.
Result<std::set<std::string>> ReadSuperseded(const std::string& ca_dir);
// `address`, or the CA's default when it is empty; validated either way.
Result<std::string> AddressOrDefault(const Ca& ca, const std::string& address);

// One record of issued.json.
struct IssuedRecord {
  std::string name;
  std::string serial;
  std::string fingerprint;
  int64_t issued_at = 0;
  int64_t not_after = 0;
  std::string how;
};
Result<std::vector<IssuedRecord>> ReadIssued(const std::string& ca_dir);
// Appends a record of `cert` to issued.json. The caller holds the CA lock.
Status RecordIssued(const std::string& ca_dir, X509* cert, const std::string& name,
                    const std::string& how, int64_t now);

// One record of revoked.json.
struct RevokedEntry {
  std::string name;
  std::set<std::string> serials;
};
Result<std::vector<RevokedEntry>> ReadRevoked(const std::string& ca_dir);
// Rejected when `name` is revoked: a revoked name cannot be enrolled again.
Status CheckNotRevoked(const std::string& ca_dir, const std::string& name);

}  // namespace shoal::security
