// The trainer's DP-SGD path (issue #25): clipping bounds a step, a clip norm that never binds
// gives plain SGD's step, the noise follows its seed, and the step count is the task's.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>

#include "nn/models.h"
#include "worker/trainer.h"

namespace shoal::worker {
namespace {

data::Dataset Synthetic(int64_t n, uint32_t seed) {
  data::Dataset d;
  d.sample_shape = {1, 28, 28};
  std::mt19937 rng(seed);
  d.pixels.resize(static_cast<size_t>(n) * 28 * 28);
  for (auto& p : d.pixels) p = static_cast<uint8_t>(rng() % 256);
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<int64_t>(rng() % 10));
  return d;
}

double Norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

class TrainerDpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = LocalTrainer::Create({"logreg", ""}, {1, 28, 28}, 10);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    trainer_ = std::move(t).value();
    auto net =
        nn::MakeModel(model::ModelSource{"logreg", ""}, std::vector<int64_t>{1, 28, 28}, 10, 3);
    ASSERT_TRUE(net.ok());
    global_ = nn::GetWeights(**net);
  }
  TrainOutcome Train(const TrainSettings& s) {
    auto out = trainer_->Train(global_, data_, s, cancel_, nullptr);
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    return out.ok() ? std::move(out).value() : TrainOutcome{};
  }
  static TrainSettings Dp(double clip, double sigma, double q, uint64_t steps, uint64_t seed) {
    TrainSettings s;
    s.lr = 0.5;
    s.dp = {privacy::DpMode::kSample, clip, sigma, q, steps, false};
    s.noise_seed = seed;
    return s;
  }
  std::unique_ptr<LocalTrainer> trainer_;
  model::Weights global_;
  data::Dataset data_ = Synthetic(48, 5);
  std::atomic<bool> cancel_{false};
};

TEST_F(TrainerDpTest, OneNoiselessStepMovesAtMostLrTimesTheClipNorm) {
  ASSERT_TRUE(trainer_->DpSgdSupport().ok());
  // q = 1: every example in the batch; the clipped sum of 48 gradients of norm <= C, divided by
  // the expected batch size 48, has norm <= C, so the step is at most lr C.
  const double clip = 0.01;
  TrainOutcome o = Train(Dp(clip, 0, 1.0, 1, 1));
  EXPECT_EQ(o.dp_steps, 1u);
  EXPECT_EQ(o.dp_examples, 48);
  EXPECT_EQ(o.dp_clipped, 48);  // random images: every gradient is far above 0.01
  const double norm = Norm(o.delta);
  EXPECT_LE(norm, 0.5 * clip * (1 + 1e-5));
  EXPECT_GT(norm, 0.5 * clip * 0.05);  // and it did move
}

TEST_F(TrainerDpTest, AClipNormThatNeverBindsGivesPlainSgdsStep) {
  TrainSettings sgd;
  sgd.lr = 0.5;
  sgd.batch_size = 48;  // one full batch
  const TrainOutcome plain = Train(sgd);
  const TrainOutcome dp = Train(Dp(1e6, 0, 1.0, 1, 1));
  EXPECT_EQ(dp.dp_clipped, 0);
  ASSERT_EQ(plain.delta.size(), dp.delta.size());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < dp.delta.size(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::fabs(dp.delta[i] - plain.delta[i])));
    max_abs = std::max(max_abs, static_cast<double>(std::fabs(plain.delta[i])));
  }
  EXPECT_GT(max_abs, 0);
  EXPECT_LE(max_diff, 1e-5 * max_abs);
}

TEST_F(TrainerDpTest, TheNoiseAndTheBatchesFollowTheSeed) {
  const TrainOutcome a = Train(Dp(1.0, 1.1, 0.25, 5, 77));
  const TrainOutcome b = Train(Dp(1.0, 1.1, 0.25, 5, 77));
  const TrainOutcome c = Train(Dp(1.0, 1.1, 0.25, 5, 78));
  EXPECT_EQ(a.dp_steps, 5u);
  EXPECT_EQ(a.delta, b.delta);  // bit for bit
  EXPECT_EQ(a.dp_examples, b.dp_examples);
  EXPECT_NE(a.delta, c.delta);
}

TEST_F(TrainerDpTest, TheNoiseHasStandardDeviationSigmaCOverTheExpectedBatch) {
  // C tiny: the clipped sum is negligible next to the noise, so one step's update per coordinate
  // is lr * N(0, (sigma C)^2) / (q n); over ~7850 coordinates the sample deviation is within 5%.
  const double clip = 1e-3, sigma = 2.0, q = 0.5, lr = 0.5;
  TrainOutcome o = Train(Dp(clip, sigma, q, 1, 9));
  const double want = lr * sigma * clip / (q * 48);
  double s = 0, s2 = 0;
  for (float x : o.delta) {
    s += x;
    s2 += static_cast<double>(x) * x;
  }
  const double n = static_cast<double>(o.delta.size());
  const double sd = std::sqrt(s2 / n - (s / n) * (s / n));
  EXPECT_NEAR(sd, want, 0.05 * want);
}

}  // namespace
}  // namespace shoal::worker
