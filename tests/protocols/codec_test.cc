#include "protocols/codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/messages.h"
#include "tests/testing/allocation_tracker.h"

namespace shoal::protocols {
namespace {

using testing::AllocationScope;

constexpr size_t kHeaderOffset = kFrameHeaderBytes;

// How many fuzzed decodes succeeded / failed, to check that the fuzz reaches both outcomes.
int g_fuzz_decoded = 0;
int g_fuzz_rejected = 0;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void PutLe(std::string& s, size_t pos, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s[pos + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t GetLe(const std::string& s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(s[pos + i])) << (8 * i);
  }
  return v;
}

// Builds a frame by hand from its parts, with the length fields telling the truth.
std::string RawFrame(uint16_t version, uint16_t type, const std::string& header,
                     const std::string& payload) {
  std::string f(kFrameHeaderBytes, '\0');
  std::memcpy(f.data(), "SHL1", 4);
  PutLe(f, 4, version, 2);
  PutLe(f, 6, type, 2);
  PutLe(f, 8, header.size(), 4);
  PutLe(f, 12, payload.size(), 4);
  return f + header + payload;
}

model::ModelSpec TwoTensorSpec() {
  model::ModelSpec spec;
  spec.tensors.push_back({"fc1.weight", model::DType::kFloat32, {200, 784}});
  spec.tensors.push_back({"fc1.bias", model::DType::kFloat32, {200}});
  return spec;
}

TrainTask SampleTrainTask() {
  TrainTask t;
  t.run_id = "run-7f3a";
  t.round = 12;
  t.version = 11;
  t.epochs = 3;
  t.batch_size = 64;
  t.lr = 0.125;
  t.seed = 0xDEADBEEFCAFEull;
  t.deadline_ms = 90000;
  t.spec = TwoTensorSpec();
  t.chunk_count = 153;
  return t;
}

Hello SampleHello() {
  Hello h;
  h.protocol_version = 7;
  h.name = "silo-3";
  h.num_train = 20000;
  h.num_val = 2222;
  h.input_shape = {1, 28, 28};
  h.num_classes = 10;
  return h;
}

// Encodes, parses and decodes `m`, failing the test on any error.
template <class M>
M RoundTrip(const M& m, std::string_view payload = {}, std::string* payload_out = nullptr) {
  const std::string frame = Encode(m, payload);
  Result<FrameView> f = ParseFrame(frame, Limits{});
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  if (!f.ok()) return M{};
  EXPECT_EQ(f->type, M::kType);
  EXPECT_EQ(f->version, kProtocolVersion);
  if (payload_out) *payload_out = std::string(f->payload);
  Result<M> d = Decode<M>(*f);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  if (!d.ok()) return M{};
  return std::move(d).value();
}

// Parses and decodes `frame` as M; returns the failure (expected to be a protocol error).
template <class M>
Status ParseAndDecode(const std::string& frame, const Limits& limits = Limits{}) {
  Result<FrameView> f = ParseFrame(frame, limits);
  if (!f.ok()) return f.status();
  Result<M> d = Decode<M>(*f);
  if (!d.ok()) return d.status();
  return Status::Ok();
}

void ExpectProtocolError(const Status& st, const std::string& needle = "") {
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kProtocol) << st.ToString();
  if (!needle.empty()) {
    EXPECT_TRUE(Contains(st.message(), needle)) << "'" << needle << "' not in: " << st.message();
  }
}

// ---------------------------------------------------------------------------------------------
// Frame layout and round trips.

TEST(CodecTest, FrameLayoutMatchesDocumentation) {
  UploadGrant g;
  g.round = 0x0102030405060708ull;
  const std::string frame = Encode(g, "xyz");
  ASSERT_GE(frame.size(), kFrameHeaderBytes);
  EXPECT_EQ(frame.substr(0, 4), "SHL1");
  EXPECT_EQ(GetLe(frame, 4, 2), kProtocolVersion);
  EXPECT_EQ(GetLe(frame, 6, 2), static_cast<uint16_t>(MessageType::kUploadGrant));
  const uint64_t h = GetLe(frame, 8, 4);
  EXPECT_EQ(GetLe(frame, 12, 4), 3u);
  EXPECT_EQ(frame.size(), kFrameHeaderBytes + h + 3);
  // Cereal portable binary: one endianness byte (1 = little), then the u64 little-endian.
  ASSERT_EQ(h, 9u);
  EXPECT_EQ(frame[kHeaderOffset], 1);
  EXPECT_EQ(GetLe(frame, kHeaderOffset + 1, 8), g.round);
  EXPECT_EQ(frame.substr(frame.size() - 3), "xyz");
}

TEST(CodecTest, HelloRoundTrip) {
  const Hello in = SampleHello();
  const Hello out = RoundTrip(in);
  EXPECT_EQ(out.protocol_version, 7);
  EXPECT_EQ(out.name, in.name);
  EXPECT_EQ(out.num_train, in.num_train);
  EXPECT_EQ(out.num_val, in.num_val);
  EXPECT_EQ(out.input_shape, in.input_shape);
  EXPECT_EQ(out.num_classes, in.num_classes);
}

TEST(CodecTest, WelcomeRoundTrip) {
  Welcome in;
  in.run_id = "run-1";
  in.worker_name = "silo-3-2";
  in.model = "cnn";
  in.num_classes = 47;
  in.heartbeat_ms = 1500;
  in.peer_timeout_ms = 30000;
  in.chunk_bytes = 1u << 20;
  in.model_bytes = (uint64_t{1} << 32) + 7;  // above 4 GiB survives
  const Welcome out = RoundTrip(in);
  EXPECT_EQ(out.run_id, in.run_id);
  EXPECT_EQ(out.worker_name, in.worker_name);
  EXPECT_EQ(out.model, in.model);
  EXPECT_EQ(out.num_classes, in.num_classes);
  EXPECT_EQ(out.heartbeat_ms, in.heartbeat_ms);
  EXPECT_EQ(out.peer_timeout_ms, in.peer_timeout_ms);
  EXPECT_EQ(out.chunk_bytes, in.chunk_bytes);
  EXPECT_EQ(out.model_bytes, in.model_bytes);
}

TEST(CodecTest, ModelFileRoundTripPreservesPayloadBytes) {
  ModelFile in;
  in.index = 2;
  in.count = 3;
  in.total_bytes = 2 * 4096 + 17;
  const Digest d = Sha256::Of("model", 5);
  in.sha256.assign(d.begin(), d.end());
  std::string payload(17, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(250 + i);
  std::string got;
  const ModelFile out = RoundTrip(in, payload, &got);
  EXPECT_EQ(out.index, in.index);
  EXPECT_EQ(out.count, in.count);
  EXPECT_EQ(out.total_bytes, in.total_bytes);
  EXPECT_EQ(out.sha256, in.sha256);
  EXPECT_EQ(got, payload);
  EXPECT_STREQ(MessageTypeName(MessageType::kModelFile), "ModelFile");
  EXPECT_STREQ(MessageTypeName(MessageType::kJoinResponse), "JoinResponse");
  EXPECT_EQ(static_cast<uint16_t>(MessageType::kJoinResponse), kMaxMessageType);
}

TEST(CodecTest, TrainTaskRoundTrip) {
  const TrainTask in = SampleTrainTask();
  const TrainTask out = RoundTrip(in);
  EXPECT_EQ(out.run_id, in.run_id);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.version, in.version);
  EXPECT_EQ(out.epochs, in.epochs);
  EXPECT_EQ(out.batch_size, in.batch_size);
  EXPECT_EQ(out.lr, in.lr);
  EXPECT_EQ(out.seed, in.seed);
  EXPECT_EQ(out.deadline_ms, in.deadline_ms);
  EXPECT_EQ(out.spec, in.spec) << out.spec.Diff(in.spec);
  EXPECT_EQ(out.chunk_count, in.chunk_count);
}

TEST(CodecTest, EvalTaskRoundTrip) {
  EvalTask in;
  in.run_id = "run-2";
  in.round = 4;
  in.version = 4;
  in.spec = TwoTensorSpec();
  in.spec.tensors.push_back({"out.scalar", model::DType::kFloat32, {}});  // rank 0 survives too
  in.chunk_count = 9;
  const EvalTask out = RoundTrip(in);
  EXPECT_EQ(out.run_id, in.run_id);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.version, in.version);
  EXPECT_EQ(out.spec, in.spec) << out.spec.Diff(in.spec);
  EXPECT_EQ(out.chunk_count, in.chunk_count);
}

