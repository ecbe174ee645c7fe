// Crash-safe file writes and bounded reads.
//
// WriteFileAtomic writes to "<path>.tmp.<24 random hex>" (created O_EXCL|O_NOFOLLOW, so a file
// or symlink planted there is never followed or truncated), fsyncs it, renames it over `path` and
// fsyncs the directory, so a reader sees either the old file or the complete new one, never a torn
// one. Errors are IoError values naming the path and the failing call (ENOSPC included).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace shoal {

// Writes the concatenation of `parts` atomically; the file is created with `mode` (0600 for
// private keys, so they are never readable by others, not even for an instant).
Status WriteFileAtomic(const std::string& path, const std::vector<std::string_view>& parts,
                       mode_t mode = 0644);
inline Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode = 0644) {
  return WriteFileAtomic(path, std::vector<std::string_view>{data}, mode);
}

// Atomically creates `path` with `data` (mode `mode` from the first byte), only if it does not
// exist yet: Rejected otherwise, so an existing file (a private key) is never overwritten.
Status CreateFileAtomic(const std::string& path, std::string_view data, mode_t mode);

// fsync of a directory, so renames and links in it are durable.
Status SyncDirectory(const std::string& dir);

// 96 random bits from getrandom(2) as 24 hex digits: a file name part an attacker cannot
// predict (temporary files here, spill files in coordinator/aggregation/).
Result<std::string> RandomFileSuffix();

// IoError "what path: strerror(errno)".
Status ErrnoStatus(const std::string& what, const std::string& path);

// Reads a whole file; NotFound when missing, InvalidArgument when larger than max_bytes.
Result<std::string> ReadFile(const std::string& path, uint64_t max_bytes = 1ull << 34);

// Appends one line (a trailing '\n' is added) and fsyncs.
Status AppendLine(const std::string& path, std::string_view line);

// mkdir -p.
Status MakeDirs(const std::string& path);

bool PathExists(const std::string& path);

// Another Shoal executable that an executable runs (shoal-export for shoalctl, shoal-evaluator
// for the coordinator): the one beside the running executable, else the first on PATH. NotFound
// names where it looked.
Result<std::string> FindCompanionExecutable(const std::string& name);

}  // namespace shoal
