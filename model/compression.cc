#include "model/compression.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace shoal::model {

Result<Encoding> ParseEncoding(const std::string& name) {
  if (name == "none" || name == "f32") return Encoding::kF32;
  if (name == "fp16" || name == "f16") return Encoding::kF16;
  if (name == "int8") return Encoding::kInt8;
  return InvalidArgument("unknown update compression '" + name + "' (none, fp16 or int8)");
}

const char* EncodingName(Encoding e) {
  switch (e) {
    case Encoding::kF32:
      return "none";
    case Encoding::kF16:
      return "fp16";
    case Encoding::kInt8:
      return "int8";
  }
  return "?";
}

Result<Encoding> EncodingFromWire(uint8_t value) {
  if (value > static_cast<uint8_t>(Encoding::kInt8)) {
    return InvalidArgument("unknown update encoding " + std::to_string(value));
  }
  return static_cast<Encoding>(value);
}

namespace {
uint64_t Pad4(uint64_t n) { return (n + 3) / 4 * 4; }
uint64_t Blocks(uint64_t count) { return (count + kInt8Block - 1) / kInt8Block; }
}  // namespace

uint64_t EncodedBytes(Encoding e, uint64_t count) {
  switch (e) {
    case Encoding::kF32:
      return count * 4;
    case Encoding::kF16:
      return Pad4(count * 2);
    case Encoding::kInt8:
      return Pad4(Blocks(count) * 4 + count);
  }
  return 0;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) {  // Inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0));
  }
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7bffu);  // saturate at 65504
  if (x < 0x38800000u) {  // subnormal half (or zero): value / 2^-24, rounded to nearest even
    float a;
    std::memcpy(&a, &x, 4);
    const float scaled = a * 16777216.0f;  // exact: a * 2^24
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent, round the mantissa to 10 bits (nearest, ties to even).
  const uint32_t mant_odd = (x >> 13) & 1u;
  x += 0xc8000fffu + mant_odd;  // (-112 << 23) + rounding bias
  return static_cast<uint16_t>(sign | (x >> 13));
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    float v = static_cast<float>(mant) / 16777216.0f;  // mant * 2^-24
    std::memcpy(&x, &v, 4);
    x |= sign;
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

void EncodeDelta(Encoding e, const float* delta, size_t count, std::vector<float>* residual,
                 std::string* out) {
  if (residual->size() != count) residual->assign(count, 0.0f);
  float* r = residual->data();
  out->assign(EncodedBytes(e, count), '\0');
  char* o = out->data();
  switch (e) {
    case Encoding::kF32:
      for (size_t i = 0; i < count; ++i) {
        const float v = delta[i] + r[i];
        std::memcpy(o + 4 * i, &v, 4);
        r[i] = 0.0f;
      }
      return;
    case Encoding::kF16:
      for (size_t i = 0; i < count; ++i) {
        const float v = delta[i] + r[i];
        const uint16_t h = FloatToHalf(v);
        std::memcpy(o + 2 * i, &h, 2);
        r[i] = v - HalfToFloat(h);
      }
      return;
    case Encoding::kInt8: {
      const size_t blocks = Blocks(count);
      char* scales = o;
      auto* q = reinterpret_cast<int8_t*>(o + 4 * blocks);
      std::vector<float> v(kInt8Block);
      for (size_t b = 0; b < blocks; ++b) {
        const size_t begin = b * kInt8Block;
        const size_t n = std::min(kInt8Block, count - begin);
        float max_abs = 0.0f;
        for (size_t i = 0; i < n; ++i) {
          v[i] = delta[begin + i] + r[begin + i];
          max_abs = std::max(max_abs, std::fabs(v[i]));
        }
        const float scale = max_abs > 0 && std::isfinite(max_abs) ? max_abs / 127.0f : 0.0f;
        std::memcpy(scales + 4 * b, &scale, 4);
        const float inv = scale > 0 ? 1.0f / scale : 0.0f;
        for (size_t i = 0; i < n; ++i) {
          const float t = std::clamp(std::nearbyint(v[i] * inv), -127.0f, 127.0f);
          q[begin + i] = static_cast<int8_t>(t);
          r[begin + i] = v[i] - t * scale;
        }
      }
      return;
    }
  }
}

Status DecodeDelta(Encoding e, std::string_view bytes, size_t count, float* out) {
  if (bytes.size() != EncodedBytes(e, count)) {
    return InvalidArgument(std::string(EncodingName(e)) + " update of " +
                           std::to_string(bytes.size()) + " bytes; " + std::to_string(count) +
                           " values need " + std::to_string(EncodedBytes(e, count)));
  }
  const char* in = bytes.data();
  switch (e) {
    case Encoding::kF32:
      std::memcpy(out, in, count * 4);
      return Status::Ok();
    case Encoding::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      return Status::Ok();
    case Encoding::kInt8: {
      const size_t blocks = Blocks(count);
      const auto* q = reinterpret_cast<const int8_t*>(in + 4 * blocks);
      for (size_t b = 0; b < blocks; ++b) {
        float scale;
        std::memcpy(&scale, in + 4 * b, 4);
        if (!std::isfinite(scale) || scale < 0) {
          return InvalidArgument("int8 update block " + std::to_string(b) +
                                 " has an invalid scale");
        }
        const size_t begin = b * kInt8Block;
        const size_t n = std::min(kInt8Block, count - begin);
        for (size_t i = 0; i < n; ++i) out[begin + i] = static_cast<float>(q[begin + i]) * scale;
      }
      return Status::Ok();
    }
  }
  return Internal("unknown encoding");
}

}  // namespace shoal::model
