// The built-in server optimizers (server_optimizer.h), one file each; registered by name in
// server_optimizer_registry.cc. Equations as in Reddi et al. 2021, Algorithm 2, with the
// aggregated delta D as pseudo-gradient and eta = strategy.server_lr:
//   sgd       x += eta D                                   (eta = 1: FedAvg, bit for bit)
//   momentum  m = beta m + D;  x += eta m                  (FedAvgM, Hsu et al. 2019)
//   adam      m = b1 m + (1-b1) D;  v = b2 v + (1-b2) D^2;            x += eta m / (sqrt(v) + tau)
//   yogi      m likewise;  v = v - (1-b2) D^2 sign(v - D^2);          x likewise
//   adagrad   m likewise;  v = v + D^2;                               x likewise
// m starts at 0 and v at tau^2 (the paper's v_{-1} >= tau^2); no bias correction (the paper's
// algorithm has none). Each element is computed in double from the float state and rounded
// once to float for the state and the model.
#pragma once

#include <memory>

#include "coordinator/aggregation/server_optimizer.h"

namespace shoal::coordinator {

std::unique_ptr<ServerOptimizer> MakeSgdServerOptimizer(const ServerOptimizerParams& params);
std::unique_ptr<ServerOptimizer> MakeMomentumServerOptimizer(const ServerOptimizerParams& params);
std::unique_ptr<ServerOptimizer> MakeAdamServerOptimizer(const ServerOptimizerParams& params);
std::unique_ptr<ServerOptimizer> MakeYogiServerOptimizer(const ServerOptimizerParams& params);
std::unique_ptr<ServerOptimizer> MakeAdagradServerOptimizer(const ServerOptimizerParams& params);

}  // namespace shoal::coordinator
