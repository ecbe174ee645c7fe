#include "store/model_store.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "base/file_util.h"

namespace shoal::store {

std::string UtcNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

nlohmann::json VersionMeta::ToJson() const {
  nlohmann::json j = {{"version", version}, {"sha256", sha256},
                      {"round", round},     {"participants", participants},
                      {"metrics", metrics}, {"created_at", created_at}};
  j["parent"] = parent ? nlohmann::json(*parent) : nlohmann::json(nullptr);
  if (!server_state_sha256.empty()) {
    j["server_state"] = {{"optimizer", server_optimizer}, {"sha256", server_state_sha256}};
  }
  return j;
}

Result<VersionMeta> VersionMeta::FromJson(const nlohmann::json& j) {
  VersionMeta m;
  try {
    m.version = j.at("version").get<uint64_t>();
    m.sha256 = j.at("sha256").get<std::string>();
    m.round = j.at("round").get<uint64_t>();
    m.participants = j.at("participants").get<std::vector<std::string>>();
    m.metrics = j.value("metrics", nlohmann::json::object());
    m.created_at = j.value("created_at", "");
    if (!j.at("parent").is_null()) m.parent = j.at("parent").get<uint64_t>();
    if (j.contains("server_state")) {
      m.server_optimizer = j.at("server_state").at("optimizer").get<std::string>();
      m.server_state_sha256 = j.at("server_state").at("sha256").get<std::string>();
      if (m.server_optimizer.empty() || m.server_state_sha256.size() != 64) {
        return Corrupt("version meta: server_state needs an optimizer and a 64-digit sha256");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(std::string("version meta: ") + e.what());
  }
  return m;
}

static std::string VersionStem(const std::string& run_dir, uint64_t version) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "v%06llu", static_cast<unsigned long long>(version));
  return run_dir + "/versions/" + buf;
}

std::string VersionWeightsPath(const std::string& run_dir, uint64_t v) {
  return VersionStem(run_dir, v) + ".shw";
}
std::string VersionMetaPath(const std::string& run_dir, uint64_t v) {
  return VersionStem(run_dir, v) + ".json";
}
std::string VersionStatePath(const std::string& run_dir, uint64_t v) {
  return VersionStem(run_dir, v) + ".state.shw";
}
std::string MetricsLogPath(const std::string& run_dir) { return run_dir + "/metrics.jsonl"; }
std::string RunInfoPath(const std::string& run_dir) { return run_dir + "/run.json"; }

static Result<VersionMeta> ReadVersionMeta(const std::string& path) {
  SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 1 << 24));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return Corrupt("not valid JSON");
  return VersionMeta::FromJson(j);
}

Result<std::vector<VersionMeta>> ListVersions(const std::string& run_dir,
                                              std::vector<std::string>* problems) {
  const std::string dir = run_dir + "/versions";
  if (!PathExists(dir)) return NotFound(run_dir + " is not a Shoal run directory (no versions/)");
  std::vector<VersionMeta> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const auto& p = entry.path();
    if (p.extension() != ".json" || p.filename().string().rfind('v', 0) != 0) continue;
    auto meta = ReadVersionMeta(p.string());
    if (!meta.ok()) {
      Status st = meta.status().Annotate(p.string());
      if (problems == nullptr) return st;
      problems->push_back(st.ToString());
      continue;
    }
    out.push_back(std::move(meta).value());
  }
  if (ec) return IoError("list " + dir + ": " + ec.message());
  std::sort(out.begin(), out.end(),
            [](const VersionMeta& a, const VersionMeta& b) { return a.version < b.version; });
  return out;
}

Result<model::Weights> LoadVersion(const std::string& run_dir, const VersionMeta& meta) {
  const std::string path = VersionWeightsPath(run_dir, meta.version);
  SHOAL_ASSIGN_OR_RETURN(model::Weights w, model::LoadWeights(path));
  const std::string hash = ToHex(w.Hash());
  if (hash != meta.sha256) {
    return Corrupt(path + ": SHA-256 " + hash + " does not match the recorded " + meta.sha256);
  }
  return w;
}

