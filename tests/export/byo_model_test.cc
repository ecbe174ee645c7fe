// Bring your own model, end to end: a model scripted in Python (not a built-in) is named in the
// coordinator's config (model.name = torchscript, model.path), travels to two real workers as
// ModelFile pieces, is trained for 2 rounds, and `shoalctl export` returns the same architecture
// holding the federated weights: Python's torch.jit.load sees exactly the stored numbers and
// reproduces the coordinator's central accuracy. Models that do not fit are refused at start,
// and a resumed run keeps using (and checking) its own copy of the file.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/sha256.h"
#include "model/weights.h"
#include "store/model_store.h"
#include "store/script_copy.h"
#include "tests/export/python_fixture.h"
#include "tests/integration/process.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::BinDir;
using testing::Process;

using testing::Contains;
using testing::kFashion;
using testing::kPython;

nlohmann::json ReadJson(const std::string& path) {
  auto j = nlohmann::json::parse(testing::ReadText(path), nullptr, false);
  return j.is_discarded() ? nlohmann::json() : j;
}

// The last line of `log` that parses as a JSON object.
nlohmann::json LastJsonLine(const std::string& log) {
  std::istringstream in(log);
  std::string line;
  nlohmann::json found;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object()) found = j;
  }
  return found;
}

std::string FileSha256(const std::string& path) {
  const std::string bytes = testing::ReadText(path);
  return ToHex(Sha256::Of(bytes.data(), bytes.size()));
}

// Writes what byo_model.py check compares a state_dict with: `json_path` lists the tensors,
// `json_path`.bin holds their float32 values.
void WriteExpected(const model::Weights& w, const std::string& json_path) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : w.spec.tensors) tensors.push_back({{"name", t.name}, {"shape", t.shape}});
  const std::string bin = std::filesystem::path(json_path).filename().string() + ".bin";
  ASSERT_TRUE(WriteFileAtomic(json_path + ".bin",
                              std::string_view(reinterpret_cast<const char*>(w.data.data()),
                                               w.data.size() * sizeof(float)))
                  .ok());
  ASSERT_TRUE(
      WriteFileAtomic(json_path, nlohmann::json{{"tensors", tensors}, {"data", bin}}.dump()).ok());
}

class ByoModelTest : public testing::PythonExportTest {
 protected:
  // Scripts model `variant` in Python into dir_/<variant>.pt.
  std::string MakeModel(const std::string& variant) {
    const std::string out = dir_ + "/" + variant + ".pt";
    std::string log;
    EXPECT_EQ(Run({kPython, SHOAL_BYO_MODEL_PY, "make", out, "--variant", variant},
                  "make-" + variant, &log),
              0)
        << log;
    return out;
  }

  // The coordinator's command line for a torchscript run of `rounds` rounds on `run`.
  std::vector<std::string> CoordinatorArgs(const std::string& run, const std::string& model,
                                           int rounds) {
    return {BinDir() + "/shoal-coordinator", "--run-dir", run, "--bind", "tcp://127.0.0.1:*",
            "--endpoint-file", dir_ + "/endpoint", "--set", "model.name=torchscript", "--set",
            "model.path=" + model, "--rounds", std::to_string(rounds), "--min-workers", "2",
            "--min-fit", "2", "--eval-limit", "1000", "--round-timeout", "120", "--set",
            "http.enabled=false",
            // Pieces of 64 KiB: the ~200 KB model travels as several ModelFile messages.
            "--set", "network.chunk_bytes=65536", "--set", "network.heartbeat_ms=200", "--set",
            "network.peer_timeout_ms=5000"};
  }
};

