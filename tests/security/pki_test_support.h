// What the PKI tests (pki_ca_test.cc, pki_token_test.cc, pki_root_key_test.cc) share: file
// helpers, OpenSSL parsing independent of the code under test, and the PkiTest fixture (a fresh
// directory per test).
#pragma once

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
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "security/pki.h"
#include "tests/testing/forge_cert.h"

namespace shoal::security::pki_fixture {

namespace fs = std::filesystem;
using nlohmann::json;

inline constexpr int64_t kDay = 24 * 3600;

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void Spit(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

inline unsigned Mode(const std::string& path) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0) return 0;
  return sb.st_mode & 0777;
}

struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

// Parses a certificate with OpenSSL directly, independently of the code under test.
inline X509Ptr ReadCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509Ptr cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return cert;
}

inline bool ExtensionIsCritical(X509* cert, int nid) {
  int index = X509_get_ext_by_NID(cert, nid, -1);
  return index >= 0 && X509_EXTENSION_get_critical(X509_get_ext(cert, index)) == 1;
}

// A CSR for `cn` carrying `subject_key`'s public key, signed by `signer`.
inline std::string CsrPem(const std::string& cn, EVP_PKEY* subject_key, EVP_PKEY* signer) {
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

inline int64_t ToUnixForTest(const ASN1_TIME* t) {
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

}  // namespace shoal::security::pki_fixture
