#include "coordinator/worker_registry.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <ctime>

#include "base/file_util.h"
#include "model/weights.h"
#include "store/model_store.h"

namespace shoal::coordinator {

void WorkerRegistry::RefreshEnrollment(bool force) {
  if (ca_dir_.empty()) return;
  std::string stamp;
  for (const char* f : {"/issued.json", "/revoked.json", "/tokens.json"}) {
    struct stat st {};
    if (::stat((ca_dir_ + f).c_str(), &st) == 0) {
      stamp += std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
               std::to_string(st.st_mtim.tv_nsec) + ";";
    } else {
      stamp += "-;";
    }
  }
  if (!force && stamp == enrollment_stamp_) return;
  auto open_until = security::LatestOpenJoinTokenExpiry(ca_dir_);
  if (!open_until.ok()) {
    spdlog::error("cannot read the CA's join tokens (enrollment closed): {}",
                  open_until.status().ToString());
  }
  open_token_expiry_ = open_until.ok() ? *open_until : 0;
  auto records = security::ListEnrolled(ca_dir_);
  auto revoked = security::RevokedNames(ca_dir_);
  if (!records.ok() || !revoked.ok()) {
    // Keep the previous tables (fail closed for revocations already known).
    spdlog::error("cannot read the CA's enrollment files: {}",
                  (!records.ok() ? records.status() : revoked.status()).ToString());
    return;
  }
  enrollment_stamp_ = stamp;
  enrolled_.clear();
  for (auto& r : *records) enrolled_[r.fingerprint] = r;
  for (const auto& name : *revoked) {
    if (!revoked_.count(name)) spdlog::warn("worker={} is revoked", name);
  }
  revoked_ = std::move(revoked).value();
}

bool WorkerRegistry::join_token_open() const {
  return open_token_expiry_ > static_cast<int64_t>(std::time(nullptr));
}

bool WorkerRegistry::Revoked(const std::string& name, const std::string& fingerprint) const {
  if (revoked_.count(name) != 0) return true;
  auto it = enrolled_.find(fingerprint);
  return it != enrolled_.end() && it->second.revoked;
}

std::vector<std::string> WorkerRegistry::RevokedConnections() const {
  std::vector<std::string> cut;
  for (const auto& [id, p] : peers_) {
    if (Revoked(p.name, p.fingerprint)) cut.push_back(id);
  }
  return cut;
}

std::optional<Refusal> WorkerRegistry::Authorize(const protocols::ChannelMessage& in) const {
  if (!in.authenticated) {
    return Refusal{"unauthenticated",
                   "no client certificate: only a JoinRequest is accepted without one"};
  }
  auto it = enrolled_.find(in.fingerprint);
  if (it == enrolled_.end()) {
    return Refusal{"unenrolled_certificate",
                   "certificate '" + in.identity + "' (sha256 " + in.fingerprint +
                       ") was not issued to an enrolled worker by this federation's CA"};
  }
  if (revoked_.count(in.identity) || it->second.revoked) {
    return Refusal{"revoked", "certificate of worker '" + in.identity + "' is revoked"};
  }
  if (auto p = peers_.find(in.peer); p != peers_.end() && p->second.name != in.identity) {
    return Refusal{"identity_mismatch", "connection of worker '" + p->second.name +
                                            "' used by certificate '" + in.identity + "'"};
  }
  return std::nullopt;
}

Result<protocols::JoinResponse> WorkerRegistry::Enroll(const protocols::JoinRequest& request) {
  if (request.protocol_version != protocols::kProtocolVersion) {
    return InvalidArgument("protocol version " + std::to_string(request.protocol_version) +
                           " not supported");
  }
  SHOAL_ASSIGN_OR_RETURN(
      std::string cert,
      security::RedeemJoinToken(ca_dir_, request.token_id, request.secret, request.csr_pem));
  SHOAL_ASSIGN_OR_RETURN(std::string ca,
                         ReadFile(security::CaCertPath(ca_dir_), security::kMaxCertFileBytes));
  auto info = security::VerifyPeerCert(ca, cert);
  if (!info.ok()) {
    return InvalidArgument("issued certificate does not verify: " + info.status().message());
  }
  protocols::JoinResponse resp;
  resp.worker_name = info->common_name;
  resp.cert_pem = std::move(cert);
  resp.ca_pem = std::move(ca);
  RefreshEnrollment(/*force=*/true);
  spdlog::info("worker={} enrolled with a join token (certificate sha256 {})", info->common_name,
               info->fingerprint);
  return resp;
}

std::optional<Refusal> WorkerRegistry::CheckHello(const protocols::Hello& hello, bool secure,
                                                  const std::string& identity,
                                                  const std::vector<int64_t>& input_shape,
                                                  int64_t num_classes, int64_t max_samples) {
  // The enrollment rules (security::ValidateWorkerName): also refuses reserved names such as
  // "coordinator", with or without TLS.
  if (Status st = security::ValidateWorkerName(hello.name); !st.ok()) {
    return Refusal{"", st.message()};
  }
  if (secure && hello.name != identity) {
    return Refusal{"identity_mismatch", "claimed name '" + hello.name +
                                            "' is not the name in its certificate ('" + identity +
                                            "')"};
  }
  if (hello.input_shape != input_shape) {
    return Refusal{"", "input shape " + model::ShapeString(hello.input_shape) +
                           " does not match the federation's model input " +
                           model::ShapeString(input_shape)};
  }
  if (hello.num_classes < 1 || hello.num_classes > num_classes) {
    return Refusal{"", "silo has labels up to " + std::to_string(hello.num_classes - 1) +
                           ", the model has " + std::to_string(num_classes) + " classes"};
  }
  if (hello.num_train <= 0 || hello.num_val < 0) {
    return Refusal{"", "silo must declare a positive number of training samples"};
  }
  if (hello.num_train > max_samples || hello.num_val > max_samples) {
    const bool train = hello.num_train > max_samples;
    return Refusal{"too_many_samples",
                   "silo declares " + std::to_string(train ? hello.num_train : hello.num_val) +
                       (train ? " training" : " validation") +
                       " samples, more than this federation's admission.max_samples=" +
                       std::to_string(max_samples)};
  }
  return std::nullopt;
}

Peer& WorkerRegistry::Admit(const std::string& id, const protocols::Hello& hello, bool* fresh,
                            const std::string& fingerprint) {
  Peer& p = peers_[id];
  *fresh = p.name.empty();
  p.id = id;
  p.name = hello.name;
  p.fingerprint = fingerprint;
  p.num_train = hello.num_train;
  p.num_val = hello.num_val;
  p.last_seen = std::chrono::steady_clock::now();
  WorkerStats& ws = stats_[p.name];
  ws.state = "connected";
  if (ws.first_seen.empty()) ws.first_seen = store::UtcNow();
  ws.last_seen = store::UtcNow();
  ws.samples = p.num_train;
  ws.val_samples = p.num_val;
  return p;
}

bool WorkerRegistry::Remove(const std::string& id) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return false;
  stats_[it->second.name].state = "lost";
  peers_.erase(it);
  return true;
}

