#include "security/pki.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/testing/forge_cert.h"

namespace shoal::security {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kDay = 24 * 3600;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void Spit(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

unsigned Mode(const std::string& path) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0) return 0;
  return sb.st_mode & 0777;
}

struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

// Parses a certificate with OpenSSL directly, independently of the code under test.
X509Ptr ReadCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509Ptr cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return cert;
}

bool ExtensionIsCritical(X509* cert, int nid) {
  int index = X509_get_ext_by_NID(cert, nid, -1);
  return index >= 0 && X509_EXTENSION_get_critical(X509_get_ext(cert, index)) == 1;
}

// A CSR for `cn` carrying `subject_key`'s public key, signed by `signer`.
std::string CsrPem(const std::string& cn, EVP_PKEY* subject_key, EVP_PKEY* signer) {
  X509_REQ* req = X509_REQ_new();
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req, subject_key);
  X509_REQ_sign(req, signer, EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(bio, req);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  X509_REQ_free(req);
  return pem;
}

int64_t ToUnixForTest(const ASN1_TIME* t) {
  std::tm tm{};
  ASN1_TIME_to_tm(t, &tm);
  return static_cast<int64_t>(timegm(&tm));
}

class PkiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "pki_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    ca_ = root_ + "/ca";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  void InitDefaultCa() { ASSERT_TRUE(InitCa(ca_).ok()); }
  std::string CaPem() const { return Slurp(CaCertPath(ca_)); }

  // Creates a token for `name` and returns it parsed.
  ParsedToken NewToken(const std::string& name, int64_t ttl = 3600, int64_t now = 0) {
    auto token = CreateJoinToken(ca_, name, ttl, "", now);
    EXPECT_TRUE(token.ok()) << token.status().ToString();
    if (!token.ok()) return ParsedToken();
    auto parsed = ParseJoinToken(*token);
    EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
    return parsed.ok() ? *parsed : ParsedToken();
  }

  std::string root_;
  std::string ca_;
};

TEST_F(PkiTest, InitCaCreatesFilesWithPrivateKeys) {
  InitDefaultCa();
  // The root key lives in the root directory beside the CA directory, never in it.
  const std::string root_ca = DefaultRootDir(ca_);
  for (const auto& path : {CaKeyPath(root_ca), CaCertPath(root_ca), CaCertPath(ca_),
                           CoordinatorKeyPath(ca_), CoordinatorCertPath(ca_),
                           EnrollmentKeyPath(ca_), EnrollmentCertPath(ca_), ca_ + "/ca.json"}) {
    EXPECT_TRUE(fs::exists(path)) << path;
  }
  EXPECT_FALSE(fs::exists(CaKeyPath(ca_)));
  EXPECT_EQ(Slurp(CaCertPath(root_ca)), CaPem());
  EXPECT_EQ(Mode(CaKeyPath(root_ca)), 0600u);
  EXPECT_EQ(Mode(CoordinatorKeyPath(ca_)), 0600u);
  EXPECT_EQ(Mode(EnrollmentKeyPath(ca_)), 0600u);
  EXPECT_EQ(Mode(ca_), 0700u);
  EXPECT_EQ(Mode(root_ca), 0700u);

  json info = json::parse(Slurp(ca_ + "/ca.json"));
  auto fingerprint = CaFingerprint(CaPem());
  ASSERT_TRUE(fingerprint.ok()) << fingerprint.status().ToString();
  EXPECT_EQ(fingerprint->size(), 64u);
  EXPECT_EQ(info.at("ca_fingerprint"), *fingerprint);
  EXPECT_EQ(info.at("coordinator_address"), kDefaultCoordinatorAddress);
  EXPECT_TRUE(info.at("created_at").is_string());
  EXPECT_TRUE(CheckCertMatchesFingerprint(CaPem(), *fingerprint).ok());
}

