// Process-wide allocator settings for Shoal's executables.
//
// Shoal moves model-sized buffers (megabytes to gigabytes) every round. glibc serves such
// blocks with fresh mmap()s and returns them on free, so every round pays page faults on
// every byte again; on the VMs measured here that made secure-channel and ZeroMQ transfers about
// 10x slower (bench/secure_channel_bench). Keeping large blocks in the heap lets rounds reuse
// already-mapped memory. Call once at the start of main().
#pragma once

#include <malloc.h>

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

}  // namespace shoal
