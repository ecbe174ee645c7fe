// Sample-level DP-SGD with real processes over TLS (issue #25): a deterministic DP run killed
// mid-round and resumed ends with the same versions and the same per-silo epsilon as an
// uninterrupted one; the run stops cleanly before a silo would exceed privacy.target_epsilon; a
// worker that requires DP refuses a coordinator that asks for training without it.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "privacy/rdp_accountant.h"
#include "store/model_store.h"
#include "tests/integration/process.h"
#include "tests/integration/test_pki.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::BinDir;
using testing::Process;

const char* kFashion = "/usr/share/datasets/fashion-mnist";

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool Contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

class PrivacyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(std::string(kFashion) + "/t10k-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
    }
    char tmpl[] = "/tmp/shoal-privacy-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::ScopedTestPki>(dir_);
    Process p({BinDir() + "/shoalctl", "partition", "--source", kFashion, "--workers", "2",
               "--scheme", "iid", "--seed", "9", "--out", dir_ + "/silos", "--limit", "2000"},
              dir_ + "/partition.log");
    ASSERT_EQ(p.Wait(60s), 0) << p.Log();
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
    if (HasFailure()) std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
  }

  std::unique_ptr<Process> StartCoordinator(const std::string& run_dir, const std::string& bind,
                                            const std::string& log,
                                            const std::vector<std::string>& extra) {
    ::unlink((dir_ + "/endpoint").c_str());
    std::vector<std::string> argv = {BinDir() + "/shoal-coordinator",
                                     "--run-dir",
                                     run_dir,
                                     "--bind",
                                     bind,
                                     "--endpoint-file",
                                     dir_ + "/endpoint",
                                     "--model",
                                     "mlp",
                                     "--eval-limit",
                                     "200",
                                     "--min-workers",
                                     "2",
                                     "--min-fit",
                                     "2",
                                     "--set",
                                     "http.enabled=false",
                                     "--set",
                                     "network.heartbeat_ms=200",
                                     "--set",
                                     "eval.federated=false"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = std::make_unique<Process>(argv, dir_ + "/" + log);
    endpoint_ = testing::WaitForFile(dir_ + "/endpoint", 60s);
    EXPECT_FALSE(endpoint_.empty()) << p->Log();
    return p;
  }

  std::unique_ptr<Process> StartWorker(const std::string& name, int silo,
                                       const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {BinDir() + "/shoal-worker",
                                     "--name",
                                     name,
                                     "--coordinator",
                                     endpoint_,
                                     "--data",
                                     dir_ + "/silos/silo-" + std::to_string(silo),
                                     "--set",
                                     "retry.initial_ms=100",
                                     "--set",
                                     "retry.max_ms=500"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv,
                                     dir_ + "/" + name + "-" + std::to_string(++starts_) + ".log");
  }

  std::string dir_;
  std::unique_ptr<testing::ScopedTestPki> pki_;
  std::string endpoint_;
  int starts_ = 0;
};

