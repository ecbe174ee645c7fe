// The coordinator's HTTP interface under attack, over real sockets on 127.0.0.1 (issue #20,
// items 6 and 10): bodies and heads an anonymous client sends are refused before they are read,
// the token check, and Host headers of other names on a loopback-bound server (DNS rebinding).
#include "coordinator/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>

#include "base/file_util.h"
#include "coordinator/status_board.h"
#include "protocols/http_guard.h"
#include "tests/testing/allocation_tracker.h"

namespace shoal {
namespace {

using coordinator::HttpOptions;
using coordinator::HttpServer;
using coordinator::StatusBoard;

constexpr char kToken[] = "s3cret-token-0123456789";
constexpr size_t kMiB = 1 << 20;
// How much an attacker tries to push after being refused; the server must stop reading long
// before (it drains at most 64 KiB, the kernel's socket buffers hold a few MiB).
constexpr size_t kAttackBytes = 64 * kMiB;
constexpr size_t kMostAcceptedBytes = 16 * kMiB;

// A blocking TCP connection to 127.0.0.1:port with generous timeouts (a test that would hang on
// the unfixed server fails on them instead).
class RawClient {
 public:
  explicit RawClient(int port) : chunk_(kMiB, 'a') {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{30, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~RawClient() { ::close(fd_); }
  bool connected() const { return connected_; }

  bool Send(const std::string& s) {
    return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
  }
  // Sends up to `total` bytes of 'a' in 1 MiB pieces; returns how many the server took before
  // the connection broke (or stalled for 30 s).
  size_t Flood(size_t total) {
    size_t sent = 0;
    while (sent < total) {
      const ssize_t n = ::send(fd_, chunk_.data(), chunk_.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    return sent;
  }
  // What the server sent until it closed (or 30 s of silence), at most 64 KiB.
  std::string ReadResponse() {
    std::string out;
    char buf[4096];
    while (out.size() < 65536) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (out.find("\r\n\r\n") != std::string::npos && HasWholeBody(out)) break;
    }
    return out;
  }

 private:
  static bool HasWholeBody(const std::string& r) {
    const auto head_end = r.find("\r\n\r\n");
    const auto cl = r.find("Content-Length: ");
    if (cl == std::string::npos || cl > head_end) return true;
    const size_t length = std::stoul(r.substr(cl + 16));
    return r.size() >= head_end + 4 + length;
  }
  const std::string chunk_;  // made before a test's AllocationScope starts
  int fd_ = -1;
  bool connected_ = false;
};

class HttpServerTest : public ::testing::Test {
 protected:
  int Start(const std::string& token, const std::string& address = "127.0.0.1") {
    HttpOptions o;
    o.address = address;
    o.port = 0;
    o.token = token;
    server_ = std::make_unique<HttpServer>(board_, o);
    auto port = server_->Start();
    EXPECT_TRUE(port.ok()) << port.status().ToString();
    return port.ok() ? *port : -1;
  }
  std::string Host(int port) { return "127.0.0.1:" + std::to_string(port); }

  StatusBoard board_;
  std::unique_ptr<HttpServer> server_;
};

// The attack of item 6: a 400 MiB POST without a token. The 401 comes from the head alone, and
// the connection is closed: the body is not read (before the fix httplib answered 401 and then
// read the body as the next request line, buffering all of it).
TEST_F(HttpServerTest, LargePostWithoutTokenIsRefusedUnread) {
  const int port = Start(kToken);
  RawClient c(port);
  testing::AllocationScope allocations;
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("POST /api/status HTTP/1.1\r\nHost: " + Host(port) +
                     "\r\nContent-Type: application/json\r\nContent-Length: 419430400\r\n\r\n"));
  const std::string response = c.ReadResponse();
  EXPECT_EQ(response.rfind("HTTP/1.1 401", 0), 0u) << response;
  EXPECT_NE(response.find("Connection: close"), std::string::npos) << response;
  const size_t accepted = c.Flood(kAttackBytes);
  EXPECT_LT(accepted, kMostAcceptedBytes) << "the server kept reading the refused body";
  EXPECT_LT(allocations.max_allocation(), kMiB) << "something buffered the body";
}

// A request line without end: cut at the head limit with 431, not buffered.
TEST_F(HttpServerTest, EndlessRequestLineIsCutAtTheHeadLimit) {
  const int port = Start("");
  RawClient c(port);
  testing::AllocationScope allocations;
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("GET /"));
  const size_t accepted = c.Flood(kAttackBytes);
  EXPECT_LT(accepted, kMostAcceptedBytes) << "the server kept reading the request line";
  EXPECT_LT(allocations.max_allocation(), kMiB) << "something buffered the request line";
}

TEST_F(HttpServerTest, HeadOverTheLimitGets431) {
  const int port = Start("");
  RawClient c(port);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("GET /api/status HTTP/1.1\r\nHost: " + Host(port) +
                     "\r\nX-Pad: " + std::string(protocols::kHttpMaxHeadBytes, 'p') + "\r\n\r\n"));
  const std::string response = c.ReadResponse();
  EXPECT_EQ(response.rfind("HTTP/1.1 431", 0), 0u) << response;
}

// With the right token, a body over the API's limit is refused from its Content-Length, before
// the client sends it (before the fix the server waited for the whole body).
TEST_F(HttpServerTest, OversizedBodyIsRefusedFromItsLength) {
  const int port = Start(kToken);
  RawClient c(port);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("POST /api/status HTTP/1.1\r\nHost: " + Host(port) +
                     "\r\nAuthorization: Bearer " + kToken +
                     "\r\nContent-Type: application/json\r\nContent-Length: " +
                     std::to_string(coordinator::kHttpMaxBodyBytes + 1) + "\r\n\r\n"));
  const std::string response = c.ReadResponse();
  EXPECT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response;
  EXPECT_NE(response.find("over this server's limit of 4096 bytes"), std::string::npos) << response;
}

TEST_F(HttpServerTest, ChunkedBodyIsRefused) {
  const int port = Start("");
  RawClient c(port);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("POST /api/status HTTP/1.1\r\nHost: " + Host(port) +
                     "\r\nTransfer-Encoding: chunked\r\n\r\n"));
  const std::string response = c.ReadResponse();
  EXPECT_EQ(response.rfind("HTTP/1.1 411", 0), 0u) << response;
}

