#include "base/sandbox.h"

#include <fcntl.h>
#include <seccomp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <memory>

namespace shoal {
namespace {

// System calls refused whatever their arguments.
constexpr const char* kFileChanges[] = {"creat",
                                        "openat2",
                                        "mkdir",
                                        "mkdirat",
                                        "rmdir",
                                        "unlink",
                                        "unlinkat",
                                        "rename",
                                        "renameat",
                                        "renameat2",
                                        "link",
                                        "linkat",
                                        "symlink",
                                        "symlinkat",
                                        "mknod",
                                        "mknodat",
                                        "chmod",
                                        "fchmod",
                                        "fchmodat",
                                        "chown",
                                        "fchown",
                                        "fchownat",
                                        "lchown",
                                        "utime",
                                        "utimes",
                                        "utimensat",
                                        "futimesat",
                                        "truncate",
                                        "ftruncate",
                                        "fallocate",
                                        "setxattr",
                                        "lsetxattr",
                                        "fsetxattr",
                                        "removexattr",
                                        "lremovexattr",
                                        "fremovexattr",
                                        "name_to_handle_at",
                                        "open_by_handle_at",
                                        "fanotify_init",
                                        "io_uring_setup",
                                        "io_uring_enter",
                                        "io_uring_register"};
constexpr const char* kProcessControl[] = {"execve",
                                           "execveat",
                                           "ptrace",
                                           "process_vm_readv",
                                           "process_vm_writev",
                                           "kcmp",
                                           "pidfd_getfd",
                                           "pidfd_send_signal",
                                           "tkill",
                                           "mount",
                                           "umount2",
                                           "pivot_root",
                                           "chroot",
                                           "setns",
                                           "unshare",
                                           "bpf",
                                           "perf_event_open",
                                           "userfaultfd",
                                           "keyctl",
                                           "add_key",
                                           "request_key",
                                           "kexec_load",
                                           "kexec_file_load",
                                           "init_module",
                                           "finit_module",
                                           "delete_module",
                                           "reboot",
                                           "swapon",
                                           "swapoff",
                                           "acct",
                                           "sethostname",
                                           "setdomainname",
                                           "iopl",
                                           "ioperm",
                                           "quotactl"};
constexpr const char* kNetwork[] = {"socket", "socketpair", "connect", "bind",
                                    "listen", "accept",     "accept4"};

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

class Filter {
 public:
  Filter() : ctx_(seccomp_init(SCMP_ACT_ALLOW)) {}
  bool ok() const { return ctx_ != nullptr && error_.ok(); }
  const Status& error() const { return error_; }
  scmp_filter_ctx get() { return ctx_.get(); }

  // Refuses `name` (with EPERM) when all of `args` hold; a system call this architecture does
  // not have is skipped.
  void Refuse(const char* name, std::initializer_list<scmp_arg_cmp> args = {}) {
    if (!error_.ok()) return;
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return;
    const int rc = seccomp_rule_add_array(ctx_.get(), SCMP_ACT_ERRNO(EPERM), nr,
                                          static_cast<unsigned>(args.size()), args.begin());
    if (rc != 0) {
      error_ = Internal(std::string("seccomp rule for ") + name + ": " + std::strerror(-rc));
    }
  }

 private:
  std::unique_ptr<void, CtxDeleter> ctx_;
  Status error_;
};

}  // namespace

Result<SandboxReport> InstallSandbox(const SandboxOptions& options) {
  SandboxReport report;
  report.seccomp = DescribeSandbox(options);
  // Landlock first: its threads broadcast uses tgkill and its rules need open(O_PATH).
  if (options.use_landlock) {
    SHOAL_ASSIGN_OR_RETURN(report.landlock, InstallLandlock(options.landlock));
  }
  if (options.use_landlock && options.require_landlock && !report.landlock.missing.empty()) {
    return Unavailable(report.landlock.Describe() +
                       " (required by runtime.require_landlock / --require-landlock)");
  }
  Filter f;
  if (f.get() == nullptr) return Unavailable("seccomp_init failed");
  // Another architecture's system calls (x32, i386) would get past rules written for this one.
  if (int rc = seccomp_attr_set(f.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); rc != 0) {
    return Internal(std::string("seccomp bad-architecture action: ") + std::strerror(-rc));
  }
  // Every thread (ZeroMQ's, LibTorch's pools) gets the filter, not only the caller.
  if (int rc = seccomp_attr_set(f.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    return Internal(std::string("seccomp thread synchronization: ") + std::strerror(-rc));
  }
  // Opening for writing, creating or truncating. The flags are a 32-bit int.
  for (int flag : {O_WRONLY, O_RDWR, O_CREAT, O_TRUNC}) {
    const auto bits = static_cast<scmp_datum_t>(flag);
    f.Refuse("open", {SCMP_A1_32(SCMP_CMP_MASKED_EQ, bits, bits)});
    f.Refuse("openat", {SCMP_A2_32(SCMP_CMP_MASKED_EQ, bits, bits)});
  }
  for (const char* name : kFileChanges) f.Refuse(name);
  for (const char* name : kProcessControl) f.Refuse(name);
  // Signals only to this process (raise() is tgkill(own pid, ...)); kill(0, ...) and negative
  // pids reach the process group, the coordinator included.
  const auto self = static_cast<scmp_datum_t>(::getpid());
  for (const char* name : {"kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"}) {
    f.Refuse(name, {SCMP_A0_32(SCMP_CMP_NE, self)});
  }
  if (!options.allow_network) {
    for (const char* name : kNetwork) f.Refuse(name);
  } else {
    // TCP only: no Unix domain socket, which Landlock (ABI <= 7) does not restrict by path -
    // a model could otherwise talk to /var/run/docker.sock or another local daemon. (glibc's
    // nscd lookup falls back to the files when its socket is refused; ZeroMQ signals with
    // eventfd; socketpair stays, it reaches nothing outside.)
    f.Refuse("socket", {SCMP_A0_32(SCMP_CMP_EQ, static_cast<scmp_datum_t>(AF_UNIX))});
  }
  if (!f.ok()) return f.error();
  // seccomp_load sets no_new_privs itself (SCMP_FLTATR_CTL_NNP defaults to on).
  if (int rc = seccomp_load(f.get()); rc != 0) {
    return Unavailable(std::string("loading the seccomp filter: ") + std::strerror(-rc));
  }
  return report;
}

void LogSandbox(const std::string& who, const SandboxReport& report) {
  if (report.landlock.abi == 0 && report.landlock.missing.empty()) {  // not asked for
    spdlog::info("{} sandbox active ({})", who, report.seccomp);
    return;
  }
  spdlog::info("{} sandbox active ({}; {})", who, report.seccomp, report.landlock.Describe());
  if (!report.landlock.missing.empty()) {
    spdlog::warn("{} sandbox incomplete: {}", who, report.landlock.Describe());
  }
}

std::string DescribeSandbox(const SandboxOptions& options) {
  return std::string(
             "seccomp: no file creation or writes, no exec, no ptrace, no signals to "
             "other processes") +
         (options.allow_network ? ", no Unix domain sockets" : ", no network");
}

}  // namespace shoal
