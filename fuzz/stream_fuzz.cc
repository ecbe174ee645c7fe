// stream_fuzz: the connection framing (protocols/framing.h) on arbitrary byte streams, fed in
// arbitrary pieces, with the cap changed between frames as the server does after a handshake.
//
// Input: [flags u8][cap selector u8][piece selector u8][cap change selector u8][stream bytes].
// flags bit 0 = this side runs TLS, bit 1 = the peer is the server.
//
// Besides "no crash, no sanitizer report", it checks:
//  - no frame is longer than the cap in force when it began, and no single allocation exceeds
//    that cap plus the piece size (the reader never trusts a length it has not checked);
//  - the reader never holds more than the frame being assembled plus one piece;
//  - what it accepts is exactly the stream: the greeting, then each frame's length prefix and
//    bytes, in order (rebuilt and compared with the input);
//  - a refusal names which check failed (bad_greeting or frame_too_large), and a refused
//    greeting is refused whatever the split.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_support.h"
#include "protocols/framing.h"

namespace shoal::fuzz {
namespace {

using namespace shoal::protocols;

size_t CapFor(uint8_t selector) { return size_t{1} << (selector % 21); }  // 1 B .. 1 MiB

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shoal::fuzz;
  ByteReader in(data, size);
  const uint8_t flags = in.U8();
  const bool secure = flags & 1;
  const bool peer_is_server = flags & 2;
  size_t cap = CapFor(in.U8());
  const size_t piece = 1 + in.U8() % 64 * 131;  // 1 .. 8254 bytes, up to libzmq's 8 KiB reads
  const uint8_t cap_change = in.U8();
  const std::string_view stream = in.Rest();

  FrameReader reader(secure, peer_is_server, cap);
  std::string rebuilt;
  size_t fed = 0;
  size_t frames = 0;
  size_t frame_cap = cap;  // the cap in force when the next frame begins
  bool failed = false;
  AllocationCap alloc_cap(std::max<size_t>(CapFor(20), CapFor(cap_change)) + 2 * piece + 4096,
                          "FrameReader");
  while (fed < stream.size() && !failed) {
    const std::string_view bytes = stream.substr(fed, piece);
    fed += bytes.size();
    reader.Feed(bytes);
    while (true) {
      auto next = reader.Next();
      if (!next.ok()) {
        const std::string reason = reader.error_reason();
        FUZZ_CHECK(reason == "bad_greeting" || reason == "frame_too_large",
                   "refusal without a reason: " + next.status().ToString());
        failed = true;
        break;
      }
      if (!next->has_value()) break;
      const std::string& f = **next;
      FUZZ_CHECK(f.size() <= frame_cap, "frame of " + std::to_string(f.size()) +
                                            " bytes accepted under a cap of " +
                                            std::to_string(frame_cap));
      if (frames == 0) rebuilt = Greeting(secure);
      rebuilt += FrameHeader(f.size());
      rebuilt += f;
      ++frames;
      // The server raises (or a test lowers) the cap between frames.
      if (frames == 1 && cap_change != 0) {
        cap = CapFor(cap_change);
        reader.set_cap(cap);
        frame_cap = cap;
      }
    }
    if (!failed) {
      FUZZ_CHECK(reader.buffered() <= frame_cap + piece + shoal::protocols::kGreetingBytes + 4,
                 "reader holds " + std::to_string(reader.buffered()) + " bytes");
    }
  }
  if (frames > 0) {
    FUZZ_CHECK(stream.substr(0, rebuilt.size()) == rebuilt,
               "accepted frames are not the stream's bytes");
  }
  // A greeting the reader refused is refused when fed in one piece too.
  if (failed && std::string(reader.error_reason()) == "bad_greeting" && frames == 0) {
    FrameReader whole(secure, peer_is_server, CapFor(0));
    whole.Feed(stream.substr(0, shoal::protocols::kGreetingBytes));
    auto r = whole.Next();
    FUZZ_CHECK(!r.ok(), "greeting refused in pieces but accepted whole");
  }
  return 0;
}
