// Encoding and decoding of every message in messages.h, one message per ZeroMQ frame: the
// fixed header (frame_layout.h: magic, version, type, lengths), then the structured header
// H (<= Limits::max_header_bytes), then the raw payload P (<= Limits::max_payload_bytes).
// Decoding checks all of this before it touches the header, and Cereal reads only through
// length-checked helpers (messages.h).
// Errors: ProtocolError naming what was wrong (magic, version, type, lengths, header contents).
#pragma once

#include <cereal/archives/portable_binary.hpp>
#include <cstdint>
#include <cstring>
#include <optional>
#include <sstream>
#include <streambuf>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "protocols/frame_layout.h"
#include "protocols/messages.h"
#include "protocols/placement.h"

namespace shoal::protocols {

// What a receiver accepts of a frame (the wire limits they default to: frame_layout.h).
struct Limits {
  uint32_t max_header_bytes = kMaxHeaderBytes;
  uint32_t max_payload_bytes = kPreWelcomePayloadBytes;
  size_t max_frame_bytes() const {
    return kFrameHeaderBytes + max_header_bytes + max_payload_bytes;
  }
};

struct FrameView {
  uint16_t version = 0;
  MessageType type = MessageType::kError;
  std::string_view header;
  std::string_view payload;
  bool payload_placed = false;  // `payload` was decrypted apart from the head (placement.h)
};

// Checks the fixed header against `limits` and the frame's real size.
Result<FrameView> ParseFrame(std::string_view frame, const Limits& limits);
// The same for a frame whose payload was placed apart from its head (placement.h): `head` must
// end where the payload begins.
Result<FrameView> ParseFrame(std::string_view head, std::string_view placed_payload,
                             const Limits& limits);
// The same checks for the head alone of a frame with a payload of `payload_bytes` still to
// come (the returned view's payload is empty): what a payload placer decides from.
Result<FrameView> ParseFrameHead(std::string_view head, size_t payload_bytes, const Limits& limits);
// ParseFrame of a received message, placed or not.
Result<FrameView> ParseFrame(const Plaintext& message, const Limits& limits);

namespace internal {

class MemoryBuf : public std::streambuf {
 public:
  MemoryBuf(const char* data, size_t size) {
    char* p = const_cast<char*>(data);
    setg(p, p, p + size);
  }
};

std::string BuildFrame(MessageType type, const std::string& header, std::string_view payload);
// The bytes of BuildFrame(type, header, payload) before the payload, for a payload of
// `payload_bytes` bytes sent from where it lies.
std::string BuildFrameHead(MessageType type, const std::string& header, size_t payload_bytes);

template <class M>
std::string EncodeHeader(const M& message) {
  std::ostringstream os;  // structured headers only; tensor bytes never pass through a stream
  {
    cereal::PortableBinaryOutputArchive ar(os);
    ar(const_cast<M&>(message));
  }
  return os.str();
}

}  // namespace internal

template <class M>
std::string Encode(const M& message, std::string_view payload = {}) {
  return internal::BuildFrame(M::kType, internal::EncodeHeader(message), payload);
}

// A frame in two pieces: `head` + `payload` are the bytes of Encode(message, payload), the
// payload not copied (a view of the caller's buffer, which must outlive this).
struct FramePieces {
  std::string head;
  std::string_view payload;
};

// Decodes the structured header of `frame` as M. The frame's type must be M::kType and the
// header must be consumed exactly.
template <class M>
Result<M> Decode(const FrameView& frame) {
  if (frame.type != M::kType) {
    return ProtocolError(std::string("expected ") + MessageTypeName(M::kType) + ", got " +
                         MessageTypeName(frame.type));
  }
  M m;
  internal::MemoryBuf buf(frame.header.data(), frame.header.size());
  std::istream is(&buf);
  try {
    cereal::PortableBinaryInputArchive ar(is);
    ar(m);
  } catch (const std::exception& e) {
    return ProtocolError(std::string(MessageTypeName(M::kType)) + " header: " + e.what());
  }
  if (is.peek() != std::char_traits<char>::eof()) {
    return ProtocolError(std::string(MessageTypeName(M::kType)) + " header has trailing bytes");
  }
  return m;
}

// Splitting a flat buffer into WeightsChunk frames and putting it back together.
uint32_t ChunkCount(uint64_t total_bytes, uint32_t chunk_bytes);
std::vector<std::string> EncodeChunks(uint64_t round, const void* data, uint64_t total_bytes,
                                      uint32_t chunk_bytes);
// Chunk `index` (< ChunkCount) of the same transfer: a sender that encodes and sends one chunk
// at a time holds one chunk's copy instead of the whole buffer's.
std::string EncodeChunk(uint64_t round, const void* data, uint64_t total_bytes,
                        uint32_t chunk_bytes, uint32_t index);
// The same frame with its payload left where it lies in `data` (a worker's upload is sealed
// straight from the update's storage).
FramePieces EncodeChunkPieces(uint64_t round, const void* data, uint64_t total_bytes,
                              uint32_t chunk_bytes, uint32_t index);

// Receives the chunks of one transfer in order into a buffer allocated once, up front, from
// a size the receiver already validated (never from the sender's claim alone).
class ChunkAssembler {
 public:
  // Allocates the buffer. InvalidArgument unless both sizes are multiples of 4 (float32) and
  // chunk_bytes > 0; the assembler stays inactive then. keep = false checks every chunk as
  // usual but keeps none of it (no buffer, no placement, Take() returns nothing): a receiver
  // that only needs to follow the transfer (the load generator's synthetic workers).
  Status Start(uint64_t round, uint64_t total_bytes, uint32_t chunk_bytes, bool keep = true);
  // Where `chunk`'s payload of `payload_bytes` goes, for a session to decrypt it there
  // (placement.h), after the checks Add makes; ProtocolError naming what is wrong otherwise.
  // The chunk still counts only once Add is called with the placed payload.
  Result<PayloadPlacement> Place(const WeightsChunk& chunk, uint64_t payload_bytes);
  // A payload placer's answer for a frame head (secure_channel.h): Place() for the next
  // WeightsChunk of this transfer, no placement for anything else (the message is then read
  // whole, and Add says what is wrong with it).
  PayloadPlacement PlaceFrame(std::string_view head, size_t payload_bytes, const Limits& limits);
  // Takes the next chunk. `placed`: the payload is where Place() put it, and is accepted only
  // from this transfer and for the chunk that was placed (a delivery that a Reset or Start
  // overtook is refused); otherwise it is copied in.
  Status Add(const WeightsChunk& chunk, std::string_view payload, bool placed = false);
  bool active() const { return active_; }
  bool complete() const { return active_ && next_index_ == count_; }
  uint64_t round() const { return round_; }
  // Moves the assembled floats out and resets the assembler.
  std::vector<float> Take();
  void Reset();

