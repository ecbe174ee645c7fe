// frame_fuzz: the wire frame parser, every message decoder, and the two chunk assemblers on
// arbitrary bytes. Input format: fuzz/frame_format.h.
//
// Besides "no crash, no sanitizer report", it checks:
//  - every refusal is a ProtocolError (Decode, ParseFrame, Add) or InvalidArgument (Start);
//  - ParseFrame with tighter limits never accepts what the default limits refuse;
//  - a decoded message re-encodes to a frame that decodes to the same bytes again, and to
//    exactly the original header when that header was little-endian (byte 0 == 1);
//  - no single allocation made while parsing or decoding exceeds what the header limits allow
//    (kDecodeCap), and none made by the assemblers exceeds the transfer cap;
//  - a completed weights transfer holds exactly the accepted payloads, and a completed model
//    file has the announced size and SHA-256;
//  - every other chunk goes through ChunkAssembler::Place (the path of a payload decrypted in
//    place): it refuses exactly what Add refuses, with the same reason, and a chunk written
//    where it said is accepted as placed.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "base/sha256.h"
#include "base/status.h"
#include "fuzz/frame_format.h"
#include "fuzz/fuzz_support.h"
#include "model/weights.h"
#include "protocols/codec.h"
#include "protocols/messages.h"

namespace shoal::fuzz {
namespace {

using namespace shoal::protocols;
using frame_format::kMaxTransferBytes;

// Largest single allocation a decoder may make: the tensor vector of a spec at its count limit
// (names and shapes are far smaller), plus slack for error strings and stream internals.
constexpr size_t kDecodeCap = kMaxTensors * sizeof(model::TensorSpec) + 4096;
// Assemblers allocate their buffer once, from a size already checked against the cap.
constexpr size_t kAssemblerCap = kMaxTransferBytes + 4096;

std::string Describe(const Status& s) { return s.ToString(); }

// Decodes `view` as M and checks the round trip described above.
template <class M>
void DecodeOne(const FrameView& view) {
  Result<M> m = [&] {
    AllocationCap cap(kDecodeCap, MessageTypeName(M::kType));
    return Decode<M>(view);
  }();
  if (!m.ok()) {
    FUZZ_CHECK(m.status().code() == Code::kProtocol, Describe(m.status()));
    return;
  }
  FUZZ_CHECK(view.type == M::kType, "Decode accepted a frame of another type");

  const std::string again = Encode(*m, view.payload);
  Result<FrameView> f2 = ParseFrame(again, Limits{});
  FUZZ_CHECK(f2.ok(), "re-encoded frame refused: " + Describe(f2.status()));
  FUZZ_CHECK(f2->type == M::kType, "re-encoded frame has another type");
  FUZZ_CHECK(f2->payload == view.payload, "re-encoded payload differs");
  if (!view.header.empty() && view.header[0] == 1) {
    FUZZ_CHECK(f2->header == view.header, std::string("a little-endian ") +
                                              MessageTypeName(M::kType) +
                                              " header does not re-encode to itself");
  }
  Result<M> m2 = Decode<M>(*f2);
  FUZZ_CHECK(m2.ok(), "re-encoded frame does not decode: " + Describe(m2.status()));
  FUZZ_CHECK(Encode(*m2, view.payload) == again, "encoding is not stable across a round trip");

  if constexpr (std::is_same_v<M, TrainTask> || std::is_same_v<M, EvalTask>) {
    // The worker validates every received spec before using its sizes.
    const model::ModelSpec& spec = m->spec;
    Status st = spec.Validate();
    if (st.ok()) {
      FUZZ_CHECK(
          spec.total_bytes() > 0 && spec.total_bytes() <= model::SpecLimits::kMaxTotalElements * 4,
          "a validated spec has an impossible size");
      (void)spec.Diff(model::ModelSpec{});
      (void)spec.Diff(spec);
    } else {
      FUZZ_CHECK(st.code() == Code::kInvalidArgument, Describe(st));
    }
  }
}

template <class... Ms>
struct MessageList {
  // Decode<M> of the frame as parsed (refused unless the type matches), then of the same header
  // presented as each type.
  static void DecodeAll(const FrameView& f) {
    (DecodeOne<Ms>(f), ...);
    (DecodeRetyped<Ms>(f), ...);
  }
  template <class M>
  static void DecodeRetyped(FrameView f) {
    if (f.type == M::kType) return;  // done above
    f.type = M::kType;
    DecodeOne<M>(f);
  }
};

using AllMessages = MessageList<Hello, Welcome, ModelFile, TrainTask, EvalTask, WeightsChunk,
                                UpdateReady, UploadGrant, Ack, EvalResult, Heartbeat, Error,
                                JoinRequest, JoinResponse, Shutdown>;
static_assert(kMaxMessageType == 15, "a message type was added: list it in AllMessages");

Result<FrameView> Parse(std::string_view frame, const Limits& limits) {
  AllocationCap cap(kDecodeCap, "ParseFrame");
  return ParseFrame(frame, limits);
}

void FuzzOneFrame(std::string_view in) {
  Result<FrameView> f = Parse(in, Limits{});
  Limits tight;
  tight.max_header_bytes = 64;
  tight.max_payload_bytes = 64;
  Result<FrameView> t = Parse(in, tight);
  if (t.ok()) {
    FUZZ_CHECK(f.ok(), "tight limits accepted a frame the default limits refuse");
    FUZZ_CHECK(t->type == f->type && t->header == f->header && t->payload == f->payload,
               "the limits changed how a frame is read");
  } else {
    FUZZ_CHECK(t.status().code() == Code::kProtocol, Describe(t.status()));
  }
  if (!f.ok()) {
    FUZZ_CHECK(f.status().code() == Code::kProtocol, Describe(f.status()));
    return;
  }
  FUZZ_CHECK(f->version == kProtocolVersion, "accepted another protocol version");
  FUZZ_CHECK(
      static_cast<uint16_t>(f->type) >= 1 && static_cast<uint16_t>(f->type) <= kMaxMessageType,
      "accepted an unknown message type");
  FUZZ_CHECK(f->header.data() == in.data() + kFrameHeaderBytes &&
                 f->payload.data() == f->header.data() + f->header.size() &&
                 kFrameHeaderBytes + f->header.size() + f->payload.size() == in.size(),
             "header/payload views do not tile the frame");
  FUZZ_CHECK(f->header.size() <= kMaxHeaderBytes && f->payload.size() <= kPreWelcomePayloadBytes,
             "views exceed the limits");
  AllMessages::DecodeAll(*f);
}

// Drives both assemblers as the worker does; see frame_format.h.
class TransferDriver {
 public:
  void Run(std::string_view in) {
    ByteReader r(in);
    (void)r.U8();  // flags, reserved
    const uint64_t round = r.U64();
    const uint64_t chunk_total = r.U32() % (kMaxTransferBytes + 1);
    chunk_bytes_ = r.U32();
    const uint64_t model_total = r.U32();
    StartWeights(round, chunk_total);
    StartModel(model_total);
    while (!r.empty()) {
      const size_t len = static_cast<size_t>(r.Le(3));
      OnFrame(r.Bytes(len));
    }
  }

