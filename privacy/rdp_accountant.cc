#include "privacy/rdp_accountant.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <utility>

namespace shoal::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// The fractional-order series stops once both of its terms fall below e^-30, as in Mironov et
// al.'s reference code; a bound on the number of terms guards against parameters for which the
// terms would shrink too slowly to matter in practice (none of the tested ranges come close).
constexpr double kSeriesStopLog = -30;
constexpr int kMaxSeriesTerms = 100000;
// Orders at or below this are skipped in the conversion (the bound diverges as alpha -> 1).
constexpr double kMinConversionOrder = 1.01;

std::string Num(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

// log(e^a + e^b) without overflow.
double LogAdd(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double hi = std::max(a, b);
  return hi + std::log1p(std::exp(-std::fabs(a - b)));
}

// log(e^a - e^b) for a >= b; when e^(a-b) overflows the difference is e^a to double precision.
double LogSub(double a, double b) {
  if (b == -kInf) return a;
  if (a == b) return -kInf;
  const double d = std::expm1(a - b);
  if (std::isinf(d)) return a;
  return std::log(d) + b;
}

// log(erfc(x)), accurate where erfc underflows (x > ~26): the asymptotic series at infinity,
// erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * exp(-1/(2x^2) + 5/(8x^4) - 37/(24x^6) + 353/(64x^8)).
double LogErfc(double x) {
  const double r = std::erfc(x);
  if (r > 0) return std::log(r);
  const double x2 = x * x;
  return -0.5 * std::log(M_PI) - std::log(x) - x2 - 0.5 / x2 + 0.625 / (x2 * x2) -
         37.0 / 24.0 / (x2 * x2 * x2) + 353.0 / 64.0 / (x2 * x2 * x2 * x2);
}

double LogBinomial(double n, double k) {
  return std::lgamma(n + 1) - std::lgamma(k + 1) - std::lgamma(n - k + 1);
}

// log A_alpha for integer alpha: log sum_i C(alpha, i) q^i (1-q)^(alpha-i) e^((i^2 - i)/(2s^2)).
double LogAInteger(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  const double lq = std::log(q), l1q = std::log1p(-q), two_s2 = 2 * sigma * sigma;
  for (int64_t i = 0; i <= alpha; ++i) {
    const double di = static_cast<double>(i);
    log_a = LogAdd(log_a, LogBinomial(static_cast<double>(alpha), di) + di * lq +
                              static_cast<double>(alpha - i) * l1q + (di * di - di) / two_s2);
  }
  return log_a;
}

// log A_alpha for fractional alpha: the integrals over (-inf, z0] and [z0, inf) as two series
// whose generalised binomial coefficients change sign once i passes alpha.
Result<double> LogAFractional(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  const double lq = std::log(q), l1q = std::log1p(-q), two_s2 = 2 * sigma * sigma;
  const double log_half = std::log(0.5), s_sqrt2 = sigma * std::sqrt(2.0);
  double log_coef = 0;  // log |C(alpha, i)|
  bool positive = true;
  for (int i = 0; i < kMaxSeriesTerms; ++i) {
    const double di = i, j = alpha - di;
    const double log_t0 = log_coef + di * lq + j * l1q;
    const double log_t1 = log_coef + j * lq + di * l1q;
    const double log_e0 = log_half + LogErfc((di - z0) / s_sqrt2);
    const double log_e1 = log_half + LogErfc((z0 - j) / s_sqrt2);
    const double log_s0 = log_t0 + (di * di - di) / two_s2 + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / two_s2 + log_e1;
    if (positive) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < kSeriesStopLog) return LogAdd(log_a0, log_a1);
    const double ratio = (alpha - di) / (di + 1);  // C(alpha, i+1) / C(alpha, i)
    if (ratio < 0) positive = !positive;
    log_coef += std::log(std::fabs(ratio));
  }
  return Internal("RDP series at order " + Num(alpha) + " (q " + Num(q) + ", sigma " + Num(sigma) +
                  ") did not converge in " + std::to_string(kMaxSeriesTerms) + " terms");
}

Status CheckRate(double q) {
  if (!(q >= 0 && q <= 1)) return InvalidArgument("sampling rate must be in [0, 1], got " + Num(q));
  return Status::Ok();
}
Status CheckSigma(double sigma) {
  if (!(sigma >= 0) || std::isinf(sigma))
    return InvalidArgument("noise multiplier must be finite and >= 0, got " + Num(sigma));
  return Status::Ok();
}
Status CheckDelta(double delta) {
  if (!(delta > 0 && delta < 1))
    return InvalidArgument("delta must be in (0, 1), got " + Num(delta));
  return Status::Ok();
}
Status CheckOrders(const std::vector<double>& orders) {
  if (orders.empty()) return InvalidArgument("the grid of RDP orders is empty");
  for (double a : orders)
    if (!(a > 1) || std::isinf(a))
      return InvalidArgument("RDP orders must be finite and > 1, got " + Num(a));
  return Status::Ok();
}

}  // namespace

std::vector<double> OpacusOrders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

