// The coordinator's LibTorch work (model_ops.h: initial weights, central evaluation) runs in a
// child process, shoal-evaluator, so that the coordinator itself never loads LibTorch:
//   - the process that holds the federation's keys and state does not map LibTorch's 291 shared
//     libraries nor run a user-supplied TorchScript model, and a crash or runaway allocation in
//     either ends the child, not the federation (a new child takes over the central evaluation,
//     see RemoteEvaluator in model_host.cc; if that fails too, the round engine stops the run
//     and a restart resumes);
//   - the coordinator's memory is its own: about 40 MiB + the models it holds, instead of
//     LibTorch's 151 MiB floor + the test set + evaluation workspace on top.
// The child exists while it has work: at start-up (initial weights) and, with central
// evaluation, for the whole run.
//
// This header is the pipe protocol both sides speak. One request, one reply, in order, on a
// Unix stream socket: u32 header length (little endian), a JSON header, u64 blob length, blob
// bytes (a TorchScript archive or float32 weights, written and read in place). Every length is
// checked against a cap before anything is allocated; the reader of a weights blob allocates
// from a spec it validated.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shoal::evaluator::model_host {

inline constexpr uint32_t kMaxHeaderBytes = 16u << 20;
inline constexpr uint64_t kMaxBlobBytes = uint64_t{64} << 30;

struct Header {
  nlohmann::json json;
  uint64_t blob_bytes = 0;
};

// Writes one message; the blob (may be null when n == 0) is sent from where it lies.
Status Write(int fd, const nlohmann::json& header, const void* blob, uint64_t n);
// Reads one message's header; the caller then reads exactly blob_bytes with ReadBlob (or
// SkipBlob). Unavailable when the other side has closed the connection.
Result<Header> ReadHeader(int fd);
Status ReadBlob(int fd, void* dst, uint64_t n);
Status SkipBlob(int fd, uint64_t n);

// A Status in a reply header ({"code": name, "message": ...}) and back.
nlohmann::json StatusJson(const Status& s);
Status StatusFromJson(const nlohmann::json& j);

}  // namespace shoal::evaluator::model_host
