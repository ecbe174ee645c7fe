#include "bench/loadgen/fleet.h"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "base/sha256.h"
#include "model/compression.h"
#include "protocols/channel.h"
#include "protocols/client_session.h"
#include "security/pki.h"

namespace shoal::loadgen {
namespace {

inline uint64_t Mix(uint64_t z) {  // splitmix64 finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The wire form of a synthetic delta, one 32-bit word at a time (every offset on the wire is a
// multiple of 4). Word j is a function of (key, j) only, so any range can be generated on its
// own. Values are uniform in [-scale, scale) and finite in every encoding:
//   f32   word j = value j
//   f16   word j = halves of values 2j and 2j + 1 (zero past the last value: padding)
//   int8  the block scales (all scale / 127), then 4 int8 values in [-127, 127] per word
struct DeltaLayout {
  model::Encoding encoding = model::Encoding::kF32;
  uint64_t count = 0;        // values
  uint64_t scale_bytes = 0;  // int8: 4 bytes per block of kInt8Block values
  float scale = 1e-3f;
};

void FillWords(const DeltaLayout& l, uint64_t key, uint64_t first, size_t n, uint32_t* out) {
  const float k = l.scale / 8388608.0f;  // 2^23
  for (size_t i = 0; i < n; ++i) {
    const uint64_t j = first + i;
    const uint64_t z = Mix(key + (j + 1) * 0x9e3779b97f4a7c15ULL);
    switch (l.encoding) {
      case model::Encoding::kF32: {
        const float v = static_cast<float>(static_cast<int32_t>(z >> 40) - (1 << 23)) * k;
        std::memcpy(&out[i], &v, 4);
        break;
      }
      case model::Encoding::kF16: {
        const float a = static_cast<float>(static_cast<int32_t>(z >> 40) - (1 << 23)) * k;
        const float b =
            static_cast<float>(static_cast<int32_t>((z >> 8) & 0xffffff) - (1 << 23)) * k;
        const uint32_t lo = 2 * j < l.count ? model::FloatToHalf(a) : 0;
        const uint32_t hi = 2 * j + 1 < l.count ? model::FloatToHalf(b) : 0;
        out[i] = lo | (hi << 16);
        break;
      }
      case model::Encoding::kInt8: {
        const uint64_t byte = 4 * j;
        if (byte < l.scale_bytes) {
          const float s = l.scale / 127.0f;
          std::memcpy(&out[i], &s, 4);
          break;
        }
        uint32_t word = 0;
        for (int b = 0; b < 4; ++b) {
          const uint64_t e = byte - l.scale_bytes + static_cast<uint64_t>(b);
          const int q = e < l.count ? static_cast<int>((z >> (8 * b)) & 0xff) % 255 - 127 : 0;
          word |= static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(q))) << (8 * b);
        }
        out[i] = word;
        break;
      }
    }
  }
}

const char* ErrorName(protocols::ErrorCode c) {
  switch (c) {
    case protocols::ErrorCode::kBadMessage:
      return "bad_message";
    case protocols::ErrorCode::kVersionMismatch:
      return "version_mismatch";
    case protocols::ErrorCode::kNotAdmitted:
      return "not_admitted";
    case protocols::ErrorCode::kUnknownPeer:
      return "unknown_peer";
    case protocols::ErrorCode::kStale:
      return "stale";
    case protocols::ErrorCode::kBadUpdate:
      return "bad_update";
    case protocols::ErrorCode::kDuplicate:
      return "duplicate";
    case protocols::ErrorCode::kRunFinished:
      return "run_finished";
    case protocols::ErrorCode::kModelRefused:
      return "model_refused";
    case protocols::ErrorCode::kPrivacyRefused:
      return "privacy_refused";
  }
  return "other";
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

// SHA-256 state after the shared prefix of one round's deltas.
struct Fleet::PrefixHash {
  uint64_t shared_key = 0;
  uint64_t prefix_bytes = 0;
  model::Encoding encoding = model::Encoding::kF32;
  uint64_t count = 0;
  Sha256 state;
};

struct Fleet::Worker {
  enum class State { kNotStarted, kHello, kAdmitted, kFinished, kGaveUp, kVanished };

  int index = 0;
  std::string name;
  uint64_t name_hash = 0;
  std::unique_ptr<Link> link;
  std::shared_ptr<const protocols::TlsContext> tls;  // its certificate (null: plain)
  int fd = -1;                                       // the link's ZMQ_FD, registered with epoll
  State state = State::kNotStarted;
  bool reconnect_now = false;  // decided while handling a message; done after the receive loop
  bool check_pending = false;  // in Fleet::to_check_
  bool uploading = false;      // granted: the next Flush sends the update's chunks
  Clock::time_point start_at;
  // The protocol (protocols/client_session.h), kept across reconnects as a worker's: it
  // checks the received weights chunk by chunk and drops them (keep_payloads = false).
  std::unique_ptr<protocols::ClientSession> session;

  // The current TrainTask (its weights complete).
  std::string task_run_id;
  uint64_t task_round = 0;
  uint64_t task_version = 0;
  uint64_t task_seed = 0;
  uint64_t task_count = 0;                                // values of the global model
  model::Encoding task_encoding = model::Encoding::kF32;  // how the update must travel

  // "Training": done at train_done_at; then queued for hashing.
  bool training = false;
  bool queued_for_hash = false;
  Clock::time_point train_done_at;
  Clock::time_point task_received_at;

  // The update offered (the session holds its UpdateReady), generated from these.
  uint64_t delta_key = 0;     // this worker's values
  uint64_t shared_key = 0;    // the round's shared prefix
  uint64_t prefix_bytes = 0;  // bytes [0, prefix_bytes) use shared_key
  DeltaLayout layout;         // of the announced update
  uint64_t update_bytes = 0;  // its size on the wire
};

nlohmann::json RoundStats::ToJson() const {
  return {{"round", round},
          {"tasks", tasks},
          {"updates_announced", updates_announced},
          {"grants", grants},
          {"acks", acks},
          {"rejected", rejected},
          {"evals", evals},
          {"first_task_s", first_task_s},
          {"last_download_s", last_download_s},
          {"first_ack_s", first_ack_s},
          {"last_ack_s", last_ack_s},
          {"update_bytes_acked", update_bytes_acked}};
}

Fleet::Fleet(FleetOptions options) : opt_(std::move(options)) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    spdlog::critical("epoll_create1: {}", std::strerror(errno));
    std::abort();
  }
  // Before the first socket: one ZeroMQ socket per worker plus the context's own.
  context_.set(zmq::ctxopt::max_sockets, opt_.workers + 64);
  context_.set(zmq::ctxopt::io_threads, std::max(1, opt_.io_threads));
  workers_.reserve(static_cast<size_t>(opt_.workers));
  const int digits = std::max<int>(4, static_cast<int>(std::to_string(opt_.workers).size()));
  for (int i = 0; i < opt_.workers; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    std::string num = std::to_string(i + 1);
    w->name = opt_.name_prefix + "-" + std::string(digits - num.size(), '0') + num;
    w->name_hash = protocols::WorkerTrainingSeed(0, w->name);
    protocols::ClientSessionOptions so;
    so.hello.name = w->name;
    so.hello.num_train = opt_.num_train;
    so.hello.num_val = opt_.num_val;
    so.hello.input_shape = opt_.input_shape;
    so.hello.num_classes = opt_.num_classes;
    so.hello_timeout_ms = opt_.hello_timeout_ms;
    so.keep_payloads = false;
    so.stamp_heartbeats = true;
    w->session = std::make_unique<protocols::ClientSession>(std::move(so));
    workers_.push_back(std::move(w));
  }
}

