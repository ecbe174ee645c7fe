#include "store/model_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "model/weights.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

model::Weights MakeWeights(uint32_t seed) {
  model::Weights w;
  w.spec.tensors.push_back({"fc1.weight", model::DType::kFloat32, {16, 8}});
  w.spec.tensors.push_back({"fc1.bias", model::DType::kFloat32, {16}});
  w.spec.tensors.push_back({"fc2.weight", model::DType::kFloat32, {3, 16}});
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  w.data.resize(static_cast<size_t>(w.spec.total_numel()));
  for (auto& x : w.data) x = dist(rng);
  return w;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void Spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "model_store_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    run_ = root_ + "/run";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Opens the store and commits v0 (initial) and v1 (round 1 from v0).
  void CommitTwo() {
    Result<store::ModelStore> store = store::ModelStore::Open(run_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    w0_ = MakeWeights(1);
    w1_ = MakeWeights(2);
    store::VersionMeta m0;
    m0.version = 0;
    m0.round = 0;
    ASSERT_TRUE(store->Commit(w0_, m0).ok());
    EXPECT_EQ(m0.sha256, ToHex(w0_.Hash()));
    EXPECT_FALSE(m0.created_at.empty());
    store::VersionMeta m1;
    m1.version = 1;
    m1.parent = 0;
    m1.round = 1;
    m1.participants = {"silo-1", "silo-3"};
    m1.metrics = {{"eval_accuracy", 0.8125}, {"train_loss", 0.5}};
    ASSERT_TRUE(store->Commit(w1_, m1).ok());
    EXPECT_EQ(m1.sha256, ToHex(w1_.Hash()));
  }

  std::vector<store::VersionMeta> List() {
    Result<std::vector<store::VersionMeta>> v = store::ListVersions(run_);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : std::vector<store::VersionMeta>{};
  }

  std::string root_;
  std::string run_;
  model::Weights w0_;
  model::Weights w1_;
};

TEST_F(ModelStoreTest, OpenCreatesLayout) {
  ASSERT_TRUE(store::ModelStore::Open(run_).ok());
  EXPECT_TRUE(fs::is_directory(run_ + "/versions"));
  Result<std::vector<store::VersionMeta>> v = store::ListVersions(run_);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->empty());
}

TEST_F(ModelStoreTest, ListVersionsReturnsCommittedVersionsInOrder) {
  CommitTwo();
  const std::vector<store::VersionMeta> v = List();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].version, 0u);
  EXPECT_FALSE(v[0].parent.has_value());
  EXPECT_EQ(v[0].round, 0u);
  EXPECT_TRUE(v[0].participants.empty());
  EXPECT_EQ(v[0].sha256, ToHex(w0_.Hash()));
  EXPECT_EQ(v[1].version, 1u);
  ASSERT_TRUE(v[1].parent.has_value());
  EXPECT_EQ(*v[1].parent, 0u);
  EXPECT_EQ(v[1].round, 1u);
  EXPECT_EQ(v[1].participants, (std::vector<std::string>{"silo-1", "silo-3"}));
  EXPECT_EQ(v[1].metrics.value("eval_accuracy", 0.0), 0.8125);
  EXPECT_EQ(v[1].metrics.value("train_loss", 0.0), 0.5);
  EXPECT_EQ(v[1].sha256, ToHex(w1_.Hash()));
  EXPECT_FALSE(v[1].created_at.empty());
}

TEST_F(ModelStoreTest, ListVersionsSortsNumerically) {
  Result<store::ModelStore> store = store::ModelStore::Open(run_);
  ASSERT_TRUE(store.ok());
  for (uint64_t version : {12u, 3u, 100u, 0u}) {
    store::VersionMeta m;
    m.version = version;
    if (version) m.parent = 0;
    m.round = version;
    ASSERT_TRUE(store->Commit(MakeWeights(static_cast<uint32_t>(version)), m).ok());
  }
  const std::vector<store::VersionMeta> v = List();
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[0].version, 0u);
  EXPECT_EQ(v[1].version, 3u);
  EXPECT_EQ(v[2].version, 12u);
  EXPECT_EQ(v[3].version, 100u);
}

