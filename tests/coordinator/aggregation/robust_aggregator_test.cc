// The robust aggregators (trimmed_mean, median, multi_krum) against straightforward
// double-precision references that hold every update in memory, across slice boundaries, in
// any arrival order, with hostile inputs; and their spill file.
#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "coordinator/aggregation/aggregate_step.h"
#include "coordinator/aggregation/aggregator_registry.h"
#include "coordinator/aggregation/coordinate_median.h"
#include "coordinator/aggregation/fed_avg.h"
#include "coordinator/aggregation/multi_krum.h"
#include "coordinator/aggregation/trimmed_mean.h"
#include "coordinator/aggregation/update_spill.h"

namespace shoal {
namespace {

using coordinator::CoordinateMedian;
using coordinator::MultiKrum;
using coordinator::RobustAggregator;
using coordinator::RobustOptions;
using coordinator::TrimmedMean;
using Updates = std::vector<std::vector<float>>;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A model that crosses the aggregation slice (kAggregateSlice) twice, in two tensors.
model::ModelSpec SpanningSpec() {
  model::ModelSpec spec;
  spec.tensors.push_back({"fc.weight", model::DType::kFloat32, {2, 70000}});
  spec.tensors.push_back({"fc.bias", model::DType::kFloat32, {7}});
  return spec;
}

model::ModelSpec TinySpec(int64_t n) {
  model::ModelSpec spec;
  spec.tensors.push_back({"w", model::DType::kFloat32, {n}});
  return spec;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/shoal-robust-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { (void)std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  // Names in the directory (other than . and ..).
  std::vector<std::string> Entries() const {
    std::vector<std::string> out;
    DIR* d = ::opendir(path_.c_str());
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
    return out;
  }

 private:
  std::string path_;
};

std::unique_ptr<RobustAggregator> Make(const std::string& name, const RobustOptions& o) {
  auto agg = coordinator::BuiltinAggregators().Create(name);
  EXPECT_TRUE(agg.ok());
  auto* robust = dynamic_cast<RobustAggregator*>(agg->release());
  EXPECT_NE(robust, nullptr) << name;
  robust->Configure(o);
  return std::unique_ptr<RobustAggregator>(robust);
}

Updates RandomUpdates(size_t k, size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 0.01f);
  Updates u(k, std::vector<float>(n));
  for (auto& v : u) {
    for (auto& x : v) x = d(rng);
  }
  return u;
}

// The aggregated delta, asked for slice by slice as the round engine does.
std::vector<double> Aggregate(const coordinator::Aggregator& agg) {
  std::vector<double> out(agg.size());
  for (size_t b = 0; b < agg.size(); b += coordinator::kAggregateSlice) {
    const size_t n = std::min(coordinator::kAggregateSlice, agg.size() - b);
    Status st = agg.AggregateRange(b, n, out.data() + b);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  return out;
}

std::vector<double> FoldAll(RobustAggregator& agg, const model::ModelSpec& spec, const Updates& u,
                            const std::vector<int64_t>& w, const std::vector<size_t>& order) {
  agg.Begin(spec, /*deterministic=*/true);
  for (size_t i : order) {
    Status st = agg.Fold(u[i].data(), u[i].size(), w[i]);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  return Aggregate(agg);
}

std::vector<size_t> Iota(size_t k) {
  std::vector<size_t> o(k);
  std::iota(o.begin(), o.end(), size_t{0});
  return o;
}

// --- references: every update in memory, everything in double, sorting allowed -------------

std::vector<double> RefColumnwise(const Updates& u, size_t trim, bool median) {
  const size_t k = u.size();
  std::vector<double> out(u[0].size());
  std::vector<double> col(k);
  for (size_t j = 0; j < out.size(); ++j) {
    for (size_t r = 0; r < k; ++r) col[r] = u[r][j];
    std::sort(col.begin(), col.end());
    if (median) {
      out[j] = k % 2 == 1 ? col[k / 2] : (col[k / 2 - 1] + col[k / 2]) / 2;
    } else {
      double s = 0;
      for (size_t r = trim; r < k - trim; ++r) s += col[r];
      out[j] = s / static_cast<double>(k - 2 * trim);
    }
  }
  return out;
}

std::vector<double> RefMultiKrum(const Updates& u, const std::vector<int64_t>& w, int f, size_t m,
                                 std::vector<size_t>* chosen) {
  const size_t n = u.size();
  std::vector<std::vector<double>> d(n, std::vector<double>(n, 0));
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = 0; b < n; ++b) {
      for (size_t j = 0; j < u[a].size(); ++j) {
        const double x = static_cast<double>(u[a][j]) - u[b][j];
        d[a][b] += x * x;
      }
    }
  }
  std::vector<std::pair<double, size_t>> scores;
  for (size_t a = 0; a < n; ++a) {
    std::vector<double> o;
    for (size_t b = 0; b < n; ++b) {
      if (b != a) o.push_back(d[a][b]);
    }
    std::sort(o.begin(), o.end());
    scores.push_back({std::accumulate(o.begin(), o.begin() + (n - f - 2), 0.0), a});
  }
  std::sort(scores.begin(), scores.end());
  chosen->clear();
  for (size_t i = 0; i < m; ++i) chosen->push_back(scores[i].second);
  std::vector<double> out(u[0].size(), 0);
  double total = 0;
  for (size_t a : *chosen) total += static_cast<double>(w[a]);
  for (size_t a : *chosen) {
    for (size_t j = 0; j < out.size(); ++j) out[j] += static_cast<double>(w[a]) * u[a][j] / total;
  }
  return out;
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

double Distance(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}

// --- against the references --------------------------------------------------------------

TEST(RobustAggregatorTest, MedianMatchesTheReferenceExactlyAcrossSlices) {
  TempDir dir;
  const auto spec = SpanningSpec();
  std::mt19937 rng(1);
  for (size_t k : {5u, 6u}) {  // odd: the middle value; even: the mean of the two middle ones
    Updates u = RandomUpdates(k, static_cast<size_t>(spec.total_numel()), rng);
    auto agg = Make("median", {dir.path(), 0.1, 0, 0});
    auto got = FoldAll(*agg, spec, u, std::vector<int64_t>(k, 10), Iota(k));
    EXPECT_EQ(got, RefColumnwise(u, 0, /*median=*/true)) << "k=" << k;
  }
}

TEST(RobustAggregatorTest, TrimmedMeanMatchesTheReferenceAcrossSlices) {
  TempDir dir;
  const auto spec = SpanningSpec();
  std::mt19937 rng(2);
  const size_t k = 10;
  Updates u = RandomUpdates(k, static_cast<size_t>(spec.total_numel()), rng);
  for (double beta : {0.0, 0.1, 0.2, 0.45}) {
    auto agg = Make("trimmed_mean", {dir.path(), beta, 0, 0});
    auto got = FoldAll(*agg, spec, u, std::vector<int64_t>(k, 3), Iota(k));
    const size_t t = static_cast<size_t>(std::floor(beta * k));
    // The same kept values summed in another order: a few ulps of 0.01-sized values.
    EXPECT_LT(MaxAbsDiff(got, RefColumnwise(u, t, false)), 1e-15) << "beta=" << beta;
  }
  EXPECT_EQ(TrimmedMean::Trimmed(0.2, 10), 2u);
  EXPECT_EQ(TrimmedMean::Trimmed(0.45, 10), 4u);
  EXPECT_EQ(TrimmedMean::Trimmed(0.49, 2), 0u);
}

TEST(RobustAggregatorTest, MultiKrumMatchesTheReferenceAcrossSlices) {
  TempDir dir;
  const auto spec = SpanningSpec();
  std::mt19937 rng(3);
  const size_t k = 9;
  Updates u = RandomUpdates(k, static_cast<size_t>(spec.total_numel()), rng);
  // Two outliers: a scaled copy and a sign flip of honest updates.
  for (auto& x : u[2]) x *= 30;
  for (auto& x : u[6]) x *= -20;
  std::vector<int64_t> w = {5, 7, 9, 3, 4, 8, 6, 2, 1};
  for (int m : {0, 3}) {
    const int f = 2;
    auto agg = Make("multi_krum", {dir.path(), 0.1, f, m});
    auto got = FoldAll(*agg, spec, u, w, Iota(k));
    std::vector<size_t> chosen;
    auto want = RefMultiKrum(u, w, f, MultiKrum::Selected(k, f, m), &chosen);
    EXPECT_LT(MaxAbsDiff(got, want), 1e-15) << "m=" << m;
    // The outliers are not selected, and the verdicts (by fold index) say so.
    EXPECT_EQ(std::count(chosen.begin(), chosen.end(), 2), 0);
    EXPECT_EQ(std::count(chosen.begin(), chosen.end(), 6), 0);
    ASSERT_EQ(agg->verdicts().size(), k);
    for (size_t i = 0; i < k; ++i) {
      EXPECT_EQ(agg->verdicts()[i].selected, std::count(chosen.begin(), chosen.end(), i) == 1)
          << "update " << i;
    }
  }
}

TEST(RobustAggregatorTest, MultiKrumWithoutByzantineAndAllSelectedIsTheWeightedMean) {
  TempDir dir;
  const auto spec = TinySpec(1000);
  std::mt19937 rng(4);
  Updates u = RandomUpdates(4, 1000, rng);
  std::vector<int64_t> w = {1, 2, 3, 4};
  auto agg = Make("multi_krum", {dir.path(), 0.1, 0, 0});
  auto got = FoldAll(*agg, spec, u, w, Iota(4));
  auto mean = coordinator::ReferenceFedAvg(std::vector<float>(1000, 0.0f), u, w);
  EXPECT_LT(MaxAbsDiff(got, mean), 1e-15);
}

TEST(RobustAggregatorTest, MultiKrumRefusesTooFewUpdatesForItsF) {
  TempDir dir;
  const auto spec = TinySpec(10);
  std::mt19937 rng(5);
  Updates u = RandomUpdates(7, 10, rng);
  auto agg = Make("multi_krum", {dir.path(), 0.1, 2, 0});
  agg->Begin(spec, true);
  for (size_t i = 0; i < 6; ++i) ASSERT_TRUE(agg->Fold(u[i].data(), 10, 1).ok());
  std::vector<double> out(10);
  Status st = agg->AggregateRange(0, 10, out.data());  // 6 < 2f+3 = 7
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), "needs at least 7 updates, the round has 6")) << st.message();
  ASSERT_TRUE(agg->Fold(u[6].data(), 10, 1).ok());  // f at its limit: n = 2f + 3
  EXPECT_TRUE(agg->AggregateRange(0, 10, out.data()).ok());
}

