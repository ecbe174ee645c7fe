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

#include "common/sha256.h"
#include "common/weights.h"
#include "protocols/codec.h"
#include "protocols/channel.h"

namespace shoal::testing {

class ScriptedWorker {
 public:
  ScriptedWorker(std::string endpoint, std::string name,
                 std::shared_ptr<const proto::TlsContext> tls, int64_t num_train = 100,
                 int64_t num_val = 10, std::vector<int64_t> input_shape = {1, 28, 28})
      : endpoint_(std::move(endpoint)), name_(std::move(name)), tls_(std::move(tls)),
        num_train_(num_train), num_val_(num_val), input_shape_(std::move(input_shape)) {
    Reconnect();
  }

  // A fresh connection and TLS session, as after a crash and restart.
  void Reconnect() {
    proto::ChannelOptions co;
    co.tls = tls_;
    socket_ = std::make_unique<proto::ClientChannel>(co);
    (void)socket_->Connect(endpoint_);
  }

  Status Hello(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    proto::Hello h;
    h.name = name_;
    h.num_train = num_train_;
    h.num_val = num_val_;
    h.input_shape = input_shape_;
    h.num_classes = 10;
    SHOAL_RETURN_IF_ERROR(socket_->Send(proto::Encode(h)));
    auto f = Await({proto::MessageType::kWelcome, proto::MessageType::kError}, timeout);
    if (!f.ok()) return f.status();
    if (f->type == proto::MessageType::kError) return ErrorStatus(*f);
    auto w = proto::Decode<proto::Welcome>(*f);
    if (!w.ok()) return w.status();
    welcome_ = *w;
    return Status::Ok();
  }

  struct Task {
    proto::TrainTask task;
    Weights global;
  };

