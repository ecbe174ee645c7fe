// The built-in model architectures and the bridge between LibTorch modules and Weights.
//
// Models are C++ torch::nn::Modules, trained at full LibTorch speed. Their parameter names and
// order ("conv1.weight", "conv1.bias", ...) are the ModelSpec that travels on the wire and is
// stored in every version, and match the attribute names of the TorchScript module that export
// builds, so an exported file holds exactly the trained numbers.
//
// Includes LibTorch: include this header only from the few translation units that need it.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "common/dataset.h"
#include "common/eval_metrics.h"
#include "common/status.h"
#include "common/weights.h"

namespace shoal::nn {

// Names accepted by MakeModel.
const std::vector<std::string>& BuiltinModels();

class Net : public torch::nn::Module {
 public:
  // x: [batch, *input_shape] float32; returns logits [batch, num_classes].
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

// Builds `name` (mlp, cnn, logreg) for samples of `input_shape` and `num_classes` classes, with
// parameters initialized from `seed`. InvalidArgument for an unknown name or an input shape the
// architecture cannot take (the cnn needs [C,H,W] with H and W divisible by 4).
Result<std::shared_ptr<Net>> MakeModel(const std::string& name,
                                       const std::vector<int64_t>& input_shape,
                                       int64_t num_classes, uint64_t seed);

ModelSpec SpecOf(Net& net);
Weights GetWeights(Net& net);
// InvalidArgument naming the first difference when w.spec is not the net's spec.
Status SetWeights(Net& net, const Weights& w);

// Small batches are fastest on CPU here: for the cnn, batch 32 ran at ~3,300 samples/s against
// ~1,000 at batch 256 and ~500 at batch 1000 (activations stop fitting in cache).
EvalMetrics Evaluate(Net& net, const Dataset& data, int64_t batch_size = 32);

// A view of the dataset's features as a [N, *sample_shape] tensor (no copy; `data` must outlive it).
torch::Tensor FeaturesTensor(const Dataset& data);
torch::Tensor LabelsTensor(const Dataset& data);

// Which BLAS library LibTorch resolved at run time ("openblas-pthread", "reference", ...) and
// the path it came from, read from /proc/self/maps.
std::string ActiveBlas();

}  // namespace shoal::nn
