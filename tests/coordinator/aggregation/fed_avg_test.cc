#include "coordinator/aggregation/fed_avg.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "coordinator/aggregation/aggregate_step.h"

namespace shoal {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ~101k parameters: a small CNN-like layout.
model::ModelSpec BigSpec() {
  model::ModelSpec spec;
  spec.tensors.push_back({"conv1.weight", model::DType::kFloat32, {32, 1, 5, 5}});
  spec.tensors.push_back({"conv1.bias", model::DType::kFloat32, {32}});
  spec.tensors.push_back({"fc1.weight", model::DType::kFloat32, {128, 784}});
  spec.tensors.push_back({"fc1.bias", model::DType::kFloat32, {128}});
  spec.tensors.push_back({"fc2.weight", model::DType::kFloat32, {10, 128}});
  spec.tensors.push_back({"fc2.bias", model::DType::kFloat32, {10}});
  return spec;
}

model::ModelSpec TinySpec(int64_t n) {
  model::ModelSpec spec;
  spec.tensors.push_back({"w", model::DType::kFloat32, {n}});
  return spec;
}

std::vector<float> Random(size_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

struct Round {
  model::Weights global;
  std::vector<std::vector<float>> deltas;
  std::vector<int64_t> samples;
};

Round MakeRound(uint32_t seed) {
  std::mt19937 rng(seed);
  Round r;
  r.global.spec = BigSpec();
  const size_t n = static_cast<size_t>(r.global.spec.total_numel());
  r.global.data = Random(n, -1.0f, 1.0f, rng);
  r.samples = {1, 17, 600, 20000, 3};
  for (size_t k = 0; k < r.samples.size(); ++k) r.deltas.push_back(Random(n, -0.5f, 0.5f, rng));
  return r;
}

Result<model::Weights> Aggregate(const Round& r, const std::vector<size_t>& order,
                                 bool exact = false) {
  coordinator::FedAvg agg;
  agg.Begin(r.global.spec, exact);
  for (size_t k : order) {
    Status st = agg.Fold(r.deltas[k].data(), r.deltas[k].size(), r.samples[k]);
    if (!st.ok()) return st;
  }
  return ApplyAggregate(agg, r.global);
}

// |a - b| <= 1e-6 * max(1, |b|): relative for large values, absolute near zero.
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  size_t bad = 0;
  double worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err =
        std::abs(static_cast<double>(got[i]) - want[i]) / std::max(1.0, std::abs(want[i]));
    if (err > 1e-6) ++bad;
    if (err > worst) {
      worst = err;
      worst_i = i;
    }
  }
  EXPECT_EQ(bad, 0u) << "worst error " << worst << " at element " << worst_i << ": got "
                     << got[worst_i] << ", want " << want[worst_i];
}

TEST(FedAvgTest, MatchesDoublePrecisionReference) {
  const Round r = MakeRound(1);
  ASSERT_GT(r.global.spec.total_numel(), 100000);
  Result<model::Weights> got = Aggregate(r, {0, 1, 2, 3, 4});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->spec, r.global.spec);
  ExpectClose(got->data, coordinator::ReferenceFedAvg(r.global.data, r.deltas, r.samples));
}

TEST(FedAvgTest, ReferenceIsTheWeightedMean) {
  // The reference itself, on a case small enough to check by hand: 1 + (1*3 + 3*(-1)) / 4 = 1.
  const std::vector<double> ref =
      coordinator::ReferenceFedAvg({1.0f, 0.0f}, {{3.0f, 4.0f}, {-1.0f, 0.0f}}, {1, 3});
  ASSERT_EQ(ref.size(), 2u);
  EXPECT_DOUBLE_EQ(ref[0], 1.0);
  EXPECT_DOUBLE_EQ(ref[1], 1.0);
}

