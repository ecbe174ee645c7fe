// DP-SGD's per-example gradients from per-layer formulas (nn/per_example.h) against the
// definition - a loop over batches of one - for every built-in net; the noise's scale and
// determinism; refusals.
#include "nn/per_example.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "nn/models.h"

namespace shoal::nn {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

torch::Tensor FlatGrads(Net& net) {
  std::vector<torch::Tensor> parts;
  for (const auto& [name, p] : net.NamedParameters()) parts.push_back(p.grad().flatten());
  return torch::cat(parts);
}

void DropGrads(Net& net) {
  for (const auto& [name, p] : net.NamedParameters()) p.mutable_grad() = torch::Tensor();
}

struct Reference {
  torch::Tensor norms;        // [B] float64
  torch::Tensor clipped_sum;  // flat, float64
};

// The definition: each example's gradient by its own backward pass, clipped, summed.
Reference LoopOverExamples(Net& net, const torch::Tensor& x, const torch::Tensor& y, double clip) {
  Reference ref;
  std::vector<double> norms;
  for (int64_t i = 0; i < x.size(0); ++i) {
    DropGrads(net);
    torch::nn::functional::cross_entropy(net.forward(x.narrow(0, i, 1)), y.narrow(0, i, 1))
        .backward();
    const torch::Tensor g = FlatGrads(net).to(torch::kFloat64);
    const double norm = g.norm().item<double>();
    norms.push_back(norm);
    const torch::Tensor clipped = g * std::min(1.0, clip / (norm + 1e-6));
    ref.clipped_sum = ref.clipped_sum.defined() ? ref.clipped_sum + clipped : clipped;
  }
  ref.norms = torch::tensor(norms, torch::kFloat64);
  DropGrads(net);
  return ref;
}

struct Case {
  std::string model;
  std::vector<int64_t> input_shape;
};

class PerExampleTest : public ::testing::TestWithParam<Case> {};

TEST_P(PerExampleTest, ClippedSumEqualsTheLoopOverExamples) {
  const Case& c = GetParam();
  auto net = MakeModel(c.model, c.input_shape, 4, /*seed=*/7);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  torch::manual_seed(3);
  std::vector<int64_t> shape = {6};
  shape.insert(shape.end(), c.input_shape.begin(), c.input_shape.end());
  const torch::Tensor x = torch::randn(shape);
  const torch::Tensor y = torch::randint(0, 4, {6}, torch::kInt64);

  // Clip between the 3rd and 4th smallest norms: three examples are clipped, three are not.
  const Reference unclipped = LoopOverExamples(**net, x, y, 1e30);
  const torch::Tensor sorted = std::get<0>(unclipped.norms.sort());
  const double clip = 0.5 * (sorted[2].item<double>() + sorted[3].item<double>());
  const Reference ref = LoopOverExamples(**net, x, y, clip);

  torch::Generator gen = at::detail::createCPUGenerator(1);
  DpSgdOptions opt;
  opt.clip_norm = clip;
  opt.noise_multiplier = 0;
  opt.expected_batch_size = 1;
  auto stats = DpSgdGradient(**net, x, y, opt, gen);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->examples, 6);
  EXPECT_EQ(stats->clipped, (unclipped.norms > clip).sum().item<int64_t>());
  EXPECT_EQ(stats->clipped, 3);
  const torch::Tensor got = FlatGrads(**net).to(torch::kFloat64);
  ASSERT_EQ(got.numel(), ref.clipped_sum.numel());
  const double err = (got - ref.clipped_sum).abs().max().item<double>();
  const double scale = ref.clipped_sum.abs().max().item<double>();
  EXPECT_LT(err, 1e-5 * scale) << c.model << ": max error " << err << " of " << scale;
}

INSTANTIATE_TEST_SUITE_P(BuiltinNets, PerExampleTest,
                         ::testing::Values(Case{"logreg", {10}}, Case{"mlp", {1, 6, 5}},
                                           Case{"cnn", {2, 8, 8}}),
                         [](const auto& info) { return info.param.model; });

