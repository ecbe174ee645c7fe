// Every message of the Shoal wire protocol, in one place.
//
// A message is one ZeroMQ frame (never multipart; see codec.h for the byte layout): a fixed
// 16-byte frame header, a structured header serialized with Cereal's portable (little-endian)
// binary archive, and an optional raw payload that carries tensor bytes. Strings and vectors in
// structured headers are read through the bounded helpers below, which check each length
// against a limit before allocating; Cereal never sees an unchecked length.
//
// Conversation (worker = client connection, coordinator = server; transport.h):
//   worker -> Hello                      coordinator -> Welcome | Error
//   coordinator -> ModelFile x n  (right after Welcome, only when Welcome.model_bytes > 0: the
//                                  user's TorchScript model, which the worker loads and trains)
//   coordinator -> TrainTask + WeightsChunk x n   (global model of `version`)
//   worker -> UpdateReady                coordinator -> UploadGrant (when an upload slot is free)
//   worker -> WeightsChunk x n  (local - global delta)   coordinator -> Ack | Error
//   coordinator -> EvalTask + WeightsChunk x n    worker -> EvalResult
//   Heartbeat both ways; Shutdown from the coordinator at the end of a run.
//
// Enrollment with a one-time join token (a TLS session in which the worker presented no
// certificate; the coordinator accepts nothing else in such a session):
//   worker -> JoinRequest (token id, secret, CSR)   coordinator -> JoinResponse | Error
//
// With the secure channel (the default) each of these messages travels inside TLS 1.3
// (secure_channel.h); the frame layout is the same.
#pragma once

#include <cereal/cereal.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "model/weights.h"
#include "protocols/frame_layout.h"  // kProtocolVersion

namespace shoal::protocols {

enum class MessageType : uint16_t {
  kHello = 1,
  kWelcome = 2,
  kTrainTask = 3,
  kEvalTask = 4,
  kWeightsChunk = 5,
  kUpdateReady = 6,
  kUploadGrant = 7,
  kAck = 8,
  kEvalResult = 9,
  kHeartbeat = 10,
  kError = 11,
  kShutdown = 12,
  kModelFile = 13,
  kJoinRequest = 14,
  kJoinResponse = 15,
};
inline constexpr uint16_t kMaxMessageType = 15;

const char* MessageTypeName(MessageType t);

// Limits on strings and vectors inside structured headers.
inline constexpr uint64_t kMaxStringBytes = 4096;
inline constexpr uint64_t kMaxShapeRank = model::SpecLimits::kMaxRank;
inline constexpr uint64_t kMaxTensors = model::SpecLimits::kMaxTensors;

// Typed error codes carried by Error messages.
enum class ErrorCode : uint16_t {
  kBadMessage = 1,       // could not be decoded
  kVersionMismatch = 2,  // protocol version differs
  kNotAdmitted = 3,      // Hello refused (incompatible data, duplicate name)
  kUnknownPeer = 4,      // message from a peer that has not said Hello (say it again)
  kStale = 5,            // update for a round that is not open (closed or never existed)
  kBadUpdate = 6,        // update failed validation (non-finite, size, sample count)
  kDuplicate = 7,        // update already accepted for this round
  kRunFinished = 8,
  kModelRefused = 9,  // (worker to coordinator) the worker will not run the run's model
  // (worker to coordinator) the worker will not run a TrainTask under its privacy settings:
  // no DP where it requires DP, parameters out of range, or its own epsilon limit reached
  kPrivacyRefused = 10,
};

}  // namespace shoal::protocols