// --- order independence, ties -------------------------------------------------------------

TEST(RobustAggregatorTest, EveryArrivalOrderGivesTheSameBits) {
  TempDir dir;
  const auto spec = SpanningSpec();
  std::mt19937 rng(6);
  const size_t k = 7;
  Updates u = RandomUpdates(k, static_cast<size_t>(spec.total_numel()), rng);
  u[5] = u[1];                    // an exact duplicate (ties everywhere)
  for (auto& x : u[3]) x = 0.0f;  // a constant update
  u[3][0] = -0.0f;
  std::vector<int64_t> w = {3, 1, 4, 1, 5, 9, 2};
  for (const char* name : {"median", "trimmed_mean", "multi_krum"}) {
    auto agg = Make(name, {dir.path(), 0.3, 1, 0});
    const auto first = FoldAll(*agg, spec, u, w, Iota(k));
    std::vector<size_t> order = Iota(k);
    for (int trial = 0; trial < 5; ++trial) {
      std::shuffle(order.begin(), order.end(), rng);
      const auto again = FoldAll(*agg, spec, u, w, order);
      ASSERT_EQ(0, std::memcmp(first.data(), again.data(), first.size() * sizeof(double)))
          << name << " trial " << trial;
    }
  }
}

// --- attacks ------------------------------------------------------------------------------

