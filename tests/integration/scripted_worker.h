// Test helper: a worker whose every message is chosen by the test, speaking the real protocol
// over a real connection, through TLS when given a client context (as real workers do). Used to send exactly known updates, misbehave on purpose, and
// check the coordinator's replies.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/sha256.h"
#include "model/weights.h"
#include "protocols/codec.h"
#include "protocols/channel.h"

namespace shoal::testing {

class ScriptedWorker {
 public:
  ScriptedWorker(std::string endpoint, std::string name,
                 std::shared_ptr<const protocols::TlsContext> tls, int64_t num_train = 100,
                 int64_t num_val = 10, std::vector<int64_t> input_shape = {1, 28, 28})
      : endpoint_(std::move(endpoint)), name_(std::move(name)), tls_(std::move(tls)),
        num_train_(num_train), num_val_(num_val), input_shape_(std::move(input_shape)) {
    Reconnect();
  }

  // A fresh connection and TLS session, as after a crash and restart.
  void Reconnect() {
    protocols::ChannelOptions co;
    co.tls = tls_;
    socket_ = std::make_unique<protocols::ClientChannel>(co);
    (void)socket_->Connect(endpoint_);
  }

  Status Hello(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    protocols::Hello h;
    h.name = name_;
    h.num_train = num_train_;
    h.num_val = num_val_;
    h.input_shape = input_shape_;
    h.num_classes = 10;
    SHOAL_RETURN_IF_ERROR(socket_->Send(protocols::Encode(h)));
    auto f = Await({protocols::MessageType::kWelcome, protocols::MessageType::kError}, timeout);
    if (!f.ok()) return f.status();
    if (f->type == protocols::MessageType::kError) return ErrorStatus(*f);
    auto w = protocols::Decode<protocols::Welcome>(*f);
    if (!w.ok()) return w.status();
    welcome_ = *w;
    return Status::Ok();
  }

  struct Task {
    protocols::TrainTask task;
    model::Weights global;
  };

  // Waits for the next TrainTask and its weights (answering eval tasks on the way).
  Result<Task> NextTrainTask(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    auto f = Await({protocols::MessageType::kTrainTask}, timeout);
    if (!f.ok()) return f.status();
    auto t = protocols::Decode<protocols::TrainTask>(*f);
    if (!t.ok()) return t.status();
    Task out;
    out.task = *t;
    out.global.spec = t->spec;
    auto data = ReadChunks(t->round, t->spec.total_bytes(), timeout);
    if (!data.ok()) return data.status();
    out.global.data = std::move(data).value();
    return out;
  }

  // Announces an update. Returns the coordinator's first reply: UploadGrant, Ack or Error.
  Result<protocols::FrameView> Announce(const protocols::TrainTask& task, const std::vector<float>& delta,
                                    int64_t num_samples, std::chrono::milliseconds timeout =
                                                             std::chrono::seconds(30)) {
    protocols::UpdateReady u;
    u.run_id = task.run_id;
    u.round = task.round;
    u.base_version = task.version;
    u.num_samples = num_samples;
    u.train_loss = 0.5;
    u.train_seconds = 0.1;
    u.total_bytes = delta.size() * sizeof(float);
    const Digest d = Sha256::Of(delta.data(), u.total_bytes);
    u.sha256.assign(d.begin(), d.end());
    SHOAL_RETURN_IF_ERROR(socket_->Send(protocols::Encode(u)));
    return Await({protocols::MessageType::kUploadGrant, protocols::MessageType::kAck,
                  protocols::MessageType::kError},
                 timeout);
  }

  // Full upload: announce, wait for the grant, send chunks; returns Ack or the Error as a Status.
  // With wait_ack = false it returns right after the last chunk (as a worker killed then would).
  Result<protocols::Ack> SendUpdate(const protocols::TrainTask& task, const std::vector<float>& delta,
                                int64_t num_samples, bool wait_ack = true) {
    auto first = Announce(task, delta, num_samples);
    if (!first.ok()) return first.status();
    if (first->type == protocols::MessageType::kError) return ErrorStatus(*first);
    if (first->type == protocols::MessageType::kAck) return protocols::Decode<protocols::Ack>(*first);
    const uint32_t chunk = welcome_.chunk_bytes;
    for (const auto& fr : protocols::EncodeChunks(task.round, delta.data(), delta.size() * 4, chunk)) {
      SHOAL_RETURN_IF_ERROR(socket_->Send(fr));
    }
    if (!wait_ack) return protocols::Ack{};
    auto reply = Await({protocols::MessageType::kAck, protocols::MessageType::kError}, std::chrono::seconds(30));
    if (!reply.ok()) return reply.status();
    if (reply->type == protocols::MessageType::kError) return ErrorStatus(*reply);
    return protocols::Decode<protocols::Ack>(*reply);
  }

