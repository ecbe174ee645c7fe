// Issue #20, item 2: one enrolled worker controlling or destroying the global model, as the
// adversary did it - with scripted workers speaking the real protocol over TLS to the real
// coordinator: a declared training set of 10^15 or INT64_MAX samples, a silo declared far
// larger than the others', an update of 3e38 with 2 samples (+Inf once weighted), a NaN
// update, and an update whose mean rounds past FLT_MAX. Every committed version must be
// finite, a worker's weight capped, and refused updates named in the round's record.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "store/model_store.h"
#include "tests/integration/process.h"
#include "tests/integration/scripted_worker.h"
#include "tests/integration/test_pki.h"

namespace shoal {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using testing::BinDir;
using testing::Process;
using testing::ScriptedWorker;

constexpr char kFashion[] = "/usr/share/datasets/fashion-mnist";

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class PoisoningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(std::string(kFashion) + "/t10k-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
    }
    char tmpl[] = "/tmp/shoal-poison-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::TestPki>(dir_);
  }
  void TearDown() override {
    coord_.reset();
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
    if (HasFailure()) std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
  }

  // A coordinator over TLS with this test's CA, the mlp model, no HTTP.
  void StartCoordinator(std::vector<std::string> extra) {
    std::vector<std::string> argv = {BinDir() + "/shoal-coordinator",
                                     "--run-dir",
                                     dir_ + "/run",
                                     "--bind",
                                     "tcp://127.0.0.1:*",
                                     "--endpoint-file",
                                     dir_ + "/endpoint",
                                     "--model",
                                     "mlp",
                                     "--eval-limit",
                                     "200",
                                     "--ca-dir",
                                     pki_->ca_dir(),
                                     "--set",
                                     "http.enabled=false",
                                     "--set",
                                     "network.heartbeat_ms=200",
                                     "--set",
                                     "network.peer_timeout_ms=15000",
                                     "--set",
                                     "eval.federated=false"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    coord_ = std::make_unique<Process>(argv, dir_ + "/coordinator.log");
    endpoint_ = testing::WaitForFile(dir_ + "/endpoint", 60s);
    ASSERT_FALSE(endpoint_.empty()) << coord_->Log();
  }

  std::unique_ptr<ScriptedWorker> Worker(const std::string& name, int64_t num_train) {
    return std::make_unique<ScriptedWorker>(endpoint_, name, pki_->ClientTls(name), num_train);
  }

  // Every committed version, loaded; each must be finite.
  std::vector<model::Weights> FiniteVersions() {
    std::vector<model::Weights> out;
    auto versions = store::ListVersions(dir_ + "/run");
    EXPECT_TRUE(versions.ok()) << versions.status().ToString();
    if (!versions.ok()) return out;
    for (const auto& v : *versions) {
      auto w = store::LoadVersion(dir_ + "/run", v);
      EXPECT_TRUE(w.ok()) << w.status().ToString();
      if (!w.ok()) continue;
      EXPECT_EQ(w->FirstNonFinite(), -1) << "v" << v.version << " holds a non-finite value";
      out.push_back(std::move(w).value());
    }
    return out;
  }

  json RoundRecord(uint64_t round) {
    auto recs = store::ReadMetricsLog(dir_ + "/run");
    EXPECT_TRUE(recs.ok()) << recs.status().ToString();
    if (recs.ok()) {
      for (const auto& r : *recs) {
        if (r.value("round", uint64_t{0}) == round) return r;
      }
    }
    ADD_FAILURE() << "no metrics record for round " << round;
    return json::object();
  }

  // next == base + sum(w_k d_k) / sum(w_k), elementwise within float rounding.
  static void ExpectWeightedMean(const model::Weights& base, const model::Weights& next,
                                 const std::vector<std::vector<float>>& deltas,
                                 const std::vector<double>& weights) {
    ASSERT_EQ(base.data.size(), next.data.size());
    double total = 0;
    for (double w : weights) total += w;
    size_t bad = 0;
    for (size_t i = 0; i < base.data.size(); ++i) {
      double s = 0;
      for (size_t k = 0; k < deltas.size(); ++k) s += weights[k] * deltas[k][i];
      const double want = base.data[i] + s / total;
      if (std::fabs(next.data[i] - want) > 1e-6 * std::max(1.0, std::fabs(want))) ++bad;
    }
    EXPECT_EQ(bad, 0u) << "elements differing from the weighted mean";
  }

  std::string dir_;
  std::unique_ptr<testing::TestPki> pki_;
  std::unique_ptr<Process> coord_;
  std::string endpoint_;
};

std::vector<float> Pattern(size_t n, float scale, int period) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = scale * static_cast<float>(static_cast<int>(i % period) - 2);
  return v;
}

