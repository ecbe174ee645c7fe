#include "coordinator/update_defences.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <utility>

namespace shoal::coordinator {

Status UpdateDefences::Setup(const CoordinatorConfig& cfg,
                             std::unique_ptr<Aggregator>& aggregator) {
  if (auto* robust = dynamic_cast<RobustAggregator*>(aggregator.get())) {
    RobustOptions o;
    o.spill_dir = cfg.spill_dir.empty() ? cfg.run_dir : cfg.spill_dir;
    o.trim_fraction = cfg.trim_fraction;
    o.byzantine = cfg.byzantine;
    o.multi_krum_m = cfg.multi_krum_m;
    robust->Configure(o);
    robust_ = robust;
    if (int n = UpdateSpill::RemoveLeftovers(o.spill_dir); n > 0) {
      spdlog::warn("removed {} spill file(s) a crash left in {}", n, o.spill_dir);
    }
  }
  SHOAL_ASSIGN_OR_RETURN(mode_, ParseClipMode(cfg.clip));
  bound_ = cfg.clip_norm;
  quantile_ = cfg.clip_quantile;
  lr_ = cfg.clip_lr;
  if (mode_ != ClipMode::kNone) {
    auto clip = std::make_unique<ClippingAggregator>(std::move(aggregator), bound_);
    clip_ = clip.get();
    aggregator = std::move(clip);
  }
  return Status::Ok();
}

Status UpdateDefences::Restore(const nlohmann::json& version_metrics) {
  if (mode_ != ClipMode::kAdaptive) return Status::Ok();
  auto it = version_metrics.find(kClipBoundKey);
  if (it == version_metrics.end() || it->is_null()) return Status::Ok();
  const double b = it->is_number() ? it->get<double>() : -1;
  if (!(b >= kMinAdaptiveBound && b <= kMaxClipNorm)) {
    return Corrupt("the resumed version's " + std::string(kClipBoundKey) + " is not a bound in [" +
                   std::to_string(kMinAdaptiveBound) + ", " + std::to_string(kMaxClipNorm) + "]");
  }
  bound_ = b;
  spdlog::info("adaptive clip bound {} restored from the resumed version", bound_);
  return Status::Ok();
}

void UpdateDefences::BeginRound() {
  folded_.clear();
  if (clip_ != nullptr) clip_->set_bound(bound_);
}

double UpdateDefences::NextBound() const {
  if (mode_ != ClipMode::kAdaptive || clip_ == nullptr) return bound_;
  return NextAdaptiveBound(bound_, clip_->under(), clip_->records().size(), quantile_, lr_);
}

void UpdateDefences::EndRound(bool committed) {
  if (committed) bound_ = NextBound();
  if (robust_ != nullptr) robust_->Release();
}

nlohmann::json UpdateDefences::Record() const {
  if (!active()) return nullptr;
  nlohmann::json workers = nlohmann::json::object();
  std::vector<std::string> flagged;
  for (size_t i = 0; i < folded_.size(); ++i) {
    nlohmann::json w = nlohmann::json::object();
    bool flag = false;
    if (clip_ != nullptr && i < clip_->records().size()) {
      const ClipRecord& r = clip_->records()[i];
      w["norm"] = r.norm;
      w["clipped"] = r.clipped;
      flag |= r.clipped;
    }
    if (robust_ != nullptr && i < robust_->verdicts().size()) {
      const UpdateVerdict& v = robust_->verdicts()[i];
      if (robust_->name() == "trimmed_mean") {
        w["trimmed_share"] = v.trimmed_share;
        flag |= v.trimmed_share > kFlagTrimmedShare;
      } else if (robust_->name() == "multi_krum") {
        w["selected"] = v.selected;
        w["score"] = v.score;
        flag |= !v.selected;
      }
    }
    if (flag) flagged.push_back(folded_[i]);
    workers[folded_[i]] = std::move(w);
  }
  nlohmann::json out = {{"workers", std::move(workers)}, {"flagged", std::move(flagged)}};
  if (clip_ != nullptr) {
    out["clip_bound"] = bound_;
    if (mode_ == ClipMode::kAdaptive) out["next_clip_bound"] = NextBound();
  }
  return out;
}

}  // namespace shoal::coordinator
