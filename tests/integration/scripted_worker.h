// Test helper: a worker whose every message is chosen by the test, speaking the real protocol
// over a real connection, through TLS when given a client context (as real workers do). Used
// to send exactly known updates, misbehave on purpose, and check the coordinator's replies.
//
// The normal path goes through the workers' own protocol client (protocols/client_session.h):
// Hello, heartbeats, the assembly of a task's weights, answering EvalTasks, and the upload
// of an announced update on its grant. Every received message is also handed to the test as
// it came (Await), and SendRaw sends anything, for the misbehaviour tests need.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/sha256.h"
#include "model/weights.h"
#include "protocols/channel.h"
#include "protocols/client_session.h"
#include "protocols/codec.h"

namespace shoal::testing {

class ScriptedWorker {
 public:
  ScriptedWorker(std::string endpoint, std::string name,
                 std::shared_ptr<const protocols::TlsContext> tls, int64_t num_train = 100,
                 int64_t num_val = 10, std::vector<int64_t> input_shape = {1, 28, 28})
      : endpoint_(std::move(endpoint)),
        name_(std::move(name)),
        tls_(std::move(tls)),
        num_train_(num_train),
        num_val_(num_val),
        input_shape_(std::move(input_shape)) {
    Reconnect();
  }

  // A fresh connection, TLS session and protocol state, as after a crash and restart.
  void Reconnect() {
    protocols::ChannelOptions co;
    co.tls = tls_;
    socket_ = std::make_unique<protocols::ClientChannel>(co);
    (void)socket_->Connect(endpoint_);
    protocols::ClientSessionOptions so;
    so.hello.name = name_;
    so.hello.num_train = num_train_;
    so.hello.num_val = num_val_;
    so.hello.input_shape = input_shape_;
    so.hello.num_classes = 10;
    so.hello_timeout_ms = 24 * 3600 * 1000;  // the test's own timeouts apply
    session_ = std::make_unique<protocols::ClientSession>(std::move(so));
  }

