#include "nn/models.h"

#include <dlfcn.h>

#include <fstream>
#include <sstream>

#include "base/cpu_time.h"
#include "nn/per_example.h"
#include "nn/runtime.h"
#include "nn/script_check.h"

namespace shoal::nn {
namespace {

// The message of a LibTorch exception without the C++ backtrace c10::Error appends.
std::string TorchMessage(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

// The first line of `text` (TorchScript errors are long; the first line names the problem).
std::string FirstLine(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

int64_t Product(const std::vector<int64_t>& v) {
  int64_t n = 1;
  for (int64_t d : v) n *= d;
  return n;
}

class Mlp : public Net {
 public:
  Mlp(int64_t in, int64_t classes)
      : fc1(register_module("fc1", torch::nn::Linear(in, 200))),
        fc2(register_module("fc2", torch::nn::Linear(200, 200))),
        fc3(register_module("fc3", torch::nn::Linear(200, classes))) {}
  torch::Tensor forward(torch::Tensor x) override { return TapedForward(x, nullptr); }
  torch::Tensor TapedForward(torch::Tensor x, LayerTape* tape) override {
    x = x.flatten(1);
    x = torch::relu(TapeLinear(fc1, x, tape));
    x = torch::relu(TapeLinear(fc2, x, tape));
    return TapeLinear(fc3, x, tape);
  }
  torch::nn::Linear fc1, fc2, fc3;
};

class LogReg : public Net {
 public:
  LogReg(int64_t in, int64_t classes) : fc(register_module("fc", torch::nn::Linear(in, classes))) {}
  torch::Tensor forward(torch::Tensor x) override { return TapedForward(x, nullptr); }
  torch::Tensor TapedForward(torch::Tensor x, LayerTape* tape) override {
    return TapeLinear(fc, x.flatten(1), tape);
  }
  torch::nn::Linear fc;
};

// The CNN of McMahan et al. (2017): two 5x5 convolutions (32, 64 channels, 'same' padding),
// each followed by 2x2 max pooling, a 512-unit fully connected layer and the output layer.
class Cnn : public Net {
 public:
  Cnn(int64_t channels, int64_t h, int64_t w, int64_t classes)
      : conv1(register_module(
            "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 32, 5).padding(2)))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5).padding(2)))),
        fc1(register_module("fc1", torch::nn::Linear(64 * (h / 4) * (w / 4), 512))),
        fc2(register_module("fc2", torch::nn::Linear(512, classes))) {}
  torch::Tensor forward(torch::Tensor x) override { return TapedForward(x, nullptr); }
  torch::Tensor TapedForward(torch::Tensor x, LayerTape* tape) override {
    x = torch::max_pool2d(torch::relu(TapeConv2d(conv1, x, tape)), 2);
    x = torch::max_pool2d(torch::relu(TapeConv2d(conv2, x, tape)), 2);
    x = torch::relu(TapeLinear(fc1, x.flatten(1), tape));
    return TapeLinear(fc2, x, tape);
  }
  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc1, fc2;
};

}  // namespace

const std::vector<std::string>& BuiltinModels() {
  static const std::vector<std::string> kNames = {"mlp", "cnn", "logreg"};
  return kNames;
}

Result<std::shared_ptr<Net>> MakeModel(const std::string& name,
                                       const std::vector<int64_t>& input_shape, int64_t num_classes,
                                       uint64_t seed) {
  if (input_shape.empty() || Product(input_shape) <= 0) {
    return InvalidArgument("model input shape " + model::ShapeString(input_shape) + " is empty");
  }
  if (num_classes < 2) return InvalidArgument("model needs at least 2 classes");
  torch::manual_seed(seed);
  const int64_t in = Product(input_shape);
  if (name == "mlp") return std::shared_ptr<Net>(std::make_shared<Mlp>(in, num_classes));
  if (name == "logreg") return std::shared_ptr<Net>(std::make_shared<LogReg>(in, num_classes));
  if (name == "cnn") {
    if (input_shape.size() != 3 || input_shape[1] % 4 != 0 || input_shape[2] % 4 != 0) {
      return InvalidArgument(
          "the cnn model needs input shape [C,H,W] with H and W divisible by 4, got " +
          model::ShapeString(input_shape));
    }
    return std::shared_ptr<Net>(
        std::make_shared<Cnn>(input_shape[0], input_shape[1], input_shape[2], num_classes));
  }
  if (name == model::kTorchScriptModel) {
    return InvalidArgument("model 'torchscript' is loaded from its file (model.path), not built");
  }
  return InvalidArgument("unknown model '" + name + "' (built-in models: mlp, cnn, logreg)");
}

Result<std::shared_ptr<Net>> MakeModel(const model::ModelSource& source,
                                       const std::vector<int64_t>& input_shape, int64_t num_classes,
                                       uint64_t seed) {
  if (source.is_script()) return LoadScriptModel(source.script_bytes, input_shape, num_classes);
  return MakeModel(source.name, input_shape, num_classes, seed);
}

std::vector<std::pair<std::string, torch::Tensor>> Net::NamedParameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  return out;
}

torch::Tensor ScriptNet::forward(torch::Tensor x) { return module_.forward({x}).toTensor(); }

void ScriptNet::train(bool on) {
  module_.train(on);
  Net::train(on);
}

std::vector<std::pair<std::string, torch::Tensor>> ScriptNet::NamedParameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
    out.emplace_back(p.name, p.value);
  }
  return out;
}

Result<std::shared_ptr<Net>> LoadScriptModel(const std::string& bytes,
                                             const std::vector<int64_t>& input_shape,
                                             int64_t num_classes) {
  if (input_shape.empty() || Product(input_shape) <= 0) {
    return InvalidArgument("model input shape " + model::ShapeString(input_shape) + " is empty");
  }
  if (num_classes < 2) return InvalidArgument("model needs at least 2 classes");
  if (bytes.empty()) return InvalidArgument("TorchScript model file is empty");
  // The archive is the supplier's program: only the allow-listed operators may run, and the
  // check comes before any of its code runs (the dry run below included).
  torch::jit::Module module;
  SHOAL_RETURN_IF_ERROR(LoadCheckedScriptModule(bytes, &module));
  if (!module.find_method("forward")) {
    return InvalidArgument("TorchScript model has no forward method");
  }
  std::string buffers;
  int64_t buffer_count = 0;
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    if (buffer_count++ < 3) buffers += (buffers.empty() ? "" : ", ") + b.name;
  }
  if (buffer_count > 0) {
    return InvalidArgument("TorchScript model has " + std::to_string(buffer_count) +
                           " buffer(s) (" + buffers + (buffer_count > 3 ? ", ..." : "") +
                           "); only parameters are federated, so models with buffers (e.g. "
                           "BatchNorm running statistics) are not supported");
  }
  auto net = std::make_shared<ScriptNet>(std::move(module));
  const auto params = net->NamedParameters();
  if (params.empty()) return InvalidArgument("TorchScript model has no parameters to train");
  for (const auto& [name, t] : params) {
    if (t.scalar_type() != torch::kFloat32) {
      return InvalidArgument("TorchScript model parameter '" + name + "' is " +
                             std::string(c10::toString(t.scalar_type())) +
                             "; only float32 parameters are supported (call model.float() "
                             "before scripting)");
    }
    if (!t.device().is_cpu() || t.layout() != torch::kStrided) {
      return InvalidArgument("TorchScript model parameter '" + name +
                             "' is not a dense CPU tensor (move the model to the CPU before "
                             "saving)");
    }
    if (!torch::isfinite(t).all().item<bool>()) {
      return InvalidArgument("TorchScript model parameter '" + name + "' holds a non-finite value");
    }
  }
  if (Status st = SpecOf(*net).Validate(); !st.ok()) {
    return InvalidArgument("TorchScript model parameters: " + st.message());
  }

