#include "tools/ctl/partition_cmd.h"

#include <algorithm>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "base/status.h"
#include "data/partition.h"

namespace shoal {
namespace {

struct PartitionFlags {
  std::string source;
  std::string out;
  std::string scheme = "iid";
  std::string label_column = "label";
  int workers = 3;
  double alpha = 0.5;
  uint64_t seed = 0;
  int64_t limit = 0;
};

// Prints rows of cells with every column padded to its widest cell; columns listed in
// `left_aligned` are padded on the right, all others on the left.
void PrintTable(const std::vector<std::vector<std::string>>& rows, size_t left_aligned) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string pad(widths[c] - row[c].size(), ' ');
      line += c < left_aligned ? row[c] + pad : pad + row[c];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::cout << line << "\n";
  }
}

Status RunPartition(const PartitionFlags& flags) {
  data::PartitionOptions opts;
  Result<data::PartitionScheme> scheme = data::ParsePartitionScheme(flags.scheme);
  if (!scheme.ok()) return scheme.status().Annotate("--scheme");
  opts.scheme = *scheme;
  opts.workers = flags.workers;
  opts.alpha = flags.alpha;
  opts.seed = flags.seed;
  opts.limit = flags.limit;
  SHOAL_ASSIGN_OR_RETURN(std::vector<data::SiloReport> reports,
                         data::PartitionDataset(flags.source, flags.out, opts, flags.label_column));

  std::ostringstream params;
  params << "scheme " << data::PartitionSchemeName(opts.scheme);
  if (opts.scheme == data::PartitionScheme::kDirichlet) params << ", alpha " << opts.alpha;
  params << ", seed " << opts.seed;
  if (opts.limit > 0) params << ", limit " << opts.limit;
  std::cout << "partitioned " << flags.source << " into " << reports.size() << " silos ("
            << params.str() << ")\n";

  const size_t classes = reports.empty() ? 0 : reports.front().label_histogram.size();
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"silo", "dir", "samples"};
  for (size_t c = 0; c < classes; ++c) header.push_back(std::to_string(c));
  rows.push_back(header);
  int64_t total = 0;
  std::vector<int64_t> class_totals(classes, 0);
  for (size_t i = 0; i < reports.size(); ++i) {
    const data::SiloReport& r = reports[i];
    std::vector<std::string> row = {std::to_string(i + 1), r.dir, std::to_string(r.size)};
    for (size_t c = 0; c < classes && c < r.label_histogram.size(); ++c) {
      row.push_back(std::to_string(r.label_histogram[c]));
      class_totals[c] += r.label_histogram[c];
    }
    total += r.size;
    rows.push_back(row);
  }
  std::vector<std::string> footer = {"total", "", std::to_string(total)};
  for (int64_t t : class_totals) footer.push_back(std::to_string(t));
  rows.push_back(footer);
  PrintTable(rows, 2);
  return Status::Ok();
}

}  // namespace

void AddPartitionCommand(CLI::App& app) {
  auto flags = std::make_shared<PartitionFlags>();
  CLI::App* cmd = app.add_subcommand(
      "partition", "Split a dataset (IDX directory or CSV file) into per-silo folders");
  cmd->add_option("--source", flags->source,
                  "Directory with train-images/train-labels IDX files (.gz or plain), or a .csv "
                  "file")
      ->required();
  cmd->add_option("--out", flags->out, "Output directory; silos go to <out>/silo-1..N")->required();
  cmd->add_option("--workers", flags->workers, "Number of silos")->capture_default_str();
  cmd->add_option("--scheme", flags->scheme, "Partition scheme: iid or dirichlet")
      ->capture_default_str();
  cmd->add_option("--alpha", flags->alpha,
                  "Dirichlet concentration (smaller = more label skew); dirichlet only")
      ->capture_default_str();
  cmd->add_option("--seed", flags->seed, "Random seed")->capture_default_str();
  cmd->add_option("--limit", flags->limit, "Use only the first N samples (0 = all)")
      ->capture_default_str();
  cmd->add_option("--label-column", flags->label_column, "Label column name (CSV only)")
      ->capture_default_str();
  cmd->callback([flags]() {
    Status st = RunPartition(*flags);
    if (!st.ok()) {
      std::cout.flush();
      std::cerr << "error: " << st.message() << std::endl;
      throw CLI::RuntimeError(2);
    }
  });
}

}  // namespace shoal
