#include "protocols/codec.h"

#include <algorithm>

#include "base/malloc_tuning.h"
#include "base/sha256.h"
#include "protocols/framing.h"

namespace shoal::protocols {

const char* MessageTypeName(MessageType t) {
  switch (t) {
    case MessageType::kHello:
      return "Hello";
    case MessageType::kWelcome:
      return "Welcome";
    case MessageType::kTrainTask:
      return "TrainTask";
    case MessageType::kEvalTask:
      return "EvalTask";
    case MessageType::kWeightsChunk:
      return "WeightsChunk";
    case MessageType::kUpdateReady:
      return "UpdateReady";
    case MessageType::kUploadGrant:
      return "UploadGrant";
    case MessageType::kAck:
      return "Ack";
    case MessageType::kEvalResult:
      return "EvalResult";
    case MessageType::kHeartbeat:
      return "Heartbeat";
    case MessageType::kError:
      return "Error";
    case MessageType::kShutdown:
      return "Shutdown";
    case MessageType::kModelFile:
      return "ModelFile";
    case MessageType::kJoinRequest:
      return "JoinRequest";
    case MessageType::kJoinResponse:
      return "JoinResponse";
  }
  return "Unknown";
}

namespace {

// ParseFrame of a frame of `frame_bytes` bytes whose first bytes are `head` (all of it, or at
// least its head when the payload lies elsewhere).
Result<FrameView> ParseFixed(std::string_view head, size_t frame_bytes, const Limits& limits) {
  if (head.size() < kFrameHeaderBytes) {
    return ProtocolError("frame of " + std::to_string(head.size()) +
                         " bytes is shorter than the 16-byte frame header");
  }
  if (frame_bytes > limits.max_frame_bytes()) {
    return ProtocolError("frame of " + std::to_string(frame_bytes) +
                         " bytes exceeds the limit of " + std::to_string(limits.max_frame_bytes()));
  }
  const std::optional<FixedHeader> fixed = ReadFixedHeader(head);
  if (!fixed) return ProtocolError("bad frame magic");  // the length was checked above
  FrameView f;
  f.version = fixed->version;
  if (f.version != kProtocolVersion) {
    return ProtocolError("protocol version " + std::to_string(f.version) +
                         " is not supported (this build speaks " +
                         std::to_string(kProtocolVersion) + ")");
  }
  const uint16_t type = fixed->type;
  if (type == 0 || type > kMaxMessageType) {
    return ProtocolError("unknown message type " + std::to_string(type));
  }
  f.type = static_cast<MessageType>(type);
  const uint64_t h = fixed->header_bytes;
  const uint64_t n = fixed->payload_bytes;
  if (h > limits.max_header_bytes) {
    return ProtocolError("header length " + std::to_string(h) + " exceeds the limit of " +
                         std::to_string(limits.max_header_bytes));
  }
  if (n > limits.max_payload_bytes) {
    return ProtocolError("payload length " + std::to_string(n) + " exceeds the limit of " +
                         std::to_string(limits.max_payload_bytes));
  }
  if (kFrameHeaderBytes + h + n != frame_bytes) {
    return ProtocolError("frame lengths disagree: header " + std::to_string(h) + " + payload " +
                         std::to_string(n) + " + 16 != frame size " + std::to_string(frame_bytes));
  }
  f.header = head.substr(kFrameHeaderBytes, h);
  if (f.header.size() != h) return ProtocolError("frame head cut short");
  return f;
}

}  // namespace

Result<FrameView> ParseFrame(std::string_view frame, const Limits& limits) {
  SHOAL_ASSIGN_OR_RETURN(FrameView f, ParseFixed(frame, frame.size(), limits));
  f.payload = frame.substr(kFrameHeaderBytes + f.header.size());
  return f;
}

Result<FrameView> ParseFrameHead(std::string_view head, size_t payload_bytes,
                                 const Limits& limits) {
  SHOAL_ASSIGN_OR_RETURN(FrameView f, ParseFixed(head, head.size() + payload_bytes, limits));
  if (head.size() != kFrameHeaderBytes + f.header.size()) {
    return ProtocolError("frame head of " + std::to_string(head.size()) +
                         " bytes does not end where the payload begins");
  }
  return f;
}

Result<FrameView> ParseFrame(std::string_view head, std::string_view placed_payload,
                             const Limits& limits) {
  SHOAL_ASSIGN_OR_RETURN(FrameView f, ParseFrameHead(head, placed_payload.size(), limits));
  f.payload = placed_payload;
  f.payload_placed = true;
  return f;
}

Result<FrameView> ParseFrame(const Plaintext& message, const Limits& limits) {
  return message.placed ? ParseFrame(message.bytes, message.payload, limits)
                        : ParseFrame(message.bytes, limits);
}

namespace internal {

std::string BuildFrameHead(MessageType type, const std::string& header, size_t payload_bytes) {
  std::string out(kFrameHeaderBytes + header.size(), '\0');
  WriteFixedHeader(out.data(), static_cast<uint16_t>(type), static_cast<uint32_t>(header.size()),
                   static_cast<uint32_t>(payload_bytes));
  std::memcpy(out.data() + kFrameHeaderBytes, header.data(), header.size());
  return out;
}

std::string BuildFrame(MessageType type, const std::string& header, std::string_view payload) {
  return Join(BuildFrameHead(type, header, payload.size()), payload);
}

}  // namespace internal

uint32_t ChunkCount(uint64_t total_bytes, uint32_t chunk_bytes) {
  if (total_bytes == 0 || chunk_bytes == 0) return 0;
  return static_cast<uint32_t>((total_bytes + chunk_bytes - 1) / chunk_bytes);
}

std::vector<std::string> EncodeChunks(uint64_t round, const void* data, uint64_t total_bytes,
                                      uint32_t chunk_bytes) {
  const uint32_t count = ChunkCount(total_bytes, chunk_bytes);
  std::vector<std::string> frames;
  frames.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    frames.push_back(EncodeChunk(round, data, total_bytes, chunk_bytes, i));
  }
  return frames;
}

