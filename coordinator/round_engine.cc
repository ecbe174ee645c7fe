#include "coordinator/round_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <thread>
#include <random>
#include <set>

#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "base/malloc_tuning.h"
#include "model/compression.h"
#include "base/file_util.h"
#include "security/pki.h"
#include "base/sha256.h"
#include "base/thread_name.h"
#include "security/signing.h"
#include "coordinator/aggregation/aggregator_registry.h"
#include "coordinator/http_server.h"
#include "evaluator/model_ops.h"
#include "store/script_copy.h"
#include "store/model_store.h"
#include "coordinator/status_board.h"
#include "protocols/channel.h"
#include "protocols/codec.h"

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

const char* ReasonName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadMessage: return "bad_message";
    case ErrorCode::kVersionMismatch: return "version_mismatch";
    case ErrorCode::kNotAdmitted: return "not_admitted";
    case ErrorCode::kUnknownPeer: return "unknown_peer";
    case ErrorCode::kStale: return "stale";
    case ErrorCode::kBadUpdate: return "bad_update";
    case ErrorCode::kDuplicate: return "duplicate";
    case ErrorCode::kRunFinished: return "run_finished";
  }
  return "other";
}

std::string NewRunId(uint64_t seed) {
  std::random_device rd;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd() ^ seed);
  char buf[24];
  std::snprintf(buf, sizeof(buf), "run-%012llx",
                static_cast<unsigned long long>(rng() & 0xffffffffffffULL));
  return buf;
}

bool ValidWorkerName(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

// Splits a seed per (round, purpose) so every derived stream is independent and repeatable.
uint64_t MixSeed(uint64_t seed, uint64_t round, uint64_t salt) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (round + 1) + 0xbf58476d1ce4e5b9ULL * salt;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A central evaluation as recorded in version metas and metrics.jsonl.
nlohmann::json CentralJson(const model::EvalMetrics& m) {
  return {{"accuracy", m.accuracy}, {"loss", m.loss}, {"count", m.count}};
}

}  // namespace

class Coordinator::Impl {
 public:
  Impl(CoordinatorConfig config, std::atomic<bool>& stop) : cfg_(std::move(config)), stop_(stop) {
    limits_.max_payload_bytes = cfg_.chunk_bytes;
  }

  Status Run();

 private:
  enum class Phase { kIdle, kCollect };
  enum class Upload { kNone, kWaitingGrant, kUploading };

  struct Peer {
    std::string id;  // connection id
    std::string name;  // with TLS, the certificate's CN (checked at Hello and on every message)
    int64_t num_train = 0;
    int64_t num_val = 0;
    Clock::time_point last_seen;
    Upload upload = Upload::kNone;
    protocols::UpdateReady ready;
    Clock::time_point ready_at;  // when `ready` arrived
    protocols::ChunkAssembler assembler;
    int rounds_participated = 0;
  };

  // What the dashboard and /api/workers show per worker name; kept after a worker is lost.
  struct WorkerStats {
    std::string state = "connected";
    std::string first_seen;
    std::string last_seen;
    std::vector<uint64_t> rounds;
    int64_t samples = 0;
    int64_t val_samples = 0;
    std::optional<double> last_train_loss;
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
    uint64_t rejected = 0;
    std::optional<double> ewma_round_s;  // observed time from task sent to update accepted
  };

  struct RoundState {
    uint64_t round = 0;
    uint64_t base_version = 0;
    Phase phase = Phase::kIdle;
    std::set<std::string> selected;               // names
    std::map<std::string, std::string> accepted;  // name -> raw sha256 of the accepted update
    // TrainTask + chunks, encoded once and shared by every selected peer's send queue; the
    // TrainTask that also asks for the evaluation of its version (eval_round set) for peers that
    // owe one.
    std::vector<std::shared_ptr<const std::string>> train_frames;
    std::shared_ptr<const std::string> train_task_with_eval;
    std::deque<std::string> grant_queue;          // connection ids waiting for an upload slot
    int uploading = 0;
    double loss_weighted_sum = 0;
    double train_seconds_max = 0;
    // Per accepted update, for metrics.jsonl: where each worker's part of the round went.
    nlohmann::json updates = nlohmann::json::object();
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
    Clock::time_point started;
  };

  // The evaluation of a committed version: central (on its own thread) and federated (workers
  // answer EvalTasks). With eval.overlap it runs while the next round trains; the version's
  // metrics and its round's record are completed when it is in.
  struct PendingEval {
    store::VersionMeta meta;                // as committed, metrics["evaluation"] = "pending"
    nlohmann::json record;           // the round's metrics.jsonl record, without its evaluation
    Clock::time_point round_started;
    Clock::time_point started;
    Clock::time_point federated_deadline;
    std::future<Result<model::EvalMetrics>> central;
    std::set<std::string> expected;  // worker names
    // Expected but not asked yet: the next round's TrainTask asks them (it carries the same
    // weights), and an EvalTask those it does not select.
    std::set<std::string> deferred;
    std::map<std::string, protocols::EvalResult> results;
  };

  // Setup.
  Status Prepare();
  Status LoadModel();
  Status Resume();

  // The message pump.
  bool PumpUntil(Clock::time_point deadline, const std::function<bool()>& done);
  void Housekeeping();
  void Dispatch(const protocols::ChannelMessage& in);
  bool Authorize(const protocols::ChannelMessage& in);
  void OnJoinRequest(const protocols::ChannelMessage& in, const protocols::FrameView& f);
  Status SetUpChannel();
  void RefreshEnrollment(bool force);
  void RecordChannelEvents();
  void OnHello(const std::string& id, const protocols::FrameView& f, const std::string& identity);
  void OnUpdateReady(Peer& p, const protocols::FrameView& f);
  void OnChunk(Peer& p, const protocols::FrameView& f);
  protocols::PayloadPlacement PlaceChunk(const std::string& peer, std::string_view head,
                                     size_t payload_bytes);
  void OnEvalResult(Peer& p, const protocols::FrameView& f);
  void SendTo(const std::string& id, std::shared_ptr<const std::string> frame,
              bool may_overtake = false);
  void SendTo(const std::string& id, std::string frame) {
    SendTo(id, std::make_shared<const std::string>(std::move(frame)));
  }
  void SendError(const std::string& id, ErrorCode code, uint64_t round, const std::string& msg);
  template <class M>
  void SendMsg(const std::string& id, const M& m) {
    SendTo(id, protocols::Encode(m));
  }
  void DropPeer(const std::string& id, const std::string& why);
  void EndUpload(Peer& p);
  void MaybeGrant();
  Peer* PeerByName(const std::string& name);
  void SendTrainTask(const Peer& p);

  // One round.
  Status RunRound(uint64_t round, int attempt, bool* committed);
  void StartEvaluation(store::VersionMeta meta, nlohmann::json record, Clock::time_point round_started,
                       bool next_round_follows);
  void SendDeferredEvalTasks();
  bool EvaluationDone() const;
  // Serves messages until the pending evaluation (if any) is complete, then completes it.
  Status FinishEvaluation();
  // Completes the pending evaluation: the version's meta, the round's record, the printed row.
  Status CompleteEvaluation();
  Status CompleteResumedEvaluation(const store::VersionMeta& meta);
  std::vector<std::string> SelectWorkers(uint64_t round, int attempt);
  void Publish();
  double RoundDeadlineSeconds();
  WorkerStats* StatsFor(const std::string& routing_id);
  void PrintHeader();
  void PrintRow(const nlohmann::json& rec);

  CoordinatorConfig cfg_;
  std::atomic<bool>& stop_;
  protocols::Limits limits_;
  std::unique_ptr<protocols::ServerChannel> channel_;
  // Enrolled workers by certificate fingerprint (from the CA's issued.json) and revoked names,
  // reloaded when those files change (checked every housekeeping pass, 200 ms).
  std::map<std::string, security::WorkerRecord> enrolled_;
  std::set<std::string> revoked_;
  std::string enrollment_stamp_;
  std::string run_id_;
  std::unique_ptr<store::ModelStore> store_;
  std::unique_ptr<evaluator::CentralEvaluator> evaluator_;
  model::ModelSource model_;               // script_bytes released once model_frames_ are built
  std::string model_sha256_;            // hex, torchscript runs only
  uint64_t model_bytes_ = 0;            // size of the TorchScript file, 0 for built-ins
  std::vector<std::shared_ptr<const std::string>> model_frames_;  // ModelFile frames sent after every Welcome
  model::Weights global_;
  uint64_t version_ = 0;
  uint64_t next_round_ = 1;
  std::map<std::string, Peer> peers_;  // by connection id
  RoundState rs_;
  // Reads global_ from the central evaluation thread: global_ is replaced only after it is done.
  std::optional<PendingEval> eval_;
  Status eval_status_;  // a failed background evaluation, reported by the round that sees it
  std::unique_ptr<Aggregator> aggregator_;  // strategy.aggregator
  model::Encoding encoding_ = model::Encoding::kF32;  // train.compression
  std::vector<float> decoded_;          // a compressed update decoded for folding
  Clock::time_point last_housekeeping_ = Clock::now();