Status Fleet::SetUpTls() {
  if (opt_.bundles_dir.empty()) return Status::Ok();
  const auto t0 = Clock::now();
  int issued = 0;
  for (auto& w : workers_) {
    const std::string dir = opt_.bundles_dir + "/" + w->name;
    if (!std::filesystem::exists(security::BundleKeyPath(dir))) {
      if (opt_.ca_dir.empty()) return NotFound("no bundle " + dir + " and no --ca-dir to issue it");
      SHOAL_RETURN_IF_ERROR(security::Enroll(opt_.ca_dir, w->name, dir, opt_.endpoint));
      ++issued;
    }
    SHOAL_ASSIGN_OR_RETURN(security::Bundle bundle, security::LoadBundle(dir));
    SHOAL_ASSIGN_OR_RETURN(w->tls, protocols::WorkerTls(bundle, opt_.server_name));
  }
  spdlog::info("TLS: {} bundles ready under {} ({} issued) in {:.1f} s", workers_.size(),
               opt_.bundles_dir, issued, Seconds(Clock::now() - t0));
  return Status::Ok();
}

Fleet::~Fleet() {
  for (auto& w : workers_) Close(*w);  // sockets before the context
  close(epoll_fd_);
}

double Fleet::Elapsed() const { return Seconds(Clock::now() - started_); }

