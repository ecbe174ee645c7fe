#include "protocols/transport.h"

#include <zmq.hpp>

namespace shoal::proto {
namespace {

zmq::context_t& Context() {
  static zmq::context_t ctx(1);
  return ctx;
}

void Configure(zmq::socket_t& s, const SocketOptions& o) {
  s.set(zmq::sockopt::linger, o.linger_ms);
  if (o.max_frame_bytes > 0) s.set(zmq::sockopt::maxmsgsize, o.max_frame_bytes);
  s.set(zmq::sockopt::reconnect_ivl, o.reconnect_ivl_ms);
  s.set(zmq::sockopt::reconnect_ivl_max, o.reconnect_ivl_max_ms);
  if (!o.routing_id.empty()) s.set(zmq::sockopt::routing_id, o.routing_id);
  // ZMTP-level pings close a dead TCP connection (e.g. a silent network partition) so the
  // DEALER reconnects on its own; application heartbeats decide whether a peer is lost.
  s.set(zmq::sockopt::heartbeat_ivl, 2000);
  s.set(zmq::sockopt::heartbeat_timeout, 10000);
  // Queue depth is bounded by the protocol (one transfer per peer at a time), not by HWM drops.
  s.set(zmq::sockopt::sndhwm, 0);
  s.set(zmq::sockopt::rcvhwm, 0);
}

// Drops the rest of a multipart message. Returns how many extra frames were dropped.
int DrainMore(zmq::socket_t& s) {
  int dropped = 0;
  while (s.get(zmq::sockopt::rcvmore)) {
    zmq::message_t extra;
    if (!s.recv(extra, zmq::recv_flags::dontwait)) break;
    ++dropped;
  }
  return dropped;
}

bool Poll(zmq::socket_t& s, int timeout_ms) {
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  return zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) > 0;
}

}  // namespace

struct RouterSocket::Impl {
  zmq::socket_t socket{Context(), zmq::socket_type::router};
};

RouterSocket::RouterSocket(const SocketOptions& options) : impl_(std::make_unique<Impl>()) {
  Configure(impl_->socket, options);
  impl_->socket.set(zmq::sockopt::router_mandatory, 1);
}
RouterSocket::~RouterSocket() = default;

Result<std::string> RouterSocket::Bind(const std::string& endpoint) {
  try {
    impl_->socket.bind(endpoint);
    return impl_->socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Unavailable("bind " + endpoint + ": " + e.what());
  }
}

Result<std::optional<Incoming>> RouterSocket::Recv(int timeout_ms) {
  try {
    if (!Poll(impl_->socket, timeout_ms)) return std::optional<Incoming>();
    zmq::message_t id, body;
    if (!impl_->socket.recv(id, zmq::recv_flags::dontwait)) return std::optional<Incoming>();
    Incoming in;
    in.peer = id.to_string();
    if (!impl_->socket.get(zmq::sockopt::rcvmore)) {
      return ProtocolError("empty message from peer");
    }
    (void)impl_->socket.recv(body, zmq::recv_flags::none);
    if (int extra = DrainMore(impl_->socket); extra > 0) {
      return ProtocolError("multipart message with " + std::to_string(extra + 1) +
                           " frames dropped (Shoal messages are single frames)");
    }
    in.frame.assign(static_cast<const char*>(body.data()), body.size());
    return std::optional<Incoming>(std::move(in));
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("router recv: ") + e.what());
  }
}

Status RouterSocket::Send(const std::string& peer, std::string_view frame) {
  try {
    if (!impl_->socket.send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return Unavailable("peer send queue full");
    }
    (void)impl_->socket.send(zmq::buffer(frame.data(), frame.size()), zmq::send_flags::none);
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return Unavailable("peer is not connected");
    return Unavailable(std::string("router send: ") + e.what());
  }
}

struct DealerSocket::Impl {
  zmq::socket_t socket{Context(), zmq::socket_type::dealer};
};

DealerSocket::DealerSocket(const SocketOptions& options) : impl_(std::make_unique<Impl>()) {
  Configure(impl_->socket, options);
}
DealerSocket::~DealerSocket() = default;

Status DealerSocket::Connect(const std::string& endpoint) {
  try {
    impl_->socket.connect(endpoint);
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    return InvalidArgument("connect " + endpoint + ": " + e.what());
  }
}

Result<std::optional<std::string>> DealerSocket::Recv(int timeout_ms) {
  try {
    if (!Poll(impl_->socket, timeout_ms)) return std::optional<std::string>();
    zmq::message_t body;
    if (!impl_->socket.recv(body, zmq::recv_flags::dontwait)) return std::optional<std::string>();
    if (int extra = DrainMore(impl_->socket); extra > 0) {
      return ProtocolError("multipart message from the coordinator dropped");
    }
    return std::optional<std::string>(body.to_string());
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("dealer recv: ") + e.what());
  }
}

Status DealerSocket::Send(std::string_view frame) {
  try {
    (void)impl_->socket.send(zmq::buffer(frame.data(), frame.size()), zmq::send_flags::none);
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("dealer send: ") + e.what());
  }
}

}  // namespace shoal::proto
