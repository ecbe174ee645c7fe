#include "coordinator/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace shoal {
namespace {

namespace fs = std::filesystem;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A complete file where every value differs from the default.
constexpr char kFullConfig[] = R"(# test config
[run]
dir = "runs/test"
id = "run-abc"
rounds = 9
seed = 7

[network]
bind = "tcp://127.0.0.1:6000"
endpoint_file = "ep.txt"
heartbeat_ms = 500
peer_timeout_ms = 5000
chunk_bytes = 65536
max_concurrent_uploads = 4

[model]
name = "mlp"
input_shape = [20]
num_classes = 3

[selection]
min_workers = 4
fraction = 0.5
min_fit = 3
wait_timeout_s = 30
round_timeout_s = 45.5
max_round_retries = 1

[train]
epochs = 2
batch_size = 16
lr = 0.1

[eval]
format = "csv"
path = "data/val.csv"
split = "test"
label_column = "y"
limit = 100
federated = false
timeout_s = 10
overlap = false

[security]
ca_dir = "ca"

[runtime]
threads = 2
log_level = "debug"
)";

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "config_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Write(const std::string& text, const std::string& name = "coordinator.toml") {
    const std::string path = (fs::path(dir_) / name).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    return path;
  }
  // Loads `text` (with overrides) and expects InvalidArgument mentioning every needle.
  void ExpectError(const std::string& text, const std::vector<std::string>& overrides,
                   const std::vector<std::string>& needles) {
    const std::string path = Write(text);
    Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig(path, overrides);
    ASSERT_FALSE(c.ok()) << "accepted:\n" << text;
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument) << c.status().ToString();
    for (const auto& needle : needles) {
      EXPECT_TRUE(Contains(c.status().message(), needle))
          << "'" << needle << "' not in: " << c.status().message();
    }
  }
  std::string dir_;
};

TEST_F(ConfigTest, SecureByDefault) {
  // No CA and no --insecure: refused, with a message that says what to do.
  Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig("", {});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(c.status().message(), "security.ca_dir")) << c.status().message();
  EXPECT_TRUE(Contains(c.status().message(), "shoalctl ca init")) << c.status().message();
  EXPECT_TRUE(Contains(c.status().message(), "--insecure")) << c.status().message();
  EXPECT_FALSE(coordinator::CoordinatorConfig().insecure);
  auto with_ca = coordinator::LoadCoordinatorConfig("", {"security.ca_dir=/etc/shoal/ca"});
  ASSERT_TRUE(with_ca.ok()) << with_ca.status().ToString();
  EXPECT_EQ(with_ca->ca_dir, "/etc/shoal/ca");
  auto insecure = coordinator::LoadCoordinatorConfig("", {"security.insecure=true"});
  ASSERT_TRUE(insecure.ok()) << insecure.status().ToString();
  EXPECT_TRUE(insecure->insecure);
}

// Issue #20: a CA directory holding the root key is refused before the coordinator starts.
TEST_F(ConfigTest, CaDirectoryWithTheRootKeyIsRefused) {
  const std::string ca = dir_ + "/ca";
  fs::create_directories(ca);
  ASSERT_TRUE(coordinator::LoadCoordinatorConfig("", {"security.ca_dir=" + ca}).ok());
  std::ofstream(ca + "/ca.key") << "-----BEGIN PRIVATE KEY-----\n";
  auto c = coordinator::LoadCoordinatorConfig("", {"security.ca_dir=" + ca});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status().message(), "holds the root CA key")) << c.status().message();
  EXPECT_TRUE(Contains(c.status().message(), "renew-enrollment")) << c.status().message();
  EXPECT_TRUE(
      coordinator::LoadCoordinatorConfig("", {"security.ca_dir=" + ca, "security.insecure=true"})
          .ok());
}

