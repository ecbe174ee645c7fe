// ClientSession driven by hand: frames built with protocols::Encode go in, the frames it queues
// and the events it reports are checked. No sockets, no threads.
#include "protocols/client_session.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "base/sha256.h"
#include "protocols/codec.h"

namespace shoal::protocols {
namespace {

using Kind = ClientEvent::Kind;
using Clock = ClientSession::Clock;
using std::chrono::milliseconds;

constexpr uint32_t kChunkBytes = 16;  // 4 floats: a 10-float model takes 3 chunks

model::ModelSpec TenFloats() {
  model::ModelSpec spec;
  spec.tensors.push_back({"w", model::DType::kFloat32, {2, 4}});
  spec.tensors.push_back({"b", model::DType::kFloat32, {2}});
  return spec;
}

std::vector<float> Ramp(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

Welcome MakeWelcome() {
  Welcome w;
  w.run_id = "run1";
  w.worker_name = "w1";
  w.model = "mlp";
  w.num_classes = 10;
  w.heartbeat_ms = 100;
  w.peer_timeout_ms = 1000;
  w.chunk_bytes = kChunkBytes;
  return w;
}

Error MakeError(ErrorCode code, uint64_t round) {
  Error e;
  e.code = code;
  e.round = round;
  e.message = "because";
  return e;
}

class ClientSessionTest : public ::testing::Test {
 protected:
  ClientSessionTest() : session_(Options()) {}

  static ClientSessionOptions Options() {
    ClientSessionOptions o;
    o.hello.name = "w1";
    o.hello.num_train = 100;
    o.hello.num_val = 10;
    o.hello.input_shape = {1, 28, 28};
    o.hello.num_classes = 10;
    o.hello_timeout_ms = 500;
    return o;
  }

  // Every queued message, each joined to one frame.
  std::vector<std::string> Sent() {
    std::vector<std::string> out;
    while (auto m = session_.NextToSend()) out.push_back(Join(m->head, m->payload));
    return out;
  }
  std::vector<ClientEvent> Events() {
    std::vector<ClientEvent> out;
    while (auto e = session_.NextEvent()) out.push_back(std::move(*e));
    return out;
  }
  static FrameView Parse(const std::string& frame) {
    Limits limits;
    limits.max_payload_bytes = kMaxChunkBytes;
    auto f = ParseFrame(frame, limits);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? *f : FrameView{};
  }
  static MessageType TypeOf(const std::string& frame) { return Parse(frame).type; }
  template <class M>
  static M DecodeAs(const std::string& frame) {
    auto m = Decode<M>(Parse(frame));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? *m : M{};
  }
  template <class M>
  void Feed(const M& m, std::string_view payload = {}) {
    session_.Receive(Encode(m, payload), now_);
  }

  // Connect, Hello out, Welcome in.
  void Admit() {
    session_.Connect(now_);
    auto out = Sent();
    ASSERT_EQ(out.size(), 1u);
    const Hello h = DecodeAs<Hello>(out[0]);
    EXPECT_EQ(h.name, "w1");
    EXPECT_EQ(h.num_train, 100);
    Feed(MakeWelcome());
    auto events = Events();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, Kind::kWelcomed);
    ASSERT_TRUE(session_.admitted());
    EXPECT_EQ(session_.limits().max_payload_bytes, kChunkBytes);
  }

  // A TrainTask for `round` and the chunks of `global`.
  void SendTrainTask(uint64_t round, const std::vector<float>& global) {
    TrainTask t;
    t.run_id = "run1";
    t.round = round;
    t.version = round - 1;
    t.spec = TenFloats();
    t.seed = 7;
    t.chunk_count = ChunkCount(global.size() * 4, kChunkBytes);
    Feed(t);
    for (const auto& c : EncodeChunks(round, global.data(), global.size() * 4, kChunkBytes)) {
      session_.Receive(c, now_);
    }
  }

  // The update of `round` offered from `delta`'s storage.
  UpdateReady Offer(uint64_t round, const std::vector<float>& delta) {
    UpdateReady u;
    u.run_id = "run1";
    u.round = round;
    u.total_bytes = delta.size() * 4;
    const Digest d = Sha256::Of(delta.data(), u.total_bytes);
    u.sha256.assign(d.begin(), d.end());
    session_.OfferUpdate(u, [&delta](uint64_t offset, uint64_t length) {
      return std::string_view(reinterpret_cast<const char*>(delta.data()) + offset, length);
    });
    return u;
  }

  Clock::time_point now_ = Clock::now();
  ClientSession session_;
};

TEST_F(ClientSessionTest, HappyPathRound) {
  Admit();
  const std::vector<float> global = Ramp(10, 1.0f);
  SendTrainTask(3, global);
  auto events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::kTaskAnnounced);
  ASSERT_EQ(events[1].kind, Kind::kTrainTask);
  EXPECT_EQ(events[1].train.round, 3u);
  EXPECT_EQ(events[1].weights.spec, TenFloats());
  EXPECT_EQ(events[1].weights.data, global);
  EXPECT_TRUE(Sent().empty());

