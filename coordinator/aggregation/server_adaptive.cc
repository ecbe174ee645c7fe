// "adam", "yogi", "adagrad": the adaptive server optimizers of Reddi et al. 2021 (Algorithm 2).
// They share the first moment and the step and differ only in the second moment v, so they
// share one loop here with the v rule as a template parameter (no per-element virtual call).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/aggregation/server_optimizers.h"

namespace shoal::coordinator {
namespace {

struct AdamRule {
  static constexpr const char* kName = "adam";
  static double Next(double v, double d2, double b2) { return b2 * v + (1 - b2) * d2; }
};
struct YogiRule {
  static constexpr const char* kName = "yogi";
  static double Next(double v, double d2, double b2) {
    const double s = v > d2 ? 1.0 : (v < d2 ? -1.0 : 0.0);
    return v - (1 - b2) * d2 * s;
  }
};
struct AdagradRule {
  static constexpr const char* kName = "adagrad";
  static double Next(double v, double d2, double) { return v + d2; }
};

template <typename Rule>
class AdaptiveServerOptimizer final : public ServerOptimizer {
 public:
  using ServerOptimizer::ServerOptimizer;
  std::string name() const override { return Rule::kName; }
  std::vector<std::string> state_names() const override { return {"m", "v"}; }
  void StepRange(size_t begin, size_t n, const float* g, const double* d, float* out) override {
    const double eta = params_.lr, b1 = params_.beta1, b2 = params_.beta2, tau = params_.tau;
    float* m = slot(0, begin);
    float* v = slot(1, begin);
    for (size_t i = 0; i < n; ++i) {
      const double mi = b1 * m[i] + (1 - b1) * d[i];
      const double vi = Rule::Next(v[i], d[i] * d[i], b2);
      m[i] = static_cast<float>(mi);
      v[i] = static_cast<float>(vi);
      out[i] = static_cast<float>(g[i] + eta * mi / (std::sqrt(vi) + tau));
    }
  }

 protected:
  float InitialValue(size_t index) const override {
    return index == 1 ? static_cast<float>(params_.tau * params_.tau) : 0.0f;
  }
};

}  // namespace

std::unique_ptr<ServerOptimizer> MakeAdamServerOptimizer(const ServerOptimizerParams& params) {
  return std::make_unique<AdaptiveServerOptimizer<AdamRule>>(params);
}
std::unique_ptr<ServerOptimizer> MakeYogiServerOptimizer(const ServerOptimizerParams& params) {
  return std::make_unique<AdaptiveServerOptimizer<YogiRule>>(params);
}
std::unique_ptr<ServerOptimizer> MakeAdagradServerOptimizer(const ServerOptimizerParams& params) {
  return std::make_unique<AdaptiveServerOptimizer<AdagradRule>>(params);
}

}  // namespace shoal::coordinator
