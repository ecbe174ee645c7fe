// The coordinator's configuration: every field with its TOML key, default and meaning.
// docs/config.md is the reference for users; keep the two in step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/server_optimizer.h"  // ServerOptimizerParams
#include "protocols/channel.h"                         // the defaults of the channel's limits

namespace shoal::coordinator {

// Ranges of the anti-poisoning keys. 2^53: declared counts stay exact in double, where the
// weight cap is computed.
constexpr int64_t kMaxDeclaredSamples = int64_t{1} << 53;
constexpr double kMaxWeightRatio = 1e6;
// Upper bound of strategy.server_lr: beyond it a step is a typo, not a learning rate.
constexpr double kMaxServerLr = 1e3;

struct CoordinatorConfig {
  // [run]
  std::string run_dir = "runs/default";  // run.dir: where versions and metrics are written
  std::string run_id;                    // run.id: "" = generated once and kept in run.json
  int rounds = 5;                        // run.rounds: rounds to train (total, including resumed)
  uint64_t seed = 42;                    // run.seed: model init, worker selection, training seeds
  bool deterministic = false;  // run.deterministic: order-independent (bit-exact) aggregation

  // [network]
  std::string bind =
      "tcp://127.0.0.1:5555";  // network.bind: where the STREAM socket listens (port 0 or * = any)
  std::string endpoint_file;   // network.endpoint_file: write the bound endpoint here
  uint32_t heartbeat_ms = 2000;  // network.heartbeat_ms: heartbeat period both ways
  uint32_t peer_timeout_ms =
      20000;  // network.peer_timeout_ms: silence after which a worker is lost
  // network.chunk_bytes: largest weights chunk per message. 1 MiB: a worker's receive and seal
  // buffers are then reused chunk after chunk instead of being 4 MiB of fresh memory each
  // (ten CNN workers, alternating runs: Shoal's CPU beyond the training and evaluation work
  // 2.2-2.8% of it with 1 MiB chunks, 2.3-3.2% with 4 MiB; coordinator peak RSS 58 vs 78 MiB).
  uint32_t chunk_bytes = 1u << 20;
  int max_concurrent_uploads = 2;  // network.max_concurrent_uploads: updates in flight at once
  int max_concurrent_sends = 8;    // network.max_concurrent_sends: broadcasts in flight at once

  // [model]
  std::string model = "cnn";  // model.name: mlp | cnn | logreg | torchscript
  std::string model_path;     // model.path: TorchScript file (model.name = torchscript)
  std::vector<int64_t> input_shape = {1, 28, 28};  // model.input_shape: one sample's shape
  int64_t num_classes = 10;                        // model.num_classes

  // [selection]
  int min_workers = 3;          // selection.min_workers: connected workers needed to start a round
  double fraction = 1.0;        // selection.fraction: share of connected workers selected per round
  int min_fit = 1;              // selection.min_fit: updates needed to commit a round
  double wait_timeout_s = 600;  // selection.wait_timeout_s: give up waiting for min_workers
  double round_timeout_s = 900;  // selection.round_timeout_s: deadline for updates in a round
  int max_round_retries = 3;     // selection.max_round_retries: retries of a round short of min_fit
  bool adaptive_deadline =
      false;  // selection.adaptive_deadline: deadline from observed worker speed
  double deadline_slack =
      2.0;  // selection.deadline_slack: adaptive deadline = slack x slowest expected + 5 s

  // [train]
  int epochs = 1;                    // train.epochs: local epochs per round
  int batch_size = 32;               // train.batch_size
  double lr = 0.05;                  // train.lr: SGD learning rate
  std::string compression = "none";  // train.compression: none | fp16 | int8 (updates on the wire)
  double momentum = 0;               // train.momentum: the workers' local SGD momentum, [0, 1)
  double weight_decay = 0;           // train.weight_decay: the local SGD's L2 weight decay, [0, 1]
  // train.lr_decay: round r trains with train.lr x lr_decay^(r-1) (1 = constant), (0, 1]
  double lr_decay = 1.0;

