#include "coordinator/run_resume.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "base/file_util.h"
#include "base/sha256.h"
#include "coordinator/evaluation_tracker.h"
#include "store/script_copy.h"

namespace shoal::coordinator {

namespace {

std::string NewRunId(uint64_t seed) {
  std::random_device rd;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd() ^ seed);
  char buf[24];
  std::snprintf(buf, sizeof(buf), "run-%012llx",
                static_cast<unsigned long long>(rng() & 0xffffffffffffULL));
  return buf;
}

// A version committed just before the coordinator stopped may have no metrics yet (its
// evaluation was running) and its round no record in metrics.jsonl: both are completed here,
// with the central evaluation (the workers' federated results are gone with the old process).
Status CompleteResumedEvaluation(const CoordinatorConfig& cfg, const store::VersionMeta& resumed,
                                 const model::Weights& global, store::ModelStore& store,
                                 evaluator::CentralEvaluator* evaluator) {
  if (resumed.round == 0) return Status::Ok();
  const bool pending = resumed.metrics.value("evaluation", "") == "pending";
  bool recorded = false;
  if (auto recs = store::ReadMetricsLog(cfg.run_dir); recs.ok()) {
    for (const auto& r : *recs) {
      recorded |= r.value("version", uint64_t{0}) == resumed.version;
    }
  }
  if (!pending && recorded) return Status::Ok();
  store::VersionMeta meta = resumed;
  nlohmann::json evaluation = {{"overlapped", false}, {"after_restart", true}};
  if (pending) {
    meta.metrics["central"] = nullptr;
    if (evaluator) {
      SHOAL_ASSIGN_OR_RETURN(model::EvalMetrics m, evaluator->Evaluate(global));
      meta.metrics["central"] = CentralJson(m);
      evaluation["central_cpu_s"] = m.cpu_seconds;
    }
    meta.metrics.erase("evaluation");
    SHOAL_RETURN_IF_ERROR(store.UpdateMeta(meta));
    spdlog::info("v{} had no evaluation (the coordinator stopped during it): evaluated now",
                 meta.version);
  }
  if (!recorded) {
    nlohmann::json rec = {{"round", meta.round},
                          {"version", meta.version},
                          {"sha256", meta.sha256},
                          {"participants", meta.participants},
                          {"samples", meta.metrics.value("samples", nlohmann::json(nullptr))},
                          {"central", meta.metrics.value("central", nlohmann::json(nullptr))},
                          {"federated", meta.metrics.value("federated", nlohmann::json(nullptr))},
                          {"train_loss", meta.metrics.value("train_loss", nlohmann::json(nullptr))},
                          {"evaluation", evaluation},
                          {"time", meta.created_at},
                          {"evaluated_at", store::UtcNow()}};
    SHOAL_RETURN_IF_ERROR(store.AppendMetrics(rec));
  }
  return Status::Ok();
}

}  // namespace

Result<RunModel> LoadRunModel(const CoordinatorConfig& cfg, evaluator::ModelRuntime& runtime) {
  RunModel out;
  out.source.name = cfg.model;
  if (!out.source.is_script()) return out;
  const std::string info_path = store::RunInfoPath(cfg.run_dir);
  if (PathExists(info_path)) {
    SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(info_path, 1 << 20));
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return Corrupt(info_path + ": not a valid run description");
    }
    const std::string run_model =
        j.contains("model") && j["model"].is_string() ? j["model"].get<std::string>() : "";
    if (run_model != model::kTorchScriptModel) {
      return InvalidArgument(cfg.run_dir + " holds a run of model '" + run_model +
                             "', the config asks for 'torchscript'");
    }
    if (!j.contains("model_sha256") || !j["model_sha256"].is_string()) {
      return Corrupt(info_path + ": a torchscript run without model_sha256");
    }
    out.sha256 = j["model_sha256"].get<std::string>();
    SHOAL_ASSIGN_OR_RETURN(out.source.script_bytes,
                           store::ReadRunScriptModel(cfg.run_dir, out.sha256));
    if (auto now = ReadFile(cfg.model_path, model::kMaxScriptModelBytes);
        now.ok() && ToHex(Sha256::Of(now->data(), now->size())) != out.sha256) {
      spdlog::warn(
          "model.path {} is not the file this run started with; the resumed run keeps "
          "training its copy {}",
          cfg.model_path, store::ScriptModelPath(cfg.run_dir));
    }
  } else {
    auto bytes = ReadFile(cfg.model_path, model::kMaxScriptModelBytes);
    if (!bytes.ok()) return bytes.status().Annotate("model.path");
    out.source.script_bytes = std::move(bytes).value();
    out.sha256 = ToHex(Sha256::Of(out.source.script_bytes.data(), out.source.script_bytes.size()));
    // Checked before anything is written, so a bad file leaves no half-made run behind.
    auto initial = runtime.InitialWeights(out.source, cfg.input_shape, cfg.num_classes, cfg.seed);
    if (!initial.ok()) return initial.status().Annotate("model.path " + cfg.model_path);
    SHOAL_RETURN_IF_ERROR(MakeDirs(cfg.run_dir + "/model"));
    SHOAL_RETURN_IF_ERROR(
        WriteFileAtomic(store::ScriptModelPath(cfg.run_dir), out.source.script_bytes));
  }
  out.bytes = out.source.script_bytes.size();
  spdlog::info("torchscript model {} ({} bytes, sha256={}) from {}",
               store::ScriptModelPath(cfg.run_dir), out.bytes, out.sha256, cfg.model_path);
  return out;
}