TEST(CodecTest, WeightsChunkRoundTripPreservesPayloadBytes) {
  WeightsChunk in;
  in.round = 3;
  in.index = 5;
  in.count = 6;
  in.offset = 5ull * 4096;
  std::string payload;
  for (int rep = 0; rep < 4; ++rep) {
    for (int b = 0; b < 256; ++b) payload.push_back(static_cast<char>(b));  // NULs included
  }
  std::string got;
  const WeightsChunk out = RoundTrip(in, payload, &got);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.index, in.index);
  EXPECT_EQ(out.count, in.count);
  EXPECT_EQ(out.offset, in.offset);
  ASSERT_EQ(got.size(), payload.size());
  EXPECT_EQ(std::memcmp(got.data(), payload.data(), payload.size()), 0);
}

TEST(CodecTest, UpdateReadyRoundTrip) {
  UpdateReady in;
  in.run_id = "run-3";
  in.round = 8;
  in.base_version = 7;
  in.num_samples = 6000;
  in.train_loss = 0.4375;
  in.train_seconds = 12.5;
  in.total_bytes = 4ull * 101770;
  const Digest d = Sha256::Of("delta", 5);
  in.sha256.assign(d.begin(), d.end());
  ASSERT_EQ(in.sha256.size(), 32u);
  const UpdateReady out = RoundTrip(in);
  EXPECT_EQ(out.run_id, in.run_id);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.base_version, in.base_version);
  EXPECT_EQ(out.num_samples, in.num_samples);
  EXPECT_EQ(out.train_loss, in.train_loss);
  EXPECT_EQ(out.train_seconds, in.train_seconds);
  EXPECT_EQ(out.total_bytes, in.total_bytes);
  EXPECT_EQ(out.sha256, in.sha256);
}

TEST(CodecTest, UploadGrantRoundTrip) {
  UploadGrant in;
  in.round = 0xFFFFFFFFFFull;
  EXPECT_EQ(RoundTrip(in).round, in.round);
}

TEST(CodecTest, AckRoundTrip) {
  Ack in;
  in.round = 19;
  const Digest d = Sha256::Of("accepted", 8);
  in.sha256.assign(d.begin(), d.end());
  const Ack out = RoundTrip(in);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.sha256, in.sha256);
}

TEST(CodecTest, EvalResultRoundTrip) {
  EvalResult in;
  in.run_id = "run-4";
  in.round = 2;
  in.version = 2;
  in.count = 1000;
  in.loss = 0.3125;
  in.accuracy = 0.875;
  const EvalResult out = RoundTrip(in);
  EXPECT_EQ(out.run_id, in.run_id);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.version, in.version);
  EXPECT_EQ(out.count, in.count);
  EXPECT_EQ(out.loss, in.loss);
  EXPECT_EQ(out.accuracy, in.accuracy);
}

TEST(CodecTest, HeartbeatRoundTrip) {
  Heartbeat in;
  in.unix_ms = 1764339000123ull;
  in.busy = 1;
  const Heartbeat out = RoundTrip(in);
  EXPECT_EQ(out.unix_ms, in.unix_ms);
  EXPECT_EQ(out.busy, in.busy);
}

TEST(CodecTest, ErrorRoundTrip) {
  Error in;
  in.code = ErrorCode::kDuplicate;
  in.round = 6;
  in.message = "update already accepted for round 6";
  const Error out = RoundTrip(in);
  EXPECT_EQ(out.code, ErrorCode::kDuplicate);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.message, in.message);
}

TEST(CodecTest, ShutdownRoundTrip) {
  Shutdown in;
  in.reason = "run finished after 5 rounds";
  EXPECT_EQ(RoundTrip(in).reason, in.reason);
}

TEST(CodecTest, StringLimitIsInclusive) {
  Hello h = SampleHello();
  h.name.assign(kMaxStringBytes, 'n');
  EXPECT_EQ(RoundTrip(h).name, h.name);
  // The encoder does not police limits; the decoder must.
  h.name.push_back('n');
  ExpectProtocolError(ParseAndDecode<Hello>(Encode(h)));
}

TEST(CodecTest, DigestLongerThan32BytesIsRejected) {
  UpdateReady u;
  u.sha256.assign(33, 'x');
  ExpectProtocolError(ParseAndDecode<UpdateReady>(Encode(u)));
}

TEST(CodecTest, ShapeRankAboveLimitIsRejected) {
  Hello h = SampleHello();
  h.input_shape.assign(kMaxShapeRank + 1, 2);
  ExpectProtocolError(ParseAndDecode<Hello>(Encode(h)));
  TrainTask t = SampleTrainTask();
  t.spec.tensors[0].shape.assign(kMaxShapeRank + 1, 2);
  ExpectProtocolError(ParseAndDecode<TrainTask>(Encode(t)));
}

TEST(CodecTest, TensorNameAboveLimitIsRejected) {
  TrainTask t = SampleTrainTask();
  t.spec.tensors[0].name.assign(model::SpecLimits::kMaxNameBytes + 1, 'w');
  ExpectProtocolError(ParseAndDecode<TrainTask>(Encode(t)));
}

// ---------------------------------------------------------------------------------------------
// Rejections.

TEST(CodecTest, EveryStrictPrefixOfTrainTaskIsRejected) {
  const std::string frame = Encode(SampleTrainTask());
  ASSERT_TRUE(ParseAndDecode<TrainTask>(frame).ok());
  for (size_t len = 0; len < frame.size(); ++len) {
    SCOPED_TRACE("prefix length " + std::to_string(len));
    ExpectProtocolError(ParseAndDecode<TrainTask>(frame.substr(0, len)));
  }
}

