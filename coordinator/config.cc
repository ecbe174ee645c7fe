#include "coordinator/config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "base/config.h"
#include "base/file_util.h"
#include "coordinator/aggregation/aggregator_registry.h"
#include "coordinator/aggregation/multi_krum.h"
#include "coordinator/aggregation/server_optimizer_registry.h"
#include "coordinator/aggregation/update_clipping.h"
#include "data/dataset.h"
#include "model/compression.h"
#include "privacy/dp_params.h"
#include "protocols/frame_layout.h"  // kMaxChunkBytes
#include "protocols/messages.h"      // the client algorithms and their caps
#include "security/pki.h"

namespace shoal::coordinator {

Status ApplyStrategyPreset(const std::string& name, CoordinatorConfig& c) {
  ServerOptimizerParams p;  // beta1 = 0.9, beta2 = 0.99, tau = 1e-3 (Reddi et al. 2021, Sec. 5)
  std::string optimizer = "sgd";
  std::string client = "sgd";
  double mu = 0;
  if (name == "fedavg") {
    p.lr = 1.0;
  } else if (name == "fedavgm") {
    // Hsu et al. 2019: server lr 1 with momentum 0.9 (their best effective lr eta/(1-beta) ~ 10
    // on label-skewed CIFAR-10 shards at small local work; lower server_lr for many epochs).
    optimizer = "momentum";
    p.lr = 1.0;
    p.momentum = 0.9;
  } else if (name == "fedadam" || name == "fedyogi") {
    // Reddi et al. 2021's tuned server learning rates for FedAdam/FedYogi lie around 10^-2
    // (with tau = 10^-3); FedAdagrad's around 10^-1.
    optimizer = name == "fedadam" ? "adam" : "yogi";
    p.lr = 0.01;
  } else if (name == "fedadagrad") {
    optimizer = "adagrad";
    p.lr = 0.1;
  } else if (name == "fedprox") {
    // Li et al. 2020 tune mu over {0.001, 0.01, 0.1, 1}; NIID-Bench (Li et al. 2022) reports
    // its FedProx results with mu = 0.01.
    client = "fedprox";
    mu = 0.01;
  } else {
    return InvalidArgument("config key 'strategy.name': unknown preset '" + name +
                           "' (fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox)");
  }
  c.strategy_name = name;
  c.server_optimizer = optimizer;
  c.server = p;
  c.client = client;
  c.proximal_mu = mu;
  return Status::Ok();
}

double RoundLearningRate(const CoordinatorConfig& c, uint64_t round) {
  return c.lr * std::pow(c.lr_decay, static_cast<double>(round > 0 ? round - 1 : 0));
}

Status CoordinatorConfig::Validate() const {
  auto bad = [](const std::string& key, const std::string& why) {
    return InvalidArgument("config key '" + key + "': " + why);
  };
  if (run_dir.empty()) return bad("run.dir", "must not be empty");
  if (rounds < 1) return bad("run.rounds", "must be at least 1");
  if (bind.empty()) return bad("network.bind", "must not be empty");
  if (heartbeat_ms < 50) return bad("network.heartbeat_ms", "must be at least 50");
  if (peer_timeout_ms < 2 * heartbeat_ms)
    return bad("network.peer_timeout_ms", "must be at least twice heartbeat_ms");
  if (chunk_bytes < 4096 || chunk_bytes > protocols::kMaxChunkBytes || chunk_bytes % 4 != 0) {
    return bad("network.chunk_bytes", "must be a multiple of 4 between 4096 and " +
                                          std::to_string(protocols::kMaxChunkBytes));
  }
  if (max_concurrent_uploads < 1)
    return bad("network.max_concurrent_uploads", "must be at least 1");
  if (max_concurrent_sends < 1) return bad("network.max_concurrent_sends", "must be at least 1");
  if (model != "mlp" && model != "cnn" && model != "logreg" && model != "torchscript") {
    return bad("model.name", "must be mlp, cnn, logreg or torchscript, got '" + model + "'");
  }
  if (model == "torchscript" && model_path.empty()) {
    return bad("model.path",
               "required when model.name is torchscript (a file written by "
               "torch.jit.save(torch.jit.script(model), path))");
  }
  if (model != "torchscript" && !model_path.empty()) {
    return bad("model.path", "is only used with model.name = torchscript, not '" + model + "'");
  }
  if (input_shape.empty()) return bad("model.input_shape", "must not be empty");
  for (int64_t d : input_shape) {
    if (d <= 0) return bad("model.input_shape", "dimensions must be positive");
  }
  if (num_classes < 2) return bad("model.num_classes", "must be at least 2");
  if (min_workers < 1) return bad("selection.min_workers", "must be at least 1");
  if (!(fraction > 0 && fraction <= 1)) return bad("selection.fraction", "must be in (0, 1]");
  if (min_fit < 1) return bad("selection.min_fit", "must be at least 1");
  if (min_fit > min_workers)
    return bad("selection.min_fit", "must not exceed selection.min_workers");
  if (!(wait_timeout_s > 0)) return bad("selection.wait_timeout_s", "must be positive");
  if (!(round_timeout_s > 0)) return bad("selection.round_timeout_s", "must be positive");
  if (max_round_retries < 0) return bad("selection.max_round_retries", "must not be negative");
  if (!(deadline_slack >= 1)) return bad("selection.deadline_slack", "must be at least 1");
  if (epochs < 1) return bad("train.epochs", "must be at least 1");
  if (batch_size < 1) return bad("train.batch_size", "must be at least 1");
  if (!(lr > 0)) return bad("train.lr", "must be positive");
  if (!model::ParseEncoding(compression).ok())
    return bad("train.compression", "must be none, fp16 or int8");
  if (!BuiltinAggregators().Contains(aggregator)) {
    return bad("strategy.aggregator", "unknown aggregator '" + aggregator + "' (registered: " +
                                          BuiltinAggregators().NamesList() + ")");
  }
  if (!BuiltinServerOptimizers().Contains(server_optimizer)) {
    return bad("strategy.server_optimizer",
               "unknown server optimizer '" + server_optimizer +
                   "' (registered: " + BuiltinServerOptimizers().NamesList() + ")");
  }
  if (!(server.lr > 0 && server.lr <= kMaxServerLr)) {
    return bad("strategy.server_lr", "must be in (0, " + std::to_string(kMaxServerLr) + "]");
  }
  if (!(server.momentum >= 0 && server.momentum < 1)) {
    return bad("strategy.server_momentum", "must be in [0, 1)");
  }
  if (!(server.beta1 >= 0 && server.beta1 < 1)) return bad("strategy.beta1", "must be in [0, 1)");
  if (!(server.beta2 >= 0 && server.beta2 < 1)) return bad("strategy.beta2", "must be in [0, 1)");
  // tau > 0 keeps the adaptive step's denominator away from 0; tau^2 (v's start) must stay a
  // normal float.
  if (!(server.tau >= 1e-18 && server.tau <= 1))
    return bad("strategy.tau", "must be in [1e-18, 1]");
  {
    const auto& names = protocols::ClientAlgorithmNames();
    if (std::find(names.begin(), names.end(), client) == names.end()) {
      return bad("strategy.client", "unknown client algorithm '" + client + "' (sgd, fedprox)");
    }
  }
  if (!(proximal_mu >= 0 && proximal_mu <= protocols::kMaxProximalMu)) {
    return bad("strategy.proximal_mu",
               "must be in [0, " + std::to_string(protocols::kMaxProximalMu) + "]");
  }
  if (client == "fedprox" && !(proximal_mu > 0)) {
    return bad("strategy.proximal_mu", "must be positive with strategy.client = fedprox");
  }
  if (!(momentum >= 0 && momentum < 1)) return bad("train.momentum", "must be in [0, 1)");
  if (!(weight_decay >= 0 && weight_decay <= protocols::kMaxWeightDecay)) {
    return bad("train.weight_decay",
               "must be in [0, " + std::to_string(protocols::kMaxWeightDecay) + "]");
  }
  if (!(lr_decay > 0 && lr_decay <= 1)) return bad("train.lr_decay", "must be in (0, 1]");
  if (!(lr * std::pow(lr_decay, rounds - 1) >= 1e-30)) {
    return bad("train.lr_decay", "makes the last round's learning rate vanish (below 1e-30)");
  }
  if (!(max_weight_ratio == 0 || (max_weight_ratio >= 1 && max_weight_ratio <= kMaxWeightRatio))) {
    return bad("strategy.max_weight_ratio",
               "must be 0 (no cap) or between 1 and " + std::to_string(kMaxWeightRatio));
  }
  if (!(trim_fraction >= 0 && trim_fraction < 0.5)) {
    return bad("strategy.trim_fraction", "must be in [0, 0.5)");
  }
  if (byzantine < 0 || byzantine > kMaxRobustUpdates) {
    return bad("strategy.byzantine", "must be between 0 and " + std::to_string(kMaxRobustUpdates));
  }
  if (aggregator == MultiKrum::kName && min_fit < 2 * byzantine + 3) {
    return bad("selection.min_fit",
               "multi_krum with strategy.byzantine=" + std::to_string(byzantine) +
                   " needs at least 2f+3 = " + std::to_string(2 * byzantine + 3) +
                   " updates per round");
  }
  if (multi_krum_m < 0 || multi_krum_m > kMaxRobustUpdates) {
    return bad("strategy.multi_krum_m",
               "must be between 0 (n - f) and " + std::to_string(kMaxRobustUpdates));
  }
  if (!ParseClipMode(clip).ok()) return bad("strategy.clip", "must be none, fixed or adaptive");
  if (!(clip_norm > 0 && clip_norm <= kMaxClipNorm)) {
    return bad("strategy.clip_norm", "must be in (0, " + std::to_string(kMaxClipNorm) + "]");
  }
  if (!(clip_quantile >= 0 && clip_quantile <= 1)) {
    return bad("strategy.clip_quantile", "must be in [0, 1]");
  }
  if (!(clip_lr >= 0 && clip_lr <= kMaxClipLr)) {
    return bad("strategy.clip_lr", "must be in [0, " + std::to_string(kMaxClipLr) + "]");
  }
  if (max_samples < 1 || max_samples > kMaxDeclaredSamples) {
    return bad("admission.max_samples",
               "must be between 1 and " + std::to_string(kMaxDeclaredSamples));
  }
  if (!privacy::ParseDpMode(dp, "privacy.dp").ok()) {
    return bad("privacy.dp", "must be \"none\" or \"sample\", not \"" + dp + "\"");
  }
  if (!(dp_clip_norm > 0 && dp_clip_norm <= privacy::kMaxClipNorm))
    return bad("privacy.clip_norm", "must be in (0, 1e6]");
  if (!(dp_noise_multiplier >= 0 && dp_noise_multiplier <= privacy::kMaxSigma))
    return bad("privacy.noise_multiplier", "must be in [0, 1e4] (0 = from target_epsilon)");
  if (!(dp_target_epsilon >= 0 && dp_target_epsilon <= privacy::kMaxReportedEpsilon))
    return bad("privacy.target_epsilon", "must be in [0, 1e12] (0 = no budget)");
  if (!(dp_delta > 0 && dp_delta < 1)) return bad("privacy.delta", "must be in (0, 1)");
  if (!(dp_sampling_rate == 0 ||
        (dp_sampling_rate >= privacy::kMinSamplingRate && dp_sampling_rate <= 1))) {
    return bad("privacy.sampling_rate", "must be 0 (train.batch_size / n) or in [1e-9, 1]");
  }
  if (dp == "sample" && dp_noise_multiplier == 0 && dp_target_epsilon == 0) {
    return bad("privacy.noise_multiplier",
               "privacy.dp = \"sample\" needs privacy.noise_multiplier or privacy.target_epsilon");
  }
  if (dp == "none" && (dp_noise_multiplier != 0 || dp_target_epsilon != 0)) {
    return bad("privacy.dp",
               "is \"none\" but privacy.noise_multiplier or target_epsilon is "
               "set: say privacy.dp = \"sample\" to train with DP");
  }
  if (eval_format != "none" && !data::IsDataFormat(eval_format)) {
    return bad("eval.format", "must be none or one of " + data::DataFormatList());
  }
  if (eval_limit < 0) return bad("eval.limit", "must not be negative");
  if (!(eval_timeout_s > 0)) return bad("eval.timeout_s", "must be positive");
  if (http_port < 0 || http_port > 65535) return bad("http.port", "must be in 0..65535");
  if (http_linger_s < 0 && http_linger_s != -1) return bad("http.linger_s", "must be >= 0 or -1");
  if (!http_token.empty() && !http_token_file.empty()) {
    return bad("http.token_file", "set either http.token or http.token_file, not both");
  }
  if (!insecure && ca_dir.empty()) {
    return bad("security.ca_dir",
               "required: workers connect over mutually authenticated TLS. Create the federation's "
               "CA with `shoalctl ca init DIR` and pass --ca-dir DIR, or pass --insecure to send "
               "weights in clear text (debugging only)");
  }
  // The root key must never be where the coordinator can read it (issue #20): it signs join
  // requests with the enrollment CA alone. Checked here, before anything starts.
  if (!insecure && PathExists(security::CaKeyPath(ca_dir))) {
    return bad("security.ca_dir",
               ca_dir + " holds the root CA key (" + security::CaKeyPath(ca_dir) +
                   "); the coordinator must not: move it out with `shoalctl ca renew-enrollment " +
                   ca_dir + " --root ROOT_DIR`, which also makes the enrollment CA it needs");
  }
  if (handshake_timeout_ms < 100)
    return bad("security.handshake_timeout_ms", "must be at least 100");
  if (join_timeout_ms < 100) return bad("security.join_timeout_ms", "must be at least 100");
  if (join_timeout_ms > INT32_MAX) return bad("security.join_timeout_ms", "is too large");
  if (handshake_timeout_ms > INT32_MAX) return bad("security.handshake_timeout_ms", "is too large");
  if (threads < 1) return bad("runtime.threads", "must be at least 1");
  return Status::Ok();
}

Result<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path,
                                                const std::vector<std::string>& overrides) {
  SHOAL_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::FromFile(path, overrides));
  CoordinatorConfig c;
  r.Read("run.dir", c.run_dir);
  r.Read("run.id", c.run_id);
  r.Read("run.rounds", c.rounds);
  r.Read("run.seed", c.seed);
  r.Read("run.deterministic", c.deterministic);
  r.Read("network.bind", c.bind);
  r.Read("network.endpoint_file", c.endpoint_file);
  r.Read("network.heartbeat_ms", c.heartbeat_ms);
  r.Read("network.peer_timeout_ms", c.peer_timeout_ms);
  r.Read("network.chunk_bytes", c.chunk_bytes);
  r.Read("network.max_concurrent_uploads", c.max_concurrent_uploads);
  r.Read("network.max_concurrent_sends", c.max_concurrent_sends);
  r.Read("model.name", c.model);
  r.Read("model.path", c.model_path);
  r.Read("model.input_shape", c.input_shape);
  r.Read("model.num_classes", c.num_classes);
  r.Read("selection.min_workers", c.min_workers);
  r.Read("selection.fraction", c.fraction);
  r.Read("selection.min_fit", c.min_fit);
  r.Read("selection.wait_timeout_s", c.wait_timeout_s);
  r.Read("selection.round_timeout_s", c.round_timeout_s);
  r.Read("selection.max_round_retries", c.max_round_retries);
  r.Read("selection.adaptive_deadline", c.adaptive_deadline);
  r.Read("selection.deadline_slack", c.deadline_slack);
  r.Read("train.epochs", c.epochs);
  r.Read("train.batch_size", c.batch_size);
  r.Read("train.lr", c.lr);
  r.Read("train.compression", c.compression);
  r.Read("train.momentum", c.momentum);
  r.Read("train.weight_decay", c.weight_decay);
  r.Read("train.lr_decay", c.lr_decay);
  // The preset first: the explicit strategy keys read after it override its values.
  std::string preset;
  r.Read("strategy.name", preset);
  if (!preset.empty()) SHOAL_RETURN_IF_ERROR(ApplyStrategyPreset(preset, c).Annotate(path));
  r.Read("strategy.aggregator", c.aggregator);
  r.Read("strategy.server_optimizer", c.server_optimizer);
  r.Read("strategy.server_lr", c.server.lr);
  r.Read("strategy.server_momentum", c.server.momentum);
  r.Read("strategy.beta1", c.server.beta1);
  r.Read("strategy.beta2", c.server.beta2);
  r.Read("strategy.tau", c.server.tau);
  r.Read("strategy.client", c.client);
  r.Read("strategy.proximal_mu", c.proximal_mu);
  r.Read("strategy.max_weight_ratio", c.max_weight_ratio);
  r.Read("strategy.trim_fraction", c.trim_fraction);
  r.Read("strategy.byzantine", c.byzantine);
  r.Read("strategy.multi_krum_m", c.multi_krum_m);
  r.Read("strategy.spill_dir", c.spill_dir);
  r.Read("strategy.clip", c.clip);
  r.Read("strategy.clip_norm", c.clip_norm);
  r.Read("strategy.clip_quantile", c.clip_quantile);
  r.Read("strategy.clip_lr", c.clip_lr);
  r.Read("admission.max_samples", c.max_samples);
  r.Read("privacy.dp", c.dp);
  r.Read("privacy.clip_norm", c.dp_clip_norm);
  r.Read("privacy.noise_multiplier", c.dp_noise_multiplier);
  r.Read("privacy.target_epsilon", c.dp_target_epsilon);
  r.Read("privacy.delta", c.dp_delta);
  r.Read("privacy.sampling_rate", c.dp_sampling_rate);
  r.Read("eval.format", c.eval_format);
  r.Read("eval.path", c.eval_path);
  r.Read("eval.split", c.eval_split);
  r.Read("eval.label_column", c.eval_label_column);
  r.Read("eval.limit", c.eval_limit);
  r.Read("eval.federated", c.federated_eval);
  r.Read("eval.timeout_s", c.eval_timeout_s);
  r.Read("eval.overlap", c.eval_overlap);
  r.Read("http.enabled", c.http_enabled);
  r.Read("http.address", c.http_address);
  r.Read("http.port", c.http_port);
  r.Read("http.port_file", c.http_port_file);
  r.Read("http.token", c.http_token);
  r.Read("http.token_file", c.http_token_file);
  r.Read("http.linger_s", c.http_linger_s);
  r.Read("security.ca_dir", c.ca_dir);
  r.Read("security.insecure", c.insecure);
  r.Read("security.handshake_timeout_ms", c.handshake_timeout_ms);
  r.Read("security.anonymous_session_limit", c.anonymous_session_limit);
  r.Read("security.anonymous_per_address_limit", c.anonymous_per_address_limit);
  r.Read("security.join_timeout_ms", c.join_timeout_ms);
  r.Read("runtime.threads", c.threads);
  r.Read("runtime.log_level", c.log_level);
  SHOAL_RETURN_IF_ERROR(r.Finish());
  SHOAL_RETURN_IF_ERROR(c.Validate().Annotate(path.empty() ? "<defaults>" : path));
  return c;
}

}  // namespace shoal::coordinator