  // Trained: the update is announced, granted, sent in chunks from its storage, acknowledged.
  const std::vector<float> delta = Ramp(10, -5.0f);
  const UpdateReady u = Offer(3, delta);
  auto out = Sent();
  ASSERT_EQ(out.size(), 1u);
  const UpdateReady announced = DecodeAs<UpdateReady>(out[0]);
  EXPECT_EQ(announced.round, 3u);
  EXPECT_EQ(announced.sha256, u.sha256);

  UploadGrant g;
  g.round = 3;
  Feed(g);
  events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kUploadGranted);
  // The chunks' payloads are views of the update itself, and the frames are the codec's own.
  std::vector<std::string> chunks;
  const std::vector<std::string> expected =
      EncodeChunks(3, delta.data(), delta.size() * 4, kChunkBytes);
  while (auto m = session_.NextToSend()) {
    const size_t i = chunks.size();
    ASSERT_LT(i, expected.size());
    EXPECT_EQ(m->payload.data(), reinterpret_cast<const char*>(delta.data()) + i * kChunkBytes);
    chunks.push_back(Join(m->head, m->payload));
  }
  EXPECT_EQ(chunks, expected);

  Ack a;
  a.round = 3;
  a.sha256 = u.sha256;
  Feed(a);
  events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kAcked);
  EXPECT_EQ(events[0].round, 3u);
  EXPECT_FALSE(session_.update().has_value());
  // A late grant for the acknowledged update sends nothing.
  Feed(g);
  EXPECT_TRUE(Events().empty());
  EXPECT_TRUE(Sent().empty());
}

TEST_F(ClientSessionTest, AckWithAnotherDigestIsNotTheUpdatesAck) {
  Admit();
  const std::vector<float> delta = Ramp(10, 0.5f);
  Offer(1, delta);
  Sent();
  Ack a;
  a.round = 1;
  a.sha256 = std::string(32, 'x');
  Feed(a);
  EXPECT_TRUE(Events().empty());
  EXPECT_TRUE(session_.update().has_value());
}

TEST_F(ClientSessionTest, UpdateOfferedBeforeWelcomeIsAnnouncedAfterIt) {
  const std::vector<float> delta = Ramp(10, 0.5f);
  Offer(2, delta);
  EXPECT_TRUE(Sent().empty());
  Admit();  // checks Hello went out alone
  auto out = Sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(TypeOf(out[0]), MessageType::kUpdateReady);
  // ... and again after a reconnect, as long as it is not acknowledged.
  session_.Connect(now_);
  Feed(MakeWelcome());
  out = Sent();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(TypeOf(out[0]), MessageType::kHello);
  EXPECT_EQ(TypeOf(out[1]), MessageType::kUpdateReady);
}

TEST_F(ClientSessionTest, UnknownPeerAsksForANewHello) {
  Admit();
  Feed(MakeError(ErrorCode::kUnknownPeer, 0));
  auto events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::kCoordinatorError);
  EXPECT_EQ(events[0].code, ErrorCode::kUnknownPeer);
  EXPECT_EQ(events[1].kind, Kind::kReconnect);
  EXPECT_FALSE(session_.admitted());
  // Nothing more is taken from the old connection; the next one says Hello again.
  Feed(MakeWelcome());
  EXPECT_TRUE(Events().empty());
  session_.Connect(now_);
  auto out = Sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(TypeOf(out[0]), MessageType::kHello);
}

TEST_F(ClientSessionTest, StaleDropsTheUpdate) {
  Admit();
  const std::vector<float> delta = Ramp(10, 0.5f);
  Offer(4, delta);
  Sent();
  Feed(MakeError(ErrorCode::kStale, 3));  // another round's: kept
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kCoordinatorError);
  EXPECT_TRUE(session_.update().has_value());
  Feed(MakeError(ErrorCode::kStale, 4));
  events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].kind, Kind::kUpdateRejected);
  EXPECT_EQ(events[1].code, ErrorCode::kStale);
  EXPECT_EQ(events[1].round, 4u);
  EXPECT_FALSE(session_.update().has_value());
  EXPECT_TRUE(session_.admitted());
  // A grant for it now sends nothing, and a reconnect does not offer it again.
  UploadGrant g;
  g.round = 4;
  Feed(g);
  EXPECT_TRUE(Sent().empty());
}

