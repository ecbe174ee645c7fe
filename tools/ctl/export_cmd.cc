#include "tools/ctl/export_cmd.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <tuple>

#include "base/file_util.h"
#include "base/hex.h"
#include "base/sha256.h"
#include "model/model_source.h"
#include "model/weights.h"
#include "nn/export.h"
#include "security/signing.h"
#include "store/model_store.h"
#include "store/script_copy.h"

namespace shoal::ctl {
namespace {

constexpr uint64_t kMaxModelBytes = uint64_t{1} << 34;
constexpr uint64_t kMaxMetadataBytes = uint64_t{1} << 26;

const std::vector<std::string>& FashionMnistClasses() {
  static const std::vector<std::string> kNames = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                  "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                  "Bag",         "Ankle boot"};
  return kNames;
}

struct RunInfo {
  std::string run_id;
  std::string model;
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  // empty when run.json has none
  std::string model_path;                // torchscript runs: model.path the run started from
  std::string model_sha256;  // torchscript runs: SHA-256 (hex) of RUN_DIR/model/script.pt
};

Result<RunInfo> ReadRunInfo(const std::string& run_dir) {
  const std::string path = store::RunInfoPath(run_dir);
  auto text = ReadFile(path, 1 << 20);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) {
      return NotFound(run_dir + " is not a Shoal run directory (no run.json)");
    }
    return text.status();
  }
  const auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Corrupt(path + ": not a JSON object");
  RunInfo info;
  try {
    info.run_id = j.at("run_id").get<std::string>();
    info.model = j.at("model").get<std::string>();
    info.input_shape = j.at("input_shape").get<std::vector<int64_t>>();
    info.num_classes = j.at("num_classes").get<int64_t>();
    if (j.contains("class_names")) {
      info.class_names = j.at("class_names").get<std::vector<std::string>>();
    }
    if (info.model == model::kTorchScriptModel) {
      info.model_sha256 = j.at("model_sha256").get<std::string>();
      info.model_path = j.value("model_path", "");
    }
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(path + ": " + e.what());
  }
  if (!info.class_names.empty() &&
      static_cast<int64_t>(info.class_names.size()) != info.num_classes) {
    return Corrupt(path + ": class_names has " + std::to_string(info.class_names.size()) +
                   " names for " + std::to_string(info.num_classes) + " classes");
  }
  return info;
}

std::optional<double> CentralAccuracy(const store::VersionMeta& v) {
  const auto& m = v.metrics;
  if (!m.is_object() || !m.contains("central") || !m["central"].is_object()) return std::nullopt;
  const auto& c = m["central"];
  if (!c.contains("accuracy") || !c["accuracy"].is_number()) return std::nullopt;
  return c["accuracy"].get<double>();
}

Result<store::VersionMeta> SelectVersion(const std::vector<store::VersionMeta>& versions,
                                         const std::string& which, const std::string& run_dir) {
  if (versions.empty()) return NotFound(run_dir + " holds no committed version");
  if (which == "latest") return versions.back();
  if (which == "best") {
    const store::VersionMeta* best = nullptr;
    double best_acc = -1;
    for (const auto& v : versions) {
      auto acc = CentralAccuracy(v);
      // Strictly greater: of equally accurate versions the oldest wins.
      if (acc && *acc > best_acc) {
        best = &v;
        best_acc = *acc;
      }
    }
    if (!best) {
      return NotFound("no version of " + run_dir +
                      " has a central accuracy (metrics.central.accuracy; was central "
                      "evaluation off?): use --version N or latest");
    }
    return *best;
  }
  std::string digits = which;
  if (!digits.empty() && (digits[0] == 'v' || digits[0] == 'V')) digits = digits.substr(1);
  if (digits.empty() || digits.size() > 19 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument("--version must be a number, vN, latest or best, got '" + which + "'");
  }
  const uint64_t n = std::stoull(digits);
  for (const auto& v : versions) {
    if (v.version == n) return v;
  }
  return NotFound("version v" + digits + " is not committed in " + run_dir + " (newest is v" +
                  std::to_string(versions.back().version) + ")");
}

