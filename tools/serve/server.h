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
// A request is validated completely (JSON shape, batch size <= max_batch, each input's value
// count, every value a finite float32) before any tensor is built; a bad one gets 400 with
// {"error": "inputs[3] has 700 values, expected 784"}. Send Content-Type: application/json:
// httplib caps form-encoded bodies (curl -d's default type) at 8 KiB and answers 413. LibTorch runs
// under one mutex (httplib serves from a thread pool), on one intra-op thread.
//
// Errors from Load: NotFound (model.pt or model.json missing), Corrupt (model.json malformed,
// model.pt's SHA-256 not the one model.json records, a model that does not load or whose output
// does not have num_classes columns). Bind: Unavailable when the address cannot be bound.
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

class ModelServer {
 public:
  // Loads `model_path` (torch::jit::load) and the model.json beside it (same stem).
  static Result<std::unique_ptr<ModelServer>> Load(const std::string& model_path,
                                                   int64_t max_batch = kDefaultMaxBatch);
  ~ModelServer();
  ModelServer(const ModelServer&) = delete;
  ModelServer& operator=(const ModelServer&) = delete;

  // The HTTP status and JSON body answering a /predict request body. Thread-safe.
  std::pair<int, std::string> Predict(std::string_view body);
  const nlohmann::json& metadata() const;

  // Binds host:port (port 0 picks a free port) and returns the bound port.
  Result<int> Bind(const std::string& host, int port);
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
