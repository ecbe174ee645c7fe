// Faults with real processes and real signals: killed workers, resent updates, stragglers,
// silos joining mid-run, a killed coordinator, a crash between write and rename, a full disk.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "base/file_util.h"
#include "store/model_store.h"
#include "tests/integration/process.h"
#include "tests/integration/scripted_worker.h"
#include "tests/integration/test_pki.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::BinDir;
using testing::Process;
using testing::ReadText;
using testing::ScriptedWorker;

const char* kFashion = "/usr/share/datasets/fashion-mnist";

std::vector<float> RandomDelta(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-0.01f, 0.01f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(std::string(kFashion) + "/t10k-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
    }
    char tmpl[] = "/tmp/shoal-fault-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::ScopedTestPki>(dir_);  // every process runs over TLS
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
    if (HasFailure()) std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
  }

  std::vector<std::string> CoordinatorArgs(const std::string& run, const std::string& bind,
                                           std::vector<std::string> extra) {
    std::vector<std::string> argv = {BinDir() + "/shoal-coordinator",
                                     "--run-dir",
                                     run,
                                     "--bind",
                                     bind,
                                     "--endpoint-file",
                                     dir_ + "/endpoint",
                                     "--model",
                                     "mlp",
                                     "--eval-limit",
                                     "200",
                                     "--set",
                                     "http.enabled=false",
                                     "--set",
                                     "network.heartbeat_ms=200",
                                     "--set",
                                     "network.peer_timeout_ms=15000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  std::unique_ptr<Process> StartCoordinator(std::vector<std::string> extra,
                                            const std::vector<std::string>& env = {},
                                            const std::string& run = "",
                                            const std::string& bind = "tcp://127.0.0.1:*",
                                            const std::string& log = "coordinator.log") {
    ::unlink((dir_ + "/endpoint").c_str());
    auto p = std::make_unique<Process>(
        CoordinatorArgs(run.empty() ? dir_ + "/run" : run, bind, extra), dir_ + "/" + log, env);
    endpoint_ = testing::WaitForFile(dir_ + "/endpoint", 60s);
    EXPECT_FALSE(endpoint_.empty()) << p->Log();
    return p;
  }

  void Partition(int workers, int limit) {
    Process p({BinDir() + "/shoalctl", "partition", "--source", kFashion, "--workers",
               std::to_string(workers), "--scheme", "iid", "--seed", "9", "--out", dir_ + "/silos",
               "--limit", std::to_string(limit)},
              dir_ + "/partition.log");
    ASSERT_EQ(p.Wait(60s), 0) << p.Log();
  }

  std::unique_ptr<Process> StartWorker(const std::string& name, int silo,
                                       std::vector<std::string> extra = {}) {
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
                                     "retry.max_ms=500",
                                     "--set",
                                     "retry.hello_timeout_ms=1000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv, dir_ + "/" + name + ".log");
  }

  std::shared_ptr<const protocols::TlsContext> Tls(const std::string& name) {
    return pki_->pki().ClientTls(name);
  }

  std::vector<store::VersionMeta> Versions(const std::string& run = "") {
    auto v = store::ListVersions(run.empty() ? dir_ + "/run" : run);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : std::vector<store::VersionMeta>{};
  }
  model::Weights Load(const store::VersionMeta& m, const std::string& run = "") {
    auto w = store::LoadVersion(run.empty() ? dir_ + "/run" : run, m);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    return w.ok() ? *w : model::Weights{};
  }

  // Expects next == base + sum(n_k d_k) / sum(n_k), elementwise within float rounding.
  static void ExpectWeightedMean(const model::Weights& base, const model::Weights& next,
                                 const std::vector<std::vector<float>>& deltas,
                                 const std::vector<int64_t>& n) {
    ASSERT_EQ(base.data.size(), next.data.size());
    double total = 0;
    for (auto k : n) total += static_cast<double>(k);
    size_t bad = 0;
    for (size_t i = 0; i < base.data.size(); ++i) {
      double want = base.data[i];
      double s = 0;
      for (size_t k = 0; k < deltas.size(); ++k) s += static_cast<double>(n[k]) * deltas[k][i];
      want += s / total;
      if (std::fabs(next.data[i] - want) > 1e-6 * std::max(1.0, std::fabs(want))) ++bad;
    }
    EXPECT_EQ(bad, 0u) << "elements differing from the weighted mean of the accepted updates";
  }

  // A 2-worker federation (2000 samples) whose coordinator, started with `args`, dies (exit 70)
  // at the injected crash point SHOAL_FAULT_CRASH_BEFORE_RENAME=`pattern`. Returns its bind
  // address for the restart ("" when it did not crash so); its workers are stopped.
  std::string RunUntilInjectedCrash(const std::vector<std::string>& args,
                                    const std::string& pattern) {
    Partition(2, 2000);
    const std::string bind = "tcp://127.0.0.1:" + std::to_string(FreePort());
    auto coord = StartCoordinator(args, {"SHOAL_FAULT_CRASH_BEFORE_RENAME=" + pattern}, "", bind);
    auto w1 = StartWorker("w1", 1), w2 = StartWorker("w2", 2);
    auto code = coord->Wait(120s);
    const bool crashed = code.has_value() && *code == 70;
    EXPECT_TRUE(crashed) << "the injected crash did not happen\n" << coord->Log();
    return crashed ? bind : "";
  }

  // A finished run of `rounds` rounds: v0..v<rounds> committed and verified, one metrics line
  // per round, in order, each with the central evaluation (200 test samples) its version's
  // meta records.
  void ExpectEveryVersionEvaluated(const std::string& run, size_t rounds) {
    auto v = Versions();
    ASSERT_EQ(v.size(), rounds + 1);
    for (const auto& m : v) Load(m);
    auto recs = store::ReadMetricsLog(run);
    ASSERT_TRUE(recs.ok()) << recs.status().ToString();
    ASSERT_EQ(recs->size(), rounds);
    for (size_t i = 0; i < rounds; ++i) {
      EXPECT_EQ((*recs)[i]["round"].get<int>(), static_cast<int>(i + 1));
      EXPECT_EQ((*recs)[i]["central"]["count"].get<int64_t>(), 200) << (*recs)[i].dump();
      EXPECT_EQ(v[i + 1].metrics["central"], (*recs)[i]["central"]);
    }
  }

  std::string dir_;
  std::unique_ptr<testing::ScopedTestPki> pki_;
  std::string endpoint_;
};