// The model card's privacy statement: the mechanism, delta and each silo's epsilon as the
// coordinator accounted them up to `leaf` (its meta's "privacy" record, coordinator/
// privacy_budget.h), with the parameters of every round of its lineage: per silo the steps
// run at each (q, sigma, clip norm). null for a run without differential privacy.
nlohmann::json PrivacyCardUnchecked(const std::vector<store::VersionMeta>& versions,
                                    const store::VersionMeta& leaf) {
  const auto rec = leaf.metrics.find("privacy");
  if (rec == leaf.metrics.end() || !rec->is_object()) return nullptr;
  std::map<uint64_t, const store::VersionMeta*> by_version;
  for (const auto& v : versions) by_version[v.version] = &v;
  // silo -> "q sigma clip" -> steps
  std::map<std::string, std::map<std::tuple<double, double, double>, uint64_t>> steps;
  for (const store::VersionMeta* cur = &leaf; cur != nullptr;) {
    const auto p = cur->metrics.find("privacy");
    if (p != cur->metrics.end() && p->is_object()) {
      const nlohmann::json recs = p->value("silos", nlohmann::json::object());
      for (const auto& [silo, r] : recs.items()) {
        if (!r.is_object()) continue;
        steps[silo][{r.value("q", 0.0), r.value("sigma", 0.0), r.value("clip_norm", 0.0)}] +=
            r.value("steps", uint64_t{0});
      }
    }
    auto it = cur->parent ? by_version.find(*cur->parent) : by_version.end();
    cur = (it == by_version.end() || it->first >= cur->version) ? nullptr : it->second;
  }
  nlohmann::json silos = nlohmann::json::object();
  for (const auto& [silo, by_params] : steps) {
    nlohmann::json runs = nlohmann::json::array();
    uint64_t total = 0;
    for (const auto& [params, n] : by_params) {
      runs.push_back({{"q", std::get<0>(params)},
                      {"sigma", std::get<1>(params)},
                      {"clip_norm", std::get<2>(params)},
                      {"steps", n}});
      total += n;
    }
    silos[silo] = {
        {"epsilon",
         rec->value("epsilon", nlohmann::json::object()).value(silo, nlohmann::json(nullptr))},
        {"steps", total},
        {"parameters", runs}};
  }
  return {{"mechanism", rec->value("mechanism", "")},
          {"delta", rec->value("delta", 0.0)},
          {"accountant", "RDP of the Poisson-subsampled Gaussian, Balle et al. 2020 conversion"},
          {"silos", silos}};
}

// The same; Corrupt naming the problem when a record has the wrong types.
Result<nlohmann::json> PrivacyCard(const std::vector<store::VersionMeta>& versions,
                                   const store::VersionMeta& leaf) {
  try {
    return PrivacyCardUnchecked(versions, leaf);
  } catch (const nlohmann::json::exception& e) {
    return Corrupt("the privacy records of v" + std::to_string(leaf.version) +
                   "'s lineage: " + e.what());
  }
}

// The chain from `leaf` back to v0 through the parents, newest first.
Result<nlohmann::json> Lineage(const std::vector<store::VersionMeta>& versions,
                               const store::VersionMeta& leaf) {
  std::map<uint64_t, const store::VersionMeta*> by_version;
  for (const auto& v : versions) by_version[v.version] = &v;
  nlohmann::json chain = nlohmann::json::array();
  const store::VersionMeta* cur = &leaf;
  while (true) {
    nlohmann::json entry = {{"version", cur->version},
                            {"round", cur->round},
                            {"sha256", cur->sha256},
                            {"participants", cur->participants},
                            {"created_at", cur->created_at}};
    entry["parent"] = cur->parent ? nlohmann::json(*cur->parent) : nlohmann::json(nullptr);
    chain.push_back(std::move(entry));
    if (!cur->parent) break;
    const uint64_t parent = *cur->parent;
    if (parent >= cur->version) {
      return Corrupt("version v" + std::to_string(cur->version) + " names v" +
                     std::to_string(parent) + " as its parent (parents must be older)");
    }
    auto it = by_version.find(parent);
    if (it == by_version.end()) {
      return Corrupt("lineage of v" + std::to_string(leaf.version) + " is broken: v" +
                     std::to_string(cur->version) + "'s parent v" + std::to_string(parent) +
                     " has no meta file");
    }
    cur = it->second;
  }
  if (chain.back()["version"].get<uint64_t>() != 0) {
    return Corrupt("lineage of v" + std::to_string(leaf.version) + " ends at v" +
                   chain.back()["version"].dump() + ", which has no parent but is not v0");
  }
  return chain;
}

