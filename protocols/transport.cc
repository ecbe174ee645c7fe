#include "protocols/transport.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <zmq.hpp>

#include "base/malloc_tuning.h"

namespace shoal::protocols {
namespace {

using Clock = std::chrono::steady_clock;

std::mutex g_context_mu;
std::unique_ptr<zmq::context_t> g_context;  // made at the first socket, ended by ReleaseTransport

zmq::context_t& Context() {
  std::lock_guard<std::mutex> l(g_context_mu);
  if (!g_context) g_context = std::make_unique<zmq::context_t>(1);
  return *g_context;
}

void Configure(zmq::socket_t& s, const SocketOptions& o) {
  s.set(zmq::sockopt::linger, o.linger_ms);
  s.set(zmq::sockopt::reconnect_ivl, o.reconnect_ivl_ms);
  s.set(zmq::sockopt::reconnect_ivl_max, o.reconnect_ivl_max_ms);
  // Connect and disconnect notifications (an empty data frame) are how connections are tracked.
  s.set(zmq::sockopt::stream_notify, 1);
  // Received bytes wait in pieces of at most 8 KiB; 64 of them per connection at most, then
  // libzmq stops reading that connection (TCP pushes back on the sender).
  s.set(zmq::sockopt::rcvhwm, 64);
  // What waits for a slow connection is bounded by its owner (ServerChannel paces large
  // messages); a full queue is reported, never dropped (STREAM sockets return EAGAIN).
  s.set(zmq::sockopt::sndhwm, o.send_queue_messages);
  // A dead peer behind a silent partition is noticed by the application's heartbeats; TCP
  // keepalive additionally frees the connection on the side that stopped listening.
  s.set(zmq::sockopt::tcp_keepalive, 1);
  s.set(zmq::sockopt::tcp_keepalive_idle, 30);
  s.set(zmq::sockopt::tcp_keepalive_intvl, 5);
  s.set(zmq::sockopt::tcp_keepalive_cnt, 3);
}

enum class Ready { kNothing, kSocket, kWake };

// Waits up to timeout_ms for a message on `s` or, when wake_fd >= 0, for wake_fd to be readable
// (SocketOptions::wake_fd). A message wins over a wake.
Ready Poll(zmq::socket_t& s, int timeout_ms, int wake_fd = -1) {
  zmq::pollitem_t items[2] = {{s.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd, ZMQ_POLLIN, 0}};
  const int n =
      zmq::poll(items, wake_fd >= 0 ? 2 : 1, std::chrono::milliseconds(std::max(0, timeout_ms)));
  if (n <= 0) return Ready::kNothing;
  return (items[0].revents & ZMQ_POLLIN) ? Ready::kSocket : Ready::kWake;
}

zmq::message_t Concat(std::string_view a, std::string_view b) {
  zmq::message_t msg(a.size() + b.size());
  auto* p = static_cast<char*>(msg.data());
  PrefaultForWrite(p, msg.size());
  if (!a.empty()) std::memcpy(p, a.data(), a.size());
  if (!b.empty()) std::memcpy(p + a.size(), b.data(), b.size());
  return msg;
}

// One frame on the wire: its length prefix and bytes in one ZeroMQ message.
zmq::message_t EncodeFrame(std::string_view frame) {
  return Concat(FrameHeader(frame.size()), frame);
}

// The "Peer-Address" metadata libzmq attaches to bytes received on a TCP connection.
std::string PeerAddressOf(zmq::message_t& data) {
  const char* value = zmq_msg_gets(data.handle(), "Peer-Address");
  return value != nullptr ? std::string(value) : std::string();
}

zmq::message_t GreetingMessage(bool secure) {
  const std::string g = Greeting(secure);
  return zmq::message_t(g.data(), g.size());
}

}  // namespace

int RemainingMs(Clock::time_point deadline) {
  // Rounded up: rounded down, the last fraction of a millisecond became poll(0) calls in a loop,
  // so every Recv(50) of an idle worker spun for its last millisecond (strace: ~470 polls/s in
  // a training worker, whose client loop calls Recv(50)).
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(0, left), INT32_MAX));
}

// ---------------------------------------------------------------------------------------------
// StreamListener (server)

struct StreamListener::Impl {
  struct Conn {
    FrameReader reader;
    Clock::time_point opened;
    bool got_frame = false;
    bool closing = false;
    Clock::time_point close_at;
    std::string address;  // the remote address, from its first bytes' metadata
  };

  explicit Impl(const SocketOptions& o) : options(o) {}