Result<model::Weights> LoadVersionState(const std::string& run_dir, const VersionMeta& meta) {
  if (meta.server_state_sha256.empty()) {
    return NotFound("v" + std::to_string(meta.version) + " records no server state");
  }
  const std::string path = VersionStatePath(run_dir, meta.version);
  // Same format and caps as the weights (model/weights.h: lengths checked before allocating,
  // checksummed); a missing file is as corrupt as a damaged one, since the meta names it.
  auto loaded = model::LoadWeights(path);
  if (!loaded.ok()) return Corrupt(loaded.status().ToString());
  const std::string hash = ToHex(loaded->Hash());
  if (hash != meta.server_state_sha256) {
    return Corrupt(path + ": SHA-256 " + hash + " does not match the recorded " +
                   meta.server_state_sha256);
  }
  return std::move(loaded).value();
}

Result<std::vector<nlohmann::json>> ReadMetricsLog(const std::string& run_dir) {
  const std::string path = MetricsLogPath(run_dir);
  std::vector<nlohmann::json> out;
  if (!PathExists(path)) return out;
  SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 1ull << 30));
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      // A crash mid-append leaves a last line without its newline (the newline is written last).
      if (in.peek() == std::char_traits<char>::eof() && text.back() != '\n') break;
      return Corrupt(path + ":" + std::to_string(line_no) + ": not valid JSON");
    }
    out.push_back(std::move(j));
  }
  return out;
}

Result<ModelStore> ModelStore::Open(const std::string& run_dir) {
  SHOAL_RETURN_IF_ERROR(MakeDirs(run_dir + "/versions"));
  // Temporary files left by a crash before their rename are never part of a version.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(run_dir + "/versions", ec)) {
    if (entry.path().filename().string().find(".tmp.") != std::string::npos) {
      std::filesystem::remove(entry.path(), ec);
    }
  }
  return ModelStore(run_dir);
}

Status ModelStore::Commit(const model::Weights& weights, VersionMeta& meta,
                          const model::Weights* server_state) {
  // The last line of defence: a NaN/Inf version would be resumed from and poison every round
  // after it. The round engine checks first and retries the round; this only fails loudly.
  if (int64_t bad = weights.FirstNonFinite(); bad >= 0) {
    return InvalidArgument("refusing to commit v" + std::to_string(meta.version) +
                           ": non-finite value at " + weights.spec.ElementName(bad));
  }
  if (server_state != nullptr) {
    if (int64_t bad = server_state->FirstNonFinite(); bad >= 0) {
      return InvalidArgument("refusing to commit v" + std::to_string(meta.version) +
                             ": non-finite server state at " + server_state->spec.ElementName(bad));
    }
    if (meta.server_optimizer.empty()) {
      return InvalidArgument("v" + std::to_string(meta.version) +
                             ": server state without the optimizer that made it");
    }
  }
  meta.sha256 = ToHex(weights.Hash());
  meta.server_state_sha256 = server_state ? ToHex(server_state->Hash()) : "";
  if (!server_state) meta.server_optimizer.clear();
  meta.created_at = UtcNow();
  SHOAL_RETURN_IF_ERROR(model::SaveWeights(VersionWeightsPath(dir_, meta.version), weights));
  if (server_state) {
    SHOAL_RETURN_IF_ERROR(model::SaveWeights(VersionStatePath(dir_, meta.version), *server_state));
  }
  return WriteFileAtomic(VersionMetaPath(dir_, meta.version), meta.ToJson().dump(2) + "\n");
}

Status ModelStore::UpdateMeta(const VersionMeta& meta) {
  if (!PathExists(VersionWeightsPath(dir_, meta.version))) {
    return NotFound("v" + std::to_string(meta.version) + " is not committed");
  }
  return WriteFileAtomic(VersionMetaPath(dir_, meta.version), meta.ToJson().dump(2) + "\n");
}

Status ModelStore::AppendMetrics(const nlohmann::json& record) {
  return AppendLine(MetricsLogPath(dir_), record.dump());
}

}  // namespace shoal::store