TEST_F(HttpServerTest, TokenIsComparedWhole) {
  const int port = Start(kToken);
  httplib::Client cli("127.0.0.1", port);
  const std::string token = kToken;
  auto status_with = [&](const std::string& auth) {
    httplib::Headers h;
    if (!auth.empty()) h.emplace("Authorization", auth);
    auto r = cli.Get("/api/status", h);
    return r ? r->status : -1;
  };
  EXPECT_EQ(status_with(""), 401);
  EXPECT_EQ(status_with("Bearer " + token), 200);
  EXPECT_EQ(status_with("Bearer " + token.substr(0, token.size() - 1)), 401);  // a prefix
  EXPECT_EQ(status_with("Bearer " + token + "x"), 401);                        // longer
  std::string flipped = token;
  flipped.back() ^= 1;
  EXPECT_EQ(status_with("Bearer " + flipped), 401);  // same length, last byte differs
  EXPECT_EQ(status_with("Basic " + token), 401);
  EXPECT_EQ(status_with("Bearer"), 401);
  // The dashboard page itself holds no data and is served without the token (it sends the
  // token to the API); every data path needs it.
  auto page = cli.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Referrer-Policy"), "");
  for (const char* path : {"/api/rounds", "/api/workers", "/api/models", "/metrics", "/nope"}) {
    auto r = cli.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 401) << path;
  }
  EXPECT_TRUE(protocols::TokensEqual(token, token));
  EXPECT_FALSE(protocols::TokensEqual(token, token + "x"));
  EXPECT_FALSE(protocols::TokensEqual("", token));
}

// DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 makes the
// browser send `Host: attacker.example:PORT`. Refused on a loopback-bound server; the loopback
// names pass.
TEST_F(HttpServerTest, ForeignHostHeaderIsRefusedOnLoopback) {
  const int port = Start("");
  const std::string p = ":" + std::to_string(port);
  httplib::Client cli("127.0.0.1", port);
  auto get_with_host = [&](const std::string& host) {
    auto r = cli.Get("/api/status", {{"Host", host}});
    return r ? r->status : -1;
  };
  EXPECT_EQ(get_with_host("attacker.example" + p), 421);
  EXPECT_EQ(get_with_host("attacker.example"), 421);
  EXPECT_EQ(get_with_host("127.0.0.1.attacker.example" + p), 421);
  EXPECT_EQ(get_with_host("localhost:1" + p), 421);
  EXPECT_EQ(get_with_host("127.0.0.1" + p), 200);
  EXPECT_EQ(get_with_host("localhost" + p), 200);
  EXPECT_EQ(get_with_host("LOCALHOST" + p), 200);
  EXPECT_EQ(get_with_host("[::1]" + p), 200);
  EXPECT_EQ(get_with_host("127.0.0.1"), 200);
  // The dashboard page too: a rebound page must not even load it.
  auto page = cli.Get("/", {{"Host", "attacker.example" + p}});
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 421);
  // A request without Host (HTTP/1.0 style) is refused as well.
  RawClient c(port);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("GET /api/status HTTP/1.0\r\n\r\n"));
  EXPECT_EQ(c.ReadResponse().rfind("HTTP/1.1 421", 0), 0u);
}