TEST(FedAvgTest, FoldOrderDoesNotMatter) {
  const Round r = MakeRound(2);
  const std::vector<double> ref = coordinator::ReferenceFedAvg(r.global.data, r.deltas, r.samples);
  std::vector<size_t> order = {0, 1, 2, 3, 4};
  Result<model::Weights> first = Aggregate(r, order);
  ASSERT_TRUE(first.ok());
  std::mt19937 rng(3);
  for (int trial = 0; trial < 4; ++trial) {
    std::shuffle(order.begin(), order.end(), rng);
    SCOPED_TRACE("order " + std::to_string(order[0]) + std::to_string(order[1]) +
                 std::to_string(order[2]) + std::to_string(order[3]) + std::to_string(order[4]));
    Result<model::Weights> other = Aggregate(r, order);
    ASSERT_TRUE(other.ok());
    ExpectClose(other->data, ref);
    std::vector<double> first_d(first->data.begin(), first->data.end());
    ExpectClose(other->data, first_d);
  }
}

TEST(FedAvgTest, ExactSmallCase) {
  model::Weights global;
  global.spec = TinySpec(2);
  global.data = {1.0f, 2.0f};
  const std::vector<float> a = {2.0f, 0.0f};
  const std::vector<float> b = {0.0f, 4.0f};
  coordinator::FedAvg agg;
  agg.Begin(global.spec);
  ASSERT_TRUE(agg.Fold(a.data(), a.size(), 1).ok());
  ASSERT_TRUE(agg.Fold(b.data(), b.size(), 3).ok());
  EXPECT_EQ(agg.updates(), 2);
  EXPECT_EQ(agg.total_samples(), 4);
  Result<model::Weights> out = ApplyAggregate(agg, global);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->data, (std::vector<float>{1.5f, 5.0f}));
}

TEST(FedAvgTest, SingleUpdateIsAppliedAsIs) {
  model::Weights global;
  global.spec = TinySpec(3);
  global.data = {0.25f, -1.0f, 8.0f};
  const std::vector<float> d = {0.5f, 1.0f, -8.0f};
  coordinator::FedAvg agg;
  agg.Begin(global.spec);
  ASSERT_TRUE(agg.Fold(d.data(), d.size(), 7).ok());
  Result<model::Weights> out = ApplyAggregate(agg, global);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->data, (std::vector<float>{0.75f, 0.0f, 0.0f}));
}

TEST(FedAvgTest, FoldRejectsSizeMismatch) {
  coordinator::FedAvg agg;
  agg.Begin(TinySpec(4));
  const std::vector<float> d(5, 1.0f);
  Status st = agg.Fold(d.data(), 5, 1);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  st = agg.Fold(d.data(), 3, 1);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(agg.updates(), 0);
  EXPECT_EQ(agg.total_samples(), 0);
}

TEST(FedAvgTest, FoldRejectsNonPositiveSampleCount) {
  coordinator::FedAvg agg;
  agg.Begin(TinySpec(2));
  const std::vector<float> d = {1.0f, 1.0f};
  for (int64_t n : {int64_t{0}, int64_t{-1}, std::numeric_limits<int64_t>::min()}) {
    SCOPED_TRACE("num_samples " + std::to_string(n));
    Status st = agg.Fold(d.data(), d.size(), n);
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  }
  EXPECT_EQ(agg.updates(), 0);
  EXPECT_EQ(agg.total_samples(), 0);
}

