#include "common/nn/models.h"

#include "common/nn/runtime.h"

#include <dlfcn.h>

#include <fstream>

namespace shoal::nn {
namespace {

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
  torch::Tensor forward(torch::Tensor x) override {
    x = x.flatten(1);
    x = torch::relu(fc1->forward(x));
    x = torch::relu(fc2->forward(x));
    return fc3->forward(x);
  }
  torch::nn::Linear fc1, fc2, fc3;
};

class LogReg : public Net {
 public:
  LogReg(int64_t in, int64_t classes) : fc(register_module("fc", torch::nn::Linear(in, classes))) {}
  torch::Tensor forward(torch::Tensor x) override { return fc->forward(x.flatten(1)); }
  torch::nn::Linear fc;
};

// The CNN of McMahan et al. (2017): two 5x5 convolutions (32, 64 channels, 'same' padding),
// each followed by 2x2 max pooling, a 512-unit fully connected layer and the output layer.
class Cnn : public Net {
 public:
  Cnn(int64_t channels, int64_t h, int64_t w, int64_t classes)
      : conv1(register_module("conv1",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 32, 5).padding(2)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5).padding(2)))),
        fc1(register_module("fc1", torch::nn::Linear(64 * (h / 4) * (w / 4), 512))),
        fc2(register_module("fc2", torch::nn::Linear(512, classes))) {}
  torch::Tensor forward(torch::Tensor x) override {
    x = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2->forward(x)), 2);
    x = torch::relu(fc1->forward(x.flatten(1)));
    return fc2->forward(x);
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
                                       const std::vector<int64_t>& input_shape,
                                       int64_t num_classes, uint64_t seed) {
  if (input_shape.empty() || Product(input_shape) <= 0) {
    return InvalidArgument("model input shape " + ShapeString(input_shape) + " is empty");
  }
  if (num_classes < 2) return InvalidArgument("model needs at least 2 classes");
  torch::manual_seed(seed);
  const int64_t in = Product(input_shape);
  if (name == "mlp") return std::shared_ptr<Net>(std::make_shared<Mlp>(in, num_classes));
  if (name == "logreg") return std::shared_ptr<Net>(std::make_shared<LogReg>(in, num_classes));
  if (name == "cnn") {
    if (input_shape.size() != 3 || input_shape[1] % 4 != 0 || input_shape[2] % 4 != 0) {
      return InvalidArgument("the cnn model needs input shape [C,H,W] with H and W divisible by 4, got " +
                             ShapeString(input_shape));
    }
    return std::shared_ptr<Net>(
        std::make_shared<Cnn>(input_shape[0], input_shape[1], input_shape[2], num_classes));
  }
  return InvalidArgument("unknown model '" + name + "' (built-in models: mlp, cnn, logreg)");
}

ModelSpec SpecOf(Net& net) {
  ModelSpec spec;
  for (const auto& p : net.named_parameters(/*recurse=*/true)) {
    TensorSpec t;
    t.name = p.key();
    t.shape = p.value().sizes().vec();
    spec.tensors.push_back(std::move(t));
  }
  return spec;
}

Weights GetWeights(Net& net) {
  Weights w;
  w.spec = SpecOf(net);
  w.data.resize(w.spec.total_numel());
  int64_t off = 0;
  torch::NoGradGuard no_grad;
  for (const auto& p : net.named_parameters(true)) {
    torch::Tensor t = p.value().detach().to(torch::kFloat32).contiguous();
    std::memcpy(w.data.data() + off, t.data_ptr<float>(), t.numel() * sizeof(float));
    off += t.numel();
  }
  return w;
}

Status SetWeights(Net& net, const Weights& w) {
  ModelSpec spec = SpecOf(net);
  if (std::string diff = spec.Diff(w.spec); !diff.empty()) {
    return InvalidArgument("weights do not fit the model: " + diff);
  }
  if (static_cast<int64_t>(w.data.size()) != spec.total_numel()) {
    return InvalidArgument("weights hold " + std::to_string(w.data.size()) + " values, model needs " +
                           std::to_string(spec.total_numel()));
  }
  int64_t off = 0;
  torch::NoGradGuard no_grad;
  for (auto& p : net.named_parameters(true)) {
    torch::Tensor t = p.value();
    auto src = torch::from_blob(const_cast<float*>(w.data.data() + off), t.sizes(), torch::kFloat32);
    t.copy_(src);
    off += t.numel();
  }
  return Status::Ok();
}

torch::Tensor FeaturesTensor(const Dataset& data) {
  std::vector<int64_t> sizes = {data.size()};
  sizes.insert(sizes.end(), data.sample_shape.begin(), data.sample_shape.end());
  return torch::from_blob(const_cast<float*>(data.features.data()), sizes, torch::kFloat32);
}

torch::Tensor LabelsTensor(const Dataset& data) {
  return torch::from_blob(const_cast<int64_t*>(data.labels.data()), {data.size()}, torch::kInt64);
}

EvalMetrics Evaluate(Net& net, const Dataset& data, int64_t batch_size) {
  EvalMetrics m;
  m.count = data.size();
  if (m.count == 0) return m;
  torch::NoGradGuard no_grad;
  net.eval();
  torch::Tensor x = FeaturesTensor(data);
  torch::Tensor y = LabelsTensor(data);
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t start = 0; start < m.count; start += batch_size) {
    const int64_t end = std::min(m.count, start + batch_size);
    torch::Tensor logits = net.forward(x.slice(0, start, end));
    torch::Tensor target = y.slice(0, start, end);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, target,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(target).sum().item<int64_t>();
  }
  net.train();
  m.loss = loss_sum / static_cast<double>(m.count);
  m.accuracy = static_cast<double>(correct) / static_cast<double>(m.count);
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
    if (path.find("libopenblas") != std::string::npos ||
        path.find("openblas") != std::string::npos && path.find("libblas") != std::string::npos) {
      return "openblas (" + path + ")";
    }
    if (path.find("libblis") != std::string::npos) return "blis (" + path + ")";
    if (path.find("libmkl") != std::string::npos) return "mkl (" + path + ")";
    if (path.find("/blas/libblas.so") != std::string::npos) {
      return "reference BLAS (" + path + "; install libopenblas0-pthread for ~3.7x faster training)";
    }
  }
  return "unknown (no BLAS library mapped yet)";
}

}  // namespace shoal::nn
