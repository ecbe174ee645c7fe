// The ModelRuntime that runs LibTorch in the calling process: what shoal-evaluator serves to
// the coordinator, and what tests use directly. Linking it (shoal_evaluator_local) loads
// LibTorch; this header does not include it.
#pragma once

#include <memory>

#include "evaluator/model_runtime.h"

namespace shoal::evaluator {

std::unique_ptr<ModelRuntime> MakeLocalRuntime();

}  // namespace shoal::evaluator
