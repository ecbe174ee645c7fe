// What a federation trains: a built-in model by name, or a user-supplied TorchScript archive
// (model.name = "torchscript"). Torch-free, so the round engine, the worker's client loop and
// shoalctl can pass it around without including LibTorch.
#pragma once

#include <cstdint>
#include <string>

namespace shoal::model {

// model.name of a user-supplied TorchScript model.
inline constexpr const char* kTorchScriptModel = "torchscript";

// Largest TorchScript archive a coordinator reads and a worker accepts (checked before reading
// or allocating).
inline constexpr uint64_t kMaxScriptModelBytes = uint64_t{256} << 20;

struct ModelSource {
  std::string name;          // mlp | cnn | logreg | torchscript
  std::string script_bytes;  // the TorchScript archive when name == kTorchScriptModel, else ""

  bool is_script() const { return name == kTorchScriptModel; }
};

}  // namespace shoal::model
