// The coordinator's and the worker's message channels: connections of the framed transport
// (transport.h) carrying either TLS 1.3 (secure_channel.h; the default) or, only when the user
// asked for it with --insecure, plain frames. Above this layer both sides see whole
// application messages (codec.h frames) and, with TLS, the identity the peer proved in the
// handshake.
//
// Server (coordinator, one listening socket). One SecureSession per connection, created by its
// first frame. A session that fails (bad certificate, flipped bits, a replayed or foreign
// record, a malformed frame) is dropped with an event naming the reason and its connection is
// closed (a TLS alert saying why leaves first). Bounded: at most `max_sessions` sessions (the
// oldest unfinished handshake is evicted to make room), a connection must send its first frame
// and finish its handshake within `handshake_timeout_ms` (ExpireHandshakes), frames are capped
// at 64 KiB until the handshake is done and at kMaxWireFrameBytes after it, every message is
// capped at `max_message_bytes` before any memory is reserved for it, and a session whose
// client presented no certificate (enrollment) is capped at kUnauthenticatedMaxMessageBytes.
//
// Client (worker, one connection per channel). Connect starts the handshake; messages sent
// before it completes wait in order and leave once it does. A failed session or a lost
// connection makes every later call return its Status: the worker reconnects with a new
// channel, or gives up when the failure is Rejected (the coordinator's certificate is not the
// federation's, or the coordinator's mode, TLS or --insecure, is not the worker's).
//
// Each channel belongs to one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "protocols/secure_channel.h"
#include "protocols/transport.h"
#include "security/pki.h"

namespace shoal::protocols {

struct ChannelOptions {
  // TLS context (TlsContext::Server for the coordinator, ::Client for a worker). Null = plain
  // frames: nothing is encrypted or authenticated; only for --insecure.
  std::shared_ptr<const TlsContext> tls;
  // Largest application message accepted from a peer (checked before allocating).
  size_t max_message_bytes = kDefaultMaxMessageBytes;
  // Server only: sessions kept at once, and how long a handshake may take.
  size_t max_sessions = 4096;
  int handshake_timeout_ms = 10000;
  // Server only: connections that large messages (over kSmallMessageBytes) are sent to at once.
  // The others wait their turn, so what is in flight is about this many times
  // kSendSliceBytes x the transport's send queue, whatever the number of workers.
  size_t max_concurrent_sends = 8;
  // Server only: bytes handed to ZeroMQ and not yet written to a socket, over all connections,
  // beyond which no further slice of a large message is made.
  size_t max_in_flight_bytes = size_t{16} << 20;
  SocketOptions socket;
};

struct ChannelMessage {
  std::string peer;     // connection id (server side); opaque, never an identity
  std::string message;  // one application message (a codec frame); only its head when placed
  // TLS with a payload placer (placement.h): the frame's payload was decrypted where the placer
  // said, `placed_payload`, kept allocated by `payload_owner`.
  bool placed = false;
  std::string_view placed_payload;
  std::shared_ptr<void> payload_owner;
  // TLS only: the peer presented a certificate that verified against the federation's CA,
  // whose subject CN is `identity` and whose SHA-256 is `fingerprint`.
  bool authenticated = false;
  std::string identity;
  std::string fingerprint;
};

// Something the channel refused, for logs and rejection counters.
struct ChannelEvent {
  std::string peer;
  // tls_handshake | tls_certificate | tls_record | session_limit | handshake_timeout |
  // bad_greeting | frame_too_large | connection_limit (transport.h)
  std::string reason;
  std::string detail;
};

// A worker's client TLS context from its enrollment bundle: its key and certificate, trusting
// only the bundle's CA, and requiring the coordinator's certificate to carry `server_name`.
Result<std::shared_ptr<const TlsContext>> WorkerTls(const security::Bundle& bundle,
                                                    const std::string& server_name);

// Pacing of the server's sends: a large message is encrypted (and copied) slice by slice, only
// as fast as its connection takes it.
inline constexpr size_t kSmallMessageBytes = size_t{64} << 10;
inline constexpr size_t kSendSliceBytes = size_t{256} << 10;
inline constexpr int kSendQueueMessages = 8;

class ServerChannel {
 public:
  explicit ServerChannel(ChannelOptions options);
  ~ServerChannel();
  ServerChannel(const ServerChannel&) = delete;
  ServerChannel& operator=(const ServerChannel&) = delete;

