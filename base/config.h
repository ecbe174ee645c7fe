// Config files (TOML) read into documented structs. One place applies overrides:
// "section.key=value" strings from command-line flags (or environment variables mapped by the
// executables) replace the file's values before they are read. Every error names the file and the
// key; keys that no field reads are reported as unknown, so a typo never passes silently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal {

class ConfigReader {
 public:
  // `path` may be empty (defaults plus overrides only).
  static Result<ConfigReader> FromFile(const std::string& path,
                                       const std::vector<std::string>& overrides);
  static Result<ConfigReader> FromString(const std::string& text, const std::string& source,
                                         const std::vector<std::string>& overrides);
  ConfigReader(ConfigReader&&) noexcept;
  ConfigReader& operator=(ConfigReader&&) noexcept;
  ~ConfigReader();

  // Each Read leaves `out` unchanged when the key is absent; a value of the wrong type or out of
  // range records an error returned by Finish().
  void Read(const std::string& key, std::string& out);
  void Read(const std::string& key, bool& out);
  void Read(const std::string& key, double& out);
  void Read(const std::string& key, int64_t& out);
  void Read(const std::string& key, int& out);
  void Read(const std::string& key, uint64_t& out);
  void Read(const std::string& key, uint32_t& out);
  void Read(const std::string& key, std::vector<int64_t>& out);
  void Read(const std::string& key, std::vector<std::string>& out);

  // The first error recorded, or InvalidArgument listing unknown keys.
  Status Finish() const;

 private:
  struct Impl;
  template <typename T>
  void ReadInt(const std::string& key, T& out);
  explicit ConfigReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal
