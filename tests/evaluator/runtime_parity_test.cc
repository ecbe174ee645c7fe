// The coordinator's round engine holds a ModelRuntime without knowing which: the in-process one
// (MakeLocalRuntime) and the one that sends the calls to a shoal-evaluator child
// (MakeChildProcessRuntime) must give the same answers to the same calls: the same weights for
// the same seed, the same metrics for the same evaluation, the same errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "evaluator/child_process_runtime.h"
#include "evaluator/local_runtime.h"
#include "nn/export.h"
#include "tests/integration/process.h"

namespace shoal {
namespace {

using evaluator::EvalData;
using evaluator::ModelRuntime;

class RuntimeParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string bin = testing::BinDir() + "/shoal-evaluator";
    ASSERT_EQ(::access(bin.c_str(), X_OK), 0) << bin << " not built";
    ::setenv("SHOAL_EVALUATOR", bin.c_str(), 1);
    char tmpl[] = "/tmp/shoal-parity-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    child_ = evaluator::MakeChildProcessRuntime({dir_});  // it may read the test sets there
    local_config_ = local_->Configure(1);
    child_config_ = child_->Configure(1);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // 40 rows of 3 features; labels cycle through 0, 1, 2 (or 0 .. max_label).
  std::string WriteCsv(const std::string& name, int features = 3, int max_label = 2) {
    const std::string path = dir_ + "/" + name;
    std::ofstream f(path);
    for (int k = 0; k < features; ++k) f << "f" << k << ",";
    f << "label\n";
    for (int i = 0; i < 40; ++i) {
      for (int k = 0; k < features; ++k) f << 0.25 * i - 0.5 * k * (i % 3) << ",";
      f << i % (max_label + 1) << "\n";
    }
    return path;
  }

  static EvalData Csv(const std::string& path, int64_t limit = 0) {
    return {"csv", path, "", "label", limit};
  }

  // Evaluates `w` through both runtimes' evaluators of `data` and expects the same metrics.
  void ExpectSameEvaluation(const model::ModelSource& model, const std::vector<int64_t>& shape,
                            int64_t classes, const EvalData& data, const model::Weights& w) {
    auto local = local_->OpenEvaluator(model, shape, classes, data);
    auto child = child_->OpenEvaluator(model, shape, classes, data);
    ASSERT_TRUE(local.ok()) << local.status().ToString();
    ASSERT_TRUE(child.ok()) << child.status().ToString();
    EXPECT_EQ((*local)->size(), (*child)->size());
    auto a = (*local)->Evaluate(w);
    auto b = (*child)->Evaluate(w);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_EQ(a->count, (*local)->size());
    EXPECT_EQ(a->count, b->count);
    EXPECT_DOUBLE_EQ(a->accuracy, b->accuracy);
    EXPECT_DOUBLE_EQ(a->loss, b->loss);
  }

