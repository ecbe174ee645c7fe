// The worker side of the Shoal protocol (messages.h), written once: a state machine that is fed
// received messages (already decrypted: the channel layer stays below it) and the time, and
// that produces the messages to send and the events the worker acts on.
//
// It never blocks and owns no socket and no thread, so one thread drives one session (the
// worker, worker/client.cc), thousands of them (the load generator's epoll loop,
// bench/loadgen/fleet.cc) or a test drives one by hand. The caller's loop:
//
//   session.Connect(now)                       a new connection: queues Hello
//   session.Receive(message, now)              each received message
//   session.Tick(now, busy)                    heartbeats due, Hello and peer timeouts
//   while (auto e = session.NextEvent()) ...   after every Receive and Tick, before the next
//   while (auto m = session.NextToSend()) ...  send in order (head, then payload)
//
// What it holds once for every client:
//  - The conversation: Hello -> Welcome (checked) -> ModelFile pieces (assembled, SHA-256
//    checked, when Welcome.model_bytes > 0) -> TrainTask / EvalTask + WeightsChunk x n
//    (assembled by a ChunkAssembler into one buffer, or only checked when the caller keeps no
//    payloads) -> OfferUpdate: UpdateReady -> UploadGrant -> WeightsChunk x n -> Ack.
//  - Errors: UnknownPeer -> reconnect and Hello again; Stale / BadUpdate / Duplicate -> the
//    update is dropped; NotAdmitted / VersionMismatch (and an invalid Welcome) -> refused for
//    good. An update not yet acknowledged survives a reconnect and is offered again after the
//    next Welcome.
//  - Heartbeats every Welcome.heartbeat_ms; a coordinator silent for Welcome.peer_timeout_ms,
//    or no Welcome within hello_timeout_ms, ends the connection (kTimedOut).
//  - Payload placement (placement.h): Place() is the channel's payload placer, so a task's
//    weights are decrypted straight into the buffer they are assembled in.
//  - The upload: chunks are made one at a time as NextToSend() is called, their payload a view
//    of the caller's update (UpdateBytes), never copied into a frame first.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "model/model_source.h"
#include "model/weights.h"
#include "protocols/codec.h"
#include "protocols/messages.h"
#include "protocols/placement.h"

namespace shoal::protocols {

struct ClientSessionOptions {
  Hello hello;                       // sent on every Connect
  uint32_t hello_timeout_ms = 5000;  // no Welcome within this: kTimedOut
  // Keep what is received: the model file and the tasks' weights (a worker). false: every
  // piece is checked in order and dropped (the load generator, whose memory must not grow with
  // the model); the task events then carry no weights and kModelFile no bytes.
  bool keep_payloads = true;
  uint64_t max_model_bytes = model::kMaxScriptModelBytes;  // largest Welcome.model_bytes
  bool stamp_heartbeats = false;  // Heartbeat.unix_ms = now (the load generator's heartbeats)
};

// Something the caller acts on (or only logs).
struct ClientEvent {
  enum class Kind {
    kWelcomed,          // welcome() holds the Welcome; a built-in model can be made now
    kModelFile,         // the TorchScript file is complete: `model_file` (SHA-256 in `message`)
    kModelFileFailed,   // a piece was wrong (`message`): reconnect for a new copy
    kTaskAnnounced,     // a valid TrainTask (`train`) arrived: it supersedes training in progress
    kTrainTask,         // its weights are complete: `train`, `weights`
    kEvalTask,          // an EvalTask's weights are complete: `eval`, `weights`
    kUploadGranted,     // `round`: the update's chunks are queued (NextToSend)
    kAcked,             // `round`: the update was accepted and is forgotten
    kUpdateRejected,    // `round`, `code`, `message`: the coordinator refused it; forgotten
    kCoordinatorError,  // every Error received (`round`, `code`, `message`), before its effect
    kReconnect,         // `message`: a new connection now (UnknownPeer, a task before the model)
    kTimedOut,          // `message`: no Welcome in time, or the coordinator went silent
    kRefused,           // `status`: refused for good (NotAdmitted, VersionMismatch, bad Welcome)
    kShutdown,          // `message`: the coordinator's reason; the run is over
    kHeartbeat,         // a heartbeat from the coordinator
    kModelFilePiece,    // one ModelFile piece accepted
    kBadFrame,          // `message`: a message that could not be parsed (ignored)
    kTransferFailed,    // `message`: the weights being received were wrong and are dropped
    kIgnored,           // `message`: a message ignored (invalid or unexpected task, ...)
  };
  explicit ClientEvent(Kind k) : kind(k) {}
  Kind kind;
  uint64_t round = 0;
  ErrorCode code = ErrorCode::kBadMessage;
  std::string message;
  Status status;
  TrainTask train;
  EvalTask eval;
  model::Weights weights;  // empty without keep_payloads
  std::string model_file;  // empty without keep_payloads
};

// The seed a worker trains a task with: the TrainTask's seed (derived by the coordinator from
// the run seed and the round) mixed with the worker's name (FNV-1a), so that workers differ and
// a deterministic run is reproducible. The load generator derives its synthetic deltas the same
// way.
uint64_t WorkerTrainingSeed(uint64_t task_seed, const std::string& worker_name);

class ClientSession {
 public:
  using Clock = std::chrono::steady_clock;
  // Bytes [offset, offset + length) of the offered update, valid until the next call.
  using UpdateBytes = std::function<std::string_view(uint64_t offset, uint64_t length)>;
  enum class Phase { kIdle, kHello, kAdmitted, kClosed };

