#include "coordinator/round_engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <random>
#include <set>
#include <thread>

#include "base/file_util.h"
#include "base/malloc_tuning.h"
#include "base/thread_name.h"
#include "coordinator/aggregation/aggregate_step.h"
#include "coordinator/aggregation/aggregator_registry.h"
#include "coordinator/aggregation/server_optimizer_registry.h"
#include "coordinator/coordinator_impl.h"
#include "coordinator/round_table.h"
#include "security/signing.h"

namespace shoal::coordinator {

using Clock = std::chrono::steady_clock;
using protocols::ErrorCode;

namespace {

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

Clock::time_point After(double seconds) {
  return Clock::now() + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

// Splits a seed per (round, purpose) so every derived stream is independent and repeatable.
uint64_t MixSeed(uint64_t seed, uint64_t round, uint64_t salt) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (round + 1) + 0xbf58476d1ce4e5b9ULL * salt;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

protocols::Limits LimitsFor(const CoordinatorConfig& cfg) {
  protocols::Limits limits;
  limits.max_payload_bytes = cfg.chunk_bytes;
  return limits;
}

}  // namespace

Coordinator::Impl::Impl(CoordinatorConfig config, std::unique_ptr<evaluator::ModelRuntime> runtime,
                        std::atomic<bool>& stop)
    : cfg_(std::move(config)),
      stop_(stop),
      limits_(LimitsFor(cfg_)),
      encoding_(*model::ParseEncoding(cfg_.compression)),  // validated with the config
      workers_(cfg_.insecure ? "" : cfg_.ca_dir),
      uploads_(cfg_.max_concurrent_uploads, cfg_.chunk_bytes, limits_, encoding_),
      evals_(cfg_.eval_overlap, cfg_.eval_timeout_s),
      runtime_(std::move(runtime)) {}

Coordinator::Coordinator(CoordinatorConfig config, std::unique_ptr<evaluator::ModelRuntime> runtime)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(runtime), stop_)) {}
Coordinator::~Coordinator() = default;
Status Coordinator::Run() { return impl_->Run(); }