TEST_F(ByoModelTest, FederationTrainsAUserModelAndExportsItWithTheFederatedWeights) {
  const std::string user_model = MakeModel("tanh_mlp");
  ASSERT_TRUE(PathExists(user_model));
  const std::string run = dir_ + "/run";
  std::string log;

  // 1. 2000 training images in 2 IID silos; 2 rounds; central evaluation on 1000 test images.
  ASSERT_EQ(Run({BinDir() + "/shoalctl", "partition", "--source", kFashion, "--workers", "2",
                 "--scheme", "iid", "--seed", "3", "--out", dir_ + "/silos", "--limit", "2000"},
                "partition", &log),
            0)
      << log;
  Process coord(CoordinatorArgs(run, user_model, 2), dir_ + "/coordinator.log");
  const std::string endpoint = testing::WaitForFile(dir_ + "/endpoint", 60s);
  ASSERT_FALSE(endpoint.empty()) << coord.Log();
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 1; i <= 2; ++i) {
    const std::string name = "silo-" + std::to_string(i);
    workers.push_back(std::make_unique<Process>(
        std::vector<std::string>{
            BinDir() + "/shoal-worker", "--name", name, "--coordinator", endpoint, "--data",
            dir_ + "/silos/" + name, "--set", "retry.initial_ms=100",
            // A worker runs only the TorchScript files it pins.
            "--set", "model.trusted_script_sha256=[\"" + FileSha256(user_model) + "\"]"},
        dir_ + "/" + name + ".log"));
  }
  auto coord_code = coord.Wait(240s);
  ASSERT_TRUE(coord_code.has_value()) << "coordinator did not finish\n" << coord.Log();
  ASSERT_EQ(*coord_code, 0) << coord.Log();
  for (auto& w : workers) {
    EXPECT_EQ(w->Wait(30s), 0) << w->Log();
    EXPECT_TRUE(Contains(w->Log(), "TorchScript model received")) << w->Log();
    EXPECT_TRUE(Contains(w->Log(), "sha256=" + FileSha256(user_model))) << w->Log();
  }

  // 2. The run keeps its own copy of the file and records where it came from.
  const nlohmann::json info = ReadJson(store::RunInfoPath(run));
  EXPECT_EQ(info["model"], "torchscript");
  EXPECT_EQ(info["model_path"], user_model);
  EXPECT_EQ(info["model_sha256"], FileSha256(user_model));
  EXPECT_EQ(testing::ReadText(store::ScriptModelPath(run)), testing::ReadText(user_model));

  // 3. Versions hold the user's parameters: v0 is exactly what the file was saved with.
  auto versions = store::ListVersions(run);
  ASSERT_TRUE(versions.ok()) << versions.status().ToString();
  ASSERT_EQ(versions->size(), 3u);
  auto v0 = store::LoadVersion(run, versions->front());
  ASSERT_TRUE(v0.ok()) << v0.status().ToString();
  std::vector<std::string> names;
  for (const auto& t : v0->spec.tensors) names.push_back(t.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"hidden.weight", "hidden.bias", "out.weight", "out.bias"}));
  WriteExpected(*v0, dir_ + "/expected-v0.json");
  ASSERT_EQ(Run({kPython, SHOAL_BYO_MODEL_PY, "check", user_model, dir_ + "/expected-v0.json"},
                "check-v0", &log),
            0)
      << log;

  // 4. Federated training improved the model.
  const store::VersionMeta& v1 = (*versions)[1];
  const store::VersionMeta& v2 = (*versions)[2];
  ASSERT_TRUE(v2.metrics["central"].is_object()) << v2.ToJson().dump();
  const double acc0 = versions->front().metrics["central"]["accuracy"].get<double>();
  const double acc1 = v1.metrics["central"]["accuracy"].get<double>();
  const double acc2 = v2.metrics["central"]["accuracy"].get<double>();
  std::printf("central accuracy v0 %.4f, v1 %.4f, v2 %.4f\n", acc0, acc1, acc2);
  EXPECT_EQ(v2.metrics["central"]["count"].get<int64_t>(), 1000);
  // Seen here: v0 0.095, v1 0.487, v2 0.608 (seeded partition, selection and training).
  EXPECT_GT(acc1, acc0 + 0.2) << "training must move the model far from its random start";
  EXPECT_GT(acc2, acc1) << "a second round must improve on the first";
  EXPECT_GT(acc2, 0.4);
  EXPECT_EQ(v2.participants, (std::vector<std::string>{"silo-1", "silo-2"}));

  // 5. Export: the user's architecture with v2's weights.
  const std::string model_pt = dir_ + "/out/model.pt";
  ASSERT_EQ(Run({BinDir() + "/shoalctl", "export", run, "--out", model_pt}, "export", &log), 0)
      << log;
  std::printf("%s", log.c_str());
  const nlohmann::json meta = ReadJson(dir_ + "/out/model.json");
  ASSERT_TRUE(meta.is_object()) << testing::ReadText(dir_ + "/out/model.json");
  EXPECT_EQ(meta["model"], "torchscript");
  EXPECT_EQ(meta["version"], 2);
  EXPECT_EQ(meta["weights_sha256"], v2.sha256);
  EXPECT_EQ(meta["script_model"]["sha256"], FileSha256(user_model));
  EXPECT_EQ(meta["script_model"]["path"], user_model);
  EXPECT_LE(meta["export_check"]["max_abs_diff"].get<double>(), 1e-5);
  ASSERT_EQ(Run({BinDir() + "/shoalctl", "verify", model_pt, "--run-dir", run}, "verify", &log), 0)
      << log;

  // 6. Python: the exported state_dict is v2's weights bit for bit, the class is the user's, and
  //    the test-set accuracy is the one the coordinator recorded.
  auto weights = store::LoadVersion(run, v2);
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  WriteExpected(*weights, dir_ + "/expected-v2.json");
  ASSERT_EQ(Run({kPython, SHOAL_BYO_MODEL_PY, "check", model_pt, dir_ + "/expected-v2.json"},
                "check-v2", &log),
            0)
      << log;
  const nlohmann::json checked = LastJsonLine(log);
  EXPECT_EQ(checked["equal"], true) << log;
  EXPECT_EQ(checked["class"], "TanhMlp") << log;
  EXPECT_EQ(checked["training"], false) << "exported in eval mode\n" << log;
  ASSERT_EQ(Run({kPython, SHOAL_EXPORT_CHECK_PY, model_pt, kFashion, "--limit", "1000"}, "python",
                &log, 300s),
            0)
      << log;
  const nlohmann::json py = LastJsonLine(log);
  ASSERT_TRUE(py.contains("accuracy")) << log;
  std::printf("python accuracy %.4f (%d/%d), coordinator recorded %.4f\n",
              py["accuracy"].get<double>(), py["correct"].get<int>(), py["count"].get<int>(), acc2);
  EXPECT_EQ(py["count"].get<int>(), 1000);
  EXPECT_NEAR(py["accuracy"].get<double>(), acc2, 1e-4) << log;

  // 7. A restart on the finished run resumes from its own copy, even when model.path now names
  //    another file (one that would not even load: 5 outputs).
  const std::string other = MakeModel("wrong_classes");
  ASSERT_EQ(Run(CoordinatorArgs(run, other, 2), "resume", &log, 60s), 0) << log;
  EXPECT_TRUE(Contains(log, "is not the file this run started with")) << log;
  EXPECT_TRUE(Contains(log, "final model: v2")) << log;

  // 8. A modified copy is detected, by the coordinator and by export.
  std::string copy = testing::ReadText(store::ScriptModelPath(run));
  copy[copy.size() / 2] ^= 0x01;
  ASSERT_TRUE(WriteFileAtomic(store::ScriptModelPath(run), copy).ok());
  EXPECT_NE(Run(CoordinatorArgs(run, user_model, 3), "resume-tampered", &log, 60s), 0) << log;
  EXPECT_TRUE(Contains(log, "was modified or replaced")) << log;
  EXPECT_EQ(Run({BinDir() + "/shoalctl", "export", run, "--out", dir_ + "/bad/model.pt"},
                "export-tampered", &log),
            2)
      << log;
  EXPECT_TRUE(Contains(log, "was modified or replaced")) << log;
  EXPECT_FALSE(PathExists(dir_ + "/bad/model.pt"));
}

