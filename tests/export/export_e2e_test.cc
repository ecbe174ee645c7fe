// End-to-end: a real federation (coordinator + 2 workers over ZeroMQ on loopback) trains an mlp,
// `shoalctl export` writes a signed TorchScript file, `shoalctl verify` accepts it and rejects
// tampered copies, Python's torch.jit.load reproduces the coordinator's central accuracy, and
// shoal-serve answers predictions that match the C++ model sample for sample.
#include <gtest/gtest.h>
#include <httplib.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/hex.h"
#include "data/dataset.h"
#include "nn/models.h"
#include "security/signing.h"
#include "store/model_store.h"
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

class ExportEndToEndTest : public testing::PythonExportTest {};

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

TEST_F(ExportEndToEndTest, FederationToSignedExportToPythonAndHttpServing) {
  const std::string run = dir_ + "/run";
  std::string log;

  // 1. A small federation: 3000 training images in 2 IID silos, 2 rounds of an mlp, central
  //    evaluation on all 10,000 test images.
  ASSERT_EQ(Run({BinDir() + "/shoalctl", "partition", "--source", kFashion, "--workers", "2",
                 "--scheme", "iid", "--seed", "3", "--out", dir_ + "/silos", "--limit", "3000"},
                "partition", &log),
            0)
      << log;
  Process coord({BinDir() + "/shoal-coordinator",
                 "--run-dir",
                 run,
                 "--bind",
                 "tcp://127.0.0.1:*",
                 "--endpoint-file",
                 dir_ + "/endpoint",
                 "--model",
                 "mlp",
                 "--rounds",
                 "2",
                 "--min-workers",
                 "2",
                 "--min-fit",
                 "2",
                 "--eval-limit",
                 "0",
                 "--round-timeout",
                 "120",
                 "--set",
                 "network.heartbeat_ms=200",
                 "--set",
                 "network.peer_timeout_ms=5000"},
                dir_ + "/coordinator.log");
  const std::string endpoint = testing::WaitForFile(dir_ + "/endpoint", 60s);
  ASSERT_FALSE(endpoint.empty()) << coord.Log();
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 1; i <= 2; ++i) {
    const std::string name = "silo-" + std::to_string(i);
    workers.push_back(std::make_unique<Process>(
        std::vector<std::string>{BinDir() + "/shoal-worker", "--name", name, "--coordinator",
                                 endpoint, "--data", dir_ + "/silos/" + name, "--set",
                                 "retry.initial_ms=100"},
        dir_ + "/" + name + ".log"));
  }
  auto coord_code = coord.Wait(240s);
  ASSERT_TRUE(coord_code.has_value()) << "coordinator did not finish\n" << coord.Log();
  ASSERT_EQ(*coord_code, 0) << coord.Log();
  for (auto& w : workers) EXPECT_TRUE(w->Wait(30s).has_value()) << w->Log();

  auto versions = store::ListVersions(run);
  ASSERT_TRUE(versions.ok()) << versions.status().ToString();
  ASSERT_EQ(versions->size(), 3u);
  const store::VersionMeta& v2 = versions->back();
  ASSERT_EQ(v2.version, 2u);
  ASSERT_TRUE(v2.metrics["central"].is_object()) << v2.ToJson().dump();
  const double recorded_accuracy = v2.metrics["central"]["accuracy"].get<double>();
  ASSERT_EQ(v2.metrics["central"]["count"].get<int64_t>(), 10000);

  // 2. Export the latest version.
  const std::string model_pt = dir_ + "/out/model.pt";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(Run({BinDir() + "/shoalctl", "export", run, "--version", "latest", "--out", model_pt},
                "export", &log),
            0)
      << log;
  const double export_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("shoalctl export took %.2f s\n%s", export_s, log.c_str());
  ASSERT_TRUE(PathExists(security::SigningKeyPath(run)))
      << "export must create the coordinator key";
  const nlohmann::json meta = ReadJson(dir_ + "/out/model.json");
  ASSERT_TRUE(meta.is_object()) << testing::ReadText(dir_ + "/out/model.json");
  EXPECT_EQ(meta["version"], 2);
  EXPECT_EQ(meta["round"], 2);
  EXPECT_EQ(meta["weights_sha256"], v2.sha256);
  EXPECT_EQ(meta["model"], "mlp");
  EXPECT_EQ(meta["input_shape"], nlohmann::json({1, 28, 28}));
  EXPECT_EQ(meta["class_names"][1], "Trouser");
  EXPECT_EQ(meta["metrics"]["central"]["accuracy"].get<double>(), recorded_accuracy);
  ASSERT_EQ(meta["lineage"].size(), 3u);
  EXPECT_EQ(meta["lineage"][0]["version"], 2);
  EXPECT_EQ(meta["lineage"][2]["version"], 0);
  EXPECT_EQ(meta["lineage"][0]["participants"], nlohmann::json({"silo-1", "silo-2"}));
  EXPECT_EQ(meta["signature"]["algorithm"], "ed25519");
  auto coordinator_pub = security::PublicKey::Load(security::SigningPublicKeyPath(run));
  ASSERT_TRUE(coordinator_pub.ok()) << coordinator_pub.status().ToString();
  EXPECT_EQ(meta["signature"]["public_key_fingerprint"], coordinator_pub->fingerprint());

  // `best` picks the version with the highest central accuracy (the oldest of equals).
  uint64_t best_version = 0;
  double best_accuracy = -1;
  for (const auto& v : *versions) {
    const double acc = v.metrics["central"]["accuracy"].get<double>();
    if (acc > best_accuracy) {
      best_accuracy = acc;
      best_version = v.version;
    }
  }
  ASSERT_EQ(Run({BinDir() + "/shoalctl", "export", run, "--version", "best", "--out",
                 dir_ + "/best/model.pt"},
                "export-best", &log),
            0)
      << log;
  EXPECT_EQ(ReadJson(dir_ + "/best/model.json")["version"], best_version);
  EXPECT_NE(Run({BinDir() + "/shoalctl", "export", run, "--version", "7", "--out",
                 dir_ + "/none/model.pt"},
                "export-missing", &log),
            0);
  EXPECT_TRUE(Contains(log, "version v7 is not committed")) << log;

  // 3. verify: the original passes; tampered copies and a wrong key fail with exit code 3.
  ASSERT_EQ(Run({BinDir() + "/shoalctl", "verify", model_pt, "--run-dir", run}, "verify", &log), 0)
      << log;
  EXPECT_TRUE(Contains(log, "OK ")) << log;
  EXPECT_TRUE(Contains(log, coordinator_pub->fingerprint())) << log;
  // Issue #20: without a trusted key, verify used to accept the key model.json carries itself.
  // Now it fails and says how to name the key it should trust; a pinned fingerprint is enough.
  EXPECT_EQ(Run({BinDir() + "/shoalctl", "verify", model_pt}, "verify-untrusted", &log), 3) << log;
  EXPECT_TRUE(Contains(log, "no trusted key")) << log;
  EXPECT_TRUE(Contains(log, coordinator_pub->fingerprint())) << log;
  ASSERT_EQ(Run({BinDir() + "/shoalctl", "verify", model_pt, "--fingerprint",
                 coordinator_pub->fingerprint()},
                "verify-pinned", &log),
            0)
      << log;
  EXPECT_TRUE(Contains(log, "OK ")) << log;

  // The attack: model.json re-signed by another key, which it then embeds.
  {
    auto forger = security::PrivateKey::Generate();
    ASSERT_TRUE(forger.ok());
    nlohmann::json resigned = meta;
    resigned["metrics"]["central"]["accuracy"] = 0.999;
    resigned["public_key_pem"] = forger->public_key().pem();
    resigned.erase("signature");
    auto sig = forger->Sign(resigned.dump());
    ASSERT_TRUE(sig.ok());
    resigned["signature"] = {{"algorithm", "ed25519"},
                             {"public_key_fingerprint", forger->public_key().fingerprint()},
                             {"signature", HexEncode(*sig)}};
    const std::string resigned_dir = dir_ + "/resigned";
    std::filesystem::create_directories(resigned_dir);
    std::filesystem::copy_file(model_pt, resigned_dir + "/model.pt");
    ASSERT_TRUE(WriteFileAtomic(resigned_dir + "/model.json", resigned.dump(2)).ok());
    for (const auto& trust : std::vector<std::vector<std::string>>{
             {}, {"--fingerprint", coordinator_pub->fingerprint()}, {"--run-dir", run}}) {
      std::vector<std::string> argv = {BinDir() + "/shoalctl", "verify",
                                       resigned_dir + "/model.pt"};
      argv.insert(argv.end(), trust.begin(), trust.end());
      EXPECT_EQ(Run(argv, "verify-resigned", &log), 3) << log;
      EXPECT_FALSE(Contains(log, "OK ")) << log;
    }
  }

  const std::string bad_pt_dir = dir_ + "/tampered-pt";
  std::filesystem::create_directories(bad_pt_dir);
  std::filesystem::copy_file(dir_ + "/out/model.json", bad_pt_dir + "/model.json");
  std::string pt_bytes = testing::ReadText(model_pt);
  ASSERT_GT(pt_bytes.size(), 1000u);
  pt_bytes[pt_bytes.size() / 2] ^= 0x01;
  ASSERT_TRUE(WriteFileAtomic(bad_pt_dir + "/model.pt", pt_bytes).ok());
  EXPECT_EQ(Run({BinDir() + "/shoalctl", "verify", bad_pt_dir + "/model.pt", "--run-dir", run},
                "verify-bad-pt", &log),
            3)
      << log;
  EXPECT_TRUE(Contains(log, "model.pt hash mismatch")) << log;

  const std::string bad_json_dir = dir_ + "/tampered-json";
  std::filesystem::create_directories(bad_json_dir);
  std::filesystem::copy_file(model_pt, bad_json_dir + "/model.pt");
  nlohmann::json forged = meta;
  forged["metrics"]["central"]["accuracy"] = 0.99;
  ASSERT_TRUE(WriteFileAtomic(bad_json_dir + "/model.json", forged.dump(2)).ok());
  EXPECT_EQ(Run({BinDir() + "/shoalctl", "verify", bad_json_dir + "/model.pt", "--run-dir", run},
                "verify-bad-json", &log),
            3)
      << log;
  EXPECT_TRUE(Contains(log, "modified after signing")) << log;
  EXPECT_EQ(Run({BinDir() + "/shoalctl", "verify", bad_json_dir + "/model.pt"},
                "verify-bad-json-untrusted", &log),
            3)
      << log;

  auto stranger = security::PrivateKey::Generate();
  ASSERT_TRUE(stranger.ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/stranger.pub", stranger->public_key().pem()).ok());
  EXPECT_EQ(Run({BinDir() + "/shoalctl", "verify", model_pt, "--pubkey", dir_ + "/stranger.pub"},
                "verify-wrong-key", &log),
            3)
      << log;
  EXPECT_TRUE(Contains(log, "wrong key")) << log;

  // 4. Python: torch.jit.load + the raw IDX test set reproduce the recorded central accuracy.
  ASSERT_EQ(Run({kPython, SHOAL_EXPORT_CHECK_PY, model_pt, kFashion}, "python", &log, 300s), 0)
      << log;
  const nlohmann::json py = LastJsonLine(log);
  ASSERT_TRUE(py.contains("accuracy")) << log;
  std::printf("python accuracy %.4f (%d/%d), coordinator recorded %.4f\n",
              py["accuracy"].get<double>(), py["correct"].get<int>(), py["count"].get<int>(),
              recorded_accuracy);
  EXPECT_EQ(py["count"].get<int>(), 10000);
  EXPECT_NEAR(py["accuracy"].get<double>(), recorded_accuracy, 1e-4) << log;

  // 5. shoal-serve on a free port, trusting the coordinator's key. Without a trusted key it
  // refuses to start (exit 2), and so with another key.
  Process untrusted({BinDir() + "/shoal-serve", "--model", model_pt, "--port", "0"},
                    dir_ + "/serve-untrusted.log");
  EXPECT_EQ(untrusted.Wait(120s), 2) << untrusted.Log();
  EXPECT_TRUE(Contains(untrusted.Log(), "--pubkey")) << untrusted.Log();
  Process wrong_key({BinDir() + "/shoal-serve", "--model", model_pt, "--port", "0", "--pubkey",
                     dir_ + "/stranger.pub"},
                    dir_ + "/serve-wrong-key.log");
  EXPECT_EQ(wrong_key.Wait(120s), 2) << wrong_key.Log();
  EXPECT_TRUE(Contains(wrong_key.Log(), "not signed by the trusted key")) << wrong_key.Log();
  Process serve({BinDir() + "/shoal-serve", "--model", model_pt, "--port", "0", "--port-file",
                 dir_ + "/serve.port", "--pubkey", security::SigningPublicKeyPath(run)},
                dir_ + "/serve.log");
  const std::string port_text = testing::WaitForFile(dir_ + "/serve.port", 60s);
  ASSERT_FALSE(port_text.empty()) << serve.Log();
  const int port = std::stoi(port_text);
  EXPECT_TRUE(Contains(serve.Log(), "listening on http://127.0.0.1:" + port_text)) << serve.Log();
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(60, 0);
  client.set_write_timeout(60, 0);

  auto health = client.Get("/healthz");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(nlohmann::json::parse(health->body)["status"], "ok");
  auto metadata = client.Get("/metadata");
  ASSERT_TRUE(metadata);
  EXPECT_EQ(metadata->status, 200);
  EXPECT_EQ(nlohmann::json::parse(metadata->body)["version"], 2);

  auto test200 = data::LoadIdxDataset(kFashion, "t10k", 200);
  ASSERT_TRUE(test200.ok()) << test200.status().ToString();
  const std::vector<float> test200_values = test200->FloatFeatures();
  nlohmann::json inputs = nlohmann::json::array();
  for (int64_t i = 0; i < test200->size(); ++i) {
    inputs.push_back(std::vector<float>(test200_values.begin() + i * 784,
                                        test200_values.begin() + (i + 1) * 784));
  }
  auto predicted =
      client.Post("/predict", nlohmann::json{{"inputs", inputs}}.dump(), "application/json");
  ASSERT_TRUE(predicted) << httplib::to_string(predicted.error());
  ASSERT_EQ(predicted->status, 200) << predicted->body.substr(0, 500);
  const auto answer = nlohmann::json::parse(predicted->body);
  EXPECT_EQ(answer["version"], 2);
  ASSERT_EQ(answer["predictions"].size(), 200u);

  // The C++ model with the same stored weights.
  auto weights = store::LoadVersion(run, v2);
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  auto net = nn::MakeModel("mlp", {1, 28, 28}, 10, 0);
  ASSERT_TRUE(net.ok());
  ASSERT_TRUE(nn::SetWeights(**net, *weights).ok());
  const model::EvalMetrics cpp = nn::Evaluate(**net, *test200);
  torch::NoGradGuard no_grad;
  const torch::Tensor cpp_classes =
      (*net)->forward(nn::ModelInput(nn::FeaturesTensor(*test200))).argmax(1);
  int64_t served_correct = 0;
  for (int64_t i = 0; i < 200; ++i) {
    const auto& p = answer["predictions"][i];
    const int64_t k = p["class"].get<int64_t>();
    served_correct += k == test200->labels[i];
    EXPECT_EQ(k, cpp_classes[i].item<int64_t>()) << "sample " << i;
    EXPECT_EQ(p["label"], meta["class_names"][k]);
    ASSERT_EQ(p["probabilities"].size(), 10u);
    double sum = 0;
    for (const auto& q : p["probabilities"]) sum += q.get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-4);
  }
  std::printf("served %lld/200 correct, C++ Evaluate %lld/200\n",
              static_cast<long long>(served_correct),
              static_cast<long long>(std::llround(cpp.accuracy * 200)));
  EXPECT_EQ(served_correct, std::llround(cpp.accuracy * 200));

  // Malformed requests get 400 with a message naming the problem.
  nlohmann::json short_input = {{"inputs", {inputs[0], std::vector<float>(700, 0.5f)}}};
  auto bad = client.Post("/predict", short_input.dump(), "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(nlohmann::json::parse(bad->body)["error"], "inputs[1] has 700 values, expected 784");
  auto too_many = client.Post(
      "/predict",
      nlohmann::json{{"inputs", std::vector<std::vector<float>>(1025, std::vector<float>(1))}}
          .dump(),
      "application/json");
  ASSERT_TRUE(too_many);
  EXPECT_EQ(too_many->status, 400);
  EXPECT_TRUE(Contains(too_many->body, "at most 1024")) << too_many->body;
  auto not_json = client.Post("/predict", "{\"inputs\": [", "application/json");
  ASSERT_TRUE(not_json);
  EXPECT_EQ(not_json->status, 400);
  // Nested lists that flatten to 784 values are one input.
  nlohmann::json nested = nlohmann::json::array();
  for (int r = 0; r < 28; ++r) {
    nested.push_back(
        std::vector<float>(test200_values.begin() + r * 28, test200_values.begin() + (r + 1) * 28));
  }
  nlohmann::json one_nested = nlohmann::json::array();
  one_nested.push_back(nested);
  auto nested_answer =
      client.Post("/predict", nlohmann::json{{"inputs", one_nested}}.dump(), "application/json");
  ASSERT_TRUE(nested_answer);
  ASSERT_EQ(nested_answer->status, 200) << nested_answer->body;
  EXPECT_EQ(nlohmann::json::parse(nested_answer->body)["predictions"][0]["class"],
            answer["predictions"][0]["class"]);

  serve.Kill(SIGTERM);
  EXPECT_EQ(serve.Wait(0ms), 0) << "SIGTERM is a clean stop\n" << serve.Log();
}

}  // namespace
}  // namespace shoal
