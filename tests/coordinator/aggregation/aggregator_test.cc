// The aggregation seam: the registry (lookup, errors that list what exists) and the built-in
// "mean" used through the Aggregator interface, as the round engine uses it.
#include "coordinator/aggregation/aggregator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "coordinator/aggregation/aggregate_step.h"
#include "coordinator/aggregation/aggregator_registry.h"
#include "coordinator/aggregation/fed_avg.h"

namespace shoal::coordinator {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

model::ModelSpec Spec(int64_t n) {
  model::ModelSpec spec;
  spec.tensors.push_back({"w", model::DType::kFloat32, {n / 2}});
  spec.tensors.push_back({"b", model::DType::kFloat32, {n - n / 2}});
  return spec;
}

// An aggregator that is not the mean: the registry must hand out whatever was registered.
class TakeFirst final : public Aggregator {
 public:
  std::string name() const override { return "first"; }
  void Begin(const model::ModelSpec& spec, bool) override {
    spec_ = spec;
    first_.clear();
    samples_ = 0;
    updates_ = 0;
  }
  Status Fold(const float* delta, size_t count, int64_t num_samples) override {
    if (updates_++ == 0) first_.assign(delta, delta + count);
    samples_ += num_samples;
    return Status::Ok();
  }
  Status AggregateRange(size_t begin, size_t n, double* out) const override {
    for (size_t i = 0; i < n; ++i) out[i] = first_[begin + i];
    return Status::Ok();
  }
  size_t size() const override { return static_cast<size_t>(spec_.total_numel()); }
  int64_t total_samples() const override { return samples_; }
  int updates() const override { return updates_; }

 private:
  model::ModelSpec spec_;
  std::vector<float> first_;
  int64_t samples_ = 0;
  int updates_ = 0;
};

TEST(AggregatorRegistryTest, BuiltinsHoldTheMeanAndTheRobustAggregators) {
  const AggregatorRegistry& r = BuiltinAggregators();
  EXPECT_EQ(r.Names(), (std::vector<std::string>{"mean", "median", "multi_krum", "trimmed_mean"}));
  EXPECT_TRUE(r.Contains("mean"));
  EXPECT_TRUE(r.Contains("median"));
  EXPECT_FALSE(r.Contains("krum"));
  auto agg = r.Create("mean");
  ASSERT_TRUE(agg.ok()) << agg.status().ToString();
  ASSERT_NE(*agg, nullptr);
  EXPECT_EQ((*agg)->name(), "mean");
  EXPECT_NE(dynamic_cast<FedAvg*>(agg->get()), nullptr);
}

TEST(AggregatorRegistryTest, EveryCreateIsAFreshInstance) {
  auto a = BuiltinAggregators().Create("mean");
  auto b = BuiltinAggregators().Create("mean");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->get(), b->get());
}

TEST(AggregatorRegistryTest, UnknownNameListsTheRegisteredOnes) {
  AggregatorRegistry r;
  RegisterBuiltinAggregators(r);
  ASSERT_TRUE(r.Register("first", [] { return std::make_unique<TakeFirst>(); }).ok());
  auto agg = r.Create("krum");
  ASSERT_FALSE(agg.ok());
  EXPECT_EQ(agg.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(agg.status().message(), "unknown aggregator 'krum'"))
      << agg.status().message();
  EXPECT_TRUE(
      Contains(agg.status().message(), "registered: first, mean, median, multi_krum, trimmed_mean"))
      << agg.status().message();
}

