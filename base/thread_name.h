// Names the calling thread (Linux: at most 15 characters), so `top -H`, `ps -L` and perf
// show which of a process's threads spends the CPU: training, evaluation, serving HTTP.
#pragma once

#include <pthread.h>

namespace shoal {

inline void SetThreadName(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace shoal
