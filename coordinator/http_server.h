// The coordinator's read-only HTTP interface (cpp-httplib), served from its own threads:
//   GET /             dashboard (self-contained page, no external assets)
//   GET /api/status   run, state, round, version, connected and selected workers
//   GET /api/rounds   every committed round's record (as in metrics.jsonl)
//   GET /api/workers  per worker: state, last seen, rounds, samples, loss, bytes, rejections
//   GET /api/models   committed versions with hash, parent, round, metrics
//   GET /metrics      Prometheus text format
// Bound to 127.0.0.1 by default. Bound anywhere else (as getsockname reports it), a bearer token
// is required (`Authorization: Bearer <http.token>`); Start() refuses a non-loopback address
// without one. With a token, every path but the dashboard page itself (`GET /`, which holds no
// data) needs it; the page sends the token it was given in its URL fragment. The guard of
// protocols/http_guard.h bounds what a client can make the server read and hold: the API is
// read-only, so a request body may hold at most kHttpMaxBodyBytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "coordinator/status_board.h"

namespace shoal::coordinator {

// Limits of the HTTP interface. Its answers are small and quick, so a few threads serve a
// dashboard, Prometheus and shoalctl; connections beyond the queue get 503.
inline constexpr uint64_t kHttpMaxBodyBytes = 4096;
inline constexpr int kHttpThreads = 4;
inline constexpr int kHttpMaxQueued = 32;
inline constexpr int kHttpRequestTimeoutS = 10;

struct HttpOptions {
  std::string address = "127.0.0.1";
  int port = 8080;  // 0 = any free port
  std::string token;
  std::string token_file;  // read at Start() when set (protocols::ReadTokenFile)
};

class HttpServer {
 public:
  // `board` must outlive the server.
  HttpServer(const StatusBoard& board, HttpOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving on a background thread; returns the bound port.
  Result<int> Start();
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::coordinator