TEST_F(PkiTest, InitCaRefusesToOverwrite) {
  InitDefaultCa();
  const std::string before = CaPem();
  Status st = InitCa(ca_);
  EXPECT_EQ(st.code(), Code::kRejected) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "already holds a CA")) << st.message();
  EXPECT_EQ(CaPem(), before);

  // A leftover key alone also blocks a new CA.
  const std::string other = root_ + "/other";
  fs::create_directories(other);
  Spit(CaKeyPath(other), "not a key");
  EXPECT_EQ(InitCa(other).code(), Code::kRejected);
  EXPECT_EQ(Slurp(CaKeyPath(other)), "not a key");
}

TEST_F(PkiTest, InitCaRejectsBadOptions) {
  CaOptions bad_san;
  bad_san.coordinator_sans = {"DNS:ok", "URI:http://x"};
  Status st = InitCa(ca_, bad_san);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), "URI:http://x")) << st.message();

  CaOptions bad_ip;
  bad_ip.coordinator_sans = {"IP:300.1.1.1"};
  EXPECT_EQ(InitCa(ca_, bad_ip).code(), Code::kInvalidArgument);

  CaOptions injection;
  injection.coordinator_sans = {"DNS:a,IP:1.2.3.4"};
  EXPECT_EQ(InitCa(ca_, injection).code(), Code::kInvalidArgument);

  for (const char* address : {"http://h:1", "tcp://h", "tcp://:5", "tcp://h:0", "tcp://h:70000",
                              "tcp://h:x", "tcp://h/x:5", "tcp://h:*", "tcp://*:5555"}) {
    CaOptions o;
    o.coordinator_address = address;
    Status s = InitCa(ca_, o);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << address;
    EXPECT_TRUE(Contains(s.message(), "coordinator address")) << s.message();
  }
  EXPECT_FALSE(fs::exists(CaKeyPath(ca_)));
}

TEST_F(PkiTest, CaCertificateHasCaExtensions) {
  InitDefaultCa();
  X509Ptr ca = ReadCert(CaPem());
  ASSERT_TRUE(ca);
  EXPECT_EQ(X509_get_version(ca.get()), X509_VERSION_3);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_TRUE(ExtensionIsCritical(ca.get(), NID_basic_constraints));
  EXPECT_TRUE(ExtensionIsCritical(ca.get(), NID_key_usage));
  EXPECT_EQ(X509_get_key_usage(ca.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_EQ(X509_check_issued(ca.get(), ca.get()), X509_V_OK);  // self-signed
  EXPECT_EQ(EVP_PKEY_get_id(X509_get0_pubkey(ca.get())), EVP_PKEY_EC);
  EXPECT_EQ(X509_get_signature_nid(ca.get()), NID_ecdsa_with_SHA256);
  // Roughly ten years of validity.
  int days = 0, secs = 0;
  ASSERT_EQ(
      ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(ca.get()), X509_get0_notAfter(ca.get())), 1);
  EXPECT_GE(days, 3650);
  EXPECT_LE(days, 3651);
}

TEST_F(PkiTest, CoordinatorCertVerifiesAndHasSans) {
  InitDefaultCa();
  auto info = VerifyPeerCert(CaPem(), Slurp(CoordinatorCertPath(ca_)));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->common_name, "coordinator");
  EXPECT_TRUE(info->server_auth);
  EXPECT_FALSE(info->client_auth);
  EXPECT_EQ(info->sans,
            (std::vector<std::string>{"DNS:localhost", "DNS:coordinator", "IP:127.0.0.1"}));
  EXPECT_NEAR(static_cast<double>(info->not_after - info->not_before), 730.0 * kDay, 2 * kDay);

  X509Ptr cert = ReadCert(Slurp(CoordinatorCertPath(ca_)));
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_TRUE(ExtensionIsCritical(cert.get(), NID_basic_constraints));
  EXPECT_EQ(X509_get_key_usage(cert.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_check_host(cert.get(), "coordinator", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 1);
  EXPECT_NE(X509_check_host(cert.get(), "example.com", 0, 0, nullptr), 1);
}

TEST_F(PkiTest, CustomSansAndAddress) {
  CaOptions o;
  o.coordinator_address = "tcp://coord.example.org:7000";
  o.coordinator_sans = {"DNS:coord.example.org", "IP:10.0.0.7", "IP:::1"};
  ASSERT_TRUE(InitCa(ca_, o).ok());
  auto info = VerifyPeerCert(CaPem(), Slurp(CoordinatorCertPath(ca_)));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->sans,
            (std::vector<std::string>{"DNS:coord.example.org", "IP:10.0.0.7", "IP:::1"}));
  // Bundles and tokens default to the CA's coordinator address.
  auto token = ParseJoinToken(*CreateJoinToken(ca_, "w1", 60));
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->coordinator_address, "tcp://coord.example.org:7000");
}

