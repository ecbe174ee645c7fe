// secure_session_fuzz: the server side of SecureSession (protocols/secure_channel.h) on hostile
// wire frames, before and after the handshake, and on hostile inner framing carried by
// authentic TLS records. Input format: fuzz/secure_format.h.
//
// Three server/client pairs (secure_format.h): the usual mutual-TLS coordinator, and the
// enrollment-enabled coordinator with a certificate-less joining worker or with a worker that
// has its certificate.
//
// Checks, besides "no crash, no sanitizer report":
//  - no single allocation made by the server (handshake included) exceeds its effective message
//    cap plus a small slack: a length prefix is never trusted beyond the cap, and a client
//    without a certificate gets kUnauthenticatedMaxMessageBytes whatever the server was built
//    with;
//  - only a client with a certificate is peer_authenticated();
//  - a frame nobody could have authenticated delivers no message;
//  - with authentic records the server delivers exactly the messages the plaintext stream
//    describes, fails exactly when a length prefix exceeds the cap or more than
//    kMaxMessagesPerFrame messages begin in one frame (a ProtocolError), fails on
//    any flipped bit, and a failed frame delivers nothing;
//  - a failure is final: the next call returns the same status;
//  - with a payload placer installed (placement.h), it is asked only about codec frames with a
//    payload, with the whole head, and the messages (their placed payloads joined back) are
//    still exactly what the stream describes. The placer claims every other payload, so both
//    the placed and the whole-message paths are fuzzed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/secure_format.h"
#include "fuzz/test_pki.h"
#include "protocols/codec.h"
#include "protocols/secure_channel.h"

namespace shoal::fuzz {
namespace {

using namespace shoal::fuzz::secure_format;
using protocols::SecureSession;
using Frames = std::vector<std::string>;

// Slack above the message cap for one allocation: OpenSSL's record buffers are ~17 KiB, and
// the reassembly buffer is the cap + 1 (std::string's terminator).
constexpr size_t kAllocationSlack = 4096;

const TestContexts& Contexts() {
  static const TestContexts* contexts = new TestContexts(MakeTestContexts(MakeTestPki()));
  return *contexts;
}

struct PairSetup {
  std::shared_ptr<const protocols::TlsContext> server;
  size_t constructed_cap;
  std::shared_ptr<const protocols::TlsContext> client;
  size_t effective_cap;  // what the server must enforce once the handshake is done
  bool authenticated;    // the client presents a certificate
};

PairSetup Setup(Pair pair) {
  const TestContexts& c = Contexts();
  switch (pair) {
    case kJoin:
      return {c.enroll_server, kEnrollCap, c.join_client,
              std::min(kEnrollCap, protocols::kUnauthenticatedMaxMessageBytes), false};
    case kOptional:
      return {c.enroll_server, kEnrollCap, c.client, kEnrollCap, true};
    case kMutual:
    default:
      return {c.server, kMutualCap, c.client, kMutualCap, true};
  }
}

// Every call into the server goes through here: the allocation cap and the sticky failure.
class Server {
 public:
  explicit Server(const PairSetup& setup)
      : session_(setup.server, setup.constructed_cap),
        allocation_cap_(setup.effective_cap + kAllocationSlack),
        message_cap_(setup.effective_cap) {
    Frames out;
    Status st = Call([&] { return session_.Start(&out); });
    FUZZ_CHECK(st.ok() && out.empty(), "server Start: " + st.ToString());
    session_.set_payload_placer([this](std::string_view head, size_t payload_bytes) {
      const auto split = protocols::SplitFrame(head, head.size() + payload_bytes);
      FUZZ_CHECK(split && split->head_bytes == head.size() && split->payload_bytes > 0,
                 "the placer was asked about something that is not a frame's head");
      FUZZ_CHECK(head.size() + payload_bytes <= message_cap_, "placement above the cap");
      if (++placer_calls_ % 2 == 0) return protocols::PayloadPlacement{};
      auto buffer = std::make_shared<std::string>(payload_bytes, '\0');
      return protocols::PayloadPlacement{buffer->data(), buffer};
    });
  }

