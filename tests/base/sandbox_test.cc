// The seccomp filter of the processes that run user TorchScript (base/sandbox.h; issue #20,
// item 1, defence in depth). A forked child installs the same filter as shoal-evaluator (no
// network) or shoal-worker (network kept) and then tries what a model escaping the operator
// allow-list would: create and write files, truncate one, open a socket, run a program, signal
// its parent. Each attempt must fail with EPERM, on a thread started before the filter too,
// while reading files, making threads and writing to descriptors it already holds still work.
#include "base/sandbox.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
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

namespace shoal {
namespace {

// errno of each attempt in the child (0 = it succeeded).
struct Attempts {
  int installed = -1;          // InstallSandbox: 0 = ok
  int create_file = -1;        // open(O_WRONLY | O_CREAT)
  int open_rdwr = -1;          // openat(O_RDWR) of an existing file
  int truncate_file = -1;      // truncate()
  int unlink_file = -1;        // unlink()
  int write_from_thread = -1;  // open(O_WRONLY | O_CREAT) on a thread started before the filter
  int socket_inet = -1;        // socket(AF_INET, SOCK_STREAM)
  int socket_unix = -1;        // socket(AF_UNIX, SOCK_STREAM): e.g. /var/run/docker.sock
  int exec = -1;               // execve("/bin/true")
  int kill_parent = -1;        // kill(getppid(), 0)
  int read_file = -1;          // open(O_RDONLY) + read
  int new_thread = -1;         // std::thread after the filter
  int write_held_fd = -1;      // write() to the pipe it already holds
  int raise_self = -1;         // kill(getpid(), 0)
};

int Errno(int rc) { return rc >= 0 ? 0 : errno; }

// Runs the attempts in a forked child with `options` and returns what each one gave.
Attempts RunConfined(const SandboxOptions& options, const std::string& dir) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    Attempts a;
    // A thread that exists before the filter and tries to write after it (TSYNC).
    std::mutex mu;
    std::condition_variable cv;
    bool go = false;
    std::thread early([&] {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return go; });
      a.write_from_thread =
          Errno(::open((dir + "/from-thread").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    });
    auto report = InstallSandbox(options);
    a.installed = report.ok() ? 0 : 1;
    {
      std::lock_guard<std::mutex> l(mu);
      go = true;
    }
    cv.notify_all();
    early.join();
    a.create_file = Errno(::open((dir + "/created").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    a.open_rdwr = Errno(::openat(AT_FDCWD, (dir + "/existing").c_str(), O_RDWR | O_CLOEXEC));
    a.truncate_file = Errno(::truncate((dir + "/existing").c_str(), 0));
    a.unlink_file = Errno(::unlink((dir + "/existing").c_str()));
    a.socket_inet = Errno(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    a.socket_unix = Errno(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    a.exec = Errno(::execve("/bin/true", argv, ::environ));
    a.kill_parent = Errno(::kill(::getppid(), 0));
    a.raise_self = Errno(::kill(::getpid(), 0));
    const int rfd = ::open((dir + "/existing").c_str(), O_RDONLY | O_CLOEXEC);
    char buf[8];
    a.read_file = rfd >= 0 && ::read(rfd, buf, sizeof buf) > 0 ? 0 : errno;
    std::thread later([&] { a.new_thread = 0; });
    later.join();
    a.write_held_fd = 0;
    if (::write(fds[1], &a, sizeof a) != static_cast<ssize_t>(sizeof a)) ::_exit(3);
    ::_exit(0);
  }
  ::close(fds[1]);
  Attempts a;
  EXPECT_EQ(::read(fds[0], &a, sizeof a), static_cast<ssize_t>(sizeof a));
  ::close(fds[0]);
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  return a;
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-sandbox-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/existing", "a file the model must not change").ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void ExpectNoFileChanges(const Attempts& a) {
    EXPECT_EQ(a.installed, 0);
    EXPECT_EQ(a.create_file, EPERM);
    EXPECT_EQ(a.open_rdwr, EPERM);
    EXPECT_EQ(a.truncate_file, EPERM);
    EXPECT_EQ(a.unlink_file, EPERM);
    EXPECT_EQ(a.write_from_thread, EPERM) << "threads started before the filter must get it too";
    EXPECT_EQ(a.exec, EPERM);
    EXPECT_EQ(a.kill_parent, EPERM);
    EXPECT_FALSE(PathExists(dir_ + "/created"));
    EXPECT_FALSE(PathExists(dir_ + "/from-thread"));
    auto kept = ReadFile(dir_ + "/existing", 1024);
    ASSERT_TRUE(kept.ok());
    EXPECT_EQ(*kept, "a file the model must not change");
    // What the process needs keeps working.
    EXPECT_EQ(a.read_file, 0);
    EXPECT_EQ(a.new_thread, 0);
    EXPECT_EQ(a.write_held_fd, 0);
    EXPECT_EQ(a.raise_self, 0);
  }

  std::string dir_;
};

TEST_F(SandboxTest, EvaluatorFilterForbidsFileWritesNetworkExecAndSignals) {
  SandboxOptions evaluator;
  evaluator.landlock.read_paths = {dir_};  // its test set
  const Attempts a = RunConfined(evaluator, dir_);
  ExpectNoFileChanges(a);
  EXPECT_EQ(a.socket_inet, EPERM);
  EXPECT_EQ(a.socket_unix, EPERM);
}

TEST_F(SandboxTest, WorkerFilterKeepsTheNetworkOnly) {
  SandboxOptions worker;
  worker.allow_network = true;
  worker.landlock.read_paths = {dir_};
  const Attempts a = RunConfined(worker, dir_);
  ExpectNoFileChanges(a);
  EXPECT_EQ(a.socket_inet, 0);
  EXPECT_EQ(a.socket_unix, EPERM) << "a local daemon's socket (docker.sock) is out of reach";
  EXPECT_NE(DescribeSandbox(SandboxOptions{}).find("no network"), std::string::npos);
  EXPECT_EQ(DescribeSandbox(worker).find("no network"), std::string::npos);
}

// Without the filter the same attempts succeed: the test sees the difference it claims.
TEST_F(SandboxTest, WithoutTheFilterTheAttemptsSucceed) {
  const int fd = ::open((dir_ + "/created").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(s, 0);
  if (s >= 0) ::close(s);
  const int u = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(u, 0);
  if (u >= 0) ::close(u);
}

}  // namespace
}  // namespace shoal
