// `shoalctl dp-epsilon`: the (epsilon, delta) differential-privacy cost of the Poisson-subsampled
// Gaussian mechanism after N steps (privacy/rdp_accountant.h), or the noise multiplier a target
// epsilon needs.
//
//   shoalctl dp-epsilon --sampling-rate Q --noise-multiplier S --steps N --delta D
//   shoalctl dp-epsilon --sampling-rate Q --target-epsilon E --steps N --delta D
//                       [--orders default|opacus|tensorflow]
//
// Errors print "error: <message>" and exit with code 2.
#pragma once

#include <CLI/CLI.hpp>

namespace shoal::ctl {

void AddDpCommand(CLI::App& app);

}  // namespace shoal::ctl
