// User-supplied TorchScript models without Python: archives built here with torch::jit, loaded
// as ScriptNets (parameters, weights round trip, refusals with their reasons), trained by the
// worker's LocalTrainer, exported with new weights; the coordinator's config rules for
// model.path and the run's checked copy of the file.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>

#include "base/file_util.h"
#include "base/sha256.h"
#include "coordinator/config.h"
#include "data/dataset.h"
#include "evaluator/local_runtime.h"
#include "nn/export.h"
#include "nn/models.h"
#include "store/script_copy.h"
#include "worker/trainer.h"

namespace shoal {
namespace {

using Params = std::vector<std::pair<std::string, torch::Tensor>>;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string TempDir() {
  char tmpl[] = "/tmp/shoal-script-model-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  return dir ? dir : "/tmp";
}

std::string Save(torch::jit::Module& m) {
  std::ostringstream out;
  m.save(out);
  return out.str();
}

// A module of class `cls` holding `params` (and `buffers`) with the given forward.
torch::jit::Module Module(const std::string& cls, const Params& params, const std::string& forward,
                          const Params& buffers = {},
                          std::shared_ptr<torch::jit::CompilationUnit> cu = nullptr) {
  if (!cu) cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module m(c10::QualifiedName("__torch__.test." + cls), cu);
  m.register_attribute("training", c10::BoolType::get(), true);
  for (const auto& [name, t] : params) m.register_parameter(name, t, /*is_buffer=*/false);
  for (const auto& [name, t] : buffers) m.register_buffer(name, t);
  if (!forward.empty()) m.define(forward);
  return m;
}

// A "user model" that is not a built-in: y = layer(flatten(x)) * scale, with a submodule, for
// samples of shape [3, 4] and 2 classes. Parameters in module order: scale, layer.weight,
// layer.bias.
std::string UserModel(uint64_t seed = 1) {
  torch::manual_seed(seed);
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module layer =
      Module("Layer", {{"weight", torch::randn({2, 12}) * 0.1}, {"bias", torch::zeros({2})}},
             R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.linear(x, self.weight, self.bias)
)JIT",
             {}, cu);
  torch::jit::Module m = Module("Scaled", {{"scale", torch::ones({1})}}, "", {}, cu);
  m.register_module("layer", layer);
  m.define(R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return self.layer.forward(torch.flatten(x, 1)) * self.scale
)JIT");
  return Save(m);
}

constexpr const char* kFlattenLinear = R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.linear(torch.flatten(x, 1), self.w, self.b)
)JIT";

Status LoadError(const std::string& bytes) {
  auto net = nn::LoadScriptModel(bytes, {3, 4}, 2);
  return net.ok() ? Status::Ok() : net.status();
}

TEST(ScriptModelTest, ParametersInModuleOrderAndWeightsRoundTrip) {
  auto net = nn::LoadScriptModel(UserModel(), {3, 4}, 2);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  EXPECT_TRUE((*net)->is_training());
  const model::ModelSpec spec = nn::SpecOf(**net);
  ASSERT_EQ(spec.tensors.size(), 3u);
  EXPECT_EQ(spec.tensors[0].name, "scale");
  EXPECT_EQ(spec.tensors[1].name, "layer.weight");
  EXPECT_EQ(spec.tensors[1].shape, (std::vector<int64_t>{2, 12}));
  EXPECT_EQ(spec.tensors[2].name, "layer.bias");

  model::Weights w = nn::GetWeights(**net);
  ASSERT_EQ(w.data.size(), 1u + 24 + 2);
  EXPECT_EQ(w.data[0], 1.0f);
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] = 0.01f * static_cast<float>(i);
  ASSERT_TRUE(nn::SetWeights(**net, w).ok());
  EXPECT_EQ(nn::GetWeights(**net).data, w.data);

  // forward runs the module with the new numbers: (x . weight^T + bias) * scale.
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::ones({1, 3, 4});
  const torch::Tensor y = (*net)->forward(x);
  float want0 = w.data[25];
  for (int k = 0; k < 12; ++k) want0 += w.data[1 + k];
  EXPECT_NEAR(y[0][0].item<float>(), want0 * w.data[0], 1e-5);

  model::Weights other = w;
  other.spec.tensors[0].name = "gain";
  Status st = nn::SetWeights(**net, other);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), "scale")) << st.message();
}

