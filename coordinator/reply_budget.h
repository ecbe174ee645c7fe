// How many Error replies each connection may cause: a token bucket per connection id. A worker
// that sends malformed or unexpected messages gets an Error for each only up to a burst and a
// steady rate; the rest are dropped and counted (the refusals themselves are still counted by
// reason). Without it every bad message queued one reply, and a worker that sends without
// reading grew the coordinator's memory by the replies waiting for it.
//
// Not thread-safe: owned by the round engine's thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace shoal::coordinator {

// Error replies per connection: a burst of kErrorReplyBurst, then kErrorRepliesPerSecond.
inline constexpr double kErrorRepliesPerSecond = 10;
inline constexpr double kErrorReplyBurst = 20;

class ReplyBudget {
 public:
  using Clock = std::chrono::steady_clock;

  ReplyBudget(double per_second = kErrorRepliesPerSecond, double burst = kErrorReplyBurst)
      : per_second_(per_second), burst_(burst) {}

  // Takes one reply from the connection's budget; false when it is used up (drop the reply).
  bool Take(const std::string& peer, Clock::time_point now);
  // Forgets connections whose budget has refilled (no state is kept for a quiet connection).
  void Prune(Clock::time_point now);
  size_t tracked() const { return buckets_.size(); }
  // Replies dropped so far.
  uint64_t dropped() const { return dropped_; }

 private:
  struct Bucket {
    double tokens;
    Clock::time_point updated;
  };
  double Refilled(const Bucket& b, Clock::time_point now) const;

  double per_second_;
  double burst_;
  std::map<std::string, Bucket> buckets_;
  uint64_t dropped_ = 0;
};

}  // namespace shoal::coordinator
