#include "bench/loadgen/link.h"

namespace shoal::loadgen {

Link::Link(zmq::context_t& context, int zmtp_heartbeat_ms)
    : socket_(context, zmq::socket_type::dealer) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::reconnect_ivl, 200);
  socket_.set(zmq::sockopt::reconnect_ivl_max, 5000);
  if (zmtp_heartbeat_ms > 0) {
    socket_.set(zmq::sockopt::heartbeat_ivl, zmtp_heartbeat_ms);
    socket_.set(zmq::sockopt::heartbeat_timeout, 5 * zmtp_heartbeat_ms);
  }
  socket_.set(zmq::sockopt::sndhwm, 0);
  socket_.set(zmq::sockopt::rcvhwm, 0);
  fd_ = socket_.get(zmq::sockopt::fd);
}

Result<std::unique_ptr<Link>> Link::Create(zmq::context_t& context, int zmtp_heartbeat_ms) {
  try {
    return std::unique_ptr<Link>(new Link(context, zmtp_heartbeat_ms));
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("new DEALER socket: ") + e.what());
  }
}

Status Link::Connect(const std::string& endpoint) {
  try {
    socket_.connect(endpoint);
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    return InvalidArgument("connect " + endpoint + ": " + e.what());
  }
}

Status Link::Send(std::string_view message) {
  try {
    if (!socket_.send(zmq::buffer(message.data(), message.size()), zmq::send_flags::dontwait)) {
      return Unavailable("dealer send would block");
    }
    bytes_sent_ += message.size();
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("dealer send: ") + e.what());
  }
}

}  // namespace shoal::loadgen
