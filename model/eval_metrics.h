// Result of evaluating a model on a dataset; shared by central and federated evaluation.
#pragma once

#include <cstdint>

namespace shoal::model {

struct EvalMetrics {
  int64_t count = 0;
  double loss = 0;         // mean cross-entropy
  double accuracy = 0;     // fraction in [0, 1]
  double cpu_seconds = 0;  // CPU time of the evaluating thread (LibTorch's pool threads excluded)
};

}  // namespace shoal::model
