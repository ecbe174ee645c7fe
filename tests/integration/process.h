// Test helper: child processes started with fork/exec, output to a log file, always reaped.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace shoal::testing {

inline std::string BinDir() {
  const char* d = std::getenv("SHOAL_BIN_DIR");
  return d ? d : "build/bin";
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A test-wide rewrite applied to every command line before it runs (e.g. adding the
// credentials of a test federation; see test_pki.h). Empty = none.
inline std::function<std::vector<std::string>(std::vector<std::string>)>& ArgvHook() {
  static std::function<std::vector<std::string>(std::vector<std::string>)> hook;
  return hook;
}

class Process {
 public:
  // `env` entries ("NAME=value") are added to the child's environment.
  Process(const std::vector<std::string>& command, const std::string& log_path,
          const std::vector<std::string>& env = {})
      : log_(log_path) {
    const std::vector<std::string> argv = ArgvHook() ? ArgvHook()(command) : command;
    pid_ = ::fork();
    if (pid_ == 0) {
      for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Process() { Kill(SIGKILL); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Exit code, or nullopt if still running after `timeout`. -signal when killed by a signal.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    if (done_) return code_;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        done_ = true;
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        return code_;
      }
      if (std::chrono::steady_clock::now() >= until) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  void Kill(int sig) {
    if (pid_ > 0 && !done_) {
      ::kill(pid_, sig);
      Wait(std::chrono::seconds(10));
    }
  }
  std::string Log() const { return ReadText(log_); }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  bool done_ = false;
  int code_ = 0;
  std::string log_;
};

// Polls until `path` exists with content, up to `timeout`. Returns the content ("" on timeout).
inline std::string WaitForFile(const std::string& path, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    std::string s = ReadText(path);
    if (!s.empty() && s.back() == '\n') {
      s.pop_back();
      return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return "";
}

}  // namespace shoal::testing
