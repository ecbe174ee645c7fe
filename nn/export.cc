#include "nn/export.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <random>
#include <sstream>

#include "nn/models.h"
#include "nn/script_check.h"

namespace shoal::nn {
namespace {

// Forward of one layer kind; `self.weight` / `self.bias` are the layer's parameters. Padding 2
// is the cnn's 'same' padding for its 5x5 kernels (models.cc), the only convolution built in.
constexpr const char* kLinearForward = R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.linear(x, self.weight, self.bias)
)JIT";

constexpr const char* kConv2dForward = R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.conv2d(x, self.weight, self.bias, [1, 1], [2, 2], [1, 1], 1)
)JIT";

// The forward of each model, operation for operation as in models.cc.
const char* ModelForward(const std::string& name) {
  if (name == "mlp") {
    return R"JIT(
def forward(self, x: Tensor) -> Tensor:
    x = torch.flatten(x, 1)
    x = torch.relu(self.fc1.forward(x))
    x = torch.relu(self.fc2.forward(x))
    return self.fc3.forward(x)
)JIT";
  }
  if (name == "cnn") {
    return R"JIT(
def forward(self, x: Tensor) -> Tensor:
    x = torch.max_pool2d(torch.relu(self.conv1.forward(x)), [2, 2])
    x = torch.max_pool2d(torch.relu(self.conv2.forward(x)), [2, 2])
    x = torch.relu(self.fc1.forward(torch.flatten(x, 1)))
    return self.fc2.forward(x)
)JIT";
  }
  if (name == "logreg") {
    return R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return self.fc.forward(torch.flatten(x, 1))
)JIT";
  }
  return nullptr;
}

// The message of a LibTorch exception without the C++ backtrace c10::Error appends.
std::string TorchMessage(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

// One layer class per kind, shared by every layer of that kind.
class LayerTypes {
 public:
  explicit LayerTypes(std::shared_ptr<torch::jit::CompilationUnit> cu) : cu_(std::move(cu)) {}

  // A new layer module of `kind` ("Linear" or "Conv2d") holding `weight` and `bias`.
  torch::jit::Module Make(const std::string& kind, const torch::Tensor& weight,
                          const torch::Tensor& bias) {
    auto it = types_.find(kind);
    if (it == types_.end()) {
      torch::jit::Module first(c10::QualifiedName("__torch__.shoal." + kind), cu_);
      AddSlots(first, weight, bias);
      first.define(kind == "Conv2d" ? kConv2dForward : kLinearForward);
      types_.emplace(kind, first.type());
      return first;
    }
    torch::jit::Module m(cu_, it->second);
    AddSlots(m, weight, bias);
    return m;
  }

 private:
  static void AddSlots(torch::jit::Module& m, const torch::Tensor& weight,
                       const torch::Tensor& bias) {
    m.register_attribute("training", c10::BoolType::get(), false);
    m.register_parameter("weight", weight, /*is_buffer=*/false);
    m.register_parameter("bias", bias, /*is_buffer=*/false);
  }

  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  std::map<std::string, c10::ClassTypePtr> types_;
};

torch::Tensor RandomBatch(const std::vector<int64_t>& input_shape, int64_t batch, uint64_t seed) {
  std::vector<int64_t> sizes = {batch};
  sizes.insert(sizes.end(), input_shape.begin(), input_shape.end());
  int64_t n = 1;
  for (int64_t d : sizes) n *= d;
  std::vector<float> values(static_cast<size_t>(n));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (float& v : values) v = uniform(rng);
  return torch::from_blob(values.data(), sizes, torch::kFloat32).clone();
}

}  // namespace

Status BuildScriptModule(const std::string& name, const std::vector<int64_t>& input_shape,
                         int64_t num_classes, const model::Weights& weights,
                         torch::jit::Module* out) {
  const char* forward = ModelForward(name);
  SHOAL_ASSIGN_OR_RETURN(auto net, MakeModel(name, input_shape, num_classes, /*seed=*/0));
  if (forward == nullptr) return InvalidArgument("model '" + name + "' cannot be exported");
  const model::ModelSpec expected = SpecOf(*net);
  if (std::string diff = expected.Diff(weights.spec); !diff.empty()) {
    return InvalidArgument("weights do not fit model '" + name + "' " +
                           model::ShapeString(input_shape) + " with " +
                           std::to_string(num_classes) + " classes: " + diff);
  }
  if (static_cast<int64_t>(weights.data.size()) != expected.total_numel()) {
    return InvalidArgument("weights hold " + std::to_string(weights.data.size()) +
                           " values, model '" + name + "' needs " +
                           std::to_string(expected.total_numel()));
  }
  if (int64_t bad = weights.FirstNonFinite(); bad >= 0) {
    return InvalidArgument("weights hold a non-finite value at element " + std::to_string(bad));
  }

  try {
    // Parameters grouped by layer ("fc1.weight" -> layer fc1), in spec order.
    std::vector<std::string> layer_order;
    std::map<std::string, std::map<std::string, torch::Tensor>> layers;
    for (size_t i = 0; i < weights.spec.tensors.size(); ++i) {
      const model::TensorSpec& t = weights.spec.tensors[i];
      const auto dot = t.name.find('.');
      if (dot == std::string::npos) {
        return Internal("parameter '" + t.name + "' of model '" + name + "' has no layer prefix");
      }
      const std::string layer = t.name.substr(0, dot);
      if (layers.find(layer) == layers.end()) layer_order.push_back(layer);
      // A copy of the stored floats: the module owns its parameters.
      layers[layer][t.name.substr(dot + 1)] =
          torch::from_blob(const_cast<float*>(weights.data.data() + weights.Offset(i)), t.shape,
                           torch::kFloat32)
              .clone();
    }

    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    torch::jit::Module model(c10::QualifiedName("__torch__.shoal." + name), cu);
    model.register_attribute("training", c10::BoolType::get(), false);
    LayerTypes types(cu);
    for (const std::string& layer : layer_order) {
      auto& params = layers[layer];
      if (params.size() != 2 || !params.count("weight") || !params.count("bias")) {
        return Internal("layer '" + layer + "' of model '" + name +
                        "' does not hold exactly a weight and a bias");
      }
      const torch::Tensor& w = params["weight"];
      const std::string kind = w.dim() == 4 ? "Conv2d" : w.dim() == 2 ? "Linear" : "";
      if (kind.empty()) {
        return Internal("layer '" + layer + "' has a weight of rank " + std::to_string(w.dim()));
      }
      model.register_module(layer, types.Make(kind, w, params["bias"]));
    }
    model.define(forward);
    model.eval();
    *out = std::move(model);
  } catch (const std::exception& e) {
    // TorchScript compile errors (torch::jit::ErrorReport) are not c10::Errors.
    return Internal("building the TorchScript module of '" + name + "' failed: " + TorchMessage(e));
  }
  return Status::Ok();
}

