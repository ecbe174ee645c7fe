#include "protocols/channel.h"

#include <algorithm>
#include <utility>

namespace shoal::protocols {

using Clock = std::chrono::steady_clock;

namespace {

// A session's failure as a counter reason: certificate problems are Rejected by SecureSession.
const char* FailureReason(const SecureSession& s, const Status& status) {
  if (s.peer_revoked()) return "revoked";
  if (s.peer_sent_no_certificate()) return "anonymous_refused";
  if (status.code() == Code::kRejected) return "tls_certificate";
  return s.established() ? "tls_record" : "tls_handshake";
}

// After a handshake without a client certificate (enrollment): one capped message, sealed.
constexpr size_t kUnauthenticatedFrameBytes = kUnauthenticatedMaxMessageBytes + (size_t{4} << 10);

// The largest frame a connection may send once admitted: whole TLS records of at most
// kMaxWireFrameBytes (TLS), or one message (plain).
size_t FullFrameCap(const ChannelOptions& o) {
  const size_t cap = o.tls != nullptr ? kMaxWireFrameBytes : o.max_message_bytes;
  return o.socket.max_frame_bytes == 0 || o.socket.max_frame_bytes > cap ? cap
                                                                         : o.socket.max_frame_bytes;
}

std::string Ms(int ms) { return std::to_string(ms) + " ms"; }

SocketOptions ForChannel(const ChannelOptions& o, bool server) {
  // A frame is one message (plain) or whole TLS records of at most kMaxWireFrameBytes (TLS).
  SocketOptions socket = o.socket;
  const bool secure = o.tls != nullptr;
  socket.secure = secure;
  socket.max_frame_bytes = FullFrameCap(o);
  // Small frames until the handshake is done, and until the application admits the peer.
  if (server && (secure || o.require_admission)) socket.initial_frame_bytes = kUnadmittedBytes;
  // A connection that never starts a handshake is closed like one that never finishes it.
  if (server) socket.first_frame_timeout_ms = o.handshake_timeout_ms;
  // Large messages are paced by ServerChannel; ZeroMQ holds a few slices per connection.
  if (server) socket.send_queue_messages = kSendQueueMessages;
  return socket;
}

}  // namespace

Result<std::shared_ptr<const TlsContext>> WorkerTls(const security::Bundle& bundle,
                                                    const std::string& server_name) {
  TlsConfig tc;
  tc.cert_pem = bundle.cert_pem;
  tc.key_pem = bundle.key_pem;
  tc.ca_pem = bundle.ca_pem;
  tc.expected_peer_name = server_name;
  SHOAL_ASSIGN_OR_RETURN(std::shared_ptr<TlsContext> tls, TlsContext::Client(tc));
  return std::shared_ptr<const TlsContext>(std::move(tls));
}

// ---------------------------------------------------------------------------------------------
// ServerChannel

ServerChannel::ServerChannel(ChannelOptions options)
    : options_(std::move(options)), socket_(ForChannel(options_, /*server=*/true)) {}

ServerChannel::~ServerChannel() = default;

Result<std::string> ServerChannel::Bind(const std::string& endpoint) {
  return socket_.Bind(endpoint);
}

void ServerChannel::Event(const std::string& peer, std::string reason, std::string detail) {
  if (events_.size() < 10000) events_.push_back({peer, std::move(reason), std::move(detail)});
}

std::vector<ChannelEvent> ServerChannel::TakeEvents() { return std::exchange(events_, {}); }

void ServerChannel::Fail(const std::string& peer, const Status& status,
                         std::vector<std::string>& alerts) {
  auto it = sessions_.find(peer);
  if (it != sessions_.end()) {
    Event(peer, FailureReason(*it->second.tls, status), status.message());
    sessions_.erase(it);
    DropOutbox(peer);
  }
  // A TLS alert tells the peer why (e.g. "unknown CA"); it leaves before the connection closes.
  for (const auto& frame : alerts) (void)socket_.Send(peer, frame);
  socket_.Close(peer);
  if (closed_.size() < 100000) closed_.push_back(peer);
}

void ServerChannel::Drop(const std::string& peer, std::string reason, std::string detail) {
  Event(peer, std::move(reason), std::move(detail));
  sessions_.erase(peer);
  DropOutbox(peer);
  socket_.Close(peer);
  ready_.erase(std::remove_if(ready_.begin(), ready_.end(),
                              [&](const ChannelMessage& m) { return m.peer == peer; }),
               ready_.end());
  if (closed_.size() < 100000) closed_.push_back(peer);
}

// Evicts, in this order, the oldest session without a certificate or the oldest unfinished
// handshake; a session with a verified certificate is never evicted.
bool ServerChannel::MakeRoom() {
  if (sessions_.size() < options_.max_sessions) return true;
  auto anonymous = sessions_.end(), handshaking = sessions_.end();
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    const Session& s = it->second;
    if (s.anonymous) {
      if (anonymous == sessions_.end() || s.established_at < anonymous->second.established_at) {
        anonymous = it;
      }
    } else if (!s.tls->established()) {
      if (handshaking == sessions_.end() || s.created < handshaking->second.created) {
        handshaking = it;
      }
    }
  }
  if (anonymous != sessions_.end()) {
    Drop(anonymous->first, "session_limit", "session without a certificate evicted to make room");
  } else if (handshaking != sessions_.end()) {
    Drop(handshaking->first, "session_limit", "unfinished handshake evicted to make room");
  } else {
    return false;
  }
  return true;
}

