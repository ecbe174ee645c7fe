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
// Wire format of a connection. Each side first sends an 8-byte greeting: "SHOAL", the wire
// version (1), the mode ('T' = TLS 1.3 records follow, 'P' = plain frames, only with
// --insecure) and a zero byte. A peer whose greeting is not Shoal's, is of another version or
// of the other mode is disconnected with a reason that says so (a worker started with
// --insecure against a TLS coordinator learns it from the coordinator's greeting). Then every
// frame is a 4-byte little-endian length followed by that many bytes; a length above the
// connection's cap closes the connection before anything is reserved for it.
//
// Connections have no identity at this level: the server names each one with an id that
// libzmq assigns (never chosen by the client) and that is never reused. Each socket belongs to
// one thread. All receives take a timeout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal::proto {

// Largest cap a frame can have (the length prefix is 32-bit).
inline constexpr size_t kMaxFrameCap = 0xFFFFFFFFu;
inline constexpr size_t kGreetingBytes = 8;

struct Incoming {
  std::string peer;   // connection id assigned by the server's socket (opaque, never an identity)
  std::string frame;  // one whole frame
};

struct SocketOptions {
  // Largest frame accepted from a peer (0 = kMaxFrameCap). The server can lower or raise it per
  // connection (RouterSocket::SetFrameCap); new connections start at `initial_frame_bytes`
  // when that is non-zero.
  size_t max_frame_bytes = 0;
  size_t initial_frame_bytes = 0;
  // The greeting's mode: true = TLS records follow ('T'), false = plain frames ('P').
  bool secure = false;
  int linger_ms = 0;
  int reconnect_ivl_ms = 200;
  int reconnect_ivl_max_ms = 5000;  // ZeroMQ's own exponential back-off ceiling
  // Messages (of any size) waiting in ZeroMQ for one connection before sends to it report
  // "full" (RouterSocket::TrySend); 0 = no limit.
  int send_queue_messages = 0;
  // Server: connections open at once; more are closed as soon as they arrive.
  size_t max_connections = 8192;
  // Server: a connection that sends no whole frame within this time is closed (0 = never).
  int first_frame_timeout_ms = 10000;
  // How long a connection the server closes keeps sending what was already queued for it
  // (an Error or a TLS alert explaining why) before it is cut.
  int close_grace_ms = 300;
};

// Something the transport did to a connection on its own.
struct TransportEvent {
  std::string peer;
  // closed (the peer went away: not a rejection) | bad_greeting | frame_too_large |
  // connection_limit
  std::string reason;
  std::string detail;
};

// Reassembles frames from a connection's bytes, one at a time, checking the greeting and every
// length prefix against the cap in force when that frame begins. Holds at most the frame being
// assembled plus the bytes fed after it.
class FrameReader {
 public:
  FrameReader(bool secure, bool peer_is_server, size_t cap);
  void set_cap(size_t cap) { cap_ = cap; }
  size_t cap() const { return cap_; }
  // Hands over bytes received. Call Next() until it returns nullopt before feeding more.
  void Feed(std::string_view bytes);
  // The next whole frame; nullopt when more bytes are needed. After an error the connection
  // is unusable: kRejected for a Shoal greeting of the other mode or another version,
  // kProtocol for anything else; error_reason() says which check failed.
  Result<std::optional<std::string>> Next();
  // "bad_greeting" or "frame_too_large" after Next() failed.
  const char* error_reason() const { return error_reason_; }
  size_t buffered() const { return pending_.size() - consumed_ + body_.size(); }

 private:
  bool secure_;
  bool peer_is_server_;
  size_t cap_;
  bool greeted_ = false;
  bool in_body_ = false;
  size_t need_ = 0;
  std::string body_;
  std::string pending_;  // bytes not yet parsed (from consumed_ on)
  size_t consumed_ = 0;
  const char* error_reason_ = "";
};

std::string Greeting(bool secure);
// The 4-byte length prefix of a frame of n bytes.
std::string FrameHeader(size_t n);

class RouterSocket {
 public:
  explicit RouterSocket(const SocketOptions& options = {});
  ~RouterSocket();
  RouterSocket(const RouterSocket&) = delete;
  RouterSocket& operator=(const RouterSocket&) = delete;

  // Binds and returns the resolved endpoint (port 0 / "*" resolved to the real port).
  Result<std::string> Bind(const std::string& endpoint);
  // The next whole frame from any peer, waiting up to timeout_ms; nullopt when none arrived.
  Result<std::optional<Incoming>> Recv(int timeout_ms);
  // Sends one frame. Unavailable when the connection is gone or closing, or its send queue
  // is full.
  Status Send(const std::string& peer, std::string_view frame);
  // Writes `prefix` then `bytes` to the connection as they are (the caller frames them:
  // FrameHeader()). false when the connection's send queue is full: nothing was written, try
  // again later. Unavailable when the connection is gone or closing.
  Result<bool> TrySend(const std::string& peer, std::string_view prefix, std::string_view bytes);
  // Closes a connection: what was already sent to it still leaves within close_grace_ms,
  // nothing more is read from it.
  void Close(const std::string& peer);
  // Sets the largest frame accepted from this connection from its next frame on.
  void SetFrameCap(const std::string& peer, size_t cap);
  std::vector<TransportEvent> TakeEvents();
  size_t connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class DealerSocket {
 public:
  explicit DealerSocket(const SocketOptions& options = {});
  ~DealerSocket();
  DealerSocket(const DealerSocket&) = delete;
  DealerSocket& operator=(const DealerSocket&) = delete;

  // Starts connecting (ZeroMQ retries with back-off until the server answers). Frames sent
  // before the connection is up wait in order.
  Status Connect(const std::string& endpoint);
  // The next whole frame, waiting up to timeout_ms; nullopt when none arrived. Once the
  // connection was up and is lost, every call returns Unavailable: make a new socket.
  Result<std::optional<std::string>> Recv(int timeout_ms);
  Status Send(std::string_view frame);
  bool connected() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::proto
