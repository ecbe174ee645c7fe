// The round being trained: its number and base version, the selected workers, the updates
// accepted so far, the frames that carry its TrainTask, and its figures for metrics.jsonl.
// A fresh Round is made for every round (attempt); nothing carries over but what the engine
// copies into the round's record.
//
// Not thread-safe: owned by the round engine's thread.
#pragma once

#include <chrono>
#include <cstdint>
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

class Round {
 public:
  Round() = default;
  Round(uint64_t number, uint64_t base_version, const std::vector<std::string>& selected);

  uint64_t number() const { return number_; }
  uint64_t base_version() const { return base_version_; }
  std::chrono::steady_clock::time_point started() const { return started_; }
  const std::set<std::string>& selected() const { return selected_; }
  bool selected(const std::string& name) const { return selected_.count(name) != 0; }
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
  // figures in range. `expected_bytes` is the model's size in this run's `encoding`.
  std::optional<UpdateRefusal> Check(const protocols::UpdateReady& m, const std::string& run_id,
                                     const Peer& p, model::Encoding encoding,
                                     uint64_t expected_bytes) const;
  // Records worker `name`'s folded update; returns the seconds since the round started.
  double Accept(const std::string& name, const FoldedUpdate& u);

  void AddBytesIn(uint64_t n) { bytes_in_ += n; }
  void AddBytesOut(uint64_t n) { bytes_out_ += n; }
  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }
  // The sample-weighted mean of the accepted updates' training losses.
  double TrainLoss(int64_t total_samples) const;
  double train_seconds_max() const { return train_seconds_max_; }
  // Per accepted update: where each worker's part of the round went.
  const nlohmann::json& updates() const { return updates_; }

 private:
  uint64_t number_ = 0;
  uint64_t base_version_ = 0;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::set<std::string> selected_;
  std::map<std::string, std::string> accepted_;
  bool collecting_ = false;
  std::vector<std::shared_ptr<const std::string>> train_frames_;
  std::shared_ptr<const std::string> train_task_with_eval_;
  double loss_weighted_sum_ = 0;
  double train_seconds_max_ = 0;
  nlohmann::json updates_ = nlohmann::json::object();
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
};

}  // namespace shoal::coordinator