// 10^15 outweighed every other worker, INT64_MAX wrapped the round's total: both are refused at
// Hello, naming admission.max_samples; so is a validation set of INT64_MAX.
TEST_F(PoisoningTest, AbsurdDeclaredSampleCountsAreRefusedAtHello) {
  StartCoordinator({"--rounds", "1", "--min-workers", "1", "--round-timeout", "30"});
  struct Case {
    const char* name;
    int64_t num_train;
    int64_t num_val;
  };
  for (const Case& c : {Case{"huge", 1'000'000'000'000'000, 10},
                        Case{"max", std::numeric_limits<int64_t>::max(), 10},
                        Case{"maxval", 100, std::numeric_limits<int64_t>::max()}}) {
    SCOPED_TRACE(c.name);
    ScriptedWorker w(endpoint_, c.name, pki_->ClientTls(c.name), c.num_train, c.num_val);
    Status st = w.Hello();
    ASSERT_FALSE(st.ok()) << "admitted a silo declaring " << c.num_train << " / " << c.num_val;
    EXPECT_TRUE(Contains(st.message(), "admission.max_samples=1000000000")) << st.message();
    EXPECT_TRUE(Contains(st.message(), std::to_string(std::max(c.num_train, c.num_val))))
        << st.message();
  }
  // An honest silo still gets in and the round commits.
  auto honest = Worker("honest", 100);
  ASSERT_TRUE(honest->Hello().ok());
  auto t = honest->NextTrainTask();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE(honest->SendUpdate(t->task, Pattern(t->global.data.size(), 1e-3f, 5), 100).ok());
  ASSERT_EQ(coord_->Wait(120s), 0) << coord_->Log();
  EXPECT_TRUE(Contains(coord_->Log(), "worker=huge not admitted"));
}

// A worker declaring the largest silo admission allows (10^9) next to two of 100 samples made
// the new model its own update. Now it weighs strategy.max_weight_ratio (4) x the median (100):
// the model is the capped weighted mean, and the record says so.
TEST_F(PoisoningTest, HugeDeclaredSiloIsCappedAndDoesNotTakeOverTheModel) {
  StartCoordinator(
      {"--rounds", "1", "--min-workers", "3", "--min-fit", "3", "--round-timeout", "60"});
  auto a = Worker("a", 100);
  auto b = Worker("b", 100);
  auto x = Worker("x", 1'000'000'000);
  ASSERT_TRUE(a->Hello().ok());
  ASSERT_TRUE(b->Hello().ok());
  ASSERT_TRUE(x->Hello().ok());
  auto ta = a->NextTrainTask(), tb = b->NextTrainTask(), tx = x->NextTrainTask();
  ASSERT_TRUE(ta.ok() && tb.ok() && tx.ok());
  const size_t n = ta->global.data.size();
  const std::vector<float> da = Pattern(n, 1e-3f, 5), db = Pattern(n, -1e-3f, 3);
  const std::vector<float> dx(n, 0.5f);  // the attacker's model
  ASSERT_TRUE(a->SendUpdate(ta->task, da, 100).ok());
  ASSERT_TRUE(b->SendUpdate(tb->task, db, 100).ok());
  auto ack = x->SendUpdate(tx->task, dx, 1'000'000'000);
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  ASSERT_EQ(coord_->Wait(120s), 0) << coord_->Log();

  auto versions = FiniteVersions();
  ASSERT_EQ(versions.size(), 2u);
  ExpectWeightedMean(versions[0], versions[1], {da, db, dx}, {100, 100, 400});
  // Not the attacker's model: element 0 moved by 400/600 of its delta, not all of it.
  EXPECT_LT(versions[1].data[0] - versions[0].data[0], 0.4f);
  const json rec = RoundRecord(1);
  EXPECT_EQ(rec["weight_cap"], 400) << rec.dump();
  EXPECT_EQ(rec["capped"], json::array({"x"})) << rec.dump();
  EXPECT_EQ(rec["workers"]["x"]["samples"], 1'000'000'000) << rec.dump();
  EXPECT_EQ(rec["workers"]["x"]["weight"], 400) << rec.dump();
  EXPECT_EQ(rec["workers"]["x"]["capped"], true) << rec.dump();
  EXPECT_EQ(rec["workers"]["a"]["weight"], 100) << rec.dump();
  EXPECT_EQ(rec["samples"], 600) << rec.dump();
  EXPECT_TRUE(Contains(coord_->Log(), "worker=x reports 1000000000 samples; weighted as 400"));
}

// 3e38 with 2 samples is finite but +Inf once weighted: it made every value of the committed
// model +Inf. Now it is refused naming the worker (in the log and the round's record) and the
// run goes on; the same for a NaN update in the next round. The worker's later valid update in
// the same round still counts.
TEST_F(PoisoningTest, OverflowingAndNaNUpdatesAreRefusedNamedAndTheRunGoesOn) {
  StartCoordinator(
      {"--rounds", "2", "--min-workers", "2", "--min-fit", "2", "--round-timeout", "60"});
  auto bad = Worker("bad", 100);
  auto good = Worker("good", 100);
  ASSERT_TRUE(bad->Hello().ok());
  ASSERT_TRUE(good->Hello().ok());
  std::vector<std::vector<float>> good_deltas;
  for (int round = 1; round <= 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto tb = bad->NextTrainTask(), tg = good->NextTrainTask();
    ASSERT_TRUE(tb.ok() && tg.ok());
    const size_t n = tb->global.data.size();
    std::vector<float> poison(n, round == 1 ? 3e38f : 1e-3f);
    if (round == 2) poison[n / 2] = std::numeric_limits<float>::quiet_NaN();
    auto r = bad->SendUpdate(tb->task, poison, 2);
    ASSERT_FALSE(r.ok()) << "a poisoned update was accepted";
    EXPECT_TRUE(Contains(r.status().message(), round == 1 ? "overflows float when weighted by 2"
                                                          : "has a non-finite value"))
        << r.status().message();
    // The same worker's valid update of the round is still taken.
    ASSERT_TRUE(bad->SendUpdate(tb->task, std::vector<float>(n, 0.0f), 2).ok());
    good_deltas.push_back(Pattern(n, 1e-3f, 4 + round));
    ASSERT_TRUE(good->SendUpdate(tg->task, good_deltas.back(), 100).ok());
  }
  ASSERT_EQ(coord_->Wait(120s), 0) << coord_->Log();
  auto versions = FiniteVersions();
  ASSERT_EQ(versions.size(), 3u);
  const std::vector<float> zeros(versions[0].data.size(), 0.0f);
  ExpectWeightedMean(versions[0], versions[1], {zeros, good_deltas[0]}, {2, 100});
  ExpectWeightedMean(versions[1], versions[2], {zeros, good_deltas[1]}, {2, 100});
  const json r1 = RoundRecord(1), r2 = RoundRecord(2);
  EXPECT_TRUE(Contains(r1["refused"].value("bad", ""), "overflows float")) << r1.dump();
  EXPECT_TRUE(Contains(r2["refused"].value("bad", ""), "non-finite value")) << r2.dump();
  EXPECT_FALSE(r1["refused"].contains("good"));
  EXPECT_TRUE(Contains(coord_->Log(), "worker=bad update rejected: update tensor"));
}

// Finite updates whose mean, added to the global model, rounds past FLT_MAX: the aggregator
// cannot tell which update did it, so the round is not committed and is tried again; the
// retried round commits a finite version.
TEST_F(PoisoningTest, NonFiniteAggregateIsNotCommittedAndTheRoundIsRetried) {
  StartCoordinator({"--rounds", "2", "--min-workers", "1", "--min-fit", "1", "--round-timeout",
                    "60", "--set", "eval.format=none"});
  auto w = Worker("w", 100);
  ASSERT_TRUE(w->Hello().ok());
  // Round 1: the model becomes 3.4e38 everywhere (finite: FLT_MAX is 3.40282e38).
  auto t1 = w->NextTrainTask();
  ASSERT_TRUE(t1.ok());
  const size_t n = t1->global.data.size();
  ASSERT_TRUE(w->SendUpdate(t1->task, std::vector<float>(n, 3.4e38f), 1).ok());
  // Round 2, first attempt: the same again; v1 + 3.4e38 is +Inf in float.
  auto t2 = w->NextTrainTask();
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(t2->task.round, 2u);
  ASSERT_TRUE(w->SendUpdate(t2->task, std::vector<float>(n, 3.4e38f), 1).ok());
  // Not committed: the round is retried with a new task.
  auto retry = w->NextTrainTask();
  ASSERT_TRUE(retry.ok()) << retry.status().ToString() << "\n" << coord_->Log();
  EXPECT_EQ(retry->task.round, 2u);
  EXPECT_EQ(retry->task.version, 1u) << "a version was committed from the non-finite aggregate";
  const std::vector<float> small = Pattern(n, 1e-3f, 3);
  ASSERT_TRUE(w->SendUpdate(retry->task, small, 1).ok());
  ASSERT_EQ(coord_->Wait(120s), 0) << coord_->Log();
  auto versions = FiniteVersions();
  ASSERT_EQ(versions.size(), 3u);
  ExpectWeightedMean(versions[1], versions[2], {small}, {1});
  const std::string log = coord_->Log();
  EXPECT_TRUE(Contains(log, "round=2 not committed: the aggregate of 1 updates has a non-finite"))
      << log;
  EXPECT_TRUE(Contains(log, "round=2 retrying")) << log;
}

}  // namespace
}  // namespace shoal
