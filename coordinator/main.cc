// shoal-coordinator: runs a federation from a config file. Flags override config keys.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "base/cli_flags.h"
#include "base/log.h"
#include "base/malloc_tuning.h"
#include "coordinator/config.h"
#include "coordinator/round_engine.h"
#include "evaluator/child_process_runtime.h"

namespace {
shoal::coordinator::Coordinator* g_coordinator = nullptr;
void OnSignal(int) {
  if (g_coordinator) g_coordinator->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  shoal::TuneMallocForLargeBuffers();
  shoal::UseOneMallocArena();  // central evaluation runs on its own thread, the rest on one
  // One file descriptor per connected worker: use the hard limit, not the 1024 default.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
  }
  CLI::App app{
      "Shoal coordinator: schedules federated rounds, aggregates with FedAvg, stores versions"};
  shoal::ConfigFlags flags(
      app,
      {
          {"--run-dir", "run.dir", "Run directory (run.dir)"},
          {"--rounds", "run.rounds", "Rounds to train (run.rounds)"},
          {"--seed", "run.seed", "Seed (run.seed)"},
          {"--bind", "network.bind", "ZeroMQ endpoint to bind (network.bind)"},
          {"--endpoint-file", "network.endpoint_file", "Write the bound endpoint to this file"},
          {"--model", "model.name",
           "mlp | cnn | logreg | torchscript (model.name; torchscript needs model.path)"},
          {"--min-workers", "selection.min_workers", "Workers needed to start a round"},
          {"--min-fit", "selection.min_fit", "Updates needed to commit a round"},
          {"--fraction", "selection.fraction", "Share of workers selected per round"},
          {"--round-timeout", "selection.round_timeout_s", "Round deadline in seconds"},
          {"--epochs", "train.epochs", "Local epochs per round"},
          {"--batch-size", "train.batch_size", "Local batch size"},
          {"--lr", "train.lr", "SGD learning rate"},
          {"--compression", "train.compression",
           "Updates on the wire: none | fp16 | int8 (error feedback)"},
          {"--eval-limit", "eval.limit", "Central evaluation on the first N samples only"},
          {"--http-port", "http.port", "Dashboard/API port (0 = any free port)"},
          {"--log-level", "runtime.log_level", "trace | debug | info | warn | error"},
          {"--ca-dir", "security.ca_dir", "The federation's CA directory (shoalctl ca init)"},
      });
  flags.AddSwitch(app, "--insecure", "security.insecure",
                  "DEBUGGING ONLY: no TLS; weights travel in clear text and anyone may join");
  CLI11_PARSE(app, argc, argv);

  auto config = shoal::coordinator::LoadCoordinatorConfig(flags.config_path(), flags.Overrides());
  if (!config.ok()) {
    std::fprintf(stderr, "shoal-coordinator: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (auto st = shoal::InitLogging("coordinator", config->log_level); !st.ok()) {
    std::fprintf(stderr, "shoal-coordinator: %s\n", st.ToString().c_str());
    return 2;
  }
  // LibTorch work goes to a shoal-evaluator child: this process never loads LibTorch. The child
  // may read the central test set and nothing else of this machine's files (base/landlock.h).
  std::vector<std::string> readable;
  if (config->eval_format != "none") readable.push_back(config->eval_path);
  shoal::coordinator::Coordinator coordinator(
      std::move(config).value(), shoal::evaluator::MakeChildProcessRuntime(std::move(readable)));
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
