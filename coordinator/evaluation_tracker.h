// The evaluation of a committed version: central (the coordinator's test set, on its own
// thread) and federated (workers evaluate it on their validation sets and answer EvalResults).
// With eval.overlap it runs while the next round trains; the version's metrics and its round's
// metrics.jsonl record are completed when both parts are in (or the federated deadline passed).
//
// Workers owe a result from the commit on; the next round's TrainTask asks the ones it selects
// (it carries the same weights) and an EvalTask the others, so "deferred" is who has not been
// asked yet. The tracker holds at most one pending evaluation, decides when it is done and
// computes its figures; the round engine sends the tasks and writes the results.
//
// Not thread-safe: owned by the round engine's thread (the central future is its only link
// to the evaluating thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "base/status.h"
#include "model/eval_metrics.h"
#include "protocols/messages.h"
#include "store/model_store.h"

namespace shoal::coordinator {

// A central evaluation as recorded in version metas and metrics.jsonl.
nlohmann::json CentralJson(const model::EvalMetrics& m);

// A completed evaluation: the version's meta and its round's record with the results in.
struct CompletedEvaluation {
  store::VersionMeta meta;
  nlohmann::json record;
};

class EvaluationTracker {
 public:
  // `overlap`: eval.overlap (recorded; without it the round's wall time includes the
  // evaluation). `timeout_s`: how long federated results are waited for.
  EvaluationTracker(bool overlap, double timeout_s) : overlap_(overlap), timeout_s_(timeout_s) {}

  // Starts evaluating `meta` (committed, metrics["evaluation"] = "pending"); `record` is its
  // round's metrics.jsonl record without the evaluation. `expected`: workers that owe a
  // federated result. `central`: the central evaluation under way (invalid: none).
  void Start(store::VersionMeta meta, nlohmann::json record,
             std::chrono::steady_clock::time_point round_started, std::set<std::string> expected,
             std::future<Result<model::EvalMetrics>> central);
  bool pending() const { return pending_.has_value(); }
  // Sets a field of the pending version's round record (a figure known only after Start).
  void SetRecordField(const std::string& key, nlohmann::json value);
  // The version under evaluation; only while pending().
  const store::VersionMeta& meta() const { return pending_->meta; }

  // Whether worker `name` is still to be asked, and if so it counts as asked now.
  bool TakeDeferred(const std::string& name);
  // Every worker still to be asked (each counts as asked now).
  std::set<std::string> TakeAllDeferred();
  bool has_deferred() const { return pending_ && !pending_->deferred.empty(); }
  // Worker `name` will not answer (lost, or gone before it was asked) unless it already did.
  void Forget(const std::string& name);

  enum class Outcome { kRecorded, kStale, kOutOfRange };
  // A worker's EvalResult for this run's pending version; `num_val` bounds its count.
  Outcome Record(const std::string& name, const protocols::EvalResult& result,
                 const std::string& run_id, int64_t num_val);

  // The central result is in and every expected worker answered or the deadline passed.
  bool Done() const;
  // Ends the pending evaluation: its figures go into the meta and the record. Fails when the
  // central evaluation failed.
  Result<CompletedEvaluation> Complete();

  // A background evaluation that failed, reported by the round that sees it.
  const Status& status() const { return status_; }
  void set_status(Status s) { status_ = std::move(s); }

 private:
  struct Pending {
    store::VersionMeta meta;
    nlohmann::json record;
    std::chrono::steady_clock::time_point round_started;
    std::chrono::steady_clock::time_point started;
    std::chrono::steady_clock::time_point federated_deadline;
    std::future<Result<model::EvalMetrics>> central;
    std::set<std::string> expected;  // worker names
    std::set<std::string> deferred;  // expected but not asked yet
    std::map<std::string, protocols::EvalResult> results;
  };

  const bool overlap_;
  const double timeout_s_;
  std::optional<Pending> pending_;
  Status status_;
};

}  // namespace shoal::coordinator
