#include "model/weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace shoal {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

model::ModelSpec MlpSpec() {
  model::ModelSpec spec;
  spec.tensors.push_back({"fc1.weight", model::DType::kFloat32, {200, 784}});
  spec.tensors.push_back({"fc1.bias", model::DType::kFloat32, {200}});
  spec.tensors.push_back({"fc2.weight", model::DType::kFloat32, {10, 200}});
  spec.tensors.push_back({"fc2.bias", model::DType::kFloat32, {10}});
  return spec;
}

void ExpectInvalid(const model::ModelSpec& spec, const std::string& needle) {
  Status st = spec.Validate();
  ASSERT_FALSE(st.ok()) << "accepted a bad spec (" << needle << ")";
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), needle)) << "'" << needle << "' not in: " << st.message();
}

TEST(ModelSpecTest, ValidSpecPasses) {
  const model::ModelSpec spec = MlpSpec();
  EXPECT_TRUE(spec.Validate().ok()) << spec.Validate().ToString();
  EXPECT_EQ(spec.total_numel(), 200 * 784 + 200 + 10 * 200 + 10);
  EXPECT_EQ(spec.total_bytes(), spec.total_numel() * 4);
}

TEST(ModelSpecTest, ScalarTensorIsOneElement) {
  model::ModelSpec spec;
  spec.tensors.push_back({"scale", model::DType::kFloat32, {}});
  EXPECT_TRUE(spec.Validate().ok());
  EXPECT_EQ(spec.total_numel(), 1);
}

TEST(ModelSpecTest, RejectsEmpty) { ExpectInvalid(model::ModelSpec{}, "no tensors"); }

TEST(ModelSpecTest, RejectsDuplicateNames) {
  model::ModelSpec spec = MlpSpec();
  spec.tensors[3].name = "fc1.bias";
  ExpectInvalid(spec, "duplicate");
  ExpectInvalid(spec, "fc1.bias");
}

TEST(ModelSpecTest, RejectsBadNames) {
  model::ModelSpec spec = MlpSpec();
  spec.tensors[1].name = "";
  ExpectInvalid(spec, "tensor 1");
  spec.tensors[1].name.assign(model::SpecLimits::kMaxNameBytes + 1, 'x');
  ExpectInvalid(spec, "name");
  spec.tensors[1].name.assign(model::SpecLimits::kMaxNameBytes, 'x');
  EXPECT_TRUE(spec.Validate().ok());
}

TEST(ModelSpecTest, RejectsZeroAndNegativeDims) {
  for (int64_t d : {int64_t{0}, int64_t{-1}, std::numeric_limits<int64_t>::min()}) {
    SCOPED_TRACE("dim " + std::to_string(d));
    model::ModelSpec spec = MlpSpec();
    spec.tensors[2].shape = {10, d};
    ExpectInvalid(spec, "fc2.weight");
  }
}

TEST(ModelSpecTest, RejectsTooManyTensors) {
  model::ModelSpec spec;
  for (size_t i = 0; i <= model::SpecLimits::kMaxTensors; ++i) {
    spec.tensors.push_back({"t" + std::to_string(i), model::DType::kFloat32, {1}});
  }
  ExpectInvalid(spec, "tensors");
  spec.tensors.pop_back();  // exactly at the limit
  EXPECT_TRUE(spec.Validate().ok()) << spec.Validate().ToString();
}

TEST(ModelSpecTest, RejectsTooHighRank) {
  model::ModelSpec spec;
  spec.tensors.push_back(
      {"t", model::DType::kFloat32, std::vector<int64_t>(model::SpecLimits::kMaxRank + 1, 1)});
  ExpectInvalid(spec, "rank");
  spec.tensors[0].shape.pop_back();
  EXPECT_TRUE(spec.Validate().ok());
}

TEST(ModelSpecTest, RejectsUnsupportedDtype) {
  model::ModelSpec spec = MlpSpec();
  spec.tensors[0].dtype = static_cast<model::DType>(7);
  ExpectInvalid(spec, "dtype");
}