TEST(DpSgdGradientTest, NoiseHasTheRightScaleAndIsReproducibleFromTheSeed) {
  auto net = MakeModel("cnn", {1, 8, 8}, 10, /*seed=*/1);
  ASSERT_TRUE(net.ok());
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({8, 1, 8, 8});
  const torch::Tensor y = torch::randint(0, 10, {8}, torch::kInt64);
  DpSgdOptions opt;
  opt.clip_norm = 0.5;
  opt.noise_multiplier = 0;
  opt.expected_batch_size = 1;
  torch::Generator gen = at::detail::createCPUGenerator(11);
  ASSERT_TRUE(DpSgdGradient(**net, x, y, opt, gen).ok());
  const torch::Tensor clipped_sum = FlatGrads(**net).clone();

  opt.noise_multiplier = 1.3;
  opt.expected_batch_size = 4;
  auto noised = [&](uint64_t seed) {
    torch::Generator g = at::detail::createCPUGenerator(seed);
    EXPECT_TRUE(DpSgdGradient(**net, x, y, opt, g).ok());
    return FlatGrads(**net).clone();
  };
  const torch::Tensor a = noised(11), b = noised(11), other = noised(12);
  EXPECT_TRUE(torch::equal(a, b)) << "same seed, same gradients, bit for bit";
  EXPECT_FALSE(torch::equal(a, other));
  // (grad * expected batch - clipped sum) / (sigma C) is standard normal: ~1e5 coordinates.
  const torch::Tensor z =
      (a.to(torch::kFloat64) * 4 - clipped_sum.to(torch::kFloat64)) / (1.3 * 0.5);
  ASSERT_GT(z.numel(), 100000);
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.02);
  EXPECT_NEAR(z.std().item<double>(), 1.0, 0.02);
}

TEST(DpSgdGradientTest, AnEmptyDrawIsNoiseAlone) {
  auto net = MakeModel("logreg", {5}, 3, /*seed=*/1);
  ASSERT_TRUE(net.ok());
  DpSgdOptions opt;
  opt.clip_norm = 2;
  opt.noise_multiplier = 1;
  opt.expected_batch_size = 10;
  torch::Generator gen = at::detail::createCPUGenerator(3);
  auto stats =
      DpSgdGradient(**net, torch::zeros({0, 5}), torch::zeros({0}, torch::kInt64), opt, gen);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->examples, 0);
  const torch::Tensor g = FlatGrads(**net);
  EXPECT_EQ(g.numel(), 18);
  EXPECT_GT(g.abs().sum().item<double>(), 0.0);
  EXPECT_LT(g.abs().max().item<double>(), 2.0 * 6 / 10) << "six sigma of N(0, 2) / 10";
}

TEST(DpSgdGradientTest, TorchScriptModelIsRefusedNamingItsLayer) {
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module layer(c10::QualifiedName("__torch__.test.Dense"), cu);
  layer.register_parameter("weight", torch::randn({3, 4}), false);
  layer.define(R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.matmul(x, self.weight.t())
)JIT");
  torch::jit::Module root(c10::QualifiedName("__torch__.test.Net"), cu);
  root.register_module("dense", layer);
  root.define(R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return self.dense.forward(torch.flatten(x, 1))
)JIT");
  ScriptNet net(root);
  const Status st = PerExampleSupport(net);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), "layer 'dense' (__torch__.test.Dense)")) << st.message();
  torch::Generator gen = at::detail::createCPUGenerator(1);
  auto r = DpSgdGradient(net, torch::zeros({2, 4}), torch::zeros({2}, torch::kInt64), {}, gen);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(PerExampleSupport(**MakeModel("cnn", {1, 8, 8}, 10, 1)).ok());
}

TEST(DpSgdGradientTest, BadOptionsAreRefused) {
  auto net = MakeModel("logreg", {5}, 3, /*seed=*/1);
  torch::Generator gen = at::detail::createCPUGenerator(1);
  const torch::Tensor x = torch::zeros({2, 5});
  const torch::Tensor y = torch::zeros({2}, torch::kInt64);
  DpSgdOptions opt;
  opt.clip_norm = 0;
  EXPECT_TRUE(Contains(DpSgdGradient(**net, x, y, opt, gen).status().message(), "clip norm"));
  opt = {};
  opt.noise_multiplier = -1;
  EXPECT_TRUE(Contains(DpSgdGradient(**net, x, y, opt, gen).status().message(), "noise"));
  opt = {};
  opt.expected_batch_size = 0;
  EXPECT_TRUE(Contains(DpSgdGradient(**net, x, y, opt, gen).status().message(), "batch size"));
}

TEST(PoissonSampleTest, EachIndexWithProbabilityQ) {
  torch::Generator gen = at::detail::createCPUGenerator(42);
  const torch::Tensor s = PoissonSample(100000, 0.01, gen);
  // 1000 expected, standard deviation ~31.5: five of them either way.
  EXPECT_NEAR(static_cast<double>(s.numel()), 1000.0, 160.0);
  EXPECT_TRUE(torch::equal(s, std::get<0>(s.sort()))) << "sorted";
  EXPECT_EQ(s.scalar_type(), torch::kInt64);
  torch::Generator again = at::detail::createCPUGenerator(42);
  EXPECT_TRUE(torch::equal(s, PoissonSample(100000, 0.01, again)));
  EXPECT_EQ(PoissonSample(1000, 0.0, gen).numel(), 0);
  EXPECT_EQ(PoissonSample(1000, 1.0, gen).numel(), 1000);
}

}  // namespace
}  // namespace shoal::nn
