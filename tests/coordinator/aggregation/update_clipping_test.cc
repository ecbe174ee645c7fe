// Update norm bounds (update_clipping.h): fixed clipping in front of any aggregator, and the
// adaptive bound of Andrew et al. 2021.
#include "coordinator/aggregation/update_clipping.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "coordinator/aggregation/fed_avg.h"

namespace shoal {
namespace {

using coordinator::ClippingAggregator;
using coordinator::ClipRecord;
using coordinator::FedAvg;
using coordinator::NextAdaptiveBound;

model::ModelSpec TinySpec(int64_t n) {
  model::ModelSpec spec;
  spec.tensors.push_back({"w", model::DType::kFloat32, {n}});
  return spec;
}

double Norm(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

TEST(UpdateClippingTest, AnUpdateAboveTheBoundIsScaledDownToItAndOthersPassUnchanged) {
  ClippingAggregator agg(std::make_unique<FedAvg>(), /*bound=*/1.0);
  agg.Begin(TinySpec(4), /*deterministic=*/false);
  EXPECT_EQ(agg.name(), "mean");
  const std::vector<float> big = {30, 40, 0, 0};  // norm 50
  ASSERT_TRUE(agg.Fold(big.data(), 4, 1).ok());
  std::vector<double> out(4);
  ASSERT_TRUE(agg.AggregateRange(0, 4, out.data()).ok());
  EXPECT_NEAR(out[0], 0.6, 1e-7);
  EXPECT_NEAR(out[1], 0.8, 1e-7);
  EXPECT_NEAR(Norm(out), 1.0, 1e-6);

  agg.Begin(TinySpec(4), false);
  const std::vector<float> small = {0.3f, 0, 0.4f, 0};  // norm 0.5: untouched
  ASSERT_TRUE(agg.Fold(small.data(), 4, 1).ok());
  ASSERT_TRUE(agg.Fold(big.data(), 4, 1).ok());
  ASSERT_TRUE(agg.AggregateRange(0, 4, out.data()).ok());
  // FedAvg sums in float: 0.3 + 30 x float(1 / 50), then the mean in double.
  const float acc = 0.3f + 30.0f * static_cast<float>(1.0 / 50);
  EXPECT_EQ(out[0], acc * 0.5);
  ASSERT_EQ(agg.records().size(), 2u);
  EXPECT_FALSE(agg.records()[0].clipped);
  EXPECT_NEAR(agg.records()[0].norm, 0.5, 1e-7);
  EXPECT_TRUE(agg.records()[1].clipped);
  EXPECT_DOUBLE_EQ(agg.records()[1].norm, 50.0);
  EXPECT_EQ(agg.under(), 1u);
}

// A scaled-up attacker moves the mean at most bound / k once clipped.
TEST(UpdateClippingTest, ClippingBoundsAnAttackersPullOnTheMean) {
  const int64_t n = 1000;
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 0.01f);
  std::vector<std::vector<float>> u(5, std::vector<float>(n));
  for (auto& v : u) {
    for (auto& x : v) x = d(rng);
  }
  for (auto& x : u[4]) x *= 1e4f;
  ClippingAggregator agg(std::make_unique<FedAvg>(), /*bound=*/0.5);
  agg.Begin(TinySpec(n), false);
  for (auto& v : u) ASSERT_TRUE(agg.Fold(v.data(), v.size(), 1).ok());
  std::vector<double> out(n);
  ASSERT_TRUE(agg.AggregateRange(0, n, out.data()).ok());
  // Honest norms are ~0.32 (< 0.5); the mean's norm is at most (4 x 0.32 + 0.5) / 5.
  EXPECT_LT(Norm(out), (4 * 0.4 + 0.5) / 5);
  EXPECT_EQ(agg.under(), 4u);
}

TEST(UpdateClippingTest, NonFiniteAndMisSizedUpdatesAreRefusedAndNotRecorded) {
  ClippingAggregator agg(std::make_unique<FedAvg>(), 1.0);
  agg.Begin(TinySpec(3), false);
  std::vector<float> v = {1, std::numeric_limits<float>::quiet_NaN(), 0};
  Status st = agg.Fold(v.data(), 3, 1);
  EXPECT_EQ(st.code(), Code::kRejected);
  EXPECT_NE(st.message().find("element 1 has a non-finite value"), std::string::npos)
      << st.message();
  v[1] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(agg.Fold(v.data(), 3, 1).code(), Code::kRejected);
  EXPECT_EQ(agg.Fold(v.data(), 2, 1).code(), Code::kInvalidArgument);
  v[1] = 0;
  EXPECT_EQ(agg.Fold(v.data(), 3, 0).code(), Code::kInvalidArgument);  // the inner refuses
  EXPECT_TRUE(agg.records().empty());
  EXPECT_EQ(agg.updates(), 0);
}

TEST(UpdateClippingTest, AdaptiveBoundGrowsWhenEveryUpdateIsAboveIt) {
  double c = 1.0;
  for (int round = 0; round < 10; ++round) {
    const double next = NextAdaptiveBound(c, /*under=*/0, /*total=*/10, 0.5, 0.2);
    EXPECT_GT(next, c);
    EXPECT_DOUBLE_EQ(next, c * std::exp(0.2 * 0.5));
    c = next;
  }
  // ... and shrinks when every update is under it; stays when exactly the target share is.
  EXPECT_LT(NextAdaptiveBound(1.0, 10, 10, 0.5, 0.2), 1.0);
  EXPECT_DOUBLE_EQ(NextAdaptiveBound(1.0, 5, 10, 0.5, 0.2), 1.0);
  EXPECT_DOUBLE_EQ(NextAdaptiveBound(2.0, 0, 0, 0.5, 0.2), 2.0);  // no update: unchanged
  // Clamped: never 0 or Inf.
  EXPECT_EQ(NextAdaptiveBound(coordinator::kMaxClipNorm, 0, 10, 1, 10), coordinator::kMaxClipNorm);
  EXPECT_EQ(NextAdaptiveBound(coordinator::kMinAdaptiveBound, 10, 10, 0, 10),
            coordinator::kMinAdaptiveBound);
}

// Rounds of 50 update norms drawn from a fixed distribution (log-normal): the bound, started
// far off in either direction, settles near the distribution's target quantile.
TEST(UpdateClippingTest, AdaptiveBoundConvergesNearTheTargetQuantile) {
  for (double gamma : {0.3, 0.5, 0.8}) {
    for (double start : {1e-3, 1e3}) {
      std::mt19937 rng(11);
      std::lognormal_distribution<double> norms(0.0, 0.5);
      double c = start;
      double late_sum = 0;
      int late = 0;
      for (int round = 0; round < 600; ++round) {
        size_t under = 0;
        for (int i = 0; i < 50; ++i) under += norms(rng) <= c ? 1 : 0;
        c = NextAdaptiveBound(c, under, 50, gamma, 0.2);
        if (round >= 400) {
          late_sum += std::log(c);
          ++late;
        }
      }
      // The gamma quantile of lognormal(0, 0.5): exp(0.5 * z_gamma).
      const double z = gamma == 0.3 ? -0.5244 : gamma == 0.5 ? 0.0 : 0.8416;
      const double want = std::exp(0.5 * z);
      const double got = std::exp(late_sum / late);
      EXPECT_NEAR(got / want, 1.0, 0.05) << "gamma " << gamma << " start " << start;
    }
  }
}

TEST(UpdateClippingTest, ParsesItsModes) {
  EXPECT_EQ(*coordinator::ParseClipMode("none"), coordinator::ClipMode::kNone);
  EXPECT_EQ(*coordinator::ParseClipMode("fixed"), coordinator::ClipMode::kFixed);
  EXPECT_EQ(*coordinator::ParseClipMode("adaptive"), coordinator::ClipMode::kAdaptive);
  auto bad = coordinator::ParseClipMode("quantile");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("strategy.clip"), std::string::npos);
}

}  // namespace
}  // namespace shoal