TEST_F(PkiTest, EnrollBundleCertVerifies) {
  InitDefaultCa();
  const std::string out = root_ + "/bundle-w1";
  ASSERT_TRUE(Enroll(ca_, "worker-1", out, "tcp://10.1.2.3:5555").ok());
  EXPECT_EQ(Mode(BundleKeyPath(out)), 0600u);
  EXPECT_EQ(Slurp(BundleCaPath(out)), CaPem());

  auto info = VerifyPeerCert(Slurp(BundleCaPath(out)), Slurp(BundleCertPath(out)));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->common_name, "worker-1");
  EXPECT_TRUE(info->client_auth);
  EXPECT_FALSE(info->server_auth);
  EXPECT_TRUE(info->sans.empty());
  EXPECT_EQ(info->serial.size() > 16, true) << info->serial;  // 128 random bits
  EXPECT_NEAR(static_cast<double>(info->not_after - info->not_before), 365.0 * kDay, 2 * kDay);

  // The key in the bundle is the certificate's key.
  X509Ptr cert = ReadCert(Slurp(BundleCertPath(out)));
  const std::string key_pem = Slurp(BundleKeyPath(out));
  BIO* bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(X509_check_private_key(cert.get(), key), 1);
  EVP_PKEY_free(key);

  json bundle = json::parse(Slurp(out + "/bundle.json"));
  EXPECT_EQ(bundle.at("name"), "worker-1");
  EXPECT_EQ(bundle.at("coordinator"), "tcp://10.1.2.3:5555");
  EXPECT_EQ(bundle.at("ca_fingerprint"), *CaFingerprint(CaPem()));

  auto enrolled = ListEnrolled(ca_);
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  ASSERT_EQ(enrolled->size(), 1u);
  EXPECT_EQ((*enrolled)[0].name, "worker-1");
  EXPECT_EQ((*enrolled)[0].serial, info->serial);
  EXPECT_EQ((*enrolled)[0].fingerprint, info->fingerprint);
  EXPECT_EQ((*enrolled)[0].not_after, info->not_after);
  EXPECT_EQ((*enrolled)[0].how, "bundle");
  EXPECT_FALSE((*enrolled)[0].revoked);
}

TEST_F(PkiTest, EnrollValidatesNameAndRefusesExistingBundle) {
  InitDefaultCa();
  for (const std::string& name : std::vector<std::string>{"", ".", "..", "a/b", "a b", "wörker",
                                                          std::string(65, 'a'), "x;rm"}) {
    Status st = Enroll(ca_, name, root_ + "/b", "");
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << "name: " << name;
    EXPECT_TRUE(Contains(st.message(), "worker name")) << st.message();
  }
  EXPECT_TRUE(Enroll(ca_, std::string(64, 'a'), root_ + "/b64", "").ok());
  EXPECT_TRUE(Enroll(ca_, "A.b_c-9", root_ + "/b", "").ok());
  const std::string key_before = Slurp(BundleKeyPath(root_ + "/b"));
  Status again = Enroll(ca_, "A.b_c-9", root_ + "/b", "");
  EXPECT_EQ(again.code(), Code::kRejected);
  EXPECT_TRUE(Contains(again.message(), "already holds an enrollment bundle")) << again.message();
  EXPECT_EQ(Slurp(BundleKeyPath(root_ + "/b")), key_before);

  EXPECT_EQ(Enroll(ca_, "w", "", "").code(), Code::kInvalidArgument);
  EXPECT_EQ(InitCa("").code(), Code::kInvalidArgument);
  Status no_ca = Enroll(root_ + "/nope", "w", root_ + "/c", "");
  EXPECT_EQ(no_ca.code(), Code::kNotFound);
  EXPECT_TRUE(Contains(no_ca.message(), "holds no Shoal CA")) << no_ca.message();
}

