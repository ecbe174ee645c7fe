#include "tools/serve/server.h"

#include <spdlog/spdlog.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <mutex>
#include <sstream>

#include "base/file_util.h"
#include "base/hex.h"
#include "base/sha256.h"
#include "nn/script_check.h"
#include "protocols/http_guard.h"
#include "security/signing.h"
#include "tools/ctl/export_cmd.h"
#include "tools/serve/request_parser.h"

namespace shoal::serve {
namespace {

constexpr uint64_t kMaxModelBytes = uint64_t{1} << 32;
constexpr int64_t kMaxInputValues = int64_t{1} << 24;  // per sample
constexpr uint64_t kMaxModelJsonBytes = 1 << 26;

std::string ErrorBody(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump();
}

std::string TorchMessage(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

// A float as the shortest decimal that reads back as the same float32.
double Float32ForJson(float f) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(f));
  for (int precision = 6; precision < 9; ++precision) {
    char shorter[32];
    std::snprintf(shorter, sizeof(shorter), "%.*g", precision, static_cast<double>(f));
    if (std::strtof(shorter, nullptr) == f) return std::strtod(shorter, nullptr);
  }
  return std::strtod(buf, nullptr);
}

// model.json's signature by the trusted key. Sets *fingerprint to the signer's.
Status CheckSignature(const nlohmann::json& meta, const std::string& json_path,
                      const LoadOptions& options, std::string* fingerprint) {
  if (options.trusted_key_path.empty()) {
    if (!options.allow_unverified) {
      return Rejected(json_path +
                      ": no trusted key to check its signature against: pass --pubkey with the "
                      "coordinator's public key (RUN_DIR/keys/coordinator.pub), or "
                      "--allow-unverified-model to serve a model whose origin is not checked");
    }
    spdlog::warn(
        "serving {} WITHOUT checking its signature (--allow-unverified-model): anyone "
        "who could write model.pt and model.json chose what this server answers",
        json_path);
    return Status::Ok();
  }
  SHOAL_ASSIGN_OR_RETURN(security::PublicKey key,
                         security::PublicKey::Load(options.trusted_key_path));
  const nlohmann::json block = meta.value("signature", nlohmann::json());
  if (!block.is_object() || block.value("algorithm", "") != "ed25519" ||
      !block.contains("signature") || !block["signature"].is_string()) {
    return Rejected(json_path +
                    " is not signed (no ed25519 signature block): refusing to serve it");
  }
  auto signature = HexDecode(block["signature"].get<std::string>());
  if (!signature.ok()) return Rejected(json_path + ": the signature is not hex text");
  SHOAL_ASSIGN_OR_RETURN(std::string signed_bytes, ctl::ModelCardSignedBytes(meta));
  if (!key.Verify(signed_bytes, *signature).ok()) {
    return Rejected(json_path + " is not signed by the trusted key " + key.fingerprint() +
                    " (signed by another key, or modified after signing): refusing to serve it");
  }
  *fingerprint = key.fingerprint();
  return Status::Ok();
}

}  // namespace

struct ModelServer::Impl {
  nlohmann::json metadata;
  std::vector<int64_t> input_shape;
  int64_t sample_numel = 0;
  std::vector<std::string> class_names;
  uint64_t version = 0;
  int64_t max_batch = kDefaultMaxBatch;
  uint64_t max_body_bytes = 0;
  std::string signer_fingerprint;

  std::mutex torch_mu;
  torch::jit::Module module;  // guarded by torch_mu

  std::unique_ptr<protocols::GuardedHttpServer> http;  // made by Bind
  std::atomic<bool> stop_requested{false};
  bool bound = false;
};

ModelServer::ModelServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelServer::~ModelServer() = default;

const nlohmann::json& ModelServer::metadata() const { return impl_->metadata; }
uint64_t ModelServer::max_body_bytes() const { return impl_->max_body_bytes; }
const std::string& ModelServer::signer_fingerprint() const { return impl_->signer_fingerprint; }

