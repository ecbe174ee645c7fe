// Micro-benchmarks of the coordinator's hot path, each next to the machine's own limit:
// FedAvg folding vs memcpy of the same bytes (memory bandwidth), and message encode/decode of
// weight chunks. Run: build/bin/core_bench --benchmark_repetitions=5
// --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/malloc_tuning.h"
#include "bench/bench_main.h"
#include "coordinator/aggregation/aggregate_step.h"
#include "coordinator/aggregation/aggregator_registry.h"
#include "coordinator/aggregation/fed_avg.h"
#include "coordinator/aggregation/robust_aggregator.h"
#include "coordinator/config.h"
#include "protocols/codec.h"

namespace shoal {
namespace {

model::ModelSpec FlatSpec(int64_t n) {
  model::ModelSpec s;
  s.tensors.push_back({"w", model::DType::kFloat32, {n}});
  return s;
}

std::vector<float> RandomFloats(int64_t n) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-0.01f, 0.01f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

// One update folded into the running weighted sum (validation scan + multiply-add).
void BM_FedAvgFold(benchmark::State& state) {
  const int64_t n = state.range(0);
  const bool exact = state.range(1) != 0;
  const auto delta = RandomFloats(n);
  coordinator::FedAvg agg;
  agg.Begin(FlatSpec(n), exact);
  for (auto _ : state) {
    benchmark::DoNotOptimize(agg.Fold(delta.data(), delta.size(), 600));
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
  state.SetLabel(exact ? "deterministic int64" : "float");
}
BENCHMARK(BM_FedAvgFold)
    ->Args({1663370, 0})
    ->Args({25000000, 0})
    ->Args({1663370, 1})
    ->Args({25000000, 1})
    ->Unit(benchmark::kMillisecond);

// The robust aggregators (issue #23): k = 10 updates spilled to a file under /tmp, then the
// whole aggregated delta computed slice by slice as the round engine asks for it. Bytes are
// the k updates read (k x n x 4): compare with BM_FedAvgFold's rate per update. The spill is
// in the page cache here (a warm round); arg 1: 0 median, 1 trimmed_mean (0.2), 2 multi_krum
// (f = 2).
void BM_RobustAggregate(benchmark::State& state) {
  const int64_t n = state.range(0);
  const char* names[] = {"median", "trimmed_mean", "multi_krum"};
  const char* name = names[state.range(1)];
  constexpr int kUpdates = 10;
  char tmpl[] = "/tmp/shoal-bench-spill-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto created = coordinator::BuiltinAggregators().Create(name);
  std::unique_ptr<coordinator::RobustAggregator> agg(
      dynamic_cast<coordinator::RobustAggregator*>(created->release()));
  agg->Configure({dir, 0.2, 2, 0});
  agg->Begin(FlatSpec(n), true);
  auto delta = RandomFloats(n);
  for (int k = 0; k < kUpdates; ++k) {
    delta[0] = static_cast<float>(k);  // distinct updates
    if (!agg->Fold(delta.data(), delta.size(), 600).ok()) state.SkipWithError("fold failed");
  }
  std::vector<double> out(coordinator::kAggregateSlice);
  for (auto _ : state) {
    for (int64_t b = 0; b < n; b += static_cast<int64_t>(coordinator::kAggregateSlice)) {
      const size_t len = std::min<size_t>(coordinator::kAggregateSlice, static_cast<size_t>(n - b));
      benchmark::DoNotOptimize(agg->AggregateRange(static_cast<size_t>(b), len, out.data()));
    }
  }
  state.SetBytesProcessed(state.iterations() * n * 4 * kUpdates);
  // multi_krum: its distances are computed at the first call of a round only, so this is the
  // mean of the selected updates; the distance pass reads the same bytes once more.
  state.SetLabel(std::string(name) + ", 10 updates");
  agg.reset();
  ::rmdir(dir.c_str());
}
BENCHMARK(BM_RobustAggregate)
    ->Args({1663370, 0})
    ->Args({1663370, 1})
    ->Args({1663370, 2})
    ->Unit(benchmark::kMillisecond);

// The bandwidth ceiling: copying the same number of bytes.
void BM_Memcpy(benchmark::State& state) {
  const int64_t n = state.range(0);
  const auto src = RandomFloats(n);
  std::vector<float> dst(src.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size() * 4);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_Memcpy)->Arg(1663370)->Arg(25000000)->Unit(benchmark::kMillisecond);

const uint32_t kChunkBytes =
    coordinator::CoordinatorConfig().chunk_bytes;  // the default network.chunk_bytes

// A model's weights into WeightsChunk frames (1 MiB chunks), and back.
void BM_EncodeChunks(benchmark::State& state) {
  const int64_t n = state.range(0);
  const auto w = RandomFloats(n);
  for (auto _ : state) {
    auto frames = protocols::EncodeChunks(1, w.data(), w.size() * 4, kChunkBytes);
    benchmark::DoNotOptimize(frames.data());
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_EncodeChunks)->Arg(1663370)->Arg(25000000)->Unit(benchmark::kMillisecond);

void BM_DecodeChunks(benchmark::State& state) {
  const int64_t n = state.range(0);
  const auto w = RandomFloats(n);
  const auto frames = protocols::EncodeChunks(1, w.data(), w.size() * 4, kChunkBytes);
  protocols::Limits limits;
  for (auto _ : state) {
    protocols::ChunkAssembler a;
    if (!a.Start(1, w.size() * 4, kChunkBytes).ok()) state.SkipWithError("start");
    for (const auto& f : frames) {
      auto view = protocols::ParseFrame(f, limits);
      auto c = protocols::Decode<protocols::WeightsChunk>(*view);
      if (!a.Add(*c, view->payload).ok()) state.SkipWithError("add");
    }
    benchmark::DoNotOptimize(a.Take().data());
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_DecodeChunks)->Arg(1663370)->Arg(25000000)->Unit(benchmark::kMillisecond);

// What a transfer buffer costs right after the heap was handed back (ReleaseFreeMemory(), as
// the worker does after training and the coordinator when much is free): a 4 MiB frame
// written into memory that malloc_trim returned to the kernel, page by page as the code
// writes it, or mapped first with PrefaultForWrite() (through ReserveForWrite(), as the
// transfer buffers are). Where a page fault is cheap the two are close; here they are not.
void BM_WriteReleasedHeap(benchmark::State& state) {
  const bool prefault = state.range(0) != 0;
  constexpr size_t kBytes = size_t{4} << 20;
  const std::string src(kBytes, 'x');
  for (auto _ : state) {
    state.PauseTiming();
    {  // a workspace used and freed, then the free heap handed back
      std::vector<std::string> workspace(8, std::string(kBytes, 'w'));
    }
    ReleaseFreeMemory();
    state.ResumeTiming();
    std::string frame;
    if (prefault) {
      ReserveForWrite(frame, kBytes);  // as the transfer buffers do
    } else {
      frame.reserve(kBytes);
    }
    frame.append(src);
    benchmark::DoNotOptimize(frame.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(kBytes));
  state.SetLabel(prefault ? "PrefaultForWrite first" : "page by page");
}
BENCHMARK(BM_WriteReleasedHeap)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace shoal

SHOAL_BENCHMARK_MAIN();
