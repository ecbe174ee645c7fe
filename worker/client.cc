#include "worker/client.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <optional>
#include <thread>

#include "base/file_util.h"
#include "base/malloc_tuning.h"
#include "base/sandbox.h"
#include "base/sha256.h"
#include "base/thread_name.h"
#include "data/dataset.h"
#include "model/compression.h"
#include "nn/runtime.h"
#include "protocols/channel.h"
#include "protocols/client_session.h"
#include "protocols/codec.h"
#include "protocols/transport.h"
#include "security/pki.h"
#include "security/signing.h"
#include "worker/privacy_guard.h"
#include "worker/trainer.h"

namespace shoal::worker {

using Clock = std::chrono::steady_clock;

namespace {

// How long a worker that refuses the run's model waits for its Error to reach the coordinator.
constexpr int kRefusalDeliveryMs = 1000;

// Outcome of one connection to the coordinator.
enum class SessionEnd { kShutdown, kReconnect, kReconnectNow };

}  // namespace

class WorkerClient::Impl {
 public:
  Impl(WorkerConfig cfg, std::atomic<bool>& stop)
      : cfg_(std::move(cfg)), stop_(stop), wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Impl() {
    if (wake_fd_ >= 0) close(wake_fd_);
  }
  Status Run();
  // Ends the session loop's wait at once (training finished, or Stop()). Async-signal-safe.
  void Wake() {
    const uint64_t one = 1;
    if (wake_fd_ >= 0) (void)!write(wake_fd_, &one, sizeof one);
  }
  // Every loop that receives on the session's channel drains the descriptor before waiting,
  // then looks at what it may have been woken for (training_done_, stop_): those flags, not
  // the descriptor, say what happened.
  void DrainWake() {
    uint64_t wakes;  // an eventfd read returns and clears the whole count
    if (wake_fd_ >= 0) (void)!read(wake_fd_, &wakes, sizeof wakes);
  }

 private:
  Status LoadSilo();
  Status SetUpSecurity();
  Status EnterSandbox();
  Status Join(const std::string& token_text);
  // One connection: the session's messages out, the coordinator's in, its events acted on.
  Result<SessionEnd> Session();
  // Sends what the session queued.
  void Flush();
  Result<std::optional<SessionEnd>> HandleEvents();
  Result<std::optional<SessionEnd>> OnEvent(protocols::ClientEvent& e);
  Status EnsureTrainers(const model::ModelSource& source, const std::string& key);
  // Tells the coordinator why this worker will not run its model (its log shows the message
  // under the worker's name) and returns the error that stops the worker.
  Status RefuseModel(const std::string& why,
                     protocols::ErrorCode code = protocols::ErrorCode::kModelRefused);
  // Checks the task's DP parameters against this worker's own limits and records them in the
  // ledger before training: the refusal (which stops the worker) when it will not run it.
  Status AdmitTask();
  Result<LocalTrainer*> EvalTrainer();
  void StartTraining();
  void FinishTraining();
  // Federated evaluation of `w` (version `version`, made by round `round`) on the validation
  // split; sends the EvalResult.
  void Evaluate(const model::Weights& w, const std::string& run_id, uint64_t round,
                uint64_t version, bool release_memory);
  void SleepInterruptible(uint32_t ms);

  WorkerConfig cfg_;
  std::atomic<bool>& stop_;
  // Readable when the session loop should look again before its timeout: the loop waits for
  // messages, the training thread's end and heartbeat times in one poll (no periodic wake-ups).
  const int wake_fd_;
  data::Dataset train_;
  data::Dataset val_;
  std::unique_ptr<protocols::ClientChannel> channel_;
  std::shared_ptr<const protocols::TlsContext> tls_;  // null with --insecure
  // The protocol (protocols/client_session.h), made once the silo is loaded (its Hello
  // declares it) and kept across reconnects: an update not yet acknowledged is offered again.
  std::unique_ptr<protocols::ClientSession> session_;
  std::unique_ptr<LocalTrainer> trainer_;  // used by the training thread only while it runs
  std::unique_ptr<LocalTrainer>
      eval_trainer_;                 // this thread's, made when evaluation overlaps training
  model::ModelSource model_source_;  // what the trainers were made from
  std::string model_key_;            // which model the trainers hold (name, classes, file digest)

  // Training in progress.
  std::atomic<bool> cancel_{false};
  std::future<Result<TrainOutcome>> training_;
  std::atomic<bool> training_done_{false};  // set by the training thread as it returns
  model::Weights train_global_;
  protocols::TrainTask running_task_;
  privacy::DpParams running_dp_;         // the running task's DP parameters, as admitted
  std::optional<PrivacyGuard> privacy_;  // opened before the sandbox (its ledger file)

