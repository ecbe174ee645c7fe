// Micro-benchmarks of the coordinator's hot path, each next to the machine's own limit:
// FedAvg folding vs memcpy of the same bytes (memory bandwidth), and message encode/decode of
// weight chunks. Run: build/bin/core_bench --benchmark_repetitions=5
// --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "base/malloc_tuning.h"
#include "bench/bench_main.h"
#include "coordinator/aggregation/fed_avg.h"
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
