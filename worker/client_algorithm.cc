#include "worker/client_algorithm.h"

#include <utility>

namespace shoal::worker {
namespace {

// Plain local SGD (FedAvg): the gradients as the loss made them.
class LocalSgd final : public ClientAlgorithm {
 public:
  std::string name() const override { return "sgd"; }
  Status Begin(const std::vector<torch::Tensor>&, const std::vector<float>&) override {
    return Status::Ok();
  }
  void AdjustGradients(const std::vector<torch::Tensor>&) override {}
};

}  // namespace

Status ClientAlgorithmRegistry::Register(const std::string& name, ClientAlgorithmFactory factory) {
  if (name.empty()) return InvalidArgument("a client algorithm needs a name");
  if (!factory) return InvalidArgument("client algorithm '" + name + "' has no factory");
  if (!factories_.emplace(name, std::move(factory)).second) {
    return InvalidArgument("client algorithm '" + name + "' is already registered");
  }
  return Status::Ok();
}

Result<std::unique_ptr<ClientAlgorithm>> ClientAlgorithmRegistry::Create(
    const std::string& name, const ClientAlgorithmParams& params) const {
  auto it = factories_.find(name);
  if (it == factories_.end()) {
    return InvalidArgument("unknown client algorithm '" + name + "' (registered: " + NamesList() +
                           ")");
  }
  return it->second(params);
}

std::string ClientAlgorithmRegistry::NamesList() const {
  std::string out;
  for (const auto& [name, factory] : factories_) out += (out.empty() ? "" : ", ") + name;
  return out;
}

void RegisterBuiltinClientAlgorithms(ClientAlgorithmRegistry& registry) {
  (void)registry.Register("sgd", [](const ClientAlgorithmParams&) {
    return std::unique_ptr<ClientAlgorithm>(std::make_unique<LocalSgd>());
  });
  (void)registry.Register("fedprox", MakeFedProx);
}

const ClientAlgorithmRegistry& BuiltinClientAlgorithms() {
  static const ClientAlgorithmRegistry* registry = [] {
    auto* r = new ClientAlgorithmRegistry;
    RegisterBuiltinClientAlgorithms(*r);
    return r;
  }();
  return *registry;
}

}  // namespace shoal::worker
