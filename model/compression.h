// Update compression (opt-in per run: train.compression): how a worker's weight delta is
// encoded for the wire, and how the coordinator decodes it before folding.
//
//   f32   4 bytes per value, as is (the default).
//   f16   IEEE 754 half precision, round to nearest even; 2 bytes per value. Values beyond
//         half's range saturate to +-65504.
//   int8  blocks of kInt8Block values: a float32 scale (max |v| / 127), then one int8 per value
//         (v ~ q * scale, round to nearest); about 1 byte per value.
//
// Error feedback (the worker keeps what quantization dropped and adds it to the next round's
// delta) makes the compressed sum track the uncompressed one over rounds: EncodeDelta updates
// `residual` in place. Encoded sizes are padded to a multiple of 4 bytes (the transfer unit).
//
// Decoding checks the size first and rejects non-finite or negative int8 scales; a decoded
// value can still be non-finite only for f16 infinities/NaNs, which FedAvg's fold rejects.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace shoal::model {

enum class Encoding : uint8_t { kF32 = 0, kF16 = 1, kInt8 = 2 };
inline constexpr size_t kInt8Block = 4096;

// "none" | "fp16" | "int8" (as written in configs), and back.
Result<Encoding> ParseEncoding(const std::string& name);
const char* EncodingName(Encoding e);
// Encoding from its wire value; InvalidArgument for an unknown one.
Result<Encoding> EncodingFromWire(uint8_t value);

// Bytes on the wire for `count` values (a multiple of 4).
uint64_t EncodedBytes(Encoding e, uint64_t count);

// Encodes delta + residual into `out` (resized to EncodedBytes) and leaves in `residual` what
// the encoding lost. `residual` is resized (zero-filled) when its size is not `count`.
void EncodeDelta(Encoding e, const float* delta, size_t count, std::vector<float>* residual,
                 std::string* out);

// Decodes `bytes` (exactly EncodedBytes(e, count) long) into out[0..count).
Status DecodeDelta(Encoding e, std::string_view bytes, size_t count, float* out);

// Half precision conversions (exposed for tests).
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);

}  // namespace shoal::model
