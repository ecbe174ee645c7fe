#include "data/csv.h"

#include <cerrno>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string_view>

#include "base/file_util.h"

namespace shoal::data {
namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";
constexpr size_t kMaxQuotedValue = 40;

std::string Quote(std::string_view s) {
  if (s.size() > kMaxQuotedValue) return "'" + std::string(s.substr(0, kMaxQuotedValue)) + "...'";
  return "'" + std::string(s) + "'";
}

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

// One field of a line: its trimmed text and the 1-based byte column where that text starts.
struct Field {
  std::string_view text;
  int64_t column;
};

// An all-blank field reports the column where the field starts.
Field MakeField(std::string_view line, size_t begin, size_t end) {
  size_t start = begin;
  while (start < end && IsBlank(line[start])) ++start;
  size_t stop = end;
  while (stop > start && IsBlank(line[stop - 1])) --stop;
  if (start == stop) return Field{line.substr(begin, 0), static_cast<int64_t>(begin) + 1};
  return Field{line.substr(start, stop - start), static_cast<int64_t>(start) + 1};
}

bool IsBlankLine(std::string_view line) {
  for (char c : line) {
    if (!IsBlank(c)) return false;
  }
  return true;
}

// Parses a finite number that fits a float. On failure returns false and sets *why.
bool ParseFeature(std::string_view s, float* out, std::string* why) {
  if (s.empty()) {
    *why = "empty value";
    return false;
  }
  const char* begin = s.data();
  const char* end = s.data() + s.size();
  if (*begin == '+' && end - begin > 1 && begin[1] != '-' && begin[1] != '+') ++begin;
  double v = 0;
  auto [ptr, ec] = std::from_chars(begin, end, v, std::chars_format::general);
  if (ec == std::errc::invalid_argument || ptr != end) {
    *why = "not a number: " + Quote(s);
    return false;
  }
  if (ec == std::errc::result_out_of_range) {
    // from_chars reports both overflow and underflow this way; strtod tells them apart.
    const std::string copy(begin, end);
    errno = 0;
    v = std::strtod(copy.c_str(), nullptr);
    if (std::isinf(v)) {
      *why = "value out of range: " + Quote(s);
      return false;
    }
  }
  if (!std::isfinite(v)) {
    *why = "non-finite value " + Quote(s) + " (NaN and Inf are not allowed)";
    return false;
  }
  if (std::fabs(v) > static_cast<double>(FLT_MAX)) {
    *why = "value out of float range: " + Quote(s);
    return false;
  }
  *out = static_cast<float>(v);
  return true;
}

bool ParseLabel(std::string_view s, int64_t* out) {
  const char* begin = s.data();
  const char* end = s.data() + s.size();
  if (begin != end && *begin == '+') ++begin;
  if (begin == end || *begin == '-' || *begin == '+') return false;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(begin, end, v, 10);
  if (ec != std::errc() || ptr != end || v < 0 || v > kCsvMaxLabel) return false;
  *out = v;
  return true;
}

// Walks the lines of `text`, tracking 1-based line numbers.
class LineReader {
 public:
  explicit LineReader(std::string_view text) : text_(text) {}
  // Returns false at end of text. `ending` is "\n", "\r\n" or "" (last line without newline).
  bool Next(std::string_view* line, std::string_view* ending) {
    if (pos_ >= text_.size()) return false;
    ++line_no_;
    size_t nl = text_.find('\n', pos_);
    size_t stop = nl == std::string_view::npos ? text_.size() : nl;
    size_t next = nl == std::string_view::npos ? text_.size() : nl + 1;
    *ending = text_.substr(stop, next - stop);
    if (stop > pos_ && text_[stop - 1] == '\r' && nl != std::string_view::npos) {
      --stop;
      *ending = "\r\n";
    }
    *line = text_.substr(pos_, stop - pos_);
    pos_ = next;
    return true;
  }
  int64_t line_no() const { return line_no_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int64_t line_no_ = 0;
};

// Parses and validates `path`; fills `table` (features) and/or `lines` (raw text) when non-null.
Status ParseCsv(const std::string& path, const std::string& label_column, CsvTable* table,
                CsvLines* lines) {
  if (label_column.empty()) return InvalidArgument(path + ": the label column name is empty");
  SHOAL_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kCsvMaxBytes));
  std::string_view all(text);
  size_t bom = 0;
  if (all.substr(0, kBom.size()) == kBom) bom = kBom.size();

