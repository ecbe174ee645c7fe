// A seccomp filter for the processes that run user-supplied TorchScript (issue #20, item 1,
// defence in depth behind nn/script_check.h's operator allow-list): should a model's code ever
// get past the allow-list, the process it runs in cannot create, modify or remove files, start
// programs, inspect or signal other processes, load kernel code or (unless allowed) open
// network connections.
//
// Once installed (on every thread of the process, and inherited by the threads and children
// it makes later) the filter cannot be removed. A refused system call fails with EPERM (the
// caller sees "Operation not permitted"; LibTorch turns it into an error the evaluation
// reports): it does not kill the process, so a library probing for something optional keeps
// working. Reading files stays possible (the evaluator opens its test set on request, LibTorch
// loads parts of itself lazily); so do the file descriptors the process already holds.
//
// What is refused: open/openat/creat for writing, creating or truncating; openat2 (its flags
// cannot be inspected; glibc falls back to openat); mkdir, rmdir, unlink, rename, link,
// symlink, mknod, chmod, chown, utimes, truncate/ftruncate/fallocate, extended attributes;
// execve/execveat; ptrace, process_vm_readv/writev, kcmp, pidfd_getfd; kill, tgkill and
// rt_(tg)sigqueueinfo aimed at another process, tkill; mount, umount, pivot_root, chroot,
// setns, unshare, bpf, perf_event_open, userfaultfd, keyctl, add_key, request_key, kexec,
// module loading, reboot, swapon/swapoff, acct, name_to_handle_at, open_by_handle_at,
// fanotify_init, io_uring (it would open files behind the filter's back); and, without
// `allow_network`, socket, socketpair, connect, bind, listen, accept, accept4 - with it,
// socket(AF_UNIX) (local daemons' sockets, which Landlock does not restrict by path). System calls
// of another architecture (e.g. x32 or i386 on x86-64) kill the process.
#pragma once

#include <string>

#include "base/landlock.h"
#include "base/status.h"

namespace shoal {

struct SandboxOptions {
  // The worker keeps its connection to the coordinator (ZeroMQ reconnects make new sockets);
  // the evaluator needs no network at all.
  bool allow_network = false;
  // Landlock (base/landlock.h), installed before the seccomp filter: the only files still
  // readable and the only TCP ports still reachable.
  LandlockRules landlock;
  bool use_landlock = true;  // false: the caller installed its Landlock layer itself
  // Where the kernel (or a container's seccomp profile) offers no Landlock or an ABI without
  // TCP rules: false = go on under seccomp alone with a warning naming what is not enforced;
  // true = refuse to start (runtime.require_landlock, shoal-serve --require-landlock).
  bool require_landlock = false;
};

struct SandboxReport {
  std::string seccomp;      // DescribeSandbox()
  LandlockResult landlock;  // what Landlock enforces, or why not
};

// Installs Landlock and then the seccomp filter on every thread of the calling process
// (no_new_privs first, as both require without CAP_SYS_ADMIN). Unavailable when the kernel has
// no seccomp filter support, or no (complete) Landlock while options.require_landlock.
Result<SandboxReport> InstallSandbox(const SandboxOptions& options);

// Logs the report for `who` ("worker=NAME", "evaluator", "serve"): info when everything is
// enforced, a warning naming what is not.
void LogSandbox(const std::string& who, const SandboxReport& report);

// One line for start-up logs: what the filter refuses.
std::string DescribeSandbox(const SandboxOptions& options);

}  // namespace shoal