  zmq::socket_t socket{Context(), zmq::socket_type::stream};
  SocketOptions options;
  std::map<std::string, Conn> conns;
  std::deque<std::string> ready;  // connections whose reader may hold a whole frame
  std::vector<TransportEvent> events;
  size_t closing = 0;
  std::shared_ptr<std::atomic<size_t>> in_flight = std::make_shared<std::atomic<size_t>>(0);
  std::set<std::string> cut;  // connections this side ended, until libzmq reports them gone
  std::deque<std::string> cut_order;

  void Event(const std::string& peer, std::string reason, std::string detail) {
    if (events.size() < 10000) events.push_back({peer, std::move(reason), std::move(detail)});
  }

  void SendRaw(const std::string& peer, zmq::message_t&& body) {
    try {
      if (socket.send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        (void)socket.send(body, zmq::send_flags::none);
      }
    } catch (const zmq::error_t&) {
      // The connection went away meanwhile; its disconnect notification follows.
    }
  }
  // Ends a connection now. libzmq may still report its disconnect afterwards: that id must
  // not be taken for a new connection.
  void Cut(const std::string& peer) {
    SendRaw(peer, zmq::message_t());
    cut.insert(peer);
    cut_order.push_back(peer);
    if (cut_order.size() > 65536) {
      cut.erase(cut_order.front());
      cut_order.pop_front();
    }
  }

  // Ends a connection that broke the transport's rules at once: nothing it sends is read, and
  // nothing is owed to it (the greeting that explains a mode mismatch went out when it
  // connected).
  void CutNow(std::map<std::string, Conn>::iterator it) {
    if (it->second.closing) --closing;
    Cut(it->first);
    conns.erase(it);
  }

  void BeginClose(std::map<std::string, Conn>::iterator it) {
    if (it->second.closing) return;
    it->second.closing = true;
    it->second.close_at = Clock::now() + std::chrono::milliseconds(options.close_grace_ms);
    it->second.reader = FrameReader(options.secure, false, 0);  // frees its buffers
    ++closing;
  }

  // Cuts connections whose grace period ended and those that sent no frame in time.
  void Reap() {
    const auto now = Clock::now();
    for (auto it = conns.begin(); it != conns.end();) {
      Conn& c = it->second;
      if (c.closing && now >= c.close_at) {
        Cut(it->first);
        --closing;
        it = conns.erase(it);
        continue;
      }
      if (!c.closing && !c.got_frame && options.first_frame_timeout_ms > 0 &&
          now - c.opened > std::chrono::milliseconds(options.first_frame_timeout_ms)) {
        Event(it->first, "handshake_timeout",
              "connection sent no frame within " + std::to_string(options.first_frame_timeout_ms) +
                  " ms");
        BeginClose(it);
      }
      ++it;
    }
  }

  int NextReapMs() const {
    if (conns.empty()) return 1 << 30;
    return closing > 0 ? 20 : 1000;
  }

  void OnNotification(const std::string& peer) {
    if (cut.erase(peer) > 0) return;  // the disconnect of a connection already ended
    auto it = conns.find(peer);
    if (it != conns.end()) {  // the peer went away
      if (it->second.closing) --closing;
      if (!it->second.closing) Event(peer, "closed", "connection closed by the peer");
      conns.erase(it);
      return;
    }
    if (conns.size() >= options.max_connections) {
      Event(peer, "connection_limit",
            "already " + std::to_string(conns.size()) + " connections; new one refused");
      Cut(peer);
      return;
    }
    const size_t cap =
        options.initial_frame_bytes != 0 ? options.initial_frame_bytes : options.max_frame_bytes;
    conns.emplace(peer, Conn{FrameReader(options.secure, false, cap), Clock::now(), false, false,
                             Clock::time_point{}, std::string()});
    SendRaw(peer, GreetingMessage(options.secure));
  }
};

StreamListener::StreamListener(const SocketOptions& options)
    : impl_(std::make_unique<Impl>(options)) {
  Configure(impl_->socket, options);
}
StreamListener::~StreamListener() = default;

Result<std::string> StreamListener::Bind(const std::string& endpoint) {
  try {
    impl_->socket.bind(endpoint);
    return impl_->socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Unavailable("bind " + endpoint + ": " + e.what());
  }
}

