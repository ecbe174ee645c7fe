#include "coordinator/aggregation/trimmed_mean.h"

#include <algorithm>
#include <cmath>

namespace shoal::coordinator {

size_t TrimmedMean::Trimmed(double fraction, size_t k) {
  // fraction < 0.5 (checked with the config), so 2t < k: at least one value is kept.
  const size_t t = static_cast<size_t>(std::floor(fraction * static_cast<double>(k)));
  return 2 * t < k ? t : (k - 1) / 2;
}

void TrimmedMean::CombineSlice(const float* rows, size_t k, size_t n, double* out) const {
  const size_t t = Trimmed(options().trim_fraction, k);
  column_.resize(k);
  const double inv = 1.0 / static_cast<double>(k - 2 * t);
  size_t cut_total = 0;
  std::vector<size_t> cut(k, 0);
  for (size_t j = 0; j < n; ++j) {
    for (size_t r = 0; r < k; ++r) column_[r] = rows[r * n + j];
    if (t > 0) {
      // [0, t) holds the t smallest, [k - t, k) the t largest.
      std::nth_element(column_.begin(), column_.begin() + t, column_.end());
      std::nth_element(column_.begin() + t, column_.begin() + (k - t - 1), column_.end());
      // Verdicts: values strictly outside the kept range were cut (a value tied with a kept
      // one is not counted: which copy was dropped does not matter).
      const float lo = column_[t];
      const float hi = column_[k - t - 1];
      for (size_t r = 0; r < k; ++r) {
        const float v = rows[r * n + j];
        cut[r] += static_cast<size_t>(v < lo || v > hi);
      }
      cut_total += 1;
    }
    double s = 0;
    for (size_t r = t; r < k - t; ++r) s += column_[r];
    out[j] = s * inv;
  }
  if (cut_total == 0) return;
  const double model = static_cast<double>(size());
  for (size_t r = 0; r < k; ++r) verdict(r).trimmed_share += static_cast<double>(cut[r]) / model;
}

}  // namespace shoal::coordinator
