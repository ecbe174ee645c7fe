// Small helpers shared by the libFuzzer targets in fuzz/: a front-to-back byte reader, a check
// macro that turns a broken invariant into a crash libFuzzer records, and an allocation cap that
// fails the run as soon as one allocation made by the code under test exceeds a bound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::fuzz {

// Prints "FUZZ CHECK FAILED" with the location, a stack trace, and aborts (libFuzzer then saves
// the input as crash-<sha1>).
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond, const std::string& why);

#define FUZZ_CHECK(cond, why)                                                  \
  do {                                                                         \
    if (!(cond)) ::shoal::fuzz::CheckFailed(__FILE__, __LINE__, #cond, (why)); \
  } while (0)

// Reads fixed-width little-endian integers and byte runs from the front of the input. Reading
// past the end yields zeros / short runs, never an error, so every input is usable.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  explicit ByteReader(std::string_view s)
      : p_(reinterpret_cast<const uint8_t*>(s.data())), n_(s.size()) {}

  bool empty() const { return n_ == 0; }
  size_t remaining() const { return n_; }
  uint64_t Le(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes && n_ > 0; ++i, ++p_, --n_) v |= uint64_t{*p_} << (8 * i);
    return v;
  }
  uint8_t U8() { return static_cast<uint8_t>(Le(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Le(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Le(4)); }
  uint64_t U64() { return Le(8); }
  // Up to `len` bytes (fewer at the end of the input).
  std::string_view Bytes(size_t len) {
    if (len > n_) len = n_;
    std::string_view out(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    n_ -= len;
    return out;
  }
  std::string_view Rest() { return Bytes(n_); }

 private:
  const uint8_t* p_;
  size_t n_;
};

// While an AllocationCap is alive, any single malloc/new/realloc larger than `limit` bytes made
// by this process aborts with a report naming `what` and the stack of the allocation. Uses the
// sanitizer allocator hooks, so OpenSSL's allocations are covered too. Not nestable.
class AllocationCap {
 public:
  AllocationCap(size_t limit, const char* what);
  ~AllocationCap();
  AllocationCap(const AllocationCap&) = delete;
  AllocationCap& operator=(const AllocationCap&) = delete;
  // Largest single allocation seen while this cap was alive.
  size_t max_seen() const;
};

// A private temporary directory removed (recursively) by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace shoal::fuzz
