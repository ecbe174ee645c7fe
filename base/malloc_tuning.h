// Process-wide allocator settings for Shoal's executables.
//
// Shoal moves model-sized buffers (megabytes to gigabytes) every round. glibc serves such
// blocks with fresh mmap()s and returns them on free, so every round pays page faults on
// every byte again; on the VMs measured here that made secure-channel and ZeroMQ transfers about
// 10x slower (bench/secure_channel_bench). Keeping large blocks in the heap lets rounds reuse
// already-mapped memory. Call once at the start of main().
#pragma once

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace shoal {

inline void TuneMallocForLargeBuffers() {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);  // allocate blocks up to 1 GiB from the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // and keep up to 1 GiB of freed heap mapped
}

// One malloc arena for every thread. glibc gives each thread that allocates concurrently its
// own arena, and memory freed in one arena is never reused by another: a worker trains on one
// thread and evaluates on another, so each kept its own LibTorch workspace (measured: 17 MB more
// peak RSS for a 20k-image silo; the coordinator's central evaluation thread: 14 MB). Shoal's
// executables have one or two busy threads that allocate mostly large blocks, so the arena lock
// is not contended.
inline void UseOneMallocArena() { mallopt(M_ARENA_MAX, 1); }

// Hands the heap's free pages back to the operating system (glibc's malloc_trim). With the
// settings above freed memory stays mapped, and with many workers the heap fragments: measured
// with 1000 synthetic workers, the coordinator's heap grew by about 110 MB a round while under
// 60 MB of it was in use. The coordinator calls this once a round, after the commit, so its
// resident memory tracks what it uses; the pages are faulted in again at most once a round.
inline void ReleaseFreeMemory() { malloc_trim(0); }

// ReleaseFreeMemory() once more than `keep_bytes` of the heap is free. What a round freed is
// mostly what the next round allocates again (receive buffers, sealed frames, the update being
// assembled); handed back, it is faulted in again page by page (~14 us a page on the VMs
// measured here). Below the bound it stays mapped; above it (many workers, large models,
// fragmentation) the heap is trimmed as before, so resident memory stays bounded.
inline void ReleaseFreeMemoryBeyond(size_t keep_bytes) {
  if (mallinfo2().fordblks > keep_bytes) malloc_trim(0);
}

// The bound the coordinator and shoal-evaluator keep from one round to the next: a round's
// transfers and evaluation of a CNN-sized model with ten workers fit in it; with many workers
// or large models a round frees more and the heap is trimmed as before.
inline constexpr size_t kKeptFreeHeapBytes = size_t{48} << 20;

// Maps the pages under [data, data + bytes) for writing with one system call, before a
// transfer buffer (a received frame, a sealed frame, an update being assembled) is written.
// Written as is, memory that ReleaseFreeMemory() handed back (or fresh heap) is faulted in one
// 4 KiB page at a time, and on the VMs measured here a page fault costs ~14-20 us: 4 MiB took
// 15-20 ms; with madvise(MADV_POPULATE_WRITE) first, 10-13 ms (bench: BM_WriteReleasedHeap;
// the rest is the hypervisor's share of mapping each page). The contents do not change. Small
// buffers are left alone (not worth a system call), and where the kernel lacks MADV_POPULATE_WRITE
// (before Linux 5.14) the call fails and pages are faulted in as before.
inline void PrefaultForWrite(void* data, size_t bytes) {
#ifndef MADV_POPULATE_WRITE
  constexpr int MADV_POPULATE_WRITE = 23;
#endif
  constexpr size_t kMinBytes = size_t{256} << 10;
  static const uintptr_t kPage = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  if (data == nullptr || bytes < kMinBytes) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kPage - 1) & ~(kPage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kPage - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
}

// reserve(n) on a std::string or std::vector about to be filled, with the capacity beyond its
// current size mapped by PrefaultForWrite.
template <class Buffer>
void ReserveForWrite(Buffer& buffer, size_t n) {
  buffer.reserve(n);
  PrefaultForWrite(buffer.data() + buffer.size(),
                   (buffer.capacity() - buffer.size()) * sizeof(*buffer.data()));
}

// Empties a std::vector or std::string and frees its storage. `c = {}` and `c.clear()` keep
// the capacity (`= {}` assigns an empty initializer list): a worker's 6.6 MB update "freed"
// that way stayed allocated through the next round's training.
template <class Container>
void FreeStorage(Container& c) {
  Container().swap(c);
}

}  // namespace shoal