TEST_F(ClientSessionTest, BadUpdateAndDuplicateDropTheUpdateToo) {
  Admit();
  const std::vector<float> delta = Ramp(10, 0.5f);
  for (ErrorCode code : {ErrorCode::kBadUpdate, ErrorCode::kDuplicate}) {
    Offer(7, delta);
    Sent();
    Feed(MakeError(code, 7));
    auto events = Events();
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[1].kind, Kind::kUpdateRejected);
    EXPECT_EQ(events[1].code, code);
    EXPECT_FALSE(session_.update().has_value());
  }
  // Any other error changes nothing.
  Offer(8, delta);
  Sent();
  Feed(MakeError(ErrorCode::kRunFinished, 8));
  EXPECT_EQ(Events().size(), 1u);
  EXPECT_TRUE(session_.update().has_value());
  EXPECT_TRUE(session_.admitted());
}

TEST_F(ClientSessionTest, NotAdmittedIsFatal) {
  session_.Connect(now_);
  Sent();
  Feed(MakeError(ErrorCode::kRunFinished, 0));  // any other error at Hello: keep waiting
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kCoordinatorError);
  EXPECT_EQ(session_.phase(), ClientSession::Phase::kHello);
  Feed(MakeError(ErrorCode::kNotAdmitted, 0));
  events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kRefused);
  EXPECT_EQ(events[0].status.code(), Code::kRejected);
  EXPECT_EQ(session_.phase(), ClientSession::Phase::kClosed);
  session_.Connect(now_);  // closed for good
  EXPECT_TRUE(Sent().empty());
}

TEST_F(ClientSessionTest, InvalidWelcomeIsFatal) {
  session_.Connect(now_);
  Sent();
  Welcome w = MakeWelcome();
  w.chunk_bytes = 6;  // not a whole number of floats
  Feed(w);
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kRefused);
  EXPECT_EQ(events[0].status.code(), Code::kProtocol);
}

TEST_F(ClientSessionTest, ChunksOutOfOrderAreRefused) {
  Admit();
  const std::vector<float> global = Ramp(10, 1.0f);
  TrainTask t;
  t.round = 2;
  t.spec = TenFloats();
  t.chunk_count = 3;
  Feed(t);
  const auto chunks = EncodeChunks(2, global.data(), 40, kChunkBytes);
  session_.Receive(chunks[1], now_);
  auto events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::kTaskAnnounced);
  EXPECT_EQ(events[1].kind, Kind::kTransferFailed);
  EXPECT_NE(events[1].message.find("out of order"), std::string::npos) << events[1].message;
  // The transfer is over: the rest of its chunks are refused too, and no task completes.
  session_.Receive(chunks[0], now_);
  session_.Receive(chunks[2], now_);
  events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::kTransferFailed);
  EXPECT_EQ(events[1].kind, Kind::kTransferFailed);
}

TEST_F(ClientSessionTest, OversizedChunksAreRefused) {
  Admit();
  TrainTask t;
  t.round = 2;
  t.spec = TenFloats();
  t.chunk_count = 3;
  Feed(t);
  Events();
  // Larger than the Welcome's chunk size: refused by the frame limits.
  WeightsChunk c;
  c.round = 2;
  c.count = 3;
  Feed(c, std::string(kChunkBytes + 4, '\0'));
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kBadFrame);
  // Within the limits but not this chunk's size: the transfer fails.
  Feed(c, std::string(kChunkBytes - 4, '\0'));
  events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kTransferFailed);
}

TEST_F(ClientSessionTest, TaskForAnotherModelIsIgnored) {
  Admit();
  model::ModelSpec mine;
  mine.tensors.push_back({"w", model::DType::kFloat32, {3}});
  session_.set_model_spec(mine);
  SendTrainTask(1, Ramp(10, 0.0f));
  auto events = Events();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::kTaskAnnounced);  // it still supersedes training
  EXPECT_EQ(events[1].kind, Kind::kIgnored);
  for (size_t i = 2; i < events.size(); ++i) EXPECT_EQ(events[i].kind, Kind::kTransferFailed);
}

