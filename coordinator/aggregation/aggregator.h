// The aggregation seam: how the round engine turns the round's accepted updates into the next
// global model. The engine never holds more than a few updates at once (uploads are admitted a
// slot at a time and freed once folded), so an aggregator is a streaming state machine:
//   Begin (the round's model layout) -> Fold (one update, as it arrives) ... -> AggregateRange
//   (the round's aggregated delta, slice by slice).
// The aggregated delta is what the round proposes to move the global model by (for FedAvg the
// weighted mean of the updates); what the global model then becomes is the server step's
// business (ApplyAggregate in aggregate_step.h: global + delta today), so aggregators and
// server-side update rules compose.
// An aggregator that needs every update at once (median, trimmed mean, Multi-Krum) keeps what
// it needs itself; the contract stays the same for the engine.
//
// Updates are deltas (local - global), each with a weight: the worker's training sample count
// as the round engine admits it (at most what the worker declared before the round, capped by
// strategy.max_weight_ratio x the median of the selected workers' declared counts).
// `deterministic` asks for an aggregate that does not depend on the order updates arrive in
// (bit-identical results for the same updates); an implementation whose result is always
// order-independent may ignore it.
//
// Implementations register a factory under a name in an AggregatorRegistry
// (aggregator_registry.h); the config key strategy.aggregator picks one by that name.
// Not thread-safe: an aggregator is owned and used by the round engine's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"
#include "model/weights.h"

namespace shoal::coordinator {

class Aggregator {
 public:
  virtual ~Aggregator() = default;

  // The name it is registered under (recorded in logs).
  virtual std::string name() const = 0;
  // Starts a round for models of `spec`, discarding whatever the previous round folded.
  virtual void Begin(const model::ModelSpec& spec, bool deterministic) = 0;
  // Validates one update of `count` values weighted by `weight` (> 0) and only then folds it.
  // On error (InvalidArgument / Rejected naming the problem) the aggregator is unchanged, so
  // the engine can reject that update and keep the round. A sum of weights that would overflow
  // int64 is an error, never wrapped.
  virtual Status Fold(const float* delta, size_t count, int64_t weight) = 0;
  // Writes the aggregated delta of the model elements [begin, begin + n) to out[0..n), in
  // double so that the server step adds it to the float global model with a single rounding.
  // InvalidArgument when nothing was folded or the range is outside the round's model. The
  // engine asks slice by slice (kAggregateSlice elements at a time), so an aggregator that
  // keeps every update (spilled to disk) only needs one slice of each in memory at once.
  virtual Status AggregateRange(size_t begin, size_t n, double* out) const = 0;

  // The number of values in an update of the round (the model's, set by Begin).
  virtual size_t size() const = 0;
  // Totals of the updates folded since Begin: the sum of their weights (the round's record and
  // train-loss weighting) and their number.
  virtual int64_t total_samples() const = 0;
  virtual int updates() const = 0;
};

}  // namespace shoal::coordinator
