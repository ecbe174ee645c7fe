// Landlock (base/landlock.h; issue #20, item 1, defence in depth): a forked child restricts
// itself as shoal-evaluator / shoal-worker do and then tries what a model escaping the operator
// allow-list would - read a secret file beside its data, connect to a port that is not the
// coordinator's, bind one - from the thread that installed the rules, from a thread that existed
// before (as OpenBLAS's do) and from one started after. Each attempt must fail with EACCES while
// the allowed file and port keep working; without the rules the same attempts succeed.
#include "base/landlock.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <seccomp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

#include "base/file_util.h"
#include "base/sandbox.h"

namespace shoal {
namespace {

// errno of each attempt (0 = it succeeded) from one thread.
struct Tries {
  int read_allowed = -1;
  int read_secret = -1;
  int connect_allowed = -1;
  int connect_other = -1;
  int bind_any = -1;
};

// The child's answers: whether the rules went on, and each thread's attempts.
struct Report {
  int installed = -1;  // 0 = InstallLandlock ok with nothing missing
  int threads = 0;     // threads it restricted
  Tries caller, early, late;
};

int Errno(int rc) { return rc >= 0 ? 0 : errno; }

int Connect(uint16_t port) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int rc = Errno(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a));
  ::close(s);
  return rc;
}

int Bind() {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // port 0: any
  const int rc = Errno(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a));
  ::close(s);
  return rc;
}

int ReadFileErrno(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char c;
  const int rc = ::read(fd, &c, 1) == 1 ? 0 : EIO;
  ::close(fd);
  return rc;
}

// A listening socket on 127.0.0.1:0; its port.
struct Listener {
  int fd = -1;
  uint16_t port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd, 16) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) == 0) {
      port = ntohs(a.sin_port);
    }
  }
  ~Listener() { ::close(fd); }
};

class LandlockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-landlock-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    ASSERT_TRUE(MakeDirs(root_ + "/data").ok());
    ASSERT_TRUE(MakeDirs(root_ + "/secrets").ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/data/train.csv", "x,label\n1,0\n").ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/secrets/key.pem", "the silo operator's key").ok());
    ASSERT_GT(allowed_.port, 0);
    ASSERT_GT(other_.port, 0);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  Tries Try() const {
    Tries t;
    t.read_allowed = ReadFileErrno(root_ + "/data/train.csv");
    t.read_secret = ReadFileErrno(root_ + "/secrets/key.pem");
    t.connect_allowed = Connect(allowed_.port);
    t.connect_other = Connect(other_.port);
    t.bind_any = Bind();
    return t;
  }

  // Forks a child that (when `restrict`) installs the worker's rules - the data directory,
  // TCP to `allowed_` only - with a thread already running, and reports every attempt.
  Report RunChild(bool restrict) {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      Report r;
      std::mutex mu;
      std::condition_variable cv;
      bool go = false;
      std::thread early([&] {  // exists before the rules, like OpenBLAS's pool
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return go; });
        r.early = Try();
      });
      if (restrict) {
        LandlockRules rules;
        rules.read_paths = {root_ + "/data"};
        rules.connect_ports = {allowed_.port};
        auto res = InstallLandlock(rules);
        r.installed = res.ok() && res->abi >= 4 && res->missing.empty() ? 0 : 1;
        r.threads = res.ok() ? res->threads : 0;
      }
      {
        std::lock_guard<std::mutex> l(mu);
        go = true;
      }
      cv.notify_all();
      early.join();
      r.caller = Try();
      std::thread late([&] { r.late = Try(); });
      late.join();
      if (::write(fds[1], &r, sizeof r) != static_cast<ssize_t>(sizeof r)) ::_exit(3);
      ::_exit(0);
    }
    ::close(fds[1]);
    Report r;
    EXPECT_EQ(::read(fds[0], &r, sizeof r), static_cast<ssize_t>(sizeof r));
    ::close(fds[0]);
    int status = 0;
    EXPECT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
    return r;
  }

  std::string root_;
  Listener allowed_, other_;
};

