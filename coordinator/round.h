// The round being trained: its number and base version, the selected workers, the updates
// accepted so far, the frames that carry its TrainTask, and its figures for metrics.jsonl.
// A fresh Round is made for every round (attempt); nothing carries over but what the engine
// copies into the round's record.
//
// Not thread-safe: owned by the round engine's thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coordinator/upload_scheduler.h"
#include "coordinator/worker_registry.h"
#include "model/compression.h"
#include "protocols/messages.h"

namespace shoal::coordinator {

// Why an UpdateReady is refused: the Error code for the worker and the message.
struct UpdateRefusal {
  protocols::ErrorCode code;
  std::string why;
};

// The selected workers of a round with the training-set sizes they declared at Hello before it.
using DeclaredSamples = std::map<std::string, int64_t>;

// The most an update of the round may weigh: `max_weight_ratio` x the lower median of the
// declared sizes (the lower one, so that with two workers the larger cannot raise it; a worker
// moves the median only with more than half of the round behind it), at most
// `max_samples`; `max_samples` when max_weight_ratio is 0 (no cap) or nobody is selected.
int64_t WeightCap(const DeclaredSamples& declared, double max_weight_ratio, int64_t max_samples);

class Round {
 public:
  Round() = default;
  // `weight_cap`: see WeightCap().
  Round(uint64_t number, uint64_t base_version, DeclaredSamples selected,
        int64_t weight_cap = std::numeric_limits<int64_t>::max());

  uint64_t number() const { return number_; }
  uint64_t base_version() const { return base_version_; }
  std::chrono::steady_clock::time_point started() const { return started_; }
  const std::set<std::string>& selected() const { return selected_; }
  bool selected(const std::string& name) const { return selected_.count(name) != 0; }
  int64_t weight_cap() const { return weight_cap_; }
  // The weight worker `name`'s update of `num_samples` folds with: min(num_samples, cap).
  int64_t Weight(int64_t num_samples) const { return std::min(num_samples, weight_cap_); }
  // Worker name -> raw SHA-256 of its accepted update.
  const std::map<std::string, std::string>& accepted() const { return accepted_; }
  bool accepted(const std::string& name) const { return accepted_.count(name) != 0; }
  bool all_in() const { return accepted_.size() == selected_.size(); }
  // The selected workers with no accepted update, comma-separated.
  std::string Missing() const;

  // Collecting: the TrainTask + chunks, encoded once and shared by every selected peer's send
  // queue, and the TrainTask that also asks for an evaluation (for peers that owe one).
  void Open(std::vector<std::shared_ptr<const std::string>> train_frames,
            std::shared_ptr<const std::string> train_task_with_eval);
  void Close();
  bool collecting() const { return collecting_; }
  // The frames for one worker; `evaluate` swaps in the TrainTask that asks for an evaluation.
  std::vector<std::shared_ptr<const std::string>> TrainFrames(bool evaluate) const;

  // Whether worker `p` may upload the update `m` announces now: this run, this round open, `p`
  // selected and without an accepted update, trained on the round's version, its sizes and
  // figures in range; its sample count at most what `p` declared before the round (a Hello
  // again mid-round cannot raise it). `expected_bytes` is the model's size in this run's
  // `encoding`.
  std::optional<UpdateRefusal> Check(const protocols::UpdateReady& m, const std::string& run_id,
                                     const Peer& p, model::Encoding encoding,
                                     uint64_t expected_bytes) const;
  // Records worker `name`'s folded update; returns the seconds since the round started.
  double Accept(const std::string& name, const FoldedUpdate& u);
  // Records why worker `name`'s update was refused (for the round's record; the last reason
  // per selected worker is kept, also when a later update of it is accepted). Ignored for
  // workers not selected and once its update is accepted.
  void Refuse(const std::string& name, const std::string& why);

  void AddBytesIn(uint64_t n) { bytes_in_ += n; }
  void AddBytesOut(uint64_t n) { bytes_out_ += n; }
  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }
  // The sample-weighted mean of the accepted updates' training losses.
  double TrainLoss(int64_t total_samples) const;
  double train_seconds_max() const { return train_seconds_max_; }
  // Per accepted update: where each worker's part of the round went, its sample count and the
  // weight it was folded with ("capped": true when the cap lowered it).
  const nlohmann::json& updates() const { return updates_; }
  // Worker name -> why its update was refused, for the selected workers refused this round.
  const nlohmann::json& refused() const { return refused_; }
  // The accepted updates whose weight was capped, by worker name.
  const std::vector<std::string>& capped() const { return capped_; }

 private:
  uint64_t number_ = 0;
  uint64_t base_version_ = 0;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::set<std::string> selected_;
  DeclaredSamples declared_;
  int64_t weight_cap_ = std::numeric_limits<int64_t>::max();
  std::map<std::string, std::string> accepted_;
  bool collecting_ = false;
  std::vector<std::shared_ptr<const std::string>> train_frames_;
  std::shared_ptr<const std::string> train_task_with_eval_;
  double loss_weighted_sum_ = 0;
  double train_seconds_max_ = 0;
  nlohmann::json updates_ = nlohmann::json::object();
  nlohmann::json refused_ = nlohmann::json::object();
  std::vector<std::string> capped_;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
};

}  // namespace shoal::coordinator
