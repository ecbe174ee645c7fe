// shoal-serve's engine: an HTTP server (cpp-httplib) that answers predictions from a model
// exported by `shoalctl export`.
//
//   POST /predict   {"inputs": [[...784 floats...], ...]}  (each input prod(input_shape) floats,
//                   already preprocessed; nested lists that flatten to that size are accepted)
//                -> {"version": N, "predictions": [{"class": k, "label": "Trouser",
//                                                   "probabilities": [...]}, ...]}
//   GET  /healthz   {"status": "ok"}
//   GET  /metadata  model.json
//
// A request is parsed in one pass straight into the batch (request_parser.h: no JSON tree) and
// validated completely (JSON shape, batch size <= max_batch, each input's value count, every
// value a finite float32) before any tensor is built; a bad one gets 400 with
// {"error": "inputs[3] has 700 values, expected 784"}. Send Content-Type: application/json:
// httplib caps form-encoded bodies (curl -d's default type) at 8 KiB and answers 413. LibTorch
// runs under one mutex, on one intra-op thread.
//
// Exposure (protocols/http_guard.h, issue #20): a bearer token (required when bound beyond
// loopback), the Host header checked on loopback, a request body limit derived from the model:
// max_batch * prod(input_shape) * kMaxBodyBytesPerValue + kBodyOverheadBytes, refused from its
// Content-Length before it is read (413); kServeThreads requests at once, kServeMaxQueued
// waiting, 503 beyond.
//
// Trust: model.json's Ed25519 signature is checked at Load against a trusted public key (the
// coordinator's RUN_DIR/keys/coordinator.pub); an unsigned model, or one signed by another key,
// is refused unless LoadOptions::allow_unverified says otherwise (then a warning is logged).
//
// Errors from Load: NotFound (model.pt, model.json or the trusted key missing), Rejected (no
// trusted key given, model.json unsigned or not signed by the trusted key), Corrupt (model.json
// malformed, model.pt's SHA-256 not the one model.json records, a model that does not load or
// whose output does not have num_classes columns). Bind: Unavailable when the address cannot be
// bound, InvalidArgument when it is not loopback and there is no token.
//
// This header does not include LibTorch or httplib.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "base/status.h"

namespace shoal::serve {

inline constexpr int64_t kDefaultMaxBatch = 1024;
// Room for one value in a request body: a float32 written as a long decimal ("-1.17549435e-38"
// is 15 characters, a double's shortest form up to 24) with its separator and the indentation
// of pretty-printed nested lists.
inline constexpr uint64_t kMaxBodyBytesPerValue = 48;
inline constexpr uint64_t kBodyOverheadBytes = 64 * 1024;  // {"inputs": ...} and other keys
// LibTorch runs one batch at a time; a second thread reads and parses the next request meanwhile.
// Each request being served holds at most one body and its floats.
inline constexpr int kServeThreads = 2;
inline constexpr int kServeMaxQueued = 16;
inline constexpr int kServeRequestTimeoutS = 60;

struct LoadOptions {
  int64_t max_batch = kDefaultMaxBatch;
  // PEM public key model.json must be signed by (the coordinator's RUN_DIR/keys/coordinator.pub).
  std::string trusted_key_path;
  // Without a trusted key: serve the model anyway, logging a warning (its origin is unchecked).
  bool allow_unverified = false;
};

class ModelServer {
 public:
  // Loads the model.json beside `model_path` (same stem), checks its signature, then loads
  // `model_path` (torch::jit::load) from the bytes whose SHA-256 model.json records.
  static Result<std::unique_ptr<ModelServer>> Load(const std::string& model_path,
                                                   const LoadOptions& options);
  ~ModelServer();
  ModelServer(const ModelServer&) = delete;
  ModelServer& operator=(const ModelServer&) = delete;

  // The HTTP status and JSON body answering a /predict request body. Thread-safe.
  std::pair<int, std::string> Predict(std::string_view body);
  const nlohmann::json& metadata() const;
  // The largest /predict body accepted (see above).
  uint64_t max_body_bytes() const;
  // Fingerprint of the key that signed model.json; empty when served unverified.
  const std::string& signer_fingerprint() const;

  // Binds host:port (port 0 picks a free port) and returns the bound port. Every request then
  // needs `Authorization: Bearer <token>` unless `token` is empty, which only a loopback address
  // allows.
  Result<int> Bind(const std::string& host, int port, const std::string& token = "");
  // Serves on the bound socket until Stop(). Bind first.
  Status Serve();
  // Makes Serve return; safe from any thread, before or during Serve. Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit ModelServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::serve
