// shoal-serve: serves predictions from a model exported by `shoalctl export` over HTTP.
//
//   shoal-serve --model model.pt --pubkey RUN_DIR/keys/coordinator.pub [--host 127.0.0.1]
//               [--port 8080] [--port-file F] [--token-file F] [--allow-unverified-model]
//
// model.json's signature must verify with --pubkey (or --allow-unverified-model serves it
// unchecked, with a warning). Beyond loopback every request needs `Authorization: Bearer TOKEN`,
// the token read from --token-file or the SHOAL_SERVE_TOKEN environment variable (never a flag:
// flags are visible to every user in `ps`); shoal-serve refuses to start without one.
//
// Exit codes: 0 stopped by SIGINT/SIGTERM; 1 the server failed (bind, listener); 2 bad command
// line (a non-loopback address without a token included), or a model / model.json that cannot
// be loaded or whose signature is not the trusted key's.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "base/file_util.h"
#include "base/log.h"
#include "base/sandbox.h"
#include "nn/runtime.h"
#include "protocols/http_guard.h"
#include "tools/serve/server.h"

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

void OnStopSignal(int sig) { g_stop_signal = sig; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoal-serve: HTTP predictions from a model exported by shoalctl export"};
  std::string model_path;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string port_file;
  shoal::serve::LoadOptions load;
  std::string token_file;
  std::string log_level = "info";
  bool require_landlock = false;
  app.add_option("--model", model_path, "Exported TorchScript file (model.json beside it)")
      ->required();
  app.add_option("--host", host, "Address to listen on")->capture_default_str();
  app.add_option("--port", port, "TCP port (0 = any free port)")->capture_default_str();
  app.add_option("--port-file", port_file, "Write the bound port to this file");
  app.add_option("--max-batch", load.max_batch, "Most inputs per /predict request")
      ->capture_default_str();
  app.add_option("--pubkey", load.trusted_key_path,
                 "Trusted coordinator public key (PEM, RUN_DIR/keys/coordinator.pub): "
                 "model.json must be signed by it");
  app.add_flag("--allow-unverified-model", load.allow_unverified,
               "Serve without --pubkey, not checking who signed the model (logs a warning)");
  app.add_option("--token-file", token_file,
                 "File holding the bearer token every request must send (else "
                 "$SHOAL_SERVE_TOKEN); required beyond loopback");
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error")
      ->capture_default_str();
  app.add_flag("--require-landlock", require_landlock,
               "Refuse to start where the kernel has no Landlock with TCP rules (ABI >= 4) "
               "instead of warning and serving under seccomp alone");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (auto st = shoal::InitLogging("serve", log_level); !st.ok()) {
    std::fprintf(stderr, "shoal-serve: %s\n", st.ToString().c_str());
    return 2;
  }

  // The handler only records the signal; a watcher thread turns it into Stop(). (sigwait in
  // one thread is not enough: OpenBLAS starts threads before main() that would take the signal.)
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::string token;
  if (!token_file.empty()) {
    auto t = shoal::protocols::ReadTokenFile(token_file);
    if (!t.ok()) {
      spdlog::error("--token-file: {}", t.status().ToString());
      return 2;
    }
    token = *t;
  } else if (const char* env = std::getenv("SHOAL_SERVE_TOKEN"); env != nullptr && *env != 0) {
    token = env;
    if (auto st = shoal::protocols::CheckTokenText(token, "SHOAL_SERVE_TOKEN"); !st.ok()) {
      spdlog::error("{}", st.ToString());
      return 2;
    }
  }

  // Before LibTorch starts a thread and before the model is loaded (Load runs it once): the
  // process reads only the model, model.json, the trusted key and the system paths LibTorch
  // needs, binds only --port and connects nowhere (base/landlock.h). Writes stay possible until
  // --port-file is written; the seccomp filter below then refuses them.
  {
    shoal::LandlockRules rules;
    rules.read_paths = shoal::RuntimeReadPaths();
    for (const std::string& p :
         {model_path, std::filesystem::path(model_path).replace_extension(".json").string(),
          load.trusted_key_path}) {
      if (!p.empty()) rules.read_paths.push_back(p);
    }
    if (!port_file.empty()) {  // written atomically: its directory is opened to be fsynced
      rules.list_dirs.push_back(
          std::filesystem::absolute(port_file).parent_path().lexically_normal().string());
    }
    rules.bind_ports = {static_cast<uint16_t>(port)};
    rules.restrict_writes = false;
    auto landlock = shoal::InstallLandlock(rules);
    if (!landlock.ok()) {
      spdlog::error("cannot sandbox the model server: {}", landlock.status().ToString());
      return 1;
    }
    if (!landlock->missing.empty()) {
      if (require_landlock) {
        spdlog::error("{} (--require-landlock)", landlock->Describe());
        return 1;
      }
      spdlog::warn("sandbox incomplete: {}", landlock->Describe());
    } else {
      spdlog::info("{}", landlock->Describe());
    }
  }
  spdlog::info("runtime {}", shoal::nn::ConfigureTorchRuntime(1));
  auto server = shoal::serve::ModelServer::Load(model_path, load);
  if (!server.ok()) {
    spdlog::error("cannot serve {}: {}", model_path, server.status().ToString());
    return 2;
  }
  const auto& meta = (*server)->metadata();
  auto port_or = (*server)->Bind(host, port, token);
  if (!port_or.ok()) {
    spdlog::error("{}", port_or.status().ToString());
    return port_or.status().code() == shoal::Code::kInvalidArgument ? 2 : 1;
  }
  std::printf("listening on http://%s:%d\n", host.c_str(), *port_or);
  std::fflush(stdout);
  spdlog::info("serving {} v{} of run {} ({} classes), signed by {}, {}", meta.value("model", "?"),
               meta.value("version", 0ull), meta.value("run_id", "?"),
               meta.value("num_classes", 0ll),
               (*server)->signer_fingerprint().empty() ? std::string("an unchecked key")
                                                       : (*server)->signer_fingerprint(),
               token.empty() ? "no token" : "bearer token required");
  if (!port_file.empty()) {
    if (auto st = shoal::WriteFileAtomic(port_file, std::to_string(*port_or) + "\n"); !st.ok()) {
      spdlog::error("{}", st.ToString());
      return 1;
    }
  }

  // Requests run the model (anyone's TorchScript, checked against the operator allow-list at
  // load): from here on the process keeps its listener and the network but may not write or
  // create files, start programs or touch other processes (base/sandbox.h).
  shoal::SandboxOptions sandbox;
  sandbox.allow_network = true;
  sandbox.use_landlock = false;  // installed above, before the model was loaded
  auto report = shoal::InstallSandbox(sandbox);
  if (!report.ok()) {
    spdlog::error("cannot sandbox the model server: {}", report.status().ToString());
    return 1;
  }
  shoal::LogSandbox("serve", *report);

  std::atomic<bool> serving_done{false};
  std::thread watcher([&] {
    while (!serving_done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (const int sig = g_stop_signal; sig != 0) {
        spdlog::info("signal {}: stopping", sig);
        // Repeated until Serve returns: a Stop() that lands just before the listener starts
        // would otherwise be lost.
        while (!serving_done) {
          (*server)->Stop();
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    }
  });
  shoal::Status st = (*server)->Serve();
  serving_done = true;
  watcher.join();
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  spdlog::info("stopped");
  return 0;
}