// What a client must do to raw data before calling the model.
nlohmann::json Preprocessing(const std::vector<int64_t>& input_shape) {
  if (input_shape.size() == 3) {
    return {{"scale", 1.0 / 255.0}, {"input", "uint8 pixels scaled to [0,1], NCHW float32"}};
  }
  return {{"scale", 1.0},
          {"input",
           "none: the CSV feature columns (label column removed) in file order, as "
           "float32"}};
}

std::vector<std::string> ClassNames(const RunInfo& info, const std::vector<std::string>& flag) {
  if (!flag.empty()) return flag;
  if (!info.class_names.empty()) return info.class_names;
  if (info.num_classes == 10 && info.input_shape == std::vector<int64_t>{1, 28, 28}) {
    return FashionMnistClasses();
  }
  std::vector<std::string> names;
  for (int64_t i = 0; i < info.num_classes; ++i) names.push_back(std::to_string(i));
  return names;
}

// The bytes the signature covers: model.json without "signature", dumped without indentation.
Result<std::string> SignedBytes(nlohmann::json j) {
  j.erase("signature");
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(std::string("model.json cannot be serialized: ") + e.what());
  }
}

std::string Percent(std::optional<double> v) {
  if (!v) return "-";
  char b[32];
  std::snprintf(b, sizeof(b), "%.2f%%", 100 * *v);
  return b;
}

[[noreturn]] void Fail(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
  std::exit(2);
}

}  // namespace

Result<std::string> ModelCardSignedBytes(const nlohmann::json& model_json) {
  return SignedBytes(model_json);
}

std::string MetadataPathFor(const std::string& model_path) {
  std::filesystem::path p(model_path);
  p.replace_extension(".json");
  return p.string();
}

Result<nlohmann::json> ExportVersion(const ExportRequest& req, const ModelExporter& exporter) {
  const std::string json_path = MetadataPathFor(req.out);
  if (req.out.empty()) return InvalidArgument("--out must name the model file to write");
  if (json_path == req.out) {
    return InvalidArgument("--out " + req.out +
                           " would be overwritten by its own metadata; use "
                           "a .pt name");
  }
  SHOAL_ASSIGN_OR_RETURN(RunInfo info, ReadRunInfo(req.run_dir));
  if (!req.class_names.empty() &&
      static_cast<int64_t>(req.class_names.size()) != info.num_classes) {
    return InvalidArgument("--class-names has " + std::to_string(req.class_names.size()) +
                           " names, the model has " + std::to_string(info.num_classes) +
                           " classes");
  }
  SHOAL_ASSIGN_OR_RETURN(auto versions, store::ListVersions(req.run_dir));
  SHOAL_ASSIGN_OR_RETURN(store::VersionMeta meta,
                         SelectVersion(versions, req.version, req.run_dir));
  SHOAL_ASSIGN_OR_RETURN(nlohmann::json lineage, Lineage(versions, meta));
  SHOAL_ASSIGN_OR_RETURN(nlohmann::json privacy, PrivacyCard(versions, meta));
  SHOAL_ASSIGN_OR_RETURN(model::Weights weights, store::LoadVersion(req.run_dir, meta));

  SHOAL_RETURN_IF_ERROR(security::EnsureCoordinatorKey(req.run_dir));
  SHOAL_ASSIGN_OR_RETURN(security::PrivateKey key,
                         security::PrivateKey::Load(security::SigningKeyPath(req.run_dir)));

  Result<nn::ExportedModel> exported = Internal("not exported");
  if (info.model == model::kTorchScriptModel) {
    // The user's architecture from the run's own copy, holding the version's weights.
    SHOAL_ASSIGN_OR_RETURN(std::string script,
                           store::ReadRunScriptModel(req.run_dir, info.model_sha256));
    exported = exporter.script(script, info.input_shape, info.num_classes, weights);
  } else {
    exported = exporter.builtin(info.model, info.input_shape, info.num_classes, weights);
  }
  if (!exported.ok()) {
    return exported.status().Annotate("export of v" + std::to_string(meta.version));
  }
  const std::string pt_sha = ToHex(Sha256::Of(exported->bytes.data(), exported->bytes.size()));

  nlohmann::json j = {
      {"format", "shoal-export/1"},
      {"run_id", info.run_id},
      {"model", info.model},
      {"input_shape", info.input_shape},
      {"num_classes", info.num_classes},
      {"class_names", ClassNames(info, req.class_names)},
      {"preprocessing", Preprocessing(info.input_shape)},
      {"version", meta.version},
      {"round", meta.round},
      {"weights_sha256", meta.sha256},
      {"model_pt_sha256", pt_sha},
      {"model_pt_bytes", exported->bytes.size()},
      {"metrics", meta.metrics},
      {"created_at", meta.created_at},
      {"lineage", lineage},
      {"privacy", privacy},
      {"export_check",
       {{"max_abs_diff", exported->max_abs_diff},
        {"samples", exported->check_samples},
        {"tolerance", nn::kExportTolerance}}},
      {"exported_at", store::UtcNow()},
      {"public_key_pem", key.public_key().pem()},
  };
  if (info.model == model::kTorchScriptModel) {
    j["script_model"] = {{"path", info.model_path}, {"sha256", info.model_sha256}};
  }
  SHOAL_ASSIGN_OR_RETURN(std::string signed_bytes, SignedBytes(j));
  SHOAL_ASSIGN_OR_RETURN(std::string signature, key.Sign(signed_bytes));
  j["signature"] = {{"algorithm", "ed25519"},
                    {"public_key_fingerprint", key.public_key().fingerprint()},
                    {"signature", HexEncode(signature)},
                    {"signed_bytes",
                     "model.json without \"signature\", as compact JSON with "
                     "sorted keys (nlohmann dump())"}};

  const std::string parent = std::filesystem::path(req.out).parent_path().string();
  if (!parent.empty()) SHOAL_RETURN_IF_ERROR(MakeDirs(parent));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(req.out, exported->bytes));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(json_path, j.dump(2) + "\n"));
  return j;
}

