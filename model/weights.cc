#include "model/weights.h"

#include <cmath>
#include <cstring>
#include <set>

#include "base/file_util.h"

namespace shoal::model {
namespace {

constexpr char kMagic[8] = {'S', 'H', 'O', 'A', 'L', 'W', '0', '1'};

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t ModelSpec::total_numel() const {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

Status ModelSpec::Validate() const {
  if (tensors.empty()) return InvalidArgument("model has no tensors");
  if (tensors.size() > SpecLimits::kMaxTensors) {
    return InvalidArgument("model has " + std::to_string(tensors.size()) + " tensors, limit " +
                           std::to_string(SpecLimits::kMaxTensors));
  }
  std::set<std::string> names;
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const std::string where = "tensor " + std::to_string(i) + " '" + t.name + "'";
    if (t.name.empty() || t.name.size() > SpecLimits::kMaxNameBytes) {
      return InvalidArgument(where + ": name must have 1.." +
                             std::to_string(SpecLimits::kMaxNameBytes) + " bytes");
    }
    if (!names.insert(t.name).second) return InvalidArgument(where + ": duplicate name");
    if (t.dtype != DType::kFloat32) return InvalidArgument(where + ": unsupported dtype");
    if (t.shape.size() > SpecLimits::kMaxRank) return InvalidArgument(where + ": rank too large");
    int64_t n = 1;
    for (int64_t d : t.shape) {
      if (d <= 0 || d > SpecLimits::kMaxTotalElements) {
        return InvalidArgument(where + ": bad dimension in shape " + ShapeString(t.shape));
      }
      if (n > SpecLimits::kMaxTotalElements / d) {  // n * d would pass the limit (or overflow)
        return InvalidArgument(where + ": too many elements");
      }
      n *= d;
    }
    total += n;
    if (total > SpecLimits::kMaxTotalElements) {
      return InvalidArgument("model has more than " +
                             std::to_string(SpecLimits::kMaxTotalElements) + " elements");
    }
  }
  return Status::Ok();
}

std::string ModelSpec::Diff(const ModelSpec& other) const {
  if (tensors.size() != other.tensors.size()) {
    return "tensor count " + std::to_string(tensors.size()) + " vs " +
           std::to_string(other.tensors.size());
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& a = tensors[i];
    const auto& b = other.tensors[i];
    const std::string where = "tensor " + std::to_string(i) + " '" + a.name + "'";
    if (a.name != b.name) return where + ": name vs '" + b.name + "'";
    if (a.dtype != b.dtype) return where + ": dtype differs";
    if (a.shape != b.shape)
      return where + ": shape " + ShapeString(a.shape) + " vs " + ShapeString(b.shape);
  }
  return "";
}

std::string ModelSpec::ElementName(int64_t index) const {
  int64_t off = 0;
  for (const auto& t : tensors) {
    const int64_t n = t.numel();
    if (index >= off && index - off < n) {
      return "tensor '" + t.name + "' element " + std::to_string(index - off);
    }
    off += n;
  }
  return "element " + std::to_string(index);
}

nlohmann::json ModelSpec::ToJson() const {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& t : tensors) {
    arr.push_back({{"name", t.name}, {"dtype", "float32"}, {"shape", t.shape}});
  }
  return {{"tensors", arr}};
}

Result<ModelSpec> ModelSpec::FromJson(const nlohmann::json& j) {
  ModelSpec spec;
  try {
    const auto& arr = j.at("tensors");
    if (!arr.is_array() || arr.size() > SpecLimits::kMaxTensors) {
      return Corrupt("model spec: 'tensors' must be an array of at most " +
                     std::to_string(SpecLimits::kMaxTensors));
    }
    for (const auto& t : arr) {
      TensorSpec ts;
      ts.name = t.at("name").get<std::string>();
      if (t.at("dtype").get<std::string>() != "float32") {
        return Corrupt("model spec: tensor '" + ts.name + "' has unsupported dtype");
      }
      const auto& shape = t.at("shape");
      if (!shape.is_array() || shape.size() > SpecLimits::kMaxRank) {
        return Corrupt("model spec: tensor '" + ts.name + "' has a bad shape");
      }
      for (const auto& d : shape) {
        // Only JSON integers: a float such as 1e300 would be cast to int64 (undefined
        // behaviour; found by fuzz/weights_fuzz) and 2.5 silently truncated.
        if (!d.is_number_integer()) {
          return Corrupt("model spec: tensor '" + ts.name + "' has a non-integer dimension");
        }
        ts.shape.push_back(d.get<int64_t>());
      }
      spec.tensors.push_back(std::move(ts));
    }
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(std::string("model spec: ") + e.what());
  }
  Status st = spec.Validate();
  if (!st.ok()) return Corrupt("model spec: " + st.message());
  return spec;
}

int64_t Weights::Offset(size_t tensor_index) const {
  int64_t off = 0;
  for (size_t i = 0; i < tensor_index; ++i) off += spec.tensors[i].numel();
  return off;
}

Digest Weights::Hash() const {
  Sha256 h;
  const std::string js = spec.ToJson().dump();
  h.Update(js.data(), js.size());
  h.Update(data.data(), data.size() * sizeof(float));
  return h.Finish();
}

int64_t Weights::FirstNonFinite() const {
  for (size_t i = 0; i < data.size(); ++i) {
    if (!std::isfinite(data[i])) return static_cast<int64_t>(i);
  }
  return -1;
}

std::string EncodeWeightsFile(const Weights& w) {
  static_assert(sizeof(float) == 4, "float32 required");
  const std::string js = w.spec.ToJson().dump();
  const size_t data_bytes = w.data.size() * sizeof(float);
  std::string out;
  out.reserve(8 + 8 + js.size() + 8 + data_bytes + 32);
  out.append(kMagic, sizeof(kMagic));
  PutU64(out, js.size());
  out += js;
  PutU64(out, data_bytes);
  out.append(reinterpret_cast<const char*>(w.data.data()), data_bytes);
  Digest d = Sha256::Of(out.data(), out.size());
  out.append(reinterpret_cast<const char*>(d.data()), d.size());
  return out;
}

Result<Weights> DecodeWeightsFile(const std::string& bytes, const std::string& path) {
  const size_t n = bytes.size();
  if (n < 8 + 8 + 8 + 32 || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    return Corrupt(path + ": not a Shoal weights file (bad magic or too short)");
  }
  Digest stored;
  std::memcpy(stored.data(), bytes.data() + n - 32, 32);
  if (Sha256::Of(bytes.data(), n - 32) != stored) {
    return Corrupt(path + ": checksum mismatch (file is torn or corrupt)");
  }
  const uint64_t spec_len = GetU64(bytes.data() + 8);
  if (spec_len > n - 8 - 8 - 8 - 32) return Corrupt(path + ": spec length exceeds file size");
  nlohmann::json js = nlohmann::json::parse(bytes.begin() + 16, bytes.begin() + 16 + spec_len,
                                            nullptr, /*allow_exceptions=*/false);
  if (js.is_discarded()) return Corrupt(path + ": spec is not valid JSON");
  auto spec = ModelSpec::FromJson(js);
  if (!spec.ok()) return spec.status().Annotate(path);
  const size_t data_off = 16 + spec_len + 8;
  const uint64_t data_len = GetU64(bytes.data() + 16 + spec_len);
  if (data_len != static_cast<uint64_t>(spec->total_bytes()) || data_off + data_len + 32 != n) {
    return Corrupt(path + ": data length " + std::to_string(data_len) +
                   " does not match the spec (" + std::to_string(spec->total_bytes()) + " bytes)");
  }
  Weights w;
  w.spec = std::move(spec).value();
  w.data.resize(data_len / 4);
  std::memcpy(w.data.data(), bytes.data() + data_off, data_len);
  return w;
}

Status SaveWeights(const std::string& path, const Weights& w) {
  return WriteFileAtomic(path, EncodeWeightsFile(w));
}

Result<Weights> LoadWeights(const std::string& path) {
  SHOAL_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return DecodeWeightsFile(bytes, path);
}

}  // namespace shoal::model
