// CPU time of the calling thread: what a piece of work cost, as opposed to how long it took
// (wall time also counts the time other processes held the core).
#pragma once

#include <time.h>

namespace shoal {

inline double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace shoal
