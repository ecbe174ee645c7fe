// The protocol between the coordinator's ChildProcessRuntime (child_process_runtime.h) and
// the shoal-evaluator process serving it (server.h). One request, one reply, in order, on a
// Unix stream socket: u32 header length (little endian), a JSON header, u64 blob length, blob
// bytes (a TorchScript archive or float32 weights, written and read in place). Every length is
// checked against a cap before anything is allocated; the reader of a weights blob allocates
// from a spec it validated.
//
// Requests ("op" in the header; replies carry "status", see StatusJson):
//   configure        threads                                     -> runtime
//   initial_weights  model, input_shape, num_classes, seed; blob = TorchScript archive
//                                                                -> spec; blob = weights
//   open_evaluator   model, input_shape, num_classes, format, path, split, label_column, limit;
//                    blob = TorchScript archive                  -> id, size
//   evaluate         id, spec; blob = weights                    -> count, loss, accuracy,
//                                                                   cpu_seconds
//   close_evaluator  id                                          -> (status only)
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "base/status.h"

namespace shoal::evaluator::wire {

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

}  // namespace shoal::evaluator::wire
