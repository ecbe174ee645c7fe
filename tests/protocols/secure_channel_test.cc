#include "protocols/secure_channel.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "protocols/channel.h"
#include "protocols/codec.h"
#include "protocols/transport.h"
#include "security/pki.h"
#include "tests/testing/allocation_tracker.h"
#include "tests/testing/forge_cert.h"

namespace shoal::protocols {
namespace {

namespace fs = std::filesystem;
using Frames = std::vector<std::string>;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t v = rng();
    std::memcpy(&s[i], &v, 4);
  }
  for (; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

// A test PKI made with the openssl CLI: CA "shoal-test-ca" issues the coordinator's server
// certificate and the workers' client certificates (one valid, one expired); an unrelated CA
// "other-ca" issues a worker certificate and a server certificate with the same names.
struct Pki {
  std::string ca, other_ca;
  std::string server_cert, server_key;              // CN=coordinator, from ca
  std::string client_cert, client_key;              // CN=worker-1, from ca
  std::string expired_cert, expired_key;            // CN=worker-1, from ca, expired
  std::string other_client_cert, other_client_key;  // CN=worker-1, from other_ca
  std::string other_server_cert, other_server_key;  // CN=coordinator, from other_ca
  std::string client_fingerprint;                   // per `openssl x509 -fingerprint -sha256`
};

Pki* g_pki = nullptr;

class SecureChannelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (g_pki != nullptr) return;
    std::string tmpl = (fs::path(::testing::TempDir()) / "secure_channel_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    const std::string script = R"(set -e
cd ")" + dir_.string() + R"("
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > client.ext
ca() { openssl req -x509 $ec -keyout $1.key -out $1.pem -days 3650 -subj /CN=$2 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign; }
leaf() { openssl req -new $ec -keyout $1.key -out $1.csr -subj /CN=$2
  openssl x509 -req -in $1.csr -CA $3.pem -CAkey $3.key -CAcreateserial -out $1.pem \
    -days $4 -extfile $5.ext; }
ca ca shoal-test-ca
ca other-ca other-ca
leaf server coordinator ca 30 server
leaf client worker-1 ca 30 client
leaf expired worker-1 ca -1 client
leaf other-client worker-1 other-ca 30 client
leaf other-server coordinator other-ca 30 server
openssl x509 -in client.pem -noout -fingerprint -sha256 > client.fp
)";
    std::ofstream(dir_ / "make-pki.sh") << script;
    const std::string cmd =
        "sh '" + (dir_ / "make-pki.sh").string() + "' > '" + (dir_ / "log.txt").string() + "' 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << ReadFile(dir_ / "log.txt");
    auto pki = std::make_unique<Pki>();
    pki->ca = ReadFile(dir_ / "ca.pem");
    pki->other_ca = ReadFile(dir_ / "other-ca.pem");
    pki->server_cert = ReadFile(dir_ / "server.pem");
    pki->server_key = ReadFile(dir_ / "server.key");
    pki->client_cert = ReadFile(dir_ / "client.pem");
    pki->client_key = ReadFile(dir_ / "client.key");
    pki->expired_cert = ReadFile(dir_ / "expired.pem");
    pki->expired_key = ReadFile(dir_ / "expired.key");
    pki->other_client_cert = ReadFile(dir_ / "other-client.pem");
    pki->other_client_key = ReadFile(dir_ / "other-client.key");
    pki->other_server_cert = ReadFile(dir_ / "other-server.pem");
    pki->other_server_key = ReadFile(dir_ / "other-server.key");
    // "sha256 Fingerprint=AB:CD:..." -> "abcd..."
    std::string fp = ReadFile(dir_ / "client.fp");
    fp = fp.substr(fp.find('=') + 1);
    for (char c : fp) {
      if (std::isxdigit(static_cast<unsigned char>(c))) {
        pki->client_fingerprint += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
    }
    g_pki = pki.release();
  }

  static void TearDownTestSuite() {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  static const Pki& pki() { return *g_pki; }

  static std::shared_ptr<TlsContext> Server(const std::string& cert, const std::string& key,
                                            const std::string& ca) {
    auto ctx = TlsContext::Server({cert, key, ca, ""});
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    return ctx.ok() ? *ctx : nullptr;
  }
  static std::shared_ptr<TlsContext> Client(const std::string& cert, const std::string& key,
                                            const std::string& ca,
                                            const std::string& expected = "coordinator") {
    auto ctx = TlsContext::Client({cert, key, ca, expected});
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    return ctx.ok() ? *ctx : nullptr;
  }
  static std::shared_ptr<TlsContext> GoodServer() {
    return Server(pki().server_cert, pki().server_key, pki().ca);
  }
  static std::shared_ptr<TlsContext> GoodClient() {
    return Client(pki().client_cert, pki().client_key, pki().ca);
  }

  static fs::path dir_;
};

fs::path SecureChannelTest::dir_;

// Outcome of running a handshake in memory.
struct Handshake {
  Status client;
  Status server;
  std::vector<std::string> delivered;  // application messages seen by either side (must be none)
};

// Passes frames between the two sessions until neither has anything to send.
Handshake Pump(SecureSession& client, SecureSession& server, Frames to_server, Frames to_client) {
  Handshake h;
  for (int round = 0; round < 10 && (!to_server.empty() || !to_client.empty()); ++round) {
    Frames next_to_client, next_to_server;
    for (const std::string& f : to_server) {
      if (!h.server.ok()) break;
      h.server = server.OnWire(f, &next_to_client, &h.delivered);
    }
    for (const std::string& f : to_client) {
      if (!h.client.ok()) break;
      h.client = client.OnWire(f, &next_to_server, &h.delivered);
    }
    to_server = std::move(next_to_server);
    to_client = std::move(next_to_client);
  }
  return h;
}

Handshake RunHandshake(SecureSession& client, SecureSession& server) {
  Frames to_server, to_client;
  Status c = client.Start(&to_server);
  Status s = server.Start(&to_client);
  if (!c.ok() || !s.ok()) return Handshake{c, s, {}};
  return Pump(client, server, std::move(to_server), std::move(to_client));
}

// Seals `message` on `from` and feeds the frames to `to`; returns what `to` delivered.
std::vector<std::string> Send(SecureSession& from, SecureSession& to, const std::string& message,
                              Frames* frames_out = nullptr) {
  Frames frames, back;
  std::vector<std::string> delivered;
  Status s = from.Seal(message, &frames);
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (const std::string& f : frames) {
    Status r = to.OnWire(f, &back, &delivered);
    EXPECT_TRUE(r.ok()) << r.ToString();
  }
  EXPECT_TRUE(back.empty());
  if (frames_out) *frames_out = std::move(frames);
  return delivered;
}

// A connected pair made with the good PKI.
struct Pair {
  std::unique_ptr<SecureSession> client, server;
};

Pair Connect(std::shared_ptr<TlsContext> client_ctx, std::shared_ptr<TlsContext> server_ctx,
             size_t cap = kDefaultMaxMessageBytes) {
  Pair p{std::make_unique<SecureSession>(client_ctx, cap),
         std::make_unique<SecureSession>(server_ctx, cap)};
  Handshake h = RunHandshake(*p.client, *p.server);
  EXPECT_TRUE(h.client.ok()) << h.client.ToString();
  EXPECT_TRUE(h.server.ok()) << h.server.ToString();
  EXPECT_TRUE(h.delivered.empty());
  EXPECT_TRUE(p.client->established());
  EXPECT_TRUE(p.server->established());
  return p;
}

TEST_F(SecureChannelTest, HandshakeCompletesAndNamesBothPeers) {
  Pair p = Connect(GoodClient(), GoodServer());
  EXPECT_EQ(p.client->peer_name(), "coordinator");
  EXPECT_EQ(p.server->peer_name(), "worker-1");
  EXPECT_EQ(p.server->peer_fingerprint(), pki().client_fingerprint);
  EXPECT_EQ(p.server->peer_fingerprint().size(), 64u);
  EXPECT_NE(p.client->peer_fingerprint(), p.server->peer_fingerprint());
}

TEST_F(SecureChannelTest, ClientWithoutExpectedNameAcceptsAnyCertFromTheCa) {
  Pair p = Connect(Client(pki().client_cert, pki().client_key, pki().ca, ""), GoodServer());
  EXPECT_EQ(p.client->peer_name(), "coordinator");
}

TEST_F(SecureChannelTest, MessagesOfAllSizesRoundTripBothWaysInterleaved) {
  Pair p = Connect(GoodClient(), GoodServer());
  const std::vector<size_t> sizes = {0,     1,     size_t{1} << 20, size_t{20} << 20, 1, 0,
                                     16380, 16381, 100000};
  uint32_t seed = 1;
  for (size_t n : sizes) {
    const std::string up = RandomBytes(n, seed++);
    const std::string down = RandomBytes(n, seed++);
    Frames frames;
    std::vector<std::string> got = Send(*p.client, *p.server, up, &frames);
    ASSERT_EQ(got.size(), 1u) << n;
    EXPECT_TRUE(got[0] == up) << "client->server message of " << n << " bytes differs";
    for (const std::string& f : frames) EXPECT_LE(f.size(), kMaxWireFrameBytes);
    if (n == (size_t{20} << 20)) {
      EXPECT_GE(frames.size(), 3u);
    }
    if (n < 16380) {
      EXPECT_EQ(frames.size(), 1u);
    }
    got = Send(*p.server, *p.client, down);
    ASSERT_EQ(got.size(), 1u) << n;
    EXPECT_TRUE(got[0] == down) << "server->client message of " << n << " bytes differs";
  }
}

// A message sealed from two pieces (a frame's header and its payload where it lies) arrives as
// the one message they make, wherever the pieces end: inside the first record, across it,
// across the 8 MiB frame limit, or empty.
TEST_F(SecureChannelTest, AMessageSealedFromTwoPiecesArrivesWhole) {
  Pair p = Connect(GoodClient(), GoodServer());
  const std::string bytes = RandomBytes((9 << 20) + 123, 31);
  const std::vector<std::pair<size_t, size_t>> cuts = {
      {0, 0},        {5, 0},         {0, 5},           {20, 100},
      {16380, 10},   {16384, 16384}, {40000, 3 << 20}, {100, (9 << 20) + 23},
      {9 << 20, 123}};
  for (const auto& [head, body] : cuts) {
    const std::string_view h(bytes.data(), head), b(bytes.data() + head, body);
    Frames frames, back;
    ASSERT_TRUE(p.client->Seal(h, b, &frames).ok());
    for (const std::string& f : frames) EXPECT_LE(f.size(), kMaxWireFrameBytes);
    std::vector<std::string> got;
    for (const std::string& f : frames) ASSERT_TRUE(p.server->OnWire(f, &back, &got).ok());
    ASSERT_EQ(got.size(), 1u) << head << " + " << body;
    EXPECT_TRUE(got[0] == bytes.substr(0, head + body)) << head << " + " << body;
  }
}

TEST_F(SecureChannelTest, SeveralMessagesInARowAndInOneFrame) {
  Pair p = Connect(GoodClient(), GoodServer());
  // Several sealed before any is delivered.
  std::vector<std::string> sent;
  Frames frames;
  for (int i = 0; i < 5; ++i) {
    sent.push_back(RandomBytes(1000 * i, 100 + i));
    ASSERT_TRUE(p.client->Seal(sent.back(), &frames).ok());
  }
  Frames back;
  std::vector<std::string> got;
  for (const std::string& f : frames) ASSERT_TRUE(p.server->OnWire(f, &back, &got).ok());
  EXPECT_EQ(got, sent);
  // Frames hold whole records, so several frames joined into one are still valid.
  frames.clear();
  for (const std::string& m : sent) ASSERT_TRUE(p.client->Seal(m, &frames).ok());
  std::string joined;
  for (const std::string& f : frames) joined += f;
  got.clear();
  ASSERT_TRUE(p.server->OnWire(joined, &back, &got).ok());
  EXPECT_EQ(got, sent);
  // An authentic message followed by a tampered record in the same frame: nothing is delivered.
  frames.clear();
  ASSERT_TRUE(p.client->Seal("first", &frames).ok());
  ASSERT_TRUE(p.client->Seal("second", &frames).ok());
  joined = frames[0] + frames[1];
  joined.back() = static_cast<char>(joined.back() ^ 1);
  got = {"earlier"};
  EXPECT_FALSE(p.server->OnWire(joined, &back, &got).ok());
  EXPECT_EQ(got, std::vector<std::string>{"earlier"});
}

TEST_F(SecureChannelTest, ClientCertFromAnotherCaIsRejected) {
  SecureSession client(Client(pki().other_client_cert, pki().other_client_key, pki().ca));
  SecureSession server(GoodServer());
  Handshake h = RunHandshake(client, server);
  EXPECT_FALSE(h.server.ok());
  EXPECT_EQ(h.server.code(), Code::kRejected) << h.server.ToString();
  EXPECT_TRUE(Contains(h.server.message(), "certificate")) << h.server.ToString();
  EXPECT_FALSE(server.established());
  EXPECT_TRUE(server.peer_name().empty());
  // The client learns of it from the server's alert.
  EXPECT_FALSE(h.client.ok());
  EXPECT_TRUE(h.delivered.empty());
  // Nothing the client sends afterwards is delivered.
  Frames frames, back;
  std::vector<std::string> got;
  (void)client.Seal("payload", &frames);
  for (const std::string& f : frames) EXPECT_FALSE(server.OnWire(f, &back, &got).ok());
  EXPECT_TRUE(got.empty());
}

TEST_F(SecureChannelTest, ExpiredClientCertIsRejected) {
  SecureSession client(Client(pki().expired_cert, pki().expired_key, pki().ca));
  SecureSession server(GoodServer());
  Handshake h = RunHandshake(client, server);
  EXPECT_EQ(h.server.code(), Code::kRejected) << h.server.ToString();
  EXPECT_TRUE(Contains(h.server.message(), "expired")) << h.server.ToString();
  EXPECT_FALSE(server.established());
  EXPECT_TRUE(h.delivered.empty());
}

TEST_F(SecureChannelTest, ClientWithoutCertIsRejected) {
  // Our own API refuses to build a client without a certificate...
  auto no_cert = TlsContext::Client({"", "", pki().ca, "coordinator"});
  EXPECT_EQ(no_cert.status().code(), Code::kInvalidArgument);
  // ...so a raw OpenSSL client that trusts the CA but presents no certificate plays the part.
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  BIO* ca_bio = BIO_new_mem_buf(pki().ca.data(), static_cast<int>(pki().ca.size()));
  X509* ca = PEM_read_bio_X509(ca_bio, nullptr, nullptr, nullptr);
  ASSERT_NE(ca, nullptr);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(in, -1);
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);

  SecureSession server(GoodServer());
  Frames to_client;
  std::vector<std::string> got;
  ASSERT_TRUE(server.Start(&to_client).ok());
  Status server_status;
  for (int round = 0; round < 5 && server_status.ok(); ++round) {
    for (const std::string& f : to_client) BIO_write(in, f.data(), static_cast<int>(f.size()));
    to_client.clear();
    (void)SSL_do_handshake(ssl);
    if (SSL_is_init_finished(ssl)) {
      const char kData[] = "\x05\x00\x00\x00hello";
      SSL_write(ssl, kData, 9);  // application data right behind the Finished message
    }
    std::string frame(BIO_ctrl_pending(out), '\0');
    if (frame.empty()) break;
    BIO_read(out, frame.data(), static_cast<int>(frame.size()));
    server_status = server.OnWire(frame, &to_client, &got);
  }
  EXPECT_EQ(server_status.code(), Code::kRejected) << server_status.ToString();
  EXPECT_TRUE(Contains(server_status.message(), "did not return a certificate"))
      << server_status.ToString();
  EXPECT_FALSE(server.established());
  EXPECT_TRUE(got.empty());
  SSL_free(ssl);
  X509_free(ca);
  BIO_free(ca_bio);
  SSL_CTX_free(ctx);
  ERR_clear_error();
}

TEST_F(SecureChannelTest, ClientRefusesServerCertFromAnotherCa) {
  SecureSession client(GoodClient());
  SecureSession server(Server(pki().other_server_cert, pki().other_server_key, pki().ca));
  Handshake h = RunHandshake(client, server);
  EXPECT_EQ(h.client.code(), Code::kRejected) << h.client.ToString();
  EXPECT_TRUE(Contains(h.client.message(), "certificate")) << h.client.ToString();
  EXPECT_FALSE(client.established());
  EXPECT_FALSE(server.established());
  EXPECT_TRUE(h.delivered.empty());
}

TEST_F(SecureChannelTest, ClientRefusesServerCertWithTheWrongName) {
  SecureSession client(Client(pki().client_cert, pki().client_key, pki().ca, "aggregator"));
  SecureSession server(GoodServer());
  Handshake h = RunHandshake(client, server);
  EXPECT_EQ(h.client.code(), Code::kRejected) << h.client.ToString();
  EXPECT_TRUE(Contains(h.client.message(), "mismatch")) << h.client.ToString();
  EXPECT_FALSE(client.established());
  EXPECT_FALSE(server.established());
  Frames frames;
  EXPECT_FALSE(client.Seal("x", &frames).ok());
  EXPECT_TRUE(frames.empty());
}

// ---- Issue #20 item 9: the PKI of `shoalctl ca init`, with the enrollment CA ----

// A CA made by security::InitCa, a worker enrolled with a join token (certificate from the
// enrollment CA, chain leaf + enrollment CA) and the coordinator's own credentials.
class EnrollmentCaTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "enrollment_tls_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ca_dir_ = dir_ + "/ca";
    ASSERT_TRUE(security::InitCa(ca_dir_).ok());
    ca_ = ReadFile(security::CaCertPath(ca_dir_));
    auto token = security::CreateJoinToken(ca_dir_, "silo-1", 600);
    ASSERT_TRUE(token.ok()) << token.status().ToString();
    auto parsed = security::ParseJoinToken(*token);
    auto kc = security::MakeKeyAndCsr("silo-1");
    ASSERT_TRUE(parsed.ok() && kc.ok());
    auto chain = security::RedeemJoinToken(ca_dir_, parsed->id, parsed->secret, kc->csr_pem);
    ASSERT_TRUE(chain.ok()) << chain.status().ToString();
    worker_cert_ = *chain;
    worker_key_ = kc->key_pem;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::shared_ptr<TlsContext> CoordinatorTls() {
    auto ctx = TlsContext::Server({ReadFile(security::CoordinatorCertPath(ca_dir_)) + ca_,
                                   ReadFile(security::CoordinatorKeyPath(ca_dir_)), ca_, ""});
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    return ctx.ok() ? *ctx : nullptr;
  }
  std::shared_ptr<TlsContext> WorkerTls() {
    auto ctx = TlsContext::Client({worker_cert_, worker_key_, ca_, "coordinator"});
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    return ctx.ok() ? *ctx : nullptr;
  }
  std::string dir_, ca_dir_, ca_, worker_cert_, worker_key_;
};

TEST_F(EnrollmentCaTlsTest, TokenJoinedWorkerAndCoordinatorAcceptEachOther) {
  Pair p = Connect(WorkerTls(), CoordinatorTls());
  EXPECT_EQ(p.client->peer_name(), "coordinator");
  EXPECT_EQ(p.server->peer_name(), "silo-1");
}

// The attack with what the coordinator holds: each private key in its CA directory issues a
// "coordinator" serverAuth certificate and serves it. A worker must accept none of them: the
// root key is not there, and the enrollment CA is for client certificates only.
TEST_F(EnrollmentCaTlsTest, WorkersRefuseAServerCertificateFromAnyCoordinatorKey) {
  int tried = 0;
  for (const auto& e : fs::directory_iterator(ca_dir_)) {
    if (e.path().extension() != ".key") continue;
    const std::string cert_path = (e.path().parent_path() / e.path().stem()).string() + ".crt";
    X509* issuer = shoal::testing::ParsePemCert(ReadFile(cert_path));
    EVP_PKEY* signer = shoal::testing::ParsePemKey(ReadFile(e.path()));
    ASSERT_TRUE(issuer != nullptr && signer != nullptr) << e.path();
    shoal::testing::ForgedCert forged = shoal::testing::ForgeLeaf(
        issuer, signer, "coordinator", "serverAuth", "DNS:coordinator,IP:127.0.0.1");
    X509_free(issuer);
    EVP_PKEY_free(signer);
    auto server_ctx =
        TlsContext::Server({forged.cert_pem + ReadFile(cert_path), forged.key_pem, ca_, ""});
    ASSERT_TRUE(server_ctx.ok()) << server_ctx.status().ToString();
    SecureSession client(WorkerTls());
    SecureSession server(*server_ctx);
    Handshake h = RunHandshake(client, server);
    EXPECT_EQ(h.client.code(), Code::kRejected)
        << "a worker accepted a coordinator certificate issued with " << e.path();
    EXPECT_FALSE(client.established());
    EXPECT_TRUE(h.delivered.empty());
    ++tried;
  }
  EXPECT_GE(tried, 2);  // coordinator.key and enrollment.key
}

// The enrollment CA vouches for client certificates only: a worker certificate it issued with
// the wrong extendedKeyUsage is refused by the coordinator.
TEST_F(EnrollmentCaTlsTest, CoordinatorRefusesAnEnrollmentCaCertWithTheWrongEku) {
  const std::string enrollment_pem = ReadFile(security::EnrollmentCertPath(ca_dir_));
  X509* issuer = shoal::testing::ParsePemCert(enrollment_pem);
  EVP_PKEY* signer = shoal::testing::ParsePemKey(ReadFile(security::EnrollmentKeyPath(ca_dir_)));
  ASSERT_TRUE(issuer != nullptr && signer != nullptr);
  shoal::testing::ForgedCert wrong =
      shoal::testing::ForgeLeaf(issuer, signer, "silo-2", "serverAuth");
  X509_free(issuer);
  EVP_PKEY_free(signer);
  auto client_ctx =
      TlsContext::Client({wrong.cert_pem + enrollment_pem, wrong.key_pem, ca_, "coordinator"});
  ASSERT_TRUE(client_ctx.ok()) << client_ctx.status().ToString();
  SecureSession client(*client_ctx);
  SecureSession server(CoordinatorTls());
  Handshake h = RunHandshake(client, server);
  EXPECT_EQ(h.server.code(), Code::kRejected) << h.server.ToString();
  EXPECT_FALSE(server.established());
  EXPECT_TRUE(h.delivered.empty());
}

TEST_F(SecureChannelTest, BadConfigsAreInvalidArguments) {
  EXPECT_EQ(TlsContext::Server({"not a pem", pki().server_key, pki().ca, ""}).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(TlsContext::Server({pki().server_cert, pki().client_key, pki().ca, ""}).status().code(),
            Code::kInvalidArgument);  // key of another certificate
  EXPECT_EQ(TlsContext::Server({pki().server_cert, pki().server_key, "", ""}).status().code(),
            Code::kInvalidArgument);  // no CA: would trust nothing or everything
}

TEST_F(SecureChannelTest, FlippedBitAnywhereFailsAndYieldsNothing) {
  auto client_ctx = GoodClient();
  auto server_ctx = GoodServer();
  const std::string message = RandomBytes(3000, 7);
  Frames probe;
  {
    Pair p = Connect(client_ctx, server_ctx);
    ASSERT_TRUE(p.client->Seal(message, &probe).ok());
    ASSERT_EQ(probe.size(), 1u);
  }
  const size_t n = probe[0].size();
  // Record header (type, version, length), first ciphertext byte, middle, tag.
  const std::vector<size_t> positions = {0, 1, 2, 3, 4, 5, n / 2, n - 16, n - 8, n - 1};
  for (size_t pos : positions) {
    for (int bit : {0, 7}) {
      Pair p = Connect(client_ctx, server_ctx);
      Frames frames, back;
      ASSERT_TRUE(p.client->Seal(message, &frames).ok());
      ASSERT_EQ(frames.size(), 1u);
      frames[0][pos] = static_cast<char>(frames[0][pos] ^ (1 << bit));
      std::vector<std::string> got;
      Status s = p.server->OnWire(frames[0], &back, &got);
      EXPECT_FALSE(s.ok()) << "bit " << bit << " of byte " << pos;
      EXPECT_TRUE(got.empty()) << "bit " << bit << " of byte " << pos;
      // Failed for good: an authentic frame is not accepted afterwards.
      Frames more;
      ASSERT_TRUE(p.client->Seal("next", &more).ok());
      EXPECT_FALSE(p.server->OnWire(more[0], &back, &got).ok());
      EXPECT_TRUE(got.empty());
      EXPECT_TRUE(p.server->failed());
    }
  }
}

TEST_F(SecureChannelTest, ReplayedFrameFails) {
  Pair p = Connect(GoodClient(), GoodServer());
  Frames frames;
  std::vector<std::string> got = Send(*p.client, *p.server, "transfer 1", &frames);
  ASSERT_EQ(got.size(), 1u);
  Frames back;
  got.clear();
  Status s = p.server->OnWire(frames[0], &back, &got);
  EXPECT_EQ(s.code(), Code::kProtocol) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "TLS record rejected")) << s.ToString();
  EXPECT_TRUE(got.empty());
  // The alert for the peer.
  EXPECT_FALSE(back.empty());
}