FramePieces EncodeChunkPieces(uint64_t round, const void* data, uint64_t total_bytes,
                              uint32_t chunk_bytes, uint32_t index) {
  WeightsChunk c;
  c.round = round;
  c.index = index;
  c.count = ChunkCount(total_bytes, chunk_bytes);
  c.offset = uint64_t{index} * chunk_bytes;
  const uint64_t len = std::min<uint64_t>(chunk_bytes, total_bytes - c.offset);
  const std::string_view payload(static_cast<const char*>(data) + c.offset, len);
  return {internal::BuildFrameHead(WeightsChunk::kType, internal::EncodeHeader(c), len), payload};
}

std::string EncodeChunk(uint64_t round, const void* data, uint64_t total_bytes,
                        uint32_t chunk_bytes, uint32_t index) {
  const FramePieces f = EncodeChunkPieces(round, data, total_bytes, chunk_bytes, index);
  return Join(f.head, f.payload);
}

Status ChunkAssembler::Start(uint64_t round, uint64_t total_bytes, uint32_t chunk_bytes,
                             bool keep) {
  Reset();
  if (chunk_bytes == 0 || chunk_bytes % 4 != 0 || total_bytes % 4 != 0) {
    return InvalidArgument("weights transfer of " + std::to_string(total_bytes) +
                           " bytes in chunks of " + std::to_string(chunk_bytes) +
                           ": both must be multiples of 4, chunks non-empty");
  }
  active_ = true;
  round_ = round;
  total_bytes_ = total_bytes;
  chunk_bytes_ = chunk_bytes;
  count_ = ChunkCount(total_bytes, chunk_bytes);
  next_index_ = 0;
  if (!keep) return Status::Ok();
  // A new buffer every transfer: a session may still be writing a stale placed payload into
  // the previous one (placement.h).
  data_ = std::make_shared<std::vector<float>>();
  ReserveForWrite(*data_, total_bytes / 4);
  data_->assign(total_bytes / 4, 0.0f);
  return Status::Ok();
}

Status ChunkAssembler::Check(const WeightsChunk& c, uint64_t payload_bytes) const {
  if (!active_) return ProtocolError("WeightsChunk without a transfer in progress");
  if (next_index_ >= count_) return ProtocolError("WeightsChunk after the transfer was complete");
  if (c.round != round_) {
    return ProtocolError("WeightsChunk for round " + std::to_string(c.round) +
                         " during a transfer for round " + std::to_string(round_));
  }
  if (c.count != count_ || c.index != next_index_) {
    return ProtocolError("WeightsChunk " + std::to_string(c.index) + "/" + std::to_string(c.count) +
                         " out of order (expected " + std::to_string(next_index_) + "/" +
                         std::to_string(count_) + ")");
  }
  const uint64_t offset = uint64_t{c.index} * chunk_bytes_;
  const uint64_t expected = std::min<uint64_t>(chunk_bytes_, total_bytes_ - offset);
  if (c.offset != offset || payload_bytes != expected) {
    return ProtocolError("WeightsChunk " + std::to_string(c.index) + " has offset " +
                         std::to_string(c.offset) + " and " + std::to_string(payload_bytes) +
                         " bytes, expected offset " + std::to_string(offset) + " and " +
                         std::to_string(expected) + " bytes");
  }
  return Status::Ok();
}

Result<PayloadPlacement> ChunkAssembler::Place(const WeightsChunk& c, uint64_t payload_bytes) {
  SHOAL_RETURN_IF_ERROR(Check(c, payload_bytes));
  if (!data_) return InvalidArgument("this transfer keeps no payloads");
  char* at = At(c.offset);
  placed_ = at;
  return PayloadPlacement{at, data_};
}

PayloadPlacement ChunkAssembler::PlaceFrame(std::string_view head, size_t payload_bytes,
                                            const Limits& limits) {
  if (!active_) return {};
  auto f = ParseFrameHead(head, payload_bytes, limits);
  if (!f.ok() || f->type != MessageType::kWeightsChunk) return {};
  auto c = Decode<WeightsChunk>(*f);
  if (!c.ok()) return {};
  auto placement = Place(*c, payload_bytes);
  return placement.ok() ? std::move(placement).value() : PayloadPlacement{};
}

