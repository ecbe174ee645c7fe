#include "data/idx.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

namespace shoal::data {
namespace {

// Deflate cannot expand data by more than about 1032:1, so a gzip file of S bytes never
// decompresses to more than S * kMaxDeflateRatio bytes. Used to reject absurd dims early.
constexpr uint64_t kMaxDeflateRatio = 1032;
// Data is read (and the destination grown) in chunks of this size, so a header that lies about
// the size of a gzip payload costs at most one chunk beyond the bytes actually present.
constexpr size_t kReadChunk = size_t{16} << 20;
constexpr size_t kWriteChunk = size_t{1} << 20;

std::string Hex2(uint8_t v) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0x%02x", v);
  return buf;
}

std::string U128ToString(unsigned __int128 v) {
  if (v == 0) return "0";
  std::string s;
  while (v > 0) {
    s.push_back(static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  }
  std::reverse(s.begin(), s.end());
  return s;
}

const char* TypeName(uint8_t type_code) {
  switch (type_code) {
    case kIdxU8:
      return "unsigned byte";
    case kIdxI8:
      return "signed byte";
    case kIdxI16:
      return "signed 16-bit integer";
    case kIdxI32:
      return "signed 32-bit integer";
    case kIdxF32:
      return "32-bit float";
    case kIdxF64:
      return "64-bit float";
  }
  return "unknown";
}

Status ErrnoStatus(const std::string& path, const std::string& what) {
  return IoError(path + ": " + what + ": " + std::strerror(errno));
}

// A sequential byte stream. Read returns fewer than n bytes only at the end of the input.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual Result<size_t> Read(uint8_t* buf, size_t n) = 0;
  // True when the input ended in the middle of a compressed stream.
  virtual bool stream_truncated() const { return false; }
};

class FdSource : public ByteSource {
 public:
  FdSource(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~FdSource() override { ::close(fd_); }
  FdSource(const FdSource&) = delete;
  FdSource& operator=(const FdSource&) = delete;

  Result<size_t> Read(uint8_t* buf, size_t n) override {
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::read(fd_, buf + got, n - got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoStatus(path_, "read");
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    return got;
  }

 private:
  int fd_;
  std::string path_;
};

class GzSource : public ByteSource {
 public:
  GzSource(gzFile file, std::string path) : file_(file), path_(std::move(path)) {}
  ~GzSource() override { gzclose(file_); }
  GzSource(const GzSource&) = delete;
  GzSource& operator=(const GzSource&) = delete;

  Result<size_t> Read(uint8_t* buf, size_t n) override {
    size_t got = 0;
    while (got < n) {
      const unsigned want = static_cast<unsigned>(std::min<size_t>(n - got, kReadChunk));
      const int r = gzread(file_, buf + got, want);
      int errnum = Z_OK;
      const char* msg = gzerror(file_, &errnum);
      if (r < 0) {
        if (errnum == Z_ERRNO) return ErrnoStatus(path_, "read");
        return Corrupt(path_ + ": corrupt gzip data near decompressed byte offset " +
                       std::to_string(offset_ + got) + ": " + (msg ? msg : "unknown error"));
      }
      got += static_cast<size_t>(r);
      if (errnum == Z_BUF_ERROR) truncated_ = true;
      if (static_cast<unsigned>(r) < want) break;
    }
    offset_ += got;
    return got;
  }
  bool stream_truncated() const override { return truncated_; }

 private:
  gzFile file_;
  std::string path_;
  uint64_t offset_ = 0;
  bool truncated_ = false;
};

Result<IdxArray> ReadIdxFrom(ByteSource& src, const std::string& path, uint64_t file_size,
                             bool gz) {
  const std::string where = gz ? "decompressed byte offset " : "byte offset ";
  uint8_t head[4];
  SHOAL_ASSIGN_OR_RETURN(size_t got, src.Read(head, sizeof(head)));
  if (got < sizeof(head)) {
    return Corrupt(path + ": truncated header: expected 4 magic bytes at " + where + "0, got " +
                   std::to_string(got));
  }
  if (head[0] != 0 || head[1] != 0) {
    return Corrupt(path + ": bad magic " + Hex2(head[0]) + " " + Hex2(head[1]) + " at " + where +
                   "0: an IDX file starts with two zero bytes");
  }
  IdxArray out;
  out.type_code = head[2];
  const int elem_size = IdxElementSize(out.type_code);
  if (elem_size == 0) {
    return Corrupt(path + ": unknown element type " + Hex2(out.type_code) + " at " + where + "2");
  }
  if (out.type_code != kIdxU8) {
    return InvalidArgument(path + ": unsupported element type " + Hex2(out.type_code) + " (" +
                           TypeName(out.type_code) + ") at " + where +
                           "2; only 0x08 (unsigned byte) is supported");
  }
  const int ndims = head[3];
  if (ndims < 1 || ndims > kIdxMaxDims) {
    return Corrupt(path + ": ndims is " + std::to_string(ndims) + " at " + where +
                   "3, expected 1.." + std::to_string(kIdxMaxDims));
  }
  uint8_t dim_bytes[4 * kIdxMaxDims];
  const size_t dim_len = 4 * static_cast<size_t>(ndims);
  SHOAL_ASSIGN_OR_RETURN(got, src.Read(dim_bytes, dim_len));
  if (got < dim_len) {
    return Corrupt(path + ": truncated header: expected " + std::to_string(dim_len) +
                   " bytes of dimensions at " + where + "4, got " + std::to_string(got));
  }
  unsigned __int128 total = static_cast<unsigned>(elem_size);
  std::string dims_text;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* p = dim_bytes + 4 * i;
    const uint32_t d =
        (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
    out.dims.push_back(static_cast<int64_t>(d));
    total *= d;  // at most 4 factors below 2^32: cannot overflow 128 bits
    dims_text += (i ? "x" : "") + std::to_string(d);
  }
  const uint64_t header_len = 4 + dim_len;
  const std::string claim =
      "dims " + dims_text + " (at " + where + "4) describe " + U128ToString(total) + " data bytes";

  if (!gz) {
    // header_len bytes were read, so only a file that shrank meanwhile can be shorter.
    const uint64_t remaining = file_size > header_len ? file_size - header_len : 0;
    if (total > remaining) {
      return Corrupt(path + ": truncated: expected " + U128ToString(total) + " data bytes, got " +
                     std::to_string(remaining));
    }
    if (total > kIdxMaxDataBytes) {
      return InvalidArgument(path + ": " + claim + ", more than the limit of " +
                             std::to_string(kIdxMaxDataBytes));
    }
    if (total < remaining) {
      return Corrupt(path + ": " + std::to_string(remaining - static_cast<uint64_t>(total)) +
                     " unexpected trailing bytes after the data, starting at byte offset " +
                     std::to_string(header_len + static_cast<uint64_t>(total)));
    }
    const size_t n = static_cast<size_t>(total);
    out.data.resize(n);
    SHOAL_ASSIGN_OR_RETURN(got, src.Read(out.data.data(), n));
    if (got < n) {  // the file shrank while we read it
      return Corrupt(path + ": truncated: expected " + std::to_string(n) + " data bytes, got " +
                     std::to_string(got));
    }
    return out;
  }

  if (total > kIdxMaxDataBytes) {
    return InvalidArgument(path + ": " + claim + ", more than the limit of " +
                           std::to_string(kIdxMaxDataBytes));
  }
  const uint64_t n = static_cast<uint64_t>(total);
  if (n > file_size * kMaxDeflateRatio) {
    // The file cannot hold that much; count what it does hold without keeping it.
    std::vector<uint8_t> scratch(std::min<uint64_t>(n, kReadChunk));
    uint64_t have = 0;
    while (have < n) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(n - have, scratch.size()));
      SHOAL_ASSIGN_OR_RETURN(got, src.Read(scratch.data(), want));
      have += got;
      if (got < want) break;
    }
    return Corrupt(path + ": truncated: expected " + std::to_string(n) + " data bytes, got " +
                   std::to_string(have));
  }
  // The claim is not trusted until the data arrives, so the buffer grows with it, doubling but
  // never past n: the last step ends at exactly n instead of the next power of two (reading
  // Fashion-MNIST's 47 MB of images peaked at 100 MB with plain vector growth, now 79 MB).
  uint64_t have = 0;
  while (have < n) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(n - have, kReadChunk));
    if (have + want > out.data.capacity()) {
      out.data.reserve(static_cast<size_t>(
          std::min<uint64_t>(n, std::max<uint64_t>(2 * out.data.capacity(), have + want))));
    }
    out.data.resize(static_cast<size_t>(have) + want);
    SHOAL_ASSIGN_OR_RETURN(got, src.Read(out.data.data() + have, want));
    have += got;
    if (got < want) {
      return Corrupt(path + ": truncated: expected " + std::to_string(n) + " data bytes, got " +
                     std::to_string(have));
    }
  }
  uint8_t extra;
  SHOAL_ASSIGN_OR_RETURN(got, src.Read(&extra, 1));
  if (got > 0) {
    return Corrupt(path + ": unexpected trailing bytes after the data, starting at " + where +
                   std::to_string(header_len + n));
  }
  if (src.stream_truncated()) {
    return Corrupt(path + ": truncated gzip stream: all " + std::to_string(n) +
                   " data bytes are present but the gzip trailer is missing or cut short");
  }
  return out;
}