TEST_F(SecureChannelTest, FrameFromAnotherSessionFails) {
  auto client_ctx = GoodClient();
  auto server_ctx = GoodServer();
  Pair a = Connect(client_ctx, server_ctx);
  Pair b = Connect(client_ctx, server_ctx);
  Frames frames, back;
  ASSERT_TRUE(a.client->Seal("for session A", &frames).ok());
  std::vector<std::string> got;
  EXPECT_FALSE(b.server->OnWire(frames[0], &back, &got).ok());
  EXPECT_TRUE(got.empty());
  // A still works.
  got.clear();
  EXPECT_TRUE(a.server->OnWire(frames[0], &back, &got).ok());
  EXPECT_EQ(got, std::vector<std::string>{"for session A"});
}

TEST_F(SecureChannelTest, TruncatedFramesNeverYieldAMessage) {
  auto client_ctx = GoodClient();
  auto server_ctx = GoodServer();
  const std::string message = "short";
  Frames probe;
  {
    Pair p = Connect(client_ctx, server_ctx);
    ASSERT_TRUE(p.client->Seal(message, &probe).ok());
  }
  ASSERT_EQ(probe.size(), 1u);
  const size_t n = probe[0].size();
  for (size_t k = 0; k < n; ++k) {
    Pair p = Connect(client_ctx, server_ctx);
    Frames frames, back;
    ASSERT_TRUE(p.client->Seal(message, &frames).ok());
    ASSERT_EQ(frames[0].size(), n);
    std::vector<std::string> got;
    Status s = p.server->OnWire(std::string_view(frames[0]).substr(0, k), &back, &got);
    EXPECT_EQ(s.code(), Code::kProtocol) << "prefix " << k << ": " << s.ToString();
    EXPECT_TRUE(got.empty()) << "prefix " << k;
    s = p.server->OnWire(std::string_view(frames[0]).substr(k), &back, &got);
    EXPECT_FALSE(s.ok()) << "rest after prefix " << k;
    EXPECT_TRUE(got.empty()) << "rest after prefix " << k;
  }
  // The whole frame is fine.
  Pair p = Connect(client_ctx, server_ctx);
  EXPECT_EQ(Send(*p.client, *p.server, message), std::vector<std::string>{message});

  // A truncated ClientHello is refused too.
  SecureSession client(client_ctx), server(server_ctx);
  Frames hello, back;
  std::vector<std::string> got;
  ASSERT_TRUE(client.Start(&hello).ok());
  ASSERT_EQ(hello.size(), 1u);
  ASSERT_TRUE(server.Start(&back).ok());
  EXPECT_EQ(server.OnWire(hello[0].substr(0, hello[0].size() - 1), &back, &got).code(),
            Code::kProtocol);
}

