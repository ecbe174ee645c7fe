#include "coordinator/status_board.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace shoal::coordinator {
namespace {

const double kBuckets[] = {0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

std::string Num(double v) {
  char b[64];
  std::snprintf(b, sizeof(b), "%.10g", v);
  return b;
}

double Get(const nlohmann::json& j, const char* a, const char* b = nullptr) {
  const nlohmann::json* n = &j;
  if (!n->is_object() || !n->contains(a)) return NAN;
  n = &(*n)[a];
  if (b) {
    if (!n->is_object() || !n->contains(b)) return NAN;
    n = &(*n)[b];
  }
  return n->is_number() ? n->get<double>() : NAN;
}

}  // namespace

const std::vector<std::string>& StatusBoard::Phases() {
  static const std::vector<std::string> kPhases = {"broadcast", "collect", "aggregate", "evaluate",
                                                   "commit"};
  return kPhases;
}

void StatusBoard::SetStatus(nlohmann::json status) {
  std::lock_guard<std::mutex> l(mu_);
  status_ = std::move(status);
}

void StatusBoard::SetWorkers(nlohmann::json workers) {
  std::lock_guard<std::mutex> l(mu_);
  workers_ = std::move(workers);
}

namespace {

// The board keeps every round, but the per-worker parts (participant lists and per-worker
// timings: one entry per worker per round) of the last kRoundsWithParticipants only: a long run
// with many workers would otherwise grow without bound. Older entries keep participants_count;
// the full lists stay on disk (metrics.jsonl and each version's .json).
constexpr size_t kRoundsWithParticipants = 100;

void KeepRecentParticipants(nlohmann::json& list) {
  if (list.size() <= kRoundsWithParticipants) return;
  nlohmann::json& old = list[list.size() - 1 - kRoundsWithParticipants];
  if (!old.is_object()) return;
  old.erase("workers");
  // What the defences did per worker (issue #23); the flagged names stay.
  if (old.contains("defences") && old["defences"].is_object()) old["defences"].erase("workers");
  if (!old.contains("participants") || !old["participants"].is_array()) return;
  old["participants_count"] = old["participants"].size();
  old.erase("participants");
}

}  // namespace

void StatusBoard::AddRound(const nlohmann::json& record) {
  std::lock_guard<std::mutex> l(mu_);
  rounds_.push_back(record);
  KeepRecentParticipants(rounds_);
  if (!record.contains("phases_s") || !record["phases_s"].is_object()) return;
  for (const auto& phase : Phases()) {
    const double s = Get(record["phases_s"], phase.c_str());
    if (std::isnan(s)) continue;
    Histogram& h = phases_[phase];
    if (h.buckets.empty()) h.buckets.assign(std::size(kBuckets), 0);
    for (size_t i = 0; i < std::size(kBuckets); ++i) {
      if (s <= kBuckets[i]) ++h.buckets[i];
    }
    ++h.count;
    h.sum += s;
  }
}

void StatusBoard::AddVersion(const nlohmann::json& meta) {
  std::lock_guard<std::mutex> l(mu_);
  models_.push_back(meta);
  KeepRecentParticipants(models_);
}

void StatusBoard::UpdateVersion(const nlohmann::json& meta) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = models_.rbegin(); it != models_.rend(); ++it) {
    if (it->value("version", -1) == meta.value("version", -2)) {
      *it = meta;  // the newest versions: never trimmed
      return;
    }
  }
  models_.push_back(meta);
  KeepRecentParticipants(models_);
}

void StatusBoard::CountRejection(const std::string& reason) {
  std::lock_guard<std::mutex> l(mu_);
  ++rejections_[reason];
}

void StatusBoard::AddBytes(uint64_t in, uint64_t out) {
  std::lock_guard<std::mutex> l(mu_);
  bytes_in_ += in;
  bytes_out_ += out;
}

nlohmann::json StatusBoard::Status() const {
  std::lock_guard<std::mutex> l(mu_);
  nlohmann::json s = status_;
  s["rejections"] = rejections_;
  s["bytes_in"] = bytes_in_;
  s["bytes_out"] = bytes_out_;
  return s;
}

nlohmann::json StatusBoard::Rounds() const {
  std::lock_guard<std::mutex> l(mu_);
  return rounds_;
}

nlohmann::json StatusBoard::Workers() const {
  std::lock_guard<std::mutex> l(mu_);
  return workers_;
}

nlohmann::json StatusBoard::Models() const {
  std::lock_guard<std::mutex> l(mu_);
  return models_;
}

