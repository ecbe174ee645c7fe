// Issue #23 with real processes: scripted workers (the attack harness, attack_updates.h) over
// TLS to the real coordinator. One attacker of five pulls "mean" far from the honest workers'
// mean while median, trimmed_mean and multi_krum stay close to it; the round's record names
// what the defences did; run.deterministic with median and an adaptive clip bound resumes
// bit-identical after kill -9, with the updates arriving in another order.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/file_util.h"
#include "store/model_store.h"
#include "tests/integration/attack_updates.h"
#include "tests/integration/process.h"
#include "tests/integration/scripted_worker.h"
#include "tests/integration/test_pki.h"

namespace shoal {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using testing::Attack;
using testing::BinDir;
using testing::Process;
using testing::ScriptedWorker;

constexpr char kFashion[] = "/usr/share/datasets/fashion-mnist";

class RobustAggregationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(std::string(kFashion) + "/t10k-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
    }
    char tmpl[] = "/tmp/shoal-robust-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::TestPki>(dir_);
  }
  void TearDown() override {
    coord_.reset();
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
    if (HasFailure()) std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
  }

  void StartCoordinator(const std::string& run, std::vector<std::string> extra) {
    std::filesystem::remove(dir_ + "/endpoint");
    std::vector<std::string> argv = {BinDir() + "/shoal-coordinator",
                                     "--run-dir",
                                     dir_ + "/" + run,
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
    coord_ = std::make_unique<Process>(argv, dir_ + "/" + run + ".log");
    endpoint_ = testing::WaitForFile(dir_ + "/endpoint", 60s);
    ASSERT_FALSE(endpoint_.empty()) << coord_->Log();
  }

  std::vector<std::unique_ptr<ScriptedWorker>> Workers(int n) {
    std::vector<std::unique_ptr<ScriptedWorker>> out;
    for (int i = 0; i < n; ++i) {
      const std::string name = "w" + std::to_string(i);
      out.push_back(std::make_unique<ScriptedWorker>(endpoint_, name, pki_->ClientTls(name), 100));
      EXPECT_TRUE(out.back()->Hello().ok());
    }
    return out;
  }

  // One round: every worker gets its task, then they send in `order` (worker i sends
  // HonestUpdate(i), or the attack on it when i == attacker).
  void PlayRound(std::vector<std::unique_ptr<ScriptedWorker>>& ws, const std::vector<int>& order,
                 int attacker, Attack attack, float strength) {
    std::vector<ScriptedWorker::Task> tasks;
    for (auto& w : ws) {
      auto t = w->NextTrainTask();
      ASSERT_TRUE(t.ok()) << t.status().ToString() << coord_->Log();
      tasks.push_back(std::move(t).value());
    }
    for (int i : order) {
      const auto& task = tasks[static_cast<size_t>(i)];
      auto u = testing::HonestUpdate(task.global.data.size(), i, task.task.round);
      if (i == attacker) u = testing::AttackUpdate(attack, u, strength);
      auto ack = ws[static_cast<size_t>(i)]->SendUpdate(task.task, u, 100);
      ASSERT_TRUE(ack.ok()) << ack.status().ToString();
    }
  }

  std::vector<store::VersionMeta> Metas(const std::string& run) {
    auto v = store::ListVersions(dir_ + "/" + run);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : std::vector<store::VersionMeta>{};
  }
  model::Weights Load(const std::string& run, const store::VersionMeta& m) {
    auto w = store::LoadVersion(dir_ + "/" + run, m);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    return w.ok() ? std::move(w).value() : model::Weights{};
  }
  json Record(const std::string& run, uint64_t round) {
    auto recs = store::ReadMetricsLog(dir_ + "/" + run);
    if (recs.ok()) {
      for (const auto& r : *recs) {
        if (r.value("round", uint64_t{0}) == round) return r;
      }
    }
    ADD_FAILURE() << "no record for round " << round;
    return json::object();
  }
  // Files a spill could have left in the run directory.
  int SpillLeftovers(const std::string& run) {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/" + run)) {
      n += e.path().filename().string().rfind(".shoal-spill-", 0) == 0 ? 1 : 0;
    }
    return n;
  }

  std::string dir_;
  std::unique_ptr<testing::TestPki> pki_;
  std::unique_ptr<Process> coord_;
  std::string endpoint_;
};