TEST_F(ModelStoreTest, UncommittedLeftoversAreNotListed) {
  CommitTwo();
  // A crash after the weights of v2 but before its meta, plus a stray temp file.
  ASSERT_TRUE(model::SaveWeights(store::VersionWeightsPath(run_, 2), MakeWeights(3)).ok());
  Spit(store::VersionMetaPath(run_, 2) + ".tmp.12345", "{\"version\": 2, \"sha");
  const std::vector<store::VersionMeta> v = List();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].version, 1u);
}

TEST_F(ModelStoreTest, LoadVersionReturnsIdenticalWeights) {
  CommitTwo();
  const std::vector<store::VersionMeta> v = List();
  ASSERT_EQ(v.size(), 2u);
  Result<model::Weights> l0 = store::LoadVersion(run_, v[0]);
  Result<model::Weights> l1 = store::LoadVersion(run_, v[1]);
  ASSERT_TRUE(l0.ok()) << l0.status().ToString();
  ASSERT_TRUE(l1.ok()) << l1.status().ToString();
  EXPECT_EQ(l0->spec, w0_.spec);
  EXPECT_EQ(l1->spec, w1_.spec);
  ASSERT_EQ(l1->data.size(), w1_.data.size());
  EXPECT_EQ(std::memcmp(l1->data.data(), w1_.data.data(), w1_.data.size() * 4), 0);
  EXPECT_EQ(l0->data, w0_.data);
}

TEST_F(ModelStoreTest, FlippedByteInWeightsFileIsCorrupt) {
  CommitTwo();
  const std::string path = store::VersionWeightsPath(run_, 1);
  const std::string good = Slurp(path);
  ASSERT_GT(good.size(), 100u);
  // One byte in the magic, the spec JSON, the float data and the trailing checksum.
  for (size_t pos : {size_t{2}, size_t{20}, good.size() / 2, good.size() - 40, good.size() - 1}) {
    SCOPED_TRACE("byte " + std::to_string(pos));
    std::string bad = good;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x01);
    Spit(path, bad);
    const std::vector<store::VersionMeta> v = List();
    ASSERT_EQ(v.size(), 2u);
    Result<model::Weights> w = store::LoadVersion(run_, v[1]);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), Code::kCorrupt) << w.status().ToString();
    EXPECT_TRUE(Contains(w.status().message(), path)) << w.status().message();
  }
  Spit(path, good);
  EXPECT_TRUE(store::LoadVersion(run_, List()[1]).ok());
}

TEST_F(ModelStoreTest, TruncatedWeightsFileIsCorrupt) {
  CommitTwo();
  const std::string path = store::VersionWeightsPath(run_, 1);
  const std::string good = Slurp(path);
  for (size_t len :
       {size_t{0}, size_t{7}, size_t{30}, good.size() / 2, good.size() - 32, good.size() - 1}) {
    SCOPED_TRACE("length " + std::to_string(len));
    Spit(path, good.substr(0, len));
    Result<model::Weights> w = store::LoadVersion(run_, List()[1]);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), Code::kCorrupt) << w.status().ToString();
  }
}

TEST_F(ModelStoreTest, EditedHashInMetaIsCorrupt) {
  CommitTwo();
  const std::string meta_path = store::VersionMetaPath(run_, 1);
  nlohmann::json j = nlohmann::json::parse(Slurp(meta_path));
  std::string sha = j.at("sha256").get<std::string>();
  ASSERT_EQ(sha.size(), 64u);
  sha[10] = sha[10] == '0' ? '1' : '0';
  j["sha256"] = sha;
  Spit(meta_path, j.dump(2));
  const std::vector<store::VersionMeta> v = List();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].sha256, sha);
  Result<model::Weights> w = store::LoadVersion(run_, v[1]);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Code::kCorrupt) << w.status().ToString();
  // The weights file itself is intact: v0 still loads.
  EXPECT_TRUE(store::LoadVersion(run_, v[0]).ok());
}

