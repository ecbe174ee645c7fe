// shoalctl: the Shoal admin tool.
#include <CLI/CLI.hpp>

#include "tools/ctl/export_cmd.h"
#include "tools/ctl/partition_cmd.h"
#include "tools/ctl/pki_cmds.h"
#include "tools/ctl/run_cmds.h"

int main(int argc, char** argv) {
  CLI::App app{"shoalctl: administer Shoal federations and inspect runs"};
  app.require_subcommand(1);
  shoal::AddPartitionCommand(app);
  shoal::ctl::AddRunCommands(app);
  shoal::ctl::AddExportCommand(app);
  shoal::ctl::AddVerifyCommand(app);
  shoal::ctl::AddPkiCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage or command error exits 2 (docs/errors.md).
    return app.exit(e) == 0 ? 0 : 2;
  }
  return 0;
}
