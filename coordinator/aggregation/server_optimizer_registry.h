// Server optimizers by name: the factory behind the config key strategy.server_optimizer.
// Explicit registration for the reason given in aggregator_registry.h (a static library drops
// self-registering object files nothing references): a new optimizer is one file plus one line
// in RegisterBuiltinServerOptimizers.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/server_optimizer.h"

namespace shoal::coordinator {

using ServerOptimizerFactory =
    std::function<std::unique_ptr<ServerOptimizer>(const ServerOptimizerParams&)>;

class ServerOptimizerRegistry {
 public:
  // Adds `name`; InvalidArgument when the name is empty or already taken.
  Status Register(const std::string& name, ServerOptimizerFactory factory);
  // A new optimizer registered as `name` with `params`; InvalidArgument listing the registered
  // names when there is none.
  Result<std::unique_ptr<ServerOptimizer>> Create(const std::string& name,
                                                  const ServerOptimizerParams& params) const;
  bool Contains(const std::string& name) const { return factories_.count(name) != 0; }
  // "a, b, c": for error messages.
  std::string NamesList() const;

 private:
  std::map<std::string, ServerOptimizerFactory> factories_;
};

// Registers sgd, momentum, adam, yogi and adagrad (server_optimizers.h).
void RegisterBuiltinServerOptimizers(ServerOptimizerRegistry& registry);

// The registry holding the built-in optimizers, built on first use (thread-safe).
const ServerOptimizerRegistry& BuiltinServerOptimizers();

}  // namespace shoal::coordinator