TEST_F(ModelStoreTest, WeightsOfAnotherVersionAreCorrupt) {
  CommitTwo();
  // v1's meta over v0's (self-consistent) weights file: the recorded hash catches the swap.
  fs::copy_file(store::VersionWeightsPath(run_, 0), store::VersionWeightsPath(run_, 1),
                fs::copy_options::overwrite_existing);
  Result<model::Weights> w = store::LoadVersion(run_, List()[1]);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Code::kCorrupt);
}

TEST_F(ModelStoreTest, MissingWeightsFileIsNotFound) {
  CommitTwo();
  fs::remove(store::VersionWeightsPath(run_, 1));
  Result<model::Weights> w = store::LoadVersion(run_, List()[1]);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Code::kNotFound);
}

TEST_F(ModelStoreTest, InvalidMetaJsonIsCorrupt) {
  CommitTwo();
  Spit(store::VersionMetaPath(run_, 1), "{\"version\": 1, \"sha256\": ");
  Result<std::vector<store::VersionMeta>> v = store::ListVersions(run_);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kCorrupt);
  Spit(store::VersionMetaPath(run_, 1), "{\"version\": 1}");  // valid JSON, fields missing
  v = store::ListVersions(run_);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kCorrupt);
}

TEST_F(ModelStoreTest, ListVersionsOnNonRunDirIsNotFound) {
  Result<std::vector<store::VersionMeta>> v =
      store::ListVersions(root_);  // exists, but has no versions/
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kNotFound);
  v = store::ListVersions(root_ + "/does-not-exist");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kNotFound);
}

TEST_F(ModelStoreTest, MetricsLogRoundTrip) {
  Result<store::ModelStore> store = store::ModelStore::Open(run_);
  ASSERT_TRUE(store.ok());
  Result<std::vector<nlohmann::json>> empty = store::ReadMetricsLog(run_);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  ASSERT_TRUE(store->AppendMetrics({{"round", 1}, {"accuracy", 0.5}}).ok());
  ASSERT_TRUE(store->AppendMetrics({{"round", 2}, {"accuracy", 0.75}}).ok());
  Result<std::vector<nlohmann::json>> log = store::ReadMetricsLog(run_);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ(log->size(), 2u);
  EXPECT_EQ((*log)[0].at("round"), 1);
  EXPECT_EQ((*log)[1].at("accuracy"), 0.75);
}

TEST_F(ModelStoreTest, MetricsLogSkipsTornFinalLine) {
  Result<store::ModelStore> store = store::ModelStore::Open(run_);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(store->AppendMetrics({{"round", 1}}).ok());
  ASSERT_TRUE(store->AppendMetrics({{"round", 2}}).ok());
  {
    std::ofstream out(store::MetricsLogPath(run_), std::ios::binary | std::ios::app);
    out << "{\"round\": 3, \"accur";  // crash mid-append: no newline
  }
  Result<std::vector<nlohmann::json>> log = store::ReadMetricsLog(run_);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ(log->size(), 2u);
  EXPECT_EQ((*log)[1].at("round"), 2);
}

TEST_F(ModelStoreTest, MetricsLogRejectsCorruptMiddleLine) {
  ASSERT_TRUE(store::ModelStore::Open(run_).ok());
  Spit(store::MetricsLogPath(run_), "{\"round\": 1}\n{\"round\": 2, \"acc\n{\"round\": 3}\n");
  Result<std::vector<nlohmann::json>> log = store::ReadMetricsLog(run_);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(log.status().message(), ":2")) << log.status().message();
}

// ---------------------------------------------------------------------------------------------
// The .shw format and the version hash, without the store.

