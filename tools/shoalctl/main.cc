// shoalctl: the Shoal admin tool.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "tools/ctl/dp_cmd.h"
#include "tools/ctl/export_cmd.h"
#include "tools/ctl/partition_cmd.h"
#include "tools/ctl/pki_cmds.h"
#include "tools/ctl/run_cmds.h"

namespace {

// `export` needs LibTorch, which shoalctl does not load (it would add a second and 150 MiB to
// every subcommand): the same command line goes to shoal-export, found next to this executable,
// else on PATH. Does not return.
[[noreturn]] void RunExportHelper(int argc, char** argv) {
  auto path = shoal::FindCompanionExecutable("shoal-export");
  if (path.ok()) {
    std::vector<char*> args(argv, argv + argc);
    args[0] = path->data();
    args.push_back(nullptr);
    ::execv(path->c_str(), args.data());
  }
  std::fprintf(stderr,
               "error: shoalctl export runs shoal-export (the LibTorch part of the tools), which "
               "could not be started: %s\n",
               path.ok() ? std::strerror(errno) : path.status().message().c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoalctl: administer Shoal federations and inspect runs"};
  app.require_subcommand(1);
  shoal::AddPartitionCommand(app);
  shoal::ctl::AddRunCommands(app);
  shoal::ctl::AddExportCommand(
      app, [argc, argv](const shoal::ctl::ExportRequest&) { RunExportHelper(argc, argv); });
  shoal::ctl::AddVerifyCommand(app);
  shoal::ctl::AddPkiCommands(app);
  shoal::ctl::AddDpCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage or command error exits 2 (docs/errors.md).
    return app.exit(e) == 0 ? 0 : 2;
  }
  return 0;
}
