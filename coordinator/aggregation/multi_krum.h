// Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018): each update i is scored by the sum
// of its squared L2 distances to its n - f - 2 nearest other updates (f = strategy.byzantine);
// the m updates with the lowest scores (strategy.multi_krum_m, 0 = n - f) are averaged. An
// update far from the honest cluster has a high score and is left out. Needs n >= 2f + 3
// (checked: selection.min_fit against strategy.byzantine at config time, the round's count
// here).
//
// Weighted: the m selected updates are averaged like FedAvg, weighted by their (capped) sample
// counts, so with m = n and f = 0 Multi-Krum is FedAvg. Selection itself ignores weights.
//
// The n x n distances are accumulated slice by slice from the spill (k rows read at once), in
// double, before the first slice is aggregated. Ties between scores are broken by canonical
// order (robust_aggregator.h), so the selection and the mean are order-independent.
// Registered as "multi_krum". Not thread-safe.
#pragma once

#include <string>
#include <vector>

#include "coordinator/aggregation/robust_aggregator.h"

namespace shoal::coordinator {

class MultiKrum final : public RobustAggregator {
 public:
  static constexpr const char* kName = "multi_krum";
  std::string name() const override { return kName; }

  // The number of updates averaged out of n with f Byzantine and `m` configured (0 = n - f).
  static size_t Selected(size_t n, int f, int m);

 protected:
  Status Prepare() const override;
  void CombineSlice(const float* rows, size_t k, size_t n, double* out) const override;

 private:
  mutable std::vector<size_t> chosen_;  // canonical rows averaged, ascending
  mutable double chosen_weight_ = 0;
};

}  // namespace shoal::coordinator
