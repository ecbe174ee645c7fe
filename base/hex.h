// Hexadecimal text of bytes (lower case) and back.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace shoal {

std::string HexEncode(std::string_view bytes);
// InvalidArgument naming the offset of the first character that is not a hex digit.
Result<std::string> HexDecode(std::string_view hex);

}  // namespace shoal
