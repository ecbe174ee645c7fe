#include "data/partition.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <string_view>
#include <system_error>

#include "base/file_util.h"
#include "data/csv.h"
#include "data/dataset.h"
#include "data/idx.h"

namespace shoal::data {
namespace {

namespace fs = std::filesystem;

constexpr char kImagesBase[] = "train-images-idx3-ubyte";
constexpr char kLabelsBase[] = "train-labels-idx1-ubyte";
constexpr char kCsvName[] = "data.csv";

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix.data(), suffix.size()) == 0;
}

std::vector<std::vector<int64_t>> SplitIid(int64_t n, int workers, std::mt19937_64& rng) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  ShuffleIndices(order, rng);
  std::vector<std::vector<int64_t>> parts(static_cast<size_t>(workers));
  const int64_t base = n / workers;
  const int64_t extra = n % workers;
  int64_t start = 0;
  for (int w = 0; w < workers; ++w) {
    const int64_t len = base + (w < extra ? 1 : 0);
    parts[static_cast<size_t>(w)].assign(order.begin() + start, order.begin() + start + len);
    start += len;
  }
  return parts;
}

std::vector<std::vector<int64_t>> SplitDirichlet(const std::vector<int64_t>& labels, int64_t n,
                                                 int workers, double alpha, std::mt19937_64& rng) {
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (int64_t i = 0; i < n; ++i) by_class[labels[static_cast<size_t>(i)]].push_back(i);
  std::vector<std::vector<int64_t>> parts(static_cast<size_t>(workers));
  std::gamma_distribution<double> gamma(alpha, 1.0);
  std::vector<double> p(static_cast<size_t>(workers));
  for (auto& [label, idx] : by_class) {
    ShuffleIndices(idx, rng);
    double sum = 0;
    for (double& x : p) {
      x = gamma(rng);
      sum += x;
    }
    if (!(sum > 0) || !std::isfinite(sum)) {  // every draw underflowed: give the class to one
      std::fill(p.begin(), p.end(), 0.0);
      p[static_cast<size_t>(UniformIndex(rng, static_cast<uint64_t>(workers)))] = 1.0;
      sum = 1.0;
    }
    const size_t count = idx.size();
    double cum = 0;
    size_t start = 0;
    for (int w = 0; w < workers; ++w) {
      cum += p[static_cast<size_t>(w)];
      size_t end = count;
      if (w + 1 < workers) {
        const double cut = std::floor(cum / sum * static_cast<double>(count));
        end = std::clamp(static_cast<size_t>(std::max(cut, 0.0)), start, count);
      }
      auto& part = parts[static_cast<size_t>(w)];
      part.insert(part.end(), idx.begin() + static_cast<std::ptrdiff_t>(start),
                  idx.begin() + static_cast<std::ptrdiff_t>(end));
      start = end;
    }
  }
  // n >= workers, so while some worker is empty the largest holds at least two samples.
  for (int w = 0; w < workers; ++w) {
    auto& empty = parts[static_cast<size_t>(w)];
    if (!empty.empty()) continue;
    auto largest = std::max_element(parts.begin(), parts.end(), [](const auto& a, const auto& b) {
      return a.size() < b.size();
    });
    const size_t j = static_cast<size_t>(UniformIndex(rng, largest->size()));
    empty.push_back((*largest)[j]);
    largest->erase(largest->begin() + static_cast<std::ptrdiff_t>(j));
  }
  return parts;
}

std::vector<int64_t> Histogram(const std::vector<int64_t>& labels,
                               const std::vector<int64_t>& indices, int64_t num_classes) {
  std::vector<int64_t> h(static_cast<size_t>(num_classes), 0);
  for (int64_t i : indices) ++h[static_cast<size_t>(labels[static_cast<size_t>(i)])];
  return h;
}