TEST(CodecTest, EveryTruncatedHeaderInAConsistentFrameIsRejected) {
  // The frame lengths tell the truth, but the structured header itself is cut short.
  const std::string frame = Encode(SampleTrainTask());
  const std::string header = frame.substr(kHeaderOffset);
  for (size_t len = 0; len < header.size(); ++len) {
    SCOPED_TRACE("header length " + std::to_string(len));
    const std::string cut =
        RawFrame(kProtocolVersion, static_cast<uint16_t>(MessageType::kTrainTask),
                 header.substr(0, len), "");
    ExpectProtocolError(ParseAndDecode<TrainTask>(cut));
  }
}

TEST(CodecTest, WrongMagicIsRejected) {
  std::string frame = Encode(SampleHello());
  frame[0] = 'X';
  ExpectProtocolError(ParseAndDecode<Hello>(frame), "magic");
  frame = Encode(SampleHello());
  frame[3] = '2';  // "SHL2"
  ExpectProtocolError(ParseAndDecode<Hello>(frame), "magic");
}

TEST(CodecTest, WrongProtocolVersionIsRejected) {
  for (uint16_t v :
       {uint16_t{0}, uint16_t{kProtocolVersion + 1}, uint16_t{0x0100}, uint16_t{0xFFFF}}) {
    SCOPED_TRACE("version " + std::to_string(v));
    std::string frame = Encode(SampleHello());
    PutLe(frame, 4, v, 2);
    ExpectProtocolError(ParseAndDecode<Hello>(frame), "version");
  }
}

TEST(CodecTest, UnknownMessageTypeIsRejected) {
  for (uint16_t type :
       {uint16_t{0}, uint16_t{kMaxMessageType + 1}, uint16_t{99}, uint16_t{0xFFFF}}) {
    SCOPED_TRACE("type " + std::to_string(type));
    std::string frame = Encode(SampleHello());
    PutLe(frame, 6, type, 2);
    Result<FrameView> f = ParseFrame(frame, Limits{});
    ASSERT_FALSE(f.ok());
    ExpectProtocolError(f.status(), "type");
  }
}

TEST(CodecTest, HeaderLengthAboveLimitIsRejected) {
  // A fixed header alone claiming a 4 GiB structured header.
  std::string frame = RawFrame(kProtocolVersion, 1, "", "");
  PutLe(frame, 8, 0xFFFFFFFFu, 4);
  ExpectProtocolError(ParseAndDecode<Hello>(frame));

  // A real frame whose header exceeds a small limit while the frame fits the frame limit.
  Limits small;
  small.max_header_bytes = 8;
  small.max_payload_bytes = 1024;
  const std::string hello = Encode(SampleHello());
  ASSERT_LE(hello.size(), small.max_frame_bytes());
  ExpectProtocolError(ParseAndDecode<Hello>(hello, small), "header length");
}

TEST(CodecTest, PayloadLengthAboveLimitIsRejected) {
  std::string frame = RawFrame(kProtocolVersion, 5, "", "");
  PutLe(frame, 12, 0xFFFFFFFFu, 4);
  ExpectProtocolError(ParseAndDecode<WeightsChunk>(frame));

  Limits small;
  small.max_header_bytes = 1024;
  small.max_payload_bytes = 64;
  const std::string chunk = Encode(WeightsChunk{}, std::string(100, 'p'));
  ASSERT_LE(chunk.size(), small.max_frame_bytes());
  ExpectProtocolError(ParseAndDecode<WeightsChunk>(chunk, small), "payload length");
  // Exactly at the limit is fine.
  const std::string at_limit = Encode(WeightsChunk{}, std::string(64, 'p'));
  EXPECT_TRUE(ParseAndDecode<WeightsChunk>(at_limit, small).ok());
}

TEST(CodecTest, OversizedFrameIsRejected) {
  Limits small;
  small.max_header_bytes = 32;
  small.max_payload_bytes = 64;
  const std::string frame = Encode(WeightsChunk{}, std::string(200, 'p'));
  ASSERT_GT(frame.size(), small.max_frame_bytes());
  ExpectProtocolError(ParseAndDecode<WeightsChunk>(frame, small), "exceeds");
}

TEST(CodecTest, LengthsThatDisagreeWithFrameSizeAreRejected) {
  const std::string good = Encode(SampleHello(), "payload!");
  const uint64_t h = GetLe(good, 8, 4);
  const uint64_t p = GetLe(good, 12, 4);
  ASSERT_TRUE(ParseAndDecode<Hello>(good).ok());

  struct Case {
    const char* what;
    uint64_t h, p;
  };
  for (const Case& c :
       {Case{"header +1", h + 1, p}, Case{"header -1", h - 1, p}, Case{"payload +1", h, p + 1},
        Case{"payload -1", h, p - 1}, Case{"header +1000", h + 1000, p}, Case{"both 0", 0, 0}}) {
    SCOPED_TRACE(c.what);
    std::string frame = good;
    PutLe(frame, 8, c.h, 4);
    PutLe(frame, 12, c.p, 4);
    ExpectProtocolError(ParseAndDecode<Hello>(frame), "disagree");
  }
  // Appending or dropping a byte of the frame without touching the lengths.
  ExpectProtocolError(ParseAndDecode<Hello>(good + "x"), "disagree");
  ExpectProtocolError(ParseAndDecode<Hello>(good.substr(0, good.size() - 1)), "disagree");
}

TEST(CodecTest, LengthsShiftedBetweenHeaderAndPayloadAreRejected) {
  // The total still matches the frame size, so only Decode can notice.
  const std::string good = Encode(SampleHello(), "payload!");
  const uint64_t h = GetLe(good, 8, 4);
  const uint64_t p = GetLe(good, 12, 4);
  std::string shorter = good;  // header loses its last byte to the payload
  PutLe(shorter, 8, h - 1, 4);
  PutLe(shorter, 12, p + 1, 4);
  ExpectProtocolError(ParseAndDecode<Hello>(shorter));
  std::string longer = good;  // header swallows the first payload byte
  PutLe(longer, 8, h + 1, 4);
  PutLe(longer, 12, p - 1, 4);
  ExpectProtocolError(ParseAndDecode<Hello>(longer), "trailing");
}

TEST(CodecTest, DecodingAsWrongTypeIsRejected) {
  const std::string frame = Encode(SampleHello());
  Result<FrameView> f = ParseFrame(frame, Limits{});
  ASSERT_TRUE(f.ok());
  Result<Welcome> w = Decode<Welcome>(*f);
  ASSERT_FALSE(w.ok());
  ExpectProtocolError(w.status(), "expected Welcome");
  Result<TrainTask> t = Decode<TrainTask>(*f);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kProtocol);
}

TEST(CodecTest, TrailingBytesInHeaderAreRejected) {
  for (int extra : {1, 7}) {
    SCOPED_TRACE("extra bytes " + std::to_string(extra));
    UploadGrant g;
    g.round = 4;
    const std::string frame = Encode(g);
    const std::string header = frame.substr(kHeaderOffset) + std::string(extra, '\0');
    const std::string bad =
        RawFrame(kProtocolVersion, static_cast<uint16_t>(MessageType::kUploadGrant), header, "");
    ExpectProtocolError(ParseAndDecode<UploadGrant>(bad), "trailing");
  }
}