TEST_F(ConfigTest, DefaultsWhenPathEmpty) {
  Result<coordinator::CoordinatorConfig> c =
      coordinator::LoadCoordinatorConfig("", {"security.ca_dir=ca"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  coordinator::CoordinatorConfig d;
  d.ca_dir = "ca";
  EXPECT_EQ(c->run_dir, d.run_dir);
  EXPECT_EQ(c->run_id, d.run_id);
  EXPECT_EQ(c->rounds, 5);
  EXPECT_EQ(c->seed, 42u);
  EXPECT_EQ(c->bind, d.bind);
  EXPECT_EQ(c->heartbeat_ms, d.heartbeat_ms);
  EXPECT_EQ(c->peer_timeout_ms, d.peer_timeout_ms);
  EXPECT_EQ(c->chunk_bytes, d.chunk_bytes);
  EXPECT_EQ(c->model, "cnn");
  EXPECT_EQ(c->input_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(c->num_classes, 10);
  EXPECT_EQ(c->min_workers, d.min_workers);
  EXPECT_EQ(c->fraction, d.fraction);
  EXPECT_EQ(c->min_fit, d.min_fit);
  EXPECT_EQ(c->lr, d.lr);
  EXPECT_EQ(c->eval_format, d.eval_format);
  EXPECT_EQ(c->federated_eval, d.federated_eval);
  EXPECT_EQ(c->threads, d.threads);
  EXPECT_EQ(c->log_level, d.log_level);
  EXPECT_TRUE(d.Validate().ok()) << "the defaults must be a valid configuration";
}

TEST_F(ConfigTest, ValuesAreReadFromFile) {
  Result<coordinator::CoordinatorConfig> c =
      coordinator::LoadCoordinatorConfig(Write(kFullConfig), {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->run_dir, "runs/test");
  EXPECT_EQ(c->run_id, "run-abc");
  EXPECT_EQ(c->rounds, 9);
  EXPECT_EQ(c->seed, 7u);
  EXPECT_EQ(c->bind, "tcp://127.0.0.1:6000");
  EXPECT_EQ(c->endpoint_file, "ep.txt");
  EXPECT_EQ(c->heartbeat_ms, 500u);
  EXPECT_EQ(c->peer_timeout_ms, 5000u);
  EXPECT_EQ(c->chunk_bytes, 65536u);
  EXPECT_EQ(c->max_concurrent_uploads, 4);
  EXPECT_EQ(c->model, "mlp");
  EXPECT_EQ(c->input_shape, (std::vector<int64_t>{20}));
  EXPECT_EQ(c->num_classes, 3);
  EXPECT_EQ(c->min_workers, 4);
  EXPECT_EQ(c->fraction, 0.5);
  EXPECT_EQ(c->min_fit, 3);
  EXPECT_EQ(c->wait_timeout_s, 30.0);  // an integer is accepted for a float key
  EXPECT_EQ(c->round_timeout_s, 45.5);
  EXPECT_EQ(c->max_round_retries, 1);
  EXPECT_EQ(c->epochs, 2);
  EXPECT_EQ(c->batch_size, 16);
  EXPECT_EQ(c->lr, 0.1);
  EXPECT_EQ(c->eval_format, "csv");
  EXPECT_EQ(c->eval_path, "data/val.csv");
  EXPECT_EQ(c->eval_split, "test");
  EXPECT_EQ(c->eval_label_column, "y");
  EXPECT_EQ(c->eval_limit, 100);
  EXPECT_FALSE(c->federated_eval);
  EXPECT_FALSE(c->eval_overlap);
  EXPECT_EQ(c->eval_timeout_s, 10.0);
  EXPECT_EQ(c->threads, 2);
  EXPECT_EQ(c->log_level, "debug");
}

TEST_F(ConfigTest, RepositoryDemoConfigLoads) {
  // The source tree this test was built from (tests/coordinator/CMakeLists.txt).
  const std::string path = std::string(SHOAL_SOURCE_ROOT) + "/configs/coordinator.toml";
  ASSERT_TRUE(fs::exists(path)) << path;
  Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig(path, {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
}

TEST_F(ConfigTest, OverridesWinOverTheFile) {
  Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig(
      Write(kFullConfig),
      {"run.rounds=7", "network.bind=tcp://127.0.0.1:0", "model.input_shape=[3,32,32]",
       "selection.fraction=0.25", "eval.federated=true", "run.dir=runs/over ride"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rounds, 7);
  EXPECT_EQ(c->bind, "tcp://127.0.0.1:0");
  EXPECT_EQ(c->input_shape, (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(c->fraction, 0.25);
  EXPECT_TRUE(c->federated_eval);
  EXPECT_EQ(c->run_dir, "runs/over ride");
  EXPECT_EQ(c->seed, 7u);  // untouched keys keep the file's value
}

TEST_F(ConfigTest, OverridesApplyWithoutAFile) {
  Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig(
      "", {"run.rounds=2", "train.lr=0.5", "security.insecure=true"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rounds, 2);
  EXPECT_EQ(c->lr, 0.5);
}

TEST_F(ConfigTest, LastOverrideWins) {
  Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig(
      "", {"run.rounds=2", "run.rounds=4", "security.ca_dir=ca"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rounds, 4);
}

TEST_F(ConfigTest, UnknownKeyInFileIsNamed) {
  ExpectError("[run]\nroundz = 3\n", {}, {"run.roundz"});
  ExpectError("[netwrok]\nbind = \"tcp://127.0.0.1:1\"\n", {}, {"netwrok.bind"});
  ExpectError("top_level = 1\n", {}, {"top_level"});
}

TEST_F(ConfigTest, UnknownKeyInOverrideIsNamed) {
  Result<coordinator::CoordinatorConfig> c =
      coordinator::LoadCoordinatorConfig("", {"run.roundz=7"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(c.status().message(), "run.roundz")) << c.status().message();
}

TEST_F(ConfigTest, MalformedOverrideIsRejected) {
  for (const char* o : {"run.rounds", "=7", "run..rounds=7", "run.rounds.x=7"}) {
    SCOPED_TRACE(o);
    Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig("", {o});
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument) << c.status().ToString();
  }
}

TEST_F(ConfigTest, WrongTypeNamesTheKey) {
  ExpectError("[run]\nrounds = \"five\"\n", {}, {"run.rounds", "integer"});
  ExpectError("[run]\nrounds = 2.5\n", {}, {"run.rounds"});
  ExpectError("[train]\nlr = \"fast\"\n", {}, {"train.lr"});
  ExpectError("[eval]\nfederated = 1\n", {}, {"eval.federated"});
  ExpectError("[model]\ninput_shape = 28\n", {}, {"model.input_shape"});
  ExpectError("[model]\ninput_shape = [1, \"28\"]\n", {}, {"model.input_shape"});
  ExpectError("[run]\ndir = 3\n", {}, {"run.dir"});
  ExpectError("", {"run.rounds=\"five\""}, {"run.rounds"});
}

TEST_F(ConfigTest, OutOfRangeIntegerNamesTheKey) {
  ExpectError("[network]\nheartbeat_ms = -5\n", {}, {"network.heartbeat_ms", "range"});
  ExpectError("[run]\nrounds = 9999999999\n", {}, {"run.rounds", "range"});
  ExpectError("[network]\nchunk_bytes = 4294967296\n", {}, {"network.chunk_bytes", "range"});
  ExpectError("[run]\nseed = -1\n", {}, {"run.seed", "range"});
}

TEST_F(ConfigTest, ValidateFailuresNameTheKey) {
  ExpectError("[selection]\nmin_workers = 2\nmin_fit = 3\n", {}, {"selection.min_fit"});
  ExpectError("[selection]\nfraction = 0.0\n", {}, {"selection.fraction"});
  ExpectError("[selection]\nfraction = 1.5\n", {}, {"selection.fraction"});
  ExpectError("[run]\nrounds = 0\n", {}, {"run.rounds"});
  ExpectError("[model]\ninput_shape = [1, 0, 28]\n", {}, {"model.input_shape"});
  ExpectError("[model]\ninput_shape = []\n", {}, {"model.input_shape"});
  ExpectError("[network]\nchunk_bytes = 4097\n", {}, {"network.chunk_bytes"});
  ExpectError("[network]\nheartbeat_ms = 1000\npeer_timeout_ms = 1500\n", {},
              {"network.peer_timeout_ms"});
  ExpectError("[eval]\nformat = \"parquet\"\n", {}, {"eval.format"});
  // Validation errors also say which file they come from.
  const std::string path = Write("[run]\nrounds = 0\n");
  Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig(path, {});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status().message(), path)) << c.status().message();
}

TEST_F(ConfigTest, AggregatorIsChosenByItsRegisteredName) {
  auto d = coordinator::LoadCoordinatorConfig("", {"security.ca_dir=ca"});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->aggregator, "mean");
  auto mean = coordinator::LoadCoordinatorConfig(Write("[strategy]\naggregator = \"mean\"\n"),
                                                 {"security.ca_dir=ca"});
  ASSERT_TRUE(mean.ok()) << mean.status().ToString();
  EXPECT_EQ(mean->aggregator, "mean");
  // An unknown name says which names exist.
  ExpectError("[strategy]\naggregator = \"krum\"\n", {"security.ca_dir=ca"},
              {"strategy.aggregator", "unknown aggregator 'krum'",
               "registered: mean, median, multi_krum, trimmed_mean"});
  ExpectError("", {"security.ca_dir=ca", "strategy.aggregator=Mean"},
              {"strategy.aggregator", "'Mean'"});
}

TEST_F(ConfigTest, RobustAggregationAndClippingKeysAreRangeChecked) {
  auto ok = coordinator::LoadCoordinatorConfig(
      "", {"security.ca_dir=ca", "strategy.aggregator=multi_krum", "strategy.byzantine=1",
           "selection.min_workers=5", "selection.min_fit=5", "strategy.clip=adaptive",
           "strategy.clip_norm=2.5", "strategy.clip_quantile=0.7", "strategy.clip_lr=0.1",
           "strategy.trim_fraction=0.25", "strategy.multi_krum_m=3", "strategy.spill_dir=/tmp"});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->byzantine, 1);
  EXPECT_EQ(ok->clip, "adaptive");
  EXPECT_EQ(ok->clip_norm, 2.5);
  EXPECT_EQ(ok->clip_quantile, 0.7);
  EXPECT_EQ(ok->clip_lr, 0.1);
  EXPECT_EQ(ok->trim_fraction, 0.25);
  EXPECT_EQ(ok->multi_krum_m, 3);
  EXPECT_EQ(ok->spill_dir, "/tmp");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"strategy.trim_fraction=0.5", "strategy.trim_fraction"},
      {"strategy.trim_fraction=-0.1", "strategy.trim_fraction"},
      {"strategy.byzantine=-1", "strategy.byzantine"},
      {"strategy.multi_krum_m=-2", "strategy.multi_krum_m"},
      {"strategy.clip=quantile", "strategy.clip"},
      {"strategy.clip_norm=0", "strategy.clip_norm"},
      {"strategy.clip_norm=1e31", "strategy.clip_norm"},
      {"strategy.clip_quantile=1.5", "strategy.clip_quantile"},
      {"strategy.clip_lr=11", "strategy.clip_lr"}};
  for (const auto& [override_kv, key] : bad) {
    ExpectError("", {"security.ca_dir=ca", override_kv}, {key});
  }
  // Multi-Krum with f = 2 needs 2f + 3 = 7 updates per round.
  ExpectError("",
              {"security.ca_dir=ca", "strategy.aggregator=multi_krum", "strategy.byzantine=2",
               "selection.min_workers=6", "selection.min_fit=6"},
              {"selection.min_fit", "needs at least 2f+3 = 7"});
}

TEST_F(ConfigTest, ValidateFailureFromOverride) {
  Result<coordinator::CoordinatorConfig> c =
      coordinator::LoadCoordinatorConfig(Write(kFullConfig), {"selection.min_fit=5"});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status().message(), "selection.min_fit")) << c.status().message();
}

TEST_F(ConfigTest, SyntaxErrorNamesFileAndLine) {
  const std::string path = Write("[run]\nrounds = 3\ndir = \"unterminated\n[model]\n");
  Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig(path, {});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(c.status().message(), path + ":3")) << c.status().message();

  const std::string path2 = Write("[run]\n\n\n\nrounds = = 3\n", "second.toml");
  c = coordinator::LoadCoordinatorConfig(path2, {});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status().message(), path2 + ":5")) << c.status().message();
}