TEST(FedAvgTest, FoldRejectsNonFiniteNamingTheTensor) {
  const model::ModelSpec spec = BigSpec();
  const size_t n = static_cast<size_t>(spec.total_numel());
  model::Weights probe;
  probe.spec = spec;
  const size_t fc1 = static_cast<size_t>(probe.Offset(2));  // fc1.weight
  struct Case {
    const char* what;
    size_t index;
    float value;
    const char* tensor;
  };
  for (const Case& c :
       {Case{"NaN", fc1 + 5, std::numeric_limits<float>::quiet_NaN(), "fc1.weight"},
        Case{"+Inf", fc1 + 5, std::numeric_limits<float>::infinity(), "fc1.weight"},
        Case{"-Inf", 0, -std::numeric_limits<float>::infinity(), "conv1.weight"},
        Case{"last NaN", n - 1, std::numeric_limits<float>::quiet_NaN(), "fc2.bias"}}) {
    SCOPED_TRACE(c.what);
    coordinator::FedAvg agg;
    agg.Begin(spec);
    std::vector<float> d(n, 0.5f);
    d[c.index] = c.value;
    Status st = agg.Fold(d.data(), d.size(), 10);
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(st.code() == Code::kRejected || st.code() == Code::kInvalidArgument)
        << st.ToString();
    EXPECT_TRUE(Contains(st.message(), std::string("'") + c.tensor + "'")) << st.message();
    EXPECT_EQ(agg.updates(), 0);
    EXPECT_EQ(agg.total_samples(), 0);
  }
}

TEST(FedAvgTest, RejectedUpdateLeavesAccumulatorUntouched) {
  const Round r = MakeRound(4);
  Result<model::Weights> clean = Aggregate(r, {0, 1, 2});

  coordinator::FedAvg agg;
  agg.Begin(r.global.spec);
  ASSERT_TRUE(agg.Fold(r.deltas[0].data(), r.deltas[0].size(), r.samples[0]).ok());
  ASSERT_TRUE(agg.Fold(r.deltas[1].data(), r.deltas[1].size(), r.samples[1]).ok());
  // A bad value at the very end: a fold-as-you-check implementation would have modified
  // every element before it.
  std::vector<float> poisoned = r.deltas[3];
  poisoned.back() = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(agg.Fold(poisoned.data(), poisoned.size(), 500).ok());
  std::vector<float> nan_first = r.deltas[3];
  nan_first[nan_first.size() / 2] = std::nanf("");
  EXPECT_FALSE(agg.Fold(nan_first.data(), nan_first.size(), 500).ok());
  EXPECT_FALSE(agg.Fold(r.deltas[3].data(), r.deltas[3].size(), 0).ok());
  EXPECT_FALSE(agg.Fold(r.deltas[3].data(), r.deltas[3].size() - 1, 500).ok());
  ASSERT_TRUE(agg.Fold(r.deltas[2].data(), r.deltas[2].size(), r.samples[2]).ok());
  EXPECT_EQ(agg.updates(), 3);
  EXPECT_EQ(agg.total_samples(), 1 + 17 + 600);

  Result<model::Weights> got = ApplyAggregate(agg, r.global);
  ASSERT_TRUE(clean.ok());
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->data == clean->data) << "a rejected update changed the aggregate";
}

TEST(FedAvgTest, FinishWithoutUpdatesFails) {
  model::Weights global;
  global.spec = TinySpec(2);
  global.data = {1.0f, 2.0f};
  coordinator::FedAvg agg;
  agg.Begin(global.spec);
  Result<model::Weights> out = ApplyAggregate(agg, global);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kInvalidArgument);
  // Only rejected updates is the same as none.
  const std::vector<float> bad = {std::nanf(""), 0.0f};
  EXPECT_FALSE(agg.Fold(bad.data(), bad.size(), 5).ok());
  EXPECT_FALSE(ApplyAggregate(agg, global).ok());
}

TEST(FedAvgTest, FinishRejectsGlobalOfOtherSize) {
  coordinator::FedAvg agg;
  agg.Begin(TinySpec(2));
  const std::vector<float> d = {1.0f, 1.0f};
  ASSERT_TRUE(agg.Fold(d.data(), d.size(), 1).ok());
  model::Weights global;
  global.spec = TinySpec(3);
  global.data = {0.0f, 0.0f, 0.0f};
  EXPECT_FALSE(ApplyAggregate(agg, global).ok());
}

