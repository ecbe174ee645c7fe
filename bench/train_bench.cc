// Local training steps on a worker: plain minibatch SGD against DP-SGD (per-example clipping
// and noise, nn/per_example.h) for the built-in nets on Fashion-MNIST-shaped inputs, batch 64.
// The ratio DP-SGD / SGD is the privacy cost in training time (Opacus reports ~1.6x on CPU for
// its MNIST CNN). Run: build/bin/train_bench --benchmark_repetitions=5
// --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <string>

#include "bench/bench_main.h"
#include "nn/models.h"
#include "nn/per_example.h"

namespace shoal {
namespace {

constexpr int64_t kBatch = 64;

std::shared_ptr<nn::Net> Net(int64_t which) {
  return *nn::MakeModel(which == 0 ? "cnn" : "mlp", {1, 28, 28}, 10, /*seed=*/1);
}

void BM_SgdStep(benchmark::State& state) {
  auto net = Net(state.range(0));
  torch::manual_seed(1);
  const torch::Tensor x = torch::rand({kBatch, 1, 28, 28});
  const torch::Tensor y = torch::randint(0, 10, {kBatch}, torch::kInt64);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01));
  for (auto _ : state) {
    for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetLabel(state.range(0) == 0 ? "cnn" : "mlp");
}

void BM_DpSgdStep(benchmark::State& state) {
  auto net = Net(state.range(0));
  torch::manual_seed(1);
  const torch::Tensor x = torch::rand({kBatch, 1, 28, 28});
  const torch::Tensor y = torch::randint(0, 10, {kBatch}, torch::kInt64);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01));
  torch::Generator gen = at::detail::createCPUGenerator(1);
  nn::DpSgdOptions dp;
  dp.clip_norm = 1.0;
  dp.noise_multiplier = 1.0;
  dp.expected_batch_size = kBatch;
  for (auto _ : state) {
    auto stats = nn::DpSgdGradient(*net, x, y, dp, gen);
    if (!stats.ok()) state.SkipWithError(stats.status().message().c_str());
    opt.step();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetLabel(state.range(0) == 0 ? "cnn" : "mlp");
}

// Arg 0: the CNN, 1: the MLP.
BENCHMARK(BM_SgdStep)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DpSgdStep)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace shoal

SHOAL_BENCHMARK_MAIN();
