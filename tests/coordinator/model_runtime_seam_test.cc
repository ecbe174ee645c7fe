// The round engine does its LibTorch work through the evaluator::ModelRuntime it is given
// (shoal-coordinator gives it the child-process one): with a recording runtime in its place,
// start-up configures it, opens the central evaluation, makes the initial weights, evaluates
// and commits them as v0, then releases it; a runtime's error ends the run with that error.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/config.h"
#include "coordinator/round_engine.h"
#include "evaluator/model_runtime.h"
#include "store/model_store.h"

namespace shoal {
namespace {

using Calls = std::vector<std::string>;

class RecordingEvaluator : public evaluator::CentralEvaluator {
 public:
  explicit RecordingEvaluator(std::shared_ptr<Calls> calls) : calls_(std::move(calls)) {}
  Result<model::EvalMetrics> Evaluate(const model::Weights& weights) override {
    calls_->push_back("evaluate " + std::to_string(weights.data.size()) + " values");
    model::EvalMetrics m;
    m.count = 8;
    m.loss = 1.5;
    m.accuracy = 0.625;
    return m;
  }
  int64_t size() const override { return 8; }

 private:
  std::shared_ptr<Calls> calls_;
};

// Answers like a runtime with a logreg model over 3 features and 3 classes, and records the
// calls (shared with the test: the coordinator owns the runtime).
class RecordingRuntime : public evaluator::ModelRuntime {
 public:
  RecordingRuntime(std::shared_ptr<Calls> calls, Status initial_weights_error)
      : calls_(std::move(calls)), initial_weights_error_(std::move(initial_weights_error)) {}

  std::string Configure(int threads) override {
    calls_->push_back("configure " + std::to_string(threads));
    return "recording runtime";
  }
  Result<model::Weights> InitialWeights(const model::ModelSource& model,
                                        const std::vector<int64_t>& input_shape,
                                        int64_t num_classes, uint64_t seed) override {
    calls_->push_back("initial_weights " + model.name + " " + model::ShapeString(input_shape) +
                      " " + std::to_string(num_classes) + " seed " + std::to_string(seed));
    if (!initial_weights_error_.ok()) return initial_weights_error_;
    return Weights();
  }
  Result<std::unique_ptr<evaluator::CentralEvaluator>> OpenEvaluator(
      const model::ModelSource& model, const std::vector<int64_t>&, int64_t,
      const evaluator::EvalData& data) override {
    calls_->push_back("open_evaluator " + model.name + " " + data.format + " " + data.path +
                      " limit " + std::to_string(data.limit));
    return std::unique_ptr<evaluator::CentralEvaluator>(
        std::make_unique<RecordingEvaluator>(calls_));
  }
  void Release() override { calls_->push_back("release"); }

  static model::Weights Weights() {
    model::Weights w;
    w.spec.tensors = {{"linear.weight", model::DType::kFloat32, {3, 3}},
                      {"linear.bias", model::DType::kFloat32, {3}}};
    for (int i = 0; i < 12; ++i) w.data.push_back(0.25f * static_cast<float>(i) - 1.0f);
    return w;
  }

 private:
  std::shared_ptr<Calls> calls_;
  const Status initial_weights_error_;
};

class ModelRuntimeSeamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-seam-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  coordinator::CoordinatorConfig Config() {
    auto c = coordinator::LoadCoordinatorConfig(
        "", {"run.dir=" + dir_ + "/run", "run.seed=42", "network.bind=tcp://127.0.0.1:0",
             "model.name=logreg", "model.input_shape=[3]", "model.num_classes=3", "eval.format=csv",
             "eval.path=" + dir_ + "/eval.csv", "eval.limit=8", "http.enabled=false",
             "security.insecure=true", "runtime.threads=3"});
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  }

  std::string dir_;
};

TEST_F(ModelRuntimeSeamTest, StartUpDoesItsModelWorkThroughTheGivenRuntime) {
  auto calls = std::make_shared<Calls>();
  coordinator::Coordinator coordinator(Config(),
                                       std::make_unique<RecordingRuntime>(calls, Status::Ok()));
  coordinator.Stop();  // start-up only: no round
  const Status st = coordinator.Run();
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();  // "stopped before the run finished"

  const Calls expected = {"configure 3", "open_evaluator logreg csv " + dir_ + "/eval.csv limit 8",
                          "initial_weights logreg [3] 3 seed 42", "evaluate 12 values", "release"};
  EXPECT_EQ(*calls, expected);

  // v0 is the runtime's weights with the runtime's central metrics.
  auto versions = store::ListVersions(dir_ + "/run");
  ASSERT_TRUE(versions.ok()) << versions.status().ToString();
  ASSERT_EQ(versions->size(), 1u);
  auto v0 = store::LoadVersion(dir_ + "/run", versions->front());
  ASSERT_TRUE(v0.ok()) << v0.status().ToString();
  EXPECT_EQ(v0->data, RecordingRuntime::Weights().data);
  EXPECT_EQ(v0->spec, RecordingRuntime::Weights().spec);
  EXPECT_DOUBLE_EQ(versions->front().metrics["central"]["accuracy"].get<double>(), 0.625);
}

TEST_F(ModelRuntimeSeamTest, TheRuntimesErrorEndsTheRunAndNothingIsCommitted) {
  auto calls = std::make_shared<Calls>();
  coordinator::Coordinator coordinator(
      Config(), std::make_unique<RecordingRuntime>(calls, InvalidArgument("no model here")));
  const Status st = coordinator.Run();
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("no model here"), std::string::npos) << st.ToString();
  auto versions = store::ListVersions(dir_ + "/run");
  ASSERT_TRUE(versions.ok()) << versions.status().ToString();
  EXPECT_TRUE(versions->empty());
}

}  // namespace
}  // namespace shoal
