// What the coordinator needs from LibTorch, behind a torch-free interface: the initial weights
// of a model, central evaluation, and the run's copy of a user-supplied TorchScript model.
// Two implementations: model_ops.cc runs LibTorch in the calling process (shoal-evaluator,
// tests); model_host.cc, linked by shoal-coordinator, sends the same calls to a shoal-evaluator
// child process.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/eval_metrics.h"
#include "model/model_source.h"
#include "base/status.h"
#include "model/weights.h"

namespace shoal::evaluator {

// nn::ConfigureTorchRuntime: LibTorch's and OpenBLAS's threads for evaluation, and the BLAS in use.
std::string ConfigureModelRuntime(int threads);
// Start-up is over (no more InitialWeights): the coordinator's out-of-process runtime
// (model_host.h) then keeps its LibTorch process only while a CentralEvaluator uses it. No-op
// in process.
void ReleaseModelRuntime();

// Weights of a freshly initialized built-in model (deterministic in `seed`), or the parameters
// a TorchScript model was saved with (seed unused). InvalidArgument naming the problem when a
// TorchScript model does not load or does not fit input_shape / num_classes.
Result<model::Weights> InitialWeights(const model::ModelSource& model,
                               const std::vector<int64_t>& input_shape, int64_t num_classes,
                               uint64_t seed);

// Evaluates versions of one model on a held-out dataset kept in memory.
class CentralEvaluator {
 public:
  // format: idx (path = directory, split = file prefix) or csv (path = file).
  static Result<std::unique_ptr<CentralEvaluator>> Create(
      const model::ModelSource& model, const std::vector<int64_t>& input_shape, int64_t num_classes,
      const std::string& format, const std::string& path, const std::string& split,
      const std::string& label_column, int64_t limit);
  virtual ~CentralEvaluator() = default;
  virtual Result<model::EvalMetrics> Evaluate(const model::Weights& weights) = 0;
  virtual int64_t size() const = 0;
};

}  // namespace shoal::evaluator
