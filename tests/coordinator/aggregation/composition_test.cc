// The strategy axes compose (issues #22, #23): update clipping -> a robust aggregator -> a server
// optimizer, as the round engine chains them, against a double-precision reference written from
// the three definitions.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "coordinator/aggregation/aggregator_registry.h"
#include "coordinator/aggregation/robust_aggregator.h"
#include "coordinator/aggregation/server_optimizer.h"
#include "coordinator/aggregation/server_optimizer_registry.h"
#include "coordinator/aggregation/update_clipping.h"

namespace shoal {
namespace {

using coordinator::ClippingAggregator;
using coordinator::RobustAggregator;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/shoal-compose-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { (void)std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Reference: each update scaled to norm <= bound, the per-coordinate median (mean of the two
// middle values for even k), then Reddi et al.'s Adam step with m0 = 0, v0 = tau^2, no bias
// correction: m = b1 m + (1 - b1) D; v = b2 v + (1 - b2) D^2; x += lr m / (sqrt(v) + tau).
struct AdamRef {
  std::vector<double> m, v;
};

std::vector<double> ReferenceRound(const std::vector<float>& global,
                                   const std::vector<std::vector<float>>& updates, double bound,
                                   const coordinator::ServerOptimizerParams& p, AdamRef& st) {
  const size_t n = global.size();
  std::vector<std::vector<double>> clipped;
  for (const auto& u : updates) {
    double sq = 0;
    for (float x : u) sq += static_cast<double>(x) * x;
    const double norm = std::sqrt(sq);
    const double scale = norm > bound ? bound / norm : 1.0;
    std::vector<double> c(n);
    for (size_t i = 0; i < n; ++i) c[i] = u[i] * scale;
    clipped.push_back(c);
  }
  if (st.m.empty()) {
    st.m.assign(n, 0.0);
    st.v.assign(n, p.tau * p.tau);
  }
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    std::vector<double> col;
    for (const auto& c : clipped) col.push_back(c[i]);
    std::sort(col.begin(), col.end());
    const size_t k = col.size();
    const double d = k % 2 ? col[k / 2] : 0.5 * (col[k / 2 - 1] + col[k / 2]);
    st.m[i] = p.beta1 * st.m[i] + (1 - p.beta1) * d;
    st.v[i] = p.beta2 * st.v[i] + (1 - p.beta2) * d * d;
    out[i] = global[i] + p.lr * st.m[i] / (std::sqrt(st.v[i]) + p.tau);
  }
  return out;
}

TEST(StrategyCompositionTest, ClippedMedianThenAdamMatchesTheReferenceOverRounds) {
  TempDir dir;
  constexpr size_t kSize = 70001;  // two slices of the server step and a bit
  model::Weights global;
  global.spec.tensors.push_back({"w", model::DType::kFloat32, {static_cast<int64_t>(kSize)}});
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 0.01f);
  for (size_t i = 0; i < kSize; ++i) global.data.push_back(noise(rng));

  auto inner = coordinator::BuiltinAggregators().Create("median");
  ASSERT_TRUE(inner.ok());
  auto* robust = dynamic_cast<RobustAggregator*>(inner->get());
  ASSERT_NE(robust, nullptr);
  coordinator::RobustOptions options;
  options.spill_dir = dir.path();
  robust->Configure(options);
  const double bound = 1.5;
  ClippingAggregator agg(std::move(*inner), bound);

  coordinator::ServerOptimizerParams p;
  p.lr = 0.01;
  auto adam = coordinator::BuiltinServerOptimizers().Create("adam", p);
  ASSERT_TRUE(adam.ok()) << adam.status().ToString();
  (*adam)->Reset(kSize);

  AdamRef ref_state;
  std::vector<float> ref_global = global.data;
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    // Four honest updates of norm ~2.6 (all clipped) and one attacker scaled x100.
    std::vector<std::vector<float>> updates(5, std::vector<float>(kSize));
    for (auto& u : updates) {
      for (auto& x : u) x = noise(rng);
    }
    for (auto& x : updates[4]) x *= 100.0f;
    agg.Begin(global.spec, /*deterministic=*/true);
    for (const auto& u : updates) ASSERT_TRUE(agg.Fold(u.data(), u.size(), 10).ok());
    EXPECT_EQ(agg.under(), 0u);  // every update was above the bound
    auto next = coordinator::ApplyServerStep(agg, global, **adam);
    ASSERT_TRUE(next.ok()) << next.status().ToString();
    const std::vector<double> want = ReferenceRound(ref_global, updates, bound, p, ref_state);
    double max_err = 0, max_step = 0;
    for (size_t i = 0; i < kSize; ++i) {
      max_err = std::max(max_err, std::fabs(next->data[i] - want[i]));
      max_step = std::max(max_step, std::fabs(want[i] - ref_global[i]));
    }
    EXPECT_GT(max_step, 1e-3);            // the model moved
    EXPECT_LT(max_err, 1e-5 * max_step);  // float state and output, double reference
    robust->Release();
    global = std::move(*next);
    ref_global = global.data;  // the reference continues from what was committed
  }
}

}  // namespace
}  // namespace shoal
