#include "tests/testing/allocation_tracker.h"

#include <atomic>
#include <cstdlib>
#include <new>

#if defined(__GNUC__) && !defined(__clang__)
// operator new below is malloc-based, so free() in operator delete is the matching call.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<bool> g_track_allocations{false};
std::atomic<size_t> g_max_allocation{0};
std::atomic<size_t> g_total_allocated{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_track_allocations.load(std::memory_order_relaxed)) {
    size_t cur = g_max_allocation.load(std::memory_order_relaxed);
    while (n > cur && !g_max_allocation.compare_exchange_weak(cur, n)) {
    }
    g_total_allocated.fetch_add(n, std::memory_order_relaxed);
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace shoal::testing {

AllocationScope::AllocationScope() {
  g_max_allocation.store(0);
  g_total_allocated.store(0);
  g_track_allocations.store(true);
}
AllocationScope::~AllocationScope() { g_track_allocations.store(false); }
size_t AllocationScope::max_allocation() const { return g_max_allocation.load(); }
size_t AllocationScope::total_allocated() const { return g_total_allocated.load(); }

}  // namespace shoal::testing
