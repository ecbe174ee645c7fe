// shoal-worker: trains on one private data silo for a Shoal federation.
#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "common/log.h"
#include "worker/client.h"
#include "worker/config.h"

namespace {
shoal::WorkerClient* g_worker = nullptr;
void OnSignal(int) {
  if (g_worker) g_worker->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Shoal worker: trains locally on a private data silo, sends weight deltas"};
  std::string config_path;
  std::vector<std::string> overrides;
  app.add_option("-c,--config", config_path, "TOML config file (see docs/config.md)");
  app.add_option("--set", overrides, "Override a config key: section.key=value (repeatable)");
  struct Flag { const char* flag; const char* key; const char* help; };
  const Flag kFlags[] = {
      {"--name", "worker.name", "Worker name, unique in the federation (worker.name)"},
      {"--coordinator", "worker.coordinator", "Coordinator endpoint (worker.coordinator)"},
      {"--data", "data.path", "Silo: IDX directory or CSV file (data.path)"},
      {"--format", "data.format", "idx | csv (data.format)"},
      {"--limit", "data.limit", "Use only the first N samples (data.limit)"},
      {"--threads", "runtime.threads", "LibTorch intra-op threads (runtime.threads)"},
      {"--log-level", "runtime.log_level", "trace | debug | info | warn | error"},
  };
  std::vector<std::string> flag_values(std::size(kFlags));
  for (size_t i = 0; i < std::size(kFlags); ++i) {
    app.add_option(kFlags[i].flag, flag_values[i], kFlags[i].help);
  }
  CLI11_PARSE(app, argc, argv);
  for (size_t i = 0; i < std::size(kFlags); ++i) {
    if (!flag_values[i].empty()) overrides.push_back(std::string(kFlags[i].key) + "=" + flag_values[i]);
  }
  auto config = shoal::LoadWorkerConfig(config_path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "shoal-worker: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (auto st = shoal::InitLogging("worker", config->log_level); !st.ok()) {
    std::fprintf(stderr, "shoal-worker: %s\n", st.ToString().c_str());
    return 2;
  }
  shoal::WorkerClient worker(std::move(config).value());
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