TEST(WeightsFileTest, EncodeDecodeRoundTrip) {
  model::Weights w = MakeWeights(9);
  w.data[0] = -0.0f;
  w.data[1] = std::numeric_limits<float>::denorm_min();
  const std::string bytes = model::EncodeWeightsFile(w);
  EXPECT_EQ(bytes.substr(0, 8), "SHOALW01");
  Result<model::Weights> d = model::DecodeWeightsFile(bytes, "mem.shw");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->spec, w.spec);
  ASSERT_EQ(d->data.size(), w.data.size());
  EXPECT_EQ(std::memcmp(d->data.data(), w.data.data(), w.data.size() * 4), 0);
  EXPECT_EQ(d->Hash(), w.Hash());
  EXPECT_EQ(model::EncodeWeightsFile(*d), bytes);
}

TEST(WeightsFileTest, EveryTruncationIsCorrupt) {
  const std::string bytes = model::EncodeWeightsFile(MakeWeights(10));
  for (size_t len = 0; len < bytes.size(); ++len) {
    Result<model::Weights> d = model::DecodeWeightsFile(bytes.substr(0, len), "t.shw");
    ASSERT_FALSE(d.ok()) << "length " << len;
    ASSERT_EQ(d.status().code(), Code::kCorrupt) << "length " << len;
  }
  EXPECT_FALSE(model::DecodeWeightsFile(bytes + "x", "t.shw").ok());
}

TEST(WeightsFileTest, EveryFlippedByteIsCorrupt) {
  const std::string bytes = model::EncodeWeightsFile(MakeWeights(11));
  for (size_t pos = 0; pos < bytes.size(); ++pos) {
    std::string bad = bytes;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x80);
    Result<model::Weights> d = model::DecodeWeightsFile(bad, "f.shw");
    ASSERT_FALSE(d.ok()) << "byte " << pos;
    ASSERT_EQ(d.status().code(), Code::kCorrupt) << "byte " << pos;
    ASSERT_TRUE(Contains(d.status().message(), "f.shw")) << d.status().message();
  }
}

TEST(WeightsHashTest, SameWeightsSameHash) {
  const model::Weights a = MakeWeights(12);
  const model::Weights b = MakeWeights(12);
  EXPECT_EQ(a.Hash(), b.Hash());
  EXPECT_EQ(ToHex(a.Hash()).size(), 64u);
}

TEST(WeightsHashTest, OneFloatChangesTheHash) {
  const model::Weights a = MakeWeights(13);
  model::Weights b = a;
  b.data[b.data.size() / 2] = std::nextafter(b.data[b.data.size() / 2], 100.0f);
  EXPECT_NE(a.Hash(), b.Hash());
  model::Weights c = a;
  c.data.back() = -c.data.back();
  EXPECT_NE(a.Hash(), c.Hash());
}

