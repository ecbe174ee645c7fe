// The run's own copy of a user-supplied TorchScript model (model.name = torchscript): file
// handling only, so that tools reading run directories do not link LibTorch.
#pragma once

#include <string>

#include "base/status.h"

namespace shoal::store {

// RUN_DIR/model/script.pt: the run's own copy of the TorchScript model named by model.path.
std::string ScriptModelPath(const std::string& run_dir);

// Reads the run's copy (at most model::kMaxScriptModelBytes) and checks that its SHA-256 is
// `sha256_hex` (as recorded in run.json). NotFound when the copy is missing, Corrupt when it
// differs.
Result<std::string> ReadRunScriptModel(const std::string& run_dir, const std::string& sha256_hex);

}  // namespace shoal::store
