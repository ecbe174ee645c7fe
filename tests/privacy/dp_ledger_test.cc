// The DP parameters' ranges, DP-SGD's step count, and the worker's privacy ledger (issue #25).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "base/file_util.h"
#include "privacy/dp_params.h"
#include "privacy/ledger.h"
#include "privacy/rdp_accountant.h"

namespace shoal::privacy {
namespace {

bool Contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

DpParams Good() { return {DpMode::kSample, 1.0, 1.1, 0.01, 100, false}; }

TEST(DpParamsTest, RefusesEachFieldOutOfRangeByName) {
  EXPECT_TRUE(ValidateDpParams(Good(), "TrainTask.dp_").ok());
  const double nan = std::nan("");
  const double inf = std::numeric_limits<double>::infinity();
  auto expect = [](DpParams p, const std::string& field) {
    Status st = ValidateDpParams(p, "TrainTask.dp_");
    ASSERT_FALSE(st.ok()) << field;
    EXPECT_TRUE(Contains(st.message(), "TrainTask.dp_" + field)) << st.message();
  };
  for (double c : {0.0, -1.0, nan, inf, 2e6}) {
    DpParams p = Good();
    p.clip_norm = c;
    expect(p, "clip_norm");
  }
  for (double s : {0.0, -1.0, nan, inf, 1e5}) {
    DpParams p = Good();
    p.noise_multiplier = s;
    expect(p, "noise_multiplier");
  }
  for (double q : {0.0, 1e-12, 1.5, nan}) {
    DpParams p = Good();
    p.sampling_rate = q;
    expect(p, "sampling_rate");
  }
  for (uint64_t n : {uint64_t{0}, kMaxSteps + 1, ~uint64_t{0}}) {
    DpParams p = Good();
    p.steps = n;
    expect(p, "steps");
  }
  DpParams p = Good();
  p.mode = static_cast<DpMode>(7);
  expect(p, "dp_mode");
  // Without DP the other fields are not looked at.
  EXPECT_TRUE(ValidateDpParams(DpParams{}, "x").ok());
}

TEST(DpParamsTest, ParsesModesAndNamesTheKey) {
  EXPECT_EQ(*ParseDpMode("sample", "privacy.dp"), DpMode::kSample);
  EXPECT_EQ(*ParseDpMode("none", "privacy.dp"), DpMode::kNone);
  auto bad = ParseDpMode("client", "privacy.dp");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status().message(), "privacy.dp"));
}

TEST(DpParamsTest, StepsAreTensorFlowPrivacysCeiling) {
  EXPECT_EQ(DpSgdSteps(15, 60000, 150), 6000u);  // TF Privacy's published example
  EXPECT_EQ(DpSgdSteps(1, 900, 32), 29u);        // ceil(28.125)
  EXPECT_EQ(DpSgdSteps(2, 900, 32), 57u);        // ceil(56.25), not 2 x 29
  EXPECT_EQ(DpSgdSteps(1, 0, 32), 0u);
  EXPECT_EQ(DpSgdStepsAtRate(1, 0.04), 25u);  // 1/0.04 is 25.000000000000004 in double
  EXPECT_EQ(DpSgdStepsAtRate(3, 0.03), 100u);
}

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-ledger-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/ledger";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(LedgerTest, ARestartedWorkerContinuesItsAccountExactly) {
  const LedgerEntry a{"run-1", 1, 1.0 / 30, 1.1, 29};
  const LedgerEntry b{"run 2\nx", 7, 0.02, 0.9, 50};  // a run id is one field, whatever it holds
  {
    auto ledger = PrivacyLedger::Open(path_);
    ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
    ASSERT_TRUE(ledger->Record(a).ok());
    ASSERT_TRUE(ledger->Record(b).ok());
  }
  RdpAccountant want;
  ASSERT_TRUE(want.Compose(a.sampling_rate, a.noise_multiplier, 29).ok());
  ASSERT_TRUE(want.Compose(b.sampling_rate, b.noise_multiplier, 50).ok());
  auto reopened = PrivacyLedger::Open(path_);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(reopened->tasks(), 2u);
  // q and sigma round-trip exactly (17 digits): the same epsilon to the last bit.
  EXPECT_EQ(reopened->Spent(1e-5)->epsilon, want.Spent(1e-5)->epsilon);
  // SpentWith looks ahead without recording.
  RdpAccountant ahead = want;
  ASSERT_TRUE(ahead.Compose(a.sampling_rate, a.noise_multiplier, 29).ok());
  EXPECT_EQ(reopened->SpentWith(a, 1e-5)->epsilon, ahead.Spent(1e-5)->epsilon);
  EXPECT_EQ(reopened->tasks(), 2u);
}

TEST_F(LedgerTest, ATornLastLineIsCutAndTheLedgerGoesOn) {
  const LedgerEntry a{"r", 1, 0.01, 1.0, 100};
  ASSERT_TRUE(WriteFileAtomic(path_, FormatLedgerLine(a) + "dp1 2 0.01 1.0 1").ok());
  auto ledger = PrivacyLedger::Open(path_);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  EXPECT_EQ(ledger->tasks(), 1u);
  ASSERT_TRUE(ledger->Record(a).ok());
  auto text = ReadFile(path_);
  EXPECT_EQ(*text, FormatLedgerLine(a) + FormatLedgerLine(a));
}

TEST_F(LedgerTest, AMalformedLineIsCorruptNotAFreshStart) {
  const LedgerEntry a{"r", 1, 0.01, 1.0, 100};
  for (const std::string& bad :
       {std::string("dp1 2 0.01 1.0\n"), std::string("dp1 2 0.01 nan 5 r\n"),
        std::string("dp1 2 7 1.0 5 r\n"), std::string("xx 2 0.01 1.0 5 r\n"),
        std::string("dp1 2 0.01 1.0 5x r\n")}) {
    ASSERT_TRUE(WriteFileAtomic(path_, FormatLedgerLine(a) + bad + FormatLedgerLine(a)).ok());
    auto ledger = PrivacyLedger::Open(path_);
    ASSERT_FALSE(ledger.ok()) << bad;
    EXPECT_EQ(ledger.status().code(), Code::kCorrupt) << bad;
    EXPECT_TRUE(Contains(ledger.status().message(), "line 2")) << ledger.status().message();
  }
}

TEST_F(LedgerTest, ASymlinkIsNotFollowed) {
  ASSERT_EQ(::symlink((dir_ + "/elsewhere").c_str(), path_.c_str()), 0);
  EXPECT_FALSE(PrivacyLedger::Open(path_).ok());
  EXPECT_FALSE(PathExists(dir_ + "/elsewhere"));
}

TEST(LedgerMemoryTest, AnEmptyPathKeepsTheAccountInMemory) {
  auto ledger = PrivacyLedger::Open("");
  ASSERT_TRUE(ledger.ok());
  ASSERT_TRUE(ledger->Record({"r", 1, 0.01, 1.0, 100}).ok());
  EXPECT_EQ(ledger->Spent(1e-5)->epsilon, ComputeEpsilon(0.01, 1.0, 100, 1e-5)->epsilon);
}

}  // namespace
}  // namespace shoal::privacy
