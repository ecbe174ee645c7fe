#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "data/csv.h"
#include "data/idx.h"

namespace shoal::data {
namespace {

bool IsFile(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

std::string DimsText(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s;
}

// Copies the samples at `indices` (numel values each) from `from` to the end of `to`.
template <typename T>
void AppendRows(const std::vector<T>& from, const std::vector<int64_t>& indices, size_t numel,
                std::vector<T>& to) {
  if (from.empty()) return;
  to.reserve(to.size() + indices.size() * numel);
  for (int64_t i : indices) {
    const auto begin = from.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(i) * numel);
    to.insert(to.end(), begin, begin + static_cast<std::ptrdiff_t>(numel));
  }
}

// Moves the samples at ascending `indices` to the front of `v` and drops the rest.
template <typename T>
void KeepRows(std::vector<T>& v, const std::vector<int64_t>& indices, size_t numel) {
  if (v.empty()) return;
  size_t w = 0;
  for (int64_t i : indices) {
    const size_t r = static_cast<size_t>(i);
    if (r != w) {  // each sample moves only towards the front
      std::copy(v.begin() + static_cast<std::ptrdiff_t>(r * numel),
                v.begin() + static_cast<std::ptrdiff_t>((r + 1) * numel),
                v.begin() + static_cast<std::ptrdiff_t>(w * numel));
    }
    ++w;
  }
  v.resize(w * numel);
}

Dataset Subset(const Dataset& all, const std::vector<int64_t>& indices) {
  Dataset out;
  out.sample_shape = all.sample_shape;
  const size_t numel = static_cast<size_t>(all.sample_numel());
  AppendRows(all.pixels, indices, numel, out.pixels);
  AppendRows(all.features, indices, numel, out.features);
  out.labels.reserve(indices.size());
  for (int64_t i : indices) out.labels.push_back(all.labels[static_cast<size_t>(i)]);
  return out;
}

}  // namespace

PackedRows PackedRows::Pack(const uint8_t* data, int64_t rows, int64_t row_bytes) {
  PackedRows p;
  p.rows_ = rows;
  p.row_bytes_ = row_bytes;
  p.offsets_.reserve(static_cast<size_t>(rows) + 1);
  for (int64_t r = 0; r < rows; ++r) {
    p.offsets_.push_back(p.data_.size());
    const uint8_t* row = data + r * row_bytes;
    int64_t i = 0;
    while (i < row_bytes) {
      int64_t zeros = 0;
      while (i + zeros < row_bytes && zeros < 255 && row[i + zeros] == 0) ++zeros;
      i += zeros;
      int64_t literals = 0;
      while (i + literals < row_bytes && literals < 255 && row[i + literals] != 0) ++literals;
      p.data_.push_back(static_cast<uint8_t>(zeros));
      p.data_.push_back(static_cast<uint8_t>(literals));
      p.data_.insert(p.data_.end(), row + i, row + i + literals);
      i += literals;
    }
  }
  p.offsets_.push_back(p.data_.size());
  p.data_.shrink_to_fit();
  return p;
}

void PackedRows::Unpack(int64_t row, uint8_t* out) const {
  const uint8_t* in = data_.data() + offsets_[static_cast<size_t>(row)];
  const uint8_t* end = data_.data() + offsets_[static_cast<size_t>(row) + 1];
  uint8_t* o = out;
  while (in < end) {
    const size_t zeros = in[0], literals = in[1];
    in += 2;
    std::memset(o, 0, zeros);
    std::memcpy(o + zeros, in, literals);
    o += zeros + literals;
    in += literals;
  }
}

void Dataset::PackImages() {
  if (pixels.empty() || size() == 0) return;
  packed = PackedRows::Pack(pixels.data(), size(), sample_numel());
  std::vector<uint8_t>().swap(pixels);
}

int64_t Dataset::sample_numel() const {
  if (sample_shape.empty()) return 0;
  int64_t n = 1;
  for (int64_t d : sample_shape) n *= d;
  return n;
}

std::vector<float> Dataset::FloatFeatures() const {
  if (!is_images()) return features;
  std::vector<uint8_t> unpacked;
  if (is_packed()) {
    const int64_t n = packed.row_bytes();
    unpacked.resize(static_cast<size_t>(packed.rows() * n));
    for (int64_t r = 0; r < packed.rows(); ++r) packed.Unpack(r, unpacked.data() + r * n);
  }
  const std::vector<uint8_t>& bytes = is_packed() ? unpacked : pixels;
  std::vector<float> out(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) out[i] = static_cast<float>(bytes[i]) / 255.0f;
  return out;
}

int64_t Dataset::num_classes() const {
  if (labels.empty()) return 0;
  return *std::max_element(labels.begin(), labels.end()) + 1;
}

Result<std::string> FindIdxFile(const std::string& dir, const std::string& base) {
  const std::string plain = (std::filesystem::path(dir) / base).string();
  const std::string gz = plain + ".gz";
  if (IsFile(gz)) return gz;
  if (IsFile(plain)) return plain;
  return NotFound(dir + ": neither " + base + ".gz nor " + base + " exists");
}

Result<Dataset> LoadIdxDataset(const std::string& dir, const std::string& split, int64_t limit) {
  if (split != "train" && split != "t10k") {
    return InvalidArgument(dir + ": split is '" + split + "', expected 'train' or 't10k'");
  }
  if (limit < 0) {
    return InvalidArgument(dir + ": limit is " + std::to_string(limit) + ", expected >= 0");
  }
  SHOAL_ASSIGN_OR_RETURN(std::string images_path, FindIdxFile(dir, split + "-images-idx3-ubyte"));
  SHOAL_ASSIGN_OR_RETURN(std::string labels_path, FindIdxFile(dir, split + "-labels-idx1-ubyte"));
  SHOAL_ASSIGN_OR_RETURN(IdxArray images, ReadIdx(images_path));
  if (images.dims.size() != 3 || images.dims[1] < 1 || images.dims[2] < 1) {
    return InvalidArgument(images_path + ": dims are " + DimsText(images.dims) +
                           ", expected N x H x W images with H, W >= 1");
  }
  SHOAL_ASSIGN_OR_RETURN(IdxArray labels, ReadIdx(labels_path));
  if (labels.dims.size() != 1) {
    return InvalidArgument(labels_path + ": dims are " + DimsText(labels.dims) +
                           ", expected a 1-D array of N labels");
  }
  if (images.dims[0] != labels.dims[0]) {
    return InvalidArgument(images_path + " holds " + std::to_string(images.dims[0]) +
                           " images but " + labels_path + " holds " +
                           std::to_string(labels.dims[0]) + " labels");
  }
  int64_t n = images.dims[0];
  if (limit > 0) n = std::min(n, limit);
  if (n == 0) return InvalidArgument(images_path + ": contains no samples");

  Dataset ds;
  ds.sample_shape = {1, images.dims[1], images.dims[2]};
  images.data.resize(static_cast<size_t>(n * images.dims[1] * images.dims[2]));
  images.data.shrink_to_fit();  // with a limit, the rest of the file is not kept
  ds.pixels = std::move(images.data);
  ds.labels.assign(labels.data.begin(), labels.data.begin() + n);
  return ds;
}

Result<Dataset> LoadCsvDataset(const std::string& path, const std::string& label_column,
                               int64_t limit) {
  if (limit < 0) {
    return InvalidArgument(path + ": limit is " + std::to_string(limit) + ", expected >= 0");
  }
  SHOAL_ASSIGN_OR_RETURN(CsvTable table, ReadCsv(path, label_column));
  const int64_t f = static_cast<int64_t>(table.feature_names.size());
  int64_t n = static_cast<int64_t>(table.labels.size());
  if (limit > 0) n = std::min(n, limit);
  if (n == 0) return InvalidArgument(path + ": contains no data rows");
  Dataset ds;
  ds.sample_shape = {f};
  table.features.resize(static_cast<size_t>(n * f));
  table.labels.resize(static_cast<size_t>(n));
  ds.features = std::move(table.features);
  ds.labels = std::move(table.labels);
  return ds;
}

namespace {

// Sorted sample indices of the training and validation halves.
std::pair<std::vector<int64_t>, std::vector<int64_t>> SplitIndices(int64_t n, double fraction,
                                                                   uint64_t seed) {
  if (!(fraction > 0)) fraction = 0;  // also catches NaN
  if (fraction > 1) fraction = 1;
  const int64_t k = std::min<int64_t>(n, std::llround(fraction * static_cast<double>(n)));
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed);
  ShuffleIndices(order, rng);
  std::vector<int64_t> val(order.begin(), order.begin() + k);
  std::vector<int64_t> train(order.begin() + k, order.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {std::move(train), std::move(val)};
}

}  // namespace

std::pair<Dataset, Dataset> SplitValidation(const Dataset& all, double fraction, uint64_t seed) {
  auto [train, val] = SplitIndices(all.size(), fraction, seed);
  return {Subset(all, train), Subset(all, val)};
}

std::pair<Dataset, Dataset> SplitValidation(Dataset&& all, double fraction, uint64_t seed) {
  auto [train, val] = SplitIndices(all.size(), fraction, seed);
  Dataset held_out = Subset(all, val);
  const size_t numel = static_cast<size_t>(all.sample_numel());
  KeepRows(all.pixels, train, numel);  // training indices are ascending
  KeepRows(all.features, train, numel);
  KeepRows(all.labels, train, 1);
  // The held-out rows' space would stay allocated (and resident) behind the training rows
  // for the whole run: 1.6 MB of a 20k-image silo at the default 10%.
  all.pixels.shrink_to_fit();
  all.features.shrink_to_fit();
  all.labels.shrink_to_fit();
  return {std::move(all), std::move(held_out)};
}

uint64_t UniformIndex(std::mt19937_64& rng, uint64_t n) {
  if (n == 0) return 0;
  // Reject the lowest (2^64 mod n) values so every residue is equally likely.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % n;
  }
}

void ShuffleIndices(std::vector<int64_t>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(UniformIndex(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

const std::vector<std::string>& DataFormats() {
  static const std::vector<std::string> kFormats = {"idx", "csv"};
  return kFormats;
}

bool IsDataFormat(const std::string& format) {
  for (const auto& f : DataFormats()) {
    if (f == format) return true;
  }
  return false;
}

std::string DataFormatList() {
  std::string list;
  for (const auto& f : DataFormats()) list += (list.empty() ? "" : ", ") + f;
  return list;
}

Result<Dataset> LoadDataset(const DataSource& source) {
  if (source.format == "idx") return LoadIdxDataset(source.path, source.split, source.limit);
  if (source.format == "csv") return LoadCsvDataset(source.path, source.label_column, source.limit);
  return InvalidArgument("unknown data format '" + source.format + "' (known: " + DataFormatList() +
                         ")");
}

}  // namespace shoal::data
