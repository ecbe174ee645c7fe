#include "nn/script_check.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/script.h>

#include <algorithm>
#include <deque>
#include <set>
#include <sstream>
#include <unordered_set>
#include <utility>

namespace shoal::nn {
namespace {

// The allow-list, by family. An operator is allowed by its qualified name (all its overloads):
// every family below computes tensors (or the scalars, lists and strings of TorchScript's
// language) from its inputs in memory, and none of them names a file, a storage, a raw pointer,
// a device other than the CPU's memory, or the process's output. What is not listed is refused,
// in particular: aten::from_file (reads and creates files), prim::Print and aten::warn (write
// to the process's output), aten::set_ / storage and data_ptr operators (alias raw memory),
// torch.classes (C++ code outside this list), custom and backend namespaces (quantized::,
// _caffe2::, any user library), prim::PythonOp, and every operator added to LibTorch later.
// Extending the list: add a name to its family after checking that no overload of it reads or
// writes anything but its tensor arguments and results.
const std::unordered_set<std::string>& AllowList() {
  static const auto* const kAllowed = new std::unordered_set<std::string>([] {
    std::unordered_set<std::string> s;
    auto add = [&s](const char* ns, std::initializer_list<const char*> names) {
      for (const char* n : names) s.insert(std::string(ns) + "::" + n);
    };
    // Structure of a scripted program: constants, attributes of the module (its parameters and
    // submodules), containers, control flow (the nested blocks are checked too), calls (their
    // targets are checked too), exceptions (`raise`, `assert`) and type refinement.
    add("prim", {"Constant",      "GetAttr",
                 "SetAttr",       "CallMethod",
                 "CallFunction",  "ListConstruct",
                 "ListUnpack",    "TupleConstruct",
                 "TupleUnpack",   "TupleIndex",
                 "TupleSlice",    "DictConstruct",
                 "DictIndex",     "If",
                 "Loop",          "RaiseException",
                 "Uninitialized", "unchecked_cast",
                 "NumToTensor",   "device",
                 "dtype",         "layout",
                 "requires_grad", "is_cuda",
                 "min",           "max",
                 "abs",           "isinstance",
                 "data",          "shape"});
    // Scalars, lists and strings of the TorchScript language (sizes, indices, error messages).
    add("aten", {"__getitem__",
                 "__setitem__",
                 "_set_item",
                 "__contains__",
                 "__is__",
                 "__isnot__",
                 "__not__",
                 "__and__",
                 "__or__",
                 "__xor__",
                 "__range_length",
                 "__derive_index",
                 "len",
                 "append",
                 "extend",
                 "insert",
                 "pop",
                 "list",
                 "copy",
                 "keys",
                 "values",
                 "items",
                 "format",
                 "str",
                 "Int",
                 "Float",
                 "Bool",
                 "ScalarImplicit",
                 "IntImplicit",
                 "FloatImplicit",
                 "floordiv",
                 "mod",
                 "eq",
                 "ne",
                 "lt",
                 "le",
                 "gt",
                 "ge",
                 "neg",
                 "add",
                 "sub",
                 "mul",
                 "div",
                 "pow",
                 "remainder",
                 "floor",
                 "ceil",
                 "abs",
                 "min",
                 "max",
                 "size",
                 "dim",
                 "numel",
                 "is_floating_point",
                 "item",
                 "tolist",
                 "get",
                 "dict",
                 "sorted",
                 "sort",
                 "reverse",
                 "index",
                 "count",
                 "clear",
                 "slice",
                 "join",
                 "startswith",
                 "endswith",
                 "lower",
                 "upper",
                 "strip",
                 "split"});
    // Element-wise math and comparisons (and their in-place forms on the tensors they get).
    add("aten",
        {"add_",       "sub_",        "mul_",        "div_",         "true_divide", "floor_divide",
         "fmod",       "pow_",        "sqrt",        "rsqrt",        "square",      "exp",
         "exp2",       "expm1",       "log",         "log1p",        "log2",        "log10",
         "sin",        "cos",         "tan",         "asin",         "acos",        "atan",
         "atan2",      "sinh",        "cosh",        "tanh",         "tanh_",       "asinh",
         "acosh",      "atanh",       "sigmoid",     "sigmoid_",     "sign",        "round",
         "trunc",      "frac",        "reciprocal",  "clamp",        "clamp_",      "clamp_min",
         "clamp_max",  "clip",        "erf",         "erfc",         "lerp",        "addcmul",
         "addcdiv",    "maximum",     "minimum",     "where",        "eq_",         "logical_and",
         "logical_or", "logical_not", "logical_xor", "bitwise_not",  "isnan",       "isinf",
         "isfinite",   "nan_to_num",  "masked_fill", "masked_fill_", "zero_",       "fill_",
         "copy_",      "neg_",        "abs_",        "exp_",         "log_",        "sqrt_",
         "hypot",      "xlogy",       "rsub"});
    // Reductions and sorting.
    add("aten", {"sum", "mean", "prod", "amax",           "amin",      "argmax",     "argmin",
                 "std", "var",  "norm", "frobenius_norm", "logsumexp", "cumsum",     "cumprod",
                 "all", "any",  "topk", "median",         "argsort",   "max_values", "min_values"});
    // Linear algebra.
    add("aten", {"matmul", "mm", "bmm", "addmm", "addmv", "mv", "dot", "linear", "einsum",
                 "baddbmm", "addbmm", "outer", "bilinear", "t", "tensordot"});
    // Neural-network layers, activations, normalization, pooling, losses.
    add("aten", {"relu",
                 "relu_",
                 "relu6",
                 "leaky_relu",
                 "leaky_relu_",
                 "elu",
                 "elu_",
                 "selu",
                 "celu",
                 "gelu",
                 "silu",
                 "mish",
                 "hardtanh",
                 "hardtanh_",
                 "hardswish",
                 "hardsigmoid",
                 "softplus",
                 "softsign",
                 "prelu",
                 "glu",
                 "threshold",
                 "threshold_",
                 "softmax",
                 "log_softmax",
                 "conv1d",
                 "conv2d",
                 "conv3d",
                 "conv_transpose1d",
                 "conv_transpose2d",
                 "conv_transpose3d",
                 "max_pool1d",
                 "max_pool2d",
                 "max_pool3d",
                 "max_pool1d_with_indices",
                 "max_pool2d_with_indices",
                 "avg_pool1d",
                 "avg_pool2d",
                 "avg_pool3d",
                 "adaptive_avg_pool1d",
                 "adaptive_avg_pool2d",
                 "adaptive_avg_pool3d",
                 "adaptive_max_pool1d",
                 "adaptive_max_pool2d",
                 "dropout",
                 "dropout_",
                 "feature_dropout",
                 "alpha_dropout",
                 "batch_norm",
                 "layer_norm",
                 "group_norm",
                 "instance_norm",
                 "embedding",
                 "pad",
                 "constant_pad_nd",
                 "reflection_pad1d",
                 "reflection_pad2d",
                 "replication_pad1d",
                 "replication_pad2d",
                 "pixel_shuffle",
                 "nll_loss",
                 "cross_entropy_loss",
                 "mse_loss",
                 "l1_loss",
                 "binary_cross_entropy",
                 "binary_cross_entropy_with_logits",
                 "one_hot",
                 "dist",
                 "cosine_similarity",
                 "pairwise_distance",
                 "upsample_nearest2d",
                 "upsample_bilinear2d"});
    // Shapes, views, joins, indexing (bounds-checked by LibTorch).
    add("aten", {"view",      "view_as",      "reshape",    "reshape_as",   "flatten",
                 "unflatten", "squeeze",      "squeeze_",   "unsqueeze",    "unsqueeze_",
                 "permute",   "transpose",    "transpose_", "contiguous",   "expand",
                 "expand_as", "repeat",       "tile",       "cat",          "concat",
                 "stack",     "hstack",       "vstack",     "split",        "split_with_sizes",
                 "chunk",     "narrow",       "select",     "index_select", "gather",
                 "scatter",   "scatter_add",  "unbind",     "flip",         "roll",
                 "movedim",   "tril",         "triu",       "diag",         "masked_select",
                 "nonzero",   "broadcast_to", "meshgrid"});
    // New tensors from numbers (no file, storage or pointer), conversions and copies on the CPU.
    add("aten", {"zeros",
                 "ones",
                 "full",
                 "empty",
                 "zeros_like",
                 "ones_like",
                 "full_like",
                 "empty_like",
                 "rand",
                 "randn",
                 "rand_like",
                 "randn_like",
                 "randint",
                 "arange",
                 "linspace",
                 "tensor",
                 "scalar_tensor",
                 "eye",
                 "clone",
                 "detach",
                 "detach_",
                 "to",
                 "type_as",
                 "float",
                 "double",
                 "long",
                 "int",
                 "bool",
                 "half",
                 "bernoulli",
                 "bernoulli_",
                 "normal",
                 "uniform_",
                 "normal_",
                 "requires_grad_",
                 "new_zeros",
                 "new_ones",
                 "new_full",
                 "new_empty",
                 "new_tensor",
                 "cpu"});
    return s;
  }());
  return *kAllowed;
}

std::string QualifiedName(const torch::jit::Function& fn) { return fn.qualname().qualifiedName(); }

// Walks every graph reachable from the functions it is given (breadth first, each function
// once, blocks iteratively: an archive cannot make it recurse deeply).
class Checker {
 public:
  // Queues `fn`, reached by `path` (how the walk got there, for the error message).
  Status Add(torch::jit::Function* fn, const std::string& path) {
    if (fn == nullptr) return InvalidArgument(path + ": calls a function that cannot be resolved");
    if (!fn->isGraphFunction()) {
      return Refuse(path, "the built-in method " + QualifiedName(*fn),
                    "methods of C++ classes (torch.classes) are not allowed");
    }
    if (seen_.insert(fn).second) queue_.emplace_back(fn, path);
    return Status::Ok();
  }