TEST_F(SecureChannelTest, GarbageIsACleanError) {
  auto server_ctx = GoodServer();
  std::mt19937 rng(3);
  for (int i = 0; i < 50; ++i) {
    SecureSession server(server_ctx);
    Frames back;
    std::vector<std::string> got;
    ASSERT_TRUE(server.Start(&back).ok());
    std::string junk = RandomBytes(1 + rng() % 2000, 1000 + i);
    EXPECT_FALSE(server.OnWire(junk, &back, &got).ok());
    EXPECT_TRUE(got.empty());
  }
  {
    SecureSession server(server_ctx);
    Frames back;
    std::vector<std::string> got;
    ASSERT_TRUE(server.Start(&back).ok());
    Status s = server.OnWire("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &back, &got);
    EXPECT_EQ(s.code(), Code::kProtocol) << s.ToString();
  }
  // Well-formed record headers around garbage, before and after the handshake.
  std::string fake = "\x17\x03\x03\x00\x20" + RandomBytes(32, 5);
  {
    SecureSession server(server_ctx);
    Frames back;
    std::vector<std::string> got;
    ASSERT_TRUE(server.Start(&back).ok());
    EXPECT_EQ(server.OnWire(fake, &back, &got).code(), Code::kProtocol);
  }
  Pair p = Connect(GoodClient(), server_ctx);
  Frames back;
  std::vector<std::string> got;
  Status s = p.server->OnWire(fake, &back, &got);
  EXPECT_EQ(s.code(), Code::kProtocol) << s.ToString();
  EXPECT_TRUE(got.empty());
}

TEST_F(SecureChannelTest, LyingLengthPrefixIsRefusedBeforeAllocation) {
  Pair p = Connect(GoodClient(), GoodServer());
  Frames frames, back;
  std::vector<std::string> got;
  const std::string prefix("\x00\x00\x00\x80", 4);  // 2^31, little-endian
  ASSERT_TRUE(p.client->SealRawForTesting(prefix + "tail", &frames).ok());
  Status s;
  size_t max_allocation = 0;
  {
    testing::AllocationScope scope;
    s = p.server->OnWire(frames[0], &back, &got);
    max_allocation = scope.max_allocation();
  }
  EXPECT_EQ(s.code(), Code::kProtocol) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "2147483648")) << s.ToString();
  EXPECT_TRUE(got.empty());
  EXPECT_LT(max_allocation, size_t{1} << 20);
}