TEST_F(PkiTest, CertFromAnotherCaFails) {
  InitDefaultCa();
  const std::string other_ca = root_ + "/ca2";
  ASSERT_TRUE(InitCa(other_ca).ok());
  ASSERT_TRUE(Enroll(other_ca, "intruder", root_ + "/intruder", "").ok());
  auto info = VerifyPeerCert(CaPem(), Slurp(BundleCertPath(root_ + "/intruder")));
  EXPECT_EQ(info.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(info.status().message(), "does not verify against the federation CA"))
      << info.status().message();
  // Same subject name ("Shoal federation CA") but a different key: the fingerprints differ.
  EXPECT_EQ(
      CheckCertMatchesFingerprint(Slurp(CaCertPath(other_ca)), *CaFingerprint(CaPem())).code(),
      Code::kCorrupt);
}

TEST_F(PkiTest, ExpiredAndNotYetValidCertsFail) {
  InitDefaultCa();
  ASSERT_TRUE(Enroll(ca_, "w1", root_ + "/w1", "").ok());
  const std::string cert = Slurp(BundleCertPath(root_ + "/w1"));
  const int64_t now = std::time(nullptr);
  EXPECT_TRUE(VerifyPeerCert(CaPem(), cert, now + 300 * kDay).ok());
  auto expired = VerifyPeerCert(CaPem(), cert, now + 400 * kDay);
  EXPECT_EQ(expired.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(expired.status().message(), "expired")) << expired.status().message();
  auto early = VerifyPeerCert(CaPem(), cert, now - kDay);
  EXPECT_EQ(early.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(early.status().message(), "not yet valid")) << early.status().message();

  // A CA created in the past whose certificates have all expired by now.
  CaOptions old;
  old.now = now - 3 * 365 * kDay;
  ASSERT_TRUE(InitCa(root_ + "/old", old).ok());
  auto coord =
      VerifyPeerCert(Slurp(CaCertPath(root_ + "/old")), Slurp(CoordinatorCertPath(root_ + "/old")));
  EXPECT_EQ(coord.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(coord.status().message(), "expired")) << coord.status().message();
}

TEST_F(PkiTest, CaCertIsNotAcceptedAsPeerCert) {
  InitDefaultCa();
  auto info = VerifyPeerCert(CaPem(), CaPem());
  EXPECT_EQ(info.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(info.status().message(), "is a CA certificate")) << info.status().message();
  EXPECT_EQ(VerifyPeerCert(CaPem(), "garbage").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(VerifyPeerCert("garbage", CaPem()).status().code(), Code::kInvalidArgument);
}

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

// ---- Issue #20 item 9: the root key is not on the coordinator ----

std::vector<std::string> KeyFilesIn(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && Slurp(e.path().string()).find("PRIVATE KEY") != std::string::npos) {
      out.push_back(e.path().string());
    }
  }
  return out;
}

