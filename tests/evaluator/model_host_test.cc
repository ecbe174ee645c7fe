// The coordinator's ModelRuntime, MakeChildProcessRuntime (child_process_runtime.h): the calls
// run in a shoal-evaluator child, the results are exact, failures of that process are reported
// instead of hanging or crashing the coordinator, and the child gets none of its descriptors.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "base/landlock.h"
#include "evaluator/child_process_runtime.h"
#include "tests/integration/process.h"

namespace shoal {
namespace {

class ModelHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string bin = testing::BinDir() + "/shoal-evaluator";
    ASSERT_EQ(::access(bin.c_str(), X_OK), 0) << bin << " not built";
    ::setenv("SHOAL_EVALUATOR", bin.c_str(), 1);
    char tmpl[] = "/tmp/shoal-host-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    runtime_ = evaluator::MakeChildProcessRuntime({dir_});
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // 10 rows of 3 features, labels 0 x4, 1 x3, 2 x3.
  std::string WriteCsv() {
    const std::string path = dir_ + "/eval.csv";
    std::ofstream f(path);
    f << "a,b,c,label\n";
    const int labels[] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0};
    for (int i = 0; i < 10; ++i) f << i << "," << 0.5 * i << "," << -i << "," << labels[i] << "\n";
    return path;
  }

  static evaluator::EvalData Csv(const std::string& path) { return {"csv", path, "", "label", 0}; }

  // The evaluator process's pid, from Configure's "(in shoal-evaluator, pid N)".
  static pid_t EvaluatorPid(const std::string& runtime) {
    const auto at = runtime.rfind("pid ");
    return at == std::string::npos ? -1 : static_cast<pid_t>(std::atol(runtime.c_str() + at + 4));
  }

  std::string dir_;
  std::unique_ptr<evaluator::ModelRuntime> runtime_;
};

// Issue #20, item 1: the process that runs the coordinator's user TorchScript is confined by
// a seccomp filter (base/sandbox.h; tests/base/sandbox_test.cc tries what it refuses) before it
// serves a request, and still evaluates: its test set is read after the filter is in place.
TEST_F(ModelHostTest, TheChildRunsModelsUnderASeccompFilter) {
  const pid_t child = EvaluatorPid(runtime_->Configure(1));
  ASSERT_GT(child, 0);
  const std::string status = testing::ReadText("/proc/" + std::to_string(child) + "/status");
  EXPECT_NE(status.find("Seccomp:\t2"), std::string::npos) << status;
  EXPECT_NE(status.find("NoNewPrivs:\t1"), std::string::npos) << status;
  auto e = runtime_->OpenEvaluator({"logreg", ""}, {3}, 3, Csv(WriteCsv()));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  auto w = runtime_->InitialWeights({"logreg", ""}, {3}, 3, 1);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto m = (*e)->Evaluate(*w);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->count, 10);
  runtime_->Release();
}

// Issue #20, item 1 (Landlock, base/landlock.h): the child reads only what the coordinator named
// (MakeChildProcessRuntime's `readable`: eval.path) and the system paths LibTorch reads. A file
// beside it - the same valid test set, copied to a directory not named - cannot be opened,
// whichever of its threads asks; the named one can.
TEST_F(ModelHostTest, TheChildReadsOnlyTheDataItWasGiven) {
  ASSERT_GE(LandlockAbi(), 1) << "this kernel has no Landlock";
  char tmpl[] = "/tmp/shoal-host-secret-XXXXXX";
  const std::string elsewhere = ::mkdtemp(tmpl);
  std::filesystem::copy_file(WriteCsv(), elsewhere + "/eval.csv");
  runtime_->Configure(1);
  auto refused = runtime_->OpenEvaluator({"logreg", ""}, {3}, 3, Csv(elsewhere + "/eval.csv"));
  std::filesystem::remove_all(elsewhere);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("Permission denied"), std::string::npos)
      << refused.status().ToString();
  auto allowed = runtime_->OpenEvaluator({"logreg", ""}, {3}, 3, Csv(dir_ + "/eval.csv"));
  ASSERT_TRUE(allowed.ok()) << allowed.status().ToString();
  EXPECT_EQ((*allowed)->size(), 10);
  runtime_->Release();
}