Status Coordinator::Impl::Prepare() {
  spdlog::info("runtime {}", runtime_->Configure(cfg_.threads));
  SHOAL_ASSIGN_OR_RETURN(store::ModelStore store, store::ModelStore::Open(cfg_.run_dir));
  store_ = std::make_unique<store::ModelStore>(std::move(store));
  // The key that signs exported models (shoalctl export / verify).
  SHOAL_RETURN_IF_ERROR(security::EnsureCoordinatorKey(cfg_.run_dir));
  SHOAL_ASSIGN_OR_RETURN(aggregator_, BuiltinAggregators().Create(cfg_.aggregator));
  SHOAL_RETURN_IF_ERROR(defences_.Setup(cfg_, aggregator_));
  SHOAL_ASSIGN_OR_RETURN(optimizer_,
                         BuiltinServerOptimizers().Create(cfg_.server_optimizer, cfg_.server));
  SHOAL_ASSIGN_OR_RETURN(model_, LoadRunModel(cfg_, *runtime_));
  if (cfg_.eval_format != "none") {
    SHOAL_ASSIGN_OR_RETURN(
        evaluator_, runtime_->OpenEvaluator(model_.source, cfg_.input_shape, cfg_.num_classes,
                                            {cfg_.eval_format, cfg_.eval_path, cfg_.eval_split,
                                             cfg_.eval_label_column, cfg_.eval_limit}));
    spdlog::info("central evaluation on {} samples from {}", evaluator_->size(), cfg_.eval_path);
    ReleaseFreeMemory();  // the decoded test set's intermediate copies
  }
  SHOAL_ASSIGN_OR_RETURN(StartingPoint start,
                         ResumeOrStart(cfg_, model_, *store_, *runtime_, evaluator_.get()));
  run_id_ = std::move(start.run_id);
  global_ = std::move(start.global);
  version_ = start.version;
  next_round_ = start.next_round;
  if (defences_.adaptive()) {
    // The adaptive clip bound goes with the version training continues from.
    SHOAL_ASSIGN_OR_RETURN(auto versions, store::ListVersions(cfg_.run_dir));
    for (const auto& v : versions) {
      if (v.version == version_) SHOAL_RETURN_IF_ERROR(defences_.Restore(v.metrics));
    }
  }
  state_meta_ = std::move(start.meta);
  SHOAL_RETURN_IF_ERROR(
      RestoreServerState(cfg_.run_dir, state_meta_, global_.data.size(), *optimizer_));
  runtime_->Release();  // initial weights are made: LibTorch stays only for central evaluation
  round_ = Round(next_round_ - 1, version_, {});  // what status shows until the next round starts
  if (budget_.enabled()) {
    // From the committed versions' records, not from memory: a resumed run continues exactly.
    SHOAL_ASSIGN_OR_RETURN(auto versions, store::ListVersions(cfg_.run_dir));
    SHOAL_RETURN_IF_ERROR(budget_.Restore(versions).Annotate("privacy accounting"));
    spdlog::info("privacy: dp={} clip_norm={} delta={} target_epsilon={} (epsilon so far {})",
                 cfg_.dp, cfg_.dp_clip_norm, cfg_.dp_delta, cfg_.dp_target_epsilon,
                 budget_.EpsilonBySilo().dump());
  }
  if (model_.source.is_script()) {
    // Encoded once; the bytes themselves are no longer needed (the evaluator holds its module).
    for (auto& f : protocols::EncodeModelFile(model_.source.script_bytes, cfg_.chunk_bytes)) {
      model_frames_.push_back(std::make_shared<const std::string>(std::move(f)));
    }
    FreeStorage(model_.source.script_bytes);
  }
  if (auto versions = store::ListVersions(cfg_.run_dir); versions.ok()) {
    for (const auto& v : *versions) board_.AddVersion(v.ToJson());
  }
  if (auto recs = store::ReadMetricsLog(cfg_.run_dir); recs.ok()) {
    for (const auto& r : *recs) {
      board_.AddRound(r);
      workers_.AddHistory(r);  // a resumed run's worker table starts from the history
    }
  }
  SHOAL_RETURN_IF_ERROR(StartHttp());
  state_ = "waiting";
  Publish();

  spdlog::info("aggregation: {}{}, server optimizer {} (strategy {}, server_lr {})",
               aggregator_->name(), cfg_.deterministic ? " (deterministic)" : "",
               optimizer_->name(), cfg_.strategy_name, cfg_.server.lr);
  if (encoding_ != model::Encoding::kF32) {
    spdlog::info("updates travel as {} with error feedback on the workers",
                 model::EncodingName(encoding_));
  }
  SHOAL_RETURN_IF_ERROR(SetUpChannel());
  SHOAL_ASSIGN_OR_RETURN(std::string endpoint, channel_->Bind(cfg_.bind));
  spdlog::info("listening on {} ({}) run={} run_dir={}", endpoint,
               channel_->secure() ? "TLS 1.3, enrolled workers only" : "INSECURE plain frames",
               run_id_, cfg_.run_dir);
  if (!cfg_.endpoint_file.empty()) {
    SHOAL_RETURN_IF_ERROR(WriteFileAtomic(cfg_.endpoint_file, endpoint + "\n"));
  }
  return Status::Ok();
}

Status Coordinator::Impl::StartHttp() {
  if (!cfg_.http_enabled) return Status::Ok();
  HttpOptions ho;
  ho.address = cfg_.http_address;
  ho.port = cfg_.http_port;
  ho.token = cfg_.http_token;
  ho.token_file = cfg_.http_token_file;
  http_ = std::make_unique<HttpServer>(board_, ho);
  SHOAL_ASSIGN_OR_RETURN(int port, http_->Start());
  spdlog::info("dashboard and API at http://{}:{}/ (metrics at /metrics)", cfg_.http_address, port);
  if (!cfg_.http_port_file.empty()) {
    SHOAL_RETURN_IF_ERROR(WriteFileAtomic(cfg_.http_port_file, std::to_string(port) + "\n"));
  }
  return Status::Ok();
}

