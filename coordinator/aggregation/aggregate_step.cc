#include "coordinator/aggregation/aggregate_step.h"

#include <algorithm>
#include <string>
#include <vector>

namespace shoal::coordinator {

Result<model::Weights> ApplyAggregate(const Aggregator& aggregator, const model::Weights& global) {
  if (aggregator.updates() == 0) return InvalidArgument("no update to aggregate");
  const size_t size = global.data.size();
  if (size != aggregator.size()) {
    return InvalidArgument("the global model has " + std::to_string(size) +
                           " values, the round's updates " + std::to_string(aggregator.size()));
  }
  model::Weights out;
  out.spec = global.spec;
  out.data.resize(size);
  std::vector<double> delta(std::min(size, kAggregateSlice));
  for (size_t begin = 0; begin < size; begin += kAggregateSlice) {
    const size_t n = std::min(kAggregateSlice, size - begin);
    SHOAL_RETURN_IF_ERROR(aggregator.AggregateRange(begin, n, delta.data()));
    const float* g = global.data.data() + begin;
    float* o = out.data.data() + begin;
    for (size_t i = 0; i < n; ++i) o[i] = static_cast<float>(g[i] + delta[i]);
  }
  return out;
}

}  // namespace shoal::coordinator
