// The server step: the next global model from the current one and the round's aggregated delta.
//
// Today the step is plain: next = global + delta (FedAvg's server update with a learning rate
// of 1), computed in double and rounded once to float. Server-side update rules (a server
// learning rate, momentum, adaptive optimizers) take the same slices of the aggregated delta
// and replace this step; the aggregator (aggregator.h) does not change.
#pragma once

#include <cstddef>

#include "base/status.h"
#include "coordinator/aggregation/aggregator.h"
#include "model/weights.h"

namespace shoal::coordinator {

// Elements per AggregateRange call: 64 Ki doubles (512 KiB) stay in L2 while the slice is
// added to the global model, and bound what a spilling aggregator maps at once per update.
constexpr size_t kAggregateSlice = size_t{1} << 16;

// global + the aggregated delta, slice by slice; InvalidArgument when `global` does not fit
// the round's model or the aggregator has nothing folded. The caller checks the result for
// non-finite values before committing it.
Result<model::Weights> ApplyAggregate(const Aggregator& aggregator, const model::Weights& global);

}  // namespace shoal::coordinator
