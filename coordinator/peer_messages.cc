// The round engine's side of the channel: TLS setup, the message pump and housekeeping,
// admission (enrollment, authorization, Hello), and the handlers of what workers send.
// Coordinator::Impl is declared in coordinator_impl.h.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "base/file_util.h"
#include "coordinator/coordinator_impl.h"
#include "security/pki.h"

namespace shoal::coordinator {

using Clock = std::chrono::steady_clock;
using protocols::ErrorCode;

namespace {

const char* ReasonName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadMessage:
      return "bad_message";
    case ErrorCode::kVersionMismatch:
      return "version_mismatch";
    case ErrorCode::kNotAdmitted:
      return "not_admitted";
    case ErrorCode::kUnknownPeer:
      return "unknown_peer";
    case ErrorCode::kStale:
      return "stale";
    case ErrorCode::kBadUpdate:
      return "bad_update";
    case ErrorCode::kDuplicate:
      return "duplicate";
    case ErrorCode::kRunFinished:
      return "run_finished";
    case ErrorCode::kModelRefused:
      return "model_refused";
    case ErrorCode::kPrivacyRefused:
      return "privacy_refused";
  }
  return "other";
}

}  // namespace

// TLS with the federation's CA: the coordinator presents coordinator.crt (followed by ca.crt, so
// a worker joining with a token can check the CA against the fingerprint it was given), trusts
// only ca.crt, and lets a client without a certificate finish the handshake so it can redeem a
// join token (such a session may send nothing else).
Status Coordinator::Impl::SetUpChannel() {
  protocols::ChannelOptions co;
  co.max_message_bytes = limits_.max_frame_bytes();
  co.handshake_timeout_ms = static_cast<int>(cfg_.handshake_timeout_ms);
  co.max_concurrent_sends = static_cast<size_t>(cfg_.max_concurrent_sends);
  co.max_anonymous_sessions = cfg_.anonymous_session_limit;
  co.max_anonymous_per_address = cfg_.anonymous_per_address_limit;
  co.anonymous_timeout_ms = static_cast<int>(cfg_.join_timeout_ms);
  co.socket.linger_ms = 2000;  // let Shutdown messages leave before the socket closes
  if (cfg_.insecure) {
    spdlog::warn(
        "!!! INSECURE MODE (--insecure / security.insecure): no TLS. Weights and updates travel "
        "in clear text, any process that can reach the port can join as any worker name, and "
        "nothing is authenticated. Use only for debugging on a trusted host.");
    channel_ = std::make_unique<protocols::ServerChannel>(co);
    return Status::Ok();
  }
  const std::string& dir = cfg_.ca_dir;
  auto read = [&](const std::string& path) -> Result<std::string> {
    auto text = ReadFile(path, security::kMaxCertFileBytes);
    if (!text.ok()) {
      return text.status().Annotate("security.ca_dir " + dir + " (made by `shoalctl ca init DIR`)");
    }
    return text;
  };
  SHOAL_ASSIGN_OR_RETURN(std::string ca, read(security::CaCertPath(dir)));
  SHOAL_ASSIGN_OR_RETURN(std::string cert, read(security::CoordinatorCertPath(dir)));
  SHOAL_ASSIGN_OR_RETURN(std::string key, read(security::CoordinatorKeyPath(dir)));
  protocols::TlsConfig tc;
  tc.cert_pem = cert + ca;
  tc.key_pem = std::move(key);
  tc.ca_pem = ca;
  tc.require_peer_certificate = false;  // join-token enrollment; see Authorize()
  // A revoked certificate fails the handshake: it never gets to send (or reserve) anything.
  tc.is_revoked = [this](const std::string& name, const std::string& fingerprint) {
    workers_.RefreshEnrollment(/*force=*/false);  // a revocation a moment ago counts
    return workers_.Revoked(name, fingerprint);
  };
  auto tls = protocols::TlsContext::Server(tc);
  if (!tls.ok()) return tls.status().Annotate("security.ca_dir " + dir);
  co.tls = std::move(tls).value();
  channel_ = std::make_unique<protocols::ServerChannel>(co);
  // An update's chunk is decrypted straight into the update being assembled (placement.h); any
  // other message, or a chunk the transfer would not take now, is read whole and dispatched.
  channel_->set_payload_placer(
      [this](const std::string& peer, std::string_view head, size_t payload_bytes) {
        return uploads_.Place(peer, head, payload_bytes);
      });
  // Sessions without a certificate exist only to redeem a join token: none while none is open.
  // Asked as each connection starts its handshake, after a look at tokens.json (a stat() unless
  // it changed), so a token created a moment ago already counts.
  channel_->set_accept_anonymous([this] {
    workers_.RefreshEnrollment(/*force=*/false);
    return workers_.join_token_open();
  });
  RefreshEnrollment(/*force=*/true);
  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, security::CaFingerprint(ca));
  spdlog::info("TLS: CA {} fingerprint {}; {} workers enrolled, {} revoked",
               security::CaCertPath(dir), fingerprint, workers_.enrolled_count(),
               workers_.revoked_count());
  return Status::Ok();
}

