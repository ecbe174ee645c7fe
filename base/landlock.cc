#include "base/landlock.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>
#include <utility>

namespace shoal {
namespace {

// Debian 12's linux-libc-dev (6.1) stops at ABI 2; the later UAPI, fixed by the kernel, here.
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif
constexpr uint64_t kNetBindTcp = 1ULL << 0;         // LANDLOCK_ACCESS_NET_BIND_TCP (ABI 4)
constexpr uint64_t kNetConnectTcp = 1ULL << 1;      // LANDLOCK_ACCESS_NET_CONNECT_TCP (ABI 4)
constexpr int kRuleNetPort = 2;                     // LANDLOCK_RULE_NET_PORT (ABI 4)
constexpr uint64_t kScopeAbstractUnix = 1ULL << 0;  // LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (ABI 6)
constexpr uint64_t kScopeSignal = 1ULL << 1;        // LANDLOCK_SCOPE_SIGNAL (ABI 6)

// struct landlock_ruleset_attr as of ABI 6; the kernel takes a prefix of it by size.
struct RulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};
struct NetPortAttr {  // struct landlock_net_port_attr
  uint64_t allowed_access;
  uint64_t port;
};

constexpr uint64_t kRead = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;

Status SysError(const std::string& what) {
  return Internal("Landlock: " + what + ": " + std::strerror(errno));
}

// Every filesystem right the ABI knows (all refused unless a rule grants one).
uint64_t FsRights(int abi) {
  uint64_t r = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0..12
  if (abi >= 2) r |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) r |= LANDLOCK_ACCESS_FS_TRUNCATE;
  if (abi >= 5) r |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
  return r;
}

// The signal every other thread restricts itself on. Real-time: never sent by anyone else here,
// queued rather than merged.
int BroadcastSignal() { return SIGRTMIN + 4; }

// Shared with the signal handler (async-signal-safe: atomics and raw system calls only).
constexpr int kMaxThreads = 4096;
std::atomic<int> g_ruleset_fd{-1};
std::atomic<pid_t> g_done_tids[kMaxThreads];
std::atomic<int> g_done_count{0};
std::atomic<int> g_error{0};

void RestrictThisThread(int) {
  const int saved = errno;
  long rc = ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (rc == 0) rc = ::syscall(SYS_landlock_restrict_self, g_ruleset_fd.load(), 0U);
  if (rc != 0) g_error.store(errno);
  const int slot = g_done_count.fetch_add(1);
  if (slot < kMaxThreads) g_done_tids[slot].store(static_cast<pid_t>(::syscall(SYS_gettid)));
  errno = saved;
}

std::set<pid_t> Tasks() {
  std::set<pid_t> tids;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return tids;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') tids.insert(std::atoi(e->d_name));
  }
  ::closedir(d);
  return tids;
}

std::set<pid_t> Restricted() {
  std::set<pid_t> done;
  const int n = std::min(g_done_count.load(), kMaxThreads);
  for (int i = 0; i < n; ++i) {
    if (pid_t t = g_done_tids[i].load(); t != 0) done.insert(t);
  }
  return done;
}