void ExpectConfined(const Tries& t, const char* who) {
  SCOPED_TRACE(who);
  EXPECT_EQ(t.read_allowed, 0);
  EXPECT_EQ(t.read_secret, EACCES);
  EXPECT_EQ(t.connect_allowed, 0);
  EXPECT_EQ(t.connect_other, EACCES);
  EXPECT_EQ(t.bind_any, EACCES);
}

TEST_F(LandlockTest, EveryThreadReadsOnlyItsDataAndConnectsOnlyToTheAllowedPort) {
  ASSERT_GE(LandlockAbi(), 4) << "this kernel has no Landlock TCP rules; the test needs them";
  const Report r = RunChild(true);
  EXPECT_EQ(r.installed, 0);
  EXPECT_EQ(r.threads, 2) << "the caller and the thread that existed before";
  ExpectConfined(r.caller, "the thread that installed the rules");
  ExpectConfined(r.early, "a thread started before the rules (OpenBLAS's pool)");
  ExpectConfined(r.late, "a thread started after the rules (LibTorch's pools)");
}

// Without the rules the same attempts succeed: the test sees the difference it claims.
TEST_F(LandlockTest, WithoutTheRulesTheAttemptsSucceed) {
  const Report r = RunChild(false);
  for (const Tries* t : {&r.caller, &r.early, &r.late}) {
    EXPECT_EQ(t->read_allowed, 0);
    EXPECT_EQ(t->read_secret, 0);
    EXPECT_EQ(t->connect_allowed, 0);
    EXPECT_EQ(t->connect_other, 0);
    EXPECT_EQ(t->bind_any, 0);
  }
}

// Docker's default seccomp profile refuses the Landlock system calls with EPERM: the process
// must see "no Landlock" (and go on under seccomp with a warning), not fail - unless the
// operator required Landlock. The child refuses landlock_create_ruleset as docker does.
TEST_F(LandlockTest, WithoutLandlockTheSandboxSaysWhatIsMissingOrRefusesWhenRequired) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM),
                     seccomp_syscall_resolve_name("landlock_create_ruleset"), 0);
    char out[3] = {'?', '?', '?'};
    if (seccomp_load(ctx) == 0) {
      LandlockRules rules;
      rules.read_paths = {root_ + "/data"};
      auto res = InstallLandlock(rules);
      out[0] = res.ok() && res->abi == 0 && !res->files &&
                       res->missing.find("seccomp profile") != std::string::npos
                   ? 'y'
                   : 'n';
      SandboxOptions required;
      required.allow_network = true;
      required.require_landlock = true;
      auto refused = InstallSandbox(required);
      out[1] =
          !refused.ok() && refused.status().message().find("require_landlock") != std::string::npos
              ? 'y'
              : 'n';
      SandboxOptions lenient;
      lenient.allow_network = true;
      auto goes_on = InstallSandbox(lenient);
      out[2] = goes_on.ok() && goes_on->landlock.abi == 0 &&
                       ReadFileErrno(root_ + "/secrets/key.pem") == 0
                   ? 'y'
                   : 'n';
    }
    if (::write(fds[1], out, sizeof out) != 3) ::_exit(3);
    ::_exit(0);
  }
  ::close(fds[1]);
  char out[3] = {};
  ASSERT_EQ(::read(fds[0], out, sizeof out), 3);
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_EQ(out[0], 'y') << "InstallLandlock must report the missing Landlock, not fail";
  EXPECT_EQ(out[1], 'y') << "require_landlock must refuse to start without it";
  EXPECT_EQ(out[2], 'y') << "without require_landlock the seccomp sandbox still goes on";
}

TEST(TcpPortOfTest, ReadsThePortOfATcpAddressAndRefusesOthers) {
  EXPECT_EQ(*TcpPortOf("tcp://127.0.0.1:7000"), 7000);
  EXPECT_EQ(*TcpPortOf("tcp://coordinator:65535"), 65535);
  EXPECT_EQ(*TcpPortOf("tcp://[::1]:443"), 443);
  for (const char* bad : {"ipc:///tmp/x", "tcp://host", "tcp://host:", "tcp://host:0",
                          "tcp://host:65536", "tcp://host:12a", "tcp://host:*", "127.0.0.1:80"}) {
    EXPECT_FALSE(TcpPortOf(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace shoal