RoundStats& Fleet::StatsFor(uint64_t round) {
  RoundStats& s = rounds_[round];
  s.round = round;
  return s;
}

// Sends what w's session queued: its messages, and on a grant the update's chunks, each
// generated into the fleet's scratch buffer as the session asks for it (FillBytes).
void Fleet::Flush(Worker& w) {
  const bool uploading = w.uploading;
  w.uploading = false;
  const auto t0 = Clock::now();
  protocols::Limits any;
  any.max_payload_bytes = protocols::kMaxChunkBytes;
  while (auto m = w.session->NextToSend()) {
    if (!w.link) continue;
    auto f = protocols::ParseFrameHead(m->head, m->payload.size(), any);
    if (f.ok() && f->type == protocols::MessageType::kHeartbeat) ++heartbeats_out_;
    Status st = w.link->Send(m->head, m->payload);
    MarkForCheck(w);  // a send may consume the descriptor's notification of incoming messages
    if (!st.ok()) {
      spdlog::warn("worker={} send: {}", w.name, st.ToString());
      if (!m->payload.empty()) w.session->CancelUpload();
      continue;
    }
    ++messages_out_;
  }
  if (uploading) upload_s_ += Seconds(Clock::now() - t0);
}

void Fleet::MarkForCheck(Worker& w) {
  if (w.check_pending || !w.link) return;
  w.check_pending = true;
  to_check_.push_back(&w);
}

void Fleet::Close(Worker& w) {
  if (!w.link) return;
  bytes_in_closed_ += w.link->bytes_received();
  bytes_out_closed_ += w.link->bytes_sent();
  if (w.fd >= 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w.fd, nullptr);
  w.fd = -1;
  w.link.reset();
  --open_links_;
}

// (Re)connects with a new socket (a new connection, as a restarted worker) and says Hello.
// (Re)connects with a new socket (a new connection, as a restarted worker) and says Hello.
void Fleet::Start(Worker& w) {
  if (w.link) {
    Close(w);
    ++reconnects_;
  }
  auto link = Link::Create(context_, w.tls);
  if (!link.ok()) {
    spdlog::error("worker={} {} ({} sockets open)", w.name, link.status().ToString(), open_links_);
    w.state = Worker::State::kGaveUp;
    ++gave_up_;
    return;
  }
  w.link = std::move(link).value();
  ++open_links_;
  w.fd = w.link->fd();
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &w;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w.fd, &ev) != 0) {
    spdlog::error("worker={} epoll_ctl: {}", w.name, std::strerror(errno));
  }
  if (Status st = w.link->Connect(opt_.endpoint); !st.ok()) {
    spdlog::error("worker={} {}", w.name, st.ToString());
    w.state = Worker::State::kGaveUp;
    ++gave_up_;
    return;
  }
  if (w.state == Worker::State::kAdmitted) --admitted_;
  w.state = Worker::State::kHello;
  w.session->Connect(Clock::now());
  Flush(w);
}