bool Coordinator::Impl::PumpUntil(Clock::time_point deadline, const std::function<bool()>& done) {
  while (!stop_) {
    if (evals_.pending() && evals_.Done() && evals_.status().ok()) {
      evals_.set_status(CompleteEvaluation());
    }
    if (done()) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    const int wait_ms = static_cast<int>(std::min<int64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1, 200));
    auto in = channel_->Recv(wait_ms);
    if (!in.ok()) {
      spdlog::warn("receive: {}", in.status().ToString());
    } else if (in->has_value()) {
      Dispatch(**in);
      // Drain what is queued before judging anyone silent, but never starve housekeeping (peer
      // timeouts, revocation, handshake expiry): with many workers the queue is never empty.
      if (Clock::now() - last_housekeeping_ > std::chrono::seconds(1)) Housekeeping();
      continue;
    }
    if (Clock::now() - last_housekeeping_ > std::chrono::milliseconds(200)) Housekeeping();
  }
  return false;
}

void Coordinator::Impl::Housekeeping() {
  last_housekeeping_ = Clock::now();
  channel_->ExpireHandshakes();
  error_replies_.Prune(last_housekeeping_);
  RecordChannelEvents();
  for (const auto& id : channel_->TakeClosed()) DropPeer(id, "connection closed");
  RefreshEnrollment(/*force=*/false);
  Publish();
  const std::chrono::milliseconds timeout(cfg_.peer_timeout_ms);
  for (const auto& id : workers_.SilentFor(timeout)) {
    DropPeer(id, "no message for " + std::to_string(cfg_.peer_timeout_ms) + " ms");
  }
}

// Reloads the enrollment tables when they changed (always with `force`); a revoked worker that
// is connected is cut off now (within one housekeeping pass).
void Coordinator::Impl::RefreshEnrollment(bool force) {
  workers_.RefreshEnrollment(force);
  for (const auto& id : workers_.RevokedConnections()) {
    board_.CountRejection("revoked");
    SendError(id, ErrorCode::kNotAdmitted, round_.number(), "certificate revoked");
    DropPeer(id, "certificate revoked");
  }
}

void Coordinator::Impl::RecordChannelEvents() {
  for (const auto& e : channel_->TakeEvents()) {
    board_.CountRejection(e.reason);
    spdlog::warn("channel refused a peer ({}): {}", e.reason, e.detail);
  }
}

// With TLS: the peer must have presented an enrolled, unrevoked certificate, and once admitted
// every message on that connection must come from the same certificate name.
bool Coordinator::Impl::Authorize(const protocols::ChannelMessage& in) {
  if (!channel_->secure()) return true;
  if (in.authenticated && !workers_.enrolled(in.fingerprint)) {
    RefreshEnrollment(/*force=*/true);  // maybe enrolled a moment ago
  }
  const std::optional<Refusal> refusal = workers_.Authorize(in);
  if (!refusal) return true;
  board_.CountRejection(refusal->reason);
  spdlog::warn("refused a message from {}: {}",
               in.identity.empty() ? "(no certificate)" : in.identity, refusal->why);
  SendError(in.peer, ErrorCode::kNotAdmitted, round_.number(), refusal->why);
  DropPeer(in.peer, refusal->why);
  channel_->Close(in.peer);
  return false;
}

// Enrollment: redeem a one-time join token against the worker's CSR and return its certificate.
void Coordinator::Impl::OnJoinRequest(const protocols::ChannelMessage& in,
                                      const protocols::FrameView& f) {
  auto fail = [&](const std::string& why) {
    board_.CountRejection("join_refused");
    spdlog::warn("join refused: {}", why);
    SendError(in.peer, ErrorCode::kNotAdmitted, 0, "join refused: " + why);
    channel_->Close(in.peer);
  };
  if (!channel_->secure())
    return fail("this coordinator runs --insecure; there is nothing to join");
  if (in.authenticated) return fail("already holds a certificate; a JoinRequest needs none");
  auto req = protocols::Decode<protocols::JoinRequest>(f);
  if (!req.ok()) return fail(req.status().message());
  auto resp = workers_.Enroll(*req);
  if (!resp.ok()) return fail(resp.status().message());
  SendMsg(in.peer, *resp);
  channel_->Close(in.peer);
  RefreshEnrollment(/*force=*/false);  // Enroll reloaded the tables: cut newly revoked workers
}

