// The coordinator's and the worker's message channels: ZeroMQ sockets carrying either TLS 1.3
// (secure_channel.h; the default) or, only when the user asked for it with --insecure, plain
// frames. Above this layer both sides see whole application messages (codec.h frames) and,
// with TLS, the identity the peer proved in the handshake.
//
// Server (coordinator, one ROUTER). One SecureSession per routing id, created by the first
// frame from that id. A session that fails (bad certificate, flipped bits, a replayed or
// foreign record, a malformed frame) is dropped with an event naming the reason; the next frame
// from that routing id starts a new handshake, which a replayed or garbage frame cannot pass.
// Bounded: at most `max_sessions` sessions (the oldest unfinished handshake is evicted to make
// room), a handshake must finish within `handshake_timeout_ms` (ExpireHandshakes), every
// message is capped at `max_message_bytes` before any memory is reserved for it, and a
// session whose client presented no certificate (enrollment) is capped at
// kUnauthenticatedMaxMessageBytes.
//
// Client (worker, one DEALER per connection). Connect starts the handshake; messages sent
// before it completes wait in order and leave once it does. A failed session makes every later
// call return its Status: the worker reconnects with a new channel, or gives up when the
// failure is Rejected (the coordinator's certificate is not the federation's).
//
// Each channel belongs to one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/pki.h"
#include "common/status.h"
#include "protocols/secure_channel.h"
#include "protocols/transport.h"

namespace shoal::proto {

struct ChannelOptions {
  // TLS context (TlsContext::Server for the coordinator, ::Client for a worker). Null = plain
  // ZeroMQ: nothing is encrypted or authenticated; only for --insecure.
  std::shared_ptr<const TlsContext> tls;
  // Largest application message accepted from a peer (checked before allocating).
  size_t max_message_bytes = kDefaultMaxMessageBytes;
  // Server only: sessions kept at once, and how long a handshake may take.
  size_t max_sessions = 4096;
  int handshake_timeout_ms = 10000;
  SocketOptions socket;
};

struct ChannelMessage {
  std::string peer;     // ROUTER routing id (server side); opaque, never an identity
  std::string message;  // one application message (a codec frame)
  // TLS only: the peer presented a certificate that verified against the federation's CA,
  // whose subject CN is `identity` and whose SHA-256 is `fingerprint`.
  bool authenticated = false;
  std::string identity;
  std::string fingerprint;
};

// Something the channel refused, for logs and rejection counters.
struct ChannelEvent {
  std::string peer;
  std::string reason;  // tls_handshake | tls_certificate | tls_record | session_limit | handshake_timeout
  std::string detail;
};

// A worker's client TLS context from its enrollment bundle: its key and certificate, trusting
// only the bundle's CA, and requiring the coordinator's certificate to carry `server_name`.
Result<std::shared_ptr<const TlsContext>> WorkerTls(const pki::Bundle& bundle,
                                                    const std::string& server_name);

class ServerChannel {
 public:
  explicit ServerChannel(ChannelOptions options);
  ~ServerChannel();
  ServerChannel(const ServerChannel&) = delete;
  ServerChannel& operator=(const ServerChannel&) = delete;

  bool secure() const { return options_.tls != nullptr; }
  Result<std::string> Bind(const std::string& endpoint);
  // The next application message, waiting up to timeout_ms; nullopt when none arrived.
  Result<std::optional<ChannelMessage>> Recv(int timeout_ms);
  // Encrypts (TLS) and sends one message. Unavailable without an established session.
  Status Send(const std::string& peer, std::string_view message);
  // Forgets the peer's session (a revoked or dropped worker): its next frame starts over.
  void Close(const std::string& peer);
  // Drops sessions whose handshake did not finish in time.
  void ExpireHandshakes();
  std::vector<ChannelEvent> TakeEvents();
  size_t sessions() const { return sessions_.size(); }

 private:
  struct Session {
    std::unique_ptr<SecureSession> tls;
    std::chrono::steady_clock::time_point created;
  };
  void OnFrame(Incoming in);
  void Fail(const std::string& peer, const Status& status, std::vector<std::string>& alerts);
  void Event(const std::string& peer, std::string reason, std::string detail);
  bool MakeRoom();

  ChannelOptions options_;
  RouterSocket socket_;
  std::map<std::string, Session> sessions_;
  std::deque<ChannelMessage> ready_;
  std::vector<ChannelEvent> events_;
};

class ClientChannel {
 public:
  explicit ClientChannel(ChannelOptions options);
  ~ClientChannel();
  ClientChannel(const ClientChannel&) = delete;
  ClientChannel& operator=(const ClientChannel&) = delete;

  bool secure() const { return options_.tls != nullptr; }
  // Connects and, with TLS, sends the ClientHello.
  Status Connect(const std::string& endpoint);
  // The next application message, waiting up to timeout_ms; nullopt when none arrived. The
  // session's failure once it has failed.
  Result<std::optional<std::string>> Recv(int timeout_ms);
  // Sends (or, before the handshake completes, queues) one message.
  Status Send(std::string_view message);
  bool established() const { return !session_ || session_->established(); }
  // The TLS session (null in plain mode), e.g. for pinned_ca_pem() after a join.
  const SecureSession* session() const { return session_.get(); }

 private:
  Status Flush();
  Status SendFrames(std::vector<std::string>& frames);

  ChannelOptions options_;
  DealerSocket socket_;
  std::unique_ptr<SecureSession> session_;
  std::deque<std::string> queued_;  // plaintext messages waiting for the handshake
  std::deque<std::string> ready_;
};

}  // namespace shoal::proto
