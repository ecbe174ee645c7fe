#include "worker/privacy_guard.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace shoal::worker {
namespace {

std::string Num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

privacy::LedgerEntry EntryOf(const protocols::TrainTask& t, const privacy::DpParams& p) {
  return {t.run_id, t.round, p.sampling_rate, p.noise_multiplier, p.steps};
}

double Capped(double eps) {
  return std::isfinite(eps) ? std::min(eps, privacy::kMaxReportedEpsilon)
                            : privacy::kMaxReportedEpsilon;
}

}  // namespace

privacy::DpParams DpParamsOf(const protocols::TrainTask& t) {
  privacy::DpParams p;
  p.mode = static_cast<privacy::DpMode>(t.dp_mode);
  p.clip_norm = t.dp_clip_norm;
  p.noise_multiplier = t.dp_noise_multiplier;
  p.sampling_rate = t.dp_sampling_rate;
  p.steps = t.dp_steps;
  p.seeded_noise = t.dp_seeded_noise != 0;
  return p;
}

Result<PrivacyGuard> PrivacyGuard::Open(const WorkerConfig& cfg) {
  auto ledger = privacy::PrivacyLedger::Open(cfg.LedgerPath());
  std::string warning;
  if (!ledger.ok() && cfg.ledger.empty() && cfg.max_epsilon == 0) {
    // The default place (the bundle, read-only in the docker setup) is not writable and no limit
    // depends on the ledger: account in memory, and say so.
    warning = "privacy ledger " + cfg.LedgerPath() + " cannot be opened (" +
              ledger.status().message() +
              "); accounting in memory only: set privacy.ledger to a writable file to keep this "
              "silo's privacy spending across restarts";
    ledger = privacy::PrivacyLedger::Open("");
  }
  if (!ledger.ok()) return ledger.status().Annotate("privacy.ledger");
  PrivacyGuard guard(cfg, std::move(ledger).value());
  guard.warning_ = std::move(warning);
  return guard;
}

PrivacyGuard::PrivacyGuard(const WorkerConfig& cfg, privacy::PrivacyLedger ledger)
    : require_dp_(cfg.require_dp),
      max_epsilon_(cfg.max_epsilon),
      delta_(cfg.delta),
      allow_seeded_noise_(cfg.allow_seeded_noise),
      ledger_(std::move(ledger)) {}

Result<privacy::DpParams> PrivacyGuard::Admit(const protocols::TrainTask& t) const {
  const privacy::DpParams p = DpParamsOf(t);
  if (Status st = privacy::ValidateDpParams(p, "TrainTask.dp_"); !st.ok()) {
    return Rejected("refused TrainTask of round " + std::to_string(t.round) + ": " + st.message());
  }
  if (p.mode == privacy::DpMode::kNone) {
    if (require_dp_) {
      return Rejected("refused TrainTask of round " + std::to_string(t.round) +
                      ": it asks for training without differential privacy (dp_mode 0) and "
                      "this worker requires DP-SGD (privacy.require_dp = true); set the "
                      "coordinator's privacy.dp = \"sample\"");
    }
    return p;
  }
  if (p.seeded_noise && !allow_seeded_noise_) {
    return Rejected("refused TrainTask of round " + std::to_string(t.round) +
                    ": its DP noise would come from the coordinator's seed "
                    "(run.deterministic), which the coordinator could subtract; allow it with "
                    "the worker's privacy.allow_seeded_noise = true");
  }
  if (max_epsilon_ > 0) {
    auto next = ledger_.SpentWith(EntryOf(t, p), delta_);
    if (!next.ok()) return next.status();
    if (!(next->epsilon <= max_epsilon_)) {
      return Rejected(
          "refused TrainTask of round " + std::to_string(t.round) + ": q=" + Num(p.sampling_rate) +
          " sigma=" + Num(p.noise_multiplier) + " steps=" + std::to_string(p.steps) +
          " would take this silo's epsilon from " + Num(Epsilon()) + " to " + Num(next->epsilon) +
          " at delta " + Num(delta_) + ", past its privacy.max_epsilon = " + Num(max_epsilon_));
    }
  }
  return p;
}

Status PrivacyGuard::Record(const protocols::TrainTask& t, const privacy::DpParams& p) {
  if (p.mode == privacy::DpMode::kNone) return Status::Ok();
  return ledger_.Record(EntryOf(t, p));
}

double PrivacyGuard::Epsilon() const {
  if (ledger_.tasks() == 0) return 0;
  auto s = ledger_.Spent(delta_);
  return s.ok() ? Capped(s->epsilon) : privacy::kMaxReportedEpsilon;
}

}  // namespace shoal::worker
