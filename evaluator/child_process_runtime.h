// The ModelRuntime that shoal-coordinator uses: its LibTorch work (initial weights, central
// evaluation) runs in a child process, shoal-evaluator, so that the coordinator itself never
// loads LibTorch:
//   - the process that holds the federation's keys and state does not map LibTorch's 291 shared
//     libraries nor run a user-supplied TorchScript model, and a crash or runaway allocation in
//     either ends the child, not the federation (a new child takes over the central evaluation,
//     see RemoteEvaluator in child_process_runtime.cc; if that fails too, the round engine stops
//     the run and a restart resumes);
//   - the coordinator's memory is its own: about 40 MiB + the models it holds, instead of
//     LibTorch's 151 MiB floor + the test set + evaluation workspace on top.
// The child exists while it has work: from Configure to Release (start-up: initial weights)
// and, with central evaluation, while a CentralEvaluator from OpenEvaluator lives. Calls are
// serialized on one connection (wire.h); the child is started with its end as fd 3 and none of
// the coordinator's other descriptors.
//
// The executable: $SHOAL_EVALUATOR, else shoal-evaluator beside the running executable, else
// on PATH (NotFound naming where it looked). Linking this (shoal_evaluator_child) does not
// load LibTorch.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "evaluator/model_runtime.h"

namespace shoal::evaluator {

// `readable`: the files and directories the child may read test sets from (shoal-evaluator
// --read); Landlock refuses it every other file (base/landlock.h), so an OpenEvaluator on data
// elsewhere fails with the loader's "Permission denied".
std::unique_ptr<ModelRuntime> MakeChildProcessRuntime(std::vector<std::string> readable);

}  // namespace shoal::evaluator
