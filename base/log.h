// Logging set-up. Every component logs through spdlog with one pattern; lines about a round
// carry `round=` and `worker=` fields so they can be grepped and parsed.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "base/status.h"

namespace shoal {

// Installs the default logger for a process: stderr, "<time> <level> <component> message".
// `level` is one of trace, debug, info, warn, error. Returns InvalidArgument for an unknown level.
Status InitLogging(const std::string& component, const std::string& level = "info");

}  // namespace shoal
