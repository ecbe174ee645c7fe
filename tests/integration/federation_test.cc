// End-to-end: real coordinator and worker processes over ZeroMQ on loopback, on a subset of
// Fashion-MNIST partitioned by shoalctl.
#include <gtest/gtest.h>

#include <filesystem>

#include "base/file_util.h"
#include "store/model_store.h"
#include "tests/integration/process.h"
#include "tests/integration/test_pki.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::BinDir;
using testing::Process;

const char* kFashion = "/usr/share/datasets/fashion-mnist";

class FederationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(std::string(kFashion) + "/train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
    }
    char tmpl[] = "/tmp/shoal-fed-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::ScopedTestPki>(dir_);  // every process runs over TLS
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
    if (HasFailure()) std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
  }

  void Partition(int workers, int limit) {
    Process p({BinDir() + "/shoalctl", "partition", "--source", kFashion, "--workers",
               std::to_string(workers), "--scheme", "iid", "--seed", "3", "--out", dir_ + "/silos",
               "--limit", std::to_string(limit)},
              dir_ + "/partition.log");
    ASSERT_EQ(p.Wait(60s), 0) << p.Log();
  }

  std::unique_ptr<Process> StartCoordinator(std::vector<std::string> extra) {
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
                                     "2000",
                                     "--set",
                                     "network.heartbeat_ms=200",
                                     "--set",
                                     "http.port=0",
                                     "--set",
                                     "network.peer_timeout_ms=5000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv, dir_ + "/coordinator.log");
  }

  std::unique_ptr<Process> StartWorker(const std::string& name, const std::string& endpoint,
                                       const std::string& data) {
    return std::make_unique<Process>(
        std::vector<std::string>{BinDir() + "/shoal-worker", "--name", name, "--coordinator",
                                 endpoint, "--data", data, "--set", "retry.initial_ms=100"},
        dir_ + "/" + name + ".log");
  }

  std::string dir_;
  std::unique_ptr<testing::ScopedTestPki> pki_;
};