  // [strategy]
  // strategy.aggregator: how the round's updates become the next model, by its name in the
  // aggregator registry (coordinator/aggregation/): mean (FedAvg), trimmed_mean, median,
  // multi_krum (robust to dishonest workers; they keep the round's updates on disk)
  std::string aggregator = "mean";
  // strategy.name: a preset that sets the axes below (ApplyStrategyPreset; docs/config.md has
  // each preset's values); any strategy key given explicitly overrides the preset's value.
  std::string strategy_name = "fedavg";
  // strategy.server_optimizer: how the aggregated delta moves the global model, by its name in
  // the server optimizer registry (coordinator/aggregation/): sgd | momentum | adam | yogi |
  // adagrad. sgd with server_lr = 1 is plain FedAvg.
  std::string server_optimizer = "sgd";
  // strategy.server_lr, server_momentum, beta1, beta2, tau: the optimizer's hyperparameters
  // (ServerOptimizerParams; the preset sets the values of Reddi et al. 2021).
  ServerOptimizerParams server;
  // strategy.client: the workers' local algorithm (TrainTask.client_algorithm): sgd | fedprox
  std::string client = "sgd";
  // strategy.proximal_mu: FedProx's mu (the local objective gains mu/2 ||w - w_global||^2)
  double proximal_mu = 0;
  // strategy.max_weight_ratio: an update weighs at most this many times the (lower) median of
  // the training-set sizes the round's selected workers declared before it, so one worker
  // cannot outweigh the others by declaring a huge silo (issue #20). 0 = no cap. 4 leaves
  // honest label-skewed splits uncapped (shoalctl partition --scheme dirichlet --alpha 0.5 of
  // Fashion-MNIST into 3, 5 and 10 silos, seeds 1-8: the largest silo is at most 3.55x the
  // lower median; alpha 0.1 into 10 silos reaches 6x and is capped) while one worker among n
  // equal ones weighs at most 4/(n+3) of the round instead of all of it.
  double max_weight_ratio = 4.0;
  // Robust aggregation (issue #23; coordinator/aggregation/robust_aggregator.h).
  // strategy.trim_fraction: trimmed_mean drops this share of the largest and of the smallest
  // values per coordinate, in [0, 0.5).
  double trim_fraction = 0.1;
  // strategy.byzantine: f, the workers multi_krum tolerates; selection.min_fit must be at least
  // 2f + 3.
  int byzantine = 0;
  // strategy.multi_krum_m: how many of the best-scored updates multi_krum averages; 0 = n - f.
  int multi_krum_m = 0;
  // strategy.spill_dir: where median, trimmed_mean and multi_krum keep the round's updates (an
  // unnamed file, k x model bytes); empty = the run directory.
  std::string spill_dir;
  // Update norm bounds (coordinator/aggregation/update_clipping.h), before any aggregator.
  // strategy.clip: none | fixed (every update scaled down to at most clip_norm) | adaptive
  // (the bound follows the clip_quantile of update norms, Andrew et al. 2021).
  std::string clip = "none";
  double clip_norm = 1.0;      // strategy.clip_norm: the fixed bound, or the adaptive start
  double clip_quantile = 0.5;  // strategy.clip_quantile: adaptive target share under the bound
  double clip_lr = 0.2;        // strategy.clip_lr: adaptive step (C *= exp(-lr (b - quantile)))

  // [privacy] (docs/privacy.md)
  std::string dp = "none";    // privacy.dp: none | sample (DP-SGD on every worker)
  double dp_clip_norm = 1.0;  // privacy.clip_norm: C, each example's gradient norm bound
  // privacy.noise_multiplier: sigma (noise N(0, (sigma C)^2) per step); 0 = the smallest sigma
  // that keeps each silo within privacy.target_epsilon after run.rounds rounds
  double dp_noise_multiplier = 0;
  double dp_target_epsilon = 0;  // privacy.target_epsilon: each silo's budget; 0 = no budget
  double dp_delta = 1e-5;        // privacy.delta: the delta epsilon is stated at
  // privacy.sampling_rate: q of the Poisson batches; 0 = train.batch_size / n per silo (n: the
  // silo's training-set size), so the expected batch is train.batch_size
  double dp_sampling_rate = 0;