  StatusBoard board_;
  std::unique_ptr<HttpServer> http_;
  std::string state_ = "starting";
  std::map<std::string, WorkerStats> stats_;  // by worker name
  std::string started_at_ = store::UtcNow();
};

Coordinator::Coordinator(CoordinatorConfig config)
    : impl_(std::make_unique<Impl>(std::move(config), stop_)) {}
Coordinator::~Coordinator() = default;
Status Coordinator::Run() { return impl_->Run(); }

Status Coordinator::Impl::Prepare() {
  spdlog::info("runtime {}", evaluator::ConfigureModelRuntime(cfg_.threads));
  SHOAL_ASSIGN_OR_RETURN(store::ModelStore store, store::ModelStore::Open(cfg_.run_dir));
  store_ = std::make_unique<store::ModelStore>(std::move(store));
  // The key that signs exported models (shoalctl export / verify).
  SHOAL_RETURN_IF_ERROR(security::EnsureCoordinatorKey(cfg_.run_dir));
  SHOAL_ASSIGN_OR_RETURN(aggregator_, BuiltinAggregators().Create(cfg_.aggregator));
  SHOAL_RETURN_IF_ERROR(LoadModel());
  if (cfg_.eval_format != "none") {
    SHOAL_ASSIGN_OR_RETURN(evaluator_, evaluator::CentralEvaluator::Create(
                                           model_, cfg_.input_shape, cfg_.num_classes,
                                           cfg_.eval_format, cfg_.eval_path, cfg_.eval_split,
                                           cfg_.eval_label_column, cfg_.eval_limit));
    spdlog::info("central evaluation on {} samples from {}", evaluator_->size(), cfg_.eval_path);
    ReleaseFreeMemory();  // the decoded test set's intermediate copies
  }
  SHOAL_RETURN_IF_ERROR(Resume());
  evaluator::ReleaseModelRuntime();  // initial weights are made: LibTorch stays only for central evaluation
  rs_.round = next_round_ - 1;  // what status shows until the next round starts
  if (model_.is_script()) {
    // Encoded once; the bytes themselves are no longer needed (the evaluator holds its module).
    for (auto& f : protocols::EncodeModelFile(model_.script_bytes, cfg_.chunk_bytes)) {
      model_frames_.push_back(std::make_shared<const std::string>(std::move(f)));
    }
    FreeStorage(model_.script_bytes);
  }
  if (auto versions = store::ListVersions(cfg_.run_dir); versions.ok()) {
    for (const auto& v : *versions) board_.AddVersion(v.ToJson());
  }
  if (auto recs = store::ReadMetricsLog(cfg_.run_dir); recs.ok()) {
    for (const auto& r : *recs) {
      board_.AddRound(r);
      // A resumed run's worker table starts from the history: who took part in which round.
      for (const auto& name : r.value("participants", nlohmann::json::array())) {
        WorkerStats& ws = stats_[name.get<std::string>()];
        ws.state = "offline";
        ws.rounds.push_back(r.value("round", uint64_t{0}));
      }
    }
  }
  if (cfg_.http_enabled) {
    HttpOptions ho;
    ho.address = cfg_.http_address;
    ho.port = cfg_.http_port;
    ho.token = cfg_.http_token;
    http_ = std::make_unique<HttpServer>(board_, ho);
    SHOAL_ASSIGN_OR_RETURN(int port, http_->Start());
    spdlog::info("dashboard and API at http://{}:{}/ (metrics at /metrics)", cfg_.http_address, port);
    if (!cfg_.http_port_file.empty()) {
      SHOAL_RETURN_IF_ERROR(WriteFileAtomic(cfg_.http_port_file, std::to_string(port) + "\n"));
    }
  }
  state_ = "waiting";
  Publish();

  encoding_ = *model::ParseEncoding(cfg_.compression);  // validated with the config
  if (encoding_ != model::Encoding::kF32) {
    spdlog::info("updates travel as {} with error feedback on the workers", model::EncodingName(encoding_));
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

// TLS with the federation's CA: the coordinator presents coordinator.crt (followed by ca.crt, so
// a worker joining with a token can check the CA against the fingerprint it was given), trusts
// only ca.crt, and lets a client without a certificate finish the handshake so it can redeem a
// join token (such a session may send nothing else).
Status Coordinator::Impl::SetUpChannel() {
  protocols::ChannelOptions co;
  co.max_message_bytes = limits_.max_frame_bytes();
  co.handshake_timeout_ms = static_cast<int>(cfg_.handshake_timeout_ms);
  co.max_concurrent_sends = static_cast<size_t>(cfg_.max_concurrent_sends);
  co.socket.linger_ms = 2000;  // let Shutdown messages leave before the socket closes
  if (cfg_.insecure) {
    spdlog::warn(
        "!!! INSECURE MODE (--insecure / security.insecure): no TLS. Weights and updates travel "
        "in clear text, any process that can reach the port can join as any worker name, and "
        "nothing is authenticated. Use only for debugging on a trusted host.");
    channel_ = std::make_unique<protocols::ServerChannel>(co);
    return Status::Ok();
  }
  const std::string& dir = cfg_.ca_dir;
  auto read = [&](const std::string& path) -> Result<std::string> {
    auto text = ReadFile(path, 1 << 20);
    if (!text.ok()) {
      return text.status().Annotate("security.ca_dir " + dir +
                                    " (made by `shoalctl ca init DIR`)");
    }
    return text;
  };
  SHOAL_ASSIGN_OR_RETURN(std::string ca, read(security::CaCertPath(dir)));
  SHOAL_ASSIGN_OR_RETURN(std::string cert, read(security::CoordinatorCertPath(dir)));
  SHOAL_ASSIGN_OR_RETURN(std::string key, read(security::CoordinatorKeyPath(dir)));
  protocols::TlsConfig tc;
  tc.cert_pem = cert + ca;
  tc.key_pem = std::move(key);
  tc.ca_pem = ca;
  tc.require_peer_certificate = false;  // join-token enrollment; see Authorize()
  auto tls = protocols::TlsContext::Server(tc);
  if (!tls.ok()) return tls.status().Annotate("security.ca_dir " + dir);
  co.tls = std::move(tls).value();
  channel_ = std::make_unique<protocols::ServerChannel>(co);
  channel_->set_payload_placer([this](const std::string& peer, std::string_view head,
                                      size_t payload_bytes) {
    return PlaceChunk(peer, head, payload_bytes);
  });
  RefreshEnrollment(/*force=*/true);
  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, security::CaFingerprint(ca));
  spdlog::info("TLS: CA {} fingerprint {}; {} workers enrolled, {} revoked", security::CaCertPath(dir),
               fingerprint, enrolled_.size(), revoked_.size());
  return Status::Ok();
}

// Reloads issued.json and revoked.json when their size or modification time changed.
void Coordinator::Impl::RefreshEnrollment(bool force) {
  if (cfg_.insecure) return;
  std::string stamp;
  for (const char* f : {"/issued.json", "/revoked.json"}) {
    struct stat st {};
    if (::stat((cfg_.ca_dir + f).c_str(), &st) == 0) {
      stamp += std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
               std::to_string(st.st_mtim.tv_nsec) + ";";
    } else {
      stamp += "-;";
    }
  }
  if (!force && stamp == enrollment_stamp_) return;
  auto records = security::ListEnrolled(cfg_.ca_dir);
  auto revoked = security::RevokedNames(cfg_.ca_dir);
  if (!records.ok() || !revoked.ok()) {
    // Keep the previous tables (fail closed for revocations already known).
    spdlog::error("cannot read the CA's enrollment files: {}",
                  (!records.ok() ? records.status() : revoked.status()).ToString());
    return;
  }
  enrollment_stamp_ = stamp;
  enrolled_.clear();
  for (auto& r : *records) enrolled_[r.fingerprint] = r;
  for (const auto& name : *revoked) {
    if (!revoked_.count(name)) spdlog::warn("worker={} is revoked", name);
  }
  revoked_ = std::move(revoked).value();
  // A revoked worker that is connected is cut off now (within one housekeeping pass).
  std::vector<std::string> cut;
  for (const auto& [id, p] : peers_) {
    if (revoked_.count(p.name)) cut.push_back(id);
  }
  for (const auto& id : cut) {
    board_.CountRejection("revoked");
    SendError(id, ErrorCode::kNotAdmitted, rs_.round, "certificate revoked");
    DropPeer(id, "certificate revoked");
  }
}

void Coordinator::Impl::RecordChannelEvents() {
  for (const auto& e : channel_->TakeEvents()) {
    board_.CountRejection(e.reason);
    spdlog::warn("channel refused a peer ({}): {}", e.reason, e.detail);
  }
}

// With TLS: the peer must have presented an enrolled, unrevoked certificate, and once admitted
// every message on that connection must come from the same certificate name.
bool Coordinator::Impl::Authorize(const protocols::ChannelMessage& in) {
  if (!channel_->secure()) return true;
  auto refuse = [&](const char* reason, const std::string& why) {
    board_.CountRejection(reason);
    spdlog::warn("refused a message from {}: {}", in.identity.empty() ? "(no certificate)" : in.identity, why);
    SendError(in.peer, ErrorCode::kNotAdmitted, rs_.round, why);
    DropPeer(in.peer, why);
    channel_->Close(in.peer);
    return false;
  };
  if (!in.authenticated) {
    return refuse("unauthenticated",
                  "no client certificate: only a JoinRequest is accepted without one");
  }
  auto it = enrolled_.find(in.fingerprint);
  if (it == enrolled_.end()) {
    RefreshEnrollment(/*force=*/true);  // maybe enrolled a moment ago
    it = enrolled_.find(in.fingerprint);
  }
  if (it == enrolled_.end()) {
    return refuse("unenrolled_certificate",
                  "certificate '" + in.identity + "' (sha256 " + in.fingerprint +
                      ") was not issued to an enrolled worker by this federation's CA");
  }
  if (revoked_.count(in.identity) || it->second.revoked) {
    return refuse("revoked", "certificate of worker '" + in.identity + "' is revoked");
  }
  if (auto p = peers_.find(in.peer); p != peers_.end() && p->second.name != in.identity) {
    return refuse("identity_mismatch", "connection of worker '" + p->second.name +
                                           "' used by certificate '" + in.identity + "'");
  }
  return true;
}

// Enrollment: redeem a one-time join token against the worker's CSR and return its certificate.
void Coordinator::Impl::OnJoinRequest(const protocols::ChannelMessage& in, const protocols::FrameView& f) {
  auto fail = [&](const std::string& why) {
    board_.CountRejection("join_refused");
    spdlog::warn("join refused: {}", why);
    SendError(in.peer, ErrorCode::kNotAdmitted, 0, "join refused: " + why);
    channel_->Close(in.peer);
  };
  if (!channel_->secure()) return fail("this coordinator runs --insecure; there is nothing to join");
  if (in.authenticated) return fail("already holds a certificate; a JoinRequest needs none");
  auto req = protocols::Decode<protocols::JoinRequest>(f);
  if (!req.ok()) return fail(req.status().message());
  if (req->protocol_version != protocols::kProtocolVersion) {
    return fail("protocol version " + std::to_string(req->protocol_version) + " not supported");
  }
  auto cert = security::RedeemJoinToken(cfg_.ca_dir, req->token_id, req->secret, req->csr_pem);
  if (!cert.ok()) return fail(cert.status().message());
  auto ca = ReadFile(security::CaCertPath(cfg_.ca_dir), 1 << 20);
  if (!ca.ok()) return fail(ca.status().message());
  auto info = security::VerifyPeerCert(*ca, *cert);
  if (!info.ok()) return fail("issued certificate does not verify: " + info.status().message());
  protocols::JoinResponse resp;
  resp.worker_name = info->common_name;
  resp.cert_pem = std::move(cert).value();
  resp.ca_pem = std::move(ca).value();
  SendMsg(in.peer, resp);
  channel_->Close(in.peer);
  RefreshEnrollment(/*force=*/true);
  spdlog::info("worker={} enrolled with a join token (certificate sha256 {})", info->common_name,
               info->fingerprint);
}

// A new torchscript run reads model.path (its size checked before reading), checks that the
// model loads and fits model.input_shape / num_classes, then keeps a copy in the run directory
// (written before run.json, which records its SHA-256). A resumed run uses that copy.
Status Coordinator::Impl::LoadModel() {
  model_.name = cfg_.model;
  if (!model_.is_script()) return Status::Ok();
  const std::string info_path = store::RunInfoPath(cfg_.run_dir);
  if (PathExists(info_path)) {
    SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(info_path, 1 << 20));
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return Corrupt(info_path + ": not a valid run description");
    }
    const std::string run_model =
        j.contains("model") && j["model"].is_string() ? j["model"].get<std::string>() : "";
    if (run_model != model::kTorchScriptModel) {
      return InvalidArgument(cfg_.run_dir + " holds a run of model '" + run_model +
                             "', the config asks for 'torchscript'");
    }
    if (!j.contains("model_sha256") || !j["model_sha256"].is_string()) {
      return Corrupt(info_path + ": a torchscript run without model_sha256");
    }
    model_sha256_ = j["model_sha256"].get<std::string>();
    SHOAL_ASSIGN_OR_RETURN(model_.script_bytes, store::ReadRunScriptModel(cfg_.run_dir, model_sha256_));
    if (auto now = ReadFile(cfg_.model_path, model::kMaxScriptModelBytes);
        now.ok() && ToHex(Sha256::Of(now->data(), now->size())) != model_sha256_) {
      spdlog::warn("model.path {} is not the file this run started with; the resumed run keeps "
                   "training its copy {}",
                   cfg_.model_path, store::ScriptModelPath(cfg_.run_dir));
    }
  } else {
    auto bytes = ReadFile(cfg_.model_path, model::kMaxScriptModelBytes);
    if (!bytes.ok()) return bytes.status().Annotate("model.path");
    model_.script_bytes = std::move(bytes).value();
    model_sha256_ = ToHex(Sha256::Of(model_.script_bytes.data(), model_.script_bytes.size()));
    // Checked before anything is written, so a bad file leaves no half-made run behind.
    auto initial = evaluator::InitialWeights(model_, cfg_.input_shape, cfg_.num_classes, cfg_.seed);
    if (!initial.ok()) return initial.status().Annotate("model.path " + cfg_.model_path);
    SHOAL_RETURN_IF_ERROR(MakeDirs(cfg_.run_dir + "/model"));
    SHOAL_RETURN_IF_ERROR(WriteFileAtomic(store::ScriptModelPath(cfg_.run_dir), model_.script_bytes));
  }
  model_bytes_ = model_.script_bytes.size();
  spdlog::info("torchscript model {} ({} bytes, sha256={}) from {}", store::ScriptModelPath(cfg_.run_dir),
               model_bytes_, model_sha256_, cfg_.model_path);
  return Status::Ok();
}

