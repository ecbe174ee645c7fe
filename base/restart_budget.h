// How often a helper process that died may be started again: at most `max_restarts` within any
// `window`, each after a back-off that doubles with the restarts already made in the window.
// A process that dies at once (a model that crashes it, memory the machine does not have) is
// then not restarted in a tight loop, and a long run that loses it now and then (the OOM killer
// once a week) keeps a restart for each time instead of running out after the first few.
// Time is passed in, so the policy is tested without sleeping.
#pragma once

#include <chrono>
#include <deque>
#include <optional>

namespace shoal {

class RestartBudget {
 public:
  using Clock = std::chrono::steady_clock;

  RestartBudget(int max_restarts, Clock::duration window, Clock::duration first_delay,
                Clock::duration max_delay)
      : max_restarts_(max_restarts),
        window_(window),
        first_delay_(first_delay),
        max_delay_(max_delay) {}

  // A restart at `now`: nullopt when max_restarts were made within the window before it;
  // otherwise it is counted and the result is how long to wait before starting the process
  // (first_delay, then twice as long for each restart still in the window, at most max_delay).
  std::optional<Clock::duration> Take(Clock::time_point now) {
    Forget(now);
    if (static_cast<int>(recent_.size()) >= max_restarts_) return std::nullopt;
    Clock::duration delay = first_delay_;
    for (size_t i = 0; i < recent_.size() && delay < max_delay_; ++i) delay *= 2;
    recent_.push_back(now);
    return delay < max_delay_ ? delay : max_delay_;
  }

  // Restarts made within the window before `now`.
  int Recent(Clock::time_point now) {
    Forget(now);
    return static_cast<int>(recent_.size());
  }

 private:
  void Forget(Clock::time_point now) {
    while (!recent_.empty() && now - recent_.front() >= window_) recent_.pop_front();
  }

  const int max_restarts_;
  const Clock::duration window_, first_delay_, max_delay_;
  std::deque<Clock::time_point> recent_;
};

}  // namespace shoal
