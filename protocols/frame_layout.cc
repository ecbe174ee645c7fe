#include "protocols/frame_layout.h"

#include <cstring>

namespace shoal::protocols {
namespace {

void PutLe(char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t GetLe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

}  // namespace

void WriteFixedHeader(char* out, uint16_t type, uint32_t header_bytes, uint32_t payload_bytes) {
  std::memcpy(out, kFrameMagic, sizeof(kFrameMagic));
  PutLe(out + 4, kProtocolVersion, 2);
  PutLe(out + 6, type, 2);
  PutLe(out + 8, header_bytes, 4);
  PutLe(out + 12, payload_bytes, 4);
}

std::optional<FixedHeader> ReadFixedHeader(std::string_view bytes) {
  if (bytes.size() < kFrameHeaderBytes) return std::nullopt;
  const char* p = bytes.data();
  if (std::memcmp(p, kFrameMagic, sizeof(kFrameMagic)) != 0) return std::nullopt;
  FixedHeader h;
  h.version = static_cast<uint16_t>(GetLe(p + 4, 2));
  h.type = static_cast<uint16_t>(GetLe(p + 6, 2));
  h.header_bytes = static_cast<uint32_t>(GetLe(p + 8, 4));
  h.payload_bytes = static_cast<uint32_t>(GetLe(p + 12, 4));
  return h;
}

std::optional<FrameSplit> SplitFrame(std::string_view fixed_header, size_t frame_bytes) {
  const std::optional<FixedHeader> h = ReadFixedHeader(fixed_header);
  if (!h || h->version != kProtocolVersion) return std::nullopt;
  if (kFrameHeaderBytes + uint64_t{h->header_bytes} + h->payload_bytes != frame_bytes) {
    return std::nullopt;
  }
  return FrameSplit{kFrameHeaderBytes + h->header_bytes, h->payload_bytes};
}

}  // namespace shoal::protocols
