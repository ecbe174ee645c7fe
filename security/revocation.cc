// Revocation and the record of issued certificates (pki.h): revoking a worker name with every
// serial issued to it, and listing what was issued.
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "security/ca_store.h"
#include "security/pki.h"

namespace shoal::security {

using nlohmann::json;

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
  SHOAL_ASSIGN_OR_RETURN(std::set<std::string> out, ReadSuperseded(ca_dir));
  for (const auto& r : revoked) out.insert(r.serials.begin(), r.serials.end());
  return out;
}

Result<std::vector<WorkerRecord>> ListEnrolled(const std::string& ca_dir) {
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto issued, ReadIssued(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto revoked, ReadRevoked(ca_dir));
  std::set<std::string> names;
  SHOAL_ASSIGN_OR_RETURN(std::set<std::string> serials, ReadSuperseded(ca_dir));
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