  bool secure() const { return options_.tls != nullptr; }
  // TLS only, before the first connection: where each peer's frame payloads are decrypted to
  // (SecureSession::set_payload_placer, with the peer's connection id).
  using PayloadPlacer = std::function<PayloadPlacement(
      const std::string& peer, std::string_view head, size_t payload_bytes)>;
  void set_payload_placer(PayloadPlacer placer) { placer_ = std::move(placer); }
  Result<std::string> Bind(const std::string& endpoint);
  // The next application message, waiting up to timeout_ms; nullopt when none arrived.
  Result<std::optional<ChannelMessage>> Recv(int timeout_ms);
  // Queues one message for the peer (after what is already queued for it) and sends as much as
  // its connection takes now; the rest leaves from Recv() and PumpOutput(). Small messages go
  // at once; large ones wait for one of max_concurrent_sends slots and are encrypted (TLS)
  // slice by slice as they leave. The shared form lets one broadcast buffer serve every peer
  // without a copy per peer. Unavailable without an established session.
  // `may_overtake`: the message (small, order-insensitive: a heartbeat) may leave before
  // queued messages that have not started yet, so a peer waiting for its turn still hears
  // from the coordinator.
  Status Send(const std::string& peer, std::string_view message, bool may_overtake = false);
  Status Send(const std::string& peer, std::shared_ptr<const std::string> message,
              bool may_overtake = false);
  // Sends queued output as far as the connections take it.
  void PumpOutput();
  // Keeps sending queued output for up to timeout_ms (before shutting down).
  void Flush(int timeout_ms);
  // Forgets the peer's session and closes its connection (what was already sent still leaves).
  void Close(const std::string& peer);
  // Peers whose connection ended (the worker went away) since the last call.
  std::vector<std::string> TakeClosed();
  // Drops sessions whose handshake did not finish in time.
  void ExpireHandshakes();
  std::vector<ChannelEvent> TakeEvents();
  size_t sessions() const { return sessions_.size(); }

 private:
  struct Session {
    std::unique_ptr<SecureSession> tls;
    std::chrono::steady_clock::time_point created;
  };
  struct Outgoing {
    std::shared_ptr<const std::string> message;
    size_t offset = 0;  // bytes of it already sealed / handed over
    bool started = false;
  };
  struct Outbox {
    std::deque<Outgoing> queue;
    std::deque<Outgoing> urgent;  // small messages that may overtake queue's unstarted ones
    // The next piece, made but not yet taken by the transport: `prefix`, then `bytes` inside
    // `owner` (the sealed records with TLS, the shared message itself in plain mode).
    std::string prefix;
    std::string_view bytes;
    std::shared_ptr<const void> owner;
    bool has_piece = false;
    bool slot = false;  // holds one of max_concurrent_sends
  };
  // Sends what the peer's connection takes. Returns false when it is blocked (full transport
  // queue or waiting for a slot) and the peer's outbox must be kept.
  Result<bool> PumpPeer(const std::string& peer, Outbox& box);
  Status MakePiece(const std::string& peer, Outbox& box);
  void DropOutbox(const std::string& peer);
  void ReleaseSlot(Outbox& box);
  void OnFrame(Incoming in);
  void OnTransportEvents();
  void Fail(const std::string& peer, const Status& status, std::vector<std::string>& alerts);
  void Event(const std::string& peer, std::string reason, std::string detail);
  bool MakeRoom();

  ChannelOptions options_;
  PayloadPlacer placer_;
  StreamListener socket_;
  std::map<std::string, Session> sessions_;
  std::deque<ChannelMessage> ready_;
  std::vector<ChannelEvent> events_;
  std::vector<std::string> closed_;
  std::map<std::string, Outbox> outboxes_;
  std::deque<std::string> slot_waiters_;
  size_t slots_used_ = 0;
};

class ClientChannel {
 public:
  explicit ClientChannel(ChannelOptions options);
  ~ClientChannel();
  ClientChannel(const ClientChannel&) = delete;
  ClientChannel& operator=(const ClientChannel&) = delete;

  // TLS only, before Connect: where frame payloads are decrypted to
  // (SecureSession::set_payload_placer).
  void set_payload_placer(SecureSession::PayloadPlacer placer) { placer_ = std::move(placer); }
  // Connects and, with TLS, sends the ClientHello.
  Status Connect(const std::string& endpoint);
  // The next application message, waiting up to timeout_ms; nullopt when none arrived (or,
  // earlier, when options.socket.wake_fd became readable). The session's failure once it has
  // failed.
  Result<std::optional<Plaintext>> RecvMessage(int timeout_ms);
  // The same, the message in one string (a placed payload copied back behind its head).
  Result<std::optional<std::string>> Recv(int timeout_ms);
  // Sends (or, before the handshake completes, queues) one message.
  Status Send(std::string_view message);
  // The message head + body, sealed without joining them first (a frame's header and its
  // payload, sent from where the payload lies: codec.h FramePieces).
  Status Send(std::string_view head, std::string_view body);
  bool established() const { return !session_ || session_->established(); }
  // The TLS session (null in plain mode), e.g. for pinned_ca_pem() after a join.
  const SecureSession* session() const { return session_.get(); }

 private:
  Status Flush();
  Status SendFrames(std::vector<std::string>& frames);

  ChannelOptions options_;
  SecureSession::PayloadPlacer placer_;
  StreamConnection socket_;
  std::unique_ptr<SecureSession> session_;
  std::deque<std::string> queued_;  // plaintext messages waiting for the handshake
  std::deque<Plaintext> ready_;
};

}  // namespace shoal::protocols
