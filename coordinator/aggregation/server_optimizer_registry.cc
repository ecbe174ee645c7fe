#include "coordinator/aggregation/server_optimizer_registry.h"

#include <utility>

#include "coordinator/aggregation/server_optimizers.h"

namespace shoal::coordinator {

Status ServerOptimizerRegistry::Register(const std::string& name, ServerOptimizerFactory factory) {
  if (name.empty()) return InvalidArgument("a server optimizer needs a name");
  if (!factory) return InvalidArgument("server optimizer '" + name + "' has no factory");
  if (!factories_.emplace(name, std::move(factory)).second) {
    return InvalidArgument("server optimizer '" + name + "' is already registered");
  }
  return Status::Ok();
}

Result<std::unique_ptr<ServerOptimizer>> ServerOptimizerRegistry::Create(
    const std::string& name, const ServerOptimizerParams& params) const {
  auto it = factories_.find(name);
  if (it == factories_.end()) {
    return InvalidArgument("unknown server optimizer '" + name + "' (registered: " + NamesList() +
                           ")");
  }
  return it->second(params);
}

std::string ServerOptimizerRegistry::NamesList() const {
  std::string out;
  for (const auto& [name, factory] : factories_) out += (out.empty() ? "" : ", ") + name;
  return out;
}

void RegisterBuiltinServerOptimizers(ServerOptimizerRegistry& registry) {
  // Names are distinct constants here, so registration cannot fail.
  (void)registry.Register("sgd", MakeSgdServerOptimizer);
  (void)registry.Register("momentum", MakeMomentumServerOptimizer);
  (void)registry.Register("adam", MakeAdamServerOptimizer);
  (void)registry.Register("yogi", MakeYogiServerOptimizer);
  (void)registry.Register("adagrad", MakeAdagradServerOptimizer);
}

const ServerOptimizerRegistry& BuiltinServerOptimizers() {
  static const ServerOptimizerRegistry* registry = [] {
    auto* r = new ServerOptimizerRegistry;
    RegisterBuiltinServerOptimizers(*r);
    return r;
  }();
  return *registry;
}

}  // namespace shoal::coordinator
