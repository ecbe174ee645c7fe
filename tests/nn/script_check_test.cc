// The TorchScript operator allow-list (nn/script_check.h), attacked as a malicious coordinator
// would (issue #20, item 1): a model whose forward reads a local secret file and creates a
// file with torch.from_file, prints, or hides either in a submodule's or a helper's method, or
// in __setstate__ (which torch::jit::load runs), is refused naming the operator and the method,
// before any of its code runs. Built-in exports and ordinary user models pass.
#include "nn/script_check.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "base/file_util.h"
#include "nn/export.h"
#include "nn/models.h"

namespace shoal {
namespace {

using Params = std::vector<std::pair<std::string, torch::Tensor>>;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string Save(torch::jit::Module& m) {
  std::ostringstream out;
  m.save(out);
  return out.str();
}

// A module of class `cls` (samples [3, 4], 2 classes) holding `params`, with `code` defined.
torch::jit::Module Module(const std::string& cls, const std::string& code,
                          std::shared_ptr<torch::jit::CompilationUnit> cu = nullptr,
                          const Params& params = {{"w", torch::zeros({2, 12})},
                                                  {"b", torch::zeros({2})}}) {
  if (!cu) cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module m(c10::QualifiedName("__torch__.test." + cls), cu);
  m.register_attribute("training", c10::BoolType::get(), true);
  for (const auto& [name, t] : params) m.register_parameter(name, t, /*is_buffer=*/false);
  if (!code.empty()) m.define(code);
  return m;
}

class ScriptCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-script-check-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    secret_ = dir_ + "/secret.txt";
    created_ = dir_ + "/created-by-the-model";
    ASSERT_TRUE(WriteFileAtomic(secret_, "the silo's secret, 32 bytes long").ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The attack of the issue: forward reads the secret (into the logits) and creates a file.
  std::string FromFileForward() const {
    return "def forward(self, x: Tensor) -> Tensor:\n"
           "    secret = torch.from_file(\"" +
           secret_ +
           "\", False, 2)\n"
           "    made = torch.from_file(\"" +
           created_ +
           "\", True, 4)\n"
           "    y = torch.linear(torch.flatten(x, 1), self.w, self.b)\n"
           "    return y + secret * 0.0 + made.sum() * 0.0\n";
  }

  Status Load(const std::string& bytes) {
    auto net = nn::LoadScriptModel(bytes, {3, 4}, 2);
    return net.ok() ? Status::Ok() : net.status();
  }

  std::string dir_, secret_, created_;
};

TEST_F(ScriptCheckTest, ForwardCallingFromFileIsRefusedBeforeItRuns) {
  auto evil = Module("ReadsFiles", FromFileForward());
  const Status st = Load(Save(evil));
  ASSERT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "TorchScript model refused")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "__torch__.test.ReadsFiles.forward")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "calls aten::from_file")) << st.message();
  // The load's dry run never ran forward: nothing was created.
  EXPECT_FALSE(PathExists(created_)) << "the model created " << created_;
}

TEST_F(ScriptCheckTest, PrintIsRefused) {
  auto printing = Module("Prints", R"JIT(
def forward(self, x: Tensor) -> Tensor:
    print("hello from the coordinator")
    return torch.linear(torch.flatten(x, 1), self.w, self.b)
)JIT");
  const Status st = Load(Save(printing));
  EXPECT_TRUE(Contains(st.message(), "Prints.forward calls prim::Print")) << st.ToString();
}