Result<VerifyOutcome> VerifyExport(const std::string& model_path, const std::string& pubkey_path,
                                   const std::string& run_dir,
                                   const std::string& pinned_fingerprint) {
  const std::string json_path = MetadataPathFor(model_path);
  SHOAL_ASSIGN_OR_RETURN(std::string model_bytes, ReadFile(model_path, kMaxModelBytes));
  SHOAL_ASSIGN_OR_RETURN(std::string json_text, ReadFile(json_path, kMaxMetadataBytes));

  // The trusted key, if any, is read before any check so a bad --pubkey is an error (exit 2).
  std::optional<security::PublicKey> trusted;
  if (!pubkey_path.empty()) {
    SHOAL_ASSIGN_OR_RETURN(security::PublicKey k, security::PublicKey::Load(pubkey_path));
    trusted = std::move(k);
  } else if (!run_dir.empty()) {
    auto k = security::PublicKey::Load(security::SigningPublicKeyPath(run_dir));
    if (!k.ok()) return k.status().Annotate("coordinator public key of " + run_dir);
    trusted = std::move(k).value();
  }

  std::string pinned = pinned_fingerprint;
  std::transform(pinned.begin(), pinned.end(), pinned.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (!pinned.empty() && !IsLowerHex(pinned, 64)) {
    return InvalidArgument("--fingerprint \"" + pinned_fingerprint +
                           "\" is not a key fingerprint (64 hex characters)");
  }

  VerifyOutcome out;
  const auto j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    out.failures.push_back(json_path + " is not a JSON object (modified or truncated)");
    return out;
  }
  auto str = [&](const nlohmann::json& obj, const char* key) -> std::string {
    return obj.is_object() && obj.contains(key) && obj[key].is_string()
               ? obj[key].get<std::string>()
               : "";
  };

  // 1. model.pt is the file model.json describes.
  const std::string want_sha = str(j, "model_pt_sha256");
  const std::string have_sha = ToHex(Sha256::Of(model_bytes.data(), model_bytes.size()));
  if (want_sha.empty()) {
    out.failures.push_back(json_path + " has no model_pt_sha256");
  } else if (want_sha != have_sha) {
    out.failures.push_back("model.pt hash mismatch: " + model_path + " has SHA-256 " + have_sha +
                           ", " + json_path + " records " + want_sha +
                           " (model.pt was modified or replaced)");
  }

  // 2. model.json is signed by the trusted (or embedded) key.
  const nlohmann::json sig_block = j.value("signature", nlohmann::json());
  const std::string sig_hex = str(sig_block, "signature");
  const std::string claimed_fp = str(sig_block, "public_key_fingerprint");
  auto signature = HexDecode(sig_hex);
  auto embedded = security::PublicKey::FromPem(str(j, "public_key_pem"));
  auto signed_bytes = SignedBytes(j);
  if (!sig_block.is_object() || str(sig_block, "algorithm") != "ed25519") {
    out.failures.push_back(json_path + " has no ed25519 signature block");
  } else if (!signature.ok() || sig_hex.empty()) {
    out.failures.push_back(json_path + ": signature is not hex text");
  } else if (!signed_bytes.ok()) {
    out.failures.push_back(signed_bytes.status().message());
  } else if (trusted) {
    Status st = trusted->Verify(*signed_bytes, *signature);
    if (!st.ok()) {
      const bool signed_by_other = embedded.ok() &&
                                   embedded->fingerprint() != trusted->fingerprint() &&
                                   embedded->Verify(*signed_bytes, *signature).ok();
      if (signed_by_other) {
        out.failures.push_back("wrong key: model.json is signed by key " + embedded->fingerprint() +
                               ", not by the trusted key " + trusted->fingerprint());
      } else if (embedded.ok() && embedded->fingerprint() == trusted->fingerprint()) {
        out.failures.push_back(
            "signature check failed: model.json was modified after signing (its signature "
            "by the trusted key " +
            trusted->fingerprint() + " does not match its content)");
      } else {
        out.failures.push_back(
            "signature check failed: model.json was modified after signing, or is not signed "
            "by the trusted key " +
            trusted->fingerprint());
      }
    } else if (!claimed_fp.empty() && claimed_fp != trusted->fingerprint()) {
      out.failures.push_back("signature block names key " + claimed_fp +
                             " but the signature is by " + trusted->fingerprint());
    }
    out.summary = "signed by trusted key " + trusted->fingerprint();
  } else {
    // No key of our own: the embedded key is trusted only when its fingerprint is the pinned
    // one. Without a pin, a valid signature proves nothing (anyone can re-sign model.json with
    // a key of their own and embed it), so verification fails.
    if (!embedded.ok()) {
      out.failures.push_back(json_path + " embeds no usable public key (" +
                             embedded.status().message() +
                             "); pass --pubkey, --run-dir or --fingerprint");
    } else if (claimed_fp != embedded->fingerprint()) {
      out.failures.push_back("embedded public key has fingerprint " + embedded->fingerprint() +
                             " but the signature block names " + claimed_fp);
    } else if (!embedded->Verify(*signed_bytes, *signature).ok()) {
      out.failures.push_back("signature check failed: model.json was modified after signing");
    } else if (pinned.empty()) {
      out.failures.push_back(
          "no trusted key: model.json is signed by the key it carries itself (" +
          embedded->fingerprint() +
          "), which anyone can replace with their own; pass --pubkey FILE, --run-dir RUN_DIR or "
          "--fingerprint SHA256 to say which coordinator key you trust");
    } else if (embedded->fingerprint() != pinned) {
      out.failures.push_back("wrong key: model.json is signed by key " + embedded->fingerprint() +
                             ", not by the pinned key " + pinned);
    }
    out.summary = "signed by pinned key " + claimed_fp;
  }
  out.summary = "version " + (j.contains("version") ? j["version"].dump() : std::string("?")) +
                " (round " + (j.contains("round") ? j["round"].dump() : std::string("?")) +
                ") of run " + str(j, "run_id") + ", model " + str(j, "model") +
                ", model.pt sha256 " + have_sha + ", " + out.summary;
  return out;
}

