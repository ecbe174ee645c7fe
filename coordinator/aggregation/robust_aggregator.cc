#include "coordinator/aggregation/robust_aggregator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <string_view>
#include <tuple>

#include "base/malloc_tuning.h"

namespace shoal::coordinator {

namespace {
// Values of an update kept in memory for ordering ties of the hash (64 bytes per update).
constexpr size_t kHeadValues = 16;
}  // namespace

void RobustAggregator::Begin(const model::ModelSpec& spec, bool /*deterministic*/) {
  // Always order-independent (canonical order), so `deterministic` changes nothing.
  spec_ = spec;
  size_ = static_cast<size_t>(spec.total_numel());
  total_samples_ = 0;
  weights_.clear();
  keys_.clear();
  verdicts_.clear();
  order_.clear();
  prepared_ = false;
  (void)spill_.Clear();  // a failure to truncate shows at the next Append
}

void RobustAggregator::Release() {
  (void)spill_.Clear();
  FreeStorage(rows_);
  prepared_ = false;
}

Status RobustAggregator::Fold(const float* delta, size_t count, int64_t weight) {
  if (count != size_) {
    return InvalidArgument("update has " + std::to_string(count) + " values, model has " +
                           std::to_string(size_));
  }
  if (weight <= 0) {
    return InvalidArgument("update sample count " + std::to_string(weight) + " is not positive");
  }
  if (spill_.updates() >= static_cast<size_t>(kMaxRobustUpdates)) {
    return Rejected(name() + " takes at most " + std::to_string(kMaxRobustUpdates) +
                    " updates per round");
  }
  int64_t total = 0;
  if (__builtin_add_overflow(total_samples_, weight, &total)) {
    return Rejected("update sample count " + std::to_string(weight) +
                    " would overflow the round's total of " + std::to_string(total_samples_));
  }
  // NaN would make every comparison (selection, distances) meaningless; Inf every distance.
  // Branch-free scan (vectorizes), then the slow path names the element.
  uint32_t any_bad = 0;
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &delta[i], sizeof(bits));
    any_bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (any_bad != 0) {
    for (size_t i = 0; i < count; ++i) {
      if (!std::isfinite(delta[i])) {
        return Rejected("update " + spec_.ElementName(static_cast<int64_t>(i)) +
                        " has a non-finite value");
      }
    }
  }
  if (!spill_.is_open() || spill_.values() != size_) {
    if (options_.spill_dir.empty()) return Internal(name() + ": no spill directory configured");
    SHOAL_RETURN_IF_ERROR(spill_.Open(options_.spill_dir, size_));
  }
  SHOAL_RETURN_IF_ERROR(spill_.Append(delta));
  SortKey key;
  key.hash = std::hash<std::string_view>{}(
      std::string_view(reinterpret_cast<const char*>(delta), count * sizeof(float)));
  key.weight = weight;
  key.head.resize(std::min(count, kHeadValues));
  std::memcpy(key.head.data(), delta, key.head.size() * sizeof(float));
  keys_.push_back(std::move(key));
  weights_.push_back(weight);
  verdicts_.emplace_back();
  total_samples_ = total;
  prepared_ = false;
  return Status::Ok();
}

size_t RobustAggregator::RowWidth() const {
  const size_t k = std::max<size_t>(1, spill_.updates());
  return std::max<size_t>(1, kRobustReadBytes / (k * sizeof(float)));
}

Status RobustAggregator::ReadRows(size_t begin, size_t n, float* rows) const {
  for (size_t r = 0; r < order_.size(); ++r) {
    SHOAL_RETURN_IF_ERROR(spill_.Read(order_[r], begin, n, rows + r * n));
  }
  return Status::Ok();
}

Status RobustAggregator::EnsurePrepared() const {
  if (prepared_) return Status::Ok();
  order_.resize(keys_.size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  std::stable_sort(order_.begin(), order_.end(), [&](size_t a, size_t b) {
    return std::tie(keys_[a].hash, keys_[a].weight, keys_[a].head) <
           std::tie(keys_[b].hash, keys_[b].weight, keys_[b].head);
  });
  for (auto& v : verdicts_) v = UpdateVerdict{};
  SHOAL_RETURN_IF_ERROR(Prepare());
  prepared_ = true;
  return Status::Ok();
}

Status RobustAggregator::AggregateRange(size_t begin, size_t n, double* out) const {
  if (spill_.updates() == 0) return InvalidArgument("no update to aggregate");
  if (begin > size_ || n > size_ - begin) {
    return InvalidArgument("aggregate range [" + std::to_string(begin) + ", +" + std::to_string(n) +
                           ") is outside the model's " + std::to_string(size_) + " values");
  }
  SHOAL_RETURN_IF_ERROR(EnsurePrepared());
  const size_t k = spill_.updates();
  const size_t width = RowWidth();
  rows_.resize(k * std::min(width, n));
  for (size_t done = 0; done < n; done += width) {
    const size_t w = std::min(width, n - done);
    SHOAL_RETURN_IF_ERROR(ReadRows(begin + done, w, rows_.data()));
    CombineSlice(rows_.data(), k, w, out + done);
  }
  return Status::Ok();
}

}  // namespace shoal::coordinator