 private:
  void StartWeights(uint64_t round, uint64_t total) {
    Status st;
    {
      AllocationCap cap(kAssemblerCap, "ChunkAssembler::Start");
      st = chunks_.Start(round, total, chunk_bytes_);
    }
    const bool valid = chunk_bytes_ != 0 && chunk_bytes_ % 4 == 0 && total % 4 == 0;
    FUZZ_CHECK(st.ok() == valid, "ChunkAssembler::Start: " + Describe(st));
    FUZZ_CHECK(st.ok() || st.code() == Code::kInvalidArgument, Describe(st));
    FUZZ_CHECK(chunks_.active() == st.ok(), "ChunkAssembler active() after Start");
    chunk_total_ = total;
    weights_chunk_bytes_ = chunk_bytes_;  // a later Welcome does not change this transfer's
    chunk_shadow_.clear();
    if (st.ok() && total == 0) FUZZ_CHECK(chunks_.complete(), "an empty transfer is complete");
  }

  void StartModel(uint64_t total) {
    Status st;
    {
      AllocationCap cap(kAssemblerCap, "ModelFileAssembler::Start");
      st = model_.Start(total, chunk_bytes_, kMaxTransferBytes);
    }
    const bool valid = total > 0 && total <= kMaxTransferBytes && chunk_bytes_ != 0;
    FUZZ_CHECK(st.ok() == valid, "ModelFileAssembler::Start: " + Describe(st));
    FUZZ_CHECK(st.ok() || st.code() == Code::kInvalidArgument, Describe(st));
    FUZZ_CHECK(model_.active() == st.ok(), "ModelFileAssembler active() after Start");
    model_total_ = total;
    model_shadow_.clear();
  }

  void OnFrame(std::string_view frame) {
    Result<FrameView> f = Parse(frame, Limits{});
    if (!f.ok()) return;
    switch (f->type) {
      case MessageType::kWelcome: {
        Result<Welcome> w = Decode<Welcome>(*f);
        if (!w.ok()) return;
        chunk_bytes_ = w->chunk_bytes;
        StartModel(w->model_bytes);
        return;
      }
      case MessageType::kTrainTask: {
        Result<TrainTask> t = Decode<TrainTask>(*f);
        if (t.ok()) StartFromSpec(t->round, t->spec);
        return;
      }
      case MessageType::kEvalTask: {
        Result<EvalTask> t = Decode<EvalTask>(*f);
        if (t.ok()) StartFromSpec(t->round, t->spec);
        return;
      }
      case MessageType::kWeightsChunk: {
        Result<WeightsChunk> c = Decode<WeightsChunk>(*f);
        if (c.ok()) AddChunk(*c, f->payload);
        return;
      }
      case MessageType::kModelFile: {
        Result<ModelFile> m = Decode<ModelFile>(*f);
        if (m.ok()) AddPiece(*m, f->payload);
        return;
      }
      default:
        return;
    }
  }