std::vector<double> TensorFlowPrivacyOrders() {
  std::vector<double> orders = {1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5};
  for (int a = 5; a < 64; ++a) orders.push_back(a);
  for (double a : {128., 256., 512.}) orders.push_back(a);
  return orders;
}

std::vector<double> DefaultOrders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 11; a < 64; ++a) orders.push_back(a);
  for (double a : {128., 256., 512.}) orders.push_back(a);
  return orders;
}

Result<double> SubsampledGaussianRdp(double q, double sigma, double order) {
  SHOAL_RETURN_IF_ERROR(CheckRate(q));
  SHOAL_RETURN_IF_ERROR(CheckSigma(sigma));
  SHOAL_RETURN_IF_ERROR(CheckOrders({order}));
  if (q == 0) return 0.0;
  if (sigma == 0) return kInf;
  if (q == 1) return order / (2 * sigma * sigma);  // the plain Gaussian mechanism
  double log_a;
  if (order == std::floor(order)) {
    log_a = LogAInteger(q, sigma, static_cast<int64_t>(order));
  } else {
    SHOAL_ASSIGN_OR_RETURN(log_a, LogAFractional(q, sigma, order));
  }
  return log_a / (order - 1);
}

Result<PrivacySpent> EpsilonFromRdp(const std::vector<double>& orders,
                                    const std::vector<double>& rdp, double delta) {
  SHOAL_RETURN_IF_ERROR(CheckOrders(orders));
  SHOAL_RETURN_IF_ERROR(CheckDelta(delta));
  if (rdp.size() != orders.size())
    return InvalidArgument("RDP vector has " + std::to_string(rdp.size()) + " values for " +
                           std::to_string(orders.size()) + " orders");
  PrivacySpent best{kInf, orders.front()};
  for (size_t i = 0; i < orders.size(); ++i) {
    const double a = orders[i], r = rdp[i];
    if (std::isnan(r) || r < 0) return InvalidArgument("RDP at order " + Num(a) + " is " + Num(r));
    double eps;
    if (delta * delta + std::expm1(-r) >= 0) {
      eps = 0;  // delta >= sqrt(1 - e^-KL) already: the pair is (0, delta)-DP
    } else if (a > kMinConversionOrder) {
      eps = r + std::log1p(-1 / a) - std::log(delta * a) / (a - 1);
    } else {
      eps = kInf;
    }
    if (eps < best.epsilon) best = {eps, a};
  }
  best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

Status RdpAccountant::Compose(double q, double sigma, int64_t steps) {
  SHOAL_RETURN_IF_ERROR(CheckOrders(orders_));
  if (steps < 0) return InvalidArgument("steps must be >= 0, got " + std::to_string(steps));
  if (q != last_q_ || sigma != last_sigma_ || last_step_.empty()) {
    std::vector<double> step(orders_.size());
    for (size_t i = 0; i < orders_.size(); ++i) {
      SHOAL_ASSIGN_OR_RETURN(step[i], SubsampledGaussianRdp(q, sigma, orders_[i]));
    }
    last_step_ = std::move(step);
    last_q_ = q;
    last_sigma_ = sigma;
  }
  for (size_t i = 0; i < orders_.size(); ++i) rdp_[i] += last_step_[i] * static_cast<double>(steps);
  return Status::Ok();
}

Result<PrivacySpent> ComputeEpsilon(double q, double sigma, int64_t steps, double delta,
                                    const std::vector<double>& orders) {
  RdpAccountant accountant(orders);
  SHOAL_RETURN_IF_ERROR(accountant.Compose(q, sigma, steps));
  return accountant.Spent(delta);
}

Result<double> NoiseMultiplierFor(double q, int64_t steps, double delta, double target_epsilon,
                                  const std::vector<double>& orders) {
  if (!(target_epsilon > 0) || std::isinf(target_epsilon))
    return InvalidArgument("target epsilon must be finite and > 0, got " + Num(target_epsilon));
  SHOAL_RETURN_IF_ERROR(CheckDelta(delta));
  auto eps_at = [&](double sigma) -> Result<double> {
    SHOAL_ASSIGN_OR_RETURN(PrivacySpent spent, ComputeEpsilon(q, sigma, steps, delta, orders));
    return spent.epsilon;
  };
  // epsilon falls as sigma grows: bracket the target by doubling, then bisect. `high` always
  // meets the budget, so the answer is rounded up, never down.
  double low = 0, high = 1;
  for (;;) {
    SHOAL_ASSIGN_OR_RETURN(double eps, eps_at(high));
    if (eps <= target_epsilon) break;
    low = high;
    high *= 2;
    if (high > kMaxNoiseMultiplier)
      return InvalidArgument("no noise multiplier up to " + Num(kMaxNoiseMultiplier) +
                             " reaches epsilon " + Num(target_epsilon) + " at delta " + Num(delta) +
                             " after " + std::to_string(steps) + " steps at rate " + Num(q));
  }
  while (high - low > 1e-9 * high) {
    const double mid = 0.5 * (low + high);
    SHOAL_ASSIGN_OR_RETURN(double eps, eps_at(mid));
    (eps <= target_epsilon ? high : low) = mid;
  }
  return high;
}

}  // namespace shoal::privacy
