// main() for Shoal's Google Benchmark binaries: tunes malloc as the executables do
// (base/malloc_tuning.h), so multi-megabyte buffers stay mapped between iterations instead of
// being page-faulted in again every time (which made TLS look 10x slower). Use once per binary:
//   SHOAL_BENCHMARK_MAIN();
#pragma once

#include <benchmark/benchmark.h>

#include "base/malloc_tuning.h"

#define SHOAL_BENCHMARK_MAIN()                                        \
  int main(int argc, char** argv) {                                   \
    shoal::TuneMallocForLargeBuffers();                               \
    benchmark::Initialize(&argc, argv);                               \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1; \
    benchmark::RunSpecifiedBenchmarks();                              \
    benchmark::Shutdown();                                            \
    return 0;                                                         \
  }                                                                   \
  static_assert(true, "")
