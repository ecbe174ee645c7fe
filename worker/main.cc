// shoal-worker: trains on one private data silo for a Shoal federation.
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>

#include "base/cli_flags.h"
#include "base/log.h"
#include "base/malloc_tuning.h"
#include "worker/client.h"
#include "worker/config.h"

namespace {
shoal::worker::WorkerClient* g_worker = nullptr;
void OnSignal(int) {
  if (g_worker) g_worker->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  shoal::TuneMallocForLargeBuffers();
  shoal::UseOneMallocArena();
  CLI::App app{"Shoal worker: trains locally on a private data silo, sends weight deltas"};
  shoal::ConfigFlags flags(
      app, {
               {"--name", "worker.name", "Worker name, unique in the federation (worker.name)"},
               {"--coordinator", "worker.coordinator", "Coordinator endpoint (worker.coordinator)"},
               {"--data", "data.path", "Silo: IDX directory or CSV file (data.path)"},
               {"--format", "data.format", "idx | csv (data.format)"},
               {"--limit", "data.limit", "Use only the first N samples (data.limit)"},
               {"--threads", "runtime.threads", "LibTorch intra-op threads (runtime.threads)"},
               {"--log-level", "runtime.log_level", "trace | debug | info | warn | error"},
               {"--bundle", "security.bundle", "Enrollment bundle directory (security.bundle)"},
               {"--join", "security.join_token",
                "Enroll with a one-time join token: @FILE holding it (preferred; or the "
                "SHOAL_JOIN_TOKEN environment variable), credentials written to --bundle"},
           });
  flags.AddSwitch(app, "--insecure", "security.insecure",
                  "DEBUGGING ONLY: no TLS; weights travel in clear text");
  flags.AddSwitch(app, "--allow-untrusted-script", "model.allow_untrusted_script",
                  "Run any TorchScript model the coordinator sends, not only the SHA-256s in "
                  "model.trusted_script_sha256 (logs a warning)");
  CLI11_PARSE(app, argc, argv);
  auto config = shoal::worker::LoadWorkerConfig(flags.config_path(), flags.Overrides());
  if (!config.ok()) {
    std::fprintf(stderr, "shoal-worker: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (auto st = shoal::InitLogging("worker", config->log_level); !st.ok()) {
    std::fprintf(stderr, "shoal-worker: %s\n", st.ToString().c_str());
    return 2;
  }
  // A token given as text on the command line is visible to every local user in ps and
  // /proc/PID/cmdline until it is redeemed.
  for (const std::string& o : flags.Overrides()) {
    const std::string key = "security.join_token=";
    if (o.rfind(key, 0) == 0 && o.size() > key.size() && o[key.size()] != '@') {
      spdlog::warn(
          "the join token was given on the command line, where other local users can read it "
          "(ps); prefer --join @FILE (a file only you can read) or the {} environment variable",
          shoal::worker::kJoinTokenEnv);
    }
  }
  shoal::worker::WorkerClient worker(std::move(config).value());
  g_worker = &worker;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  shoal::Status st = worker.Run();
  g_worker = nullptr;
  if (!st.ok()) {
    spdlog::error("worker stopped: {}", st.ToString());
    return 1;
  }
  return 0;
}