TEST(AggregatorRegistryTest, RefusesDuplicateAndEmptyNames) {
  AggregatorRegistry r;
  RegisterBuiltinAggregators(r);
  Status dup = r.Register("mean", [] { return std::make_unique<TakeFirst>(); });
  EXPECT_EQ(dup.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(dup.message(), "'mean' is already registered")) << dup.message();
  EXPECT_EQ(r.Register("", [] { return std::make_unique<TakeFirst>(); }).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(r.Register("none", nullptr).code(), Code::kInvalidArgument);
  // The refused registrations changed nothing: "mean" is still FedAvg.
  EXPECT_EQ(r.Names(), (std::vector<std::string>{"mean", "median", "multi_krum", "trimmed_mean"}));
  auto agg = r.Create("mean");
  ASSERT_TRUE(agg.ok());
  EXPECT_NE(dynamic_cast<FedAvg*>(agg->get()), nullptr);
}

TEST(AggregatorRegistryTest, CreatesWhatWasRegistered) {
  AggregatorRegistry r;
  ASSERT_TRUE(r.Register("first", [] { return std::make_unique<TakeFirst>(); }).ok());
  auto agg = r.Create("first");
  ASSERT_TRUE(agg.ok());
  EXPECT_EQ((*agg)->name(), "first");
  EXPECT_FALSE(r.Create("mean").ok());  // an empty registry has no built-ins
}

// A round whose mean is exact in binary floating point: deltas are multiples of 1/8, the sample
// counts sum to 8, so every path (float sum, int64 fixed point, double reference) lands on the
// same float.
struct DyadicRound {
  model::Weights global;
  std::vector<std::vector<float>> deltas;
  std::vector<int64_t> samples = {1, 3, 4};
};

DyadicRound MakeDyadicRound() {
  DyadicRound r;
  const int64_t n = 64;
  r.global.spec = Spec(n);
  for (int64_t i = 0; i < n; ++i) r.global.data.push_back(0.25f * static_cast<float>(i - 32));
  for (size_t k = 0; k < r.samples.size(); ++k) {
    std::vector<float> d;
    for (int64_t i = 0; i < n; ++i) {
      d.push_back(0.125f * static_cast<float>((i * 7 + static_cast<int64_t>(k) * 13) % 41 - 20));
    }
    r.deltas.push_back(std::move(d));
  }
  return r;
}

Result<model::Weights> Through(Aggregator& agg, const model::Weights& global,
                               const std::vector<std::vector<float>>& deltas,
                               const std::vector<int64_t>& samples,
                               const std::vector<size_t>& order, bool deterministic) {
  agg.Begin(global.spec, deterministic);
  for (size_t k : order) {
    SHOAL_RETURN_IF_ERROR(agg.Fold(deltas[k].data(), deltas[k].size(), samples[k]));
  }
  return ApplyAggregate(agg, global);
}

TEST(AggregatorSeamTest, MeanEqualsTheReferenceExactly) {
  const DyadicRound r = MakeDyadicRound();
  const std::vector<double> ref = ReferenceFedAvg(r.global.data, r.deltas, r.samples);
  for (bool deterministic : {false, true}) {
    SCOPED_TRACE(deterministic ? "deterministic" : "float");
    auto agg = BuiltinAggregators().Create("mean");
    ASSERT_TRUE(agg.ok());
    auto out = Through(**agg, r.global, r.deltas, r.samples, {2, 0, 1}, deterministic);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(out->spec, r.global.spec);
    ASSERT_EQ(out->data.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_EQ(out->data[i], static_cast<float>(ref[i])) << "element " << i;
    }
    EXPECT_EQ((*agg)->total_samples(), 8);
    EXPECT_EQ((*agg)->updates(), 3);
  }
}

// The interface adds nothing: on random data the registry's "mean" gives the bytes FedAvg used
// directly gives, in both modes.
TEST(AggregatorSeamTest, MeanThroughTheInterfaceIsFedAvgBitForBit) {
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  model::Weights global;
  global.spec = Spec(5001);
  for (int i = 0; i < 5001; ++i) global.data.push_back(2 * dist(rng));
  std::vector<std::vector<float>> deltas(4, std::vector<float>(5001));
  for (auto& d : deltas) {
    for (auto& x : d) x = dist(rng);
  }
  const std::vector<int64_t> samples = {5, 600, 31, 12000};
  for (bool deterministic : {false, true}) {
    FedAvg direct;
    direct.Begin(global.spec, deterministic);
    for (size_t k = 0; k < deltas.size(); ++k) {
      ASSERT_TRUE(direct.Fold(deltas[k].data(), deltas[k].size(), samples[k]).ok());
    }
    auto want = ApplyAggregate(direct, global);
    auto agg = BuiltinAggregators().Create("mean");
    ASSERT_TRUE(agg.ok() && want.ok());
    auto got = Through(**agg, global, deltas, samples, {0, 1, 2, 3}, deterministic);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->Hash(), want->Hash()) << (deterministic ? "deterministic" : "float");
  }
}