Status Coordinator::Impl::Resume() {
  const std::string info_path = store::RunInfoPath(cfg_.run_dir);
  if (PathExists(info_path)) {
    SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(info_path, 1 << 20));
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.contains("run_id") || !j["run_id"].is_string()) {
      return Corrupt(info_path + ": not a valid run description");
    }
    run_id_ = j["run_id"].get<std::string>();
    if (j.value("model", cfg_.model) != cfg_.model) {
      return InvalidArgument(cfg_.run_dir + " holds a run of model '" + j.value("model", "") +
                             "', the config asks for '" + cfg_.model + "'");
    }
  } else {
    run_id_ = cfg_.run_id.empty() ? NewRunId(cfg_.seed) : cfg_.run_id;
    nlohmann::json info = {{"run_id", run_id_},
                           {"model", cfg_.model},
                           {"input_shape", cfg_.input_shape},
                           {"num_classes", cfg_.num_classes},
                           {"seed", cfg_.seed},
                           {"created_at", store::UtcNow()}};
    if (model_.is_script()) {
      info["model_path"] = cfg_.model_path;
      info["model_sha256"] = model_sha256_;
      info["model_bytes"] = model_bytes_;
    }
    SHOAL_RETURN_IF_ERROR(WriteFileAtomic(info_path, info.dump(2) + "\n"));
  }

  std::vector<std::string> problems;
  SHOAL_ASSIGN_OR_RETURN(auto versions, store::ListVersions(cfg_.run_dir, &problems));
  for (const auto& p : problems) spdlog::error("skipping unreadable version: {}", p);
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    auto w = store::LoadVersion(cfg_.run_dir, *it);
    if (!w.ok()) {
      spdlog::error("version v{} is unusable ({}); falling back to the previous one", it->version,
                    w.status().ToString());
      continue;
    }
    global_ = std::move(w).value();
    version_ = it->version;
    next_round_ = it->round + 1;
    spdlog::info("resuming run={} from version v{} (round {}) sha256={}", run_id_, version_,
                 it->round, it->sha256);
    return CompleteResumedEvaluation(*it);
  }
  SHOAL_ASSIGN_OR_RETURN(global_, evaluator::InitialWeights(model_, cfg_.input_shape, cfg_.num_classes,
                                                 cfg_.seed));
  store::VersionMeta meta;
  meta.version = 0;
  meta.round = 0;
  if (evaluator_) {
    SHOAL_ASSIGN_OR_RETURN(model::EvalMetrics m, evaluator_->Evaluate(global_));
    meta.metrics = {{"central", CentralJson(m)}};
  }
  SHOAL_RETURN_IF_ERROR(store_->Commit(global_, meta));
  spdlog::info("initial model {} with {} parameters committed as v0 sha256={}", cfg_.model,
               global_.data.size(), meta.sha256);
  version_ = 0;
  next_round_ = 1;
  return Status::Ok();
}

