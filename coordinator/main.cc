// shoal-coordinator: runs a federation from a config file. Flags override config keys.
#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "common/log.h"
#include "coordinator/config.h"
#include "coordinator/round_engine.h"

namespace {
shoal::Coordinator* g_coordinator = nullptr;
void OnSignal(int) {
  if (g_coordinator) g_coordinator->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Shoal coordinator: schedules federated rounds, aggregates with FedAvg, stores versions"};
  std::string config_path;
  std::vector<std::string> overrides;
  app.add_option("-c,--config", config_path, "TOML config file (see docs/config.md)");
  app.add_option("--set", overrides, "Override a config key: section.key=value (repeatable)");
  // Shorthands for the keys most often changed on the command line.
  struct Flag { const char* flag; const char* key; const char* help; };
  const Flag kFlags[] = {
      {"--run-dir", "run.dir", "Run directory (run.dir)"},
      {"--rounds", "run.rounds", "Rounds to train (run.rounds)"},
      {"--seed", "run.seed", "Seed (run.seed)"},
      {"--bind", "network.bind", "ZeroMQ endpoint to bind (network.bind)"},
      {"--endpoint-file", "network.endpoint_file", "Write the bound endpoint to this file"},
      {"--model", "model.name", "mlp | cnn | logreg (model.name)"},
      {"--min-workers", "selection.min_workers", "Workers needed to start a round"},
      {"--min-fit", "selection.min_fit", "Updates needed to commit a round"},
      {"--fraction", "selection.fraction", "Share of workers selected per round"},
      {"--round-timeout", "selection.round_timeout_s", "Round deadline in seconds"},
      {"--epochs", "train.epochs", "Local epochs per round"},
      {"--batch-size", "train.batch_size", "Local batch size"},
      {"--lr", "train.lr", "SGD learning rate"},
      {"--eval-limit", "eval.limit", "Central evaluation on the first N samples only"},
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

  auto config = shoal::LoadCoordinatorConfig(config_path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "shoal-coordinator: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (auto st = shoal::InitLogging("coordinator", config->log_level); !st.ok()) {
    std::fprintf(stderr, "shoal-coordinator: %s\n", st.ToString().c_str());
    return 2;
  }
  shoal::Coordinator coordinator(std::move(config).value());
  g_coordinator = &coordinator;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  shoal::Status st = coordinator.Run();
  g_coordinator = nullptr;
  if (!st.ok()) {
    spdlog::error("run failed: {}", st.ToString());
    return 1;
  }
  return 0;
}