namespace shoal::protocols::internal {

// Length-checked string and vector I/O. On input, a length above `max` throws
// cereal::Exception before any allocation; the codec turns it into a ProtocolError.
template <class Archive>
void BoundedString(Archive& ar, std::string& s, uint64_t max = kMaxStringBytes) {
  uint64_t n = s.size();
  ar(n);
  if constexpr (Archive::is_loading::value) {
    if (n > max) throw cereal::Exception("string of " + std::to_string(n) + " bytes exceeds limit");
    s.resize(n);
  }
  ar(cereal::binary_data(s.data(), n));
}

template <class Archive, class T>
void BoundedVector(Archive& ar, std::vector<T>& v, uint64_t max) {
  static_assert(std::is_arithmetic_v<T>);
  uint64_t n = v.size();
  ar(n);
  if constexpr (Archive::is_loading::value) {
    if (n > max) throw cereal::Exception("vector of " + std::to_string(n) + " items exceeds limit");
    v.resize(n);
  }
  for (auto& x : v) ar(x);
}

template <class Archive>
void SpecField(Archive& ar, model::ModelSpec& spec) {
  uint64_t n = spec.tensors.size();
  ar(n);
  if constexpr (Archive::is_loading::value) {
    if (n > kMaxTensors) throw cereal::Exception("tensor count exceeds limit");
    spec.tensors.resize(n);
  }
  for (auto& t : spec.tensors) {
    BoundedString(ar, t.name, model::SpecLimits::kMaxNameBytes);
    uint8_t dtype = static_cast<uint8_t>(t.dtype);
    ar(dtype);
    t.dtype = static_cast<model::DType>(dtype);
    BoundedVector(ar, t.shape, kMaxShapeRank);
  }
}

}  // namespace shoal::protocols::internal

