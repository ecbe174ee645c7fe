// The server step's seam: how the round's aggregated delta (aggregator.h) moves the global model.
//
// Following Reddi et al. 2021 (Adaptive Federated Optimization, Algorithm 2), the aggregated
// delta D (for FedAvg the weighted mean of local - global) is a pseudo-gradient that a server
// optimizer applies with its own learning rate and state. The step runs slice by slice over the
// model (kAggregateSlice elements at a time, in double, rounded once to float), so memory is the
// model, the next model and the optimizer's state, never a model-sized double temporary.
//
// State: an optimizer keeps zero or more model-sized float vectors ("m", "v"), held together as
// one model::Weights whose tensors are those vectors (shape [model size] each), so the model
// store writes, hashes and checks it with each version like the weights themselves
// (store/model_store.h) and a resumed run continues exactly where the killed one stopped.
//
// Implementations are one file each (server_sgd.cc, server_momentum.cc, server_adaptive.cc)
// plus a line in RegisterBuiltinServerOptimizers (server_optimizer_registry.cc); the config key
// strategy.server_optimizer picks one by name. Not thread-safe: owned by the round engine.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/aggregator.h"
#include "model/weights.h"

namespace shoal::coordinator {

// The hyperparameters of every server optimizer (strategy.* keys; each optimizer reads those
// it uses). Defaults are those of plain FedAvg; the presets (config.cc) set the paper's values.
struct ServerOptimizerParams {
  double lr = 1.0;        // strategy.server_lr: eta
  double momentum = 0.0;  // strategy.server_momentum: beta of FedAvgM
  double beta1 = 0.9;     // strategy.beta1: first-moment decay (adam, yogi, adagrad)
  double beta2 = 0.99;    // strategy.beta2: second-moment decay (adam, yogi)
  double tau = 1e-3;      // strategy.tau: adaptivity (the denominator's epsilon; v starts at tau^2)
};

class ServerOptimizer {
 public:
  explicit ServerOptimizer(const ServerOptimizerParams& params) : params_(params) {}
  virtual ~ServerOptimizer() = default;

  // The name it is registered under (strategy.server_optimizer; recorded with each version).
  virtual std::string name() const = 0;
  // The names of the model-sized vectors it keeps, in storage order; empty when stateless.
  virtual std::vector<std::string> state_names() const = 0;

  // Sets the initial state for a model of `size` values (InitialValue of each vector).
  void Reset(size_t size);
  // Replaces the state with `state` as saved with a version. InvalidArgument naming the
  // difference when it is not this optimizer's state for a model of `size` values, or when a
  // value is not finite; the current state is unchanged then.
  Status Restore(size_t size, model::Weights state);
  // The state as saved with a version: tensors named after state_names(), shape [size] each.
  const model::Weights& state() const { return state_; }
  bool stateful() const { return !state_names().empty(); }

  // One slice of the step: out[i] = the next global value of element begin + i from its global
  // value g[i] and the aggregated delta d[i], i < n, updating the state of those elements.
  virtual void StepRange(size_t begin, size_t n, const float* g, const double* d, float* out) = 0;

 protected:
  // The value vector `index` of state_names() starts at (Reset).
  virtual float InitialValue(size_t /*index*/) const { return 0.0f; }
  // Element `begin` of state vector `index`.
  float* slot(size_t index, size_t begin) { return state_.data.data() + index * size_ + begin; }

  const ServerOptimizerParams params_;

 private:
  model::ModelSpec StateSpec(size_t size) const;

  size_t size_ = 0;
  model::Weights state_;
};

// The server step with `optimizer`: the next global model from `global` and the aggregator's
// delta, slice by slice (kAggregateSlice). InvalidArgument when `global` does not fit the
// round's model, the aggregator has nothing folded, or the optimizer's state was not Reset or
// Restored for this model size. The optimizer's state has moved on when this returns Ok: a
// round that is then not committed restores it from the version it started from. The caller
// checks the result for non-finite values before committing it.
Result<model::Weights> ApplyServerStep(const Aggregator& aggregator, const model::Weights& global,
                                       ServerOptimizer& optimizer);

}  // namespace shoal::coordinator
