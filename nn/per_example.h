// Per-example gradient clipping for DP-SGD without a loop over batches of one.
//
// A LayerTape records, during one forward pass, the input of every Linear and Conv2d layer and
// keeps the gradient of its output. After one backward pass of the summed per-example losses,
// the gradient of example i's loss with respect to layer output z_i is G_i (z_i feeds only loss
// i), and the per-example parameter gradients follow from per-layer formulas:
//   Linear (input a_i of [in], output grad g_i of [out]):  dW_i = g_i a_i^T, db_i = g_i,
//     so ||dW_i||^2 = ||g_i||^2 ||a_i||^2 and the clipped sum is (c . G)^T A - one matmul;
//   Conv2d (unfolded input U_i of [C k k, L], output grad G_i of [out, L]):  dW_i = G_i U_i^T,
//     db_i = G_i 1 - one batched matmul makes them all (they are small next to the unfolded
//     input), and give both the norms and the clipped sum (a [1, B] x [B, out C k k] matmul).
// So a DP-SGD step costs one forward, one backward and the per-layer products, as in Opacus's
// hooks. Nets declare which layers they run by calling TapeLinear / TapeConv2d in their forward
// (nn/models.cc); a net that cannot (a TorchScript model) is refused by PerExampleSupport.
//
// Includes LibTorch: include only from translation units that need it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal::nn {

class Net;

class LayerTape {
 public:
  // Runs the layer on x, recording x and retaining its output's gradient.
  torch::Tensor Linear(torch::nn::Linear& layer, const torch::Tensor& x);
  torch::Tensor Conv2d(torch::nn::Conv2d& layer, const torch::Tensor& x);

  // Computes the gradient of `loss_sum` (the sum of the per-example losses) with respect to
  // every recorded output - not the parameters' gradients, which WriteWeightedGradients builds.
  // InvalidArgument naming a layer configuration the formulas do not cover.
  Status Backward(const torch::Tensor& loss_sum);
  // After Backward: per-example squared gradient norms over every recorded layer's
  // parameters, [B] float64.
  torch::Tensor SquaredNorms() const;
  // After Backward: sets each recorded parameter's .grad() to sum_i factors[i] * grad_i
  // (factors: [B] float32).
  void WriteWeightedGradients(const torch::Tensor& factors) const;
  // The parameters of the recorded layers (to check that they cover the whole net).
  std::vector<torch::Tensor> Parameters() const;

 private:
  struct Entry {
    enum Kind { kLinear, kConv2d } kind;
    torch::Tensor weight, bias;  // bias undefined when the layer has none
    // Linear: [B, in]. Conv2d: the layer's input [B, C, H, W] until Backward.
    torch::Tensor input;
    torch::Tensor output;  // until Backward: the layer's output, in the graph
    // After Backward: Linear: the output's gradient [B, out]; Conv2d: the per-example bias
    // gradients [B, out] (the output's gradient summed over positions).
    torch::Tensor output_grad;
    torch::Tensor per_example;  // Conv2d, after Backward: per-example weight gradients
                                // [B, out, C k k] = G_i U_i^T with U_i the unfolded input
    torch::nn::detail::ConvNdOptions<2> conv{1, 1, 1};
  };
  std::vector<Entry> entries_;
};

// Runs the layer on x, through the tape when there is one.
torch::Tensor TapeLinear(torch::nn::Linear& layer, const torch::Tensor& x, LayerTape* tape);
torch::Tensor TapeConv2d(torch::nn::Conv2d& layer, const torch::Tensor& x, LayerTape* tape);

struct DpSgdOptions {
  double clip_norm = 1.0;         // C: each example's gradient is scaled to norm <= C
  double noise_multiplier = 1.0;  // sigma: noise N(0, (sigma C)^2) per coordinate of the sum
  // The divisor of the noised sum: the expected batch size q N under Poisson sampling (Opacus's
  // convention), not the drawn size, which would leak how many examples were sampled.
  double expected_batch_size = 1.0;
};

struct DpSgdStepStats {
  double mean_loss = 0;
  int64_t examples = 0;
  int64_t clipped = 0;  // examples whose gradient norm exceeded clip_norm
};

// Ok when `net` can compute per-example gradients (every parameter belongs to a taped layer);
// InvalidArgument naming the first layer it cannot handle otherwise.
Status PerExampleSupport(Net& net);

// One DP-SGD gradient: sets each parameter's .grad() to
//   (sum_i clip_C(grad_i) + N(0, (sigma C)^2 I)) / expected_batch_size
// for the examples (x, y) (which may be empty: then only noise). The noise comes from `gen`, so
// a seeded generator gives bit-identical gradients. The caller applies its optimizer step.
Result<DpSgdStepStats> DpSgdGradient(Net& net, const torch::Tensor& x, const torch::Tensor& y,
                                     const DpSgdOptions& options, torch::Generator& gen);

// Poisson sampling: each of n indices independently with probability q (int64 [k], sorted).
torch::Tensor PoissonSample(int64_t n, double q, torch::Generator& gen);

}  // namespace shoal::nn