TEST(ScriptModelTest, ModelsThatCannotBeFederatedAreRefusedNamingTheProblem) {
  EXPECT_TRUE(Contains(LoadError("").message(), "empty"));
  EXPECT_TRUE(Contains(LoadError("PK\x03\x04 not really a zip").message(),
                       "not a loadable TorchScript archive"));

  auto with_buffer = Module("WithBuffer", {{"w", torch::zeros({2, 12})}, {"b", torch::zeros({2})}},
                            kFlattenLinear, {{"running_mean", torch::zeros({2})}});
  Status st = LoadError(Save(with_buffer));
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), "buffer(s) (running_mean)")) << st.message();

  auto float64 = Module(
      "Double",
      {{"w", torch::zeros({2, 12}, torch::kFloat64)}, {"b", torch::zeros({2}, torch::kFloat64)}},
      kFlattenLinear);
  st = LoadError(Save(float64));
  EXPECT_TRUE(Contains(st.message(), "parameter 'w' is Double; only float32")) << st.message();

  auto three_classes =
      Module("Three", {{"w", torch::zeros({3, 12})}, {"b", torch::zeros({3})}}, kFlattenLinear);
  st = LoadError(Save(three_classes));
  EXPECT_TRUE(Contains(st.message(),
                       "returns shape [2,3] on a batch of shape [2,3,4], expected "
                       "[2,2] (batch, model.num_classes)"))
      << st.message();

  auto other_input =
      Module("Wide", {{"w", torch::zeros({2, 13})}, {"b", torch::zeros({2})}}, kFlattenLinear);
  st = LoadError(Save(other_input));
  EXPECT_TRUE(Contains(st.message(), "forward fails on a batch of shape [2,3,4]")) << st.message();

  auto tuple = Module("Tuple", {{"w", torch::zeros({2, 12})}, {"b", torch::zeros({2})}}, R"JIT(
def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
    y = torch.linear(torch.flatten(x, 1), self.w, self.b)
    return y, y
)JIT");
  st = LoadError(Save(tuple));
  EXPECT_TRUE(Contains(st.message(), "forward returns Tuple")) << st.message();

  auto no_params = Module("Fixed", {}, R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.flatten(x, 1)[:, 0:2]
)JIT");
  st = LoadError(Save(no_params));
  EXPECT_TRUE(Contains(st.message(), "no parameters")) << st.message();

  auto non_finite =
      Module("Nan", {{"w", torch::full({2, 12}, NAN)}, {"b", torch::zeros({2})}}, kFlattenLinear);
  st = LoadError(Save(non_finite));
  EXPECT_TRUE(Contains(st.message(), "parameter 'w' holds a non-finite value")) << st.message();

  // By name only, without the file, a torchscript model cannot be made.
  auto by_name = nn::MakeModel("torchscript", {3, 4}, 2, 0);
  ASSERT_FALSE(by_name.ok());
  EXPECT_TRUE(Contains(by_name.status().message(), "model.path")) << by_name.status().message();
}

