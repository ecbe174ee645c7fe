#include "privacy/rdp_accountant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace shoal::privacy {
namespace {

// Steps as TensorFlow Privacy's compute_dp_sgd_privacy counts them: ceil(epochs * n / batch).
int64_t TfSteps(double n, double batch, double epochs) {
  return static_cast<int64_t>(std::ceil(epochs * n / batch));
}

// tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py: (n, batch, sigma, epochs,
// delta) -> (epsilon, order), on compute_dp_sgd_privacy_lib's grid of orders.
TEST(RdpAccountantTest, MatchesTensorFlowPrivacyPublishedVectors) {
  const auto orders = TensorFlowPrivacyOrders();
  struct Case {
    double n, batch, sigma, epochs, delta, epsilon, order;
  };
  for (const Case& c : {Case{60000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 19},
                        Case{100000, 100, 1.0, 30, 1e-7, 1.4154988495444845, 13},
                        Case{1e8, 1024, 0.1, 10, 1e-7, 5907982.31138195, 1.25}}) {
    auto spent =
        ComputeEpsilon(c.batch / c.n, c.sigma, TfSteps(c.n, c.batch, c.epochs), c.delta, orders);
    ASSERT_TRUE(spent.ok()) << spent.status().ToString();
    EXPECT_NEAR(spent->epsilon, c.epsilon, 1e-7 * c.epsilon) << "n " << c.n;
    EXPECT_EQ(spent->order, c.order) << "n " << c.n;
  }
}

// opacus/tests/accountants_test.py: q = 0.04, sigma = 1.5, int(90 / 0.04) = 2250 steps,
// delta = 1e-5 -> 7.32911117143 on Opacus's default grid (the optimum is the fractional 3.9).
TEST(RdpAccountantTest, MatchesOpacusPublishedVector) {
  RdpAccountant accountant(OpacusOrders());
  for (int i = 0; i < 2250; ++i) ASSERT_TRUE(accountant.Compose(0.04, 1.5, 1).ok());
  auto spent = accountant.Spent(1e-5);
  ASSERT_TRUE(spent.ok());
  EXPECT_NEAR(spent->epsilon, 7.32911117143, 1e-9);
  EXPECT_DOUBLE_EQ(spent->order, 3.9);
}

TEST(RdpAccountantTest, ClosedFormsAtTheEdges) {
  // q = 1 is the plain Gaussian mechanism: alpha / (2 sigma^2).
  EXPECT_DOUBLE_EQ(*SubsampledGaussianRdp(1.0, 2.0, 5.0), 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(*SubsampledGaussianRdp(1.0, 2.0, 2.5), 2.5 / 8.0);
  EXPECT_EQ(*SubsampledGaussianRdp(0.0, 1.0, 7.0), 0.0);
  EXPECT_TRUE(std::isinf(*SubsampledGaussianRdp(0.1, 0.0, 7.0)));
  // No noise: no finite epsilon at any order.
  auto spent = ComputeEpsilon(0.1, 0.0, 10, 1e-5);
  ASSERT_TRUE(spent.ok());
  EXPECT_TRUE(std::isinf(spent->epsilon));
  // Nothing sampled: nothing spent.
  EXPECT_EQ(ComputeEpsilon(0.0, 1.0, 1000, 1e-5)->epsilon, 0.0);
}

// The fractional series and the integer expansion are two formulas for one function: on both
// sides of an integer order they must agree with the integer one.
TEST(RdpAccountantTest, FractionalSeriesMeetsTheIntegerExpansion) {
  for (double q : {0.001, 0.01, 0.2}) {
    for (double sigma : {0.7, 1.1, 4.0}) {
      for (double order : {2.0, 3.0, 8.0, 32.0}) {
        const double at = *SubsampledGaussianRdp(q, sigma, order);
        const double below = *SubsampledGaussianRdp(q, sigma, order - 1e-7);
        const double above = *SubsampledGaussianRdp(q, sigma, order + 1e-7);
        EXPECT_NEAR(below, at, 1e-5 * at + 1e-15) << q << " " << sigma << " " << order;
        EXPECT_NEAR(above, at, 1e-5 * at + 1e-15) << q << " " << sigma << " " << order;
        EXPECT_LE(below, above) << "RDP grows with the order";
      }
    }
  }
}

TEST(RdpAccountantTest, CompositionIsAdditiveAndMonotone) {
  RdpAccountant twice, once;
  ASSERT_TRUE(twice.Compose(0.01, 1.1, 300).ok());
  ASSERT_TRUE(twice.Compose(0.01, 1.1, 300).ok());
  ASSERT_TRUE(once.Compose(0.01, 1.1, 600).ok());
  for (size_t i = 0; i < once.rdp().size(); ++i)
    EXPECT_NEAR(twice.rdp()[i], once.rdp()[i], 1e-12 * once.rdp()[i]);
  const double base = ComputeEpsilon(0.01, 1.1, 600, 1e-5)->epsilon;
  EXPECT_LT(ComputeEpsilon(0.01, 1.2, 600, 1e-5)->epsilon, base);  // more noise
  EXPECT_GT(ComputeEpsilon(0.01, 1.1, 700, 1e-5)->epsilon, base);  // more steps
  EXPECT_GT(ComputeEpsilon(0.02, 1.1, 600, 1e-5)->epsilon, base);  // higher rate
  EXPECT_GT(ComputeEpsilon(0.01, 1.1, 600, 1e-6)->epsilon, base);  // smaller delta
}

TEST(RdpAccountantTest, NoiseMultiplierForTargetIsTheSmallestThatMeetsIt) {
  // Inverts the first TensorFlow Privacy vector.
  auto sigma =
      NoiseMultiplierFor(150.0 / 60000, 6000, 1e-5, 0.7242234026109595, TensorFlowPrivacyOrders());
  ASSERT_TRUE(sigma.ok()) << sigma.status().ToString();
  EXPECT_NEAR(*sigma, 1.3, 1e-7);
  // Opacus's get_noise_multiplier(target 8, delta 1e-5, q 0.04, 90 epochs) answers 1.4253 by
  // stopping within 0.01 of the target; the smallest sigma that meets it is 1.41579.
  sigma = NoiseMultiplierFor(0.04, 2250, 1e-5, 8.0, OpacusOrders());
  ASSERT_TRUE(sigma.ok());
  EXPECT_NEAR(*sigma, 1.4157871436, 1e-8);
  EXPECT_LE(ComputeEpsilon(0.04, *sigma, 2250, 1e-5, OpacusOrders())->epsilon, 8.0);
  EXPECT_GT(ComputeEpsilon(0.04, *sigma * (1 - 1e-7), 2250, 1e-5, OpacusOrders())->epsilon, 8.0);
  EXPECT_LT(*sigma, 1.425307617);
}

TEST(RdpAccountantTest, BadArgumentsAreNamed) {
  auto expect_error = [](const Status& s, const char* what) {
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
  };
  expect_error(SubsampledGaussianRdp(1.5, 1, 2).status(), "sampling rate");
  expect_error(SubsampledGaussianRdp(std::nan(""), 1, 2).status(), "sampling rate");
  expect_error(SubsampledGaussianRdp(0.1, -1, 2).status(), "noise multiplier");
  expect_error(SubsampledGaussianRdp(0.1, 1, 1.0).status(), "orders");
  expect_error(ComputeEpsilon(0.1, 1, 10, 0).status(), "delta");
  expect_error(ComputeEpsilon(0.1, 1, 10, 1).status(), "delta");
  expect_error(ComputeEpsilon(0.1, 1, 10, 1e-5, {}).status(), "empty");
  RdpAccountant accountant;
  expect_error(accountant.Compose(0.1, 1, -1), "steps");
  for (double r : accountant.rdp()) EXPECT_EQ(r, 0.0) << "a refused step changes nothing";
  expect_error(NoiseMultiplierFor(0.1, 10, 1e-5, 0).status(), "target epsilon");
  // A budget no noise can meet: 1e-12 at delta 1e-5 after many full-batch steps.
  expect_error(NoiseMultiplierFor(1.0, 1000000, 1e-5, 1e-12).status(), "no noise multiplier");
}

}  // namespace
}  // namespace shoal::privacy