  explicit ClientSession(ClientSessionOptions options);

  // A new connection: the previous one's transfers, Welcome, unsent messages and unread events
  // are forgotten and Hello is queued. Not after kRefused or kShutdown (the session is closed for
  // good).
  void Connect(Clock::time_point now);
  // One received message, placed (Place) or not.
  void Receive(const Plaintext& message, Clock::time_point now);
  void Receive(std::string_view message, Clock::time_point now);
  // Queues the heartbeat when due (`busy`: training or evaluating) and ends a connection that
  // waited too long for its Welcome or heard nothing for peer_timeout_ms.
  void Tick(Clock::time_point now, bool busy);
  // The payload placer for the channel (placement.h): the next chunk of the weights being
  // received goes straight into their buffer; anything else is read whole.
  PayloadPlacement Place(std::string_view head, size_t payload_bytes);

  std::optional<ClientEvent> NextEvent();
  // The next message to send: head then payload (a view of the update for an upload chunk,
  // valid until the next call), in order.
  std::optional<FramePieces> NextToSend();
  // Drops the upload chunks not sent yet (the connection failed under them).
  void CancelUpload();

  // Offers an update (announced now when admitted, else after the next Welcome). `bytes`
  // gives its u.total_bytes bytes on a grant, and must stay valid until kAcked,
  // kUpdateRejected, DropUpdate, or the next TrainTask's weights (which replace it).
  void OfferUpdate(UpdateReady u, UpdateBytes bytes);
  void DropUpdate();
  // Queues any other message (EvalResult).
  template <class M>
  void Send(const M& m) {
    outbox_.push_back({Encode(m), false});
  }
  // Tasks whose spec is not this one are ignored (their weights would be allocated from it);
  // unset: any valid spec is accepted.
  void set_model_spec(model::ModelSpec spec) { spec_ = std::move(spec); }
  // When the first heartbeat after a Welcome is due (default: at once).
  void set_next_heartbeat(Clock::time_point t) { next_heartbeat_ = t; }

  Phase phase() const { return phase_; }
  bool admitted() const { return phase_ == Phase::kAdmitted; }
  const Welcome& welcome() const { return welcome_; }
  // The limits on the coordinator's messages (the Welcome's chunk size once admitted).
  const Limits& limits() const { return limits_; }
  const std::optional<UpdateReady>& update() const { return update_; }
  // True once a task may arrive: the model file, if any, is complete.
  bool model_ready() const { return model_ready_; }
  // When Tick has something to do next (heartbeat, or the Hello deadline before Welcome).
  Clock::time_point next_deadline() const;

 private:
  struct Outgoing {
    std::string frame;  // a whole message, or nothing for an upload chunk
    bool upload = false;
    uint32_t index = 0;  // upload: this chunk
  };
  enum class Pending { kNone, kTrain, kEval };

  void OnHelloReply(const FrameView& f);
  void OnWelcome(const FrameView& f);
  void OnMessage(const FrameView& f);
  void OnModelFile(const FrameView& f);
  void OnTrainTask(const FrameView& f);
  void OnEvalTask(const FrameView& f);
  void OnChunk(const FrameView& f);
  void OnError(const FrameView& f);
  // Starts receiving `chunk_count` chunks of a model with `spec` for `round`; false (and an
  // event saying why) when the task is not for this worker's model.
  bool StartTransfer(const char* what, const model::ModelSpec& spec, uint64_t round,
                     uint32_t chunk_count);
  void Emit(ClientEvent::Kind kind, std::string message = {}, uint64_t round = 0);
  void Emit(ClientEvent e) { events_.push_back(std::move(e)); }
  void Refuse(Status why);

  ClientSessionOptions options_;
  Phase phase_ = Phase::kIdle;
  Welcome welcome_;
  Limits limits_;
  Clock::time_point hello_deadline_{};
  Clock::time_point last_heard_{};
  Clock::time_point next_heartbeat_{};
  std::optional<model::ModelSpec> spec_;

  // The model file of this connection (Welcome.model_bytes > 0).
  bool model_ready_ = false;
  ModelFileAssembler model_assembler_;  // keep_payloads
  uint32_t model_pieces_ = 0;           // without keep_payloads: pieces checked so far

  // Incoming weights.
  Pending pending_ = Pending::kNone;
  TrainTask train_task_;
  EvalTask eval_task_;
  ChunkAssembler assembler_;

  // The offered update.
  std::optional<UpdateReady> update_;
  UpdateBytes update_bytes_;

  std::deque<ClientEvent> events_;
  std::deque<Outgoing> outbox_;
};

}  // namespace shoal::protocols