TEST_F(FaultTest, WorkerKilledMidTrainingRoundClosesWithTheSurvivorsWeightedMean) {
  Partition(1, 20000);
  auto coord =
      StartCoordinator({"--rounds", "1", "--min-workers", "3", "--min-fit", "2", "--round-timeout",
                        "6", "--epochs", "30", "--set", "eval.federated=false"});
  auto real = StartWorker("real", 1);
  ScriptedWorker a(endpoint_, "a", Tls("a"), 100), b(endpoint_, "b", Tls("b"), 300);
  ASSERT_TRUE(a.Hello().ok());
  ASSERT_TRUE(b.Hello().ok());
  auto ta = a.NextTrainTask();
  auto tb = b.NextTrainTask();
  ASSERT_TRUE(ta.ok() && tb.ok()) << coord->Log();
  // Kill the real worker once it is training (30 epochs take far longer than this).
  for (int i = 0; i < 200 && real->Log().find("training v0") == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_NE(real->Log().find("training v0"), std::string::npos) << real->Log();
  real->Kill(SIGKILL);
  const size_t n = ta->global.data.size();
  const auto da = RandomDelta(n, 1), db = RandomDelta(n, 2);
  ASSERT_TRUE(a.SendUpdate(ta->task, da, 30).ok());
  ASSERT_TRUE(b.SendUpdate(tb->task, db, 70).ok());
  auto code = coord->Wait(60s);
  ASSERT_TRUE(code.has_value()) << coord->Log();
  ASSERT_EQ(*code, 0) << coord->Log();
  EXPECT_NE(coord->Log().find("deadline passed without updates from real"), std::string::npos);
  auto v = Versions();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].participants, (std::vector<std::string>{"a", "b"}));
  ExpectWeightedMean(Load(v[0]), Load(v[1]), {da, db}, {30, 70});
}

