#include "protocols/framing.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "base/hex.h"
#include "base/malloc_tuning.h"

namespace shoal::protocols {
namespace {

constexpr char kMagic[] = "SHOAL";
constexpr size_t kMagicBytes = 5;
constexpr uint8_t kWireVersion = 1;

// How far ahead of the bytes received a frame's buffer is reserved (FrameReader::Next).
constexpr size_t kAheadFromWorker = size_t{1} << 20;
constexpr size_t kAheadFromCoordinator = size_t{16} << 20;

size_t EffectiveCap(size_t cap) { return cap == 0 || cap > kMaxFrameCap ? kMaxFrameCap : cap; }

void PutLe32(unsigned char* p, size_t n) {
  p[0] = static_cast<unsigned char>(n);
  p[1] = static_cast<unsigned char>(n >> 8);
  p[2] = static_cast<unsigned char>(n >> 16);
  p[3] = static_cast<unsigned char>(n >> 24);
}

// What a connection that does not start with Shoal's greeting most likely is.
std::string Stranger(std::string_view head) {
  const auto b0 = head.empty() ? 0 : static_cast<unsigned char>(head[0]);
  if (b0 == 0xFF) return "a ZeroMQ (ZMTP) peer, not a Shoal peer";
  if (b0 == 0x16) return "a bare TLS handshake without Shoal's greeting (an older Shoal?)";
  if (b0 >= 'A' && b0 <= 'Z') return "text, not a Shoal peer (an HTTP request to the wrong port?)";
  return "not a Shoal peer (first bytes " + HexEncode(head.substr(0, 8)) + ")";
}

}  // namespace

std::string FrameHeader(size_t n) {
  std::string h(4, '\0');
  PutLe32(reinterpret_cast<unsigned char*>(h.data()), n);
  return h;
}

std::string Join(std::string_view head, std::string_view tail) {
  std::string out;
  ReserveForWrite(out, head.size() + tail.size());
  out.append(head);
  out.append(tail);
  return out;
}

std::string Greeting(bool secure) {
  std::string g(kMagic, kMagicBytes);
  g.push_back(static_cast<char>(kWireVersion));
  g.push_back(secure ? 'T' : 'P');
  g.push_back('\0');
  return g;
}

// FrameReader

FrameReader::FrameReader(bool secure, bool peer_is_server, size_t cap)
    : secure_(secure), peer_is_server_(peer_is_server), cap_(EffectiveCap(cap)) {}

void FrameReader::set_cap(size_t cap) { cap_ = EffectiveCap(cap); }

size_t FrameReader::AppendBody(std::string_view bytes) {
  const size_t take = std::min(need_ - body_.size(), bytes.size());
  if (body_.capacity() < body_.size() + take) {  // grow by doubling, never beyond the frame
    ReserveForWrite(body_, std::min(need_, std::max(body_.size() + take, 2 * body_.capacity())));
  }
  body_.append(bytes.data(), take);
  return take;
}

void FrameReader::Feed(std::string_view bytes) {
  // The common case inside a large frame: straight into the frame being assembled.
  if (in_body_ && consumed_ == pending_.size()) bytes.remove_prefix(AppendBody(bytes));
  pending_.append(bytes.data(), bytes.size());
}

Result<std::optional<std::string>> FrameReader::Next() {
  std::string_view avail(pending_.data() + consumed_, pending_.size() - consumed_);
  auto compact = [&] {
    pending_.erase(0, consumed_);
    consumed_ = 0;
  };
  if (!greeted_) {
    const size_t n = std::min(avail.size(), kMagicBytes);
    if (avail.substr(0, n) != std::string_view(kMagic, n)) {
      error_reason_ = "bad_greeting";
      return ProtocolError(Stranger(avail));
    }
    if (avail.size() < kGreetingBytes) return std::optional<std::string>();
    const auto version = static_cast<uint8_t>(avail[5]);
    const char mode = avail[6];
    error_reason_ = "bad_greeting";
    const char* them = peer_is_server_ ? "the coordinator" : "the worker";
    if (version != kWireVersion) {
      return Rejected(std::string(them) + " speaks Shoal wire version " + std::to_string(version) +
                      ", this side speaks " + std::to_string(kWireVersion));
    }
    if (mode != 'T' && mode != 'P') return ProtocolError("greeting with an unknown mode byte");
    if (avail[7] != '\0') return ProtocolError("greeting with unknown flags (reserved byte not 0)");
    if ((mode == 'T') != secure_) {
      if (peer_is_server_) {
        return Rejected(secure_ ? "the coordinator runs --insecure (plain, unauthenticated "
                                  "ZeroMQ); this worker sends nothing in clear text unless it is "
                                  "started with --insecure too"
                                : "the coordinator requires TLS; this worker was started with "
                                  "--insecure (plain)");
      }
      return Rejected(secure_ ? "the worker speaks plain (--insecure) but this coordinator "
                                "requires TLS"
                              : "the worker speaks TLS but this coordinator runs --insecure");
    }
    error_reason_ = "";
    greeted_ = true;
    consumed_ += kGreetingBytes;
    avail.remove_prefix(kGreetingBytes);
  }
  if (!in_body_) {
    if (avail.size() < 4) {
      compact();
      return std::optional<std::string>();
    }
    const auto* p = reinterpret_cast<const unsigned char*>(avail.data());
    const size_t len = size_t{p[0]} | size_t{p[1]} << 8 | size_t{p[2]} << 16 | size_t{p[3]} << 24;
    if (len > cap_) {
      error_reason_ = "frame_too_large";
      return ProtocolError("frame of " + std::to_string(len) +
                           " bytes announced; this connection " + "accepts at most " +
                           std::to_string(cap_));
    }
    consumed_ += 4;
    avail.remove_prefix(4);
    in_body_ = true;
    need_ = len;
    body_.clear();
    // Reserve what is known to be coming. From a worker (the server's side: one connection per
    // worker), at most 1 MiB ahead of the bytes received, beyond that the buffer grows with
    // what actually arrives: announced sizes cannot reserve memory on a thousand connections.
    // From the coordinator (a worker's one connection, whose frames carry the model every
    // round), up to 16 MiB ahead, so a whole TLS frame (at most 8 MiB): growing a 4 MiB frame
    // by doubling copied 3 MiB and left 3 MiB of freed buffers in the worker's heap each time.
    const size_t ahead =
        std::max(avail.size(), peer_is_server_ ? kAheadFromCoordinator : kAheadFromWorker);
    ReserveForWrite(body_, std::min(len, ahead));
  }
  consumed_ += AppendBody(avail);
  compact();
  if (body_.size() < need_) return std::optional<std::string>();
  in_body_ = false;
  return std::optional<std::string>(std::exchange(body_, std::string()));
}

}  // namespace shoal::protocols
