// Test helper: records the largest single operator-new request made while an AllocationScope
// is alive, so tests can check that a hostile length prefix is rejected before anything is
// allocated from it (a 1 TiB request that merely fails with std::bad_alloc would otherwise look
// like a clean rejection). Link tests/testing/allocation_tracker.cc into the test binary: it
// replaces the global operator new/delete.
#pragma once

#include <cstddef>

namespace shoal::testing {

class AllocationScope {
 public:
  AllocationScope();
  ~AllocationScope();
  AllocationScope(const AllocationScope&) = delete;
  AllocationScope& operator=(const AllocationScope&) = delete;
  size_t max_allocation() const;
  // The sum of all operator-new requests made while the scope is alive.
  size_t total_allocated() const;
};

}  // namespace shoal::testing