// The server step asks for the aggregate slice by slice: a model of two slices and a bit covers
// every element exactly once (global + delta, one rounding: float(double(g) + double(d)) is
// the float sum g + d).
TEST(AggregatorSeamTest, TheStepCoversEverySliceOnce) {
  const size_t n = 2 * kAggregateSlice + 7;
  model::Weights global;
  global.spec = Spec(static_cast<int64_t>(n));
  std::vector<float> delta(n);
  for (size_t i = 0; i < n; ++i) {
    global.data.push_back(static_cast<float>(i % 1000) * 0.25f);
    delta[i] = static_cast<float>(i) * 0.5f;
  }
  TakeFirst agg;
  agg.Begin(global.spec, false);
  ASSERT_TRUE(agg.Fold(delta.data(), n, 1).ok());
  auto out = ApplyAggregate(agg, global);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(out->data.size(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out->data[i], global.data[i] + delta[i]) << i;
}

TEST(AggregatorSeamTest, ARangeOutsideTheModelIsRefused) {
  FedAvg agg;
  agg.Begin(Spec(10), false);
  const std::vector<float> d(10, 1.0f);
  ASSERT_TRUE(agg.Fold(d.data(), d.size(), 3).ok());
  std::vector<double> out(11);
  EXPECT_TRUE(agg.AggregateRange(0, 10, out.data()).ok());
  EXPECT_EQ(out[9], 1.0);
  EXPECT_EQ(agg.AggregateRange(5, 6, out.data()).code(), Code::kInvalidArgument);
  EXPECT_EQ(agg.AggregateRange(11, 0, out.data()).code(), Code::kInvalidArgument);
  EXPECT_EQ(agg.AggregateRange(SIZE_MAX, 2, out.data()).code(), Code::kInvalidArgument);
}

TEST(AggregatorSeamTest, DeterministicMeanIsBitIdenticalUnderEveryArrivalOrder) {
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  model::Weights global;
  global.spec = Spec(20000);
  for (int i = 0; i < 20000; ++i) global.data.push_back(dist(rng));
  std::vector<std::vector<float>> deltas(4, std::vector<float>(20000));
  for (auto& d : deltas) {
    for (auto& x : d) x = 0.01f * dist(rng);
  }
  const std::vector<int64_t> samples = {3, 977, 60000, 41};
  std::vector<size_t> order = {0, 1, 2, 3};
  auto agg = BuiltinAggregators().Create("mean");
  ASSERT_TRUE(agg.ok());
  auto first = Through(**agg, global, deltas, samples, order, /*deterministic=*/true);
  ASSERT_TRUE(first.ok());
  int orders = 0;
  bool float_mode_differs = false;
  while (std::next_permutation(order.begin(), order.end())) {  // the other 23 orders
    ++orders;
    auto again = Through(**agg, global, deltas, samples, order, /*deterministic=*/true);
    ASSERT_TRUE(again.ok());
    ASSERT_EQ(std::memcmp(again->data.data(), first->data.data(), first->data.size() * 4), 0)
        << "arrival order " << order[0] << order[1] << order[2] << order[3];
    auto loose = Through(**agg, global, deltas, samples, order, /*deterministic=*/false);
    ASSERT_TRUE(loose.ok());
    auto loose_first = Through(**agg, global, deltas, samples, {0, 1, 2, 3}, false);
    ASSERT_TRUE(loose_first.ok());
    float_mode_differs |= loose->Hash() != loose_first->Hash();
  }
  EXPECT_EQ(orders, 23);
  // The data is one where order matters for a float sum, so the check above has teeth.
  EXPECT_TRUE(float_mode_differs);
}

}  // namespace
}  // namespace shoal::coordinator
