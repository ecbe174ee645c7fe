// Aggregators by name: the factory behind the config key strategy.aggregator.
//
// Registration is explicit (RegisterBuiltinAggregators, called by BuiltinAggregators) rather
// than by static registration objects: shoal_coordinator is a static library, and the linker
// drops object files nothing references, so a self-registering aggregator in its own .cc would
// silently vanish from the binary. A new aggregator is one file plus one line in
// RegisterBuiltinAggregators.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/aggregator.h"

namespace shoal::coordinator {

using AggregatorFactory = std::function<std::unique_ptr<Aggregator>()>;

class AggregatorRegistry {
 public:
  // Adds `name`; InvalidArgument when the name is empty or already taken (two implementations
  // under one name would make the config ambiguous).
  Status Register(const std::string& name, AggregatorFactory factory);
  // A new aggregator registered as `name`; InvalidArgument listing the registered names when
  // there is none.
  Result<std::unique_ptr<Aggregator>> Create(const std::string& name) const;
  bool Contains(const std::string& name) const { return factories_.count(name) != 0; }
  // Registered names, sorted.
  std::vector<std::string> Names() const;
  // "a, b, c": for error messages.
  std::string NamesList() const;

 private:
  std::map<std::string, AggregatorFactory> factories_;
};

// Registers every aggregator that ships with Shoal: "mean" (FedAvg), "trimmed_mean", "median"
// and "multi_krum" (robust_aggregator.h).
void RegisterBuiltinAggregators(AggregatorRegistry& registry);

// The registry holding the built-in aggregators, built on first use (thread-safe).
const AggregatorRegistry& BuiltinAggregators();

}  // namespace shoal::coordinator
