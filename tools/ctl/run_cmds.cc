#include "tools/ctl/run_cmds.h"

#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "coordinator/model_store.h"

namespace shoal::ctl {
namespace {

[[noreturn]] void Fail(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
  std::exit(2);
}

std::string Pct(const nlohmann::json& j, const char* k) {
  if (!j.is_object() || !j.contains(k) || !j[k].is_number()) return "-";
  char b[32];
  std::snprintf(b, sizeof(b), "%.2f%%", 100 * j[k].get<double>());
  return b;
}

std::string Num(const nlohmann::json& j, const char* k, const char* fmt = "%.4f") {
  if (!j.is_object() || !j.contains(k) || !j[k].is_number()) return "-";
  char b[32];
  std::snprintf(b, sizeof(b), fmt, j[k].get<double>());
  return b;
}

}  // namespace

void AddRoundsCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("rounds", "Per-round metrics of a run directory");
  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("run_dir", *dir, "Run directory")->required();
  cmd->add_flag("--json", *json, "Print JSON lines instead of a table");
  cmd->callback([dir, json] {
    auto recs = ReadMetricsLog(*dir);
    if (!recs.ok()) Fail(recs.status());
    if (!PathExists(RunInfoPath(*dir))) Fail(NotFound(*dir + " is not a Shoal run directory"));
    if (*json) {
      for (const auto& r : *recs) std::cout << r.dump() << "\n";
      return;
    }
    std::printf("%5s %7s %7s %7s %9s %9s %8s %8s %10s %8s %10s\n", "round", "version", "workers",
                "samples", "test_acc", "test_loss", "fed_acc", "fed_loss", "train_loss", "seconds",
                "MB_in/out");
    for (const auto& r : *recs) {
      std::printf("%5llu %7s %7zu %7lld %9s %9s %8s %8s %10s %8s %5.1f/%-5.1f\n",
                  static_cast<unsigned long long>(r.value("round", 0ull)),
                  ("v" + std::to_string(r.value("version", 0ull))).c_str(),
                  r.value("participants", nlohmann::json::array()).size(),
                  static_cast<long long>(r.value("samples", 0ll)),
                  Pct(r.value("central", nlohmann::json()), "accuracy").c_str(),
                  Num(r.value("central", nlohmann::json()), "loss").c_str(),
                  Pct(r.value("federated", nlohmann::json()), "accuracy").c_str(),
                  Num(r.value("federated", nlohmann::json()), "loss").c_str(),
                  Num(r, "train_loss").c_str(), Num(r, "wall_s", "%.1f").c_str(),
                  r.value("bytes_in", 0.0) / 1e6, r.value("bytes_out", 0.0) / 1e6);
    }
  });
}

void AddModelsCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("models", "Versions stored in a run directory");
  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto verify = std::make_shared<bool>(false);
  cmd->add_option("run_dir", *dir, "Run directory")->required();
  cmd->add_flag("--json", *json, "Print JSON instead of a table");
  cmd->add_flag("--verify", *verify, "Load every version and check its SHA-256 (exit 3 on mismatch)");
  cmd->callback([dir, json, verify] {
    auto versions = ListVersions(*dir);
    if (!versions.ok()) Fail(versions.status());
    bool all_ok = true;
    std::vector<std::string> checks;
    for (const auto& v : *versions) {
      if (!*verify) {
        checks.push_back("");
        continue;
      }
      auto w = LoadVersion(*dir, v);
      checks.push_back(w.ok() ? "ok" : "BAD: " + w.status().message());
      all_ok = all_ok && w.ok();
    }
    if (*json) {
      nlohmann::json arr = nlohmann::json::array();
      for (size_t i = 0; i < versions->size(); ++i) {
        auto j = (*versions)[i].ToJson();
        j["path"] = VersionWeightsPath(*dir, (*versions)[i].version);
        if (*verify) j["verified"] = checks[i] == "ok";
        arr.push_back(j);
      }
      std::cout << arr.dump(2) << "\n";
    } else {
      std::printf("%-8s %6s %6s %9s %-16s %-24s %s\n", "version", "round", "parent", "test_acc",
                  "sha256", "participants", *verify ? "verify" : "");
      for (size_t i = 0; i < versions->size(); ++i) {
        const auto& v = (*versions)[i];
        std::string parts;
        for (const auto& p : v.participants) parts += (parts.empty() ? "" : ",") + p;
        if (parts.size() > 24) parts = parts.substr(0, 21) + "...";
        std::printf("%-8s %6llu %6s %9s %-16s %-24s %s\n", ("v" + std::to_string(v.version)).c_str(),
                    static_cast<unsigned long long>(v.round),
                    v.parent ? ("v" + std::to_string(*v.parent)).c_str() : "-",
                    Pct(v.metrics.value("central", nlohmann::json()), "accuracy").c_str(),
                    v.sha256.substr(0, 16).c_str(), parts.c_str(), checks[i].c_str());
      }
    }
    if (!all_ok) std::exit(3);
  });
}

}  // namespace shoal::ctl
