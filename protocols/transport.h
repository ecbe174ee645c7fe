// The byte transport under the channels: ZeroMQ STREAM sockets (plain TCP connections managed by
// libzmq: connect with back-off, one poll loop for every peer) carrying Shoal's own framing.
// This is the only place that includes zmq.hpp.
//
// Why not ROUTER/DEALER. ZMTP lets a peer send a multipart message with no end: libzmq holds
// the frames of an unfinished message in the socket's pipe, out of the application's sight
// and outside the high-water mark (which counts whole messages), so one client could make the
// coordinator's memory grow without bound before a single byte reached Shoal's checks
// (ZMQ_MAXMSGSIZE caps one frame, not a message). With a STREAM socket libzmq hands over the
// bytes as they arrive, in pieces of at most 8 KiB, under a high-water mark, and every byte
// passes Shoal's checks: the reassembly buffer of a connection never exceeds its frame cap
// plus one piece.
//
// Wire format (framing.h): a greeting naming the mode (TLS or plain) and version, then
// length-prefixed frames. A peer whose greeting is not Shoal's, is of another version or of the
// other mode is disconnected with a reason that says so (a worker started with --insecure
// against a TLS coordinator learns it from the coordinator's greeting); a length above the
// connection's cap closes the connection before anything is reserved for it.
//
// Connections have no identity at this level: the server names each one with an id that
// libzmq assigns (never chosen by the client) and that is never reused. Each socket belongs to
// one thread. All receives take a timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "protocols/framing.h"

namespace shoal::protocols {

// Milliseconds from now until `deadline`, rounded up (a wait never ends early and spins);
// 0 once it has passed (receive timeouts).
int RemainingMs(std::chrono::steady_clock::time_point deadline);

struct Incoming {
  std::string peer;   // connection id assigned by the server's socket (opaque, never an identity)
  std::string frame;  // one whole frame
};

struct SocketOptions {
  // Largest frame accepted from a peer (0 = kMaxFrameCap). The server can lower or raise it per
  // connection (StreamListener::SetFrameCap); new connections start at `initial_frame_bytes`
  // when that is non-zero.
  size_t max_frame_bytes = 0;
  size_t initial_frame_bytes = 0;
  // The greeting's mode: true = TLS records follow ('T'), false = plain frames ('P').
  bool secure = false;
  int linger_ms = 0;
  int reconnect_ivl_ms = 200;
  int reconnect_ivl_max_ms = 5000;  // ZeroMQ's own exponential back-off ceiling
  // Messages (of any size) waiting in ZeroMQ for one connection before sends to it report
  // "full" (StreamListener::TrySend); 0 = no limit.
  int send_queue_messages = 0;
  // Server: connections open at once; more are closed as soon as they arrive.
  size_t max_connections = 8192;
  // Server: a connection that sends no whole frame within this time is closed (0 = never).
  int first_frame_timeout_ms = 10000;
  // How long a connection the server closes keeps sending what was already queued for it
  // (an Error or a TLS alert explaining why) before it is cut.
  int close_grace_ms = 300;
  // Client: Recv() also returns (with nothing) as soon as this descriptor is readable, e.g. an
  // eventfd another thread signals when it has finished work the receiving loop waits for.
  // Frames that have arrived are delivered first. Draining it is the caller's business (while
  // it stays readable, a Recv with nothing to deliver returns at once). -1 = none.
  int wake_fd = -1;
};

// Something the transport did to a connection on its own.
struct TransportEvent {
  std::string peer;
  // closed (the peer went away: not a rejection) | bad_greeting | frame_too_large |
  // connection_limit
  std::string reason;
  std::string detail;
};

// The coordinator's side: a ZeroMQ STREAM socket bound to an endpoint, holding every worker's
// TCP connection (ids assigned here, never chosen by a client), with Shoal's greeting and
// length-prefixed framing on each.
class StreamListener {
 public:
  explicit StreamListener(const SocketOptions& options = {});
  ~StreamListener();
  StreamListener(const StreamListener&) = delete;
  StreamListener& operator=(const StreamListener&) = delete;

  // Binds and returns the resolved endpoint (port 0 / "*" resolved to the real port).
  Result<std::string> Bind(const std::string& endpoint);
  // The next whole frame from any peer, waiting up to timeout_ms; nullopt when none arrived.
  Result<std::optional<Incoming>> Recv(int timeout_ms);
  // Sends one frame. Unavailable when the connection is gone or closing, or its send queue
  // is full.
  Status Send(const std::string& peer, std::string_view frame);
  // Writes `*prefix` then `bytes` to the connection as they are (the caller frames them:
  // FrameHeader()), without copying `bytes`: ZeroMQ reads them where they are and `owner` is
  // kept alive until it has written them to the socket. Returns true when both went; false
  // when the connection's send queue is full (try again later with what is left: *prefix is
  // cleared once it went). Unavailable when the connection is gone or closing. The bytes count
  // in in_flight_bytes() until ZeroMQ is done with them.
  Result<bool> TrySend(const std::string& peer, std::string* prefix, std::string_view bytes,
                       std::shared_ptr<const void> owner);
  // Bytes handed over with TrySend that ZeroMQ has not yet written to a socket, over every
  // connection: what the sender's pacing keeps bounded.
  size_t in_flight_bytes() const;
  // Closes a connection: what was already sent to it still leaves within close_grace_ms,
  // nothing more is read from it.
  void Close(const std::string& peer);
  // Sets the largest frame accepted from this connection from its next frame on.
  void SetFrameCap(const std::string& peer, size_t cap);
  // The connection's remote address as the kernel reports it (ZeroMQ's "Peer-Address", e.g.
  // "127.0.0.1"), known once it has sent bytes; "" before, or when unknown.
  std::string PeerAddress(const std::string& peer) const;
  std::vector<TransportEvent> TakeEvents();
  size_t connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Frames from this size on are sent without a copy by StreamConnection::Send(std::string&&).
inline constexpr size_t kZeroCopyFrameBytes = size_t{64} << 10;

// A worker's side: a ZeroMQ STREAM socket connected to one endpoint (libzmq reconnects with
// back-off), with the same greeting and framing.
class StreamConnection {
 public:
  explicit StreamConnection(const SocketOptions& options = {});
  ~StreamConnection();
  StreamConnection(const StreamConnection&) = delete;
  StreamConnection& operator=(const StreamConnection&) = delete;

  // Starts connecting (ZeroMQ retries with back-off until the server answers). Frames sent
  // before the connection is up wait in order.
  Status Connect(const std::string& endpoint);
  // The next whole frame, waiting up to timeout_ms; nullopt when none arrived. Once the
  // connection was up and is lost, every call returns Unavailable: make a new socket.
  Result<std::optional<std::string>> Recv(int timeout_ms);
  Status Send(std::string_view frame);
  // The same, taking the frame over: one of kZeroCopyFrameBytes or more (with an unbounded
  // send queue, the default) is handed to ZeroMQ where it lies instead of being copied into a
  // message, and freed once sent.
  Status SendOwned(std::string&& frame);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Ends ZeroMQ's context and its I/O and reaper threads; the next socket makes a new one. Call
// only when no socket is open (it waits for them). The worker calls it after redeeming a join
// token, before its sandbox: those threads block every signal, so Landlock (base/landlock.h)
// could not reach them, and they would connect later without its TCP rule.
void ReleaseTransport();

}  // namespace shoal::protocols
