// The coordinator's privacy accounting: which DP parameters each silo's TrainTask carries, the
// epsilon each silo has spent, and whether the next round may run within privacy.target_epsilon.
//
// The account is per silo (worker name): an accountant (privacy/rdp_accountant.h) composed from
// the per-round records stored in every committed version's meta ("privacy" in its metrics), so
// a resumed run rebuilds it from disk, exactly, not from memory. The budget reads epsilon per
// silo and nothing else about the mechanism: client-level DP (coordinator-side clipping and
// noise) adds its own records - one step per round at the silo's selection rate - and reuses
// the stop, the reporting and the model card.
//
// Sigma with privacy.target_epsilon (and no privacy.noise_multiplier) is chosen per silo: the
// smallest sigma with which run.rounds rounds of that silo's steps at its q stay within the
// target (silos of different sizes get different q, steps and sigma; each spends at most the
// target by the last round even if selected every round).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/config.h"
#include "privacy/dp_params.h"
#include "privacy/rdp_accountant.h"
#include "store/model_store.h"

namespace shoal::coordinator {

class PrivacyBudget {
 public:
  explicit PrivacyBudget(const CoordinatorConfig& cfg);

  bool enabled() const { return mode_ != privacy::DpMode::kNone; }
  // The DP parameters of a TrainTask for silo `name` that declared `n` training records
  // (mode none when DP is off). InvalidArgument when no sigma meets the target.
  Result<privacy::DpParams> Plan(const std::string& name, int64_t n);
  // When running `plans` (silo -> its task's parameters) would take a silo past
  // privacy.target_epsilon: the message naming the silo and the epsilon it would reach.
  std::optional<std::string> WouldExceed(
      const std::map<std::string, privacy::DpParams>& plans) const;
  // Accounts for a committed round whose updates came from the silos of `used`; returns the
  // record stored in the version's meta and the round's metrics.jsonl line.
  nlohmann::json Commit(const std::map<std::string, privacy::DpParams>& used);
  // Rebuilds the account from the committed versions' records (every version the run
  // directory holds: an update released into a version counts even if a later version is lost).
  Status Restore(const std::vector<store::VersionMeta>& versions);
  // Silo -> epsilon spent (at privacy.delta); for the status, /metrics and the dashboard.
  nlohmann::json EpsilonBySilo() const;
  // The status's "privacy" object: mechanism, delta, target, epsilon by silo.
  nlohmann::json Summary() const;

 private:
  privacy::DpMode mode_;
  double clip_norm_, noise_multiplier_, target_epsilon_, delta_, sampling_rate_;
  int epochs_, batch_size_, rounds_;
  bool seeded_noise_;
  std::map<std::string, privacy::RdpAccountant> silos_;
  std::map<std::pair<double, uint64_t>, double> sigma_cache_;  // (q, steps) -> derived sigma
  std::map<std::string, bool> delta_warned_;
};

}  // namespace shoal::coordinator
