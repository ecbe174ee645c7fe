// The server channel's limits, attacked over real sockets on 127.0.0.1 (issue #20, items 3, 4,
// 5 and the KeyUpdate ordering of item 10): revoked certificates, peers that are not admitted,
// sessions without a certificate, a peer that floods without reading, and a KeyUpdate answered
// while a large message is still leaving. Every check is logical (who got in, what was dropped,
// how much was reserved or queued), with generous deadlines only to end a broken run.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "protocols/channel.h"
#include "protocols/transport.h"
#include "security/pki.h"

namespace shoal::protocols {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A message a Shoal peer could send: at least a frame header long.
const std::string kSmall(32, 'm');

// A federation CA made with Shoal's own PKI, once for the whole suite.
class ChannelLimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tmpl = (fs::path(::testing::TempDir()) / "channel_limits_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(security::InitCa(dir_ + "/ca").ok());
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static std::string CaDir() { return dir_ + "/ca"; }

  // The coordinator's server context: clients without a certificate may finish the handshake
  // (the channel decides), names in `revoked_` are refused in the handshake.
  std::shared_ptr<const TlsContext> ServerTls() {
    TlsConfig tc;
    const std::string ca = *ReadFile(security::CaCertPath(CaDir()), 1 << 20);
    tc.cert_pem = *ReadFile(security::CoordinatorCertPath(CaDir()), 1 << 20) + ca;
    tc.key_pem = *ReadFile(security::CoordinatorKeyPath(CaDir()), 1 << 20);
    tc.ca_pem = ca;
    tc.require_peer_certificate = false;
    tc.is_revoked = [this](const std::string& name, const std::string&) {
      return revoked_.count(name) != 0;
    };
    auto tls = TlsContext::Server(tc);
    EXPECT_TRUE(tls.ok()) << tls.status().ToString();
    return *tls;
  }
  static std::shared_ptr<const TlsContext> WorkerTlsFor(const std::string& name) {
    const std::string out = dir_ + "/bundles/" + name;
    if (!PathExists(security::BundleCertPath(out))) {
      EXPECT_TRUE(security::Enroll(CaDir(), name, out).ok());
    }
    auto tls = WorkerTls(*security::LoadBundle(out), security::kCoordinatorCommonName);
    EXPECT_TRUE(tls.ok()) << tls.status().ToString();
    return *tls;
  }
  // A joiner's context: no certificate, the CA pinned by fingerprint.
  static std::shared_ptr<const TlsContext> AnonymousTls() {
    TlsConfig tc;
    tc.ca_fingerprint = *security::CaFingerprint(*ReadFile(security::CaCertPath(CaDir()), 1 << 20));
    tc.expected_peer_name = security::kCoordinatorCommonName;
    auto tls = TlsContext::Client(tc);
    EXPECT_TRUE(tls.ok()) << tls.status().ToString();
    return *tls;
  }

  void StartServer(ChannelOptions options) {
    options.tls = ServerTls();
    server_ = std::make_unique<ServerChannel>(options);
    auto endpoint = server_->Bind("tcp://127.0.0.1:*");
    ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
    endpoint_ = *endpoint;
  }
  std::unique_ptr<ClientChannel> Client(std::shared_ptr<const TlsContext> tls) {
    ChannelOptions o;
    o.tls = std::move(tls);
    auto c = std::make_unique<ClientChannel>(o);
    EXPECT_TRUE(c->Connect(endpoint_).ok());
    return c;
  }

  // Serves the server (messages to `got`, events to `events_`, closed peers to `closed_`) and
  // lets each client in `clients` read, until `done` or 20 s.
  bool Drive(const std::vector<ClientChannel*>& clients, const std::function<bool()>& done,
             std::vector<ChannelMessage>* got = nullptr) {
    const auto deadline = Clock::now() + 20s;
    while (Clock::now() < deadline) {
      if (done()) return true;
      auto in = server_->Recv(2);
      EXPECT_TRUE(in.ok());
      if (in.ok() && in->has_value() && got != nullptr) got->push_back(std::move(**in));
      server_->ExpireHandshakes();
      for (auto& e : server_->TakeEvents()) events_.push_back(e);
      for (auto& p : server_->TakeClosed()) closed_.insert(p);
      for (ClientChannel* c : clients) {
        auto r = c->Recv(0);
        if (!r.ok()) failures_[c] = r.status();
      }
    }
    return done();
  }
  size_t Events(const std::string& reason) const {
    return std::count_if(events_.begin(), events_.end(),
                         [&](const ChannelEvent& e) { return e.reason == reason; });
  }
  bool Failed(ClientChannel* c) const { return failures_.count(c) != 0; }
  std::string Failure(ClientChannel* c) const {
    auto it = failures_.find(c);
    return it == failures_.end() ? "" : it->second.ToString();
  }

  static std::string dir_;
  std::set<std::string> revoked_;
  std::unique_ptr<ServerChannel> server_;
  std::string endpoint_;
  std::vector<ChannelEvent> events_;
  std::set<std::string> closed_;
  std::map<ClientChannel*, Status> failures_;
};

std::string ChannelLimitsTest::dir_;

// Item 5: a revoked certificate ends in the handshake with "certificate revoked": nothing it
// sends is read, nothing is reserved for it, no session is kept.
TEST_F(ChannelLimitsTest, RevokedCertificateFailsInTheHandshake) {
  revoked_.insert("revoked-1");
  StartServer({});
  auto good = Client(WorkerTlsFor("good-1"));
  auto bad = Client(WorkerTlsFor("revoked-1"));
  ASSERT_TRUE(good->Send(kSmall).ok());
  ASSERT_TRUE(bad->Send(kSmall).ok());  // queued, sealed once the client's handshake is done
  std::vector<ChannelMessage> got;
  ASSERT_TRUE(Drive(
      {good.get(), bad.get()}, [&] { return !got.empty() && Failed(bad.get()); }, &got))
      << Failure(bad.get());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].identity, "good-1");
  EXPECT_NE(Failure(bad.get()).find("revoked"), std::string::npos) << Failure(bad.get());
  EXPECT_EQ(Events("revoked"), 1u);
  EXPECT_EQ(server_->sessions(), 1u);  // the good one only
  EXPECT_EQ(closed_.size(), 1u);
  EXPECT_EQ(server_->receive_buffer_bytes(*closed_.begin()), 0u);
}