// Loopback is what the bound socket says: 0.0.0.0 is not (a token is required), and an IPv6
// spelling of loopback that the old prefix check did not know is.
TEST_F(HttpServerTest, LoopbackIsDecidedByTheBoundSocket) {
  HttpOptions o;
  o.address = "0.0.0.0";
  o.port = 0;
  HttpServer open(board_, o);
  auto refused = open.Start();
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("http.token"), std::string::npos)
      << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("not a loopback address"), std::string::npos);

  o.address = "0:0:0:0:0:0:0:1";
  HttpServer v6(board_, o);
  auto v6_port = v6.Start();
  if (!v6_port.ok() && v6_port.status().code() == Code::kUnavailable) {
    GTEST_SKIP() << "no IPv6 loopback here: " << v6_port.status().ToString();
  }
  EXPECT_TRUE(v6_port.ok()) << v6_port.status().ToString();
}

TEST_F(HttpServerTest, TokenFromFile) {
  char tmpl[] = "/tmp/shoal-http-token-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  ASSERT_TRUE(WriteFileAtomic(dir + "/token", std::string(kToken) + "\n").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/short", "abc\n").ok());
  HttpOptions o;
  o.port = 0;
  o.token_file = dir + "/short";
  HttpServer bad(board_, o);
  auto st = bad.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("http.token_file"), std::string::npos);
  o.token_file = dir + "/token";
  HttpServer good(board_, o);
  auto port = good.Start();
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  httplib::Client cli("127.0.0.1", *port);
  auto no = cli.Get("/api/status");
  ASSERT_TRUE(no);
  EXPECT_EQ(no->status, 401);
  auto yes = cli.Get("/api/status", {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_TRUE(yes);
  EXPECT_EQ(yes->status, 200);
  good.Stop();
  std::filesystem::remove_all(dir);
}

// Bounded concurrency: one handler thread, one queued connection; a third connection gets 503
// at once instead of waiting in an unbounded queue.
TEST(GuardedHttpServerTest, ConnectionsBeyondTheQueueGet503) {
  protocols::HttpGuardOptions g;
  g.threads = 1;
  g.max_queued = 1;
  g.request_timeout_s = 60;
  protocols::GuardedHttpServer server(g);
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain");
  });
  auto port = server.Bind("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  std::thread listener([&] { server.listen_after_bind(); });
  while (!server.is_running()) std::this_thread::yield();
  {
    RawClient busy(*port);  // holds the only thread: its head never ends
    ASSERT_TRUE(busy.Send("GET / HTTP/1.1\r\n"));
    RawClient queued(*port);
    ASSERT_TRUE(queued.Send("GET / HTTP/1.1\r\nHost: " + std::string("127.0.0.1\r\n\r\n")));
    // Normally the next connection is refused at once; should the thread not have taken `busy`
    // off the queue yet, `queued` is the refused one and a later attempt finds the queue full.
    std::string third;
    for (int attempt = 0; attempt < 100 && third.rfind("HTTP/1.1 503", 0) != 0; ++attempt) {
      RawClient extra(*port);
      ASSERT_TRUE(extra.Send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
      third = extra.ReadResponse();
    }
    EXPECT_EQ(third.rfind("HTTP/1.1 503", 0), 0u) << third;
  }
  server.stop();
  listener.join();
}

// Found by fuzz/http_guard_fuzz.cc: httplib ends a head at an empty "\r\n" line after a line
// ending in a bare "\n"; the guard waited for "\r\n\r\n" and took what followed for more head.
// A POST without Content-Length (read until the connection ends) then had its body read in 8 KiB
// pieces as head, and once a "\r\n\r\n" came by, the rest of that piece counted as body past the
// limit. Now the head ends where httplib ends it, and no byte past it is read as head.
TEST(GuardedHttpServerTest, TheBodyLimitHoldsWhenTheHeadEndsWithABareNewline) {
  protocols::HttpGuardOptions g;
  g.max_body_bytes = 64;
  g.request_timeout_s = 5;
  protocols::GuardedHttpServer server(g);
  server.Post("/", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(std::to_string(req.body.size()), "text/plain");
  });
  auto port = server.Bind("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  std::thread listener([&] { server.listen_after_bind(); });
  while (!server.is_running()) std::this_thread::yield();
  for (const std::string head_end : {"\r\n\r\n", "\r\nX-A: b\n\r\n"}) {
    const uint64_t before = server.body_bytes_read();
    RawClient c(*port);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.Send("POST / HTTP/1.1\r\nHost: 127.0.0.1" + head_end + std::string(100, 'x') +
                       "\r\n\r\n" + std::string(6000, 'y')));
    const std::string response = c.ReadResponse();
    // httplib closes the connection when the body read stops at the limit, without an answer.
    EXPECT_NE(response.rfind("HTTP/1.1 200", 0), 0u) << "the handler ran: " << response;
    EXPECT_LE(server.body_bytes_read() - before, g.max_body_bytes)
        << "body bytes were read past the limit (head ended by "
        << ::testing::PrintToString(head_end) << ")";
  }
  server.stop();
  listener.join();
}

}  // namespace
}  // namespace shoal