  // Adds every method and forward hook of class `cls`; `path` names where it was found.
  Status AddClass(const c10::ClassTypePtr& cls, const std::string& path) {
    if (!classes_.insert(cls.get()).second) return Status::Ok();
    for (torch::jit::Function* m : cls->methods()) SHOAL_RETURN_IF_ERROR(Add(m, path));
    for (torch::jit::Function* h : cls->getForwardPreHooks()) SHOAL_RETURN_IF_ERROR(Add(h, path));
    for (torch::jit::Function* h : cls->getForwardHooks()) SHOAL_RETURN_IF_ERROR(Add(h, path));
    // Attributes of class type (submodules, scripted class instances) bring their methods.
    for (size_t i = 0; i < cls->numAttributes(); ++i) {
      if (auto sub = cls->getAttribute(i)->cast<c10::ClassType>()) {
        SHOAL_RETURN_IF_ERROR(AddClass(sub, path + "." + cls->getAttributeName(i)));
      }
    }
    return Status::Ok();
  }

  Status Run() {
    while (!queue_.empty()) {
      auto [fn, path] = std::move(queue_.front());
      queue_.pop_front();
      SHOAL_RETURN_IF_ERROR(CheckGraph(*fn, path));
    }
    return Status::Ok();
  }

 private:
  // `path` says how the walk reached the method (the module attribute or the caller).
  static Status Refuse(const std::string& where, const std::string& what, const std::string& why,
                       const std::string& path = "") {
    return InvalidArgument("TorchScript model refused: " + where + " calls " + what + ", " + why +
                           (path.empty() ? "" : " (reached from " + path + ")") +
                           "; Shoal runs only the operators of its allow-list (pure tensor "
                           "math, layers and shapes; nn/script_check.cc)");
  }

