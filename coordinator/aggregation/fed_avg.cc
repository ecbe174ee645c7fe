#include "coordinator/aggregation/fed_avg.h"

#include <cmath>
#include <cstring>

#include "base/malloc_tuning.h"

namespace shoal::coordinator {

namespace {
constexpr double kFixedScale = 4294967296.0;  // 2^32
constexpr double kFixedLimit = 1073741824.0;  // 2^30: |value| * 2^32 stays far inside int64
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

Status FedAvg::Fold(const float* delta, size_t count, int64_t num_samples) {
  if (count != size_) {
    return InvalidArgument("update has " + std::to_string(count) + " values, model has " +
                           std::to_string(size_));
  }
  if (num_samples <= 0) {
    return InvalidArgument("update sample count " + std::to_string(num_samples) +
                           " is not positive");
  }
  // Validate fully before touching the accumulator. A float is NaN or Inf exactly when its 8
  // exponent bits are all ones; this branch-free scan vectorizes, unlike std::isfinite.
  uint32_t any_bad = 0;
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, delta + i, sizeof(bits));
    any_bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  for (size_t i = 0; any_bad != 0 && i < count; ++i) {  // slow path: name the tensor
    if (!std::isfinite(delta[i])) {
      int64_t off = 0;
      for (const auto& t : spec_.tensors) {
        if (static_cast<int64_t>(i) < off + t.numel()) {
          return Rejected("update tensor '" + t.name + "' has a non-finite value at element " +
                          std::to_string(static_cast<int64_t>(i) - off));
        }
        off += t.numel();
      }
    }
  }
  const float w = static_cast<float>(num_samples);
  if (exact_) {
    for (size_t i = 0; i < count; ++i) {
      if (std::fabs(static_cast<double>(w * delta[i])) >= kFixedLimit) {
        return Rejected("update value " + std::to_string(delta[i]) + " at element " +
                        std::to_string(i) + " is too large for deterministic aggregation");
      }
    }
    int64_t* __restrict acc = fixed_acc_.data();
    for (size_t i = 0; i < count; ++i) {
      acc[i] += std::llround(static_cast<double>(w * delta[i]) * kFixedScale);
    }
  } else {
    float* __restrict acc = acc_.data();
    for (size_t i = 0; i < count; ++i) acc[i] += w * delta[i];
  }
  total_samples_ += num_samples;
  ++updates_;
  return Status::Ok();
}

Result<model::Weights> FedAvg::Finish(const model::Weights& global) const {
  if (updates_ == 0 || total_samples_ <= 0) return InvalidArgument("no update to aggregate");
  if (global.data.size() != size_) {
    return InvalidArgument("global model size does not match the accumulator");
  }
  model::Weights out;
  out.spec = global.spec;
  out.data.resize(size_);
  const double inv = 1.0 / static_cast<double>(total_samples_);
  if (exact_) {
    const double inv_fixed = inv / kFixedScale;
    for (size_t i = 0; i < size_; ++i) {
      out.data[i] =
          static_cast<float>(global.data[i] + static_cast<double>(fixed_acc_[i]) * inv_fixed);
    }
  } else {
    for (size_t i = 0; i < size_; ++i) {
      out.data[i] = static_cast<float>(global.data[i] + acc_[i] * inv);
    }
  }
  return out;
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
