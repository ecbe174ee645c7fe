// ZeroMQ sockets behind a small Status-returning interface; the only place that includes
// zmq.hpp. The coordinator binds a ROUTER, workers connect a DEALER (never REQ/REP, which hangs
// when a peer dies). Every message is a single frame; a peer that sends multipart messages is
// reported as a protocol error and its extra frames are dropped. Each socket belongs to one
// thread. All receives take a timeout.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace shoal::proto {

struct Incoming {
  std::string peer;   // ROUTER routing id (opaque; chosen by the client, never an identity)
  std::string frame;  // one message frame
};

struct SocketOptions {
  int64_t max_frame_bytes = 0;  // ZMQ_MAXMSGSIZE; 0 = unlimited
  int linger_ms = 0;
  int reconnect_ivl_ms = 200;
  int reconnect_ivl_max_ms = 5000;  // ZeroMQ's own exponential back-off ceiling
  // DEALER only: the routing id to announce ("" = ZeroMQ picks one). Never an identity: tests
  // use it to forge another peer's id.
  std::string routing_id;
};

class RouterSocket {
 public:
  explicit RouterSocket(const SocketOptions& options = {});
  ~RouterSocket();
  RouterSocket(const RouterSocket&) = delete;
  RouterSocket& operator=(const RouterSocket&) = delete;

  // Binds and returns the resolved endpoint (port 0 / "*" resolved to the real port).
  Result<std::string> Bind(const std::string& endpoint);
  // Waits up to timeout_ms; nullopt when nothing arrived.
  Result<std::optional<Incoming>> Recv(int timeout_ms);
  // Unavailable when the peer is gone (ZMQ_ROUTER_MANDATORY).
  Status Send(const std::string& peer, std::string_view frame);

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

  Status Connect(const std::string& endpoint);
  Result<std::optional<std::string>> Recv(int timeout_ms);
  Status Send(std::string_view frame);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::proto
