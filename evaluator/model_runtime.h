// What the coordinator needs from LibTorch, behind a torch-free interface: the initial weights
// of a model and central evaluation. The coordinator's round engine receives a ModelRuntime and
// never knows which implementation it holds:
//   - MakeLocalRuntime (local_runtime.h): LibTorch in the calling process (shoal-evaluator
//     itself, tests);
//   - MakeChildProcessRuntime (child_process_runtime.h): the same calls sent to a
//     shoal-evaluator child process, so that shoal-coordinator never loads LibTorch.
// Both give the same results for the same calls (tests/evaluator/runtime_parity_test.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "data/dataset.h"
#include "model/eval_metrics.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace shoal::evaluator {

// The held-out dataset of a central evaluation (config keys eval.*).
using EvalData = data::DataSource;

// Evaluates versions of one model on a held-out dataset kept in memory.
class CentralEvaluator {
 public:
  virtual ~CentralEvaluator() = default;
  virtual Result<model::EvalMetrics> Evaluate(const model::Weights& weights) = 0;
  // Samples in the dataset.
  virtual int64_t size() const = 0;
};

class ModelRuntime {
 public:
  virtual ~ModelRuntime() = default;

  // LibTorch's and OpenBLAS's threads for evaluation (nn::ConfigureTorchRuntime); returns a
  // description of the runtime for the log (the BLAS in use, "blas=..."; where it runs). Called
  // first, once.
  virtual std::string Configure(int threads) = 0;

  // Weights of a freshly initialized built-in model (deterministic in `seed`), or the parameters
  // a TorchScript model was saved with (seed unused). InvalidArgument naming the problem when a
  // TorchScript model does not load or does not fit input_shape / num_classes.
  virtual Result<model::Weights> InitialWeights(const model::ModelSource& model,
                                                const std::vector<int64_t>& input_shape,
                                                int64_t num_classes, uint64_t seed) = 0;

  // Loads `data` and the model for evaluating versions of it. InvalidArgument when the samples
  // do not fit input_shape or hold a label >= num_classes; the loader's error when the data
  // cannot be read. The evaluator may outlive this runtime.
  virtual Result<std::unique_ptr<CentralEvaluator>> OpenEvaluator(
      const model::ModelSource& model, const std::vector<int64_t>& input_shape, int64_t num_classes,
      const EvalData& data) = 0;

  // Start-up is over (no more InitialWeights): what start-up alone needed may go. The child
  // process then lives only while a CentralEvaluator uses it; a later call starts a new one.
  // No-op in process.
  virtual void Release() = 0;
};

}  // namespace shoal::evaluator