  // Finished update waiting for its grant / ack (the session holds its UpdateReady).
  std::vector<float> delta_;     // the update as sent (encoded bytes when compressed)
  std::vector<float> residual_;  // error feedback: what compression dropped so far
};

WorkerClient::WorkerClient(WorkerConfig config)
    : impl_(std::make_unique<Impl>(std::move(config), stop_)) {}
WorkerClient::~WorkerClient() = default;
Status WorkerClient::Run() { return impl_->Run(); }
void WorkerClient::Stop() {
  stop_.store(true);
  impl_->Wake();
}

Status WorkerClient::Impl::LoadSilo() {
  Result<data::Dataset> all = data::LoadDataset(
      {cfg_.data_format, cfg_.data_path, cfg_.data_split, cfg_.label_column, cfg_.limit});
  if (!all.ok()) return all.status().Annotate("silo");
  if (all->size() < 2)
    return InvalidArgument("silo " + cfg_.data_path + " has fewer than 2 samples");
  const int64_t classes = all->num_classes();
  auto split = data::SplitValidation(std::move(*all), cfg_.val_fraction, cfg_.split_seed);
  train_ = std::move(split.first);
  val_ = std::move(split.second);
  // Held for the whole run and read one batch at a time: the training images are kept packed
  // (zero runs coded), the validation split, read whole every round, as it is.
  const size_t raw_bytes = train_.pixels.size();
  train_.PackImages();
  spdlog::info("worker={} silo {} ({}): train={} val={} sample_shape={} classes={}", cfg_.name,
               cfg_.data_path, cfg_.data_format, train_.size(), val_.size(),
               model::ShapeString(train_.sample_shape), classes);
  if (train_.is_packed()) {
    spdlog::info("worker={} training images packed: {:.1f} MB instead of {:.1f}", cfg_.name,
                 train_.packed.bytes() / 1e6, raw_bytes / 1e6);
  }
  return Status::Ok();
}

void WorkerClient::Impl::SleepInterruptible(uint32_t ms) {
  const auto until = Clock::now() + std::chrono::milliseconds(ms);
  while (!stop_ && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

// Resolves the credentials: --insecure (plain, with a loud warning), a bundle with a
// certificate, or a join token that is redeemed first and leaves a bundle behind.
Status WorkerClient::Impl::SetUpSecurity() {
  if (cfg_.insecure) {
    spdlog::warn(
        "!!! INSECURE MODE (--insecure): no TLS. This worker's weight updates travel in "
        "clear text and the coordinator is not authenticated. Debugging only.");
    if (cfg_.coordinator.empty()) cfg_.coordinator = security::kDefaultCoordinatorAddress;
    return Status::Ok();
  }
  if (!PathExists(security::BundleCertPath(cfg_.bundle))) {
    if (cfg_.join_token.empty()) {
      return NotFound(
          "security.bundle " + cfg_.bundle + " holds no certificate (" +
          security::BundleCertPath(cfg_.bundle) +
          "); enroll with `shoalctl enroll`, or pass --join @FILE or set SHOAL_JOIN_TOKEN");
    }
    SHOAL_ASSIGN_OR_RETURN(std::string token, ResolveJoinToken(cfg_.join_token));
    SHOAL_RETURN_IF_ERROR(Join(token));
  } else if (!cfg_.join_token.empty()) {
    spdlog::info("worker={} already enrolled ({}); the join token is not used", cfg_.name,
                 cfg_.bundle);
  }
  SHOAL_ASSIGN_OR_RETURN(security::Bundle b, security::LoadBundle(cfg_.bundle));
  if (b.name != cfg_.name) {
    return InvalidArgument("bundle " + cfg_.bundle + " was issued to '" + b.name +
                           "', not to worker.name '" + cfg_.name + "'");
  }
  if (cfg_.coordinator.empty()) cfg_.coordinator = b.coordinator_address;
  auto tls = protocols::WorkerTls(b, cfg_.server_name);
  if (!tls.ok()) return tls.status().Annotate("security.bundle " + cfg_.bundle);
  tls_ = std::move(tls).value();
  spdlog::info("worker={} TLS with certificate {} (CA fingerprint {})", cfg_.name,
               security::BundleCertPath(cfg_.bundle), b.ca_fingerprint);
  return Status::Ok();
}

// Redeems a one-time join token: a TLS session without a client certificate whose server must
// prove a certificate chaining to the CA fingerprint in the token (as kubeadm's
// discovery-token-ca-cert-hash); then a CSR for a fresh key goes out with the token's secret,
// and the signed certificate comes back. Nothing is sent before the coordinator is verified.
Status WorkerClient::Impl::Join(const std::string& token_text) {
  SHOAL_ASSIGN_OR_RETURN(security::ParsedToken token, security::ParseJoinToken(token_text));
  const std::string address =
      cfg_.coordinator.empty() ? token.coordinator_address : cfg_.coordinator;
  protocols::TlsConfig tc;
  tc.ca_fingerprint = token.ca_fingerprint;
  tc.expected_peer_name = cfg_.server_name;
  SHOAL_ASSIGN_OR_RETURN(auto tls, protocols::TlsContext::Client(tc));
  SHOAL_ASSIGN_OR_RETURN(security::KeyAndCsr kc, security::MakeKeyAndCsr(cfg_.name));
  spdlog::info("worker={} joining the federation at {} with token {} (CA fingerprint {})",
               cfg_.name, address, token.id, token.ca_fingerprint);
  const auto deadline = Clock::now() + std::chrono::milliseconds(
                                           std::max<uint32_t>(cfg_.hello_timeout_ms * 4, 20000));
  protocols::ChannelOptions co;
  co.tls = tls;
  co.max_message_bytes = 1 << 20;
  protocols::ClientChannel channel(co);
  SHOAL_RETURN_IF_ERROR(channel.Connect(address));
  protocols::JoinRequest req;
  req.token_id = token.id;
  req.secret = token.secret;
  req.csr_pem = kc.csr_pem;
  SHOAL_RETURN_IF_ERROR(channel.Send(protocols::Encode(req)));
  while (!stop_ && Clock::now() < deadline) {
    auto in = channel.Recv(100);
    if (!in.ok()) return in.status().Annotate("join " + address);
    if (!in->has_value()) continue;
    protocols::Limits limits;
    SHOAL_ASSIGN_OR_RETURN(protocols::FrameView f, protocols::ParseFrame(**in, limits));
    if (f.type == protocols::MessageType::kError) {
      auto e = protocols::Decode<protocols::Error>(f);
      return Rejected("coordinator refused the join: " +
                      (e.ok() ? e->message : e.status().message()));
    }
    if (f.type != protocols::MessageType::kJoinResponse) continue;
    SHOAL_ASSIGN_OR_RETURN(protocols::JoinResponse resp,
                           protocols::Decode<protocols::JoinResponse>(f));
    // The CA handed back must be the one the token pins, and the certificate must be ours.
    SHOAL_RETURN_IF_ERROR(security::CheckCertMatchesFingerprint(resp.ca_pem, token.ca_fingerprint)
                              .Annotate("JoinResponse CA"));
    SHOAL_ASSIGN_OR_RETURN(security::CertInfo info,
                           security::VerifyPeerCert(resp.ca_pem, resp.cert_pem));
    if (info.common_name != cfg_.name || !info.client_auth) {
      return Rejected("coordinator returned a certificate for '" + info.common_name + "'");
    }
    protocols::TlsConfig check;  // fails when the certificate is not for our key
    check.cert_pem = resp.cert_pem;
    check.key_pem = kc.key_pem;
    check.ca_pem = resp.ca_pem;
    SHOAL_RETURN_IF_ERROR(protocols::TlsContext::Client(check).status().Annotate("JoinResponse"));
    SHOAL_RETURN_IF_ERROR(security::WriteBundle(cfg_.bundle, cfg_.name, kc.key_pem, resp.cert_pem,
                                                resp.ca_pem, address));
    spdlog::info("worker={} enrolled: certificate sha256 {} written to {}", cfg_.name,
                 info.fingerprint, cfg_.bundle);
    return Status::Ok();
  }
  if (stop_) return Unavailable("stopped while joining");
  return Timeout("no answer to the join request from " + address);
}

// From here on the worker holds its silo and credentials in memory and writes no file: the
// models it runs (the coordinator's TorchScript included) get no file writes, no exec, no
// ptrace (seccomp); Landlock leaves them the system paths LibTorch and name resolution read and
// TCP connections to the coordinator's port only - not the silo's files (loaded already), nor
// the bundle's key, nor any other port (base/landlock.h).
Status WorkerClient::Impl::EnterSandbox() {
  SandboxOptions options;
  options.allow_network = true;
  options.require_landlock = cfg_.require_landlock;
  if (!cfg_.sandbox) {
    spdlog::warn(
        "worker={} sandbox OFF (runtime.sandbox = false): the models this worker runs "
        "may read and write files, connect anywhere and start programs with its rights",
        cfg_.name);
    return Status::Ok();
  }
  auto port = TcpPortOf(cfg_.coordinator);
  if (!port.ok()) return port.status().Annotate("worker.coordinator (Landlock's TCP rule)");
  options.landlock.read_paths = RuntimeReadPaths();
  options.landlock.connect_ports = {*port};
  auto report = InstallSandbox(options);
  if (!report.ok()) {
    return report.status().Annotate(
        "sandbox (runtime.sandbox; set it to false where seccomp is unavailable)");
  }
  LogSandbox("worker=" + cfg_.name, *report);
  return Status::Ok();
}

Status WorkerClient::Impl::Run() {
  spdlog::info("worker={} runtime {}", cfg_.name, nn::ConfigureTorchRuntime(cfg_.threads));
  SHOAL_RETURN_IF_ERROR(LoadSilo());
  // Decompressing and splitting the silo left a few copies of it freed in the heap.
  ReleaseFreeMemory();
  SHOAL_RETURN_IF_ERROR(SetUpSecurity());
  {
    SHOAL_ASSIGN_OR_RETURN(PrivacyGuard guard, PrivacyGuard::Open(cfg_));
    privacy_.emplace(std::move(guard));
    const std::string ledger = privacy_->ledger().path();
    if (!privacy_->warning().empty()) {
      spdlog::warn("worker={} {}", cfg_.name, privacy_->warning());
    } else if (ledger.empty()) {
      spdlog::warn(
          "worker={} privacy ledger in memory only (no privacy.ledger, no bundle): the "
          "privacy this silo spends is forgotten when the worker exits",
          cfg_.name);
    }
    spdlog::info(
        "worker={} privacy: require_dp={} max_epsilon={} delta={} ledger={} ({} DP tasks, "
        "epsilon {:.4g})",
        cfg_.name, cfg_.require_dp, cfg_.max_epsilon, cfg_.delta,
        ledger.empty() ? "<memory>" : ledger, privacy_->ledger().tasks(), privacy_->Epsilon());
  }
  // A join token's session left ZeroMQ's threads running; they end here so that the ones the
  // session below starts are born under the sandbox.
  protocols::ReleaseTransport();
  SHOAL_RETURN_IF_ERROR(EnterSandbox());
  protocols::ClientSessionOptions so;
  so.hello.name = cfg_.name;
  so.hello.num_train = train_.size();
  so.hello.num_val = val_.size();
  so.hello.input_shape = train_.sample_shape;
  so.hello.num_classes = std::max(train_.num_classes(), val_.num_classes());
  so.hello_timeout_ms = cfg_.hello_timeout_ms;
  so.max_model_bytes = model::kMaxScriptModelBytes;
  session_ = std::make_unique<protocols::ClientSession>(std::move(so));
  uint32_t backoff = cfg_.retry_initial_ms;
  while (!stop_) {
    auto end = Session();
    if (!end.ok()) {
      cancel_ = true;
      if (training_.valid()) training_.wait();
      return end.status();
    }
    if (*end == SessionEnd::kShutdown) break;
    if (*end == SessionEnd::kReconnectNow) {
      backoff = cfg_.retry_initial_ms;
      continue;
    }
    spdlog::warn("worker={} coordinator {} not reachable or connection lost; retrying in {} ms",
                 cfg_.name, cfg_.coordinator, backoff);
    SleepInterruptible(backoff);
    backoff = std::min(cfg_.retry_max_ms, backoff * 2);
  }
  cancel_ = true;
  if (training_.valid()) training_.wait();
  spdlog::info("worker={} {}", cfg_.name, stop_ ? "stopped by signal" : "finished");
  return Status::Ok();
}

Result<SessionEnd> WorkerClient::Impl::Session() {
  protocols::ChannelOptions co;
  co.tls = tls_;
  co.socket.linger_ms = 0;
  co.socket.wake_fd = wake_fd_;  // the training thread's end and Stop() end a wait
  co.max_message_bytes = protocols::kMaxMessageBytes;
  channel_ = std::make_unique<protocols::ClientChannel>(co);
  if (tls_) {
    // A task's weights are decrypted straight into the buffer they are assembled in
    // (placement.h); anything else, or a chunk the session would not take now, is read whole.
    channel_->set_payload_placer([this](std::string_view head, size_t payload_bytes) {
      return session_->Place(head, payload_bytes);
    });
  }
  SHOAL_RETURN_IF_ERROR(channel_->Connect(cfg_.coordinator));
  session_->Connect(Clock::now());  // Hello; an update not yet acknowledged follows the Welcome
  Flush();
  while (!stop_) {
    DrainWake();
    // A training that ends before the Welcome is picked up once admitted.
    if (session_->admitted() && training_.valid() &&
        training_done_.load(std::memory_order_acquire)) {
      FinishTraining();
    }
    session_->Tick(Clock::now(), training_.valid());
    SHOAL_ASSIGN_OR_RETURN(std::optional<SessionEnd> end, HandleEvents());
    if (end) return *end;
    Flush();
    // Until the next heartbeat (or the Hello deadline) is due, unless a message arrives or the
    // wake descriptor fires.
    const auto wait_ms =
        std::chrono::ceil<std::chrono::milliseconds>(session_->next_deadline() - Clock::now())
            .count();
    const int64_t max_wait = session_->admitted() ? 1000 : 100;
    auto in = channel_->RecvMessage(static_cast<int>(std::clamp<int64_t>(wait_ms, 1, max_wait)));
    if (!in.ok()) {
      if (!session_->admitted() && in.status().code() == Code::kRejected) {
        // The coordinator's certificate is not the federation's (or ours was refused).
        return in.status().Annotate("TLS with " + cfg_.coordinator);
      }
      spdlog::warn("worker={} connection to {}: {}", cfg_.name, cfg_.coordinator,
                   in.status().ToString());
      return SessionEnd::kReconnect;  // the connection (and its TLS session) is gone
    }
    if (!in->has_value()) continue;
    session_->Receive(**in, Clock::now());
    SHOAL_ASSIGN_OR_RETURN(end, HandleEvents());
    if (end) return *end;
    Flush();
  }
  return SessionEnd::kShutdown;
}

void WorkerClient::Impl::Flush() {
  while (auto m = session_->NextToSend()) {
    // An upload chunk is sealed from the update's own storage: no copy into a frame first.
    if (Status st = channel_->Send(m->head, m->payload); !st.ok()) {
      spdlog::warn("worker={} send: {}", cfg_.name, st.ToString());
      if (!m->payload.empty()) session_->CancelUpload();
    }
  }
}

Result<std::optional<SessionEnd>> WorkerClient::Impl::HandleEvents() {
  while (auto e = session_->NextEvent()) {
    SHOAL_ASSIGN_OR_RETURN(std::optional<SessionEnd> end, OnEvent(*e));
    if (end) return end;
  }
  return std::optional<SessionEnd>();
}

// What the session reports: the worker's own work (trainers, training, evaluation) and logs.
// A value ends the session.
Result<std::optional<SessionEnd>> WorkerClient::Impl::OnEvent(protocols::ClientEvent& e) {
  using Kind = protocols::ClientEvent::Kind;
  const protocols::Welcome& welcome = session_->welcome();
  switch (e.kind) {
    case Kind::kWelcomed:
      spdlog::info("worker={} admitted to run={} model={} at {}", cfg_.name, welcome.run_id,
                   welcome.model, cfg_.coordinator);
      if (welcome.model == model::kTorchScriptModel) {
        // The file follows as ModelFile pieces; the trainers are made when it is complete.
        spdlog::info("worker={} receiving the TorchScript model ({} bytes)", cfg_.name,
                     welcome.model_bytes);
      } else {
        SHOAL_RETURN_IF_ERROR(
            EnsureTrainers(model::ModelSource{welcome.model, ""},
                           welcome.model + "/" + std::to_string(welcome.num_classes)));
      }
      break;
    case Kind::kModelFile: {
      // Its SHA-256 was checked by the session; a file this worker does not trust, or that does
      // not load here (the operator allow-list included), is fatal: the coordinator is told
      // why, the worker stops with that error instead of reconnecting for the same file.
      model::ModelSource source{model::kTorchScriptModel, std::move(e.model_file)};
      spdlog::info("worker={} TorchScript model received: {} bytes sha256={}", cfg_.name,
                   source.script_bytes.size(), e.message);
      std::string warning;
      if (Status trust = cfg_.CheckScriptTrusted(e.message, &warning); !trust.ok()) {
        return RefuseModel(trust.message());
      }
      if (!warning.empty()) spdlog::warn("worker={} {}", cfg_.name, warning);
      Status st = EnsureTrainers(source, std::string(model::kTorchScriptModel) + "/" +
                                             std::to_string(welcome.num_classes) + "/" + e.message);
      if (!st.ok()) {
        return RefuseModel("the coordinator's TorchScript model cannot be used: " + st.message());
      }
      break;
    }
    case Kind::kModelFileFailed:
      // A new connection sends a new copy (after retry.initial_ms).
      spdlog::warn("worker={} model file transfer failed: {}; reconnecting for a new copy",
                   cfg_.name, e.message);
      SleepInterruptible(cfg_.retry_initial_ms);
      return std::optional<SessionEnd>(SessionEnd::kReconnectNow);
    case Kind::kTaskAnnounced:
      if (training_.valid()) {  // a newer task supersedes the one in progress
        cancel_ = true;
        training_.wait();
        training_ = {};
      }
      break;
    case Kind::kTrainTask:
      train_global_ = std::move(e.weights);
      running_task_ = std::move(e.train);
      if (running_task_.eval_round != 0) {  // the new version's federated evaluation first
        // Training starts next and reuses the evaluation's freed workspace: no release in
        // between (pages handed back and faulted in again cost ~14 us each on these VMs).
        Evaluate(train_global_, running_task_.run_id, running_task_.eval_round,
                 running_task_.version, /*release_memory=*/false);
      }
      SHOAL_RETURN_IF_ERROR(AdmitTask());
      StartTraining();
      break;
    case Kind::kEvalTask:
      Evaluate(e.weights, e.eval.run_id, e.eval.round, e.eval.version, /*release_memory=*/true);
      break;
    case Kind::kAcked:
      spdlog::info("round={} worker={} update acknowledged", e.round, cfg_.name);
      FreeStorage(delta_);
      break;
    case Kind::kUpdateRejected:
      FreeStorage(delta_);
      break;
    case Kind::kCoordinatorError:
      if (session_->admitted()) {
        spdlog::warn("round={} worker={} coordinator error {}: {}", e.round, cfg_.name,
                     static_cast<int>(e.code), e.message);
      } else {
        spdlog::warn("worker={} coordinator error at hello: {}", cfg_.name, e.message);
      }
      break;
    case Kind::kReconnect:
      spdlog::warn("worker={} {}; reconnecting", cfg_.name, e.message);
      return std::optional<SessionEnd>(SessionEnd::kReconnectNow);
    case Kind::kTimedOut:
      spdlog::warn("worker={} {}", cfg_.name, e.message);
      return std::optional<SessionEnd>(SessionEnd::kReconnect);
    case Kind::kRefused:
      return e.status;
    case Kind::kShutdown:
      spdlog::info("worker={} coordinator says shutdown: {}", cfg_.name, e.message);
      return std::optional<SessionEnd>(SessionEnd::kShutdown);
    case Kind::kBadFrame:
      spdlog::warn("worker={} bad frame from coordinator: {}", cfg_.name, e.message);
      break;
    case Kind::kTransferFailed:
      spdlog::warn("worker={} weights transfer failed: {}", cfg_.name, e.message);
      break;
    case Kind::kIgnored:
      spdlog::warn("worker={} {}", cfg_.name, e.message);
      break;
    case Kind::kHeartbeat:
    case Kind::kModelFilePiece:
    case Kind::kUploadGranted:
      break;
  }
  return std::optional<SessionEnd>();
}

Status WorkerClient::Impl::AdmitTask() {
  const protocols::TrainTask& t = running_task_;
  auto dp = privacy_->Admit(t);
  if (dp.ok() && dp->mode == privacy::DpMode::kSample) {
    if (Status st = trainer_->DpSgdSupport(); !st.ok()) {
      dp = Rejected("refused TrainTask of round " + std::to_string(t.round) +
                    ": DP-SGD cannot train this model: " + st.message());
    } else if (st = privacy_->Record(t, *dp); !st.ok()) {
      dp = Rejected("refused TrainTask of round " + std::to_string(t.round) +
                    ": its privacy spending cannot be recorded: " + st.ToString());
    }
  }
  if (!dp.ok()) {
    spdlog::error("round={} worker={} {}", t.round, cfg_.name, dp.status().message());
    return RefuseModel(dp.status().message(), protocols::ErrorCode::kPrivacyRefused);
  }
  running_dp_ = *dp;
  if (running_dp_.mode == privacy::DpMode::kSample) {
    spdlog::info(
        "round={} worker={} DP-SGD: C={} sigma={} q={} steps={}; silo epsilon now {:.4g} "
        "at delta {} (ledger: {} DP tasks)",
        t.round, cfg_.name, running_dp_.clip_norm, running_dp_.noise_multiplier,
        running_dp_.sampling_rate, running_dp_.steps, privacy_->Epsilon(), cfg_.delta,
        privacy_->ledger().tasks());
  }
  return Status::Ok();
}

Status WorkerClient::Impl::RefuseModel(const std::string& why, protocols::ErrorCode code) {
  protocols::Error e;
  e.code = code;
  e.message = why.substr(0, protocols::kMaxStringBytes);
  session_->Send(e);
  Flush();
  // The socket closes without lingering when the worker stops: give ZeroMQ's I/O thread time to
  // deliver the error (whatever arrives meanwhile is dropped), unless the connection ends first.
  const auto until = Clock::now() + std::chrono::milliseconds(kRefusalDeliveryMs);
  while (Clock::now() < until) {
    auto in = channel_->RecvMessage(static_cast<int>(
        std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now()).count()));
    if (!in.ok()) break;
  }
  return Rejected(why);
}

// Makes the trainers for `source` unless they already hold the model `key` names (a reconnect
// to the same run). Training of a previous, different model is cancelled first.
Status WorkerClient::Impl::EnsureTrainers(const model::ModelSource& source,
                                          const std::string& key) {
  if (trainer_ && key == model_key_) {
    session_->set_model_spec(trainer_->spec());
    return Status::Ok();
  }
  if (training_.valid()) {
    cancel_ = true;
    training_.wait();
    training_ = {};
    session_->DropUpdate();
    FreeStorage(delta_);
  }
  trainer_.reset();
  eval_trainer_.reset();
  model_key_.clear();
  SHOAL_ASSIGN_OR_RETURN(auto trainer, LocalTrainer::Create(source, train_.sample_shape,
                                                            session_->welcome().num_classes));
  trainer_ = std::move(trainer);
  model_source_ = source;
  model_key_ = key;
  // Tasks for any other model are ignored: their weights would be allocated from their spec.
  session_->set_model_spec(trainer_->spec());
  return Status::Ok();
}

// Evaluation uses the training net when no training runs (each task sets its weights); a
// second copy of the model is made only the first time an evaluation arrives while training
// runs, so a worker usually holds one net instead of two.
Result<LocalTrainer*> WorkerClient::Impl::EvalTrainer() {
  if (!training_.valid()) return trainer_.get();
  if (!eval_trainer_) {
    SHOAL_ASSIGN_OR_RETURN(eval_trainer_, LocalTrainer::Create(model_source_, train_.sample_shape,
                                                               session_->welcome().num_classes));
    spdlog::info("worker={} evaluating while training: made a second copy of the model for it",
                 cfg_.name);
  }
  return eval_trainer_.get();
}

void WorkerClient::Impl::StartTraining() {
  const protocols::TrainTask& t = running_task_;
  TrainSettings s;
  s.epochs = static_cast<int>(t.epochs);
  s.batch_size = static_cast<int>(t.batch_size);
  s.lr = t.lr;
  s.seed = protocols::WorkerTrainingSeed(t.seed, cfg_.name);
  s.dp = running_dp_;
  // DP noise the coordinator cannot reproduce, unless the worker allowed seeded noise and the
  // run asks for it (run.deterministic, PrivacyGuard::Admit).
  s.noise_seed = s.seed;
  if (s.dp.mode == privacy::DpMode::kSample && !s.dp.seeded_noise &&
      getrandom(&s.noise_seed, sizeof s.noise_seed, 0) != sizeof s.noise_seed) {
    spdlog::error("round={} worker={} getrandom failed; not training", t.round, cfg_.name);
    return;
  }
  s.momentum = t.momentum;
  s.weight_decay = t.weight_decay;
  s.client_algorithm = t.client_algorithm;
  s.proximal_mu = t.proximal_mu;
  cancel_ = false;
  training_done_ = false;
  spdlog::info("round={} worker={} training v{}: epochs={} batch={} lr={} samples={} client={}",
               t.round, cfg_.name, t.version, s.epochs, s.batch_size, s.lr, train_.size(),
               s.client_algorithm);
  const uint64_t round = t.round;
  const double interval = cfg_.progress_interval_s;
  const std::string name = cfg_.name;
  training_ = std::async(std::launch::async, [this, s, round, interval, name]() {
    SetThreadName("shoal-train");
    auto last = Clock::now();
    auto result =
        trainer_->Train(std::move(train_global_), train_, s, cancel_, [&](const TrainProgress& p) {
          if (std::chrono::duration<double>(Clock::now() - last).count() < interval) return;
          last = Clock::now();
          spdlog::info("round={} worker={} progress epoch {}/{} {:.0f}% loss={:.4f}", round, name,
                       p.epoch, p.epochs,
                       100.0 * p.samples_done / std::max<int64_t>(1, p.samples_total),
                       p.running_loss);
        });
    training_done_.store(true, std::memory_order_release);
    Wake();
    return result;
  });
}

void WorkerClient::Impl::FinishTraining() {
  auto result = training_.get();
  training_ = {};
  // LibTorch's training workspace is free now; with the executables' malloc settings it would
  // stay mapped and the next transfers would grow the heap around it.
  ReleaseFreeMemory();
  const protocols::TrainTask& t = running_task_;
  if (!result.ok()) {
    spdlog::warn("round={} worker={} training ended: {}", t.round, cfg_.name,
                 result.status().ToString());
    return;
  }
  TrainOutcome& o = *result;
  spdlog::info("round={} worker={} trained: epochs={} samples={} loss={:.4f} seconds={:.1f}",
               t.round, cfg_.name, t.epochs, o.samples, o.mean_loss, o.seconds);
  FreeStorage(train_global_.data);
  auto encoding = model::EncodingFromWire(t.compression);
  if (!encoding.ok()) {
    spdlog::warn("round={} worker={} {}; update dropped", t.round, cfg_.name,
                 encoding.status().message());
    return;
  }
  if (*encoding == model::Encoding::kF32 && residual_.empty()) {
    delta_ = std::move(o.delta);
  } else {
    // Quantized with error feedback: what this round's encoding drops is carried into the next.
    std::string bytes;
    model::EncodeDelta(*encoding, o.delta.data(), o.delta.size(), &residual_, &bytes);
    delta_.assign(bytes.size() / sizeof(float), 0.0f);
    std::memcpy(delta_.data(), bytes.data(), bytes.size());
  }
  protocols::UpdateReady u;
  u.run_id = t.run_id;
  u.round = t.round;
  u.base_version = t.version;
  u.num_samples = o.samples;
  u.train_loss = o.mean_loss;
  u.train_seconds = o.seconds;
  u.train_cpu_seconds = o.cpu_seconds;
  u.total_bytes = delta_.size() * sizeof(float);
  u.encoding = t.compression;
  u.dp_epsilon = running_dp_.mode == privacy::DpMode::kNone ? -1 : privacy_->Epsilon();
  if (running_dp_.mode != privacy::DpMode::kNone) {
    spdlog::info(
        "round={} worker={} DP-SGD: {} steps, {} examples, {} clipped; silo epsilon {:.4g}",
        t.round, cfg_.name, o.dp_steps, o.dp_examples, o.dp_clipped, u.dp_epsilon);
  }
  const Digest d = Sha256::Of(delta_.data(), u.total_bytes);
  u.sha256.assign(d.begin(), d.end());
  // Uploaded on a grant straight from delta_, which stays until the update is acknowledged,
  // refused, or replaced.
  session_->OfferUpdate(std::move(u), [this](uint64_t offset, uint64_t length) {
    return std::string_view(reinterpret_cast<const char*>(delta_.data()) + offset, length);
  });
}

void WorkerClient::Impl::Evaluate(const model::Weights& w, const std::string& run_id,
                                  uint64_t round, uint64_t version, bool release_memory) {
  auto m = [&]() -> Result<model::EvalMetrics> {
    SHOAL_ASSIGN_OR_RETURN(LocalTrainer * evaluator, EvalTrainer());
    return evaluator->Evaluate(w, val_);
  }();
  if (!m.ok()) {
    spdlog::warn("round={} worker={} evaluation failed: {}", round, cfg_.name,
                 m.status().ToString());
    return;
  }
  protocols::EvalResult r;
  r.run_id = run_id;
  r.round = round;
  r.version = version;
  r.count = m->count;
  r.loss = m->loss;
  r.accuracy = m->accuracy;
  r.cpu_seconds = m->cpu_seconds;
  session_->Send(r);
  if (release_memory) ReleaseFreeMemory();  // the evaluation's weights and workspace
  spdlog::info("round={} worker={} evaluated v{}: val_acc={:.2f}% val_loss={:.4f} n={}", r.round,
               cfg_.name, r.version, 100 * r.accuracy, r.loss, r.count);
}

}  // namespace shoal::worker