Result<std::unique_ptr<ModelServer>> ModelServer::Load(const std::string& model_path,
                                                       const LoadOptions& options) {
  if (options.max_batch < 1) return InvalidArgument("max batch must be at least 1");
  auto impl = std::make_unique<Impl>();
  impl->max_batch = options.max_batch;
  const std::string json_path =
      std::filesystem::path(model_path).replace_extension(".json").string();
  if (json_path == model_path) {
    return InvalidArgument(model_path + ": the model file must not have the .json extension");
  }
  auto json_text = ReadFile(json_path, kMaxModelJsonBytes);
  if (!json_text.ok()) {
    return json_text.status().Annotate("model.json beside " + model_path +
                                       " (written by "
                                       "shoalctl export) is required");
  }
  auto& meta = impl->metadata;
  meta = nlohmann::json::parse(*json_text, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) return Corrupt(json_path + ": not a JSON object");
  // Before anything in it is believed, and before model.pt is read or loaded.
  SHOAL_RETURN_IF_ERROR(CheckSignature(meta, json_path, options, &impl->signer_fingerprint));
  SHOAL_ASSIGN_OR_RETURN(std::string bytes, ReadFile(model_path, kMaxModelBytes));
  int64_t num_classes = 0;
  std::string recorded_sha;
  try {
    impl->input_shape = meta.at("input_shape").get<std::vector<int64_t>>();
    impl->class_names = meta.at("class_names").get<std::vector<std::string>>();
    impl->version = meta.at("version").get<uint64_t>();
    num_classes = meta.at("num_classes").get<int64_t>();
    recorded_sha = meta.at("model_pt_sha256").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(json_path + ": " + e.what());
  }
  if (impl->input_shape.empty() || impl->input_shape.size() > 8) {
    return Corrupt(json_path + ": input_shape must have 1 to 8 dimensions");
  }
  impl->sample_numel = 1;
  for (int64_t d : impl->input_shape) {
    if (d <= 0 || impl->sample_numel > kMaxInputValues / d) {
      return Corrupt(json_path +
                     ": input_shape has a dimension that is not positive or holds "
                     "more than 2^24 values");
    }
    impl->sample_numel *= d;
  }
  if (num_classes < 2 || static_cast<int64_t>(impl->class_names.size()) != num_classes) {
    return Corrupt(json_path + ": class_names has " + std::to_string(impl->class_names.size()) +
                   " names for num_classes " + std::to_string(num_classes));
  }
  // Room for max_batch inputs written as long decimals, plus the JSON around them; at most
  // 2^24 values per input (above) and max_batch inputs keep it far from overflowing.
  impl->max_body_bytes = static_cast<uint64_t>(impl->max_batch) *
                             static_cast<uint64_t>(impl->sample_numel) * kMaxBodyBytesPerValue +
                         kBodyOverheadBytes;
  const std::string sha = ToHex(Sha256::Of(bytes.data(), bytes.size()));
  if (sha != recorded_sha) {
    return Corrupt(model_path + ": SHA-256 " + sha + " is not the " + recorded_sha + " that " +
                   json_path +
                   " records (the file was modified, or model.json belongs to "
                   "another export)");
  }

  // Loads the bytes that were hashed, not the file again, and only when every operator of the
  // model is on the allow-list (nn/script_check.h): the file may come from anyone.
  if (Status st = nn::LoadCheckedScriptModule(bytes, &impl->module); !st.ok()) {
    return st.Annotate(model_path);
  }
  try {
    impl->module.eval();
    // A dry run: the model must take the recorded input shape and give num_classes logits.
    std::vector<int64_t> sizes = {1};
    sizes.insert(sizes.end(), impl->input_shape.begin(), impl->input_shape.end());
    c10::InferenceMode guard;
    const torch::Tensor out = impl->module.forward({torch::zeros(sizes)}).toTensor();
    if (out.dim() != 2 || out.size(0) != 1 || out.size(1) != num_classes) {
      std::ostringstream s;
      s << out.sizes();
      return Corrupt(model_path + ": the model maps one input to shape " + s.str() +
                     ", expected [1, " + std::to_string(num_classes) + "]");
    }
  } catch (const std::exception& e) {
    return Corrupt(model_path + ": not a usable TorchScript model: " + TorchMessage(e));
  }
  return std::unique_ptr<ModelServer>(new ModelServer(std::move(impl)));
}

