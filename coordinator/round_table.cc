#include "coordinator/round_table.h"

#include <cstdio>
#include <string>

namespace shoal::coordinator {

void PrintRoundTableHeader() {
  std::printf("%5s %7s %7s %7s %10s %10s %8s %8s %10s %8s\n", "round", "version", "workers",
              "samples", "test_acc", "test_loss", "fed_acc", "fed_loss", "train_loss", "seconds");
  std::fflush(stdout);
}

void PrintRoundTableRow(const nlohmann::json& r) {
  auto num = [](const nlohmann::json& j, const char* k, double scale) -> std::string {
    if (j.is_null() || !j.contains(k)) return "-";
    char b[32];
    std::snprintf(b, sizeof(b), scale == 100 ? "%.2f%%" : "%.4f", j[k].get<double>() * scale);
    return b;
  };
  std::printf("%5llu %7s %7zu %7lld %10s %10s %8s %8s %10.4f %8.1f\n",
              static_cast<unsigned long long>(r["round"].get<uint64_t>()),
              ("v" + std::to_string(r["version"].get<uint64_t>())).c_str(),
              r["participants"].size(), static_cast<long long>(r["samples"].get<int64_t>()),
              num(r["central"], "accuracy", 100).c_str(), num(r["central"], "loss", 1).c_str(),
              num(r["federated"], "accuracy", 100).c_str(), num(r["federated"], "loss", 1).c_str(),
              r["train_loss"].get<double>(), r["wall_s"].get<double>());
  std::fflush(stdout);
}

}  // namespace shoal::coordinator