std::vector<SiloReport> MakeReports(const std::vector<std::string>& dirs,
                                    const std::vector<std::vector<int64_t>>& parts,
                                    const std::vector<int64_t>& labels) {
  int64_t num_classes = 0;
  for (const auto& part : parts) {
    for (int64_t i : part) num_classes = std::max(num_classes, labels[static_cast<size_t>(i)] + 1);
  }
  std::vector<SiloReport> reports;
  for (size_t w = 0; w < parts.size(); ++w) {
    reports.push_back(SiloReport{dirs[w], static_cast<int64_t>(parts[w].size()),
                                 Histogram(labels, parts[w], num_classes)});
  }
  return reports;
}

// Deletes `path` if it exists (a stale copy with the other compression).
Status RemoveStale(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) return IoError(path + ": cannot remove stale file: " + ec.message());
  return Status::Ok();
}

Status WriteIdxSilo(const std::string& dir, const std::string& src_path, const IdxArray& all,
                    const std::vector<int64_t>& indices) {
  const size_t per_sample =
      all.dims[0] == 0 ? 0 : all.data.size() / static_cast<size_t>(all.dims[0]);
  IdxArray part;
  part.type_code = all.type_code;
  part.dims = all.dims;
  part.dims[0] = static_cast<int64_t>(indices.size());
  part.data.reserve(indices.size() * per_sample);
  for (int64_t i : indices) {
    const auto begin =
        all.data.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(i) * per_sample);
    part.data.insert(part.data.end(), begin, begin + static_cast<std::ptrdiff_t>(per_sample));
  }
  const std::string name = fs::path(src_path).filename().string();
  const bool gz = EndsWith(name, ".gz");
  const std::string dest = (fs::path(dir) / name).string();
  SHOAL_RETURN_IF_ERROR(WriteIdx(dest, part, gz));
  return RemoveStale(gz ? dest.substr(0, dest.size() - 3) : dest + ".gz");
}

Result<std::vector<SiloReport>> PartitionIdxDir(const std::string& source, const std::string& out,
                                                const PartitionOptions& opts) {
  SHOAL_ASSIGN_OR_RETURN(std::string images_path, FindIdxFile(source, kImagesBase));
  SHOAL_ASSIGN_OR_RETURN(std::string labels_path, FindIdxFile(source, kLabelsBase));
  SHOAL_ASSIGN_OR_RETURN(IdxArray images, ReadIdx(images_path));
  SHOAL_ASSIGN_OR_RETURN(IdxArray label_array, ReadIdx(labels_path));
  if (label_array.dims.size() != 1) {
    return InvalidArgument(labels_path + ": has " + std::to_string(label_array.dims.size()) +
                           " dims, expected a 1-D array of labels");
  }
  if (images.dims[0] != label_array.dims[0]) {
    return InvalidArgument(images_path + " holds " + std::to_string(images.dims[0]) +
                           " samples but " + labels_path + " holds " +
                           std::to_string(label_array.dims[0]) + " labels");
  }
  const std::vector<int64_t> labels(label_array.data.begin(), label_array.data.end());
  auto partition = PartitionIndices(labels, opts);
  if (!partition.ok()) return partition.status().Annotate(source);
  const std::vector<std::vector<int64_t>>& parts = partition.value();
  std::vector<std::string> dirs;
  for (size_t w = 0; w < parts.size(); ++w) {
    const std::string dir = (fs::path(out) / ("silo-" + std::to_string(w + 1))).string();
    SHOAL_RETURN_IF_ERROR(MakeDirs(dir));
    SHOAL_RETURN_IF_ERROR(WriteIdxSilo(dir, images_path, images, parts[w]));
    SHOAL_RETURN_IF_ERROR(WriteIdxSilo(dir, labels_path, label_array, parts[w]));
    dirs.push_back(dir);
  }
  return MakeReports(dirs, parts, labels);
}