TEST(FedAvgTest, BeginResetsBetweenRounds) {
  model::Weights global;
  global.spec = TinySpec(2);
  global.data = {1.0f, 2.0f};
  const std::vector<float> a = {100.0f, -100.0f};
  const std::vector<float> b = {2.0f, 4.0f};
  coordinator::FedAvg agg;
  agg.Begin(global.spec);
  ASSERT_TRUE(agg.Fold(a.data(), a.size(), 1000).ok());
  ASSERT_TRUE(ApplyAggregate(agg, global).ok());

  agg.Begin(global.spec);
  EXPECT_EQ(agg.updates(), 0);
  EXPECT_EQ(agg.total_samples(), 0);
  EXPECT_FALSE(ApplyAggregate(agg, global).ok());
  ASSERT_TRUE(agg.Fold(b.data(), b.size(), 2).ok());
  Result<model::Weights> out = ApplyAggregate(agg, global);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->data, (std::vector<float>{3.0f, 6.0f}));
}

TEST(FedAvgTest, BeginResizesForANewSpec) {
  coordinator::FedAvg agg;
  agg.Begin(TinySpec(2));
  const std::vector<float> two = {1.0f, 1.0f};
  ASSERT_TRUE(agg.Fold(two.data(), two.size(), 1).ok());
  agg.Begin(TinySpec(3));
  EXPECT_FALSE(agg.Fold(two.data(), two.size(), 1).ok());
  const std::vector<float> three = {1.0f, 2.0f, 3.0f};
  ASSERT_TRUE(agg.Fold(three.data(), three.size(), 1).ok());
  model::Weights global;
  global.spec = TinySpec(3);
  global.data = {0.0f, 0.0f, 0.0f};
  Result<model::Weights> out = ApplyAggregate(agg, global);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->data, three);
}

TEST(FedAvgExactTest, EveryArrivalOrderGivesBitIdenticalWeights) {
  const Round r = MakeRound(11);
  std::vector<size_t> order = {0, 1, 2, 3, 4};
  auto first = Aggregate(r, order, /*exact=*/true);
  ASSERT_TRUE(first.ok());
  std::mt19937 rng(5);
  for (int trial = 0; trial < 6; ++trial) {
    std::shuffle(order.begin(), order.end(), rng);
    auto again = Aggregate(r, order, /*exact=*/true);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->Hash(), first->Hash()) << "order changed the exact aggregate";
  }
}

TEST(FedAvgExactTest, MatchesTheReferenceWeightedMean) {
  const Round r = MakeRound(12);
  auto got = Aggregate(r, {4, 2, 0, 3, 1}, /*exact=*/true);
  ASSERT_TRUE(got.ok());
  ExpectClose(got->data, coordinator::ReferenceFedAvg(r.global.data, r.deltas, r.samples));
}

TEST(FedAvgExactTest, RejectsValuesBeyondTheFixedPointRange) {
  coordinator::FedAvg agg;
  agg.Begin(TinySpec(2), /*exact=*/true);
  const std::vector<float> huge = {1.0f, 1e6f};
  EXPECT_EQ(agg.Fold(huge.data(), huge.size(), 20000).code(), Code::kRejected);
  EXPECT_EQ(agg.updates(), 0);
}

// Issue #20: a finite update that overflows once weighted (3e38 with 2 samples) made every
// value of the committed model +Inf. Refused whole, naming the tensor; the round keeps the
// other updates.
TEST(FedAvgTest, FoldRefusesAnUpdateThatOverflowsOnceWeighted) {
  model::Weights global;
  global.spec = TinySpec(3);
  global.data = {1.0f, 2.0f, 3.0f};
  const std::vector<float> honest = {0.5f, 0.5f, 0.5f};
  const std::vector<float> huge = {3e38f, 3e38f, 3e38f};
  coordinator::FedAvg agg;
  agg.Begin(global.spec);
  ASSERT_TRUE(agg.Fold(honest.data(), honest.size(), 10).ok());
  Status st = agg.Fold(huge.data(), huge.size(), 2);
  ASSERT_FALSE(st.ok()) << "a 3e38 x 2 update was folded";
  EXPECT_EQ(st.code(), Code::kRejected) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "tensor 'w' element 0")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "weighted by 2 samples")) << st.message();
  EXPECT_EQ(agg.updates(), 1);
  EXPECT_EQ(agg.total_samples(), 10);
  Result<model::Weights> out = ApplyAggregate(agg, global);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->data, (std::vector<float>{1.5f, 2.5f, 3.5f}));
}