// Hands the socket's messages to Handle, at most 256 per visit (fairness); a socket left with
// messages is looked at again in the next loop iteration. Readable() is called after the last
// Receive, which re-arms the socket's descriptor.
void Fleet::Pump(Worker& w) {
  int budget = 256;
  while (w.link && budget > 0 && !w.reconnect_now && w.link->Readable()) {
    auto n =
        w.link->Receive(static_cast<size_t>(budget), [&](std::string_view m) { Handle(w, m); });
    if (!n.ok()) {  // the connection is gone: reconnect with a new one, as a real worker
      spdlog::warn("worker={} {}", w.name, n.status().ToString());
      w.reconnect_now = true;
      break;
    }
    if (*n == 0) break;
    budget -= static_cast<int>(*n);
  }
  if (!w.reconnect_now) {
    if (w.link && budget <= 0) MarkForCheck(w);
    return;
  }
  Restart(w);
}

// A reconnect decided while handling w's messages or events: a new connection, or none for a
// worker that vanished, finished or gave up.
void Fleet::Restart(Worker& w) {
  w.reconnect_now = false;
  if (w.state == Worker::State::kVanished) {
    Close(w);
  } else if (w.state != Worker::State::kGaveUp && w.state != Worker::State::kFinished) {
    Start(w);
  }
}

void Fleet::Handle(Worker& w, std::string_view message) {
  ++messages_in_;
  if (w.state != Worker::State::kHello && w.state != Worker::State::kAdmitted) return;
  w.session->Receive(message, Clock::now());
  HandleEvents(w);
  Flush(w);
}

void Fleet::HandleEvents(Worker& w) {
  while (auto e = w.session->NextEvent()) OnEvent(w, *e);
}

// What w's session reports: statistics, the synthetic training and evaluation, reconnects.
void Fleet::OnEvent(Worker& w, const protocols::ClientEvent& e) {
  using Kind = protocols::ClientEvent::Kind;
  switch (e.kind) {
    case Kind::kWelcomed: {
      const protocols::Welcome& welcome = w.session->welcome();
      w.state = Worker::State::kAdmitted;
      // Heartbeats at a per-worker phase, as independent processes would send them (a fleet
      // heartbeating in lockstep leaves the coordinator idle between bursts).
      const auto interval = std::chrono::microseconds(uint64_t{welcome.heartbeat_ms} * 1000);
      w.session->set_next_heartbeat(
          Clock::now() + interval -
          std::chrono::microseconds(Mix(w.name_hash) % (uint64_t{welcome.heartbeat_ms} * 1000)));
      if (++admitted_ == opt_.workers && all_admitted_s < 0) {
        all_admitted_s = Elapsed();
        spdlog::info("all {} workers admitted after {:.2f} s (run={} model={} chunk_bytes={})",
                     opt_.workers, all_admitted_s, welcome.run_id, welcome.model,
                     welcome.chunk_bytes);
      }
      if (w.index >= opt_.workers - opt_.vanish) {
        w.state = Worker::State::kVanished;
        ++vanished_;
        w.reconnect_now = true;  // closes the socket after the receive loop (see Pump)
      }
      return;
    }
    case Kind::kModelFilePiece:
      ++model_files_;
      return;
    case Kind::kModelFile:
      return;
    case Kind::kModelFileFailed:
      spdlog::warn("worker={} unexpected ModelFile piece ({}); reconnecting", w.name, e.message);
      w.reconnect_now = true;
      return;
    case Kind::kTaskAnnounced:
      w.training = false;  // a newer task supersedes the one in progress
      return;
    case Kind::kTrainTask:
      return OnTrainTask(w, e.train);
    case Kind::kEvalTask:
      return SendEvalResult(w, e.eval.run_id, e.eval.round, e.eval.version);
    case Kind::kUploadGranted:
      ++StatsFor(e.round).grants;
      w.uploading = true;
      return;
    case Kind::kAcked: {
      RoundStats& s = StatsFor(e.round);
      ++s.acks;
      s.update_bytes_acked += w.update_bytes;
      const double t = Elapsed();
      if (s.first_ack_s < 0) s.first_ack_s = t;
      s.last_ack_s = t;
      return;
    }
    case Kind::kUpdateRejected:
      ++StatsFor(e.round).rejected;
      spdlog::warn("round={} worker={} update rejected ({}): {}", e.round, w.name,
                   ErrorName(e.code), e.message);
      return;
    case Kind::kCoordinatorError:
      ++errors_[ErrorName(e.code)];
      spdlog::debug("round={} worker={} coordinator error {}: {}", e.round, w.name,
                    ErrorName(e.code), e.message);
      return;
    case Kind::kReconnect:
      spdlog::info("worker={} {}; Hello again on a new connection", w.name, e.message);
      w.reconnect_now = true;
      return;
    case Kind::kTimedOut:
      spdlog::warn("worker={} {}; new connection", w.name, e.message);
      w.reconnect_now = true;
      return;
    case Kind::kRefused:
      spdlog::error("worker={} refused by the coordinator: {}", w.name, e.message);
      w.state = Worker::State::kGaveUp;
      ++gave_up_;
      return;
    case Kind::kShutdown:
      shutdown_reason_ = e.message;
      w.state = Worker::State::kFinished;
      ++finished_;
      return;
    case Kind::kHeartbeat:
      ++heartbeats_in_;
      return;
    case Kind::kBadFrame:
      ++bad_frames_;
      spdlog::warn("worker={} bad frame: {}", w.name, e.message);
      return;
    case Kind::kTransferFailed:
      ++bad_frames_;
      spdlog::warn("worker={} weights transfer failed: {}", w.name, e.message);
      return;
    case Kind::kIgnored:
      spdlog::warn("worker={} {}", w.name, e.message);
      return;
  }
}

