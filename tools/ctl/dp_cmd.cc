#include "tools/ctl/dp_cmd.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "privacy/rdp_accountant.h"

namespace shoal::ctl {
namespace {

struct DpFlags {
  double sampling_rate = 0;
  std::optional<double> noise_multiplier;
  std::optional<double> target_epsilon;
  int64_t steps = 0;
  double delta = 0;
  std::string orders = "default";
};

Result<std::vector<double>> OrdersNamed(const std::string& name) {
  if (name == "default") return privacy::DefaultOrders();
  if (name == "opacus") return privacy::OpacusOrders();
  if (name == "tensorflow") return privacy::TensorFlowPrivacyOrders();
  return InvalidArgument("unknown --orders '" + name + "' (default, opacus or tensorflow)");
}

std::string Format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

Status RunDpEpsilon(const DpFlags& flags) {
  SHOAL_ASSIGN_OR_RETURN(std::vector<double> orders, OrdersNamed(flags.orders));
  double sigma;
  if (flags.target_epsilon) {
    SHOAL_ASSIGN_OR_RETURN(
        sigma, privacy::NoiseMultiplierFor(flags.sampling_rate, flags.steps, flags.delta,
                                           *flags.target_epsilon, orders));
    // Printed to 7 decimals, rounded up so that the printed value still meets the budget; the
    // epsilon below is computed at the printed value.
    sigma = std::ceil(sigma * 1e7) / 1e7;
  } else {
    sigma = *flags.noise_multiplier;
  }
  SHOAL_ASSIGN_OR_RETURN(
      privacy::PrivacySpent spent,
      privacy::ComputeEpsilon(flags.sampling_rate, sigma, flags.steps, flags.delta, orders));
  if (flags.target_epsilon) {
    std::cout << "noise multiplier " << Format("%.7f", sigma) << " for epsilon "
              << Format("%.7g", *flags.target_epsilon) << "\n";
  }
  std::cout << "epsilon " << Format("%.7f", spent.epsilon) << " at order "
            << Format("%g", spent.order) << " (sampling rate " << Format("%g", flags.sampling_rate)
            << ", noise multiplier " << Format("%.7g", sigma) << ", " << flags.steps
            << " steps, delta " << Format("%g", flags.delta) << ", " << flags.orders
            << " orders)\n";
  return Status::Ok();
}

}  // namespace

void AddDpCommand(CLI::App& app) {
  auto flags = std::make_shared<DpFlags>();
  CLI::App* cmd = app.add_subcommand(
      "dp-epsilon",
      "Differential privacy of N Poisson-subsampled Gaussian steps (RDP accountant): epsilon for "
      "a noise multiplier, or the noise multiplier for a target epsilon");
  cmd->add_option("--sampling-rate", flags->sampling_rate,
                  "Probability q that a record (sample-level) or a silo (client-level) is in a "
                  "step")
      ->required();
  auto* sigma = cmd->add_option("--noise-multiplier", flags->noise_multiplier,
                                "Noise standard deviation / clipping norm");
  auto* target = cmd->add_option("--target-epsilon", flags->target_epsilon,
                                 "Print the smallest noise multiplier that spends at most this");
  sigma->excludes(target);
  target->excludes(sigma);
  cmd->add_option("--steps", flags->steps,
                  "Steps: sampled batches for DP-SGD (about epochs / q), rounds for client-level "
                  "DP")
      ->required();
  cmd->add_option("--delta", flags->delta, "Target delta, e.g. 1e-5 (below 1 / records)")
      ->required();
  cmd->add_option("--orders", flags->orders,
                  "Grid of RDP orders: default (Opacus's plus 128, 256, 512), opacus or "
                  "tensorflow")
      ->capture_default_str();
  cmd->callback([flags]() {
    Status st = flags->noise_multiplier || flags->target_epsilon
                    ? RunDpEpsilon(*flags)
                    : InvalidArgument("give --noise-multiplier or --target-epsilon");
    if (!st.ok()) {
      std::cout.flush();
      std::cerr << "error: " << st.message() << std::endl;
      throw CLI::RuntimeError(2);
    }
  });
}

}  // namespace shoal::ctl
