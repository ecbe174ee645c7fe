#include "base/file_util.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace shoal {
namespace {

Status Errno(const std::string& what, const std::string& path) { return ErrnoStatus(what, path); }

Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno("write", path);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Fault injection for crash tests (as LevelDB's fault-injection Env): with
// SHOAL_FAULT_CRASH_BEFORE_RENAME=<substring>[#N], the process dies (exit 70, no clean-up) after
// the N-th (default: first) temporary file whose target path contains <substring> is written and
// synced, before the rename: the state a power cut or kill -9 at that instant leaves behind.
void MaybeCrashBeforeRename(const std::string& path) {
  const char* env = std::getenv("SHOAL_FAULT_CRASH_BEFORE_RENAME");
  if (env == nullptr || *env == '\0') return;
  std::string pattern = env;
  long nth = 1;
  if (const size_t hash = pattern.rfind('#'); hash != std::string::npos) {
    nth = std::strtol(pattern.c_str() + hash + 1, nullptr, 10);
    pattern.resize(hash);
  }
  static std::atomic<long> matches{0};
  if (path.find(pattern) != std::string::npos && ++matches == nth) ::_exit(70);
}

// Random bytes of a temporary name: a name nobody can predict, so nobody can plant a symlink or
// file there first.
constexpr size_t kTempNameRandomBytes = 12;
// Attempts at a fresh temporary name before giving up (a collision of 96 random bits means
// something else is wrong).
constexpr int kTempNameAttempts = 8;

// Creates a new temporary file "<path><infix><random>" with `mode`: O_EXCL and O_NOFOLLOW, so an
// existing file or a symlink planted at that name is never opened, let alone truncated or
// followed. Sets *tmp to its name and returns the descriptor.
Result<int> CreateTempFile(const std::string& path, const char* infix, mode_t mode,
                           std::string* tmp) {
  for (int attempt = 0; attempt < kTempNameAttempts; ++attempt) {
    SHOAL_ASSIGN_OR_RETURN(std::string suffix, RandomFileSuffix());
    *tmp = path + infix + suffix;
    int fd = ::open(tmp->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd >= 0) {
      if (::fchmod(fd, mode) != 0) {  // O_CREAT's mode is filtered by the umask
        Status st = Errno("chmod", *tmp);
        ::close(fd);
        ::unlink(tmp->c_str());
        return st;
      }
      return fd;
    }
    if (errno != EEXIST) return Errno("create", *tmp);
  }
  return IoError("create a temporary file beside " + path + ": " +
                 std::to_string(kTempNameAttempts) + " random names were all taken");
}

}  // namespace

Result<std::string> RandomFileSuffix() {
  unsigned char bytes[kTempNameRandomBytes];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t r = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return IoError(std::string("getrandom: ") + std::strerror(errno));
    }
    got += static_cast<size_t>(r);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

Status ErrnoStatus(const std::string& what, const std::string& path) {
  return IoError(what + " " + path + ": " + std::strerror(errno));
}

Status SyncDirectory(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open directory", dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync directory", dir);
  return Status::Ok();
}

Status CreateFileAtomic(const std::string& path, std::string_view data, mode_t mode) {
  std::string tmp;
  SHOAL_ASSIGN_OR_RETURN(int fd, CreateTempFile(path, ".new.", mode, &tmp));
  Status st = WriteAll(fd, data.data(), data.size(), tmp);
  if (st.ok() && ::fsync(fd) != 0) st = Errno("fsync", tmp);
  if (::close(fd) != 0 && st.ok()) st = Errno("close", tmp);
  if (st.ok() && ::link(tmp.c_str(), path.c_str()) != 0) {
    st = errno == EEXIST ? Rejected(path + " already exists; refusing to overwrite it")
                         : Errno("link to " + path, tmp);
  }
  ::unlink(tmp.c_str());
  SHOAL_RETURN_IF_ERROR(st);
  return SyncDirectory(std::filesystem::path(path).parent_path().string());
}

Status WriteFileAtomic(const std::string& path, const std::vector<std::string_view>& parts,
                       mode_t mode) {
  // A random name created exclusively: concurrent writers of one path never share a temporary
  // file, and another local user cannot predict it to plant a symlink there.
  std::string tmp;
  SHOAL_ASSIGN_OR_RETURN(int fd, CreateTempFile(path, ".tmp.", mode, &tmp));
  Status st;
  for (auto part : parts) {
    st = WriteAll(fd, part.data(), part.size(), tmp);
    if (!st.ok()) break;
  }
  if (st.ok() && ::fsync(fd) != 0) st = Errno("fsync", tmp);
  if (::close(fd) != 0 && st.ok()) st = Errno("close", tmp);
  MaybeCrashBeforeRename(path);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Errno("rename to " + path, tmp);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return SyncDirectory(std::filesystem::path(path).parent_path().string());
}

Result<std::string> ReadFile(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("no such file: " + path);
    return Errno("open", path);
  }
  struct stat sb;
  if (::fstat(fd, &sb) != 0) {
    Status st = Errno("stat", path);
    ::close(fd);
    return st;
  }
  if (static_cast<uint64_t>(sb.st_size) > max_bytes) {
    ::close(fd);
    return InvalidArgument(path + ": file is " + std::to_string(sb.st_size) +
                           " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  std::string out(static_cast<size_t>(sb.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      Status st = Errno("read", path);
      ::close(fd);
      return st;
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

Status AppendLine(const std::string& path, std::string_view line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("open", path);
  std::string buf(line);
  buf.push_back('\n');
  Status st = WriteAll(fd, buf.data(), buf.size(), path);
  if (st.ok() && ::fsync(fd) != 0) st = Errno("fsync", path);
  ::close(fd);
  return st;
}

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return IoError("create directory " + path + ": " + ec.message());
  return Status::Ok();
}

Result<std::string> FindCompanionExecutable(const std::string& name) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::string beside = ec ? std::string() : (self.parent_path() / name).string();
  if (!beside.empty() && ::access(beside.c_str(), X_OK) == 0) return beside;
  if (const char* path = std::getenv("PATH")) {
    std::string dirs = path;
    size_t start = 0;
    while (start <= dirs.size()) {
      const size_t end = std::min(dirs.find(':', start), dirs.size());
      const std::string dir = dirs.substr(start, end - start);
      const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
      start = end + 1;
    }
  }
  return NotFound(name + " was not found " + (beside.empty() ? "" : "at " + beside + " ") +
                  "or on PATH");
}

bool PathExists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

}  // namespace shoal
