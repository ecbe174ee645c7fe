// LibTorch process settings, behind a torch-free header.
#pragma once

#include <string>

namespace shoal::nn {

// Sets LibTorch's intra-op thread count (several workers share a machine: one each is fastest)
// and returns "blas=<library> intra_op_threads=<n>" for the start-up log.
std::string ConfigureTorchRuntime(int threads);

}  // namespace shoal::nn
