// Join tokens, CSRs, revocation and the CA's state files.
#include "tests/security/pki_test_support.h"

namespace shoal::security {
namespace {

using namespace pki_fixture;  // NOLINT(build/namespaces): the shared helpers and fixture

TEST_F(PkiTest, JoinTokenRoundTrip) {
  InitDefaultCa();
  auto token = CreateJoinToken(ca_, "silo-7", 3600, "tcp://coord.lan:6000");
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(token->rfind("shoal1.", 0), 0u) << *token;

  auto parsed = ParseJoinToken(*token);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->id.size(), 16u);
  EXPECT_EQ(parsed->secret.size(), 32u);
  EXPECT_EQ(parsed->ca_fingerprint, *CaFingerprint(CaPem()));
  EXPECT_EQ(parsed->coordinator_address, "tcp://coord.lan:6000");
  // What a worker does with the CA certificate it fetched from the coordinator.
  EXPECT_TRUE(CheckCertMatchesFingerprint(CaPem(), parsed->ca_fingerprint).ok());

  auto key_and_csr = MakeKeyAndCsr("silo-7");
  ASSERT_TRUE(key_and_csr.ok()) << key_and_csr.status().ToString();
  auto cert = RedeemJoinToken(ca_, parsed->id, parsed->secret, key_and_csr->csr_pem);
  ASSERT_TRUE(cert.ok()) << cert.status().ToString();

  auto info = VerifyPeerCert(CaPem(), *cert);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->common_name, "silo-7");
  EXPECT_TRUE(info->client_auth);
  EXPECT_FALSE(info->server_auth);

  // The certificate carries the worker's own key.
  X509Ptr x = ReadCert(*cert);
  const std::string& key_pem = key_and_csr->key_pem;
  BIO* bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(X509_check_private_key(x.get(), key), 1);
  EVP_PKEY_free(key);

  auto enrolled = ListEnrolled(ca_);
  ASSERT_TRUE(enrolled.ok());
  ASSERT_EQ(enrolled->size(), 1u);
  EXPECT_EQ((*enrolled)[0].how, "token");
  EXPECT_EQ((*enrolled)[0].serial, info->serial);

  json tokens = json::parse(Slurp(ca_ + "/tokens.json"));
  ASSERT_EQ(tokens.at("tokens").size(), 1u);
  EXPECT_EQ(tokens["tokens"][0].at("used"), true);
  EXPECT_EQ(tokens["tokens"][0].at("name"), "silo-7");
}

TEST_F(PkiTest, ReusedTokenFails) {
  InitDefaultCa();
  ParsedToken t = NewToken("w1");
  auto first = RedeemJoinToken(ca_, t.id, t.secret, MakeKeyAndCsr("w1")->csr_pem);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = RedeemJoinToken(ca_, t.id, t.secret, MakeKeyAndCsr("w1")->csr_pem);
  EXPECT_EQ(second.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(second.status().message(), "already used")) << second.status().message();
  EXPECT_EQ(ListEnrolled(ca_)->size(), 1u);
}

TEST_F(PkiTest, ExpiredTokenFails) {
  InitDefaultCa();
  const int64_t now = std::time(nullptr);
  ParsedToken t = NewToken("w1", 600, now);
  const std::string csr = MakeKeyAndCsr("w1")->csr_pem;
  auto late = RedeemJoinToken(ca_, t.id, t.secret, csr, now + 600);
  EXPECT_EQ(late.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(late.status().message(), "expired")) << late.status().message();
  // One second before expiry it still works.
  EXPECT_TRUE(RedeemJoinToken(ca_, t.id, t.secret, csr, now + 599).ok());
}