// Item 3: without an open join token (set_accept_anonymous(false), the default), a client with
// no certificate fails in the handshake and is told why.
TEST_F(ChannelLimitsTest, NoCertificateIsRefusedWhileNoTokenIsOpen) {
  StartServer({});
  auto joiner = Client(AnonymousTls());
  ASSERT_TRUE(joiner->Send(kSmall).ok());
  std::vector<ChannelMessage> got;
  ASSERT_TRUE(Drive(
      {joiner.get()}, [&] { return Failed(joiner.get()); }, &got));
  EXPECT_TRUE(got.empty());
  EXPECT_NE(Failure(joiner.get()).find("join token is open"), std::string::npos)
      << Failure(joiner.get());
  EXPECT_EQ(Events("anonymous_refused"), 1u);
  EXPECT_EQ(server_->sessions(), 0u);
}

// Item 3: silent sessions without a certificate, more than the whole session table holds, do
// not keep an enrolled worker out: they are capped (the oldest goes) and evicted first.
TEST_F(ChannelLimitsTest, SilentAnonymousSessionsNeverKeepAnEnrolledWorkerOut) {
  ChannelOptions o;
  o.max_sessions = 6;
  o.max_anonymous_sessions = 4;
  o.max_anonymous_per_address = 4;
  StartServer(o);
  server_->set_accept_anonymous(true);
  std::vector<std::unique_ptr<ClientChannel>> silent;
  std::vector<ClientChannel*> all;
  for (int i = 0; i < 12; ++i) {
    silent.push_back(Client(AnonymousTls()));
    all.push_back(silent.back().get());
    // Each finishes its handshake before the next starts: all are established, none is an
    // unfinished handshake the old eviction would have taken.
    ASSERT_TRUE(Drive(all, [&] { return silent.back()->established(); }));
  }
  auto worker = Client(WorkerTlsFor("enrolled-1"));
  ASSERT_TRUE(worker->Send(kSmall).ok());
  all.push_back(worker.get());
  std::vector<ChannelMessage> got;
  ASSERT_TRUE(Drive(
      all, [&] { return !got.empty(); }, &got))
      << "the enrolled worker was kept out";
  EXPECT_EQ(got[0].identity, "enrolled-1");
  EXPECT_TRUE(got[0].authenticated);
  EXPECT_FALSE(Failed(worker.get())) << Failure(worker.get());
  EXPECT_LE(server_->sessions(), 5u);  // at most 4 without a certificate, and the worker
  EXPECT_GE(Events("anonymous_limit"), 8u);
}