Status ChunkAssembler::Add(const WeightsChunk& c, std::string_view payload, bool placed) {
  SHOAL_RETURN_IF_ERROR(Check(c, payload.size()));
  char* at = At(c.offset);
  if (placed) {
    // Only where this transfer placed this chunk: not a payload placed before a Reset or
    // Start, nor one placed for an earlier chunk.
    if (placed_ != at || payload.data() != at) {
      return ProtocolError("WeightsChunk " + std::to_string(c.index) +
                           " was decrypted for a transfer that is no longer in progress");
    }
  } else if (at != nullptr) {
    std::memcpy(at, payload.data(), payload.size());
  }
  placed_ = nullptr;
  ++next_index_;
  return Status::Ok();
}

std::vector<float> ChunkAssembler::Take() {
  std::vector<float> out = data_ ? std::move(*data_) : std::vector<float>();
  Reset();
  return out;
}

void ChunkAssembler::Reset() {
  active_ = false;
  data_.reset();
  placed_ = nullptr;
  next_index_ = count_ = 0;
}

std::vector<std::string> EncodeModelFile(std::string_view bytes, uint32_t chunk_bytes) {
  const uint32_t count = ChunkCount(bytes.size(), chunk_bytes);
  const Digest d = Sha256::Of(bytes.data(), bytes.size());
  std::vector<std::string> frames;
  frames.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    ModelFile m;
    m.index = i;
    m.count = count;
    m.total_bytes = bytes.size();
    m.sha256.assign(d.begin(), d.end());
    const uint64_t offset = uint64_t{i} * chunk_bytes;
    frames.push_back(
        Encode(m, bytes.substr(offset, std::min<uint64_t>(chunk_bytes, bytes.size() - offset))));
  }
  return frames;
}

Status ModelFileAssembler::Start(uint64_t expected_bytes, uint32_t chunk_bytes,
                                 uint64_t max_bytes) {
  Reset();
  if (expected_bytes == 0 || expected_bytes > max_bytes) {
    return InvalidArgument("model file of " + std::to_string(expected_bytes) +
                           " bytes announced; accepted are 1.." + std::to_string(max_bytes));
  }
  if (chunk_bytes == 0) return InvalidArgument("model file transfer with empty chunks");
  active_ = true;
  expected_bytes_ = expected_bytes;
  chunk_bytes_ = chunk_bytes;
  count_ = ChunkCount(expected_bytes, chunk_bytes);
  return Status::Ok();
}

Status ModelFileAssembler::Add(const ModelFile& m, std::string_view payload) {
  auto fail = [this](const std::string& why) {
    Reset();
    return ProtocolError(why);
  };
  if (!active_) return ProtocolError("ModelFile without a model transfer in progress");
  if (next_index_ >= count_) return fail("ModelFile after the model file was complete");
  if (m.total_bytes != expected_bytes_) {
    return fail("ModelFile announces " + std::to_string(m.total_bytes) + " bytes, Welcome " +
                std::to_string(expected_bytes_));
  }
  if (m.count != count_ || m.index != next_index_) {
    return fail("ModelFile " + std::to_string(m.index) + "/" + std::to_string(m.count) +
                " out of order (expected " + std::to_string(next_index_) + "/" +
                std::to_string(count_) + ")");
  }
  if (m.sha256.size() != 32) return fail("ModelFile digest must be 32 bytes");
  if (next_index_ == 0) {
    sha256_ = m.sha256;
    data_.assign(expected_bytes_, '\0');  // sizes checked against the cap in Start
  } else if (m.sha256 != sha256_) {
    return fail("ModelFile " + std::to_string(m.index) + " announces another digest");
  }
  const uint64_t offset = uint64_t{m.index} * chunk_bytes_;
  const uint64_t expected = std::min<uint64_t>(chunk_bytes_, expected_bytes_ - offset);
  if (payload.size() != expected) {
    return fail("ModelFile " + std::to_string(m.index) + " has " + std::to_string(payload.size()) +
                " bytes, expected " + std::to_string(expected));
  }
  std::memcpy(data_.data() + offset, payload.data(), payload.size());
  ++next_index_;
  if (next_index_ == count_) {
    const Digest d = Sha256::Of(data_.data(), data_.size());
    if (std::string(d.begin(), d.end()) != sha256_) {
      return fail("model file SHA-256 " + ToHex(d) + " is not the announced one");
    }
  }
  return Status::Ok();
}

std::string ModelFileAssembler::Take() {
  std::string out = std::move(data_);
  Reset();
  return out;
}

void ModelFileAssembler::Reset() {
  active_ = false;
  expected_bytes_ = 0;
  chunk_bytes_ = 0;
  count_ = next_index_ = 0;
  sha256_.clear();
  FreeStorage(data_);
}

}  // namespace shoal::protocols
