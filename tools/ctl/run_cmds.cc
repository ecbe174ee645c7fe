#include "tools/ctl/run_cmds.h"

#include <httplib.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "store/model_store.h"

namespace shoal::ctl {
namespace {

using nlohmann::json;

struct Source {
  std::string run_dir;
  std::string url;
  std::string token;
  bool json = false;
};

[[noreturn]] void Fail(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
  std::exit(2);
}

Result<json> Fetch(const Source& s, const std::string& path) {
  httplib::Client cli(s.url);
  cli.set_connection_timeout(5);
  cli.set_read_timeout(10);
  httplib::Headers headers;
  if (!s.token.empty()) headers.emplace("Authorization", "Bearer " + s.token);
  auto res = cli.Get(path.c_str(), headers);
  if (!res) return Unavailable(s.url + path + ": " + httplib::to_string(res.error()));
  if (res->status != 200) {
    return Unavailable(s.url + path + ": HTTP " + std::to_string(res->status) + " " + res->body);
  }
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded()) return ProtocolError(s.url + path + ": response is not JSON");
  return j;
}

Result<json> OfflineModels(const std::string& dir) {
  SHOAL_ASSIGN_OR_RETURN(auto versions, store::ListVersions(dir));
  json arr = json::array();
  for (const auto& v : versions) arr.push_back(v.ToJson());
  return arr;
}

Result<json> OfflineRounds(const std::string& dir) {
  if (!PathExists(store::RunInfoPath(dir))) return NotFound(dir + " is not a Shoal run directory");
  SHOAL_ASSIGN_OR_RETURN(auto recs, store::ReadMetricsLog(dir));
  return json(recs);
}

// Per worker, what the run directory records: the rounds each took part in.
Result<json> OfflineWorkers(const std::string& dir) {
  SHOAL_ASSIGN_OR_RETURN(json rounds, OfflineRounds(dir));
  std::map<std::string, json> by_name;
  for (const auto& r : rounds) {
    for (const auto& p : r.value("participants", json::array())) {
      json& w = by_name[p.get<std::string>()];
      if (w.is_null()) w = {{"name", p}, {"state", "-"}, {"rounds", json::array()}};
      w["rounds"].push_back(r.value("round", 0));
    }
  }
  json arr = json::array();
  for (auto& [name, w] : by_name) arr.push_back(w);
  return arr;
}

Result<json> OfflineStatus(const std::string& dir) {
  SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(store::RunInfoPath(dir), 1 << 20));
  json info = json::parse(text, nullptr, false);
  if (info.is_discarded()) return Corrupt(store::RunInfoPath(dir) + ": not valid JSON");
  SHOAL_ASSIGN_OR_RETURN(json models, OfflineModels(dir));
  json s = {{"run_id", info.value("run_id", "")},
            {"model", info.value("model", "")},
            {"state", "offline"}};
  if (!models.empty()) {
    s["version"] = models.back()["version"];
    s["round"] = models.back()["round"];
    s["sha256"] = models.back()["sha256"];
  }
  return s;
}

Result<json> Load(const Source& s, const std::string& what) {
  if (!s.url.empty()) return Fetch(s, "/api/" + what);
  if (s.run_dir.empty()) return InvalidArgument("give a RUN_DIR or --url");
  if (what == "status") return OfflineStatus(s.run_dir);
  if (what == "rounds") return OfflineRounds(s.run_dir);
  if (what == "workers") return OfflineWorkers(s.run_dir);
  return OfflineModels(s.run_dir);
}

std::string Pct(const json& j, const char* k) {
  if (!j.is_object() || !j.contains(k) || !j[k].is_number()) return "-";
  char b[32];
  std::snprintf(b, sizeof(b), "%.2f%%", 100 * j[k].get<double>());
  return b;
}

std::string Num(const json& j, const char* k, const char* fmt = "%.4f") {
  if (!j.is_object() || !j.contains(k) || !j[k].is_number()) return "-";
  char b[32];
  std::snprintf(b, sizeof(b), fmt, j[k].get<double>());
  return b;
}

void PrintRounds(const json& recs) {
  std::printf("%5s %7s %7s %7s %9s %9s %8s %8s %10s %8s %12s\n", "round", "version", "workers",
              "samples", "test_acc", "test_loss", "fed_acc", "fed_loss", "train_loss", "seconds",
              "MB_in/out");
  for (const auto& r : recs) {
    std::printf("%5llu %7s %7zu %7lld %9s %9s %8s %8s %10s %8s %6.1f/%-5.1f\n",
                static_cast<unsigned long long>(r.value("round", 0ull)),
                ("v" + std::to_string(r.value("version", 0ull))).c_str(),
                r.value("participants", json::array()).size(),
                static_cast<long long>(r.value("samples", 0ll)),
                Pct(r.value("central", json()), "accuracy").c_str(),
                Num(r.value("central", json()), "loss").c_str(),
                Pct(r.value("federated", json()), "accuracy").c_str(),
                Num(r.value("federated", json()), "loss").c_str(), Num(r, "train_loss").c_str(),
                Num(r, "wall_s", "%.1f").c_str(), r.value("bytes_in", 0.0) / 1e6,
                r.value("bytes_out", 0.0) / 1e6);
  }
}