// Item 3: one address may hold only its share of the sessions without a certificate.
TEST_F(ChannelLimitsTest, AnonymousSessionsAreCappedPerAddress) {
  ChannelOptions o;
  o.max_anonymous_sessions = 16;
  o.max_anonymous_per_address = 2;
  StartServer(o);
  server_->set_accept_anonymous(true);
  std::vector<std::unique_ptr<ClientChannel>> silent;
  std::vector<ClientChannel*> all;
  for (int i = 0; i < 6; ++i) {
    silent.push_back(Client(AnonymousTls()));
    all.push_back(silent.back().get());
    ASSERT_TRUE(Drive(all, [&] { return silent.back()->established(); }));
  }
  ASSERT_TRUE(Drive(all, [&] { return server_->sessions() <= 2; }))
      << server_->sessions() << " sessions from 127.0.0.1";
  EXPECT_EQ(Events("anonymous_limit"), 4u);
}

// Item 3: a session without a certificate that sends nothing after its handshake is closed at
// its deadline.
TEST_F(ChannelLimitsTest, SilentAnonymousSessionIsClosedAfterItsDeadline) {
  ChannelOptions o;
  o.anonymous_timeout_ms = 200;
  StartServer(o);
  server_->set_accept_anonymous(true);
  auto joiner = Client(AnonymousTls());
  ASSERT_TRUE(Drive({joiner.get()}, [&] { return joiner->established(); }));
  ASSERT_TRUE(Drive({joiner.get()}, [&] { return Failed(joiner.get()); }))
      << "a silent session without a certificate was kept open";
  EXPECT_EQ(Events("join_timeout"), 1u);
  EXPECT_EQ(server_->sessions(), 0u);
}

// Item 5: a peer with a valid certificate that is never admitted (no Hello) is closed at the
// handshake timeout, and until admitted neither a large frame nor a large message gets through.
TEST_F(ChannelLimitsTest, UnadmittedPeerIsCappedAndClosedAtTheDeadline) {
  ChannelOptions o;
  o.handshake_timeout_ms = 300;
  StartServer(o);
  auto idle = Client(WorkerTlsFor("idle-1"));
  ASSERT_TRUE(Drive({idle.get()}, [&] { return idle->established(); }));
  ASSERT_TRUE(Drive({idle.get()}, [&] { return Failed(idle.get()); }))
      << "a connection that never said Hello was kept open";
  EXPECT_EQ(Events("hello_timeout"), 1u);

  // Before admission: a 100 KiB message (one frame over 64 KiB) closes the connection.
  o.handshake_timeout_ms = 10000;
  StartServer(o);
  auto big = Client(WorkerTlsFor("big-1"));
  ASSERT_TRUE(big->Send(std::string(100 << 10, 'b')).ok());
  std::vector<ChannelMessage> got;
  ASSERT_TRUE(Drive(
      {big.get()}, [&] { return Failed(big.get()); }, &got));
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(Events("frame_too_large"), 1u);
}

