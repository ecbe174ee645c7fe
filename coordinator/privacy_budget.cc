#include "coordinator/privacy_budget.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace shoal::coordinator {
namespace {

double Epsilon(const privacy::RdpAccountant& a, double delta) {
  auto s = a.Spent(delta);
  return s.ok() ? s->epsilon : std::numeric_limits<double>::infinity();
}

// JSON has no infinity: an unbounded epsilon is written as null.
nlohmann::json EpsilonJson(double eps) {
  return std::isfinite(eps) ? nlohmann::json(eps) : nlohmann::json(nullptr);
}

privacy::DpMode ModeOf(const CoordinatorConfig& cfg) {
  auto m = privacy::ParseDpMode(cfg.dp, "privacy.dp");  // checked by Validate
  return m.ok() ? *m : privacy::DpMode::kNone;
}

std::string Num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

}  // namespace

PrivacyBudget::PrivacyBudget(const CoordinatorConfig& cfg)
    : mode_(ModeOf(cfg)),
      clip_norm_(cfg.dp_clip_norm),
      noise_multiplier_(cfg.dp_noise_multiplier),
      target_epsilon_(cfg.dp_target_epsilon),
      delta_(cfg.dp_delta),
      sampling_rate_(cfg.dp_sampling_rate),
      epochs_(cfg.epochs),
      batch_size_(cfg.batch_size),
      rounds_(cfg.rounds),
      seeded_noise_(cfg.deterministic) {}

Result<privacy::DpParams> PrivacyBudget::Plan(const std::string& name, int64_t n) {
  privacy::DpParams p;
  if (!enabled()) return p;
  if (n <= 0) return InvalidArgument("worker " + name + " declared no training records");
  p.mode = mode_;
  p.clip_norm = clip_norm_;
  p.seeded_noise = seeded_noise_;
  if (sampling_rate_ > 0) {
    p.sampling_rate = sampling_rate_;
    p.steps = privacy::DpSgdStepsAtRate(epochs_, sampling_rate_);
  } else {
    p.sampling_rate = std::min(1.0, static_cast<double>(batch_size_) / static_cast<double>(n));
    p.steps = privacy::DpSgdSteps(epochs_, n, batch_size_);
  }
  if (!delta_warned_[name] && delta_ * static_cast<double>(n) >= 1) {
    delta_warned_[name] = true;
    spdlog::warn(
        "privacy.delta={} is not below 1/n for silo {} (n={}): a mechanism that "
        "publishes one record outright would meet it; use delta well below {}",
        delta_, name, n, 1.0 / static_cast<double>(n));
  }
  if (noise_multiplier_ > 0) {
    p.noise_multiplier = noise_multiplier_;
  } else {
    const auto key = std::make_pair(p.sampling_rate, p.steps);
    auto it = sigma_cache_.find(key);
    if (it == sigma_cache_.end()) {
      const uint64_t total = p.steps * static_cast<uint64_t>(rounds_);
      auto sigma = privacy::NoiseMultiplierFor(p.sampling_rate, static_cast<int64_t>(total), delta_,
                                               target_epsilon_);
      if (!sigma.ok()) {
        return sigma.status().Annotate("privacy.target_epsilon for silo " + name +
                                       " (q=" + std::to_string(p.sampling_rate) + ", " +
                                       std::to_string(total) + " steps)");
      }
      it = sigma_cache_.emplace(key, *sigma).first;
      spdlog::info(
          "privacy: sigma {:.6f} for q={:.6g} x {} steps per round x {} rounds "
          "(epsilon {} at delta {})",
          *sigma, p.sampling_rate, p.steps, rounds_, target_epsilon_, delta_);
    }
    p.noise_multiplier = it->second;
  }
  SHOAL_RETURN_IF_ERROR(privacy::ValidateDpParams(p, "privacy plan for " + name + ": "));
  return p;
}

std::optional<std::string> PrivacyBudget::WouldExceed(
    const std::map<std::string, privacy::DpParams>& plans) const {
  if (!enabled() || !(target_epsilon_ > 0)) return std::nullopt;
  for (const auto& [name, p] : plans) {
    auto it = silos_.find(name);
    privacy::RdpAccountant a = it != silos_.end() ? it->second : privacy::RdpAccountant();
    const double before = Epsilon(a, delta_);
    if (!a.Compose(p.sampling_rate, p.noise_multiplier, static_cast<int64_t>(p.steps)).ok() ||
        !(Epsilon(a, delta_) <= target_epsilon_)) {
      return "privacy budget reached: one more round would take silo " + name + " from epsilon " +
             Num(before) + " to " + Num(Epsilon(a, delta_)) + " (delta " + Num(delta_) +
             "), past privacy.target_epsilon = " + Num(target_epsilon_);
    }
  }
  return std::nullopt;
}

nlohmann::json PrivacyBudget::Commit(const std::map<std::string, privacy::DpParams>& used) {
  nlohmann::json silos = nlohmann::json::object();
  for (const auto& [name, p] : used) {
    if (p.mode == privacy::DpMode::kNone) continue;
    privacy::RdpAccountant& a = silos_[name];
    (void)a.Compose(p.sampling_rate, p.noise_multiplier, static_cast<int64_t>(p.steps));
    silos[name] = {{"q", p.sampling_rate},
                   {"sigma", p.noise_multiplier},
                   {"steps", p.steps},
                   {"clip_norm", p.clip_norm}};
  }
  return {{"mechanism", privacy::DpModeName(mode_)},
          {"delta", delta_},
          {"silos", silos},
          {"epsilon", EpsilonBySilo()}};
}

Status PrivacyBudget::Restore(const std::vector<store::VersionMeta>& versions) {
  silos_.clear();
  for (const auto& v : versions) {
    const auto& m = v.metrics;
    if (!m.is_object() || !m.contains("privacy") || !m["privacy"].is_object()) continue;
    const auto& silos = m["privacy"].value("silos", nlohmann::json::object());
    if (!silos.is_object()) return Corrupt("v" + std::to_string(v.version) + " privacy record");
    for (const auto& [name, r] : silos.items()) {
      const bool ok = r.is_object() && r.contains("q") && r["q"].is_number() &&
                      r.contains("sigma") && r["sigma"].is_number() && r.contains("steps") &&
                      r["steps"].is_number_unsigned();
      if (!ok) {
        return Corrupt("v" + std::to_string(v.version) + " privacy record of silo " + name);
      }
      SHOAL_RETURN_IF_ERROR(
          silos_[name]
              .Compose(r["q"].get<double>(), r["sigma"].get<double>(), r["steps"].get<int64_t>())
              .Annotate("v" + std::to_string(v.version) + " privacy record"));
    }
  }
  return Status::Ok();
}

nlohmann::json PrivacyBudget::EpsilonBySilo() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, a] : silos_) out[name] = EpsilonJson(Epsilon(a, delta_));
  return out;
}

nlohmann::json PrivacyBudget::Summary() const {
  return {{"mechanism", privacy::DpModeName(mode_)},
          {"delta", delta_},
          {"target_epsilon", target_epsilon_ > 0 ? nlohmann::json(target_epsilon_) : nullptr},
          {"clip_norm", clip_norm_},
          {"epsilon", EpsilonBySilo()}};
}

}  // namespace shoal::coordinator
