// Streaming FedAvg (McMahan et al. 2017): the aggregated delta is
//   sum_k(n_k * delta_k) / sum_k(n_k)
// (the new global model is global + that, with the plain server step of aggregate_step.h)
// where delta_k = local_k - global and n_k is worker k's sample count. Updates are folded into
// one running weighted sum as they arrive and can be freed right after, so memory is one
// accumulator plus the global model whatever the number of workers. The accumulator is reused
// across rounds (no per-round reallocation once sized).
//
// Deterministic mode (`exact`): float addition is not associative, so a float running sum
// depends on the order updates arrive in. In exact mode each weighted value n_k * delta_k (a
// float product, the same whatever the order) is rounded to fixed point with 2^-32 resolution
// and summed in int64, which is associative: the aggregate is bit-identical for any arrival
// order. It costs 8 bytes per parameter instead of 4 and values are bounded by
// |n_k * delta_k| < 2^30 and each running sum by 2^30 as well (2^62 in fixed point; checked: an
// update beyond either is rejected).
//
// Hostile input (issue #20): an update is refused whole when a value is NaN/Inf, when a finite
// value overflows once weighted (3e38 with 2 samples) or would make the running sum
// non-finite, or when its count would overflow the round's int64 total. The accumulator thus
// stays finite; the round engine still checks the new model before committing it (the mean
// added to the global model can round past FLT_MAX).
//
// The first Aggregator (aggregator.h), registered as "mean" (strategy.aggregator's default).
// Not thread-safe: owned by the round engine's thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/aggregator.h"
#include "model/weights.h"

namespace shoal::coordinator {

class FedAvg final : public Aggregator {
 public:
  static constexpr const char* kName = "mean";

  std::string name() const override { return kName; }
  // Starts a round for models of `spec`: zeroes the accumulator (`exact`: deterministic mode).
  void Begin(const model::ModelSpec& spec, bool exact) override;
  void Begin(const model::ModelSpec& spec) { Begin(spec, /*exact=*/false); }
  // Checks the update (size, weight, the round's sample total without overflow, every value
  // finite, and - in float mode - every weighted value and every running sum it would make
  // finite) and only then folds it. InvalidArgument / Rejected naming the problem and the
  // tensor element; the accumulator is untouched on error, so it is always finite.
  Status Fold(const float* delta, size_t count, int64_t weight) override;
  // The weighted mean of the folded updates over [begin, begin + n); InvalidArgument when no
  // update was folded or the range is outside the model.
  Status AggregateRange(size_t begin, size_t n, double* out) const override;

  size_t size() const override { return size_; }
  int64_t total_samples() const override { return total_samples_; }
  int updates() const override { return updates_; }

 private:
  Status NonFiniteError(const float* delta, size_t count, float w, int64_t weight) const;

  model::ModelSpec spec_;
  bool exact_ = false;
  size_t size_ = 0;
  std::vector<float> acc_;          // float mode
  std::vector<int64_t> fixed_acc_;  // exact mode
  int64_t total_samples_ = 0;
  int updates_ = 0;
};

// The same computation in double precision over updates held at once; the reference that
// tests compare the streaming aggregator against.
std::vector<double> ReferenceFedAvg(const std::vector<float>& global,
                                    const std::vector<std::vector<float>>& deltas,
                                    const std::vector<int64_t>& samples);

}  // namespace shoal::coordinator
