// The worker's client loop: connect to the coordinator (a ZeroMQ STREAM connection), say Hello,
// then serve TrainTasks and EvalTasks until the coordinator says Shutdown.
//
// Local training runs on its own thread while this thread keeps heartbeats flowing, so long
// training never looks like a dead worker. A coordinator that cannot be reached or goes silent
// is retried with exponential back-off (logged each time); the loop never spins. Refusal at
// Hello (incompatible silo) is fatal and returned.
//
// The protocol itself (what to answer, chunk assembly and payload placement, the upload's
// chunks, error replies, heartbeats and timeouts) is protocols::ClientSession's, shared with
// the load generator and the integration tests' scripted worker; this loop owns the silo, the
// trainers and their thread, the connection, reconnects with back-off, and the logs.
#pragma once

#include <atomic>
#include <memory>

#include "base/status.h"
#include "worker/config.h"

namespace shoal::worker {

class WorkerClient {
 public:
  explicit WorkerClient(WorkerConfig config);
  ~WorkerClient();
  WorkerClient(const WorkerClient&) = delete;
  WorkerClient& operator=(const WorkerClient&) = delete;

  // Loads the silo, then serves until Shutdown (Ok), a fatal refusal, or Stop().
  Status Run();
  // Async-signal-safe.
  void Stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace shoal::worker
