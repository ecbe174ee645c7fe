// Issue #20 items 9 and 10: the root key is not on the coordinator; reserved names, reissue,
// private bundle directories, the old layout's migration.
#include "tests/security/pki_test_support.h"

namespace shoal::security {
namespace {

using namespace pki_fixture;  // NOLINT(build/namespaces): the shared helpers and fixture

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
  for (const std::string name : {"coordinator", "Coordinator", "COORDINATOR", "localhost"}) {
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
