// Client algorithms (worker/client_algorithm.h) and the local-training options (issue #22):
// FedProx's gradient against a hand-computed value; whole local training of a logistic
// regression with FedProx, momentum and weight decay against a double-precision reference of
// the equations; the names coordinator and worker agree on; hostile TrainTask values refused.
#include "worker/client_algorithm.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "protocols/messages.h"
#include "worker/trainer.h"

namespace shoal::worker {
namespace {

// w = [[1, 2], [3, 4]], w_global = [[0.5, 2.5], [3, 1]], grad = [[0.1, -0.2], [0, 1]], mu = 0.5:
// grad + mu (w - w_global) = [[0.35, -0.45], [0, 2.5]]; b = [1], b_global = [2], grad 0.3:
// 0.3 + 0.5 * (1 - 2) = -0.2.
TEST(FedProxTest, AddsMuTimesTheDistanceToTheGlobalModelToTheGradient) {
  auto prox = BuiltinClientAlgorithms().Create("fedprox", {0.5});
  ASSERT_TRUE(prox.ok()) << prox.status().ToString();
  torch::Tensor w = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).reshape({2, 2}).requires_grad_();
  torch::Tensor b = torch::tensor({1.0f}).requires_grad_();
  const std::vector<float> global = {0.5f, 2.5f, 3.0f, 1.0f, 2.0f};
  ASSERT_TRUE((*prox)->Begin({w, b}, global).ok());
  w.mutable_grad() = torch::tensor({0.1f, -0.2f, 0.0f, 1.0f}).reshape({2, 2});
  b.mutable_grad() = torch::tensor({0.3f});
  (*prox)->AdjustGradients({w, b});
  const std::vector<double> want = {0.35, -0.45, 0.0, 2.5};
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(w.grad().reshape({4})[i].item<float>(), want[i], 1e-6) << i;
  }
  EXPECT_NEAR(b.grad()[0].item<float>(), -0.2, 1e-6);
  // The global model is read, never written.
  EXPECT_EQ(global[3], 1.0f);
}

TEST(FedProxTest, ParametersThatDoNotFitTheGlobalModelAreRefused) {
  auto prox = BuiltinClientAlgorithms().Create("fedprox", {0.5}).value();
  torch::Tensor w = torch::zeros({2, 2});
  EXPECT_FALSE(prox->Begin({w}, std::vector<float>(3)).ok());
  EXPECT_FALSE(prox->Begin({w}, std::vector<float>(5)).ok());
  EXPECT_TRUE(prox->Begin({w}, std::vector<float>(4)).ok());
}

// Every name the coordinator may send is implemented here, and no other.
TEST(ClientAlgorithmRegistryTest, MatchesTheProtocolsList) {
  std::string names;
  for (const auto& n : protocols::ClientAlgorithmNames()) {
    EXPECT_TRUE(BuiltinClientAlgorithms().Contains(n)) << n;
    names += (names.empty() ? "" : ", ") + n;
  }
  EXPECT_EQ(BuiltinClientAlgorithms().NamesList(), names);
  auto r = BuiltinClientAlgorithms().Create("scaffold2", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("fedprox, sgd"), std::string::npos);
}

// A small CSV-like silo: 12 samples of 4 features, 3 classes.
data::Dataset Silo() {
  data::Dataset d;
  d.sample_shape = {4};
  for (int i = 0; i < 12; ++i) {
    for (int f = 0; f < 4; ++f) d.features.push_back(std::sin(0.7 * i + 1.3 * f));
    d.labels.push_back(i % 3);
  }
  return d;
}

// Full-batch local training of logreg (logits = W x + b, mean cross-entropy) in double, with
// torch's SGD rules: g = grad L + mu (w - w0) + wd w; buf = momentum buf + g (buf = g at the
// first step); w -= lr buf.
std::vector<double> ReferenceDelta(const std::vector<float>& w0f, const data::Dataset& d, int steps,
                                   double lr, double mu, double momentum, double wd) {
  const int C = 3, F = 4, n = static_cast<int>(d.size());
  std::vector<double> w0(w0f.begin(), w0f.end()), w = w0, buf(w.size(), 0.0);
  // Spec order: fc.weight [3, 4] then fc.bias [3].
  for (int s = 0; s < steps; ++s) {
    std::vector<double> g(w.size(), 0.0);
    for (int i = 0; i < n; ++i) {
      double logits[3], mx = -1e300, z = 0;
      for (int c = 0; c < C; ++c) {
        logits[c] = w[C * F + c];
        for (int f = 0; f < F; ++f) logits[c] += w[c * F + f] * d.features[i * F + f];
        mx = std::max(mx, logits[c]);
      }
      for (int c = 0; c < C; ++c) z += std::exp(logits[c] - mx);
      for (int c = 0; c < C; ++c) {
        const double err = std::exp(logits[c] - mx) / z - (d.labels[i] == c ? 1.0 : 0.0);
        for (int f = 0; f < F; ++f) g[c * F + f] += err * d.features[i * F + f] / n;
        g[C * F + c] += err / n;
      }
    }
    for (size_t k = 0; k < w.size(); ++k) {
      g[k] += mu * (w[k] - w0[k]) + wd * w[k];
      buf[k] = s == 0 ? g[k] : momentum * buf[k] + g[k];
      w[k] -= lr * buf[k];
    }
  }
  for (size_t k = 0; k < w.size(); ++k) w[k] -= w0[k];
  return w;
}

