// shoal-serve's defences (issue #20, item 8), in process over real HTTP on 127.0.0.1: the model's
// signature checked at load, the bearer token, the body limit derived from the model, and the
// request parser that builds no JSON tree.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "base/hex.h"
#include "base/sha256.h"
#include "nn/export.h"
#include "nn/models.h"
#include "security/signing.h"
#include "tests/testing/allocation_tracker.h"
#include "tools/ctl/export_cmd.h"
#include "tools/serve/request_parser.h"
#include "tools/serve/server.h"

namespace shoal {
namespace {

using nlohmann::json;
using serve::LoadOptions;
using serve::ModelServer;

constexpr char kToken[] = "serve-token-0123456789abcdef";
constexpr int64_t kFeatures = 4;

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-serve-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto net = nn::MakeModel("logreg", {kFeatures}, 3, 1);
    ASSERT_TRUE(net.ok()) << net.status().ToString();
    auto exported = nn::ExportTorchScript("logreg", {kFeatures}, 3, nn::GetWeights(**net));
    ASSERT_TRUE(exported.ok()) << exported.status().ToString();
    model_pt_ = dir_ + "/model.pt";
    ASSERT_TRUE(WriteFileAtomic(model_pt_, exported->bytes).ok());
    card_ = {
        {"format", "shoal-export/1"},
        {"run_id", "test-run"},
        {"model", "logreg"},
        {"input_shape", {kFeatures}},
        {"num_classes", 3},
        {"class_names", {"a", "b", "c"}},
        {"version", 1},
        {"round", 1},
        {"model_pt_sha256", ToHex(Sha256::Of(exported->bytes.data(), exported->bytes.size()))}};
    auto key = security::PrivateKey::Generate();
    ASSERT_TRUE(key.ok());
    key_ = std::make_unique<security::PrivateKey>(std::move(*key));
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/coordinator.pub", key_->public_key().pem()).ok());
    auto stranger = security::PrivateKey::Generate();
    ASSERT_TRUE(stranger.ok());
    stranger_ = std::make_unique<security::PrivateKey>(std::move(*stranger));
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/stranger.pub", stranger_->public_key().pem()).ok());
    WriteCard(Signed(card_, *key_));
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  // `card` signed as shoalctl export signs it.
  static json Signed(json card, const security::PrivateKey& key) {
    card["public_key_pem"] = key.public_key().pem();
    auto bytes = ctl::ModelCardSignedBytes(card);
    EXPECT_TRUE(bytes.ok());
    auto signature = key.Sign(*bytes);
    EXPECT_TRUE(signature.ok());
    card["signature"] = {{"algorithm", "ed25519"},
                         {"public_key_fingerprint", key.public_key().fingerprint()},
                         {"signature", HexEncode(*signature)}};
    return card;
  }
  void WriteCard(const json& card) {
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/model.json", card.dump(2)).ok());
  }
  LoadOptions Trusting(const std::string& pub = "coordinator.pub") {
    LoadOptions o;
    o.trusted_key_path = dir_ + "/" + pub;
    return o;
  }

  std::string dir_;
  std::string model_pt_;
  json card_;
  std::unique_ptr<security::PrivateKey> key_;
  std::unique_ptr<security::PrivateKey> stranger_;
};

TEST_F(ServeTest, ModelSignedByTheTrustedKeyIsServed) {
  auto server = ModelServer::Load(model_pt_, Trusting());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ((*server)->signer_fingerprint(), key_->public_key().fingerprint());
}

TEST_F(ServeTest, UnsignedModelIsRefused) {
  WriteCard(card_);
  auto server = ModelServer::Load(model_pt_, Trusting());
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), Code::kRejected) << server.status().ToString();
  EXPECT_NE(server.status().message().find("is not signed"), std::string::npos)
      << server.status().ToString();
}

// A model.json re-signed by another key (with its own key embedded, so that it verifies by
// itself) is not the coordinator's.
TEST_F(ServeTest, ModelSignedByAnotherKeyIsRefused) {
  WriteCard(Signed(card_, *stranger_));
  auto server = ModelServer::Load(model_pt_, Trusting());
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("not signed by the trusted key " +
                                           key_->public_key().fingerprint()),
            std::string::npos)
      << server.status().ToString();
  // The same files trusted by the wrong key are refused too.
  WriteCard(Signed(card_, *key_));
  EXPECT_FALSE(ModelServer::Load(model_pt_, Trusting("stranger.pub")).ok());
}

