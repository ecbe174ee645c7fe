// The CA, coordinator and worker certificates: creation, extensions, verification.
#include "tests/security/pki_test_support.h"

namespace shoal::security {
namespace {

using namespace pki_fixture;  // NOLINT(build/namespaces): the shared helpers and fixture

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

}  // namespace
}  // namespace shoal::security
