// The client-algorithm seam: what a worker's local training adds to plain minibatch SGD.
//
// The trainer (trainer.cc) calls Begin once per round with the net's parameters (holding the
// round's global weights, in spec order) and the flat global weights, which stay unchanged
// while training runs; then AdjustGradients after every backward pass, before the optimizer's
// step. "sgd" changes nothing (FedAvg's local training); "fedprox" adds the proximal term's
// gradient (fed_prox.cc). An algorithm is one file plus one line in
// RegisterBuiltinClientAlgorithms (client_algorithm.cc); the coordinator's strategy.client
// names it and every TrainTask carries the name and its parameters.
// Not thread-safe: used by the training thread of one round.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal::worker {

// Parameters of the client algorithms (TrainTask fields; each algorithm reads those it uses).
struct ClientAlgorithmParams {
  double proximal_mu = 0;  // fedprox: mu of the proximal term mu/2 ||w - w_global||^2
};

class ClientAlgorithm {
 public:
  virtual ~ClientAlgorithm() = default;
  virtual std::string name() const = 0;
  // Starts a round. `params` are the net's trainable tensors in spec order, `global` the round's
  // flat global weights (params' sizes summed; outlives the round's training).
  // InvalidArgument when they do not fit each other.
  virtual Status Begin(const std::vector<torch::Tensor>& params,
                       const std::vector<float>& global) = 0;
  // Changes the gradients of `params` (as given to Begin) after a backward pass; a parameter
  // without a gradient is left alone.
  virtual void AdjustGradients(const std::vector<torch::Tensor>& params) = 0;
};

using ClientAlgorithmFactory =
    std::function<std::unique_ptr<ClientAlgorithm>(const ClientAlgorithmParams&)>;

class ClientAlgorithmRegistry {
 public:
  // Adds `name`; InvalidArgument when the name is empty or already taken.
  Status Register(const std::string& name, ClientAlgorithmFactory factory);
  // InvalidArgument listing the registered names when `name` is not one of them.
  Result<std::unique_ptr<ClientAlgorithm>> Create(const std::string& name,
                                                  const ClientAlgorithmParams& params) const;
  bool Contains(const std::string& name) const { return factories_.count(name) != 0; }
  std::string NamesList() const;

 private:
  std::map<std::string, ClientAlgorithmFactory> factories_;
};

// "sgd" and "fedprox".
void RegisterBuiltinClientAlgorithms(ClientAlgorithmRegistry& registry);
const ClientAlgorithmRegistry& BuiltinClientAlgorithms();

std::unique_ptr<ClientAlgorithm> MakeFedProx(const ClientAlgorithmParams& params);

}  // namespace shoal::worker
