// Rényi differential privacy (RDP) accounting for the Poisson-subsampled Gaussian mechanism:
// the mechanism of DP-SGD (each step samples every record with probability q, clips each
// per-record gradient to norm C and adds N(0, (sigma C)^2) noise) and of client-level DP-FedAvg
// (each round samples each silo with probability q, clips each update and noises the sum).
//
// The RDP of one step at order alpha is computed as in Mironov, Talwar and Zhang, "Rényi
// Differential Privacy of the Sampled Gaussian Mechanism" (2019): at integer orders the exact
// binomial expansion (their Section 3.3), at fractional orders the two-sided series with erfc
// terms (their Section 3.2), summed until the terms fall below e^-30 - the same conventions as
// TensorFlow Privacy and Opacus, so results agree with theirs on the same grid of orders. RDP
// composes additively over steps. It is converted to (epsilon, delta) with the improved bound of
// Balle et al., "Hypothesis Testing Interpretations and Renyi Differential Privacy" (2020,
// Theorem 21): eps = rdp + log1p(-1/alpha) - log(delta * alpha) / (alpha - 1), minimised over the
// grid (orders <= 1.01 are skipped: the bound is unstable there).
//
// A "step" is one application of the mechanism: one Poisson-sampled batch for sample-level
// DP-SGD (so an epoch is about 1/q steps), one round for client-level DP.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"

namespace shoal::privacy {

// Orders of the default grid: 1.1, 1.2, ..., 10.9, then 11, 12, ..., 63, then 128, 256, 512 -
// Opacus's grid with TensorFlow Privacy's large orders added (they matter at small epsilon).
std::vector<double> DefaultOrders();
// The grids of the two reference implementations, for comparisons and tests.
std::vector<double> OpacusOrders();             // 1.1 .. 10.9 by 0.1, then 12 .. 63
std::vector<double> TensorFlowPrivacyOrders();  // 1.25 .. 4.5, 5 .. 63, 128, 256, 512

// RDP at `order` (> 1) of one step of the Gaussian mechanism with noise multiplier `sigma`
// (>= 0), Poisson-subsampled at rate `q` (in [0, 1]). +inf when sigma is 0 (and q > 0).
Result<double> SubsampledGaussianRdp(double q, double sigma, double order);

struct PrivacySpent {
  double epsilon = 0;
  double order = 0;  // the order at which the bound is tightest
};

// Best (epsilon, order) over `orders` for the accumulated `rdp` (one value per order) at
// `delta` in (0, 1). epsilon is +inf when no order gives a finite bound.
Result<PrivacySpent> EpsilonFromRdp(const std::vector<double>& orders,
                                    const std::vector<double>& rdp, double delta);

// Accumulates the RDP of steps that may differ in q and sigma (e.g. a silo that is sampled at a
// changing rate). Its state is the RDP vector, so it can be stored with a model version.
class RdpAccountant {
 public:
  explicit RdpAccountant(std::vector<double> orders = DefaultOrders());

  // Adds `steps` steps at rate q and noise multiplier sigma. Invalid arguments change nothing.
  Status Compose(double q, double sigma, int64_t steps);
  Result<PrivacySpent> Spent(double delta) const { return EpsilonFromRdp(orders_, rdp_, delta); }

  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;
  // The per-step RDP of the last (q, sigma), reused while they repeat (one Compose per round).
  double last_q_ = -1, last_sigma_ = -1;
  std::vector<double> last_step_;
};

// epsilon after `steps` steps at rate q and noise multiplier sigma.
Result<PrivacySpent> ComputeEpsilon(double q, double sigma, int64_t steps, double delta,
                                    const std::vector<double>& orders = DefaultOrders());

// The smallest noise multiplier (to a relative 1e-9, rounded up so the budget holds) with which
// `steps` steps at rate q spend at most `target_epsilon` at `delta`. Fails when even sigma =
// kMaxNoiseMultiplier does not reach the target.
inline constexpr double kMaxNoiseMultiplier = 1e4;
Result<double> NoiseMultiplierFor(double q, int64_t steps, double delta, double target_epsilon,
                                  const std::vector<double>& orders = DefaultOrders());

}  // namespace shoal::privacy