TEST(WeightsHashTest, SpecIsPartOfTheHash) {
  const model::Weights a = MakeWeights(14);
  model::Weights renamed = a;
  renamed.spec.tensors[1].name = "fc1.b";
  EXPECT_NE(a.Hash(), renamed.Hash());
  model::Weights reshaped = a;
  reshaped.spec.tensors[0].shape = {8, 16};  // same element count, same data
  EXPECT_NE(a.Hash(), reshaped.Hash());
}

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {

// The server state committed with a version (issue #22): written with the weights, recorded in
// the meta, loaded back only when it matches the recorded hash.
class ServerStateStoreTest : public ModelStoreTest {
 protected:
  model::Weights State(float base) {
    model::Weights s;
    s.spec.tensors.push_back({"m", model::DType::kFloat32, {6}});
    s.spec.tensors.push_back({"v", model::DType::kFloat32, {6}});
    for (int i = 0; i < 12; ++i) s.data.push_back(base + 0.25f * i);
    return s;
  }
  // v1 and v2, each with its own state.
  void CommitWithState() {
    auto store = store::ModelStore::Open(run_);
    ASSERT_TRUE(store.ok());
    for (uint64_t v : {1, 2}) {
      store::VersionMeta m;
      m.version = v;
      m.round = v;
      m.server_optimizer = "adam";
      model::Weights s = State(static_cast<float>(v));
      ASSERT_TRUE(store->Commit(MakeWeights(static_cast<int>(v)), m, &s).ok());
      EXPECT_EQ(m.server_state_sha256, ToHex(s.Hash()));
    }
  }
};

TEST_F(ServerStateStoreTest, StateRoundTripsWithItsVersion) {
  CommitWithState();
  auto v = List();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].server_optimizer, "adam");
  auto s = store::LoadVersionState(run_, v[1]);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->Hash(), State(2).Hash());
  // A version without state (FedAvg) records none and its meta has no server_state key.
  CommitTwo();
  v = List();
  EXPECT_EQ(store::LoadVersionState(run_, v[1]).status().code(), Code::kNotFound);
  EXPECT_FALSE(v[1].ToJson().contains("server_state"));
}

// A flipped byte, the state file of another version, a missing file: Corrupt naming the file.
TEST_F(ServerStateStoreTest, TamperedSwappedOrMissingStateIsCorrupt) {
  CommitWithState();
  const auto v = List();
  const std::string path = store::VersionStatePath(run_, 2);
  const std::string good = Slurp(path);
  std::string bad = good;
  bad[good.size() / 2] = static_cast<char>(bad[good.size() / 2] ^ 0x10);
  Spit(path, bad);
  auto s = store::LoadVersionState(run_, v[1]);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(s.status().ToString(), path)) << s.status().ToString();

  // Well-formed, but v1's state under v2's name: the recorded hash tells them apart.
  Spit(path, Slurp(store::VersionStatePath(run_, 1)));
  s = store::LoadVersionState(run_, v[1]);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(s.status().ToString(), "does not match")) << s.status().ToString();

  fs::remove(path);
  s = store::LoadVersionState(run_, v[1]);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kCorrupt);
  Spit(path, good);
  EXPECT_TRUE(store::LoadVersionState(run_, v[1]).ok());
}

TEST_F(ServerStateStoreTest, NonFiniteStateOrStateWithoutOptimizerIsNotCommitted) {
  auto store = store::ModelStore::Open(run_);
  ASSERT_TRUE(store.ok());
  store::VersionMeta m;
  m.version = 1;
  m.round = 1;
  m.server_optimizer = "adam";
  model::Weights s = State(1);
  s.data[7] = std::numeric_limits<float>::infinity();
  Status st = store->Commit(MakeWeights(1), m, &s);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.ToString(), "server state")) << st.ToString();
  m.server_optimizer.clear();
  s = State(1);
  EXPECT_EQ(store->Commit(MakeWeights(1), m, &s).code(), Code::kInvalidArgument);
  EXPECT_FALSE(fs::exists(store::VersionWeightsPath(run_, 1)));
  EXPECT_TRUE(List().empty());
}

TEST_F(ServerStateStoreTest, MalformedServerStateInMetaIsCorrupt) {
  for (const char* bad : {R"({"optimizer": "adam"})", R"({"optimizer": "", "sha256": "00"})",
                          R"({"optimizer": 3, "sha256": "x"})"}) {
    nlohmann::json j = {{"version", 1},
                        {"sha256", "ab"},
                        {"round", 1},
                        {"participants", nlohmann::json::array()},
                        {"parent", nullptr}};
    j["server_state"] = nlohmann::json::parse(bad);
    auto m = store::VersionMeta::FromJson(j);
    EXPECT_FALSE(m.ok()) << bad;
    if (!m.ok()) EXPECT_EQ(m.status().code(), Code::kCorrupt) << bad;
  }
}

}  // namespace
}  // namespace shoal