TEST(ModelSpecTest, RejectsTooManyElements) {
  model::ModelSpec one;
  one.tensors.push_back(
      {"huge", model::DType::kFloat32, {model::SpecLimits::kMaxTotalElements + 1}});
  ExpectInvalid(one, "huge");
  model::ModelSpec product;  // each dimension fine, the product too large
  product.tensors.push_back({"wide", model::DType::kFloat32, {int64_t{1} << 20, int64_t{1} << 14}});
  ExpectInvalid(product, "wide");
  model::ModelSpec sum;  // each tensor fine, the total too large
  sum.tensors.push_back({"a", model::DType::kFloat32, {int64_t{1} << 32}});
  sum.tensors.push_back({"b", model::DType::kFloat32, {(int64_t{1} << 32) + 1}});
  ExpectInvalid(sum, "elements");
}

TEST(ModelSpecTest, RejectsElementCountThatOverflows) {
  // 2^32 * 2^32 = 2^64 elements: each dimension is under the 2^33 limit, and the running
  // product wraps to 0 in int64 arithmetic.
  model::ModelSpec spec;
  spec.tensors.push_back(
      {"overflow", model::DType::kFloat32, {int64_t{1} << 32, int64_t{1} << 32}});
  // Validate must compare before multiplying: n *= d would overflow int64 here.
  ExpectInvalid(spec, "overflow");
  model::ModelSpec spec2;
  spec2.tensors.push_back(
      {"overflow2", model::DType::kFloat32, {int64_t{1} << 33, int64_t{1} << 33}});
  ExpectInvalid(spec2, "overflow2");
}

TEST(ModelSpecTest, DiffNamesFirstDifferingTensor) {
  const model::ModelSpec a = MlpSpec();
  EXPECT_EQ(a.Diff(a), "");
  model::ModelSpec b = a;
  b.tensors[2].shape = {10, 784};
  b.tensors[3].shape = {11};
  const std::string d = a.Diff(b);
  EXPECT_TRUE(Contains(d, "fc2.weight")) << d;
  EXPECT_TRUE(Contains(d, "[10,200]")) << d;
  EXPECT_TRUE(Contains(d, "[10,784]")) << d;
  EXPECT_FALSE(Contains(d, "fc2.bias")) << d;

  model::ModelSpec renamed = a;
  renamed.tensors[1].name = "fc1.b";
  EXPECT_TRUE(Contains(a.Diff(renamed), "fc1.bias")) << a.Diff(renamed);
  EXPECT_TRUE(Contains(a.Diff(renamed), "fc1.b'")) << a.Diff(renamed);

  model::ModelSpec shorter = a;
  shorter.tensors.pop_back();
  EXPECT_NE(a.Diff(shorter), "");
  EXPECT_TRUE(Contains(a.Diff(shorter), "4")) << a.Diff(shorter);
  EXPECT_FALSE(a == shorter);
  EXPECT_TRUE(a == MlpSpec());
}

TEST(ModelSpecTest, JsonRoundTrip) {
  model::ModelSpec spec = MlpSpec();
  spec.tensors.push_back({"scalar", model::DType::kFloat32, {}});
  const nlohmann::json j = spec.ToJson();
  Result<model::ModelSpec> back = model::ModelSpec::FromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, spec) << back->Diff(spec);
  // And through text.
  Result<model::ModelSpec> parsed = model::ModelSpec::FromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, spec);
}