// A worker's side driven by hand: its own SecureSession over a StreamConnection, so a test can
// seal what a ClientChannel never would (a lying length, a KeyUpdate) and stop reading.
class RawClient {
 public:
  RawClient(const std::string& endpoint, std::shared_ptr<const TlsContext> tls)
      : conn_(Options()), tls_(std::move(tls)) {
    EXPECT_TRUE(conn_.Connect(endpoint).ok());
    EXPECT_TRUE(tls_.Start(&out_).ok());
  }
  SecureSession& tls() { return tls_; }
  std::vector<std::string>& out() { return out_; }
  // Sends what is sealed; reads (when `read`) and decrypts into messages().
  Status Step(bool read) {
    for (auto& f : out_) SHOAL_RETURN_IF_ERROR(conn_.Send(f));
    out_.clear();
    if (!read) return Status::Ok();
    SHOAL_ASSIGN_OR_RETURN(std::optional<std::string> frame, conn_.Recv(1));
    if (frame) SHOAL_RETURN_IF_ERROR(tls_.OnWire(*frame, &out_, &messages_));
    return Status::Ok();
  }
  std::vector<std::string>& messages() { return messages_; }

 private:
  static SocketOptions Options() {
    SocketOptions so;
    so.secure = true;
    return so;
  }
  StreamConnection conn_;
  SecureSession tls_;
  std::vector<std::string> out_;
  std::vector<std::string> messages_;
};

// Runs the server and the raw client until `done` (20 s at most); the server's messages go to
// `got`. False when the client failed or time ran out.
bool DriveRaw(ServerChannel& server, RawClient& client, bool client_reads,
              const std::function<bool()>& done, std::vector<ChannelMessage>* got) {
  const auto deadline = Clock::now() + 20s;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    auto in = server.Recv(1);
    if (!in.ok()) return false;
    if (in->has_value()) got->push_back(std::move(**in));
    server.PumpOutput();
    Status st = client.Step(client_reads);
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (!st.ok()) return false;
  }
  return true;
}

// Connects a raw client for `name` and has it admitted after its first message, as the
// coordinator admits a worker once its Hello is accepted. Returns the peer id.
std::string ConnectAndAdmit(ServerChannel& server, RawClient& client) {
  std::vector<ChannelMessage> got;
  EXPECT_TRUE(DriveRaw(
      server, client, true, [&] { return client.tls().established(); }, &got));
  EXPECT_TRUE(client.tls().Seal(kSmall, &client.out()).ok());  // the "Hello"
  EXPECT_TRUE(DriveRaw(
      server, client, true, [&] { return !got.empty(); }, &got));
  if (got.empty()) return "";
  server.Admit(got[0].peer);
  return got[0].peer;
}

// Item 5: a session reserves for a message only as its bytes arrive (kServerReceiveAheadBytes,
// or kServerReceiveGrowth times what came), whatever length its prefix announces.
TEST_F(ChannelLimitsTest, ReceiveBufferGrowsWithTheBytesThatArrive) {
  StartServer({});
  RawClient client(endpoint_, WorkerTlsFor("liar-1"));
  const std::string peer = ConnectAndAdmit(*server_, client);
  ASSERT_FALSE(peer.empty());
  // A lying length prefix sealed by hand: 64 MiB announced, 1 KiB sent.
  const uint32_t announced = 64u << 20;
  std::string lie(4, '\0');
  for (int i = 0; i < 4; ++i) lie[i] = static_cast<char>(announced >> (8 * i));
  ASSERT_TRUE(client.tls().SealRawForTesting(lie + std::string(1024, 'x'), &client.out()).ok());
  std::vector<ChannelMessage> got;
  // Until the 1 KiB that did come is held (an idle session's buffer is a few bytes).
  ASSERT_TRUE(DriveRaw(
      *server_, client, true, [&] { return server_->receive_buffer_bytes(peer) >= 1024; }, &got));
  EXPECT_LE(server_->receive_buffer_bytes(peer), kServerReceiveAheadBytes + 1024)
      << "reserved for bytes that never came";
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(server_->sessions(), 1u);
}

