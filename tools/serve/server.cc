#include "tools/serve/server.h"

#include <httplib.h>
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
#include "base/sha256.h"
#include "nn/script_check.h"

namespace shoal::serve {
namespace {

constexpr uint64_t kMaxModelBytes = uint64_t{1} << 32;
constexpr int64_t kMaxInputValues = int64_t{1} << 24;  // per sample
constexpr int kMaxNesting = 8;                         // list levels inside one input

std::string ErrorBody(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump();
}

std::string TorchMessage(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

// The JSON type of `v` in words, for error messages.
std::string TypeName(const nlohmann::json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_null()) return "null";
  if (v.is_object()) return "an object";
  if (v.is_array()) return "a list";
  return "a number";
}

// Walks one input: a list of numbers, possibly nested. Calls sink(value) on every value in
// order and counts them in *count. Returns "" or what is wrong, naming `where`.
template <typename Sink>
std::string WalkInput(const nlohmann::json& v, const std::string& where, int depth, int64_t* count,
                      Sink&& sink) {
  if (v.is_array()) {
    if (depth >= kMaxNesting) {
      return where + " is nested more than " + std::to_string(kMaxNesting) + " lists deep";
    }
    for (const auto& e : v) {
      std::string err = WalkInput(e, where, depth + 1, count, sink);
      if (!err.empty()) return err;
    }
    return "";
  }
  if (!v.is_number()) {
    return where + " value " + std::to_string(*count) + " is " + TypeName(v) +
           ", expected a number";
  }
  const double d = v.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max()) {
    std::ostringstream msg;
    msg << where << " value " << *count << " (" << d << ") is not a finite float32";
    return msg.str();
  }
  sink(static_cast<float>(d));
  ++*count;
  return "";
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

}  // namespace

struct ModelServer::Impl {
  nlohmann::json metadata;
  std::vector<int64_t> input_shape;
  int64_t sample_numel = 0;
  std::vector<std::string> class_names;
  uint64_t version = 0;
  int64_t max_batch = kDefaultMaxBatch;

  std::mutex torch_mu;
  torch::jit::Module module;  // guarded by torch_mu

  httplib::Server http;
  std::atomic<bool> stop_requested{false};
  bool bound = false;
};

ModelServer::ModelServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelServer::~ModelServer() = default;

const nlohmann::json& ModelServer::metadata() const { return impl_->metadata; }

Result<std::unique_ptr<ModelServer>> ModelServer::Load(const std::string& model_path,
                                                       int64_t max_batch) {
  if (max_batch < 1) return InvalidArgument("max batch must be at least 1");
  auto impl = std::make_unique<Impl>();
  impl->max_batch = max_batch;
  const std::string json_path =
      std::filesystem::path(model_path).replace_extension(".json").string();
  if (json_path == model_path) {
    return InvalidArgument(model_path + ": the model file must not have the .json extension");
  }
  SHOAL_ASSIGN_OR_RETURN(std::string bytes, ReadFile(model_path, kMaxModelBytes));
  auto json_text = ReadFile(json_path, 1 << 26);
  if (!json_text.ok()) {
    return json_text.status().Annotate("model.json beside " + model_path +
                                       " (written by "
                                       "shoalctl export) is required");
  }
  auto& meta = impl->metadata;
  meta = nlohmann::json::parse(*json_text, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) return Corrupt(json_path + ": not a JSON object");
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
  const auto j = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded()) return {400, ErrorBody("request body is not valid JSON")};
  if (!j.is_object() || !j.contains("inputs")) {
    return {400, ErrorBody("request body must be a JSON object {\"inputs\": [input, ...]}")};
  }
  const auto& inputs = j["inputs"];
  if (!inputs.is_array()) {
    return {400, ErrorBody("\"inputs\" is " + TypeName(inputs) + ", expected a list of inputs")};
  }
  const auto n = static_cast<int64_t>(inputs.size());
  if (n == 0) return {400, ErrorBody("\"inputs\" is empty")};
  if (n > s.max_batch) {
    return {400, ErrorBody("\"inputs\" has " + std::to_string(n) + " inputs, at most " +
                           std::to_string(s.max_batch) + " per request")};
  }
  // Validate everything before allocating the batch.
  for (int64_t i = 0; i < n; ++i) {
    const std::string where = "inputs[" + std::to_string(i) + "]";
    if (!inputs[i].is_array()) {
      return {400, ErrorBody(where + " is " + TypeName(inputs[i]) + ", expected a list of " +
                             std::to_string(s.sample_numel) + " numbers")};
    }
    int64_t count = 0;
    std::string err = WalkInput(inputs[i], where, 0, &count, [](float) {});
    if (!err.empty()) return {400, ErrorBody(err)};
    if (count != s.sample_numel) {
      return {400, ErrorBody(where + " has " + std::to_string(count) + " values, expected " +
                             std::to_string(s.sample_numel))};
    }
  }
  std::vector<float> batch;
  batch.reserve(static_cast<size_t>(n * s.sample_numel));
  for (int64_t i = 0; i < n; ++i) {
    int64_t count = 0;
    (void)WalkInput(inputs[i], "", 0, &count, [&batch](float v) { batch.push_back(v); });
  }

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

Result<int> ModelServer::Bind(const std::string& host, int port) {
  Impl& s = *impl_;
  if (port < 0 || port > 65535) return InvalidArgument("port must be in 0..65535");
  // Room for max_batch inputs written as long decimals, plus the JSON around them.
  const uint64_t max_body = std::min<uint64_t>(
      uint64_t{1} << 30,
      static_cast<uint64_t>(s.max_batch) * static_cast<uint64_t>(s.sample_numel) * 32 + (1u << 20));
  s.http.set_payload_max_length(max_body);

  s.http.Post("/predict", [this](const httplib::Request& req, httplib::Response& res) {
    auto [status, body] = Predict(req.body);
    res.status = status;
    res.set_content(body, "application/json");
  });
  s.http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  s.http.Get("/metadata", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(impl_->metadata.dump(2), "application/json");
  });
  // Errors without a body of their own (404, 413, ...) get a JSON one.
  s.http.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string msg = "HTTP " + std::to_string(res.status);
        if (res.status == 404) msg = "no such endpoint: " + req.method + " " + req.path;
        if (res.status == 413) msg = "request body is too large";
        res.set_content(ErrorBody(msg), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.http.set_exception_handler(
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
  s.http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    spdlog::debug("{} {} -> {} ({} bytes in, {} out)", req.method, req.path, res.status,
                  req.body.size(), res.body.size());
  });

  int bound_port = port;
  if (port == 0) {
    bound_port = s.http.bind_to_any_port(host);
    if (bound_port < 0) return Unavailable("cannot bind " + host + " on any port");
  } else if (!s.http.bind_to_port(host, port)) {
    return Unavailable("cannot bind " + host + ":" + std::to_string(port) +
                       " (in use, or not an address of this host?)");
  }
  s.bound = true;
  return bound_port;
}

Status ModelServer::Serve() {
  if (!impl_->bound) return Internal("Serve() called before a successful Bind()");
  if (impl_->stop_requested) return Status::Ok();
  const bool clean = impl_->http.listen_after_bind();
  if (!clean && !impl_->stop_requested) return Unavailable("the HTTP listener failed");
  return Status::Ok();
}

void ModelServer::Stop() {
  impl_->stop_requested = true;
  impl_->http.stop();
}

}  // namespace shoal::serve