// A TrainTask's weights arrived (checked and dropped): "train" for train_ms (+ jitter).
void Fleet::OnTrainTask(Worker& w, const protocols::TrainTask& t) {
  if (t.eval_round != 0) SendEvalResult(w, t.run_id, t.eval_round, t.version);  // as an EvalTask
  auto encoding = model::EncodingFromWire(t.compression);
  if (!encoding.ok()) {
    spdlog::warn("worker={} TrainTask ignored: {}", w.name, encoding.status().message());
    return;
  }
  const auto now = Clock::now();
  w.task_run_id = t.run_id;
  w.task_round = t.round;
  w.task_version = t.version;
  w.task_seed = t.seed;
  w.task_count = static_cast<uint64_t>(t.spec.total_numel());
  w.task_encoding = *encoding;
  RoundStats& s = StatsFor(t.round);
  ++s.tasks;
  const double elapsed = Elapsed();
  if (s.first_task_s < 0) s.first_task_s = elapsed;
  s.last_download_s = elapsed;
  w.training = true;
  w.task_received_at = now;
  double ms = opt_.train_ms;
  if (opt_.train_jitter_ms > 0) {
    ms += opt_.train_jitter_ms * static_cast<double>(Mix(w.name_hash ^ t.round) % 1000) / 1000.0;
  }
  w.train_done_at = now + std::chrono::microseconds(static_cast<int64_t>(ms * 1000));
}

void Fleet::SendEvalResult(Worker& w, const std::string& run_id, uint64_t round, uint64_t version) {
  protocols::EvalResult r;
  r.run_id = run_id;
  r.round = round;
  r.version = version;
  r.count = opt_.num_val;
  r.loss = 1.0 + 0.01 * (w.index % 7);
  r.accuracy = 0.5 + 0.01 * (w.index % 13);
  w.session->Send(r);
  ++StatsFor(round).evals;
}

void Fleet::Tick(Worker& w, Clock::time_point now) {
  if (w.state == Worker::State::kNotStarted) {
    if (now >= w.start_at) Start(w);
    return;
  }
  if (w.state != Worker::State::kHello && w.state != Worker::State::kAdmitted) return;
  w.session->Tick(now, w.training);
  HandleEvents(w);
  Flush(w);
  if (w.reconnect_now) return Restart(w);
  if (w.state == Worker::State::kAdmitted && w.training && !w.queued_for_hash &&
      now >= w.train_done_at) {
    w.queued_for_hash = true;
    hashing_.push_back(&w);
  }
}

