// The framed transport (protocols/transport.h): frames arrive whole and in order whatever the
// TCP segmentation, every length prefix and greeting is checked before anything is reserved,
// and connections that break the rules are closed with a reason.
#include "protocols/transport.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/allocation_tracker.h"

namespace shoal::protocols {
namespace {

using namespace std::chrono_literals;

std::string Le32(uint32_t n) {
  return std::string{static_cast<char>(n), static_cast<char>(n >> 8), static_cast<char>(n >> 16),
                     static_cast<char>(n >> 24)};
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Feeds `wire` to a reader in pieces of `piece` bytes and collects the frames.
Result<std::vector<std::string>> ReadAll(FrameReader& r, const std::string& wire, size_t piece) {
  std::vector<std::string> frames;
  for (size_t at = 0; at < wire.size(); at += piece) {
    r.Feed(std::string_view(wire).substr(at, piece));
    while (true) {
      auto next = r.Next();
      if (!next.ok()) return next.status();
      if (!next->has_value()) break;
      frames.push_back(std::move(**next));
    }
  }
  return frames;
}

// A wait with time left must block for it: rounded down, the last fraction of a millisecond
// became poll(0) in a loop (a spinning receive). Checked whenever the deadline had not passed
// by the time the call returned.
TEST(RemainingMsTest, TimeLeftIsRoundedUpSoAWaitNeverSpins) {
  int checked = 0;
  for (int i = 0; i < 200; ++i) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(500);
    const int ms = RemainingMs(deadline);
    if (std::chrono::steady_clock::now() < deadline) {
      EXPECT_EQ(ms, 1);
      ++checked;
    }
  }
  EXPECT_GT(checked, 0) << "the machine never returned within 500 us";
  EXPECT_EQ(RemainingMs(std::chrono::steady_clock::now() - std::chrono::seconds(1)), 0);
  const int two_s = RemainingMs(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  EXPECT_TRUE(two_s == 2000 || two_s == 1999) << two_s;
}

TEST(FrameReaderTest, FramesSurviveAnySegmentation) {
  const std::vector<std::string> frames = {"", "a", RandomBytes(8191, 1), RandomBytes(70000, 2)};
  std::string wire = Greeting(true);
  for (const auto& f : frames) wire += Le32(static_cast<uint32_t>(f.size())) + f;
  for (size_t piece : {size_t{1}, size_t{3}, size_t{4096}, wire.size()}) {
    FrameReader r(/*secure=*/true, /*peer_is_server=*/false, 1 << 20);
    auto got = ReadAll(r, wire, piece);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, frames) << "piece " << piece;
    EXPECT_EQ(r.buffered(), 0u);
  }
}

TEST(FrameReaderTest, LengthOverTheCapIsRefusedBeforeAllocating) {
  FrameReader r(true, false, 1 << 16);
  testing::AllocationScope scope;
  r.Feed(Greeting(true) + Le32(0xFFFFFFFFu) + "xyz");
  auto next = r.Next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(std::string(r.error_reason()), "frame_too_large");
  EXPECT_NE(next.status().message().find("4294967295"), std::string::npos)
      << next.status().message();
  EXPECT_LT(scope.max_allocation(), size_t{1} << 16);
}

TEST(FrameReaderTest, CapChangesApplyFromTheNextFrame) {
  FrameReader r(true, false, 16);
  // Two frames arrive in one piece: 10 bytes, then 1000 bytes.
  r.Feed(Greeting(true) + Le32(10) + std::string(10, 'a') + Le32(1000) + std::string(1000, 'b'));
  auto first = r.Next();
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ(**first, std::string(10, 'a'));
  r.set_cap(4096);  // e.g. the handshake just finished
  auto second = r.Next();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ((*second)->size(), 1000u);
}

TEST(FrameReaderTest, GreetingsThatAreNotOursAreNamed) {
  struct Case {
    std::string bytes;
    bool secure;
    bool peer_is_server;
    std::string expect;
    Code code;
  };
  std::string zmtp("\xff\0\0\0\0\0\0\0\x01\x7f", 10);
  std::string old_version = Greeting(true);
  old_version[5] = 9;
  std::string flags = Greeting(true);
  flags[7] = 1;
  const std::vector<Case> cases = {
      {zmtp, true, false, "ZeroMQ (ZMTP)", Code::kProtocol},
      {"GET / HTTP/1.1\r\n", true, false, "HTTP", Code::kProtocol},
      {std::string("\x16\x03\x01\x02\x00", 5), true, false, "bare TLS", Code::kProtocol},
      {Greeting(false), true, false, "worker speaks plain (--insecure)", Code::kRejected},
      {Greeting(true), false, false, "coordinator runs --insecure", Code::kRejected},
      {Greeting(true), false, true, "coordinator requires TLS", Code::kRejected},
      {Greeting(false), true, true, "coordinator runs --insecure", Code::kRejected},
      {old_version, true, false, "wire version 9", Code::kRejected},
      {flags, true, false, "unknown flags", Code::kProtocol},
  };
  for (const auto& c : cases) {
    FrameReader r(c.secure, c.peer_is_server, 1 << 20);
    r.Feed(c.bytes);
    auto next = r.Next();
    ASSERT_FALSE(next.ok()) << c.expect;
    EXPECT_EQ(next.status().code(), c.code) << next.status().ToString();
    EXPECT_NE(next.status().message().find(c.expect), std::string::npos) << next.status().message();
    EXPECT_EQ(std::string(r.error_reason()), "bad_greeting");
  }
  // A stranger is recognised from its first byte: no waiting for a whole greeting.
  FrameReader r(true, false, 1 << 20);
  r.Feed("\xff");
  EXPECT_FALSE(r.Next().ok());
}

class TransportTest : public ::testing::Test {
 protected:
  // Receives on the router until a frame arrives (bounded).
  static Incoming RouterNext(StreamListener& router) {
    for (int i = 0; i < 500; ++i) {
      auto in = router.Recv(10);
      EXPECT_TRUE(in.ok()) << in.status().ToString();
      if (in.ok() && in->has_value()) return **in;
    }
    ADD_FAILURE() << "no frame reached the router";
    return {};
  }
  static Result<std::optional<std::string>> DealerNext(StreamConnection& dealer) {
    for (int i = 0; i < 500; ++i) {
      auto in = dealer.Recv(10);
      if (!in.ok() || in->has_value()) return in;
    }
    return std::optional<std::string>();
  }
  static bool HasEvent(StreamListener& router, const std::string& reason) {
    for (int i = 0; i < 300; ++i) {
      (void)router.Recv(10);
      for (const auto& e : router.TakeEvents()) {
        if (e.reason == reason) return true;
      }
    }
    return false;
  }
};

TEST_F(TransportTest, FramesBothWaysInOrder) {
  StreamListener router;
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  StreamConnection dealer;
  ASSERT_TRUE(dealer.Connect(*endpoint).ok());
  // Sent before the connection is up: they wait, in order.
  const std::vector<std::string> up = {"", "one", RandomBytes(3 << 20, 5), "last"};
  for (const auto& f : up) ASSERT_TRUE(dealer.Send(f).ok());
  (void)dealer.Recv(200);  // the connection comes up; the waiting frames leave
  std::string peer;
  for (const auto& f : up) {
    Incoming in = RouterNext(router);
    if (peer.empty()) peer = in.peer;
    EXPECT_EQ(in.peer, peer);
    EXPECT_TRUE(in.frame == f) << "frame of " << f.size() << " bytes";
  }
  const std::string down = RandomBytes(1 << 20, 6);
  ASSERT_TRUE(router.Send(peer, down).ok());
  ASSERT_TRUE(router.Send(peer, "").ok());
  auto a = DealerNext(dealer);
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_TRUE(**a == down);
  auto b = DealerNext(dealer);
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ(**b, "");
  EXPECT_FALSE(router.Send("no such peer", "x").ok());
}

// Frames handed over (SendOwned) leave without a copy when large and as a copy when small,
// before and after the connection is up, in order with frames sent by view.
TEST_F(TransportTest, OwnedFramesArriveWholeAndInOrder) {
  StreamListener router;
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  StreamConnection dealer;
  ASSERT_TRUE(dealer.Connect(*endpoint).ok());
  const std::vector<std::string> frames = {RandomBytes(kZeroCopyFrameBytes, 21),
                                           "small",
                                           RandomBytes(kZeroCopyFrameBytes - 1, 22),
                                           RandomBytes(5 << 20, 23),
                                           "",
                                           RandomBytes(3 << 20, 24),
                                           "by view"};
  auto send = [&](size_t i) {
    if (i + 1 == frames.size()) return dealer.Send(frames[i]);
    std::string copy = frames[i];
    return dealer.SendOwned(std::move(copy));
  };
  ASSERT_TRUE(send(0).ok());  // before the connection is up: waits
  ASSERT_TRUE(send(1).ok());
  (void)dealer.Recv(200);  // the connection comes up
  for (size_t i = 2; i < frames.size(); ++i) ASSERT_TRUE(send(i).ok());
  for (const auto& f : frames) {
    Incoming in = RouterNext(router);
    EXPECT_TRUE(in.frame == f) << "frame of " << f.size() << " bytes";
  }
}

// A worker waits for messages and for its training thread's end in one poll: the wake
// descriptor ends a long wait at once, and no frame is lost to it.
TEST_F(TransportTest, WakeDescriptorEndsAWaitAndLosesNoFrame) {
  const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(wake, 0);
  StreamListener router;
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  SocketOptions o;
  o.wake_fd = wake;
  StreamConnection dealer(o);
  ASSERT_TRUE(dealer.Connect(*endpoint).ok());
  ASSERT_TRUE(dealer.Send("hello").ok());
  (void)dealer.Recv(200);  // the connection comes up; "hello" leaves
  const std::string peer = RouterNext(router).peer;

  const uint64_t one = 1;
  ASSERT_EQ(write(wake, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  const auto t0 = std::chrono::steady_clock::now();
  auto woken = dealer.Recv(120000);  // without the wake: two minutes
  ASSERT_TRUE(woken.ok()) << woken.status().ToString();
  EXPECT_FALSE(woken->has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60));

  // Still readable (not drained): the frame that arrives meanwhile is delivered once drained.
  const std::string frame = RandomBytes(300000, 9);
  ASSERT_TRUE(router.Send(peer, frame).ok());
  uint64_t n = 0;
  ASSERT_EQ(read(wake, &n, sizeof n), static_cast<ssize_t>(sizeof n));
  EXPECT_EQ(n, 1u);
  auto got = DealerNext(dealer);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_TRUE(**got == frame);

  // While the descriptor stays readable, frames that arrive are still delivered.
  ASSERT_EQ(write(wake, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  const std::string second = RandomBytes(200000, 10);
  ASSERT_TRUE(router.Send(peer, second).ok());
  std::optional<std::string> delivered;
  for (int i = 0; i < 50000 && !delivered; ++i) {
    auto r = dealer.Recv(100);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    delivered = std::move(*r);
  }
  ASSERT_TRUE(delivered.has_value()) << "a readable wake descriptor starved the socket";
  EXPECT_TRUE(*delivered == second);
  ASSERT_EQ(read(wake, &n, sizeof n), static_cast<ssize_t>(sizeof n));

  // Signalled from another thread while the receive waits.
  std::thread waker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    (void)!write(wake, &one, sizeof one);
  });
  const auto t1 = std::chrono::steady_clock::now();
  auto later = dealer.Recv(120000);
  waker.join();
  ASSERT_TRUE(later.ok());
  EXPECT_FALSE(later->has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(60));
  close(wake);
}

TEST_F(TransportTest, CloseDeliversWhatWasSentThenEndsTheConnection) {
  StreamListener router;
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok());
  StreamConnection dealer;
  ASSERT_TRUE(dealer.Connect(*endpoint).ok());
  ASSERT_TRUE(dealer.Send("hello").ok());
  (void)dealer.Recv(100);
  Incoming in = RouterNext(router);
  ASSERT_TRUE(router.Send(in.peer, "goodbye: revoked").ok());
  router.Close(in.peer);
  EXPECT_FALSE(router.Send(in.peer, "more").ok());
  auto last = DealerNext(dealer);
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  ASSERT_TRUE(last->has_value());
  EXPECT_EQ(**last, "goodbye: revoked");
  // The connection ends after the grace period; the dealer says so from then on.
  Status end;
  for (int i = 0; i < 300 && end.ok(); ++i) {
    (void)router.Recv(10);
    auto r = dealer.Recv(10);
    if (!r.ok()) end = r.status();
  }
  EXPECT_EQ(end.code(), Code::kUnavailable) << end.ToString();
  EXPECT_FALSE(dealer.Send("x").ok());
  EXPECT_EQ(router.connections(), 0u);
}

TEST_F(TransportTest, LostClientIsReported) {
  StreamListener router;
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok());
  std::string peer;
  {
    StreamConnection dealer;
    ASSERT_TRUE(dealer.Connect(*endpoint).ok());
    ASSERT_TRUE(dealer.Send("hi").ok());
    (void)dealer.Recv(100);
    peer = RouterNext(router).peer;
  }
  EXPECT_TRUE(HasEvent(router, "closed"));
  EXPECT_FALSE(router.Send(peer, "x").ok());
}

TEST_F(TransportTest, ModeMismatchIsExplainedToBothSides) {
  SocketOptions server_options;
  server_options.secure = true;
  StreamListener router(server_options);
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok());
  StreamConnection plain;  // a worker started with --insecure
  ASSERT_TRUE(plain.Connect(*endpoint).ok());
  ASSERT_TRUE(plain.Send("hello in clear text").ok());
  Result<std::optional<std::string>> got = std::optional<std::string>();
  for (int i = 0; i < 300 && got.ok(); ++i) {
    (void)router.Recv(5);
    got = plain.Recv(5);
  }
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kRejected);
  EXPECT_NE(got.status().message().find("requires TLS"), std::string::npos)
      << got.status().message();
  EXPECT_TRUE(HasEvent(router, "bad_greeting"));
}