Result<StartingPoint> ResumeOrStart(const CoordinatorConfig& cfg, const RunModel& model,
                                    store::ModelStore& store, evaluator::ModelRuntime& runtime,
                                    evaluator::CentralEvaluator* evaluator) {
  StartingPoint start;
  const std::string info_path = store::RunInfoPath(cfg.run_dir);
  if (PathExists(info_path)) {
    SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(info_path, 1 << 20));
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.contains("run_id") || !j["run_id"].is_string()) {
      return Corrupt(info_path + ": not a valid run description");
    }
    start.run_id = j["run_id"].get<std::string>();
    if (j.value("model", cfg.model) != cfg.model) {
      return InvalidArgument(cfg.run_dir + " holds a run of model '" + j.value("model", "") +
                             "', the config asks for '" + cfg.model + "'");
    }
  } else {
    start.run_id = cfg.run_id.empty() ? NewRunId(cfg.seed) : cfg.run_id;
    nlohmann::json info = {
        {"run_id", start.run_id},         {"model", cfg.model}, {"input_shape", cfg.input_shape},
        {"num_classes", cfg.num_classes}, {"seed", cfg.seed},   {"created_at", store::UtcNow()}};
    if (model.source.is_script()) {
      info["model_path"] = cfg.model_path;
      info["model_sha256"] = model.sha256;
      info["model_bytes"] = model.bytes;
    }
    SHOAL_RETURN_IF_ERROR(WriteFileAtomic(info_path, info.dump(2) + "\n"));
  }

  std::vector<std::string> problems;
  SHOAL_ASSIGN_OR_RETURN(auto versions, store::ListVersions(cfg.run_dir, &problems));
  for (const auto& p : problems) spdlog::error("skipping unreadable version: {}", p);
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    auto w = store::LoadVersion(cfg.run_dir, *it);
    if (w.ok()) {
      // A NaN/Inf version (committed by a version of Shoal before the check, or written by
      // hand) checks out against its hash but would keep every later round non-finite.
      if (int64_t bad = w->FirstNonFinite(); bad >= 0) {
        w = Corrupt("non-finite value at " + w->spec.ElementName(bad));
      }
    }
    if (w.ok() && !it->server_state_sha256.empty()) {
      // The state is part of the version: a damaged state file makes the version unusable.
      if (auto st = store::LoadVersionState(cfg.run_dir, *it); !st.ok()) w = st.status();
    }
    if (!w.ok()) {
      spdlog::error("version v{} is unusable ({}); falling back to the previous one", it->version,
                    w.status().ToString());
      continue;
    }
    start.global = std::move(w).value();
    start.version = it->version;
    start.next_round = it->round + 1;
    start.meta = *it;
    spdlog::info("resuming run={} from version v{} (round {}) sha256={}", start.run_id,
                 start.version, it->round, it->sha256);
    SHOAL_RETURN_IF_ERROR(CompleteResumedEvaluation(cfg, *it, start.global, store, evaluator));
    return start;
  }
  SHOAL_ASSIGN_OR_RETURN(start.global, runtime.InitialWeights(model.source, cfg.input_shape,
                                                              cfg.num_classes, cfg.seed));
  store::VersionMeta meta;
  meta.version = 0;
  meta.round = 0;
  if (evaluator) {
    SHOAL_ASSIGN_OR_RETURN(model::EvalMetrics m, evaluator->Evaluate(start.global));
    meta.metrics = {{"central", CentralJson(m)}};
  }
  SHOAL_RETURN_IF_ERROR(store.Commit(start.global, meta));
  spdlog::info("initial model {} with {} parameters committed as v0 sha256={}", cfg.model,
               start.global.data.size(), meta.sha256);
  start.version = 0;
  start.next_round = 1;
  start.meta = meta;
  return start;
}

Status RestoreServerState(const std::string& run_dir, const store::VersionMeta& meta, size_t size,
                          ServerOptimizer& optimizer) {
  if (meta.server_state_sha256.empty()) {
    if (optimizer.stateful() && meta.round > 0) {
      spdlog::warn("v{} has no server state: server optimizer '{}' starts from its initial state",
                   meta.version, optimizer.name());
    }
    optimizer.Reset(size);
    return Status::Ok();
  }
  if (meta.server_optimizer != optimizer.name()) {
    return InvalidArgument("v" + std::to_string(meta.version) + " continues server optimizer '" +
                           meta.server_optimizer + "', the config asks for '" + optimizer.name() +
                           "' (strategy.server_optimizer / strategy.name)");
  }
  SHOAL_ASSIGN_OR_RETURN(model::Weights state, store::LoadVersionState(run_dir, meta));
  return optimizer.Restore(size, std::move(state))
      .Annotate(store::VersionStatePath(run_dir, meta.version));
}

}  // namespace shoal::coordinator
