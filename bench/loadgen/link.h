// One synthetic worker's connection to the coordinator: a ZeroMQ DEALER socket behind the
// smallest interface the load generator needs. Every byte a synthetic worker sends or receives
// passes through Link::Send and Link::Receive, so a transport layer (e.g. the TLS 1.3 secure
// channel: SecureSession::Start in Connect, Seal in Send, OnWire in Receive, with messages
// queued until the handshake is done) can be added here without touching the protocol logic.
//
// Unlike protocols/transport.h (one socket, blocking receive with a timeout), a Link exposes
// its socket's notification descriptor so one thread can epoll thousands of them, and Receive
// never blocks.
// Socket options match the real worker's (transport.cc): no HWM drops, ZMTP heartbeats,
// ZeroMQ's reconnect back-off.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "common/status.h"

namespace shoal::loadgen {

class Link {
 public:
  // A new DEALER socket; Unavailable when ZeroMQ cannot make one (ZMQ_MAX_SOCKETS, EMFILE).
  // zmtp_heartbeat_ms: ZMTP PING interval (the connection is dropped after 5 intervals without
  // traffic, as transport.cc configures the real worker: 2000 / 10000); 0 = no ZMTP heartbeats.
  static Result<std::unique_ptr<Link>> Create(zmq::context_t& context, int zmtp_heartbeat_ms);
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  Status Connect(const std::string& endpoint);

  // Sends one application message (a codec frame). Never blocks (no high-water mark).
  Status Send(std::string_view message);

  // Hands every application message already received to on_message(std::string_view), at
  // most `max` of them, without blocking. The view is valid only during the call. Returns
  // how many were handed over, or the socket's error.
  template <class F>
  Result<size_t> Receive(size_t max, F&& on_message) {
    size_t n = 0;
    try {
      while (n < max) {
        zmq::message_t body;
        if (!socket_.recv(body, zmq::recv_flags::dontwait)) break;
        bytes_received_ += body.size();
        if (body.more()) {  // Shoal messages are single frames; drop the rest, like transport.cc
          zmq::message_t extra;
          while (socket_.get(zmq::sockopt::rcvmore) &&
                 socket_.recv(extra, zmq::recv_flags::dontwait)) {
          }
          ++multipart_dropped_;
          continue;
        }
        ++n;
        on_message(std::string_view(static_cast<const char*>(body.data()), body.size()));
      }
    } catch (const zmq::error_t& e) {
      return Unavailable(std::string("dealer recv: ") + e.what());
    }
    return n;
  }

  // For an event loop: a descriptor that becomes readable when the socket's state may have
  // changed (ZMQ_FD). It is edge-like: after every Send or Receive, and before waiting on it
  // again, check Readable().
  int fd() const { return fd_; }
  // True when Receive would hand over at least one message (ZMQ_EVENTS has POLLIN).
  bool Readable() {
    try {
      return (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
    } catch (const zmq::error_t&) {
      return false;
    }
  }

  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }
  uint64_t multipart_dropped() const { return multipart_dropped_; }

 private:
  Link(zmq::context_t& context, int zmtp_heartbeat_ms);
  zmq::socket_t socket_;
  int fd_ = -1;
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
  uint64_t multipart_dropped_ = 0;
};

}  // namespace shoal::loadgen