// The newest session without a certificate is the likeliest to be a joiner about to send its
// request; the oldest of its address (or of all) had its chance and goes.
bool ServerChannel::AdmitAnonymous(const std::string& peer, Session& session) {
  if (!accept_anonymous_()) {
    Drop(peer, "anonymous_refused",
         "no client certificate, and no join token is open (sessions without a certificate are "
         "accepted only while one is)");
    return false;
  }
  if (options_.max_anonymous_sessions == 0 || options_.max_anonymous_per_address == 0) {
    Drop(peer, "anonymous_limit", "sessions without a certificate are not accepted");
    return false;
  }
  while (true) {
    size_t total = 0, same = 0;
    auto oldest = sessions_.end(), oldest_same = sessions_.end();
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
      const Session& s = it->second;
      if (!s.anonymous || it->first == peer) continue;
      ++total;
      if (oldest == sessions_.end() || s.established_at < oldest->second.established_at) {
        oldest = it;
      }
      if (s.address != session.address) continue;
      ++same;
      if (oldest_same == sessions_.end() || s.established_at < oldest_same->second.established_at) {
        oldest_same = it;
      }
    }
    if (same >= options_.max_anonymous_per_address) {
      Drop(oldest_same->first, "anonymous_limit",
           "already " + std::to_string(same) + " sessions without a certificate from " +
               session.address + "; the oldest is closed");
    } else if (total >= options_.max_anonymous_sessions) {
      Drop(oldest->first, "anonymous_limit",
           "already " + std::to_string(total) +
               " sessions without a certificate; the oldest is closed");
    } else {
      return true;
    }
  }
}

