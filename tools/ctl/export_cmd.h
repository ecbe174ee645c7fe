// shoalctl `export` (one stored version as a signed TorchScript file for serving) and `verify`
// (check such a file against its metadata and the coordinator's public key).
//
// export writes OUT (model.pt, a TorchScript archive checked against the C++ model before it is
// written) and OUT with the extension .json (model.json): version, round, the version's weights
// SHA-256, model.pt's SHA-256, metrics, lineage back to v0, model name, input shape, class names,
// preprocessing, run id, export time, the coordinator's public key and an Ed25519 signature over
// the canonical JSON (nlohmann dump() without indentation) of model.json without "signature".
// Both files are written to a temporary name and renamed into place.
//
// Exit codes: 0 success; 2 bad arguments or a file that cannot be read or written (run
// directory, version, key); 3 a verification that failed (model.pt or model.json modified,
// signature by another key).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/weights.h"
#include "nn/export.h"

namespace shoal::ctl {

struct ExportRequest {
  std::string run_dir;
  std::string version = "latest";        // N, vN, latest or best (highest metrics.central.accuracy)
  std::string out;                       // model.pt path; model.json goes beside it
  std::vector<std::string> class_names;  // overrides run.json and the defaults when not empty
};

// What turns stored weights into a TorchScript archive (nn/export.h's ExportTorchScript
// and ExportScriptModel, as tools/export/main.cc passes them). Passed in so that shoalctl itself
// does not link LibTorch: its `export` runs the shoal-export executable, which does.
struct ModelExporter {
  std::function<Result<nn::ExportedModel>(const std::string& name,
                                          const std::vector<int64_t>& input_shape,
                                          int64_t num_classes, const model::Weights& weights)>
      builtin;
  std::function<Result<nn::ExportedModel>(const std::string& script_bytes,
                                          const std::vector<int64_t>& input_shape,
                                          int64_t num_classes, const model::Weights& weights)>
      script;
};

// Exports and returns the model.json that was written.
Result<nlohmann::json> ExportVersion(const ExportRequest& request, const ModelExporter& exporter);
// ExportVersion, then what was written on stdout; exits 2 on an error (docs/errors.md).
void RunExport(const ExportRequest& request, const ModelExporter& exporter);

struct VerifyOutcome {
  std::vector<std::string> failures;  // one line per failed check; empty when all passed
  std::string summary;                // what was verified (version, fingerprint)
  std::string warning;                // a note printed after OK
};

// Checks model.pt against model.json and model.json's signature against the public key in
// `pubkey_path`, else `run_dir`'s coordinator key, else the key embedded in model.json when its
// SHA-256 fingerprint is `pinned_fingerprint`. With none of the three, the check fails: a key
// that model.json carries itself proves nothing. An error Status when the checks cannot run
// (missing file, unreadable key, malformed fingerprint).
Result<VerifyOutcome> VerifyExport(const std::string& model_path, const std::string& pubkey_path,
                                   const std::string& run_dir,
                                   const std::string& pinned_fingerprint = "");

// The bytes model.json's signature covers: model.json without "signature", as compact JSON with
// sorted keys (nlohmann dump()). shoal-serve checks signatures with it too.
Result<std::string> ModelCardSignedBytes(const nlohmann::json& model_json);

// model.pt -> model.json (the extension replaced; appended when there is none).
std::string MetadataPathFor(const std::string& model_path);

// The `export` subcommand; `run` gets the parsed request.
void AddExportCommand(CLI::App& app, std::function<void(const ExportRequest&)> run);
void AddVerifyCommand(CLI::App& app);

}  // namespace shoal::ctl
