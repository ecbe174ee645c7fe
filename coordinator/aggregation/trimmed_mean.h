// Coordinate-wise trimmed mean (Yin et al. 2018): for each coordinate, the t = floor(beta * k)
// largest and t smallest of the round's k values are dropped and the rest averaged, beta being
// strategy.trim_fraction (in [0, 0.5)). Up to t arbitrary updates cannot move a coordinate
// outside the range of the honest ones.
//
// Unweighted: every kept value counts once, whatever the worker's sample count. A weighted
// trimmed mean would give a worker that declares a large silo (up to strategy.max_weight_ratio
// times the median) that much more pull inside the kept range; the trimming is about values,
// so sample counts play no part. The round's total weight still goes to the record and the
// train-loss weighting.
//
// Selection (std::nth_element, twice) instead of a sort: O(k) per coordinate. The kept values
// are summed in double in the canonical order (robust_aggregator.h): order-independent.
// Registered as "trimmed_mean". Not thread-safe.
#pragma once

#include <string>

#include "coordinator/aggregation/robust_aggregator.h"

namespace shoal::coordinator {

class TrimmedMean final : public RobustAggregator {
 public:
  static constexpr const char* kName = "trimmed_mean";
  std::string name() const override { return kName; }

  // The values cut at each end of a coordinate when there are k updates.
  static size_t Trimmed(double fraction, size_t k);

 protected:
  void CombineSlice(const float* rows, size_t k, size_t n, double* out) const override;

 private:
  mutable std::vector<float> column_;
};

}  // namespace shoal::coordinator