// A worker still training when its round closes without it is asked to evaluate the new
// version meanwhile. Its training net is busy, so it evaluates on a second copy of the model
// (made only now), answers, and goes on training until the coordinator shuts the run down.
TEST_F(FaultTest, StragglerStillTrainingEvaluatesTheNewVersionOnASecondNet) {
  Partition(1, 20000);
  auto coord = StartCoordinator({"--rounds", "1", "--min-workers", "2", "--min-fit", "1",
                                 "--round-timeout", "6", "--epochs", "30"});
  auto real = StartWorker("real", 1);
  ScriptedWorker a(endpoint_, "a", Tls("a"), 100, /*num_val=*/0);  // not asked to evaluate
  ASSERT_TRUE(a.Hello().ok());
  auto ta = a.NextTrainTask(60s);
  ASSERT_TRUE(ta.ok()) << coord->Log();
  ASSERT_TRUE(a.SendUpdate(ta->task, RandomDelta(ta->global.data.size(), 3), 30).ok());
  auto code = coord->Wait(120s);
  ASSERT_TRUE(code.has_value()) << coord->Log();
  ASSERT_EQ(*code, 0) << coord->Log();
  auto v = Versions();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].participants, std::vector<std::string>{"a"});
  const std::string log = real->Log();
  const size_t evaluated = log.find("evaluated v1");
  ASSERT_NE(evaluated, std::string::npos) << log;
  EXPECT_EQ(log.find("trained:"), std::string::npos) << "30 epochs ended before the evaluation\n"
                                                     << log;
  const size_t second_net = log.find("evaluating while training: made a second copy");
  ASSERT_NE(second_net, std::string::npos) << log;
  EXPECT_LT(second_net, evaluated);
  // The coordinator counted the straggler's report: its 2,000 validation samples.
  const auto rec = nlohmann::json::parse(ReadText(dir_ + "/run/metrics.jsonl"), nullptr, false);
  ASSERT_TRUE(rec.is_object()) << ReadText(dir_ + "/run/metrics.jsonl");
  EXPECT_EQ(rec["federated"]["reports"], 1) << rec.dump();
  EXPECT_EQ(rec["federated"]["count"], 2000) << rec.dump();
  EXPECT_EQ(real->Wait(60s), 0) << log;  // shut down by the coordinator mid-training
}

TEST_F(FaultTest, UpdateResentAfterACrashBeforeTheAckIsCountedOnce) {
  auto coord = StartCoordinator(
      {"--rounds", "1", "--min-workers", "2", "--min-fit", "2", "--set", "eval.federated=false"});
  ScriptedWorker a(endpoint_, "a", Tls("a"), 100), b(endpoint_, "b", Tls("b"), 100);
  ASSERT_TRUE(a.Hello().ok());
  ASSERT_TRUE(b.Hello().ok());
  auto ta = a.NextTrainTask();
  auto tb = b.NextTrainTask();
  ASSERT_TRUE(ta.ok() && tb.ok());
  const size_t n = ta->global.data.size();
  const auto da = RandomDelta(n, 3), db = RandomDelta(n, 4);
  // a uploads everything, then "dies" before reading the Ack, restarts and offers it again.
  ASSERT_TRUE(a.SendUpdate(ta->task, da, 40, /*wait_ack=*/false).ok());
  std::this_thread::sleep_for(300ms);
  a.Reconnect();
  ASSERT_TRUE(a.Hello().ok());
  auto reply = a.Announce(ta->task, da, 40);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  ASSERT_EQ(reply->type, protocols::MessageType::kAck)
      << "resend must be acknowledged, not re-uploaded";
  auto ack = protocols::Decode<protocols::Ack>(*reply);
  ASSERT_TRUE(ack.ok());
  const Digest d = Sha256::Of(da.data(), da.size() * 4);
  EXPECT_EQ(ack->sha256, std::string(d.begin(), d.end()));
  ASSERT_TRUE(b.SendUpdate(tb->task, db, 60).ok());
  ASSERT_EQ(coord->Wait(60s), 0) << coord->Log();
  auto v = Versions();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].metrics["samples"], 100) << "40 + 60: a counted once";
  ExpectWeightedMean(Load(v[0]), Load(v[1]), {da, db}, {40, 60});
}

TEST_F(FaultTest, StragglerUpdateAfterTheDeadlineIsRejectedAsStaleNotFoldedLater) {
  auto coord = StartCoordinator({"--rounds", "2", "--min-workers", "2", "--min-fit", "1",
                                 "--round-timeout", "3", "--set", "eval.federated=false"});
  ScriptedWorker a(endpoint_, "a", Tls("a"), 100), b(endpoint_, "b", Tls("b"), 100);
  ASSERT_TRUE(a.Hello().ok());
  ASSERT_TRUE(b.Hello().ok());
  auto ta = a.NextTrainTask();
  auto tb = b.NextTrainTask();
  ASSERT_TRUE(ta.ok() && tb.ok());
  const size_t n = ta->global.data.size();
  ASSERT_TRUE(a.SendUpdate(ta->task, RandomDelta(n, 5), 50).ok());
  // b misses round 1's deadline; its round-2 task arrives meanwhile.
  auto tb2 = b.NextTrainTask(20s);
  ASSERT_TRUE(tb2.ok()) << coord->Log();
  ASSERT_EQ(tb2->task.round, 2u);
  auto late = b.Announce(tb->task, RandomDelta(n, 6), 50);
  ASSERT_TRUE(late.ok());
  ASSERT_EQ(late->type, protocols::MessageType::kError);
  EXPECT_EQ(ScriptedWorker::ErrorCodeOf(*late), protocols::ErrorCode::kStale);

  auto ta2 = a.NextTrainTask(20s);
  ASSERT_TRUE(ta2.ok());
  const auto da2 = RandomDelta(n, 7), db2 = RandomDelta(n, 8);
  ASSERT_TRUE(a.SendUpdate(ta2->task, da2, 20).ok());
  ASSERT_TRUE(b.SendUpdate(tb2->task, db2, 80).ok());
  ASSERT_EQ(coord->Wait(60s), 0) << coord->Log();
  auto v = Versions();
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[1].participants, std::vector<std::string>{"a"});
  // Round 2 is exactly the two round-2 updates: the stale one was not folded in.
  ExpectWeightedMean(Load(v[1]), Load(v[2]), {da2, db2}, {20, 80});
}

