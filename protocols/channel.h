// The coordinator's and the worker's message channels: connections of the framed transport
// (transport.h) carrying either TLS 1.3 (secure_channel.h; the default) or, only when the user
// asked for it with --insecure, plain frames. Above this layer both sides see whole
// application messages (codec.h frames) and, with TLS, the identity the peer proved in the
// handshake.
//
// Server (coordinator, one listening socket). One SecureSession per connection, created by its
// first frame. A session that fails (bad certificate, flipped bits, a replayed or foreign
// record, a malformed frame) is dropped with an event naming the reason and its connection is
// closed (a TLS alert saying why leaves first). Bounded: at most `max_sessions` sessions (to make
// room, the oldest session without a certificate is evicted first, then the oldest unfinished
// handshake; a session with a certificate never is), a connection must send its first frame and
// finish its handshake within `handshake_timeout_ms` (ExpireHandshakes), frames and messages are
// capped at kUnadmittedBytes until the application admits the connection (Admit(), once its
// Hello is accepted; it must be within `handshake_timeout_ms` too) and at kMaxWireFrameBytes /
// `max_message_bytes` after it, every message before any memory is reserved for it. A revoked
// certificate (TlsConfig::is_revoked) fails the handshake.
//
// Sessions whose client presented no certificate (enrollment with a join token; "anonymous")
// are accepted only while set_accept_anonymous says so (the coordinator: while a join token is
// open), at most `max_anonymous_sessions` at once and `max_anonymous_per_address` per client
// address (beyond either, the oldest such session goes), each must deliver its message within
// `anonymous_timeout_ms` of its handshake, and each message is capped at
// kUnauthenticatedMaxMessageBytes.
//
// Output to a peer that does not read waits in its queue; beyond `max_queued_messages` or
// `max_queued_bytes` (of what its queue alone keeps alive) the peer is dropped. Records TLS
// produces on its own (a KeyUpdate response) leave after what was already sealed, never before.
// A peer the channel drops on its own (failure, deadline, full queue) is reported by
// TakeClosed() as well as by an event.
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

// Defaults of the server's limits (ChannelOptions; the coordinator's config keys
// security.anonymous_session_limit, security.anonymous_per_address_limit and
// security.join_timeout_ms start from the first three). A join needs one session for a moment;
// a worker's queue holds a few replies at a time (heartbeats, acks, grants, errors).
inline constexpr size_t kDefaultMaxAnonymousSessions = 16;
inline constexpr size_t kDefaultMaxAnonymousPerAddress = 4;
inline constexpr int kDefaultAnonymousTimeoutMs = 10000;
inline constexpr size_t kDefaultMaxQueuedMessages = 1024;
inline constexpr size_t kDefaultMaxQueuedBytes = size_t{8} << 20;
// Cap on frames and messages from a connection the application has not admitted yet: a
// ClientHello, the client's second flight (certificate chain, CertificateVerify, Finished) and
// a Hello are a few KiB each.
inline constexpr size_t kUnadmittedBytes = size_t{64} << 10;

struct ChannelOptions {
  // TLS context (TlsContext::Server for the coordinator, ::Client for a worker). Null = plain
  // frames: nothing is encrypted or authenticated; only for --insecure.
  std::shared_ptr<const TlsContext> tls;
  // Largest application message accepted from a peer (checked before allocating).
  size_t max_message_bytes = kDefaultMaxMessageBytes;
  // Server only: sessions kept at once, and how long a handshake (and then admission) may take.
  size_t max_sessions = 4096;
  int handshake_timeout_ms = 10000;
  // Server only: false = every established session gets the full limits at once (a channel
  // whose application has no admission step); the default requires Admit() (see above).
  bool require_admission = true;
  // Server only: sessions without a client certificate (see above).
  size_t max_anonymous_sessions = kDefaultMaxAnonymousSessions;
  size_t max_anonymous_per_address = kDefaultMaxAnonymousPerAddress;
  int anonymous_timeout_ms = kDefaultAnonymousTimeoutMs;
  // Server only: per peer, messages waiting to leave that its queue alone keeps alive (a
  // broadcast buffer shared with other peers costs it nothing more), and their bytes.
  size_t max_queued_messages = kDefaultMaxQueuedMessages;
  size_t max_queued_bytes = kDefaultMaxQueuedBytes;
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
  // tls_handshake | tls_certificate | tls_record | revoked | anonymous_refused |
  // anonymous_limit | session_limit | handshake_timeout | hello_timeout | join_timeout |
  // send_queue_full | bad_greeting | frame_too_large | connection_limit (transport.h)
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
  // The application admits the peer (its Hello was accepted): full frame and message caps from
  // its next frame on, and no admission deadline.
  void Admit(const std::string& peer);
  // Whether sessions without a client certificate are accepted: asked when a connection starts
  // its handshake and again when it finishes one without a certificate (TLS only; sessions
  // already established keep their deadline). Default: never.
  void set_accept_anonymous(std::function<bool()> accept) { accept_anonymous_ = std::move(accept); }
  void set_accept_anonymous(bool accept) {
    set_accept_anonymous([accept] { return accept; });
  }
  // Messages and bytes waiting in the peer's queue that it alone keeps alive (0 without one).
  size_t queued_messages(const std::string& peer) const;
  size_t queued_bytes(const std::string& peer) const;
  // The session's receive buffer (SecureSession::receive_buffer_bytes); 0 without a session.
  size_t receive_buffer_bytes(const std::string& peer) const;
  // Peers whose connection ended (the worker went away) since the last call.
  std::vector<std::string> TakeClosed();
  // Drops sessions whose handshake did not finish in time, sessions not admitted in time, and
  // sessions without a certificate that did not deliver their message in time.
  void ExpireHandshakes();
  std::vector<ChannelEvent> TakeEvents();
  size_t sessions() const { return sessions_.size(); }

 private:
  struct Session {
    std::unique_ptr<SecureSession> tls;
    std::chrono::steady_clock::time_point created;
    std::chrono::steady_clock::time_point established_at;
    bool anonymous = false;  // established without a client certificate
    bool admitted = false;
    std::string address;  // the client's address, for the per-address cap
  };
  struct Outgoing {
    std::shared_ptr<const std::string> message;
    size_t offset = 0;  // bytes of it already sealed / handed over
    bool started = false;
    bool counted = false;  // counts in the queue's caps (the queue alone keeps it alive)
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
    // Frames TLS produced on its own (a KeyUpdate response) after `prefix`/`bytes` were
    // sealed: they leave right after that piece, before anything sealed later.
    std::deque<std::string> tls_frames;
    size_t counted_messages = 0;
    size_t counted_bytes = 0;
  };
  // Sends what the peer's connection takes. Returns false when it is blocked (full transport
  // queue or waiting for a slot) and the peer's outbox must be kept.
  Result<bool> PumpPeer(const std::string& peer, Outbox& box);
  Status MakePiece(const std::string& peer, Outbox& box);
  void DropOutbox(const std::string& peer);
  // Ends a session the channel gave up on: the event, then the peer is reported closed.
  void Drop(const std::string& peer, std::string reason, std::string detail);
  // Sends frames TLS produced while reading (handshake flights, KeyUpdate responses) in order
  // behind what is already queued for the peer. False when the connection cannot take them.
  bool SendTlsFrames(const std::string& peer, std::vector<std::string>& frames);
  // Applies the anonymous caps to a session that just finished its handshake without a
  // certificate; false when it was refused.
  bool AdmitAnonymous(const std::string& peer, Session& session);
  void Pop(Outbox& box);
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
  std::function<bool()> accept_anonymous_ = [] { return false; };
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