TEST(LocalTrainingTest, FedProxMomentumAndWeightDecayFollowTheReference) {
  model::ModelSource source;
  source.name = "logreg";
  auto trainer = LocalTrainer::Create(source, {4}, 3);
  ASSERT_TRUE(trainer.ok()) << trainer.status().ToString();
  const data::Dataset silo = Silo();
  model::Weights global;
  global.spec = (*trainer)->spec();
  ASSERT_EQ(global.spec.total_numel(), 15);
  ASSERT_EQ(global.spec.tensors[0].shape, (std::vector<int64_t>{3, 4}));
  for (int k = 0; k < 15; ++k) global.data.push_back(0.3f * std::cos(1.1f * k));
  std::atomic<bool> cancel{false};
  struct Case {
    std::string algorithm;
    double mu, momentum, wd;
  };
  for (const Case& c : {Case{"sgd", 0, 0, 0}, Case{"fedprox", 2.0, 0, 0},
                        Case{"fedprox", 0.5, 0.9, 0.01}, Case{"sgd", 0, 0.5, 0.1}}) {
    SCOPED_TRACE(c.algorithm + " mu=" + std::to_string(c.mu) +
                 " momentum=" + std::to_string(c.momentum) + " wd=" + std::to_string(c.wd));
    TrainSettings s;
    s.epochs = 6;  // one full batch per epoch: 6 steps
    s.batch_size = 12;
    s.lr = 0.5;
    s.momentum = c.momentum;
    s.weight_decay = c.wd;
    s.client_algorithm = c.algorithm;
    s.proximal_mu = c.mu;
    auto out = (*trainer)->Train(global, silo, s, cancel, nullptr);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    const auto want = ReferenceDelta(global.data, silo, 6, 0.5, c.mu, c.momentum, c.wd);
    double moved = 0;
    for (int k = 0; k < 15; ++k) {
      EXPECT_NEAR(out->delta[k], want[k], 2e-5) << k;
      moved = std::max(moved, std::abs(want[k]));
    }
    EXPECT_GT(moved, 0.05);  // training moved the model: the comparison means something
  }
  // The proximal term matters: mu = 2 ends elsewhere than plain SGD.
  const auto sgd = ReferenceDelta(global.data, silo, 6, 0.5, 0, 0, 0);
  const auto prox = ReferenceDelta(global.data, silo, 6, 0.5, 2.0, 0, 0);
  double diff = 0;
  for (int k = 0; k < 15; ++k) diff = std::max(diff, std::abs(sgd[k] - prox[k]));
  EXPECT_GT(diff, 1e-3);
}

TEST(LocalTrainingTest, UnknownClientAlgorithmIsAnError) {
  model::ModelSource source;
  source.name = "logreg";
  auto trainer = LocalTrainer::Create(source, {4}, 3).value();
  model::Weights global;
  global.spec = trainer->spec();
  global.data.assign(15, 0.0f);
  TrainSettings s;
  s.client_algorithm = "scaffold2";
  std::atomic<bool> cancel{false};
  auto out = trainer->Train(global, Silo(), s, cancel, nullptr);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().ToString().find("scaffold2"), std::string::npos);
}

// A hostile coordinator's local-training options are refused before any training.
TEST(TrainOptionsTest, OutOfRangeValuesAreRefusedNamingTheField) {
  protocols::TrainTask ok;
  ok.lr = 0.1;
  ASSERT_TRUE(protocols::CheckTrainOptions(ok).ok());
  struct Bad {
    std::string field;
    void (*set)(protocols::TrainTask&);
  };
  const std::vector<Bad> bad = {
      {"proximal_mu", [](protocols::TrainTask& t) { t.proximal_mu = std::nan(""); }},
      {"proximal_mu", [](protocols::TrainTask& t) { t.proximal_mu = 1e300; }},
      {"proximal_mu", [](protocols::TrainTask& t) { t.proximal_mu = -1; }},
      {"momentum", [](protocols::TrainTask& t) { t.momentum = 1.0; }},
      {"momentum", [](protocols::TrainTask& t) { t.momentum = std::nan(""); }},
      {"weight_decay", [](protocols::TrainTask& t) { t.weight_decay = 5; }},
      {"lr", [](protocols::TrainTask& t) { t.lr = INFINITY; }},
  };
  for (const auto& b : bad) {
    protocols::TrainTask t = ok;
    b.set(t);
    Status st = protocols::CheckTrainOptions(t);
    EXPECT_FALSE(st.ok()) << b.field;
    EXPECT_NE(st.ToString().find("TrainTask." + b.field), std::string::npos) << st.ToString();
  }
}

}  // namespace
}  // namespace shoal::worker
