// Server optimizers (server_optimizer.h) against double-precision references written from the
// equations of Reddi et al. 2021 (Algorithm 2) and Hsu et al. 2019 (FedAvgM), over several
// rounds; sgd with server_lr = 1 against ApplyAggregate bit for bit; state restore and its
// refusals; the registry.
#include "coordinator/aggregation/server_optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "coordinator/aggregation/aggregate_step.h"
#include "coordinator/aggregation/fed_avg.h"
#include "coordinator/aggregation/server_optimizer_registry.h"

namespace shoal::coordinator {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

model::ModelSpec Spec(int64_t n) {
  model::ModelSpec spec;
  spec.tensors.push_back({"w", model::DType::kFloat32, {n - 3}});
  spec.tensors.push_back({"b", model::DType::kFloat32, {3}});
  return spec;
}

std::vector<float> Random(size_t n, float scale, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// The paper's equations in double, state kept in double throughout.
struct Reference {
  std::string kind;
  ServerOptimizerParams p;
  std::vector<double> m, v;

  void Step(std::vector<double>& x, const std::vector<double>& d) {
    if (m.empty()) {
      m.assign(x.size(), 0.0);
      v.assign(x.size(), p.tau * p.tau);  // v_{-1} = tau^2
    }
    for (size_t i = 0; i < x.size(); ++i) {
      if (kind == "sgd") {
        x[i] += p.lr * d[i];
        continue;
      }
      if (kind == "momentum") {
        m[i] = p.momentum * m[i] + d[i];
        x[i] += p.lr * m[i];
        continue;
      }
      m[i] = p.beta1 * m[i] + (1 - p.beta1) * d[i];
      const double d2 = d[i] * d[i];
      if (kind == "adam") v[i] = p.beta2 * v[i] + (1 - p.beta2) * d2;
      if (kind == "yogi") v[i] = v[i] - (1 - p.beta2) * d2 * (v[i] > d2 ? 1 : v[i] < d2 ? -1 : 0);
      if (kind == "adagrad") v[i] = v[i] + d2;
      x[i] += p.lr * m[i] / (std::sqrt(v[i]) + p.tau);
    }
  }
};

class ServerOptimizerTest : public ::testing::TestWithParam<std::string> {};

// Five rounds of three weighted updates each: the streaming FedAvg mean as pseudo-gradient,
// the optimizer's model after every round against the reference's. The optimizer keeps its
// state in float (rounded each round) and the model is float, so they agree to float precision,
// not bit for bit; a wrong equation (a missing (1 - b1), a sign, sqrt left out) is off by far
// more than the tolerance.
TEST_P(ServerOptimizerTest, FollowsThePapersEquationsOverSeveralRounds) {
  const std::string kind = GetParam();
  ServerOptimizerParams p;
  p.lr = kind == "sgd" || kind == "momentum" ? 0.7 : 0.03;
  p.momentum = 0.9;
  p.beta1 = 0.9;
  p.beta2 = 0.99;
  p.tau = 1e-3;
  const int64_t n = 1000;
  std::mt19937 rng(7);
  auto opt = BuiltinServerOptimizers().Create(kind, p);
  ASSERT_TRUE(opt.ok()) << opt.status().ToString();
  ServerOptimizer& o = **opt;
  EXPECT_EQ(o.name(), kind);
  o.Reset(n);

  model::Weights global;
  global.spec = Spec(n);
  global.data = Random(n, 0.1f, rng);
  std::vector<double> x(global.data.begin(), global.data.end());
  Reference ref{kind, p, {}, {}};
  FedAvg agg;
  for (int round = 0; round < 5; ++round) {
    agg.Begin(global.spec);
    std::vector<std::vector<float>> deltas;
    std::vector<int64_t> weights = {3, 5, 11};
    for (int k = 0; k < 3; ++k) {
      // Alternating signs across rounds exercise Yogi's sign(v - D^2) both ways.
      deltas.push_back(Random(n, round % 2 ? 0.02f : 0.005f, rng));
      ASSERT_TRUE(agg.Fold(deltas.back().data(), n, weights[k]).ok());
    }
    std::vector<double> d(n);
    ASSERT_TRUE(agg.AggregateRange(0, n, d.data()).ok());
    auto next = ApplyServerStep(agg, global, o);
    ASSERT_TRUE(next.ok()) << next.status().ToString();
    ref.Step(x, d);
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      worst = std::max(worst, std::abs(next->data[i] - x[i]) / (std::abs(x[i]) + 1e-3));
    }
    EXPECT_LT(worst, 2e-5) << kind << " round " << round;
    // The model moved by more than the tolerance: the comparison is not vacuous.
    double moved = 0;
    for (int64_t i = 0; i < n; ++i) moved = std::max(moved, std::abs(x[i] - global.data[i]));
    EXPECT_GT(moved, 1e-3) << kind << " round " << round;
    global = std::move(next).value();
    x.assign(global.data.begin(), global.data.end());  // continue from the float model
  }
}

INSTANTIATE_TEST_SUITE_P(Builtin, ServerOptimizerTest,
                         ::testing::Values("sgd", "momentum", "adam", "yogi", "adagrad"));

// strategy.server_lr = 1 with sgd is FedAvg as it was: ApplyAggregate's bytes, over a model
// larger than one slice.
TEST(ServerSgdTest, LearningRateOneIsApplyAggregateBitForBit) {
  const int64_t n = static_cast<int64_t>(kAggregateSlice) * 2 + 123;
  std::mt19937 rng(3);
  model::Weights global;
  global.spec = Spec(n);
  global.data = Random(n, 1.0f, rng);
  FedAvg agg;
  agg.Begin(global.spec, /*exact=*/true);
  for (int k = 0; k < 4; ++k) {
    auto d = Random(n, 0.01f, rng);
    ASSERT_TRUE(agg.Fold(d.data(), n, 10 + k).ok());
  }
  auto opt = BuiltinServerOptimizers().Create("sgd", ServerOptimizerParams{});
  ASSERT_TRUE(opt.ok());
  (*opt)->Reset(n);
  auto a = ApplyAggregate(agg, global);
  auto b = ApplyServerStep(agg, global, **opt);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->data.size(), b->data.size());
  EXPECT_EQ(std::memcmp(a->data.data(), b->data.data(), a->data.size() * sizeof(float)), 0);
  EXPECT_EQ(a->Hash(), b->Hash());
}

