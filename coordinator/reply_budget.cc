#include "coordinator/reply_budget.h"

#include <algorithm>

namespace shoal::coordinator {

double ReplyBudget::Refilled(const Bucket& b, Clock::time_point now) const {
  const double seconds = std::chrono::duration<double>(now - b.updated).count();
  return std::min(burst_, b.tokens + std::max(0.0, seconds) * per_second_);
}

bool ReplyBudget::Take(const std::string& peer, Clock::time_point now) {
  auto [it, fresh] = buckets_.try_emplace(peer, Bucket{burst_, now});
  Bucket& b = it->second;
  if (!fresh) {
    b.tokens = Refilled(b, now);
    b.updated = now;
  }
  if (b.tokens < 1) {
    ++dropped_;
    return false;
  }
  b.tokens -= 1;
  return true;
}

void ReplyBudget::Prune(Clock::time_point now) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    if (Refilled(it->second, now) >= burst_) {
      it = buckets_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace shoal::coordinator
