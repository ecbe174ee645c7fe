// TorchScript export of the built-in models (mlp, cnn, logreg) and of user-supplied TorchScript
// models (ExportScriptModel) from stored Weights.
//
// The exported module mirrors the C++ module of nn/models.cc: one submodule per layer,
// named like the C++ one (conv1, fc1, ...), each holding parameters `weight` and `bias` copied
// bit for bit from the Weights, and a `forward` compiled from TorchScript source that performs
// the same operations. It takes a float32 tensor [N, *input_shape] and returns logits
// [N, num_classes]; it loads with torch.jit.load in Python and torch::jit::load in C++.
//
// This header does not include LibTorch: callers of BuildScriptModule / VerifyScriptModule
// include <torch/script.h> (and nn/models.h for Net) themselves; ExportTorchScript needs
// neither. Building a module calls MakeModel, which reseeds LibTorch's global generator
// (torch::manual_seed(0)); do not export in the middle of seeded training in the same process.
//
// Errors:
//   InvalidArgument unknown model or unusable input shape (as MakeModel), weights whose spec is
//                   not the model's (names the first difference), non-finite weights.
//   Internal        TorchScript compilation, execution or serialization failed, or the exported
//                   module's output differs from the C++ model's by more than kExportTolerance.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/weights.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace shoal::nn {

class Net;

// Largest absolute difference allowed between the exported module's and the C++ model's logits.
inline constexpr double kExportTolerance = 1e-5;

// Builds into *out the TorchScript module of built-in model `name` holding `weights`, after
// checking that weights.spec is exactly the spec of that model.
Status BuildScriptModule(const std::string& name, const std::vector<int64_t>& input_shape,
                         int64_t num_classes, const model::Weights& weights,
                         torch::jit::Module* out);

// Runs `module` and `net` on the same batch of `batch` random samples (uniform in [0, 1), from
// `seed`) and returns the largest absolute difference of their outputs; Internal when it exceeds
// kExportTolerance, when an output is not finite or when the output shapes differ.
Result<double> VerifyScriptModule(torch::jit::Module& module, Net& net,
                                  const std::vector<int64_t>& input_shape, uint64_t seed,
                                  int64_t batch = 16);

struct ExportedModel {
  std::string bytes;          // the TorchScript archive, as torch::jit::Module::save writes it
  double max_abs_diff = 0;    // VerifyScriptModule's result on the module loaded back from bytes
  int64_t check_samples = 0;  // size of the random batch that was compared
};

// Builds the module, serializes it, loads the bytes back and verifies that loaded module
// against the C++ model holding the same weights. Only a verified archive is returned.
Result<ExportedModel> ExportTorchScript(const std::string& name,
                                        const std::vector<int64_t>& input_shape,
                                        int64_t num_classes, const model::Weights& weights);

// The user's TorchScript archive `script_bytes` (the run's model/script.pt) with `weights` set
// into its parameters, in eval mode: same architecture, the federated numbers. The saved bytes
// are loaded back and verified against the in-memory module holding the same weights.
// InvalidArgument when the archive does not load (LoadScriptModel's errors) or the weights do
// not fit its parameters or are not finite.
Result<ExportedModel> ExportScriptModel(const std::string& script_bytes,
                                        const std::vector<int64_t>& input_shape,
                                        int64_t num_classes, const model::Weights& weights);

}  // namespace shoal::nn
