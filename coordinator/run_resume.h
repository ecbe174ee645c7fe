// Starting or resuming a run from its run directory: the model it trains, run.json, and the
// version training continues from.
//
// A new run writes run.json (and, for a TorchScript model, a checked copy of model.path) and
// commits the initial weights as v0. A resumed run reads them back, continues from the newest
// loadable version (an unreadable one, or one holding a NaN/Inf value, falls back to its
// predecessor, which the next commit then follows), and completes that
// version's evaluation and metrics.jsonl record when the coordinator stopped before they were
// written.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "coordinator/aggregation/server_optimizer.h"
#include "coordinator/config.h"
#include "evaluator/model_runtime.h"
#include "model/model_source.h"
#include "model/weights.h"
#include "store/model_store.h"

namespace shoal::coordinator {

// The model a run trains.
struct RunModel {
  model::ModelSource source;
  std::string sha256;  // hex, torchscript runs only
  uint64_t bytes = 0;  // size of the TorchScript file, 0 for built-ins
};

// Where training continues.
struct StartingPoint {
  std::string run_id;
  model::Weights global;
  uint64_t version = 0;
  uint64_t next_round = 1;
  store::VersionMeta meta;  // the version's meta (its server state is loaded from it)
};

// A new torchscript run reads model.path (its size checked before reading), checks that the
// model loads and fits model.input_shape / num_classes, then keeps a copy in the run directory
// (written before run.json, which records its SHA-256). A resumed run uses that copy.
Result<RunModel> LoadRunModel(const CoordinatorConfig& cfg, evaluator::ModelRuntime& runtime);

// Resumes the run in cfg.run_dir, or starts it (run.json, v0 made by `runtime` and evaluated by
// `evaluator` when there is one).
Result<StartingPoint> ResumeOrStart(const CoordinatorConfig& cfg, const RunModel& model,
                                    store::ModelStore& store, evaluator::ModelRuntime& runtime,
                                    evaluator::CentralEvaluator* evaluator);

// Sets `optimizer`'s state to the one committed with `meta` (a model of `size` values): the
// state file when the version has one, checked against its hash and its optimizer's name, or
// the optimizer's initial state when it has none (v0, or a version made by a stateless
// optimizer). InvalidArgument when the version's state belongs to another optimizer than
// strategy.server_optimizer (switching would silently drop or misread the moments); Corrupt
// when the state file is missing, damaged or does not match the recorded hash.
Status RestoreServerState(const std::string& run_dir, const store::VersionMeta& meta, size_t size,
                          ServerOptimizer& optimizer);

}  // namespace shoal::coordinator