  Status SendRaw(const std::string& frame) { return socket_->Send(frame); }

  // Waits for one of `types`; heartbeats are sent and answered meanwhile, EvalTasks answered.
  Result<protocols::FrameView> Await(const std::vector<protocols::MessageType>& types,
                                 std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    protocols::Limits limits;
    limits.max_payload_bytes = protocols::kMaxChunkBytes;
    while (std::chrono::steady_clock::now() < until) {
      MaybeHeartbeat();
      auto in = socket_->Recv(50);
      if (!in.ok()) return in.status();
      if (!in->has_value()) continue;
      last_ = std::move(**in);
      auto f = protocols::ParseFrame(last_, limits);
      if (!f.ok()) return f.status();
      for (auto t : types) {
        if (f->type == t) return *f;
      }
      if (f->type == protocols::MessageType::kEvalTask) AnswerEval(*f, until);
    }
    return Timeout(name_ + ": no expected message within the timeout");
  }

  const protocols::Welcome& welcome() const { return welcome_; }
  const std::string& name() const { return name_; }

  static Status ErrorStatus(const protocols::FrameView& f) {
    auto e = protocols::Decode<protocols::Error>(f);
    if (!e.ok()) return e.status();
    return Status(Code::kRejected, "error " + std::to_string(static_cast<int>(e->code)) + ": " + e->message);
  }
  static std::optional<protocols::ErrorCode> ErrorCodeOf(const protocols::FrameView& f) {
    auto e = protocols::Decode<protocols::Error>(f);
    if (!e.ok()) return std::nullopt;
    return e->code;
  }

 private:
  Result<std::vector<float>> ReadChunks(uint64_t round, uint64_t total_bytes,
                                        std::chrono::milliseconds timeout) {
    protocols::ChunkAssembler a;
    SHOAL_RETURN_IF_ERROR(a.Start(round, total_bytes, welcome_.chunk_bytes));
    while (!a.complete()) {
      auto f = Await({protocols::MessageType::kWeightsChunk}, timeout);
      if (!f.ok()) return f.status();
      auto c = protocols::Decode<protocols::WeightsChunk>(*f);
      if (!c.ok()) return c.status();
      SHOAL_RETURN_IF_ERROR(a.Add(*c, f->payload));
    }
    return a.Take();
  }

  void AnswerEval(const protocols::FrameView& f, std::chrono::steady_clock::time_point until) {
    auto t = protocols::Decode<protocols::EvalTask>(f);
    if (!t.ok()) return;
    const protocols::EvalTask task = *t;
    auto data = ReadChunks(task.round, task.spec.total_bytes(),
                           std::chrono::duration_cast<std::chrono::milliseconds>(
                               until - std::chrono::steady_clock::now()));
    if (!data.ok()) return;
    protocols::EvalResult r;
    r.run_id = task.run_id;
    r.round = task.round;
    r.version = task.version;
    r.count = num_val_;
    r.loss = 1.0;
    r.accuracy = 0.5;
    (void)socket_->Send(protocols::Encode(r));
  }

  void MaybeHeartbeat() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_hb_ < std::chrono::milliseconds(200)) return;
    last_hb_ = now;
    (void)socket_->Send(protocols::Encode(protocols::Heartbeat{}));
  }

  std::string endpoint_;
  std::string name_;
  std::shared_ptr<const protocols::TlsContext> tls_;
  int64_t num_train_;
  int64_t num_val_;
  std::vector<int64_t> input_shape_;
  std::unique_ptr<protocols::ClientChannel> socket_;
  protocols::Welcome welcome_;
  std::string last_;  // backing store of the FrameView returned last
  std::chrono::steady_clock::time_point last_hb_{};
};

}  // namespace shoal::testing