void ServerChannel::OnFrame(Incoming in) {
  if (!options_.tls) {
    ChannelMessage m;
    m.peer = std::move(in.peer);
    m.message = std::move(in.frame);
    ready_.push_back(std::move(m));
    return;
  }
  auto it = sessions_.find(in.peer);
  if (it == sessions_.end()) {
    if (!MakeRoom()) {
      Event(in.peer, "session_limit",
            "already " + std::to_string(sessions_.size()) + " sessions; connection closed");
      socket_.Close(in.peer);
      return;
    }
    Session s;
    // Until admitted, a peer's messages are as small as its frames.
    s.tls = std::make_unique<SecureSession>(
        options_.tls, options_.require_admission
                          ? std::min(options_.max_message_bytes, kUnadmittedBytes)
                          : options_.max_message_bytes);
    if (!accept_anonymous_()) s.tls->RequirePeerCertificate();
    s.address = socket_.PeerAddress(in.peer);
    if (placer_) {
      s.tls->set_payload_placer([this, peer = in.peer](std::string_view head, size_t bytes) {
        return placer_(peer, head, bytes);
      });
    }
    s.created = Clock::now();
    std::vector<std::string> none;
    if (Status st = s.tls->Start(&none); !st.ok()) {
      Event(in.peer, "tls_handshake", st.message());
      socket_.Close(in.peer);
      return;
    }
    it = sessions_.emplace(in.peer, std::move(s)).first;
  }
  SecureSession& tls = *it->second.tls;
  const bool was_established = tls.established();
  std::vector<std::string> out;
  std::vector<Plaintext> messages;
  Status st = tls.OnWire(in.frame, &out, &messages);
  if (!st.ok()) {
    Fail(in.peer, st, out);
    return;
  }
  if (!SendTlsFrames(in.peer, out)) return;
  if (!was_established && tls.established()) {
    Session& s = it->second;
    s.established_at = Clock::now();
    if (!tls.peer_authenticated()) {
      s.anonymous = true;
      if (!AdmitAnonymous(in.peer, s)) return;
      socket_.SetFrameCap(in.peer, kUnauthenticatedFrameBytes);
    } else if (!options_.require_admission) {
      socket_.SetFrameCap(in.peer, kMaxWireFrameBytes);  // full size at once
    }
  }
  for (Plaintext& text : messages) {
    ChannelMessage m;
    m.peer = in.peer;
    m.message = std::move(text.bytes);
    m.placed = text.placed;
    m.placed_payload = text.payload;
    m.payload_owner = std::move(text.owner);
    m.authenticated = tls.peer_authenticated();
    m.identity = tls.peer_name();
    m.fingerprint = tls.peer_fingerprint();
    ready_.push_back(std::move(m));
  }
}

Result<std::optional<ChannelMessage>> ServerChannel::Recv(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (ready_.empty()) {
    if (!outboxes_.empty()) PumpOutput();
    // Connections do not signal when they can take more: while output waits, look every ms.
    const int wait = outboxes_.empty() ? RemainingMs(deadline) : std::min(RemainingMs(deadline), 1);
    auto in = socket_.Recv(wait);
    OnTransportEvents();
    if (!in.ok()) return in.status();
    if (in->has_value()) {
      OnFrame(std::move(**in));
      continue;
    }
    if (Clock::now() >= deadline) break;
  }
  if (ready_.empty()) return std::optional<ChannelMessage>();
  ChannelMessage m = std::move(ready_.front());
  ready_.pop_front();
  return std::optional<ChannelMessage>(std::move(m));
}

Status ServerChannel::Send(const std::string& peer, std::string_view message, bool may_overtake) {
  return Send(peer, std::make_shared<const std::string>(message), may_overtake);
}

Status ServerChannel::Send(const std::string& peer, std::shared_ptr<const std::string> message,
                           bool may_overtake) {
  if (options_.tls) {
    auto it = sessions_.find(peer);
    if (it == sessions_.end() || !it->second.tls->established()) {
      return Unavailable("no secure session with this peer");
    }
  }
  Outbox& box = outboxes_[peer];
  Outgoing out{std::move(message)};
  // What only this queue keeps alive counts against its caps; a broadcast buffer shared with
  // other peers' queues (and its owner) does not grow with one peer's queue.
  out.counted = out.message.use_count() == 1;
  if (out.counted) {
    const size_t n = out.message->size();
    // What already waits is judged (a single large reply still goes to a peer that reads).
    if (box.counted_messages >= options_.max_queued_messages ||
        box.counted_bytes >= options_.max_queued_bytes) {
      const std::string why = "the peer does not read: " + std::to_string(box.counted_messages) +
                              " messages (" + std::to_string(box.counted_bytes) +
                              " bytes) wait for it, the limit is " +
                              std::to_string(options_.max_queued_messages) + " messages or " +
                              std::to_string(options_.max_queued_bytes) + " bytes";
      Drop(peer, "send_queue_full", why);
      return Unavailable("dropped: " + why);
    }
    ++box.counted_messages;
    box.counted_bytes += n;
  }
  if (may_overtake && out.message->size() <= kSmallMessageBytes) {
    box.urgent.push_back(std::move(out));
  } else {
    box.queue.push_back(std::move(out));
  }
  auto sent = PumpPeer(peer, box);
  if (!sent.ok()) {
    DropOutbox(peer);
    return sent.status();
  }
  if (*sent) DropOutbox(peer);  // everything left: nothing to keep
  return Status::Ok();
}