Result<std::optional<Incoming>> StreamListener::Recv(int timeout_ms) {
  Impl& m = *impl_;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  try {
    while (true) {
      if (m.closing > 0) m.Reap();
      while (!m.ready.empty()) {
        const std::string peer = m.ready.front();
        auto it = m.conns.find(peer);
        if (it == m.conns.end() || it->second.closing) {
          m.ready.pop_front();
          continue;
        }
        auto next = it->second.reader.Next();
        if (!next.ok()) {
          m.Event(peer, it->second.reader.error_reason(), next.status().message());
          m.ready.pop_front();
          m.CutNow(it);
          continue;
        }
        if (!next->has_value()) {
          m.ready.pop_front();
          continue;
        }
        it->second.got_frame = true;
        // The peer stays at the front: its reader may hold another whole frame.
        return std::optional<Incoming>(Incoming{peer, std::move(**next)});
      }
      const int wait = std::min(RemainingMs(deadline), m.NextReapMs());
      if (Poll(m.socket, wait) == Ready::kNothing) {
        m.Reap();
        if (Clock::now() >= deadline) return std::optional<Incoming>();
        continue;
      }
      zmq::message_t id, data;
      if (!m.socket.recv(id, zmq::recv_flags::dontwait)) continue;
      (void)m.socket.recv(data, zmq::recv_flags::none);
      const std::string peer = id.to_string();
      if (data.size() == 0) {
        m.OnNotification(peer);
        continue;
      }
      auto it = m.conns.find(peer);
      if (it == m.conns.end() || it->second.closing) continue;  // closing: read nothing more
      if (it->second.address.empty()) it->second.address = PeerAddressOf(data);
      it->second.reader.Feed(std::string_view(static_cast<const char*>(data.data()), data.size()));
      m.ready.push_back(peer);
    }
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("stream recv: ") + e.what());
  }
}

Status StreamListener::Send(const std::string& peer, std::string_view frame) {
  auto it = impl_->conns.find(peer);
  if (it == impl_->conns.end()) return Unavailable("peer is not connected");
  if (it->second.closing) return Unavailable("connection is closing");
  if (frame.size() > kMaxFrameCap) return InvalidArgument("frame larger than 4 GiB");
  try {
    if (!impl_->socket.send(zmq::buffer(peer),
                            zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return Unavailable("peer send queue full");
    }
    (void)impl_->socket.send(EncodeFrame(frame), zmq::send_flags::none);
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return Unavailable("peer is not connected");
    return Unavailable(std::string("stream send: ") + e.what());
  }
}

namespace {

// Keeps a zero-copy message's bytes alive until ZeroMQ's I/O thread is done with them.
struct InFlight {
  std::shared_ptr<const void> owner;
  size_t size;
  std::shared_ptr<std::atomic<size_t>> counter;
};

void ReleaseInFlight(void* /*data*/, void* hint) {
  auto* f = static_cast<InFlight*>(hint);
  f->counter->fetch_sub(f->size, std::memory_order_relaxed);
  delete f;
}

}  // namespace

Result<bool> StreamListener::TrySend(const std::string& peer, std::string* prefix,
                                     std::string_view bytes, std::shared_ptr<const void> owner) {
  auto it = impl_->conns.find(peer);
  if (it == impl_->conns.end()) return Unavailable("peer is not connected");
  if (it->second.closing) return Unavailable("connection is closing");
  try {
    auto head = [&] {
      return impl_->socket
          .send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait)
          .has_value();
    };
    if (!prefix->empty()) {
      if (!head()) return false;
      (void)impl_->socket.send(zmq::buffer(*prefix), zmq::send_flags::none);
      prefix->clear();
    }
    if (bytes.empty()) return true;
    if (!head()) return false;
    auto* hint = new InFlight{std::move(owner), bytes.size(), impl_->in_flight};
    impl_->in_flight->fetch_add(bytes.size(), std::memory_order_relaxed);
    zmq::message_t body(const_cast<char*>(bytes.data()), bytes.size(), &ReleaseInFlight, hint);
    (void)impl_->socket.send(body, zmq::send_flags::none);
    return true;
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return Unavailable("peer is not connected");
    return Unavailable(std::string("stream send: ") + e.what());
  }
}

size_t StreamListener::in_flight_bytes() const {
  return impl_->in_flight->load(std::memory_order_relaxed);
}

void StreamListener::Close(const std::string& peer) {
  auto it = impl_->conns.find(peer);
  if (it != impl_->conns.end()) impl_->BeginClose(it);
}

void StreamListener::SetFrameCap(const std::string& peer, size_t cap) {
  auto it = impl_->conns.find(peer);
  if (it != impl_->conns.end() && !it->second.closing) it->second.reader.set_cap(cap);
}

std::string StreamListener::PeerAddress(const std::string& peer) const {
  auto it = impl_->conns.find(peer);
  return it == impl_->conns.end() ? std::string() : it->second.address;
}

std::vector<TransportEvent> StreamListener::TakeEvents() {
  return std::exchange(impl_->events, {});
}

size_t StreamListener::connections() const { return impl_->conns.size(); }

// ---------------------------------------------------------------------------------------------
// StreamConnection (client)

struct StreamConnection::Impl {
  explicit Impl(const SocketOptions& o)
      : options(o), reader(o.secure, /*peer_is_server=*/true, o.max_frame_bytes) {}

