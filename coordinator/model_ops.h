// What the coordinator needs from LibTorch, behind a torch-free interface so the round engine
// compiles quickly: the initial weights of a built-in model and central evaluation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/eval_metrics.h"
#include "common/status.h"
#include "common/weights.h"

namespace shoal {

// Weights of a freshly initialized built-in model (deterministic in `seed`).
Result<Weights> InitialWeights(const std::string& model, const std::vector<int64_t>& input_shape,
                               int64_t num_classes, uint64_t seed);

// Evaluates versions of one model on a held-out dataset kept in memory.
class CentralEvaluator {
 public:
  // format: idx (path = directory, split = file prefix) or csv (path = file).
  static Result<std::unique_ptr<CentralEvaluator>> Create(
      const std::string& model, const std::vector<int64_t>& input_shape, int64_t num_classes,
      const std::string& format, const std::string& path, const std::string& split,
      const std::string& label_column, int64_t limit);
  virtual ~CentralEvaluator() = default;
  virtual Result<EvalMetrics> Evaluate(const Weights& weights) = 0;
  virtual int64_t size() const = 0;
};

}  // namespace shoal
