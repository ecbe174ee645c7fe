// Writes the seed corpora of the fuzz targets: valid inputs built with Shoal's own encoders, so
// the fuzzers start from inputs that reach deep into the decoders.
//
//   fuzz_seed_gen OUT_DIR      writes
//   OUT_DIR/{frame_fuzz,secure_session_fuzz,weights_fuzz,stream_fuzz,predict_request_fuzz,
//            http_guard_fuzz}/*
//
// The committed fuzz/corpus/ was made with it (`scripts/fuzz.sh --write-seeds`). Seeds that
// carry TLS records come from a fresh PKI and fresh keys on every run, so they differ from run
// to run; the others are deterministic.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "base/sha256.h"
#include "fuzz/frame_format.h"
#include "fuzz/secure_format.h"
#include "fuzz/test_pki.h"
#include "model/weights.h"
#include "protocols/codec.h"
#include "protocols/framing.h"
#include "protocols/messages.h"
#include "protocols/secure_channel.h"

namespace fs = std::filesystem;
using namespace shoal;
using namespace shoal::protocols;
using Frames = std::vector<std::string>;

namespace {

fs::path g_out;
int g_written = 0;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_out / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
  ++g_written;
}

std::string Floats(std::vector<float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

model::ModelSpec SmallSpec() {
  model::ModelSpec spec;
  spec.tensors.push_back({"fc.weight", model::DType::kFloat32, {2, 3}});
  spec.tensors.push_back({"fc.bias", model::DType::kFloat32, {2}});
  return spec;
}

// ---------------------------------------------------------------------------------------------
// frame_fuzz

void FrameSeeds() {
  const std::string t = "frame_fuzz";
  Hello hello;
  hello.name = "silo-3";
  hello.num_train = 20000;
  hello.num_val = 2222;
  hello.input_shape = {1, 28, 28};
  hello.num_classes = 10;
  Write(t, "hello", Encode(hello));

  Welcome welcome;
  welcome.run_id = "run-1";
  welcome.worker_name = "silo-3";
  welcome.model = "torchscript";
  welcome.num_classes = 10;
  welcome.heartbeat_ms = 1000;
  welcome.peer_timeout_ms = 10000;
  welcome.chunk_bytes = 8;
  welcome.model_bytes = 20;
  Write(t, "welcome", Encode(welcome));

  const std::string model_file = "torchscript-archive!";  // 20 bytes
  const Frames pieces = EncodeModelFile(model_file, 8);
  Write(t, "model_file", pieces[0]);

  TrainTask train;
  train.run_id = "run-1";
  train.round = 4;
  train.version = 3;
  train.epochs = 2;
  train.batch_size = 16;
  train.lr = 0.05;
  train.seed = 42;
  train.deadline_ms = 60000;
  train.spec = SmallSpec();
  train.chunk_count = 4;
  Write(t, "train_task", Encode(train));

  EvalTask eval;
  eval.run_id = "run-1";
  eval.round = 4;
  eval.version = 4;
  eval.spec = SmallSpec();
  eval.chunk_count = 4;
  Write(t, "eval_task", Encode(eval));

  const std::string weights = Floats({1, 2, 3, 4, 5, 6, 7, 8});  // 32 bytes = SmallSpec
  const Frames chunks = EncodeChunks(4, weights.data(), weights.size(), 8);
  Write(t, "weights_chunk", chunks[1]);

  UpdateReady ready;
  ready.run_id = "run-1";
  ready.round = 4;
  ready.base_version = 3;
  ready.num_samples = 1000;
  ready.train_loss = 0.25;
  ready.train_seconds = 1.5;
  ready.total_bytes = 32;
  const Digest d = Sha256::Of(weights.data(), weights.size());
  ready.sha256.assign(d.begin(), d.end());
  Write(t, "update_ready", Encode(ready));

  UploadGrant grant;
  grant.round = 4;
  Write(t, "upload_grant", Encode(grant));

  Ack ack;
  ack.round = 4;
  ack.sha256 = ready.sha256;
  Write(t, "ack", Encode(ack));

  EvalResult result;
  result.run_id = "run-1";
  result.round = 4;
  result.version = 4;
  result.count = 500;
  result.loss = 0.3;
  result.accuracy = 0.91;
  Write(t, "eval_result", Encode(result));

  Heartbeat hb;
  hb.unix_ms = 1700000000000ull;
  hb.busy = 1;
  Write(t, "heartbeat", Encode(hb));

  Error error;
  error.code = ErrorCode::kStale;
  error.round = 3;
  error.message = "round 3 is closed";
  Write(t, "error", Encode(error));

  JoinRequest join;
  join.token_id = "0123456789abcdef";
  join.secret = "0123456789abcdef0123456789abcdef";
  join.csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
  Write(t, "join_request", Encode(join));

  JoinResponse joined;
  joined.worker_name = "silo-3";
  joined.cert_pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  joined.ca_pem = joined.cert_pem;
  Write(t, "join_response", Encode(joined));

  Shutdown shutdown;
  shutdown.reason = "run finished";
  Write(t, "shutdown", Encode(shutdown));

  // Transfer scripts (frame_format.h).
  using fuzz::frame_format::AppendFrame;
  using fuzz::frame_format::ScriptHeader;
  {
    // A weights transfer started from the header: 32 bytes in chunks of 8.
    std::string s = ScriptHeader(4, 32, 8, 0);
    for (const std::string& c : chunks) AppendFrame(s, c);
    Write(t, "script_weights", s);
  }
  {
    // A model file started from the header: 20 bytes in pieces of 8.
    std::string s = ScriptHeader(0, 0, 8, 20);
    for (const std::string& p : pieces) AppendFrame(s, p);
    Write(t, "script_model", s);
  }
  {
    // As the worker sees it: Welcome, the model file, a TrainTask and its chunks, then an
    // EvalTask whose transfer is interrupted by a chunk of another round.
    std::string s = ScriptHeader(0, 0, 0, 0);
    AppendFrame(s, Encode(welcome));
    for (const std::string& p : pieces) AppendFrame(s, p);
    AppendFrame(s, Encode(train));
    for (const std::string& c : chunks) AppendFrame(s, c);
    AppendFrame(s, Encode(eval));
    AppendFrame(s, chunks[0]);
    AppendFrame(s, EncodeChunks(9, weights.data(), weights.size(), 8)[1]);
    Write(t, "script_session", s);
  }
}

// ---------------------------------------------------------------------------------------------
// secure_session_fuzz

struct SessionPair {
  SecureSession client;
  SecureSession server;
  Frames client_flights;  // every frame the client sent during the handshake
  SessionPair(std::shared_ptr<const TlsContext> client_ctx,
              std::shared_ptr<const TlsContext> server_ctx, size_t cap)
      : client(std::move(client_ctx)), server(std::move(server_ctx), cap) {}
};

void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "seed generator: %s: %s\n", what.c_str(), st.ToString().c_str());
  std::exit(1);
}