  LineReader reader(all.substr(bom));
  std::string_view header_line;
  std::string_view ending;
  bool have_header = false;
  while (reader.Next(&header_line, &ending)) {
    if (!IsBlankLine(header_line)) {
      have_header = true;
      break;
    }
  }
  if (!have_header) return InvalidArgument(path + ": empty file: a header row is required");
  const int64_t header_no = reader.line_no();
  const std::string hpos = path + ":" + std::to_string(header_no);

  int64_t commas = 0;
  for (char c : header_line) commas += c == ',';
  if (commas + 1 > kCsvMaxColumns) {
    return InvalidArgument(hpos + ": header has " + std::to_string(commas + 1) +
                           " columns, more than the limit of " + std::to_string(kCsvMaxColumns));
  }
  std::vector<std::string> names;
  int64_t label_index = -1;
  for (size_t begin = 0;;) {
    size_t comma = header_line.find(',', begin);
    size_t end = comma == std::string_view::npos ? header_line.size() : comma;
    Field f = MakeField(header_line, begin, end);
    if (f.text == label_column) {
      if (label_index >= 0) {
        return InvalidArgument(hpos + ":" + std::to_string(f.column) + ": label column " +
                               Quote(label_column) + " appears more than once in the header");
      }
      label_index = static_cast<int64_t>(names.size());
    }
    names.emplace_back(f.text);
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
  }
  if (label_index < 0) {
    std::string list;
    for (size_t i = 0; i < names.size() && i < 20; ++i) list += (i ? ", " : "") + Quote(names[i]);
    if (names.size() > 20) list += ", ...";
    return InvalidArgument(hpos + ": no column named " + Quote(label_column) +
                           " in the header (columns: " + list + ")");
  }
  const int64_t ncols = static_cast<int64_t>(names.size());
  if (ncols < 2) {
    return InvalidArgument(hpos + ": no feature columns besides the label column " +
                           Quote(label_column));
  }
  if (table) {
    table->feature_names.clear();
    for (int64_t i = 0; i < ncols; ++i) {
      if (i != label_index) table->feature_names.push_back(names[static_cast<size_t>(i)]);
    }
  }
  if (lines) {
    lines->header = std::string(all.substr(0, bom)) + std::string(header_line);
    lines->line_ending = ending.empty() ? "\n" : std::string(ending);
  }

  std::vector<float> row(static_cast<size_t>(ncols - 1));
  std::string_view line;
  while (reader.Next(&line, &ending)) {
    if (IsBlankLine(line)) continue;
    const std::string pos = path + ":" + std::to_string(reader.line_no());
    int64_t index = 0;
    int64_t label = 0;
    for (size_t begin = 0;; ++index) {
      size_t comma = line.find(',', begin);
      size_t end = comma == std::string_view::npos ? line.size() : comma;
      Field f = MakeField(line, begin, end);
      if (index >= ncols) {
        return InvalidArgument(pos + ":" + std::to_string(f.column) + ": expected " +
                               std::to_string(ncols) + " fields as in the header, got more");
      }
      const std::string& name = names[static_cast<size_t>(index)];
      if (index == label_index) {
        if (!ParseLabel(f.text, &label)) {
          return InvalidArgument(pos + ":" + std::to_string(f.column) + ": label column " +
                                 Quote(name) + ": expected an integer in 0.." +
                                 std::to_string(kCsvMaxLabel) + ", got " + Quote(f.text));
        }
      } else {
        std::string why;
        float v = 0;
        if (!ParseFeature(f.text, &v, &why)) {
          return InvalidArgument(pos + ":" + std::to_string(f.column) + ": column " + Quote(name) +
                                 ": " + why);
        }
        row[static_cast<size_t>(index < label_index ? index : index - 1)] = v;
      }
      if (comma == std::string_view::npos) break;
      begin = comma + 1;
    }
    if (index + 1 < ncols) {
      return InvalidArgument(pos + ":" + std::to_string(line.size() + 1) + ": expected " +
                             std::to_string(ncols) + " fields as in the header, got " +
                             std::to_string(index + 1));
    }
    if (table) {
      table->features.insert(table->features.end(), row.begin(), row.end());
      table->labels.push_back(label);
    }
    if (lines) {
      lines->lines.emplace_back(line);
      lines->labels.push_back(label);
    }
  }
  return Status::Ok();
}

}  // namespace

Result<CsvTable> ReadCsv(const std::string& path, const std::string& label_column) {
  CsvTable table;
  SHOAL_RETURN_IF_ERROR(ParseCsv(path, label_column, &table, nullptr));
  return table;
}

Result<CsvLines> ReadCsvLines(const std::string& path, const std::string& label_column) {
  CsvLines lines;
  SHOAL_RETURN_IF_ERROR(ParseCsv(path, label_column, nullptr, &lines));
  return lines;
}

}  // namespace shoal::data