void ServerChannel::ReleaseSlot(Outbox& box) {
  if (!box.slot) return;
  box.slot = false;
  --slots_used_;
}

void ServerChannel::DropOutbox(const std::string& peer) {
  auto it = outboxes_.find(peer);
  if (it == outboxes_.end()) return;
  ReleaseSlot(it->second);
  outboxes_.erase(it);
  slot_waiters_.erase(std::remove(slot_waiters_.begin(), slot_waiters_.end(), peer),
                      slot_waiters_.end());
}

// The next piece of the head message: a slice of at most kSendSliceBytes, sealed with TLS
// (the frame prefix and the records) or, plain, the frame prefix before the first slice.
Status ServerChannel::MakePiece(const std::string& peer, Outbox& box) {
  Outgoing& head = box.queue.front();
  const std::string& m = *head.message;
  box.prefix.clear();
  box.bytes = {};
  box.owner.reset();
  if (options_.tls) {
    auto it = sessions_.find(peer);
    if (it == sessions_.end()) return Unavailable("no secure session with this peer");
    std::vector<std::string> frames;
    SHOAL_RETURN_IF_ERROR(it->second.tls->SealPart(m, &head.offset, kSendSliceBytes, &frames));
    // A slice (far below kMaxWireFrameBytes) seals into exactly one frame.
    if (frames.size() != 1) return Internal("a sealed slice spans several frames");
    auto sealed = std::make_shared<const std::string>(std::move(frames[0]));
    box.prefix = FrameHeader(sealed->size());
    box.bytes = *sealed;
    box.owner = std::move(sealed);
  } else {
    if (!head.started) box.prefix = FrameHeader(m.size());
    const size_t n = std::min(kSendSliceBytes, m.size() - head.offset);
    box.bytes = std::string_view(m).substr(head.offset, n);
    box.owner = head.message;
    head.offset += n;
  }
  head.started = true;
  box.has_piece = true;
  return Status::Ok();
}

void ServerChannel::Pop(Outbox& box) {
  const Outgoing& front = box.queue.front();
  if (front.counted) {
    --box.counted_messages;
    box.counted_bytes -= front.message->size();
  }
  box.queue.pop_front();
}

Result<bool> ServerChannel::PumpPeer(const std::string& peer, Outbox& box) {
  while (true) {
    // Records TLS made on its own go right after the piece sealed before them.
    if (!box.has_piece && !box.tls_frames.empty()) {
      auto frame = std::make_shared<const std::string>(std::move(box.tls_frames.front()));
      box.tls_frames.pop_front();
      box.prefix = FrameHeader(frame->size());
      box.bytes = *frame;
      box.owner = std::move(frame);
      box.has_piece = true;
    }
    if (box.has_piece) {
      SHOAL_ASSIGN_OR_RETURN(bool taken, socket_.TrySend(peer, &box.prefix, box.bytes, box.owner));
      if (!taken) return false;
      box.has_piece = false;
      box.bytes = {};
      box.owner.reset();
      continue;
    }
    // Drop what is fully handed over; a slot is kept only while large messages follow.
    while (!box.queue.empty() && box.queue.front().started &&
           box.queue.front().offset == box.queue.front().message->size()) {
      Pop(box);
    }
    // Between messages, an urgent one goes first.
    if (!box.urgent.empty() && (box.queue.empty() || !box.queue.front().started)) {
      box.queue.push_front(std::move(box.urgent.front()));
      box.urgent.pop_front();
    }
    if (box.queue.empty() || box.queue.front().message->size() <= kSmallMessageBytes) {
      ReleaseSlot(box);
    }
    if (box.queue.empty()) return true;
    if (box.queue.front().message->size() > kSmallMessageBytes && !box.slot) {
      const bool first_in_line = slot_waiters_.empty() || slot_waiters_.front() == peer;
      if (slots_used_ >= options_.max_concurrent_sends || !first_in_line) {
        if (std::find(slot_waiters_.begin(), slot_waiters_.end(), peer) == slot_waiters_.end()) {
          slot_waiters_.push_back(peer);
        }
        return false;
      }
      if (!slot_waiters_.empty()) slot_waiters_.pop_front();
      box.slot = true;
      ++slots_used_;
    }
    // Memory bound: no new slice of a large message while ZeroMQ still holds enough bytes.
    if (box.slot && socket_.in_flight_bytes() >= options_.max_in_flight_bytes) return false;
    SHOAL_RETURN_IF_ERROR(MakePiece(peer, box));
  }
}

