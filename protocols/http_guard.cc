#include "protocols/http_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "base/sha256.h"

namespace shoal::protocols {
namespace {

using Clock = std::chrono::steady_clock;

// After the response, the server stops sending and reads (and drops) what the client still
// sends, up to these bounds, before closing: closing a socket with unread data makes the
// kernel send RST, which can destroy the response before the client has read it.
constexpr size_t kLingerBytes = 64 * 1024;
constexpr int kLingerMs = 1000;

// Set while the accepting thread runs a connection it had no room to queue: that connection
// gets 503 and is closed at once.
thread_local bool t_refuse_connection = false;

std::string ErrorJson(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump();
}

int RemainingMs(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

bool WaitFor(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int n = ::poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

bool IsLoopbackSockaddr(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    return (ntohl(in.sin_addr.s_addr) >> 24) == 127;
  }
  if (ss.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&in6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&in6) && in6.s6_addr[12] == 127;
  }
  return false;
}

void AddressOf(const sockaddr_storage& ss, std::string& ip, int& port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    ::inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text));
    port = ntohs(in.sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text));
    port = ntohs(in6.sin6_port);
  }
  ip = text;
}

}  // namespace

// httplib's ThreadPool queues every accepted connection without limit; this one queues at most
// `max_queued` and refuses the rest in the accepting thread.
class GuardedHttpServer::BoundedQueue : public httplib::TaskQueue {
 public:
  BoundedQueue(int threads, int max_queued) : max_queued_(static_cast<size_t>(max_queued)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!shutdown_ && jobs_.size() < max_queued_) {
        jobs_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
    }
    t_refuse_connection = true;
    fn();
    t_refuse_connection = false;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return shutdown_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      fn();
    }
  }

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

// A socket stream that reads at most kHttpMaxHeadBytes of request head and max_body bytes of
// body, all before a deadline. httplib reads the head one byte at a time, so the end of the
// head ("\r\n\r\n") is seen exactly.
class GuardedHttpServer::LimitedStream : public httplib::Stream {
 public:
  LimitedStream(socket_t sock, uint64_t max_body, int timeout_s, std::atomic<uint64_t>* body_read)
      : sock_(sock),
        max_body_(max_body),
        timeout_ms_(timeout_s * 1000),
        deadline_(Clock::now() + std::chrono::seconds(timeout_s)),
        body_read_(body_read) {}

  bool is_readable() const override { return WaitFor(sock_, POLLIN, RemainingMs(deadline_)); }
  bool is_writable() const override { return !dead_ && WaitFor(sock_, POLLOUT, timeout_ms_); }

