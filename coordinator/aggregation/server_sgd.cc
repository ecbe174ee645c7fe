// "sgd": x += eta D. With eta = 1 this is ApplyAggregate's float(global + delta) exactly
// (1.0 * d is d in double), so FedAvg's versions do not change.
#include <memory>
#include <string>
#include <vector>

#include "coordinator/aggregation/server_optimizers.h"

namespace shoal::coordinator {
namespace {

class SgdServerOptimizer final : public ServerOptimizer {
 public:
  using ServerOptimizer::ServerOptimizer;
  std::string name() const override { return "sgd"; }
  std::vector<std::string> state_names() const override { return {}; }
  void StepRange(size_t, size_t n, const float* g, const double* d, float* out) override {
    const double eta = params_.lr;
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(g[i] + eta * d[i]);
  }
};

}  // namespace

std::unique_ptr<ServerOptimizer> MakeSgdServerOptimizer(const ServerOptimizerParams& params) {
  return std::make_unique<SgdServerOptimizer>(params);
}

}  // namespace shoal::coordinator
