// Command-line handling shared by the executables: `--config FILE`, repeatable
// `--set section.key=value`, and shorthand flags that map to config keys. Header-only (CLI11);
// include it from main.cc files only.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

namespace shoal {

struct FlagAlias {
  const char* flag;  // e.g. "--rounds"
  const char* key;   // e.g. "run.rounds"
  const char* help;
};

// Registers the options on `app`; after parsing, Overrides() lists every "key=value" given
// through --set or an alias (aliases last, so they win).
class ConfigFlags {
 public:
  ConfigFlags(CLI::App& app, std::vector<FlagAlias> aliases)
      : aliases_(std::move(aliases)), values_(aliases_.size()) {
    app.add_option("-c,--config", config_path_, "TOML config file (see docs/config.md)");
    app.add_option("--set", sets_, "Override a config key: section.key=value (repeatable)");
    for (size_t i = 0; i < aliases_.size(); ++i) {
      app.add_option(aliases_[i].flag, values_[i], aliases_[i].help);
    }
  }
  // A flag without a value that sets a boolean key to true (e.g. --insecure).
  void AddSwitch(CLI::App& app, const char* flag, const char* key, const char* help) {
    switches_.push_back({key, std::make_unique<bool>(false)});
    app.add_flag(flag, *switches_.back().second, help);
  }
  const std::string& config_path() const { return config_path_; }
  std::vector<std::string> Overrides() const {
    std::vector<std::string> out = sets_;
    for (size_t i = 0; i < aliases_.size(); ++i) {
      if (!values_[i].empty()) out.push_back(std::string(aliases_[i].key) + "=" + values_[i]);
    }
    for (const auto& [key, on] : switches_) {
      if (*on) out.push_back(key + "=true");
    }
    return out;
  }

 private:
  std::vector<std::pair<std::string, std::unique_ptr<bool>>> switches_;
  std::vector<FlagAlias> aliases_;
  std::vector<std::string> values_;
  std::string config_path_;
  std::vector<std::string> sets_;
};

}  // namespace shoal
