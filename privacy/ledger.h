// A worker's own record of the privacy its silo has spent: one line per differentially private
// task it ran, kept on its disk across runs and restarts, so that its epsilon (and its limit,
// privacy.max_epsilon in the worker's config) does not depend on what any coordinator says.
//
// The file is an append-only journal opened once, before the worker's seccomp filter forbids
// creating and renaming files (base/sandbox.h; appending to a descriptor already open stays
// possible): a record is appended and fsynced BEFORE the task trains, so a crash can only
// over-count (a task recorded but never sent), never under-count. A torn last line (a crash
// mid-append, no trailing newline) is a task that never trained: Open cuts it off. Any other
// malformed line makes Open fail (Corrupt, naming the line): a ledger that cannot be read is not
// silently restarted from zero.
//
// Line format (text, one task per line):  dp1 <round> <q> <sigma> <steps> <run id>
// with q and sigma printed to 17 significant digits (exact round trip).
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "privacy/rdp_accountant.h"

namespace shoal::privacy {

inline constexpr uint64_t kMaxLedgerBytes = uint64_t{64} << 20;

struct LedgerEntry {
  std::string run_id;
  uint64_t round = 0;
  double sampling_rate = 0;
  double noise_multiplier = 0;
  uint64_t steps = 0;
};

class PrivacyLedger {
 public:
  // Opens (creating it 0600 when missing) the ledger at `path` and replays it. `path` empty: a
  // ledger in memory only (its spending is forgotten at exit).
  static Result<PrivacyLedger> Open(const std::string& path);
  PrivacyLedger(PrivacyLedger&& other) noexcept;
  PrivacyLedger& operator=(PrivacyLedger&& other) noexcept;
  PrivacyLedger(const PrivacyLedger&) = delete;
  ~PrivacyLedger();

  // The epsilon at `delta` after every recorded task, and after them plus `next`.
  Result<PrivacySpent> Spent(double delta) const { return accountant_.Spent(delta); }
  Result<PrivacySpent> SpentWith(const LedgerEntry& next, double delta) const;
  // Appends `e` and makes it durable (fsync) before returning; the accountant follows.
  Status Record(const LedgerEntry& e);
  uint64_t tasks() const { return tasks_; }
  const std::string& path() const { return path_; }

 private:
  PrivacyLedger() = default;
  std::string path_;
  int fd_ = -1;
  uint64_t tasks_ = 0;
  RdpAccountant accountant_;
};

// One ledger line (with its newline), and its inverse (InvalidArgument when malformed).
std::string FormatLedgerLine(const LedgerEntry& e);
Result<LedgerEntry> ParseLedgerLine(const std::string& line);

}  // namespace shoal::privacy
