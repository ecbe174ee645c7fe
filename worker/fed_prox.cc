// "fedprox" (Li et al. 2020, Federated Optimization in Heterogeneous Networks): the local
// objective gains mu/2 ||w - w_global||^2, so each step's gradient gains mu (w - w_global),
// which keeps a silo's local model near the global one however far its own data pull it.
// w_global is read in place from the round's flat global weights (views, no copy).
#include <string>
#include <vector>

#include "worker/client_algorithm.h"

namespace shoal::worker {
namespace {

class FedProx final : public ClientAlgorithm {
 public:
  explicit FedProx(double mu) : mu_(mu) {}
  std::string name() const override { return "fedprox"; }

  Status Begin(const std::vector<torch::Tensor>& params,
               const std::vector<float>& global) override {
    global_.clear();
    size_t offset = 0;
    for (const auto& p : params) {
      const auto n = static_cast<size_t>(p.numel());
      if (p.scalar_type() != torch::kFloat32 || n > global.size() - offset) {
        return InvalidArgument("fedprox: the net's parameters do not fit the " +
                               std::to_string(global.size()) + " global values");
      }
      // from_blob takes a non-const pointer; the view is only ever read.
      global_.push_back(torch::from_blob(const_cast<float*>(global.data()) + offset, p.sizes(),
                                         torch::TensorOptions().dtype(torch::kFloat32)));
      offset += n;
    }
    if (offset != global.size()) {
      return InvalidArgument("fedprox: the net has " + std::to_string(offset) +
                             " parameters, the global model " + std::to_string(global.size()));
    }
    return Status::Ok();
  }

  void AdjustGradients(const std::vector<torch::Tensor>& params) override {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size() && i < global_.size(); ++i) {
      torch::Tensor g = params[i].mutable_grad();
      if (!g.defined()) continue;
      g.add_(params[i].detach() - global_[i], mu_);
    }
  }

 private:
  const double mu_;
  std::vector<torch::Tensor> global_;  // views of the round's global weights
};

}  // namespace

std::unique_ptr<ClientAlgorithm> MakeFedProx(const ClientAlgorithmParams& params) {
  return std::make_unique<FedProx>(params.proximal_mu);
}

}  // namespace shoal::worker
