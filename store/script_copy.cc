#include "store/script_copy.h"

#include "base/file_util.h"
#include "base/sha256.h"
#include "model/model_source.h"

namespace shoal::store {

std::string ScriptModelPath(const std::string& run_dir) { return run_dir + "/model/script.pt"; }

Result<std::string> ReadRunScriptModel(const std::string& run_dir, const std::string& sha256_hex) {
  const std::string path = ScriptModelPath(run_dir);
  auto bytes = ReadFile(path, model::kMaxScriptModelBytes);
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

}  // namespace shoal::store
