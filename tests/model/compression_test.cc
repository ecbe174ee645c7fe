#include "model/compression.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace shoal {
namespace {

TEST(CompressionTest, HalfConversionIsExactForRepresentableValuesAndRoundsToNearestEven) {
  for (float f :
       {0.0f, -0.0f, 1.0f, -2.5f, 0.333251953125f, 65504.0f, -65504.0f,
        6.103515625e-05f /* smallest normal */, 5.9604644775390625e-08f /* smallest subnormal */}) {
    EXPECT_EQ(model::HalfToFloat(model::FloatToHalf(f)), f) << f;
  }
  EXPECT_EQ(model::FloatToHalf(1.0f), 0x3c00);
  // 1 + 2^-11 lies exactly between 1 and 1 + 2^-10: ties go to the even mantissa (1.0).
  EXPECT_EQ(model::HalfToFloat(model::FloatToHalf(1.0f + 0.00048828125f)), 1.0f);
  // 1 + 3 * 2^-11 lies between 1 + 2^-10 (odd) and 1 + 2^-9 (even): rounds up to even.
  EXPECT_EQ(model::HalfToFloat(model::FloatToHalf(1.0f + 3 * 0.00048828125f)), 1.0f + 0.001953125f);
  EXPECT_EQ(model::HalfToFloat(model::FloatToHalf(1e9f)), 65504.0f);  // saturates
  EXPECT_EQ(model::HalfToFloat(model::FloatToHalf(-1e9f)), -65504.0f);
  EXPECT_TRUE(
      std::isnan(model::HalfToFloat(model::FloatToHalf(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(
      std::isinf(model::HalfToFloat(model::FloatToHalf(std::numeric_limits<float>::infinity()))));
  // Every half value survives a round trip through float.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = model::HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(model::FloatToHalf(f), h) << std::hex << h;
  }
}

TEST(CompressionTest, SizesArePaddedToTheTransferUnit) {
  EXPECT_EQ(model::EncodedBytes(model::Encoding::kF32, 10), 40u);
  EXPECT_EQ(model::EncodedBytes(model::Encoding::kF16, 10), 20u);
  EXPECT_EQ(model::EncodedBytes(model::Encoding::kF16, 11), 24u);
  EXPECT_EQ(model::EncodedBytes(model::Encoding::kInt8, 10), 16u);  // one scale + 10 bytes, padded
  EXPECT_EQ(model::EncodedBytes(model::Encoding::kInt8, model::kInt8Block + 1),
            8u + model::kInt8Block + 4);
}

std::vector<float> RandomDelta(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.01f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Error feedback: over many rounds, the sum of what the coordinator decoded equals the sum of
// the true deltas minus the residual the worker still holds, and that residual stays within
// one quantization step. Compression error does not accumulate.
TEST(CompressionTest, ErrorFeedbackKeepsTheSumOfDecodedUpdatesOnTrack) {
  const size_t n = 3 * model::kInt8Block + 17;
  for (model::Encoding e : {model::Encoding::kF16, model::Encoding::kInt8}) {
    std::vector<float> residual;
    std::vector<double> sum_true(n, 0.0), sum_decoded(n, 0.0);
    std::vector<float> decoded(n);
    std::string bytes;
    for (uint32_t round = 0; round < 20; ++round) {
      auto delta = RandomDelta(n, round);
      model::EncodeDelta(e, delta.data(), n, &residual, &bytes);
      ASSERT_EQ(bytes.size(), model::EncodedBytes(e, n));
      ASSERT_TRUE(model::DecodeDelta(e, bytes, n, decoded.data()).ok());
      for (size_t i = 0; i < n; ++i) {
        sum_true[i] += delta[i];
        sum_decoded[i] += decoded[i];
      }
    }
    double worst = 0, worst_residual = 0;
    for (size_t i = 0; i < n; ++i) {
      worst = std::max(worst, std::fabs(sum_decoded[i] - (sum_true[i] - residual[i])));
      worst_residual = std::max(worst_residual, static_cast<double>(std::fabs(residual[i])));
    }
    EXPECT_LT(worst, 1e-5) << model::EncodingName(e);
    // int8: half a step of a block whose max is about 4 sigma (0.04): 0.04 / 127 / 2.
    // fp16: half an ulp at about 0.04 (2^-5 * 2^-11).
    EXPECT_LT(worst_residual, e == model::Encoding::kInt8 ? 3e-4 : 2e-5) << model::EncodingName(e);
  }
}

TEST(CompressionTest, DecodingChecksSizeAndScales) {
  std::vector<float> out(100);
  EXPECT_FALSE(
      model::DecodeDelta(model::Encoding::kInt8, std::string(10, '\0'), 100, out.data()).ok());
  std::string bytes;
  std::vector<float> residual;
  auto delta = RandomDelta(100, 1);
  model::EncodeDelta(model::Encoding::kInt8, delta.data(), 100, &residual, &bytes);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bytes.data(), &nan, 4);
  Status st = model::DecodeDelta(model::Encoding::kInt8, bytes, 100, out.data());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("scale"), std::string::npos) << st.message();
  EXPECT_FALSE(model::EncodingFromWire(3).ok());
  EXPECT_FALSE(model::ParseEncoding("zip").ok());
  EXPECT_EQ(*model::ParseEncoding("fp16"), model::Encoding::kF16);
}

}  // namespace
}  // namespace shoal
