// What the coordinator needs from LibTorch, behind a torch-free interface: the initial weights
// of a model, central evaluation, and the run's copy of a user-supplied TorchScript model.
// Two implementations: model_ops.cc runs LibTorch in the calling process (shoal-evaluator,
// tests); model_host.cc, linked by shoal-coordinator, sends the same calls to a shoal-evaluator
// child process.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/eval_metrics.h"
#include "common/nn/model_source.h"
#include "common/status.h"
#include "common/weights.h"

namespace shoal {

// nn::ConfigureTorchRuntime: LibTorch's and OpenBLAS's threads for evaluation, and the BLAS in use.
std::string ConfigureModelRuntime(int threads);
// Start-up is over (no more InitialWeights): the coordinator's out-of-process runtime
// (model_host.h) then keeps its LibTorch process only while a CentralEvaluator uses it. No-op
// in process.
void ReleaseModelRuntime();

// Weights of a freshly initialized built-in model (deterministic in `seed`), or the parameters
// a TorchScript model was saved with (seed unused). InvalidArgument naming the problem when a
// TorchScript model does not load or does not fit input_shape / num_classes.
Result<Weights> InitialWeights(const nn::ModelSource& model,
                               const std::vector<int64_t>& input_shape, int64_t num_classes,
                               uint64_t seed);

// Evaluates versions of one model on a held-out dataset kept in memory.
class CentralEvaluator {
 public:
  // format: idx (path = directory, split = file prefix) or csv (path = file).
  static Result<std::unique_ptr<CentralEvaluator>> Create(
      const nn::ModelSource& model, const std::vector<int64_t>& input_shape, int64_t num_classes,
      const std::string& format, const std::string& path, const std::string& split,
      const std::string& label_column, int64_t limit);
  virtual ~CentralEvaluator() = default;
  virtual Result<EvalMetrics> Evaluate(const Weights& weights) = 0;
  virtual int64_t size() const = 0;
};

// RUN_DIR/model/script.pt: the run's own copy of the TorchScript model named by model.path.
std::string ScriptModelPath(const std::string& run_dir);

// Reads the run's copy (at most nn::kMaxScriptModelBytes) and checks that its SHA-256 is
// `sha256_hex` (as recorded in run.json). NotFound when the copy is missing, Corrupt when it
// differs.
Result<std::string> ReadRunScriptModel(const std::string& run_dir, const std::string& sha256_hex);

}  // namespace shoal
