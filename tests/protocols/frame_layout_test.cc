#include "protocols/frame_layout.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>

namespace shoal::protocols {
namespace {

uint64_t GetLe(const std::string& s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(s[pos + i])) << (8 * i);
  }
  return v;
}

std::string FixedHeaderOf(uint16_t type, uint32_t header_bytes, uint32_t payload_bytes) {
  std::string out(kFrameHeaderBytes, '\0');
  WriteFixedHeader(out.data(), type, header_bytes, payload_bytes);
  return out;
}

TEST(FrameLayoutTest, WritesTheDocumentedLayout) {
  const std::string h = FixedHeaderOf(0x0a0b, 0x01020304u, 0xfffffffeu);
  EXPECT_EQ(h.substr(0, 4), "SHL1");
  EXPECT_EQ(GetLe(h, 4, 2), kProtocolVersion);
  EXPECT_EQ(GetLe(h, 6, 2), 0x0a0bu);
  EXPECT_EQ(GetLe(h, 8, 4), 0x01020304u);
  EXPECT_EQ(GetLe(h, 12, 4), 0xfffffffeu);
  EXPECT_EQ(static_cast<uint8_t>(h[8]), 0x04);  // little-endian
}

TEST(FrameLayoutTest, ReadsWhatItWrites) {
  const std::optional<FixedHeader> f = ReadFixedHeader(FixedHeaderOf(5, 77, 1u << 31) + "rest");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->version, kProtocolVersion);
  EXPECT_EQ(f->type, 5);
  EXPECT_EQ(f->header_bytes, 77u);
  EXPECT_EQ(f->payload_bytes, 1u << 31);
}

TEST(FrameLayoutTest, ReadChecksOnlyLengthAndMagic) {
  const std::string h = FixedHeaderOf(3, 0, 0);
  EXPECT_FALSE(ReadFixedHeader("").has_value());
  EXPECT_FALSE(ReadFixedHeader(h.substr(0, kFrameHeaderBytes - 1)).has_value());
  for (size_t i = 0; i < 4; ++i) {
    std::string bad = h;
    bad[i] = static_cast<char>(bad[i] ^ 0x20);  // "shl1" and friends are not the magic
    EXPECT_FALSE(ReadFixedHeader(bad).has_value()) << i;
  }
  // Any version and type are read as they are: judging them is the codec's business.
  std::string other = h;
  other[4] = static_cast<char>(kProtocolVersion + 1);
  other[6] = 0;
  const auto f = ReadFixedHeader(other);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->version, kProtocolVersion + 1);
  EXPECT_EQ(f->type, 0);
}

TEST(FrameLayoutTest, SplitFrameNeedsTheVersionAndLengthsThatAddUp) {
  const std::string h = FixedHeaderOf(5, 100, 4000);
  const auto split = SplitFrame(h, kFrameHeaderBytes + 100 + 4000);
  ASSERT_TRUE(split.has_value());
  EXPECT_EQ(split->head_bytes, kFrameHeaderBytes + 100);
  EXPECT_EQ(split->payload_bytes, 4000u);
  EXPECT_FALSE(SplitFrame(h, kFrameHeaderBytes + 100 + 3999).has_value());
  std::string old = h;
  old[4] = static_cast<char>(kProtocolVersion - 1);
  EXPECT_FALSE(SplitFrame(old, kFrameHeaderBytes + 100 + 4000).has_value());

  // The largest lengths the fields can hold add up without wrapping.
  const std::string max = FixedHeaderOf(5, 0xffffffffu, 0xffffffffu);
  const uint64_t total = kFrameHeaderBytes + uint64_t{0xffffffffu} * 2;
  const auto big = SplitFrame(max, static_cast<size_t>(total));
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->payload_bytes, 0xffffffffu);
  EXPECT_FALSE(SplitFrame(max, static_cast<size_t>(total - (uint64_t{1} << 32))).has_value());
}

TEST(FrameLayoutTest, WireLimitsFitTheLengthFields) {
  static_assert(kMaxHeaderBytes > 0 && kPreWelcomePayloadBytes <= kMaxChunkBytes);
  EXPECT_EQ(kMaxChunkBytes, 64u << 20);
  EXPECT_LT(uint64_t{kFrameHeaderBytes} + kMaxHeaderBytes + kMaxChunkBytes, uint64_t{1} << 32);
}

}  // namespace
}  // namespace shoal::protocols