TEST_F(PkiTest, EnrollmentCaIsAShortLivedClientOnlyIntermediate) {
  InitDefaultCa();
  X509Ptr root = ReadCert(CaPem());
  X509Ptr enrollment = ReadCert(Slurp(EnrollmentCertPath(ca_)));
  ASSERT_TRUE(root && enrollment);
  EXPECT_EQ(X509_check_ca(enrollment.get()), 1);
  EXPECT_EQ(X509_check_issued(root.get(), enrollment.get()), X509_V_OK);
  EXPECT_TRUE(ExtensionIsCritical(enrollment.get(), NID_basic_constraints));
  EXPECT_EQ(X509_get_pathlen(enrollment.get()), 0);
  EXPECT_EQ(X509_get_extended_key_usage(enrollment.get()), static_cast<uint32_t>(XKU_SSL_CLIENT));
  EXPECT_EQ(X509_check_purpose(enrollment.get(), X509_PURPOSE_SSL_SERVER, 1), 0);
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(enrollment.get()),
                           X509_get0_notAfter(enrollment.get())),
            1);
  EXPECT_GE(days, kDefaultEnrollmentCaValidityDays);
  EXPECT_LE(days, kDefaultEnrollmentCaValidityDays + 1);

  CaOptions bad;
  bad.enrollment_days = kMaxEnrollmentCaValidityDays + 1;
  EXPECT_EQ(InitCa(root_ + "/ca2", bad).code(), Code::kInvalidArgument);
  CaOptions inside;
  inside.root_dir = root_ + "/ca3/root";
  Status st = InitCa(root_ + "/ca3", inside);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), "must not be")) << st.message();
}

// The attack: whoever holds the coordinator's files holds the root key, and with it can issue
// any certificate (a new "coordinator" that workers trust, any worker). Now the coordinator's
// directory holds no root key, and a join token is redeemed without one.
TEST_F(PkiTest, TokenIsRedeemedWithoutTheRootKey) {
  InitDefaultCa();
  const std::string root_key_pem = Slurp(CaKeyPath(DefaultRootDir(ca_)));
  ASSERT_FALSE(root_key_pem.empty());
  // Take the root offline: the coordinator's host has only ca_.
  fs::rename(DefaultRootDir(ca_), root_ + "/offline");
  for (const auto& e : fs::recursive_directory_iterator(ca_)) {
    EXPECT_FALSE(Contains(Slurp(e.path().string()), root_key_pem)) << e.path();
  }
  EXPECT_FALSE(fs::exists(CaKeyPath(ca_)));

  ParsedToken t = NewToken("silo-9");
  auto key_and_csr = MakeKeyAndCsr("silo-9");
  ASSERT_TRUE(key_and_csr.ok());
  auto chain = RedeemJoinToken(ca_, t.id, t.secret, key_and_csr->csr_pem);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  // Leaf + enrollment CA; it verifies against the root alone, for client use only.
  EXPECT_TRUE(Contains(*chain, Slurp(EnrollmentCertPath(ca_))));
  auto info = VerifyPeerCert(CaPem(), *chain);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->common_name, "silo-9");
  EXPECT_TRUE(info->client_auth);
  EXPECT_FALSE(info->server_auth);
  // Never valid past the enrollment CA that vouches for it.
  X509Ptr enrollment = ReadCert(Slurp(EnrollmentCertPath(ca_)));
  EXPECT_LE(info->not_after, ToUnixForTest(X509_get0_notAfter(enrollment.get())));
  // The leaf alone does not verify: it needs the enrollment CA in its chain.
  X509Ptr leaf = ReadCert(*chain);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, leaf.get());
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  const std::string leaf_pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  EXPECT_EQ(VerifyPeerCert(CaPem(), leaf_pem).status().code(), Code::kRejected);

  // Offline bundles need the root: found where the operator says it is.
  EXPECT_EQ(Enroll(ca_, "w1", root_ + "/w1", "").code(), Code::kNotFound);
  IssueOptions with_root;
  with_root.root_dir = root_ + "/offline";
  ASSERT_TRUE(Enroll(ca_, "w1", root_ + "/w1", "", with_root).ok());
  auto bundle_info = VerifyPeerCert(CaPem(), Slurp(BundleCertPath(root_ + "/w1")));
  ASSERT_TRUE(bundle_info.ok()) << bundle_info.status().ToString();
}