  Status CheckGraph(torch::jit::Function& fn, const std::string& path) {
    auto& graph_fn = torch::jit::toGraphFunction(fn);
    graph_fn.ensure_defined();
    const std::shared_ptr<torch::jit::Graph> graph = graph_fn.graph();
    if (!graph) return InvalidArgument(path + ": " + QualifiedName(fn) + " has no graph");
    const std::string where = QualifiedName(fn);
    std::vector<const torch::jit::Block*> blocks = {graph->block()};
    while (!blocks.empty()) {
      const torch::jit::Block* block = blocks.back();
      blocks.pop_back();
      for (const torch::jit::Node* node : block->nodes()) {
        const std::string op = node->kind().toQualString();
        if (AllowList().count(op) == 0) {
          return Refuse(where, op, "which is not on Shoal's operator allow-list", path);
        }
        for (const torch::jit::Block* b : node->blocks()) blocks.push_back(b);
        if (node->kind() == c10::prim::CallFunction) {
          auto fn_type = node->input(0)->type()->cast<c10::FunctionType>();
          if (!fn_type) return Refuse(where, "a function value", "which cannot be followed", path);
          SHOAL_RETURN_IF_ERROR(Add(fn_type->function(), QualifiedName(fn)));
        } else if (node->kind() == c10::prim::CallMethod) {
          const std::string name = node->s(c10::attr::name);
          auto cls = node->input(0)->type()->cast<c10::ClassType>();
          if (!cls) {
            return Refuse(where, "method " + name + " of " + node->input(0)->type()->repr_str(),
                          "an interface method, which cannot be checked before it runs", path);
          }
          SHOAL_RETURN_IF_ERROR(AddClass(cls, QualifiedName(fn)));
          SHOAL_RETURN_IF_ERROR(Add(cls->findMethod(name), QualifiedName(fn)));
        }
      }
    }
    return Status::Ok();
  }