// A restored state continues exactly where the saved one was: two steps in one optimizer equal
// one step, a save/restore into a fresh optimizer, and a second step, bit for bit.
TEST(ServerOptimizerStateTest, RestoredStateContinuesBitForBit) {
  const int64_t n = 257;
  std::mt19937 rng(5);
  model::Weights global;
  global.spec = Spec(n);
  global.data = Random(n, 0.1f, rng);
  std::vector<std::vector<float>> deltas = {Random(n, 0.01f, rng), Random(n, 0.01f, rng)};
  ServerOptimizerParams p;
  p.lr = 0.01;
  auto step = [&](ServerOptimizer& o, const model::Weights& g, const std::vector<float>& d) {
    FedAvg agg;
    agg.Begin(g.spec);
    EXPECT_TRUE(agg.Fold(d.data(), n, 1).ok());
    auto next = ApplyServerStep(agg, g, o);
    EXPECT_TRUE(next.ok());
    return std::move(next).value();
  };
  auto a = BuiltinServerOptimizers().Create("yogi", p).value();
  a->Reset(n);
  model::Weights a1 = step(*a, global, deltas[0]);
  model::Weights saved = a->state();
  model::Weights a2 = step(*a, a1, deltas[1]);

  auto b = BuiltinServerOptimizers().Create("yogi", p).value();
  ASSERT_TRUE(b->Restore(n, saved).ok());
  model::Weights b2 = step(*b, a1, deltas[1]);
  EXPECT_EQ(a2.Hash(), b2.Hash());
  EXPECT_EQ(a->state().Hash(), b->state().Hash());
  // A fresh optimizer (state lost) does not give the same model: the state matters.
  auto c = BuiltinServerOptimizers().Create("yogi", p).value();
  c->Reset(n);
  EXPECT_NE(step(*c, a1, deltas[1]).Hash(), a2.Hash());
}

// A state file from another optimizer, for another model size, or holding NaN is refused with
// an error naming the problem, and the optimizer keeps its state.
TEST(ServerOptimizerStateTest, MismatchedOrNonFiniteStateIsRefused) {
  ServerOptimizerParams p;
  auto adam = BuiltinServerOptimizers().Create("adam", p).value();
  adam->Reset(10);
  const auto before = adam->state().Hash();

  auto momentum = BuiltinServerOptimizers().Create("momentum", p).value();
  momentum->Reset(10);
  Status st = adam->Restore(10, momentum->state());
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.ToString(), "adam")) << st.ToString();

  auto other = BuiltinServerOptimizers().Create("adam", p).value();
  other->Reset(11);
  st = adam->Restore(10, other->state());
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.ToString(), "10 values")) << st.ToString();

  model::Weights nan = adam->state();
  nan.data[13] = std::nanf("");
  st = adam->Restore(10, nan);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.ToString(), "non-finite")) << st.ToString();
  EXPECT_TRUE(Contains(st.ToString(), "'v'")) << st.ToString();
  EXPECT_EQ(adam->state().Hash(), before);
}

// An optimizer whose state was never sized for the model is an error, not an out-of-bounds
// write.
TEST(ServerOptimizerStateTest, StepWithoutStateForTheModelIsRefused) {
  auto adam = BuiltinServerOptimizers().Create("adam", ServerOptimizerParams{}).value();
  adam->Reset(5);
  model::Weights global;
  global.spec = Spec(8);
  global.data.assign(8, 0.0f);
  FedAvg agg;
  agg.Begin(global.spec);
  std::vector<float> d(8, 0.1f);
  ASSERT_TRUE(agg.Fold(d.data(), 8, 1).ok());
  auto next = ApplyServerStep(agg, global, *adam);
  EXPECT_FALSE(next.ok());
  EXPECT_TRUE(Contains(next.status().ToString(), "adam")) << next.status().ToString();
}

TEST(ServerOptimizerRegistryTest, UnknownNameListsTheRegisteredOnes) {
  auto r = BuiltinServerOptimizers().Create("lamb", ServerOptimizerParams{});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().ToString(), "lamb"));
  EXPECT_TRUE(Contains(r.status().ToString(), "adagrad, adam, momentum, sgd, yogi"))
      << r.status().ToString();
  ServerOptimizerRegistry reg;
  RegisterBuiltinServerOptimizers(reg);
  EXPECT_FALSE(reg.Register("adam",
                            [](const ServerOptimizerParams& p) {
                              return BuiltinServerOptimizers().Create("sgd", p).value();
                            })
                   .ok());
}

}  // namespace
}  // namespace shoal::coordinator