// One attacker of five sending its honest update scaled x100 or sign-flipped x10: the mean is
// pulled far from the honest workers' mean, the robust aggregators stay close to it.
TEST(RobustAggregatorTest, OneAttackerOfFiveMovesTheMeanButNotTheRobustAggregates) {
  TempDir dir;
  const auto spec = TinySpec(5000);
  std::mt19937 rng(7);
  // Honest updates: a common direction plus noise (the workers agree on where to go).
  std::normal_distribution<float> dir_d(0.0f, 0.01f), noise(0.0f, 0.002f);
  std::vector<float> common(5000);
  for (auto& x : common) x = dir_d(rng);
  Updates honest(4, std::vector<float>(5000));
  for (auto& h : honest) {
    for (size_t j = 0; j < h.size(); ++j) h[j] = common[j] + noise(rng);
  }
  const std::vector<int64_t> w(5, 100);
  const auto honest_mean =
      coordinator::ReferenceFedAvg(std::vector<float>(5000, 0.0f), honest, {100, 100, 100, 100});
  const double scale = Distance(honest_mean, std::vector<double>(5000, 0.0));
  for (float factor : {100.0f, -10.0f}) {
    Updates u = honest;
    u.push_back(honest[0]);
    for (auto& x : u.back()) x *= factor;
    auto mean = coordinator::ReferenceFedAvg(std::vector<float>(5000, 0.0f), u,
                                             std::vector<int64_t>(5, 100));
    EXPECT_GT(Distance(mean, honest_mean), 1.5 * scale) << "factor " << factor;
    for (const char* name : {"median", "trimmed_mean", "multi_krum"}) {
      auto agg = Make(name, {dir.path(), 0.2, 1, 0});
      const auto got = FoldAll(*agg, spec, u, w, Iota(5));
      EXPECT_LT(Distance(got, honest_mean), 0.2 * scale) << name << " factor " << factor;
    }
  }
}

