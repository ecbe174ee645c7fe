#include "coordinator/reply_budget.h"

#include <gtest/gtest.h>

namespace shoal::coordinator {
namespace {

using std::chrono::milliseconds;

TEST(ReplyBudgetTest, BurstThenSteadyRatePerConnection) {
  ReplyBudget budget(/*per_second=*/10, /*burst=*/5);
  const auto t0 = ReplyBudget::Clock::time_point{} + std::chrono::hours(1);
  int allowed = 0;
  for (int i = 0; i < 1000; ++i) allowed += budget.Take("flooder", t0);
  EXPECT_EQ(allowed, 5);  // the burst, then nothing at the same instant
  EXPECT_EQ(budget.dropped(), 995u);
  // Another connection has its own budget.
  EXPECT_TRUE(budget.Take("other", t0));
  // 10 per second refill: after 300 ms three more.
  allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += budget.Take("flooder", t0 + milliseconds(300));
  EXPECT_EQ(allowed, 3);
}

TEST(ReplyBudgetTest, QuietConnectionsAreForgotten) {
  ReplyBudget budget(10, 5);
  const auto t0 = ReplyBudget::Clock::time_point{} + std::chrono::hours(1);
  for (int i = 0; i < 100; ++i) (void)budget.Take("peer-" + std::to_string(i), t0);
  EXPECT_EQ(budget.tracked(), 100u);
  budget.Prune(t0 + milliseconds(50));  // not refilled yet
  EXPECT_EQ(budget.tracked(), 100u);
  budget.Prune(t0 + milliseconds(200));  // 0.1 s x 10/s refills the one token each took
  EXPECT_EQ(budget.tracked(), 0u);
}

}  // namespace
}  // namespace shoal::coordinator
