#include "bench/loadgen/link.h"

#include <cstring>

#include "protocols/codec.h"

namespace shoal::loadgen {

Link::Link(zmq::context_t& context)
    : socket_(context, zmq::socket_type::stream),
      reader_(/*secure=*/false, /*peer_is_server=*/true, size_t{proto::kMaxChunkBytes} + (size_t{1} << 20)) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::reconnect_ivl, 200);
  socket_.set(zmq::sockopt::reconnect_ivl_max, 5000);
  socket_.set(zmq::sockopt::stream_notify, 1);
  socket_.set(zmq::sockopt::sndhwm, 0);
  socket_.set(zmq::sockopt::rcvhwm, 64);
  fd_ = socket_.get(zmq::sockopt::fd);
}

Result<std::unique_ptr<Link>> Link::Create(zmq::context_t& context) {
  try {
    return std::unique_ptr<Link>(new Link(context));
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("new STREAM socket: ") + e.what());
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

void Link::SendRaw(zmq::message_t&& body) {
  if (socket_.send(zmq::buffer(id_), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
    (void)socket_.send(body, zmq::send_flags::none);
  }
}

Status Link::Send(std::string_view message) {
  if (!failure_.ok()) return failure_;
  std::string frame(4 + message.size(), '\0');
  const auto n = static_cast<uint32_t>(message.size());
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(n >> (8 * i));
  std::memcpy(frame.data() + 4, message.data(), message.size());
  bytes_sent_ += message.size();
  if (id_.empty()) {
    outbox_.push_back(std::move(frame));
    return Status::Ok();
  }
  try {
    SendRaw(zmq::message_t(frame.data(), frame.size()));
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    return failure_ = Unavailable(std::string("stream send: ") + e.what());
  }
}

bool Link::Readable() {
  if (has_bytes_) return true;
  try {
    return (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
  } catch (const zmq::error_t&) {
    return false;
  }
}

Result<bool> Link::Next() {
  if (!failure_.ok()) return failure_;
  try {
    while (true) {
      if (has_bytes_) {
        auto next = reader_.Next();
        if (!next.ok()) return failure_ = next.status();
        if (next->has_value()) {
          frame_ = std::move(**next);
          return true;
        }
        has_bytes_ = false;
      }
      zmq::message_t id, data;
      if (!socket_.recv(id, zmq::recv_flags::dontwait)) return false;
      (void)socket_.recv(data, zmq::recv_flags::none);
      if (data.size() == 0) {
        if (id_.empty()) {  // connected: the greeting, then what waited
          id_ = id.to_string();
          const std::string g = proto::Greeting(false);
          SendRaw(zmq::message_t(g.data(), g.size()));
          for (auto& frame : outbox_) SendRaw(zmq::message_t(frame.data(), frame.size()));
          outbox_.clear();
        } else if (id.to_string() == id_) {
          return failure_ = Unavailable("connection closed by the coordinator");
        }
        continue;
      }
      if (id.to_string() != id_) continue;
      bytes_received_ += data.size();
      reader_.Feed(std::string_view(static_cast<const char*>(data.data()), data.size()));
      has_bytes_ = true;
    }
  } catch (const zmq::error_t& e) {
    return failure_ = Unavailable(std::string("stream recv: ") + e.what());
  }
}

}  // namespace shoal::loadgen
