// The upload scheduler: slots granted in arrival order up to the limit, freed by completion,
// failure or loss; complete updates checked against their announcement and folded.
#include "coordinator/upload_scheduler.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "base/sha256.h"
#include "coordinator/aggregation/fed_avg.h"
#include "protocols/codec.h"

namespace shoal::coordinator {
namespace {

constexpr uint32_t kChunkBytes = 4096;
constexpr size_t kValues = 3000;  // 12000 bytes: three chunks

protocols::Limits TestLimits() {
  protocols::Limits limits;
  limits.max_payload_bytes = kChunkBytes;
  return limits;
}

model::ModelSpec Spec() {
  model::ModelSpec spec;
  spec.tensors.push_back({"w", model::DType::kFloat32, {static_cast<int64_t>(kValues)}});
  return spec;
}

std::vector<float> Delta(float v) { return std::vector<float>(kValues, v); }

protocols::UpdateReady Ready(const std::vector<float>& delta, int64_t samples) {
  protocols::UpdateReady r;
  r.round = 1;
  r.num_samples = samples;
  r.total_bytes = delta.size() * sizeof(float);
  const Digest d = Sha256::Of(delta.data(), delta.size() * sizeof(float));
  r.sha256.assign(d.begin(), d.end());
  return r;
}

class UploadSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    agg_.Begin(Spec(), /*exact=*/false);
    uploads_.BeginRound(1, kValues, &agg_);
  }
  // Sends every chunk of `delta` for `peer`; the result of the last Add.
  Result<std::optional<FoldedUpdate>> Upload(const std::string& peer,
                                             const std::vector<float>& delta) {
    Result<std::optional<FoldedUpdate>> last = std::optional<FoldedUpdate>();
    for (const auto& bytes :
         protocols::EncodeChunks(1, delta.data(), delta.size() * 4, kChunkBytes)) {
      auto frame = protocols::ParseFrame(bytes, TestLimits());
      EXPECT_TRUE(frame.ok());
      auto chunk = protocols::Decode<protocols::WeightsChunk>(*frame);
      EXPECT_TRUE(chunk.ok());
      last = uploads_.Add(peer, *chunk, frame->payload, false);
      if (!last.ok()) return last;
    }
    return last;
  }
  FedAvg agg_;
  UploadScheduler uploads_{2, kChunkBytes, TestLimits(), model::Encoding::kF32};
};

TEST_F(UploadSchedulerTest, GrantsSlotsInArrivalOrderUpToTheLimit) {
  uploads_.Enqueue("c", "w-c", Ready(Delta(1), 1), 1);
  uploads_.Enqueue("a", "w-a", Ready(Delta(1), 1), 1);
  uploads_.Enqueue("b", "w-b", Ready(Delta(1), 1), 1);
  EXPECT_EQ(uploads_.Grant(), (std::vector<std::string>{"c", "a"}));
  EXPECT_EQ(uploads_.active(), 2);
  EXPECT_EQ(uploads_.queued(), 1u);
  EXPECT_TRUE(uploads_.Grant().empty());  // no free slot
  EXPECT_TRUE(uploads_.uploading("a"));
  EXPECT_FALSE(uploads_.uploading("b"));
  uploads_.Forget("c");  // lost: its slot goes to the next in line
  EXPECT_EQ(uploads_.Grant(), std::vector<std::string>{"b"});
}

TEST_F(UploadSchedulerTest, CompleteUpdateIsFoldedAndFreesItsSlot) {
  const std::vector<float> delta = Delta(0.5f);
  uploads_.Enqueue("a", "w-a", Ready(delta, 7), 7);
  ASSERT_EQ(uploads_.Grant(), std::vector<std::string>{"a"});
  auto done = Upload("a", delta);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  ASSERT_TRUE(done->has_value());
  EXPECT_EQ((*done)->ready.num_samples, 7);
  EXPECT_EQ(agg_.updates(), 1);
  EXPECT_EQ(agg_.total_samples(), 7);
  EXPECT_EQ(uploads_.active(), 0);
  EXPECT_FALSE(uploads_.uploading("a"));
}

TEST_F(UploadSchedulerTest, BytesThatDoNotMatchTheAnnouncementAreRefused) {
  uploads_.Enqueue("a", "w-a", Ready(Delta(0.5f), 7), 7);
  ASSERT_EQ(uploads_.Grant(), std::vector<std::string>{"a"});
  auto done = Upload("a", Delta(0.25f));
  ASSERT_FALSE(done.ok());
  EXPECT_NE(done.status().message().find("SHA-256"), std::string::npos);
  EXPECT_EQ(agg_.updates(), 0);
  EXPECT_EQ(uploads_.active(), 0);  // the slot is free again
}

TEST_F(UploadSchedulerTest, UpdateTheAggregatorRejectsEndsTheTransfer) {
  std::vector<float> delta = Delta(0.5f);
  delta[10] = std::numeric_limits<float>::infinity();
  uploads_.Enqueue("a", "w-a", Ready(delta, 7), 7);
  ASSERT_EQ(uploads_.Grant(), std::vector<std::string>{"a"});
  auto done = Upload("a", delta);
  ASSERT_FALSE(done.ok());
  EXPECT_EQ(done.status().code(), Code::kRejected);
  EXPECT_EQ(agg_.updates(), 0);
  EXPECT_EQ(uploads_.active(), 0);
}

TEST_F(UploadSchedulerTest, ChunkWithoutAGrantIsRefused) {
  uploads_.Enqueue("a", "w-a", Ready(Delta(1), 1), 1);  // queued, not granted
  const std::vector<float> delta = Delta(1);
  auto chunks = protocols::EncodeChunks(1, delta.data(), delta.size() * 4, kChunkBytes);
  auto frame = protocols::ParseFrame(chunks[0], TestLimits());
  ASSERT_TRUE(frame.ok());
  auto chunk = protocols::Decode<protocols::WeightsChunk>(*frame);
  ASSERT_TRUE(chunk.ok());
  EXPECT_FALSE(uploads_.Add("a", *chunk, frame->payload, false).ok());
  EXPECT_FALSE(uploads_.Add("nobody", *chunk, frame->payload, false).ok());
}

TEST_F(UploadSchedulerTest, EndRoundEndsEveryTransferAndEmptiesTheQueue) {
  uploads_.Enqueue("a", "w-a", Ready(Delta(1), 1), 1);
  uploads_.Enqueue("b", "w-b", Ready(Delta(1), 1), 1);
  uploads_.Enqueue("c", "w-c", Ready(Delta(1), 1), 1);
  ASSERT_EQ(uploads_.Grant().size(), 2u);
  uploads_.EndRound();
  EXPECT_EQ(uploads_.active(), 0);
  EXPECT_EQ(uploads_.queued(), 0u);
  EXPECT_TRUE(uploads_.Grant().empty());
}

TEST_F(UploadSchedulerTest, AnnouncingAgainRequeuesAndGivesUpTheTransfer) {
  uploads_.Enqueue("a", "w-a", Ready(Delta(1), 1), 1);
  ASSERT_EQ(uploads_.Grant(), std::vector<std::string>{"a"});
  uploads_.Enqueue("a", "w-a", Ready(Delta(2), 1), 1);
  EXPECT_EQ(uploads_.active(), 0);
  EXPECT_EQ(uploads_.queued(), 1u);
  ASSERT_EQ(uploads_.Grant(), std::vector<std::string>{"a"});
  auto done = Upload("a", Delta(2));  // the second announcement is the one checked
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_TRUE(done->has_value());
}

}  // namespace
}  // namespace shoal::coordinator