namespace shoal::protocols {

struct Hello {
  static constexpr MessageType kType = MessageType::kHello;
  uint16_t protocol_version = kProtocolVersion;
  std::string name;
  int64_t num_train = 0;
  int64_t num_val = 0;
  std::vector<int64_t> input_shape;  // per sample, e.g. {1,28,28}
  int64_t num_classes = 0;
  template <class A>
  void serialize(A& ar) {
    ar(protocol_version);
    internal::BoundedString(ar, name);
    ar(num_train, num_val);
    internal::BoundedVector(ar, input_shape, kMaxShapeRank);
    ar(num_classes);
  }
};

struct Welcome {
  static constexpr MessageType kType = MessageType::kWelcome;
  std::string run_id;
  std::string worker_name;       // the name the coordinator admitted
  std::string model;             // model name: mlp, cnn, logreg or torchscript
  int64_t num_classes = 0;       // the federation's class count (the model's output size)
  uint32_t heartbeat_ms = 0;     // how often to send heartbeats
  uint32_t peer_timeout_ms = 0;  // silence after which each side considers the other gone
  uint32_t chunk_bytes = 0;      // largest WeightsChunk / ModelFile payload
  uint64_t model_bytes = 0;      // size of the TorchScript file sent as ModelFile; 0 = built-in
  template <class A>
  void serialize(A& ar) {
    internal::BoundedString(ar, run_id);
    internal::BoundedString(ar, worker_name);
    internal::BoundedString(ar, model);
    ar(num_classes, heartbeat_ms, peer_timeout_ms, chunk_bytes, model_bytes);
  }
};

// One piece of the user's TorchScript model file, sent after Welcome: the payload holds bytes
// [index * Welcome.chunk_bytes, ...) of the file, every piece chunk_bytes long but the last.
struct ModelFile {
  static constexpr MessageType kType = MessageType::kModelFile;
  uint32_t index = 0;
  uint32_t count = 0;
  uint64_t total_bytes = 0;  // the whole file
  std::string sha256;        // raw 32 bytes of the whole file's SHA-256
  template <class A>
  void serialize(A& ar) {
    ar(index, count, total_bytes);
    internal::BoundedString(ar, sha256, 32);
  }
};

// Followed by `chunk_count` WeightsChunk messages carrying the global model of `version`.
// Caps of TrainTask's local-training options (issue #22), checked by CheckTrainOptions before a
// worker trains with them: a hostile coordinator's value is refused, never run.
inline constexpr uint64_t kMaxClientAlgorithmBytes = 32;
inline constexpr double kMaxProximalMu = 1e4;
inline constexpr double kMaxWeightDecay = 1.0;
// The client algorithms coordinator and worker agree on (TrainTask.client_algorithm): the
// coordinator's strategy.client is checked against them, the worker implements each
// (worker/client_algorithm.h; tests/worker checks that both lists match).
inline const std::vector<std::string>& ClientAlgorithmNames() {
  static const std::vector<std::string> names = {"fedprox", "sgd"};
  return names;
}

struct TrainTask {
  static constexpr MessageType kType = MessageType::kTrainTask;
  std::string run_id;
  uint64_t round = 0;
  uint64_t version = 0;
  uint32_t epochs = 1;
  uint32_t batch_size = 32;
  double lr = 0.01;
  uint64_t seed = 0;
  uint32_t deadline_ms = 0;  // time left in the round when sent
  model::ModelSpec spec;
  uint32_t chunk_count = 0;
  uint8_t compression = 0;  // how to encode the update (model/compression.h Encoding)
  // Non-zero: before training, evaluate these weights (version `version`, made by round
  // `eval_round`) on the validation split and send an EvalResult, as for an EvalTask. Saves
  // sending the same weights twice when a version is evaluated while the next round trains.
  uint64_t eval_round = 0;
  // Differential privacy for this silo (privacy/dp_params.h; the worker range-checks them with
  // ValidateDpParams and checks them against its own privacy settings before training):
  uint8_t dp_mode = 0;             // privacy::DpMode: 0 none, 1 sample (DP-SGD)
  double dp_clip_norm = 0;         // C
  double dp_noise_multiplier = 0;  // sigma
  double dp_sampling_rate = 0;     // q (Poisson)
  uint64_t dp_steps = 0;           // Poisson batches to run
  uint8_t dp_seeded_noise = 0;     // 1: noise from `seed` (run.deterministic)
  // Local training (issue #22): the client algorithm by name (worker/client_algorithm.h:
  // "sgd", "fedprox"), FedProx's mu, and the local SGD's momentum and weight decay.
  std::string client_algorithm = "sgd";
  double proximal_mu = 0;
  double momentum = 0;
  double weight_decay = 0;
  template <class A>
  void serialize(A& ar) {
    internal::BoundedString(ar, run_id);
    ar(round, version, epochs, batch_size, lr, seed, deadline_ms);
    internal::SpecField(ar, spec);
    ar(chunk_count, compression, eval_round);
    ar(dp_mode, dp_clip_norm, dp_noise_multiplier, dp_sampling_rate, dp_steps, dp_seeded_noise);
    internal::BoundedString(ar, client_algorithm, kMaxClientAlgorithmBytes);
    ar(proximal_mu, momentum, weight_decay);
  }
};

// InvalidArgument naming the field when a TrainTask's local-training options are out of range:
// lr not finite and positive, proximal_mu outside [0, kMaxProximalMu], momentum outside [0, 1),
// weight_decay outside [0, kMaxWeightDecay] (NaN fails every one).
inline Status CheckTrainOptions(const TrainTask& t) {
  auto bad = [](const std::string& field, double v, const std::string& range) {
    return InvalidArgument("TrainTask." + field + " = " + std::to_string(v) + " is outside " +
                           range);
  };
  if (!(t.lr > 0 && t.lr < 1e6)) return bad("lr", t.lr, "(0, 1e6)");
  if (!(t.proximal_mu >= 0 && t.proximal_mu <= kMaxProximalMu)) {
    return bad("proximal_mu", t.proximal_mu, "[0, " + std::to_string(kMaxProximalMu) + "]");
  }
  if (!(t.momentum >= 0 && t.momentum < 1)) return bad("momentum", t.momentum, "[0, 1)");
  if (!(t.weight_decay >= 0 && t.weight_decay <= kMaxWeightDecay)) {
    return bad("weight_decay", t.weight_decay, "[0, " + std::to_string(kMaxWeightDecay) + "]");
  }
  return Status::Ok();
}

// Followed by `chunk_count` WeightsChunk messages carrying the model to evaluate.
struct EvalTask {
  static constexpr MessageType kType = MessageType::kEvalTask;
  std::string run_id;
  uint64_t round = 0;
  uint64_t version = 0;
  model::ModelSpec spec;
  uint32_t chunk_count = 0;
  template <class A>
  void serialize(A& ar) {
    internal::BoundedString(ar, run_id);
    ar(round, version);
    internal::SpecField(ar, spec);
    ar(chunk_count);
  }
};

// One piece of a weights transfer; the payload holds bytes [offset, offset + payload size) of
// the flat float32 buffer.
struct WeightsChunk {
  static constexpr MessageType kType = MessageType::kWeightsChunk;
  uint64_t round = 0;
  uint32_t index = 0;
  uint32_t count = 0;
  uint64_t offset = 0;
  template <class A>
  void serialize(A& ar) {
    ar(round, index, count, offset);
  }
};

struct UpdateReady {
  static constexpr MessageType kType = MessageType::kUpdateReady;
  std::string run_id;
  uint64_t round = 0;
  uint64_t base_version = 0;
  int64_t num_samples = 0;
  double train_loss = 0;
  double train_seconds = 0;
  uint64_t total_bytes = 0;  // encoded size (EncodedBytes(encoding, parameter count))
  std::string sha256;        // raw 32 bytes of the encoded delta
  uint8_t encoding = 0;      // model/compression.h Encoding; must be the TrainTask's compression
  double train_cpu_seconds = 0;  // CPU time of the training thread (metrics only)
  // The worker's own account of its silo (privacy/ledger.h) after this update, at the worker's
  // privacy.delta: epsilon over every DP task its ledger holds. -1: the task ran without DP.
  // Reported, not trusted: the coordinator's budget uses its own per-round records.
  double dp_epsilon = -1;
  template <class A>
  void serialize(A& ar) {
    internal::BoundedString(ar, run_id);
    ar(round, base_version, num_samples, train_loss, train_seconds, total_bytes);
    internal::BoundedString(ar, sha256, 32);
    ar(encoding, train_cpu_seconds, dp_epsilon);
  }
};

struct UploadGrant {
  static constexpr MessageType kType = MessageType::kUploadGrant;
  uint64_t round = 0;
  template <class A>
  void serialize(A& ar) {
    ar(round);
  }
};

struct Ack {
  static constexpr MessageType kType = MessageType::kAck;
  uint64_t round = 0;
  std::string sha256;  // digest of what was accepted
  template <class A>
  void serialize(A& ar) {
    ar(round);
    internal::BoundedString(ar, sha256, 32);
  }
};

struct EvalResult {
  static constexpr MessageType kType = MessageType::kEvalResult;
  std::string run_id;
  uint64_t round = 0;
  uint64_t version = 0;
  int64_t count = 0;
  double loss = 0;
  double accuracy = 0;
  double cpu_seconds = 0;  // CPU time of the evaluation (metrics only)
  template <class A>
  void serialize(A& ar) {
    internal::BoundedString(ar, run_id);
    ar(round, version, count, loss, accuracy, cpu_seconds);
  }
};

struct Heartbeat {
  static constexpr MessageType kType = MessageType::kHeartbeat;
  uint64_t unix_ms = 0;
  uint8_t busy = 0;  // worker: 1 while training or evaluating
  template <class A>
  void serialize(A& ar) {
    ar(unix_ms, busy);
  }
};

struct Error {
  static constexpr MessageType kType = MessageType::kError;
  ErrorCode code = ErrorCode::kBadMessage;
  uint64_t round = 0;
  std::string message;
  template <class A>
  void serialize(A& ar) {
    uint16_t c = static_cast<uint16_t>(code);
    ar(c);
    code = static_cast<ErrorCode>(c);
    ar(round);
    internal::BoundedString(ar, message);
  }
};

// Enrollment: the secret half of a join token and a certificate signing request whose CN is
// the worker's name. Only accepted in a TLS session without a client certificate.
struct JoinRequest {
  static constexpr MessageType kType = MessageType::kJoinRequest;
  uint16_t protocol_version = kProtocolVersion;
  std::string token_id;
  std::string secret;
  std::string csr_pem;
  template <class A>
  void serialize(A& ar) {
    ar(protocol_version);
    internal::BoundedString(ar, token_id, 64);
    internal::BoundedString(ar, secret, 64);
    internal::BoundedString(ar, csr_pem);
  }
};

// The worker's signed certificate and the CA certificate to trust from now on.
struct JoinResponse {
  static constexpr MessageType kType = MessageType::kJoinResponse;
  std::string worker_name;
  std::string cert_pem;
  std::string ca_pem;
  template <class A>
  void serialize(A& ar) {
    internal::BoundedString(ar, worker_name);
    internal::BoundedString(ar, cert_pem);
    internal::BoundedString(ar, ca_pem);
  }
};

struct Shutdown {
  static constexpr MessageType kType = MessageType::kShutdown;
  std::string reason;
  template <class A>
  void serialize(A& ar) {
    internal::BoundedString(ar, reason);
  }
};

}  // namespace shoal::protocols
