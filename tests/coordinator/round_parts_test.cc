// The round engine's parts that decide without a network: the worker registry's admission and
// dashboard table, the round's UpdateReady checks, the evaluation tracker's bookkeeping.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "base/file_util.h"
#include "coordinator/evaluation_tracker.h"
#include "coordinator/round.h"
#include "coordinator/worker_registry.h"
#include "security/pki.h"

namespace shoal::coordinator {
namespace {

using protocols::ErrorCode;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

constexpr int64_t kMaxSamples = 1000000;  // admission.max_samples in these tests

protocols::Hello MakeHello(const std::string& name) {
  protocols::Hello h;
  h.name = name;
  h.num_train = 100;
  h.num_val = 10;
  h.input_shape = {1, 28, 28};
  h.num_classes = 10;
  return h;
}

std::optional<Refusal> Check(const protocols::Hello& h, bool secure = false,
                             const std::string& identity = "") {
  return WorkerRegistry::CheckHello(h, secure, identity, {1, 28, 28}, 10, kMaxSamples);
}

TEST(WorkerRegistryTest, HelloChecks) {
  EXPECT_FALSE(Check(MakeHello("silo-1")).has_value());
  auto bad_name = MakeHello("no spaces");
  EXPECT_TRUE(Contains(Check(bad_name)->why, "worker name"));
  auto shape = MakeHello("a");
  shape.input_shape = {3, 32, 32};
  EXPECT_TRUE(Contains(Check(shape)->why, "input shape"));
  auto classes = MakeHello("a");
  classes.num_classes = 11;
  EXPECT_TRUE(Contains(Check(classes)->why, "classes"));
  auto empty = MakeHello("a");
  empty.num_train = 0;
  EXPECT_TRUE(Contains(Check(empty)->why, "training samples"));
  // With TLS the claimed name must be the certificate's, and that refusal is counted.
  auto r = Check(MakeHello("a"), /*secure=*/true, "b");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason, "identity_mismatch");
  EXPECT_FALSE(Check(MakeHello("a"), /*secure=*/true, "a").has_value());
}

// Issue #20: a declared training-set size weighs the worker's updates; INT64_MAX overflowed
// the round's total and 10^15 outweighed every other worker. Beyond admission.max_samples the
// Hello is refused, naming the key; so is a validation set beyond it.
TEST(WorkerRegistryTest, HelloDeclaringMoreThanMaxSamplesIsRefused) {
  auto at_limit = MakeHello("a");
  at_limit.num_train = kMaxSamples;
  at_limit.num_val = kMaxSamples;
  EXPECT_FALSE(Check(at_limit).has_value());
  for (int64_t n :
       {kMaxSamples + 1, int64_t{1'000'000'000'000'000}, std::numeric_limits<int64_t>::max()}) {
    SCOPED_TRACE(n);
    auto h = MakeHello("a");
    h.num_train = n;
    auto r = Check(h);
    ASSERT_TRUE(r.has_value()) << "admitted a silo declaring " << n << " samples";
    EXPECT_EQ(r->reason, "too_many_samples");
    EXPECT_TRUE(Contains(r->why, std::to_string(n) + " training samples")) << r->why;
    EXPECT_TRUE(Contains(r->why, "admission.max_samples=1000000")) << r->why;
  }
  auto val = MakeHello("a");
  val.num_val = std::numeric_limits<int64_t>::max();
  ASSERT_TRUE(Check(val).has_value());
  EXPECT_TRUE(Contains(Check(val)->why, "validation samples")) << Check(val)->why;
}

// Issue #20: a worker's certificate superseded by `shoalctl enroll --reissue` (the old key
// stolen, say) was refused only at the connection's next message; the registry now reports the
// connection for cutting as soon as it reloads the CA's files (RefreshEnrollment, within one
// housekeeping pass), as it did for a revoked name.
TEST(WorkerRegistryTest, AConnectionOnASupersededCertificateIsCutOnReload) {
  char tmpl[] = "/tmp/shoal-registry-XXXXXX";
  const std::string root = ::mkdtemp(tmpl);
  const std::string ca = root + "/ca";
  ASSERT_TRUE(security::InitCa(ca).ok());
  ASSERT_TRUE(security::Enroll(ca, "w1", root + "/w1", "").ok());
  ASSERT_TRUE(security::Enroll(ca, "w2", root + "/w2", "").ok());
  auto fingerprint = [&](const std::string& bundle) {
    auto cert = ReadFile(security::BundleCertPath(bundle), 1 << 20);
    auto info = security::VerifyPeerCert(*ReadFile(security::CaCertPath(ca), 1 << 20), *cert);
    return info.ok() ? info->fingerprint : std::string();
  };
  const std::string old_w1 = fingerprint(root + "/w1"), w2 = fingerprint(root + "/w2");
  ASSERT_FALSE(old_w1.empty());
  WorkerRegistry reg(ca);
  reg.RefreshEnrollment(true);
  bool fresh = false;
  reg.Admit("conn-w1", MakeHello("w1"), &fresh, old_w1);
  reg.Admit("conn-w2", MakeHello("w2"), &fresh, w2);
  EXPECT_TRUE(reg.RevokedConnections().empty());

  security::IssueOptions reissue;
  reissue.reissue = true;
  ASSERT_TRUE(security::Enroll(ca, "w1", root + "/w1-new", "", reissue).ok());
  reg.RefreshEnrollment(true);
  EXPECT_EQ(reg.RevokedConnections(), (std::vector<std::string>{"conn-w1"}));
  EXPECT_TRUE(reg.Revoked("w1", old_w1));
  EXPECT_FALSE(reg.Revoked("w1", fingerprint(root + "/w1-new")));
  std::filesystem::remove_all(root);
}

TEST(WorkerRegistryTest, AdmitRemoveAndStatsThatOutliveTheConnection) {
  WorkerRegistry reg("");
  bool fresh = false;
  Peer& p = reg.Admit("conn-1", MakeHello("b"), &fresh);
  EXPECT_TRUE(fresh);
  EXPECT_EQ(p.name, "b");
  reg.Admit("conn-1", MakeHello("b"), &fresh);
  EXPECT_FALSE(fresh);  // the same connection said Hello again
  reg.Admit("conn-2", MakeHello("a"), &fresh);
  EXPECT_EQ(reg.Names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(reg.ByName("a")->id, "conn-2");
  EXPECT_EQ(reg.connected(), 2);
  ASSERT_NE(reg.StatsFor("conn-1"), nullptr);
  EXPECT_EQ(reg.StatsFor("conn-9"), nullptr);

  reg.RecordUpdate("b", 1, 0.5, 10.0);
  reg.RecordUpdate("b", 2, 0.25, 20.0);
  EXPECT_EQ(reg.Stats("b").rounds, (std::vector<uint64_t>{1, 2}));
  EXPECT_DOUBLE_EQ(*reg.Stats("b").ewma_round_s, 15.0);  // 0.5 * 10 + 0.5 * 20

  EXPECT_TRUE(reg.Remove("conn-1"));
  EXPECT_FALSE(reg.Remove("conn-1"));
  EXPECT_EQ(reg.Find("conn-1"), nullptr);
  EXPECT_EQ(reg.size(), 1u);
  const nlohmann::json table = reg.WorkersJson();
  ASSERT_EQ(table.size(), 2u);  // the lost worker stays listed
  EXPECT_EQ(table[1]["name"], "b");
  EXPECT_EQ(table[1]["state"], "lost");
  EXPECT_EQ(table[1]["last_train_loss"], 0.25);
}

TEST(WorkerRegistryTest, HistoryListsPastParticipantsAsOffline) {
  WorkerRegistry reg("");
  reg.AddHistory({{"round", 3}, {"participants", {"x", "y"}}});
  reg.AddHistory({{"round", 4}, {"participants", {"x"}}});
  EXPECT_EQ(reg.Stats("x").rounds, (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(reg.Stats("y").state, "offline");
  EXPECT_EQ(reg.connected(), 0);
}

TEST(WorkerRegistryTest, SilentConnections) {
  WorkerRegistry reg("");
  bool fresh = false;
  reg.Admit("c1", MakeHello("a"), &fresh);
  reg.Admit("c2", MakeHello("b"), &fresh).last_seen -= std::chrono::seconds(30);
  EXPECT_EQ(reg.SilentFor(std::chrono::seconds(20)), std::vector<std::string>{"c2"});
}

protocols::UpdateReady GoodReady() {
  protocols::UpdateReady m;
  m.run_id = "run-1";
  m.round = 4;
  m.base_version = 3;
  m.num_samples = 50;
  m.encoding = 0;
  m.total_bytes = 400;
  m.sha256 = std::string(32, 'x');
  m.train_loss = 0.7;
  m.train_seconds = 2;
  m.train_cpu_seconds = 2;
  return m;
}

class RoundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    round_.Open({std::make_shared<const std::string>("task")}, nullptr);
    peer_.name = "a";
    peer_.num_train = 100;
  }
  std::optional<UpdateRefusal> Check(const protocols::UpdateReady& m) const {
    return round_.Check(m, "run-1", peer_, model::Encoding::kF32, 400);
  }
  Round round_{4, 3, {{"a", 100}, {"b", 100}}};
  Peer peer_;
};

TEST_F(RoundTest, AcceptsAnUpdateThatFitsTheRound) { EXPECT_FALSE(Check(GoodReady())); }

TEST_F(RoundTest, RefusesWhatDoesNotFit) {
  auto expect = [&](const protocols::UpdateReady& m, ErrorCode code, const std::string& needle) {
    auto r = Check(m);
    ASSERT_TRUE(r.has_value()) << needle;
    EXPECT_EQ(r->code, code) << r->why;
    EXPECT_TRUE(Contains(r->why, needle)) << r->why;
  };
  auto m = GoodReady();
  m.run_id = "run-2";
  expect(m, ErrorCode::kStale, "another run");
  m = GoodReady();
  m.round = 5;
  expect(m, ErrorCode::kStale, "not open");
  m = GoodReady();
  m.base_version = 2;
  expect(m, ErrorCode::kStale, "based on v2");
  m = GoodReady();
  m.num_samples = 101;
  expect(m, ErrorCode::kBadUpdate, "num_samples");
  m = GoodReady();
  m.encoding = 1;
  expect(m, ErrorCode::kBadUpdate, "encoding");
  m = GoodReady();
  m.total_bytes = 404;
  expect(m, ErrorCode::kBadUpdate, "total_bytes");
  m = GoodReady();
  m.sha256 = "short";
  expect(m, ErrorCode::kBadUpdate, "sha256");
  m = GoodReady();
  m.train_loss = std::nan("");
  expect(m, ErrorCode::kBadUpdate, "train_loss");
  // The worker's reported epsilon (issue #25): -1 without DP, else a finite value in range.
  for (double eps : {std::nan(""), -0.5, 2e12, std::numeric_limits<double>::infinity()}) {
    m = GoodReady();
    m.dp_epsilon = eps;
    expect(m, ErrorCode::kBadUpdate, "dp_epsilon");
  }
  m = GoodReady();
  m.dp_epsilon = 3.5;
  EXPECT_FALSE(Check(m).has_value());
  peer_.name = "c";
  expect(GoodReady(), ErrorCode::kStale, "not selected");
  peer_.name = "a";
  round_.Close();
  expect(GoodReady(), ErrorCode::kStale, "not open");
}

TEST_F(RoundTest, AcceptedUpdatesAndTheirResend) {
  FoldedUpdate u{GoodReady(), std::chrono::steady_clock::now(), 50};
  round_.Accept("a", u);
  EXPECT_FALSE(round_.all_in());
  EXPECT_EQ(round_.Missing(), "b");
  EXPECT_FALSE(Check(GoodReady()));  // the same update again: answered with the same Ack
  auto other = GoodReady();
  other.sha256 = std::string(32, 'y');
  ASSERT_TRUE(Check(other).has_value());
  EXPECT_EQ(Check(other)->code, ErrorCode::kDuplicate);
  u.ready.train_loss = 0.1;
  u.ready.num_samples = 150;
  u.weight = 150;
  round_.Accept("b", u);
  EXPECT_TRUE(round_.all_in());
  EXPECT_DOUBLE_EQ(round_.TrainLoss(200), (0.7 * 50 + 0.1 * 150) / 200);
  EXPECT_TRUE(round_.updates().contains("b"));
}

// A Hello again mid-round (same connection or a new one) re-declares the silo, but the
// round's check and weight use what was declared before the round.
TEST_F(RoundTest, SampleCountIsBoundedByWhatWasDeclaredBeforeTheRound) {
  peer_.num_train = 1'000'000'000;  // said Hello again with a bigger silo after the selection
  auto m = GoodReady();
  m.num_samples = 101;
  auto r = Check(m);
  ASSERT_TRUE(r.has_value()) << "accepted more samples than declared before the round";
  EXPECT_EQ(r->code, ErrorCode::kBadUpdate);
  EXPECT_TRUE(Contains(r->why, "outside 1..100")) << r->why;
  m.num_samples = 100;
  EXPECT_FALSE(Check(m).has_value());
}

TEST(WeightCapTest, IsTheRatioTimesTheLowerMedianOfTheDeclaredSizes) {
  constexpr int64_t kMax = 1'000'000'000;
  // Lower median: with two workers the larger one cannot raise it.
  EXPECT_EQ(WeightCap({{"a", 100}, {"x", 900'000'000}}, 4, kMax), 400);
  EXPECT_EQ(WeightCap({{"a", 100}, {"b", 300}, {"x", 900'000'000}}, 4, kMax), 1200);
  EXPECT_EQ(WeightCap({{"a", 100}, {"b", 200}, {"c", 300}, {"x", 900'000'000}}, 2.5, kMax), 500);
  EXPECT_EQ(WeightCap({{"a", 7}}, 4, kMax), 28);                  // alone: never below its own size
  EXPECT_EQ(WeightCap({{"a", 100}, {"b", 100}}, 0, kMax), kMax);  // 0: no cap
  EXPECT_EQ(WeightCap({}, 4, kMax), kMax);
  // Never beyond admission.max_samples, whatever the product.
  EXPECT_EQ(WeightCap({{"a", kMax}, {"b", kMax}}, 1e6, kMax), kMax);
}

TEST(RoundWeightTest, CappedUpdatesAndRefusalsAreRecordedForTheRound) {
  Round round(2, 1, {{"a", 100}, {"b", 100}, {"x", 50'000}},
              WeightCap({{"a", 100}, {"b", 100}, {"x", 50'000}}, 4, 1'000'000'000));
  EXPECT_EQ(round.weight_cap(), 400);
  EXPECT_EQ(round.Weight(100), 100);
  EXPECT_EQ(round.Weight(50'000), 400);
  round.Open({std::make_shared<const std::string>("task")}, nullptr);
  auto ready = GoodReady();
  ready.num_samples = 50'000;
  ready.train_loss = 1.0;
  round.Accept("x", FoldedUpdate{ready, std::chrono::steady_clock::now(), round.Weight(50'000)});
  ready.num_samples = 100;
  ready.train_loss = 0.5;
  round.Accept("a", FoldedUpdate{ready, std::chrono::steady_clock::now(), round.Weight(100)});
  EXPECT_EQ(round.updates()["x"]["samples"], 50'000);
  EXPECT_EQ(round.updates()["x"]["weight"], 400);
  EXPECT_EQ(round.updates()["x"]["capped"], true);
  EXPECT_EQ(round.updates()["a"]["weight"], 100);
  EXPECT_FALSE(round.updates()["a"].contains("capped"));
  EXPECT_EQ(round.capped(), std::vector<std::string>{"x"});
  // The train loss is weighted like the updates (by the weights the aggregate used).
  EXPECT_DOUBLE_EQ(round.TrainLoss(500), (1.0 * 400 + 0.5 * 100) / 500);

  round.Refuse("b", "update tensor 'w' element 3 has a non-finite value");
  round.Refuse("a", "ignored: a's update is in");
  round.Refuse("stranger", "ignored: not selected");
  EXPECT_EQ(round.refused(),
            nlohmann::json({{"b", "update tensor 'w' element 3 has a non-finite value"}}));
}

TEST_F(RoundTest, TrainFramesForAWorkerThatOwesAnEvaluation) {
  auto task = std::make_shared<const std::string>("task");
  auto with_eval = std::make_shared<const std::string>("task+eval");
  auto chunk = std::make_shared<const std::string>("chunk");
  round_.Open({task, chunk}, with_eval);
  EXPECT_EQ(*round_.TrainFrames(false)[0], "task");
  EXPECT_EQ(*round_.TrainFrames(true)[0], "task+eval");
  EXPECT_EQ(round_.TrainFrames(true)[1], chunk);  // the chunks are shared, not copied
}

protocols::EvalResult Result(uint64_t round, uint64_t version, int64_t count, double acc) {
  protocols::EvalResult r;
  r.run_id = "run-1";
  r.round = round;
  r.version = version;
  r.count = count;
  r.loss = 1 - acc;
  r.accuracy = acc;
  return r;
}

store::VersionMeta Meta() {
  store::VersionMeta meta;
  meta.version = 5;
  meta.round = 5;
  meta.metrics = {{"evaluation", "pending"}};
  return meta;
}

TEST(EvaluationTrackerTest, FederatedResultsAreWeightedByCount) {
  EvaluationTracker ev(/*overlap=*/true, /*timeout_s=*/60);
  std::promise<shoal::Result<model::EvalMetrics>> central;
  ev.Start(Meta(), {{"round", 5}}, std::chrono::steady_clock::now(), {"a", "b"},
           central.get_future());
  EXPECT_TRUE(ev.TakeDeferred("a"));
  EXPECT_FALSE(ev.TakeDeferred("a"));  // asked once
  EXPECT_EQ(ev.TakeAllDeferred(), std::set<std::string>{"b"});
  EXPECT_EQ(ev.Record("a", Result(4, 5, 10, 0.5), "run-1", 10),
            EvaluationTracker::Outcome::kStale);  // another round
  EXPECT_EQ(ev.Record("a", Result(5, 5, 11, 0.5), "run-1", 10),
            EvaluationTracker::Outcome::kOutOfRange);  // more samples than declared
  EXPECT_EQ(ev.Record("c", Result(5, 5, 1, 0.5), "run-1", 10),
            EvaluationTracker::Outcome::kStale);  // not expected
  EXPECT_EQ(ev.Record("a", Result(5, 5, 10, 0.5), "run-1", 10),
            EvaluationTracker::Outcome::kRecorded);
  EXPECT_FALSE(ev.Done());  // b has not answered, the central result is not in
  EXPECT_EQ(ev.Record("b", Result(5, 5, 30, 0.9), "run-1", 30),
            EvaluationTracker::Outcome::kRecorded);
  EXPECT_FALSE(ev.Done());
  central.set_value(model::EvalMetrics{100, 0.3, 0.8, 1.5});
  EXPECT_TRUE(ev.Done());
  auto done = ev.Complete();
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_FALSE(ev.pending());
  EXPECT_FALSE(done->meta.metrics.contains("evaluation"));
  EXPECT_DOUBLE_EQ(done->meta.metrics["central"]["accuracy"].get<double>(), 0.8);
  EXPECT_DOUBLE_EQ(done->record["federated"]["accuracy"].get<double>(), (0.5 * 10 + 0.9 * 30) / 40);
  EXPECT_EQ(done->record["federated"]["count"], 40);
  EXPECT_EQ(done->record["evaluation"]["overlapped"], true);
}

TEST(EvaluationTrackerTest, LostWorkersAreNotWaitedForAndTheDeadlineEndsTheWait) {
  EvaluationTracker ev(/*overlap=*/false, /*timeout_s=*/0.05);
  ev.Start(Meta(), {{"round", 5}, {"phases_s", {{"evaluate", 0}}}},
           std::chrono::steady_clock::now(), {"a", "b"}, {});
  ev.Forget("a");
  EXPECT_EQ(ev.Record("a", Result(5, 5, 1, 0.5), "run-1", 10), EvaluationTracker::Outcome::kStale);
  EXPECT_FALSE(ev.Done());  // b still expected
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  EXPECT_TRUE(ev.Done());
  auto done = ev.Complete();
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(done->record["federated"].is_null());
  EXPECT_TRUE(done->record["central"].is_null());
  EXPECT_TRUE(done->record.contains("wall_s"));  // without overlap the round waited for it
}

TEST(EvaluationTrackerTest, AFailedCentralEvaluationFailsTheCompletion) {
  EvaluationTracker ev(true, 60);
  std::promise<shoal::Result<model::EvalMetrics>> central;
  central.set_value(Internal("evaluator crashed"));
  ev.Start(Meta(), nlohmann::json::object(), std::chrono::steady_clock::now(), {},
           central.get_future());
  EXPECT_TRUE(ev.Done());
  auto done = ev.Complete();
  ASSERT_FALSE(done.ok());
  EXPECT_TRUE(Contains(done.status().message(), "evaluator crashed"));
}

}  // namespace
}  // namespace shoal::coordinator
