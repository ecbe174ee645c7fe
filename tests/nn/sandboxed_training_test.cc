// Landlock on the training path (issue #20, item 1; base/landlock.h). Landlock restricts the
// thread that installs it and the threads it creates later, not threads that exist already - and
// by the time a worker enters its sandbox, OpenBLAS's pool (started before main) and LibTorch's
// intra-op and inter-op pools (started by the silo's preprocessing or a first training step) may
// be running. A model escaping the operator allow-list runs its code on those threads. So a
// forked child does what a worker does - starts LibTorch's pools with a training step, then
// installs the worker's rules - and then, from every pool thread (at::parallel_for, at::launch),
// tries to read a secret file and to connect to a port other than the coordinator's: each must
// get EACCES, and training must still work.
#include <ATen/Parallel.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <string>

#include "base/file_util.h"
#include "base/landlock.h"
#include "nn/runtime.h"

namespace shoal {
namespace {

struct Outcome {
  int installed = -1;          // 0: InstallLandlock enforced everything
  int tasks_before = 0;        // threads of the process when the rules went on
  int threads_restricted = 0;  // what InstallLandlock reports (threads may come and go)
  int pool_threads_used = 0;   // distinct threads that ran the attempts
  int reads_allowed = 0;       // attempts that read the secret (must stay 0 under the rules)
  int reads_denied = 0;        // attempts refused with EACCES
  int connects_allowed = 0;
  int connects_denied = 0;
  int launch_read = -1;  // errno of the read on the inter-op pool (at::launch)
  int trained = 0;       // 1: a training step after the rules gave a finite loss
};

int CountTasks() {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)e;
    ++n;
  }
  return n;
}

int TryRead(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

int TryConnect(uint16_t port) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int rc = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? 0 : errno;
  ::close(s);
  return rc;
}

// One SGD step of a small MLP on a batch big enough for LibTorch and OpenBLAS to use their pools.
double TrainStep() {
  torch::manual_seed(1);
  torch::nn::Sequential net(torch::nn::Linear(256, 256), torch::nn::ReLU(),
                            torch::nn::Linear(256, 10));
  torch::optim::SGD opt(net->parameters(), 0.1);
  const torch::Tensor x = torch::randn({512, 256});
  const torch::Tensor y = torch::randint(0, 10, {512});
  opt.zero_grad();
  torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(x), y);
  loss.backward();
  opt.step();
  return loss.item<double>();
}

TEST(SandboxedTrainingTest, LibTorchPoolThreadsStartedBeforeTheRulesCannotReadOrConnect) {
  ASSERT_GE(LandlockAbi(), 4) << "this kernel has no Landlock TCP rules; the test needs them";
  char tmpl[] = "/tmp/shoal-sandboxed-training-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  ASSERT_TRUE(WriteFileAtomic(dir + "/worker.key", "the silo operator's private key").ok());
  // Two listeners: the "coordinator" (allowed) and another service on this machine.
  int listeners[2];
  uint16_t ports[2];
  for (int i = 0; i < 2; ++i) {
    listeners[i] = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    ASSERT_EQ(::bind(listeners[i], reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(listeners[i], 128), 0);
    ASSERT_EQ(::getsockname(listeners[i], reinterpret_cast<sockaddr*>(&a), &n), 0);
    ports[i] = ntohs(a.sin_port);
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    Outcome o;
    // As the worker: the runtime configured, the pools started by work done before the sandbox.
    nn::ConfigureTorchRuntime(4);
    TrainStep();
    at::parallel_for(0, 64, 1, [](int64_t, int64_t) {});
    at::launch([] {});
    o.tasks_before = CountTasks();
    LandlockRules rules;
    rules.read_paths = RuntimeReadPaths();
    rules.connect_ports = {ports[0]};
    auto res = InstallLandlock(rules);
    o.installed = res.ok() && res->files && res->network ? 0 : 1;
    o.threads_restricted = res.ok() ? res->threads : 0;
    // The attempts, spread over the intra-op pool.
    std::mutex mu;
    std::set<long> tids;
    std::atomic<int> reads_ok{0}, reads_denied{0}, conn_ok{0}, conn_denied{0};
    at::parallel_for(0, 64, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        {
          std::lock_guard<std::mutex> l(mu);
          tids.insert(::syscall(SYS_gettid));
        }
        const int r = TryRead(dir + "/worker.key");
        if (r == 0) ++reads_ok;
        if (r == EACCES) ++reads_denied;
        const int c = TryConnect(ports[1]);
        if (c == 0) ++conn_ok;
        if (c == EACCES) ++conn_denied;
      }
    });
    o.pool_threads_used = static_cast<int>(tids.size());

    o.reads_allowed = reads_ok;
    o.reads_denied = reads_denied;
    o.connects_allowed = conn_ok;
    o.connects_denied = conn_denied;
    std::promise<int> launched;
    at::launch([&] { launched.set_value(TryRead(dir + "/worker.key")); });
    o.launch_read = launched.get_future().get();
    o.trained = std::isfinite(TrainStep()) ? 1 : 0;
    if (::write(fds[1], &o, sizeof o) != static_cast<ssize_t>(sizeof o)) ::_exit(3);
    ::_exit(0);
  }
  ::close(fds[1]);
  Outcome o;
  ASSERT_EQ(::read(fds[0], &o, sizeof o), static_cast<ssize_t>(sizeof o));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  for (int fd : listeners) ::close(fd);
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(o.installed, 0);
  EXPECT_GT(o.tasks_before, 4) << "OpenBLAS's and LibTorch's pools must exist before the rules";
  // Every thread restricts itself (short-lived ones that came and went during the broadcast too).
  EXPECT_GE(o.threads_restricted, o.tasks_before);
  EXPECT_GE(o.pool_threads_used, 2) << "the attempts must run on pool threads, not only here";
  EXPECT_EQ(o.reads_allowed, 0);
  EXPECT_EQ(o.reads_denied, 64);
  EXPECT_EQ(o.connects_allowed, 0);
  EXPECT_EQ(o.connects_denied, 64);
  EXPECT_EQ(o.launch_read, EACCES) << "the inter-op pool (at::launch)";
  EXPECT_EQ(o.trained, 1) << "training still works under the rules";
}

}  // namespace
}  // namespace shoal