TEST_F(ModelHostTest, InitialWeightsComeFromTheChildAndAreDeterministicInTheSeed) {
  const std::string runtime = runtime_->Configure(1);
  EXPECT_NE(runtime.find("blas="), std::string::npos) << runtime;
  const pid_t child = EvaluatorPid(runtime);
  ASSERT_GT(child, 0) << runtime;
  EXPECT_NE(child, ::getpid());
  auto a = runtime_->InitialWeights({"mlp", ""}, {1, 28, 28}, 10, 7);
  auto b = runtime_->InitialWeights({"mlp", ""}, {1, 28, 28}, 10, 7);
  auto c = runtime_->InitialWeights({"mlp", ""}, {1, 28, 28}, 10, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status().ToString();
  ASSERT_EQ(a->spec.total_numel(), static_cast<int64_t>(a->data.size()));
  EXPECT_EQ(a->spec.tensors.front().name, "fc1.weight");
  EXPECT_EQ(a->data, b->data);
  EXPECT_NE(a->data, c->data);
  EXPECT_EQ(a->FirstNonFinite(), -1);
  // A model the child cannot make: its error, word for word, and the connection still works.
  auto bad = runtime_->InitialWeights({"resnet", ""}, {1, 28, 28}, 10, 7);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("resnet"), std::string::npos) << bad.status().ToString();
  EXPECT_TRUE(runtime_->InitialWeights({"logreg", ""}, {3}, 3, 1).ok());
  runtime_->Release();  // nothing holds the child any more: it exits
  for (int i = 0; i < 100 && ::kill(child, 0) == 0; ++i) ::usleep(50 * 1000);
  EXPECT_NE(::kill(child, 0), 0) << "the evaluator process outlived its last user";
}

// Zero weights give every class the same logit: the prediction is class 0 (4 of 10 samples)
// and the cross-entropy is exactly ln 3.
TEST_F(ModelHostTest, CentralEvaluationInTheChildIsExact) {
  auto spec = runtime_->InitialWeights({"logreg", ""}, {3}, 3, 1);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  auto eval = runtime_->OpenEvaluator({"logreg", ""}, {3}, 3, Csv(WriteCsv()));
  ASSERT_TRUE(eval.ok()) << eval.status().ToString();
  EXPECT_EQ((*eval)->size(), 10);
  model::Weights zero = *spec;
  std::fill(zero.data.begin(), zero.data.end(), 0.0f);
  auto m = (*eval)->Evaluate(zero);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->count, 10);
  EXPECT_DOUBLE_EQ(m->accuracy, 0.4);
  EXPECT_NEAR(m->loss, std::log(3.0), 1e-6);
  EXPECT_GE(m->cpu_seconds, 0.0);

  // Weights that do not fit their spec are refused by the child, which keeps serving.
  model::Weights wrong = zero;
  wrong.data.pop_back();
  auto refused = (*eval)->Evaluate(wrong);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("bytes of weights"), std::string::npos);
  EXPECT_TRUE((*eval)->Evaluate(zero).ok());

  // Bad evaluation data: the loader's message, from the child.
  auto missing = runtime_->OpenEvaluator({"logreg", ""}, {3}, 3, Csv(dir_ + "/nope.csv"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.csv"), std::string::npos)
      << missing.status().ToString();
}

// The child dies (OOM killer, a crashing TorchScript model, kill -9) between evaluations: a new
// process takes over, opens the test set again and the evaluation is exact as before.
TEST_F(ModelHostTest, AKilledEvaluatorProcessIsReplacedAndTheEvaluationRepeated) {
  const pid_t child = EvaluatorPid(runtime_->Configure(1));
  ASSERT_GT(child, 0);
  auto eval = runtime_->OpenEvaluator({"logreg", ""}, {3}, 3, Csv(WriteCsv()));
  ASSERT_TRUE(eval.ok()) << eval.status().ToString();
  auto w = runtime_->InitialWeights({"logreg", ""}, {3}, 3, 1);
  ASSERT_TRUE(w.ok());
  std::fill(w->data.begin(), w->data.end(), 0.0f);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  auto m = (*eval)->Evaluate(*w);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->count, 10);
  EXPECT_DOUBLE_EQ(m->accuracy, 0.4);
  EXPECT_NEAR(m->loss, std::log(3.0), 1e-6);
  EXPECT_TRUE((*eval)->Evaluate(*w).ok());  // the new process keeps serving
  eval->reset();
  runtime_->Release();
  auto again =
      runtime_->InitialWeights({"logreg", ""}, {3}, 3, 1);  // and a released one is replaced
  ASSERT_TRUE(again.ok()) << again.status().ToString();
}