TEST_F(PkiTest, WrongSecretAndUnknownTokenFail) {
  InitDefaultCa();
  ParsedToken t = NewToken("w1");
  const std::string csr = MakeKeyAndCsr("w1")->csr_pem;
  std::string wrong = t.secret;
  wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
  auto bad = RedeemJoinToken(ca_, t.id, wrong, csr);
  EXPECT_EQ(bad.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(bad.status().message(), "wrong secret")) << bad.status().message();

  std::string other_id = t.id;
  other_id[0] = other_id[0] == 'a' ? 'b' : 'a';
  auto unknown = RedeemJoinToken(ca_, other_id, t.secret, csr);
  EXPECT_EQ(unknown.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(unknown.status().message(), "unknown join token"))
      << unknown.status().message();

  EXPECT_EQ(RedeemJoinToken(ca_, "XYZ", t.secret, csr).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(RedeemJoinToken(ca_, t.id, "00", csr).status().code(), Code::kInvalidArgument);
  // Failed attempts do not burn the token.
  EXPECT_TRUE(RedeemJoinToken(ca_, t.id, t.secret, csr).ok());
}

TEST_F(PkiTest, CsrWithOtherNameOrBadCsrFails) {
  InitDefaultCa();
  ParsedToken t = NewToken("w1");
  auto other = RedeemJoinToken(ca_, t.id, t.secret, MakeKeyAndCsr("w2")->csr_pem);
  EXPECT_EQ(other.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(other.status().message(), "CSR common name \"w2\""))
      << other.status().message();

  auto garbage =
      RedeemJoinToken(ca_, t.id, t.secret, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n");
  EXPECT_EQ(garbage.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(garbage.status().message(), "bad CSR")) << garbage.status().message();
  EXPECT_EQ(RedeemJoinToken(ca_, t.id, t.secret, "").status().code(), Code::kInvalidArgument);

  // A CSR carrying one key but signed by another: its signature does not verify.
  EVP_PKEY* key = EVP_EC_gen("P-256");
  EVP_PKEY* other_key = EVP_EC_gen("P-256");
  auto forged = RedeemJoinToken(ca_, t.id, t.secret, CsrPem("w1", key, other_key));
  EXPECT_EQ(forged.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(forged.status().message(), "signature does not verify"))
      << forged.status().message();
  // The same CSR signed properly is accepted below; a P-384 key is not.
  EVP_PKEY* p384 = EVP_EC_gen("P-384");
  auto wrong_curve = RedeemJoinToken(ca_, t.id, t.secret, CsrPem("w1", p384, p384));
  EXPECT_EQ(wrong_curve.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(wrong_curve.status().message(), "not ECDSA P-256"))
      << wrong_curve.status().message();
  const std::string good = CsrPem("w1", key, key);
  EVP_PKEY_free(key);
  EVP_PKEY_free(other_key);
  EVP_PKEY_free(p384);

  // None of these burned the token.
  auto cert = RedeemJoinToken(ca_, t.id, t.secret, good);
  EXPECT_TRUE(cert.ok()) << cert.status().ToString();
}

TEST_F(PkiTest, MalformedTokensFailToParse) {
  const std::string id(16, 'a'), secret(32, 'b'), fp(64, 'c');
  const std::string addr = "dGNwOi8vMTI3LjAuMC4xOjU1NTU";  // tcp://127.0.0.1:5555
  ASSERT_TRUE(ParseJoinToken("shoal1." + id + "." + secret + "." + fp + "." + addr).ok());
  EXPECT_EQ(
      ParseJoinToken("shoal1." + id + "." + secret + "." + fp + "." + addr)->coordinator_address,
      "tcp://127.0.0.1:5555");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "parts"},
      {"shoal1", "parts"},
      {"shoal1....", "id"},
      {"shoal2." + id + "." + secret + "." + fp + "." + addr, "start with"},
      {"SHOAL1." + id + "." + secret + "." + fp + "." + addr, "start with"},
      {"shoal1." + id + "." + secret + "." + fp, "parts"},
      {"shoal1." + id + "." + secret + "." + fp + "." + addr + ".x", "parts"},
      {"shoal1." + id.substr(1) + "." + secret + "." + fp + "." + addr, "id"},
      {"shoal1." + id + "0." + secret + "." + fp + "." + addr, "id"},
      {"shoal1.gggggggggggggggg." + secret + "." + fp + "." + addr, "id"},
      {"shoal1." + std::string(16, 'A') + "." + secret + "." + fp + "." + addr, "id"},
      {"shoal1." + id + "." + secret.substr(2) + "." + fp + "." + addr, "secret"},
      {"shoal1." + id + "." + std::string(31, 'b') + "z." + fp + "." + addr, "secret"},
      {"shoal1." + id + "." + secret + "." + fp.substr(1) + "." + addr, "fingerprint"},
      {"shoal1." + id + "." + secret + "." + fp + ".", "no coordinator"},
      {"shoal1." + id + "." + secret + "." + fp + ".a+b/", "base64url"},
      {"shoal1." + id + "." + secret + "." + fp + ".aGVsbG8", "coordinator address"},
      {"shoal1." + id + "." + secret + "." + fp + ".dGNwOi8vMTI3LjAuMC4xOjU1NTV", "trailing bits"},
      {"shoal1." + id + "." + secret + "." + fp + "." + addr + "=", "base64url"},
      {std::string(5000, '.'), "limit"},
      {std::string("shoal1.\0", 8) + id.substr(1) + "." + secret + "." + fp + "." + addr, "id"},
  };
  for (const auto& [token, expected] : cases) {
    auto parsed = ParseJoinToken(token);
    ASSERT_FALSE(parsed.ok()) << token;
    EXPECT_EQ(parsed.status().code(), Code::kInvalidArgument) << token;
    EXPECT_TRUE(Contains(parsed.status().message(), expected))
        << token << " -> " << parsed.status().message();
  }
}

