// The worker's config: the repository's examples load, overrides apply, and every invalid value
// is refused naming its key.
#include "worker/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace shoal::worker {
namespace {

namespace fs = std::filesystem;

class WorkerConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "worker_config_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Write(const std::string& text) {
    const std::string path = dir_ + "/worker.toml";
    std::ofstream(path, std::ios::trunc) << text;
    return path;
  }
  // Loads `text` with `overrides` and expects a refusal whose message names `key`.
  void ExpectRefused(const std::string& text, const std::vector<std::string>& overrides,
                     const std::string& key) {
    Result<WorkerConfig> c = LoadWorkerConfig(Write(text), overrides);
    ASSERT_FALSE(c.ok()) << "accepted with " << ::testing::PrintToString(overrides);
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument) << c.status().ToString();
    EXPECT_NE(c.status().message().find(key), std::string::npos) << c.status().message();
  }

  static constexpr const char* kMinimal =
      "[worker]\nname = \"silo-1\"\n[data]\npath = \"silos/silo-1\"\n"
      "[security]\nbundle = \"bundles/silo-1\"\n";
  std::string dir_;
};

TEST_F(WorkerConfigTest, RepositoryExamplesLoad) {
  for (const char* name : {"worker.toml", "worker-csv.toml"}) {
    const std::string path = std::string(SHOAL_SOURCE_ROOT) + "/configs/" + name;
    ASSERT_TRUE(fs::exists(path)) << path;
    // The examples leave the credentials to flags (--bundle): give one.
    Result<WorkerConfig> c = LoadWorkerConfig(path, {"security.bundle=b"});
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().ToString();
    EXPECT_FALSE(c->name.empty());
    EXPECT_FALSE(c->data_path.empty());
  }
}