Peer* WorkerRegistry::Find(const std::string& id) {
  auto it = peers_.find(id);
  return it == peers_.end() ? nullptr : &it->second;
}

Peer* WorkerRegistry::ByName(const std::string& name) {
  for (auto& [id, p] : peers_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::vector<std::string> WorkerRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [id, p] : peers_) names.push_back(p.name);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> WorkerRegistry::SilentFor(std::chrono::milliseconds timeout) const {
  std::vector<std::string> silent;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [id, p] : peers_) {
    if (now - p.last_seen > timeout) silent.push_back(id);
  }
  return silent;
}

WorkerStats* WorkerRegistry::StatsFor(const std::string& id) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return nullptr;
  return &stats_[it->second.name];
}

void WorkerRegistry::AddHistory(const nlohmann::json& r) {
  for (const auto& name : r.value("participants", nlohmann::json::array())) {
    WorkerStats& ws = stats_[name.get<std::string>()];
    ws.state = "offline";
    ws.rounds.push_back(r.value("round", uint64_t{0}));
  }
}

void WorkerRegistry::RecordUpdate(const std::string& name, uint64_t round, double train_loss,
                                  double seconds) {
  WorkerStats& ws = stats_[name];
  ws.rounds.push_back(round);
  ws.last_train_loss = train_loss;
  ws.ewma_round_s = ws.ewma_round_s ? 0.5 * *ws.ewma_round_s + 0.5 * seconds : seconds;
}

int WorkerRegistry::connected() const {
  int n = 0;
  for (const auto& [name, w] : stats_) n += w.state == "connected";
  return n;
}

nlohmann::json WorkerRegistry::WorkersJson() const {
  nlohmann::json workers = nlohmann::json::array();
  std::set<std::string> listed;
  for (const auto& [name, w] : stats_) {
    listed.insert(name);
    workers.push_back({{"name", name},
                       {"state", revoked_.count(name) ? std::string("revoked") : w.state},
                       {"first_seen", w.first_seen},
                       {"last_seen", w.last_seen},
                       {"rounds", w.rounds},
                       {"samples", w.samples},
                       {"val_samples", w.val_samples},
                       {"last_train_loss", w.last_train_loss ? nlohmann::json(*w.last_train_loss)
                                                             : nlohmann::json(nullptr)},
                       {"bytes_in", w.bytes_in},
                       {"bytes_out", w.bytes_out},
                       {"rejected", w.rejected}});
  }
  // Enrolled workers that never connected to this run (and revoked ones).
  for (const auto& [fingerprint, r] : enrolled_) {
    if (!listed.insert(r.name).second) continue;
    workers.push_back({{"name", r.name},
                       {"state", revoked_.count(r.name) ? "revoked" : "enrolled"},
                       {"first_seen", ""},
                       {"last_seen", ""},
                       {"rounds", nlohmann::json::array()},
                       {"samples", 0},
                       {"val_samples", 0},
                       {"last_train_loss", nullptr},
                       {"bytes_in", 0},
                       {"bytes_out", 0},
                       {"rejected", 0}});
  }
  return workers;
}

}  // namespace shoal::coordinator
