// Throughput of the TLS channel (protocols/secure_channel.h) next to plain ZeroMQ.
//
//   BM_SealOpenInMemory/<bytes>   Seal on one session + OnWire on its peer, no sockets.
//   BM_TlsOverZmq/<bytes>         Seal, client send, server receive, OnWire (Shoal's framed
//                                 transport on ZeroMQ STREAM sockets, loopback TCP).
//   BM_PlainZmq/<bytes>           The same transport carrying the bytes unencrypted.
//   BM_SealUpload/<0|1>           A worker's 6.6 MB upload as 1 MiB WeightsChunk frames (the
//                                 default network.chunk_bytes), sealed: each chunk copied into
//                                 a frame first (0, before), or sealed from the update's
//                                 storage (1, codec.h FramePieces).
//   BM_OpenUpload/<0|1>           The coordinator's side of it: the sealed frames opened and the
//                                 update assembled. Each message decrypted into its own buffer
//                                 and its payload copied into the update (0, before), or the
//                                 payload decrypted straight into the update (1, placement.h).
//                                 The sealing is not timed.
// All run on one thread that owns both sockets (ZeroMQ's I/O thread moves the bytes), so the
// TLS numbers are what one core does for encryption plus decryption. A throwaway PKI (ECDSA
// P-256) is generated with the openssl CLI at start-up.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "coordinator/config.h"
#include "protocols/codec.h"
#include "protocols/secure_channel.h"
#include "protocols/transport.h"

namespace shoal::protocols {
namespace {

namespace fs = std::filesystem;

constexpr size_t kCap = size_t{128} << 20;  // the 100 MB case exceeds the 80 MiB default

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Contexts {
  std::shared_ptr<TlsContext> client, server;
};

const Contexts& GetContexts() {
  static const Contexts contexts = [] {
    std::string tmpl = (fs::temp_directory_path() / "secure_channel_bench_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    const fs::path dir = tmpl;
    const std::string cmd = "cd '" + dir.string() + R"(' && (set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 30 -subj /CN=bench-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
for n in coordinator worker-1; do
  openssl req -new $ec -keyout $n.key -out $n.csr -subj /CN=$n
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 30
done) > log.txt 2>&1)";
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "PKI generation failed:\n%s\n", ReadFile(dir / "log.txt").c_str());
      std::abort();
    }
    const std::string ca = ReadFile(dir / "ca.pem");
    auto server = TlsContext::Server(
        {ReadFile(dir / "coordinator.pem"), ReadFile(dir / "coordinator.key"), ca, ""});
    auto client = TlsContext::Client(
        {ReadFile(dir / "worker-1.pem"), ReadFile(dir / "worker-1.key"), ca, "coordinator"});
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (!server.ok() || !client.ok()) {
      std::fprintf(stderr, "TLS contexts: %s %s\n", server.status().ToString().c_str(),
                   client.status().ToString().c_str());
      std::abort();
    }
    return Contexts{*client, *server};
  }();
  return contexts;
}

struct Pair {
  std::unique_ptr<SecureSession> client, server;
};

// A handshaken pair, frames passed in memory.
Pair Connect() {
  const Contexts& c = GetContexts();
  Pair p{std::make_unique<SecureSession>(c.client, kCap),
         std::make_unique<SecureSession>(c.server, kCap)};
  std::vector<std::string> to_server, to_client, messages;
  if (!p.client->Start(&to_server).ok() || !p.server->Start(&to_client).ok()) std::abort();
  while (!to_server.empty() || !to_client.empty()) {
    std::vector<std::string> next_server, next_client;
    for (auto& f : to_server) {
      if (!p.server->OnWire(f, &next_client, &messages).ok()) std::abort();
    }
    for (auto& f : to_client) {
      if (!p.client->OnWire(f, &next_server, &messages).ok()) std::abort();
    }
    to_server = std::move(next_server);
    to_client = std::move(next_client);
  }
  if (!p.client->established() || !p.server->established()) std::abort();
  return p;
}

void BM_SealOpenInMemory(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  Pair p = Connect();
  const std::string message(n, 'w');
  std::vector<std::string> frames, back, messages;
  for (auto _ : state) {
    frames.clear();
    messages.clear();
    if (!p.client->Seal(message, &frames).ok()) state.SkipWithError("seal");
    for (const std::string& f : frames) {
      if (!p.server->OnWire(f, &back, &messages).ok()) state.SkipWithError("open");
    }
    if (messages.size() != 1 || messages[0].size() != n) state.SkipWithError("lost message");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}

struct Sockets {
  StreamListener router;
  StreamConnection dealer;
  std::string peer;
};

std::unique_ptr<Sockets> ConnectSockets() {
  auto s = std::make_unique<Sockets>();
  auto endpoint = s->router.Bind("tcp://127.0.0.1:*");
  if (!endpoint.ok() || !s->dealer.Connect(*endpoint).ok()) std::abort();
  if (!s->dealer.Send("hello").ok()) std::abort();
  for (int i = 0; i < 500; ++i) {
    (void)s->dealer.Recv(1);  // the connection comes up and "hello" leaves
    auto in = s->router.Recv(10);
    if (!in.ok()) std::abort();
    if (in->has_value()) {
      s->peer = (*in)->peer;
      return s;
    }
  }
  std::abort();
}

void BM_TlsOverZmq(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  Pair p = Connect();
  auto sockets = ConnectSockets();
  const std::string message(n, 'w');
  std::vector<std::string> frames, back, messages;
  for (auto _ : state) {
    frames.clear();
    messages.clear();
    if (!p.client->Seal(message, &frames).ok()) state.SkipWithError("seal");
    for (std::string& f : frames) {  // as ClientChannel sends them: handed over, not copied
      if (!sockets->dealer.SendOwned(std::move(f)).ok()) state.SkipWithError("send");
    }
    for (size_t i = 0; i < frames.size(); ++i) {
      auto in = sockets->router.Recv(10000);
      if (!in.ok() || !in->has_value()) {
        state.SkipWithError("recv");
        break;
      }
      if (!p.server->OnWire((*in)->frame, &back, &messages).ok()) state.SkipWithError("open");
    }
    if (messages.size() != 1 || messages[0].size() != n) state.SkipWithError("lost message");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}

void BM_PlainZmq(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto sockets = ConnectSockets();
  const std::string message(n, 'w');
  for (auto _ : state) {
    if (!sockets->dealer.Send(message).ok()) state.SkipWithError("send");
    auto in = sockets->router.Recv(10000);
    if (!in.ok() || !in->has_value() || (*in)->frame.size() != n) state.SkipWithError("recv");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}

constexpr uint64_t kBytes = 6'653'480;  // the FedAvg CNN's 1,663,370 float32 parameters
const uint32_t kChunk =
    coordinator::CoordinatorConfig().chunk_bytes;  // the default network.chunk_bytes

void BM_SealUpload(benchmark::State& state) {
  const bool pieces = state.range(0) != 0;
  state.SetLabel(pieces ? "sealed from the update's storage" : "chunk copied into a frame first");
  Pair p = Connect();
  const std::vector<float> delta(kBytes / sizeof(float), 0.25f);
  std::vector<std::string> frames;
  for (auto _ : state) {
    frames.clear();
    for (uint32_t i = 0; i < ChunkCount(kBytes, kChunk); ++i) {
      if (pieces) {
        const FramePieces f = EncodeChunkPieces(1, delta.data(), kBytes, kChunk, i);
        if (!p.client->Seal(f.head, f.payload, &frames).ok()) state.SkipWithError("seal");
      } else {
        const std::string f = EncodeChunk(1, delta.data(), kBytes, kChunk, i);
        if (!p.client->Seal(f, &frames).ok()) state.SkipWithError("seal");
      }
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(kBytes));
}

void BM_OpenUpload(benchmark::State& state) {
  const bool placed = state.range(0) != 0;
  state.SetLabel(placed ? "payload decrypted into the update" : "payload copied into the update");
  Pair p = Connect();
  Limits limits;
  limits.max_payload_bytes = kChunk;
  ChunkAssembler assembler;
  if (placed) {
    p.server->set_payload_placer([&](std::string_view head, size_t bytes) {
      return assembler.PlaceFrame(head, bytes, limits);
    });
  }
  const std::vector<float> delta(kBytes / sizeof(float), 0.25f);
  std::vector<std::string> frames, back;
  std::vector<Plaintext> messages;
  for (auto _ : state) {
    state.PauseTiming();
    frames.clear();
    for (uint32_t i = 0; i < ChunkCount(kBytes, kChunk); ++i) {
      const FramePieces f = EncodeChunkPieces(1, delta.data(), kBytes, kChunk, i);
      if (!p.client->Seal(f.head, f.payload, &frames).ok()) state.SkipWithError("seal");
    }
    state.ResumeTiming();
    if (!assembler.Start(1, kBytes, kChunk).ok()) state.SkipWithError("start");
    for (const std::string& frame : frames) {  // one chunk a frame: each is taken as it arrives
      messages.clear();
      if (!p.server->OnWire(frame, &back, &messages).ok()) state.SkipWithError("open");
      for (const Plaintext& m : messages) {
        auto f = ParseFrame(m, limits);
        auto c = f.ok() ? Decode<WeightsChunk>(*f) : Result<WeightsChunk>(f.status());
        if (!c.ok() || !assembler.Add(*c, f->payload, f->payload_placed).ok()) {
          state.SkipWithError("assemble");
        }
        if (m.placed != placed) state.SkipWithError("placement");
      }
    }
    if (!assembler.complete()) state.SkipWithError("incomplete");
    benchmark::DoNotOptimize(assembler.Take().data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(kBytes));
}

// 6.6 MB is a FedAvg CNN's weights; 100 MB a larger model.
#define SHOAL_SIZES Arg(6'600'000)->Arg(100'000'000)->Unit(benchmark::kMillisecond)->UseRealTime()
BENCHMARK(BM_SealOpenInMemory)->SHOAL_SIZES;
BENCHMARK(BM_TlsOverZmq)->SHOAL_SIZES;
BENCHMARK(BM_PlainZmq)->SHOAL_SIZES;
BENCHMARK(BM_SealUpload)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OpenUpload)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace shoal::protocols

SHOAL_BENCHMARK_MAIN();