// Makes every thread but the caller restrict itself with the ruleset in g_ruleset_fd.
Status RestrictOtherThreads(pid_t self, int* restricted) {
  struct sigaction sa = {}, old = {};
  sa.sa_handler = RestrictThisThread;
  sa.sa_flags = SA_RESTART;
  sigfillset(&sa.sa_mask);
  if (::sigaction(BroadcastSignal(), &sa, &old) != 0) return SysError("sigaction");
  const pid_t pid = ::getpid();
  std::set<pid_t> signalled;
  Status st;
  // Threads may start threads while this runs: read the list again until it brings no one new.
  // A thread started by a restricted thread is restricted by birth.
  for (int pass = 0; pass < 64 && st.ok(); ++pass) {
    std::set<pid_t> fresh;
    for (pid_t t : Tasks()) {
      if (t != self && !signalled.count(t)) fresh.insert(t);
    }
    if (fresh.empty()) break;
    for (pid_t t : fresh) {
      signalled.insert(t);
      // ESRCH: it ended in the meantime (it will be gone from the next list).
      if (::syscall(SYS_tgkill, pid, t, BroadcastSignal()) != 0 && errno != ESRCH) {
        st = SysError("signalling thread " + std::to_string(t));
      }
    }
    // Every signalled thread that still exists must have answered.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      const std::set<pid_t> live = Tasks(), done = Restricted();
      pid_t waiting = 0;
      for (pid_t t : signalled) {
        if (live.count(t) && !done.count(t)) waiting = t;
      }
      if (waiting == 0) break;
      if (std::chrono::steady_clock::now() > deadline) {
        st = Internal("Landlock: thread " + std::to_string(waiting) +
                      " did not restrict itself within 5 s (it blocks signal SIGRTMIN+4?)");
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ::sigaction(BroadcastSignal(), &old, nullptr);
  if (st.ok() && g_error.load() != 0) {
    st = Internal(std::string("Landlock on another thread: ") + std::strerror(g_error.load()));
  }
  *restricted = static_cast<int>(Restricted().size());
  return st;
}

}  // namespace

std::string LandlockResult::Describe() const {
  if (abi == 0) return "Landlock: not enforced (" + missing + ")";
  std::string s =
      "Landlock ABI " + std::to_string(abi) + " on " + std::to_string(threads) + " threads:";
  s += files ? " reads only under the allowed paths" : "";
  s += network ? ", TCP only to the allowed ports" : "";
  if (!missing.empty()) s += "; NOT enforced: " + missing;
  return s;
}

int LandlockAbi() {
  const long abi =
      ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

Result<LandlockResult> InstallLandlock(const LandlockRules& rules) {
  LandlockResult out;
  const long abi =
      ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    const int e = errno;
    out.missing = std::string("the kernel offers no Landlock: ") + std::strerror(e) +
                  (e == EPERM ? " - a container's seccomp profile refuses it" : "") +
                  "; reads and TCP ports are not limited";
    return out;
  }
  out.abi = static_cast<int>(abi);
  RulesetAttr attr = {};
  attr.handled_access_fs =
      rules.restrict_writes ? FsRights(out.abi) : (kRead | LANDLOCK_ACCESS_FS_EXECUTE);
  size_t attr_size = sizeof(uint64_t);
  if (out.abi >= 4) {
    attr.handled_access_net = kNetBindTcp | kNetConnectTcp;
    attr_size = 2 * sizeof(uint64_t);
  } else {
    out.missing = "TCP ports (Landlock ABI " + std::to_string(out.abi) + " < 4)";
  }
  if (out.abi >= 6) {
    // No signals to processes outside the domain, no abstract Unix sockets out of it.
    attr.scoped = kScopeAbstractUnix | kScopeSignal;
    attr_size = sizeof attr;
  }
  const int fd = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0U));
  if (fd < 0) return SysError("landlock_create_ruleset");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  std::vector<std::pair<std::string, bool>> paths;  // (path, list only)
  for (const std::string& p : rules.read_paths) paths.emplace_back(p, false);
  for (const std::string& p : rules.list_dirs) paths.emplace_back(p, true);
  for (const auto& [path, list_only] : paths) {
    const int pfd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (pfd < 0) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      return SysError("opening " + path + " for a rule");
    }
    struct stat sb;
    const bool dir = ::fstat(pfd, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (list_only && !dir) {
      ::close(pfd);
      continue;
    }
    landlock_path_beneath_attr pb = {};
    const uint64_t access = list_only ? LANDLOCK_ACCESS_FS_READ_DIR
                            : dir     ? kRead
                                      : LANDLOCK_ACCESS_FS_READ_FILE;
    pb.allowed_access = access & attr.handled_access_fs;
    pb.parent_fd = pfd;
    const long rc = ::syscall(SYS_landlock_add_rule, fd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0U);
    const int e = errno;
    ::close(pfd);
    if (rc != 0) {
      return Internal("Landlock rule for " + path + ": " + std::strerror(e));
    }
  }
  if (out.abi >= 4) {
    auto add_port = [&](uint16_t port, uint64_t access) -> Status {
      NetPortAttr np = {access, port};
      if (::syscall(SYS_landlock_add_rule, fd, kRuleNetPort, &np, 0U) != 0) {
        return Internal("Landlock rule for TCP port " + std::to_string(port) + ": " +
                        std::strerror(errno));
      }
      return Status::Ok();
    };
    for (uint16_t p : rules.connect_ports) SHOAL_RETURN_IF_ERROR(add_port(p, kNetConnectTcp));
    for (uint16_t p : rules.bind_ports) SHOAL_RETURN_IF_ERROR(add_port(p, kNetBindTcp));
  }
  // landlock_restrict_self needs no_new_privs on each thread (or CAP_SYS_ADMIN).
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return SysError("no_new_privs");
  g_ruleset_fd.store(fd);
  g_done_count.store(0);
  g_error.store(0);
  for (auto& t : g_done_tids) t.store(0);
  const pid_t self = static_cast<pid_t>(::syscall(SYS_gettid));
  int others = 0;
  SHOAL_RETURN_IF_ERROR(RestrictOtherThreads(self, &others));
  if (::syscall(SYS_landlock_restrict_self, fd, 0U) != 0) {
    return SysError("landlock_restrict_self");
  }
  out.threads = others + 1;
  out.files = true;
  out.network = out.abi >= 4;
  return out;
}

std::vector<std::string> RuntimeReadPaths() {
  return {"/usr/lib",        "/usr/lib64",       "/lib",
          "/lib64",          "/usr/local/lib",   "/usr/share/zoneinfo",
          "/usr/lib/locale", "/etc/ld.so.cache", "/etc/localtime",
          "/etc/hosts",      "/etc/resolv.conf", "/etc/nsswitch.conf",
          "/etc/gai.conf",   "/etc/host.conf",   "/etc/services",
          "/etc/protocols",  "/proc/self",       "/proc/cpuinfo",
          "/dev/urandom",    "/dev/null",        "/sys/devices/system/cpu",
          "/sys/fs/cgroup"};
}

Result<uint16_t> TcpPortOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (address.rfind("tcp://", 0) != 0 || colon == std::string::npos || colon < 6) {
    return InvalidArgument("'" + address + "' is not tcp://HOST:PORT");
  }
  const std::string digits = address.substr(colon + 1);
  if (digits.empty() || digits.size() > 5 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument("'" + address + "' has no TCP port");
  }
  const int port = std::stoi(digits);
  if (port < 1 || port > 65535) return InvalidArgument("'" + address + "': port out of range");
  return static_cast<uint16_t>(port);
}

}  // namespace shoal