void Coordinator::Impl::SendTo(const std::string& id, std::shared_ptr<const std::string> frame,
                               bool may_overtake) {
  const size_t n = frame->size();
  Status st = channel_->Send(id, std::move(frame), may_overtake);
  if (!st.ok()) {
    spdlog::debug("send to peer failed: {}", st.ToString());
    return;
  }
  round_.AddBytesOut(n);
  board_.AddBytes(0, n);
  if (WorkerStats* ws = workers_.StatsFor(id)) ws->bytes_out += n;
}

void Coordinator::Impl::SendError(const std::string& id, ErrorCode code, uint64_t round,
                                  const std::string& msg) {
  board_.CountRejection(ReasonName(code));
  if (WorkerStats* ws = workers_.StatsFor(id)) ++ws->rejected;
  if (!error_replies_.Take(id, Clock::now())) {
    board_.CountRejection("error_reply_dropped");
    return;
  }
  protocols::Error e;
  e.code = code;
  e.round = round;
  e.message = msg;
  SendMsg(id, e);
}

void Coordinator::Impl::DropPeer(const std::string& id, const std::string& why) {
  const Peer* p = workers_.Find(id);
  if (p == nullptr) return;
  const std::string name = p->name;
  spdlog::warn("worker={} lost: {}", name, why);
  uploads_.Forget(id);
  evals_.Forget(name);
  workers_.Remove(id);
  channel_->Close(id);
  MaybeGrant();
}

void Coordinator::Impl::MaybeGrant() {
  for (const auto& id : uploads_.Grant()) {
    protocols::UploadGrant g;
    g.round = round_.number();
    SendMsg(id, g);
  }
}

void Coordinator::Impl::Dispatch(const protocols::ChannelMessage& in) {
  const size_t bytes = in.message.size() + in.placed_payload.size();
  round_.AddBytesIn(bytes + in.peer.size());
  board_.AddBytes(bytes, 0);
  if (bytes < protocols::kFrameHeaderBytes) {
    // No Shoal peer sends one (every message starts with a frame header): a peer that does is
    // broken or hostile, and answering each with an Error is what it wants.
    board_.CountRejection("short_message");
    if (WorkerStats* ws = workers_.StatsFor(in.peer)) ++ws->rejected;
    const std::string why =
        "sent a message of " + std::to_string(bytes) + " bytes, shorter than a frame header";
    spdlog::warn("peer {} dropped: {}",
                 workers_.Find(in.peer) != nullptr ? workers_.Find(in.peer)->name
                                                   : std::string("(unadmitted)"),
                 why);
    DropPeer(in.peer, why);
    channel_->Close(in.peer);
    return;
  }
  auto frame = in.placed ? protocols::ParseFrame(in.message, in.placed_payload, limits_)
                         : protocols::ParseFrame(in.message, limits_);
  if (frame.ok() && frame->type == protocols::MessageType::kJoinRequest) {
    OnJoinRequest(in, *frame);
    return;
  }
  if (!Authorize(in)) return;
  if (WorkerStats* ws = workers_.StatsFor(in.peer)) {
    ws->bytes_in += bytes;
    ws->last_seen = store::UtcNow();
  }
  Peer* peer = workers_.Find(in.peer);
  const std::string who = peer != nullptr ? peer->name : "(unadmitted)";
  if (!frame.ok()) {
    spdlog::warn("worker={} rejected frame: {}", who, frame.status().message());
    SendError(in.peer, ErrorCode::kBadMessage, round_.number(), frame.status().message());
    return;
  }
  if (frame->type == protocols::MessageType::kHello) {
    OnHello(in.peer, *frame, in.identity, in.fingerprint);
    return;
  }
  if (peer == nullptr) {
    SendError(in.peer, ErrorCode::kUnknownPeer, round_.number(), "say Hello first");
    return;
  }
  Peer& p = *peer;
  p.last_seen = Clock::now();
  switch (frame->type) {
    case protocols::MessageType::kHeartbeat: {
      protocols::Heartbeat hb;
      hb.unix_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
      SendTo(p.id, std::make_shared<const std::string>(protocols::Encode(hb)),
             /*may_overtake=*/true);
      break;
    }
    case protocols::MessageType::kUpdateReady:
      OnUpdateReady(p, *frame);
      break;
    case protocols::MessageType::kWeightsChunk:
      OnChunk(p, *frame);
      break;
    case protocols::MessageType::kEvalResult:
      OnEvalResult(p, *frame);
      break;
    case protocols::MessageType::kError: {
      auto e = protocols::Decode<protocols::Error>(*frame);
      if (e.ok() && e->code == ErrorCode::kPrivacyRefused) {
        // The worker's own privacy settings refuse the run's tasks (worker/privacy_guard.h).
        spdlog::error("worker={} refuses to train under this run's privacy settings: {}", p.name,
                      e->message);
        break;
      }
      spdlog::warn("worker={} reports error: {}", p.name,
                   e.ok() ? e->message : e.status().message());
      break;
    }
    default:
      spdlog::warn("worker={} sent unexpected {}", p.name, protocols::MessageTypeName(frame->type));
      SendError(p.id, ErrorCode::kBadMessage, round_.number(),
                std::string("unexpected message ") + protocols::MessageTypeName(frame->type));
  }
}

