// The fixed header that starts every codec frame (one message; codec.h encodes and decodes the
// rest), kept apart from the codec so that the TLS layer (secure_channel.cc), which only needs
// to know where a frame's head ends and its payload begins, does not depend on the messages:
//
//   bytes  0..3   magic "SHL1"
//   bytes  4..5   protocol version, u16 little-endian (kProtocolVersion)
//   bytes  6..7   message type, u16 little-endian (MessageType, messages.h)
//   bytes  8..11  structured header length H, u32 little-endian
//   bytes 12..15  payload length P, u32 little-endian
//   bytes 16..16+H        structured header (Cereal portable binary, little-endian)
//   bytes 16+H..16+H+P    raw payload (tensor bytes, little-endian float32)
// The frame size must equal 16 + H + P exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace shoal::protocols {

// Bumped on any incompatible change to a message (messages.h) or to the frame layout.
// 2: Welcome.model_bytes and ModelFile (user-supplied TorchScript models).
// 3: JoinRequest and JoinResponse (enrollment with a join token); TrainTask.compression and
//    UpdateReady.encoding (fp16 / int8 updates).
// 5: TrainTask.client_algorithm, proximal_mu, momentum, weight_decay (issue #22).
inline constexpr uint16_t kProtocolVersion = 5;

inline constexpr char kFrameMagic[4] = {'S', 'H', 'L', '1'};
inline constexpr size_t kFrameHeaderBytes = 16;

// The wire limits on a frame's lengths (codec.h Limits). The payload limit until a Welcome gives
// the run's chunk size (network.chunk_bytes, 1 MiB by default, up to kMaxChunkBytes):
inline constexpr uint32_t kPreWelcomePayloadBytes = 4u << 20;
// The largest chunk any configuration may set (the coordinator's config check refuses more).
inline constexpr uint32_t kMaxChunkBytes = 64u << 20;
// The largest structured header: 4096 tensors with long names fit.
inline constexpr uint32_t kMaxHeaderBytes = 1u << 20;
// The largest message a receiver ever needs to take after a Welcome: a chunk of the largest
// size plus its headers.
inline constexpr size_t kMaxMessageBytes = size_t{kMaxChunkBytes} + kMaxHeaderBytes;

// The fields of a fixed header, as read: nothing but the magic is checked.
struct FixedHeader {
  uint16_t version = 0;
  uint16_t type = 0;
  uint32_t header_bytes = 0;
  uint32_t payload_bytes = 0;
};

// Writes a fixed header with the magic and kProtocolVersion to out[0, kFrameHeaderBytes).
void WriteFixedHeader(char* out, uint16_t type, uint32_t header_bytes, uint32_t payload_bytes);
// The fields of the first kFrameHeaderBytes of `bytes`; nullopt when there are fewer or the
// magic is not "SHL1".
std::optional<FixedHeader> ReadFixedHeader(std::string_view bytes);

// What a message decoder needs before it has the whole frame: how many bytes of a frame of
// `frame_bytes` bytes are its head (fixed + structured header) and how many its payload, read
// from the first kFrameHeaderBytes. Only the magic, version and lengths are checked (the
// receiver's limits are checked by ParseFrame, codec.h); nullopt when they are not consistent.
struct FrameSplit {
  size_t head_bytes = 0;
  size_t payload_bytes = 0;
};
std::optional<FrameSplit> SplitFrame(std::string_view fixed_header, size_t frame_bytes);

}  // namespace shoal::protocols
