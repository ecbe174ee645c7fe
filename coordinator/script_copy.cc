// The run's copy of a TorchScript model (declared in model_ops.h): file handling only, kept out
// of model_ops.cc so that tools reading run directories (shoalctl) do not link LibTorch.
#include "common/file_util.h"
#include "common/sha256.h"
#include "coordinator/model_ops.h"

namespace shoal {

std::string ScriptModelPath(const std::string& run_dir) { return run_dir + "/model/script.pt"; }

Result<std::string> ReadRunScriptModel(const std::string& run_dir, const std::string& sha256_hex) {
  const std::string path = ScriptModelPath(run_dir);
  auto bytes = ReadFile(path, nn::kMaxScriptModelBytes);
  if (!bytes.ok()) {
    if (bytes.status().code() == Code::kNotFound) {
      return NotFound(run_dir + " is a TorchScript run but its model copy " + path + " is missing");
    }
    return bytes.status();
  }
  const std::string have = ToHex(Sha256::Of(bytes->data(), bytes->size()));
  if (have != sha256_hex) {
    return Corrupt(path + " has SHA-256 " + have + ", run.json records " + sha256_hex +
                   " (the run's model copy was modified or replaced)");
  }
  return bytes;
}

}  // namespace shoal
