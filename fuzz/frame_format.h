// Input format of frame_fuzz, shared with the seed generator.
//
// Every input is used twice:
//  1. As one wire frame: ParseFrame with default Limits, then Decode<M> for every message type
//     (as sent, and with the frame's type field replaced by M's, so every decoder sees every
//     header).
//  2. As a transfer script that drives a ChunkAssembler and a ModelFileAssembler the way the
//     worker does:
//       u8  flags        reserved
//       u64 round        round of the weights transfer started from this header
//       u32 chunk_total  weights transfer size in bytes, taken modulo kMaxTransferBytes + 1
//       u32 chunk_bytes  chunk size of both transfers (replaced by a Welcome's chunk_bytes)
//       u32 model_total  model file size, passed as is (Start refuses more than the cap)
//       then frames, each a u24 little-endian length followed by that many bytes.
//     WeightsChunk frames go to the ChunkAssembler, ModelFile frames to the ModelFileAssembler;
//     a Welcome restarts the model transfer (model_bytes, chunk_bytes), a TrainTask or EvalTask
//     whose spec validates and fits the cap restarts the weights transfer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::fuzz::frame_format {

// The receiver-side cap of both assemblers (what a real receiver validated before Start).
inline constexpr uint64_t kMaxTransferBytes = uint64_t{1} << 20;

inline void PutLe(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline std::string ScriptHeader(uint64_t round, uint32_t chunk_total, uint32_t chunk_bytes,
                                uint32_t model_total) {
  std::string s;
  PutLe(s, 0, 1);
  PutLe(s, round, 8);
  PutLe(s, chunk_total, 4);
  PutLe(s, chunk_bytes, 4);
  PutLe(s, model_total, 4);
  return s;
}

inline void AppendFrame(std::string& script, std::string_view frame) {
  PutLe(script, frame.size(), 3);
  script.append(frame);
}

}  // namespace shoal::fuzz::frame_format