TEST_F(WorkerConfigTest, DefaultsAndOverrides) {
  Result<WorkerConfig> c = LoadWorkerConfig(Write(kMinimal), {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->data_format, "idx");
  EXPECT_EQ(c->data_split, "train");
  EXPECT_DOUBLE_EQ(c->val_fraction, 0.1);
  EXPECT_EQ(c->server_name, "coordinator");
  EXPECT_FALSE(c->insecure);

  c = LoadWorkerConfig(Write(kMinimal), {"data.format=csv", "data.label_column=y", "data.limit=50",
                                         "runtime.threads=2"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->data_format, "csv");
  EXPECT_EQ(c->label_column, "y");
  EXPECT_EQ(c->limit, 50);
  EXPECT_EQ(c->threads, 2);
}

TEST_F(WorkerConfigTest, InvalidValuesAreRefusedNamingTheKey) {
  ExpectRefused(kMinimal, {"worker.name=\"\""}, "worker.name");
  ExpectRefused(kMinimal, {"data.format=parquet"}, "data.format");
  ExpectRefused(kMinimal, {"data.path=\"\""}, "data.path");
  ExpectRefused(kMinimal, {"data.limit=-1"}, "data.limit");
  ExpectRefused(kMinimal, {"data.val_fraction=1.0"}, "data.val_fraction");
  ExpectRefused(kMinimal, {"retry.initial_ms=1"}, "retry.initial_ms");
  ExpectRefused(kMinimal, {"retry.max_ms=100"}, "retry.max_ms");
  ExpectRefused(kMinimal, {"runtime.threads=0"}, "runtime.threads");
  ExpectRefused(kMinimal, {"security.bundle=\"\""}, "security.bundle");
  ExpectRefused(kMinimal, {"security.insecure=true", "security.join_token=t"},
                "security.join_token");
  ExpectRefused(kMinimal, {"model.trusted_script_sha256=[\"abc\"]"}, "model.trusted_script_sha256");
  ExpectRefused(kMinimal, {"model.trusted_script_sha256=[\"" + std::string(64, 'A') + "\"]"},
                "model.trusted_script_sha256");
  ExpectRefused(kMinimal, {"model.trusted_script_sha256=\"" + std::string(64, 'a') + "\""},
                "model.trusted_script_sha256");
  // A typo never passes silently.
  ExpectRefused(kMinimal, {"data.pth=x"}, "data.pth");
}

// Issue #20, item 1: a coordinator-supplied TorchScript model is a program; by default the
// worker runs none, names the SHA-256 it saw so that the operator can pin it, runs a pinned one,
// and runs any with --allow-untrusted-script, saying so.
TEST_F(WorkerConfigTest, CoordinatorTorchScriptRunsOnlyWhenPinnedOrExplicitlyAllowed) {
  const std::string sha = std::string(63, '0') + "7";
  const std::string other = std::string(64, 'e');
  std::string warning = "stale";

  Result<WorkerConfig> c = LoadWorkerConfig(Write(kMinimal), {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->trusted_script_sha256.empty());
  EXPECT_FALSE(c->allow_untrusted_script);
  Status st = c->CheckScriptTrusted(sha, &warning);
  EXPECT_EQ(st.code(), Code::kRejected);
  EXPECT_NE(st.message().find("sha256=" + sha), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("model.trusted_script_sha256 = [\"" + sha + "\"]"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("--allow-untrusted-script"), std::string::npos) << st.message();
  EXPECT_TRUE(warning.empty());

  // Pinned in the file (a list), and with the pin as the refusal spells it.
  c = LoadWorkerConfig(Write(std::string(kMinimal) + "[model]\ntrusted_script_sha256 = [\"" +
                             other + "\", \"" + sha + "\"]\n"),
                       {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->CheckScriptTrusted(sha, &warning).ok());
  EXPECT_TRUE(warning.empty()) << warning;
  EXPECT_TRUE(c->CheckScriptTrusted(other, &warning).ok());
  EXPECT_EQ(c->CheckScriptTrusted(std::string(64, 'f'), &warning).code(), Code::kRejected);
  c = LoadWorkerConfig(Write(kMinimal), {"model.trusted_script_sha256=[\"" + sha + "\"]"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->CheckScriptTrusted(sha, &warning).ok());

  // --allow-untrusted-script: any file runs, with a warning naming it.
  c = LoadWorkerConfig(Write(kMinimal), {"model.allow_untrusted_script=true"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->CheckScriptTrusted(sha, &warning).ok());
  EXPECT_NE(warning.find("sha256=" + sha), std::string::npos) << warning;
  EXPECT_NE(warning.find("--allow-untrusted-script"), std::string::npos) << warning;
}

// Issue #20: a token passed as `--join TOKEN` is visible to every local user in ps. The
// environment variable and @FILE keep it off the command line.
TEST_F(WorkerConfigTest, JoinTokenComesFromTheEnvironmentOrAFile) {
  ASSERT_EQ(::setenv(kJoinTokenEnv, "shoal1.from-env", 1), 0);
  Result<WorkerConfig> from_env = LoadWorkerConfig(Write(kMinimal), {});
  ASSERT_TRUE(from_env.ok()) << from_env.status().ToString();
  EXPECT_EQ(from_env->join_token, "shoal1.from-env");
  // An explicit setting wins over the environment.
  Result<WorkerConfig> explicit_file =
      LoadWorkerConfig(Write(kMinimal), {"security.join_token=@" + dir_ + "/token"});
  ASSERT_TRUE(explicit_file.ok());
  EXPECT_EQ(explicit_file->join_token, "@" + dir_ + "/token");
  ASSERT_EQ(::unsetenv(kJoinTokenEnv), 0);
  Result<WorkerConfig> none = LoadWorkerConfig(Write(kMinimal), {});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->join_token.empty());

  std::ofstream(dir_ + "/token") << "  shoal1.abc.def \n";
  auto token = ResolveJoinToken("@" + dir_ + "/token");
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(*token, "shoal1.abc.def");
  EXPECT_EQ(*ResolveJoinToken(" shoal1.x\n"), "shoal1.x");
  EXPECT_EQ(ResolveJoinToken("@" + dir_ + "/missing").status().code(), Code::kNotFound);
  std::ofstream(dir_ + "/empty") << "\n";
  EXPECT_EQ(ResolveJoinToken("@" + dir_ + "/empty").status().code(), Code::kInvalidArgument);
  std::ofstream(dir_ + "/huge") << std::string(kMaxJoinTokenFileBytes + 1, 'a');
  EXPECT_EQ(ResolveJoinToken("@" + dir_ + "/huge").status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::worker