TEST_F(ConfigTest, MissingFileIsAnError) {
  const std::string path = dir_ + "/missing.toml";
  Result<coordinator::CoordinatorConfig> c = coordinator::LoadCoordinatorConfig(path, {});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(c.status().message(), path)) << c.status().message();
}

// strategy.name sets the axes; an explicit key wins over the preset whatever its place in the
// file (issue #22).
TEST_F(ConfigTest, StrategyPresetSetsTheAxesAndExplicitKeysOverride) {
  auto c = coordinator::LoadCoordinatorConfig("", {"security.insecure=true"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->strategy_name, "fedavg");
  EXPECT_EQ(c->server_optimizer, "sgd");
  EXPECT_EQ(c->server.lr, 1.0);

  c = coordinator::LoadCoordinatorConfig(
      Write("[strategy]\nserver_lr = 0.05\nname = \"fedadam\"\n"), {"security.insecure=true"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server_optimizer, "adam");
  EXPECT_EQ(c->server.lr, 0.05);  // explicit, before the name in the file: still wins
  EXPECT_EQ(c->server.beta1, 0.9);
  EXPECT_EQ(c->server.beta2, 0.99);
  EXPECT_EQ(c->server.tau, 1e-3);

  c = coordinator::LoadCoordinatorConfig("", {"strategy.name=fedavgm", "security.insecure=true"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->server_optimizer, "momentum");
  EXPECT_EQ(c->server.momentum, 0.9);
  c = coordinator::LoadCoordinatorConfig(
      "", {"strategy.name=fedyogi", "strategy.server_optimizer=adagrad", "security.insecure=true"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->server_optimizer, "adagrad");
  EXPECT_EQ(c->server.lr, 0.01);  // the preset's, since not given
}

TEST_F(ConfigTest, BadStrategyValuesAreRefusedNamingTheKey) {
  const std::string base = "[security]\ninsecure = true\n";
  ExpectError(base, {"strategy.name=fedfoo"}, {"strategy.name", "fedfoo", "fedadam"});
  ExpectError(base, {"strategy.server_optimizer=lamb"}, {"strategy.server_optimizer", "yogi"});
  ExpectError(base, {"strategy.server_lr=0"}, {"strategy.server_lr"});
  ExpectError(base, {"strategy.server_lr=1e9"}, {"strategy.server_lr"});
  ExpectError(base, {"strategy.server_momentum=1"}, {"strategy.server_momentum"});
  ExpectError(base, {"strategy.beta1=-0.1"}, {"strategy.beta1"});
  ExpectError(base, {"strategy.beta2=1"}, {"strategy.beta2"});
  ExpectError(base, {"strategy.tau=0"}, {"strategy.tau"});
  ExpectError(base, {"strategy.tau=nan"}, {"strategy.tau"});
  ExpectError(base, {"strategy.client=scaffold"}, {"strategy.client", "scaffold"});
  ExpectError(base, {"strategy.proximal_mu=-1"}, {"strategy.proximal_mu"});
  ExpectError(base, {"strategy.proximal_mu=1e9"}, {"strategy.proximal_mu"});
  ExpectError(base, {"strategy.client=fedprox"}, {"strategy.proximal_mu", "positive"});
  ExpectError(base, {"train.momentum=1"}, {"train.momentum"});
  ExpectError(base, {"train.weight_decay=2"}, {"train.weight_decay"});
  ExpectError(base, {"train.lr_decay=0"}, {"train.lr_decay"});
  ExpectError(base, {"train.lr_decay=1.5"}, {"train.lr_decay"});
  ExpectError(base, {"train.lr_decay=0.01", "run.rounds=100"}, {"train.lr_decay", "vanish"});
}

TEST_F(ConfigTest, FedProxPresetAndLocalTrainingOptions) {
  auto c = coordinator::LoadCoordinatorConfig(
      "", {"strategy.name=fedprox", "train.momentum=0.9", "train.weight_decay=0.0005",
           "train.lr_decay=0.5", "train.lr=0.08", "security.insecure=true"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->client, "fedprox");
  EXPECT_EQ(c->proximal_mu, 0.01);
  EXPECT_EQ(c->server_optimizer, "sgd");
  EXPECT_EQ(c->server.lr, 1.0);
  EXPECT_EQ(c->momentum, 0.9);
  EXPECT_EQ(c->weight_decay, 0.0005);
  EXPECT_EQ(coordinator::RoundLearningRate(*c, 1), 0.08);
  EXPECT_EQ(coordinator::RoundLearningRate(*c, 2), 0.04);
  EXPECT_EQ(coordinator::RoundLearningRate(*c, 4), 0.01);
  // The axes compose: a server-optimizer preset with an explicit client algorithm.
  c = coordinator::LoadCoordinatorConfig(
      "", {"strategy.name=fedadam", "strategy.client=fedprox", "strategy.proximal_mu=0.1",
           "security.insecure=true"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server_optimizer, "adam");
  EXPECT_EQ(c->client, "fedprox");
  EXPECT_EQ(c->proximal_mu, 0.1);
}

}  // namespace
}  // namespace shoal
