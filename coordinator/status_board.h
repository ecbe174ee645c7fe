// What the coordinator shows the outside world while it runs: status, per-round records, worker
// table, versions and Prometheus metrics. The round engine's thread writes; HTTP threads read.
// Every method is thread-safe (one mutex); readers get copies.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace shoal::coordinator {

class StatusBoard {
 public:
  // Phases observed in round_phase_seconds histograms.
  static const std::vector<std::string>& Phases();

  void SetStatus(nlohmann::json status);
  void SetWorkers(nlohmann::json workers);
  void AddRound(const nlohmann::json& record);  // also observes its phase durations
  void AddVersion(const nlohmann::json& meta);
  // Replaces the entry of meta's version (its metrics arrive after the commit).
  void UpdateVersion(const nlohmann::json& meta);
  void CountRejection(const std::string& reason);
  void AddBytes(uint64_t in, uint64_t out);

  nlohmann::json Status() const;
  nlohmann::json Rounds() const;
  nlohmann::json Workers() const;
  nlohmann::json Models() const;
  // Prometheus text exposition format (version 0.0.4).
  std::string Prometheus() const;

 private:
  struct Histogram {
    std::vector<uint64_t> buckets;  // cumulative counts per kBuckets bound
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  nlohmann::json status_ = nlohmann::json::object();
  nlohmann::json workers_ = nlohmann::json::array();
  nlohmann::json rounds_ = nlohmann::json::array();
  nlohmann::json models_ = nlohmann::json::array();
  std::map<std::string, uint64_t> rejections_;
  std::map<std::string, Histogram> phases_;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
};

}  // namespace shoal::coordinator
