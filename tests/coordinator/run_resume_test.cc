// Resuming a run directory: the coordinator continues from the newest usable version, never
// from one holding a NaN/Inf value (issue #20: a +Inf version committed by a poisoned round was
// resumed from after a restart, so every later round stayed non-finite).
#include "coordinator/run_resume.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "base/sha256.h"
#include "coordinator/config.h"
#include "evaluator/model_runtime.h"
#include "store/model_store.h"

namespace shoal::coordinator {
namespace {

model::Weights SmallWeights(float v) {
  model::Weights w;
  w.spec.tensors = {{"linear.weight", model::DType::kFloat32, {3, 3}},
                    {"linear.bias", model::DType::kFloat32, {3}}};
  w.data.assign(12, v);
  return w;
}

// Initial weights only; nothing else is asked of it by ResumeOrStart.
class FixedRuntime : public evaluator::ModelRuntime {
 public:
  std::string Configure(int) override { return "fixed"; }
  Result<model::Weights> InitialWeights(const model::ModelSource&, const std::vector<int64_t>&,
                                        int64_t, uint64_t) override {
    return SmallWeights(0.5f);
  }
  Result<std::unique_ptr<evaluator::CentralEvaluator>> OpenEvaluator(
      const model::ModelSource&, const std::vector<int64_t>&, int64_t,
      const evaluator::EvalData&) override {
    return Internal("no evaluation here");
  }
  void Release() override {}
};

class RunResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-resume-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto c = LoadCoordinatorConfig(
        "", {"run.dir=" + dir_ + "/run", "model.name=logreg", "model.input_shape=[3]",
             "model.num_classes=3", "eval.format=none", "http.enabled=false",
             "security.insecure=true"});
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    cfg_ = *c;
    auto store = store::ModelStore::Open(cfg_.run_dir);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::make_unique<store::ModelStore>(std::move(store).value());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Result<StartingPoint> Resume() {
    RunModel model;
    model.source.name = cfg_.model;
    return ResumeOrStart(cfg_, model, *store_, runtime_, nullptr);
  }

  // Writes version `v` of round `v` as a pre-check coordinator would have: weights and meta
  // with a matching SHA-256, whatever the values.
  void WriteVersion(uint64_t v, const model::Weights& w) {
    store::VersionMeta meta;
    meta.version = v;
    meta.parent = v - 1;
    meta.round = v;
    meta.sha256 = ToHex(w.Hash());
    meta.created_at = store::UtcNow();
    ASSERT_TRUE(model::SaveWeights(store::VersionWeightsPath(cfg_.run_dir, v), w).ok());
    ASSERT_TRUE(
        WriteFileAtomic(store::VersionMetaPath(cfg_.run_dir, v), meta.ToJson().dump(2)).ok());
  }

  std::string dir_;
  CoordinatorConfig cfg_;
  std::unique_ptr<store::ModelStore> store_;
  FixedRuntime runtime_;
};

TEST_F(RunResumeTest, NeverResumesFromANonFiniteVersion) {
  auto start = Resume();  // a new run: v0
  ASSERT_TRUE(start.ok()) << start.status().ToString();
  EXPECT_EQ(start->version, 0u);
  WriteVersion(1, SmallWeights(0.25f));
  model::Weights poisoned = SmallWeights(0.25f);
  poisoned.data[10] = std::numeric_limits<float>::infinity();  // linear.bias element 1
  WriteVersion(2, poisoned);
  model::Weights nan = SmallWeights(0.25f);
  nan.data[0] = std::numeric_limits<float>::quiet_NaN();
  WriteVersion(3, nan);

  auto resumed = Resume();
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(resumed->version, 1u) << "resumed from a version holding NaN/Inf";
  EXPECT_EQ(resumed->next_round, 2u);
  EXPECT_EQ(resumed->global.FirstNonFinite(), -1);
  EXPECT_EQ(resumed->global.data, SmallWeights(0.25f).data);
}

TEST_F(RunResumeTest, TheStoreRefusesToCommitANonFiniteVersion) {
  ASSERT_TRUE(Resume().ok());
  model::Weights poisoned = SmallWeights(0.25f);
  poisoned.data[10] = -std::numeric_limits<float>::infinity();
  store::VersionMeta meta;
  meta.version = 1;
  meta.parent = 0;
  meta.round = 1;
  Status st = store_->Commit(poisoned, meta);
  ASSERT_FALSE(st.ok()) << "committed a version holding -Inf";
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("tensor 'linear.bias' element 1"), std::string::npos) << st.message();
  EXPECT_FALSE(PathExists(store::VersionWeightsPath(cfg_.run_dir, 1)));
  EXPECT_FALSE(PathExists(store::VersionMetaPath(cfg_.run_dir, 1)));
}

}  // namespace
}  // namespace shoal::coordinator