// --- hostile input and the spill file ------------------------------------------------------

TEST(RobustAggregatorTest, HostileUpdatesAreRefusedAndLeaveNoTrace) {
  TempDir dir;
  const auto spec = TinySpec(100);
  for (const char* name : {"median", "trimmed_mean", "multi_krum"}) {
    auto agg = Make(name, {dir.path(), 0.1, 0, 0});
    agg->Begin(spec, false);
    std::vector<float> good(100, 0.5f);
    ASSERT_TRUE(agg->Fold(good.data(), 100, 1).ok());
    std::vector<float> bad = good;
    bad[42] = std::numeric_limits<float>::quiet_NaN();
    Status st = agg->Fold(bad.data(), 100, 1);
    EXPECT_EQ(st.code(), Code::kRejected);
    EXPECT_TRUE(Contains(st.message(), "tensor 'w' element 42 has a non-finite value"))
        << st.message();
    bad[42] = std::numeric_limits<float>::infinity();
    EXPECT_EQ(agg->Fold(bad.data(), 100, 1).code(), Code::kRejected);
    st = agg->Fold(good.data(), 99, 1);
    EXPECT_EQ(st.code(), Code::kInvalidArgument);
    EXPECT_TRUE(Contains(st.message(), "99 values, model has 100")) << st.message();
    EXPECT_EQ(agg->Fold(good.data(), 100, 0).code(), Code::kInvalidArgument);
    EXPECT_EQ(agg->Fold(good.data(), 100, std::numeric_limits<int64_t>::max()).code(),
              Code::kRejected);  // the round's total would overflow
    EXPECT_EQ(agg->updates(), 1);
    EXPECT_EQ(agg->total_samples(), 1);
    EXPECT_EQ(agg->spill_bytes(), 400u);
    std::vector<double> out(100);
    EXPECT_EQ(agg->AggregateRange(50, 51, out.data()).code(), Code::kInvalidArgument);
    if (std::string(name) == "multi_krum") continue;  // needs 3 updates (its own test)
    ASSERT_TRUE(agg->AggregateRange(0, 100, out.data()).ok());
    EXPECT_EQ(out[42], 0.5);
  }
}

