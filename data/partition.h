// Splitting a dataset into per-silo folders for federated experiments: IID (seeded shuffle,
// near-equal split) or label-skewed Dirichlet(alpha) partitions, deterministic for a seed.
//
// Errors:
//   InvalidArgument bad options (workers < 1 or > number of samples, alpha <= 0 or not finite for
//                   Dirichlet, negative limit, negative labels), a source that is neither a
//                   directory nor a .csv file, unknown scheme name, and whatever the readers
//                   reject (messages name the file).
//   NotFound        missing source or missing train-images/train-labels files.
//   Corrupt         broken IDX input (see data/idx.h).
//   IoError         directories or files under `out` cannot be created or written.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal::data {

enum class PartitionScheme { kIid, kDirichlet };

// "iid" / "dirichlet".
const char* PartitionSchemeName(PartitionScheme scheme);
Result<PartitionScheme> ParsePartitionScheme(const std::string& name);

struct PartitionOptions {
  int workers = 3;
  PartitionScheme scheme = PartitionScheme::kIid;
  double alpha = 0.5;  // Dirichlet concentration; smaller is more skewed
  uint64_t seed = 0;
  int64_t limit = 0;  // 0 = all samples; else use only the first `limit`
};

// Which sample indices each worker gets (only indices < limit when limit > 0).
// IID: seeded shuffle, then a contiguous split whose sizes differ by at most 1.
// Dirichlet: per class (ascending), shuffle the class's indices, draw p ~ Dir(alpha) over workers
// (std::gamma_distribution on std::mt19937_64(seed)) and cut the class at the cumulative
// proportions; afterwards every empty worker receives one random sample from the currently
// largest worker. Indices within each worker are sorted ascending.
Result<std::vector<std::vector<int64_t>>> PartitionIndices(const std::vector<int64_t>& labels,
                                                           const PartitionOptions& opts);

struct SiloReport {
  std::string dir;
  int64_t size = 0;
  std::vector<int64_t> label_histogram;  // same length for every silo: max label used + 1
};

// source: a directory holding train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]
// (gz preferred when both exist; each output file keeps its input's name and compression), or a
// .csv file (rows keep their original text; label_column names the label). Writes
// <out>/silo-1 ... <out>/silo-N (CSV: <out>/silo-i/data.csv), creating directories as needed and
// replacing files atomically. In IDX silos, a leftover copy of an output file with the other
// compression is deleted so loaders that prefer .gz cannot pick up stale data.
Result<std::vector<SiloReport>> PartitionDataset(const std::string& source, const std::string& out,
                                                 const PartitionOptions& opts,
                                                 const std::string& label_column = "label");

}  // namespace shoal::data
