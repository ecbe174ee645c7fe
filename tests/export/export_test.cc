// TorchScript export of the built-in models (outputs and parameters against the C++ modules)
// and Ed25519 signing (known answer, round trips, tampering, wrong keys, coordinator key files).
#include "nn/export.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "base/file_util.h"
#include "base/hex.h"
#include "nn/models.h"
#include "security/signing.h"

namespace shoal {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct ModelCase {
  std::string name;
  std::vector<int64_t> input_shape;
  int64_t num_classes;
};

void PrintTo(const ModelCase& c, std::ostream* os) {
  *os << c.name << " " << model::ShapeString(c.input_shape) << " " << c.num_classes << " classes";
}

std::string CaseName(const ::testing::TestParamInfo<ModelCase>& info) {
  std::string s = info.param.name;
  for (int64_t d : info.param.input_shape) s += "_" + std::to_string(d);
  return s + "_c" + std::to_string(info.param.num_classes);
}

class ExportModelTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(ExportModelTest, ExportedModuleHoldsTheWeightsAndComputesTheSameLogits) {
  const ModelCase& c = GetParam();
  auto net = nn::MakeModel(c.name, c.input_shape, c.num_classes, /*seed=*/7);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  const model::Weights weights = nn::GetWeights(**net);

  auto exported = nn::ExportTorchScript(c.name, c.input_shape, c.num_classes, weights);
  ASSERT_TRUE(exported.ok()) << exported.status().ToString();
  EXPECT_LE(exported->max_abs_diff, nn::kExportTolerance);
  EXPECT_GT(exported->check_samples, 0);

  // Load the archive as a consumer would and check it independently of VerifyScriptModule.
  std::istringstream in(exported->bytes);
  torch::jit::Module loaded = torch::jit::load(in);

  // Every parameter is there under the C++ name, bit for bit.
  size_t seen = 0;
  for (const auto& p : loaded.named_parameters(/*recurse=*/true)) {
    size_t index = weights.spec.tensors.size();
    for (size_t i = 0; i < weights.spec.tensors.size(); ++i) {
      if (weights.spec.tensors[i].name == p.name) index = i;
    }
    ASSERT_LT(index, weights.spec.tensors.size()) << "unexpected parameter " << p.name;
    const torch::Tensor t = p.value.contiguous();
    ASSERT_EQ(t.sizes().vec(), weights.spec.tensors[index].shape) << p.name;
    EXPECT_EQ(0, std::memcmp(t.data_ptr<float>(), weights.data.data() + weights.Offset(index),
                             t.numel() * sizeof(float)))
        << p.name << " differs from the stored weights";
    ++seen;
  }
  EXPECT_EQ(seen, weights.spec.tensors.size());

  // Same logits as the C++ module on a batch it has never seen.
  torch::manual_seed(99);
  std::vector<int64_t> sizes = {5};
  sizes.insert(sizes.end(), c.input_shape.begin(), c.input_shape.end());
  const torch::Tensor x = torch::rand(sizes);
  torch::NoGradGuard no_grad;
  const torch::Tensor want = (*net)->forward(x);
  const torch::Tensor got = loaded.forward({x}).toTensor();
  ASSERT_EQ(got.sizes().vec(), (std::vector<int64_t>{5, c.num_classes}));
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-5);