TEST_F(ByoModelTest, ModelsThatDoNotFitAreRefusedAtStartNamingTheProblem) {
  struct Case {
    std::string variant;
    std::string message;
  };
  for (const Case& c :
       {Case{"wrong_classes", "returns shape [2,5]"}, Case{"batchnorm", "norm.running_mean"}}) {
    SCOPED_TRACE(c.variant);
    const std::string model = MakeModel(c.variant);
    const std::string run = dir_ + "/run-" + c.variant;
    std::string log;
    EXPECT_NE(Run(CoordinatorArgs(run, model, 1), "coordinator-" + c.variant, &log, 60s), 0);
    EXPECT_TRUE(Contains(log, "model.path " + model)) << log;
    EXPECT_TRUE(Contains(log, c.message)) << log;
    // Nothing is left behind that a later start would resume.
    EXPECT_FALSE(PathExists(store::RunInfoPath(run)));
    EXPECT_FALSE(PathExists(store::ScriptModelPath(run)));
  }
  std::string log;
  EXPECT_EQ(
      Run(CoordinatorArgs(dir_ + "/run-missing", dir_ + "/no-such.pt", 1), "missing", &log, 60s),
      1);
  EXPECT_TRUE(Contains(log, "model.path")) << log;
  EXPECT_TRUE(Contains(log, "no such file")) << log;
  EXPECT_EQ(Run({BinDir() + "/shoal-coordinator", "--set", "model.name=torchscript"}, "no-path",
                &log, 60s),
            2);
  EXPECT_TRUE(Contains(log, "model.path")) << log;
  EXPECT_TRUE(Contains(log, "required when model.name is torchscript")) << log;
}

}  // namespace
}  // namespace shoal
