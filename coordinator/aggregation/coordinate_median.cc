#include "coordinator/aggregation/coordinate_median.h"

#include <algorithm>

namespace shoal::coordinator {

void CoordinateMedian::CombineSlice(const float* rows, size_t k, size_t n, double* out) const {
  column_.resize(k);
  const size_t mid = k / 2;
  for (size_t j = 0; j < n; ++j) {
    for (size_t r = 0; r < k; ++r) column_[r] = rows[r * n + j];
    std::nth_element(column_.begin(), column_.begin() + mid, column_.end());
    const double upper = column_[mid];
    if (k % 2 == 1) {
      out[j] = upper;
    } else {
      // After nth_element every value before `mid` is <= it: the lower middle is their max.
      const double lower = *std::max_element(column_.begin(), column_.begin() + mid);
      out[j] = 0.5 * (lower + upper);
    }
  }
}

}  // namespace shoal::coordinator