TEST_F(ServeTest, ModelJsonModifiedAfterSigningIsRefused) {
  json forged = Signed(card_, *key_);
  forged["class_names"] = {"x", "y", "z"};
  WriteCard(forged);
  auto server = ModelServer::Load(model_pt_, Trusting());
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), Code::kRejected) << server.status().ToString();
}

TEST_F(ServeTest, NoTrustedKeyIsRefusedUnlessExplicitlyAllowed) {
  auto refused = ModelServer::Load(model_pt_, LoadOptions{});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("--pubkey"), std::string::npos)
      << refused.status().ToString();
  LoadOptions allow;
  allow.allow_unverified = true;
  WriteCard(card_);  // even unsigned: the operator said so
  auto served = ModelServer::Load(model_pt_, allow);
  ASSERT_TRUE(served.ok()) << served.status().ToString();
  EXPECT_EQ((*served)->signer_fingerprint(), "");
}

TEST_F(ServeTest, BeyondLoopbackATokenIsRequired) {
  auto server = ModelServer::Load(model_pt_, Trusting());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto bound = (*server)->Bind("0.0.0.0", 0, "");
  ASSERT_FALSE(bound.ok());
  EXPECT_EQ(bound.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bound.status().message().find("--token-file"), std::string::npos)
      << bound.status().ToString();
}

// A running server with a token: requests without it get 401, a body over the model's limit
// gets 413 from its Content-Length alone, a good request is answered.
TEST_F(ServeTest, TokenAndBodyLimitOverHttp) {
  auto loaded = ModelServer::Load(model_pt_, Trusting());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ModelServer& server = **loaded;
  EXPECT_EQ(server.max_body_bytes(),
            serve::kDefaultMaxBatch * kFeatures * serve::kMaxBodyBytesPerValue +
                serve::kBodyOverheadBytes);
  auto port = server.Bind("127.0.0.1", 0, kToken);
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  std::thread serving([&] { EXPECT_TRUE(server.Serve().ok()); });

  httplib::Client cli("127.0.0.1", *port);
  cli.set_read_timeout(60, 0);
  const std::string request = R"({"inputs": [[0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0]]})";
  auto anonymous = cli.Post("/predict", request, "application/json");
  ASSERT_TRUE(anonymous) << httplib::to_string(anonymous.error());
  EXPECT_EQ(anonymous->status, 401);
  auto health = cli.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 401);
  const httplib::Headers auth = {{"Authorization", std::string("Bearer ") + kToken}};
  auto answer = cli.Post("/predict", auth, request, "application/json");
  ASSERT_TRUE(answer);
  ASSERT_EQ(answer->status, 200) << answer->body;
  EXPECT_EQ(json::parse(answer->body)["predictions"].size(), 2u);

  // The body limit: announced, refused before it is sent.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(*port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  const std::string head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(*port) +
                           "\r\nAuthorization: Bearer " + kToken +
                           "\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(server.max_body_bytes() + 1) + "\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  char buf[1024] = {};
  const ssize_t n = ::recv(fd, buf, sizeof(buf) - 1, 0);
  ::close(fd);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf).rfind("HTTP/1.1 413", 0), 0u) << buf;

  server.Stop();
  serving.join();
}

TEST(PredictRequestParserTest, ValidRequests) {
  auto flat =
      serve::ParsePredictRequest(R"({"inputs": [[1, 2.5, -3e-2, 4]], "id": {"x": [1]}})", 4, 8);
  ASSERT_EQ(flat.error, "");
  EXPECT_EQ(flat.count, 1);
  EXPECT_EQ(flat.values, (std::vector<float>{1, 2.5f, -3e-2f, 4}));
  auto nested =
      serve::ParsePredictRequest(R"({"inputs": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]})", 4, 8);
  ASSERT_EQ(nested.error, "");
  EXPECT_EQ(nested.count, 2);
  EXPECT_EQ(nested.values.size(), 8u);
  EXPECT_EQ(nested.values[7], 8.0f);
}