TEST(CodecTest, EmptyHeaderIsRejected) {
  // Even a message with no fields carries the endianness byte.
  const std::string frame =
      RawFrame(kProtocolVersion, static_cast<uint16_t>(MessageType::kUploadGrant), "", "");
  ExpectProtocolError(ParseAndDecode<UploadGrant>(frame));
}

TEST(CodecTest, AllocationTrackingWorks) {
  // Guards the two tests below: the hook must see a large allocation when there is one.
  AllocationScope scope;
  auto big = std::make_unique<char[]>(size_t{4} << 20);
  big[0] = 1;
  EXPECT_GE(scope.max_allocation(), size_t{4} << 20);
}

TEST(CodecTest, HugeStringLengthIsRejectedWithoutAllocating) {
  Hello h = SampleHello();
  std::string frame = Encode(h);
  // Header layout: [0] endianness flag, [1..2] protocol_version, [3..10] name length, name...
  constexpr size_t kNameLen = kHeaderOffset + 3;
  ASSERT_EQ(frame[kHeaderOffset], 1);
  ASSERT_EQ(GetLe(frame, kHeaderOffset + 1, 2), h.protocol_version);
  ASSERT_EQ(GetLe(frame, kNameLen, 8), h.name.size());
  ASSERT_EQ(frame.substr(kNameLen + 8, h.name.size()), h.name);
  PutLe(frame, kNameLen, uint64_t{1} << 40, 8);

  Result<FrameView> f = ParseFrame(frame, Limits{});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  size_t max_alloc = 0;
  Status st;
  {
    AllocationScope scope;
    Result<Hello> d = Decode<Hello>(*f);
    st = d.status();
    max_alloc = scope.max_allocation();
  }
  ExpectProtocolError(st, "exceeds limit");
  EXPECT_LT(max_alloc, size_t{1} << 20) << "decoder allocated from the claimed length";
}

TEST(CodecTest, HugeTensorCountIsRejectedWithoutAllocating) {
  TrainTask t = SampleTrainTask();
  std::string frame = Encode(t);
  // [0] flag, [1..8] run_id length, run_id, round, version (u64), epochs, batch_size (u32), lr
  // (f64), seed (u64), deadline_ms (u32), then the u64 tensor count.
  const size_t count_pos = kHeaderOffset + 1 + 8 + t.run_id.size() + 8 + 8 + 4 + 4 + 8 + 8 + 4;
  ASSERT_EQ(GetLe(frame, kHeaderOffset + 1, 8), t.run_id.size());
  ASSERT_EQ(GetLe(frame, count_pos, 8), t.spec.tensors.size());
  PutLe(frame, count_pos, 1000000000ull, 8);

  Result<FrameView> f = ParseFrame(frame, Limits{});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  size_t max_alloc = 0;
  Status st;
  {
    AllocationScope scope;
    Result<TrainTask> d = Decode<TrainTask>(*f);
    st = d.status();
    max_alloc = scope.max_allocation();
  }
  ExpectProtocolError(st, "tensor count");
  EXPECT_LT(max_alloc, size_t{1} << 20) << "decoder allocated from the claimed count";
}

TEST(CodecTest, HugeShapeRankIsRejected) {
  Hello h = SampleHello();
  std::string frame = Encode(h);
  // After the name: num_train, num_val (i64), then the u64 rank of input_shape.
  const size_t rank_pos = kHeaderOffset + 3 + 8 + h.name.size() + 8 + 8;
  ASSERT_EQ(GetLe(frame, rank_pos, 8), h.input_shape.size());
  PutLe(frame, rank_pos, ~uint64_t{0}, 8);
  ExpectProtocolError(ParseAndDecode<Hello>(frame));
}

// Decodes `view` as M. A failure must be a ProtocolError; a success must re-encode to a frame
// that decodes again and re-encodes to the same bytes (decoding produced a coherent message).
template <class M>
void CheckDecodeIsClean(FrameView view) {
  view.type = M::kType;
  Result<M> d = Decode<M>(view);
  if (!d.ok()) {
    ++g_fuzz_rejected;
    ASSERT_EQ(d.status().code(), Code::kProtocol) << d.status().ToString();
    return;
  }
  ++g_fuzz_decoded;
  const std::string again = Encode(*d, view.payload);
  Result<FrameView> f2 = ParseFrame(again, Limits{});
  ASSERT_TRUE(f2.ok()) << f2.status().ToString();
  Result<M> d2 = Decode<M>(*f2);
  ASSERT_TRUE(d2.ok()) << d2.status().ToString();
  ASSERT_EQ(Encode(*d2, f2->payload), again);
}

void CheckAllTypes(const FrameView& view) {
  CheckDecodeIsClean<Hello>(view);
  CheckDecodeIsClean<Welcome>(view);
  CheckDecodeIsClean<TrainTask>(view);
  CheckDecodeIsClean<EvalTask>(view);
  CheckDecodeIsClean<WeightsChunk>(view);
  CheckDecodeIsClean<UpdateReady>(view);
  CheckDecodeIsClean<UploadGrant>(view);
  CheckDecodeIsClean<Ack>(view);
  CheckDecodeIsClean<EvalResult>(view);
  CheckDecodeIsClean<Heartbeat>(view);
  CheckDecodeIsClean<Error>(view);
  CheckDecodeIsClean<Shutdown>(view);
  CheckDecodeIsClean<ModelFile>(view);
}

// Runs a frame through ParseFrame, then (when it parses) through every decoder.
void Fuzz(const std::string& frame) {
  Result<FrameView> f = ParseFrame(frame, Limits{});
  if (!f.ok()) {
    ASSERT_EQ(f.status().code(), Code::kProtocol) << f.status().ToString();
    return;
  }
  ASSERT_EQ(kFrameHeaderBytes + f->header.size() + f->payload.size(), frame.size());
  CheckAllTypes(*f);
}

TEST(CodecFuzzTest, RandomFramesNeverCrash) {
  g_fuzz_decoded = g_fuzz_rejected = 0;
  std::mt19937 rng(20261128);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<size_t> len(0, 256);
  for (int i = 0; i < 2000; ++i) {
    SCOPED_TRACE("iteration " + std::to_string(i));
    const size_t n = len(rng);
    std::string body(n, '\0');
    for (auto& c : body) c = static_cast<char>(byte(rng));
    std::string frame;
    if (i % 2 == 0) {
      frame = body;  // pure garbage
    } else {
      // A valid fixed header over random structured-header and payload bytes, so the
      // decoders (not just ParseFrame) see the garbage.
      const size_t h = n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n)(rng);
      const uint16_t type = static_cast<uint16_t>(1 + (i / 2) % kMaxMessageType);
      frame = RawFrame(kProtocolVersion, type, body.substr(0, h), body.substr(h));
      ASSERT_TRUE(ParseFrame(frame, Limits{}).ok());
    }
    ASSERT_NO_FATAL_FAILURE(Fuzz(frame));
  }
  // Both outcomes were exercised (random 9-byte headers decode as UploadGrant, for example).
  EXPECT_GT(g_fuzz_decoded, 0);
  EXPECT_GT(g_fuzz_rejected, 0);
}

