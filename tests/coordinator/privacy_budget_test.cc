// The coordinator's per-silo privacy budget (issue #25): task parameters per silo, the sigma
// derived from privacy.target_epsilon, the stop before a silo would exceed it, and the account
// rebuilt exactly from the versions' records.
#include "coordinator/privacy_budget.h"

#include <gtest/gtest.h>

#include "coordinator/config.h"
#include "privacy/rdp_accountant.h"

namespace shoal::coordinator {
namespace {

bool Contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

CoordinatorConfig DpConfig() {
  CoordinatorConfig c;
  c.insecure = true;
  c.dp = "sample";
  c.dp_clip_norm = 1.5;
  c.dp_target_epsilon = 3;
  c.rounds = 4;
  c.epochs = 1;
  c.batch_size = 32;
  return c;
}

TEST(PrivacyBudgetTest, EachSiloGetsItsOwnRateStepsAndTheSigmaThatMeetsTheTarget) {
  PrivacyBudget b(DpConfig());
  ASSERT_TRUE(b.enabled());
  auto small = b.Plan("small", 900);
  auto large = b.Plan("large", 9000);
  ASSERT_TRUE(small.ok() && large.ok()) << small.status().ToString();
  EXPECT_DOUBLE_EQ(small->sampling_rate, 32.0 / 900);
  EXPECT_EQ(small->steps, 29u);  // ceil(900 / 32)
  EXPECT_DOUBLE_EQ(large->sampling_rate, 32.0 / 9000);
  EXPECT_EQ(large->steps, 282u);  // ceil(9000 / 32)
  EXPECT_EQ(small->clip_norm, 1.5);
  for (const auto& p : {*small, *large}) {
    // run.rounds rounds stay within the target; 0.1% less noise would not.
    const int64_t total = static_cast<int64_t>(p.steps) * 4;
    EXPECT_LE(privacy::ComputeEpsilon(p.sampling_rate, p.noise_multiplier, total, 1e-5)->epsilon,
              3.0);
    EXPECT_GT(
        privacy::ComputeEpsilon(p.sampling_rate, p.noise_multiplier * 0.999, total, 1e-5)->epsilon,
        3.0);
  }
  EXPECT_NE(small->noise_multiplier, large->noise_multiplier);
}

TEST(PrivacyBudgetTest, StopsBeforeTheRoundThatWouldExceedNamingTheSilo) {
  CoordinatorConfig c = DpConfig();
  PrivacyBudget b(c);
  std::map<std::string, privacy::DpParams> plans;
  plans["a"] = *b.Plan("a", 900);
  plans["b"] = *b.Plan("b", 1800);
  for (int round = 1; round <= 4; ++round) {
    ASSERT_FALSE(b.WouldExceed(plans).has_value()) << "round " << round;
    b.Commit(plans);
  }
  auto why = b.WouldExceed(plans);  // a fifth round
  ASSERT_TRUE(why.has_value());
  EXPECT_TRUE(Contains(*why, "silo a")) << *why;
  EXPECT_TRUE(Contains(*why, "privacy.target_epsilon = 3")) << *why;
  const double eps_a = b.EpsilonBySilo()["a"].get<double>();
  EXPECT_LE(eps_a, 3.0);
  EXPECT_GT(eps_a, 2.9);  // the derived sigma spends nearly all of the budget
}

TEST(PrivacyBudgetTest, TheAccountIsRebuiltExactlyFromTheVersionRecords) {
  CoordinatorConfig c = DpConfig();
  c.dp_target_epsilon = 0;
  c.dp_noise_multiplier = 1.1;
  PrivacyBudget live(c);
  std::vector<store::VersionMeta> versions(1);  // v0: no record
  for (int round = 1; round <= 3; ++round) {
    std::map<std::string, privacy::DpParams> used;
    used["a"] = *live.Plan("a", 900);
    if (round != 2) used["b"] = *live.Plan("b", 1234);  // b missed round 2
    store::VersionMeta m;
    m.version = round;
    // Through JSON text, as the meta file stores it.
    m.metrics["privacy"] = nlohmann::json::parse(live.Commit(used).dump());
    versions.push_back(m);
  }
  PrivacyBudget resumed(c);
  ASSERT_TRUE(resumed.Restore(versions).ok());
  EXPECT_EQ(resumed.EpsilonBySilo(), live.EpsilonBySilo());  // bit-identical doubles
  const double want_b = privacy::ComputeEpsilon(32.0 / 1234, 1.1, 2 * 39, 1e-5)->epsilon;
  EXPECT_DOUBLE_EQ(resumed.EpsilonBySilo()["b"].get<double>(), want_b);
  // A damaged record is not skipped silently.
  versions[2].metrics["privacy"]["silos"]["a"]["steps"] = "many";
  Status st = resumed.Restore(versions);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), "v2")) << st.message();
}

TEST(PrivacyBudgetTest, WithoutDpNothingIsPlanned) {
  CoordinatorConfig c;
  PrivacyBudget b(c);
  EXPECT_FALSE(b.enabled());
  EXPECT_EQ(b.Plan("a", 100)->mode, privacy::DpMode::kNone);
  EXPECT_FALSE(b.WouldExceed({}).has_value());
}

TEST(PrivacyConfigTest, BadValuesNameTheirKey) {
  auto expect = [](const std::vector<std::string>& overrides, const std::string& key) {
    std::vector<std::string> all = {"security.insecure=true"};
    all.insert(all.end(), overrides.begin(), overrides.end());
    auto c = LoadCoordinatorConfig("", all);
    ASSERT_FALSE(c.ok()) << key;
    EXPECT_TRUE(Contains(c.status().message(), key)) << c.status().message();
  };
  expect({"privacy.dp=\"client\""}, "privacy.dp");
  expect({"privacy.dp=\"sample\""}, "privacy.noise_multiplier");  // neither sigma nor target
  expect({"privacy.dp=\"sample\"", "privacy.noise_multiplier=-1"}, "privacy.noise_multiplier");
  expect({"privacy.dp=\"sample\"", "privacy.target_epsilon=-2"}, "privacy.target_epsilon");
  expect({"privacy.dp=\"sample\"", "privacy.target_epsilon=3", "privacy.clip_norm=0"},
         "privacy.clip_norm");
  expect({"privacy.dp=\"sample\"", "privacy.target_epsilon=3", "privacy.delta=1"}, "privacy.delta");
  expect({"privacy.dp=\"sample\"", "privacy.target_epsilon=3", "privacy.sampling_rate=1.5"},
         "privacy.sampling_rate");
  expect({"privacy.target_epsilon=3"}, "privacy.dp");  // a budget without DP
  auto ok = LoadCoordinatorConfig(
      "", {"security.insecure=true", "privacy.dp=\"sample\"", "privacy.target_epsilon=3",
           "privacy.sampling_rate=0.01", "privacy.delta=1e-6", "privacy.clip_norm=0.5"});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->dp_sampling_rate, 0.01);
  EXPECT_EQ(ok->dp_delta, 1e-6);
  EXPECT_EQ(ok->dp_clip_norm, 0.5);
}

}  // namespace
}  // namespace shoal::coordinator