// OpenSSL allocates for a handshake message from the length its header claims, before the
// message arrives (a ClientHello may claim up to 128 KiB). A handshake record in the clear must
// hold whole messages, so a few bytes claiming a large ClientHello are refused up front; the
// real handshakes in the other tests pass the same check.
TEST_F(SecureChannelTest, HandshakeRecordClaimingMoreThanItHoldsIsRefused) {
  auto record = [](const std::string& body) {
    std::string r = {'\x16', '\x03', '\x01', static_cast<char>(body.size() >> 8),
                     static_cast<char>(body.size() & 0xff)};
    return r + body;
  };
  const std::vector<std::string> lies = {
      record(std::string("\x01\x02\x00\x00", 4) + "abcd"),  // ClientHello of 128 KiB, 4 bytes here
      record(std::string("\x01\x00\x00\x05", 4) + "abcd"),  // one byte short
      record(std::string("\x01\x00", 2)),                   // a cut header
      record(std::string("\x01\x00\x00\x01", 4) + "x" + std::string("\x01\x00\x01\x00", 4)),
  };
  for (const std::string& frame : lies) {
    SecureSession server(GoodServer());
    Frames out;
    std::vector<std::string> got;
    ASSERT_TRUE(server.Start(&out).ok());
    Status s = server.OnWire(frame, &out, &got);
    EXPECT_EQ(s.code(), Code::kProtocol) << s.ToString();
    EXPECT_TRUE(Contains(s.message(), "must not be split across records")) << s.ToString();
    EXPECT_TRUE(got.empty());
  }
}