TEST(CodecFuzzTest, MutatedValidFramesNeverCrash) {
  std::mt19937 rng(7);
  Error err;
  err.code = ErrorCode::kBadUpdate;
  err.message = "non-finite value";
  const std::vector<std::string> seeds = {
      Encode(SampleTrainTask()), Encode(SampleHello()), Encode(err),
      Encode(WeightsChunk{1, 2, 3, 8192}, std::string(64, 'w'))};
  for (size_t s = 0; s < seeds.size(); ++s) {
    const std::string& seed = seeds[s];
    std::uniform_int_distribution<size_t> pos(kHeaderOffset, seed.size() - 1);
    std::uniform_int_distribution<size_t> any_pos(0, seed.size() - 1);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_int_distribution<int> flips(1, 4);
    for (int i = 0; i < 1000; ++i) {
      SCOPED_TRACE("seed frame " + std::to_string(s) + ", mutation " + std::to_string(i));
      std::string frame = seed;
      const int k = flips(rng);
      for (int j = 0; j < k; ++j) {
        // Mostly mutate the structured header; sometimes the fixed header too.
        const size_t p = (i % 8 == 0) ? any_pos(rng) : pos(rng);
        frame[p] = static_cast<char>(byte(rng));
      }
      ASSERT_NO_FATAL_FAILURE(Fuzz(frame));
      // Also with a truncated / extended structured header and consistent lengths.
      const std::string header = frame.substr(kHeaderOffset);
      const size_t cut = std::uniform_int_distribution<size_t>(0, header.size())(rng);
      ASSERT_NO_FATAL_FAILURE(Fuzz(RawFrame(kProtocolVersion, 3, header.substr(0, cut), "")));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Chunking.

TEST(ChunkTest, ChunkCountEdgeCases) {
  EXPECT_EQ(ChunkCount(0, 4096), 0u);
  EXPECT_EQ(ChunkCount(1, 4096), 1u);
  EXPECT_EQ(ChunkCount(4095, 4096), 1u);
  EXPECT_EQ(ChunkCount(4096, 4096), 1u);
  EXPECT_EQ(ChunkCount(4097, 4096), 2u);
  EXPECT_EQ(ChunkCount(3 * 4096, 4096), 3u);
  EXPECT_EQ(ChunkCount(40004, 4096), 10u);
  EXPECT_EQ(ChunkCount(uint64_t{1} << 32, kMaxChunkBytes), 64u);
}

// A chunk in pieces is the same frame as EncodeChunk's, its payload a view of the caller's
// buffer (nothing copied).
TEST(ChunkTest, ChunkPiecesAreTheChunkFrameWithThePayloadInPlace) {
  std::vector<float> data(10000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i) * 0.5f;
  const uint64_t bytes = data.size() * sizeof(float);
  for (uint32_t i = 0; i < ChunkCount(bytes, 4096); ++i) {
    const FramePieces f = EncodeChunkPieces(3, data.data(), bytes, 4096, i);
    EXPECT_EQ(f.payload.data(), reinterpret_cast<const char*>(data.data()) + uint64_t{i} * 4096);
    EXPECT_EQ(f.head + std::string(f.payload), EncodeChunk(3, data.data(), bytes, 4096, i));
  }
}

TEST(ChunkTest, EncodeChunksOfNothingIsEmpty) {
  float unused = 0;
  EXPECT_TRUE(EncodeChunks(1, &unused, 0, 4096).empty());
  ChunkAssembler a;
  ASSERT_TRUE(a.Start(1, 0, 4096).ok());
  EXPECT_TRUE(a.complete());
  EXPECT_TRUE(a.Take().empty());
}

// Feeds encoded chunk frames to `a` through the full parse/decode path.
Status Feed(ChunkAssembler& a, const std::string& frame) {
  Limits limits;
  limits.max_payload_bytes = 4096;
  Result<FrameView> f = ParseFrame(frame, limits);
  if (!f.ok()) return f.status();
  Result<WeightsChunk> c = Decode<WeightsChunk>(*f);
  if (!c.ok()) return c.status();
  return a.Add(*c, f->payload);
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(ChunkTest, ChunksReassembleExactly) {
  std::vector<float> data = RandomFloats(10001, 1);
  data[0] = -0.0f;
  data[1] = std::nanf("");
  data[2] = std::numeric_limits<float>::denorm_min();
  const uint64_t bytes = data.size() * sizeof(float);
  const std::vector<std::string> frames = EncodeChunks(9, data.data(), bytes, 4096);
  ASSERT_EQ(frames.size(), 10u);
  ASSERT_EQ(frames.size(), ChunkCount(bytes, 4096));

  ChunkAssembler a;
  ASSERT_TRUE(a.Start(9, bytes, 4096).ok());
  EXPECT_TRUE(a.active());
  EXPECT_EQ(a.round(), 9u);
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_FALSE(a.complete()) << "complete before chunk " << i;
    Status st = Feed(a, frames[i]);
    ASSERT_TRUE(st.ok()) << "chunk " << i << ": " << st.ToString();
  }
  EXPECT_TRUE(a.complete());
  const std::vector<float> out = a.Take();
  ASSERT_EQ(out.size(), data.size());
  EXPECT_EQ(std::memcmp(out.data(), data.data(), bytes), 0);
  EXPECT_FALSE(a.active());
}

TEST(ChunkTest, ExactMultipleReassembles) {
  const std::vector<float> data = RandomFloats(3 * 1024, 2);
  const uint64_t bytes = data.size() * sizeof(float);
  const auto frames = EncodeChunks(1, data.data(), bytes, 4096);
  ASSERT_EQ(frames.size(), 3u);
  ChunkAssembler a;
  ASSERT_TRUE(a.Start(1, bytes, 4096).ok());
  for (const auto& f : frames) ASSERT_TRUE(Feed(a, f).ok());
  ASSERT_TRUE(a.complete());
  EXPECT_EQ(a.Take(), data);
}

class ChunkRejectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = RandomFloats(10001, 3);
    bytes_ = data_.size() * sizeof(float);
    ASSERT_TRUE(a_.Start(5, bytes_, 4096).ok());
  }
  // A chunk as EncodeChunks would build it.
  WeightsChunk Chunk(uint32_t i) const {
    WeightsChunk c;
    c.round = 5;
    c.index = i;
    c.count = ChunkCount(bytes_, 4096);
    c.offset = uint64_t{i} * 4096;
    return c;
  }
  std::string_view Payload(uint32_t i) const {
    const uint64_t off = uint64_t{i} * 4096;
    return std::string_view(reinterpret_cast<const char*>(data_.data()) + off,
                            std::min<uint64_t>(4096, bytes_ - off));
  }

  std::vector<float> data_;
  uint64_t bytes_ = 0;
  ChunkAssembler a_;
};

TEST_F(ChunkRejectTest, OutOfOrderIndex) {
  ExpectProtocolError(a_.Add(Chunk(1), Payload(1)), "out of order");
  ASSERT_TRUE(a_.Add(Chunk(0), Payload(0)).ok());
  ExpectProtocolError(a_.Add(Chunk(0), Payload(0)), "out of order");  // repeated
  ExpectProtocolError(a_.Add(Chunk(2), Payload(2)), "out of order");  // skipped one
}

TEST_F(ChunkRejectTest, WrongCount) {
  WeightsChunk c = Chunk(0);
  c.count = 11;
  ExpectProtocolError(a_.Add(c, Payload(0)));
}

TEST_F(ChunkRejectTest, WrongRound) {
  WeightsChunk c = Chunk(0);
  c.round = 4;
  ExpectProtocolError(a_.Add(c, Payload(0)), "round");
}

TEST_F(ChunkRejectTest, WrongOffset) {
  WeightsChunk c = Chunk(0);
  c.offset = 4;
  ExpectProtocolError(a_.Add(c, Payload(0)), "offset");
  ASSERT_TRUE(a_.Add(Chunk(0), Payload(0)).ok());
  c = Chunk(1);
  c.offset = 0;
  ExpectProtocolError(a_.Add(c, Payload(1)), "offset");
}

TEST_F(ChunkRejectTest, WrongPayloadSize) {
  ExpectProtocolError(a_.Add(Chunk(0), Payload(0).substr(0, 4092)));
  ExpectProtocolError(a_.Add(Chunk(0), std::string(4100, 'x')));
  ExpectProtocolError(a_.Add(Chunk(0), std::string_view()));
  for (uint32_t i = 0; i < 9; ++i) ASSERT_TRUE(a_.Add(Chunk(i), Payload(i)).ok());
  // The last chunk is short (40004 - 9 * 4096 = 3140 bytes): a full-size one is refused.
  ASSERT_EQ(Payload(9).size(), 3140u);
  ExpectProtocolError(a_.Add(Chunk(9), std::string(4096, 'x')));
  ASSERT_TRUE(a_.Add(Chunk(9), Payload(9)).ok());
  EXPECT_TRUE(a_.complete());
}

TEST_F(ChunkRejectTest, ChunkAfterCompletionIsRejected) {
  for (uint32_t i = 0; i < 10; ++i) ASSERT_TRUE(a_.Add(Chunk(i), Payload(i)).ok());
  ASSERT_TRUE(a_.complete());
  ExpectProtocolError(a_.Add(Chunk(9), Payload(9)));  // replay of the last chunk
  ExpectProtocolError(a_.Add(Chunk(0), Payload(0)));
  EXPECT_TRUE(a_.complete());
  EXPECT_EQ(a_.Take(), data_);
  // An extra chunk with index == count is not sent here: on this size (not a multiple of the
  // chunk size) it would be written past the buffer. ExtraChunkAfterCompletionOnExactMultiple
  // shows the same hole where the write is zero bytes long.
}

TEST(ChunkTest, ExtraChunkAfterCompletionOnExactMultipleIsRejected) {
  const std::vector<float> data = RandomFloats(2 * 1024, 4);
  const uint64_t bytes = data.size() * sizeof(float);
  ChunkAssembler a;
  ASSERT_TRUE(a.Start(1, bytes, 4096).ok());
  for (const auto& f : EncodeChunks(1, data.data(), bytes, 4096)) ASSERT_TRUE(Feed(a, f).ok());
  ASSERT_TRUE(a.complete());
  // A chunk claiming index == count (2/2), at offset == total_bytes, with an empty payload.
  WeightsChunk extra;
  extra.round = 1;
  extra.index = 2;
  extra.count = 2;
  extra.offset = bytes;
  // Once complete, index == count must not pass (total_bytes - offset would underflow when the
  // total is not a multiple of the chunk size: a heap overflow).
  const char* end = reinterpret_cast<const char*>(data.data()) + bytes;
  ExpectProtocolError(a.Add(extra, std::string_view(end, 0)));
  EXPECT_TRUE(a.complete()) << "an extra chunk must not un-complete a finished transfer";
}

TEST(ChunkTest, ChunkWithoutStartIsRejected) {
  ChunkAssembler a;
  EXPECT_FALSE(a.active());
  EXPECT_FALSE(a.complete());
  WeightsChunk c;
  c.count = 1;
  ExpectProtocolError(a.Add(c, std::string(16, 'x')));
}

TEST(ChunkTest, ChunkAfterTakeOrResetIsRejected) {
  const std::vector<float> data = RandomFloats(100, 5);
  const uint64_t bytes = data.size() * sizeof(float);
  const auto frames = EncodeChunks(2, data.data(), bytes, 4096);
  ASSERT_EQ(frames.size(), 1u);
  ChunkAssembler a;
  ASSERT_TRUE(a.Start(2, bytes, 4096).ok());
  ASSERT_TRUE(Feed(a, frames[0]).ok());
  EXPECT_EQ(a.Take(), data);
  ExpectProtocolError(Feed(a, frames[0]));
  ASSERT_TRUE(a.Start(2, bytes, 4096).ok());
  a.Reset();
  EXPECT_FALSE(a.active());
  ExpectProtocolError(Feed(a, frames[0]));
}

TEST(ChunkTest, StartRestartsATransfer) {
  const std::vector<float> data = RandomFloats(3000, 6);
  const uint64_t bytes = data.size() * sizeof(float);
  const auto frames = EncodeChunks(3, data.data(), bytes, 4096);
  ASSERT_EQ(frames.size(), 3u);
  ChunkAssembler a;
  ASSERT_TRUE(a.Start(3, bytes, 4096).ok());
  ASSERT_TRUE(Feed(a, frames[0]).ok());
  ASSERT_TRUE(a.Start(3, bytes, 4096).ok());  // e.g. a newer task superseding the transfer
  ExpectProtocolError(Feed(a, frames[1]));
  for (const auto& f : frames) ASSERT_TRUE(Feed(a, f).ok());
  EXPECT_EQ(a.Take(), data);
}

TEST(ChunkTest, StartRejectsSizesThatAreNotWholeFloatsOrEmptyChunks) {
  ChunkAssembler a;
  EXPECT_FALSE(a.Start(1, 4096, 0).ok());
  EXPECT_FALSE(a.Start(1, 4098, 4096).ok());
  EXPECT_FALSE(a.Start(1, 4096, 4098).ok());
  EXPECT_FALSE(a.active());
  EXPECT_EQ(ChunkCount(100, 0), 0u);
}

// A chunk decrypted in place (placement.h): Place() says where, after Add's checks; the chunk
// counts once Add() is given the placed payload, and nothing is copied.
TEST_F(ChunkRejectTest, PlacedChunksAssembleWithoutACopy) {
  for (uint32_t i = 0; i < 10; ++i) {
    if (i % 3 == 2) {  // some copied in as before
      ASSERT_TRUE(a_.Add(Chunk(i), Payload(i)).ok());
      continue;
    }
    Result<PayloadPlacement> at = a_.Place(Chunk(i), Payload(i).size());
    ASSERT_TRUE(at.ok()) << at.status().ToString();
    ASSERT_NE(at->data, nullptr);
    ASSERT_NE(at->owner, nullptr);
    std::memcpy(at->data, Payload(i).data(), Payload(i).size());  // what the session does
    EXPECT_FALSE(a_.complete());
    ASSERT_TRUE(a_.Add(Chunk(i), std::string_view(at->data, Payload(i).size()), true).ok());
  }
  ASSERT_TRUE(a_.complete());
  EXPECT_EQ(a_.Take(), data_);
}

TEST_F(ChunkRejectTest, PlaceMakesAddsChecks) {
  WeightsChunk c = Chunk(0);
  c.round = 4;
  ExpectProtocolError(a_.Place(c, 4096).status(), "round");
  ExpectProtocolError(a_.Place(Chunk(1), 4096).status(), "out of order");
  ExpectProtocolError(a_.Place(Chunk(0), 4092).status(), "4092 bytes");
  c = Chunk(0);
  c.offset = 4;
  ExpectProtocolError(a_.Place(c, 4096).status(), "offset");
  for (uint32_t i = 0; i < 10; ++i) ASSERT_TRUE(a_.Add(Chunk(i), Payload(i)).ok());
  ExpectProtocolError(a_.Place(Chunk(9), 3140).status(), "complete");
  ChunkAssembler idle;
  ExpectProtocolError(idle.Place(Chunk(0), 4096).status(), "without a transfer");
}

// What a payload placer asks: the place of the next WeightsChunk's payload, none for any other
// frame head (read whole then, and refused by Add with its reason).
TEST_F(ChunkRejectTest, PlaceFrameAnswersForTheNextChunkOnly) {
  auto head = [&](uint32_t i) {
    const FramePieces f = EncodeChunkPieces(5, data_.data(), bytes_, 4096, i);
    return f.head;
  };
  Limits limits;
  limits.max_payload_bytes = 4096;
  PayloadPlacement at = a_.PlaceFrame(head(0), 4096, limits);
  ASSERT_NE(at.data, nullptr);
  std::memcpy(at.data, Payload(0).data(), 4096);
  ASSERT_TRUE(a_.Add(Chunk(0), std::string_view(at.data, 4096), true).ok());
  EXPECT_EQ(a_.PlaceFrame(head(2), 4096, limits).data, nullptr);  // out of order
  EXPECT_EQ(a_.PlaceFrame(head(1), 4092, limits).data, nullptr);  // lengths disagree
  limits.max_payload_bytes = 1024;
  EXPECT_EQ(a_.PlaceFrame(head(1), 4096, limits).data, nullptr);  // over the limit
  limits.max_payload_bytes = 4096;
  const std::string heartbeat = Encode(Heartbeat{});
  EXPECT_EQ(a_.PlaceFrame(heartbeat, 0, limits).data, nullptr);  // not a chunk
  EXPECT_NE(a_.PlaceFrame(head(1), 4096, limits).data, nullptr);
  a_.Reset();
  EXPECT_EQ(a_.PlaceFrame(head(1), 4096, limits).data, nullptr);  // no transfer
}

// A placed payload counts only for the transfer and the chunk that placed it.
TEST_F(ChunkRejectTest, StalePlacedPayloadsAreRefused) {
  Result<PayloadPlacement> at = a_.Place(Chunk(0), 4096);
  ASSERT_TRUE(at.ok());
  // Not the placed bytes (a copy elsewhere) claimed as placed.
  const std::string copy(Payload(0));
  ExpectProtocolError(a_.Add(Chunk(0), copy, true), "no longer in progress");
  // The transfer restarts while the payload is being decrypted: the old buffer stays allocated
  // (the session may still write into it) and its delivery is refused.
  ASSERT_TRUE(a_.Start(5, bytes_, 4096).ok());
  std::memcpy(at->data, Payload(0).data(), 4096);  // a late write lands in the old buffer
  ExpectProtocolError(a_.Add(Chunk(0), std::string_view(at->data, 4096), true),
                      "no longer in progress");
  // A placement, then the same chunk read whole and copied in: the placement is used up.
  Result<PayloadPlacement> again = a_.Place(Chunk(0), 4096);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(a_.Add(Chunk(0), Payload(0)).ok());
  ExpectProtocolError(a_.Add(Chunk(1), std::string_view(again->data + 4096, 4096), true));
  a_.Reset();
  ExpectProtocolError(a_.Add(Chunk(0), std::string_view(again->data, 4096), true));
  EXPECT_EQ(again->owner.use_count(), 1);  // the assembler let go; only the placement holds it
}

TEST(FrameTest, SplitFrameAndParseFrameHead) {
  WeightsChunk c;
  c.round = 3;
  c.count = 1;
  const std::string payload(1000, 'p');
  const std::string frame = Encode(c, payload);
  const size_t head = frame.size() - payload.size();
  std::optional<FrameSplit> split = SplitFrame(frame.substr(0, kFrameHeaderBytes), frame.size());
  ASSERT_TRUE(split.has_value());
  EXPECT_EQ(split->head_bytes, head);
  EXPECT_EQ(split->payload_bytes, payload.size());
  EXPECT_FALSE(SplitFrame(frame.substr(0, 15), frame.size()).has_value());
  EXPECT_FALSE(SplitFrame(frame.substr(0, 16), frame.size() + 1).has_value());
  std::string bad = frame;
  bad[0] = 'x';
  EXPECT_FALSE(SplitFrame(bad, bad.size()).has_value());
  bad = frame;
  bad[4] = static_cast<char>(bad[4] + 1);
  EXPECT_FALSE(SplitFrame(bad, bad.size()).has_value());

  Limits limits;
  auto f = ParseFrameHead(frame.substr(0, head), payload.size(), limits);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->type, MessageType::kWeightsChunk);
  EXPECT_TRUE(f->payload.empty());
  EXPECT_EQ(Decode<WeightsChunk>(*f)->round, 3u);
  ExpectProtocolError(ParseFrameHead(frame.substr(0, head - 1), payload.size(), limits).status());
  ExpectProtocolError(ParseFrameHead(frame.substr(0, head), payload.size() + 4, limits).status(),
                      "disagree");
  ExpectProtocolError(
      ParseFrameHead(frame.substr(0, head + 4), payload.size() - 4, limits).status(),
      "does not end where the payload begins");
  limits.max_payload_bytes = 999;
  ExpectProtocolError(ParseFrameHead(frame.substr(0, head), payload.size(), limits).status(),
                      "payload length");
  limits = Limits{};
  auto placed = ParseFrame(frame.substr(0, head), std::string_view(payload), limits);
  ASSERT_TRUE(placed.ok());
  EXPECT_TRUE(placed->payload_placed);
  EXPECT_EQ(placed->payload.data(), payload.data());
  EXPECT_FALSE(ParseFrame(frame, limits)->payload_placed);
}

