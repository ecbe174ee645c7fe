#include "base/malloc_tuning.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace shoal {
namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

// Anonymous memory that no one has touched yet: none of it is resident.
struct FreshMapping {
  explicit FreshMapping(size_t n) : bytes(n) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  ~FreshMapping() {
    if (data) munmap(data, bytes);
  }
  // Resident flag of each page (mincore).
  std::vector<bool> Resident() const {
    std::vector<unsigned char> v(bytes / kPage);
    EXPECT_EQ(mincore(data, bytes, v.data()), 0) << std::strerror(errno);
    std::vector<bool> out;
    for (unsigned char c : v) out.push_back((c & 1) != 0);
    return out;
  }
  char* data = nullptr;
  size_t bytes;
};

bool KernelCanPopulate() {
  FreshMapping m(kPage);
  return m.data && madvise(m.data, kPage, MADV_POPULATE_WRITE) == 0;
}

size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

TEST(MallocTuningTest, PrefaultForWriteMapsEveryWholePageOfTheBufferAndNothingElse) {
  if (!KernelCanPopulate()) GTEST_SKIP() << "this kernel has no MADV_POPULATE_WRITE (Linux < 5.14)";
  FreshMapping m(128 * kPage);
  ASSERT_NE(m.data, nullptr);
  // A buffer that starts and ends inside pages: only the pages wholly inside it are mapped.
  PrefaultForWrite(m.data + 100, 126 * kPage);
  const std::vector<bool> resident = m.Resident();
  EXPECT_FALSE(resident[0]) << "page 0 is shared with bytes before the buffer";
  for (size_t i = 1; i < 126; ++i) EXPECT_TRUE(resident[i]) << "page " << i;
  EXPECT_FALSE(resident[126]) << "page 126 is shared with bytes after the buffer";
  EXPECT_FALSE(resident[127]);
  for (size_t i = 0; i < m.bytes; ++i) ASSERT_EQ(m.data[i], 0) << "byte " << i << " changed";
}

TEST(MallocTuningTest, PrefaultForWriteKeepsTheBytesOfALiveBuffer) {
  std::string buf(size_t{8} << 20, '\0');
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i % 251);
  const std::string before = buf;
  PrefaultForWrite(buf.data() + 3, buf.size() - 7);
  EXPECT_TRUE(buf == before);
}

TEST(MallocTuningTest, PrefaultForWriteLeavesSmallBuffersAndNullAlone) {
  FreshMapping m(32 * kPage);  // 128 KiB: below the size where a system call pays off
  ASSERT_NE(m.data, nullptr);
  PrefaultForWrite(m.data, m.bytes);
  for (bool r : m.Resident()) EXPECT_FALSE(r);
  PrefaultForWrite(nullptr, size_t{64} << 20);  // no crash, nothing to do
}

TEST(MallocTuningTest, ReleaseFreeMemoryBeyondHandsTheHeapBackOnlyAboveTheBound) {
  TuneMallocForLargeBuffers();  // as the executables: large blocks come from the heap
  UseOneMallocArena();
  constexpr size_t kFreed = size_t{64} << 20;
  static void* volatile sink;  // keeps the compiler from eliding the allocation
  sink = std::malloc(kFreed);
  ASSERT_NE(sink, nullptr);
  std::memset(sink, 1, kFreed);
  std::free(sink);  // free, and (with the settings above) still mapped
  const size_t before = ResidentBytes();

  ReleaseFreeMemoryBeyond(size_t{256} << 20);  // 64 MiB free is under the bound: kept
  const size_t kept = ResidentBytes();
  EXPECT_GT(kept + (size_t{8} << 20), before) << "memory was handed back below the bound";

  ReleaseFreeMemoryBeyond(size_t{16} << 20);  // over the bound: all of it goes back
  const size_t after = ResidentBytes();
  EXPECT_LT(after + (size_t{48} << 20), kept)
      << "resident " << (kept >> 20) << " MiB before, " << (after >> 20) << " MiB after";
}

// `c = {}` keeps a container's storage; FreeStorage hands it back.
TEST(MallocTuningTest, FreeStorageHandsTheCapacityBack) {
  std::vector<float> v(1 << 20, 1.0f);
  v = {};
  ASSERT_GE(v.capacity(), size_t{1} << 20) << "the library changed: `= {}` now frees";
  FreeStorage(v);
  EXPECT_EQ(v.capacity(), 0u);
  std::string s(1 << 20, 'x');
  FreeStorage(s);
  EXPECT_LT(s.capacity(), 64u);  // back to the small-string buffer
  EXPECT_TRUE(s.empty());
}

}  // namespace
}  // namespace shoal
