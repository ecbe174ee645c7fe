// Coordinate-wise median (Yin et al. 2018): each coordinate of the aggregated delta is the
// median of the round's k values; with k odd the middle value, with k even the mean of the two
// middle ones (in double). Fewer than half the updates, however large, cannot move a
// coordinate outside the range of the others.
//
// Unweighted, as the trimmed mean and for the same reason (trimmed_mean.h): the median is a
// statement about values; a weighted median would let a worker with a capped-but-large weight
// decide coordinates alone. Selection by std::nth_element (O(k) per coordinate), not a sort.
// Order-independent: the column is built in the canonical order (robust_aggregator.h) and
// nth_element is deterministic for the same input.
// Registered as "median". Not thread-safe.
#pragma once

#include <string>
#include <vector>

#include "coordinator/aggregation/robust_aggregator.h"

namespace shoal::coordinator {

class CoordinateMedian final : public RobustAggregator {
 public:
  static constexpr const char* kName = "median";
  std::string name() const override { return kName; }

 protected:
  void CombineSlice(const float* rows, size_t k, size_t n, double* out) const override;

 private:
  mutable std::vector<float> column_;
};

}  // namespace shoal::coordinator