void Coordinator::Impl::OnHello(const std::string& id, const protocols::FrameView& f,
                                const std::string& identity, const std::string& fingerprint) {
  auto hello = protocols::Decode<protocols::Hello>(f);
  if (!hello.ok()) {
    spdlog::warn("rejected Hello: {}", hello.status().message());
    SendError(id, ErrorCode::kBadMessage, 0, hello.status().message());
    return;
  }
  if (hello->protocol_version != protocols::kProtocolVersion) {
    SendError(id, ErrorCode::kVersionMismatch, 0,
              "protocol version " + std::to_string(hello->protocol_version) + " not supported");
    return;
  }
  if (auto refusal =
          WorkerRegistry::CheckHello(*hello, channel_->secure(), identity, cfg_.input_shape,
                                     cfg_.num_classes, cfg_.max_samples)) {
    if (!refusal->reason.empty()) board_.CountRejection(refusal->reason);
    spdlog::warn("worker={} not admitted: {}", hello->name, refusal->why);
    SendError(id, ErrorCode::kNotAdmitted, 0, refusal->why);
    return;
  }
  if (Peer* old = workers_.ByName(hello->name); old != nullptr && old->id != id) {
    DropPeer(old->id, "replaced by a new connection with the same name");
  }
  uploads_.Forget(id);  // a Hello again starts over: an upload in progress is given up
  bool fresh = false;
  Peer& p = workers_.Admit(id, *hello, &fresh, fingerprint);
  channel_->Admit(id);  // full frame and message sizes from now on
  protocols::Welcome w;
  w.run_id = run_id_;
  w.worker_name = p.name;
  w.model = cfg_.model;
  w.num_classes = cfg_.num_classes;
  w.heartbeat_ms = cfg_.heartbeat_ms;
  w.peer_timeout_ms = cfg_.peer_timeout_ms;
  w.chunk_bytes = cfg_.chunk_bytes;
  w.model_bytes = model_.bytes;
  SendMsg(id, w);
  // The TorchScript model follows the Welcome, before any task, on the same ordered connection.
  for (const auto& frame : model_frames_) SendTo(id, frame);
  spdlog::info("worker={} admitted ({}): train={} val={} connected={}", p.name,
               fresh ? "new" : "again", p.num_train, p.num_val, workers_.size());
  if (round_.collecting() && round_.selected(p.name) && !round_.accepted(p.name)) {
    SendTrainTask(p);  // a selected worker that reconnected mid-round gets its task again
  }
}

void Coordinator::Impl::SendTrainTask(const Peer& p) {
  const bool evaluate = evals_.TakeDeferred(p.name);
  std::vector<std::shared_ptr<const std::string>> frames = round_.TrainFrames(evaluate);
  if (auto dp = round_dp_.find(p.name); dp != round_dp_.end() && !frames.empty()) {
    // DP tasks differ per silo (q, steps and sigma follow its size): this silo's copy.
    protocols::TrainTask t = train_task_;
    t.eval_round = evaluate ? train_eval_round_ : 0;
    t.dp_mode = static_cast<uint8_t>(dp->second.mode);
    t.dp_clip_norm = dp->second.clip_norm;
    t.dp_noise_multiplier = dp->second.noise_multiplier;
    t.dp_sampling_rate = dp->second.sampling_rate;
    t.dp_steps = dp->second.steps;
    t.dp_seeded_noise = dp->second.seeded_noise ? 1 : 0;
    frames[0] = std::make_shared<const std::string>(protocols::Encode(t));
  }
  for (const auto& frame : frames) SendTo(p.id, frame);
}

