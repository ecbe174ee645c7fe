// Local training and evaluation on a worker's silo, behind a torch-free interface.
//
// Train() starts from the global weights, runs `epochs` epochs of minibatch SGD over the silo's
// training split (reshuffled each epoch from `seed`) and returns local - global. It checks
// `cancel` between batches. One LocalTrainer may be used by one thread at a time.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "data/dataset.h"
#include "model/eval_metrics.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace shoal::worker {

struct TrainSettings {
  int epochs = 1;
  int batch_size = 32;
  double lr = 0.05;
  uint64_t seed = 0;
  double momentum = 0;      // the local SGD's momentum (TrainTask.momentum)
  double weight_decay = 0;  // the local SGD's L2 weight decay (TrainTask.weight_decay)
  // The client algorithm by name (client_algorithm.h) and its parameters.
  std::string client_algorithm = "sgd";
  double proximal_mu = 0;
};

struct TrainProgress {
  int epoch = 0;  // 1-based
  int epochs = 0;
  int64_t samples_done = 0;
  int64_t samples_total = 0;  // epochs * dataset size
  double running_loss = 0;
};

struct TrainOutcome {
  std::vector<float> delta;  // local - global, flat, in spec order
  double mean_loss = 0;      // mean training loss over all batches of all epochs
  double seconds = 0;
  double cpu_seconds = 0;  // CPU time of the training thread (LibTorch's pool threads excluded)
  int64_t samples = 0;     // training samples (n_k in FedAvg)
};

class LocalTrainer {
 public:
  // A built-in model, or a TorchScript model loaded from model.script_bytes (InvalidArgument
  // naming the problem when it does not load or fit input_shape / num_classes).
  static Result<std::unique_ptr<LocalTrainer>> Create(const model::ModelSource& model,
                                                      const std::vector<int64_t>& input_shape,
                                                      int64_t num_classes);
  virtual ~LocalTrainer() = default;
  // `global` is taken by value: its buffer becomes the returned delta, so a round holds one
  // model-sized vector besides the net instead of three (global, local, delta).
  virtual Result<TrainOutcome> Train(model::Weights global, const data::Dataset& data,
                                     const TrainSettings& settings, const std::atomic<bool>& cancel,
                                     const std::function<void(const TrainProgress&)>& progress) = 0;
  virtual Result<model::EvalMetrics> Evaluate(const model::Weights& weights,
                                              const data::Dataset& data) = 0;
  // The model's tensors (names and shapes, in wire order): what a task's weights must match.
  virtual const model::ModelSpec& spec() const = 0;
};

}  // namespace shoal::worker