 private:
  Status Check(const WeightsChunk& chunk, uint64_t payload_bytes) const;
  char* At(uint64_t offset) {
    return data_ ? reinterpret_cast<char*>(data_->data()) + offset : nullptr;
  }

  bool active_ = false;
  uint64_t round_ = 0;
  uint64_t total_bytes_ = 0;
  uint32_t chunk_bytes_ = 0;
  uint32_t count_ = 0;
  uint32_t next_index_ = 0;
  // Shared with a session decrypting a placed payload into it (placement.h).
  std::shared_ptr<std::vector<float>> data_;
  const char* placed_ = nullptr;  // where the last Place() of this transfer put its payload
};

// Splitting a model file (the user's TorchScript archive) into ModelFile frames of at most
// `chunk_bytes` payload each, and putting it back together.
std::vector<std::string> EncodeModelFile(std::string_view bytes, uint32_t chunk_bytes);

// Receives the ModelFile frames of one file in order. The buffer is allocated once, when the
// first piece's total_bytes has been checked against the size announced in Welcome (itself
// checked against the receiver's cap in Start); the SHA-256 of the complete file is checked
// against the digest every piece carries.
class ModelFileAssembler {
 public:
  // Prepares for a file of `expected_bytes` (Welcome.model_bytes). InvalidArgument, and the
  // assembler stays inactive, when expected_bytes is 0 or above `max_bytes`, or chunk_bytes is 0.
  Status Start(uint64_t expected_bytes, uint32_t chunk_bytes, uint64_t max_bytes);
  // ProtocolError naming the problem (no transfer, piece out of order, size, count or digest
  // differing from the announced ones, wrong payload size, SHA-256 of the complete file not the
  // announced one); the assembler is reset then.
  Status Add(const ModelFile& piece, std::string_view payload);
  bool active() const { return active_; }
  bool complete() const { return active_ && count_ > 0 && next_index_ == count_; }
  // Raw 32-byte SHA-256 announced by the pieces ("" before the first one).
  const std::string& sha256() const { return sha256_; }
  // Moves the complete file out and resets the assembler.
  std::string Take();
  void Reset();

 private:
  bool active_ = false;
  uint64_t expected_bytes_ = 0;
  uint32_t chunk_bytes_ = 0;
  uint32_t count_ = 0;
  uint32_t next_index_ = 0;
  std::string sha256_;
  std::string data_;
};

}  // namespace shoal::protocols
