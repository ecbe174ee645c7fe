#include "coordinator/aggregation/fed_avg.h"

#include <cmath>
#include <cstring>

#include "base/malloc_tuning.h"

namespace shoal::coordinator {

namespace {
constexpr double kFixedScale = 4294967296.0;  // 2^32
constexpr double kFixedLimit = 1073741824.0;  // 2^30: |value| * 2^32 stays far inside int64
// Bound on |accumulator element| in exact mode: below it, adding one more value (< 2^62 in
// fixed point) cannot overflow int64.
constexpr int64_t kFixedAccLimit = int64_t{1} << 62;

// 1 when `v` is NaN or +-Inf (all 8 exponent bits set), else 0.
inline uint32_t NonFiniteBits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
}
}  // namespace

void FedAvg::Begin(const model::ModelSpec& spec, bool exact) {
  spec_ = spec;
  exact_ = exact;
  size_ = static_cast<size_t>(spec.total_numel());
  if (exact) {
    FreeStorage(acc_);
    fixed_acc_.assign(size_, 0);
  } else {
    FreeStorage(fixed_acc_);
    acc_.assign(size_, 0.0f);
  }
  total_samples_ = 0;
  updates_ = 0;
}

Status FedAvg::Fold(const float* delta, size_t count, int64_t weight) {
  if (count != size_) {
    return InvalidArgument("update has " + std::to_string(count) + " values, model has " +
                           std::to_string(size_));
  }
  if (weight <= 0) {
    return InvalidArgument("update sample count " + std::to_string(weight) + " is not positive");
  }
  // The round's total is checked, never wrapped: a wrapped (negative or tiny) total would scale
  // the aggregate by an arbitrary factor in Finish.
  int64_t total = 0;
  if (__builtin_add_overflow(total_samples_, weight, &total)) {
    return Rejected("update sample count " + std::to_string(weight) +
                    " would overflow the round's total of " + std::to_string(total_samples_));
  }
  const float w = static_cast<float>(weight);
  // Validate fully before touching the accumulator, so a rejected update leaves no trace. A
  // float is NaN or Inf exactly when its 8 exponent bits are all ones; these branch-free scans
  // vectorize, unlike std::isfinite. The fold below then does the same arithmetic as always.
  uint32_t any_bad = 0;
  if (exact_) {
    for (size_t i = 0; i < count; ++i) any_bad |= NonFiniteBits(delta[i]);
  } else {
    // What each accumulator element would become: a finite delta can still overflow to Inf
    // once weighted (3e38 x 2 samples) or summed with the others.
    const float* acc = acc_.data();
    for (size_t i = 0; i < count; ++i) any_bad |= NonFiniteBits(acc[i] + w * delta[i]);
  }
  if (any_bad != 0) return NonFiniteError(delta, count, w, weight);
  if (exact_) {
    const int64_t* acc = fixed_acc_.data();
    for (size_t i = 0; i < count; ++i) {
      if (std::fabs(static_cast<double>(w * delta[i])) >= kFixedLimit) {
        return Rejected("update value " + std::to_string(delta[i]) + " at " +
                        spec_.ElementName(static_cast<int64_t>(i)) +
                        " is too large for deterministic aggregation");
      }
      // |acc| < 2^62 holds before (checked here for every fold) and |q| < 2^62, so the sum
      // cannot overflow int64.
      const int64_t q = std::llround(static_cast<double>(w * delta[i]) * kFixedScale);
      if (std::llabs(acc[i] + q) >= kFixedAccLimit) {
        return Rejected("update value " + std::to_string(delta[i]) + " at " +
                        spec_.ElementName(static_cast<int64_t>(i)) +
                        " would overflow the round's fixed-point sum");
      }
    }
    int64_t* __restrict out = fixed_acc_.data();
    for (size_t i = 0; i < count; ++i) {
      out[i] += std::llround(static_cast<double>(w * delta[i]) * kFixedScale);
    }
  } else {
    float* __restrict acc = acc_.data();
    for (size_t i = 0; i < count; ++i) acc[i] += w * delta[i];
  }
  total_samples_ = total;
  ++updates_;
  return Status::Ok();
}

// The slow path once a scan found a bad value: names the first one and why it is bad.
Status FedAvg::NonFiniteError(const float* delta, size_t count, float w, int64_t weight) const {
  for (size_t i = 0; i < count; ++i) {
    const bool value_bad = !std::isfinite(delta[i]);
    const bool weighted_bad = !std::isfinite(w * delta[i]);
    const bool sum_bad = !exact_ && !std::isfinite(acc_[i] + w * delta[i]);
    if (!value_bad && !weighted_bad && !sum_bad) continue;
    const std::string where = "update " + spec_.ElementName(static_cast<int64_t>(i));
    if (value_bad) return Rejected(where + " has a non-finite value");
    if (weighted_bad) {
      return Rejected(where + " value " + std::to_string(delta[i]) +
                      " overflows float when weighted by " + std::to_string(weight) + " samples");
    }
    return Rejected(where + " value " + std::to_string(delta[i]) +
                    " would overflow the round's running sum to a non-finite value");
  }
  return Rejected("update has a non-finite value");  // not reached: the scan found one
}

Status FedAvg::AggregateRange(size_t begin, size_t n, double* out) const {
  if (updates_ == 0 || total_samples_ <= 0) return InvalidArgument("no update to aggregate");
  if (begin > size_ || n > size_ - begin) {
    return InvalidArgument("aggregate range [" + std::to_string(begin) + ", +" + std::to_string(n) +
                           ") is outside the model's " + std::to_string(size_) + " values");
  }
  const double inv = 1.0 / static_cast<double>(total_samples_);
  if (exact_) {
    const double inv_fixed = inv / kFixedScale;
    const int64_t* acc = fixed_acc_.data() + begin;
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(acc[i]) * inv_fixed;
  } else {
    const float* acc = acc_.data() + begin;
    for (size_t i = 0; i < n; ++i) out[i] = acc[i] * inv;
  }
  return Status::Ok();
}

std::vector<double> ReferenceFedAvg(const std::vector<float>& global,
                                    const std::vector<std::vector<float>>& deltas,
                                    const std::vector<int64_t>& samples) {
  double total = 0;
  for (int64_t n : samples) total += static_cast<double>(n);
  std::vector<double> out(global.begin(), global.end());
  for (size_t i = 0; i < global.size(); ++i) {
    double s = 0;
    for (size_t k = 0; k < deltas.size(); ++k) s += static_cast<double>(samples[k]) * deltas[k][i];
    out[i] += s / total;
  }
  return out;
}

}  // namespace shoal::coordinator
