// The serving side of the evaluator protocol (server.h) with a recording ModelRuntime in place of
// LibTorch, over a socketpair: requests reach the runtime with their fields and archive, replies
// carry its answers, bad requests get an error reply and the connection keeps serving, and the
// client closing the connection ends Run with OK.
#include "evaluator/server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "evaluator/wire.h"

namespace shoal::evaluator {
namespace {

class FixedEvaluator : public CentralEvaluator {
 public:
  explicit FixedEvaluator(std::vector<std::string>* calls) : calls_(calls) {}
  Result<model::EvalMetrics> Evaluate(const model::Weights& w) override {
    calls_->push_back("evaluate " + std::to_string(w.data.at(0)));
    model::EvalMetrics m;
    m.count = 5;
    m.loss = 0.5;
    m.accuracy = 0.8;
    m.cpu_seconds = 0.25;
    return m;
  }
  int64_t size() const override { return 5; }

 private:
  std::vector<std::string>* calls_;
};

class RecordingRuntime : public ModelRuntime {
 public:
  std::string Configure(int threads) override {
    calls.push_back("configure " + std::to_string(threads));
    return "recording";
  }
  Result<model::Weights> InitialWeights(const model::ModelSource& model,
                                        const std::vector<int64_t>& input_shape,
                                        int64_t num_classes, uint64_t seed) override {
    calls.push_back("initial_weights " + model.name + " " + model.script_bytes + " " +
                    model::ShapeString(input_shape) + " " + std::to_string(num_classes) + " " +
                    std::to_string(seed));
    if (model.name == "bad") return InvalidArgument("no such model 'bad'");
    return Weights();
  }
  Result<std::unique_ptr<CentralEvaluator>> OpenEvaluator(const model::ModelSource& model,
                                                          const std::vector<int64_t>&, int64_t,
                                                          const EvalData& d) override {
    calls.push_back("open_evaluator " + model.name + " " + d.format + " " + d.path + " " + d.split +
                    " " + d.label_column + " " + std::to_string(d.limit));
    return std::unique_ptr<CentralEvaluator>(std::make_unique<FixedEvaluator>(&calls));
  }
  void Release() override { calls.push_back("release"); }

  static model::Weights Weights() {
    model::Weights w;
    w.spec.tensors = {{"w", model::DType::kFloat32, {2, 2}}};
    w.data = {1.5f, -2.0f, 0.25f, 8.0f};
    return w;
  }

  std::vector<std::string> calls;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_ = sv[0];
    server_fd_ = sv[1];
    server_ = std::make_unique<Server>(server_fd_, runtime_);
    done_ = std::async(std::launch::async, [this] { return server_->Run(); });
  }
  void TearDown() override {
    if (client_ >= 0) ::close(client_);
    if (done_.valid()) {
      EXPECT_TRUE(done_.get().ok());
    }
    ::close(server_fd_);
  }

  // One request and its reply header; the reply's blob is read into *blob (or skipped).
  nlohmann::json Call(const nlohmann::json& request, const std::string& blob = "",
                      std::vector<float>* reply_blob = nullptr) {
    EXPECT_TRUE(wire::Write(client_, request, blob.data(), blob.size()).ok());
    auto h = wire::ReadHeader(client_);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    if (!h.ok()) return {};
    if (reply_blob != nullptr) {
      reply_blob->resize(h->blob_bytes / sizeof(float));
      EXPECT_TRUE(wire::ReadBlob(client_, reply_blob->data(), h->blob_bytes).ok());
    } else {
      EXPECT_TRUE(wire::SkipBlob(client_, h->blob_bytes).ok());
    }
    return h->json;
  }

  static Status StatusOf(const nlohmann::json& reply) {
    return wire::StatusFromJson(reply.value("status", nlohmann::json()));
  }

