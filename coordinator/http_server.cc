#include "coordinator/http_server.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "base/thread_name.h"
#include "coordinator/dashboard_html.h"
#include "protocols/http_guard.h"

namespace shoal::coordinator {

struct HttpServer::Impl {
  const StatusBoard& board;
  HttpOptions options;
  std::unique_ptr<protocols::GuardedHttpServer> server;
  std::thread thread;
  std::atomic<bool> listen_returned{false};
};

namespace {

protocols::HttpGuardOptions GuardOptions(const HttpOptions& o) {
  protocols::HttpGuardOptions g;
  g.token = o.token;
  g.token_setting = "config key 'http.token'";
  g.public_paths = {"/"};  // the page holds no data; it fetches the API with the token
  g.max_body_bytes = kHttpMaxBodyBytes;
  g.threads = kHttpThreads;
  g.max_queued = kHttpMaxQueued;
  g.request_timeout_s = kHttpRequestTimeoutS;
  return g;
}

}  // namespace

HttpServer::HttpServer(const StatusBoard& board, HttpOptions options)
    : impl_(new Impl{board, std::move(options), nullptr, {}, {false}}) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (impl_->thread.joinable()) {
    impl_->server->stop();
    impl_->thread.join();
  }
}

Result<int> HttpServer::Start() {
  Impl& s = *impl_;
  if (!s.options.token_file.empty()) {
    auto token = protocols::ReadTokenFile(s.options.token_file);
    if (!token.ok()) return token.status().Annotate("config key 'http.token_file'");
    s.options.token = *token;
  }
  s.server = std::make_unique<protocols::GuardedHttpServer>(GuardOptions(s.options));
  protocols::GuardedHttpServer& server = *s.server;
  const StatusBoard* board = &s.board;
  auto json_route = [&](const char* path, nlohmann::json (StatusBoard::*get)() const) {
    server.Get(path, [board, get](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_content((board->*get)().dump(), "application/json");
    });
  };
  json_route("/api/status", &StatusBoard::Status);
  json_route("/api/rounds", &StatusBoard::Rounds);
  json_route("/api/workers", &StatusBoard::Workers);
  json_route("/api/models", &StatusBoard::Models);
  server.Get("/metrics", [board](const httplib::Request&, httplib::Response& res) {
    res.set_content(board->Prometheus(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_content(kDashboardHtml, "text/html; charset=utf-8");
  });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(R"({"error":"not found"})", "application/json");
    }
  });
  SHOAL_ASSIGN_OR_RETURN(int port, server.Bind(s.options.address, s.options.port));
  s.thread = std::thread([&s] {
    SetThreadName("shoal-http");
    s.server->listen_after_bind();
    s.listen_returned = true;
  });
  // httplib's stop() does nothing before the listener runs, so a Stop() right after Start()
  // would leave it listening and hang the join: return once it runs.
  while (!s.server->is_running() && !s.listen_returned) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return port;
}

}  // namespace shoal::coordinator
