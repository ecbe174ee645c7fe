// shoalctl subcommands that read a run directory offline: `rounds` and `models`.
#pragma once

#include <CLI/CLI.hpp>

namespace shoal::ctl {

void AddRoundsCommand(CLI::App& app);
void AddModelsCommand(CLI::App& app);

}  // namespace shoal::ctl
