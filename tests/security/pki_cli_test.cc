// shoalctl's PKI commands, run as a real process: ca init, enroll, token create, revoke,
// enrolled, and their error exits.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "security/pki.h"

namespace shoal::security {
namespace {

namespace fs = std::filesystem;

struct CmdResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

CmdResult Shoalctl(const std::string& args) {
  const char* bin_dir = std::getenv("SHOAL_BIN_DIR");
  const std::string bin = std::string(bin_dir != nullptr ? bin_dir : "bin") + "/shoalctl";
  CmdResult run;
  FILE* pipe = ::popen((bin + " " + args + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return run;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) run.out.append(buf, n);
  const int status = ::pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class PkiCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "pki_cli_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  std::string root_;
};

TEST_F(PkiCliTest, EnrollmentLifecycle) {
  const std::string ca = root_ + "/ca";
  CmdResult init = Shoalctl("ca init " + ca +
                            " --coordinator-address tcp://coord.lan:6000 --san "
                            "DNS:coord.lan --san IP:10.0.0.5");
  ASSERT_EQ(init.exit_code, 0) << init.out;
  EXPECT_TRUE(Contains(init.out, "ca fingerprint (sha256): ")) << init.out;

  CmdResult again = Shoalctl("ca init " + ca);
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_TRUE(Contains(again.out, "error: REJECTED:")) << again.out;

  CmdResult enroll = Shoalctl("enroll w1 --ca " + ca + " --out " + root_ + "/w1");
  ASSERT_EQ(enroll.exit_code, 0) << enroll.out;
  EXPECT_TRUE(fs::exists(root_ + "/w1/worker.key"));

  CmdResult token = Shoalctl("token create --name w2 --ca " + ca + " --ttl 30m");
  ASSERT_EQ(token.exit_code, 0) << token.out;
  ASSERT_FALSE(token.out.empty());
  auto parsed = ParseJoinToken(token.out.substr(0, token.out.find('\n')));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString() << " in " << token.out;
  EXPECT_EQ(parsed->coordinator_address, "tcp://coord.lan:6000");

  CmdResult bad_ttl = Shoalctl("token create --name w2 --ca " + ca + " --ttl 5x");
  EXPECT_EQ(bad_ttl.exit_code, 2);
  EXPECT_TRUE(Contains(bad_ttl.out, "--ttl")) << bad_ttl.out;

  ASSERT_EQ(Shoalctl("revoke w1 --ca " + ca).exit_code, 0);
  CmdResult unknown = Shoalctl("revoke nobody --ca " + ca);
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_TRUE(Contains(unknown.out, "error: NOT_FOUND:")) << unknown.out;

  CmdResult table = Shoalctl("enrolled --ca " + ca);
  ASSERT_EQ(table.exit_code, 0) << table.out;
  EXPECT_TRUE(Contains(table.out, "revoked")) << table.out;
  EXPECT_TRUE(Contains(table.out, "bundle yes")) << table.out;

  CmdResult js = Shoalctl("enrolled --ca " + ca + " --json");
  ASSERT_EQ(js.exit_code, 0) << js.out;
  auto arr = nlohmann::json::parse(js.out, nullptr, false);
  ASSERT_TRUE(arr.is_array()) << js.out;
  ASSERT_EQ(arr.size(), 1u);
  EXPECT_EQ(arr[0].at("name"), "w1");
  EXPECT_EQ(arr[0].at("revoked"), true);

  CmdResult bad_name = Shoalctl("enroll 'a b' --ca " + ca + " --out " + root_ + "/x");
  EXPECT_EQ(bad_name.exit_code, 2);
  EXPECT_TRUE(Contains(bad_name.out, "bad worker name")) << bad_name.out;
}

// Issue #20: the root goes to --root, never the coordinator's directory; a second certificate
// for a name needs --reissue; renew-enrollment makes a new enrollment CA from the root.
TEST_F(PkiCliTest, RootDirectoryReissueAndRenewal) {
  const std::string ca = root_ + "/ca";
  const std::string offline = root_ + "/offline";
  CmdResult inside = Shoalctl("ca init " + ca + " --root " + ca + "/root");
  EXPECT_EQ(inside.exit_code, 2) << inside.out;
  CmdResult init = Shoalctl("ca init " + ca + " --root " + offline + " --enrollment-days 30");
  ASSERT_EQ(init.exit_code, 0) << init.out;
  EXPECT_TRUE(Contains(init.out, offline + "/ca.key")) << init.out;
  EXPECT_TRUE(fs::exists(offline + "/ca.key"));
  EXPECT_FALSE(fs::exists(ca + "/ca.key"));
  EXPECT_TRUE(fs::exists(ca + "/enrollment.key"));

  CmdResult no_root = Shoalctl("enroll w1 --ca " + ca + " --out " + root_ + "/w1");
  EXPECT_EQ(no_root.exit_code, 2) << no_root.out;
  EXPECT_TRUE(Contains(no_root.out, "root")) << no_root.out;
  ASSERT_EQ(
      Shoalctl("enroll w1 --ca " + ca + " --root " + offline + " --out " + root_ + "/w1").exit_code,
      0);
  CmdResult second =
      Shoalctl("enroll w1 --ca " + ca + " --root " + offline + " --out " + root_ + "/w1b");
  EXPECT_EQ(second.exit_code, 2) << second.out;
  EXPECT_TRUE(Contains(second.out, "--reissue")) << second.out;
  CmdResult token = Shoalctl("token create --name w1 --ca " + ca);
  EXPECT_EQ(token.exit_code, 2) << token.out;
  ASSERT_EQ(Shoalctl("token create --name w1 --reissue --ca " + ca).exit_code, 0);
  ASSERT_EQ(
      Shoalctl("enroll w1 --reissue --ca " + ca + " --root " + offline + " --out " + root_ + "/w1b")
          .exit_code,
      0);
  CmdResult reserved = Shoalctl("token create --name coordinator --ca " + ca);
  EXPECT_EQ(reserved.exit_code, 2);
  EXPECT_TRUE(Contains(reserved.out, "reserved")) << reserved.out;

  const std::string before = Slurp(ca + "/enrollment.crt");
  ASSERT_EQ(Shoalctl("ca renew-enrollment " + ca + " --root " + offline).exit_code, 0);
  EXPECT_NE(Slurp(ca + "/enrollment.crt"), before);
}

}  // namespace
}  // namespace shoal::security