// Bytes [offset, offset + len) of w's announced update (offset and len multiples of 4): the
// round's shared prefix, then w's own words.
void Fleet::FillBytes(const Worker& w, uint64_t offset, uint64_t len, uint32_t* out) const {
  const uint64_t first = offset / 4, n = len / 4, prefix = w.prefix_bytes / 4;
  const uint64_t m = first < prefix ? std::min<uint64_t>(n, prefix - first) : 0;
  if (m > 0) FillWords(w.layout, w.shared_key, first, m, out);
  if (m < n) FillWords(w.layout, w.delta_key, first + m, n - m, out + m);
}

// The SHA-256 state after w's shared prefix, computed once per round (key, length, layout).
const Fleet::PrefixHash& Fleet::PrefixFor(const Worker& w) {
  if (prefix_ && prefix_->shared_key == w.shared_key && prefix_->prefix_bytes == w.prefix_bytes &&
      prefix_->encoding == w.layout.encoding && prefix_->count == w.layout.count) {
    return *prefix_;
  }
  const auto t0 = Clock::now();
  auto p = std::make_unique<PrefixHash>();
  p->shared_key = w.shared_key;
  p->prefix_bytes = w.prefix_bytes;
  p->encoding = w.layout.encoding;
  p->count = w.layout.count;
  const uint32_t chunk = w.session->welcome().chunk_bytes;
  scratch_.resize(chunk / 4);
  for (uint64_t off = 0; off < w.prefix_bytes; off += chunk) {
    const uint64_t len = std::min<uint64_t>(chunk, w.prefix_bytes - off);
    FillBytes(w, off, len, scratch_.data());
    p->state.Update(scratch_.data(), len);
  }
  prefix_ = std::move(p);
  prefix_s_ += Seconds(Clock::now() - t0);
  return *prefix_;
}

// Training is over: hash the synthetic update (generated chunk by chunk) and offer it; the
// session announces it and, on a grant, asks for its chunks (generated again, FillBytes).
void Fleet::FinishTraining(Worker& w) {
  w.queued_for_hash = false;
  if (!w.training || w.state != Worker::State::kAdmitted) return;
  w.training = false;
  w.layout.encoding = w.task_encoding;
  w.layout.count = w.task_count;
  w.layout.scale_bytes = w.task_encoding == model::Encoding::kInt8
                             ? 4 * ((w.task_count + model::kInt8Block - 1) / model::kInt8Block)
                             : 0;
  w.layout.scale = static_cast<float>(opt_.delta_scale);
  const uint64_t total = model::EncodedBytes(w.task_encoding, w.task_count);
  w.update_bytes = total;
  w.delta_key = Mix(w.task_seed ^ w.name_hash);
  w.shared_key = Mix(w.task_seed ^ 0x5ca1ab1e0ddba11ULL);
  w.prefix_bytes = 0;
  if (opt_.unique_bytes >= 0 && total > static_cast<uint64_t>(opt_.unique_bytes)) {
    w.prefix_bytes = (total - static_cast<uint64_t>(opt_.unique_bytes)) & ~uint64_t{3};
  }
  Sha256 hash = w.prefix_bytes > 0 ? PrefixFor(w).state.Copy() : Sha256();
  const auto t0 = Clock::now();
  const uint32_t chunk = w.session->welcome().chunk_bytes;
  scratch_.resize(chunk / 4);
  for (uint64_t off = w.prefix_bytes; off < total; off += chunk) {
    const uint64_t len = std::min<uint64_t>(chunk, total - off);
    FillBytes(w, off, len, scratch_.data());
    hash.Update(scratch_.data(), len);
  }
  const Digest digest = hash.Finish();
  protocols::UpdateReady u;
  u.run_id = w.task_run_id;
  u.round = w.task_round;
  u.base_version = w.task_version;
  u.num_samples = opt_.num_train;
  u.train_loss = 0.5 + 0.001 * (w.index % 100);
  u.train_seconds = Seconds(Clock::now() - w.task_received_at);
  u.total_bytes = total;
  u.sha256.assign(digest.begin(), digest.end());
  u.encoding = static_cast<uint8_t>(w.task_encoding);
  hashing_s_ += Seconds(Clock::now() - t0);
  ++StatsFor(u.round).updates_announced;
  w.session->OfferUpdate(std::move(u), [this, &w](uint64_t offset, uint64_t length) {
    scratch_.resize(w.session->welcome().chunk_bytes / 4);
    FillBytes(w, offset, length, scratch_.data());
    return std::string_view(reinterpret_cast<const char*>(scratch_.data()), length);
  });
  Flush(w);
}

