#include "coordinator/evaluation_tracker.h"

#include <spdlog/spdlog.h>

#include <cmath>

namespace shoal::coordinator {

using Clock = std::chrono::steady_clock;

nlohmann::json CentralJson(const model::EvalMetrics& m) {
  return {{"accuracy", m.accuracy}, {"loss", m.loss}, {"count", m.count}};
}

void EvaluationTracker::Start(store::VersionMeta meta, nlohmann::json record,
                              Clock::time_point round_started, std::set<std::string> expected,
                              std::future<Result<model::EvalMetrics>> central) {
  Pending& ev = pending_.emplace();
  ev.meta = std::move(meta);
  ev.record = std::move(record);
  ev.round_started = round_started;
  ev.started = Clock::now();
  ev.federated_deadline =
      ev.started + std::chrono::microseconds(static_cast<int64_t>(timeout_s_ * 1e6));
  ev.central = std::move(central);
  ev.expected = std::move(expected);
  ev.deferred = ev.expected;
}

void EvaluationTracker::SetRecordField(const std::string& key, nlohmann::json value) {
  if (pending_) pending_->record[key] = std::move(value);
}

bool EvaluationTracker::TakeDeferred(const std::string& name) {
  return pending_ && pending_->deferred.erase(name) > 0;
}

std::set<std::string> EvaluationTracker::TakeAllDeferred() {
  std::set<std::string> names;
  if (pending_) names.swap(pending_->deferred);
  return names;
}

void EvaluationTracker::Forget(const std::string& name) {
  if (!pending_ || pending_->results.count(name)) return;
  pending_->expected.erase(name);
  pending_->deferred.erase(name);
}

EvaluationTracker::Outcome EvaluationTracker::Record(const std::string& name,
                                                     const protocols::EvalResult& r,
                                                     const std::string& run_id, int64_t num_val) {
  if (!pending_ || r.run_id != run_id || r.round != pending_->meta.round ||
      r.version != pending_->meta.version || !pending_->expected.count(name)) {
    return Outcome::kStale;
  }
  if (r.count < 0 || r.count > num_val || !std::isfinite(r.loss) || !(r.accuracy >= 0) ||
      r.accuracy > 1 || !(r.cpu_seconds >= 0 && r.cpu_seconds < 1e9)) {
    return Outcome::kOutOfRange;
  }
  pending_->results[name] = r;
  return Outcome::kRecorded;
}

bool EvaluationTracker::Done() const {
  if (!pending_) return true;
  const bool central =
      !pending_->central.valid() ||
      pending_->central.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  return central && (pending_->results.size() == pending_->expected.size() ||
                     Clock::now() >= pending_->federated_deadline);
}

Result<CompletedEvaluation> EvaluationTracker::Complete() {
  if (!pending_) return Internal("no evaluation is pending");
  Pending ev = std::move(*pending_);
  pending_.reset();
  nlohmann::json central = nullptr;
  nlohmann::json evaluation = {{"overlapped", overlap_}};
  if (ev.central.valid()) {
    SHOAL_ASSIGN_OR_RETURN(model::EvalMetrics m, ev.central.get());
    central = CentralJson(m);
    evaluation["central_cpu_s"] = m.cpu_seconds;
  }
  nlohmann::json federated = nullptr;
  int64_t n = 0;
  double loss = 0, acc = 0, cpu = 0;
  for (const auto& [name, r] : ev.results) {
    n += r.count;
    loss += r.loss * static_cast<double>(r.count);
    acc += r.accuracy * static_cast<double>(r.count);
    cpu += r.cpu_seconds;
  }
  if (n > 0) {
    federated = {
        {"accuracy", acc / n}, {"loss", loss / n}, {"count", n}, {"reports", ev.results.size()}};
    evaluation["federated_cpu_s"] = cpu;
  }
  if (ev.results.size() < ev.expected.size()) {
    spdlog::warn(
        "round={} federated evaluation of v{}: {} of {} workers answered within "
        "eval.timeout_s={}",
        ev.meta.round, ev.meta.version, ev.results.size(), ev.expected.size(), timeout_s_);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - ev.started).count();
  evaluation["seconds"] = seconds;
  ev.meta.metrics["central"] = central;
  ev.meta.metrics["federated"] = federated;
  ev.meta.metrics.erase("evaluation");
  nlohmann::json& rec = ev.record;
  rec["central"] = central;
  rec["federated"] = federated;
  rec["evaluation"] = evaluation;
  rec["evaluated_at"] = store::UtcNow();
  if (!overlap_) {  // the round waited for it
    rec["phases_s"]["evaluate"] = seconds;
    rec["wall_s"] = std::chrono::duration<double>(Clock::now() - ev.round_started).count();
  }
  return CompletedEvaluation{std::move(ev.meta), std::move(ev.record)};
}

}  // namespace shoal::coordinator