// Each update finite and finite once weighted, but their sum is not: the update that would
// make the running sum non-finite is the one refused.
TEST(FedAvgTest, FoldRefusesAnUpdateThatWouldOverflowTheRunningSum) {
  model::Weights global;
  global.spec = TinySpec(2);
  global.data = {0.0f, 0.0f};
  const std::vector<float> big = {0.0f, 3e38f};
  coordinator::FedAvg agg;
  agg.Begin(global.spec);
  ASSERT_TRUE(agg.Fold(big.data(), big.size(), 1).ok());
  Status st = agg.Fold(big.data(), big.size(), 1);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kRejected);
  EXPECT_TRUE(Contains(st.message(), "tensor 'w' element 1")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "running sum")) << st.message();
  Result<model::Weights> out = ApplyAggregate(agg, global);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->FirstNonFinite(), -1);
  EXPECT_EQ(out->data, big);
}

// Issue #20: a count of INT64_MAX wrapped the round's total (a negative total scales the
// aggregate by an arbitrary factor). Refused, never wrapped; the total stays what it was.
TEST(FedAvgTest, FoldRefusesASampleCountThatWouldOverflowTheTotal) {
  for (bool exact : {false, true}) {
    SCOPED_TRACE(exact ? "exact" : "float");
    model::Weights global;
    global.spec = TinySpec(2);
    global.data = {1.0f, 1.0f};
    const std::vector<float> d = {0.0f, 0.0f};
    coordinator::FedAvg agg;
    agg.Begin(global.spec, exact);
    ASSERT_TRUE(agg.Fold(d.data(), d.size(), 5).ok());
    Status st = agg.Fold(d.data(), d.size(), std::numeric_limits<int64_t>::max());
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), Code::kRejected) << st.ToString();
    EXPECT_TRUE(Contains(st.message(), "overflow")) << st.message();
    EXPECT_EQ(agg.total_samples(), 5);
    EXPECT_EQ(agg.updates(), 1);
    ASSERT_TRUE(ApplyAggregate(agg, global).ok());
  }
}

// Deterministic mode sums in int64 fixed point: values under the per-value bound could still
// wrap the sum after a few updates. The update that would pass the bound is refused.
TEST(FedAvgExactTest, RefusesAnUpdateThatWouldOverflowTheFixedPointSum) {
  model::Weights global;
  global.spec = TinySpec(1);
  global.data = {0.0f};
  const std::vector<float> d = {1e9f};  // under 2^30 alone, 2^62 in fixed point when doubled
  coordinator::FedAvg agg;
  agg.Begin(global.spec, /*exact=*/true);
  ASSERT_TRUE(agg.Fold(d.data(), d.size(), 1).ok());
  for (int i = 0; i < 2; ++i) {
    Status st = agg.Fold(d.data(), d.size(), 1);
    ASSERT_FALSE(st.ok()) << "fold " << i + 2 << " was accepted";
    EXPECT_EQ(st.code(), Code::kRejected);
    EXPECT_TRUE(Contains(st.message(), "fixed-point sum")) << st.message();
  }
  EXPECT_EQ(agg.updates(), 1);
  Result<model::Weights> out = ApplyAggregate(agg, global);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->data, d);
}

}  // namespace
}  // namespace shoal
