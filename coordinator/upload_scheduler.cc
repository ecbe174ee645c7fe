#include "coordinator/upload_scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "base/sha256.h"

namespace shoal::coordinator {

UploadScheduler::UploadScheduler(int max_concurrent, uint32_t chunk_bytes, protocols::Limits limits,
                                 model::Encoding encoding)
    : max_concurrent_(max_concurrent),
      chunk_bytes_(chunk_bytes),
      limits_(limits),
      encoding_(encoding) {}

void UploadScheduler::BeginRound(uint64_t round, size_t model_values, Aggregator* aggregator) {
  EndRound();
  round_ = round;
  model_values_ = model_values;
  aggregator_ = aggregator;
}

void UploadScheduler::EndRound() {
  for (auto& [id, t] : transfers_) {
    if (t.state != State::kNone) End(t);
  }
  queue_.clear();
}

void UploadScheduler::End(Transfer& t) {
  if (t.state == State::kUploading) --active_;
  t.state = State::kNone;
  t.assembler.Reset();
}

void UploadScheduler::Enqueue(const std::string& peer, const std::string& name,
                              protocols::UpdateReady ready, int64_t weight) {
  Transfer& t = transfers_[peer];
  if (t.state == State::kUploading) End(t);
  queue_.erase(std::remove(queue_.begin(), queue_.end(), peer), queue_.end());
  t.name = name;
  t.ready = std::move(ready);
  t.weight = weight;
  t.ready_at = std::chrono::steady_clock::now();
  t.state = State::kWaitingGrant;
  queue_.push_back(peer);
}

std::vector<std::string> UploadScheduler::Grant() {
  std::vector<std::string> granted;
  while (active_ < max_concurrent_ && !queue_.empty()) {
    const std::string id = queue_.front();
    queue_.pop_front();
    auto it = transfers_.find(id);
    if (it == transfers_.end() || it->second.state != State::kWaitingGrant) continue;
    Transfer& t = it->second;
    t.state = State::kUploading;
    // Sizes were validated with the announcement (total_bytes == the model's) and the config.
    if (Status st = t.assembler.Start(round_, t.ready.total_bytes, chunk_bytes_); !st.ok()) {
      spdlog::error("round={} worker={} cannot start upload: {}", round_, t.name, st.message());
      t.state = State::kNone;
      continue;
    }
    ++active_;
    granted.push_back(id);
  }
  return granted;
}

void UploadScheduler::Forget(const std::string& peer) {
  auto it = transfers_.find(peer);
  if (it == transfers_.end()) return;
  End(it->second);
  queue_.erase(std::remove(queue_.begin(), queue_.end(), peer), queue_.end());
  transfers_.erase(it);
}

bool UploadScheduler::uploading(const std::string& peer) const {
  auto it = transfers_.find(peer);
  return it != transfers_.end() && it->second.state == State::kUploading;
}

protocols::PayloadPlacement UploadScheduler::Place(const std::string& peer, std::string_view head,
                                                   size_t payload_bytes) {
  auto it = transfers_.find(peer);
  if (it == transfers_.end() || it->second.state != State::kUploading) return {};
  return it->second.assembler.PlaceFrame(head, payload_bytes, limits_);
}

Result<std::optional<FoldedUpdate>> UploadScheduler::Add(const std::string& peer,
                                                         const protocols::WeightsChunk& chunk,
                                                         std::string_view payload, bool placed) {
  auto it = transfers_.find(peer);
  if (it == transfers_.end() || it->second.state != State::kUploading) {
    return ProtocolError("chunk without an upload grant");
  }
  Transfer& t = it->second;
  Status st = t.assembler.Add(chunk, payload, placed);
  if (st.ok() && !t.assembler.complete()) return std::optional<FoldedUpdate>();
  if (st.ok()) {
    std::vector<float> delta = t.assembler.Take();
    st = Fold(delta, t);
  }
  End(t);
  if (!st.ok()) return st;
  return std::optional<FoldedUpdate>(FoldedUpdate{t.ready, t.ready_at, t.weight});
}

Status UploadScheduler::Fold(std::vector<float>& delta, const Transfer& t) {
  const protocols::UpdateReady& ready = t.ready;
  const Digest d = Sha256::Of(delta.data(), delta.size() * sizeof(float));
  if (std::string(d.begin(), d.end()) != ready.sha256) {
    return InvalidArgument("update bytes do not match the SHA-256 announced in UpdateReady");
  }
  if (encoding_ != model::Encoding::kF32) {  // decoded into a buffer kept across updates
    decoded_.resize(model_values_);
    const std::string_view bytes(reinterpret_cast<const char*>(delta.data()),
                                 delta.size() * sizeof(float));
    SHOAL_RETURN_IF_ERROR(model::DecodeDelta(encoding_, bytes, decoded_.size(), decoded_.data()));
    delta.swap(decoded_);
  }
  return aggregator_->Fold(delta.data(), delta.size(), t.weight);
}

}  // namespace shoal::coordinator