void PrintModels(const json& versions, const std::vector<std::string>& checks) {
  std::printf("%-8s %6s %6s %9s %-16s %-24s %s\n", "version", "round", "parent", "test_acc",
              "sha256", "participants", checks.empty() ? "" : "verify");
  for (size_t i = 0; i < versions.size(); ++i) {
    const auto& v = versions[i];
    std::string parts;
    for (const auto& p : v.value("participants", json::array())) {
      parts += (parts.empty() ? "" : ",") + p.get<std::string>();
    }
    if (parts.size() > 24) parts = parts.substr(0, 21) + "...";
    const json parent = v.value("parent", json());
    std::printf("%-8s %6llu %6s %9s %-16s %-24s %s\n",
                ("v" + std::to_string(v.value("version", 0ull))).c_str(),
                static_cast<unsigned long long>(v.value("round", 0ull)),
                parent.is_number() ? ("v" + std::to_string(parent.get<uint64_t>())).c_str() : "-",
                Pct(v.value("metrics", json()).value("central", json()), "accuracy").c_str(),
                v.value("sha256", "").substr(0, 16).c_str(), parts.c_str(),
                checks.empty() ? "" : checks[i].c_str());
  }
}

void PrintWorkers(const json& workers) {
  std::printf("%-16s %-10s %-24s %-14s %8s %10s %14s %8s\n", "name", "state", "last_seen", "rounds",
              "samples", "train_loss", "MB_in/out", "rejected");
  for (const auto& w : workers) {
    std::string rounds;
    for (const auto& r : w.value("rounds", json::array())) {
      rounds += (rounds.empty() ? "" : ",") + std::to_string(r.get<uint64_t>());
    }
    if (rounds.size() > 14) rounds = rounds.substr(0, 11) + "...";
    char bytes[32] = "-";
    if (w.contains("bytes_in")) {
      std::snprintf(bytes, sizeof(bytes), "%.1f/%.1f", w.value("bytes_in", 0.0) / 1e6,
                    w.value("bytes_out", 0.0) / 1e6);
    }
    std::printf("%-16s %-10s %-24s %-14s %8s %10s %14s %8s\n", w.value("name", "").c_str(),
                w.value("state", "-").c_str(), w.value("last_seen", "-").c_str(), rounds.c_str(),
                w.contains("samples") ? std::to_string(w.value("samples", 0ll)).c_str() : "-",
                Num(w, "last_train_loss").c_str(), bytes,
                w.contains("rejected") ? std::to_string(w.value("rejected", 0ull)).c_str() : "-");
  }
}

void PrintStatus(const json& s) {
  for (const auto& [k, v] : s.items()) {
    std::printf("%-18s %s\n", k.c_str(),
                v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
  }
}

CLI::App* AddSourced(CLI::App& app, const char* name, const char* help, std::shared_ptr<Source> s) {
  auto* cmd = app.add_subcommand(name, help);
  cmd->add_option("run_dir", s->run_dir, "Run directory (offline)");
  cmd->add_option("--url", s->url,
                  "A running coordinator's HTTP address, e.g. http://127.0.0.1:8080");
  cmd->add_option("--token", s->token, "Bearer token for the coordinator's HTTP API");
  cmd->add_flag("--json", s->json, "Print JSON");
  return cmd;
}

}  // namespace

void AddRunCommands(CLI::App& app) {
  auto status = std::make_shared<Source>();
  AddSourced(app, "status", "Run state, round and version", status)->callback([status] {
    auto j = Load(*status, "status");
    if (!j.ok()) Fail(j.status());
    if (status->json) {
      std::cout << j->dump(2) << "\n";
    } else {
      PrintStatus(*j);
    }
  });

  auto rounds = std::make_shared<Source>();
  AddSourced(app, "rounds", "Per-round metrics: accuracy, loss, participants, time, bytes", rounds)
      ->callback([rounds] {
        auto j = Load(*rounds, "rounds");
        if (!j.ok()) Fail(j.status());
        if (rounds->json) {
          for (const auto& r : *j) std::cout << r.dump() << "\n";
        } else {
          PrintRounds(*j);
        }
      });

  auto workers = std::make_shared<Source>();
  AddSourced(app, "workers", "Workers: state, rounds taken part in, samples, bytes", workers)
      ->callback([workers] {
        auto j = Load(*workers, "workers");
        if (!j.ok()) Fail(j.status());
        if (workers->json) {
          std::cout << j->dump(2) << "\n";
        } else {
          PrintWorkers(*j);
        }
      });

  auto models = std::make_shared<Source>();
  auto verify = std::make_shared<bool>(false);
  AddSourced(app, "models", "Committed model versions", models)
      ->add_flag("--verify", *verify,
                 "Load every version from RUN_DIR and check its SHA-256 (exit 3 on mismatch)");
  app.get_subcommand("models")->callback([models, verify] {
    auto j = Load(*models, "models");
    if (!j.ok()) Fail(j.status());
    std::vector<std::string> checks;
    bool all_ok = true;
    if (*verify) {
      if (models->run_dir.empty()) Fail(InvalidArgument("--verify needs a RUN_DIR"));
      for (auto& v : *j) {
        auto meta = store::VersionMeta::FromJson(v);
        auto w = meta.ok() ? store::LoadVersion(models->run_dir, *meta)
                           : Result<model::Weights>(meta.status());
        checks.push_back(w.ok() ? "ok" : "BAD: " + w.status().message());
        v["verified"] = w.ok();
        all_ok = all_ok && w.ok();
      }
    }
    if (models->json) {
      std::cout << j->dump(2) << "\n";
    } else {
      PrintModels(*j, checks);
    }
    if (!all_ok) std::exit(3);
  });
}

}  // namespace shoal::ctl