  // One forward pass on zeros shows the module takes the federation's samples and returns one
  // logit per class.
  std::vector<int64_t> sizes = {2};
  sizes.insert(sizes.end(), input_shape.begin(), input_shape.end());
  const std::string batch = model::ShapeString(sizes);
  try {
    torch::NoGradGuard no_grad;
    net->eval();
    const torch::IValue out = net->module().forward({torch::zeros(sizes)});
    if (!out.isTensor()) {
      return InvalidArgument("TorchScript model's forward returns " + out.tagKind() +
                             " on a batch of shape " + batch + ", expected a Tensor of logits");
    }
    const torch::Tensor logits = out.toTensor();
    const std::vector<int64_t> want = {2, num_classes};
    if (logits.sizes().vec() != want) {
      return InvalidArgument("TorchScript model's forward returns shape " +
                             model::ShapeString(logits.sizes().vec()) + " on a batch of shape " +
                             batch + ", expected " + model::ShapeString(want) +
                             " (batch, model.num_classes)");
    }
    if (logits.scalar_type() != torch::kFloat32) {
      return InvalidArgument("TorchScript model's forward returns " +
                             std::string(c10::toString(logits.scalar_type())) +
                             " logits, expected float32");
    }
  } catch (const std::exception& e) {
    return InvalidArgument("TorchScript model's forward fails on a batch of shape " + batch +
                           " (model.input_shape " + model::ShapeString(input_shape) +
                           "): " + FirstLine(TorchMessage(e)));
  }
  for (auto& [name, t] : net->NamedParameters()) t.set_requires_grad(true);
  net->train();
  return std::shared_ptr<Net>(std::move(net));
}

model::ModelSpec SpecOf(Net& net) {
  model::ModelSpec spec;
  for (const auto& [name, value] : net.NamedParameters()) {
    model::TensorSpec t;
    t.name = name;
    t.shape = value.sizes().vec();
    spec.tensors.push_back(std::move(t));
  }
  return spec;
}

namespace {

// Calls fn(values, count, offset) for each parameter as contiguous float32, in spec order.
template <class Fn>
void ForEachParameter(Net& net, Fn&& fn) {
  torch::NoGradGuard no_grad;
  size_t off = 0;
  for (const auto& p : net.NamedParameters()) {
    const torch::Tensor t = p.second.detach().to(torch::kFloat32).contiguous();
    const size_t n = static_cast<size_t>(t.numel());
    fn(t.data_ptr<float>(), n, off);
    off += n;
  }
}

}  // namespace

model::Weights GetWeights(Net& net) {
  model::Weights w;
  w.spec = SpecOf(net);
  w.data.resize(w.spec.total_numel());
  ForEachParameter(net, [&](const float* v, size_t n, size_t off) {
    std::memcpy(w.data.data() + off, v, n * sizeof(float));
  });
  return w;
}

void SubtractFromLocal(Net& net, std::vector<float>& global) {
  ForEachParameter(net, [&](const float* local, size_t n, size_t off) {
    for (size_t i = 0; i < n; ++i) global[off + i] = local[i] - global[off + i];
  });
}

Status SetWeights(Net& net, const model::Weights& w) {
  model::ModelSpec spec = SpecOf(net);
  if (std::string diff = spec.Diff(w.spec); !diff.empty()) {
    return InvalidArgument("weights do not fit the model: " + diff);
  }
  if (static_cast<int64_t>(w.data.size()) != spec.total_numel()) {
    return InvalidArgument("weights hold " + std::to_string(w.data.size()) +
                           " values, model needs " + std::to_string(spec.total_numel()));
  }
  int64_t off = 0;
  torch::NoGradGuard no_grad;
  for (auto& p : net.NamedParameters()) {
    torch::Tensor t = p.second;
    auto src =
        torch::from_blob(const_cast<float*>(w.data.data() + off), t.sizes(), torch::kFloat32);
    t.copy_(src);
    off += t.numel();
  }
  return Status::Ok();
}

torch::Tensor SelectRows(const data::Dataset& data, const torch::Tensor& idx) {
  if (!data.is_packed()) return FeaturesTensor(data).index_select(0, idx);
  const torch::Tensor rows = idx.to(torch::kInt64).contiguous();
  const int64_t* r = rows.data_ptr<int64_t>();
  std::vector<int64_t> sizes = {rows.numel()};
  sizes.insert(sizes.end(), data.sample_shape.begin(), data.sample_shape.end());
  torch::Tensor out = torch::empty(sizes, torch::kUInt8);
  uint8_t* o = out.data_ptr<uint8_t>();
  const int64_t n = data.packed.row_bytes();
  for (int64_t i = 0; i < rows.numel(); ++i) {
    TORCH_CHECK(r[i] >= 0 && r[i] < data.packed.rows(), "row ", r[i], " out of range");
    data.packed.Unpack(r[i], o + i * n);
  }
  return out;
}

torch::Tensor SliceRows(const data::Dataset& data, int64_t start, int64_t end) {
  if (!data.is_packed()) return FeaturesTensor(data).slice(0, start, end);
  return SelectRows(data, torch::arange(start, std::max(start, end), torch::kInt64));
}

torch::Tensor FeaturesTensor(const data::Dataset& data) {
  TORCH_CHECK(!data.is_packed(), "FeaturesTensor of a packed dataset (use SelectRows)");
  std::vector<int64_t> sizes = {data.size()};
  sizes.insert(sizes.end(), data.sample_shape.begin(), data.sample_shape.end());
  if (data.is_images()) {
    return torch::from_blob(const_cast<uint8_t*>(data.pixels.data()), sizes, torch::kUInt8);
  }
  return torch::from_blob(const_cast<float*>(data.features.data()), sizes, torch::kFloat32);
}

torch::Tensor ModelInput(const torch::Tensor& rows) {
  if (rows.scalar_type() != torch::kUInt8) return rows;
  return rows.to(torch::kFloat32).div_(255.0f);
}

torch::Tensor LabelsTensor(const data::Dataset& data) {
  return torch::from_blob(const_cast<int64_t*>(data.labels.data()), {data.size()}, torch::kInt64);
}

model::EvalMetrics Evaluate(Net& net, const data::Dataset& data, int64_t batch_size) {
  const double cpu0 = ThreadCpuSeconds();
  model::EvalMetrics m;
  m.count = data.size();
  if (m.count == 0) return m;
  torch::NoGradGuard no_grad;
  net.eval();
  torch::Tensor y = LabelsTensor(data);
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t start = 0; start < m.count; start += batch_size) {
    const int64_t end = std::min(m.count, start + batch_size);
    torch::Tensor logits = net.forward(ModelInput(SliceRows(data, start, end)));
    torch::Tensor target = y.slice(0, start, end);
    loss_sum +=
        torch::nn::functional::cross_entropy(
            logits, target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
            .item<double>();
    correct += logits.argmax(1).eq(target).sum().item<int64_t>();
  }
  net.train();
  m.loss = loss_sum / static_cast<double>(m.count);
  m.accuracy = static_cast<double>(correct) / static_cast<double>(m.count);
  m.cpu_seconds = ThreadCpuSeconds() - cpu0;
  return m;
}

std::string ConfigureTorchRuntime(int threads) {
  torch::set_num_threads(threads);
  // OpenBLAS keeps its own thread pool (one thread per core by default); with several Shoal
  // processes on one machine that oversubscribes the cores, so it gets the same budget.
  using SetThreadsFn = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(threads);
  }
  // A small matmul makes LibTorch resolve its BLAS before we look at what is mapped.
  (void)torch::mm(torch::ones({64, 64}), torch::ones({64, 64}));
  return "blas=" + ActiveBlas() + " intra_op_threads=" + std::to_string(torch::get_num_threads());
}

std::string ActiveBlas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    const std::string path = line.substr(pos);
    // Debian's alternatives map libblas.so.3 to .../openblas-pthread/libblas.so.3.
    if (path.find("libopenblas") != std::string::npos ||
        (path.find("openblas") != std::string::npos && path.find("libblas") != std::string::npos)) {
      return "openblas (" + path + ")";
    }
    if (path.find("libblis") != std::string::npos) return "blis (" + path + ")";
    if (path.find("libmkl") != std::string::npos) return "mkl (" + path + ")";
    if (path.find("/blas/libblas.so") != std::string::npos) {
      return "reference BLAS (" + path +
             "; install libopenblas0-pthread for ~3.7x faster training)";
    }
  }
  return "unknown (no BLAS library mapped yet)";
}

}  // namespace shoal::nn