// A TrainTask whose local-training options are out of range (issue #22: a NaN proximal mu, a
// momentum of 1) is ignored with the field named, never handed to training.
TEST_F(ClientSessionTest, TaskWithHostileTrainingOptionsIsIgnored) {
  Admit();
  for (int which = 0; which < 2; ++which) {
    TrainTask t;
    t.run_id = "run1";
    t.round = 1;
    t.spec = TenFloats();
    t.chunk_count = 1;
    if (which == 0) t.proximal_mu = std::nan("");
    if (which == 1) t.momentum = 1.0;
    Feed(t);
    auto events = Events();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, Kind::kIgnored);
    EXPECT_NE(events[0].message.find(which == 0 ? "proximal_mu" : "momentum"), std::string::npos)
        << events[0].message;
  }
}

TEST_F(ClientSessionTest, EvalTaskThenEvalResult) {
  Admit();
  const std::vector<float> global = Ramp(10, 2.0f);
  EvalTask t;
  t.run_id = "run1";
  t.round = 5;
  t.version = 5;
  t.spec = TenFloats();
  t.chunk_count = 3;
  Feed(t);
  for (const auto& c : EncodeChunks(5, global.data(), 40, kChunkBytes)) session_.Receive(c, now_);
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  ASSERT_EQ(events[0].kind, Kind::kEvalTask);
  EXPECT_EQ(events[0].eval.round, 5u);
  EXPECT_EQ(events[0].weights.data, global);
  EvalResult r;
  r.run_id = "run1";
  r.round = 5;
  r.version = 5;
  r.count = 10;
  r.accuracy = 0.75;
  session_.Send(r);
  auto out = Sent();
  ASSERT_EQ(out.size(), 1u);
  const EvalResult sent = DecodeAs<EvalResult>(out[0]);
  EXPECT_EQ(sent.round, 5u);
  EXPECT_EQ(sent.accuracy, 0.75);
}

TEST_F(ClientSessionTest, PlacedPayloadsLandInTheAssemblyBuffer) {
  Admit();
  const std::vector<float> global = Ramp(10, 3.0f);
  TrainTask t;
  t.round = 6;
  t.spec = TenFloats();
  t.chunk_count = 3;
  Feed(t);
  Events();
  // What a TLS session does with a placer: decrypt the head, ask, decrypt the payload there.
  for (uint32_t i = 0; i < 3; ++i) {
    const FramePieces f = EncodeChunkPieces(6, global.data(), 40, kChunkBytes, i);
    PayloadPlacement p = session_.Place(f.head, f.payload.size());
    ASSERT_NE(p.data, nullptr);
    std::memcpy(p.data, f.payload.data(), f.payload.size());
    Plaintext m;
    m.bytes = f.head;
    m.placed = true;
    m.payload = std::string_view(p.data, f.payload.size());
    m.owner = p.owner;
    session_.Receive(m, now_);
  }
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  ASSERT_EQ(events[0].kind, Kind::kTrainTask);
  EXPECT_EQ(events[0].weights.data, global);
  // Nothing is placed when no transfer waits.
  const FramePieces f = EncodeChunkPieces(6, global.data(), 40, kChunkBytes, 0);
  EXPECT_EQ(session_.Place(f.head, f.payload.size()).data, nullptr);
}

TEST_F(ClientSessionTest, WithoutKeepingPayloadsTransfersAreCheckedAndDropped) {
  ClientSessionOptions o = Options();
  o.keep_payloads = false;
  ClientSession s(o);
  s.Connect(now_);
  s.Receive(Encode(MakeWelcome()), now_);
  TrainTask t;
  t.round = 1;
  t.spec = TenFloats();
  t.chunk_count = 3;
  s.Receive(Encode(t), now_);
  const std::vector<float> global = Ramp(10, 0.0f);
  const auto chunks = EncodeChunks(1, global.data(), 40, kChunkBytes);
  EXPECT_EQ(s.Place(EncodeChunkPieces(1, global.data(), 40, kChunkBytes, 0).head, 16).data,
            nullptr);
  for (const auto& c : chunks) s.Receive(c, now_);
  std::vector<Kind> kinds;
  ClientEvent last{Kind::kIgnored};
  while (auto e = s.NextEvent()) {
    kinds.push_back(e->kind);
    last = std::move(*e);
  }
  EXPECT_EQ(kinds, (std::vector<Kind>{Kind::kWelcomed, Kind::kTaskAnnounced, Kind::kTrainTask}));
  EXPECT_TRUE(last.weights.data.empty());
  // Still checked: a repeated chunk fails the next transfer.
  s.Receive(Encode(t), now_);
  s.Receive(chunks[0], now_);
  s.Receive(chunks[0], now_);
  kinds.clear();
  while (auto e = s.NextEvent()) kinds.push_back(e->kind);
  EXPECT_EQ(kinds, (std::vector<Kind>{Kind::kTaskAnnounced, Kind::kTransferFailed}));
}

