// A round's updates kept outside the heap, for aggregators that need every update at once
// (median, trimmed mean, Multi-Krum: robust_aggregator.h).
//
// One file per round in a directory on disk (strategy.spill_dir, by default the run
// directory). It has no name while it is used: it is opened with O_TMPFILE, or where the file
// system lacks that, created under a random name with O_EXCL | O_NOFOLLOW and unlinked at
// once. So a coordinator killed mid-round leaves nothing a restart could misread, and the disk
// space returns to the file system when the file is truncated (each round, once the next
// version is made) or closed (the process ends, however it ends). RemoveLeftovers() deletes
// files a crash between the create and the unlink of the fallback path left behind.
//
// Updates are appended whole with pwrite and read back a slice at a time with pread into a
// caller's buffer: the page cache holds the file, not the process, so the coordinator's RSS is
// what the caller reads at once (mapped pages would count in RSS until unmapped). Before each
// append the free space of the file system is checked: a full disk is a clear error naming the
// directory, the bytes needed and the bytes free, not a SIGBUS or a short write.
// Not thread-safe: owned by one aggregator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace shoal::coordinator {

// The prefix of the fallback path's temporary names (what RemoveLeftovers looks for).
inline constexpr const char* kSpillPrefix = ".shoal-spill-";
// Bytes an append must leave free on the spill file system: the round's new version and its
// metrics still have to be written after the spill grew.
inline constexpr uint64_t kSpillFreeReserve = uint64_t{256} << 20;

class UpdateSpill {
 public:
  UpdateSpill() = default;
  ~UpdateSpill();
  UpdateSpill(const UpdateSpill&) = delete;
  UpdateSpill& operator=(const UpdateSpill&) = delete;

  // Opens an unnamed file in `dir` (created if missing) for updates of `values` floats each.
  // The file from a previous Open is closed first.
  Status Open(const std::string& dir, size_t values);
  // Drops every update (the file is truncated to 0 bytes: its disk space is released).
  Status Clear();
  // Closes the file; its space is released.
  void Close();

  // Appends one update of values() floats, after checking that the file system has room for
  // it and for kSpillFreeReserve bytes more (kept free for the run's own versions and logs).
  Status Append(const float* update);
  // Reads update `index`'s values [begin, begin + n) into out[0..n).
  Status Read(size_t index, size_t begin, size_t n, float* out) const;

  bool is_open() const { return fd_ >= 0; }
  size_t values() const { return values_; }
  size_t updates() const { return updates_; }
  const std::string& dir() const { return dir_; }
  // The file's logical size in bytes (updates x values x 4).
  uint64_t bytes() const { return static_cast<uint64_t>(updates_) * values_ * sizeof(float); }

  // Deletes the fallback path's temporary files left in `dir` by a crash; the number removed.
  static int RemoveLeftovers(const std::string& dir);

 private:
  int fd_ = -1;
  std::string dir_;
  size_t values_ = 0;
  size_t updates_ = 0;
};

}  // namespace shoal::coordinator
