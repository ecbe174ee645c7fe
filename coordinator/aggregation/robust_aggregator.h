// The common part of the robust aggregators (trimmed_mean.h, coordinate_median.h,
// multi_krum.h): aggregators that need every update of the round at once.
//
// Fold checks an update (its size, a positive weight, the round's int64 total, every value
// finite, at most kMaxRobustUpdates per round) and appends it to the round's spill file
// (update_spill.h): the heap never holds the round's updates. AggregateRange reads the same
// slice of every update into one buffer (k rows x w values, w <= n, sized so the buffer stays
// under kRobustReadBytes) and hands it to CombineSlice. RSS is thus a few model sizes (the
// engine's global model and the one it builds) plus that buffer, whatever the model size.
//
// Order independence (run.deterministic, and always): AggregateRange visits the updates in a
// canonical order, by their content (a 64-bit hash of the bytes, then the weight, then the
// first values), never by arrival. Each combiner computes the same thing in the same order for
// the same set of updates, so the result is bit-identical whatever order they arrived in.
// (Two different updates with the same hash, weight and first values would keep their arrival
// order: a chance of 2^-64, and only the last bits of a sum could differ.)
//
// The round's spill is emptied (its disk space released) by Release() - the engine calls it
// once the round's aggregate is applied or the round is abandoned - and at the next Begin.
// Not thread-safe: owned by the round engine's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/aggregator.h"
#include "coordinator/aggregation/update_spill.h"
#include "model/weights.h"

namespace shoal::coordinator {

// The most updates a robust aggregator takes in one round: Multi-Krum's distance matrix is
// k x k doubles (8 MiB at 1,024) and every slice read is k rows.
constexpr int kMaxRobustUpdates = 1024;
// The most bytes AggregateRange reads from the spill at once (k rows of a sub-slice).
constexpr size_t kRobustReadBytes = size_t{16} << 20;

// What the robust aggregators are configured with (strategy.* keys, coordinator/config.h).
struct RobustOptions {
  std::string spill_dir;       // strategy.spill_dir, else the run directory
  double trim_fraction = 0.1;  // strategy.trim_fraction (trimmed_mean)
  int byzantine = 0;           // strategy.byzantine = f (multi_krum)
  int multi_krum_m = 0;        // strategy.multi_krum_m (0 = n - f)
};

// What a robust aggregator did to each update of the round (for metrics.jsonl and the API),
// indexed like the folds (arrival order: the i-th successful Fold is entry i).
struct UpdateVerdict {
  double trimmed_share = 0;  // trimmed_mean: the share of coordinates where it was cut off
  bool selected = true;      // multi_krum: among the m averaged
  double score = 0;          // multi_krum: sum of the n-f-2 smallest squared distances
};

class RobustAggregator : public Aggregator {
 public:
  // Set before Begin; the spill directory must be set (the round engine sets it to
  // strategy.spill_dir or the run directory).
  void Configure(const RobustOptions& options) { options_ = options; }
  const RobustOptions& options() const { return options_; }

  void Begin(const model::ModelSpec& spec, bool deterministic) override;
  Status Fold(const float* delta, size_t count, int64_t weight) override;
  Status AggregateRange(size_t begin, size_t n, double* out) const override;
  size_t size() const override { return size_; }
  int64_t total_samples() const override { return total_samples_; }
  int updates() const override { return static_cast<int>(spill_.updates()); }

  // Empties the round's spill file (the disk space is released); nothing to aggregate after.
  void Release();
  // Per fold, what the aggregator did with it (filled by AggregateRange; defaults before).
  const std::vector<UpdateVerdict>& verdicts() const { return verdicts_; }
  // The spill file's current size in bytes (tests, the memory bench).
  uint64_t spill_bytes() const { return spill_.bytes(); }

 protected:
  // Combines one slice: rows[r * n + j] is value j of the r-th update in canonical order
  // (fold index order()[r], weight weight(r)); writes out[0..n).
  virtual void CombineSlice(const float* rows, size_t k, size_t n, double* out) const = 0;
  // Called once per round before the first CombineSlice, with the canonical order set (Multi-
  // Krum computes its scores here, reading the spill slice by slice with ReadRows).
  virtual Status Prepare() const { return Status::Ok(); }

  // Reads values [begin, begin + n) of every update, in canonical order, into rows (k x n).
  Status ReadRows(size_t begin, size_t n, float* rows) const;
  // Values per sub-slice so that k rows fit in kRobustReadBytes.
  size_t RowWidth() const;
  const std::vector<size_t>& order() const { return order_; }
  int64_t weight(size_t r) const { return weights_[order_[r]]; }
  // Verdict of the r-th update in canonical order.
  UpdateVerdict& verdict(size_t r) const { return verdicts_[order_[r]]; }

 private:
  Status EnsurePrepared() const;

  RobustOptions options_;
  model::ModelSpec spec_;
  size_t size_ = 0;
  UpdateSpill spill_;
  int64_t total_samples_ = 0;
  std::vector<int64_t> weights_;  // by fold index
  struct SortKey {
    uint64_t hash = 0;
    int64_t weight = 0;
    std::vector<uint32_t> head;  // the first values' bits
  };
  std::vector<SortKey> keys_;  // by fold index
  mutable bool prepared_ = false;
  mutable std::vector<size_t> order_;  // canonical order -> fold index
  mutable std::vector<UpdateVerdict> verdicts_;
  mutable std::vector<float> rows_;  // the slice buffer, reused
};

}  // namespace shoal::coordinator
