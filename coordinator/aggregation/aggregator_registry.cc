#include "coordinator/aggregation/aggregator_registry.h"

#include <utility>

#include "coordinator/aggregation/fed_avg.h"

namespace shoal::coordinator {

Status AggregatorRegistry::Register(const std::string& name, AggregatorFactory factory) {
  if (name.empty()) return InvalidArgument("an aggregator needs a name");
  if (!factory) return InvalidArgument("aggregator '" + name + "' has no factory");
  if (!factories_.emplace(name, std::move(factory)).second) {
    return InvalidArgument("aggregator '" + name + "' is already registered");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Aggregator>> AggregatorRegistry::Create(const std::string& name) const {
  auto it = factories_.find(name);
  if (it == factories_.end()) {
    return InvalidArgument("unknown aggregator '" + name + "' (registered: " + NamesList() + ")");
  }
  return it->second();
}

std::vector<std::string> AggregatorRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, factory] : factories_) names.push_back(name);
  return names;
}

std::string AggregatorRegistry::NamesList() const {
  std::string out;
  for (const auto& [name, factory] : factories_) out += (out.empty() ? "" : ", ") + name;
  return out;
}

void RegisterBuiltinAggregators(AggregatorRegistry& registry) {
  // Names are distinct constants here, so registration cannot fail.
  (void)registry.Register(FedAvg::kName, [] { return std::make_unique<FedAvg>(); });
}

const AggregatorRegistry& BuiltinAggregators() {
  static const AggregatorRegistry* registry = [] {
    auto* r = new AggregatorRegistry;
    RegisterBuiltinAggregators(*r);
    return r;
  }();
  return *registry;
}

}  // namespace shoal::coordinator