void ServerChannel::PumpOutput() {
  for (auto it = outboxes_.begin(); it != outboxes_.end();) {
    const std::string peer = it->first;
    auto sent = PumpPeer(peer, it->second);
    ++it;
    if (!sent.ok() || *sent) DropOutbox(peer);
  }
}

void ServerChannel::Flush(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!outboxes_.empty() && Clock::now() < deadline) {
    PumpOutput();
    if (outboxes_.empty()) break;
    (void)socket_.Recv(1);  // lets ZeroMQ move bytes and report closed connections
    OnTransportEvents();
  }
}

// Frames TLS produced while reading: queued behind what is already waiting for the peer (a
// KeyUpdate response encrypted after a slice that has not left yet must not overtake it).
bool ServerChannel::SendTlsFrames(const std::string& peer, std::vector<std::string>& frames) {
  if (frames.empty()) return true;
  Outbox& box = outboxes_[peer];
  for (auto& f : frames) box.tls_frames.push_back(std::move(f));
  frames.clear();
  auto sent = PumpPeer(peer, box);
  if (!sent.ok()) {
    Drop(peer, "send", sent.status().message());
    return false;
  }
  if (*sent) DropOutbox(peer);
  return true;
}

void ServerChannel::OnTransportEvents() {
  for (auto& e : socket_.TakeEvents()) {
    sessions_.erase(e.peer);
    DropOutbox(e.peer);
    if (closed_.size() < 100000) closed_.push_back(e.peer);
    if (e.reason != "closed") Event(e.peer, std::move(e.reason), std::move(e.detail));
  }
}

std::vector<std::string> ServerChannel::TakeClosed() { return std::exchange(closed_, {}); }

void ServerChannel::Close(const std::string& peer) {
  // What can still leave (e.g. the Error explaining why) does.
  if (auto it = outboxes_.find(peer); it != outboxes_.end()) (void)PumpPeer(peer, it->second);
  DropOutbox(peer);
  socket_.Close(peer);
  sessions_.erase(peer);
  ready_.erase(std::remove_if(ready_.begin(), ready_.end(),
                              [&](const ChannelMessage& m) { return m.peer == peer; }),
               ready_.end());
}

void ServerChannel::Admit(const std::string& peer) {
  if (options_.tls) {
    auto it = sessions_.find(peer);
    if (it == sessions_.end() || !it->second.tls->established() || it->second.anonymous) return;
    it->second.admitted = true;
    it->second.tls->set_max_message_bytes(options_.max_message_bytes);
  }
  socket_.SetFrameCap(peer, FullFrameCap(options_));
}

size_t ServerChannel::queued_messages(const std::string& peer) const {
  auto it = outboxes_.find(peer);
  return it == outboxes_.end() ? 0 : it->second.counted_messages;
}

size_t ServerChannel::queued_bytes(const std::string& peer) const {
  auto it = outboxes_.find(peer);
  return it == outboxes_.end() ? 0 : it->second.counted_bytes;
}

size_t ServerChannel::receive_buffer_bytes(const std::string& peer) const {
  auto it = sessions_.find(peer);
  return it == sessions_.end() ? 0 : it->second.tls->receive_buffer_bytes();
}