// An evaluation that kills every process it runs in is tried twice, then reported: the error
// names the process, its pid and the signal, and nothing hangs. Processes that keep dying on
// later evaluations are replaced at most 3 times within 10 minutes, each after a back-off
// (250, 500, 1000 ms).
TEST_F(ModelHostTest, AnEvaluationThatKeepsKillingTheProcessIsReportedNotRetriedForever) {
  runtime_->Release();  // no process from before: the ones started below see the variable
  auto w = runtime_->InitialWeights({"logreg", ""}, {3}, 3, 1);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  struct Unset {
    ~Unset() { ::unsetenv("SHOAL_FAULT_EVALUATOR_ABORT"); }
  } unset;
  ::setenv("SHOAL_FAULT_EVALUATOR_ABORT", "1", 1);  // each new process dies at its first one
  {
    auto eval = runtime_->OpenEvaluator({"logreg", ""}, {3}, 3, Csv(WriteCsv()));
    ASSERT_TRUE(eval.ok()) << eval.status().ToString();
    auto m = (*eval)->Evaluate(*w);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), Code::kUnavailable);
    EXPECT_NE(m.status().message().find("after restarting shoal-evaluator"), std::string::npos)
        << m.status().ToString();
    EXPECT_NE(m.status().message().find("was killed by signal 9"), std::string::npos)
        << m.status().ToString();
  }
  ::setenv("SHOAL_FAULT_EVALUATOR_ABORT", "2", 1);  // each new process dies at its second one
  auto eval = runtime_->OpenEvaluator({"logreg", ""}, {3}, 3, Csv(WriteCsv()));
  ASSERT_TRUE(eval.ok()) << eval.status().ToString();
  ASSERT_TRUE((*eval)->Evaluate(*w).ok());
  const auto start = std::chrono::steady_clock::now();
  for (int restart = 1; restart <= 3; ++restart) {
    auto m = (*eval)->Evaluate(*w);  // dies, replaced, repeated in the new process
    ASSERT_TRUE(m.ok()) << "restart " << restart << ": " << m.status().ToString();
    EXPECT_EQ(m->count, 10);
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1750))
      << "the three restarts did not wait 250 + 500 + 1000 ms";
  auto last = (*eval)->Evaluate(*w);
  ASSERT_FALSE(last.ok());
  EXPECT_NE(last.status().message().find("3 restarts within the last 10 min"), std::string::npos)
      << last.status().ToString();
  EXPECT_NE(last.status().message().find("killed by signal 9"), std::string::npos)
      << last.status().ToString();
}

// The child must not hold the coordinator's sockets or files (a listening socket kept open by a
// child would survive the coordinator).
TEST_F(ModelHostTest, TheChildInheritsNoDescriptorsButItsOwn) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);  // deliberately without CLOEXEC
  ASSERT_GE(listener, 0);
  struct stat st;
  ASSERT_EQ(::fstat(listener, &st), 0);
  const std::string mine = "socket:[" + std::to_string(st.st_ino) + "]";
  const pid_t child = EvaluatorPid(runtime_->Configure(1));
  ASSERT_GT(child, 0);
  int sockets = 0;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(child) + "/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    EXPECT_NE(target, mine) << "fd " << e.path().filename() << " is the parent's listening socket";
    sockets += target.rfind("socket:", 0) == 0;
  }
  EXPECT_EQ(sockets, 1) << "only its end of the connection to the coordinator";
  ::close(listener);
  runtime_->Release();
}

TEST_F(ModelHostTest, AMissingEvaluatorExecutableIsNamed) {
  ::setenv("SHOAL_EVALUATOR", (dir_ + "/no-such-evaluator").c_str(), 1);
  auto w = runtime_->InitialWeights({"logreg", ""}, {3}, 3, 1);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Code::kNotFound);
  EXPECT_NE(w.status().message().find("no-such-evaluator"), std::string::npos)
      << w.status().ToString();
}

}  // namespace
}  // namespace shoal