// DP-SGD with run.deterministic: the noise comes from the task's seed (the workers allow it),
// so a run is reproducible bit for bit, also across a coordinator kill -9 and resume, and the
// per-silo epsilon after the resume is the uninterrupted run's, recomposed from the versions.
TEST_F(PrivacyTest, DeterministicDpRunResumedAfterKillMatchesTheUninterruptedRun) {
  const std::vector<std::string> args = {"--rounds", "3",
                                         "--set",    "run.deterministic=true",
                                         "--set",    "privacy.dp=\"sample\"",
                                         "--set",    "privacy.noise_multiplier=1.0",
                                         "--set",    "privacy.clip_norm=1.0"};
  auto run = [&](const std::string& tag, bool kill_mid_round) {
    const std::string bind = "tcp://127.0.0.1:" + std::to_string(FreePort());
    const std::string run_dir = dir_ + "/run";
    auto coord = StartCoordinator(run_dir, bind, tag + "-coordinator.log", args);
    std::vector<std::unique_ptr<Process>> workers;
    for (int i = 1; i <= 2; ++i) {
      workers.push_back(StartWorker(
          "w" + std::to_string(i), i,
          {"--set", "privacy.allow_seeded_noise=true", "--set", "privacy.require_dp=true", "--set",
           "privacy.ledger=\"" + dir_ + "/" + tag + "-ledger-" + std::to_string(i) + "\""}));
    }
    if (kill_mid_round) {
      const std::string v1 = store::VersionMetaPath(run_dir, 1);
      for (int i = 0; i < 3000 && !PathExists(v1); ++i) std::this_thread::sleep_for(20ms);
      EXPECT_TRUE(PathExists(v1)) << coord->Log();
      coord->Kill(SIGKILL);
      EXPECT_FALSE(PathExists(store::VersionMetaPath(run_dir, 3)))
          << "killed too late to test a resume";
      coord = StartCoordinator(run_dir, bind, tag + "-coordinator2.log", args);
    }
    auto code = coord->Wait(180s);
    EXPECT_TRUE(code.has_value() && *code == 0) << coord->Log();
    for (auto& w : workers) EXPECT_EQ(w->Wait(30s), 0) << w->Log();
    if (kill_mid_round) EXPECT_TRUE(Contains(coord->Log(), "resuming run=")) << coord->Log();
    auto versions = store::ListVersions(run_dir);
    auto records = store::ReadMetricsLog(run_dir);
    EXPECT_TRUE(versions.ok() && records.ok());
    std::filesystem::rename(run_dir, dir_ + "/" + tag + "-run");
    return std::make_pair(*versions, *records);
  };
  auto [clean, clean_records] = run("clean", false);
  auto [faulty, faulty_records] = run("faulty", true);
  ASSERT_EQ(clean.size(), 4u);
  ASSERT_EQ(faulty.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(faulty[i].sha256, clean[i].sha256) << "version " << i;
  // The per-silo epsilon of the last version: the same double after the resume, and the
  // accountant's value for 3 rounds of ceil(900 / 32) = 29 steps at q = 32 / 900, sigma 1.
  const auto& eps_clean = clean[3].metrics["privacy"]["epsilon"];
  const auto& eps_faulty = faulty[3].metrics["privacy"]["epsilon"];
  ASSERT_TRUE(eps_clean.contains("w1")) << clean[3].metrics.dump();
  EXPECT_EQ(eps_faulty, eps_clean);
  const double want = privacy::ComputeEpsilon(32.0 / 900, 1.0, 3 * 29, 1e-5)->epsilon;
  EXPECT_DOUBLE_EQ(eps_clean["w1"].get<double>(), want);
  ASSERT_EQ(faulty_records.size(), 3u);
  EXPECT_EQ(faulty_records.back()["privacy"]["epsilon"], eps_clean);
  EXPECT_EQ(faulty_records.back()["privacy"]["silos"]["w2"]["steps"], 29);
  // Each worker reported its own ledger's epsilon in its update (the clean run's ledger: 3
  // tasks, the same as the coordinator's account).
  EXPECT_DOUBLE_EQ(clean_records.back()["workers"]["w1"]["dp_epsilon_reported"].get<double>(),
                   want);
}

TEST_F(PrivacyTest, TheRunStopsCleanlyBeforeASiloWouldExceedTheBudget) {
  // sigma 1, q = 32/900, 29 steps a round: epsilon 2.116, 2.502, 2.823 after rounds 1-3
  // (delta 1e-5): a budget of 2.6 allows two of the five rounds.
  auto coord =
      StartCoordinator(dir_ + "/run", "tcp://127.0.0.1:*", "coordinator.log",
                       {"--rounds", "5", "--set", "privacy.dp=\"sample\"", "--set",
                        "privacy.noise_multiplier=1.0", "--set", "privacy.target_epsilon=2.6"});
  auto w1 = StartWorker("w1", 1, {}), w2 = StartWorker("w2", 2, {});
  auto code = coord->Wait(180s);
  EXPECT_TRUE(code.has_value() && *code == 0) << coord->Log();
  const std::string log = coord->Log();
  EXPECT_TRUE(Contains(log,
                       "run stops before round 3: privacy budget reached: one more round "
                       "would take silo w1 from epsilon 2.50234 to 2.8232"))
      << log;
  EXPECT_TRUE(Contains(log, "the last version is v2")) << log;
  auto versions = store::ListVersions(dir_ + "/run");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 3u);  // v0, v1, v2: nothing past the budget
  auto records = store::ReadMetricsLog(dir_ + "/run");
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 2u);
  for (const char* silo : {"w1", "w2"}) {
    const double eps = records->back()["privacy"]["epsilon"][silo].get<double>();
    EXPECT_LE(eps, 2.6);
    EXPECT_NEAR(eps, 2.5023428, 1e-6);
  }
  EXPECT_EQ(w1->Wait(30s), 0) << w1->Log();
  EXPECT_EQ(w2->Wait(30s), 0) << w2->Log();
  // The export's model card states the guarantee of the last version: mechanism, delta, and per
  // silo epsilon, steps, q, sigma and clip norm over its lineage.
  Process exp({BinDir() + "/shoalctl", "export", dir_ + "/run", "--out", dir_ + "/out/model.pt"},
              dir_ + "/export.log");
  ASSERT_EQ(exp.Wait(120s), 0) << exp.Log();
  const auto card = nlohmann::json::parse(testing::ReadText(dir_ + "/out/model.json"));
  const auto& p = card["privacy"];
  EXPECT_EQ(p["mechanism"], "sample");
  EXPECT_EQ(p["delta"], 1e-5);
  const auto& w1_card = p["silos"]["w1"];
  EXPECT_EQ(w1_card["epsilon"], records->back()["privacy"]["epsilon"]["w1"]);
  EXPECT_EQ(w1_card["steps"], 58);
  ASSERT_EQ(w1_card["parameters"].size(), 1u);
  EXPECT_EQ(w1_card["parameters"][0]["q"], 32.0 / 900);
  EXPECT_EQ(w1_card["parameters"][0]["sigma"], 1.0);
  EXPECT_EQ(w1_card["parameters"][0]["clip_norm"], 1.0);
}

// Attack: a coordinator that asks a worker requiring DP to train without it. The worker
// refuses before training, and the refusal reaches the coordinator's log as an Error naming the
// worker's setting.
TEST_F(PrivacyTest, AWorkerThatRequiresDpRefusesATaskWithoutIt) {
  auto coord = StartCoordinator(dir_ + "/run", "tcp://127.0.0.1:*", "coordinator.log",
                                {"--rounds", "1", "--round-timeout", "60"});
  auto w1 = StartWorker("w1", 1, {"--set", "privacy.require_dp=true"});
  auto w2 = StartWorker("w2", 2, {});  // does not require DP: trains
  auto code = w1->Wait(60s);
  EXPECT_TRUE(code.has_value() && *code != 0) << w1->Log();
  EXPECT_TRUE(Contains(w1->Log(), "privacy.require_dp")) << w1->Log();
  EXPECT_FALSE(Contains(w1->Log(), "trained:")) << w1->Log();
  std::string log;
  for (int i = 0; i < 250; ++i) {
    log = coord->Log();
    if (Contains(log, "refuses to train under this run's privacy settings")) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(Contains(log,
                       "worker=w1 refuses to train under this run's privacy settings: "
                       "refused TrainTask of round 1: it asks for training without "
                       "differential privacy"))
      << log;
  coord->Kill(SIGKILL);
}

}  // namespace
}  // namespace shoal