TEST_F(FaultTest, NewSiloJoiningMidRunTakesPartInALaterRound) {
  auto coord = StartCoordinator(
      {"--rounds", "3", "--min-workers", "2", "--min-fit", "2", "--set", "eval.federated=false"});
  ScriptedWorker a(endpoint_, "a", Tls("a"), 100), b(endpoint_, "b", Tls("b"), 100);
  ASSERT_TRUE(a.Hello().ok());
  ASSERT_TRUE(b.Hello().ok());
  auto ta = a.NextTrainTask();
  auto tb = b.NextTrainTask();
  ASSERT_TRUE(ta.ok() && tb.ok());
  const size_t n = ta->global.data.size();
  ASSERT_TRUE(a.SendUpdate(ta->task, RandomDelta(n, 9), 10).ok());
  // c joins while round 1 is still open; it is selected from the next round on.
  ScriptedWorker c(endpoint_, "c", Tls("c"), 100);
  ASSERT_TRUE(c.Hello().ok());
  ASSERT_TRUE(b.SendUpdate(tb->task, RandomDelta(n, 10), 10).ok());
  for (uint64_t round = 2; round <= 3; ++round) {
    for (ScriptedWorker* w : {&a, &b, &c}) {
      auto t = w->NextTrainTask(20s);
      ASSERT_TRUE(t.ok()) << w->name() << " round " << round << "\n" << coord->Log();
      EXPECT_EQ(t->task.round, round);
      ASSERT_TRUE(w->SendUpdate(t->task, RandomDelta(n, 100 + round), 10).ok());
    }
  }
  ASSERT_EQ(coord->Wait(60s), 0) << coord->Log();
  auto v = Versions();
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[1].participants, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(v[2].participants, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(v[3].participants, (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(FaultTest, CoordinatorKilledMidRoundResumesToTheFaultFreeHash) {
  Partition(3, 30000);
  const std::vector<std::string> args = {"--rounds",      "3",
                                         "--min-workers", "3",
                                         "--min-fit",     "3",
                                         "--epochs",      "2",
                                         "--set",         "run.deterministic=true",
                                         "--set",         "eval.federated=false"};
  auto run = [&](const std::string& name, bool kill_mid_round) {
    const std::string bind = "tcp://127.0.0.1:" + std::to_string(FreePort());
    const std::string run_dir = dir_ + "/" + name;
    auto coord = StartCoordinator(args, {}, run_dir, bind, name + "-coordinator.log");
    std::vector<std::unique_ptr<Process>> workers;
    for (int i = 1; i <= 3; ++i) workers.push_back(StartWorker(name + "-w" + std::to_string(i), i));
    if (kill_mid_round) {
      // v1 committed means round 2 is under way: kill -9 there, then restart on the same port.
      const std::string v1 = store::VersionMetaPath(run_dir, 1);
      for (int i = 0; i < 1200 && !PathExists(v1); ++i) std::this_thread::sleep_for(20ms);
      EXPECT_TRUE(PathExists(v1)) << coord->Log();
      coord->Kill(SIGKILL);
      EXPECT_FALSE(PathExists(store::VersionMetaPath(run_dir, 3)))
          << "killed too late to test a resume";
      coord = StartCoordinator(args, {}, run_dir, bind, name + "-coordinator2.log");
    }
    auto code = coord->Wait(180s);
    EXPECT_TRUE(code.has_value() && *code == 0) << coord->Log();
    for (auto& w : workers) EXPECT_EQ(w->Wait(30s), 0) << w->Log();
    if (kill_mid_round) {
      EXPECT_NE(coord->Log().find("resuming run="), std::string::npos);
    }
    return Versions(run_dir);
  };
  // Training seeds derive from worker names, so both runs use the same names and run dir path
  // (the clean run's directory is moved aside first).
  auto clean = run("run-x", false);
  ASSERT_EQ(clean.size(), 4u);
  std::filesystem::rename(dir_ + "/run-x", dir_ + "/run-x-clean");
  auto faulty = run("run-x", true);
  ASSERT_EQ(faulty.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(faulty[i].sha256, clean[i].sha256) << "version " << i;
  }
}

// FedAdam (issue #22): the server optimizer's moments are versioned with the model, so a
// coordinator killed mid-round resumes with the moments of the version it continues from and
// ends at the hashes of an uninterrupted run; two uninterrupted deterministic runs agree bit
// for bit. (With the moments restarted from zero the resumed run's v2 differs.)
TEST_F(FaultTest, FedAdamCoordinatorKilledMidRoundResumesToTheFaultFreeHash) {
  Partition(3, 30000);
  const std::vector<std::string> args = {"--rounds",      "3",
                                         "--min-workers", "3",
                                         "--min-fit",     "3",
                                         "--epochs",      "1",
                                         "--set",         "run.deterministic=true",
                                         "--set",         "strategy.name=fedadam",
                                         "--set",         "eval.federated=false"};
  auto run = [&](const std::string& name, bool kill_mid_round) {
    const std::string bind = "tcp://127.0.0.1:" + std::to_string(FreePort());
    const std::string run_dir = dir_ + "/" + name;
    auto coord = StartCoordinator(args, {}, run_dir, bind, name + "-coordinator.log");
    std::vector<std::unique_ptr<Process>> workers;
    for (int i = 1; i <= 3; ++i) workers.push_back(StartWorker(name + "-w" + std::to_string(i), i));
    if (kill_mid_round) {
      const std::string v1 = store::VersionMetaPath(run_dir, 1);
      for (int i = 0; i < 1200 && !PathExists(v1); ++i) std::this_thread::sleep_for(20ms);
      EXPECT_TRUE(PathExists(v1)) << coord->Log();
      coord->Kill(SIGKILL);
      EXPECT_FALSE(PathExists(store::VersionMetaPath(run_dir, 3)))
          << "killed too late to test a resume";
      coord = StartCoordinator(args, {}, run_dir, bind, name + "-coordinator2.log");
    }
    auto code = coord->Wait(180s);
    EXPECT_TRUE(code.has_value() && *code == 0) << coord->Log();
    for (auto& w : workers) EXPECT_EQ(w->Wait(30s), 0) << w->Log();
    if (kill_mid_round) {
      EXPECT_NE(coord->Log().find("resuming run="), std::string::npos);
    }
    return Versions(run_dir);
  };
  auto clean = run("run-a", false);
  ASSERT_EQ(clean.size(), 4u);
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(clean[i].server_optimizer, "adam") << "version " << i;
    EXPECT_EQ(clean[i].server_state_sha256.size(), 64u) << "version " << i;
    EXPECT_TRUE(store::LoadVersionState(dir_ + "/run-a", clean[i]).ok()) << "version " << i;
  }
  std::filesystem::rename(dir_ + "/run-a", dir_ + "/run-a-clean");
  auto again = run("run-a", false);
  ASSERT_EQ(again.size(), 4u);
  std::filesystem::rename(dir_ + "/run-a", dir_ + "/run-a-again");
  auto faulty = run("run-a", true);
  ASSERT_EQ(faulty.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(again[i].sha256, clean[i].sha256) << "version " << i;
    EXPECT_EQ(again[i].server_state_sha256, clean[i].server_state_sha256) << "version " << i;
    EXPECT_EQ(faulty[i].sha256, clean[i].sha256) << "version " << i;
    EXPECT_EQ(faulty[i].server_state_sha256, clean[i].server_state_sha256) << "version " << i;
  }
}

// A resumed run whose newest version's server state file is damaged falls back to the version
// before it (the state is part of the version), and one asking for another server optimizer
// than the run's is refused naming both.
TEST_F(FaultTest, DamagedServerStateFallsBackAndAnotherOptimizerIsRefused) {
  const std::vector<std::string> args = {
      "--rounds", "2",     "--min-workers",         "2",     "--min-fit",
      "2",        "--set", "strategy.name=fedyogi", "--set", "eval.federated=false"};
  Partition(2, 2000);
  const std::string bind = "tcp://127.0.0.1:" + std::to_string(FreePort());
  {
    auto coord = StartCoordinator(args, {}, "", bind, "coordinator.log");
    auto w1 = StartWorker("w1", 1), w2 = StartWorker("w2", 2);
    ASSERT_EQ(coord->Wait(120s), 0) << coord->Log();
  }
  auto v = Versions();
  ASSERT_EQ(v.size(), 3u);
  const std::string state2 = store::VersionStatePath(dir_ + "/run", 2);
  std::string bytes = ReadFile(state2).value();
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 1);
  ASSERT_TRUE(WriteFileAtomic(state2, bytes).ok());

  std::vector<std::string> other = args;
  other[7] = "strategy.name=fedadam";
  // Refused before it binds (no endpoint file): started directly, not by StartCoordinator.
  auto refused = std::make_unique<Process>(CoordinatorArgs(dir_ + "/run", bind, other),
                                           dir_ + "/coordinator-adam.log");
  auto code = refused->Wait(60s);
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_NE(refused->Log().find("server optimizer 'yogi'"), std::string::npos) << refused->Log();
  EXPECT_NE(refused->Log().find("v2 is unusable"), std::string::npos) << refused->Log();

  std::vector<std::string> three = args;
  three[1] = "3";
  auto coord = StartCoordinator(three, {}, "", bind, "coordinator2.log");
  auto w1 = StartWorker("w1", 1), w2 = StartWorker("w2", 2);
  ASSERT_EQ(coord->Wait(120s), 0) << coord->Log();
  EXPECT_NE(coord->Log().find("resuming run="), std::string::npos);
  EXPECT_NE(coord->Log().find("from version v1"), std::string::npos) << coord->Log();
  v = Versions();
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[2].parent, std::optional<uint64_t>(1));  // the new v2 replaced the damaged one
  EXPECT_TRUE(store::LoadVersionState(dir_ + "/run", v[2]).ok());
}

TEST_F(FaultTest, CrashBetweenWriteAndRenameKeepsThePreviousVersionAndResumes) {
  const std::vector<std::string> args = {"--rounds", "2", "--min-workers", "2", "--min-fit", "2"};
  const std::string bind = RunUntilInjectedCrash(args, "v000002.shw");
  ASSERT_FALSE(bind.empty());
  EXPECT_FALSE(PathExists(store::VersionWeightsPath(dir_ + "/run", 2)));
  auto v = Versions();
  ASSERT_EQ(v.size(), 2u) << "v2 must not be visible";
  for (const auto& m : v) Load(m);  // both verify

  auto coord = StartCoordinator(args, {}, "", bind, "coordinator2.log");
  auto w1 = StartWorker("w1", 1), w2 = StartWorker("w2", 2);
  ASSERT_EQ(coord->Wait(120s), 0) << coord->Log();
  v = Versions();
  ASSERT_EQ(v.size(), 3u);
  Load(v[2]);
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/run/versions")) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  }
}

// With eval.overlap a version is committed first and its metrics (meta and metrics.jsonl) are
// written when its evaluation is in. A crash in between leaves a committed version without
// metrics: the restarted coordinator evaluates it and writes both, once.
TEST_F(FaultTest, CrashBeforeAnEvaluationIsRecordedIsCompletedOnRestart) {
  const std::vector<std::string> args = {"--rounds", "2", "--min-workers", "2", "--min-fit", "2"};
  // v2's meta is written at its commit and again with its metrics: die before the second.
  const std::string bind = RunUntilInjectedCrash(args, "v000002.json#2");
  ASSERT_FALSE(bind.empty());
  std::unique_ptr<Process> coord;
  const std::string run = dir_ + "/run";
  auto v = Versions();
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[2].metrics.value("evaluation", ""), "pending");
  EXPECT_TRUE(v[2].metrics["central"].is_null());
  auto recs = store::ReadMetricsLog(run);
  ASSERT_TRUE(recs.ok());
  ASSERT_EQ(recs->size(), 1u) << "only round 1 was recorded before the crash";

  // All rounds are trained: the restarted coordinator only completes v2's evaluation.
  for (int round = 0; round < 2; ++round) {
    coord =
        StartCoordinator(args, {}, "", bind, "coordinator" + std::to_string(round + 2) + ".log");
    ASSERT_EQ(coord->Wait(120s), 0) << coord->Log();
    v = Versions();
    ASSERT_EQ(v.size(), 3u);
    EXPECT_FALSE(v[2].metrics.contains("evaluation")) << v[2].ToJson().dump();
    ASSERT_TRUE(v[2].metrics["central"].is_object()) << v[2].ToJson().dump();
    EXPECT_EQ(v[2].metrics["central"]["count"].get<int64_t>(), 200);
    EXPECT_EQ(v[2].metrics["samples"].get<int64_t>(), 1800);  // 2 x 1000, 10% held out
    recs = store::ReadMetricsLog(run);
    ASSERT_TRUE(recs.ok());
    ASSERT_EQ(recs->size(), 2u) << (round == 0 ? "round 2's record missing"
                                               : "round 2 recorded again by a second restart");
    const auto& r = (*recs)[1];
    EXPECT_EQ(r["round"].get<int>(), 2);
    EXPECT_EQ(r["version"].get<int>(), 2);
    EXPECT_EQ(r["sha256"].get<std::string>(), v[2].sha256);
    EXPECT_EQ(r["central"], v[2].metrics["central"]);
    EXPECT_TRUE(r["evaluation"]["after_restart"].get<bool>());
    EXPECT_EQ(r["participants"], (nlohmann::json{"w1", "w2"}));
  }
}

