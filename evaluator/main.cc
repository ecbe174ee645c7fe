// shoal-evaluator: the coordinator's LibTorch process (child_process_runtime.h). Started by
// shoal-coordinator with its end of a Unix socket as fd 3; serves the requests of wire.h with
// the local runtime, one at a time, until the coordinator closes the socket (or exits), then
// exits 0.
//
//   shoal-evaluator [--log-level LEVEL] [--read PATH]...
//
// --read: a file or directory (with everything beneath) the process may read its test sets
// from; Landlock refuses every other file but the system paths LibTorch still opens.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "base/log.h"
#include "base/malloc_tuning.h"
#include "base/sandbox.h"
#include "evaluator/local_runtime.h"
#include "evaluator/server.h"

int main(int argc, char** argv) {
  constexpr int kFd = 3;
  shoal::TuneMallocForLargeBuffers();
  shoal::UseOneMallocArena();
  std::string level = "info";
  shoal::SandboxOptions sandbox;
  sandbox.landlock.read_paths = shoal::RuntimeReadPaths();
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--log-level") == 0) level = argv[i + 1];
    if (std::strcmp(argv[i], "--read") == 0) sandbox.landlock.read_paths.push_back(argv[i + 1]);
  }
  // fd 1 would be the coordinator's stdout (its round table): whatever LibTorch prints goes to
  // the log instead.
  ::dup2(2, 1);
  if (::fcntl(kFd, F_GETFD) < 0) {
    std::fprintf(stderr, "shoal-evaluator is started by shoal-coordinator (it expects fd 3)\n");
    return 2;
  }
  if (shoal::Status st = shoal::InitLogging("evaluator", level); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  // This process runs the coordinator's user TorchScript: behind the operator allow-list, it
  // may not write or create files, start programs, touch other processes or use the network
  // (base/sandbox.h), and reads only its test sets (--read) and the system paths LibTorch needs
  // (base/landlock.h). Its socket (fd 3) and stderr are open already. Installed before any
  // LibTorch pool starts (the configure request comes later); OpenBLAS's threads, started before
  // main(), are restricted by InstallLandlock's broadcast.
  auto report = shoal::InstallSandbox(sandbox);
  if (!report.ok()) {
    spdlog::error("cannot sandbox the process that runs user models: {}",
                  report.status().ToString());
    return 2;
  }
  shoal::LogSandbox("evaluator", *report);
  std::unique_ptr<shoal::evaluator::ModelRuntime> runtime = shoal::evaluator::MakeLocalRuntime();
  shoal::evaluator::Server server(kFd, *runtime);
  shoal::Status st = server.Run();
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  return 0;
}