std::pair<int, std::string> ModelServer::Predict(std::string_view body) {
  Impl& s = *impl_;
  ParsedInputs parsed = ParsePredictRequest(body, s.sample_numel, s.max_batch);
  if (!parsed.error.empty()) return {400, ErrorBody(parsed.error)};
  const int64_t n = parsed.count;
  std::vector<float>& batch = parsed.values;

  torch::Tensor probs;
  torch::Tensor classes;
  try {
    std::vector<int64_t> sizes = {n};
    sizes.insert(sizes.end(), s.input_shape.begin(), s.input_shape.end());
    const torch::Tensor x = torch::from_blob(batch.data(), sizes, torch::kFloat32);
    std::lock_guard<std::mutex> lock(s.torch_mu);
    c10::InferenceMode guard;
    const torch::Tensor logits = s.module.forward({x}).toTensor();
    if (logits.dim() != 2 || logits.size(0) != n ||
        logits.size(1) != static_cast<int64_t>(s.class_names.size())) {
      return {500, ErrorBody("the model returned an output of unexpected shape")};
    }
    if (!torch::isfinite(logits).all().item<bool>()) {
      const int64_t bad = (~torch::isfinite(logits)).any(1).nonzero()[0][0].item<int64_t>();
      return {422, ErrorBody("the model's output for inputs[" + std::to_string(bad) +
                             "] is not finite (are its values scaled as model.json's "
                             "preprocessing says?)")};
    }
    probs = torch::softmax(logits, 1).contiguous();
    classes = logits.argmax(1).contiguous();
  } catch (const std::exception& e) {
    spdlog::error("prediction failed: {}", TorchMessage(e));
    return {500, ErrorBody("prediction failed: " + TorchMessage(e))};
  }

  const int64_t k = probs.size(1);
  const float* p = probs.data_ptr<float>();
  const int64_t* c = classes.data_ptr<int64_t>();
  nlohmann::json predictions = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (int64_t j2 = 0; j2 < k; ++j2) row.push_back(Float32ForJson(p[i * k + j2]));
    predictions.push_back({{"class", c[i]},
                           {"label", s.class_names[static_cast<size_t>(c[i])]},
                           {"probabilities", std::move(row)}});
  }
  return {200,
          nlohmann::json{{"version", s.version}, {"predictions", std::move(predictions)}}.dump()};
}

Result<int> ModelServer::Bind(const std::string& host, int port, const std::string& token) {
  Impl& s = *impl_;
  if (s.http) return Internal("Bind() called twice");
  protocols::HttpGuardOptions guard;
  guard.token = token;
  guard.token_setting = "shoal-serve --token-file (or SHOAL_SERVE_TOKEN)";
  guard.max_body_bytes = s.max_body_bytes;
  guard.threads = kServeThreads;
  guard.max_queued = kServeMaxQueued;
  guard.request_timeout_s = kServeRequestTimeoutS;
  s.http = std::make_unique<protocols::GuardedHttpServer>(guard);
  httplib::Server& http = *s.http;

  http.Post("/predict", [this](const httplib::Request& req, httplib::Response& res) {
    auto [status, body] = Predict(req.body);
    res.status = status;
    res.set_content(body, "application/json");
  });
  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  http.Get("/metadata", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(impl_->metadata.dump(2), "application/json");
  });
  // Errors without a body of their own (404, 413, ...) get a JSON one.
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string msg = "HTTP " + std::to_string(res.status);
        if (res.status == 404) msg = "no such endpoint: " + req.method + " " + req.path;
        if (res.status == 413) msg = "request body is too large";
        res.set_content(ErrorBody(msg), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("request failed: {}", what);
        res.status = 500;
        res.set_content(ErrorBody("internal error: " + what), "application/json");
      });
  http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    spdlog::debug("{} {} -> {} ({} bytes in, {} out)", req.method, req.path, res.status,
                  req.body.size(), res.body.size());
  });

  SHOAL_ASSIGN_OR_RETURN(const int bound_port, s.http->Bind(host, port));
  s.bound = true;
  return bound_port;
}

Status ModelServer::Serve() {
  if (!impl_->bound) return Internal("Serve() called before a successful Bind()");
  if (impl_->stop_requested) return Status::Ok();
  const bool clean = impl_->http->listen_after_bind();
  if (!clean && !impl_->stop_requested) return Unavailable("the HTTP listener failed");
  return Status::Ok();
}

void ModelServer::Stop() {
  impl_->stop_requested = true;
  if (impl_->http) impl_->http->stop();
}

}  // namespace shoal::serve