// Central evaluation runs in the coordinator's child process (shoal-evaluator). Killed (the
// OOM killer, a crashing TorchScript model), it takes nothing else down: the coordinator stops
// the run with an error naming it, every committed version stays intact, and a restart resumes
// with a new evaluator and records every round exactly once.
// The coordinator's LibTorch process (central evaluation) is killed mid-run, as the OOM killer
// would: a new one takes over and the run finishes with every version evaluated.
TEST_F(FaultTest, KilledEvaluatorProcessIsReplacedAndTheRunFinishes) {
  Partition(2, 2000);
  auto coord =
      StartCoordinator({"--rounds", "3", "--min-workers", "2", "--min-fit", "2", "--epochs", "3"});
  auto w1 = StartWorker("w1", 1), w2 = StartWorker("w2", 2);
  const std::string run = dir_ + "/run";
  for (int i = 0; i < 3000 && !PathExists(store::VersionMetaPath(run, 1)); ++i)
    std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(PathExists(store::VersionMetaPath(run, 1))) << coord->Log();
  pid_t evaluator = -1;
  std::ifstream children("/proc/" + std::to_string(coord->pid()) + "/task/" +
                         std::to_string(coord->pid()) + "/children");
  children >> evaluator;
  ASSERT_GT(evaluator, 0) << "no evaluator child process";
  ASSERT_EQ(::kill(evaluator, SIGKILL), 0);
  ASSERT_EQ(coord->Wait(180s), 0) << coord->Log();
  const std::string log = coord->Log();
  EXPECT_NE(
      log.find("shoal-evaluator (pid " + std::to_string(evaluator) + ") was killed by signal 9"),
      std::string::npos)
      << log;
  EXPECT_NE(log.find("restart 1 of 3"), std::string::npos) << log;
  ExpectEveryVersionEvaluated(run, 3);
}

