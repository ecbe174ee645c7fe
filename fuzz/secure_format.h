// Input format of secure_session_fuzz, shared with the seed generator.
//
//   u8 mode; mode % 3 is the kind of input:
//   0 handshake  a fresh server session is fed the rest as raw frames (nothing can complete
//                the handshake without a key exchange, so no message may be delivered);
//   1 forged     a client and the server complete a real handshake, then the server is fed the
//                rest as raw frames (none is authentic, so no message may be delivered);
//   2 sealed     a client and the server complete a real handshake, then the rest is a list of
//                pieces of plaintext the client encrypts into authentic records (so the inner
//                4-byte length-prefix framing is what gets fuzzed); the server's messages must be
//                exactly what the plaintext stream describes.
//   (mode / 3) % 3 is the pair of sessions:
//   0 mutual     the usual coordinator (client certificate required, cap kMutualCap) and a
//                worker with its certificate;
//   1 join       the coordinator with enrollment enabled (client certificate optional, built
//                with cap kEnrollCap) and a worker joining with a token: no certificate, so the
//                server must lower its cap to kUnauthenticatedMaxMessageBytes;
//   2 optional   the enrollment-enabled coordinator and a worker with its certificate (the
//                server keeps kEnrollCap).
//
// Modes 0 and 1: the rest is frames, each a length L then L bytes.
// Mode 2: the rest is pieces, each
//   u8 control    bit 0: client.Seal(piece) (adds the length prefix) instead of
//                        client.SealRawForTesting(piece) (the piece goes into the stream as is);
//                 bit 1: hold the frames and send them together with the next piece's, as one
//                        frame of several records;
//                 bit 2: flip bits in the frame(s) sent now; u16 position and u8 mask follow
//                        (the server must then fail and deliver nothing from that frame);
//   [u16 position, u8 mask]   only with bit 2;
//   length L, then L bytes of plaintext.
// A length L is one byte below 0x80, else two bytes: ((b0 & 0x7f) << 8) | b1 (up to 32767).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_support.h"

namespace shoal::fuzz::secure_format {

enum Kind : uint8_t { kHandshake = 0, kForged = 1, kSealed = 2 };
enum Pair : uint8_t { kMutual = 0, kJoin = 1, kOptional = 2 };
enum Control : uint8_t { kWithPrefix = 1, kHold = 2, kCorrupt = 4 };

inline char ModeByte(Kind kind, Pair pair) { return static_cast<char>(kind + 3 * pair); }

// The caps the servers are constructed with (max_message_bytes).
inline constexpr size_t kMutualCap = 32 * 1024;
inline constexpr size_t kEnrollCap = 256 * 1024;
inline constexpr size_t kMaxPiece = 0x7fff;

inline size_t ReadLength(ByteReader& r) {
  const uint8_t b0 = r.U8();
  if (b0 < 0x80) return b0;
  return (size_t{b0 & 0x7fu} << 8) | r.U8();
}

inline void PutLength(std::string& out, size_t n) {
  if (n < 0x80) {
    out.push_back(static_cast<char>(n));
  } else {
    out.push_back(static_cast<char>(0x80 | ((n >> 8) & 0x7f)));
    out.push_back(static_cast<char>(n & 0xff));
  }
}

// Appends a frame (modes 0 and 1), cut to kMaxPiece bytes.
inline void AppendFrame(std::string& input, std::string_view frame) {
  frame = frame.substr(0, kMaxPiece);
  PutLength(input, frame.size());
  input.append(frame);
}

inline void AppendPiece(std::string& input, uint8_t control, std::string_view plain,
                        uint16_t position = 0, uint8_t mask = 0) {
  input.push_back(static_cast<char>(control));
  if (control & kCorrupt) {
    input.push_back(static_cast<char>(position & 0xff));
    input.push_back(static_cast<char>(position >> 8));
    input.push_back(static_cast<char>(mask));
  }
  plain = plain.substr(0, kMaxPiece);
  PutLength(input, plain.size());
  input.append(plain);
}

// A 4-byte little-endian length prefix.
inline std::string Prefix(uint32_t n) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

}  // namespace shoal::fuzz::secure_format