Status Fleet::Run(const volatile bool& stop) {
  started_ = Clock::now();
  for (auto& w : workers_) {
    w->start_at = opt_.connect_rate > 0 ? started_ + std::chrono::microseconds(static_cast<int64_t>(
                                                         1e6 * w->index / opt_.connect_rate))
                                        : started_;
  }
  auto last_tick = Clock::time_point{};
  const auto budget = std::chrono::microseconds(static_cast<int64_t>(opt_.work_budget_ms * 1000));
  std::vector<epoll_event> events(1024);
  std::vector<Worker*> check;
  while (!stop) {
    if (finished_ + gave_up_ + vanished_ >= opt_.workers) break;
    if (opt_.timeout_s > 0 && Elapsed() > opt_.timeout_s) {
      return Timeout("load generator timeout after " + std::to_string(opt_.timeout_s) +
                     " s: " + std::to_string(finished_) + " of " + std::to_string(opt_.workers) +
                     " workers saw the run finish");
    }
    ++wakeups_;
    // Sockets that may hold messages without their descriptor saying so (after a send, or
    // left with messages by the previous visit).
    check.clear();
    check.swap(to_check_);
    for (Worker* w : check) {
      w->check_pending = false;
      Pump(*w);
    }
    const int wait_ms = to_check_.empty() && hashing_.empty() ? 10 : 0;
    const int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), wait_ms);
    if (n < 0 && errno != EINTR)
      return Unavailable(std::string("epoll_wait: ") + std::strerror(errno));
    for (int i = 0; i < n; ++i) Pump(*static_cast<Worker*>(events[i].data.ptr));
    const auto now = Clock::now();
    if (now - last_tick >= std::chrono::milliseconds(10)) {
      last_tick = now;
      for (auto& w : workers_) Tick(*w, now);
    }
    const auto work_until = Clock::now() + budget;
    while (!hashing_.empty() && Clock::now() < work_until) {
      Worker* w = hashing_.front();
      hashing_.pop_front();
      FinishTraining(*w);
    }
  }
  return Status::Ok();
}

int Fleet::ExitCode() const {
  return finished_ + vanished_ == opt_.workers && gave_up_ == 0 ? 0 : 1;
}

nlohmann::json Fleet::Summary() const {
  uint64_t bytes_in = bytes_in_closed_, bytes_out = bytes_out_closed_;
  for (const auto& w : workers_) {
    if (!w->link) continue;
    bytes_in += w->link->bytes_received();
    bytes_out += w->link->bytes_sent();
  }
  nlohmann::json rounds = nlohmann::json::array();
  for (const auto& [r, s] : rounds_) rounds.push_back(s.ToJson());
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return {{"workers", opt_.workers},
          {"admitted", admitted_},
          {"all_admitted_s", all_admitted_s},
          {"finished", finished_},
          {"gave_up", gave_up_},
          {"vanished", vanished_},
          {"shutdown_reason", shutdown_reason_},
          {"elapsed_s", Elapsed()},
          {"reconnects", reconnects_},
          {"bad_frames", bad_frames_},
          {"errors", errors_},
          {"messages_in", messages_in_},
          {"messages_out", messages_out_},
          {"bytes_in", bytes_in},
          {"bytes_out", bytes_out},
          {"heartbeats_in", heartbeats_in_},
          {"heartbeats_out", heartbeats_out_},
          {"model_file_pieces", model_files_},
          {"hashing_s", hashing_s_},
          {"upload_s", upload_s_},
          {"prefix_hash_s", prefix_s_},
          {"unique_bytes", opt_.unique_bytes},
          {"loop_iterations", wakeups_},
          {"rounds", rounds},
          {"cpu_user_s", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6},
          {"cpu_sys_s", ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6},
          {"max_rss_kb", ru.ru_maxrss}};
}

}  // namespace shoal::loadgen