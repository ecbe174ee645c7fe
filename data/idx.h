// IDX files, the format of MNIST and Fashion-MNIST: a big-endian magic (0x00 0x00 type ndims),
// ndims big-endian u32 dimensions, then the raw elements. Files may be gzipped (detected by the
// 0x1f 0x8b magic, not by the file name) or plain.
//
// Errors (every message starts with the file path and names the byte offset or field):
//   NotFound        the file does not exist.
//   Corrupt         bad magic, ndims outside 1..kIdxMaxDims, truncated header or data
//                   ("<path>: truncated: expected N data bytes, got M"), trailing bytes, broken
//                   gzip stream.
//   InvalidArgument an element type other than unsigned byte (0x08) on read, data larger than
//                   kIdxMaxDataBytes, or an IdxArray whose dims and data disagree on write.
//   IoError         the operating system refused to open, read, write or rename.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal::data {

// IDX element type codes.
inline constexpr uint8_t kIdxU8 = 0x08;
inline constexpr uint8_t kIdxI8 = 0x09;
inline constexpr uint8_t kIdxI16 = 0x0B;
inline constexpr uint8_t kIdxI32 = 0x0C;
inline constexpr uint8_t kIdxF32 = 0x0D;
inline constexpr uint8_t kIdxF64 = 0x0E;

// Limits checked before any allocation.
inline constexpr int kIdxMaxDims = 4;
inline constexpr uint64_t kIdxMaxDataBytes = uint64_t{1} << 31;  // 2 GiB, inclusive

struct IdxArray {
  uint8_t type_code = kIdxU8;
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // raw big-endian element bytes, row-major
};

// Size in bytes of one element of `type_code`, or 0 for an unknown code.
int IdxElementSize(uint8_t type_code);

// Reads a plain or gzipped IDX file. Only type 0x08 (unsigned byte) is supported.
Result<IdxArray> ReadIdx(const std::string& path);

// Writes `a` (any standard type code; data.size() must equal prod(dims) * element size) to
// `path + ".tmp"`, fsyncs it and renames it over `path`. `gzip` selects gzip compression.
Status WriteIdx(const std::string& path, const IdxArray& a, bool gzip);

}  // namespace shoal::data
