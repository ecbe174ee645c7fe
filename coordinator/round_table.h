// The table the coordinator prints on stdout, one row per evaluated round (what a person
// watching a terminal reads; the same figures are in metrics.jsonl and on the dashboard).
#pragma once

#include <nlohmann/json.hpp>

namespace shoal::coordinator {

void PrintRoundTableHeader();
// One metrics.jsonl round record as a row; "-" for an evaluation that is absent.
void PrintRoundTableRow(const nlohmann::json& record);

}  // namespace shoal::coordinator