  // Waits for the next TrainTask and its weights (answering eval tasks on the way).
  Result<Task> NextTrainTask(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    auto f = Await({proto::MessageType::kTrainTask}, timeout);
    if (!f.ok()) return f.status();
    auto t = proto::Decode<proto::TrainTask>(*f);
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
  Result<proto::FrameView> Announce(const proto::TrainTask& task, const std::vector<float>& delta,
                                    int64_t num_samples, std::chrono::milliseconds timeout =
                                                             std::chrono::seconds(30)) {
    proto::UpdateReady u;
    u.run_id = task.run_id;
    u.round = task.round;
    u.base_version = task.version;
    u.num_samples = num_samples;
    u.train_loss = 0.5;
    u.train_seconds = 0.1;
    u.total_bytes = delta.size() * sizeof(float);
    const Digest d = Sha256::Of(delta.data(), u.total_bytes);
    u.sha256.assign(d.begin(), d.end());
    SHOAL_RETURN_IF_ERROR(socket_->Send(proto::Encode(u)));
    return Await({proto::MessageType::kUploadGrant, proto::MessageType::kAck,
                  proto::MessageType::kError},
                 timeout);
  }

  // Full upload: announce, wait for the grant, send chunks; returns Ack or the Error as a Status.
  // With wait_ack = false it returns right after the last chunk (as a worker killed then would).
  Result<proto::Ack> SendUpdate(const proto::TrainTask& task, const std::vector<float>& delta,
                                int64_t num_samples, bool wait_ack = true) {
    auto first = Announce(task, delta, num_samples);
    if (!first.ok()) return first.status();
    if (first->type == proto::MessageType::kError) return ErrorStatus(*first);
    if (first->type == proto::MessageType::kAck) return proto::Decode<proto::Ack>(*first);
    const uint32_t chunk = welcome_.chunk_bytes;
    for (const auto& fr : proto::EncodeChunks(task.round, delta.data(), delta.size() * 4, chunk)) {
      SHOAL_RETURN_IF_ERROR(socket_->Send(fr));
    }
    if (!wait_ack) return proto::Ack{};
    auto reply = Await({proto::MessageType::kAck, proto::MessageType::kError}, std::chrono::seconds(30));
    if (!reply.ok()) return reply.status();
    if (reply->type == proto::MessageType::kError) return ErrorStatus(*reply);
    return proto::Decode<proto::Ack>(*reply);
  }

  Status SendRaw(const std::string& frame) { return socket_->Send(frame); }

  // Waits for one of `types`; heartbeats are sent and answered meanwhile, EvalTasks answered.
  Result<proto::FrameView> Await(const std::vector<proto::MessageType>& types,
                                 std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    proto::Limits limits;
    limits.max_payload_bytes = proto::kMaxChunkBytes;
    while (std::chrono::steady_clock::now() < until) {
      MaybeHeartbeat();
      auto in = socket_->Recv(50);
      if (!in.ok()) return in.status();
      if (!in->has_value()) continue;
      last_ = std::move(**in);
      auto f = proto::ParseFrame(last_, limits);
      if (!f.ok()) return f.status();
      for (auto t : types) {
        if (f->type == t) return *f;
      }
      if (f->type == proto::MessageType::kEvalTask) AnswerEval(*f, until);
    }
    return Timeout(name_ + ": no expected message within the timeout");
  }

  const proto::Welcome& welcome() const { return welcome_; }
  const std::string& name() const { return name_; }

  static Status ErrorStatus(const proto::FrameView& f) {
    auto e = proto::Decode<proto::Error>(f);
    if (!e.ok()) return e.status();
    return Status(Code::kRejected, "error " + std::to_string(static_cast<int>(e->code)) + ": " + e->message);
  }
  static std::optional<proto::ErrorCode> ErrorCodeOf(const proto::FrameView& f) {
    auto e = proto::Decode<proto::Error>(f);
    if (!e.ok()) return std::nullopt;
    return e->code;
  }

 private:
  Result<std::vector<float>> ReadChunks(uint64_t round, uint64_t total_bytes,
                                        std::chrono::milliseconds timeout) {
    proto::ChunkAssembler a;
    SHOAL_RETURN_IF_ERROR(a.Start(round, total_bytes, welcome_.chunk_bytes));
    while (!a.complete()) {
      auto f = Await({proto::MessageType::kWeightsChunk}, timeout);
      if (!f.ok()) return f.status();
      auto c = proto::Decode<proto::WeightsChunk>(*f);
      if (!c.ok()) return c.status();
      SHOAL_RETURN_IF_ERROR(a.Add(*c, f->payload));
    }
    return a.Take();
  }

  void AnswerEval(const proto::FrameView& f, std::chrono::steady_clock::time_point until) {
    auto t = proto::Decode<proto::EvalTask>(f);
    if (!t.ok()) return;
    const proto::EvalTask task = *t;
    auto data = ReadChunks(task.round, task.spec.total_bytes(),
                           std::chrono::duration_cast<std::chrono::milliseconds>(
                               until - std::chrono::steady_clock::now()));
    if (!data.ok()) return;
    proto::EvalResult r;
    r.run_id = task.run_id;
    r.round = task.round;
    r.version = task.version;
    r.count = num_val_;
    r.loss = 1.0;
    r.accuracy = 0.5;
    (void)socket_->Send(proto::Encode(r));
  }

  void MaybeHeartbeat() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_hb_ < std::chrono::milliseconds(200)) return;
    last_hb_ = now;
    (void)socket_->Send(proto::Encode(proto::Heartbeat{}));
  }

  std::string endpoint_;
  std::string name_;
  std::shared_ptr<const proto::TlsContext> tls_;
  int64_t num_train_;
  int64_t num_val_;
  std::vector<int64_t> input_shape_;
  std::unique_ptr<proto::ClientChannel> socket_;
  proto::Welcome welcome_;
  std::string last_;  // backing store of the FrameView returned last
  std::chrono::steady_clock::time_point last_hb_{};
};

}  // namespace shoal::testing