// A version committed just before the coordinator stopped may have no metrics yet (its
// evaluation was running) and its round no record in metrics.jsonl: both are completed here,
// with the central evaluation (the workers' federated results are gone with the old process).
Status Coordinator::Impl::CompleteResumedEvaluation(const store::VersionMeta& resumed) {
  if (resumed.round == 0) return Status::Ok();
  const bool pending = resumed.metrics.value("evaluation", "") == "pending";
  bool recorded = false;
  if (auto recs = store::ReadMetricsLog(cfg_.run_dir); recs.ok()) {
    for (const auto& r : *recs) {
      recorded |= r.value("version", uint64_t{0}) == resumed.version;
    }
  }
  if (!pending && recorded) return Status::Ok();
  store::VersionMeta meta = resumed;
  nlohmann::json evaluation = {{"overlapped", false}, {"after_restart", true}};
  if (pending) {
    meta.metrics["central"] = nullptr;
    if (evaluator_) {
      SHOAL_ASSIGN_OR_RETURN(model::EvalMetrics m, evaluator_->Evaluate(global_));
      meta.metrics["central"] = CentralJson(m);
      evaluation["central_cpu_s"] = m.cpu_seconds;
    }
    meta.metrics.erase("evaluation");
    SHOAL_RETURN_IF_ERROR(store_->UpdateMeta(meta));
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
    SHOAL_RETURN_IF_ERROR(store_->AppendMetrics(rec));
  }
  return Status::Ok();
}