TEST_F(ClientSessionTest, ModelFileComesBeforeTasks) {
  session_.Connect(now_);
  Sent();
  const std::string file(40, 'm');
  Welcome w = MakeWelcome();
  w.model = "torchscript";
  w.model_bytes = file.size();
  Feed(w);
  ASSERT_EQ(Events().size(), 1u);
  EXPECT_FALSE(session_.model_ready());
  const auto pieces = EncodeModelFile(file, kChunkBytes);
  ASSERT_EQ(pieces.size(), 3u);
  for (const auto& p : pieces) session_.Receive(p, now_);
  auto events = Events();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[2].kind, Kind::kModelFilePiece);
  ASSERT_EQ(events[3].kind, Kind::kModelFile);
  EXPECT_EQ(events[3].model_file, file);
  EXPECT_TRUE(session_.model_ready());

  // A new connection whose copy loses a piece: reconnect for another; a task before the file
  // is complete asks for a new connection too.
  session_.Connect(now_);
  Feed(w);
  session_.Receive(pieces[1], now_);
  events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].kind, Kind::kModelFileFailed);
  session_.Connect(now_);
  Feed(w);
  SendTrainTask(1, Ramp(10, 0.0f));
  events = Events();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[1].kind, Kind::kReconnect);
}

TEST_F(ClientSessionTest, ModelFileWithoutKeepingPayloadsIsCheckedAndDropped) {
  ClientSessionOptions o = Options();
  o.keep_payloads = false;
  ClientSession s(o);
  const std::string file(40, 'm');
  Welcome w = MakeWelcome();
  w.model = "torchscript";
  w.model_bytes = file.size();
  const auto pieces = EncodeModelFile(file, kChunkBytes);
  auto kinds = [&s] {
    std::vector<Kind> out;
    while (auto e = s.NextEvent()) {
      EXPECT_TRUE(e->model_file.empty());
      out.push_back(e->kind);
    }
    return out;
  };
  s.Connect(now_);
  s.Receive(Encode(w), now_);
  for (const auto& p : pieces) s.Receive(p, now_);
  EXPECT_EQ(kinds(),
            (std::vector<Kind>{Kind::kWelcomed, Kind::kModelFilePiece, Kind::kModelFilePiece,
                               Kind::kModelFilePiece, Kind::kModelFile}));
  EXPECT_TRUE(s.model_ready());
  s.Connect(now_);
  s.Receive(Encode(w), now_);
  s.Receive(pieces[0], now_);
  s.Receive(pieces[2], now_);  // a piece lost
  EXPECT_EQ(kinds(),
            (std::vector<Kind>{Kind::kWelcomed, Kind::kModelFilePiece, Kind::kModelFileFailed}));
  EXPECT_FALSE(s.model_ready());
}

TEST_F(ClientSessionTest, HeartbeatsAndTimeouts) {
  session_.Connect(now_);
  Sent();
  session_.Tick(now_ + milliseconds(100), false);  // no heartbeats before the Welcome
  EXPECT_TRUE(Sent().empty());
  EXPECT_EQ(session_.next_deadline(), now_ + milliseconds(500));
  session_.Tick(now_ + milliseconds(500), false);
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kTimedOut);

  Admit();
  session_.Tick(now_, true);  // the first heartbeat at once
  auto out = Sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(DecodeAs<Heartbeat>(out[0]).busy, 1);
  session_.Tick(now_ + milliseconds(50), false);
  EXPECT_TRUE(Sent().empty());
  EXPECT_EQ(session_.next_deadline(), now_ + milliseconds(100));
  session_.Tick(now_ + milliseconds(100), false);
  out = Sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(DecodeAs<Heartbeat>(out[0]).busy, 0);
  // Anything heard keeps the connection; a second of silence ends it.
  session_.Receive(Encode(Heartbeat{}), now_ + milliseconds(600));
  EXPECT_EQ(Events()[0].kind, Kind::kHeartbeat);
  session_.Tick(now_ + milliseconds(1500), false);
  EXPECT_TRUE(Events().empty());
  session_.Tick(now_ + milliseconds(1601), false);
  events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kTimedOut);
  EXPECT_FALSE(session_.admitted());
}

TEST_F(ClientSessionTest, ShutdownEndsTheSession) {
  Admit();
  Shutdown s;
  s.reason = "done";
  Feed(s);
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kShutdown);
  EXPECT_EQ(events[0].message, "done");
  Feed(Heartbeat{});
  EXPECT_TRUE(Events().empty());
}

}  // namespace
}  // namespace shoal::protocols
