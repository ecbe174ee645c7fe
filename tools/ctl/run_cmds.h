// shoalctl subcommands that inspect a run: `status`, `rounds`, `workers`, `models`.
// Each reads either a running coordinator's HTTP API (--url, --token) or a run directory offline.
#pragma once

#include <CLI/CLI.hpp>

namespace shoal::ctl {

void AddRunCommands(CLI::App& app);

}  // namespace shoal::ctl