// An evaluator process that keeps dying is replaced at most 3 times within 10 minutes; then the run
// stops with an error that says so, what was committed stays, and a restarted coordinator evaluates
// the pending version and finishes the run.
TEST_F(FaultTest, EvaluatorThatKeepsDyingStopsTheRunAndARestartResumes) {
  Partition(2, 2000);
  const std::vector<std::string> args = {"--rounds", "5", "--min-workers", "2", "--min-fit", "2"};
  const std::string bind = "tcp://127.0.0.1:" + std::to_string(FreePort());
  // Each evaluator process is killed at its second evaluation: v0 (first process), v1 (dies;
  // the second process evaluates it), v2, v3 likewise, v4: no restart left.
  auto coord = StartCoordinator(args, {"SHOAL_FAULT_EVALUATOR_ABORT=2"}, "", bind);
  auto w1 = StartWorker("w1", 1), w2 = StartWorker("w2", 2);
  auto code = coord->Wait(180s);
  ASSERT_TRUE(code.has_value()) << coord->Log();
  EXPECT_NE(*code, 0);
  const std::string log = coord->Log();
  EXPECT_NE(log.find("restart 3 of 3"), std::string::npos) << log;
  EXPECT_NE(log.find("3 restarts within the last 10 min"), std::string::npos) << log;
  const std::string run = dir_ + "/run";
  EXPECT_FALSE(PathExists(store::VersionMetaPath(run, 5)));
  for (const auto& m : Versions()) Load(m);  // what was committed verifies
  auto before = store::ReadMetricsLog(run);
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->size(), 3u);  // v1..v3 evaluated; v4 committed, its evaluation pending

  coord = StartCoordinator(args, {}, "", bind, "coordinator2.log");
  auto w3 = StartWorker("w1", 1), w4 = StartWorker("w2", 2);
  ASSERT_EQ(coord->Wait(180s), 0) << coord->Log();
  ExpectEveryVersionEvaluated(run, 5);
}

