// Shoal's connection framing, independent of any socket (transport.h carries it over ZeroMQ
// STREAM sockets; the fuzz targets feed it arbitrary bytes).
//
// Each side of a connection first sends an 8-byte greeting: "SHOAL", the wire version (1), the
// mode ('T' = TLS 1.3 records follow, 'P' = plain frames, only with --insecure) and a zero byte.
// Then every frame is a 4-byte little-endian length followed by that many bytes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace shoal::protocols {

// Largest cap a frame can have (the length prefix is 32-bit).
inline constexpr size_t kMaxFrameCap = 0xFFFFFFFFu;
inline constexpr size_t kGreetingBytes = 8;

std::string Greeting(bool secure);
// The 4-byte length prefix of a frame of n bytes.
std::string FrameHeader(size_t n);
// head + tail in one buffer (mapped before it is written: malloc_tuning.h ReserveForWrite).
std::string Join(std::string_view head, std::string_view tail);

// Reassembles frames from a connection's bytes, one at a time, checking the greeting and every
// length prefix against the cap in force when that frame begins. Holds at most the frame being
// assembled plus the bytes fed after it.
class FrameReader {
 public:
  FrameReader(bool secure, bool peer_is_server, size_t cap);
  // The largest frame accepted from the next frame on (0 = kMaxFrameCap).
  void set_cap(size_t cap);
  // Hands over bytes received. Call Next() until it returns nullopt before feeding more.
  void Feed(std::string_view bytes);
  // The next whole frame; nullopt when more bytes are needed. After an error the connection
  // is unusable: kRejected for a Shoal greeting of the other mode or another version,
  // kProtocol for anything else; error_reason() says which check failed.
  Result<std::optional<std::string>> Next();
  // "bad_greeting" or "frame_too_large" after Next() failed.
  const char* error_reason() const { return error_reason_; }
  size_t buffered() const { return pending_.size() - consumed_ + body_.size(); }

 private:
  bool secure_;
  bool peer_is_server_;
  size_t cap_;
  bool greeted_ = false;
  bool in_body_ = false;
  size_t need_ = 0;
  std::string body_;
  std::string pending_;  // bytes not yet parsed (from consumed_ on)
  size_t consumed_ = 0;
  const char* error_reason_ = "";

  // Appends what `bytes` holds of the current frame's body; returns how many it took.
  size_t AppendBody(std::string_view bytes);
};

}  // namespace shoal::protocols
