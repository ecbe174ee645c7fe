// The operator allow-list for user-supplied TorchScript (issue #20, item 1).
//
// A TorchScript archive is a program: its code can call any operator LibTorch registers, among
// them aten::from_file (reads or creates any file the process may open), prim::Print and
// aten::warn (write to the process's output), storage and pointer operators, and custom ops.
// Whoever supplies the file (on a worker: the coordinator) would run that code with the
// loading process's rights. Every load of user TorchScript therefore goes through
// LoadCheckedScriptModule, which refuses an archive unless every graph reachable from the
// module uses only the operators of the allow-list in script_check.cc (pure tensor math, NN
// layers, shape operators, tensor creation from numbers, and the structural prim:: nodes that
// scripted models need), naming the first operator and the method that uses it otherwise.
//
// What is checked, before any of the archive's code runs:
//   1. the archive: its code must not define __setstate__ (torch::jit::load runs it while
//      unpickling, before a loaded module could be checked); legacy (pre-1.4) archives without
//      data.pkl are refused;
//   2. the loaded module: every method and forward (pre-)hook of every class reachable from the
//      root module (submodules, attributes of class type, classes whose methods are called),
//      every function reached through prim::CallFunction, and the nested blocks of prim::If and
//      prim::Loop. A method call on an interface or a built-in (C++) class cannot be followed
//      statically and is refused.
//
// This header does not include LibTorch.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace shoal::nn {

// Refuses the archive `bytes` (InvalidArgument naming the record) when it is not a TorchScript
// zip archive, has no data.pkl (the legacy format), or its code defines __setstate__.
Status CheckScriptArchive(const std::string& bytes);

// Refuses `module` (InvalidArgument "TorchScript model refused: <method> calls <operator>, which
// is not on Shoal's operator allow-list ...") when a graph reachable from it uses an operator
// that is not on the allow-list, or calls what cannot be checked.
Status CheckScriptModule(const torch::jit::Module& module);

// CheckScriptArchive, torch::jit::load onto the CPU, CheckScriptModule: the one way user
// TorchScript is loaded. InvalidArgument for an archive that does not load (the first line of
// LibTorch's message) or is refused.
Status LoadCheckedScriptModule(const std::string& bytes, torch::jit::Module* out);

// The qualified names of the allowed operators ("aten::linear", "prim::If", ...), sorted: for
// the tests and the documentation.
std::vector<std::string> AllowedScriptOperators();

}  // namespace shoal::nn