Status WriteAll(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(path, "write");
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Streams `header` then `data` through a gzip deflater into `fd`.
Status WriteGzip(int fd, const std::vector<uint8_t>& header, const std::vector<uint8_t>& data,
                 const std::string& path) {
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return Internal(path + ": deflateInit2 failed");
  }
  std::vector<uint8_t> out(kWriteChunk);
  Status st;
  auto pump = [&](const uint8_t* p, size_t n, int flush) -> Status {
    zs.next_in = const_cast<Bytef*>(p);
    zs.avail_in = static_cast<uInt>(n);
    int rc = Z_OK;
    do {
      zs.next_out = out.data();
      zs.avail_out = static_cast<uInt>(out.size());
      rc = deflate(&zs, flush);
      if (rc == Z_STREAM_ERROR) return Internal(path + ": deflate failed");
      SHOAL_RETURN_IF_ERROR(WriteAll(fd, out.data(), out.size() - zs.avail_out, path));
    } while (zs.avail_out == 0);
    if (flush == Z_FINISH && rc != Z_STREAM_END) {
      return Internal(path + ": deflate did not finish the stream");
    }
    return Status::Ok();
  };
  st = pump(header.data(), header.size(), Z_NO_FLUSH);
  size_t off = 0;
  while (st.ok() && off < data.size()) {
    const size_t n = std::min(data.size() - off, kReadChunk);
    st = pump(data.data() + off, n, Z_NO_FLUSH);
    off += n;
  }
  if (st.ok()) st = pump(nullptr, 0, Z_FINISH);
  deflateEnd(&zs);
  return st;
}

}  // namespace