// 1 attacker of 5, scaled x100 or sign-flipped x10: the distance of the committed step to the
// honest workers' mean, relative to that mean's norm. The mean is pulled far off (> 2); the
// robust aggregators stay within 0.35 (the honest updates' own spread is about 0.2 of it).
TEST_F(RobustAggregationTest, OneAttackerOfFivePullsTheMeanButNotTheRobustAggregators) {
  struct Case {
    std::string aggregator;
    std::vector<std::string> extra;
    bool robust;
  };
  const std::vector<Case> cases = {{"mean", {}, false},
                                   {"median", {}, true},
                                   {"trimmed_mean", {"--set", "strategy.trim_fraction=0.2"}, true},
                                   {"multi_krum", {"--set", "strategy.byzantine=1"}, true}};
  int run_no = 0;
  for (Attack attack : {Attack::kScaled, Attack::kSignFlipped}) {
    const float strength = attack == Attack::kScaled ? 100.0f : 10.0f;
    for (const auto& c : cases) {
      SCOPED_TRACE(c.aggregator + " vs " + testing::AttackName(attack));
      const std::string run = "run" + std::to_string(run_no++);
      std::vector<std::string> args = {"--rounds",        "1",
                                       "--min-workers",   "5",
                                       "--min-fit",       "5",
                                       "--round-timeout", "60",
                                       "--set",           "strategy.aggregator=" + c.aggregator};
      args.insert(args.end(), c.extra.begin(), c.extra.end());
      StartCoordinator(run, args);
      auto ws = Workers(5);
      PlayRound(ws, {0, 1, 2, 3, 4}, /*attacker=*/4, attack, strength);
      ASSERT_EQ(coord_->Wait(120s), 0) << coord_->Log();
      auto metas = Metas(run);
      ASSERT_EQ(metas.size(), 2u);
      const auto v0 = Load(run, metas[0]), v1 = Load(run, metas[1]);
      const size_t n = v0.data.size();
      std::vector<double> honest(n, 0.0);
      for (int i = 0; i < 4; ++i) {
        auto u = testing::HonestUpdate(n, i, 1);
        for (size_t j = 0; j < n; ++j) honest[j] += u[j] / 4.0;
      }
      double dist = 0, norm = 0;
      for (size_t j = 0; j < n; ++j) {
        const double step = static_cast<double>(v1.data[j]) - v0.data[j];
        dist += (step - honest[j]) * (step - honest[j]);
        norm += honest[j] * honest[j];
      }
      const double rel = std::sqrt(dist / norm);
      if (c.robust) {
        EXPECT_LT(rel, 0.35);
      } else {
        EXPECT_GT(rel, 2.0);
      }
      const json rec = Record(run, 1);
      if (c.aggregator == "multi_krum") {
        EXPECT_EQ(rec["defences"]["workers"]["w4"]["selected"], false) << rec.dump();
        EXPECT_EQ(rec["defences"]["workers"]["w0"]["selected"], true) << rec.dump();
        EXPECT_EQ(rec["defences"]["flagged"], json::array({"w4"})) << rec.dump();
      }
      if (c.aggregator == "trimmed_mean") {
        // The attacker is cut off on nearly every coordinate, the honest workers rarely.
        EXPECT_GT(rec["defences"]["workers"]["w4"]["trimmed_share"].get<double>(), 0.9);
        EXPECT_LT(rec["defences"]["workers"]["w0"]["trimmed_share"].get<double>(), 0.5);
      }
      if (c.robust) {
        EXPECT_EQ(SpillLeftovers(run), 0);
      } else {
        EXPECT_FALSE(rec.contains("defences")) << rec.dump();
      }
    }
  }
}

// run.deterministic with median and an adaptive clip bound: a run killed with SIGKILL after
// v1 and resumed, its workers sending in the reverse order, ends bit-identical to a run that
// was not interrupted, and carries the same bounds in its versions.
TEST_F(RobustAggregationTest, DeterministicMedianWithAdaptiveClipResumesBitIdenticalAfterKill) {
  const std::vector<std::string> args = {"--rounds",        "3",
                                         "--min-workers",   "3",
                                         "--min-fit",       "3",
                                         "--round-timeout", "60",
                                         "--set",           "run.deterministic=true",
                                         "--set",           "strategy.aggregator=median",
                                         "--set",           "strategy.clip=adaptive",
                                         "--set",           "strategy.clip_norm=0.5",
                                         "--set",           "strategy.clip_quantile=0.5",
                                         "--set",           "strategy.clip_lr=0.5"};
  // Uninterrupted.
  StartCoordinator("clean", args);
  {
    auto ws = Workers(3);
    for (int r = 1; r <= 3; ++r) PlayRound(ws, {0, 1, 2}, 2, Attack::kScaled, 3.0f);
    ASSERT_EQ(coord_->Wait(120s), 0) << coord_->Log();
  }
  // Killed after v1, resumed; the updates arrive in the reverse order.
  StartCoordinator("faulty", args);
  {
    auto ws = Workers(3);
    PlayRound(ws, {2, 1, 0}, 2, Attack::kScaled, 3.0f);
    const std::string v1 = store::VersionMetaPath(dir_ + "/faulty", 1);
    for (int i = 0; i < 1500 && !PathExists(v1); ++i) std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(PathExists(v1)) << coord_->Log();
    coord_->Kill(SIGKILL);
  }
  StartCoordinator("faulty", args);
  {
    auto ws = Workers(3);
    for (int r = 2; r <= 3; ++r) PlayRound(ws, {2, 0, 1}, 2, Attack::kScaled, 3.0f);
    ASSERT_EQ(coord_->Wait(120s), 0) << coord_->Log();
    EXPECT_NE(coord_->Log().find("adaptive clip bound"), std::string::npos) << coord_->Log();
  }
  auto clean = Metas("clean"), faulty = Metas("faulty");
  ASSERT_EQ(clean.size(), 4u);
  ASSERT_EQ(faulty.size(), 4u);
  double first_bound = 0;
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(faulty[i].sha256, clean[i].sha256) << "version " << i;
    ASSERT_TRUE(clean[i].metrics.contains("clip_bound")) << clean[i].ToJson().dump();
    EXPECT_EQ(faulty[i].metrics["clip_bound"], clean[i].metrics["clip_bound"]) << i;
    if (i == 1) first_bound = clean[i].metrics["clip_bound"].get<double>();
  }
  // The bound moved: every honest update's norm (~3.2) is above 0.5, so it grew.
  EXPECT_GT(first_bound, 0.5);
  const json rec = Record("clean", 1);
  EXPECT_EQ(rec["defences"]["clip_bound"], 0.5) << rec.dump();
  EXPECT_EQ(rec["defences"]["workers"]["w0"]["clipped"], true) << rec.dump();
  EXPECT_EQ(SpillLeftovers("faulty"), 0);
}

}  // namespace
}  // namespace shoal
