// shoal-loadgen: many synthetic workers in one process against a real shoal-coordinator, to
// measure the coordinator's memory and throughput as the number of workers grows. No LibTorch:
// the workers "train" instantly (or after --train-ms) and upload a deterministic random delta
// of the model's spec. See fleet.h for what each synthetic worker does.
//
//   shoal-loadgen --coordinator tcp://127.0.0.1:5555 --workers 1000 --summary out.json
//
// Exit status: 0 when every worker saw the run finish (Shutdown; --vanish workers excepted), 1
// otherwise, 2 on bad flags.
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/log.h"
#include "base/malloc_tuning.h"
#include "bench/loadgen/fleet.h"

namespace {

volatile bool g_stop = false;
void OnSignal(int) { g_stop = true; }

// Raises the open-file limit to what `needed` descriptors require (each ZeroMQ socket uses a
// TCP connection and a mailbox descriptor). Returns the soft limit in effect.
rlim_t RaiseFileLimit(rlim_t needed) {
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur >= needed) return rl.rlim_cur;
  rlimit want = rl;
  want.rlim_cur = rl.rlim_max == RLIM_INFINITY ? needed : std::min(needed, rl.rlim_max);
  if (want.rlim_cur < needed) {
    want.rlim_max = needed;  // root may raise the hard limit too
    want.rlim_cur = needed;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) return needed;
    want = rl;
    want.rlim_cur = rl.rlim_max;
  }
  if (setrlimit(RLIMIT_NOFILE, &want) != 0) return rl.rlim_cur;
  return want.rlim_cur;
}

bool ParseShape(const std::string& text, std::vector<int64_t>* out) {
  out->clear();
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    try {
      size_t used = 0;
      const long long v = std::stoll(part, &used);
      if (used != part.size() || v <= 0) return false;
      out->push_back(v);
    } catch (...) {
      return false;
    }
  }
  return !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  shoal::TuneMallocForLargeBuffers();  // chunk-sized frames are built every upload
  shoal::loadgen::FleetOptions o;
  std::string shape = "1,28,28";
  std::string summary_path;
  std::string log_level = "info";
  CLI::App app{
      "Shoal load generator: synthetic workers speaking the real protocol to a coordinator"};
  app.add_option("--coordinator", o.endpoint, "Coordinator endpoint (e.g. tcp://127.0.0.1:5555)")
      ->required();
  app.add_option("-n,--workers", o.workers, "Synthetic workers")->check(CLI::Range(1, 100000));
  app.add_option("--name-prefix", o.name_prefix, "Worker names are PREFIX-0001, ...");
  app.add_option("--num-train", o.num_train, "Training samples each worker declares (and reports)")
      ->check(CLI::PositiveNumber);
  app.add_option("--num-val", o.num_val,
                 "Validation samples each worker declares (0 = no federated evaluation)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--input-shape", shape,
                 "Per-sample input shape, comma-separated (model.input_shape)");
  app.add_option("--num-classes", o.num_classes, "Classes (<= model.num_classes)")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--train-ms", o.train_ms, "Simulated training time per round (ms)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--train-jitter-ms", o.train_jitter_ms,
                 "Plus a deterministic per-worker share of this")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--delta-scale", o.delta_scale, "Largest |value| of the synthetic deltas")
      ->check(CLI::PositiveNumber);
  app.add_option("--unique-bytes", o.unique_bytes,
                 "Worker-specific tail of each delta in bytes; the rest is a per-round pattern "
                 "shared by all workers and hashed once per round (-1 = every byte unique)");
  app.add_option("--io-threads", o.io_threads, "ZeroMQ I/O threads")->check(CLI::Range(1, 64));
  app.add_option("--connect-rate", o.connect_rate, "Workers connected per second (0 = all at once)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--hello-timeout-ms", o.hello_timeout_ms,
                 "Reconnect when no Welcome came in time");
  app.add_option("--vanish", o.vanish,
                 "The last K workers close their connection right after Welcome and never come "
                 "back (a crash), to check that the coordinator drops silent workers")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--timeout", o.timeout_s, "Give up after this many seconds (0 = never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--bundles", o.bundles_dir,
                 "TLS: enrollment bundles, one per worker (DIR/NAME); default: plain, for a "
                 "coordinator started with --insecure");
  app.add_option("--ca-dir", o.ca_dir,
                 "With --bundles: the federation's CA, to issue the bundles that are missing");
  app.add_option("--server-name", o.server_name, "Name the coordinator's certificate must carry");
  app.add_option("--summary", summary_path, "Write the JSON summary here (default: stdout)");
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error");
  CLI11_PARSE(app, argc, argv);
  if (!ParseShape(shape, &o.input_shape)) {
    std::fprintf(stderr, "shoal-loadgen: --input-shape '%s' is not a list of positive integers\n",
                 shape.c_str());
    return 2;
  }
  if (auto st = shoal::InitLogging("loadgen", log_level); !st.ok()) {
    std::fprintf(stderr, "shoal-loadgen: %s\n", st.ToString().c_str());
    return 2;
  }
  const rlim_t needed = static_cast<rlim_t>(o.workers) * 3 + 256;
  const rlim_t have = RaiseFileLimit(needed);
  if (have < needed) {
    spdlog::warn("open-file limit is {} but {} workers need about {}; raise ulimit -n", have,
                 o.workers, needed);
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  shoal::loadgen::Fleet fleet(o);
  if (auto tls = fleet.SetUpTls(); !tls.ok()) {
    spdlog::error("{}", tls.ToString());
    return 2;
  }
  spdlog::info("{} synthetic workers -> {} (input_shape={} classes={} train={} val={})", o.workers,
               o.endpoint, shape, o.num_classes, o.num_train, o.num_val);
  shoal::Status st = fleet.Run(g_stop);
  nlohmann::json summary = fleet.Summary();
  summary["status"] = st.ok() ? (g_stop ? "stopped" : "ok") : st.ToString();
  const std::string text = summary.dump(2) + "\n";
  if (summary_path.empty()) {
    std::fputs(text.c_str(), stdout);
  } else {
    std::ofstream out(summary_path, std::ios::trunc);
    out << text;
    if (!out) spdlog::error("cannot write {}", summary_path);
  }
  spdlog::info(
      "done: {} of {} workers saw the run finish, {} gave up, {} reconnects, {:.1f} s ({})",
      summary["finished"].get<int>(), o.workers, summary["gave_up"].get<int>(),
      summary["reconnects"].get<uint64_t>(), summary["elapsed_s"].get<double>(),
      summary["status"].get<std::string>());
  if (!st.ok()) return 1;
  return fleet.ExitCode();
}