TEST(PredictRequestParserTest, BadRequestsAreNamed) {
  auto error = [](const std::string& body) { return serve::ParsePredictRequest(body, 4, 2).error; };
  EXPECT_EQ(error(R"({"inputs": [[1, 2, 3, 4], [1, 2, 3]]})"),
            "inputs[1] has 3 values, expected 4");
  EXPECT_EQ(error(R"({"inputs": [[1, 2, 3, 4, 5, 6]]})"), "inputs[0] has 6 values, expected 4");
  EXPECT_EQ(error(R"({"inputs": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]})"),
            "\"inputs\" has more than 2 inputs, at most 2 per request");
  // The batch size and the JSON syntax are judged before any one input.
  EXPECT_EQ(error(R"({"inputs": [[1], [2], [3]]})"),
            "\"inputs\" has more than 2 inputs, at most 2 per request");
  EXPECT_EQ(error(R"({"inputs": [[1], [2]], )"), "request body is not valid JSON");
  EXPECT_EQ(error(R"({"inputs": [{"a": [1]}, [1, 2, 3, 4]]})"),
            "inputs[0] is an object, expected a list of 4 numbers");
  EXPECT_EQ(error(R"({"inputs": [[1, "2", 3, 4]]})"),
            "inputs[0] value 1 is a string, expected a number");
  EXPECT_EQ(error(R"({"inputs": [[1, 2, 3, 1e39]]})"),
            "inputs[0] value 3 (1e+39) is not a finite float32");
  EXPECT_EQ(error(R"({"inputs": [5]})"), "inputs[0] is a number, expected a list of 4 numbers");
  EXPECT_EQ(error(R"({"inputs": 5})"), "\"inputs\" is a number, expected a list of inputs");
  EXPECT_EQ(error(R"({"inputs": []})"), "\"inputs\" is empty");
  EXPECT_EQ(error(R"({"other": 1})"),
            "request body must be a JSON object {\"inputs\": [input, ...]}");
  EXPECT_EQ(error(R"([1, 2])"), "request body must be a JSON object {\"inputs\": [input, ...]}");
  EXPECT_EQ(error(R"({"inputs": [)"), "request body is not valid JSON");
  EXPECT_EQ(error(R"({"inputs": [[[[[[[[[[1, 2, 3, 4]]]]]]]]]]})"),
            "inputs[0] is nested more than 8 lists deep");
  EXPECT_EQ(error(R"({"inputs": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]})"),
            "\"inputs\" appears twice");
  EXPECT_EQ(error(std::string(100000, '[')),
            "request body must be a JSON object {\"inputs\": [input, ...]}");
}

// The attack of item 8: a request's body grew the server ~20x (a JSON tree of it, then a copy
// into the batch). Parsed in one pass, a request costs its floats: 4 bytes per value, at most
// twice that while the buffer grows, plus small change.
TEST(PredictRequestParserTest, ParsingAllocatesLittleMoreThanTheFloats) {
  constexpr int64_t kValues = 784;
  constexpr int64_t kInputs = 512;
  std::string body = R"({"inputs": [)";
  for (int64_t i = 0; i < kInputs; ++i) {
    body += i ? ",[" : "[";
    for (int64_t v = 0; v < kValues; ++v) body += v ? ",0.123456" : "0.123456";
    body += "]";
  }
  body += "]}";
  testing::AllocationScope allocations;
  auto parsed = serve::ParsePredictRequest(body, kValues, 1024);
  const size_t total = allocations.total_allocated();
  ASSERT_EQ(parsed.error, "");
  ASSERT_EQ(parsed.count, kInputs);
  const size_t floats = static_cast<size_t>(kInputs * kValues) * sizeof(float);
  EXPECT_LT(total, 4 * floats + (64 << 10))
      << "parsing a " << body.size() << "-byte body allocated " << total << " bytes";
  // What the bound tells apart: the JSON tree the server built before (json::parse) alone.
  testing::AllocationScope tree_allocations;
  const json tree = json::parse(body);
  EXPECT_GT(tree_allocations.total_allocated(), 4 * floats + (64 << 10));
  std::printf("body %zu bytes: one-pass parse allocated %zu bytes, a JSON tree %zu\n", body.size(),
              total, tree_allocations.total_allocated());
}

}  // namespace
}  // namespace shoal
