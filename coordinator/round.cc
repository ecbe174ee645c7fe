#include "coordinator/round.h"

#include <algorithm>
#include <cmath>

#include "privacy/dp_params.h"

namespace shoal::coordinator {

using protocols::ErrorCode;

int64_t WeightCap(const DeclaredSamples& declared, double max_weight_ratio, int64_t max_samples) {
  if (max_weight_ratio == 0 || declared.empty()) return max_samples;
  std::vector<int64_t> counts;
  counts.reserve(declared.size());
  for (const auto& [name, n] : declared) counts.push_back(n);
  const size_t mid = (counts.size() - 1) / 2;
  std::nth_element(counts.begin(), counts.begin() + static_cast<ptrdiff_t>(mid), counts.end());
  // In double: the config bounds the ratio and the counts, the product may still pass int64.
  const double cap = max_weight_ratio * static_cast<double>(counts[mid]);
  if (cap >= static_cast<double>(max_samples)) return max_samples;
  return std::max<int64_t>(1, static_cast<int64_t>(cap));
}

Round::Round(uint64_t number, uint64_t base_version, DeclaredSamples selected, int64_t weight_cap)
    : number_(number), base_version_(base_version), weight_cap_(weight_cap) {
  for (const auto& [name, n] : selected) selected_.insert(name);
  declared_ = std::move(selected);
}

std::string Round::Missing() const {
  std::string missing;
  for (const auto& n : selected_) {
    if (!accepted_.count(n)) missing += (missing.empty() ? "" : ",") + n;
  }
  return missing;
}

void Round::Open(std::vector<std::shared_ptr<const std::string>> train_frames,
                 std::shared_ptr<const std::string> train_task_with_eval) {
  train_frames_ = std::move(train_frames);
  train_task_with_eval_ = std::move(train_task_with_eval);
  collecting_ = true;
}

void Round::Close() {
  collecting_ = false;
  train_frames_.clear();
  train_task_with_eval_.reset();
}

std::vector<std::shared_ptr<const std::string>> Round::TrainFrames(bool evaluate) const {
  std::vector<std::shared_ptr<const std::string>> frames = train_frames_;
  if (evaluate && !frames.empty() && train_task_with_eval_) frames[0] = train_task_with_eval_;
  return frames;
}

std::optional<UpdateRefusal> Round::Check(const protocols::UpdateReady& m,
                                          const std::string& run_id, const Peer& p,
                                          model::Encoding encoding, uint64_t expected_bytes) const {
  auto refuse = [](ErrorCode code, std::string why) {
    return std::optional<UpdateRefusal>(UpdateRefusal{code, std::move(why)});
  };
  if (m.run_id != run_id) return refuse(ErrorCode::kStale, "update for another run " + m.run_id);
  if (!collecting_ || m.round != number_) {
    return refuse(ErrorCode::kStale, "round " + std::to_string(m.round) + " is not open");
  }
  if (!selected_.count(p.name)) return refuse(ErrorCode::kStale, "worker not selected this round");
  if (auto acc = accepted_.find(p.name); acc != accepted_.end()) {
    // A resend of the accepted update is answered by the caller with the same Ack.
    if (acc->second != m.sha256) {
      return refuse(ErrorCode::kDuplicate, "a different update was already accepted this round");
    }
    return std::nullopt;
  }
  if (m.base_version != base_version_) {
    return refuse(ErrorCode::kStale, "update is based on v" + std::to_string(m.base_version) +
                                         ", the round trains v" + std::to_string(base_version_));
  }
  const int64_t declared = declared_.at(p.name);  // selected: declared before the round
  if (m.num_samples <= 0 || m.num_samples > declared) {
    return refuse(ErrorCode::kBadUpdate, "num_samples " + std::to_string(m.num_samples) +
                                             " outside 1.." + std::to_string(declared) +
                                             " (training samples declared at Hello before the "
                                             "round)");
  }
  if (m.encoding != static_cast<uint8_t>(encoding)) {
    return refuse(ErrorCode::kBadUpdate, "encoding " + std::to_string(m.encoding) +
                                             " is not this run's train.compression (" +
                                             model::EncodingName(encoding) + ")");
  }
  if (m.total_bytes != expected_bytes) {
    return refuse(ErrorCode::kBadUpdate,
                  "total_bytes " + std::to_string(m.total_bytes) + " does not match the model's " +
                      std::to_string(expected_bytes) + " (" + model::EncodingName(encoding) + ")");
  }
  if (m.sha256.size() != 32) return refuse(ErrorCode::kBadUpdate, "sha256 must be 32 bytes");
  if (!std::isfinite(m.train_loss)) {
    return refuse(ErrorCode::kBadUpdate, "train_loss is not finite");
  }
  if (!(m.train_seconds >= 0 && m.train_seconds < 1e9) ||
      !(m.train_cpu_seconds >= 0 && m.train_cpu_seconds < 1e9)) {
    return refuse(ErrorCode::kBadUpdate, "train_seconds or train_cpu_seconds out of range");
  }
  if (!(m.dp_epsilon == -1 ||
        (m.dp_epsilon >= 0 && m.dp_epsilon <= privacy::kMaxReportedEpsilon))) {
    return refuse(ErrorCode::kBadUpdate, "dp_epsilon " + std::to_string(m.dp_epsilon) +
                                             " out of range (-1 without DP, else [0, 1e12])");
  }
  return std::nullopt;
}

double Round::Accept(const std::string& name, const FoldedUpdate& u) {
  const protocols::UpdateReady& r = u.ready;
  accepted_[name] = r.sha256;
  // Weighted like the update itself, so the loss matches the aggregate's total.
  loss_weighted_sum_ += r.train_loss * static_cast<double>(u.weight);
  train_seconds_max_ = std::max(train_seconds_max_, r.train_seconds);
  const auto now = std::chrono::steady_clock::now();
  const double took = std::chrono::duration<double>(now - started_).count();
  // Seconds since the round started: the worker announced its update (ready_s; before that it
  // received the model and trained for train_s) and the update was in and folded (accepted_s).
  updates_[name] = {{"samples", r.num_samples},
                    {"weight", u.weight},
                    {"train_s", r.train_seconds},
                    {"train_cpu_s", r.train_cpu_seconds},
                    {"train_loss", r.train_loss},
                    {"ready_s", std::chrono::duration<double>(u.ready_at - started_).count()},
                    {"accepted_s", took}};
  // The worker's own account of its silo (its ledger, all runs), as reported.
  if (r.dp_epsilon >= 0) updates_[name]["dp_epsilon_reported"] = r.dp_epsilon;
  if (u.weight < r.num_samples) {
    updates_[name]["capped"] = true;
    capped_.push_back(name);
  }
  return took;
}

void Round::Refuse(const std::string& name, const std::string& why) {
  if (selected_.count(name) != 0 && accepted_.count(name) == 0) refused_[name] = why;
}

double Round::TrainLoss(int64_t total_samples) const {
  return loss_weighted_sum_ / static_cast<double>(total_samples);
}

}  // namespace shoal::coordinator