  // The in-memory module agrees too, and VerifyScriptModule reports the same thing.
  torch::jit::Module built;
  ASSERT_TRUE(nn::BuildScriptModule(c.name, c.input_shape, c.num_classes, weights, &built).ok());
  auto diff = nn::VerifyScriptModule(built, **net, c.input_shape, /*seed=*/5, /*batch=*/3);
  ASSERT_TRUE(diff.ok()) << diff.status().ToString();
  EXPECT_LE(*diff, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(BuiltinModels, ExportModelTest,
                         ::testing::Values(ModelCase{"mlp", {1, 28, 28}, 10},
                                           ModelCase{"cnn", {1, 28, 28}, 10},
                                           ModelCase{"logreg", {1, 28, 28}, 10},
                                           ModelCase{"mlp", {13}, 3}, ModelCase{"logreg", {13}, 2},
                                           ModelCase{"cnn", {3, 16, 12}, 4}),
                         CaseName);

// Images are kept as bytes and converted batch by batch; the model must see exactly the floats
// it saw when datasets held static_cast<float>(x) / 255.0f (training and evaluation unchanged).
TEST(ModelInputTest, PixelBatchesBecomeExactlyTheFloatsOfXOver255) {
  data::Dataset images;
  images.sample_shape = {1, 16, 16};
  for (int v = 0; v < 256; ++v) images.pixels.push_back(static_cast<uint8_t>(255 - v));
  images.labels = {3};
  const torch::Tensor rows = nn::FeaturesTensor(images);
  EXPECT_EQ(rows.scalar_type(), torch::kUInt8);
  const torch::Tensor input = nn::ModelInput(rows.index_select(0, torch::tensor({int64_t{0}})));
  ASSERT_EQ(input.scalar_type(), torch::kFloat32);
  EXPECT_EQ(input.sizes(), (std::vector<int64_t>{1, 1, 16, 16}));
  const std::vector<float> expected = images.FloatFeatures();
  ASSERT_EQ(expected.size(), 256u);
  for (int v = 0; v < 256; ++v) {
    const float got = input.flatten()[v].item<float>();
    ASSERT_EQ(got, static_cast<float>(255 - v) / 255.0f) << "pixel value " << 255 - v;
    ASSERT_EQ(got, expected[static_cast<size_t>(v)]);
  }
  // CSV rows are floats already and pass through untouched.
  data::Dataset rows_csv;
  rows_csv.sample_shape = {2};
  rows_csv.features = {0.25f, -7.5f};
  rows_csv.labels = {0};
  const torch::Tensor csv = nn::ModelInput(nn::FeaturesTensor(rows_csv));
  EXPECT_EQ(csv.scalar_type(), torch::kFloat32);
  EXPECT_EQ(csv[0][1].item<float>(), -7.5f);
}

TEST(ExportTest, VerifyScriptModuleCatchesAModuleThatDiffersFromTheNet) {
  auto net = nn::MakeModel("mlp", {1, 28, 28}, 10, 3);
  ASSERT_TRUE(net.ok());
  model::Weights w = nn::GetWeights(**net);
  w.data.back() += 1e-3f;  // fc3.bias[9]
  torch::jit::Module module;
  ASSERT_TRUE(nn::BuildScriptModule("mlp", {1, 28, 28}, 10, w, &module).ok());
  auto diff = nn::VerifyScriptModule(module, **net, {1, 28, 28}, 1);
  ASSERT_FALSE(diff.ok());
  EXPECT_EQ(diff.status().code(), Code::kInternal);
  EXPECT_TRUE(Contains(diff.status().message(), "differs from the C++ model"))
      << diff.status().message();
}

TEST(ExportTest, WeightsOfAnotherModelAreRefusedNamingTheDifference) {
  auto net = nn::MakeModel("mlp", {1, 28, 28}, 10, 1);
  ASSERT_TRUE(net.ok());
  const model::Weights w = nn::GetWeights(**net);
  auto r = nn::ExportTorchScript("mlp", {1, 28, 28}, 5, w);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), "fc3.weight")) << r.status().message();

  auto cnn = nn::ExportTorchScript("cnn", {1, 28, 28}, 10, w);
  ASSERT_FALSE(cnn.ok());
  EXPECT_EQ(cnn.status().code(), Code::kInvalidArgument);
}