TEST_F(FederationTest, ThreeWorkersTrainThreeRoundsAndCommitVersions) {
  Partition(3, 3000);
  auto coord = StartCoordinator({"--rounds", "3", "--min-workers", "3", "--min-fit", "3", "--lr",
                                 "0.05", "--round-timeout", "120"});
  const std::string endpoint = testing::WaitForFile(dir_ + "/endpoint", 60s);
  ASSERT_FALSE(endpoint.empty()) << coord->Log();
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 1; i <= 3; ++i) {
    workers.push_back(StartWorker("silo-" + std::to_string(i), endpoint,
                                  dir_ + "/silos/silo-" + std::to_string(i)));
  }
  auto code = coord->Wait(240s);
  ASSERT_TRUE(code.has_value()) << "coordinator did not finish\n" << coord->Log();
  ASSERT_EQ(*code, 0) << coord->Log();
  for (auto& w : workers) {
    auto wc = w->Wait(30s);
    ASSERT_TRUE(wc.has_value()) << "worker did not stop after Shutdown\n" << w->Log();
    EXPECT_EQ(*wc, 0) << w->Log();
  }

  // Versions v0..v3 exist, chain by parent, and their weights match their SHA-256.
  auto versions = store::ListVersions(dir_ + "/run");
  ASSERT_TRUE(versions.ok()) << versions.status().ToString();
  ASSERT_EQ(versions->size(), 4u);
  for (size_t i = 0; i < versions->size(); ++i) {
    const auto& v = (*versions)[i];
    EXPECT_EQ(v.version, i);
    EXPECT_EQ(v.round, i);
    auto w = store::LoadVersion(dir_ + "/run", v);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(v.sha256.size(), 64u);
    if (i > 0) {
      ASSERT_TRUE(v.parent.has_value());
      EXPECT_EQ(*v.parent, i - 1);
      EXPECT_EQ(v.participants, (std::vector<std::string>{"silo-1", "silo-2", "silo-3"}));
    }
  }

  // One metrics record per round, with both kinds of evaluation; accuracy clearly improves.
  auto recs = store::ReadMetricsLog(dir_ + "/run");
  ASSERT_TRUE(recs.ok());
  ASSERT_EQ(recs->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto& r = (*recs)[i];
    EXPECT_EQ(r["round"].get<int>(), static_cast<int>(i + 1));
    EXPECT_EQ(r["samples"].get<int64_t>(), 2700);  // 3 x 1000 samples, 10% held out each
    EXPECT_EQ(r["central"]["count"].get<int64_t>(), 2000);
    EXPECT_EQ(r["federated"]["count"].get<int64_t>(), 300);
    EXPECT_GT(r["bytes_in"].get<int64_t>(), 0);
  }
  // Each version is committed before it is evaluated, and evaluated while the next round runs
  // (eval.overlap, the default): round r+1 starts before v_r's evaluation is in. The version's
  // meta gets the same metrics as the round's record once it is.
  for (size_t i = 0; i < 3; ++i) {
    const auto& r = (*recs)[i];
    EXPECT_TRUE(r["evaluation"]["overlapped"].get<bool>());
    EXPECT_GE(r["evaluation"]["central_cpu_s"].get<double>(), 0.0);
    EXPECT_LE(r["started_at"].get<std::string>(), r["time"].get<std::string>());
    EXPECT_LE(r["time"].get<std::string>(), r["evaluated_at"].get<std::string>());
    if (i > 0) {
      EXPECT_LT(r["started_at"].get<std::string>(),
                (*recs)[i - 1]["evaluated_at"].get<std::string>())
          << "round " << i + 1 << " waited for v" << i << "'s evaluation";
    }
    for (const auto& [name, w] : r["workers"].items()) {
      EXPECT_GT(w["train_cpu_s"].get<double>(), 0.0) << name;
      EXPECT_LE(w["train_cpu_s"].get<double>(), w["train_s"].get<double>() * 1.05 + 0.05) << name;
    }
    // The weights go to each worker once a round: the TrainTask of round r+1 also asks for the
    // evaluation of v_r (same weights). Only the last version needs EvalTasks of its own.
    auto v0 = store::LoadVersion(dir_ + "/run", (*versions)[0]);
    ASSERT_TRUE(v0.ok());
    const double model_bytes = 4.0 * static_cast<double>(v0->data.size());
    const double out = r["bytes_out"].get<double>();
    EXPECT_GT(out, 3 * model_bytes * (i < 2 ? 1.0 : 2.0)) << "round " << i + 1;
    EXPECT_LT(out, 3 * model_bytes * (i < 2 ? 1.1 : 2.1)) << "round " << i + 1;
    const auto& meta = (*versions)[i + 1];
    EXPECT_FALSE(meta.metrics.contains("evaluation")) << "v" << i + 1 << " still pending";
    EXPECT_EQ(meta.metrics["central"], r["central"]);
    EXPECT_EQ(meta.metrics["federated"], r["federated"]);
  }
  const double first = (*recs)[0]["central"]["accuracy"].get<double>();
  const double last = (*recs)[2]["central"]["accuracy"].get<double>();
  EXPECT_GT(first, 0.2) << "round 1 should already beat chance (10%)";
  EXPECT_GT(last, first + 0.03) << "accuracy did not improve: " << first << " -> " << last;

  // shoalctl reads the run offline and verifies every version's hash.
  Process models({BinDir() + "/shoalctl", "models", dir_ + "/run", "--verify"},
                 dir_ + "/models.log");
  ASSERT_EQ(models.Wait(30s), 0) << models.Log();
  EXPECT_NE(models.Log().find("v3"), std::string::npos);
  Process rounds({BinDir() + "/shoalctl", "rounds", dir_ + "/run"}, dir_ + "/rounds.log");
  ASSERT_EQ(rounds.Wait(30s), 0) << rounds.Log();
  EXPECT_NE(rounds.Log().find("test_acc"), std::string::npos);
}

TEST_F(FederationTest, IncompatibleSiloIsRefusedAtHelloWithAClearError) {
  // A CSV silo with 3 features cannot join a federation whose model takes 28x28 images.
  const std::string csv = dir_ + "/tabular.csv";
  ASSERT_TRUE(WriteFileAtomic(csv, "a,b,c,label\n1,2,3,0\n4,5,6,1\n7,8,9,0\n1,1,1,1\n").ok());
  auto coord = StartCoordinator({"--rounds", "1", "--min-workers", "1", "--min-fit", "1", "--set",
                                 "selection.wait_timeout_s=60"});
  const std::string endpoint = testing::WaitForFile(dir_ + "/endpoint", 60s);
  ASSERT_FALSE(endpoint.empty()) << coord->Log();
  Process worker({BinDir() + "/shoal-worker", "--name", "tabular", "--coordinator", endpoint,
                  "--data", csv, "--format", "csv"},
                 dir_ + "/tabular.log");
  auto code = worker.Wait(60s);
  ASSERT_TRUE(code.has_value()) << worker.Log();
  EXPECT_EQ(*code, 1);
  EXPECT_NE(
      worker.Log().find("input shape [3] does not match the federation's model input [1,28,28]"),
      std::string::npos)
      << worker.Log();
}

