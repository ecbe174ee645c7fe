// Update norm bounds, applied to every update before any aggregator (issue #23): an update
// whose L2 norm is above the round's bound C is scaled down to norm C (its direction kept), so
// no single worker moves the aggregate further than C / (its share) whatever it sends.
//
//   strategy.clip = "none" | "fixed" | "adaptive"
//   fixed:    C = strategy.clip_norm for every round.
//   adaptive: C starts at strategy.clip_norm and follows Andrew et al. 2021 ("Differentially
//             Private Learning with Adaptive Clipping", the geometric update): after a round
//             whose k updates had b = (number with norm <= C) / k,
//               C <- C * exp(-strategy.clip_lr * (b - strategy.clip_quantile))
//             so when every update is above the bound (b = 0) the bound grows, when all are
//             under it shrinks, and it settles where a clip_quantile share of norms is under it.
//
// ClippingAggregator is a decorator: it clips and hands the update to the aggregator it wraps
// (mean, trimmed_mean, median, multi_krum alike). It is the first half of client-level DP
// ("clip each update to C, then add noise to the sum"): a DP stage would wrap the same way and
// add noise in AggregateRange, using bound() as the sensitivity. It keeps one model-size
// buffer for the scaled copy. Deterministic: the norm is summed in double in element order and
// the scaling is one float product per value, the same whatever order updates arrive in; the
// adaptive rule depends only on the count b.
// Not thread-safe: owned by the round engine's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/aggregator.h"

namespace shoal::coordinator {

// Ceilings of strategy.clip_norm and strategy.clip_lr: the bound stays far from overflowing a
// norm of float values; a step above 10 would multiply the bound by e^5 in one round.
constexpr double kMaxClipNorm = 1e30;
constexpr double kMaxClipLr = 10.0;
// The adaptive bound never leaves [kMinAdaptiveBound, kMaxClipNorm] (a long run of rounds all
// under or all over the bound cannot drive it to 0 or Inf).
constexpr double kMinAdaptiveBound = 1e-30;

enum class ClipMode { kNone, kFixed, kAdaptive };

// "none" | "fixed" | "adaptive"; InvalidArgument naming strategy.clip otherwise.
Result<ClipMode> ParseClipMode(const std::string& s);

struct ClipOptions {
  ClipMode mode = ClipMode::kNone;
  double norm = 1.0;      // strategy.clip_norm: the fixed bound / the adaptive starting bound
  double quantile = 0.5;  // strategy.clip_quantile: gamma, the target share under the bound
  double lr = 0.2;        // strategy.clip_lr: eta_C, the geometric step
};

// The bound for the next round after one with `under` of `total` updates at or under `bound`
// (Andrew et al. 2021's geometric rule; unchanged when total is 0).
double NextAdaptiveBound(double bound, size_t under, size_t total, double quantile, double lr);

// What the clip stage did to one update (by fold index).
struct ClipRecord {
  double norm = 0;       // its L2 norm before clipping
  bool clipped = false;  // scaled down to the bound
};

class ClippingAggregator final : public Aggregator {
 public:
  // Wraps `inner`; updates are clipped to `bound` (> 0) until set_bound changes it.
  ClippingAggregator(std::unique_ptr<Aggregator> inner, double bound);

  std::string name() const override { return inner_->name(); }
  void Begin(const model::ModelSpec& spec, bool deterministic) override;
  // Checks the size and that the norm is finite (an update with NaN/Inf is refused naming it),
  // clips, then folds into the inner aggregator; nothing is recorded when that refuses it.
  Status Fold(const float* delta, size_t count, int64_t weight) override;
  Status AggregateRange(size_t begin, size_t n, double* out) const override {
    return inner_->AggregateRange(begin, n, out);
  }
  size_t size() const override { return inner_->size(); }
  int64_t total_samples() const override { return inner_->total_samples(); }
  int updates() const override { return inner_->updates(); }

  // The bound for the updates folded from now on (the engine sets it at each round's start).
  void set_bound(double bound) { bound_ = bound; }
  double bound() const { return bound_; }
  // Per fold since Begin: the update's norm and whether it was clipped.
  const std::vector<ClipRecord>& records() const { return records_; }
  // Folded updates whose norm was at or under the bound (b x k of the adaptive rule).
  size_t under() const;
  Aggregator* inner() { return inner_.get(); }
  const Aggregator* inner() const { return inner_.get(); }

 private:
  std::unique_ptr<Aggregator> inner_;
  double bound_;
  std::vector<float> scaled_;  // one update, reused
  std::vector<ClipRecord> records_;
};

}  // namespace shoal::coordinator