Result<std::vector<SiloReport>> PartitionCsv(const std::string& source, const std::string& out,
                                             const PartitionOptions& opts,
                                             const std::string& label_column) {
  SHOAL_ASSIGN_OR_RETURN(CsvLines csv, ReadCsvLines(source, label_column));
  auto partition = PartitionIndices(csv.labels, opts);
  if (!partition.ok()) return partition.status().Annotate(source);
  const std::vector<std::vector<int64_t>>& parts = partition.value();
  std::vector<std::string> dirs;
  for (size_t w = 0; w < parts.size(); ++w) {
    const std::string dir = (fs::path(out) / ("silo-" + std::to_string(w + 1))).string();
    SHOAL_RETURN_IF_ERROR(MakeDirs(dir));
    std::vector<std::string_view> pieces;
    pieces.reserve(2 + 2 * parts[w].size());
    pieces.push_back(csv.header);
    pieces.push_back(csv.line_ending);
    for (int64_t i : parts[w]) {
      pieces.push_back(csv.lines[static_cast<size_t>(i)]);
      pieces.push_back(csv.line_ending);
    }
    SHOAL_RETURN_IF_ERROR(WriteFileAtomic((fs::path(dir) / kCsvName).string(), pieces));
    dirs.push_back(dir);
  }
  return MakeReports(dirs, parts, csv.labels);
}

}  // namespace

const char* PartitionSchemeName(PartitionScheme scheme) {
  switch (scheme) {
    case PartitionScheme::kIid:
      return "iid";
    case PartitionScheme::kDirichlet:
      return "dirichlet";
  }
  return "unknown";
}

Result<PartitionScheme> ParsePartitionScheme(const std::string& name) {
  if (name == "iid") return PartitionScheme::kIid;
  if (name == "dirichlet") return PartitionScheme::kDirichlet;
  return InvalidArgument("unknown partition scheme '" + name + "', expected 'iid' or 'dirichlet'");
}

Result<std::vector<std::vector<int64_t>>> PartitionIndices(const std::vector<int64_t>& labels,
                                                           const PartitionOptions& opts) {
  if (opts.limit < 0) {
    return InvalidArgument("limit is " + std::to_string(opts.limit) + ", expected >= 0");
  }
  const int64_t total = static_cast<int64_t>(labels.size());
  const int64_t n = opts.limit > 0 ? std::min(total, opts.limit) : total;
  if (opts.workers < 1) {
    return InvalidArgument("workers is " + std::to_string(opts.workers) + ", expected >= 1");
  }
  if (opts.workers > n) {
    return InvalidArgument("workers is " + std::to_string(opts.workers) + " but there are only " +
                           std::to_string(n) + " samples to partition; every worker needs one");
  }
  if (opts.scheme == PartitionScheme::kDirichlet &&
      !(opts.alpha > 0 && std::isfinite(opts.alpha))) {
    return InvalidArgument("alpha is " + std::to_string(opts.alpha) +
                           ", expected a finite value > 0 for the Dirichlet scheme");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (labels[static_cast<size_t>(i)] < 0) {
      return InvalidArgument("label of sample " + std::to_string(i) + " is " +
                             std::to_string(labels[static_cast<size_t>(i)]) + ", expected >= 0");
    }
  }
  std::mt19937_64 rng(opts.seed);
  std::vector<std::vector<int64_t>> parts;
  switch (opts.scheme) {
    case PartitionScheme::kIid:
      parts = SplitIid(n, opts.workers, rng);
      break;
    case PartitionScheme::kDirichlet:
      parts = SplitDirichlet(labels, n, opts.workers, opts.alpha, rng);
      break;
  }
  for (auto& part : parts) std::sort(part.begin(), part.end());
  return parts;
}

Result<std::vector<SiloReport>> PartitionDataset(const std::string& source, const std::string& out,
                                                 const PartitionOptions& opts,
                                                 const std::string& label_column) {
  std::error_code ec;
  const fs::file_status st = fs::status(source, ec);
  if (ec || !fs::exists(st)) {
    if (!ec || ec == std::errc::no_such_file_or_directory) {
      return NotFound(source + ": no such file or directory");
    }
    return IoError(source + ": " + ec.message());
  }
  if (fs::is_directory(st)) return PartitionIdxDir(source, out, opts);
  std::string ext = fs::path(source).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (fs::is_regular_file(st) && ext == ".csv") {
    return PartitionCsv(source, out, opts, label_column);
  }
  return InvalidArgument(source +
                         ": expected a directory with train-images/train-labels IDX "
                         "files or a .csv file");
}

}  // namespace shoal::data