void Handshake(SessionPair& p) {
  Frames to_server, to_client, delivered;
  if (Status st = p.client.Start(&to_server); !st.ok()) Die("client Start", st);
  if (Status st = p.server.Start(&to_client); !st.ok()) Die("server Start", st);
  for (int step = 0; step < 8 && (!to_server.empty() || !to_client.empty()); ++step) {
    Frames next_to_server, next_to_client;
    for (const std::string& f : to_server) {
      p.client_flights.push_back(f);
      if (Status st = p.server.OnWire(f, &next_to_client, &delivered); !st.ok()) Die("server", st);
    }
    for (const std::string& f : to_client) {
      if (Status st = p.client.OnWire(f, &next_to_server, &delivered); !st.ok()) Die("client", st);
    }
    to_server = std::move(next_to_server);
    to_client = std::move(next_to_client);
  }
  if (!p.client.established() || !p.server.established()) {
    Die("handshake", Internal("did not complete"));
  }
}

void SecureSeeds() {
  using namespace fuzz::secure_format;
  const std::string t = "secure_session_fuzz";
  const fuzz::TestContexts contexts = fuzz::MakeTestContexts(fuzz::MakeTestPki());
  struct PairInfo {
    Pair pair;
    const char* name;
    std::shared_ptr<const TlsContext> client, server;
    size_t constructed_cap, effective_cap;
  };
  const PairInfo pairs[] = {
      {kMutual, "mutual", contexts.client, contexts.server, kMutualCap, kMutualCap},
      {kJoin, "join", contexts.join_client, contexts.enroll_server, kEnrollCap,
       std::min(kEnrollCap, kUnauthenticatedMaxMessageBytes)},
      {kOptional, "optional", contexts.client, contexts.enroll_server, kEnrollCap, kEnrollCap},
  };
  for (const PairInfo& info : pairs) {
    const std::string n = info.name;
    SessionPair p(info.client, info.server, info.constructed_cap);
    Handshake(p);
    {
      // The client's ClientHello alone, then with its second flight (from another handshake,
      // so a fresh server refuses it at the first encrypted record).
      std::string s(1, ModeByte(kHandshake, info.pair));
      AppendFrame(s, p.client_flights[0]);
      Write(t, n + "_handshake_client_hello", s);
      if (info.pair == kMutual) {
        for (size_t i = 1; i < p.client_flights.size(); ++i) AppendFrame(s, p.client_flights[i]);
        Write(t, n + "_handshake_replayed_flights", s);
      }
    }
    if (info.pair == kMutual) {
      // Authentic records of another session, replayed after a fresh handshake; and cut short.
      Frames sealed;
      if (Status st = p.client.Seal("replayed message", &sealed); !st.ok()) Die("Seal", st);
      std::string s(1, ModeByte(kForged, info.pair));
      AppendFrame(s, sealed[0]);
      Write(t, n + "_forged_replayed_record", s);
      std::string truncated(1, ModeByte(kForged, info.pair));
      AppendFrame(truncated, sealed[0].substr(0, sealed[0].size() - 3));
      Write(t, n + "_forged_truncated_record", truncated);
    }

    const char sealed_mode = ModeByte(kSealed, info.pair);
    {
      // Two proper messages; for the join pair a JoinRequest, as a joining worker sends.
      std::string s(1, sealed_mode);
      AppendPiece(s, kWithPrefix, "hello");
      if (info.pair == kJoin) {
        JoinRequest join;
        join.token_id = "0123456789abcdef";
        join.secret = "0123456789abcdef0123456789abcdef";
        join.csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\n...\n";
        AppendPiece(s, kWithPrefix, Encode(join));
      } else {
        Heartbeat hb;
        hb.unix_ms = 1700000000000ull;
        AppendPiece(s, kWithPrefix, Encode(hb));
      }
      Write(t, n + "_sealed_messages", s);
    }
    {
      // A length prefix just above the effective cap (must be refused), and one exactly at it
      // whose body never arrives (accepted, buffered).
      std::string over(1, sealed_mode);
      AppendPiece(over, 0, Prefix(static_cast<uint32_t>(info.effective_cap) + 1));
      Write(t, n + "_sealed_over_cap", over);
      std::string at(1, sealed_mode);
      AppendPiece(at, 0, Prefix(static_cast<uint32_t>(info.effective_cap)) + "partial body");
      Write(t, n + "_sealed_at_cap", at);
    }
    if (info.pair != kMutual) continue;
    {
      // Inner framing forged piece by piece: a prefix split over records, a body spread over
      // several pieces held into one frame, an empty message.
      std::string s(1, sealed_mode);
      const std::string prefix = Prefix(10);
      AppendPiece(s, 0, prefix.substr(0, 1));
      AppendPiece(s, 0, prefix.substr(1));
      AppendPiece(s, kHold, "0123");
      AppendPiece(s, kHold, "456");
      AppendPiece(s, 0, "789");
      AppendPiece(s, 0, Prefix(0));
      AppendPiece(s, kWithPrefix | kHold, "");
      AppendPiece(s, kWithPrefix, "after empty");
      Write(t, n + "_sealed_raw_framing", s);
    }
    {
      std::string huge(1, sealed_mode);
      AppendPiece(huge, 0, Prefix(0xFFFFFFFFu));
      Write(t, n + "_sealed_prefix_max", huge);
    }
    {
      // A message whose frame has a flipped bit.
      std::string s(1, sealed_mode);
      AppendPiece(s, kWithPrefix, "first");
      AppendPiece(s, kWithPrefix | kCorrupt, "second", 9, 0x40);
      Write(t, n + "_sealed_corrupt", s);
    }
    {
      // A message larger than one TLS record.
      std::string s(1, sealed_mode);
      AppendPiece(s, kWithPrefix, std::string(20000, 'x'));
      Write(t, n + "_sealed_multi_record", s);
    }
    {
      // Codec frames with payloads (the server's payload placer claims every other one): one
      // in a record, one across records, one whose head and payload come in separate pieces.
      std::string s(1, sealed_mode);
      WeightsChunk c;
      c.round = 2;
      c.count = 1;
      AppendPiece(s, kWithPrefix, Encode(c, std::string(100, 'p')));
      AppendPiece(s, kWithPrefix, Encode(c, std::string(20000, 'q')));
      const std::string split = Encode(c, std::string(300, 'r'));
      AppendPiece(s, 0, Prefix(static_cast<uint32_t>(split.size())) + split.substr(0, 20));
      AppendPiece(s, 0, split.substr(20, 30));
      AppendPiece(s, 0, split.substr(50));
      Write(t, n + "_sealed_placed_frames", s);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// weights_fuzz

void WeightsSeeds() {
  const std::string t = "weights_fuzz";
  model::Weights w;
  w.spec = SmallSpec();
  w.data = {0.5f, -1.f, 2.f, 3.25f, 4.f, 5.f, 6.f, 7.f};
  Write(t, "small", model::EncodeWeightsFile(w));

  model::Weights scalar;  // rank 0 tensor: one element
  scalar.spec.tensors.push_back({"scale", model::DType::kFloat32, {}});
  scalar.data = {1.f};
  Write(t, "scalar", model::EncodeWeightsFile(scalar));

  model::Weights deep;
  deep.spec.tensors.push_back({"conv.weight", model::DType::kFloat32, {1, 1, 2, 1, 1, 1, 1, 2}});
  deep.spec.tensors.push_back({"conv.bias", model::DType::kFloat32, {1}});
  deep.data = {1, 2, 3, 4, 5};
  Write(t, "rank8", model::EncodeWeightsFile(deep));
}

// ---------------------------------------------------------------------------------------------
// stream_fuzz

void StreamSeeds() {
  const std::string t = "stream_fuzz";
  // [flags][cap selector][piece selector][cap change][stream]
  auto seed = [&](const std::string& name, uint8_t flags, uint8_t cap, uint8_t piece,
                  uint8_t change, const std::string& stream) {
    std::string s{static_cast<char>(flags), static_cast<char>(cap), static_cast<char>(piece),
                  static_cast<char>(change)};
    Write(t, name, s + stream);
  };
  const std::string tls = Greeting(true), plain = Greeting(false);
  seed("tls_two_frames", 1, 16, 0, 20, tls + FrameHeader(5) + "hello" + FrameHeader(0));
  seed("plain_split", 0, 12, 3, 0, plain + FrameHeader(3000) + std::string(3000, 'x'));
  seed("over_cap", 1, 8, 10, 0, tls + FrameHeader(100000) + std::string(64, 'y'));
  seed("raised_cap", 1, 10, 20, 18,
       tls + FrameHeader(1000) + std::string(1000, 'a') + FrameHeader(100000) +
           std::string(2000, 'b'));
  seed("mode_mismatch", 1, 16, 0, 0, plain + FrameHeader(1) + "p");
  seed("from_server", 3, 16, 0, 0, tls + FrameHeader(2) + "ok");
  seed("zmtp", 1, 16, 0, 0, std::string("\xff\0\0\0\0\0\0\0\x01\x7f\x03\x00NULL", 16));
}

// ---------------------------------------------------------------------------------------------
// predict_request_fuzz

void PredictRequestSeeds() {
  const std::string t = "predict_request_fuzz";
  // [sample values - 1][max batch - 1][body]
  auto seed = [&](const std::string& name, uint8_t values, uint8_t batch, const std::string& body) {
    Write(t, name, std::string{static_cast<char>(values - 1), static_cast<char>(batch - 1)} + body);
  };
  seed("two_flat", 4, 4, R"({"inputs": [[0.1, 0.2, 0.3, 0.4], [1, 0, -2e-3, 4]]})");
  seed("nested", 4, 2, R"({"inputs": [[[1, 2], [3, 4]]], "id": {"a": [1, {"b": null}]}})");
  seed("short_input", 4, 2, R"({"inputs": [[1, 2, 3]]})");
  seed("too_many", 1, 1, R"({"inputs": [[1], [2]]})");
  seed("bad_value", 2, 2, R"({"inputs": [[1, "x"]]})");
  seed("huge_value", 1, 1, R"({"inputs": [[1e39]]})");
  seed("deep", 1, 1, R"({"inputs": [[[[[[[[[[1]]]]]]]]]]})");
}

// ---------------------------------------------------------------------------------------------
// http_guard_fuzz

void HttpGuardSeeds() {
  const std::string t = "http_guard_fuzz";
  // [flags: bit 0 = the server requires a token][raw request bytes]
  auto seed = [&](const std::string& name, bool token, const std::string& request) {
    Write(t, name, std::string(1, token ? '\x01' : '\x00') + request);
  };
  const std::string host = "Host: 127.0.0.1\r\n";
  seed("get_health", false, "GET /healthz HTTP/1.1\r\n" + host + "\r\n");
  seed("post_echo", false, "POST /echo HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhello");
  seed("post_token", true,
       "POST /echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
       "fuzz-token-0123456789abcdef\r\nContent-Length: 3\r\n\r\nabc");
  seed("wrong_token", true,
       "POST /echo HTTP/1.1\r\nHost: [::1]\r\nAuthorization: Bearer nope\r\n"
       "Content-Length: 3\r\n\r\nabc");
  seed("big_length", false,
       "POST /echo HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999\r\n\r\nx");
  seed("chunked", false,
       "POST /echo HTTP/1.1\r\n" + host +
           "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  seed("rebinding", false, "GET /healthz HTTP/1.1\r\nHost: evil.example:80\r\n\r\n");
  seed("two_lengths", false,
       "POST /echo HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 80\r\n\r\n" +
           std::string(80, 'b'));
  seed("long_header", false,
       "GET /healthz HTTP/1.1\r\n" + host + "X-Pad: " + std::string(9000, 'p') + "\r\n\r\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  FrameSeeds();
  SecureSeeds();
  WeightsSeeds();
  StreamSeeds();
  PredictRequestSeeds();
  HttpGuardSeeds();
  std::printf("wrote %d seed files under %s\n", g_written, g_out.c_str());
  return 0;
}