  // [admission]
  // admission.max_samples: the largest training or validation set a worker may declare at
  // Hello; more is refused there with an error naming the key. A hard ceiling whatever the
  // round's median (1e9: ample for one silo, far from overflowing a round's int64 total).
  int64_t max_samples = 1000000000;

  // [eval]
  std::string eval_format = "idx";  // eval.format: idx | csv | none (no central evaluation)
  std::string eval_path = "/usr/share/datasets/fashion-mnist";  // eval.path: IDX dir or CSV file
  std::string eval_split = "t10k";                              // eval.split: IDX file prefix
  std::string eval_label_column = "label";                      // eval.label_column: for CSV
  int64_t eval_limit = 0;       // eval.limit: use only the first N samples (0 = all)
  bool federated_eval = true;   // eval.federated: workers evaluate each new version locally
  double eval_timeout_s = 120;  // eval.timeout_s: wait for federated results at most this long
  // eval.overlap: evaluate version N while round N+1 trains (the version is committed first, its
  // metrics are added when the evaluation is in); false: each round waits for its evaluation.
  bool eval_overlap = true;

  // [http]
  bool http_enabled = true;                // http.enabled: serve the dashboard, API and /metrics
  std::string http_address = "127.0.0.1";  // http.address: non-loopback requires http.token
  int http_port = 8080;                    // http.port: 0 = any free port
  std::string http_port_file;              // http.port_file: write the bound port here
  std::string http_token;                  // http.token: bearer token required by every request
  std::string http_token_file;  // http.token_file: the token from this file (not in `ps`)
  double http_linger_s = 0;  // http.linger_s: keep serving after the run ends (-1 = until stopped)

  // [security]
  std::string ca_dir;  // security.ca_dir: the federation's CA (shoalctl ca init); required
                       // unless security.insecure
  bool insecure =
      false;  // security.insecure: plain ZeroMQ, no TLS, anyone may join (debugging only)
  // security.handshake_timeout_ms: a connection must finish its TLS handshake, and then be
  // admitted (its Hello accepted), within this time of its first frame
  uint32_t handshake_timeout_ms = 10000;
  // security.anonymous_session_limit / anonymous_per_address_limit: TLS sessions without a
  // client certificate (join-token enrollment, accepted only while a token is open) at once, in
  // all and from one address; beyond, the oldest is closed. 0 = no enrollment over the network.
  uint32_t anonymous_session_limit = protocols::kDefaultMaxAnonymousSessions;
  uint32_t anonymous_per_address_limit = protocols::kDefaultMaxAnonymousPerAddress;
  // security.join_timeout_ms: such a session must send its JoinRequest within this time of its
  // handshake
  uint32_t join_timeout_ms = protocols::kDefaultAnonymousTimeoutMs;

  // [runtime]
  int threads = 1;                 // runtime.threads: LibTorch intra-op threads (evaluation)
  std::string log_level = "info";  // runtime.log_level

  Status Validate() const;
};

// Sets the strategy axes of `name` (strategy.name): fedavg | fedavgm | fedadam | fedyogi |
// fedadagrad | fedprox. InvalidArgument naming the presets for any other name.
// LoadCoordinatorConfig applies it before reading the other strategy keys, so explicit keys
// override the preset.
Status ApplyStrategyPreset(const std::string& name, CoordinatorConfig& c);

// The learning rate of round `round` (1-based): train.lr x train.lr_decay^(round - 1).
double RoundLearningRate(const CoordinatorConfig& c, uint64_t round);

// Reads `path` (may be empty for defaults) with "section.key=value" overrides applied.
Result<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path,
                                                const std::vector<std::string>& overrides);

}  // namespace shoal::coordinator
