// shoal-export: the process behind `shoalctl export`. It is the only admin tool that needs
// LibTorch (building and checking the TorchScript module), and loading LibTorch costs about a
// second and 150 MiB, so shoalctl runs this executable for `export` instead of linking it.
// Same command line as shoalctl: `shoal-export export RUN_DIR --out model.pt [...]`.
#include <CLI/CLI.hpp>

#include "nn/export.h"
#include "tools/ctl/export_cmd.h"

int main(int argc, char** argv) {
  CLI::App app{
      "shoal-export: export a stored Shoal version as TorchScript (run by shoalctl export)"};
  app.require_subcommand(1);
  const shoal::ctl::ModelExporter exporter{shoal::nn::ExportTorchScript,
                                           shoal::nn::ExportScriptModel};
  shoal::ctl::AddExportCommand(
      app, [&exporter](const shoal::ctl::ExportRequest& r) { shoal::ctl::RunExport(r, exporter); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return 0;
}
