// The status board behind /api/rounds, /api/models and /metrics.
#include "coordinator/status_board.h"

#include <gtest/gtest.h>

namespace shoal {
namespace {

// A long run keeps every round on the board but the participant lists of the last 100 only
// (the full lists stay in metrics.jsonl and the version files).
TEST(StatusBoardTest, OldRoundsKeepCountsNotParticipantLists) {
  coordinator::StatusBoard board;
  for (int r = 1; r <= 150; ++r) {
    nlohmann::json names = nlohmann::json::array({"w1", "w2", "w" + std::to_string(r)});
    board.AddRound({{"round", r},
                    {"participants", names},
                    {"workers", {{"w1", {{"train_s", 1.5}}}}},
                    {"phases_s", {{"collect", 1.0}}}});
    board.AddVersion({{"version", r}, {"participants", names}});
  }
  const nlohmann::json rounds = board.Rounds();
  const nlohmann::json models = board.Models();
  ASSERT_EQ(rounds.size(), 150u);
  ASSERT_EQ(models.size(), 150u);
  for (const nlohmann::json* list : {&rounds, &models}) {
    for (size_t i = 0; i < 150; ++i) {
      const auto& e = (*list)[i];
      if (i < 50) {
        EXPECT_FALSE(e.contains("participants")) << i;
        EXPECT_FALSE(e.contains("workers")) << i;
        EXPECT_EQ(e.value("participants_count", 0), 3) << i;
      } else {
        ASSERT_TRUE(e.contains("participants")) << i;
        EXPECT_EQ(e["participants"][2], "w" + std::to_string(i + 1));
        if (list == &rounds) {
          EXPECT_EQ(e["workers"]["w1"]["train_s"], 1.5) << i;
        }
      }
    }
  }
  EXPECT_EQ(rounds[0]["round"], 1);
}

// The defences' per-worker verdicts (issue #23) are per-worker parts too: old rounds keep
// the flagged names only.
TEST(StatusBoardTest, OldRoundsKeepFlaggedWorkersNotPerWorkerVerdicts) {
  coordinator::StatusBoard board;
  for (int r = 1; r <= 120; ++r) {
    board.AddRound({{"round", r},
                    {"participants", {"w1", "x"}},
                    {"defences",
                     {{"workers", {{"x", {{"selected", false}}}, {"w1", {{"selected", true}}}}},
                      {"flagged", {"x"}}}}});
  }
  const nlohmann::json rounds = board.Rounds();
  ASSERT_EQ(rounds.size(), 120u);
  EXPECT_FALSE(rounds[0]["defences"].contains("workers"));
  EXPECT_EQ(rounds[0]["defences"]["flagged"], nlohmann::json::array({"x"}));
  EXPECT_EQ(rounds[119]["defences"]["workers"]["x"]["selected"], false);
}

// A version is listed when it is committed and its metrics arrive after its evaluation: the
// entry is replaced in place, not added twice.
TEST(StatusBoardTest, VersionMetricsArriveAfterTheCommit) {
  coordinator::StatusBoard board;
  board.AddVersion({{"version", 0}, {"metrics", {{"central", 0.1}}}});
  board.AddVersion({{"version", 1}, {"metrics", {{"evaluation", "pending"}}}});
  board.UpdateVersion({{"version", 1}, {"metrics", {{"central", 0.8}}}});
  board.UpdateVersion({{"version", 2}, {"metrics", {{"central", 0.9}}}});  // unknown: added
  const nlohmann::json models = board.Models();
  ASSERT_EQ(models.size(), 3u);
  EXPECT_EQ(models[0]["metrics"]["central"], 0.1);
  EXPECT_EQ(models[1]["metrics"], (nlohmann::json{{"central", 0.8}}));
  EXPECT_EQ(models[2]["version"], 2);
}

}  // namespace
}  // namespace shoal

namespace shoal::coordinator {
namespace {

// Issue #25: each silo's epsilon on /metrics, with delta and the budget; a hostile worker name
// cannot break the exposition format.
TEST(StatusBoardTest, PrometheusShowsEachSilosEpsilon) {
  StatusBoard b;
  b.SetStatus({{"round", 2},
               {"version", 2},
               {"privacy",
                {{"mechanism", "sample"},
                 {"delta", 1e-5},
                 {"target_epsilon", 3.0},
                 {"epsilon", {{"w1", 2.5}, {"evil\"}\nx", 1.25}, {"lost", nullptr}}}}}});
  const std::string text = b.Prometheus();
  EXPECT_NE(text.find("# TYPE shoal_dp_epsilon gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("shoal_dp_epsilon{silo=\"w1\"} 2.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("shoal_dp_epsilon{silo=\"evil\\\"}\\nx\"} 1.25\n"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("silo=\"lost\""), std::string::npos) << text;  // unbounded: no sample
  EXPECT_NE(text.find("shoal_dp_delta 1e-05\n"), std::string::npos) << text;
  EXPECT_NE(text.find("shoal_dp_target_epsilon 3\n"), std::string::npos) << text;
  StatusBoard plain;
  plain.SetStatus({{"round", 1}});
  EXPECT_EQ(plain.Prometheus().find("shoal_dp_"), std::string::npos);
}

}  // namespace
}  // namespace shoal::coordinator
