// http_guard_fuzz: the request head handling of GuardedHttpServer (protocols/http_guard.h), which
// an anonymous client on the network controls byte for byte - cpp-httplib's request line and
// header parsing behind the guard's bounded stream, the Host check (IsLoopbackHostHeader), the
// bearer token check (TokensEqual) and the guard's own Content-Length parsing - plus the pure
// helpers on their own.
//
// Input: [flags][raw bytes sent on one TCP connection to 127.0.0.1]. flags bit 0: the server
// requires a token. Two servers (with and without a token) run in this process on 127.0.0.1:0,
// one handler thread each, 64-byte body limit, 1 s per request.
//
// Checks: every connection is answered and closed within the request deadline (no hang); the
// guard reads at most the body limit of a request's body; a request reaches a handler only with
// a loopback Host header, the right token (when one is required), no Transfer-Encoding and a body
// within the limit; the answer is an HTTP/1.1 status line. And for the helpers:
// TokensEqual(a, b) == (a == b); IsLoopbackHostHeader accepts only localhost, 127.0.0.1 and
// [::1] (any case) with or without the bound port.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "fuzz/fuzz_support.h"
#include "protocols/http_guard.h"

namespace shoal::fuzz {
namespace {

constexpr const char* kToken = "fuzz-token-0123456789abcdef";
constexpr uint64_t kMaxBody = 64;

struct Server {
  std::unique_ptr<protocols::GuardedHttpServer> http;
  std::thread thread;
  int port = 0;
  bool token = false;
};

// What a handler saw of the last request that reached it (read after the connection closed).
std::atomic<int> g_handled{0};

void CheckReachedHandler(const httplib::Request& req, const Server& s) {
  ++g_handled;
  FUZZ_CHECK(protocols::IsLoopbackHostHeader(req.get_header_value("Host"), s.port),
             "a request with a foreign Host header reached a handler");
  if (s.token && req.path != "/healthz") {
    FUZZ_CHECK(req.get_header_value("Authorization") == std::string("Bearer ") + kToken,
               "a request without the token reached a handler");
  }
  FUZZ_CHECK(!req.has_header("Transfer-Encoding"), "a chunked request reached a handler");
  FUZZ_CHECK(req.body.size() <= kMaxBody, "a body over the limit reached a handler");
}

Server* Start(bool token) {
  auto* s = new Server;
  s->token = token;
  protocols::HttpGuardOptions o;
  if (token) o.token = kToken;
  o.public_paths = {"/healthz"};
  o.max_body_bytes = kMaxBody;
  o.threads = 1;
  o.max_queued = 4;
  o.request_timeout_s = 1;
  s->http = std::make_unique<protocols::GuardedHttpServer>(o);
  s->http->Get("/healthz", [s](const httplib::Request& req, httplib::Response& res) {
    CheckReachedHandler(req, *s);
    res.set_content("ok", "text/plain");
  });
  s->http->Post("/echo", [s](const httplib::Request& req, httplib::Response& res) {
    CheckReachedHandler(req, *s);
    res.set_content(std::to_string(req.body.size()), "text/plain");
  });
  auto port = s->http->Bind("127.0.0.1", 0);
  FUZZ_CHECK(port.ok(), "cannot bind the fuzzed server: " + port.status().ToString());
  s->port = *port;
  s->thread = std::thread([s] { s->http->listen_after_bind(); });
  return s;
}

// Sends `request` on a new connection, half-closes it, and returns everything answered.
std::string Exchange(int port, std::string_view request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0, "socket");
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  FUZZ_CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "connect");
  size_t sent = 0;
  while (sent < request.size()) {  // loopback buffers hold far more than max_len
    const ssize_t n =
        ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) break;  // the server closed (an early refusal): what it answered is read below
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  // The request deadline (1 s) plus the guard's linger (1 s) and slack: beyond it, a hang.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    FUZZ_CHECK(left > 0, "the server neither answered nor closed the connection in time");
    pollfd p = {fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
    FUZZ_CHECK(answer.size() < (1u << 20), "an answer of more than 1 MiB");
  }
  ::close(fd);
  return answer;
}

void CheckHelpers(std::string_view text) {
  const size_t half = text.size() / 2;
  const std::string a(text.substr(0, half)), b(text.substr(half));
  FUZZ_CHECK(protocols::TokensEqual(a, b) == (a == b), "TokensEqual disagrees with ==");
  FUZZ_CHECK(protocols::TokensEqual(a, a), "TokensEqual(a, a) is false");
  const std::string host(text.substr(0, 64));
  const int port = 1 + static_cast<int>(text.size() % 65535);
  if (protocols::IsLoopbackHostHeader(host, port)) {
    std::string name = host;
    const std::string suffix = ":" + std::to_string(port);
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      name.resize(name.size() - suffix.size());
    }
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    FUZZ_CHECK(name == "localhost" || name == "127.0.0.1" || name == "[::1]",
               "IsLoopbackHostHeader accepted '" + host + "'");
  }
}

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shoal::fuzz;
  // Started once; they live until the process ends (libFuzzer exits without unwinding).
  static Server* servers[2] = {Start(false), Start(true)};
  if (size < 1) return 0;
  const std::string_view request(reinterpret_cast<const char*>(data + 1), size - 1);
  CheckHelpers(request);
  const Server& s = *servers[data[0] & 1];
  const uint64_t body_before = s.http->body_bytes_read();
  const std::string answer = Exchange(s.port, request);
  const uint64_t body_read = s.http->body_bytes_read() - body_before;
  FUZZ_CHECK(body_read <= kMaxBody,
             "the guard read " + std::to_string(body_read) + " body bytes of one request");
  if (!answer.empty()) {
    FUZZ_CHECK(answer.compare(0, 9, "HTTP/1.1 ") == 0 && answer.size() >= 12 &&
                   std::isdigit(static_cast<unsigned char>(answer[9])),
               "not an HTTP/1.1 status line: " + answer.substr(0, 40));
  }
  return 0;
}