Status Coordinator::Impl::Run() {
  SHOAL_RETURN_IF_ERROR(Prepare());
  PrintHeader();
  Status result;
  while (next_round_ <= static_cast<uint64_t>(cfg_.rounds)) {
    bool committed = false;
    for (int attempt = 0; attempt <= cfg_.max_round_retries && !committed; ++attempt) {
      if (stop_) break;
      Status st = RunRound(next_round_, attempt, &committed);
      ReleaseFreeMemoryBeyond(kKeptFreeHeapBytes);
      if (!st.ok()) {
        result = st;
        break;
      }
      if (!committed && attempt < cfg_.max_round_retries) {
        spdlog::warn("round={} retrying ({} of {})", next_round_, attempt + 1, cfg_.max_round_retries);
      }
    }
    if (!result.ok() || stop_) break;
    if (!committed) {
      result = Timeout("round " + std::to_string(next_round_) + " did not reach min_fit=" +
                       std::to_string(cfg_.min_fit) + " updates after " +
                       std::to_string(cfg_.max_round_retries + 1) + " attempts");
      break;
    }
    ++next_round_;
  }
  // The last version's evaluation (also when the run failed or is stopped: its accuracy is
  // recorded; federated results are not waited for once stopping).
  if (eval_) {
    state_ = "evaluating";
    Publish();
  }
  if (Status st = FinishEvaluation(); !st.ok() && result.ok()) result = st;
  if (stop_ && result.ok()) result = Unavailable("stopped before the run finished");
  protocols::Shutdown bye;
  bye.reason = result.ok() ? "run finished" : result.ToString();
  for (const auto& [id, p] : peers_) SendMsg(id, bye);
  channel_->Flush(2000);
  if (result.ok()) {
    std::printf("final model: v%llu %s\n", static_cast<unsigned long long>(version_),
                store::VersionWeightsPath(cfg_.run_dir, version_).c_str());
    std::fflush(stdout);
  }
  state_ = result.ok() ? "finished" : (stop_ ? "stopped" : "failed");
  Publish();
  if (http_ && cfg_.http_linger_s != 0 && !stop_) {
    spdlog::info("run over; dashboard stays up {}", cfg_.http_linger_s < 0
                                                        ? std::string("until stopped")
                                                        : "for " + std::to_string(cfg_.http_linger_s) + " s");
    const auto until = cfg_.http_linger_s < 0 ? Clock::time_point::max() : After(cfg_.http_linger_s);
    while (!stop_ && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return result;
}

bool Coordinator::Impl::PumpUntil(Clock::time_point deadline, const std::function<bool()>& done) {
  while (!stop_) {
    if (eval_ && EvaluationDone() && eval_status_.ok()) eval_status_ = CompleteEvaluation();
    if (done()) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    const int wait_ms = static_cast<int>(std::min<int64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1, 200));
    auto in = channel_->Recv(wait_ms);
    if (!in.ok()) {
      spdlog::warn("receive: {}", in.status().ToString());
    } else if (in->has_value()) {
      Dispatch(**in);
      // Drain what is queued before judging anyone silent, but never starve housekeeping (peer
      // timeouts, revocation, handshake expiry): with many workers the queue is never empty.
      if (Clock::now() - last_housekeeping_ > std::chrono::seconds(1)) Housekeeping();
      continue;
    }
    if (Clock::now() - last_housekeeping_ > std::chrono::milliseconds(200)) Housekeeping();
  }
  return false;
}

void Coordinator::Impl::Housekeeping() {
  last_housekeeping_ = Clock::now();
  channel_->ExpireHandshakes();
  RecordChannelEvents();
  for (const auto& id : channel_->TakeClosed()) DropPeer(id, "connection closed");
  RefreshEnrollment(/*force=*/false);
  Publish();
  std::vector<std::string> lost;
  for (const auto& [id, p] : peers_) {
    if (Clock::now() - p.last_seen > std::chrono::milliseconds(cfg_.peer_timeout_ms)) lost.push_back(id);
  }
  for (const auto& id : lost) DropPeer(id, "no message for " + std::to_string(cfg_.peer_timeout_ms) + " ms");
}

void Coordinator::Impl::SendTo(const std::string& id, std::shared_ptr<const std::string> frame,
                               bool may_overtake) {
  const size_t n = frame->size();
  Status st = channel_->Send(id, std::move(frame), may_overtake);
  if (!st.ok()) {
    spdlog::debug("send to peer failed: {}", st.ToString());
    return;
  }
  rs_.bytes_out += n;
  board_.AddBytes(0, n);
  if (WorkerStats* ws = StatsFor(id)) ws->bytes_out += n;
}

Coordinator::Impl::WorkerStats* Coordinator::Impl::StatsFor(const std::string& routing_id) {
  auto it = peers_.find(routing_id);
  if (it == peers_.end()) return nullptr;
  return &stats_[it->second.name];
}

// With selection.adaptive_deadline, a round waits slack x the slowest selected worker's
// observed round time (an exponential moving average over its past rounds) + 5 s, never more
// than round_timeout_s; until every selected worker has a history, round_timeout_s applies.
double Coordinator::Impl::RoundDeadlineSeconds() {
  if (!cfg_.adaptive_deadline) return cfg_.round_timeout_s;
  double slowest = 0;
  for (const auto& name : rs_.selected) {
    const auto& ewma = stats_[name].ewma_round_s;
    if (!ewma) return cfg_.round_timeout_s;
    slowest = std::max(slowest, *ewma);
  }
  const double deadline = std::min(cfg_.round_timeout_s, cfg_.deadline_slack * slowest + 5.0);
  spdlog::info("round={} adaptive deadline {:.1f} s (slowest selected worker {:.1f} s)", rs_.round,
               deadline, slowest);
  return deadline;
}

void Coordinator::Impl::Publish() {
  nlohmann::json workers = nlohmann::json::array();
  int connected = 0;
  std::set<std::string> listed;
  for (const auto& [name, w] : stats_) {
    connected += w.state == "connected";
    listed.insert(name);
    workers.push_back({{"name", name},
                       {"state", revoked_.count(name) ? std::string("revoked") : w.state},
                       {"first_seen", w.first_seen},
                       {"last_seen", w.last_seen},
                       {"rounds", w.rounds},
                       {"samples", w.samples},
                       {"val_samples", w.val_samples},
                       {"last_train_loss", w.last_train_loss ? nlohmann::json(*w.last_train_loss)
                                                             : nlohmann::json(nullptr)},
                       {"bytes_in", w.bytes_in},
                       {"bytes_out", w.bytes_out},
                       {"rejected", w.rejected}});
  }
  // Enrolled workers that never connected to this run (and revoked ones).
  for (const auto& [fingerprint, r] : enrolled_) {
    if (!listed.insert(r.name).second) continue;
    workers.push_back({{"name", r.name},
                       {"state", revoked_.count(r.name) ? "revoked" : "enrolled"},
                       {"first_seen", ""},
                       {"last_seen", ""},
                       {"rounds", nlohmann::json::array()},
                       {"samples", 0},
                       {"val_samples", 0},
                       {"last_train_loss", nullptr},
                       {"bytes_in", 0},
                       {"bytes_out", 0},
                       {"rejected", 0}});
  }
  board_.SetWorkers(std::move(workers));
  board_.SetStatus({{"run_id", run_id_},
                    {"state", state_},
                    {"model", cfg_.model},
                    {"round", rs_.round},
                    {"rounds_total", cfg_.rounds},
                    {"version", version_},
                    {"connected_workers", connected},
                    {"selected_workers", rs_.selected},
                    {"updates_received", rs_.accepted.size()},
                    {"evaluating_version", eval_ ? nlohmann::json(eval_->meta.version) : nullptr},
                    {"min_workers", cfg_.min_workers},
                    {"started_at", started_at_},
                    {"updated_at", store::UtcNow()}});
}

void Coordinator::Impl::SendError(const std::string& id, ErrorCode code, uint64_t round,
                                  const std::string& msg) {
  board_.CountRejection(ReasonName(code));
  if (WorkerStats* ws = StatsFor(id)) ++ws->rejected;
  protocols::Error e;
  e.code = code;
  e.round = round;
  e.message = msg;
  SendMsg(id, e);
}

Coordinator::Impl::Peer* Coordinator::Impl::PeerByName(const std::string& name) {
  for (auto& [id, p] : peers_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

void Coordinator::Impl::DropPeer(const std::string& id, const std::string& why) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return;
  spdlog::warn("worker={} lost: {}", it->second.name, why);
  stats_[it->second.name].state = "lost";
  if (it->second.upload == Upload::kUploading) --rs_.uploading;
  rs_.grant_queue.erase(std::remove(rs_.grant_queue.begin(), rs_.grant_queue.end(), id),
                        rs_.grant_queue.end());
  if (eval_ && !eval_->results.count(it->second.name)) {
    eval_->expected.erase(it->second.name);
    eval_->deferred.erase(it->second.name);
  }
  peers_.erase(it);
  channel_->Close(id);
  MaybeGrant();
}

// An update's chunk is decrypted straight into the update being assembled (placement.h); any
// other message, or a chunk the assembler would not take now, is read whole and dispatched.
protocols::PayloadPlacement Coordinator::Impl::PlaceChunk(const std::string& peer,
                                                      std::string_view head, size_t payload_bytes) {
  auto it = peers_.find(peer);
  if (it == peers_.end() || it->second.upload != Upload::kUploading) return {};
  return it->second.assembler.PlaceFrame(head, payload_bytes, limits_);
}

void Coordinator::Impl::Dispatch(const protocols::ChannelMessage& in) {
  const size_t bytes = in.message.size() + in.placed_payload.size();
  rs_.bytes_in += bytes + in.peer.size();
  board_.AddBytes(bytes, 0);
  auto frame = in.placed ? protocols::ParseFrame(in.message, in.placed_payload, limits_)
                         : protocols::ParseFrame(in.message, limits_);
  if (frame.ok() && frame->type == protocols::MessageType::kJoinRequest) {
    OnJoinRequest(in, *frame);
    return;
  }
  if (!Authorize(in)) return;
  if (WorkerStats* ws = StatsFor(in.peer)) {
    ws->bytes_in += bytes;
    ws->last_seen = store::UtcNow();
  }
  auto it = peers_.find(in.peer);
  const std::string who = it != peers_.end() ? it->second.name : "(unadmitted)";
  if (!frame.ok()) {
    spdlog::warn("worker={} rejected frame: {}", who, frame.status().message());
    SendError(in.peer, ErrorCode::kBadMessage, rs_.round, frame.status().message());
    return;
  }
  if (frame->type == protocols::MessageType::kHello) {
    OnHello(in.peer, *frame, in.identity);
    return;
  }
  if (it == peers_.end()) {
    SendError(in.peer, ErrorCode::kUnknownPeer, rs_.round, "say Hello first");
    return;
  }
  Peer& p = it->second;
  p.last_seen = Clock::now();
  switch (frame->type) {
    case protocols::MessageType::kHeartbeat: {
      protocols::Heartbeat hb;
      hb.unix_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
      SendTo(p.id, std::make_shared<const std::string>(protocols::Encode(hb)), /*may_overtake=*/true);
      break;
    }
    case protocols::MessageType::kUpdateReady: OnUpdateReady(p, *frame); break;
    case protocols::MessageType::kWeightsChunk: OnChunk(p, *frame); break;
    case protocols::MessageType::kEvalResult: OnEvalResult(p, *frame); break;
    case protocols::MessageType::kError: {
      auto e = protocols::Decode<protocols::Error>(*frame);
      spdlog::warn("worker={} reports error: {}", p.name, e.ok() ? e->message : e.status().message());
      break;
    }
    default:
      spdlog::warn("worker={} sent unexpected {}", p.name, protocols::MessageTypeName(frame->type));
      SendError(p.id, ErrorCode::kBadMessage, rs_.round,
                std::string("unexpected message ") + protocols::MessageTypeName(frame->type));
  }
}

void Coordinator::Impl::OnHello(const std::string& id, const protocols::FrameView& f,
                                const std::string& identity) {
  auto hello = protocols::Decode<protocols::Hello>(f);
  if (!hello.ok()) {
    spdlog::warn("rejected Hello: {}", hello.status().message());
    SendError(id, ErrorCode::kBadMessage, 0, hello.status().message());
    return;
  }
  auto refuse = [&](const std::string& why) {
    spdlog::warn("worker={} not admitted: {}", hello->name, why);
    SendError(id, ErrorCode::kNotAdmitted, 0, why);
  };
  if (hello->protocol_version != protocols::kProtocolVersion) {
    SendError(id, ErrorCode::kVersionMismatch, 0,
              "protocol version " + std::to_string(hello->protocol_version) + " not supported");
    return;
  }
  if (!ValidWorkerName(hello->name)) return refuse("worker name must be 1-64 of [A-Za-z0-9._-]");
  if (channel_->secure() && hello->name != identity) {
    board_.CountRejection("identity_mismatch");
    return refuse("claimed name '" + hello->name + "' is not the name in its certificate ('" +
                  identity + "')");
  }
  if (hello->input_shape != cfg_.input_shape) {
    return refuse("input shape " + model::ShapeString(hello->input_shape) +
                  " does not match the federation's model input " + model::ShapeString(cfg_.input_shape));
  }
  if (hello->num_classes < 1 || hello->num_classes > cfg_.num_classes) {
    return refuse("silo has labels up to " + std::to_string(hello->num_classes - 1) +
                  ", the model has " + std::to_string(cfg_.num_classes) + " classes");
  }
  if (hello->num_train <= 0 || hello->num_val < 0) {
    return refuse("silo must declare a positive number of training samples");
  }
  if (Peer* old = PeerByName(hello->name); old != nullptr && old->id != id) {
    DropPeer(old->id, "replaced by a new connection with the same name");
  }
  Peer& p = peers_[id];
  const bool fresh = p.name.empty();
  p.id = id;
  p.name = hello->name;
  p.num_train = hello->num_train;
  p.num_val = hello->num_val;
  p.last_seen = Clock::now();
  if (p.upload == Upload::kUploading) --rs_.uploading;
  p.upload = Upload::kNone;
  p.assembler.Reset();

  WorkerStats& ws = stats_[p.name];
  ws.state = "connected";
  if (ws.first_seen.empty()) ws.first_seen = store::UtcNow();
  ws.last_seen = store::UtcNow();
  ws.samples = p.num_train;
  ws.val_samples = p.num_val;
  protocols::Welcome w;
  w.run_id = run_id_;
  w.worker_name = p.name;
  w.model = cfg_.model;
  w.num_classes = cfg_.num_classes;
  w.heartbeat_ms = cfg_.heartbeat_ms;
  w.peer_timeout_ms = cfg_.peer_timeout_ms;
  w.chunk_bytes = cfg_.chunk_bytes;
  w.model_bytes = model_bytes_;
  SendMsg(id, w);
  // The TorchScript model follows the Welcome, before any task, on the same ordered connection.
  for (const auto& frame : model_frames_) SendTo(id, frame);
  spdlog::info("worker={} admitted ({}): train={} val={} connected={}", p.name,
               fresh ? "new" : "again", p.num_train, p.num_val, peers_.size());
  if (rs_.phase == Phase::kCollect && rs_.selected.count(p.name) && !rs_.accepted.count(p.name)) {
    SendTrainTask(p);  // a selected worker that reconnected mid-round gets its task again
  }
}

void Coordinator::Impl::SendTrainTask(const Peer& p) {
  const bool evaluate = eval_ && eval_->deferred.erase(p.name) > 0;
  for (size_t i = 0; i < rs_.train_frames.size(); ++i) {
    SendTo(p.id, i == 0 && evaluate ? rs_.train_task_with_eval : rs_.train_frames[i]);
  }
}

void Coordinator::Impl::OnUpdateReady(Peer& p, const protocols::FrameView& f) {
  auto m = protocols::Decode<protocols::UpdateReady>(f);
  if (!m.ok()) {
    spdlog::warn("worker={} bad UpdateReady: {}", p.name, m.status().message());
    SendError(p.id, ErrorCode::kBadMessage, rs_.round, m.status().message());
    return;
  }
  auto reject = [&](ErrorCode code, const std::string& why) {
    spdlog::warn("round={} worker={} update rejected: {}", rs_.round, p.name, why);
    SendError(p.id, code, m->round, why);
  };
  if (m->run_id != run_id_) return reject(ErrorCode::kStale, "update for another run " + m->run_id);
  if (rs_.phase != Phase::kCollect || m->round != rs_.round) {
    return reject(ErrorCode::kStale, "round " + std::to_string(m->round) + " is not open");
  }
  if (!rs_.selected.count(p.name)) return reject(ErrorCode::kStale, "worker not selected this round");
  if (auto acc = rs_.accepted.find(p.name); acc != rs_.accepted.end()) {
    if (acc->second == m->sha256) {  // a resend of the accepted update: same ack, counted once
      protocols::Ack ack;
      ack.round = rs_.round;
      ack.sha256 = acc->second;
      SendMsg(p.id, ack);
      return;
    }
    return reject(ErrorCode::kDuplicate, "a different update was already accepted this round");
  }
  if (m->base_version != rs_.base_version) {
    return reject(ErrorCode::kStale, "update is based on v" + std::to_string(m->base_version) +
                                         ", the round trains v" + std::to_string(rs_.base_version));
  }
  if (m->num_samples <= 0 || m->num_samples > p.num_train) {
    return reject(ErrorCode::kBadUpdate,
                  "num_samples " + std::to_string(m->num_samples) + " outside 1.." +
                      std::to_string(p.num_train) + " (training samples declared at Hello)");
  }
  if (m->encoding != static_cast<uint8_t>(encoding_)) {
    return reject(ErrorCode::kBadUpdate, "encoding " + std::to_string(m->encoding) +
                                             " is not this run's train.compression (" +
                                             model::EncodingName(encoding_) + ")");
  }
  const uint64_t expected = model::EncodedBytes(encoding_, global_.data.size());
  if (m->total_bytes != expected) {
    return reject(ErrorCode::kBadUpdate, "total_bytes " + std::to_string(m->total_bytes) +
                                             " does not match the model's " +
                                             std::to_string(expected) + " (" +
                                             model::EncodingName(encoding_) + ")");
  }
  if (m->sha256.size() != 32) return reject(ErrorCode::kBadUpdate, "sha256 must be 32 bytes");
  if (!std::isfinite(m->train_loss)) return reject(ErrorCode::kBadUpdate, "train_loss is not finite");
  if (!(m->train_seconds >= 0 && m->train_seconds < 1e9) ||
      !(m->train_cpu_seconds >= 0 && m->train_cpu_seconds < 1e9)) {
    return reject(ErrorCode::kBadUpdate, "train_seconds or train_cpu_seconds out of range");
  }
  if (p.upload == Upload::kUploading) EndUpload(p);
  rs_.grant_queue.erase(std::remove(rs_.grant_queue.begin(), rs_.grant_queue.end(), p.id),
                        rs_.grant_queue.end());
  p.ready = std::move(m).value();
  p.ready_at = Clock::now();
  p.upload = Upload::kWaitingGrant;
  rs_.grant_queue.push_back(p.id);
  MaybeGrant();
}

void Coordinator::Impl::EndUpload(Peer& p) {
  if (p.upload == Upload::kUploading) --rs_.uploading;
  p.upload = Upload::kNone;
  p.assembler.Reset();
}

void Coordinator::Impl::MaybeGrant() {
  while (rs_.uploading < cfg_.max_concurrent_uploads && !rs_.grant_queue.empty()) {
    const std::string id = rs_.grant_queue.front();
    rs_.grant_queue.pop_front();
    auto it = peers_.find(id);
    if (it == peers_.end() || it->second.upload != Upload::kWaitingGrant) continue;
    Peer& p = it->second;
    p.upload = Upload::kUploading;
    // Sizes were validated in OnUpdateReady (total_bytes == the model's) and in the config.
    if (Status st = p.assembler.Start(rs_.round, p.ready.total_bytes, cfg_.chunk_bytes); !st.ok()) {
      spdlog::error("round={} worker={} cannot start upload: {}", rs_.round, p.name, st.message());
      p.upload = Upload::kNone;
      continue;
    }
    ++rs_.uploading;
    protocols::UploadGrant g;
    g.round = rs_.round;
    SendMsg(p.id, g);
  }
}

void Coordinator::Impl::OnChunk(Peer& p, const protocols::FrameView& f) {
  auto c = protocols::Decode<protocols::WeightsChunk>(f);
  if (!c.ok() || p.upload != Upload::kUploading) {
    const std::string why = !c.ok() ? c.status().message() : "chunk without an upload grant";
    spdlog::warn("round={} worker={} chunk rejected: {}", rs_.round, p.name, why);
    SendError(p.id, c.ok() ? ErrorCode::kStale : ErrorCode::kBadMessage, rs_.round, why);
    return;
  }
  auto fail = [&](const std::string& why) {
    spdlog::warn("round={} worker={} update rejected: {}", rs_.round, p.name, why);
    SendError(p.id, ErrorCode::kBadUpdate, rs_.round, why);
    EndUpload(p);
    MaybeGrant();
  };
  if (Status st = p.assembler.Add(*c, f.payload, f.payload_placed); !st.ok()) {
    return fail(st.message());
  }
  if (!p.assembler.complete()) return;

  std::vector<float> delta = p.assembler.Take();
  const Digest d = Sha256::Of(delta.data(), delta.size() * sizeof(float));
  if (std::string(d.begin(), d.end()) != p.ready.sha256) {
    return fail("update bytes do not match the SHA-256 announced in UpdateReady");
  }
  if (encoding_ != model::Encoding::kF32) {  // decoded into a buffer kept across updates
    decoded_.resize(global_.data.size());
    const std::string_view bytes(reinterpret_cast<const char*>(delta.data()),
                                 delta.size() * sizeof(float));
    if (Status st = model::DecodeDelta(encoding_, bytes, decoded_.size(), decoded_.data()); !st.ok()) {
      return fail(st.message());
    }
    delta.swap(decoded_);
  }
  if (Status st = aggregator_->Fold(delta.data(), delta.size(), p.ready.num_samples); !st.ok()) {
    return fail(st.message());
  }
  rs_.accepted[p.name] = p.ready.sha256;
  rs_.loss_weighted_sum += p.ready.train_loss * static_cast<double>(p.ready.num_samples);
  rs_.train_seconds_max = std::max(rs_.train_seconds_max, p.ready.train_seconds);
  ++p.rounds_participated;
  WorkerStats& ws = stats_[p.name];
  ws.rounds.push_back(rs_.round);
  ws.last_train_loss = p.ready.train_loss;
  const double took = SecondsSince(rs_.started);
  ws.ewma_round_s = ws.ewma_round_s ? 0.5 * *ws.ewma_round_s + 0.5 * took : took;
  // Seconds since the round started: the worker announced its update (ready_s; before that it
  // received the model and trained for train_s) and the update was in and folded (accepted_s).
  rs_.updates[p.name] = {
      {"samples", p.ready.num_samples},
      {"train_s", p.ready.train_seconds},
      {"train_cpu_s", p.ready.train_cpu_seconds},
      {"train_loss", p.ready.train_loss},
      {"ready_s", std::chrono::duration<double>(p.ready_at - rs_.started).count()},
      {"accepted_s", took}};
  protocols::Ack ack;
  ack.round = rs_.round;
  ack.sha256 = p.ready.sha256;
  SendMsg(p.id, ack);
  spdlog::info("round={} worker={} update accepted: samples={} train_loss={:.4f} train_s={:.1f} ({}/{})",
               rs_.round, p.name, p.ready.num_samples, p.ready.train_loss, p.ready.train_seconds,
               rs_.accepted.size(), rs_.selected.size());
  EndUpload(p);
  MaybeGrant();
}

void Coordinator::Impl::OnEvalResult(Peer& p, const protocols::FrameView& f) {
  auto m = protocols::Decode<protocols::EvalResult>(f);
  if (!m.ok()) {
    SendError(p.id, ErrorCode::kBadMessage, rs_.round, m.status().message());
    return;
  }
  if (!eval_ || m->run_id != run_id_ || m->round != eval_->meta.round ||
      m->version != eval_->meta.version || !eval_->expected.count(p.name)) {
    spdlog::warn("round={} worker={} stale EvalResult for round {} ignored", rs_.round, p.name, m->round);
    return;
  }
  if (m->count < 0 || m->count > p.num_val || !std::isfinite(m->loss) || !(m->accuracy >= 0) ||
      m->accuracy > 1 || !(m->cpu_seconds >= 0 && m->cpu_seconds < 1e9)) {
    spdlog::warn("round={} worker={} EvalResult out of range ignored", rs_.round, p.name);
    return;
  }
  eval_->results[p.name] = std::move(m).value();
}

std::vector<std::string> Coordinator::Impl::SelectWorkers(uint64_t round, int attempt) {
  std::vector<std::string> names;
  for (const auto& [id, p] : peers_) names.push_back(p.name);
  std::sort(names.begin(), names.end());
  std::mt19937_64 rng(MixSeed(cfg_.seed, round, 1 + attempt));
  std::shuffle(names.begin(), names.end(), rng);
  size_t k = static_cast<size_t>(std::ceil(cfg_.fraction * static_cast<double>(names.size())));
  k = std::max<size_t>(k, static_cast<size_t>(cfg_.min_fit));
  k = std::min(k, names.size());
  names.resize(k);
  std::sort(names.begin(), names.end());
  return names;
}

Status Coordinator::Impl::RunRound(uint64_t round, int attempt, bool* committed) {
  *committed = false;
  SHOAL_RETURN_IF_ERROR(eval_status_);  // the previous version's evaluation failed
  const auto t_start = Clock::now();
  const std::string started_at = store::UtcNow();
  // WAIT
  if (!PumpUntil(After(cfg_.wait_timeout_s),
                 [&] { return peers_.size() >= static_cast<size_t>(cfg_.min_workers); })) {
    if (stop_) return Status::Ok();
    return Timeout("only " + std::to_string(peers_.size()) + " of selection.min_workers=" +
                   std::to_string(cfg_.min_workers) + " workers connected within " +
                   std::to_string(cfg_.wait_timeout_s) + " s");
  }
  // SELECT + BROADCAST
  rs_ = RoundState();
  rs_.round = round;
  rs_.base_version = version_;
  rs_.started = Clock::now();
  const auto selected = SelectWorkers(round, attempt);
  rs_.selected.insert(selected.begin(), selected.end());
  aggregator_->Begin(global_.spec, cfg_.deterministic);
  const auto t_broadcast = Clock::now();
  protocols::TrainTask task;
  task.run_id = run_id_;
  task.round = round;
  task.version = version_;
  task.epochs = static_cast<uint32_t>(cfg_.epochs);
  task.batch_size = static_cast<uint32_t>(cfg_.batch_size);
  task.lr = cfg_.lr;
  task.compression = static_cast<uint8_t>(encoding_);
  task.seed = MixSeed(cfg_.seed, round, 0);
  task.deadline_ms = static_cast<uint32_t>(cfg_.round_timeout_s * 1000);
  task.spec = global_.spec;
  task.chunk_count = protocols::ChunkCount(global_.spec.total_bytes(), cfg_.chunk_bytes);
  rs_.train_frames.push_back(std::make_shared<const std::string>(protocols::Encode(task)));
  if (eval_ && !eval_->deferred.empty()) {
    task.eval_round = eval_->meta.round;
    rs_.train_task_with_eval = std::make_shared<const std::string>(protocols::Encode(task));
  }
  for (auto& c : protocols::EncodeChunks(round, global_.data.data(), global_.spec.total_bytes(),
                                     cfg_.chunk_bytes)) {
    rs_.train_frames.push_back(std::make_shared<const std::string>(std::move(c)));
  }
  rs_.phase = Phase::kCollect;
  state_ = "training";
  for (const auto& name : selected) SendTrainTask(*PeerByName(name));
  SendDeferredEvalTasks();  // to the workers not selected
  const double broadcast_s = SecondsSince(t_broadcast);
  spdlog::info("round={} started: version=v{} selected={} of {} connected", round, version_,
               selected.size(), peers_.size());

  // COLLECT
  const auto t_collect = Clock::now();
  PumpUntil(After(RoundDeadlineSeconds()),
            [&] { return rs_.accepted.size() == rs_.selected.size(); });
  const double collect_s = SecondsSince(t_collect);
  rs_.phase = Phase::kIdle;
  rs_.train_frames.clear();
  for (auto& [id, p] : peers_) {
    if (p.upload != Upload::kNone) EndUpload(p);
  }
  rs_.grant_queue.clear();
  if (stop_) return Status::Ok();
  if (rs_.accepted.size() < static_cast<size_t>(cfg_.min_fit)) {
    spdlog::warn("round={} closed with {} of min_fit={} updates; not committed", round,
                 rs_.accepted.size(), cfg_.min_fit);
    return Status::Ok();
  }
  if (rs_.accepted.size() < rs_.selected.size()) {
    std::string missing;
    for (const auto& n : rs_.selected) {
      if (!rs_.accepted.count(n)) missing += (missing.empty() ? "" : ",") + n;
    }
    spdlog::warn("round={} deadline passed without updates from {}", round, missing);
  }

  // AGGREGATE
  const auto t_agg = Clock::now();
  SHOAL_ASSIGN_OR_RETURN(model::Weights next, aggregator_->Finish(global_));
  const double aggregate_s = SecondsSince(t_agg);

  // The previous version's evaluation must be complete before this version is committed: it
  // reads global_, and its record goes into metrics.jsonl before this round's.
  const auto t_wait = Clock::now();
  SHOAL_RETURN_IF_ERROR(FinishEvaluation());
  const double eval_wait_s = SecondsSince(t_wait);
  if (stop_) return Status::Ok();

  // COMMIT: the weights are durable before anyone evaluates them; the metrics follow.
  const auto t_commit = Clock::now();
  store::VersionMeta meta;
  meta.version = version_ + 1;
  meta.parent = version_;
  meta.round = round;
  for (const auto& [name, sha] : rs_.accepted) meta.participants.push_back(name);
  const double train_loss = rs_.loss_weighted_sum / static_cast<double>(aggregator_->total_samples());
  meta.metrics = {{"central", nullptr}, {"federated", nullptr}, {"train_loss", train_loss},
                  {"samples", aggregator_->total_samples()}, {"evaluation", "pending"}};
  SHOAL_RETURN_IF_ERROR(
      store_->Commit(next, meta).Annotate("commit of v" + std::to_string(meta.version)));
  global_ = std::move(next);
  version_ = meta.version;
  board_.AddVersion(meta.ToJson());
  const double commit_s = SecondsSince(t_commit);

  nlohmann::json rec = {
      {"round", round},
      {"version", version_},
      {"sha256", meta.sha256},
      {"participants", meta.participants},
      {"selected", selected.size()},
      {"samples", aggregator_->total_samples()},
      {"central", nullptr},
      {"federated", nullptr},
      {"train_loss", train_loss},
      {"max_worker_train_s", rs_.train_seconds_max},
      {"workers", rs_.updates},
      // The round's own time; "evaluate" is how long it waited for an evaluation (the previous
      // version's with eval.overlap, else its own); the evaluation itself is under "evaluation".
      {"phases_s",
       {{"broadcast", broadcast_s},
        {"collect", collect_s},
        {"aggregate", aggregate_s},
        {"evaluate", eval_wait_s},
        {"commit", commit_s}}},
      {"wall_s", SecondsSince(t_start)},
      {"bytes_in", rs_.bytes_in},
      {"bytes_out", rs_.bytes_out},
      {"started_at", started_at},
      {"time", meta.created_at}};
  StartEvaluation(std::move(meta), std::move(rec), t_start,
                  cfg_.eval_overlap && round < static_cast<uint64_t>(cfg_.rounds));
  *committed = true;
  if (!cfg_.eval_overlap) SHOAL_RETURN_IF_ERROR(FinishEvaluation());
  state_ = "waiting";
  Publish();
  return Status::Ok();
}

void Coordinator::Impl::StartEvaluation(store::VersionMeta meta, nlohmann::json record,
                                        Clock::time_point round_started, bool next_round_follows) {
  PendingEval& ev = eval_.emplace();
  ev.meta = std::move(meta);
  ev.record = std::move(record);
  ev.round_started = round_started;
  ev.started = Clock::now();
  ev.federated_deadline = After(cfg_.eval_timeout_s);
  if (cfg_.federated_eval) {
    for (const auto& [id, p] : peers_) {
      if (p.num_val > 0) ev.expected.insert(p.name);
    }
    ev.deferred = ev.expected;
    if (!next_round_follows) {
      SendDeferredEvalTasks();
      ev.record["bytes_out"] = rs_.bytes_out;  // with the EvalTasks
    }
  }
  // Central evaluation runs on its own thread so this one keeps serving workers meanwhile.
  if (evaluator_) {
    ev.central = std::async(std::launch::async, [this] {
      SetThreadName("shoal-central");
      return evaluator_->Evaluate(global_);
    });
  }
}

// EvalTasks (with the weights of the version under evaluation, global_) to the workers still
// owing a federated result that no TrainTask asked for.
void Coordinator::Impl::SendDeferredEvalTasks() {
  if (!eval_ || eval_->deferred.empty()) return;
  PendingEval& ev = *eval_;
  protocols::EvalTask et;
  et.run_id = run_id_;
  et.round = ev.meta.round;
  et.version = ev.meta.version;
  et.spec = global_.spec;
  et.chunk_count = protocols::ChunkCount(global_.spec.total_bytes(), cfg_.chunk_bytes);
  std::vector<std::shared_ptr<const std::string>> frames{
      std::make_shared<const std::string>(protocols::Encode(et))};
  for (auto& c : protocols::EncodeChunks(et.round, global_.data.data(), global_.spec.total_bytes(),
                                     cfg_.chunk_bytes)) {
    frames.push_back(std::make_shared<const std::string>(std::move(c)));
  }
  for (const auto& name : ev.deferred) {
    if (const Peer* p = PeerByName(name)) {
      for (const auto& fr : frames) SendTo(p->id, fr);
    } else {
      ev.expected.erase(name);  // gone since the commit
    }
  }
  ev.deferred.clear();
}

bool Coordinator::Impl::EvaluationDone() const {
  const bool central = !eval_->central.valid() ||
                       eval_->central.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  return central && (eval_->results.size() == eval_->expected.size() ||
                     Clock::now() >= eval_->federated_deadline);
}

Status Coordinator::Impl::FinishEvaluation() {
  SendDeferredEvalTasks();  // no next round asked for them (stopping, or a round that failed)
  PumpUntil(Clock::time_point::max(), [&] { return !eval_ || !eval_status_.ok(); });
  // Stopping: the central result is still recorded (it is at most one evaluation away).
  if (eval_ && eval_status_.ok()) eval_status_ = CompleteEvaluation();
  return eval_status_;
}

Status Coordinator::Impl::CompleteEvaluation() {
  PendingEval ev = std::move(*eval_);
  eval_.reset();
  nlohmann::json central = nullptr;
  nlohmann::json evaluation = {{"overlapped", cfg_.eval_overlap}};
  if (ev.central.valid()) {
    SHOAL_ASSIGN_OR_RETURN(model::EvalMetrics m, ev.central.get());
    central = CentralJson(m);
    evaluation["central_cpu_s"] = m.cpu_seconds;
  }
  nlohmann::json federated = nullptr;
  int64_t n = 0;
  double loss = 0, acc = 0, cpu = 0;
  for (const auto& [name, r] : ev.results) {
    n += r.count;
    loss += r.loss * static_cast<double>(r.count);
    acc += r.accuracy * static_cast<double>(r.count);
    cpu += r.cpu_seconds;
  }
  if (n > 0) {
    federated = {{"accuracy", acc / n}, {"loss", loss / n}, {"count", n},
                 {"reports", ev.results.size()}};
    evaluation["federated_cpu_s"] = cpu;
  }
  if (ev.results.size() < ev.expected.size()) {
    spdlog::warn("round={} federated evaluation of v{}: {} of {} workers answered within "
                 "eval.timeout_s={}",
                 ev.meta.round, ev.meta.version, ev.results.size(), ev.expected.size(),
                 cfg_.eval_timeout_s);
  }
  const double seconds = SecondsSince(ev.started);
  evaluation["seconds"] = seconds;
  ev.meta.metrics["central"] = central;
  ev.meta.metrics["federated"] = federated;
  ev.meta.metrics.erase("evaluation");
  SHOAL_RETURN_IF_ERROR(store_->UpdateMeta(ev.meta));
  nlohmann::json& rec = ev.record;
  rec["central"] = central;
  rec["federated"] = federated;
  rec["evaluation"] = evaluation;
  rec["evaluated_at"] = store::UtcNow();
  if (!cfg_.eval_overlap) {  // the round waited for it
    rec["phases_s"]["evaluate"] = seconds;
    rec["wall_s"] = SecondsSince(ev.round_started);
  }
  SHOAL_RETURN_IF_ERROR(store_->AppendMetrics(rec));
  board_.UpdateVersion(ev.meta.ToJson());
  board_.AddRound(rec);
  PrintRow(rec);
  return Status::Ok();
}

void Coordinator::Impl::PrintHeader() {
  std::printf("%5s %7s %7s %7s %10s %10s %8s %8s %10s %8s\n", "round", "version", "workers",
              "samples", "test_acc", "test_loss", "fed_acc", "fed_loss", "train_loss", "seconds");
  std::fflush(stdout);
}

void Coordinator::Impl::PrintRow(const nlohmann::json& r) {
  auto num = [](const nlohmann::json& j, const char* k, double scale) -> std::string {
    if (j.is_null() || !j.contains(k)) return "-";
    char b[32];
    std::snprintf(b, sizeof(b), scale == 100 ? "%.2f%%" : "%.4f", j[k].get<double>() * scale);
    return b;
  };
  std::printf("%5llu %7s %7zu %7lld %10s %10s %8s %8s %10.4f %8.1f\n",
              static_cast<unsigned long long>(r["round"].get<uint64_t>()),
              ("v" + std::to_string(r["version"].get<uint64_t>())).c_str(),
              r["participants"].size(), static_cast<long long>(r["samples"].get<int64_t>()),
              num(r["central"], "accuracy", 100).c_str(), num(r["central"], "loss", 1).c_str(),
              num(r["federated"], "accuracy", 100).c_str(), num(r["federated"], "loss", 1).c_str(),
              r["train_loss"].get<double>(), r["wall_s"].get<double>());
  std::fflush(stdout);
}

}  // namespace shoal::coordinator