  zmq::socket_t socket{Context(), zmq::socket_type::stream};
  SocketOptions options;
  FrameReader reader;
  std::string endpoint;
  std::string id;  // the connection, once up
  bool has_bytes = false;
  std::vector<zmq::message_t> outbox;  // frames sent before the connection was up
  Status failure;                      // set once the connection is lost or refused

  void SendRaw(zmq::message_t&& body) {
    if (socket.send(zmq::buffer(id), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      (void)socket.send(body, zmq::send_flags::none);
    }
  }

  // Sends `first`, then `second` unless it is empty; before the connection is up they wait.
  Status Send(zmq::message_t&& first, zmq::message_t&& second) {
    if (!failure.ok()) return failure;
    const bool two = second.size() > 0;
    if (id.empty()) {
      outbox.push_back(std::move(first));
      if (two) outbox.push_back(std::move(second));
      return Status::Ok();
    }
    try {
      SendRaw(std::move(first));
      if (two) SendRaw(std::move(second));
      return Status::Ok();
    } catch (const zmq::error_t& e) {
      return Fail(Unavailable(std::string("stream send: ") + e.what()));
    }
  }

  Status Fail(Status st) {
    failure = std::move(st);
    try {
      if (!id.empty()) SendRaw(zmq::message_t());
      if (!endpoint.empty()) socket.disconnect(endpoint);  // no reconnect behind our back
    } catch (const zmq::error_t&) {
    }
    return failure;
  }
};

StreamConnection::StreamConnection(const SocketOptions& options)
    : impl_(std::make_unique<Impl>(options)) {
  Configure(impl_->socket, options);
}
StreamConnection::~StreamConnection() = default;

Status StreamConnection::Connect(const std::string& endpoint) {
  try {
    impl_->socket.connect(endpoint);
    impl_->endpoint = endpoint;
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    return InvalidArgument("connect " + endpoint + ": " + e.what());
  }
}

Result<std::optional<std::string>> StreamConnection::Recv(int timeout_ms) {
  Impl& m = *impl_;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  try {
    while (m.failure.ok()) {
      if (m.has_bytes) {
        auto next = m.reader.Next();
        if (!next.ok()) {
          return m.Fail(next.status());
        }
        if (next->has_value()) return next;
        m.has_bytes = false;
      }
      const Ready ready = Poll(m.socket, RemainingMs(deadline), m.options.wake_fd);
      if (ready == Ready::kWake) return std::optional<std::string>();
      if (ready == Ready::kNothing) {
        if (Clock::now() >= deadline) return std::optional<std::string>();
        continue;
      }
      zmq::message_t id, data;
      if (!m.socket.recv(id, zmq::recv_flags::dontwait)) continue;
      (void)m.socket.recv(data, zmq::recv_flags::none);
      if (data.size() == 0) {
        if (m.id.empty()) {  // connected: greeting first, then what waited
          m.id = id.to_string();
          m.SendRaw(GreetingMessage(m.options.secure));
          for (auto& frame : m.outbox) m.SendRaw(std::move(frame));
          m.outbox.clear();
        } else if (id.to_string() == m.id) {
          return m.Fail(Unavailable("connection to " + m.endpoint + " closed"));
        }
        continue;
      }
      if (id.to_string() != m.id) continue;
      m.reader.Feed(std::string_view(static_cast<const char*>(data.data()), data.size()));
      m.has_bytes = true;
    }
  } catch (const zmq::error_t& e) {
    return m.Fail(Unavailable(std::string("stream recv: ") + e.what()));
  }
  return m.failure;
}

Status StreamConnection::Send(std::string_view frame) {
  if (frame.size() > kMaxFrameCap) return InvalidArgument("frame larger than 4 GiB");
  return impl_->Send(EncodeFrame(frame), zmq::message_t());
}

Status StreamConnection::SendOwned(std::string&& frame) {
  // Two messages (length prefix, body) are safe only on a queue that never reports full: a
  // prefix without its body would corrupt the stream.
  if (frame.size() < kZeroCopyFrameBytes || impl_->options.send_queue_messages != 0) {
    return Send(std::string_view(frame));
  }
  if (frame.size() > kMaxFrameCap) return InvalidArgument("frame larger than 4 GiB");
  const std::string prefix = FrameHeader(frame.size());
  auto* owned = new std::string(std::move(frame));
  zmq::message_t body(
      owned->data(), owned->size(),
      [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned);
  return impl_->Send(zmq::message_t(prefix.data(), prefix.size()), std::move(body));
}

void ReleaseTransport() {
  std::lock_guard<std::mutex> l(g_context_mu);
  g_context.reset();  // zmq_ctx_term: joins the I/O and reaper threads
}

}  // namespace shoal::protocols