  ssize_t read(char* ptr, size_t size) override {
    if (dead_ || size == 0) return -1;
    if (in_body_) {
      if (body_bytes_ >= max_body_) return -1;
      const size_t room = static_cast<size_t>(std::min<uint64_t>(size, max_body_ - body_bytes_));
      if (!WaitFor(sock_, POLLIN, RemainingMs(deadline_))) return -1;  // too slow, or closed
      const ssize_t n = ::recv(sock_, ptr, room, 0);
      if (n <= 0) return -1;
      body_bytes_ += static_cast<uint64_t>(n);
      body_read_->fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      return n;
    }
    if (head_bytes_ >= kHttpMaxHeadBytes) return Refuse431();
    const size_t room = std::min<size_t>(size, kHttpMaxHeadBytes - head_bytes_);
    if (!WaitFor(sock_, POLLIN, RemainingMs(deadline_))) return -1;
    // Peeked first, so that no byte past the end of the head is taken as head: what follows is
    // body, read and counted against max_body (a head and a body arriving in one segment would
    // otherwise bring up to 8 KiB of body in uncounted; found by fuzz/http_guard_fuzz.cc).
    const ssize_t peeked = ::recv(sock_, ptr, room, MSG_PEEK);
    if (peeked <= 0) return -1;
    size_t take = static_cast<size_t>(peeked);
    for (size_t i = 0; i < take; ++i) {
      tail_ = (tail_ << 8) | static_cast<unsigned char>(ptr[i]);
      // httplib ends the head at an empty "\r\n" line after a line ending in "\n" - a line
      // ending in a bare "\n" included - so "\n\r\n", not only "\r\n\r\n", ends it here.
      if ((tail_ & 0xffffffu) == 0x0a0d0au) {
        in_body_ = true;
        take = i + 1;
        break;
      }
    }
    const ssize_t n = ::recv(sock_, ptr, take, 0);  // the peeked bytes, in order
    if (n != static_cast<ssize_t>(take)) return -1;
    head_bytes_ += take;
    return n;
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (dead_) return -1;
    if (!WaitFor(sock_, POLLOUT, timeout_ms_)) return -1;
    const ssize_t n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    return n < 0 ? -1 : n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    port = 0;
    if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      AddressOf(ss, ip, port);
    }
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    port = 0;
    if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      AddressOf(ss, ip, port);
    }
  }
  socket_t socket() const override { return sock_; }

 private:
  // The head is too long: answered here, and nothing more is read or written (httplib would
  // otherwise answer 400 after it).
  ssize_t Refuse431() {
    const std::string body = ErrorJson("request line and headers exceed " +
                                       std::to_string(kHttpMaxHeadBytes) + " bytes");
    const std::string response =
        "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    (void)write(response.data(), response.size());
    dead_ = true;
    return -1;
  }

  const socket_t sock_;
  const uint64_t max_body_;
  const int timeout_ms_;
  const Clock::time_point deadline_;
  std::atomic<uint64_t>* body_read_;
  size_t head_bytes_ = 0;
  uint64_t body_bytes_ = 0;
  uint64_t tail_ = 0;
  bool in_body_ = false;
  bool dead_ = false;
};

GuardedHttpServer::GuardedHttpServer(HttpGuardOptions options) : options_(std::move(options)) {
  const int threads = std::max(1, options_.threads);
  const int max_queued = std::max(1, options_.max_queued);  // idle threads take work from it
  new_task_queue = [threads, max_queued] { return new BoundedQueue(threads, max_queued); };
  set_payload_max_length(options_.max_body_bytes);
  set_read_timeout(options_.request_timeout_s, 0);
  set_write_timeout(options_.request_timeout_s, 0);
  set_keep_alive_max_count(1);
  set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return Check(req, res); });
}

GuardedHttpServer::~GuardedHttpServer() = default;

