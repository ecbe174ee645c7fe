// Tabular CSV datasets: a required header row, comma-separated fields (no quoting), numeric
// feature columns and one label column of non-negative integers. Surrounding spaces/tabs are
// ignored, LF and CRLF line endings are accepted, blank lines are skipped, and a UTF-8 BOM before
// the header is dropped.
//
// Errors (every message names the file, and "path:line:column" with the column header for
// problems inside a row; lines and columns are 1-based, columns count bytes):
//   NotFound        the file does not exist.
//   InvalidArgument empty file, no label column, duplicate label column, no feature columns,
//                   ragged row, empty / non-numeric / NaN / Inf / out-of-float-range feature,
//                   label that is not an integer in 0..kCsvMaxLabel, file or column count over
//                   the limits below.
//   IoError         the operating system refused to read the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal::data {

inline constexpr uint64_t kCsvMaxBytes = uint64_t{1} << 31;  // 2 GiB
inline constexpr int64_t kCsvMaxColumns = 100000;
inline constexpr int64_t kCsvMaxLabel = 65535;  // labels index class histograms downstream

struct CsvTable {
  std::vector<std::string> feature_names;  // header order, label column removed
  std::vector<float> features;             // row-major N x F, F = feature_names.size()
  std::vector<int64_t> labels;             // N
};

// The unparsed text of a validated CSV file, for tools that copy rows verbatim.
struct CsvLines {
  std::string header;              // header line as in the file (BOM included), no line ending
  std::vector<std::string> lines;  // non-blank data lines as in the file, without line endings
  std::vector<int64_t> labels;     // parsed label of each data line
  std::string line_ending = "\n";  // "\r\n" when the header line ended that way
};

// Reads and validates a whole CSV file. A header with no data rows gives an empty table.
Result<CsvTable> ReadCsv(const std::string& path, const std::string& label_column);

// Same validation as ReadCsv, but keeps each data line's text instead of the parsed features.
Result<CsvLines> ReadCsvLines(const std::string& path, const std::string& label_column);

}  // namespace shoal::data