TEST_F(FaultTest, FullDiskGivesAClearErrorAndLeavesThePreviousVersionIntact) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs (CI runs as root)";
  const std::string mnt = dir_ + "/small";
  std::filesystem::create_directories(mnt);
  // MLP versions are ~0.8 MB: v0 and v1 fit in 1.9 MB, v2 does not.
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1900k") != 0) {
    GTEST_SKIP() << "cannot mount tmpfs here: " << std::strerror(errno);
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  Partition(2, 2000);
  auto coord =
      StartCoordinator({"--rounds", "3", "--min-workers", "2", "--min-fit", "2"}, {}, mnt + "/run");
  auto w1 = StartWorker("w1", 1), w2 = StartWorker("w2", 2);
  auto code = coord->Wait(120s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1) << coord->Log();
  const std::string log = coord->Log();
  EXPECT_NE(log.find("No space left on device"), std::string::npos) << log;
  EXPECT_NE(log.find("commit of v"), std::string::npos) << log;
  auto v = Versions(mnt + "/run");
  ASSERT_GE(v.size(), 1u);
  for (const auto& m : v) Load(m, mnt + "/run");  // every visible version verifies
}

TEST_F(FaultTest, AdaptiveDeadlineClosesARoundLongBeforeTheConfiguredTimeout) {
  auto coord = StartCoordinator(
      {"--rounds", "2", "--min-workers", "2", "--min-fit", "1", "--round-timeout", "300", "--set",
       "selection.adaptive_deadline=true", "--set", "eval.federated=false"});
  ScriptedWorker a(endpoint_, "a", Tls("a"), 100), b(endpoint_, "b", Tls("b"), 100);
  ASSERT_TRUE(a.Hello().ok());
  ASSERT_TRUE(b.Hello().ok());
  auto ta = a.NextTrainTask();
  auto tb = b.NextTrainTask();
  ASSERT_TRUE(ta.ok() && tb.ok());
  const size_t n = ta->global.data.size();
  ASSERT_TRUE(a.SendUpdate(ta->task, RandomDelta(n, 11), 10).ok());
  ASSERT_TRUE(b.SendUpdate(tb->task, RandomDelta(n, 12), 10).ok());
  // Round 2: b goes quiet. Both were fast in round 1, so the deadline is about 5 s, not 300 s.
  auto ta2 = a.NextTrainTask(20s);
  ASSERT_TRUE(ta2.ok());
  ASSERT_TRUE(a.SendUpdate(ta2->task, RandomDelta(n, 13), 10).ok());
  auto code = coord->Wait(60s);
  ASSERT_TRUE(code.has_value()) << "round 2 did not close at the adaptive deadline\n"
                                << coord->Log();
  EXPECT_EQ(*code, 0);
  EXPECT_NE(coord->Log().find("round=2 adaptive deadline"), std::string::npos) << coord->Log();
  auto v = Versions();
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[2].participants, std::vector<std::string>{"a"});
}