TEST_F(PkiTest, TokenAddressesRoundTrip) {
  InitDefaultCa();
  for (const char* address : {"tcp://a:1", "tcp://ab:12", "tcp://abc:123", "tcp://[::1]:5555",
                              "tcp://coord-1.example.org:65535"}) {
    auto token = CreateJoinToken(ca_, "w", 60, address);
    ASSERT_TRUE(token.ok()) << address << ": " << token.status().ToString();
    auto parsed = ParseJoinToken(*token);
    ASSERT_TRUE(parsed.ok()) << *token << ": " << parsed.status().ToString();
    EXPECT_EQ(parsed->coordinator_address, address);
  }
  EXPECT_EQ(CreateJoinToken(ca_, "w", 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(CreateJoinToken(ca_, "w", 31 * kDay).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(CreateJoinToken(ca_, "bad name", 60).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(CreateJoinToken(root_ + "/none", "w", 60).status().code(), Code::kNotFound);
}

TEST_F(PkiTest, RevokeAndRevokedNames) {
  InitDefaultCa();
  ASSERT_TRUE(Enroll(ca_, "w1", root_ + "/w1", "").ok());
  ASSERT_TRUE(Enroll(ca_, "w2", root_ + "/w2", "").ok());
  EXPECT_TRUE(RevokedNames(ca_)->empty());

  ASSERT_TRUE(Revoke(ca_, "w1").ok());
  auto names = RevokedNames(ca_);
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(*names, (std::set<std::string>{"w1"}));
  auto w1 = VerifyPeerCert(CaPem(), Slurp(BundleCertPath(root_ + "/w1")));
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ(RevokedSerials(ca_)->count(w1->serial), 1u);

  auto enrolled = ListEnrolled(ca_);
  ASSERT_TRUE(enrolled.ok());
  ASSERT_EQ(enrolled->size(), 2u);
  EXPECT_TRUE((*enrolled)[0].revoked);
  EXPECT_FALSE((*enrolled)[1].revoked);

  // Idempotent.
  EXPECT_TRUE(Revoke(ca_, "w1").ok());
  EXPECT_EQ(*RevokedNames(ca_), (std::set<std::string>{"w1"}));
  json revoked = json::parse(Slurp(ca_ + "/revoked.json"));
  EXPECT_EQ(revoked.at("revoked").size(), 1u);

  // Unknown names fail.
  Status unknown = Revoke(ca_, "nobody");
  EXPECT_EQ(unknown.code(), Code::kNotFound);
  EXPECT_TRUE(Contains(unknown.message(), "\"nobody\"")) << unknown.message();

  // A revoked name cannot come back, by bundle or by token.
  EXPECT_EQ(Enroll(ca_, "w1", root_ + "/w1-again", "").code(), Code::kRejected);
  EXPECT_EQ(CreateJoinToken(ca_, "w1", 60).status().code(), Code::kRejected);
}

TEST_F(PkiTest, TokenIssuedBeforeRevocationCannotBeRedeemed) {
  InitDefaultCa();
  ParsedToken t = NewToken("w1");
  ASSERT_TRUE(Enroll(ca_, "w1", root_ + "/w1", "").ok());
  ASSERT_TRUE(Revoke(ca_, "w1").ok());
  auto cert = RedeemJoinToken(ca_, t.id, t.secret, MakeKeyAndCsr("w1")->csr_pem);
  EXPECT_EQ(cert.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(cert.status().message(), "revoked")) << cert.status().message();
}

TEST_F(PkiTest, SecretsAreNeverStored) {
  InitDefaultCa();
  ParsedToken redeemed = NewToken("w1");
  ParsedToken pending = NewToken("w2");
  ASSERT_TRUE(
      RedeemJoinToken(ca_, redeemed.id, redeemed.secret, MakeKeyAndCsr("w1")->csr_pem).ok());
  ASSERT_TRUE(Revoke(ca_, "w1").ok());
  int files = 0;
  for (const auto& entry : fs::directory_iterator(ca_)) {
    const std::string text = Slurp(entry.path().string());
    for (const std::string& secret : {redeemed.secret, pending.secret}) {
      EXPECT_FALSE(Contains(text, secret)) << entry.path() << " contains a token secret";
    }
    ++files;
  }
  EXPECT_GE(files, 8);
  // The ids are stored (that is how a token is found), the secrets only as hashes.
  const std::string tokens = Slurp(ca_ + "/tokens.json");
  EXPECT_TRUE(Contains(tokens, pending.id));
  EXPECT_TRUE(Contains(tokens, "secret_sha256"));
  EXPECT_FALSE(Contains(Slurp(ca_ + "/issued.json"), pending.secret));
}

TEST_F(PkiTest, CheckCertMatchesFingerprintValidatesInput) {
  InitDefaultCa();
  std::string fp = *CaFingerprint(CaPem());
  std::string upper = fp;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(CheckCertMatchesFingerprint(CaPem(), upper).ok());
  std::string wrong = fp;
  wrong[10] = wrong[10] == '0' ? '1' : '0';
  Status mismatch = CheckCertMatchesFingerprint(CaPem(), wrong);
  EXPECT_EQ(mismatch.code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(mismatch.message(), "does not match")) << mismatch.message();
  EXPECT_EQ(CheckCertMatchesFingerprint(CaPem(), fp.substr(2)).code(), Code::kInvalidArgument);
  EXPECT_EQ(CheckCertMatchesFingerprint(CaPem(), std::string(64, 'x')).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(CheckCertMatchesFingerprint("not pem", fp).code(), Code::kInvalidArgument);
}

TEST_F(PkiTest, CorruptStateFilesAreReported) {
  InitDefaultCa();
  ASSERT_TRUE(Enroll(ca_, "w1", root_ + "/w1", "").ok());
  Spit(ca_ + "/issued.json", "{\"certificates\": [{\"name\": 5}]}");
  auto enrolled = ListEnrolled(ca_);
  EXPECT_EQ(enrolled.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(enrolled.status().message(), "issued.json")) << enrolled.status().message();
  Spit(ca_ + "/tokens.json", "[1,2");
  EXPECT_EQ(CreateJoinToken(ca_, "w2", 60).status().code(), Code::kCorrupt);
  Spit(ca_ + "/tokens.json", "{\"tokens\": [{\"id\": 7}, 3]}");
  EXPECT_EQ(
      RedeemJoinToken(ca_, std::string(16, 'a'), std::string(32, 'b'), MakeKeyAndCsr("w2")->csr_pem)
          .status()
          .code(),
      Code::kNotFound);
}

}  // namespace
}  // namespace shoal::security
