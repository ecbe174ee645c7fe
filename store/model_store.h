// The versioned model store of one run directory:
//   <run_dir>/run.json               run id, model, creation time, config snapshot
//   <run_dir>/versions/v000003.shw   weights (format in model/weights.h, checksummed)
//   <run_dir>/versions/v000003.json  meta: version, sha256, parent, round, participants, metrics
//   <run_dir>/metrics.jsonl          one JSON record per committed round
// Weights are committed before their meta, each written atomically (temp, fsync, rename,
// fsync dir), so a version is visible only once both are complete.
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

  nlohmann::json ToJson() const;
  static Result<VersionMeta> FromJson(const nlohmann::json& j);
};

std::string VersionWeightsPath(const std::string& run_dir, uint64_t version);
std::string VersionMetaPath(const std::string& run_dir, uint64_t version);
std::string MetricsLogPath(const std::string& run_dir);
std::string RunInfoPath(const std::string& run_dir);

// Lists committed versions (those whose meta exists), oldest first. A meta file that cannot be
// read or parsed is Corrupt; with `problems` given, it is skipped and described there instead
// (the coordinator then resumes from the newest good version).
Result<std::vector<VersionMeta>> ListVersions(const std::string& run_dir,
                                              std::vector<std::string>* problems = nullptr);
// Loads a version's weights and checks them against its recorded SHA-256.
Result<model::Weights> LoadVersion(const std::string& run_dir, const VersionMeta& meta);
// Reads metrics.jsonl; a torn last line (no trailing newline: crash mid-append) is skipped, any
// other invalid line is Corrupt.
Result<std::vector<nlohmann::json>> ReadMetricsLog(const std::string& run_dir);

class ModelStore {
 public:
  // Creates the directory layout when missing.
  static Result<ModelStore> Open(const std::string& run_dir);

  // Writes weights then meta; fills meta.sha256 and meta.created_at. InvalidArgument (nothing
  // written) when a weight is NaN or Inf.
  Status Commit(const model::Weights& weights, VersionMeta& meta);
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