TEST_F(TransportTest, OversizedFrameClosesTheConnection) {
  SocketOptions o;
  o.initial_frame_bytes = 1000;
  o.max_frame_bytes = 1 << 20;
  StreamListener router(o);
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok());
  StreamConnection dealer;
  ASSERT_TRUE(dealer.Connect(*endpoint).ok());
  ASSERT_TRUE(dealer.Send(std::string(900, 'a')).ok());
  (void)dealer.Recv(100);
  Incoming in = RouterNext(router);
  EXPECT_EQ(in.frame.size(), 900u);
  router.SetFrameCap(in.peer, 100000);
  ASSERT_TRUE(dealer.Send(std::string(50000, 'b')).ok());
  EXPECT_EQ(RouterNext(router).frame.size(), 50000u);
  ASSERT_TRUE(dealer.Send(std::string(100001, 'c')).ok());
  EXPECT_TRUE(HasEvent(router, "frame_too_large"));
  Status end;
  for (int i = 0; i < 300 && end.ok(); ++i) {
    (void)router.Recv(5);
    auto r = dealer.Recv(5);
    if (!r.ok()) end = r.status();
  }
  EXPECT_EQ(end.code(), Code::kUnavailable);
}

TEST_F(TransportTest, ConnectionLimitAndIdleConnections) {
  SocketOptions o;
  o.max_connections = 1;
  o.first_frame_timeout_ms = 300;
  StreamListener router(o);
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok());
  StreamConnection first;
  ASSERT_TRUE(first.Connect(*endpoint).ok());
  for (int i = 0; i < 20 && router.connections() == 0; ++i) {
    (void)router.Recv(10);
    (void)first.Recv(10);
  }
  ASSERT_EQ(router.connections(), 1u);
  StreamConnection second;
  ASSERT_TRUE(second.Connect(*endpoint).ok());
  EXPECT_TRUE(HasEvent(router, "connection_limit"));
  // The first never sends a frame: closed once first_frame_timeout_ms has passed.
  EXPECT_TRUE(HasEvent(router, "handshake_timeout"));
  for (int i = 0; i < 100 && router.connections() > 0; ++i) (void)router.Recv(10);
  EXPECT_EQ(router.connections(), 0u);
}

}  // namespace
}  // namespace shoal::protocols
