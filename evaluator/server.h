// The serving side of wire.h: answers a ChildProcessRuntime's requests on one connection with
// a ModelRuntime of its own (shoal-evaluator: the local one, LibTorch in that process), one at
// a time, until the other side closes the connection. This file is torch-free; what runs the
// models is the runtime it is given.
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include "base/status.h"
#include "evaluator/model_runtime.h"
#include "evaluator/wire.h"

namespace shoal::evaluator {

class Server {
 public:
  // Serves on `fd` (not owned) with `runtime` (which must outlive the server).
  Server(int fd, ModelRuntime& runtime) : fd_(fd), runtime_(runtime) {}
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves until the client closes the connection (OK) or the stream breaks (its error).
  Status Run();

 private:
  Status Reply(const Status& st, nlohmann::json body = nlohmann::json::object(),
               const void* blob = nullptr, uint64_t n = 0);
  Status Handle(const wire::Header& h);
  Status Evaluate(const wire::Header& h);
  // Fault injection for crash tests: with SHOAL_FAULT_EVALUATOR_ABORT=N this process is killed
  // (SIGKILL, as by the OOM killer; no core file) at its N-th evaluation. Every new evaluator
  // process counts from zero.
  void MaybeAbortForTests();

  const int fd_;
  ModelRuntime& runtime_;
  std::map<int64_t, std::unique_ptr<CentralEvaluator>> evaluators_;
  int64_t next_id_ = 1;
  long evaluations_ = 0;
};

}  // namespace shoal::evaluator