void RunExport(const ExportRequest& req, const ModelExporter& exporter) {
  const auto start = std::chrono::steady_clock::now();
  auto j = ExportVersion(req, exporter);
  if (!j.ok()) Fail(j.status());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto& jj = *j;
  std::optional<double> acc;
  if (jj["metrics"].is_object() && jj["metrics"].contains("central") &&
      jj["metrics"]["central"].is_object() && jj["metrics"]["central"].contains("accuracy") &&
      jj["metrics"]["central"]["accuracy"].is_number()) {
    acc = jj["metrics"]["central"]["accuracy"].get<double>();
  }
  std::printf("exported v%llu (round %llu, central accuracy %s) of run %s\n",
              static_cast<unsigned long long>(jj["version"].get<uint64_t>()),
              static_cast<unsigned long long>(jj["round"].get<uint64_t>()), Percent(acc).c_str(),
              jj["run_id"].get<std::string>().c_str());
  std::printf("  %s  sha256 %s (%llu bytes)\n", req.out.c_str(),
              jj["model_pt_sha256"].get<std::string>().c_str(),
              static_cast<unsigned long long>(jj["model_pt_bytes"].get<uint64_t>()));
  std::printf("  %s  signed by %s\n", MetadataPathFor(req.out).c_str(),
              jj["signature"]["public_key_fingerprint"].get<std::string>().c_str());
  std::printf("  check: max |exported - C++| = %.3g on %lld random samples; took %.2f s\n",
              jj["export_check"]["max_abs_diff"].get<double>(),
              static_cast<long long>(jj["export_check"]["samples"].get<int64_t>()), seconds);
}

