#include "coordinator/aggregation/multi_krum.h"

#include <algorithm>
#include <numeric>

namespace shoal::coordinator {

size_t MultiKrum::Selected(size_t n, int f, int m) {
  const size_t cap = n - static_cast<size_t>(f);
  return m <= 0 ? cap : std::min(cap, static_cast<size_t>(m));
}

Status MultiKrum::Prepare() const {
  const size_t n = order().size();
  const int f = options().byzantine;
  if (f < 0 || n < 2 * static_cast<size_t>(f) + 3) {
    return InvalidArgument("multi_krum with strategy.byzantine=" + std::to_string(f) +
                           " needs at least " + std::to_string(2 * f + 3) +
                           " updates, the round has " + std::to_string(n));
  }
  // Pairwise squared distances, slice by slice.
  std::vector<double> dist(n * n, 0.0);
  const size_t width = RowWidth();
  std::vector<float> rows(n * std::min(width, size()));
  for (size_t begin = 0; begin < size(); begin += width) {
    const size_t w = std::min(width, size() - begin);
    SHOAL_RETURN_IF_ERROR(ReadRows(begin, w, rows.data()));
    for (size_t a = 0; a < n; ++a) {
      const float* x = rows.data() + a * w;
      for (size_t b = a + 1; b < n; ++b) {
        const float* y = rows.data() + b * w;
        double s = 0;
        for (size_t j = 0; j < w; ++j) {
          const double d = static_cast<double>(x[j]) - y[j];
          s += d * d;
        }
        dist[a * n + b] += s;
      }
    }
  }
  // Score: the n - f - 2 smallest distances to the others, summed smallest first.
  const size_t nearest = n - static_cast<size_t>(f) - 2;
  std::vector<double> scores(n);
  std::vector<double> others;
  for (size_t a = 0; a < n; ++a) {
    others.clear();
    for (size_t b = 0; b < n; ++b) {
      if (b != a) others.push_back(a < b ? dist[a * n + b] : dist[b * n + a]);
    }
    std::sort(others.begin(), others.end());
    scores[a] = std::accumulate(others.begin(), others.begin() + nearest, 0.0);
    verdict(a).score = scores[a];
  }
  std::vector<size_t> rank(n);
  std::iota(rank.begin(), rank.end(), size_t{0});
  std::stable_sort(rank.begin(), rank.end(),
                   [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  const size_t m = Selected(n, f, options().multi_krum_m);
  chosen_.assign(rank.begin(), rank.begin() + m);
  std::sort(chosen_.begin(), chosen_.end());
  chosen_weight_ = 0;
  for (size_t a = 0; a < n; ++a) verdict(a).selected = false;
  for (size_t r : chosen_) {
    verdict(r).selected = true;
    chosen_weight_ += static_cast<double>(weight(r));
  }
  return Status::Ok();
}

void MultiKrum::CombineSlice(const float* rows, size_t /*k*/, size_t n, double* out) const {
  std::fill(out, out + n, 0.0);
  for (size_t r : chosen_) {
    const double w = static_cast<double>(weight(r)) / chosen_weight_;
    const float* x = rows + r * n;
    for (size_t j = 0; j < n; ++j) out[j] += w * x[j];
  }
}

}  // namespace shoal::coordinator