Result<double> VerifyScriptModule(torch::jit::Module& module, Net& net,
                                  const std::vector<int64_t>& input_shape, uint64_t seed,
                                  int64_t batch) {
  if (batch < 1) return InvalidArgument("verification batch must hold at least 1 sample");
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor x = RandomBatch(input_shape, batch, seed);
    const torch::Tensor expected = net.forward(x.clone());
    const torch::Tensor got = module.forward({x.clone()}).toTensor();
    if (got.sizes() != expected.sizes()) {
      return Internal("exported module returns shape " + model::ShapeString(got.sizes().vec()) +
                      ", the C++ model " + model::ShapeString(expected.sizes().vec()));
    }
    if (!torch::isfinite(expected).all().item<bool>() || !torch::isfinite(got).all().item<bool>()) {
      return Internal("model output on the verification batch is not finite");
    }
    const double diff =
        (got.to(torch::kFloat64) - expected.to(torch::kFloat64)).abs().max().item<double>();
    if (!(diff <= kExportTolerance)) {
      std::ostringstream msg;
      msg << "exported module differs from the C++ model by " << diff << " (tolerance "
          << kExportTolerance << ")";
      return Internal(msg.str());
    }
    return diff;
  } catch (const std::exception& e) {
    return Internal("running the exported module failed: " + TorchMessage(e));
  }
}

// Serializes `module`, loads the bytes back and verifies the loaded copy against `net` (which
// holds the same weights): what is returned is exactly what was checked.
static Result<ExportedModel> SaveAndVerify(torch::jit::Module& module, Net& net,
                                           const std::vector<int64_t>& input_shape,
                                           const std::string& what) {
  ExportedModel out;
  try {
    std::ostringstream archive;
    module.save(archive);
    out.bytes = archive.str();
    // Loaded back as every user of the file will: what is exported passes the operator check.
    torch::jit::Module loaded;
    SHOAL_RETURN_IF_ERROR(LoadCheckedScriptModule(out.bytes, &loaded));
    loaded.eval();
    out.check_samples = 16;
    SHOAL_ASSIGN_OR_RETURN(out.max_abs_diff, VerifyScriptModule(loaded, net, input_shape,
                                                                /*seed=*/1234, out.check_samples));
  } catch (const std::exception& e) {
    return Internal("serializing the TorchScript " + what + " failed: " + TorchMessage(e));
  }
  return out;
}

Result<ExportedModel> ExportTorchScript(const std::string& name,
                                        const std::vector<int64_t>& input_shape,
                                        int64_t num_classes, const model::Weights& weights) {
  torch::jit::Module module;
  SHOAL_RETURN_IF_ERROR(BuildScriptModule(name, input_shape, num_classes, weights, &module));
  SHOAL_ASSIGN_OR_RETURN(auto net, MakeModel(name, input_shape, num_classes, /*seed=*/0));
  SHOAL_RETURN_IF_ERROR(SetWeights(*net, weights));
  return SaveAndVerify(module, *net, input_shape, "module of '" + name + "'");
}

Result<ExportedModel> ExportScriptModel(const std::string& script_bytes,
                                        const std::vector<int64_t>& input_shape,
                                        int64_t num_classes, const model::Weights& weights) {
  SHOAL_ASSIGN_OR_RETURN(auto net, LoadScriptModel(script_bytes, input_shape, num_classes));
  if (int64_t bad = weights.FirstNonFinite(); bad >= 0) {
    return InvalidArgument("weights hold a non-finite value at element " + std::to_string(bad));
  }
  SHOAL_RETURN_IF_ERROR(SetWeights(*net, weights));
  net->eval();
  torch::jit::Module& module = static_cast<ScriptNet&>(*net).module();
  return SaveAndVerify(module, *net, input_shape, "model");
}

}  // namespace shoal::nn
