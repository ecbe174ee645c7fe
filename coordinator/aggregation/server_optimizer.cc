#include "coordinator/aggregation/server_optimizer.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/aggregation/aggregate_step.h"  // kAggregateSlice

namespace shoal::coordinator {

model::ModelSpec ServerOptimizer::StateSpec(size_t size) const {
  model::ModelSpec spec;
  for (const std::string& n : state_names()) {
    spec.tensors.push_back({n, model::DType::kFloat32, {static_cast<int64_t>(size)}});
  }
  return spec;
}

void ServerOptimizer::Reset(size_t size) {
  const std::vector<std::string> names = state_names();
  size_ = size;
  state_.spec = StateSpec(size);
  state_.data.assign(names.size() * size, 0.0f);
  for (size_t k = 0; k < names.size(); ++k) {
    std::fill_n(state_.data.begin() + static_cast<std::ptrdiff_t>(k * size), size, InitialValue(k));
  }
}

Status ServerOptimizer::Restore(size_t size, model::Weights state) {
  const model::ModelSpec want = StateSpec(size);
  if (!(state.spec == want)) {
    return InvalidArgument("server state does not fit server optimizer '" + name() + "' for " +
                           std::to_string(size) + " values: " + state.spec.Diff(want));
  }
  if (state.data.size() != state_names().size() * size) {
    return InvalidArgument("server state holds " + std::to_string(state.data.size()) +
                           " values, expected " + std::to_string(state_names().size() * size));
  }
  if (int64_t bad = state.FirstNonFinite(); bad >= 0) {
    return InvalidArgument("server state has a non-finite value at " + state.spec.ElementName(bad));
  }
  size_ = size;
  state_ = std::move(state);
  return Status::Ok();
}

Result<model::Weights> ApplyServerStep(const Aggregator& aggregator, const model::Weights& global,
                                       ServerOptimizer& optimizer) {
  if (aggregator.updates() == 0) return InvalidArgument("no update to aggregate");
  const size_t size = global.data.size();
  if (size != aggregator.size()) {
    return InvalidArgument("the global model has " + std::to_string(size) +
                           " values, the round's updates " + std::to_string(aggregator.size()));
  }
  if (optimizer.state().data.size() != optimizer.state_names().size() * size) {
    return InvalidArgument("server optimizer '" + optimizer.name() + "' holds state for " +
                           std::to_string(optimizer.state().data.size()) + " values, not for " +
                           std::to_string(size) + " x " +
                           std::to_string(optimizer.state_names().size()));
  }
  model::Weights out;
  out.spec = global.spec;
  out.data.resize(size);
  std::vector<double> delta(std::min(size, kAggregateSlice));
  for (size_t begin = 0; begin < size; begin += kAggregateSlice) {
    const size_t n = std::min(kAggregateSlice, size - begin);
    SHOAL_RETURN_IF_ERROR(aggregator.AggregateRange(begin, n, delta.data()));
    optimizer.StepRange(begin, n, global.data.data() + begin, delta.data(),
                        out.data.data() + begin);
  }
  return out;
}

}  // namespace shoal::coordinator
