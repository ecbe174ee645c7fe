// Landlock (Linux >= 5.13; TCP rules from ABI 4, Linux 6.7) for the processes that run
// user-supplied TorchScript (issue #20, item 1): where base/sandbox.h's seccomp filter refuses
// writes, exec and (for the evaluator) sockets whatever the path or port, Landlock narrows what
// is left - which files may still be read and which TCP ports may still be connected to or
// bound. A model escaping the operator allow-list (nn/script_check.h) could otherwise read the
// silo operator's secrets (/etc/shadow-like files, other projects' data, keys) and send them to
// any host.
//
// Landlock applies to the thread that asks for it and to the threads it creates later, not to
// threads that exist already (Linux 6.18 has no flag to synchronize them). OpenBLAS starts its
// pool before main(), LibTorch's pools may exist by the time the sandbox goes on: every other
// thread of the process is made to restrict itself (a real-time signal whose handler calls
// landlock_restrict_self, as glibc does for setuid across threads), the thread list is read again
// until it holds no thread left out, and only then does the calling thread restrict itself. A
// thread that does not take the signal in time (it blocks it) makes the installation fail: the
// process would otherwise run with a hole it does not know about.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal {

struct LandlockRules {
  // Files and directories (with everything beneath) that stay readable; nothing else is. A path
  // that does not exist is skipped (a library directory another distribution does not have).
  std::vector<std::string> read_paths;
  // Directories that may be opened and listed, without reading the files in them (a directory
  // a file is written to atomically is opened to fsync it: shoal-serve's --port-file).
  std::vector<std::string> list_dirs;
  // TCP ports the process may connect to / bind; every other port is refused. Empty = none.
  std::vector<uint16_t> connect_ports;
  std::vector<uint16_t> bind_ports;  // 0 = an ephemeral port the kernel picks
  // false: writes, file creation and removal are left to the seccomp filter installed later
  // (shoal-serve writes its --port-file after this layer); reads, exec and TCP stay limited.
  bool restrict_writes = true;
};

// What was enforced (for the start-up log), or why nothing was.
struct LandlockResult {
  int abi = 0;           // 0 = the kernel (or a container's seccomp profile) has no Landlock
  bool files = false;    // reads limited to read_paths; no writes, exec, removal anywhere
  bool network = false;  // TCP connect/bind limited to the ports (ABI >= 4)
  int threads = 0;       // threads restricted (the caller included)
  std::string missing;   // what is not enforced and why; empty when everything is
  std::string Describe() const;
};

// The Landlock ABI this kernel offers; 0 when it has none or when landlock_create_ruleset is
// refused (ENOSYS, EOPNOTSUPP when built but disabled at boot, EPERM under a container's seccomp
// profile).
int LandlockAbi();

// Restricts every thread of the process to `rules`. Returns the result with abi == 0 (and
// `missing` saying why) when the kernel has no Landlock - the caller decides whether to go on;
// an error when Landlock exists but could not be put on every thread (the process must stop:
// part of it may be restricted, part not).
Result<LandlockResult> InstallLandlock(const LandlockRules& rules);

// The paths a process using LibTorch, OpenBLAS, OpenSSL and glibc may still need to read after
// start-up: shared libraries loaded late (dlopen), the CPU topology (/sys/devices/system/cpu),
// /proc/cpuinfo and /proc/self (maps, status), name resolution files (/etc/hosts, /etc/resolv.conf,
// /etc/nsswitch.conf, /etc/gai.conf), time zones and locales. Not /etc or /home as a whole.
std::vector<std::string> RuntimeReadPaths();

// The TCP port of a ZeroMQ-style address "tcp://HOST:PORT"; InvalidArgument naming the address
// when it has none.
Result<uint16_t> TcpPortOf(const std::string& address);

}  // namespace shoal