TEST(ScriptModelTest, InitialWeightsAreTheFileParametersAndTheTrainerLearns) {
  const model::ModelSource source{model::kTorchScriptModel, UserModel(3)};
  auto initial = evaluator::MakeLocalRuntime()->InitialWeights(source, {3, 4}, 2, /*seed=*/99);
  ASSERT_TRUE(initial.ok()) << initial.status().ToString();
  auto net = nn::LoadScriptModel(source.script_bytes, {3, 4}, 2);
  ASSERT_TRUE(net.ok());
  EXPECT_EQ(initial->data, nn::GetWeights(**net).data) << "the seed must not re-initialize";

  // Two classes told apart by the sign of the first feature.
  data::Dataset data;
  data.sample_shape = {3, 4};
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int i = 0; i < 256; ++i) {
    const int64_t label = i % 2;
    for (int k = 0; k < 12; ++k) data.features.push_back(normal(rng));
    data.features[i * 12] = label ? 1.0f + std::abs(normal(rng)) : -1.0f - std::abs(normal(rng));
    data.labels.push_back(label);
  }
  auto trainer = worker::LocalTrainer::Create(source, {3, 4}, 2);
  ASSERT_TRUE(trainer.ok()) << trainer.status().ToString();
  auto before = (*trainer)->Evaluate(*initial, data);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  worker::TrainSettings s;
  s.epochs = 3;
  s.lr = 0.2;
  s.seed = 7;
  std::atomic<bool> cancel{false};
  auto out = (*trainer)->Train(*initial, data, s, cancel, nullptr);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(out->delta.size(), initial->data.size());
  model::Weights trained = *initial;
  for (size_t i = 0; i < trained.data.size(); ++i) trained.data[i] += out->delta[i];
  EXPECT_NE(out->delta[0], 0.0f) << "scale (a parameter of the top module) must be trained";
  EXPECT_NE(out->delta[1], 0.0f) << "layer.weight (of the submodule) must be trained";
  auto after = (*trainer)->Evaluate(trained, data);
  ASSERT_TRUE(after.ok());
  std::printf("accuracy before %.3f after %.3f\n", before->accuracy, after->accuracy);
  EXPECT_GT(after->accuracy, 0.9);
  EXPECT_LT(after->loss, before->loss);

  // Central evaluation of the trained weights on the same samples (as a CSV, samples of shape
  // [12], which the model also takes) sees the learned rule too.
  const std::string dir = TempDir();
  std::string csv = "f0";
  for (int k = 1; k < 12; ++k) csv += ",f" + std::to_string(k);
  csv += ",label\n";
  for (int i = 0; i < data.size(); ++i) {
    for (int k = 0; k < 12; ++k) csv += std::to_string(data.features[i * 12 + k]) + ",";
    csv += std::to_string(data.labels[i]) + "\n";
  }
  ASSERT_TRUE(WriteFileAtomic(dir + "/eval.csv", csv).ok());
  auto evaluator = evaluator::MakeLocalRuntime()->OpenEvaluator(
      source, {12}, 2, {"csv", dir + "/eval.csv", "", "label", 0});
  ASSERT_TRUE(evaluator.ok()) << evaluator.status().ToString();
  auto central = (*evaluator)->Evaluate(trained);
  ASSERT_TRUE(central.ok()) << central.status().ToString();
  EXPECT_GT(central->accuracy, 0.9);
  std::filesystem::remove_all(dir);
}

// A worker keeps its training images packed (Dataset::PackImages): batches formed from the
// packed rows are the same tensors, so training and evaluation give the same numbers bit for bit.
TEST(PackedSiloTest, TrainingAndEvaluationOnAPackedSiloAreBitIdentical) {
  auto images = data::LoadIdxDataset("/usr/share/datasets/fashion-mnist", "train", 300);
  if (!images.ok()) GTEST_SKIP() << "Fashion-MNIST not installed: " << images.status().ToString();
  data::Dataset packed = *images;
  packed.PackImages();
  ASSERT_TRUE(packed.is_packed());
  const torch::Tensor idx = torch::tensor({299, 0, 17, 17, 150}, torch::kInt64);
  EXPECT_TRUE(torch::equal(nn::SelectRows(packed, idx), nn::SelectRows(*images, idx)));
  EXPECT_TRUE(torch::equal(nn::SliceRows(packed, 32, 64), nn::SliceRows(*images, 32, 64)));

  const model::ModelSource cnn{"cnn", ""};
  auto initial = evaluator::MakeLocalRuntime()->InitialWeights(cnn, {1, 28, 28}, 10, 1);
  ASSERT_TRUE(initial.ok()) << initial.status().ToString();
  auto a = worker::LocalTrainer::Create(cnn, {1, 28, 28}, 10);
  auto b = worker::LocalTrainer::Create(cnn, {1, 28, 28}, 10);
  ASSERT_TRUE(a.ok() && b.ok());
  worker::TrainSettings s;
  s.seed = 11;
  std::atomic<bool> cancel{false};
  auto plain = (*a)->Train(*initial, *images, s, cancel, nullptr);
  auto from_packed = (*b)->Train(*initial, packed, s, cancel, nullptr);
  ASSERT_TRUE(plain.ok() && from_packed.ok());
  EXPECT_EQ(plain->delta, from_packed->delta);
  EXPECT_EQ(plain->mean_loss, from_packed->mean_loss);
  auto e1 = (*a)->Evaluate(*initial, *images);
  auto e2 = (*b)->Evaluate(*initial, packed);
  ASSERT_TRUE(e1.ok() && e2.ok());
  EXPECT_EQ(e1->loss, e2->loss);
  EXPECT_EQ(e1->accuracy, e2->accuracy);
}