  RecordingRuntime runtime_;
  int client_ = -1;
  int server_fd_ = -1;
  std::unique_ptr<Server> server_;
  std::future<Status> done_;
};

TEST_F(ServerTest, RequestsReachTheRuntimeAndRepliesCarryItsAnswers) {
  auto r = Call({{"op", "configure"}, {"threads", 2}});
  EXPECT_TRUE(StatusOf(r).ok()) << r.dump();
  EXPECT_EQ(r.value("runtime", ""), "recording");

  std::vector<float> weights;
  r = Call({{"op", "initial_weights"},
            {"model", "torchscript"},
            {"input_shape", {3, 4}},
            {"num_classes", 2},
            {"seed", 9}},
           "ARCHIVE", &weights);
  ASSERT_TRUE(StatusOf(r).ok()) << r.dump();
  EXPECT_EQ(r["spec"], RecordingRuntime::Weights().spec.ToJson());
  EXPECT_EQ(weights, RecordingRuntime::Weights().data);

  r = Call({{"op", "open_evaluator"},
            {"model", "mlp"},
            {"input_shape", {3}},
            {"num_classes", 3},
            {"format", "idx"},
            {"path", "/data"},
            {"split", "t10k"},
            {"label_column", "y"},
            {"limit", 7}});
  ASSERT_TRUE(StatusOf(r).ok()) << r.dump();
  const int64_t id = r.value("id", int64_t{-1});
  EXPECT_EQ(r.value("size", 0), 5);

  const model::Weights w = RecordingRuntime::Weights();
  r = Call({{"op", "evaluate"}, {"id", id}, {"spec", w.spec.ToJson()}},
           std::string(reinterpret_cast<const char*>(w.data.data()), w.data.size() * 4));
  ASSERT_TRUE(StatusOf(r).ok()) << r.dump();
  EXPECT_EQ(r.value("count", 0), 5);
  EXPECT_DOUBLE_EQ(r.value("loss", 0.0), 0.5);
  EXPECT_DOUBLE_EQ(r.value("accuracy", 0.0), 0.8);
  EXPECT_DOUBLE_EQ(r.value("cpu_seconds", 0.0), 0.25);

  r = Call({{"op", "close_evaluator"}, {"id", id}});
  EXPECT_TRUE(StatusOf(r).ok()) << r.dump();
  r = Call({{"op", "evaluate"}, {"id", id}, {"spec", w.spec.ToJson()}},
           std::string(reinterpret_cast<const char*>(w.data.data()), w.data.size() * 4));
  EXPECT_EQ(StatusOf(r).message(), "evaluate: no such evaluator") << "closed";
  const std::vector<std::string> expected = {
      "configure 2", "initial_weights torchscript ARCHIVE [3,4] 2 9",
      "open_evaluator mlp idx /data t10k y 7", "evaluate 1.500000"};
  EXPECT_EQ(runtime_.calls, expected);

  ::close(client_);  // the client is done: Run ends with OK
  client_ = -1;
  EXPECT_TRUE(done_.get().ok());
}

TEST_F(ServerTest, BadRequestsGetAnErrorReplyAndTheConnectionKeepsServing) {
  // The runtime's own error, word for word.
  auto r = Call({{"op", "initial_weights"},
                 {"model", "bad"},
                 {"input_shape", {3}},
                 {"num_classes", 3},
                 {"seed", 1}});
  EXPECT_EQ(StatusOf(r).code(), Code::kInvalidArgument);
  EXPECT_EQ(StatusOf(r).message(), "no such model 'bad'");

  r = Call({{"op", "initial_weights"}, {"model", "mlp"}});  // no input_shape
  EXPECT_EQ(StatusOf(r).code(), Code::kInvalidArgument);
  EXPECT_NE(StatusOf(r).message().find("bad initial_weights request"), std::string::npos)
      << r.dump();

  r = Call({{"op", "transmogrify"}});
  EXPECT_EQ(StatusOf(r).message(), "unknown request 'transmogrify'");

  // An evaluation of no open evaluator, and weights that do not fit their spec: refused, and
  // their blobs consumed so that the next request is read from its start.
  const model::Weights w = RecordingRuntime::Weights();
  const std::string blob(reinterpret_cast<const char*>(w.data.data()), w.data.size() * 4);
  r = Call({{"op", "evaluate"}, {"id", 42}, {"spec", w.spec.ToJson()}}, blob);
  EXPECT_EQ(StatusOf(r).message(), "evaluate: no such evaluator");
  r = Call({{"op", "open_evaluator"},
            {"model", "mlp"},
            {"input_shape", {3}},
            {"num_classes", 3},
            {"format", "csv"},
            {"path", "/e.csv"},
            {"split", ""},
            {"label_column", "label"},
            {"limit", 0}});
  const int64_t id = r.value("id", int64_t{-1});
  r = Call({{"op", "evaluate"}, {"id", id}, {"spec", w.spec.ToJson()}}, blob.substr(4));
  EXPECT_EQ(StatusOf(r).code(), Code::kInvalidArgument);
  EXPECT_NE(StatusOf(r).message().find("bytes of weights"), std::string::npos) << r.dump();

  r = Call({{"op", "configure"}, {"threads", 1}});
  EXPECT_TRUE(StatusOf(r).ok()) << r.dump();
  EXPECT_EQ(runtime_.calls.back(), "configure 1");
  EXPECT_EQ(runtime_.calls.size(), 3u) << "no evaluation reached the runtime";
}

}  // namespace
}  // namespace shoal::evaluator