TEST_F(SecureChannelTest, CapIsEnforcedExactly) {
  const size_t cap = 1000;
  Pair p = Connect(GoodClient(), GoodServer(), cap);
  EXPECT_EQ(Send(*p.client, *p.server, std::string(cap, 'a')),
            std::vector<std::string>{std::string(cap, 'a')});
  Frames frames, back;
  std::vector<std::string> got;
  ASSERT_TRUE(p.client->Seal(std::string(cap + 1, 'b'), &frames).ok());
  Status s = p.server->OnWire(frames[0], &back, &got);
  EXPECT_EQ(s.code(), Code::kProtocol) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "exceeds the limit")) << s.ToString();
  EXPECT_TRUE(got.empty());
}

TEST_F(SecureChannelTest, MessageSplitAcrossRecordsAndFramesReassembles) {
  // The prefix announces more than the first frame carries: the message waits for the rest.
  Pair p = Connect(GoodClient(), GoodServer());
  Frames first, second, back;
  std::vector<std::string> got;
  ASSERT_TRUE(p.client->SealRawForTesting(std::string("\x06\x00\x00\x00", 4) + "abc", &first).ok());
  ASSERT_TRUE(p.client->SealRawForTesting("def", &second).ok());
  ASSERT_TRUE(p.server->OnWire(first[0], &back, &got).ok());
  EXPECT_TRUE(got.empty());
  ASSERT_TRUE(p.server->OnWire(second[0], &back, &got).ok());
  EXPECT_EQ(got, std::vector<std::string>{"abcdef"});
}