Status Coordinator::Impl::Run() {
  SHOAL_RETURN_IF_ERROR(Prepare());
  PrintRoundTableHeader();
  Status result;
  while (next_round_ <= static_cast<uint64_t>(cfg_.rounds)) {
    bool committed = false;
    for (int attempt = 0; attempt <= cfg_.max_round_retries && !committed; ++attempt) {
      if (stop_ || !budget_stop_.empty()) break;
      Status st = RunRound(next_round_, attempt, &committed);
      ReleaseFreeMemoryBeyond(kKeptFreeHeapBytes);
      if (!st.ok()) {
        result = st;
        break;
      }
      if (!committed && attempt < cfg_.max_round_retries && budget_stop_.empty()) {
        spdlog::warn("round={} retrying ({} of {})", next_round_, attempt + 1,
                     cfg_.max_round_retries);
      }
    }
    if (!result.ok() || stop_) break;
    if (!budget_stop_.empty()) {
      spdlog::warn("run stops before round {}: {}; the last version is v{}", next_round_,
                   budget_stop_, version_);
      break;
    }
    if (!committed) {
      result = Timeout("round " + std::to_string(next_round_) + " was not committed after " +
                       std::to_string(cfg_.max_round_retries + 1) +
                       " attempts; the last one: " + round_failure_);
      break;
    }
    ++next_round_;
  }
  // The last version's evaluation (also when the run failed or is stopped: its accuracy is
  // recorded; federated results are not waited for once stopping).
  if (evals_.pending()) {
    state_ = "evaluating";
    Publish();
  }
  if (Status st = FinishEvaluation(); !st.ok() && result.ok()) result = st;
  if (stop_ && result.ok()) result = Unavailable("stopped before the run finished");
  protocols::Shutdown bye;
  bye.reason = result.ok() ? "run finished" : result.ToString();
  for (const auto& [id, p] : workers_.peers()) SendMsg(id, bye);
  channel_->Flush(2000);
  if (result.ok()) {
    std::printf("final model: v%llu %s\n", static_cast<unsigned long long>(version_),
                store::VersionWeightsPath(cfg_.run_dir, version_).c_str());
    std::fflush(stdout);
  }
  state_ = result.ok() ? "finished" : (stop_ ? "stopped" : "failed");
  Publish();
  if (http_ && cfg_.http_linger_s != 0 && !stop_) {
    spdlog::info("run over; dashboard stays up {}",
                 cfg_.http_linger_s < 0 ? std::string("until stopped")
                                        : "for " + std::to_string(cfg_.http_linger_s) + " s");
    const auto until =
        cfg_.http_linger_s < 0 ? Clock::time_point::max() : After(cfg_.http_linger_s);
    while (!stop_ && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return result;
}

std::vector<std::string> Coordinator::Impl::SelectWorkers(uint64_t round, int attempt) {
  std::vector<std::string> names = workers_.Names();
  std::mt19937_64 rng(MixSeed(cfg_.seed, round, 1 + attempt));
  std::shuffle(names.begin(), names.end(), rng);
  size_t k = static_cast<size_t>(std::ceil(cfg_.fraction * static_cast<double>(names.size())));
  k = std::max<size_t>(k, static_cast<size_t>(cfg_.min_fit));
  k = std::min(k, names.size());
  names.resize(k);
  std::sort(names.begin(), names.end());
  return names;
}

// With selection.adaptive_deadline, a round waits slack x the slowest selected worker's
// observed round time (an exponential moving average over its past rounds) + 5 s, never more
// than round_timeout_s; until every selected worker has a history, round_timeout_s applies.
double Coordinator::Impl::RoundDeadlineSeconds() {
  if (!cfg_.adaptive_deadline) return cfg_.round_timeout_s;
  double slowest = 0;
  for (const auto& name : round_.selected()) {
    const auto& ewma = workers_.Stats(name).ewma_round_s;
    if (!ewma) return cfg_.round_timeout_s;
    slowest = std::max(slowest, *ewma);
  }
  const double deadline = std::min(cfg_.round_timeout_s, cfg_.deadline_slack * slowest + 5.0);
  spdlog::info("round={} adaptive deadline {:.1f} s (slowest selected worker {:.1f} s)",
               round_.number(), deadline, slowest);
  return deadline;
}

// WAIT -> SELECT + BROADCAST -> COLLECT -> AGGREGATE -> (the previous evaluation's end) ->
// COMMIT -> EVALUATE. A round that ends short of min_fit updates returns uncommitted (retried).
Status Coordinator::Impl::RunRound(uint64_t round, int attempt, bool* committed) {
  *committed = false;
  SHOAL_RETURN_IF_ERROR(evals_.status());  // the previous version's evaluation failed
  const auto t_start = Clock::now();
  const std::string started_at = store::UtcNow();
  PhaseSeconds phases;
  SHOAL_RETURN_IF_ERROR(WaitForWorkers());
  if (stop_) return Status::Ok();

  SHOAL_RETURN_IF_ERROR(PlanPrivacy(round, attempt));
  if (!budget_stop_.empty()) return Status::Ok();
  phases.broadcast = SelectAndBroadcast(round, attempt);

  // However the round ends from here, the robust aggregators' spill is emptied; a committed
  // round moves the adaptive clip bound on.
  struct EndDefences {
    UpdateDefences& d;
    const bool& committed;
    ~EndDefences() { d.EndRound(committed); }
  } end_defences{defences_, *committed};

  const auto t_collect = Clock::now();
  const bool enough = Collect();
  phases.collect = SecondsSince(t_collect);
  if (!enough) return Status::Ok();

  const auto t_agg = Clock::now();
  SHOAL_ASSIGN_OR_RETURN(model::Weights next, ApplyServerStep(*aggregator_, global_, *optimizer_));
  phases.aggregate = SecondsSince(t_agg);
  // Never commit a non-finite model: a restart would resume from it and every later round
  // would stay NaN. The aggregator refuses updates that would make its sums non-finite (they
  // are not part of `next`), but the mean added to the global model can still round past
  // FLT_MAX; which update did that is not known after a streaming fold, so the round is tried
  // again (selection.max_round_retries) with fresh updates.
  if (int64_t bad = next.FirstNonFinite(); bad >= 0) {
    round_failure_ = "the aggregate of " + std::to_string(round_.accepted().size()) +
                     " updates has a non-finite value at " + next.spec.ElementName(bad);
    spdlog::error("round={} not committed: {} (participants {})", round, round_failure_,
                  ParticipantsList());
    // The step moved the optimizer's state; the retry starts from the committed version's.
    return RestoreServerState(cfg_.run_dir, state_meta_, global_.data.size(), *optimizer_);
  }

  // The previous version's evaluation must be complete before this version is committed: it
  // reads global_, and its record goes into metrics.jsonl before this round's.
  const auto t_wait = Clock::now();
  SHOAL_RETURN_IF_ERROR(FinishEvaluation());
  phases.evaluate = SecondsSince(t_wait);
  if (stop_) return Status::Ok();

  const auto t_commit = Clock::now();
  SHOAL_ASSIGN_OR_RETURN(store::VersionMeta meta, Commit(next));
  global_ = std::move(next);
  phases.commit = SecondsSince(t_commit);

  nlohmann::json record = RoundRecord(meta, phases, t_start, started_at);
  StartEvaluation(std::move(meta), std::move(record), t_start,
                  cfg_.eval_overlap && round < static_cast<uint64_t>(cfg_.rounds));
  *committed = true;
  if (!cfg_.eval_overlap) SHOAL_RETURN_IF_ERROR(FinishEvaluation());
  state_ = "waiting";
  Publish();
  return Status::Ok();
}

// Serves messages until selection.min_workers workers are connected; Ok when stopping.
Status Coordinator::Impl::WaitForWorkers() {
  const size_t needed = static_cast<size_t>(cfg_.min_workers);
  if (PumpUntil(After(cfg_.wait_timeout_s), [&] { return workers_.size() >= needed; }) || stop_) {
    return Status::Ok();
  }
  return Timeout("only " + std::to_string(workers_.size()) +
                 " of selection.min_workers=" + std::to_string(cfg_.min_workers) +
                 " workers connected within " + std::to_string(cfg_.wait_timeout_s) + " s");
}

Status Coordinator::Impl::PlanPrivacy(uint64_t round, int attempt) {
  round_dp_.clear();
  if (!budget_.enabled()) return Status::Ok();
  // The same selection SelectAndBroadcast makes next (nothing is served in between).
  for (const auto& name : SelectWorkers(round, attempt)) {
    SHOAL_ASSIGN_OR_RETURN(round_dp_[name], budget_.Plan(name, workers_.ByName(name)->num_train));
  }
  if (auto why = budget_.WouldExceed(round_dp_)) budget_stop_ = *why;
  return Status::Ok();
}

// Opens the round: the selected workers get the TrainTask with the global weights (encoded
// once, shared by every send queue), the others the EvalTask they still owe. Returns the
// seconds the broadcast took.
double Coordinator::Impl::SelectAndBroadcast(uint64_t round, int attempt) {
  // Sizes as declared before the round: the weight cap and the update check use these, so a
  // Hello again mid-round cannot raise a worker's weight.
  DeclaredSamples declared;
  for (const auto& name : SelectWorkers(round, attempt)) {
    declared[name] = workers_.ByName(name)->num_train;
  }
  const int64_t cap = WeightCap(declared, cfg_.max_weight_ratio, cfg_.max_samples);
  round_ = Round(round, version_, std::move(declared), cap);
  aggregator_->Begin(global_.spec, cfg_.deterministic);
  defences_.BeginRound();
  uploads_.BeginRound(round, global_.data.size(), aggregator_.get());
  const auto t_broadcast = Clock::now();
  protocols::TrainTask task;
  task.run_id = run_id_;
  task.round = round;
  task.version = version_;
  task.epochs = static_cast<uint32_t>(cfg_.epochs);
  task.batch_size = static_cast<uint32_t>(cfg_.batch_size);
  // train.lr_decay: lr x decay^(round - 1), the same for every attempt of the round.
  task.lr = RoundLearningRate(cfg_, round);
  task.momentum = cfg_.momentum;
  task.weight_decay = cfg_.weight_decay;
  task.client_algorithm = cfg_.client;
  task.proximal_mu = cfg_.proximal_mu;
  task.compression = static_cast<uint8_t>(encoding_);
  task.seed = MixSeed(cfg_.seed, round, 0);
  task.deadline_ms = static_cast<uint32_t>(cfg_.round_timeout_s * 1000);
  task.spec = global_.spec;
  task.chunk_count = protocols::ChunkCount(global_.spec.total_bytes(), cfg_.chunk_bytes);
  std::vector<std::shared_ptr<const std::string>> frames{
      std::make_shared<const std::string>(protocols::Encode(task))};
  std::shared_ptr<const std::string> task_with_eval;
  train_eval_round_ = 0;
  if (evals_.has_deferred()) {
    task.eval_round = evals_.meta().round;
    task_with_eval = std::make_shared<const std::string>(protocols::Encode(task));
    train_eval_round_ = task.eval_round;
  }
  train_task_ = task;  // the per-silo DP copies are made from it (SendTrainTask)

  for (auto& c : protocols::EncodeChunks(round, global_.data.data(), global_.spec.total_bytes(),
                                         cfg_.chunk_bytes)) {
    frames.push_back(std::make_shared<const std::string>(std::move(c)));
  }
  round_.Open(std::move(frames), std::move(task_with_eval));
  state_ = "training";
  for (const auto& name : round_.selected()) SendTrainTask(*workers_.ByName(name));
  SendDeferredEvalTasks();  // to the workers not selected
  const double seconds = SecondsSince(t_broadcast);
  spdlog::info("round={} started: version=v{} selected={} of {} connected", round, version_,
               round_.selected().size(), workers_.size());
  return seconds;
}

// Serves messages until every selected worker's update is in or the deadline passes, then
// closes the round. Whether there are enough updates (selection.min_fit) to aggregate.
bool Coordinator::Impl::Collect() {
  PumpUntil(After(RoundDeadlineSeconds()), [&] { return round_.all_in(); });
  round_.Close();
  uploads_.EndRound();
  if (stop_) return false;
  const size_t accepted = round_.accepted().size();
  if (accepted < static_cast<size_t>(cfg_.min_fit)) {
    round_failure_ = "closed with " + std::to_string(accepted) +
                     " of min_fit=" + std::to_string(cfg_.min_fit) + " updates";
    spdlog::warn("round={} {}; not committed", round_.number(), round_failure_);
    return false;
  }
  if (!round_.all_in()) {
    spdlog::warn("round={} deadline passed without updates from {}", round_.number(),
                 round_.Missing());
  }
  return true;
}

std::string Coordinator::Impl::ParticipantsList() const {
  std::string out;
  for (const auto& [name, sha] : round_.accepted()) out += (out.empty() ? "" : ",") + name;
  return out;
}

// The weights are durable before anyone evaluates them; the metrics follow.
Result<store::VersionMeta> Coordinator::Impl::Commit(const model::Weights& next) {
  store::VersionMeta meta;
  meta.version = version_ + 1;
  meta.parent = version_;
  meta.round = round_.number();
  for (const auto& [name, sha] : round_.accepted()) meta.participants.push_back(name);
  meta.metrics = {{"central", nullptr},
                  {"federated", nullptr},
                  {"train_loss", round_.TrainLoss(aggregator_->total_samples())},
                  {"samples", aggregator_->total_samples()},
                  {"evaluation", "pending"}};
  if (budget_.enabled()) {
    // Stored with the version (atomically, with its meta): what resume recomposes.
    std::map<std::string, privacy::DpParams> used;
    for (const auto& [name, sha] : round_.accepted()) used[name] = round_dp_.at(name);
    meta.metrics["privacy"] = budget_.Commit(used);
  }
  // The adaptive clip bound for the next round, committed with the weights (resume reads it).
  if (defences_.adaptive()) meta.metrics[kClipBoundKey] = defences_.NextBound();
  meta.server_optimizer = optimizer_->name();
  SHOAL_RETURN_IF_ERROR(
      store_->Commit(next, meta, optimizer_->stateful() ? &optimizer_->state() : nullptr)
          .Annotate("commit of v" + std::to_string(meta.version)));
  version_ = meta.version;
  state_meta_ = meta;
  board_.AddVersion(meta.ToJson());
  return meta;
}

// The round's metrics.jsonl record; its evaluation is added when the evaluation completes.
nlohmann::json Coordinator::Impl::RoundRecord(const store::VersionMeta& meta,
                                              const PhaseSeconds& phases, Clock::time_point started,
                                              const std::string& started_at) const {
  nlohmann::json record = {
      {"round", meta.round},
      {"version", meta.version},
      {"sha256", meta.sha256},
      {"participants", meta.participants},
      {"selected", round_.selected().size()},
      {"samples", aggregator_->total_samples()},
      {"central", nullptr},
      {"federated", nullptr},
      {"train_loss", round_.TrainLoss(aggregator_->total_samples())},
      {"max_worker_train_s", round_.train_seconds_max()},
      {"workers", round_.updates()},
      // Weighting: the most an update could weigh (strategy.max_weight_ratio x the median
      // declared size, null without a cap), the workers whose weight it lowered, and why
      // selected workers' updates were refused (a poisoned update is named here).
      {"weight_cap", round_.weight_cap() < cfg_.max_samples ? nlohmann::json(round_.weight_cap())
                                                            : nlohmann::json(nullptr)},
      {"capped", round_.capped()},
      {"refused", round_.refused()},
      // Per silo: the round's DP parameters and the epsilon spent after it (privacy_budget.h).
      {"privacy", meta.metrics.contains("privacy") ? meta.metrics["privacy"] : nullptr},
      // The round's own time; "evaluate" is how long it waited for an evaluation (the previous
      // version's with eval.overlap, else its own); the evaluation itself is under "evaluation".
      {"phases_s",
       {{"broadcast", phases.broadcast},
        {"collect", phases.collect},
        {"aggregate", phases.aggregate},
        {"evaluate", phases.evaluate},
        {"commit", phases.commit}}},
      {"wall_s", SecondsSince(started)},
      {"bytes_in", round_.bytes_in()},
      {"bytes_out", round_.bytes_out()},
      {"started_at", started_at},
      {"time", meta.created_at}};
  // Per worker: what the update norm bound and the robust aggregator did (issue #23).
  if (defences_.active()) record["defences"] = defences_.Record();
  return record;
}

void Coordinator::Impl::StartEvaluation(store::VersionMeta meta, nlohmann::json record,
                                        Clock::time_point round_started, bool next_round_follows) {
  std::set<std::string> expected;
  if (cfg_.federated_eval) {
    for (const auto& [id, p] : workers_.peers()) {
      if (p.num_val > 0) expected.insert(p.name);
    }
  }
  // Central evaluation runs on its own thread so this one keeps serving workers meanwhile.
  std::future<Result<model::EvalMetrics>> central;
  if (evaluator_) {
    central = std::async(std::launch::async, [this] {
      SetThreadName("shoal-central");
      return evaluator_->Evaluate(global_);
    });
  }
  evals_.Start(std::move(meta), std::move(record), round_started, std::move(expected),
               std::move(central));
  if (cfg_.federated_eval && !next_round_follows) {
    SendDeferredEvalTasks();
    evals_.SetRecordField("bytes_out", round_.bytes_out());  // with the EvalTasks
  }
}

// EvalTasks (with the weights of the version under evaluation, global_) to the workers still
// owing a federated result that no TrainTask asked for.
void Coordinator::Impl::SendDeferredEvalTasks() {
  if (!evals_.has_deferred()) return;
  protocols::EvalTask et;
  et.run_id = run_id_;
  et.round = evals_.meta().round;
  et.version = evals_.meta().version;
  et.spec = global_.spec;
  et.chunk_count = protocols::ChunkCount(global_.spec.total_bytes(), cfg_.chunk_bytes);
  std::vector<std::shared_ptr<const std::string>> frames{
      std::make_shared<const std::string>(protocols::Encode(et))};
  for (auto& c : protocols::EncodeChunks(et.round, global_.data.data(), global_.spec.total_bytes(),
                                         cfg_.chunk_bytes)) {
    frames.push_back(std::make_shared<const std::string>(std::move(c)));
  }
  for (const auto& name : evals_.TakeAllDeferred()) {
    if (const Peer* p = workers_.ByName(name)) {
      for (const auto& fr : frames) SendTo(p->id, fr);
    } else {
      evals_.Forget(name);  // gone since the commit
    }
  }
}

Status Coordinator::Impl::FinishEvaluation() {
  SendDeferredEvalTasks();  // no next round asked for them (stopping, or a round that failed)
  PumpUntil(Clock::time_point::max(), [&] { return !evals_.pending() || !evals_.status().ok(); });
  // Stopping: the central result is still recorded (it is at most one evaluation away).
  if (evals_.pending() && evals_.status().ok()) evals_.set_status(CompleteEvaluation());
  return evals_.status();
}

Status Coordinator::Impl::CompleteEvaluation() {
  SHOAL_ASSIGN_OR_RETURN(CompletedEvaluation done, evals_.Complete());
  SHOAL_RETURN_IF_ERROR(store_->UpdateMeta(done.meta));
  SHOAL_RETURN_IF_ERROR(store_->AppendMetrics(done.record));
  board_.UpdateVersion(done.meta.ToJson());
  board_.AddRound(done.record);
  PrintRoundTableRow(done.record);
  return Status::Ok();
}

void Coordinator::Impl::Publish() {
  board_.SetWorkers(workers_.WorkersJson());
  board_.SetStatus(
      {{"run_id", run_id_},
       {"state", state_},
       {"model", cfg_.model},
       {"round", round_.number()},
       {"rounds_total", cfg_.rounds},
       {"version", version_},
       {"connected_workers", workers_.connected()},
       {"selected_workers", round_.selected()},
       {"updates_received", round_.accepted().size()},
       {"evaluating_version", evals_.pending() ? nlohmann::json(evals_.meta().version) : nullptr},
       {"min_workers", cfg_.min_workers},
       {"privacy", budget_.enabled() ? budget_.Summary() : nlohmann::json(nullptr)},
       {"stop_reason",
        budget_stop_.empty() ? nlohmann::json(nullptr) : nlohmann::json(budget_stop_)},
       {"started_at", started_at_},
       {"updated_at", store::UtcNow()}});
}

}  // namespace shoal::coordinator
