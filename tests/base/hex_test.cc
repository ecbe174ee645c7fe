#include "base/hex.h"

#include <gtest/gtest.h>

#include <string>

#include "base/sha256.h"

namespace shoal {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(HexTest, EncodesEveryByteValueInLowerCase) {
  EXPECT_EQ(HexEncode(""), "");
  EXPECT_EQ(HexEncode(std::string("\x00", 1)), "00");
  EXPECT_EQ(HexEncode("\x01\x7f\x80\xfe\xff"), "017f80feff");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::string hex = HexEncode(all);
  ASSERT_EQ(hex.size(), 512u);
  EXPECT_EQ(hex.substr(0, 8), "00010203");
  EXPECT_EQ(hex.substr(20, 4), "0a0b");  // digits above 9 are lower case
  EXPECT_EQ(hex.substr(508), "feff");
  EXPECT_TRUE(IsLowerHex(hex, 512));
  auto back = HexDecode(hex);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, all);
}

TEST(HexTest, DecodesEitherCase) {
  EXPECT_EQ(*HexDecode(""), "");
  EXPECT_EQ(*HexDecode("00ff7A"), std::string("\x00\xff\x7a", 3));
  EXPECT_EQ(*HexDecode("ABCDEF"), *HexDecode("abcdef"));
}

TEST(HexTest, DecodeRejectsOddLengthsAndNamesTheFirstBadCharacter) {
  auto odd = HexDecode("abc");
  ASSERT_FALSE(odd.ok());
  EXPECT_EQ(odd.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(odd.status().message(), "odd")) << odd.status().ToString();

  // The first digit of a pair, the second digit of a pair, and characters that sit next to
  // the digit ranges in ASCII ('/' ':' '@' 'G' '`' 'g').
  const struct {
    const char* text;
    const char* offset;
  } cases[] = {{"zz00", "offset 0"}, {"0z00", "offset 1"}, {"00/0", "offset 2"},
               {"000:", "offset 3"}, {"@0", "offset 0"},   {"0G", "offset 1"},
               {"`0", "offset 0"},   {"0g", "offset 1"},   {"00 0", "offset 2"}};
  for (const auto& c : cases) {
    auto r = HexDecode(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.text;
    EXPECT_TRUE(Contains(r.status().message(), c.offset))
        << c.text << ": " << r.status().ToString();
  }
  // A NUL inside the text is a bad character, not the end of it.
  EXPECT_FALSE(HexDecode(std::string("0\0", 2)).ok());
}

TEST(HexTest, IsLowerHexWantsExactlyThatManyLowerCaseDigits) {
  EXPECT_TRUE(IsLowerHex("", 0));
  EXPECT_TRUE(IsLowerHex("0123456789abcdef", 16));
  EXPECT_FALSE(IsLowerHex("0123456789abcdef", 15));
  EXPECT_FALSE(IsLowerHex("0123456789abcdef", 17));
  EXPECT_FALSE(IsLowerHex("0123456789ABCDEF", 16));  // upper case is not the canonical form
  EXPECT_FALSE(IsLowerHex("0123456789abcdeg", 16));
  EXPECT_FALSE(IsLowerHex(std::string{'0', '0', '\0', '0'}, 4));
}

TEST(HexTest, DigestHexIsHexEncodeOfTheDigest) {
  // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
  const Digest d = Sha256::Of("abc", 3);
  EXPECT_EQ(ToHex(d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ToHex(d),
            HexEncode(std::string_view(reinterpret_cast<const char*>(d.data()), d.size())));
}

}  // namespace
}  // namespace shoal