  std::deque<std::pair<torch::jit::Function*, std::string>> queue_;
  std::unordered_set<const torch::jit::Function*> seen_;
  std::unordered_set<const c10::ClassType*> classes_;
};

// The first line of `text` (TorchScript errors are long; the first line names the problem).
std::string FirstLine(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

std::string TorchMessage(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Status CheckScriptArchive(const std::string& bytes) {
  try {
    std::istringstream in(bytes);
    caffe2::serialize::PyTorchStreamReader reader(&in);
    bool has_data = false;
    for (const std::string& name : reader.getAllRecords()) {
      if (name == "data.pkl") has_data = true;
      // The archive's TorchScript source: code/<qualified name>.py (and its debug twins).
      if (name.rfind("code/", 0) != 0 || !EndsWith(name, ".py")) continue;
      auto [data, size] = reader.getRecord(name);
      const std::string_view code(static_cast<const char*>(data.get()), size);
      if (code.find("__setstate__") != std::string_view::npos) {
        return InvalidArgument("TorchScript model refused: " + name +
                               " defines __setstate__, which torch::jit::load would run before "
                               "the model's operators could be checked");
      }
    }
    if (!has_data) {
      return InvalidArgument(
          "TorchScript model refused: the archive has no data.pkl (a legacy format, or not a "
          "TorchScript archive); save it with torch.jit.save(torch.jit.script(model), path)");
    }
  } catch (const std::exception& e) {
    return InvalidArgument(
        "not a loadable TorchScript archive (save it with "
        "torch.jit.save(torch.jit.script(model), path)): " +
        FirstLine(TorchMessage(e)));
  }
  return Status::Ok();
}

Status CheckScriptModule(const torch::jit::Module& module) {
  Checker checker;
  SHOAL_RETURN_IF_ERROR(checker.AddClass(module.type(), module.type()->name()
                                                            ? module.type()->name()->name()
                                                            : std::string("the module")));
  return checker.Run();
}

Status LoadCheckedScriptModule(const std::string& bytes, torch::jit::Module* out) {
  SHOAL_RETURN_IF_ERROR(CheckScriptArchive(bytes));
  torch::jit::Module module;
  try {
    std::istringstream in(bytes);
    module = torch::jit::load(in, torch::kCPU);
  } catch (const std::exception& e) {
    return InvalidArgument(
        "not a loadable TorchScript archive (save it with "
        "torch.jit.save(torch.jit.script(model), path)): " +
        FirstLine(TorchMessage(e)));
  }
  SHOAL_RETURN_IF_ERROR(CheckScriptModule(module));
  *out = std::move(module);
  return Status::Ok();
}

std::vector<std::string> AllowedScriptOperators() {
  std::vector<std::string> out(AllowList().begin(), AllowList().end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace shoal::nn
