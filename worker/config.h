// The worker's configuration: every field with its TOML key, default and meaning.
// docs/config.md is the reference for users; keep the two in step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal::worker {

struct WorkerConfig {
  // [worker]
  std::string name;         // worker.name: unique in the federation
  std::string coordinator;  // worker.coordinator: ZeroMQ endpoint; "" = the bundle's or join
                            // token's address (tcp://127.0.0.1:5555 with --insecure)

  // [data] — the private silo; it never leaves this process.
  std::string data_format = "idx";     // data.format: idx | csv
  std::string data_path;               // data.path: IDX directory or CSV file
  std::string data_split = "train";    // data.split: IDX file prefix (train-images-idx3-ubyte...)
  std::string label_column = "label";  // data.label_column: CSV label column
  int64_t limit = 0;                   // data.limit: use only the first N samples (0 = all)
  double val_fraction = 0.1;           // data.val_fraction: held out for federated evaluation
  uint64_t split_seed = 1;             // data.split_seed: seed of the train/validation split

  // [retry]
  uint32_t retry_initial_ms = 500;   // retry.initial_ms: first reconnect delay
  uint32_t retry_max_ms = 10000;     // retry.max_ms: reconnect delay ceiling (doubles each try)
  uint32_t hello_timeout_ms = 5000;  // retry.hello_timeout_ms: wait this long for Welcome

  // [security]
  std::string bundle;      // security.bundle: enrollment bundle dir (shoalctl enroll); with
                           // join_token, where the worker writes its new credentials
  std::string join_token;  // security.join_token: one-time token (shoalctl token create), or
                           // "@FILE" to read it from FILE; used when the bundle has no
                           // certificate. Empty: the SHOAL_JOIN_TOKEN environment variable.
  std::string server_name = "coordinator";  // security.server_name: name the coordinator's
                                            // certificate must carry
  bool insecure = false;  // security.insecure: plain ZeroMQ, no TLS (debugging only)

  // [model] — which coordinator-supplied TorchScript this worker runs (issue #20: the file is a
  // program the coordinator sends; a worker runs none it was not told to trust).
  std::vector<std::string> trusted_script_sha256;  // model.trusted_script_sha256: SHA-256 (hex)
                                                   // of the TorchScript files this worker runs
  bool allow_untrusted_script = false;  // model.allow_untrusted_script: run any TorchScript
                                        // model the coordinator sends (logs a warning)

  // [privacy] — this silo's own limits, whatever the coordinator asks (docs/privacy.md)
  bool require_dp = false;  // privacy.require_dp: refuse every TrainTask without DP-SGD
  double max_epsilon = 0;   // privacy.max_epsilon: refuse a task that would take this silo's
                            // epsilon (privacy.ledger, at privacy.delta) past it; 0 = no limit
  double delta = 1e-5;      // privacy.delta: the delta this worker's epsilon is computed at
  std::string ledger;       // privacy.ledger: the file recording every DP task this silo ran;
                            // "" = <security.bundle>/privacy-ledger (in memory with --insecure
                            // and no bundle: forgotten at exit, with a warning)
  bool allow_seeded_noise = false;  // privacy.allow_seeded_noise: run DP tasks whose noise comes
                                    // from the coordinator's seed (run.deterministic), which the
                                    // coordinator could subtract; off, such tasks are refused

  // [runtime]
  int threads = 1;                  // runtime.threads: LibTorch intra-op threads
  std::string log_level = "info";   // runtime.log_level
  double progress_interval_s = 10;  // runtime.progress_interval_s: training progress log period
  bool sandbox = true;  // runtime.sandbox: once the silo and credentials are loaded, a seccomp
                        // filter forbids file writes, exec and ptrace (base/sandbox.h)
  bool require_landlock = false;  // runtime.require_landlock: refuse to start where the kernel
                                  // has no Landlock with TCP rules (ABI >= 4); false = go on
                                  // under seccomp alone with a warning (base/landlock.h)

  Status Validate() const;
  // The privacy ledger's path (privacy.ledger, or its default in the bundle; "" = in memory).
  std::string LedgerPath() const;
  // Whether this worker runs the coordinator's TorchScript file of SHA-256 `sha256_hex`
  // (lowercase hex): Ok when it is pinned in model.trusted_script_sha256, or with
  // model.allow_untrusted_script (then *warning says that an unpinned file runs). Rejected
  // otherwise, naming the SHA-256 and the key that would pin it.
  Status CheckScriptTrusted(const std::string& sha256_hex, std::string* warning) const;
};

// The environment variable read when security.join_token is not set: unlike a command-line
// argument, it is not visible to other users in ps.
inline constexpr const char* kJoinTokenEnv = "SHOAL_JOIN_TOKEN";
// The largest join token file read (a token is about 150 characters).
inline constexpr uint64_t kMaxJoinTokenFileBytes = 4096;

// The token text of a security.join_token value: "@FILE" is read from FILE; surrounding
// whitespace is dropped either way.
Result<std::string> ResolveJoinToken(const std::string& value);

Result<WorkerConfig> LoadWorkerConfig(const std::string& path,
                                      const std::vector<std::string>& overrides);

}  // namespace shoal::worker
