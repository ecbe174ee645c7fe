// The round engine's side of the defences against dishonest workers (issue #23): it sets up
// the update norm bound (aggregation/update_clipping.h) around the configured aggregator and
// the robust aggregators' options (aggregation/robust_aggregator.h), carries the adaptive
// bound from round to round and across a restart, and says per worker what the defences did
// (the round's "defences" record in metrics.jsonl and the API, and the dashboard's flags).
//
// The adaptive bound is versioned with the model: the bound for the next round goes into the
// committed version's meta ("clip_bound"), written atomically with its weights, and a resumed
// run reads it back from the version it resumes from. So a kill -9 at any point resumes with
// the bound that goes with the model, and run.deterministic runs stay bit-identical.
// Not thread-safe: owned by the round engine's thread.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/aggregator.h"
#include "coordinator/aggregation/robust_aggregator.h"
#include "coordinator/aggregation/update_clipping.h"
#include "coordinator/config.h"

namespace shoal::coordinator {

// A worker is flagged in a round when its update was clipped, not selected by multi_krum, or
// cut off on more than this share of coordinates by trimmed_mean.
constexpr double kFlagTrimmedShare = 0.5;
// The version meta key holding the adaptive bound for the round after that version.
inline constexpr const char* kClipBoundKey = "clip_bound";

class UpdateDefences {
 public:
  // Configures `aggregator` (a robust one gets its options and the spill directory, where
  // leftover spill files are removed) and wraps it in the clip stage when strategy.clip is not
  // "none". Call once, before the first round.
  Status Setup(const CoordinatorConfig& cfg, std::unique_ptr<Aggregator>& aggregator);
  // Takes the adaptive bound from the metrics of the version training resumes from (nothing
  // to take for v0 or a run without it: clip_norm stays).
  Status Restore(const nlohmann::json& version_metrics);

  // A round opens: the clip stage gets the current bound; the fold list empties.
  void BeginRound();
  // Worker `name`'s update was folded (in fold order, which the clip records follow).
  void Folded(const std::string& name) { folded_.push_back(name); }
  // The bound the next round would use if this round commits.
  double NextBound() const;
  bool adaptive() const { return mode_ == ClipMode::kAdaptive; }
  bool active() const { return clip_ != nullptr || robust_ != nullptr; }
  // The round's record: the bound, and per worker its norm and whether it was clipped, its
  // trimmed share or Multi-Krum selection and score, and the flagged workers. Null when no
  // defence is configured.
  nlohmann::json Record() const;
  // The round is over (committed or abandoned): the spill's disk space is released; when it
  // committed, the adaptive bound moves on.
  void EndRound(bool committed);
  double bound() const { return bound_; }

 private:
  ClipMode mode_ = ClipMode::kNone;
  double bound_ = 0;
  double quantile_ = 0;
  double lr_ = 0;
  ClippingAggregator* clip_ = nullptr;  // owned by the engine's aggregator_
  RobustAggregator* robust_ = nullptr;  // likewise
  std::vector<std::string> folded_;
};

}  // namespace shoal::coordinator
