// The versioned model store of one run directory:
//   <run_dir>/run.json               run id, model, creation time, config snapshot
//   <run_dir>/versions/v000003.shw   weights (format in model/weights.h, checksummed)
//   <run_dir>/versions/v000003.json  meta: version, sha256, parent, round, participants, metrics
//   <run_dir>/versions/v000003.state.shw  the server optimizer's state after the round (when it
//                                    keeps one): same format, its SHA-256 in the meta
//   <run_dir>/metrics.jsonl          one JSON record per committed round
// Weights (and server state) are committed before their meta, each written atomically (temp,
// fsync, rename, fsync dir), so a version is visible only once all are complete; the meta
// records the SHA-256 of both, so a version is the model and the state it continues with.
//
// Not thread-safe; the coordinator's round engine owns it. Offline readers (shoalctl) use the
// free functions.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/weights.h"

namespace shoal::store {

struct VersionMeta {
  uint64_t version = 0;
  std::string sha256;              // hex, Weights::Hash()
  std::optional<uint64_t> parent;  // none for v0
  uint64_t round = 0;              // round that produced it (0 = initial model)
  std::vector<std::string> participants;
  nlohmann::json metrics = nlohmann::json::object();
  std::string created_at;  // UTC ISO 8601
  // The server optimizer that made the version and the SHA-256 (hex, Weights::Hash) of its
  // state file; both empty when the version has no server state (v0, stateless optimizers).
  std::string server_optimizer;
  std::string server_state_sha256;

  nlohmann::json ToJson() const;
  static Result<VersionMeta> FromJson(const nlohmann::json& j);
};

std::string VersionWeightsPath(const std::string& run_dir, uint64_t version);
std::string VersionMetaPath(const std::string& run_dir, uint64_t version);
std::string VersionStatePath(const std::string& run_dir, uint64_t version);
std::string MetricsLogPath(const std::string& run_dir);
std::string RunInfoPath(const std::string& run_dir);

// Lists committed versions (those whose meta exists), oldest first. A meta file that cannot be
// read or parsed is Corrupt; with `problems` given, it is skipped and described there instead
// (the coordinator then resumes from the newest good version).
Result<std::vector<VersionMeta>> ListVersions(const std::string& run_dir,
                                              std::vector<std::string>* problems = nullptr);
// Loads a version's weights and checks them against its recorded SHA-256.
Result<model::Weights> LoadVersion(const std::string& run_dir, const VersionMeta& meta);
// Loads a version's server state and checks it against its recorded SHA-256; NotFound when the
// version records none. Corrupt when the file is missing, truncated or does not match.
Result<model::Weights> LoadVersionState(const std::string& run_dir, const VersionMeta& meta);
// Reads metrics.jsonl; a torn last line (no trailing newline: crash mid-append) is skipped, any
// other invalid line is Corrupt.
Result<std::vector<nlohmann::json>> ReadMetricsLog(const std::string& run_dir);

class ModelStore {
 public:
  // Creates the directory layout when missing.
  static Result<ModelStore> Open(const std::string& run_dir);

  // Writes weights, then `server_state` when given (made by meta.server_optimizer), then meta;
  // fills meta.sha256, meta.server_state_sha256 and meta.created_at. InvalidArgument (nothing
  // written) when a weight or state value is NaN or Inf.
  Status Commit(const model::Weights& weights, VersionMeta& meta,
                const model::Weights* server_state = nullptr);
  // Rewrites the meta of a committed version (its metrics arrive after the commit).
  Status UpdateMeta(const VersionMeta& meta);
  Status AppendMetrics(const nlohmann::json& record);
  const std::string& dir() const { return dir_; }

 private:
  explicit ModelStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

std::string UtcNow();

}  // namespace shoal::store