// The attack with only what the coordinator holds: every private key in its CA directory tries to
// issue a serverAuth "coordinator" certificate; none may be accepted as a server certificate.
TEST_F(PkiTest, NoKeyOnTheCoordinatorIssuesAServerCertificate) {
  InitDefaultCa();
  const std::vector<std::string> keys = KeyFilesIn(ca_);
  ASSERT_FALSE(keys.empty());
  for (const std::string& key_path : keys) {
    const std::string key_pem = Slurp(key_path);
    BIO* kb = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
    EVP_PKEY* signer = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(kb);
    ASSERT_NE(signer, nullptr) << key_path;
    // The signer's certificate: the .crt beside the .key (ca.crt for a root key).
    std::string cert_path = key_path.substr(0, key_path.size() - 4) + ".crt";
    X509Ptr issuer = ReadCert(Slurp(cert_path));
    ASSERT_TRUE(issuer) << cert_path;
    const std::string forged = shoal::testing::ForgeLeaf(issuer.get(), signer, "coordinator",
                                                         "serverAuth", "DNS:coordinator")
                                   .cert_pem;
    EVP_PKEY_free(signer);
    auto info = VerifyPeerCert(CaPem(), forged + Slurp(cert_path));
    EXPECT_TRUE(!info.ok() || !info->server_auth)
        << "a server certificate issued with " << key_path << " is accepted";
  }
}

// ---- Issue #20 item 10 ----

TEST_F(PkiTest, ReservedWorkerNamesAreRefused) {
  InitDefaultCa();
  for (const std::string& name : {"coordinator", "Coordinator", "COORDINATOR", "localhost"}) {
    Status st = Enroll(ca_, name, root_ + "/b-" + name, "");
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << name;
    EXPECT_TRUE(Contains(st.message(), "reserved")) << st.message();
    EXPECT_EQ(CreateJoinToken(ca_, name, 60).status().code(), Code::kInvalidArgument) << name;
    EXPECT_EQ(MakeKeyAndCsr(name).status().code(), Code::kInvalidArgument) << name;
  }
  EXPECT_TRUE(ValidateWorkerName("coordinator-1").ok());
}

TEST_F(PkiTest, SecondCertificateForANameNeedsReissueWhichRevokesTheOld) {
  InitDefaultCa();
  ASSERT_TRUE(Enroll(ca_, "w1", root_ + "/w1", "").ok());
  auto old_info = VerifyPeerCert(CaPem(), Slurp(BundleCertPath(root_ + "/w1")));
  ASSERT_TRUE(old_info.ok());

  // The attack: a second, independent certificate for the same name (both valid at once).
  Status again = Enroll(ca_, "w1", root_ + "/w1-second", "");
  EXPECT_EQ(again.code(), Code::kRejected);
  EXPECT_TRUE(Contains(again.message(), "already has a certificate")) << again.message();
  EXPECT_TRUE(Contains(again.message(), "--reissue")) << again.message();
  auto token = CreateJoinToken(ca_, "w1", 60);
  EXPECT_EQ(token.status().code(), Code::kRejected);
  EXPECT_EQ(ListEnrolled(ca_)->size(), 1u);

  IssueOptions reissue;
  reissue.reissue = true;
  ASSERT_TRUE(Enroll(ca_, "w1", root_ + "/w1-second", "", reissue).ok());
  auto new_info = VerifyPeerCert(CaPem(), Slurp(BundleCertPath(root_ + "/w1-second")));
  ASSERT_TRUE(new_info.ok());
  auto serials = RevokedSerials(ca_);
  ASSERT_TRUE(serials.ok()) << serials.status().ToString();
  EXPECT_EQ(serials->count(old_info->serial), 1u);
  EXPECT_EQ(serials->count(new_info->serial), 0u);
  EXPECT_TRUE(RevokedNames(ca_)->empty());  // the name itself stays allowed
  auto enrolled = ListEnrolled(ca_);
  ASSERT_TRUE(enrolled.ok());
  ASSERT_EQ(enrolled->size(), 2u);
  EXPECT_TRUE((*enrolled)[0].revoked);
  EXPECT_FALSE((*enrolled)[1].revoked);

  // By token: create with reissue, and the redemption revokes the bundle's certificate.
  auto t = CreateJoinToken(ca_, "w1", 60, "", 0, /*reissue=*/true);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  auto parsed = ParseJoinToken(*t);
  auto third = RedeemJoinToken(ca_, parsed->id, parsed->secret, MakeKeyAndCsr("w1")->csr_pem);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(RevokedSerials(ca_)->count(new_info->serial), 1u);
  enrolled = ListEnrolled(ca_);
  ASSERT_EQ(enrolled->size(), 3u);
  EXPECT_TRUE((*enrolled)[1].revoked);
  EXPECT_FALSE((*enrolled)[2].revoked);
}