void AddExportCommand(CLI::App& app, std::function<void(const ExportRequest&)> run) {
  auto* cmd = app.add_subcommand(
      "export", "Export a stored version as a signed TorchScript file (model.pt + model.json)");
  auto req = std::make_shared<ExportRequest>();
  auto names = std::make_shared<std::string>();
  cmd->add_option("run_dir", req->run_dir, "Run directory")->required();
  cmd->add_option("--version", req->version, "N, vN, latest or best (highest central accuracy)")
      ->default_val("latest");
  cmd->add_option("--out", req->out, "TorchScript file to write; metadata goes to <stem>.json")
      ->required();
  cmd->add_option("--class-names", *names,
                  "Comma-separated class names (default: run.json's class_names, Fashion-MNIST "
                  "names for 10-class 1x28x28 models, else 0..n-1)");
  cmd->callback([req, names, run] {
    if (!names->empty()) {
      req->class_names.clear();
      std::string cur;
      for (char c : *names + ",") {
        if (c != ',') {
          cur += c;
          continue;
        }
        req->class_names.push_back(cur);
        cur.clear();
      }
    }
    run(*req);
  });
}

void AddVerifyCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "verify", "Check an exported model.pt against its model.json and signature (exit 3 if not)");
  auto model = std::make_shared<std::string>();
  auto pubkey = std::make_shared<std::string>();
  auto run_dir = std::make_shared<std::string>();
  cmd->add_option("model", *model, "Exported TorchScript file (model.json beside it)")->required();
  auto fingerprint = std::make_shared<std::string>();
  auto* pk = cmd->add_option("--pubkey", *pubkey, "Trusted coordinator public key (PEM)");
  auto* rd =
      cmd->add_option("--run-dir", *run_dir, "Trust the coordinator key of this run directory")
          ->excludes(pk);
  cmd->add_option("--fingerprint", *fingerprint,
                  "Trust only the key with this SHA-256 fingerprint (as `shoalctl export` "
                  "prints it). One of --pubkey, --run-dir, --fingerprint is needed")
      ->excludes(pk)
      ->excludes(rd);
  cmd->callback([model, pubkey, run_dir, fingerprint] {
    auto outcome = VerifyExport(*model, *pubkey, *run_dir, *fingerprint);
    if (!outcome.ok()) Fail(outcome.status());
    if (!outcome->failures.empty()) {
      for (const auto& f : outcome->failures) std::printf("FAILED %s\n", f.c_str());
      std::fflush(stdout);
      std::exit(3);
    }
    std::printf("OK %s: %s\n", model->c_str(), outcome->summary.c_str());
    if (!outcome->warning.empty()) std::printf("warning: %s\n", outcome->warning.c_str());
  });
}

}  // namespace shoal::ctl