TEST_F(SecureChannelTest, SealBeforeHandshakeFails) {
  SecureSession client(GoodClient());
  SecureSession server(GoodServer());
  Frames frames;
  EXPECT_FALSE(client.Seal("early", &frames).ok());
  EXPECT_TRUE(frames.empty());
  ASSERT_TRUE(client.Start(&frames).ok());
  ASSERT_EQ(frames.size(), 1u);  // ClientHello
  Frames more;
  EXPECT_FALSE(client.Seal("early", &more).ok());
  EXPECT_FALSE(server.Seal("early", &more).ok());
  EXPECT_TRUE(more.empty());
  // The refusal does not break the session: the handshake still completes.
  ASSERT_TRUE(server.Start(&more).ok());
  Handshake h = Pump(client, server, frames, {});
  EXPECT_TRUE(h.client.ok()) << h.client.ToString();
  EXPECT_TRUE(h.server.ok()) << h.server.ToString();
  EXPECT_TRUE(client.established());
  EXPECT_TRUE(server.established());
}

TEST_F(SecureChannelTest, OverZeroMqDealerAndRouter) {
  StreamListener router;
  auto endpoint = router.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  StreamConnection dealer;
  ASSERT_TRUE(dealer.Connect(*endpoint).ok());

  SecureSession client(GoodClient());
  SecureSession server(GoodServer());
  Frames out;
  std::vector<std::string> client_got, server_got;
  ASSERT_TRUE(server.Start(&out).ok());
  ASSERT_TRUE(client.Start(&out).ok());
  for (const std::string& f : out) ASSERT_TRUE(dealer.Send(f).ok());

  const std::string up = RandomBytes(size_t{1} << 20, 11);
  const std::string down = RandomBytes(12345, 12);
  std::string peer;
  bool sent_up = false, sent_down = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((client_got.empty() || server_got.empty()) &&
         std::chrono::steady_clock::now() < deadline) {
    auto in = router.Recv(10);
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    if (in->has_value()) {
      peer = (*in)->peer;
      Frames reply;
      ASSERT_TRUE(server.OnWire((*in)->frame, &reply, &server_got).ok());
      for (const std::string& f : reply) ASSERT_TRUE(router.Send(peer, f).ok());
    }
    auto back = dealer.Recv(10);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    if (back->has_value()) {
      Frames reply;
      ASSERT_TRUE(client.OnWire(**back, &reply, &client_got).ok());
      for (const std::string& f : reply) ASSERT_TRUE(dealer.Send(f).ok());
    }
    if (client.established() && !sent_up) {
      Frames frames;
      ASSERT_TRUE(client.Seal(up, &frames).ok());
      for (const std::string& f : frames) ASSERT_TRUE(dealer.Send(f).ok());
      sent_up = true;
    }
    if (server.established() && !sent_down) {
      Frames frames;
      ASSERT_TRUE(server.Seal(down, &frames).ok());
      for (const std::string& f : frames) ASSERT_TRUE(router.Send(peer, f).ok());
      sent_down = true;
    }
  }
  ASSERT_EQ(server_got.size(), 1u);
  ASSERT_EQ(client_got.size(), 1u);
  EXPECT_TRUE(server_got[0] == up);
  EXPECT_TRUE(client_got[0] == down);
  EXPECT_EQ(server.peer_name(), "worker-1");
  EXPECT_EQ(client.peer_name(), "coordinator");
}

// ---- Payload placement (placement.h) ----

