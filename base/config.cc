#include "base/config.h"

#include <toml++/toml.h>

#include <limits>
#include <set>

#include "base/file_util.h"

namespace shoal {

struct ConfigReader::Impl {
  toml::table table;
  std::string source;
  std::set<std::string> read_keys;
  Status error;

  const toml::node* Find(const std::string& key) {
    read_keys.insert(key);
    return table.at_path(key).node();
  }
  void Fail(const std::string& key, const std::string& what) {
    if (error.ok()) error = InvalidArgument(source + ": key '" + key + "': " + what);
  }
  void CollectKeys(const toml::table& t, const std::string& prefix, std::vector<std::string>& out) {
    for (const auto& [k, v] : t) {
      const std::string full =
          prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      if (const auto* sub = v.as_table()) {
        CollectKeys(*sub, full, out);
      } else {
        out.push_back(full);
      }
    }
  }
};

namespace {

Status ApplyOverride(toml::table& table, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return InvalidArgument("override '" + assignment + "' is not of the form section.key=value");
  }
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    // Not a TOML literal: take it as a bare string (paths, endpoints).
    parsed.insert_or_assign("v", value);
  }
  toml::table* cur = &table;
  size_t start = 0;
  while (true) {
    const auto dot = key.find('.', start);
    const std::string part =
        key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) return InvalidArgument("override key '" + key + "' has an empty part");
    if (dot == std::string::npos) {
      cur->insert_or_assign(part, *parsed.get("v"));
      return Status::Ok();
    }
    auto* node = cur->get(part);
    if (node == nullptr) {
      cur->insert_or_assign(part, toml::table{});
      node = cur->get(part);
    }
    if (!node->is_table())
      return InvalidArgument("override key '" + key + "': '" + part + "' is not a section");
    cur = node->as_table();
    start = dot + 1;
  }
}

}  // namespace

ConfigReader::ConfigReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConfigReader::ConfigReader(ConfigReader&&) noexcept = default;
ConfigReader& ConfigReader::operator=(ConfigReader&&) noexcept = default;
ConfigReader::~ConfigReader() = default;

Result<ConfigReader> ConfigReader::FromString(const std::string& text, const std::string& source,
                                              const std::vector<std::string>& overrides) {
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  try {
    impl->table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return InvalidArgument(source + ":" + std::to_string(e.source().begin.line) + ":" +
                           std::to_string(e.source().begin.column) + ": " +
                           std::string(e.description()));
  }
  for (const auto& o : overrides) SHOAL_RETURN_IF_ERROR(ApplyOverride(impl->table, o));
  return ConfigReader(std::move(impl));
}

Result<ConfigReader> ConfigReader::FromFile(const std::string& path,
                                            const std::vector<std::string>& overrides) {
  if (path.empty()) return FromString("", "<defaults>", overrides);
  auto text = ReadFile(path, 1 << 20);
  if (!text.ok()) return text.status().Annotate("config");
  return FromString(*text, path, overrides);
}

void ConfigReader::Read(const std::string& key, std::string& out) {
  const toml::node* n = impl_->Find(key);
  if (!n) return;
  if (auto v = n->value<std::string>()) {
    out = *v;
  } else {
    impl_->Fail(key, "expected a string");
  }
}

void ConfigReader::Read(const std::string& key, bool& out) {
  const toml::node* n = impl_->Find(key);
  if (!n) return;
  if (n->is_boolean()) {
    out = *n->value<bool>();
  } else {
    impl_->Fail(key, "expected true or false");
  }
}

void ConfigReader::Read(const std::string& key, double& out) {
  const toml::node* n = impl_->Find(key);
  if (!n) return;
  if (n->is_floating_point() || n->is_integer()) {
    out = *n->value<double>();
  } else {
    impl_->Fail(key, "expected a number");
  }
}

void ConfigReader::Read(const std::string& key, int64_t& out) {
  const toml::node* n = impl_->Find(key);
  if (!n) return;
  if (n->is_integer()) {
    out = *n->value<int64_t>();
  } else {
    impl_->Fail(key, "expected an integer");
  }
}

template <typename T>
void ConfigReader::ReadInt(const std::string& key, T& out) {
  int64_t v = static_cast<int64_t>(out);
  Read(key, v);
  const bool negative_ok = std::numeric_limits<T>::is_signed;
  if ((!negative_ok && v < 0) || v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
      (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max()))) {
    impl_->Fail(key, "value " + std::to_string(v) + " is out of range");
    return;
  }
  out = static_cast<T>(v);
}

void ConfigReader::Read(const std::string& key, int& out) { ReadInt(key, out); }
void ConfigReader::Read(const std::string& key, uint32_t& out) { ReadInt(key, out); }
void ConfigReader::Read(const std::string& key, uint64_t& out) { ReadInt(key, out); }

void ConfigReader::Read(const std::string& key, std::vector<int64_t>& out) {
  const toml::node* n = impl_->Find(key);
  if (!n) return;
  const auto* arr = n->as_array();
  if (!arr) {
    impl_->Fail(key, "expected an array of integers");
    return;
  }
  std::vector<int64_t> v;
  for (const auto& e : *arr) {
    if (!e.is_integer()) {
      impl_->Fail(key, "expected an array of integers");
      return;
    }
    v.push_back(*e.value<int64_t>());
  }
  out = std::move(v);
}

void ConfigReader::Read(const std::string& key, std::vector<std::string>& out) {
  const toml::node* n = impl_->Find(key);
  if (!n) return;
  const auto* arr = n->as_array();
  if (!arr) {
    impl_->Fail(key, "expected an array of strings");
    return;
  }
  std::vector<std::string> v;
  for (const auto& e : *arr) {
    if (!e.is_string()) {
      impl_->Fail(key, "expected an array of strings");
      return;
    }
    v.push_back(*e.value<std::string>());
  }
  out = std::move(v);
}

Status ConfigReader::Finish() const {
  if (!impl_->error.ok()) return impl_->error;
  std::vector<std::string> keys;
  impl_->CollectKeys(impl_->table, "", keys);
  std::string unknown;
  for (const auto& k : keys) {
    if (!impl_->read_keys.count(k)) unknown += (unknown.empty() ? "" : ", ") + k;
  }
  if (!unknown.empty()) return InvalidArgument(impl_->source + ": unknown key(s): " + unknown);
  return Status::Ok();
}

}  // namespace shoal