TEST(ScriptModelTest, ExportHoldsTheNewWeightsInTheUsersArchitecture) {
  const std::string bytes = UserModel(4);
  auto net = nn::LoadScriptModel(bytes, {3, 4}, 2);
  ASSERT_TRUE(net.ok());
  model::Weights w = nn::GetWeights(**net);
  for (float& v : w.data) v = -v + 0.25f;
  auto exported = nn::ExportScriptModel(bytes, {3, 4}, 2, w);
  ASSERT_TRUE(exported.ok()) << exported.status().ToString();
  EXPECT_LE(exported->max_abs_diff, nn::kExportTolerance);

  std::istringstream in(exported->bytes);
  torch::jit::Module loaded = torch::jit::load(in);
  EXPECT_FALSE(loaded.is_training());
  EXPECT_EQ(loaded.type()->name()->name(), "Scaled");
  size_t i = 0;
  for (const auto& p : loaded.named_parameters(/*recurse=*/true)) {
    ASSERT_LT(i, w.spec.tensors.size());
    EXPECT_EQ(p.name, w.spec.tensors[i].name);
    const torch::Tensor t = p.value.contiguous();
    EXPECT_EQ(
        0, std::memcmp(t.data_ptr<float>(), w.data.data() + w.Offset(i), t.numel() * sizeof(float)))
        << p.name;
    ++i;
  }
  EXPECT_EQ(i, w.spec.tensors.size());

  model::Weights wrong = w;
  wrong.spec.tensors[1].shape = {12, 2};
  auto refused = nn::ExportScriptModel(bytes, {3, 4}, 2, wrong);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Contains(refused.status().message(), "layer.weight")) << refused.status().message();
  model::Weights nan = w;
  nan.data[3] = NAN;
  EXPECT_FALSE(nn::ExportScriptModel(bytes, {3, 4}, 2, nan).ok());
}

TEST(ScriptModelTest, ConfigRequiresModelPathExactlyForTorchScript) {
  auto ok = coordinator::LoadCoordinatorConfig(
      "", {"model.name=torchscript", "model.path=/m/script.pt", "security.insecure=true"});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->model_path, "/m/script.pt");
  auto missing = coordinator::LoadCoordinatorConfig("", {"model.name=torchscript"});
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status().message(), "model.path")) << missing.status().message();
  auto stray =
      coordinator::LoadCoordinatorConfig("", {"model.name=mlp", "model.path=/m/script.pt"});
  ASSERT_FALSE(stray.ok());
  EXPECT_TRUE(Contains(stray.status().message(), "only used with model.name = torchscript"))
      << stray.status().message();
  auto unknown = coordinator::LoadCoordinatorConfig("", {"model.name=resnet"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(Contains(unknown.status().message(), "model.name")) << unknown.status().message();
}

TEST(ScriptModelTest, RunCopyIsCheckedAgainstItsRecordedDigest) {
  const std::string run = TempDir() + "/run";
  auto missing = store::ReadRunScriptModel(run, std::string(64, '0'));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(missing.status().message(), "model/script.pt"))
      << missing.status().message();

  const std::string bytes = UserModel();
  ASSERT_TRUE(MakeDirs(run + "/model").ok());
  ASSERT_TRUE(WriteFileAtomic(store::ScriptModelPath(run), bytes).ok());
  const std::string sha = ToHex(Sha256::Of(bytes.data(), bytes.size()));
  auto read = store::ReadRunScriptModel(run, sha);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(*read, bytes);
  auto other = store::ReadRunScriptModel(run, std::string(64, 'a'));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(other.status().message(), "modified or replaced"))
      << other.status().message();
  std::filesystem::remove_all(std::filesystem::path(run).parent_path());
}

}  // namespace
}  // namespace shoal