  Status Hello(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    session_->Connect(std::chrono::steady_clock::now());
    SHOAL_RETURN_IF_ERROR(Flush());
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

  // Waits for the next TrainTask and its weights (answering eval tasks on the way). Only a
  // task announced during this call counts.
  Result<Task> NextTrainTask(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    task_announced_ = false;
    task_.reset();
    want_task_ = true;
    Status st = Pump([this] { return task_.has_value() || !transfer_error_.ok(); }, timeout);
    want_task_ = false;
    SHOAL_RETURN_IF_ERROR(Flush());
    if (!st.ok()) return st;
    if (!transfer_error_.ok()) return std::exchange(transfer_error_, Status::Ok());
    Task out = std::move(*task_);
    task_.reset();
    return out;
  }

  // Announces an update. Returns the coordinator's first reply: UploadGrant, Ack or Error. The
  // update's chunks are not sent (SendUpdate sends them).
  Result<protocols::FrameView> Announce(
      const protocols::TrainTask& task, const std::vector<float>& delta, int64_t num_samples,
      std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto reply = AnnounceUpdate(task, delta, num_samples, timeout);
    session_->DropUpdate();  // `delta` is the caller's: nothing may be sent from it later
    SHOAL_RETURN_IF_ERROR(Flush());
    return reply;
  }

  // Full upload: announce, wait for the grant, send chunks; returns Ack or the Error as a
  // Status. With wait_ack = false it returns right after the last chunk (as a worker killed
  // then would).
  Result<protocols::Ack> SendUpdate(const protocols::TrainTask& task,
                                    const std::vector<float>& delta, int64_t num_samples,
                                    bool wait_ack = true) {
    auto first = AnnounceUpdate(task, delta, num_samples, std::chrono::seconds(30));
    if (!first.ok() || first->type != protocols::MessageType::kUploadGrant) {
      session_->DropUpdate();
      SHOAL_RETURN_IF_ERROR(Flush());
    }
    if (!first.ok()) return first.status();
    if (first->type == protocols::MessageType::kError) return ErrorStatus(*first);
    if (first->type == protocols::MessageType::kAck) {
      return protocols::Decode<protocols::Ack>(*first);
    }
    SHOAL_RETURN_IF_ERROR(Flush());  // the chunks the session queued on the grant
    if (!wait_ack) {
      session_->DropUpdate();  // `delta` is the caller's: nothing may be sent from it later
      return protocols::Ack{};
    }
    auto reply = AwaitUnflushed({protocols::MessageType::kAck, protocols::MessageType::kError},
                                std::chrono::seconds(30));
    session_->DropUpdate();
    SHOAL_RETURN_IF_ERROR(Flush());
    if (!reply.ok()) return reply.status();
    if (reply->type == protocols::MessageType::kError) return ErrorStatus(*reply);
    return protocols::Decode<protocols::Ack>(*reply);
  }

  Status SendRaw(const std::string& frame) { return socket_->Send(frame); }

  // Waits for one of `types`; heartbeats are sent and answered meanwhile, EvalTasks answered.
  Result<protocols::FrameView> Await(const std::vector<protocols::MessageType>& types,
                                     std::chrono::milliseconds timeout) {
    auto f = AwaitUnflushed(types, timeout);
    SHOAL_RETURN_IF_ERROR(Flush());
    return f;
  }

  const protocols::Welcome& welcome() const { return welcome_; }
  const std::string& name() const { return name_; }

  static Status ErrorStatus(const protocols::FrameView& f) {
    auto e = protocols::Decode<protocols::Error>(f);
    if (!e.ok()) return e.status();
    return Status(Code::kRejected,
                  "error " + std::to_string(static_cast<int>(e->code)) + ": " + e->message);
  }
  static std::optional<protocols::ErrorCode> ErrorCodeOf(const protocols::FrameView& f) {
    auto e = protocols::Decode<protocols::Error>(f);
    if (!e.ok()) return std::nullopt;
    return e->code;
  }

 private:
  // Await, leaving what the last message made the session queue unsent (after a grant: the
  // update's chunks, which only SendUpdate sends).
  Result<protocols::FrameView> AwaitUnflushed(const std::vector<protocols::MessageType>& types,
                                              std::chrono::milliseconds timeout) {
    std::optional<protocols::FrameView> found;
    Status st = Pump(
        [&] {
          if (!last_parsed_) return false;
          for (auto t : types) {
            if (last_parsed_->type == t) {
              found = *last_parsed_;
              return true;
            }
          }
          return false;
        },
        timeout);
    if (!st.ok()) return st;
    return *found;
  }

  // Announce, the update left offered: on a grant its chunks are queued in the session.
  Result<protocols::FrameView> AnnounceUpdate(
      const protocols::TrainTask& task, const std::vector<float>& delta, int64_t num_samples,
      std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
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
    // Uploaded on a grant from the test's own vector (dropped before the caller's returns).
    if (session_->admitted()) {
      session_->OfferUpdate(u, [&delta](uint64_t offset, uint64_t length) {
        return std::string_view(reinterpret_cast<const char*>(delta.data()) + offset, length);
      });
    } else {
      // Not admitted on this connection: the announcement the test asked for, raw.
      SHOAL_RETURN_IF_ERROR(socket_->Send(protocols::Encode(u)));
    }
    SHOAL_RETURN_IF_ERROR(Flush());
    return AwaitUnflushed({protocols::MessageType::kUploadGrant, protocols::MessageType::kAck,
                           protocols::MessageType::kError},
                          timeout);
  }

  // Receives, hands each message to the session and acts on its events, until `done` (asked
  // after every message) or the timeout.
  Status Pump(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    protocols::Limits limits;
    limits.max_payload_bytes = protocols::kMaxChunkBytes;
    SHOAL_RETURN_IF_ERROR(Flush());
    while (std::chrono::steady_clock::now() < until) {
      auto in = socket_->Recv(50);
      if (!in.ok()) return in.status();
      last_parsed_.reset();
      if (in->has_value()) {
        last_ = std::move(**in);
        auto f = protocols::ParseFrame(last_, limits);
        if (!f.ok()) return f.status();
        last_parsed_ = *f;
        session_->Receive(std::string_view(last_), std::chrono::steady_clock::now());
      }
      // After the receive: a test that paused reads what came meanwhile before the session
      // judges the coordinator silent.
      session_->Tick(std::chrono::steady_clock::now(), /*busy=*/false);
      HandleEvents();
      if (done()) return Status::Ok();  // the caller flushes (AwaitUnflushed)
      SHOAL_RETURN_IF_ERROR(Flush());
    }
    return Timeout(name_ + ": no expected message within the timeout");
  }

  void HandleEvents() {
    using Kind = protocols::ClientEvent::Kind;
    while (auto e = session_->NextEvent()) {
      switch (e->kind) {
        case Kind::kTaskAnnounced:
          task_announced_ = true;
          break;
        case Kind::kTrainTask:
          if (want_task_ && task_announced_) {
            task_ = Task{std::move(e->train), std::move(e->weights)};
          }
          break;
        case Kind::kTransferFailed:
          if (want_task_ && task_announced_) transfer_error_ = ProtocolError(e->message);
          break;
        case Kind::kEvalTask: {
          protocols::EvalResult r;
          r.run_id = e->eval.run_id;
          r.round = e->eval.round;
          r.version = e->eval.version;
          r.count = num_val_;
          r.loss = 1.0;
          r.accuracy = 0.5;
          session_->Send(r);
          break;
        }
        default:
          break;
      }
    }
  }

  Status Flush() {
    while (auto m = session_->NextToSend()) {
      SHOAL_RETURN_IF_ERROR(socket_->Send(m->head, m->payload));
    }
    return Status::Ok();
  }

  std::string endpoint_;
  std::string name_;
  std::shared_ptr<const protocols::TlsContext> tls_;
  int64_t num_train_;
  int64_t num_val_;
  std::vector<int64_t> input_shape_;
  std::unique_ptr<protocols::ClientChannel> socket_;
  std::unique_ptr<protocols::ClientSession> session_;
  protocols::Welcome welcome_;
  std::string last_;  // backing store of the FrameView returned last
  std::optional<protocols::FrameView> last_parsed_;
  // NextTrainTask: a task announced and completed during the call.
  bool want_task_ = false;
  bool task_announced_ = false;
  std::optional<Task> task_;
  Status transfer_error_;
};

}  // namespace shoal::testing