TEST(RobustAggregatorTest, TheSpillHasNoNameAndIsEmptiedAfterTheRound) {
  TempDir dir;
  const auto spec = TinySpec(1 << 16);
  std::mt19937 rng(8);
  Updates u = RandomUpdates(3, 1 << 16, rng);
  auto agg = Make("median", {dir.path(), 0.1, 0, 0});
  agg->Begin(spec, false);
  for (auto& v : u) ASSERT_TRUE(agg->Fold(v.data(), v.size(), 1).ok());
  EXPECT_EQ(agg->spill_bytes(), 3u * (1u << 18));
  EXPECT_TRUE(dir.Entries().empty());  // unnamed: a crash leaves nothing to misread
  Aggregate(*agg);
  agg->Release();
  EXPECT_EQ(agg->spill_bytes(), 0u);
  std::vector<double> out(10);
  EXPECT_EQ(agg->AggregateRange(0, 10, out.data()).code(), Code::kInvalidArgument);
  // The next round starts empty too.
  agg->Begin(spec, false);
  ASSERT_TRUE(agg->Fold(u[0].data(), u[0].size(), 1).ok());
  EXPECT_EQ(agg->updates(), 1);
}

TEST(RobustAggregatorTest, LeftoverSpillFilesAreRemovedAndOthersKept) {
  TempDir dir;
  for (const char* n : {".shoal-spill-0123abcd", ".shoal-spill-ffff", "v000001.weights"}) {
    FILE* f = std::fopen((dir.path() + "/" + n).c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  EXPECT_EQ(coordinator::UpdateSpill::RemoveLeftovers(dir.path()), 2);
  EXPECT_EQ(dir.Entries(), std::vector<std::string>{"v000001.weights"});
}

// The free-space check comes before the file grows: an update larger than the disk's free
// space (a 1 TiB one here; the check never reads the values) is a clear error, not SIGBUS.
TEST(RobustAggregatorTest, AnUpdateTheDiskCannotHoldIsRefusedBeforeWriting) {
  TempDir dir;
  coordinator::UpdateSpill spill;
  const size_t values = size_t{1} << 38;  // 1 TiB of floats
  ASSERT_TRUE(spill.Open(dir.path(), values).ok());
  float dummy = 0;
  Status st = spill.Append(&dummy);
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_TRUE(Contains(st.message(), "needs 1099511627776 bytes")) << st.message();
  EXPECT_TRUE(Contains(st.message(), dir.path())) << st.message();
  EXPECT_EQ(spill.updates(), 0u);
  EXPECT_EQ(spill.bytes(), 0u);
}

TEST(RobustAggregatorTest, AtMostTheUpdateCapPerRound) {
  TempDir dir;
  auto agg = Make("median", {dir.path(), 0.1, 0, 0});
  agg->Begin(TinySpec(2), false);
  std::vector<float> v = {1, 2};
  for (int i = 0; i < coordinator::kMaxRobustUpdates; ++i) {
    ASSERT_TRUE(agg->Fold(v.data(), 2, 1).ok()) << i;
  }
  Status st = agg->Fold(v.data(), 2, 1);
  EXPECT_EQ(st.code(), Code::kRejected);
  EXPECT_TRUE(Contains(st.message(), "at most 1024 updates per round")) << st.message();
  EXPECT_EQ(agg->updates(), coordinator::kMaxRobustUpdates);
}

TEST(RobustAggregatorTest, WithoutASpillDirectoryFoldFails) {
  CoordinateMedian agg;
  agg.Begin(TinySpec(4), false);
  std::vector<float> v(4, 1.0f);
  Status st = agg.Fold(v.data(), 4, 1);
  EXPECT_EQ(st.code(), Code::kInternal);
  EXPECT_EQ(agg.updates(), 0);
}

}  // namespace
}  // namespace shoal