  void StartFromSpec(uint64_t round, const model::ModelSpec& spec) {
    if (!spec.Validate().ok()) return;
    const int64_t bytes = spec.total_bytes();
    if (bytes <= 0 || static_cast<uint64_t>(bytes) > kMaxTransferBytes) return;
    StartWeights(round, static_cast<uint64_t>(bytes));
  }

  void AddChunk(const WeightsChunk& c, std::string_view payload) {
    const bool was_active = chunks_.active();
    Status st;
    {
      AllocationCap cap(kAssemblerCap, "ChunkAssembler::Add");
      place_next_ = !place_next_;  // every other chunk the way a TLS session places it
      Result<PayloadPlacement> at = place_next_ ? chunks_.Place(c, payload.size())
                                                : Result<PayloadPlacement>(PayloadPlacement{});
      if (place_next_ && at.ok()) {
        FUZZ_CHECK(at->data != nullptr && at->owner != nullptr, "an empty placement");
        std::memcpy(at->data, payload.data(), payload.size());
        st = chunks_.Add(c, std::string_view(at->data, payload.size()), /*placed=*/true);
        FUZZ_CHECK(st.ok(), "a placed chunk was refused: " + Describe(st));
      } else {
        st = chunks_.Add(c, payload);
        if (place_next_) {
          FUZZ_CHECK(!st.ok() && st.message() == at.status().message(),
                     "Place refused a chunk Add took, or for another reason: " +
                         at.status().ToString() + " / " + Describe(st));
        }
      }
    }
    if (!st.ok()) {
      FUZZ_CHECK(st.code() == Code::kProtocol, Describe(st));
      FUZZ_CHECK(chunks_.active() == was_active, "a refused chunk changed the transfer state");
      return;
    }
    FUZZ_CHECK(was_active, "a chunk was accepted without a transfer");
    FUZZ_CHECK(c.offset == chunk_shadow_.size(), "a chunk was accepted at the wrong offset");
    FUZZ_CHECK(!payload.empty() && payload.size() <= weights_chunk_bytes_,
               "a chunk of the wrong size was accepted");
    chunk_shadow_.append(payload);
    FUZZ_CHECK(chunk_shadow_.size() <= chunk_total_, "chunks overflow the transfer");
    if (chunks_.complete()) {
      FUZZ_CHECK(chunk_shadow_.size() == chunk_total_, "transfer complete before its end");
      std::vector<float> v = chunks_.Take();
      FUZZ_CHECK(v.size() * sizeof(float) == chunk_total_, "assembled buffer has the wrong size");
      FUZZ_CHECK(std::memcmp(v.data(), chunk_shadow_.data(), chunk_total_) == 0,
                 "assembled buffer differs from the accepted payloads");
      FUZZ_CHECK(!chunks_.active(), "Take() did not reset the assembler");
      chunk_shadow_.clear();
    }
  }

  void AddPiece(const ModelFile& m, std::string_view payload) {
    const bool was_active = model_.active();
    Status st;
    {
      AllocationCap cap(kAssemblerCap, "ModelFileAssembler::Add");
      st = model_.Add(m, payload);
    }
    if (!st.ok()) {
      FUZZ_CHECK(st.code() == Code::kProtocol, Describe(st));
      FUZZ_CHECK(!model_.active(), "a refused model piece left the transfer active");
      model_shadow_.clear();
      return;
    }
    FUZZ_CHECK(was_active, "a model piece was accepted without a transfer");
    FUZZ_CHECK(m.total_bytes == model_total_ && m.sha256.size() == 32,
               "a model piece with another size or digest was accepted");
    model_shadow_.append(payload);
    FUZZ_CHECK(model_shadow_.size() <= model_total_, "model pieces overflow the file");
    if (model_.complete()) {
      const std::string sha = model_.sha256();
      const std::string file = model_.Take();
      FUZZ_CHECK(file.size() == model_total_, "model file has the wrong size");
      FUZZ_CHECK(file == model_shadow_, "model file differs from the accepted pieces");
      const Digest d = Sha256::Of(file.data(), file.size());
      FUZZ_CHECK(sha == std::string(d.begin(), d.end()), "model file SHA-256 not checked");
      FUZZ_CHECK(!model_.active(), "Take() did not reset the assembler");
      model_shadow_.clear();
    }
  }

  uint32_t chunk_bytes_ = 0;
  ChunkAssembler chunks_;
  bool place_next_ = false;
  uint32_t weights_chunk_bytes_ = 0;  // the chunk size the weights transfer was started with
  uint64_t chunk_total_ = 0;
  std::string chunk_shadow_;
  ModelFileAssembler model_;
  uint64_t model_total_ = 0;
  std::string model_shadow_;
};

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  shoal::fuzz::FuzzOneFrame(in);
  shoal::fuzz::TransferDriver().Run(in);
  return 0;
}