// A codec frame: a WeightsChunk head and `payload` (a view: the caller keeps it).
FramePieces ChunkFrame(const std::string& payload, uint32_t index = 0) {
  WeightsChunk c;
  c.round = 7;
  c.index = index;
  c.count = 1;
  return {internal::BuildFrameHead(WeightsChunk::kType, internal::EncodeHeader(c), payload.size()),
          payload};
}

// Records what the placer was asked and hands out one buffer per call.
struct RecordingPlacer {
  struct Call {
    std::string head;
    size_t payload_bytes;
    std::shared_ptr<std::vector<char>> buffer;
  };
  std::vector<Call> calls;
  bool decline = false;

  SecureSession::PayloadPlacer Fn() {
    return [this](std::string_view head, size_t payload_bytes) -> PayloadPlacement {
      auto buffer = std::make_shared<std::vector<char>>(payload_bytes, '\0');
      calls.push_back({std::string(head), payload_bytes, buffer});
      if (decline) return {};
      return {buffer->data(), buffer};
    };
  }
};

// Seals `message` from `from` (as head + body) and feeds every frame to `to`.
std::vector<Plaintext> SendPieces(SecureSession& from, SecureSession& to, const FramePieces& f,
                                  Frames* frames_out = nullptr) {
  Frames frames, back;
  std::vector<Plaintext> delivered;
  Status s = from.Seal(f.head, f.payload, &frames);
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (const std::string& frame : frames) {
    Status r = to.OnWire(frame, &back, &delivered);
    EXPECT_TRUE(r.ok()) << r.ToString();
  }
  if (frames_out) *frames_out = std::move(frames);
  return delivered;
}

// The payload of a codec frame is decrypted into the placer's buffer, the head into the message,
// for payloads inside the first record, across records and across several wire frames.
TEST_F(SecureChannelTest, PlacedPayloadIsDecryptedWhereThePlacerSays) {
  Pair p = Connect(GoodClient(), GoodServer());
  RecordingPlacer placer;
  p.server->set_payload_placer(placer.Fn());
  uint32_t seed = 40;
  for (size_t n : {size_t{1}, size_t{4}, size_t{16000}, size_t{1} << 20, (size_t{9} << 20) + 12}) {
    const std::string payload = RandomBytes(n, seed++);
    const FramePieces f = ChunkFrame(payload);
    Frames frames;
    std::vector<Plaintext> got = SendPieces(*p.client, *p.server, f, &frames);
    ASSERT_EQ(got.size(), 1u) << n;
    ASSERT_FALSE(placer.calls.empty());
    const RecordingPlacer::Call& call = placer.calls.back();
    EXPECT_EQ(call.head, f.head) << n;  // asked with the whole head, before the payload
    EXPECT_EQ(call.payload_bytes, n);
    EXPECT_TRUE(got[0].placed);
    EXPECT_EQ(got[0].bytes, f.head);
    EXPECT_EQ(got[0].payload.data(), call.buffer->data());  // not a copy
    EXPECT_EQ(got[0].payload.size(), n);
    EXPECT_TRUE(std::string(call.buffer->begin(), call.buffer->end()) == payload) << n;
    if (n > kMaxWireFrameBytes) EXPECT_GE(frames.size(), 2u);
    // The placed message parses as the frame it is.
    auto view = ParseFrame(got[0].bytes, got[0].payload, Limits{kMaxHeaderBytes, kMaxChunkBytes});
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    EXPECT_TRUE(view->payload_placed);
    EXPECT_EQ(view->type, MessageType::kWeightsChunk);
    EXPECT_TRUE(std::move(got[0]).Join() == f.head + payload);
  }
  EXPECT_EQ(placer.calls.size(), 5u);
  // The one-string form of OnWire joins the placed payload back behind its head.
  const std::string payload = RandomBytes(5000, 3);
  const FramePieces f = ChunkFrame(payload);
  Frames frames, back;
  ASSERT_TRUE(p.client->Seal(f.head, f.payload, &frames).ok());
  std::vector<std::string> whole;
  for (const std::string& frame : frames) ASSERT_TRUE(p.server->OnWire(frame, &back, &whole).ok());
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_TRUE(whole[0] == f.head + payload);
}

// Messages that are not codec frames with a payload are never offered to the placer, and a
// declined placement reads the message whole; either way the bytes arrive unchanged, in order.
TEST_F(SecureChannelTest, UnclaimedOrUnsplittableMessagesArriveWhole) {
  Pair p = Connect(GoodClient(), GoodServer());
  RecordingPlacer placer;
  p.server->set_payload_placer(placer.Fn());
  const std::string good_payload = RandomBytes(3000, 5);
  const FramePieces good = ChunkFrame(good_payload);
  std::string bad_magic = good.head + std::string(good.payload);
  bad_magic[0] = 'X';
  std::string bad_version = good.head + std::string(good.payload);
  bad_version[4] = static_cast<char>(bad_version[4] + 1);
  std::string long_payload_length = good.head + std::string(good.payload);
  long_payload_length[12] = static_cast<char>(long_payload_length[12] + 1);  // 16 + H + P != size
  const std::string no_payload = internal::BuildFrame(MessageType::kHeartbeat, "", "");
  const std::vector<std::string> messages = {"",
                                             "hello",
                                             std::string(16, 'S'),
                                             bad_magic,
                                             bad_version,
                                             long_payload_length,
                                             no_payload,
                                             std::string(no_payload) + "trailing"};
  for (const std::string& m : messages) {
    std::vector<Plaintext> got = SendPieces(*p.client, *p.server, FramePieces{m, {}});
    ASSERT_EQ(got.size(), 1u);
    EXPECT_FALSE(got[0].placed);
    EXPECT_TRUE(got[0].bytes == m);
  }
  EXPECT_TRUE(placer.calls.empty());
  // Declined: asked once, read whole.
  placer.decline = true;
  std::vector<Plaintext> got = SendPieces(*p.client, *p.server, good);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FALSE(got[0].placed);
  EXPECT_TRUE(got[0].bytes == good.head + std::string(good.payload));
  EXPECT_EQ(placer.calls.size(), 1u);
  // Several placed and unplaced messages in one frame keep their order.
  placer.decline = false;
  Frames frames, back;
  const std::string second_payload = RandomBytes(70000, 6);
  const FramePieces second = ChunkFrame(second_payload, 1);
  ASSERT_TRUE(p.client->Seal(good.head, good.payload, &frames).ok());
  ASSERT_TRUE(p.client->Seal("between", &frames).ok());
  ASSERT_TRUE(p.client->Seal(second.head, second.payload, &frames).ok());
  std::string joined;
  for (const std::string& f : frames) joined += f;
  got.clear();
  ASSERT_TRUE(p.server->OnWire(joined, &back, &got).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got[0].placed && got[0].payload == good.payload);
  EXPECT_TRUE(!got[1].placed && got[1].bytes == "between");
  EXPECT_TRUE(got[2].placed && got[2].payload == second.payload);
}

