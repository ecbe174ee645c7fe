// The in-memory dataset a worker trains on and the coordinator evaluates on, loaded from IDX
// image/label pairs (MNIST layout) or a CSV table, plus the seeded shuffling helpers that make
// splits and partitions reproducible across platforms (std::shuffle is library-defined).
//
// Errors (messages name the file or directory):
//   NotFound        no IDX file (plain or .gz) for the split, or no CSV file.
//   InvalidArgument bad split name, negative limit, image/label count mismatch, wrong dims,
//                   a dataset with no samples, and everything ReadCsv rejects.
//   Corrupt / IoError from ReadIdx / ReadCsv.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace shoal::data {

// Image rows kept compressed in memory, for a silo a worker holds for a whole run. Each row is
// a sequence of (zero run, literal run, literal bytes) tokens, runs of at most 255: Fashion-MNIST
// is half background zeros, so 18k training images take 8.8 MB instead of 14.1. Unpacking a row is
// a copy loop, done for the rows of each batch as it is formed.
class PackedRows {
 public:
  PackedRows() = default;
  // Codes `rows` rows of `row_bytes` bytes each, read from `data`.
  static PackedRows Pack(const uint8_t* data, int64_t rows, int64_t row_bytes);
  int64_t rows() const { return rows_; }
  int64_t row_bytes() const { return row_bytes_; }
  // Memory held, in bytes.
  size_t bytes() const { return data_.size() + offsets_.size() * sizeof(uint64_t); }
  // Writes row `row` (0 <= row < rows()) to out[0, row_bytes()).
  void Unpack(int64_t row, uint8_t* out) const;

 private:
  std::vector<uint8_t> data_;
  std::vector<uint64_t> offsets_;  // rows() + 1 entries: where each row's tokens start
  int64_t rows_ = 0;
  int64_t row_bytes_ = 0;
};

// Samples are stored as loaded: IDX images keep their bytes (a quarter of the memory of floats:
// 15.7 MB instead of 63 MB for 20,000 Fashion-MNIST images) and become pixel / 255 as float only
// batch by batch (nn::ModelInput); CSV rows are floats. Exactly one of `pixels` and `features`
// holds N * prod(sample_shape) values.
struct Dataset {
  std::vector<int64_t> sample_shape;  // {1,H,W} for IDX images, {F} for CSV
  std::vector<uint8_t> pixels;        // IDX images: N * prod(sample_shape) bytes, model sees x/255
  std::vector<float> features;        // CSV rows: N * prod(sample_shape) floats
  std::vector<int64_t> labels;        // N
  // IDX images after PackImages(): the rows of `pixels`, compressed (`pixels` is then empty).
  PackedRows packed;
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  bool is_images() const { return !pixels.empty() || packed.rows() > 0; }
  bool is_packed() const { return packed.rows() > 0; }
  // Moves the image rows into `packed` (no-op for CSV rows or an empty dataset). For a dataset
  // kept as is from then on: Subset / SplitValidation / partitioning read `pixels`.
  void PackImages();
  // Every sample's values as the model sees them (pixels / 255.0f, or the features): a copy,
  // for tests and tools; training and evaluation convert batch by batch instead.
  std::vector<float> FloatFeatures() const;
  // prod(sample_shape); 0 when sample_shape is empty.
  int64_t sample_numel() const;
  // max label + 1; 0 when empty.
  int64_t num_classes() const;
};

// Returns "<dir>/<base>.gz" if it exists, else "<dir>/<base>" if it exists, else NotFound.
Result<std::string> FindIdxFile(const std::string& dir, const std::string& base);

// Reads `<dir>/<split>-images-idx3-ubyte[.gz]` and `<dir>/<split>-labels-idx1-ubyte[.gz]`
// (gz preferred if both exist; split is "train" or "t10k"). Images must be N x H x W u8 and
// labels N u8. limit > 0 keeps only the first `limit` samples.
Result<Dataset> LoadIdxDataset(const std::string& dir, const std::string& split, int64_t limit = 0);

// Reads a CSV table (see data/csv.h); sample_shape is {F}. limit > 0 keeps the first rows.
Result<Dataset> LoadCsvDataset(const std::string& path, const std::string& label_column,
                               int64_t limit = 0);

// Where a dataset comes from: a worker's silo (data.*) or the coordinator's held-out set
// (eval.*). A new data format is a loader in data/ plus its name in DataFormats() and one case
// in LoadDataset; the worker, the central evaluator and the config checks then know it.
struct DataSource {
  std::string format;        // one of DataFormats()
  std::string path;          // idx: directory; csv: file
  std::string split;         // idx only: file prefix (train, t10k)
  std::string label_column;  // csv only
  int64_t limit = 0;         // the first `limit` samples only; 0 = all
};

// The formats LoadDataset reads: idx, csv.
const std::vector<std::string>& DataFormats();
bool IsDataFormat(const std::string& format);
// "idx, csv": for error messages.
std::string DataFormatList();

// Loads `source` with its format's loader; InvalidArgument naming the known formats for any
// other format.
Result<Dataset> LoadDataset(const DataSource& source);

// Deterministic split: shuffles indices with std::mt19937_64(seed) (ShuffleIndices) and moves
// round(fraction * N) of them into the second dataset (validation). Both halves keep the
// original sample order. `all` must be consistent (pixels or features hold size() * sample_numel(),
// as every loader here guarantees). fraction is meant to be in [0, 1); values outside [0, 1] (or
// NaN) are clamped (NaN counts as 0).
std::pair<Dataset, Dataset> SplitValidation(const Dataset& all, double fraction, uint64_t seed);
// The same split, reusing `all`'s buffers for the training half (compacted in place), so a
// silo is never held twice: peak memory is the silo plus its validation part.
std::pair<Dataset, Dataset> SplitValidation(Dataset&& all, double fraction, uint64_t seed);

// Unbiased integer in [0, n) from the raw 64-bit output of `rng`; n must be > 0 (0 gives 0).
uint64_t UniformIndex(std::mt19937_64& rng, uint64_t n);

// Fisher-Yates shuffle driven only by UniformIndex, so the result is the same on every platform.
void ShuffleIndices(std::vector<int64_t>& v, std::mt19937_64& rng);

}  // namespace shoal::data