TEST(ChunkTest, ExtraFullChunkPastTheEndOfAnUnevenTransferIsRejected) {
  // 40004 bytes in 4096-byte chunks: 10 chunks, the last one short. A chunk 10/10 at offset
  // 40960 with a full payload must be refused, not written past the buffer.
  std::vector<float> data(10001, 1.5f);
  const uint64_t bytes = data.size() * sizeof(float);
  ChunkAssembler a;
  ASSERT_TRUE(a.Start(1, bytes, 4096).ok());
  for (const auto& f : EncodeChunks(1, data.data(), bytes, 4096)) ASSERT_TRUE(Feed(a, f).ok());
  ASSERT_TRUE(a.complete());
  WeightsChunk extra;
  extra.round = 1;
  extra.index = 10;
  extra.count = 10;
  extra.offset = 40960;
  std::string payload(4096, 'x');
  ExpectProtocolError(a.Add(extra, payload));
  EXPECT_EQ(a.Take(), data);
}

// ---------------------------------------------------------------------------------------------
// Model file transfer.

Status FeedModel(ModelFileAssembler& a, const std::string& frame) {
  Limits limits;
  limits.max_payload_bytes = 4096;
  Result<FrameView> f = ParseFrame(frame, limits);
  if (!f.ok()) return f.status();
  Result<ModelFile> m = Decode<ModelFile>(*f);
  if (!m.ok()) return m.status();
  return a.Add(*m, f->payload);
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

TEST(ModelFileTest, UnevenFileReassemblesExactly) {
  const std::string file = RandomBytes(3 * 4096 + 5, 1);  // not a multiple of 4
  const auto frames = EncodeModelFile(file, 4096);
  ASSERT_EQ(frames.size(), 4u);
  ModelFileAssembler a;
  ASSERT_TRUE(a.Start(file.size(), 4096, 1 << 20).ok());
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_FALSE(a.complete());
    ASSERT_TRUE(FeedModel(a, frames[i]).ok()) << i;
  }
  ASSERT_TRUE(a.complete());
  const Digest d = Sha256::Of(file.data(), file.size());
  EXPECT_EQ(a.sha256(), std::string(d.begin(), d.end()));
  EXPECT_EQ(a.Take(), file);
  EXPECT_FALSE(a.active());
}

