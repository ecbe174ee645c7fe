// shoalctl: the Shoal admin tool.
#include <CLI/CLI.hpp>

#include "tools/ctl/partition_cmd.h"
#include "tools/ctl/run_cmds.h"

int main(int argc, char** argv) {
  CLI::App app{"shoalctl: administer Shoal federations and inspect runs"};
  app.require_subcommand(1);
  shoal::AddPartitionCommand(app);
  shoal::ctl::AddRunCommands(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