TEST_F(FaultTest, CorruptLatestVersionIsReportedAndTheRunResumesFromThePreviousOne) {
  Partition(2, 2000);
  const std::string bind = "tcp://127.0.0.1:" + std::to_string(FreePort());
  auto coord =
      StartCoordinator({"--rounds", "2", "--min-workers", "2", "--min-fit", "2"}, {}, "", bind);
  auto w1 = StartWorker("w1", 1, {"--set", "retry.max_ms=300"});
  auto w2 = StartWorker("w2", 2, {"--set", "retry.max_ms=300"});
  ASSERT_EQ(coord->Wait(120s), 0) << coord->Log();
  w1->Wait(30s);
  w2->Wait(30s);
  // Damage v2: one flipped byte in its weights, and a torn meta for a would-be v3.
  const std::string run = dir_ + "/run";
  auto bytes = ReadFile(store::VersionWeightsPath(run, 2));
  ASSERT_TRUE(bytes.ok());
  std::string damaged = *bytes;
  damaged[damaged.size() / 2] ^= 0x40;
  ASSERT_TRUE(WriteFileAtomic(store::VersionWeightsPath(run, 2), damaged).ok());
  ASSERT_TRUE(WriteFileAtomic(store::VersionMetaPath(run, 3), "{\"version\": 3, \"sha").ok());

  // Asked for 3 rounds, the restarted coordinator reports both, resumes from v1 and redoes round 2.
  coord = StartCoordinator({"--rounds", "3", "--min-workers", "2", "--min-fit", "2"}, {}, "", bind,
                           "coordinator2.log");
  auto w3 = StartWorker("w1", 1);
  auto w4 = StartWorker("w2", 2);
  ASSERT_EQ(coord->Wait(120s), 0) << coord->Log();
  const std::string log = coord->Log();
  EXPECT_NE(log.find("skipping unreadable version"), std::string::npos) << log;
  EXPECT_NE(log.find("version v2 is unusable"), std::string::npos) << log;
  EXPECT_NE(log.find("resuming run="), std::string::npos);
  EXPECT_NE(log.find("from version v1"), std::string::npos) << log;
  auto v = Versions();
  ASSERT_EQ(v.size(), 4u);
  for (const auto& m : v) Load(m);  // every version verifies again
}

}  // namespace
}  // namespace shoal