TEST(ModelSpecTest, FromJsonRejectsBadInputWithoutThrowing) {
  const std::vector<std::string> bad = {
      R"({})",
      R"([])",
      R"(null)",
      R"(42)",
      R"({"tensors": {}})",
      R"({"tensors": []})",
      R"({"tensors": [{"dtype": "float32", "shape": [2]}]})",
      R"({"tensors": [{"name": "w", "shape": [2]}]})",
      R"({"tensors": [{"name": "w", "dtype": "float32"}]})",
      R"({"tensors": [{"name": "w", "dtype": "float16", "shape": [2]}]})",
      R"({"tensors": [{"name": 5, "dtype": "float32", "shape": [2]}]})",
      R"({"tensors": [{"name": "w", "dtype": "float32", "shape": 2}]})",
      R"({"tensors": [{"name": "w", "dtype": "float32", "shape": ["2"]}]})",
      R"({"tensors": [{"name": "w", "dtype": "float32", "shape": [0]}]})",
      R"({"tensors": [{"name": "w", "dtype": "float32", "shape": [1,1,1,1,1,1,1,1,1]}]})",
      R"({"tensors": [{"name": "w", "dtype": "float32", "shape": [2]},
                      {"name": "w", "dtype": "float32", "shape": [2]}]})",
      R"({"tensors": ["w"]})",
      // Non-integer dimensions (1e300 used to reach an undefined float-to-int64 cast; found by
      // fuzz/weights_fuzz) and fractions that used to be truncated.
      R"({"tensors": [{"name": "w", "dtype": "float32", "shape": [1e300]}]})",
      R"({"tensors": [{"name": "w", "dtype": "float32", "shape": [-1e19]}]})",
      R"({"tensors": [{"name": "w", "dtype": "float32", "shape": [2.5]}]})",
  };
  for (const auto& text : bad) {
    SCOPED_TRACE(text);
    const nlohmann::json j = nlohmann::json::parse(text);
    Result<model::ModelSpec> r = model::ModelSpec();
    EXPECT_NO_THROW(r = model::ModelSpec::FromJson(j));
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kCorrupt) << r.status().ToString();
  }
}

TEST(WeightsTest, OffsetsFollowTheSpec) {
  model::Weights w;
  w.spec = MlpSpec();
  EXPECT_EQ(w.Offset(0), 0);
  EXPECT_EQ(w.Offset(1), 200 * 784);
  EXPECT_EQ(w.Offset(2), 200 * 784 + 200);
  EXPECT_EQ(w.Offset(4), w.spec.total_numel());
}

TEST(WeightsTest, FirstNonFinite) {
  model::Weights w;
  w.spec.tensors.push_back({"w", model::DType::kFloat32, {6}});
  w.data = {
      0.0f,  -1.0f, std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
      -0.0f, 3.0f};
  EXPECT_EQ(w.FirstNonFinite(), -1);
  w.data[4] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(w.FirstNonFinite(), 4);
  w.data[2] = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(w.FirstNonFinite(), 2);
  w.data[0] = std::nanf("");
  EXPECT_EQ(w.FirstNonFinite(), 0);
  w.data = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, -std::nanf("")};
  EXPECT_EQ(w.FirstNonFinite(), 5);
  w.data.clear();
  EXPECT_EQ(w.FirstNonFinite(), -1);
}

TEST(WeightsTest, ElementNameNamesTheTensorAndTheIndexInIt) {
  const model::ModelSpec spec = MlpSpec();
  EXPECT_EQ(spec.ElementName(0), "tensor '" + spec.tensors[0].name + "' element 0");
  EXPECT_EQ(spec.ElementName(200 * 784 + 3), "tensor '" + spec.tensors[1].name + "' element 3");
  const int64_t last = spec.total_numel() - 1;
  EXPECT_EQ(spec.ElementName(last), "tensor '" + spec.tensors.back().name + "' element " +
                                        std::to_string(spec.tensors.back().numel() - 1));
  EXPECT_EQ(spec.ElementName(last + 1), "element " + std::to_string(last + 1));
  EXPECT_EQ(spec.ElementName(-1), "element -1");
}

TEST(WeightsTest, ShapeString) {
  EXPECT_EQ(model::ShapeString({}), "[]");
  EXPECT_EQ(model::ShapeString({200, 784}), "[200,784]");
}

}  // namespace
}  // namespace shoal