namespace {

// A Prometheus label value: backslash, double quote and line feed escaped (worker names come
// from certificates and Hello messages).
std::string LabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string StatusBoard::Prometheus() const {
  std::lock_guard<std::mutex> l(mu_);
  std::ostringstream o;
  auto gauge = [&](const char* name, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n";
  };
  auto counter = [&](const char* name, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n";
  };
  gauge("shoal_round", "Round in progress, or the last round when the run is over.");
  o << "shoal_round " << Num(Get(status_, "round") >= 0 ? Get(status_, "round") : 0) << "\n";
  gauge("shoal_model_version", "Latest committed global model version.");
  o << "shoal_model_version "
    << Num(std::isnan(Get(status_, "version")) ? 0 : Get(status_, "version")) << "\n";
  counter("shoal_rounds_committed_total", "Rounds committed by this coordinator process.");
  o << "shoal_rounds_committed_total " << rounds_.size() << "\n";

  const nlohmann::json last = rounds_.empty() ? nlohmann::json() : rounds_.back();
  gauge("shoal_global_accuracy", "Accuracy of the latest version (fraction), by evaluation kind.");
  gauge("shoal_global_loss", "Mean cross-entropy loss of the latest version, by evaluation kind.");
  for (const char* kind : {"central", "federated"}) {
    const double acc = Get(last, kind, "accuracy");
    const double loss = Get(last, kind, "loss");
    if (!std::isnan(acc))
      o << "shoal_global_accuracy{eval=\"" << kind << "\"} " << Num(acc) << "\n";
    if (!std::isnan(loss)) o << "shoal_global_loss{eval=\"" << kind << "\"} " << Num(loss) << "\n";
  }

  gauge("shoal_workers", "Workers known to the coordinator, by state.");
  std::map<std::string, int> by_state = {{"connected", 0}, {"lost", 0}};
  for (const auto& w : workers_) ++by_state[w.value("state", "unknown")];
  for (const auto& [state, n] : by_state)
    o << "shoal_workers{state=\"" << state << "\"} " << n << "\n";

  counter("shoal_received_bytes_total", "Bytes received from workers.");
  o << "shoal_received_bytes_total " << bytes_in_ << "\n";
  counter("shoal_sent_bytes_total", "Bytes sent to workers.");
  o << "shoal_sent_bytes_total " << bytes_out_ << "\n";

  counter("shoal_rejected_messages_total", "Messages and updates rejected, by reason.");
  for (const auto& [reason, n] : rejections_) {
    o << "shoal_rejected_messages_total{reason=\"" << reason << "\"} " << n << "\n";
  }

  // Differential privacy: each silo's epsilon at privacy.delta, whatever mechanism spent it.
  if (const auto p = status_.find("privacy"); p != status_.end() && p->is_object()) {
    gauge("shoal_dp_epsilon", "Privacy spent by each silo (epsilon at shoal_dp_delta).");
    const nlohmann::json by_silo = p->value("epsilon", nlohmann::json::object());
    for (const auto& [silo, eps] : by_silo.items()) {
      if (eps.is_number()) {
        o << "shoal_dp_epsilon{silo=\"" << LabelValue(silo) << "\"} " << Num(eps.get<double>())
          << "\n";
      }
    }
    gauge("shoal_dp_delta", "The delta of shoal_dp_epsilon.");
    o << "shoal_dp_delta " << Num(p->value("delta", 0.0)) << "\n";
    const auto target = p->find("target_epsilon");
    if (target != p->end() && target->is_number()) {
      gauge("shoal_dp_target_epsilon", "The run's privacy budget per silo.");
      o << "shoal_dp_target_epsilon " << Num(target->get<double>()) << "\n";
    }
  }

  o << "# HELP shoal_round_phase_seconds Duration of each round phase.\n"
    << "# TYPE shoal_round_phase_seconds histogram\n";
  for (const auto& [phase, h] : phases_) {
    for (size_t i = 0; i < std::size(kBuckets); ++i) {
      o << "shoal_round_phase_seconds_bucket{phase=\"" << phase << "\",le=\"" << Num(kBuckets[i])
        << "\"} " << h.buckets[i] << "\n";
    }
    o << "shoal_round_phase_seconds_bucket{phase=\"" << phase << "\",le=\"+Inf\"} " << h.count
      << "\n";
    o << "shoal_round_phase_seconds_sum{phase=\"" << phase << "\"} " << Num(h.sum) << "\n";
    o << "shoal_round_phase_seconds_count{phase=\"" << phase << "\"} " << h.count << "\n";
  }
  return o.str();
}

}  // namespace shoal::coordinator
