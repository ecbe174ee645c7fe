#include "base/restart_budget.h"

#include <gtest/gtest.h>

namespace shoal {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// Three restarts within ten minutes, each after twice the wait of the one before; the fourth
// is refused until the first has left the window, and then the back-off starts over from
// what is still in the window.
TEST(RestartBudgetTest, BacksOffAndRefusesOnlyWithinTheWindow) {
  RestartBudget budget(3, minutes(10), milliseconds(250), seconds(4));
  const auto t0 = RestartBudget::Clock::time_point() + minutes(100);
  EXPECT_EQ(budget.Take(t0), milliseconds(250));
  EXPECT_EQ(budget.Take(t0 + seconds(1)), milliseconds(500));
  EXPECT_EQ(budget.Take(t0 + seconds(2)), milliseconds(1000));
  EXPECT_EQ(budget.Recent(t0 + seconds(3)), 3);
  EXPECT_FALSE(budget.Take(t0 + seconds(3)).has_value());
  EXPECT_FALSE(budget.Take(t0 + minutes(10) - milliseconds(1)).has_value());
  // t0's restart has left the window; two are still in it.
  EXPECT_EQ(budget.Take(t0 + minutes(10)), milliseconds(1000));
  EXPECT_FALSE(budget.Take(t0 + minutes(10) + milliseconds(500)).has_value());
  // Long after: a fresh budget.
  EXPECT_EQ(budget.Recent(t0 + minutes(30)), 0);
  EXPECT_EQ(budget.Take(t0 + minutes(30)), milliseconds(250));
}

TEST(RestartBudgetTest, TheBackOffStopsAtItsCap) {
  RestartBudget budget(10, minutes(10), milliseconds(250), seconds(1));
  const auto t0 = RestartBudget::Clock::time_point() + minutes(100);
  EXPECT_EQ(budget.Take(t0), milliseconds(250));
  EXPECT_EQ(budget.Take(t0), milliseconds(500));
  EXPECT_EQ(budget.Take(t0), seconds(1));
  EXPECT_EQ(budget.Take(t0), seconds(1));
  EXPECT_EQ(budget.Recent(t0), 4);
}

TEST(RestartBudgetTest, NoRestartsAllowedRefusesTheFirst) {
  RestartBudget budget(0, minutes(10), milliseconds(250), seconds(1));
  EXPECT_FALSE(budget.Take(RestartBudget::Clock::now()).has_value());
}

}  // namespace
}  // namespace shoal
