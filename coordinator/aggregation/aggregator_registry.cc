#include "coordinator/aggregation/aggregator_registry.h"

#include <utility>

#include "coordinator/aggregation/coordinate_median.h"
#include "coordinator/aggregation/fed_avg.h"
#include "coordinator/aggregation/multi_krum.h"
#include "coordinator/aggregation/trimmed_mean.h"

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
  // The robust aggregators (issue #23) keep the round's updates in a spill file; the round
  // engine configures them (RobustAggregator::Configure) before their first round.
  (void)registry.Register(TrimmedMean::kName, [] { return std::make_unique<TrimmedMean>(); });
  (void)registry.Register(CoordinateMedian::kName,
                          [] { return std::make_unique<CoordinateMedian>(); });
  (void)registry.Register(MultiKrum::kName, [] { return std::make_unique<MultiKrum>(); });
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
