// The built-in model architectures and the bridge between LibTorch modules and Weights.
//
// Models are C++ torch::nn::Modules, trained at full LibTorch speed. Their parameter names and
// order ("conv1.weight", "conv1.bias", ...) are the ModelSpec that travels on the wire and is
// stored in every version, and match the attribute names of the TorchScript module that export
// builds, so an exported file holds exactly the trained numbers.
//
// A user-supplied TorchScript model (model.name = "torchscript") is a ScriptNet: the loaded
// torch::jit::Module runs forward, and its parameters, in the module's own order and names, are
// the ModelSpec.
//
// Includes LibTorch: include this header only from the few translation units that need it.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "data/dataset.h"
#include "model/eval_metrics.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace shoal::nn {

class LayerTape;  // nn/per_example.h

// Names accepted by MakeModel.
const std::vector<std::string>& BuiltinModels();

class Net : public torch::nn::Module {
 public:
  // x: [batch, *input_shape] float32; returns logits [batch, num_classes].
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // forward that runs each Linear and Conv2d layer through `tape` (when not null) so that
  // per-example gradients can be computed (nn/per_example.h). The built-in nets do; the default
  // ignores the tape, and DP-SGD then refuses the net, naming a parameter it did not see.
  virtual torch::Tensor TapedForward(torch::Tensor x, LayerTape* /*tape*/) { return forward(x); }
  // The trained tensors with their names, in ModelSpec order (what SpecOf, GetWeights,
  // SetWeights and the trainer's optimizer use). Built-in models: named_parameters().
  virtual std::vector<std::pair<std::string, torch::Tensor>> NamedParameters();
};

// A TorchScript module as a Net. forward and train/eval go to the module; its parameters
// (module.named_parameters(/*recurse=*/true)) are the weights. Made by LoadScriptModel.
class ScriptNet : public Net {
 public:
  explicit ScriptNet(torch::jit::Module module) : module_(std::move(module)) {}
  torch::Tensor forward(torch::Tensor x) override;
  void train(bool on = true) override;
  std::vector<std::pair<std::string, torch::Tensor>> NamedParameters() override;
  torch::jit::Module& module() { return module_; }

 private:
  torch::jit::Module module_;
};

// Loads a TorchScript archive (the bytes torch.jit.save writes) as a ScriptNet in training mode,
// keeping the archive's parameter values. InvalidArgument naming the problem when the bytes are
// not a TorchScript archive, the module has no forward, has buffers (only parameters are
// federated: e.g. BatchNorm's running statistics are not supported), has no parameters, has a
// parameter that is not a finite float32 CPU tensor, or when forward on a batch of 2 zero
// samples of `input_shape` fails or does not return a float32 tensor [2, num_classes].
Result<std::shared_ptr<Net>> LoadScriptModel(const std::string& bytes,
                                             const std::vector<int64_t>& input_shape,
                                             int64_t num_classes);

// Builds `name` (mlp, cnn, logreg) for samples of `input_shape` and `num_classes` classes, with
// parameters initialized from `seed`. InvalidArgument for an unknown name or an input shape the
// architecture cannot take (the cnn needs [C,H,W] with H and W divisible by 4).
Result<std::shared_ptr<Net>> MakeModel(const std::string& name,
                                       const std::vector<int64_t>& input_shape, int64_t num_classes,
                                       uint64_t seed);

// MakeModel for a built-in source; LoadScriptModel (seed unused) for a TorchScript source.
Result<std::shared_ptr<Net>> MakeModel(const model::ModelSource& source,
                                       const std::vector<int64_t>& input_shape, int64_t num_classes,
                                       uint64_t seed);

model::ModelSpec SpecOf(Net& net);
model::Weights GetWeights(Net& net);
// global -> local - global, in place: `global` holds the weights training started from (the
// net's spec order and size, as SetWeights checked) and ends as the update.
void SubtractFromLocal(Net& net, std::vector<float>& global);
// InvalidArgument naming the first difference when w.spec is not the net's spec.
Status SetWeights(Net& net, const model::Weights& w);

// Small batches are fastest on CPU here: for the cnn, batch 32 ran at ~3,300 samples/s against
// ~1,000 at batch 256 and ~500 at batch 1000 (activations stop fitting in cache).
model::EvalMetrics Evaluate(Net& net, const data::Dataset& data, int64_t batch_size = 32);

// A view of the dataset's samples as a [N, *sample_shape] tensor (no copy; `data` must outlive
// it): uint8 for images, float32 for CSV rows. Rows taken from it go through ModelInput. Not
// for a packed dataset (Dataset::PackImages): use SelectRows / SliceRows.
torch::Tensor FeaturesTensor(const data::Dataset& data);
// Rows `idx` (int64) of the dataset's samples, [B, *sample_shape], copied (packed rows are
// unpacked); rows [start, end) (a view unless the dataset is packed). For ModelInput.
torch::Tensor SelectRows(const data::Dataset& data, const torch::Tensor& idx);
torch::Tensor SliceRows(const data::Dataset& data, int64_t start, int64_t end);
// What the model is fed for rows of FeaturesTensor: uint8 pixels become float32 x / 255 (the
// same values as static_cast<float>(x) / 255.0f); float rows are returned as they are.
torch::Tensor ModelInput(const torch::Tensor& rows);
torch::Tensor LabelsTensor(const data::Dataset& data);

// Which BLAS library LibTorch resolved at run time ("openblas-pthread", "reference", ...) and
// the path it came from, read from /proc/self/maps.
std::string ActiveBlas();

}  // namespace shoal::nn
