// The worker's side of differential privacy: it protects its own silo. A TrainTask's DP
// parameters are checked against this worker's own settings ([privacy] in its config) before
// it trains, so a coordinator cannot turn DP off, hand it noise it knows, or spend more of the
// silo's budget than the worker allows without being refused; every DP task it runs is recorded
// in its ledger (privacy/ledger.h) before training starts.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "privacy/dp_params.h"
#include "privacy/ledger.h"
#include "protocols/messages.h"
#include "worker/config.h"

namespace shoal::worker {

// The DP fields of a TrainTask.
privacy::DpParams DpParamsOf(const protocols::TrainTask& t);

class PrivacyGuard {
 public:
  // Opens (or creates) the ledger at cfg.LedgerPath(); call before the sandbox is entered. When
  // the default path (privacy.ledger unset) cannot be opened and privacy.max_epsilon is 0, the
  // ledger is kept in memory and warning() says why; an explicit path, or a limit, must work.
  static Result<PrivacyGuard> Open(const WorkerConfig& cfg);

  // The task's DP parameters when this worker runs it; Rejected naming why not: a field out of
  // range (by its name), no DP with privacy.require_dp, noise seeded by the coordinator without
  // privacy.allow_seeded_noise, or an epsilon past privacy.max_epsilon.
  Result<privacy::DpParams> Admit(const protocols::TrainTask& t) const;
  // Records a task Admit accepted, durably, before it trains (no-op for mode none).
  Status Record(const protocols::TrainTask& t, const privacy::DpParams& p);
  // The silo's epsilon at privacy.delta over everything the ledger holds (capped at
  // kMaxReportedEpsilon, as UpdateReady.dp_epsilon carries it).
  double Epsilon() const;
  const privacy::PrivacyLedger& ledger() const { return ledger_; }
  const std::string& warning() const { return warning_; }

 private:
  PrivacyGuard(const WorkerConfig& cfg, privacy::PrivacyLedger ledger);
  bool require_dp_;
  double max_epsilon_;
  double delta_;
  bool allow_seeded_noise_;
  privacy::PrivacyLedger ledger_;
  std::string warning_;
};

}  // namespace shoal::worker
