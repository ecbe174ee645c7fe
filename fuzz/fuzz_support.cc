#include "fuzz/fuzz_support.h"

#include <sanitizer/allocator_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace shoal::fuzz {
namespace {

std::atomic<size_t> g_limit{0};  // 0 = no cap active
std::atomic<size_t> g_max_seen{0};
const char* g_what = "";

void OnMalloc(const volatile void* ptr, size_t size) {
  const size_t limit = g_limit.load(std::memory_order_relaxed);
  if (limit == 0) return;
  size_t cur = g_max_seen.load(std::memory_order_relaxed);
  while (size > cur && !g_max_seen.compare_exchange_weak(cur, size)) {
  }
  if (size > limit) {
    g_limit.store(0);  // the report below allocates
    std::fprintf(
        stderr, "==ALLOCATION CAP== %s: one allocation of %zu bytes exceeds the cap of %zu bytes\n",
        g_what, size, limit);
    __sanitizer_print_stack_trace();
    std::abort();
  }
}

void OnFree(const volatile void*) {}

bool InstallHooks() {
  // Up to 5 hook pairs are supported; libFuzzer uses one for -malloc_limit_mb.
  return __sanitizer_install_malloc_and_free_hooks(OnMalloc, OnFree) != 0;
}

}  // namespace

void CheckFailed(const char* file, int line, const char* cond, const std::string& why) {
  g_limit.store(0);
  std::fprintf(stderr, "==FUZZ CHECK FAILED== %s:%d: %s\n  %s\n", file, line, cond, why.c_str());
  __sanitizer_print_stack_trace();
  std::abort();
}

AllocationCap::AllocationCap(size_t limit, const char* what) {
  static const bool installed = InstallHooks();
  if (!installed) {
    std::fprintf(stderr, "cannot install the sanitizer allocation hooks\n");
    std::abort();
  }
  g_what = what;
  g_max_seen.store(0);
  g_limit.store(limit);
}

AllocationCap::~AllocationCap() { g_limit.store(0); }

size_t AllocationCap::max_seen() const { return g_max_seen.load(); }

TempDir::TempDir() {
  std::error_code ec;
  std::string tmpl = (std::filesystem::temp_directory_path(ec) / "shoal-fuzz-XXXXXX").string();
  if (ec || ::mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "cannot create a temporary directory\n");
    std::abort();
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace shoal::fuzz