// A placed message that is cut short delivers nothing; one whose later record is tampered with
// fails the session, delivers nothing, and lets the placer's buffer go.
TEST_F(SecureChannelTest, PlacedMessageCutShortOrTamperedDeliversNothing) {
  Pair p = Connect(GoodClient(), GoodServer());
  RecordingPlacer placer;
  p.server->set_payload_placer(placer.Fn());
  const std::string payload = RandomBytes((size_t{9} << 20) + 4, 8);  // two wire frames
  const FramePieces f = ChunkFrame(payload);
  Frames frames, back;
  ASSERT_TRUE(p.client->Seal(f.head, f.payload, &frames).ok());
  ASSERT_EQ(frames.size(), 2u);
  std::vector<Plaintext> got;
  ASSERT_TRUE(p.server->OnWire(frames[0], &back, &got).ok());
  EXPECT_TRUE(got.empty());  // the payload is not all there yet
  ASSERT_EQ(placer.calls.size(), 1u);
  std::weak_ptr<std::vector<char>> buffer = placer.calls[0].buffer;
  placer.calls.clear();  // the receiver drops its reference: the session keeps the buffer
  ASSERT_FALSE(buffer.expired());
  frames[1][frames[1].size() / 2] ^= 1;
  EXPECT_FALSE(p.server->OnWire(frames[1], &back, &got).ok());
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(buffer.expired());  // the failed session holds nothing

  // The receiver drops its reference mid-message: the session writes into a buffer still
  // allocated, and the delivered message keeps it until it is gone.
  Pair q = Connect(GoodClient(), GoodServer());
  q.server->set_payload_placer(placer.Fn());
  frames.clear();
  ASSERT_TRUE(q.client->Seal(f.head, f.payload, &frames).ok());
  ASSERT_TRUE(q.server->OnWire(frames[0], &back, &got).ok());
  buffer = placer.calls.at(0).buffer;
  placer.calls.clear();
  ASSERT_TRUE(q.server->OnWire(frames[1], &back, &got).ok());
  ASSERT_EQ(got.size(), 1u);
  ASSERT_FALSE(buffer.expired());
  EXPECT_TRUE(got[0].payload == payload);
  got.clear();
  EXPECT_TRUE(buffer.expired());
}

// The channels above the session: a worker's chunk is placed on the coordinator's side, the
// coordinator's on the worker's, over ZeroMQ on loopback; other messages arrive whole.
TEST_F(SecureChannelTest, ChannelsPlacePayloadsBothWays) {
  ChannelOptions server_options;
  server_options.tls = GoodServer();
  server_options.require_admission = false;  // no application here to admit the client
  ServerChannel server(server_options);
  std::map<std::string, std::shared_ptr<std::string>> server_buffers;
  server.set_payload_placer(
      [&](const std::string& peer, std::string_view head, size_t bytes) -> PayloadPlacement {
        if (!ParseFrameHead(head, bytes, Limits{}).ok()) return {};
        auto buffer = std::make_shared<std::string>(bytes, '\0');
        server_buffers[peer] = buffer;
        return {buffer->data(), buffer};
      });
  auto endpoint = server.Bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  ChannelOptions client_options;
  client_options.tls = GoodClient();
  ClientChannel client(client_options);
  std::shared_ptr<std::string> client_buffer;
  client.set_payload_placer([&](std::string_view, size_t bytes) -> PayloadPlacement {
    client_buffer = std::make_shared<std::string>(bytes, '\0');
    return {client_buffer->data(), client_buffer};
  });
  ASSERT_TRUE(client.Connect(*endpoint).ok());
  const std::string up = RandomBytes(size_t{1} << 20, 21);
  const FramePieces up_frame = ChunkFrame(up);
  ASSERT_TRUE(client.Send("hello").ok());  // queued until the handshake is done
  ASSERT_TRUE(client.Send(up_frame.head, up_frame.payload).ok());

  std::vector<ChannelMessage> at_server;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (at_server.size() < 2 && std::chrono::steady_clock::now() < deadline) {
    auto in = server.Recv(10);
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    if (in->has_value()) at_server.push_back(std::move(**in));
    ASSERT_TRUE(client.Recv(1).ok());  // the client's side of the handshake
  }
  ASSERT_EQ(at_server.size(), 2u);
  EXPECT_FALSE(at_server[0].placed);
  EXPECT_EQ(at_server[0].message, "hello");
  const ChannelMessage& chunk = at_server[1];
  ASSERT_TRUE(chunk.placed);
  EXPECT_EQ(chunk.message, up_frame.head);
  ASSERT_EQ(server_buffers.count(chunk.peer), 1u);
  EXPECT_EQ(chunk.placed_payload.data(), server_buffers[chunk.peer]->data());
  EXPECT_TRUE(chunk.placed_payload == up);
  EXPECT_EQ(chunk.identity, "worker-1");

  const std::string down = RandomBytes(3 << 20, 22);  // sent in slices: several wire frames
  const FramePieces down_frame = ChunkFrame(down);
  ASSERT_TRUE(server.Send(chunk.peer, down_frame.head + down).ok());
  std::optional<Plaintext> at_client;
  while (!at_client && std::chrono::steady_clock::now() < deadline) {
    server.PumpOutput();
    auto in = client.RecvMessage(10);
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    at_client = std::move(*in);
  }
  ASSERT_TRUE(at_client.has_value());
  ASSERT_TRUE(at_client->placed);
  EXPECT_EQ(at_client->bytes, down_frame.head);
  EXPECT_EQ(at_client->payload.data(), client_buffer->data());
  EXPECT_TRUE(at_client->payload == down);
}

}  // namespace
}  // namespace shoal::protocols
