// A model's parameters without LibTorch: named float32 tensors stored back to back in one flat
// buffer, in the order of the ModelSpec. This is what travels on the wire, what FedAvg folds and
// what the model store writes. Conversion to and from torch modules lives in nn/.
//
// Version files (".shw") are: magic "SHOALW01", u64 spec_len, spec JSON, u64 data_len, raw
// little-endian float32 data, then the 32-byte SHA-256 of everything before it. The SHA-256 of
// spec JSON + data is the version's hash. Loading verifies magic, lengths and checksum.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/sha256.h"
#include "base/status.h"

namespace shoal::model {

enum class DType : uint8_t { kFloat32 = 1 };

// Limits on a model description, checked before anything is allocated from it.
struct SpecLimits {
  static constexpr size_t kMaxTensors = 4096;
  static constexpr size_t kMaxRank = 8;
  static constexpr size_t kMaxNameBytes = 256;
  static constexpr int64_t kMaxTotalElements = int64_t{1} << 33;  // 8G floats (32 GiB)
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;

  int64_t numel() const;
  bool operator==(const TensorSpec& o) const {
    return name == o.name && dtype == o.dtype && shape == o.shape;
  }
};

struct ModelSpec {
  std::vector<TensorSpec> tensors;

  int64_t total_numel() const;
  int64_t total_bytes() const { return total_numel() * 4; }
  // Checks counts, ranks, names (non-empty, unique) and the element total against SpecLimits.
  Status Validate() const;
  // First difference with `other` in words ("tensor 3 'fc1.weight': shape [200,784] vs [10,784]"),
  // or "" when equal.
  std::string Diff(const ModelSpec& other) const;
  // Where flat element `index` lies, for messages: "tensor 'fc1.weight' element 5" (the
  // element's index within its tensor), or "element N" when the spec has no such element.
  std::string ElementName(int64_t index) const;
  bool operator==(const ModelSpec& o) const { return tensors == o.tensors; }

  nlohmann::json ToJson() const;
  static Result<ModelSpec> FromJson(const nlohmann::json& j);
};

struct Weights {
  ModelSpec spec;
  std::vector<float> data;  // spec.total_numel() values

  // Offset (in elements) of tensor i in `data`.
  int64_t Offset(size_t tensor_index) const;
  // SHA-256 over the canonical spec JSON and the raw data: the version hash.
  Digest Hash() const;
  // Index of the first non-finite value, or -1.
  int64_t FirstNonFinite() const;
};

// Serializes to the ".shw" format described above.
std::string EncodeWeightsFile(const Weights& w);
Result<Weights> DecodeWeightsFile(const std::string& bytes, const std::string& path_for_errors);

Status SaveWeights(const std::string& path, const Weights& w);
Result<Weights> LoadWeights(const std::string& path);

std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace shoal::model
