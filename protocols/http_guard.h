// GuardedHttpServer: a cpp-httplib server that an anonymous client cannot grow, hold or
// trick. Shared by the coordinator's API (coordinator/http_server.cc) and shoal-serve.
//
// What cpp-httplib 0.11 (Debian 12) does not do by itself, and this class adds:
//   - Bounded reads. httplib reads a request line or header of any length into memory, and on a
//     kept-alive connection reads an unread (refused) body as the next request line: a 400 MiB
//     body grew the coordinator by 900 MiB. Here every connection serves one request
//     (Connection: close), the request head is capped at kHttpMaxHeadBytes (431 beyond), the
//     body at max_body_bytes (413, answered from Content-Length before one body byte is read),
//     and the whole request must arrive within request_timeout_s.
//   - Authentication before the body: the bearer token (compared in constant time) and the Host
//     header are checked on the head; a refused request is answered and the connection closed
//     without reading its body. Chunked bodies (no length up front) are refused with 411.
//   - DNS rebinding: bound to a loopback address, a request whose Host header is not
//     localhost, 127.0.0.1 or [::1] (with the bound port) is refused with 421, so a web page
//     whose name an attacker points at 127.0.0.1 cannot read the API from a browser.
//   - Loopback decided from the bound socket (getsockname), not from the configured string:
//     "localhost" that resolves elsewhere, or "127.0.0.1.example.com", is not loopback.
//   - Bounded concurrency: `threads` handler threads and at most `max_queued` accepted
//     connections waiting for one; beyond that a connection gets 503 and is closed at once.
//
// Routes are registered on the object as on an httplib::Server (Get, Post, ...). Do not call
// set_pre_routing_handler, set_keep_alive_max_count or new_task_queue: the guard owns them.
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal::protocols {

// The request line and headers together; browsers and curl send well under 2 KiB.
inline constexpr size_t kHttpMaxHeadBytes = 8192;

struct HttpGuardOptions {
  // Bearer token every request needs (`Authorization: Bearer <token>`), except GET of a path in
  // public_paths. Empty: no token, which Bind allows on a loopback address only.
  std::string token;
  // The config key or flag that sets the token, named in Bind's error.
  std::string token_setting = "token";
  std::vector<std::string> public_paths;
  uint64_t max_body_bytes = 4096;
  int threads = 4;
  int max_queued = 32;  // at least 1
  // Reading the whole request (head and body), and each write of the response.
  int request_timeout_s = 10;
};

class GuardedHttpServer : public httplib::Server {
 public:
  explicit GuardedHttpServer(HttpGuardOptions options);
  ~GuardedHttpServer() override;

  // Binds address:port (0 = any free port) and returns the bound port. InvalidArgument when
  // the bound address is not loopback and there is no token; Unavailable when it cannot bind.
  Result<int> Bind(const std::string& address, int port);
  // Whether the bound socket's address is a loopback address (after a successful Bind).
  bool loopback() const { return loopback_; }
  // Request-body bytes read from clients so far (for tests and metrics).
  uint64_t body_bytes_read() const { return body_bytes_read_; }

 private:
  class BoundedQueue;
  class LimitedStream;

  bool process_and_close_socket(socket_t sock) override;
  HandlerResponse Check(const httplib::Request& req, httplib::Response& res) const;

  HttpGuardOptions options_;
  bool loopback_ = false;
  int bound_port_ = 0;
  std::atomic<uint64_t> body_bytes_read_{0};
};

// Ok when `token` is at least 16 printable ASCII characters without spaces; else InvalidArgument
// naming `where`.
Status CheckTokenText(const std::string& token, const std::string& where);
// The bearer token stored in `path` (surrounding whitespace removed): at most 1 KiB, at least 16
// characters, printable ASCII. Reading it from a file keeps it out of `ps` and shell history.
Result<std::string> ReadTokenFile(const std::string& path);

// True when `host_header` names this loopback server: localhost, 127.0.0.1 or [::1], with
// ":port" or without it.
bool IsLoopbackHostHeader(const std::string& host_header, int port);
// Compares without revealing, through timing, where the strings differ or their lengths.
bool TokensEqual(const std::string& a, const std::string& b);

}  // namespace shoal::protocols