// Opt-in update compression: int8 with error feedback trains as well, and the updates the
// coordinator receives shrink to about a quarter of the float32 bytes.
TEST_F(FederationTest, Int8CompressedUpdatesTrainAndShrinkTheUploads) {
  Partition(2, 2000);
  auto coord = StartCoordinator({"--rounds", "3", "--min-workers", "2", "--min-fit", "2",
                                 "--round-timeout", "120", "--set", "train.compression=int8",
                                 "--set", "eval.federated=false", "--set", "eval.overlap=false"});
  const std::string endpoint = testing::WaitForFile(dir_ + "/endpoint", 60s);
  ASSERT_FALSE(endpoint.empty()) << coord->Log();
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 1; i <= 2; ++i) {
    workers.push_back(StartWorker("silo-" + std::to_string(i), endpoint,
                                  dir_ + "/silos/silo-" + std::to_string(i)));
  }
  ASSERT_EQ(coord->Wait(240s), 0) << coord->Log();
  auto versions = store::ListVersions(dir_ + "/run");
  ASSERT_TRUE(versions.ok() && versions->size() == 4u);
  auto v0 = store::LoadVersion(dir_ + "/run", (*versions)[0]);
  ASSERT_TRUE(v0.ok());
  const double float_update_bytes = 4.0 * static_cast<double>(v0->data.size());
  auto recs = store::ReadMetricsLog(dir_ + "/run");
  ASSERT_TRUE(recs.ok() && recs->size() == 3u);
  for (const auto& r : *recs) {
    // Two updates per round plus small messages (heartbeats, UpdateReady).
    const double in = r["bytes_in"].get<double>();
    EXPECT_LT(in, 2 * 0.30 * float_update_bytes) << r.dump();
    EXPECT_GT(in, 2 * 0.25 * float_update_bytes) << r.dump();
  }
  // eval.overlap=false: every round waits for its own evaluation, so round r+1 starts after
  // v_r's evaluation is in, and the wait is the round's "evaluate" phase.
  for (size_t i = 0; i < 3; ++i) {
    const auto& r = (*recs)[i];
    EXPECT_FALSE(r["evaluation"]["overlapped"].get<bool>());
    EXPECT_GE(r["phases_s"]["evaluate"].get<double>(), r["evaluation"]["seconds"].get<double>());
    if (i > 0) {
      EXPECT_GE(r["started_at"].get<std::string>(),
                (*recs)[i - 1]["evaluated_at"].get<std::string>());
    }
    EXPECT_EQ((*versions)[i + 1].metrics["central"], r["central"]);
  }
  const double first = (*recs)[0]["central"]["accuracy"].get<double>();
  const double last = (*recs)[2]["central"]["accuracy"].get<double>();
  EXPECT_GT(first, 0.2);
  EXPECT_GT(last, first + 0.03) << first << " -> " << last;
}

TEST_F(FederationTest, WorkerRetriesWithBackoffWhenCoordinatorIsAbsent) {
  Partition(1, 200);
  // Nothing listens on port 9 (discard) on loopback here.
  auto worker = std::make_unique<Process>(
      std::vector<std::string>{BinDir() + "/shoal-worker", "--name", "lonely", "--coordinator",
                               "tcp://127.0.0.1:9", "--data", dir_ + "/silos/silo-1", "--set",
                               "retry.initial_ms=100", "--set", "retry.hello_timeout_ms=300"},
      dir_ + "/lonely.log");
  // Start-up (loading LibTorch) takes seconds on a loaded machine: wait for the third retry.
  for (int i = 0; i < 1200 && worker->Log().find("retrying in 400 ms") == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_FALSE(worker->Wait(0ms).has_value()) << "worker must keep retrying, not exit";
  worker->Kill(SIGTERM);
  EXPECT_EQ(worker->Wait(0ms), 0) << "SIGTERM is a clean stop";
  const std::string log = worker->Log();
  // Back-off doubles: the retry delays logged grow.
  EXPECT_NE(log.find("retrying in 100 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("retrying in 200 ms"), std::string::npos) << log;
  size_t count = 0;
  for (size_t pos = 0; (pos = log.find("not reachable", pos)) != std::string::npos; ++pos) ++count;
  EXPECT_LT(count, 30u) << "worker spins instead of backing off";
}

}  // namespace
}  // namespace shoal
