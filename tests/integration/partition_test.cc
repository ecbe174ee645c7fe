// A worker partitioned away from the coordinator in its own network namespace (veth link the
// test creates and cuts): dropped at the round deadline, rejoins after the link returns, and
// neither side hangs. Needs root and iproute2; skips with a message otherwise.
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

int Sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

class PartitionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces (CI runs as root)";
    if (Sh("command -v ip") != 0) GTEST_SKIP() << "needs iproute2 (ip)";
    if (!PathExists(std::string(kFashion) + "/t10k-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Fashion-MNIST not installed";
    }
    const std::string tag = std::to_string(::getpid() % 100000);
    ns_ = "shoal-part-" + tag;
    host_if_ = "shp" + tag + "h";
    ns_if_ = "shp" + tag + "n";
    // A private /30 that exists only between this veth pair.
    host_ip_ = "10.213." + std::to_string((::getpid() / 64) % 250) + "." +
               std::to_string(1 + 4 * (::getpid() % 60));
    const std::string prefix = host_ip_.substr(0, host_ip_.rfind('.') + 1);
    ns_ip_ = prefix + std::to_string(std::stoi(host_ip_.substr(host_ip_.rfind('.') + 1)) + 1);
    const bool ok =
        Sh("ip netns add " + ns_) == 0 &&
        Sh("ip link add " + host_if_ + " type veth peer name " + ns_if_) == 0 &&
        Sh("ip link set " + ns_if_ + " netns " + ns_) == 0 &&
        Sh("ip addr add " + host_ip_ + "/30 dev " + host_if_) == 0 &&
        Sh("ip link set " + host_if_ + " up") == 0 &&
        Sh("ip netns exec " + ns_ + " ip addr add " + ns_ip_ + "/30 dev " + ns_if_) == 0 &&
        Sh("ip netns exec " + ns_ + " ip link set " + ns_if_ + " up") == 0 &&
        Sh("ip netns exec " + ns_ + " ip link set lo up") == 0;
    if (!ok) {
      Cleanup();
      GTEST_SKIP() << "cannot create a network namespace with a veth pair here";
    }
    char tmpl[] = "/tmp/shoal-part-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::ScopedTestPki>(dir_);  // every process runs over TLS
  }
  void TearDown() override {
    Cleanup();
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }
  void Cleanup() {
    Sh("ip link del " + host_if_);
    Sh("ip netns del " + ns_);
  }

  std::string ns_, host_if_, ns_if_, host_ip_, ns_ip_, dir_;
  std::unique_ptr<testing::ScopedTestPki> pki_;
};

TEST_F(PartitionTest, PartitionedWorkerIsDroppedAtTheDeadlineAndRejoinsAfterTheLinkReturns) {
  Process part({BinDir() + "/shoalctl", "partition", "--source", kFashion, "--workers", "2",
                "--scheme", "iid", "--seed", "4", "--out", dir_ + "/silos", "--limit", "2000"},
               dir_ + "/partition.log");
  ASSERT_EQ(part.Wait(60s), 0) << part.Log();
  Process coord({BinDir() + "/shoal-coordinator",
                 "--run-dir",
                 dir_ + "/run",
                 "--bind",
                 "tcp://" + host_ip_ + ":*",
                 "--endpoint-file",
                 dir_ + "/endpoint",
                 "--model",
                 "mlp",
                 "--eval-limit",
                 "200",
                 "--rounds",
                 "5",
                 "--min-workers",
                 "2",
                 "--min-fit",
                 "1",
                 "--round-timeout",
                 "4",
                 "--set",
                 "http.enabled=false",
                 "--set",
                 "network.heartbeat_ms=200",
                 "--set",
                 "network.peer_timeout_ms=3000",
                 "--set",
                 "eval.timeout_s=4",
                 "--set",
                 "selection.wait_timeout_s=90"},
                dir_ + "/coordinator.log");
  const std::string endpoint = testing::WaitForFile(dir_ + "/endpoint", 60s);
  ASSERT_FALSE(endpoint.empty()) << coord.Log();
  const std::vector<std::string> retry = {"--set", "retry.initial_ms=100",
                                          "--set", "retry.max_ms=500",
                                          "--set", "retry.hello_timeout_ms=1000"};
  std::vector<std::string> a1 = {
      BinDir() + "/shoal-worker", "--name", "near", "--coordinator", endpoint, "--data",
      dir_ + "/silos/silo-1"};
  a1.insert(a1.end(), retry.begin(), retry.end());
  std::vector<std::string> a2 = {
      "/usr/sbin/ip", "netns",         "exec",   ns_,      BinDir() + "/shoal-worker", "--name",
      "far",          "--coordinator", endpoint, "--data", dir_ + "/silos/silo-2"};
  a2.insert(a2.end(), retry.begin(), retry.end());
  Process near(a1, dir_ + "/near.log");
  Process far(a2, dir_ + "/far.log");

  // Both take part in round 1; then the link is cut.
  const std::string run = dir_ + "/run";
  for (int i = 0; i < 1500 && !PathExists(store::VersionMetaPath(run, 1)); ++i)
    std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(PathExists(store::VersionMetaPath(run, 1))) << coord.Log() << far.Log();
  ASSERT_EQ(Sh("ip link set " + host_if_ + " down"), 0);
  const auto cut = std::chrono::steady_clock::now();
  // The coordinator drops "far" (deadline, then peer timeout) and keeps going with "near" for
  // the rounds it can, then waits for two workers again.
  for (int i = 0; i < 1000 && coord.Log().find("worker=far lost") == std::string::npos; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_NE(coord.Log().find("worker=far lost"), std::string::npos) << coord.Log();
  EXPECT_LT(std::chrono::steady_clock::now() - cut, 15s) << "lost worker noticed too late";
  std::this_thread::sleep_for(1s);
  ASSERT_EQ(Sh("ip link set " + host_if_ + " up"), 0);

  auto code = coord.Wait(120s);
  ASSERT_TRUE(code.has_value()) << "coordinator hung\n" << coord.Log();
  EXPECT_EQ(*code, 0) << coord.Log();
  EXPECT_TRUE(far.Wait(30s).has_value()) << "partitioned worker hung\n" << far.Log();
  EXPECT_TRUE(near.Wait(30s).has_value()) << near.Log();

  auto versions = store::ListVersions(run);
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 6u);
  bool dropped = false, rejoined = false;
  for (size_t i = 2; i < versions->size(); ++i) {
    const auto& p = (*versions)[i].participants;
    const bool has_far = std::find(p.begin(), p.end(), "far") != p.end();
    if (!has_far) dropped = true;
    if (dropped && has_far) rejoined = true;
  }
  EXPECT_TRUE(dropped) << "a round after the cut should have committed without far";
  EXPECT_TRUE(rejoined) << "far should take part again after the link returned\n" << far.Log();
}

}  // namespace
}  // namespace shoal