  Status OnWire(std::string_view frame, Frames* out, Frames* messages) {
    const bool failed_before = session_.failed();
    const Status before = session_.failure();
    const size_t delivered_before = messages->size();
    Status st = Call([&] { return session_.OnWire(frame, out, messages); });
    if (failed_before) {
      FUZZ_CHECK(!st.ok() && st.code() == before.code() && st.message() == before.message(),
                 "a failed session did not return its failure again");
    }
    if (!st.ok()) {
      FUZZ_CHECK(session_.failed(), "OnWire failed but the session is not failed");
      FUZZ_CHECK(messages->size() == delivered_before, "a failed frame delivered messages");
    }
    for (size_t i = delivered_before; i < messages->size(); ++i) {
      FUZZ_CHECK((*messages)[i].size() <= message_cap_, "delivered a message above the cap");
    }
    return st;
  }

  SecureSession& session() { return session_; }

 private:
  template <class F>
  Status Call(F f) {
    AllocationCap cap(allocation_cap_, "server SecureSession");
    return f();
  }

  SecureSession session_;
  size_t allocation_cap_;
  size_t message_cap_;
  uint64_t placer_calls_ = 0;
};

// Runs a real handshake between `client` and `server`; every step must succeed.
void Handshake(SecureSession& client, Server& server, const PairSetup& setup) {
  Frames to_server, to_client, delivered;
  Status st = client.Start(&to_server);
  FUZZ_CHECK(st.ok(), "client Start: " + st.ToString());
  for (int step = 0; step < 8 && (!to_server.empty() || !to_client.empty()); ++step) {
    Frames next_to_server, next_to_client;
    for (const std::string& f : to_server) {
      st = server.OnWire(f, &next_to_client, &delivered);
      FUZZ_CHECK(st.ok(), "server handshake: " + st.ToString());
    }
    for (const std::string& f : to_client) {
      st = client.OnWire(f, &next_to_server, &delivered);
      FUZZ_CHECK(st.ok(), "client handshake: " + st.ToString());
    }
    to_server = std::move(next_to_server);
    to_client = std::move(next_to_client);
  }
  FUZZ_CHECK(client.established() && server.session().established(), "handshake incomplete");
  FUZZ_CHECK(delivered.empty(), "the handshake delivered messages");
  FUZZ_CHECK(server.session().peer_authenticated() == setup.authenticated,
             "peer_authenticated() does not match the client's certificate");
  FUZZ_CHECK(setup.authenticated == !server.session().peer_name().empty(),
             "peer_name() does not match the client's certificate");
}

// Raw frames: nothing may be delivered, ever. Stops at the first failure (after checking that
// it is sticky).
void FeedRawFrames(Server& server, ByteReader& r) {
  Frames out, messages;
  while (!r.empty()) {
    const std::string_view frame = r.Bytes(ReadLength(r));
    Status st = server.OnWire(frame, &out, &messages);
    FUZZ_CHECK(messages.empty(), "an unauthenticated frame delivered a message");
    if (!st.ok()) {
      (void)server.OnWire(frame, &out, &messages);  // checks the failure is returned again
      return;
    }
  }
}

// The server's reassembly, restated: a 4-byte little-endian length, then the body.
class StreamModel {
 public:
  explicit StreamModel(size_t cap) : cap_(cap) {}

  // Feeds the plaintext of one frame; returns false when a length prefix exceeds the cap or
  // more than kMaxMessagesPerFrame messages begin in it (the server must fail; *why says which).
  bool Feed(std::string_view plain, Frames* completed, std::string* why) {
    size_t begun = 0;
    for (char c : plain) {
      if (!in_body_) {
        prefix_ |= uint32_t{static_cast<uint8_t>(c)} << (8 * prefix_have_);
        if (++prefix_have_ < 4) continue;
        if (++begun > protocols::kMaxMessagesPerFrame) {
          *why = "messages begin in one TLS frame";
          return false;
        }
        if (prefix_ > cap_) {
          *why = "exceeds the limit";
          return false;
        }
        in_body_ = true;
        body_.clear();
        if (prefix_ == 0) Complete(completed);  // an empty message needs no body byte
        continue;
      }
      body_.push_back(c);
      if (body_.size() == prefix_) Complete(completed);
    }
    return true;
  }

