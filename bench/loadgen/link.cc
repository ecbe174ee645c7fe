#include "bench/loadgen/link.h"

#include <cstring>

#include "protocols/codec.h"

namespace shoal::loadgen {

namespace {
// A chunk plus its headers, as the real worker accepts (worker/client.cc).
constexpr size_t kMaxMessageBytes = protocols::kMaxMessageBytes;
}  // namespace

Link::Link(zmq::context_t& context, std::shared_ptr<const protocols::TlsContext> tls)
    : socket_(context, zmq::socket_type::stream),
      reader_(/*secure=*/tls != nullptr, /*peer_is_server=*/true,
              tls ? protocols::kMaxWireFrameBytes : kMaxMessageBytes),
      tls_(std::move(tls)) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::reconnect_ivl, 200);
  socket_.set(zmq::sockopt::reconnect_ivl_max, 5000);
  socket_.set(zmq::sockopt::stream_notify, 1);
  socket_.set(zmq::sockopt::sndhwm, 0);
  socket_.set(zmq::sockopt::rcvhwm, 64);
  fd_ = socket_.get(zmq::sockopt::fd);
}

Result<std::unique_ptr<Link>> Link::Create(zmq::context_t& context,
                                           std::shared_ptr<const protocols::TlsContext> tls) {
  try {
    return std::unique_ptr<Link>(new Link(context, std::move(tls)));
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("new STREAM socket: ") + e.what());
  }
}

Status Link::Connect(const std::string& endpoint) {
  try {
    socket_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return InvalidArgument("connect " + endpoint + ": " + e.what());
  }
  if (!tls_) return Status::Ok();
  session_ = std::make_unique<protocols::SecureSession>(tls_, kMaxMessageBytes);
  std::vector<std::string> hello;
  SHOAL_RETURN_IF_ERROR(session_->Start(&hello));
  for (const auto& f : hello) SHOAL_RETURN_IF_ERROR(SendFrame(f));
  return Status::Ok();
}

Status Link::Open() {
  std::vector<std::string> out, messages;
  Status st = session_->OnWire(frame_, &out, &messages);
  for (const auto& f : out)
    (void)SendFrame(f);  // handshake flight, or the alert explaining a failure
  if (!st.ok()) return failure_ = st;
  while (!waiting_.empty() && session_->established()) {
    std::vector<std::string> sealed;
    SHOAL_RETURN_IF_ERROR(session_->Seal(waiting_.front(), &sealed));
    waiting_.pop_front();
    for (const auto& f : sealed) SHOAL_RETURN_IF_ERROR(SendFrame(f));
  }
  for (auto& m : messages) opened_.push_back(std::move(m));
  return Status::Ok();
}

void Link::SendRaw(zmq::message_t&& body) {
  if (socket_.send(zmq::buffer(id_), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
    (void)socket_.send(body, zmq::send_flags::none);
  }
}

Status Link::Send(std::string_view message) { return Send(message, {}); }

Status Link::Send(std::string_view head, std::string_view payload) {
  if (!failure_.ok()) return failure_;
  bytes_sent_ += head.size() + payload.size();
  if (!session_) return SendFrame(head, payload);
  if (!session_->established()) {
    waiting_.push_back(protocols::Join(head, payload));
    return Status::Ok();
  }
  std::vector<std::string> sealed;
  if (Status st = session_->Seal(head, payload, &sealed); !st.ok()) return failure_ = st;
  for (const auto& f : sealed) SHOAL_RETURN_IF_ERROR(SendFrame(f));
  return Status::Ok();
}

// One transport frame holding `frame` + `more`, copied once, into the ZeroMQ message.
Status Link::SendFrame(std::string_view frame_bytes, std::string_view more) {
  if (!failure_.ok()) return failure_;
  const size_t size = frame_bytes.size() + more.size();
  const std::string header = protocols::FrameHeader(size);
  zmq::message_t frame(header.size() + size);
  char* at = static_cast<char*>(frame.data());
  std::memcpy(at, header.data(), header.size());
  if (!frame_bytes.empty()) std::memcpy(at + header.size(), frame_bytes.data(), frame_bytes.size());
  if (!more.empty()) {
    std::memcpy(at + header.size() + frame_bytes.size(), more.data(), more.size());
  }
  if (id_.empty()) {
    outbox_.push_back(std::move(frame));
    return Status::Ok();
  }
  try {
    SendRaw(std::move(frame));
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    return failure_ = Unavailable(std::string("stream send: ") + e.what());
  }
}

bool Link::Readable() {
  if (has_bytes_ || !opened_.empty()) return true;
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
          const std::string g = protocols::Greeting(tls_ != nullptr);
          SendRaw(zmq::message_t(g.data(), g.size()));
          for (auto& frame : outbox_) SendRaw(std::move(frame));
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
