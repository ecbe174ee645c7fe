// Hexadecimal text of bytes (lower case) and back: the one hex codec of the tree (digests,
// fingerprints, serials, join-token parts, signatures, bytes quoted in error messages).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "base/status.h"

namespace shoal {

// Two lowercase digits per byte; "" for no bytes.
std::string HexEncode(std::string_view bytes);
// Either case. InvalidArgument for an odd number of digits, or naming the offset of the first
// character that is not a hex digit.
Result<std::string> HexDecode(std::string_view hex);
// Whether `text` is exactly `digits` lowercase hex digits: the canonical form HexEncode writes,
// which is what a token or fingerprint compared as text must be in.
bool IsLowerHex(std::string_view text, size_t digits);

}  // namespace shoal