 private:
  size_t cap_;
  uint32_t prefix_ = 0;
  int prefix_have_ = 0;
  bool in_body_ = false;
  std::string body_;

  void Complete(Frames* completed) {
    completed->push_back(std::move(body_));
    body_ = std::string();
    in_body_ = false;
    prefix_ = 0;
    prefix_have_ = 0;
  }
};

void FeedSealed(SecureSession& client, Server& server, ByteReader& r, size_t cap) {
  StreamModel model(cap);
  std::string held_frames;  // concatenated frames of held pieces
  std::string held_plain;   // the plaintext they carry
  Frames out, messages;
  while (!r.empty()) {
    const uint8_t control = r.U8();
    uint16_t position = 0;
    uint8_t mask = 0;
    if (control & kCorrupt) {
      position = r.U16();
      mask = r.U8();
      if (mask == 0) mask = 1;
    }
    const std::string_view piece = r.Bytes(ReadLength(r));

    Frames sealed;
    Status st;
    if (control & kWithPrefix) {
      st = client.Seal(piece, &sealed);
      held_plain += Prefix(static_cast<uint32_t>(piece.size()));
    } else {
      st = client.SealRawForTesting(piece, &sealed);
    }
    FUZZ_CHECK(st.ok(), "client seal: " + st.ToString());
    held_plain.append(piece);
    for (const std::string& f : sealed) held_frames += f;
    if ((control & kHold) && !r.empty()) continue;
    if (held_frames.empty()) continue;  // nothing on the wire (an empty raw piece)

    const bool corrupt = (control & kCorrupt) != 0;
    if (corrupt) held_frames[position % held_frames.size()] ^= static_cast<char>(mask);
    Frames expected;
    std::string why;
    const bool expect_ok = model.Feed(held_plain, &expected, &why) && !corrupt;
    const size_t before = messages.size();
    st = server.OnWire(held_frames, &out, &messages);
    held_frames.clear();
    held_plain.clear();
    if (!expect_ok) {
      FUZZ_CHECK(!st.ok(), corrupt ? "a flipped bit was not detected"
                                   : "a frame over a cap (" + why + ") was accepted");
      if (!corrupt) {
        FUZZ_CHECK(st.code() == Code::kProtocol && st.message().find(why) != std::string::npos,
                   "frame over a cap (" + why + ") refused with: " + st.ToString());
      }
      (void)server.OnWire("\x17\x03\x03\x00\x00", &out, &messages);  // sticky failure
      return;
    }
    FUZZ_CHECK(st.ok(), "authentic records refused: " + st.ToString());
    FUZZ_CHECK(messages.size() - before == expected.size(),
               "delivered " + std::to_string(messages.size() - before) + " messages, expected " +
                   std::to_string(expected.size()));
    for (size_t i = 0; i < expected.size(); ++i) {
      FUZZ_CHECK(messages[before + i] == expected[i], "message " + std::to_string(i) + " differs");
    }
    messages.clear();
  }
}

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)shoal::fuzz::Contexts();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shoal::fuzz;
  using namespace shoal::fuzz::secure_format;
  ByteReader r(data, size);
  const uint8_t mode = r.U8();
  const Kind kind = static_cast<Kind>(mode % 3);
  const PairSetup setup = Setup(static_cast<Pair>((mode / 3) % 3));
  Server server(setup);
  if (kind == kHandshake) {
    FeedRawFrames(server, r);
    FUZZ_CHECK(!server.session().established(), "a forged handshake completed");
    return 0;
  }
  shoal::protocols::SecureSession client(setup.client);
  Handshake(client, server, setup);
  if (kind == kForged) {
    FeedRawFrames(server, r);
  } else {
    FeedSealed(client, server, r, setup.effective_cap);
  }
  return 0;
}