TEST(ModelFileTest, SizeAboveTheCapIsRefusedBeforeAllocating) {
  ModelFileAssembler a;
  AllocationScope scope;
  Status st = a.Start(uint64_t{1} << 40, 4096, uint64_t{256} << 20);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), "1099511627776 bytes")) << st.message();
  EXPECT_FALSE(a.active());
  EXPECT_LT(scope.max_allocation(), 4096u);
  EXPECT_FALSE(a.Start(0, 4096, 1 << 20).ok());
  EXPECT_FALSE(a.Start(100, 0, 1 << 20).ok());
}

TEST(ModelFileTest, PieceAnnouncingAnotherSizeIsRejectedWithoutAllocatingIt) {
  // Welcome announced 5000 bytes; a piece claiming 1 TiB must not make the receiver allocate it.
  ModelFileAssembler a;
  ASSERT_TRUE(a.Start(5000, 4096, 1 << 20).ok());
  ModelFile m;
  m.index = 0;
  m.count = 268435456;
  m.total_bytes = uint64_t{1} << 40;
  m.sha256 = std::string(32, 'x');
  const std::string payload(4096, 'a');
  AllocationScope scope;
  ExpectProtocolError(a.Add(m, payload), "announces 1099511627776 bytes");
  EXPECT_LT(scope.max_allocation(), 4096u);
  EXPECT_FALSE(a.active());
}

