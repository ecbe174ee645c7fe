#include "nn/per_example.h"

#include <algorithm>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "nn/models.h"

namespace shoal::nn {
namespace {

namespace F = torch::nn::functional;

// Opacus's clip factor: C / (norm + 1e-6), at most 1 (the epsilon keeps a zero norm finite).
constexpr double kNormEpsilon = 1e-6;

// The unfold options that reproduce a Conv2d's sliding windows, or the reason it cannot.
Result<F::UnfoldFuncOptions> UnfoldOptionsOf(const torch::nn::detail::ConvNdOptions<2>& o) {
  if (o.groups() != 1) return InvalidArgument("Conv2d with groups != 1");
  if (!c10::holds_alternative<torch::ExpandingArray<2>>(o.padding())) {
    return InvalidArgument("Conv2d with 'same' or 'valid' padding");
  }
  if (!c10::get_if<torch::enumtype::kZeros>(&o.padding_mode()))
    return InvalidArgument("Conv2d with a padding mode other than zeros");
  const auto& pad = c10::get<torch::ExpandingArray<2>>(o.padding());
  return F::UnfoldFuncOptions(
             std::vector<int64_t>(o.kernel_size()->begin(), o.kernel_size()->end()))
      .dilation(std::vector<int64_t>(o.dilation()->begin(), o.dilation()->end()))
      .padding(std::vector<int64_t>(pad->begin(), pad->end()))
      .stride(std::vector<int64_t>(o.stride()->begin(), o.stride()->end()));
}

}  // namespace

torch::Tensor LayerTape::Linear(torch::nn::Linear& layer, const torch::Tensor& x) {
  torch::Tensor out = layer->forward(x);
  entries_.push_back({Entry::kLinear, layer->weight, layer->bias, x.detach(), out, {}});
  return out;
}

torch::Tensor LayerTape::Conv2d(torch::nn::Conv2d& layer, const torch::Tensor& x) {
  torch::Tensor out = layer->forward(x);
  Entry e{Entry::kConv2d, layer->weight, layer->bias, x.detach(), out, {}};
  e.conv = layer->options;
  entries_.push_back(std::move(e));
  return out;
}

Status LayerTape::Backward(const torch::Tensor& loss_sum) {
  std::vector<torch::Tensor> outputs;
  for (const Entry& e : entries_) outputs.push_back(e.output);
  if (outputs.empty()) return InvalidArgument("the net ran no Linear or Conv2d layer");
  std::vector<torch::Tensor> grads = torch::autograd::grad({loss_sum}, outputs);
  for (size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    e.output_grad = grads[i].detach();
    e.output = torch::Tensor();  // the graph is no longer needed
    if (e.kind == Entry::kLinear) {
      if (e.input.dim() != 2)
        return InvalidArgument("a Linear layer on inputs of rank " + std::to_string(e.input.dim()) +
                               " (only [batch, features])");
      continue;
    }
    SHOAL_ASSIGN_OR_RETURN(F::UnfoldFuncOptions unfold, UnfoldOptionsOf(e.conv));
    // A convolution's per-example weight gradients are small next to its activations
    // ([B, out, C k k] against [B, C k k, L]): made once here with one batched matmul, they give
    // both the norms and the clipped sum; the unfolded input is dropped.
    const torch::Tensor u = F::unfold(e.input, unfold);  // [B, C k k, L]
    const torch::Tensor g = e.output_grad.flatten(2);    // [B, out, L]
    e.input = torch::Tensor();
    e.output_grad = g.sum(2);                          // bias gradients, [B, out]
    e.per_example = torch::bmm(g, u.transpose(1, 2));  // [B, out, C k k]
  }
  return Status::Ok();
}

torch::Tensor LayerTape::SquaredNorms() const {
  torch::Tensor norms;
  for (const Entry& e : entries_) {
    const torch::Tensor g = e.output_grad.to(torch::kFloat64);
    torch::Tensor n;
    if (e.kind == Entry::kLinear) {
      n = g.pow(2).sum(1) * e.input.to(torch::kFloat64).pow(2).sum(1);
      if (e.bias.defined()) n = n + g.pow(2).sum(1);
    } else {
      n = e.per_example.pow(2).sum(torch::IntArrayRef{1, 2}, false, torch::kFloat64);
      if (e.bias.defined()) n = n + g.pow(2).sum(1);
    }
    norms = norms.defined() ? norms + n : n;
  }
  return norms;
}

void LayerTape::WriteWeightedGradients(const torch::Tensor& factors) const {
  torch::NoGradGuard no_grad;
  for (const Entry& e : entries_) {
    if (e.kind == Entry::kLinear) {
      const torch::Tensor gc = e.output_grad * factors.unsqueeze(1);  // [B, out]
      e.weight.mutable_grad() = gc.t().mm(e.input);
      if (e.bias.defined()) e.bias.mutable_grad() = gc.sum(0);
    } else {
      // sum_i c_i dW_i as one [1, B] x [B, out C k k] matmul.
      const torch::Tensor c = factors.view({1, -1});
      const int64_t batch = e.per_example.size(0);
      e.weight.mutable_grad() = c.mm(e.per_example.view({batch, -1})).view(e.weight.sizes());
      if (e.bias.defined()) e.bias.mutable_grad() = c.mm(e.output_grad).view(e.bias.sizes());
    }
  }
}

std::vector<torch::Tensor> LayerTape::Parameters() const {
  std::vector<torch::Tensor> out;
  for (const Entry& e : entries_) {
    out.push_back(e.weight);
    if (e.bias.defined()) out.push_back(e.bias);
  }
  return out;
}

torch::Tensor TapeLinear(torch::nn::Linear& layer, const torch::Tensor& x, LayerTape* tape) {
  return tape != nullptr ? tape->Linear(layer, x) : layer->forward(x);
}

torch::Tensor TapeConv2d(torch::nn::Conv2d& layer, const torch::Tensor& x, LayerTape* tape) {
  return tape != nullptr ? tape->Conv2d(layer, x) : layer->forward(x);
}

Status PerExampleSupport(Net& net) {
  auto* script = dynamic_cast<ScriptNet*>(&net);
  if (script == nullptr) return Status::Ok();
  // A TorchScript graph runs as one opaque call: its layers cannot be taped. Name the first
  // layer that holds parameters, so the user knows what to replace.
  for (const auto& m : script->module().named_modules()) {
    if (m.value.named_parameters(/*recurse=*/false).size() == 0) continue;
    const auto type = m.value.type()->name();
    return InvalidArgument(
        "DP-SGD needs per-example gradients, computed for the built-in models "
        "(mlp, cnn, logreg) only: layer '" +
        (m.name.empty() ? std::string("<root>") : m.name) + "' (" +
        (type ? type->qualifiedName() : std::string("?")) +
        ") of the TorchScript model cannot be traced");
  }
  return InvalidArgument("DP-SGD: the TorchScript model has no layer with parameters");
}

Result<DpSgdStepStats> DpSgdGradient(Net& net, const torch::Tensor& x, const torch::Tensor& y,
                                     const DpSgdOptions& options, torch::Generator& gen) {
  if (!(options.clip_norm > 0))
    return InvalidArgument("DP-SGD clip norm must be > 0, got " +
                           std::to_string(options.clip_norm));
  if (!(options.noise_multiplier >= 0))
    return InvalidArgument("DP-SGD noise multiplier must be >= 0");
  if (!(options.expected_batch_size > 0))
    return InvalidArgument("DP-SGD expected batch size must be > 0");
  SHOAL_RETURN_IF_ERROR(PerExampleSupport(net));
  const auto params = net.NamedParameters();
  DpSgdStepStats stats;
  stats.examples = x.size(0);
  if (stats.examples == 0) {
    // An empty Poisson draw still takes a step: noise alone, as the accountant assumes.
    torch::NoGradGuard no_grad;
    for (const auto& [name, p] : params) p.mutable_grad() = torch::zeros_like(p);
  } else {
    LayerTape tape;
    const torch::Tensor logits = net.TapedForward(x, &tape);
    // Every parameter must sit in a taped layer, or its gradient would go unclipped.
    std::unordered_set<const void*> taped;
    for (const torch::Tensor& t : tape.Parameters()) taped.insert(t.unsafeGetTensorImpl());
    for (const auto& [name, p] : params) {
      if (taped.count(p.unsafeGetTensorImpl()) == 0)
        return InvalidArgument("DP-SGD: parameter '" + name +
                               "' is not in a layer whose per-example gradients are computed "
                               "(Linear, Conv2d)");
    }
    const torch::Tensor losses =
        F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().reduction(torch::kNone));
    stats.mean_loss = losses.mean().item<double>();
    SHOAL_RETURN_IF_ERROR(tape.Backward(losses.sum()));
    const torch::Tensor norms = tape.SquaredNorms().sqrt();
    stats.clipped = (norms > options.clip_norm).sum().item<int64_t>();
    const torch::Tensor factors =
        (options.clip_norm / (norms + kNormEpsilon)).clamp_max(1.0).to(torch::kFloat32);
    tape.WriteWeightedGradients(factors);
  }
  torch::NoGradGuard no_grad;
  const double std = options.noise_multiplier * options.clip_norm;
  for (const auto& [name, p] : params) {
    torch::Tensor& g = p.mutable_grad();
    if (std > 0) g.add_(at::normal(0.0, std, p.sizes(), gen, p.options()));
    g.div_(options.expected_batch_size);
  }
  return stats;
}

torch::Tensor PoissonSample(int64_t n, double q, torch::Generator& gen) {
  const torch::Tensor u = torch::rand({n}, gen, torch::TensorOptions().dtype(torch::kFloat64));
  return torch::nonzero(u < q).flatten();
}

}  // namespace shoal::nn
