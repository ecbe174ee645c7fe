// A fleet of synthetic workers in one process, speaking the real Shoal protocol to a real
// coordinator over one connection each (Link), all driven by one thread and one epoll set
// (each socket's ZMQ_FD), so a loop iteration costs O(sockets with news), not O(workers).
//
// Each synthetic worker speaks through the same protocol client as worker/client.cc
// (protocols/client_session.h, one ClientSession per worker), minus the data and LibTorch:
//   Hello (declared silo sizes, input shape and class count) -> Welcome (-> ModelFile pieces,
//   counted and dropped) -> TrainTask + WeightsChunk x n (checked in order, not kept) ->
//   "training" (an optional delay) -> UpdateReady with the SHA-256 of a synthetic delta, in
//   the encoding the TrainTask asks for (train.compression: f32, fp16 or int8) ->
//   UploadGrant -> WeightsChunk x n -> Ack; EvalTask + chunks -> EvalResult; heartbeats both
//   ways; Shutdown ends it. Errors are handled by the session as for the real worker
//   (UnknownPeer: Hello again; Stale / BadUpdate / Duplicate: drop the update; NotAdmitted /
//   VersionMismatch: give up).
//
// The delta is never held in memory. Value i of worker w's delta in round r is a counter-based
// function of (key, i), finite, |value| <= delta_scale. The last `unique_bytes` bytes of the
// delta use the worker's key (TrainTask.seed ^ FNV-1a(name), as the real worker seeds its
// training); the bytes before them use a key shared by every worker of the round (derived from
// TrainTask.seed). The coordinator's work (SHA-256, finite check, fold) does not depend on the
// values, but the load generator's does: the SHA-256 state after the shared prefix is computed
// once per round and copied, so announcing an update costs hashing unique_bytes, not the whole
// model (one thread of this program could otherwise not keep up with 10 x 100M parameters).
// unique_bytes < 0 makes every byte of every delta worker-specific. Chunks are generated when
// hashed and again when uploaded; received weights are validated chunk by chunk and dropped.
// Memory is therefore O(workers + chunk size) whatever the model size.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "base/status.h"
#include "bench/loadgen/link.h"
#include "protocols/client_session.h"
#include "protocols/codec.h"
#include "protocols/secure_channel.h"

namespace shoal::loadgen {

using Clock = std::chrono::steady_clock;

struct FleetOptions {
  std::string endpoint;
  int workers = 10;
  std::string name_prefix = "lg";
  int64_t num_train = 600;
  int64_t num_val = 100;  // 0 = the coordinator sends no EvalTasks to these workers
  std::vector<int64_t> input_shape = {1, 28, 28};
  int64_t num_classes = 10;
  double train_ms = 0;               // simulated local training time per round
  double train_jitter_ms = 0;        // plus a deterministic per-worker share of this
  double delta_scale = 1e-3;         // |delta values| <= this
  double connect_rate = 0;           // workers connected per second; 0 = all at once
  uint32_t hello_timeout_ms = 5000;  // Hello again (new socket) when no Welcome came in time
  double timeout_s = 0;              // give up after this long; 0 = never
  double work_budget_ms = 20;        // delta hashing per loop iteration before polling again
  int64_t unique_bytes = 4 << 20;    // worker-specific tail of each delta; < 0 = all of it
  // TLS, as real workers: each synthetic worker uses the enrollment bundle bundles_dir/NAME,
  // issued from ca_dir when missing (as `shoalctl enroll` does). Empty = plain (--insecure).
  std::string bundles_dir;
  std::string ca_dir;
  std::string server_name = "coordinator";
  int io_threads = 1;  // ZeroMQ I/O threads of the fleet's context
  int vanish = 0;      // the last `vanish` workers close their connection right after Welcome and
                       // never come back (a crash), to check that the coordinator drops them
};

// What the load generator saw of one round.
struct RoundStats {
  uint64_t round = 0;
  int tasks = 0;  // TrainTasks whose weights arrived completely
  int updates_announced = 0;
  int grants = 0;
  int acks = 0;
  int rejected = 0;             // Error replies for this round's updates
  int evals = 0;                // EvalResults sent
  double first_task_s = -1;     // since the fleet started
  double last_download_s = -1;  // last TrainTask weights complete
  double first_ack_s = -1;
  double last_ack_s = -1;
  uint64_t update_bytes_acked = 0;
  nlohmann::json ToJson() const;
};

class Fleet {
 public:
  explicit Fleet(FleetOptions options);
  // TLS only: loads (or issues) every worker's bundle and makes its TLS context.
  Status SetUpTls();
  ~Fleet();

  // Runs until every worker got Shutdown or gave up, `stop` is set, or the timeout passes.
  Status Run(const volatile bool& stop);

  // Totals and per-round statistics as JSON.
  nlohmann::json Summary() const;
  // 0 when every worker saw the run finish (Shutdown) and none gave up.
  int ExitCode() const;

 private:
  struct Worker;
  struct PrefixHash;
  void Start(Worker& w);
  void Restart(Worker& w);
  void Close(Worker& w);
  void Pump(Worker& w);
  void MarkForCheck(Worker& w);
  void Handle(Worker& w, std::string_view message);
  void HandleEvents(Worker& w);
  void OnEvent(Worker& w, const protocols::ClientEvent& e);
  void OnTrainTask(Worker& w, const protocols::TrainTask& t);
  // The synthetic federated evaluation result.
  void SendEvalResult(Worker& w, const std::string& run_id, uint64_t round, uint64_t version);
  void Tick(Worker& w, Clock::time_point now);
  void FinishTraining(Worker& w);
  void Flush(Worker& w);
  void FillBytes(const Worker& w, uint64_t offset, uint64_t len, uint32_t* out) const;
  const PrefixHash& PrefixFor(const Worker& w);
  RoundStats& StatsFor(uint64_t round);
  double Elapsed() const;

  FleetOptions opt_;
  zmq::context_t context_;
  std::vector<std::unique_ptr<Worker>> workers_;
  int epoll_fd_ = -1;
  std::vector<Worker*> to_check_;       // sockets to look at without waiting for their descriptor
  std::deque<Worker*> hashing_;         // finished "training", waiting for their delta's SHA-256
  std::vector<uint32_t> scratch_;       // one chunk of an update
  std::unique_ptr<PrefixHash> prefix_;  // SHA-256 state after the current round's shared prefix
  Clock::time_point started_;

  // Totals.
  std::map<uint64_t, RoundStats> rounds_;
  std::map<std::string, uint64_t> errors_;  // by code name
  uint64_t messages_in_ = 0;
  uint64_t messages_out_ = 0;
  uint64_t bytes_in_closed_ = 0;  // of links already replaced
  uint64_t bytes_out_closed_ = 0;
  uint64_t reconnects_ = 0;
  uint64_t bad_frames_ = 0;
  uint64_t heartbeats_in_ = 0;
  uint64_t heartbeats_out_ = 0;
  uint64_t model_files_ = 0;
  double all_admitted_s = -1;
  int admitted_ = 0;
  int finished_ = 0;
  int gave_up_ = 0;
  int vanished_ = 0;
  std::string shutdown_reason_;
  double hashing_s_ = 0;  // time spent generating and hashing deltas
  double upload_s_ = 0;   // time spent generating and sending deltas
  double prefix_s_ = 0;   // time spent hashing shared prefixes (once per round)
  uint64_t wakeups_ = 0;  // loop iterations
  int open_links_ = 0;
};

}  // namespace shoal::loadgen