void ServerChannel::ExpireHandshakes() {
  const auto now = Clock::now();
  const auto handshake = std::chrono::milliseconds(options_.handshake_timeout_ms);
  const auto anonymous = std::chrono::milliseconds(options_.anonymous_timeout_ms);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    const Session& s = it->second;
    const std::string peer = it->first;
    ++it;  // Drop erases `peer` only
    if (!s.tls->established()) {
      if (now - s.created > handshake) {
        Drop(peer, "handshake_timeout",
             "no finished handshake after " + Ms(options_.handshake_timeout_ms));
      }
    } else if (s.anonymous) {
      if (now - s.established_at > anonymous) {
        Drop(peer, "join_timeout",
             "no message within " + Ms(options_.anonymous_timeout_ms) +
                 " of a handshake without a certificate (such a session may only send its "
                 "JoinRequest)");
      }
    } else if (options_.require_admission && !s.admitted && now - s.created > handshake) {
      Drop(peer, "hello_timeout",
           "not admitted within " + Ms(options_.handshake_timeout_ms) +
               " of connecting (no Hello, or one that was refused)");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ClientChannel

ClientChannel::ClientChannel(ChannelOptions options)
    : options_(std::move(options)), socket_(ForChannel(options_, /*server=*/false)) {}

ClientChannel::~ClientChannel() = default;

Status ClientChannel::SendFrames(std::vector<std::string>& frames) {
  for (auto& frame : frames) SHOAL_RETURN_IF_ERROR(socket_.SendOwned(std::move(frame)));
  frames.clear();
  return Status::Ok();
}

Status ClientChannel::Connect(const std::string& endpoint) {
  SHOAL_RETURN_IF_ERROR(socket_.Connect(endpoint));
  if (!options_.tls) return Status::Ok();
  session_ = std::make_unique<SecureSession>(options_.tls, options_.max_message_bytes);
  if (placer_) session_->set_payload_placer(placer_);
  std::vector<std::string> out;
  SHOAL_RETURN_IF_ERROR(session_->Start(&out));
  return SendFrames(out);
}

Status ClientChannel::Flush() {
  while (!queued_.empty() && session_->established()) {
    std::vector<std::string> frames;
    SHOAL_RETURN_IF_ERROR(session_->Seal(queued_.front(), &frames));
    queued_.pop_front();
    SHOAL_RETURN_IF_ERROR(SendFrames(frames));
  }
  return Status::Ok();
}

Status ClientChannel::Send(std::string_view message) { return Send(message, {}); }

Status ClientChannel::Send(std::string_view head, std::string_view body) {
  if (!session_) {
    if (options_.tls) return Internal("Send before Connect");
    return body.empty() ? socket_.Send(head) : socket_.SendOwned(Join(head, body));
  }
  if (session_->failed()) return session_->failure();
  if (!session_->established()) {
    queued_.push_back(Join(head, body));
    return Status::Ok();
  }
  std::vector<std::string> frames;
  SHOAL_RETURN_IF_ERROR(session_->Seal(head, body, &frames));
  return SendFrames(frames);
}

Result<std::optional<std::string>> ClientChannel::Recv(int timeout_ms) {
  SHOAL_ASSIGN_OR_RETURN(std::optional<Plaintext> m, RecvMessage(timeout_ms));
  if (!m) return std::optional<std::string>();
  return std::optional<std::string>(std::move(*m).Join());
}

Result<std::optional<Plaintext>> ClientChannel::RecvMessage(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (ready_.empty()) {
    if (session_ && session_->failed()) return session_->failure();
    auto in = socket_.Recv(RemainingMs(deadline));
    if (!in.ok()) return in.status();
    if (in->has_value()) {
      if (!session_) {
        if (options_.tls) return Internal("Recv before Connect");
        ready_.push_back(Plaintext{std::move(**in)});
        continue;
      }
      std::vector<std::string> out;
      std::vector<Plaintext> messages;
      Status st = session_->OnWire(**in, &out, &messages);
      (void)SendFrames(out);  // handshake flights, or the alert that explains a failure
      if (!st.ok()) return st;
      SHOAL_RETURN_IF_ERROR(Flush());
      for (auto& m : messages) ready_.push_back(std::move(m));
      continue;
    }
    break;  // the time is up, or the socket's wake descriptor fired
  }
  if (ready_.empty()) return std::optional<Plaintext>();
  Plaintext m = std::move(ready_.front());
  ready_.pop_front();
  return std::optional<Plaintext>(std::move(m));
}

}  // namespace shoal::protocols
