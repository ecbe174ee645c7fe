#include "coordinator/http_server.h"

#include <httplib.h>

#include <thread>

#include "base/thread_name.h"
#include "coordinator/dashboard_html.h"

namespace shoal::coordinator {

bool IsLoopbackAddress(const std::string& a) {
  return a == "127.0.0.1" || a == "localhost" || a == "::1" || a.rfind("127.", 0) == 0;
}

struct HttpServer::Impl {
  const StatusBoard& board;
  HttpOptions options;
  httplib::Server server;
  std::thread thread;
};

HttpServer::HttpServer(const StatusBoard& board, HttpOptions options)
    : impl_(new Impl{board, std::move(options), {}, {}}) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (impl_->thread.joinable()) {
    impl_->server.stop();
    impl_->thread.join();
  }
}

Result<int> HttpServer::Start() {
  Impl& s = *impl_;
  if (!IsLoopbackAddress(s.options.address) && s.options.token.empty()) {
    return InvalidArgument("config key 'http.token': required when http.address (" +
                           s.options.address + ") is not a loopback address");
  }
  const std::string token = s.options.token;
  s.server.set_pre_routing_handler([token](const httplib::Request& req, httplib::Response& res) {
    if (token.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + token) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer");
    res.set_content(R"({"error":"missing or wrong bearer token"})", "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });
  const StatusBoard* board = &s.board;
  auto json_route = [&](const char* path, nlohmann::json (StatusBoard::*get)() const) {
    s.server.Get(path, [board, get](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_content((board->*get)().dump(), "application/json");
    });
  };
  json_route("/api/status", &StatusBoard::Status);
  json_route("/api/rounds", &StatusBoard::Rounds);
  json_route("/api/workers", &StatusBoard::Workers);
  json_route("/api/models", &StatusBoard::Models);
  s.server.Get("/metrics", [board](const httplib::Request&, httplib::Response& res) {
    res.set_content(board->Prometheus(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kDashboardHtml, "text/html; charset=utf-8");
  });
  s.server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(R"({"error":"not found"})", "application/json");
    }
  });
  int port = s.options.port;
  if (port == 0) {
    port = s.server.bind_to_any_port(s.options.address);
  } else if (!s.server.bind_to_port(s.options.address, port)) {
    port = -1;
  }
  if (port <= 0) {
    return Unavailable("http: cannot bind " + s.options.address + ":" +
                       std::to_string(s.options.port));
  }
  s.thread = std::thread([&s] {
    SetThreadName("shoal-http");
    s.server.listen_after_bind();
  });
  return port;
}

}  // namespace shoal::coordinator