TEST(ModelFileTest, OutOfOrderWrongSizeAndWrongDigestAreRejected) {
  const std::string file = RandomBytes(2 * 4096 + 100, 2);
  const auto frames = EncodeModelFile(file, 4096);
  ASSERT_EQ(frames.size(), 3u);
  ModelFileAssembler a;

  ASSERT_TRUE(a.Start(file.size(), 4096, 1 << 20).ok());
  ExpectProtocolError(FeedModel(a, frames[1]), "out of order");
  EXPECT_FALSE(a.active());
  ExpectProtocolError(FeedModel(a, frames[0]), "without a model transfer");

  // A piece whose payload is one byte short.
  ASSERT_TRUE(a.Start(file.size(), 4096, 1 << 20).ok());
  ASSERT_TRUE(FeedModel(a, frames[0]).ok());
  ModelFile m;
  m.index = 1;
  m.count = 3;
  m.total_bytes = file.size();
  const Digest d = Sha256::Of(file.data(), file.size());
  m.sha256.assign(d.begin(), d.end());
  ExpectProtocolError(a.Add(m, std::string_view(file).substr(4096, 4095)), "expected 4096");

  // A piece announcing another digest than the first.
  ASSERT_TRUE(a.Start(file.size(), 4096, 1 << 20).ok());
  ASSERT_TRUE(FeedModel(a, frames[0]).ok());
  m.sha256[0] ^= 1;
  ExpectProtocolError(a.Add(m, std::string_view(file).substr(4096, 4096)), "another digest");

  // Consistent pieces whose bytes do not hash to the announced digest.
  std::string tampered = file;
  tampered[5000] ^= 0x40;
  auto bad = EncodeModelFile(tampered, 4096);
  ASSERT_TRUE(a.Start(file.size(), 4096, 1 << 20).ok());
  ASSERT_TRUE(FeedModel(a, frames[0]).ok());
  // Piece 1 of the tampered file carries the tampered file's digest: different from piece 0's.
  ExpectProtocolError(FeedModel(a, bad[1]), "another digest");
  ModelFile forged;
  forged.index = 1;
  forged.count = 3;
  forged.total_bytes = file.size();
  forged.sha256.assign(d.begin(), d.end());
  ASSERT_TRUE(a.Start(file.size(), 4096, 1 << 20).ok());
  ASSERT_TRUE(FeedModel(a, frames[0]).ok());
  ASSERT_TRUE(a.Add(forged, std::string_view(tampered).substr(4096, 4096)).ok());
  forged.index = 2;
  ExpectProtocolError(a.Add(forged, std::string_view(tampered).substr(8192)), "SHA-256");
  EXPECT_FALSE(a.active());

  // A size different from the one Welcome announced.
  ASSERT_TRUE(a.Start(file.size() + 1, 4096, 1 << 20).ok());
  ExpectProtocolError(FeedModel(a, frames[0]), "announces");
}

TEST(ModelFileTest, PieceAfterCompletionIsRejected) {
  const std::string file = RandomBytes(4096, 3);
  const auto frames = EncodeModelFile(file, 4096);
  ASSERT_EQ(frames.size(), 1u);
  ModelFileAssembler a;
  ASSERT_TRUE(a.Start(file.size(), 4096, 1 << 20).ok());
  ASSERT_TRUE(FeedModel(a, frames[0]).ok());
  ASSERT_TRUE(a.complete());
  ExpectProtocolError(FeedModel(a, frames[0]), "complete");
}

}  // namespace
}  // namespace shoal::protocols
