// "momentum" (FedAvgM, Hsu et al. 2019, "Measuring the Effects of Non-Identical Data
// Distribution"): m = beta m + D; x += eta m. Server momentum damps the oscillation that
// label-skewed silos cause from round to round.
#include <memory>
#include <string>
#include <vector>

#include "coordinator/aggregation/server_optimizers.h"

namespace shoal::coordinator {
namespace {

class MomentumServerOptimizer final : public ServerOptimizer {
 public:
  using ServerOptimizer::ServerOptimizer;
  std::string name() const override { return "momentum"; }
  std::vector<std::string> state_names() const override { return {"m"}; }
  void StepRange(size_t begin, size_t n, const float* g, const double* d, float* out) override {
    const double eta = params_.lr, beta = params_.momentum;
    float* m = slot(0, begin);
    for (size_t i = 0; i < n; ++i) {
      const double mi = beta * m[i] + d[i];
      m[i] = static_cast<float>(mi);
      out[i] = static_cast<float>(g[i] + eta * mi);
    }
  }
};

}  // namespace

std::unique_ptr<ServerOptimizer> MakeMomentumServerOptimizer(const ServerOptimizerParams& params) {
  return std::make_unique<MomentumServerOptimizer>(params);
}

}  // namespace shoal::coordinator