  std::string dir_;
  std::unique_ptr<ModelRuntime> local_ = evaluator::MakeLocalRuntime();
  std::unique_ptr<ModelRuntime> child_;
  std::string local_config_;
  std::string child_config_;
};

// The child configures its LibTorch exactly as the local runtime configures this process's, and
// says where it runs.
TEST_F(RuntimeParityTest, ConfigureDescribesTheSameRuntime) {
  EXPECT_NE(local_config_.find("blas="), std::string::npos) << local_config_;
  EXPECT_EQ(child_config_.rfind(local_config_ + " (in shoal-evaluator, pid ", 0), 0)
      << "local: " << local_config_ << "\nchild: " << child_config_;
}

TEST_F(RuntimeParityTest, InitialWeightsAreTheSameForTheSameSeed) {
  struct Case {
    const char* name;
    std::vector<int64_t> shape;
    int64_t classes;
  };
  for (const Case& c :
       {Case{"mlp", {1, 28, 28}, 10}, Case{"cnn", {1, 28, 28}, 10}, Case{"logreg", {3}, 3}}) {
    SCOPED_TRACE(c.name);
    auto local = local_->InitialWeights({c.name, ""}, c.shape, c.classes, 7);
    auto child = child_->InitialWeights({c.name, ""}, c.shape, c.classes, 7);
    ASSERT_TRUE(local.ok()) << local.status().ToString();
    ASSERT_TRUE(child.ok()) << child.status().ToString();
    EXPECT_EQ(local->spec.ToJson(), child->spec.ToJson());
    EXPECT_EQ(local->data, child->data);
    auto other_seed = child_->InitialWeights({c.name, ""}, c.shape, c.classes, 8);
    ASSERT_TRUE(other_seed.ok());
    EXPECT_NE(other_seed->data, child->data) << "the seed must matter";
  }
}

TEST_F(RuntimeParityTest, CentralEvaluationGivesTheSameMetrics) {
  auto w = local_->InitialWeights({"logreg", ""}, {3}, 3, 3);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const std::string csv = WriteCsv("eval.csv");
  ExpectSameEvaluation({"logreg", ""}, {3}, 3, Csv(csv), *w);
  ExpectSameEvaluation({"logreg", ""}, {3}, 3, Csv(csv, 25), *w);  // eval.limit
  auto mlp = local_->InitialWeights({"mlp", ""}, {3}, 3, 4);
  ASSERT_TRUE(mlp.ok()) << mlp.status().ToString();
  ExpectSameEvaluation({"mlp", ""}, {3}, 3, Csv(csv), *mlp);
}

// A TorchScript model travels to the child as its archive: its initial weights are the file's
// parameters through both runtimes, and its evaluation is the same.
TEST_F(RuntimeParityTest, ATorchScriptModelIsTheSameThroughBoth) {
  auto w = local_->InitialWeights({"logreg", ""}, {3}, 3, 5);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto exported = nn::ExportTorchScript("logreg", {3}, 3, *w);
  ASSERT_TRUE(exported.ok()) << exported.status().ToString();
  const model::ModelSource script{model::kTorchScriptModel, exported->bytes};
  auto local = local_->InitialWeights(script, {3}, 3, 1);
  auto child = child_->InitialWeights(script, {3}, 3, 2);  // the seed is unused
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  EXPECT_EQ(local->data, w->data);
  EXPECT_EQ(child->data, w->data);
  model::Weights shifted = *w;
  for (float& v : shifted.data) v += 0.125f;
  ExpectSameEvaluation(script, {3}, 3, Csv(WriteCsv("eval.csv")), shifted);
}

// The same failures give the same status through both: the coordinator reports what the model
// or the data got wrong, not which runtime it used.
TEST_F(RuntimeParityTest, ErrorsAreTheSame) {
  auto expect_same = [](const Status& local, const Status& child, const char* what) {
    SCOPED_TRACE(what);
    EXPECT_FALSE(local.ok());
    EXPECT_EQ(local.code(), child.code()) << local.ToString() << "\n" << child.ToString();
    EXPECT_EQ(local.message(), child.message());
  };
  expect_same(local_->InitialWeights({"resnet", ""}, {3}, 3, 1).status(),
              child_->InitialWeights({"resnet", ""}, {3}, 3, 1).status(), "unknown model");
  const model::ModelSource broken{model::kTorchScriptModel, "not a TorchScript archive"};
  expect_same(local_->InitialWeights(broken, {3}, 3, 1).status(),
              child_->InitialWeights(broken, {3}, 3, 1).status(), "bad archive");
  const model::ModelSource logreg{"logreg", ""};
  const EvalData missing = Csv(dir_ + "/nope.csv");
  expect_same(local_->OpenEvaluator(logreg, {3}, 3, missing).status(),
              child_->OpenEvaluator(logreg, {3}, 3, missing).status(), "missing data");
  const EvalData four_features = Csv(WriteCsv("wide.csv", 4));
  expect_same(local_->OpenEvaluator(logreg, {3}, 3, four_features).status(),
              child_->OpenEvaluator(logreg, {3}, 3, four_features).status(), "sample shape");
  const EvalData five_labels = Csv(WriteCsv("labels.csv", 3, 4));
  expect_same(local_->OpenEvaluator(logreg, {3}, 3, five_labels).status(),
              child_->OpenEvaluator(logreg, {3}, 3, five_labels).status(), "label range");

  // Weights that do not fit the model are refused by both (the child before it evaluates).
  auto w = local_->InitialWeights(logreg, {3}, 3, 1);
  ASSERT_TRUE(w.ok());
  w->data.pop_back();
  auto local = local_->OpenEvaluator(logreg, {3}, 3, Csv(WriteCsv("eval.csv")));
  auto child = child_->OpenEvaluator(logreg, {3}, 3, Csv(WriteCsv("eval.csv")));
  ASSERT_TRUE(local.ok() && child.ok());
  auto a = (*local)->Evaluate(*w);
  auto b = (*child)->Evaluate(*w);
  ASSERT_FALSE(a.ok());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(a.status().code(), Code::kInvalidArgument) << a.status().ToString();
  EXPECT_EQ(b.status().code(), Code::kInvalidArgument) << b.status().ToString();
}

}  // namespace
}  // namespace shoal