TEST_F(ScriptCheckTest, OperatorsInNestedBlocksHelpersAndSubmodulesAreFound) {
  // In a loop inside a branch of a helper method forward calls.
  auto helper = Module("Helper", R"JIT(
def helper(self, x: Tensor, n: int) -> Tensor:
    if n > 1:
        for i in range(n):
            print(i)
    return x

def forward(self, x: Tensor) -> Tensor:
    return torch.linear(torch.flatten(self.helper(x, 3), 1), self.w, self.b)
)JIT");
  Status st = Load(Save(helper));
  EXPECT_TRUE(Contains(st.message(), "Helper.helper")) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "calls prim::Print")) << st.ToString();

  // In a submodule's forward, which the top module's forward calls.
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  auto layer = Module("Leaky", FromFileForward(), cu);
  auto top = Module("Top", "", cu, {});
  top.register_module("layer", layer);
  top.define(R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return self.layer.forward(x)
)JIT");
  st = Load(Save(top));
  EXPECT_TRUE(Contains(st.message(), "__torch__.test.Leaky.forward")) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "calls aten::from_file")) << st.ToString();
  EXPECT_FALSE(PathExists(created_));

  // In a method nothing calls: every method of every module is checked.
  auto unused = Module("Unused", R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.linear(torch.flatten(x, 1), self.w, self.b)

def later(self) -> Tensor:
    return torch.from_file("/etc/hostname", False, 1)
)JIT");
  st = Load(Save(unused));
  EXPECT_TRUE(Contains(st.message(), "Unused.later calls aten::from_file")) << st.ToString();
}

TEST_F(ScriptCheckTest, SetStateIsRefusedBeforeTheArchiveIsLoaded) {
  // torch::jit::load runs __setstate__ while unpickling: the archive is refused unread.
  auto m = Module("Stateful", R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.linear(torch.flatten(x, 1), self.w, self.b)

def __getstate__(self) -> Tuple[Tensor, Tensor, bool]:
    return (self.w, self.b, self.training)

def __setstate__(self, state: Tuple[Tensor, Tensor, bool]) -> None:
    self.w = state[0]
    self.b = state[1]
    self.training = state[2]
)JIT");
  const std::string bytes = Save(m);
  const Status st = nn::CheckScriptArchive(bytes);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), "defines __setstate__")) << st.ToString();
  EXPECT_TRUE(Contains(Load(bytes).message(), "defines __setstate__"));
}

TEST_F(ScriptCheckTest, BuiltinExportsAndOrdinaryUserModelsPass) {
  for (const std::string& name : nn::BuiltinModels()) {
    SCOPED_TRACE(name);
    const std::vector<int64_t> shape = {1, 28, 28};
    auto net = nn::MakeModel(name, shape, 10, 1);
    ASSERT_TRUE(net.ok());
    auto exported = nn::ExportTorchScript(name, shape, 10, nn::GetWeights(**net));
    ASSERT_TRUE(exported.ok()) << exported.status().ToString();
    torch::jit::Module loaded;
    EXPECT_TRUE(nn::LoadCheckedScriptModule(exported->bytes, &loaded).ok());
  }
  // Control flow, submodules, lists, tuples, raise, dropout and softmax: what scripted models
  // use.
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  auto layer = Module("Layer", R"JIT(
def forward(self, x: Tensor) -> Tensor:
    assert x.dim() == 2, "expected 2D input (got {}D input)".format(x.dim())
    return torch.linear(x, self.w, self.b)
)JIT",
                      cu);
  auto top = Module("Ordinary", "", cu, {{"scale", torch::ones({1})}});
  top.register_module("layer", layer);
  top.define(R"JIT(
def forward(self, x: Tensor) -> Tensor:
    h = torch.flatten(x, 1)
    parts = [h, h * 0.5]
    for i in range(len(parts)):
        h = h + torch.tanh(parts[i]) * 0.0
    h = torch.dropout(h, 0.1, self.training)
    y = self.layer.forward(h) * self.scale
    return torch.log_softmax(y, 1)
)JIT");
  auto net = nn::LoadScriptModel(Save(top), {3, 4}, 2);
  EXPECT_TRUE(net.ok()) << net.status().ToString();

  EXPECT_TRUE(Contains(Load("PK\x03\x04 not a zip").message(), "not a loadable TorchScript"));
  const auto ops = nn::AllowedScriptOperators();
  EXPECT_TRUE(std::binary_search(ops.begin(), ops.end(), "aten::linear"));
  EXPECT_FALSE(std::binary_search(ops.begin(), ops.end(), "aten::from_file"));
  EXPECT_FALSE(std::binary_search(ops.begin(), ops.end(), "prim::Print"));
}

}  // namespace
}  // namespace shoal
