// Issue #20, item 1, with the real executables over TLS: a coordinator serving a TorchScript
// model (model.name = torchscript) to workers. A worker whose config does not pin the file's
// SHA-256 refuses it: it stops with an error naming the SHA-256 (no reconnect loop) and the
// coordinator logs the refusal under the worker's name. A worker pinning the SHA-256 trains it;
// one started with --allow-untrusted-script trains it and warns.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <sstream>

#include "base/file_util.h"
#include "base/sha256.h"
#include "tests/integration/process.h"
#include "tests/integration/test_pki.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::BinDir;
using testing::Process;

constexpr const char* kFashion = "/usr/share/datasets/fashion-mnist";

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A user model that is not a built-in: logistic regression on 28x28 images, scripted in C++.
std::string LinearModel() {
  torch::manual_seed(1);
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module m(c10::QualifiedName("__torch__.test.Linear"), cu);
  m.register_attribute("training", c10::BoolType::get(), true);
  m.register_parameter("w", torch::randn({10, 784}) * 0.01, false);
  m.register_parameter("b", torch::zeros({10}), false);
  m.define(R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.linear(torch.flatten(x, 1), self.w, self.b)
)JIT");
  std::ostringstream out;
  m.save(out);
  return out.str();
}

class ScriptTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(std::string(kFashion) + "/train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Fashion-MNIST not installed";
    }
    char tmpl[] = "/tmp/shoal-script-trust-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::ScopedTestPki>(dir_);
  }
  void TearDown() override {
    pki_.reset();
    if (dir_.empty()) return;
    if (HasFailure()) {
      std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
    } else {
      std::filesystem::remove_all(dir_);
    }
  }

  std::unique_ptr<Process> Worker(const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> argv = {BinDir() + "/shoal-worker",
                                     "--name",
                                     name,
                                     "--coordinator",
                                     endpoint_,
                                     "--data",
                                     dir_ + "/silos/silo-1",
                                     "--set",
                                     "retry.initial_ms=100"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv, dir_ + "/" + name + ".log");
  }

  std::string dir_;
  std::string endpoint_;
  std::unique_ptr<testing::ScopedTestPki> pki_;
};

TEST_F(ScriptTrustTest, WorkersRunCoordinatorTorchScriptOnlyWhenPinnedOrAllowed) {
  const std::string model = dir_ + "/model.pt";
  const std::string bytes = LinearModel();
  ASSERT_TRUE(WriteFileAtomic(model, bytes).ok());
  const std::string sha = ToHex(Sha256::Of(bytes.data(), bytes.size()));
  {
    Process partition(
        {BinDir() + "/shoalctl", "partition", "--source", kFashion, "--workers", "1", "--scheme",
         "iid", "--seed", "1", "--out", dir_ + "/silos", "--limit", "600"},
        dir_ + "/partition.log");
    ASSERT_EQ(partition.Wait(120s), 0) << partition.Log();
  }
  Process coord({BinDir() + "/shoal-coordinator",
                 "--run-dir",
                 dir_ + "/run",
                 "--bind",
                 "tcp://127.0.0.1:*",
                 "--endpoint-file",
                 dir_ + "/endpoint",
                 "--set",
                 "model.name=torchscript",
                 "--set",
                 "model.path=" + model,
                 "--rounds",
                 "1",
                 "--min-workers",
                 "2",
                 "--min-fit",
                 "2",
                 "--eval-limit",
                 "200",
                 "--round-timeout",
                 "120",
                 "--set",
                 "http.enabled=false",
                 "--set",
                 "network.heartbeat_ms=200"},
                dir_ + "/coordinator.log");
  endpoint_ = testing::WaitForFile(dir_ + "/endpoint", 60s);
  ASSERT_FALSE(endpoint_.empty()) << coord.Log();

  // 1. No pin, no flag: the worker stops (exit 1) naming the SHA-256, and does not retry.
  auto refusing = Worker("refusing", {});
  auto code = refusing->Wait(120s);
  ASSERT_TRUE(code.has_value()) << "the worker kept going\n" << refusing->Log();
  EXPECT_EQ(*code, 1) << refusing->Log();
  EXPECT_TRUE(Contains(refusing->Log(), "does not trust")) << refusing->Log();
  EXPECT_TRUE(Contains(refusing->Log(), "sha256=" + sha)) << refusing->Log();
  EXPECT_FALSE(Contains(refusing->Log(), "training v")) << refusing->Log();
  // The coordinator's operator sees the refusal too.
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!Contains(coord.Log(), "worker=refusing reports error") &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(Contains(coord.Log(), "worker=refusing reports error")) << coord.Log();
  EXPECT_TRUE(Contains(coord.Log(), "sha256=" + sha)) << coord.Log();

  // 2. Pinned (the refusal's own spelling of the key) and 3. explicitly allowed: both train.
  auto pinned = Worker("pinned", {"--set", "model.trusted_script_sha256=[\"" + sha + "\"]"});
  auto allowed = Worker("allowed", {"--allow-untrusted-script"});
  auto coord_code = coord.Wait(240s);
  ASSERT_TRUE(coord_code.has_value()) << "coordinator did not finish\n" << coord.Log();
  EXPECT_EQ(*coord_code, 0) << coord.Log();
  EXPECT_EQ(pinned->Wait(60s), 0) << pinned->Log();
  EXPECT_EQ(allowed->Wait(60s), 0) << allowed->Log();
  EXPECT_TRUE(Contains(pinned->Log(), "trained:")) << pinned->Log();
  EXPECT_FALSE(Contains(pinned->Log(), "--allow-untrusted-script")) << pinned->Log();
  EXPECT_TRUE(Contains(allowed->Log(), "trained:")) << allowed->Log();
  EXPECT_TRUE(Contains(allowed->Log(), "which this worker's config does not pin"))
      << allowed->Log();
  EXPECT_TRUE(Contains(allowed->Log(), "sha256=" + sha)) << allowed->Log();
}

}  // namespace
}  // namespace shoal
