// Issue #20, items 9 and 10, with real processes: the coordinator runs and enrolls workers by
// join token without the root CA key, refuses to start with it, and a reissued worker's old
// certificate is refused at Hello.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "base/file_util.h"
#include "security/pki.h"
#include "tests/integration/process.h"
#include "tests/integration/scripted_worker.h"
#include "tests/integration/test_pki.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::BinDir;
using testing::Process;
using testing::ScriptedWorker;

constexpr char kFashion[] = "/usr/share/datasets/fashion-mnist";

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class PkiHardeningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-pki-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::TestPki>(dir_);
    offline_root_ = dir_ + "/offline-root";
  }
  void TearDown() override {
    coord_.reset();
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
    if (HasFailure()) std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
  }

  // The root directory goes where the coordinator's host cannot see it.
  void TakeRootOffline() { fs::rename(security::DefaultRootDir(pki_->ca_dir()), offline_root_); }

  std::vector<std::string> CoordinatorArgv() const {
    return {BinDir() + "/shoal-coordinator",
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
            "--rounds",
            "1",
            "--min-workers",
            "2",
            "--set",
            "selection.wait_timeout_s=120",
            "--set",
            "http.port=0",
            "--set",
            "network.heartbeat_ms=200",
            "--set",
            "eval.federated=false",
            "--set",
            "http.linger_s=0",
            "--ca-dir",
            pki_->ca_dir()};
  }
  void StartCoordinator() {
    coord_ = std::make_unique<Process>(CoordinatorArgv(), dir_ + "/coordinator.log");
    endpoint_ = testing::WaitForFile(dir_ + "/endpoint", 60s);
    ASSERT_FALSE(endpoint_.empty()) << coord_->Log();
  }

  std::string dir_, offline_root_, endpoint_;
  std::unique_ptr<testing::TestPki> pki_;
  std::unique_ptr<Process> coord_;
};

// The attack: the coordinator's files held the root CA key (token redemption loaded it).
// Now: the coordinator refuses to run with it, and without it a worker still joins by token.
TEST_F(PkiHardeningTest, CoordinatorEnrollsByTokenWithoutTheRootKey) {
  if (!PathExists(std::string(kFashion) + "/t10k-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  }
  const std::string root_key = Slurp(security::CaKeyPath(security::DefaultRootDir(pki_->ca_dir())));
  ASSERT_FALSE(root_key.empty());

  // With the root key in its CA directory (the old layout), the coordinator does not start.
  fs::copy_file(security::CaKeyPath(security::DefaultRootDir(pki_->ca_dir())),
                security::CaKeyPath(pki_->ca_dir()));
  {
    Process refused(CoordinatorArgv(), dir_ + "/refused.log");
    auto code = refused.Wait(60s);
    ASSERT_TRUE(code.has_value()) << refused.Log();
    EXPECT_NE(*code, 0);
    EXPECT_NE(refused.Log().find("holds the root CA key"), std::string::npos) << refused.Log();
  }
  fs::remove(security::CaKeyPath(pki_->ca_dir()));

  TakeRootOffline();
  for (const auto& e : fs::recursive_directory_iterator(pki_->ca_dir())) {
    ASSERT_EQ(Slurp(e.path().string()).find(root_key), std::string::npos) << e.path();
  }
  Process partition({BinDir() + "/shoalctl", "partition", "--source", kFashion, "--workers", "2",
                     "--scheme", "iid", "--seed", "4", "--out", dir_ + "/silos", "--limit", "600"},
                    dir_ + "/partition.log");
  ASSERT_EQ(partition.Wait(60s), 0) << partition.Log();
  StartCoordinator();

  // The token in a file only we can read (--join @FILE): not on the command line.
  auto token = security::CreateJoinToken(pki_->ca_dir(), "joiner", 600, endpoint_);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  const std::string token_file = dir_ + "/joiner.token";
  ASSERT_TRUE(WriteFileAtomic(token_file, *token + "\n", 0600).ok());
  Process joiner({BinDir() + "/shoal-worker", "--name", "joiner", "--data", dir_ + "/silos/silo-1",
                  "--bundle", dir_ + "/joiner-creds", "--join", "@" + token_file, "--set",
                  "retry.initial_ms=100", "--set", "retry.max_ms=500"},
                 dir_ + "/joiner.log");
  bool admitted = false;
  for (int i = 0; i < 1200 && !admitted; ++i) {
    admitted = joiner.Log().find("admitted to run") != std::string::npos;
    if (!admitted) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(admitted) << joiner.Log() << coord_->Log();
  EXPECT_EQ(joiner.Log().find("command line"), std::string::npos) << joiner.Log();
  // Its certificate chains through the enrollment CA.
  auto info = security::VerifyPeerCert(Slurp(security::CaCertPath(pki_->ca_dir())),
                                       Slurp(security::BundleCertPath(dir_ + "/joiner-creds")));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->common_name, "joiner");
  EXPECT_NE(Slurp(security::BundleCertPath(dir_ + "/joiner-creds"))
                .find(Slurp(security::EnrollmentCertPath(pki_->ca_dir()))),
            std::string::npos);
}

// The attack: a second certificate for a name that already has one; both worked. Now a second
// one needs --reissue, and the old certificate is refused at Hello from then on.
TEST_F(PkiHardeningTest, ReissuedWorkersOldCertificateIsRefusedAtHello) {
  const std::string old_bundle = pki_->Bundle("w1");
  StartCoordinator();
  ScriptedWorker old_worker(endpoint_, "w1", testing::TestPki::ClientTlsFromBundle(old_bundle));
  ASSERT_TRUE(old_worker.Hello().ok());

  Process second({BinDir() + "/shoalctl", "enroll", "w1", "--ca", pki_->ca_dir(), "--out",
                  dir_ + "/w1-second"},
                 dir_ + "/second.log");
  auto code = second.Wait(30s);
  ASSERT_TRUE(code.has_value()) << second.Log();
  EXPECT_NE(*code, 0);
  EXPECT_NE(second.Log().find("already has a certificate"), std::string::npos) << second.Log();

  Process reissue({BinDir() + "/shoalctl", "enroll", "w1", "--ca", pki_->ca_dir(), "--out",
                   dir_ + "/w1-second", "--reissue"},
                  dir_ + "/reissue.log");
  ASSERT_EQ(reissue.Wait(30s), 0) << reissue.Log();

  // The old certificate: refused on its next Hello (the coordinator reloads revoked.json).
  Status st;
  for (int i = 0; i < 50; ++i) {
    old_worker.Reconnect();
    st = old_worker.Hello(5s);
    if (!st.ok()) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("revoked"), std::string::npos) << st.message();
  // The new one is admitted under the same name.
  ScriptedWorker new_worker(endpoint_, "w1",
                            testing::TestPki::ClientTlsFromBundle(dir_ + "/w1-second"));
  Status ok = new_worker.Hello();
  EXPECT_TRUE(ok.ok()) << ok.ToString() << coord_->Log();
}

}  // namespace
}  // namespace shoal
