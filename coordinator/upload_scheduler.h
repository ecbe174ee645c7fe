// Admission of updates for upload, one slot at a time (network.max_concurrent_uploads), and
// their assembly: a worker announces its update (UpdateReady), waits in a queue for a slot, is
// granted one (UploadGrant), sends chunks that are decrypted straight into its assembler, and the
// complete update is checked against the announced SHA-256, decoded (train.compression) and
// handed to the round's aggregator, then freed. So the coordinator holds at most
// max_concurrent_uploads update buffers whatever the number of workers.
//
// The scheduler owns the queue, the slots and each connection's transfer; it never sends (the
// round engine sends the grants it returns and the errors it reports).
// Not thread-safe: owned by the round engine's thread (the payload placer runs on it too).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "coordinator/aggregation/aggregator.h"
#include "model/compression.h"
#include "protocols/codec.h"
#include "protocols/messages.h"
#include "protocols/placement.h"

namespace shoal::coordinator {

// An update that arrived whole, matched its announcement and was folded.
struct FoldedUpdate {
  protocols::UpdateReady ready;
  std::chrono::steady_clock::time_point ready_at;  // when UpdateReady arrived
  int64_t weight = 0;                              // what it was folded with (Round::Weight)
};

class UploadScheduler {
 public:
  UploadScheduler(int max_concurrent, uint32_t chunk_bytes, protocols::Limits limits,
                  model::Encoding encoding);

  // Opens round `round`: updates of `model_values` values, folded into `aggregator` (not owned;
  // it outlives the round).
  void BeginRound(uint64_t round, size_t model_values, Aggregator* aggregator);
  // Closes the round: every transfer ends, the queue empties.
  void EndRound();

  // Queues connection `peer` (worker `name`, for logs) with its validated announcement, to be
  // folded with `weight` (> 0); a transfer it had in progress or a place it had in the queue is
  // given up.
  void Enqueue(const std::string& peer, const std::string& name, protocols::UpdateReady ready,
               int64_t weight);
  // Gives free slots to queued connections in arrival order: the ones to send an UploadGrant.
  std::vector<std::string> Grant();
  // Forgets connection `peer` (lost, or said Hello again); its slot is free for Grant().
  void Forget(const std::string& peer);

  bool uploading(const std::string& peer) const;
  int active() const { return active_; }
  size_t queued() const { return queue_.size(); }

  // Where to decrypt the payload of a chunk of `peer`'s transfer; empty (read it whole) when
  // it has none or the frame is not a chunk the transfer takes now.
  protocols::PayloadPlacement Place(const std::string& peer, std::string_view head,
                                    size_t payload_bytes);
  // Takes a chunk of `peer`'s transfer (the caller checked uploading(peer)). nullopt while
  // chunks are missing. The transfer ends, freeing its slot, with the folded update or with
  // the error that refused it (a bad chunk, bytes that do not match the announced SHA-256 or do
  // not decode, an update the aggregator rejects).
  Result<std::optional<FoldedUpdate>> Add(const std::string& peer,
                                          const protocols::WeightsChunk& chunk,
                                          std::string_view payload, bool placed);

 private:
  enum class State { kNone, kWaitingGrant, kUploading };
  struct Transfer {
    std::string name;
    State state = State::kNone;
    protocols::UpdateReady ready;
    int64_t weight = 0;
    std::chrono::steady_clock::time_point ready_at;
    protocols::ChunkAssembler assembler;
  };
  void End(Transfer& t);
  Status Fold(std::vector<float>& delta, const Transfer& t);

  const int max_concurrent_;
  const uint32_t chunk_bytes_;
  const protocols::Limits limits_;
  const model::Encoding encoding_;
  uint64_t round_ = 0;
  size_t model_values_ = 0;
  Aggregator* aggregator_ = nullptr;
  std::map<std::string, Transfer> transfers_;  // by connection id; node-stable for placements
  std::deque<std::string> queue_;              // connection ids waiting for a slot
  int active_ = 0;
  std::vector<float> decoded_;  // a compressed update decoded for folding, kept across updates
};

}  // namespace shoal::coordinator
