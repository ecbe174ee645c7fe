// The aggregation seam: how the round engine turns the round's accepted updates into the next
// global model. The engine never holds more than a few updates at once (uploads are admitted a
// slot at a time and freed once folded), so an aggregator is a streaming state machine:
//   Begin (the round's model layout) -> Fold (one update, as it arrives) ... -> Finish (the new
//   global weights from the current ones).
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
  // The new global weights from `global` and the updates folded since Begin;
  // InvalidArgument when nothing was folded or `global` does not fit the round's spec. The
  // engine checks the result for non-finite values before committing it.
  virtual Result<model::Weights> Finish(const model::Weights& global) const = 0;

  // Totals of the updates folded since Begin: the sum of their weights (the round's record and
  // train-loss weighting) and their number.
  virtual int64_t total_samples() const = 0;
  virtual int updates() const = 0;
};

}  // namespace shoal::coordinator