TEST_F(PkiTest, BundleDirectoryMustBePrivate) {
  InitDefaultCa();
  // The attack: a directory other users can write, where they could swap in their own key or
  // certificate, is used as is.
  const std::string open_dir = root_ + "/open";
  fs::create_directories(open_dir);
  ::chmod(open_dir.c_str(), 0770);
  Status st = Enroll(ca_, "w1", open_dir, "");
  EXPECT_EQ(st.code(), Code::kRejected) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "0770")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "chmod 700")) << st.message();
  EXPECT_FALSE(fs::exists(BundleKeyPath(open_dir)));

  ASSERT_TRUE(Enroll(ca_, "w2", root_ + "/w2", "").ok());
  EXPECT_TRUE(LoadBundle(root_ + "/w2").ok());
  ::chmod((root_ + "/w2").c_str(), 0775);
  auto loaded = LoadBundle(root_ + "/w2");
  EXPECT_EQ(loaded.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(loaded.status().message(), "0775")) << loaded.status().message();
  ::chmod((root_ + "/w2").c_str(), 0700);
  EXPECT_TRUE(LoadBundle(root_ + "/w2").ok());
  // A symlink to a bundle is not a private directory either.
  fs::create_directory_symlink(root_ + "/w2", root_ + "/link");
  EXPECT_EQ(LoadBundle(root_ + "/link").status().code(), Code::kRejected);
  EXPECT_EQ(CheckPrivateDir(root_ + "/missing").code(), Code::kNotFound);
}

TEST_F(PkiTest, OldLayoutIsMigratedByRenewal) {
  InitDefaultCa();
  // Make the layout before issue #20: the root key inside the CA directory, no enrollment CA.
  fs::rename(CaKeyPath(DefaultRootDir(ca_)), CaKeyPath(ca_));
  fs::remove_all(DefaultRootDir(ca_));
  fs::remove(EnrollmentKeyPath(ca_));
  fs::remove(EnrollmentCertPath(ca_));
  ParsedToken t = NewToken("w1");
  auto refused = RedeemJoinToken(ca_, t.id, t.secret, MakeKeyAndCsr("w1")->csr_pem);
  EXPECT_EQ(refused.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(refused.status().message(), "renew-enrollment"))
      << refused.status().message();

  const std::string offline = root_ + "/offline";
  ASSERT_TRUE(RenewEnrollmentCa(ca_, offline).ok());
  EXPECT_FALSE(fs::exists(CaKeyPath(ca_)));
  EXPECT_TRUE(fs::exists(CaKeyPath(offline)));
  EXPECT_EQ(Mode(CaKeyPath(offline)), 0600u);
  auto chain = RedeemJoinToken(ca_, t.id, t.secret, MakeKeyAndCsr("w1")->csr_pem);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  EXPECT_TRUE(VerifyPeerCert(CaPem(), *chain).ok());
  // Renewing again replaces the enrollment CA; certificates of the old one stay valid.
  const std::string before = Slurp(EnrollmentCertPath(ca_));
  ASSERT_TRUE(RenewEnrollmentCa(ca_, offline, 30).ok());
  EXPECT_NE(Slurp(EnrollmentCertPath(ca_)), before);
  EXPECT_TRUE(VerifyPeerCert(CaPem(), *chain).ok());
  EXPECT_EQ(RenewEnrollmentCa(ca_, offline, 0).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::security