TEST(ExportTest, UnknownModelShapeAndNonFiniteWeightsAreRefused) {
  auto net = nn::MakeModel("logreg", {4}, 2, 1);
  ASSERT_TRUE(net.ok());
  model::Weights w = nn::GetWeights(**net);

  auto unknown = nn::ExportTorchScript("resnet", {4}, 2, w);
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(Contains(unknown.status().message(), "unknown model 'resnet'"));

  auto bad_shape = nn::ExportTorchScript("cnn", {4}, 2, w);
  ASSERT_FALSE(bad_shape.ok());
  EXPECT_EQ(bad_shape.status().code(), Code::kInvalidArgument);

  w.data[3] = std::numeric_limits<float>::quiet_NaN();
  auto nan = nn::ExportTorchScript("logreg", {4}, 2, w);
  ASSERT_FALSE(nan.ok());
  EXPECT_TRUE(Contains(nan.status().message(), "non-finite value at element 3"))
      << nan.status().message();

  w.data.pop_back();
  auto truncated = nn::ExportTorchScript("logreg", {4}, 2, w);
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), Code::kInvalidArgument);
}

// Known answer made with the openssl command line:
//   openssl genpkey -algorithm ED25519; openssl pkey -pubout;
//   openssl pkey -pubin -outform DER | sha256sum; openssl pkeyutl -sign -rawin
constexpr const char* kKatPrivate =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIHzUan42d2+rc5zjhuYcQWbgOmFHHGxcInBOYQbA066U\n"
    "-----END PRIVATE KEY-----\n";
constexpr const char* kKatPublic =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAV+asvNjH51PP+YJOFJ0Tyx3hFVXzgFJXp5M9Z5+g8HA=\n"
    "-----END PUBLIC KEY-----\n";
constexpr const char* kKatFingerprint =
    "31902c2cc002b214c50d27c10a96be1adc5ffd4df51ebac552e7fc0fffeb5941";
constexpr const char* kKatMessage = "shoal signing known answer";
constexpr const char* kKatSignature =
    "643ebe7361110dfa5dca566927d5fa75fd4a3c41a7e1e4737a178ab5bdf39ddf"
    "8871094634248533c11546a3a0c76a70abba5d1a10cbd7f90fa72122ff209204";
constexpr const char* kP256Public =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHNU2qOzATVwaEcAfy+QK946ruTON\n"
    "By5nwTE1sdMiiHfQdcSZZFVDXSgwLZQa7G3hRYtXcqolKOSqASBgnAbv/g==\n"
    "-----END PUBLIC KEY-----\n";

TEST(SigningTest, MatchesTheOpensslCommandLine) {
  auto key = security::PrivateKey::FromPem(kKatPrivate);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(key->public_key().fingerprint(), kKatFingerprint);
  EXPECT_EQ(key->public_key().pem(), kKatPublic);
  auto sig = key->Sign(kKatMessage);
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(HexEncode(*sig), kKatSignature);  // Ed25519 is deterministic

  auto pub = security::PublicKey::FromPem(kKatPublic);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(pub->fingerprint(), kKatFingerprint);
  auto raw = HexDecode(kKatSignature);
  ASSERT_TRUE(raw.ok());
  EXPECT_TRUE(pub->Verify(kKatMessage, *raw).ok());
}

TEST(SigningTest, RoundTripAndTamperedBytesFail) {
  auto key = security::PrivateKey::Generate();
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  const std::string data = "{\"model\":\"mlp\",\"version\":3}";
  auto sig = key->Sign(data);
  ASSERT_TRUE(sig.ok());
  ASSERT_EQ(sig->size(), 64u);
  EXPECT_TRUE(key->public_key().Verify(data, *sig).ok());

  std::string tampered = data;
  tampered[tampered.size() - 2] = '4';
  Status st = key->public_key().Verify(tampered, *sig);
  EXPECT_EQ(st.code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(st.message(), key->public_key().fingerprint())) << st.message();

  std::string bad_sig = *sig;
  bad_sig[10] ^= 1;
  EXPECT_EQ(key->public_key().Verify(data, bad_sig).code(), Code::kCorrupt);
  EXPECT_EQ(key->public_key().Verify(data, sig->substr(0, 63)).code(), Code::kCorrupt);
  EXPECT_EQ(key->public_key().Verify(data, "").code(), Code::kCorrupt);

  // PEM round trips keep the key.
  auto pem = key->ToPem();
  ASSERT_TRUE(pem.ok());
  auto again = security::PrivateKey::FromPem(*pem);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->public_key().fingerprint(), key->public_key().fingerprint());
  auto pub = security::PublicKey::FromPem(key->public_key().pem());
  ASSERT_TRUE(pub.ok());
  EXPECT_TRUE(pub->Verify(data, *sig).ok());
}