Result<int> GuardedHttpServer::Bind(const std::string& address, int port) {
  if (port < 0 || port > 65535) return InvalidArgument("port must be in 0..65535");
  int bound = port;
  if (port == 0) {
    bound = bind_to_any_port(address);
  } else if (!bind_to_port(address, port)) {
    bound = -1;
  }
  if (bound <= 0) {
    return Unavailable("cannot bind " + address + ":" + std::to_string(port) +
                       " (in use, or not an address of this host?)");
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(svr_sock_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return Internal("getsockname on the HTTP socket failed");
  }
  loopback_ = IsLoopbackSockaddr(ss);
  bound_port_ = bound;
  if (!loopback_ && options_.token.empty()) {
    std::string ip;
    int unused = 0;
    AddressOf(ss, ip, unused);
    ::close(svr_sock_);
    svr_sock_ = INVALID_SOCKET;
    return InvalidArgument(options_.token_setting +
                           ": a bearer token is required when serving on " + address +
                           " (bound to " + ip + "), which is not a loopback address");
  }
  return bound;
}

httplib::Server::HandlerResponse GuardedHttpServer::Check(const httplib::Request& req,
                                                          httplib::Response& res) const {
  auto refuse = [&res](int status, const std::string& message) {
    res.status = status;
    res.set_content(ErrorJson(message), "application/json");
    return HandlerResponse::Handled;
  };
  if (loopback_ && !IsLoopbackHostHeader(req.get_header_value("Host"), bound_port_)) {
    return refuse(421, "Host header '" + req.get_header_value("Host") +
                           "' is not this server (localhost, 127.0.0.1 or [::1], port " +
                           std::to_string(bound_port_) + ")");
  }
  const bool is_public = (req.method == "GET" || req.method == "HEAD") &&
                         std::find(options_.public_paths.begin(), options_.public_paths.end(),
                                   req.path) != options_.public_paths.end();
  if (!options_.token.empty() && !is_public) {
    const std::string auth = req.get_header_value("Authorization");
    constexpr std::string_view kScheme = "Bearer ";
    if (auth.compare(0, kScheme.size(), kScheme) != 0 ||
        !TokensEqual(auth.substr(kScheme.size()), options_.token)) {
      res.set_header("WWW-Authenticate", "Bearer");
      return refuse(401, "missing or wrong bearer token");
    }
  }
  if (req.has_header("Transfer-Encoding")) {
    return refuse(411, "a request body needs a Content-Length (chunked bodies are not accepted)");
  }
  if (req.has_header("Content-Length")) {
    const std::string text = req.get_header_value("Content-Length");
    uint64_t length = 0;
    bool ok = !text.empty() && text.size() <= 19;
    for (char c : text) {
      ok = ok && c >= '0' && c <= '9';
      if (ok) length = length * 10 + static_cast<uint64_t>(c - '0');
    }
    if (!ok) return refuse(400, "Content-Length '" + text + "' is not a byte count");
    if (length > options_.max_body_bytes) {
      return refuse(413, "request body of " + std::to_string(length) +
                             " bytes is over this server's limit of " +
                             std::to_string(options_.max_body_bytes) + " bytes");
    }
  }
  return HandlerResponse::Unhandled;
}

bool GuardedHttpServer::process_and_close_socket(socket_t sock) {
  bool ok = false;
  if (t_refuse_connection) {
    static const std::string kBusy =
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
        "Content-Length: 0\r\n\r\n";
    (void)::send(sock, kBusy.data(), kBusy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } else {
    LimitedStream stream(sock, options_.max_body_bytes, options_.request_timeout_s,
                         &body_bytes_read_);
    bool connection_closed = false;
    ok = process_request(stream, /*close_connection=*/true, connection_closed, nullptr);
    ::shutdown(sock, SHUT_WR);
    const auto linger_end = Clock::now() + std::chrono::milliseconds(kLingerMs);
    char sink[4096];
    size_t drained = 0;
    while (drained < kLingerBytes && WaitFor(sock, POLLIN, RemainingMs(linger_end))) {
      const ssize_t n = ::recv(sock, sink, sizeof(sink), 0);
      if (n <= 0) break;
      drained += static_cast<size_t>(n);
    }
  }
  ::close(sock);
  return ok;
}

Status CheckTokenText(const std::string& token, const std::string& where) {
  constexpr size_t kMinTokenChars = 16;
  if (token.size() < kMinTokenChars) {
    return InvalidArgument(where + ": a bearer token of at least " +
                           std::to_string(kMinTokenChars) + " characters is expected");
  }
  for (char c : token) {
    if (c <= ' ' || c > '~') {
      return InvalidArgument(where + ": the bearer token must be printable ASCII without spaces");
    }
  }
  return Status::Ok();
}

Result<std::string> ReadTokenFile(const std::string& path) {
  constexpr uint64_t kMaxTokenFileBytes = 1024;
  SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxTokenFileBytes));
  const size_t begin = text.find_first_not_of(" \t\r\n");
  const size_t end = text.find_last_not_of(" \t\r\n");
  const std::string token = begin == std::string::npos ? "" : text.substr(begin, end - begin + 1);
  SHOAL_RETURN_IF_ERROR(CheckTokenText(token, path));
  return token;
}

bool IsLoopbackHostHeader(const std::string& host_header, int port) {
  std::string host = host_header;
  const std::string port_suffix = ":" + std::to_string(port);
  if (host.size() > port_suffix.size() &&
      host.compare(host.size() - port_suffix.size(), port_suffix.size(), port_suffix) == 0) {
    host.resize(host.size() - port_suffix.size());
  }
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return host == "localhost" || host == "127.0.0.1" || host == "[::1]";
}

bool TokensEqual(const std::string& a, const std::string& b) {
  // Hashing first makes the comparison independent of the lengths, and CRYPTO_memcmp of the
  // position of the first difference.
  const Digest da = Sha256::Of(a.data(), a.size());
  const Digest db = Sha256::Of(b.data(), b.size());
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

}  // namespace shoal::protocols
