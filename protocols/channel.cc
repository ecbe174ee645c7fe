#include "protocols/channel.h"

#include <algorithm>
#include <utility>

namespace shoal::proto {

using Clock = std::chrono::steady_clock;

namespace {

int RemainingMs(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::max<int64_t>(0, left));
}

// A session's failure as a counter reason: certificate problems are Rejected by SecureSession.
const char* FailureReason(const SecureSession& s, const Status& status) {
  if (status.code() == Code::kRejected) return "tls_certificate";
  return s.established() ? "tls_record" : "tls_handshake";
}

SocketOptions WithFrameCap(SocketOptions socket, bool secure, size_t max_message_bytes) {
  // Every ZeroMQ frame is one message (plain) or holds whole TLS records of at most
  // kMaxWireFrameBytes (TLS); anything larger is refused by ZeroMQ before it is buffered.
  const size_t cap = secure ? kMaxWireFrameBytes : max_message_bytes;
  if (socket.max_frame_bytes == 0 || static_cast<size_t>(socket.max_frame_bytes) > cap) {
    socket.max_frame_bytes = static_cast<int64_t>(cap);
  }
  return socket;
}

}  // namespace

Result<std::shared_ptr<const TlsContext>> WorkerTls(const pki::Bundle& bundle,
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
    : options_(std::move(options)),
      socket_(WithFrameCap(options_.socket, options_.tls != nullptr, options_.max_message_bytes)) {}

ServerChannel::~ServerChannel() = default;

Result<std::string> ServerChannel::Bind(const std::string& endpoint) { return socket_.Bind(endpoint); }

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
  }
  // A TLS alert tells the peer why (e.g. "unknown CA"); best effort.
  for (const auto& frame : alerts) (void)socket_.Send(peer, frame);
}

bool ServerChannel::MakeRoom() {
  if (sessions_.size() < options_.max_sessions) return true;
  auto oldest = sessions_.end();
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->second.tls->established()) continue;
    if (oldest == sessions_.end() || it->second.created < oldest->second.created) oldest = it;
  }
  if (oldest == sessions_.end()) return false;
  Event(oldest->first, "session_limit", "unfinished handshake evicted to make room");
  sessions_.erase(oldest);
  return true;
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
            "already " + std::to_string(sessions_.size()) + " sessions; frame dropped");
      return;
    }
    Session s;
    s.tls = std::make_unique<SecureSession>(options_.tls, options_.max_message_bytes);
    s.created = Clock::now();
    std::vector<std::string> none;
    if (Status st = s.tls->Start(&none); !st.ok()) {
      Event(in.peer, "tls_handshake", st.message());
      return;
    }
    it = sessions_.emplace(in.peer, std::move(s)).first;
  }
  SecureSession& tls = *it->second.tls;
  std::vector<std::string> out;
  std::vector<std::string> messages;
  Status st = tls.OnWire(in.frame, &out, &messages);
  if (!st.ok()) {
    Fail(in.peer, st, out);
    return;
  }
  for (const auto& frame : out) {
    if (Status s = socket_.Send(in.peer, frame); !s.ok()) {
      Event(in.peer, "send", s.message());
      sessions_.erase(in.peer);
      return;
    }
  }
  for (auto& text : messages) {
    ChannelMessage m;
    m.peer = in.peer;
    m.message = std::move(text);
    m.authenticated = tls.peer_authenticated();
    m.identity = tls.peer_name();
    m.fingerprint = tls.peer_fingerprint();
    ready_.push_back(std::move(m));
  }
}

Result<std::optional<ChannelMessage>> ServerChannel::Recv(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (ready_.empty()) {
    auto in = socket_.Recv(RemainingMs(deadline));
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

Status ServerChannel::Send(const std::string& peer, std::string_view message) {
  if (!options_.tls) return socket_.Send(peer, message);
  auto it = sessions_.find(peer);
  if (it == sessions_.end() || !it->second.tls->established()) {
    return Unavailable("no secure session with this peer");
  }
  std::vector<std::string> frames;
  if (Status st = it->second.tls->Seal(message, &frames); !st.ok()) {
    sessions_.erase(it);
    return st;
  }
  for (const auto& frame : frames) SHOAL_RETURN_IF_ERROR(socket_.Send(peer, frame));
  return Status::Ok();
}

void ServerChannel::Close(const std::string& peer) {
  sessions_.erase(peer);
  ready_.erase(std::remove_if(ready_.begin(), ready_.end(),
                              [&](const ChannelMessage& m) { return m.peer == peer; }),
               ready_.end());
}

void ServerChannel::ExpireHandshakes() {
  const auto limit = std::chrono::milliseconds(options_.handshake_timeout_ms);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (!it->second.tls->established() && Clock::now() - it->second.created > limit) {
      Event(it->first, "handshake_timeout",
            "no finished handshake after " + std::to_string(options_.handshake_timeout_ms) + " ms");
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ClientChannel

ClientChannel::ClientChannel(ChannelOptions options)
    : options_(std::move(options)),
      socket_(WithFrameCap(options_.socket, options_.tls != nullptr, options_.max_message_bytes)) {}

ClientChannel::~ClientChannel() = default;

Status ClientChannel::SendFrames(std::vector<std::string>& frames) {
  for (const auto& frame : frames) SHOAL_RETURN_IF_ERROR(socket_.Send(frame));
  frames.clear();
  return Status::Ok();
}

Status ClientChannel::Connect(const std::string& endpoint) {
  SHOAL_RETURN_IF_ERROR(socket_.Connect(endpoint));
  if (!options_.tls) return Status::Ok();
  session_ = std::make_unique<SecureSession>(options_.tls, options_.max_message_bytes);
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

Status ClientChannel::Send(std::string_view message) {
  if (!session_) {
    if (options_.tls) return Internal("Send before Connect");
    return socket_.Send(message);
  }
  if (session_->failed()) return session_->failure();
  if (!session_->established()) {
    queued_.emplace_back(message);
    return Status::Ok();
  }
  std::vector<std::string> frames;
  SHOAL_RETURN_IF_ERROR(session_->Seal(message, &frames));
  return SendFrames(frames);
}

Result<std::optional<std::string>> ClientChannel::Recv(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (ready_.empty()) {
    if (session_ && session_->failed()) return session_->failure();
    auto in = socket_.Recv(RemainingMs(deadline));
    if (!in.ok()) return in.status();
    if (in->has_value()) {
      if (!session_) {
        if (options_.tls) return Internal("Recv before Connect");
        ready_.push_back(std::move(**in));
        continue;
      }
      std::vector<std::string> out;
      std::vector<std::string> messages;
      Status st = session_->OnWire(**in, &out, &messages);
      (void)SendFrames(out);  // handshake flights, or the alert that explains a failure
      if (!st.ok()) return st;
      SHOAL_RETURN_IF_ERROR(Flush());
      for (auto& m : messages) ready_.push_back(std::move(m));
      continue;
    }
    if (Clock::now() >= deadline) break;
  }
  if (ready_.empty()) return std::optional<std::string>();
  std::string m = std::move(ready_.front());
  ready_.pop_front();
  return std::optional<std::string>(std::move(m));
}

}  // namespace shoal::proto
