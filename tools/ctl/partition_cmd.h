// `shoalctl partition`: splits a dataset (IDX directory or CSV file) into per-silo folders and
// prints a table of silo sizes and label histograms.
//
//   shoalctl partition --source DIR_OR_CSV --workers N --scheme iid|dirichlet --alpha A
//                      --seed S --out DIR [--limit N] [--label-column NAME]
//
// Errors: any failure (bad flags values, unreadable or corrupt input, unwritable output) prints
// "error: <status message>" to stderr and throws CLI::RuntimeError(2), so a main that parses
// with CLI11_PARSE (or catches CLI::ParseError and calls app.exit) exits with code 2.
#pragma once

#include <CLI/CLI.hpp>

namespace shoal {

void AddPartitionCommand(CLI::App& app);

}  // namespace shoal