// Item 4: a peer that sends without reading, each of its messages answered (as the coordinator
// answers a heartbeat): what waits for it stays under the cap, then it is dropped; another peer
// is served as before.
TEST_F(ChannelLimitsTest, PeerThatDoesNotReadIsDroppedAtItsQueueCap) {
  ChannelOptions o;
  o.max_queued_messages = 64;
  StartServer(o);
  RawClient other(endpoint_, WorkerTlsFor("other-1"));
  const std::string other_peer = ConnectAndAdmit(*server_, other);
  RawClient flooder(endpoint_, WorkerTlsFor("flooder-1"));
  const std::string peer = ConnectAndAdmit(*server_, flooder);
  ASSERT_FALSE(peer.empty());
  const std::string reply(4 << 10, 'r');
  size_t most_queued = 0;
  bool dropped = false;
  const auto deadline = Clock::now() + 60s;
  for (int sent = 0; sent < 20000 && !dropped && Clock::now() < deadline;) {
    for (int i = 0; i < 50; ++i, ++sent) {
      ASSERT_TRUE(flooder.tls().Seal(kSmall, &flooder.out()).ok());
    }
    ASSERT_TRUE(flooder.Step(/*read=*/false).ok());
    for (int i = 0; i < 200; ++i) {
      auto in = server_->Recv(i == 0 ? 1 : 0);
      ASSERT_TRUE(in.ok());
      if (!in->has_value()) break;
      if ((*in)->peer == peer) (void)server_->Send(peer, reply);
      most_queued = std::max(most_queued, server_->queued_messages(peer));
    }
    for (auto& e : server_->TakeEvents()) events_.push_back(e);
    for (auto& p : server_->TakeClosed()) dropped = dropped || p == peer;
  }
  EXPECT_TRUE(dropped) << "a peer that does not read was kept, " << most_queued
                       << " messages waiting for it";
  EXPECT_LE(most_queued, 64u);
  EXPECT_EQ(Events("send_queue_full"), 1u);
  ASSERT_TRUE(server_->Send(other_peer, kSmall).ok());
  std::vector<ChannelMessage> got;
  EXPECT_TRUE(DriveRaw(
      *server_, other, true, [&] { return !other.messages().empty(); }, &got));
}

// Item 10: a KeyUpdate answered while a large message is still leaving. The answer is encrypted
// after the slices already sealed and switches the keys, so it must not leave before them.
TEST_F(ChannelLimitsTest, KeyUpdateAnswerNeverOvertakesQueuedData) {
  StartServer({});
  RawClient client(endpoint_, WorkerTlsFor("rekey-1"));
  const std::string peer = ConnectAndAdmit(*server_, client);
  ASSERT_FALSE(peer.empty());
  std::string big(32 << 20, '\0');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i >> 12);
  // Shared, as the coordinator's broadcasts are (a unique one this large would count against
  // the peer's queue cap).
  const auto shared = std::make_shared<const std::string>(big);
  ASSERT_TRUE(server_->Send(peer, shared).ok());
  // The client does not read while the server serves its KeyUpdate and one more message.
  ASSERT_TRUE(client.tls().RequestKeyUpdateForTesting(&client.out()).ok());
  ASSERT_TRUE(client.tls().Seal(kSmall, &client.out()).ok());
  std::vector<ChannelMessage> got;
  ASSERT_TRUE(DriveRaw(
      *server_, client, /*client_reads=*/false, [&] { return !got.empty(); }, &got));
  // Now it reads everything: the large message, intact, then a message under the new keys.
  ASSERT_TRUE(server_->Send(peer, kSmall).ok());
  ASSERT_TRUE(DriveRaw(
      *server_, client, true, [&] { return client.messages().size() >= 2; }, &got))
      << "the client's session: " << client.tls().failure().ToString();
  EXPECT_TRUE(client.messages()[0] == big);
  EXPECT_EQ(client.messages()[1], kSmall);
  EXPECT_FALSE(client.tls().failed());
}

}  // namespace
}  // namespace shoal::protocols
