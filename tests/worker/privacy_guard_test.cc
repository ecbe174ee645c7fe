// The worker protects its own silo (issue #25): a coordinator cannot turn DP off where the
// worker requires it, send parameters out of range, use noise it knows, or spend past the
// worker's own limit; the worker's ledger outlives it.
#include "worker/privacy_guard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "privacy/rdp_accountant.h"
#include "protocols/codec.h"

namespace shoal::worker {
namespace {

bool Contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

protocols::TrainTask DpTask(uint64_t round = 1) {
  protocols::TrainTask t;
  t.run_id = "run-1";
  t.round = round;
  t.dp_mode = 1;
  t.dp_clip_norm = 1.0;
  t.dp_noise_multiplier = 1.0;
  t.dp_sampling_rate = 32.0 / 900;
  t.dp_steps = 29;
  return t;
}

class PrivacyGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-guard-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    cfg_.name = "w1";
    cfg_.ledger = dir_ + "/ledger";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  PrivacyGuard Open() {
    auto g = PrivacyGuard::Open(cfg_);
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    return std::move(g).value();
  }
  // The task as it arrives: through the codec, as a hostile coordinator would send it.
  static protocols::TrainTask Wire(const protocols::TrainTask& t) {
    const std::string bytes = protocols::Encode(t);
    auto f = protocols::ParseFrame(bytes, protocols::Limits{});
    EXPECT_TRUE(f.ok());
    auto d = protocols::Decode<protocols::TrainTask>(*f);
    EXPECT_TRUE(d.ok());
    return *d;
  }
  std::string dir_;
  WorkerConfig cfg_;
};

TEST_F(PrivacyGuardTest, ATaskWithoutDpIsRefusedWhereTheWorkerRequiresDp) {
  protocols::TrainTask plain = DpTask();
  plain.dp_mode = 0;
  EXPECT_TRUE(Open().Admit(Wire(plain)).ok());  // without privacy.require_dp: runs
  cfg_.require_dp = true;
  auto r = Open().Admit(Wire(plain));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kRejected);
  EXPECT_TRUE(Contains(r.status().message(), "privacy.require_dp")) << r.status().message();
  EXPECT_TRUE(Open().Admit(Wire(DpTask())).ok());
}

TEST_F(PrivacyGuardTest, HostileFieldValuesAreRefusedByName) {
  PrivacyGuard g = Open();
  auto expect = [&](protocols::TrainTask t, const std::string& field) {
    auto r = g.Admit(Wire(t));
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_TRUE(Contains(r.status().message(), "TrainTask.dp_" + field)) << r.status().message();
  };
  auto t = DpTask();
  t.dp_noise_multiplier = 0;  // "DP" without noise
  expect(t, "noise_multiplier");
  t = DpTask();
  t.dp_noise_multiplier = std::nan("");
  expect(t, "noise_multiplier");
  t = DpTask();
  t.dp_clip_norm = INFINITY;
  expect(t, "clip_norm");
  t = DpTask();
  t.dp_sampling_rate = 2;
  expect(t, "sampling_rate");
  t = DpTask();
  t.dp_steps = ~uint64_t{0};
  expect(t, "steps");
  t = DpTask();
  t.dp_mode = 200;
  expect(t, "dp_mode");
  EXPECT_EQ(g.ledger().tasks(), 0u);
}

TEST_F(PrivacyGuardTest, NoiseSeededByTheCoordinatorNeedsTheWorkersConsent) {
  auto t = DpTask();
  t.dp_seeded_noise = 1;
  auto r = Open().Admit(Wire(t));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().message(), "privacy.allow_seeded_noise"));
  cfg_.allow_seeded_noise = true;
  EXPECT_TRUE(Open().Admit(Wire(t)).ok());
}

TEST_F(PrivacyGuardTest, TheWorkersOwnLimitHoldsAcrossRestarts) {
  const double one = privacy::ComputeEpsilon(32.0 / 900, 1.0, 29, 1e-5)->epsilon;
  const double two = privacy::ComputeEpsilon(32.0 / 900, 1.0, 58, 1e-5)->epsilon;
  cfg_.max_epsilon = (one + two) / 2;  // one task fits, two do not
  {
    PrivacyGuard g = Open();
    auto p = g.Admit(DpTask(1));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_TRUE(g.Record(DpTask(1), *p).ok());
    EXPECT_EQ(g.Epsilon(), one);
  }
  PrivacyGuard restarted = Open();  // the ledger on disk, not memory, says what was spent
  EXPECT_EQ(restarted.ledger().tasks(), 1u);
  auto r = restarted.Admit(DpTask(2));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().message(), "privacy.max_epsilon")) << r.status().message();
  // A coordinator cannot lower the noise to slip under the limit: it only costs more.
  auto weaker = DpTask(2);
  weaker.dp_noise_multiplier = 0.5;
  EXPECT_FALSE(restarted.Admit(weaker).ok());
  // A task with far more noise still fits.
  auto stronger = DpTask(2);
  stronger.dp_noise_multiplier = 50;
  EXPECT_TRUE(restarted.Admit(stronger).ok());
}

// The docker setup mounts the bundle read-only: the default ledger there cannot be created. The
// worker then accounts in memory and says so - unless its limit depends on the ledger, or the
// ledger was asked for explicitly.
TEST_F(PrivacyGuardTest, AnUnwritableDefaultLedgerFallsBackToMemoryOnlyWithoutALimit) {
  cfg_.ledger.clear();
  cfg_.bundle = dir_ + "/no-such-dir";
  auto g = PrivacyGuard::Open(cfg_);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_TRUE(g->ledger().path().empty());
  EXPECT_TRUE(Contains(g->warning(), "privacy.ledger")) << g->warning();
  cfg_.max_epsilon = 5;
  auto limited = PrivacyGuard::Open(cfg_);
  ASSERT_FALSE(limited.ok());
  EXPECT_TRUE(Contains(limited.status().message(), "privacy.ledger"));
  cfg_.max_epsilon = 0;
  cfg_.ledger = dir_ + "/no-such-dir/ledger";
  EXPECT_FALSE(PrivacyGuard::Open(cfg_).ok());
}

}  // namespace
}  // namespace shoal::worker