TEST(SigningTest, WrongKeyFails) {
  auto a = security::PrivateKey::Generate();
  auto b = security::PrivateKey::Generate();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->public_key().fingerprint(), b->public_key().fingerprint());
  auto sig = a->Sign("payload");
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(b->public_key().Verify("payload", *sig).code(), Code::kCorrupt);
}

TEST(SigningTest, BadPemIsRefused) {
  auto garbage = security::PublicKey::FromPem("not a key");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().code(), Code::kInvalidArgument);
  auto ec = security::PublicKey::FromPem(kP256Public);
  ASSERT_FALSE(ec.ok());
  EXPECT_TRUE(Contains(ec.status().message(), "not an Ed25519 key")) << ec.status().message();
  // A public key where a private key is expected, and the other way round.
  EXPECT_FALSE(security::PrivateKey::FromPem(kKatPublic).ok());
  EXPECT_FALSE(security::PublicKey::FromPem(std::string(70000, 'A')).ok());
}

TEST(SigningTest, HexDecodeRejectsBadText) {
  EXPECT_EQ(*HexDecode("00ff7A"), std::string("\x00\xff\x7a", 3));
  EXPECT_FALSE(HexDecode("abc").ok());
  auto bad = HexDecode("00zz");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status().message(), "offset 2")) << bad.status().message();
}

class SigningKeyFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-sign-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  static mode_t Mode(const std::string& path) {
    struct stat sb;
    return ::stat(path.c_str(), &sb) == 0 ? (sb.st_mode & 0777) : 0;
  }
  std::string dir_;
};

TEST_F(SigningKeyFilesTest, EnsureCoordinatorKeyCreatesOnceWithPrivatePermissions) {
  ASSERT_TRUE(security::EnsureCoordinatorKey(dir_).ok());
  const std::string priv = security::SigningKeyPath(dir_);
  const std::string pub = security::SigningPublicKeyPath(dir_);
  EXPECT_EQ(Mode(priv), 0600u);
  EXPECT_EQ(Mode(dir_ + "/keys"), 0700u);
  auto key = security::PrivateKey::Load(priv);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  auto pub_key = security::PublicKey::Load(pub);
  ASSERT_TRUE(pub_key.ok());
  EXPECT_EQ(pub_key->fingerprint(), key->public_key().fingerprint());

  // A second call keeps the key; a missing public half is rewritten from the private key.
  ASSERT_TRUE(security::EnsureCoordinatorKey(dir_).ok());
  EXPECT_EQ(security::PrivateKey::Load(priv)->public_key().fingerprint(),
            key->public_key().fingerprint());
  std::filesystem::remove(pub);
  ASSERT_TRUE(security::EnsureCoordinatorKey(dir_).ok());
  EXPECT_EQ(security::PublicKey::Load(pub)->fingerprint(), key->public_key().fingerprint());
}

TEST_F(SigningKeyFilesTest, MismatchedOrOrphanedKeyFilesAreReported) {
  ASSERT_TRUE(security::EnsureCoordinatorKey(dir_).ok());
  auto other = security::PrivateKey::Generate();
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(
      WriteFileAtomic(security::SigningPublicKeyPath(dir_), other->public_key().pem()).ok());
  Status st = security::EnsureCoordinatorKey(dir_);
  EXPECT_EQ(st.code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(st.message(), "is not the public key of")) << st.message();

  std::filesystem::remove(security::SigningKeyPath(dir_));
  st = security::EnsureCoordinatorKey(dir_);
  EXPECT_EQ(st.code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(st.message(), "without its private key")) << st.message();

  EXPECT_EQ(security::EnsureCoordinatorKey(dir_ + "/absent").code(), Code::kNotFound);
  EXPECT_EQ(security::PrivateKey::Load(dir_ + "/absent.key").status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace shoal
