#include "worker/config.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "base/config.h"
#include "base/file_util.h"
#include "data/dataset.h"
#include "privacy/dp_params.h"

namespace shoal::worker {

Status WorkerConfig::Validate() const {
  auto bad = [](const std::string& key, const std::string& why) {
    return InvalidArgument("config key '" + key + "': " + why);
  };
  if (name.empty()) return bad("worker.name", "must be set");
  if (!insecure && bundle.empty()) {
    return bad("security.bundle",
               "required: the worker connects over mutually authenticated TLS. Pass --bundle DIR "
               "from `shoalctl enroll NAME --ca CA_DIR --out DIR`, or --join TOKEN --bundle DIR "
               "to enroll with a one-time token, or --insecure (debugging only)");
  }
  if (insecure && !join_token.empty())
    return bad("security.join_token", "cannot be used with --insecure");
  if (server_name.empty()) return bad("security.server_name", "must not be empty");
  if (!data::IsDataFormat(data_format))
    return bad("data.format", "must be one of " + data::DataFormatList());
  if (data_path.empty()) return bad("data.path", "must be set");
  if (limit < 0) return bad("data.limit", "must not be negative");
  if (!(val_fraction >= 0 && val_fraction < 1))
    return bad("data.val_fraction", "must be in [0, 1)");
  if (retry_initial_ms < 10) return bad("retry.initial_ms", "must be at least 10");
  if (retry_max_ms < retry_initial_ms)
    return bad("retry.max_ms", "must be at least retry.initial_ms");
  if (hello_timeout_ms < 100) return bad("retry.hello_timeout_ms", "must be at least 100");
  for (const std::string& sha : trusted_script_sha256) {
    const bool hex =
        sha.size() == 64 && sha.find_first_not_of("0123456789abcdef") == std::string::npos;
    if (!hex) {
      return bad(
          "model.trusted_script_sha256",
          "'" + sha + "' is not a SHA-256 in lowercase hex (64 characters; `sha256sum FILE`)");
    }
  }
  if (!(max_epsilon >= 0 && max_epsilon <= privacy::kMaxReportedEpsilon))
    return bad("privacy.max_epsilon", "must be in [0, 1e12] (0 = no limit)");
  if (!(delta > 0 && delta < 1)) return bad("privacy.delta", "must be in (0, 1)");
  if (threads < 1) return bad("runtime.threads", "must be at least 1");
  if (!(progress_interval_s > 0)) return bad("runtime.progress_interval_s", "must be positive");
  return Status::Ok();
}

std::string WorkerConfig::LedgerPath() const {
  if (!ledger.empty()) return ledger;
  return bundle.empty() ? std::string() : bundle + "/privacy-ledger";
}

Status WorkerConfig::CheckScriptTrusted(const std::string& sha256_hex, std::string* warning) const {
  warning->clear();
  if (std::find(trusted_script_sha256.begin(), trusted_script_sha256.end(), sha256_hex) !=
      trusted_script_sha256.end()) {
    return Status::Ok();
  }
  if (allow_untrusted_script) {
    *warning =
        "!!! running the coordinator's TorchScript model sha256=" + sha256_hex +
        ", which this worker's config does not pin (--allow-untrusted-script): the model is a "
        "program the coordinator chose; only its operator check and the sandbox limit it";
    return Status::Ok();
  }
  return Rejected(
      "the coordinator sent a TorchScript model (a program) with sha256=" + sha256_hex +
      " that this worker does not trust; after reviewing the file, pin it in the worker's config "
      "(model.trusted_script_sha256 = [\"" +
      sha256_hex + "\"], or --set 'model.trusted_script_sha256=[\"" + sha256_hex +
      "\"]'), or start the worker with --allow-untrusted-script");
}

Result<std::string> ResolveJoinToken(const std::string& value) {
  std::string token = value;
  if (!token.empty() && token[0] == '@') {
    auto text = ReadFile(token.substr(1), kMaxJoinTokenFileBytes);
    if (!text.ok()) return text.status().Annotate("join token file");
    token = std::move(text).value();
  }
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!token.empty() && space(token.back())) token.pop_back();
  size_t start = 0;
  while (start < token.size() && space(token[start])) ++start;
  token.erase(0, start);
  if (token.empty()) return InvalidArgument("the join token " + value + " is empty");
  return token;
}

Result<WorkerConfig> LoadWorkerConfig(const std::string& path,
                                      const std::vector<std::string>& overrides) {
  SHOAL_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::FromFile(path, overrides));
  WorkerConfig c;
  r.Read("worker.name", c.name);
  r.Read("worker.coordinator", c.coordinator);
  r.Read("data.format", c.data_format);
  r.Read("data.path", c.data_path);
  r.Read("data.split", c.data_split);
  r.Read("data.label_column", c.label_column);
  r.Read("data.limit", c.limit);
  r.Read("data.val_fraction", c.val_fraction);
  r.Read("data.split_seed", c.split_seed);
  r.Read("retry.initial_ms", c.retry_initial_ms);
  r.Read("retry.max_ms", c.retry_max_ms);
  r.Read("retry.hello_timeout_ms", c.hello_timeout_ms);
  r.Read("security.bundle", c.bundle);
  r.Read("security.join_token", c.join_token);
  r.Read("security.server_name", c.server_name);
  r.Read("security.insecure", c.insecure);
  r.Read("model.trusted_script_sha256", c.trusted_script_sha256);
  r.Read("model.allow_untrusted_script", c.allow_untrusted_script);
  r.Read("privacy.require_dp", c.require_dp);
  r.Read("privacy.max_epsilon", c.max_epsilon);
  r.Read("privacy.delta", c.delta);
  r.Read("privacy.ledger", c.ledger);
  r.Read("privacy.allow_seeded_noise", c.allow_seeded_noise);
  r.Read("runtime.threads", c.threads);
  r.Read("runtime.log_level", c.log_level);
  r.Read("runtime.progress_interval_s", c.progress_interval_s);
  r.Read("runtime.sandbox", c.sandbox);
  r.Read("runtime.require_landlock", c.require_landlock);
  SHOAL_RETURN_IF_ERROR(r.Finish());
  if (c.join_token.empty()) {
    if (const char* env = std::getenv(kJoinTokenEnv); env != nullptr) c.join_token = env;
  }
  SHOAL_RETURN_IF_ERROR(c.Validate().Annotate(path.empty() ? "<defaults>" : path));
  return c;
}

}  // namespace shoal::worker