int IdxElementSize(uint8_t type_code) {
  switch (type_code) {
    case kIdxU8:
    case kIdxI8:
      return 1;
    case kIdxI16:
      return 2;
    case kIdxI32:
    case kIdxF32:
      return 4;
    case kIdxF64:
      return 8;
  }
  return 0;
}

Result<IdxArray> ReadIdx(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound(path + ": no such file");
    return ErrnoStatus(path, "open");
  }
  struct stat sb;
  if (::fstat(fd, &sb) != 0) {
    Status st = ErrnoStatus(path, "stat");
    ::close(fd);
    return st;
  }
  if (!S_ISREG(sb.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + ": not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(sb.st_size);
  uint8_t sig[2] = {0, 0};
  const ssize_t n = ::pread(fd, sig, sizeof(sig), 0);
  if (n < 0) {
    Status st = ErrnoStatus(path, "read");
    ::close(fd);
    return st;
  }
  const bool gz = n == 2 && sig[0] == 0x1f && sig[1] == 0x8b;
  if (!gz) {
    FdSource src(fd, path);
    return ReadIdxFrom(src, path, file_size, false);
  }
  gzFile file = gzdopen(fd, "rb");
  if (file == nullptr) {
    ::close(fd);
    return IoError(path + ": gzdopen failed");
  }
  gzbuffer(file, 1u << 17);
  GzSource src(file, path);
  return ReadIdxFrom(src, path, file_size, true);
}

Status WriteIdx(const std::string& path, const IdxArray& a, bool gzip) {
  const int elem_size = IdxElementSize(a.type_code);
  if (elem_size == 0) {
    return InvalidArgument(path + ": cannot write unknown IDX element type " + Hex2(a.type_code));
  }
  if (a.dims.empty() || a.dims.size() > static_cast<size_t>(kIdxMaxDims)) {
    return InvalidArgument(path + ": cannot write " + std::to_string(a.dims.size()) +
                           " dims, expected 1.." + std::to_string(kIdxMaxDims));
  }
  unsigned __int128 total = static_cast<unsigned>(elem_size);
  std::vector<uint8_t> header = {0, 0, a.type_code, static_cast<uint8_t>(a.dims.size())};
  for (size_t i = 0; i < a.dims.size(); ++i) {
    const int64_t d = a.dims[i];
    if (d < 0 || d > int64_t{UINT32_MAX}) {
      return InvalidArgument(path + ": dim " + std::to_string(i) + " is " + std::to_string(d) +
                             ", expected 0.." + std::to_string(UINT32_MAX));
    }
    total *= static_cast<uint64_t>(d);
    for (int shift = 24; shift >= 0; shift -= 8) {
      header.push_back(static_cast<uint8_t>((static_cast<uint64_t>(d) >> shift) & 0xff));
    }
  }
  if (total != a.data.size()) {
    return InvalidArgument(path + ": dims describe " + U128ToString(total) +
                           " data bytes but the array holds " + std::to_string(a.data.size()));
  }
  if (total > kIdxMaxDataBytes) {
    return InvalidArgument(path + ": " + U128ToString(total) + " data bytes exceed the limit of " +
                           std::to_string(kIdxMaxDataBytes));
  }

  // An unpredictable temporary name, created exclusively (mkostemp: O_CREAT|O_EXCL, so a file or
  // symlink planted there is never followed or truncated), then given the file's mode.
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(tmp, "create");
  Status st;
  if (::fchmod(fd, 0644) != 0) {
    st = ErrnoStatus(tmp, "chmod");
  } else if (gzip) {
    st = WriteGzip(fd, header, a.data, tmp);
  } else {
    st = WriteAll(fd, header.data(), header.size(), tmp);
    if (st.ok()) st = WriteAll(fd, a.data.data(), a.data.size(), tmp);
  }
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoStatus(tmp, "fsync");
  if (::close(fd) != 0 && st.ok()) st = ErrnoStatus(tmp, "close");
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    st = ErrnoStatus(tmp, "rename to " + path);
  }
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoStatus(dir, "open directory");
  const int rc = ::fsync(dfd);
  ::close(dfd);
  if (rc != 0) return ErrnoStatus(dir, "fsync directory");
  return Status::Ok();
}

}  // namespace shoal::data
