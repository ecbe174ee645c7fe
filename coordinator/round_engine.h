// The coordinator's round engine: admits workers, runs rounds, aggregates, evaluates, commits.
//
// One thread owns the listening socket (protocols::ServerChannel over a ZeroMQ STREAM socket) and
// all state; it alternates between receiving messages (each handled to completion) and housekeeping
// (deadlines, lost workers). Round states:
//   WAIT (for min_workers) -> SELECT -> BROADCAST -> COLLECT (until all selected reported or the
//   deadline) -> AGGREGATE -> COMMIT -> EVALUATE (central + federated; with eval.overlap while
//   the next round trains)
// Updates are admitted for upload one slot at a time (network.max_concurrent_uploads), folded
// into the round's streaming aggregator (strategy.aggregator; FedAvg by default) as soon as they
// are complete and valid, then freed. Peer input never aborts the process: a bad message gets a
// typed Error reply and a log line.
//
// The engine sequences parts that own their state: WorkerRegistry (who may connect, who is
// connected, per-worker stats), UploadScheduler (slots, queue, assembly), Round (the open
// round), EvaluationTracker (the pending evaluation), the Aggregator, and run_resume (starting
// or resuming from the run directory). Its implementation is coordinator_impl.h.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "base/status.h"
#include "coordinator/config.h"

namespace shoal::evaluator {
class ModelRuntime;
}  // namespace shoal::evaluator

namespace shoal::coordinator {

class Coordinator {
 public:
  // `runtime` does the run's LibTorch work (initial weights, central evaluation): shoal-coordinator
  // passes evaluator::MakeChildProcessRuntime(), tests may pass evaluator::MakeLocalRuntime().
  Coordinator(CoordinatorConfig config, std::unique_ptr<evaluator::ModelRuntime> runtime);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Runs the whole federation: resumes from the run directory's last committed version when
  // there is one, then trains until `rounds` rounds are committed. Returns on completion, on a
  // fatal error, or soon after Stop().
  Status Run();
  // Async-signal-safe request to stop.
  void Stop() { stop_.store(true); }

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace shoal::coordinator
