#include "coordinator/aggregation/update_clipping.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace shoal::coordinator {

Result<ClipMode> ParseClipMode(const std::string& s) {
  if (s == "none") return ClipMode::kNone;
  if (s == "fixed") return ClipMode::kFixed;
  if (s == "adaptive") return ClipMode::kAdaptive;
  return InvalidArgument("strategy.clip: '" + s + "' is not none, fixed or adaptive");
}

double NextAdaptiveBound(double bound, size_t under, size_t total, double quantile, double lr) {
  if (total == 0) return bound;
  const double b = static_cast<double>(under) / static_cast<double>(total);
  const double next = bound * std::exp(-lr * (b - quantile));
  return std::min(kMaxClipNorm, std::max(kMinAdaptiveBound, next));
}

ClippingAggregator::ClippingAggregator(std::unique_ptr<Aggregator> inner, double bound)
    : inner_(std::move(inner)), bound_(bound) {}

void ClippingAggregator::Begin(const model::ModelSpec& spec, bool deterministic) {
  inner_->Begin(spec, deterministic);
  records_.clear();
}

Status ClippingAggregator::Fold(const float* delta, size_t count, int64_t weight) {
  if (count != inner_->size()) {
    return InvalidArgument("update has " + std::to_string(count) + " values, model has " +
                           std::to_string(inner_->size()));
  }
  double sq = 0;
  for (size_t i = 0; i < count; ++i) sq += static_cast<double>(delta[i]) * delta[i];
  const double norm = std::sqrt(sq);
  // NaN or Inf anywhere makes the norm non-finite (finite floats square to at most ~1e77).
  if (!std::isfinite(norm)) {
    for (size_t i = 0; i < count; ++i) {
      if (!std::isfinite(delta[i])) {
        return Rejected("update element " + std::to_string(i) + " has a non-finite value");
      }
    }
    return Rejected("update has a non-finite norm");  // not reached: squares of floats fit
  }
  ClipRecord rec{norm, norm > bound_};
  const float* folded = delta;
  if (rec.clipped) {
    const float scale = static_cast<float>(bound_ / norm);
    scaled_.resize(count);
    for (size_t i = 0; i < count; ++i) scaled_[i] = delta[i] * scale;
    folded = scaled_.data();
  }
  SHOAL_RETURN_IF_ERROR(inner_->Fold(folded, count, weight));
  records_.push_back(rec);
  return Status::Ok();
}

size_t ClippingAggregator::under() const {
  size_t n = 0;
  for (const auto& r : records_) n += r.clipped ? 0 : 1;
  return n;
}

}  // namespace shoal::coordinator
