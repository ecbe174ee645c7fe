// The coordinator's read-only HTTP interface (cpp-httplib), served from its own threads:
//   GET /             dashboard (self-contained page, no external assets)
//   GET /api/status   run, state, round, version, connected and selected workers
//   GET /api/rounds   every committed round's record (as in metrics.jsonl)
//   GET /api/workers  per worker: state, last seen, rounds, samples, loss, bytes, rejections
//   GET /api/models   committed versions with hash, parent, round, metrics
//   GET /metrics      Prometheus text format
// Bound to 127.0.0.1 by default. Bound anywhere else, a bearer token is required
// (`Authorization: Bearer <http.token>`); Start() refuses a non-loopback address without one.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "coordinator/status_board.h"

namespace shoal::coordinator {

struct HttpOptions {
  std::string address = "127.0.0.1";
  int port = 8080;  // 0 = any free port
  std::string token;
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

bool IsLoopbackAddress(const std::string& address);

}  // namespace shoal::coordinator