void Coordinator::Impl::OnUpdateReady(Peer& p, const protocols::FrameView& f) {
  auto m = protocols::Decode<protocols::UpdateReady>(f);
  if (!m.ok()) {
    spdlog::warn("worker={} bad UpdateReady: {}", p.name, m.status().message());
    SendError(p.id, ErrorCode::kBadMessage, round_.number(), m.status().message());
    return;
  }
  const uint64_t expected_bytes = model::EncodedBytes(encoding_, global_.data.size());
  if (auto refusal = round_.Check(*m, run_id_, p, encoding_, expected_bytes)) {
    spdlog::warn("round={} worker={} update rejected: {}", round_.number(), p.name, refusal->why);
    if (refusal->code == ErrorCode::kBadUpdate) round_.Refuse(p.name, refusal->why);
    SendError(p.id, refusal->code, m->round, refusal->why);
    return;
  }
  if (round_.accepted(p.name)) {  // a resend of the accepted update: same ack, counted once
    protocols::Ack ack;
    ack.round = round_.number();
    ack.sha256 = m->sha256;
    SendMsg(p.id, ack);
    return;
  }
  const int64_t weight = round_.Weight(m->num_samples);
  if (weight < m->num_samples) {
    spdlog::warn(
        "round={} worker={} reports {} samples; weighted as {} (strategy.max_weight_ratio={} x "
        "the median declared training-set size of the round)",
        round_.number(), p.name, m->num_samples, weight, cfg_.max_weight_ratio);
  }
  uploads_.Enqueue(p.id, p.name, std::move(m).value(), weight);
  MaybeGrant();
}

void Coordinator::Impl::OnChunk(Peer& p, const protocols::FrameView& f) {
  auto c = protocols::Decode<protocols::WeightsChunk>(f);
  if (!c.ok() || !uploads_.uploading(p.id)) {
    const std::string why = !c.ok() ? c.status().message() : "chunk without an upload grant";
    spdlog::warn("round={} worker={} chunk rejected: {}", round_.number(), p.name, why);
    SendError(p.id, c.ok() ? ErrorCode::kStale : ErrorCode::kBadMessage, round_.number(), why);
    return;
  }
  auto folded = uploads_.Add(p.id, *c, f.payload, f.payload_placed);
  if (!folded.ok()) {
    spdlog::warn("round={} worker={} update rejected: {}", round_.number(), p.name,
                 folded.status().message());
    round_.Refuse(p.name, folded.status().message());
    SendError(p.id, ErrorCode::kBadUpdate, round_.number(), folded.status().message());
    MaybeGrant();
    return;
  }
  if (!folded->has_value()) return;  // more chunks to come
  const FoldedUpdate& u = **folded;
  const double took = round_.Accept(p.name, u);
  defences_.Folded(p.name);
  workers_.RecordUpdate(p.name, round_.number(), u.ready.train_loss, took);
  protocols::Ack ack;
  ack.round = round_.number();
  ack.sha256 = u.ready.sha256;
  SendMsg(p.id, ack);
  spdlog::info(
      "round={} worker={} update accepted: samples={} weight={} train_loss={:.4f} train_s={:.1f} "
      "({}/{})",
      round_.number(), p.name, u.ready.num_samples, u.weight, u.ready.train_loss,
      u.ready.train_seconds, round_.accepted().size(), round_.selected().size());
  MaybeGrant();
}

void Coordinator::Impl::OnEvalResult(Peer& p, const protocols::FrameView& f) {
  auto m = protocols::Decode<protocols::EvalResult>(f);
  if (!m.ok()) {
    SendError(p.id, ErrorCode::kBadMessage, round_.number(), m.status().message());
    return;
  }
  switch (evals_.Record(p.name, *m, run_id_, p.num_val)) {
    case EvaluationTracker::Outcome::kRecorded:
      break;
    case EvaluationTracker::Outcome::kStale:
      spdlog::warn("round={} worker={} stale EvalResult for round {} ignored", round_.number(),
                   p.name, m->round);
      break;
    case EvaluationTracker::Outcome::kOutOfRange:
      spdlog::warn("round={} worker={} EvalResult out of range ignored", round_.number(), p.name);
      break;
  }
}

}  // namespace shoal::coordinator
