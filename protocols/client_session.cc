#include "protocols/client_session.h"

#include <algorithm>
#include <utility>

#include "base/hex.h"
#include "model/model_source.h"

namespace shoal::protocols {

namespace {

uint64_t UnixMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

uint64_t WorkerTrainingSeed(uint64_t task_seed, const std::string& worker_name) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a, 64 bits
  for (unsigned char c : worker_name) h = (h ^ c) * 1099511628211ULL;
  return task_seed ^ h;
}

ClientSession::ClientSession(ClientSessionOptions options) : options_(std::move(options)) {}

void ClientSession::Emit(ClientEvent::Kind kind, std::string message, uint64_t round) {
  ClientEvent e{kind};
  e.message = std::move(message);
  e.round = round;
  events_.push_back(std::move(e));
}

void ClientSession::Refuse(Status why) {
  phase_ = Phase::kClosed;
  ClientEvent e{ClientEvent::Kind::kRefused};
  e.message = why.message();
  e.status = std::move(why);
  Emit(std::move(e));
}

void ClientSession::Connect(Clock::time_point now) {
  if (phase_ == Phase::kClosed) return;
  phase_ = Phase::kHello;
  welcome_ = Welcome{};
  limits_ = Limits{};
  pending_ = Pending::kNone;
  assembler_.Reset();
  model_assembler_.Reset();
  model_ready_ = false;
  model_pieces_ = 0;
  outbox_.clear();  // what was meant for the previous connection
  events_.clear();  // and what it reported after its end
  hello_deadline_ = now + std::chrono::milliseconds(options_.hello_timeout_ms);
  last_heard_ = now;
  next_heartbeat_ = now;
  Send(options_.hello);
}

void ClientSession::Receive(const Plaintext& message, Clock::time_point now) {
  if (phase_ != Phase::kHello && phase_ != Phase::kAdmitted) return;
  last_heard_ = now;
  auto f = ParseFrame(message, limits_);
  if (!f.ok()) return Emit(ClientEvent::Kind::kBadFrame, f.status().message());
  if (phase_ == Phase::kHello) return OnHelloReply(*f);
  OnMessage(*f);
}

void ClientSession::Receive(std::string_view message, Clock::time_point now) {
  if (phase_ != Phase::kHello && phase_ != Phase::kAdmitted) return;
  last_heard_ = now;
  auto f = ParseFrame(message, limits_);
  if (!f.ok()) return Emit(ClientEvent::Kind::kBadFrame, f.status().message());
  if (phase_ == Phase::kHello) return OnHelloReply(*f);
  OnMessage(*f);
}

void ClientSession::Tick(Clock::time_point now, bool busy) {
  if (phase_ == Phase::kHello) {
    if (now >= hello_deadline_) {
      phase_ = Phase::kIdle;
      Emit(ClientEvent::Kind::kTimedOut,
           "no Welcome within " + std::to_string(options_.hello_timeout_ms) + " ms");
    }
    return;
  }
  if (phase_ != Phase::kAdmitted) return;
  if (now >= next_heartbeat_) {
    Heartbeat hb;
    hb.unix_ms = options_.stamp_heartbeats ? UnixMs() : 0;
    hb.busy = busy ? 1 : 0;
    Send(hb);
    next_heartbeat_ = now + std::chrono::milliseconds(welcome_.heartbeat_ms);
  }
  if (now - last_heard_ > std::chrono::milliseconds(welcome_.peer_timeout_ms)) {
    phase_ = Phase::kIdle;
    Emit(ClientEvent::Kind::kTimedOut,
         "no message from the coordinator for " + std::to_string(welcome_.peer_timeout_ms) + " ms");
  }
}

ClientSession::Clock::time_point ClientSession::next_deadline() const {
  return phase_ == Phase::kHello ? hello_deadline_ : next_heartbeat_;
}

PayloadPlacement ClientSession::Place(std::string_view head, size_t payload_bytes) {
  if (pending_ == Pending::kNone) return {};
  return assembler_.PlaceFrame(head, payload_bytes, limits_);
}

std::optional<ClientEvent> ClientSession::NextEvent() {
  if (events_.empty()) return std::nullopt;
  ClientEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

std::optional<FramePieces> ClientSession::NextToSend() {
  while (!outbox_.empty()) {
    Outgoing& o = outbox_.front();
    if (!o.upload) {
      FramePieces out{std::move(o.frame), {}};
      outbox_.pop_front();
      return out;
    }
    if (!update_) {  // dropped while its chunks waited
      outbox_.pop_front();
      continue;
    }
    // One chunk at a time, its payload where the caller keeps the update.
    const uint64_t total = update_->total_bytes;
    const uint32_t chunk_bytes = welcome_.chunk_bytes;
    WeightsChunk c;
    c.round = update_->round;
    c.index = o.index;
    c.count = ChunkCount(total, chunk_bytes);
    c.offset = uint64_t{o.index} * chunk_bytes;
    const uint64_t length = std::min<uint64_t>(chunk_bytes, total - c.offset);
    const std::string_view payload = update_bytes_(c.offset, length);
    if (++o.index == c.count) outbox_.pop_front();
    return FramePieces{
        internal::BuildFrameHead(WeightsChunk::kType, internal::EncodeHeader(c), payload.size()),
        payload};
  }
  return std::nullopt;
}

void ClientSession::CancelUpload() {
  outbox_.erase(
      std::remove_if(outbox_.begin(), outbox_.end(), [](const Outgoing& o) { return o.upload; }),
      outbox_.end());
}

void ClientSession::OfferUpdate(UpdateReady u, UpdateBytes bytes) {
  CancelUpload();  // of an update this one replaces
  update_ = std::move(u);
  update_bytes_ = std::move(bytes);
  if (admitted()) Send(*update_);
}

void ClientSession::DropUpdate() {
  CancelUpload();
  update_.reset();
  update_bytes_ = nullptr;
}

// Before the Welcome only the answer to Hello counts: a refusal is final, any other error is
// reported and the wait goes on (the Hello timeout ends it).
void ClientSession::OnHelloReply(const FrameView& f) {
  if (f.type == MessageType::kError) {
    auto e = Decode<Error>(f);
    if (!e.ok()) return Emit(ClientEvent::Kind::kBadFrame, e.status().message());
    if (e->code == ErrorCode::kNotAdmitted || e->code == ErrorCode::kVersionMismatch) {
      return Refuse(Rejected("coordinator refused this worker: " + e->message));
    }
    ClientEvent ev{ClientEvent::Kind::kCoordinatorError};
    ev.round = e->round;
    ev.code = e->code;
    ev.message = e->message;
    return Emit(std::move(ev));
  }
  if (f.type == MessageType::kWelcome) OnWelcome(f);
}

void ClientSession::OnWelcome(const FrameView& f) {
  auto w = Decode<Welcome>(f);
  if (!w.ok()) return Refuse(w.status());
  if (w->chunk_bytes == 0 || w->chunk_bytes > kMaxChunkBytes || w->chunk_bytes % 4 != 0 ||
      w->heartbeat_ms == 0 || w->peer_timeout_ms == 0) {
    return Refuse(ProtocolError("coordinator sent an invalid Welcome"));
  }
  const bool script = w->model == model::kTorchScriptModel;
  if (script && w->model_bytes == 0) {
    return Refuse(ProtocolError("Welcome for a torchscript model without its size"));
  }
  if (!script && w->model_bytes != 0) {
    return Refuse(
        ProtocolError("Welcome announces a model file for built-in model '" + w->model + "'"));
  }
  welcome_ = std::move(w).value();
  if (script) {
    // The file follows as ModelFile pieces; tasks are accepted once it is complete.
    if (Status st = ModelFileAssembler().Start(welcome_.model_bytes, welcome_.chunk_bytes,
                                               options_.max_model_bytes);
        !st.ok()) {
      return Refuse(
          Rejected("coordinator's TorchScript model cannot be accepted: " + st.message()));
    }
    if (options_.keep_payloads) {
      (void)model_assembler_.Start(welcome_.model_bytes, welcome_.chunk_bytes,
                                   options_.max_model_bytes);
    }
    model_ready_ = false;
  } else {
    model_ready_ = true;
  }
  phase_ = Phase::kAdmitted;
  limits_ = Limits{};
  limits_.max_payload_bytes = welcome_.chunk_bytes;
  Emit(ClientEvent::Kind::kWelcomed);
  if (update_) Send(*update_);  // not acknowledged before a reconnect: offered again
}

void ClientSession::OnMessage(const FrameView& f) {
  switch (f.type) {
    case MessageType::kHeartbeat:
      return Emit(ClientEvent::Kind::kHeartbeat);
    case MessageType::kWelcome:
      return;
    case MessageType::kShutdown: {
      auto m = Decode<Shutdown>(f);
      phase_ = Phase::kClosed;
      return Emit(ClientEvent::Kind::kShutdown, m.ok() ? m->reason : "");
    }
    case MessageType::kModelFile:
      return OnModelFile(f);
    case MessageType::kTrainTask:
      return OnTrainTask(f);
    case MessageType::kEvalTask:
      return OnEvalTask(f);
    case MessageType::kWeightsChunk:
      return OnChunk(f);
    case MessageType::kUploadGrant: {
      auto g = Decode<UploadGrant>(f);
      if (!g.ok() || !update_ || g->round != update_->round) return;
      CancelUpload();  // a second grant sends the update once more, from its first chunk
      outbox_.push_back({std::string(), true, 0});
      if (ChunkCount(update_->total_bytes, welcome_.chunk_bytes) == 0) outbox_.pop_back();
      return Emit(ClientEvent::Kind::kUploadGranted, {}, g->round);
    }
    case MessageType::kAck: {
      auto a = Decode<Ack>(f);
      if (!a.ok() || !update_ || a->round != update_->round || a->sha256 != update_->sha256) {
        return;
      }
      const uint64_t round = update_->round;
      DropUpdate();
      return Emit(ClientEvent::Kind::kAcked, {}, round);
    }
    case MessageType::kError:
      return OnError(f);
    default:
      return Emit(ClientEvent::Kind::kIgnored,
                  std::string("unexpected ") + MessageTypeName(f.type) + " ignored");
  }
}

// One piece of the TorchScript model; a wrong piece asks for a new connection and a new copy.
void ClientSession::OnModelFile(const FrameView& f) {
  if (model_ready_) {
    return Emit(ClientEvent::Kind::kIgnored, "ModelFile without a model transfer ignored");
  }
  auto m = Decode<ModelFile>(f);
  Status st = m.status();
  const uint32_t count = ChunkCount(welcome_.model_bytes, welcome_.chunk_bytes);
  if (m.ok() && options_.keep_payloads) {
    st = model_assembler_.Add(*m, f.payload);
  } else if (m.ok()) {  // checked and dropped
    const uint64_t offset = uint64_t{m->index} * welcome_.chunk_bytes;
    if (m->index != model_pieces_ || m->count != count || m->total_bytes != welcome_.model_bytes ||
        f.payload.size() != std::min<uint64_t>(welcome_.chunk_bytes, m->total_bytes - offset)) {
      st = ProtocolError("ModelFile " + std::to_string(m->index) + "/" + std::to_string(m->count) +
                         " out of order or of the wrong size");
    }
  }
  if (!st.ok()) {
    model_assembler_.Reset();
    phase_ = Phase::kIdle;  // this connection's copy is lost: a new connection sends another
    return Emit(ClientEvent::Kind::kModelFileFailed, st.message());
  }
  ++model_pieces_;
  Emit(ClientEvent::Kind::kModelFilePiece);
  if (model_pieces_ < count) return;
  model_ready_ = true;
  ClientEvent e{ClientEvent::Kind::kModelFile};
  if (options_.keep_payloads) {
    e.message = HexEncode(model_assembler_.sha256());
    e.model_file = model_assembler_.Take();
  }
  Emit(std::move(e));
}

bool ClientSession::StartTransfer(const char* what, const model::ModelSpec& spec, uint64_t round,
                                  uint32_t chunk_count) {
  // The weights that follow are allocated from this spec: it must be our model's, whatever the
  // (authenticated) coordinator says.
  if (spec_ && !(spec == *spec_)) {
    Emit(ClientEvent::Kind::kIgnored,
         std::string(what) + " ignored: its model spec (" + std::to_string(spec.tensors.size()) +
             " tensors, " + std::to_string(spec.total_bytes()) + " bytes) is not this worker's (" +
             std::to_string(spec_->tensors.size()) + " tensors, " +
             std::to_string(spec_->total_bytes()) + " bytes)");
    return false;
  }
  const uint64_t total = static_cast<uint64_t>(spec.total_bytes());
  if (chunk_count != ChunkCount(total, welcome_.chunk_bytes)) {
    Emit(ClientEvent::Kind::kIgnored,
         std::string(what) + " ignored: it announces " + std::to_string(chunk_count) +
             " chunks, its model takes " + std::to_string(ChunkCount(total, welcome_.chunk_bytes)));
    return false;
  }
  if (Status st = assembler_.Start(round, total, welcome_.chunk_bytes, options_.keep_payloads);
      !st.ok()) {
    Emit(ClientEvent::Kind::kIgnored, std::string(what) + " ignored: " + st.message());
    return false;
  }
  return true;
}

void ClientSession::OnTrainTask(const FrameView& f) {
  if (!model_ready_) {  // the model file precedes every task; a piece must have been lost
    phase_ = Phase::kIdle;
    return Emit(ClientEvent::Kind::kReconnect, "TrainTask before the model file was complete");
  }
  auto m = Decode<TrainTask>(f);
  if (!m.ok() || !m->spec.Validate().ok() || m->epochs == 0 || m->batch_size == 0 || !(m->lr > 0)) {
    return Emit(ClientEvent::Kind::kIgnored, "invalid TrainTask ignored");
  }
  if (Status st = CheckTrainOptions(*m); !st.ok()) {
    return Emit(ClientEvent::Kind::kIgnored, "TrainTask ignored: " + st.message());
  }
  ClientEvent announced{ClientEvent::Kind::kTaskAnnounced};
  announced.round = m->round;
  announced.train = *m;
  Emit(std::move(announced));
  pending_ = Pending::kNone;
  if (!StartTransfer("TrainTask", m->spec, m->round, m->chunk_count)) return;
  train_task_ = std::move(m).value();
  pending_ = Pending::kTrain;
}

void ClientSession::OnEvalTask(const FrameView& f) {
  if (!model_ready_) {
    phase_ = Phase::kIdle;
    return Emit(ClientEvent::Kind::kReconnect, "EvalTask before the model file was complete");
  }
  auto m = Decode<EvalTask>(f);
  if (!m.ok() || !m->spec.Validate().ok()) {
    return Emit(ClientEvent::Kind::kIgnored, "invalid EvalTask ignored");
  }
  pending_ = Pending::kNone;
  if (!StartTransfer("EvalTask", m->spec, m->round, m->chunk_count)) return;
  eval_task_ = std::move(m).value();
  pending_ = Pending::kEval;
}

void ClientSession::OnChunk(const FrameView& f) {
  auto c = Decode<WeightsChunk>(f);
  if (!c.ok()) return Emit(ClientEvent::Kind::kIgnored, c.status().message());
  if (Status st = assembler_.Add(*c, f.payload, f.payload_placed); !st.ok()) {
    pending_ = Pending::kNone;
    assembler_.Reset();
    return Emit(ClientEvent::Kind::kTransferFailed, st.message());
  }
  if (!assembler_.complete()) return;
  const Pending done = pending_;
  pending_ = Pending::kNone;
  if (done == Pending::kTrain) {
    ClientEvent e{ClientEvent::Kind::kTrainTask};
    e.round = train_task_.round;
    e.weights.spec = train_task_.spec;
    e.weights.data = assembler_.Take();
    e.train = std::move(train_task_);
    DropUpdate();  // the new task replaces an update not yet acknowledged
    return Emit(std::move(e));
  }
  ClientEvent e{ClientEvent::Kind::kEvalTask};
  e.round = eval_task_.round;
  e.weights.spec = eval_task_.spec;
  e.weights.data = assembler_.Take();
  e.eval = std::move(eval_task_);
  Emit(std::move(e));
}

void ClientSession::OnError(const FrameView& f) {
  auto e = Decode<Error>(f);
  if (!e.ok()) return;
  ClientEvent ev{ClientEvent::Kind::kCoordinatorError};
  ev.round = e->round;
  ev.code = e->code;
  ev.message = e->message;
  Emit(std::move(ev));
  switch (e->code) {
    case ErrorCode::kUnknownPeer:
      // The coordinator does not know this connection: it dropped the worker, or ZeroMQ
      // reconnected underneath (a new TCP connection gets a new routing id).
      phase_ = Phase::kIdle;
      return Emit(ClientEvent::Kind::kReconnect, "unknown to the coordinator: " + e->message);
    case ErrorCode::kNotAdmitted:
    case ErrorCode::kVersionMismatch:
      return Refuse(Rejected("coordinator refused this worker: " + e->message));
    case ErrorCode::kStale:
    case ErrorCode::kBadUpdate:
    case ErrorCode::kDuplicate:
      if (update_ && e->round == update_->round) {
        DropUpdate();
        ClientEvent r{ClientEvent::Kind::kUpdateRejected};
        r.round = e->round;
        r.code = e->code;
        r.message = e->message;
        Emit(std::move(r));
      }
      return;
    default:
      return;
  }
}

}  // namespace shoal::protocols
