// Local training and evaluation on a worker's silo, behind a torch-free interface.
//
// Train() starts from the global weights, runs `epochs` epochs of minibatch SGD over the silo's
// training split (reshuffled each epoch from `seed`) and returns local - global. It checks
// `cancel` between batches. One LocalTrainer may be used by one thread at a time.
//
// With settings.dp.mode = sample it runs DP-SGD instead (nn/per_example.h): settings.dp.steps
// steps, each on a Poisson batch (every training record independently with probability q),
// per-example gradients clipped to C, N(0, (sigma C)^2) noise added to their sum, divided by
// the expected batch size q n, then one SGD step at train.lr. The batches and the noise come from
// one generator seeded with settings.noise_seed.
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
#include "privacy/dp_params.h"

namespace shoal::worker {

struct TrainSettings {
  int epochs = 1;
  int batch_size = 32;
  double lr = 0.05;
  uint64_t seed = 0;
  privacy::DpParams dp;     // mode none: minibatch SGD over shuffled epochs
  uint64_t noise_seed = 0;  // DP-SGD: the seed of its Poisson sampling and noise
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
  double cpu_seconds = 0;   // CPU time of the training thread (LibTorch's pool threads excluded)
  int64_t samples = 0;      // training samples (n_k in FedAvg)
  uint64_t dp_steps = 0;    // DP-SGD: steps taken
  int64_t dp_clipped = 0;   // DP-SGD: per-example gradients whose norm exceeded C
  int64_t dp_examples = 0;  // DP-SGD: examples over all Poisson batches
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
  // Ok when the model can be trained with DP-SGD; InvalidArgument naming the first layer whose
  // per-example gradients cannot be computed (a TorchScript model) otherwise.
  virtual Status DpSgdSupport() = 0;
  // The model's tensors (names and shapes, in wire order): what a task's weights must match.
  virtual const model::ModelSpec& spec() const = 0;
};

}  // namespace shoal::worker
