#include "coordinator/aggregation/update_spill.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/file_util.h"

namespace shoal::coordinator {

namespace {

Status SysError(const std::string& what, const std::string& path) {
  return IoError("spill file: " + what + " in " + path + ": " + std::strerror(errno));
}

// An unnamed read-write file in `dir`: O_TMPFILE, else a random name created exclusively (no
// symlink followed, nothing existing opened) and unlinked before anything is written to it.
Result<int> OpenUnnamed(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    return SysError("open (O_TMPFILE)", dir);
  }
  constexpr int kAttempts = 8;  // a collision of 96 random bits means something else is wrong
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    SHOAL_ASSIGN_OR_RETURN(std::string suffix, RandomFileSuffix());
    const std::string path = dir + "/" + kSpillPrefix + suffix;
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
      if (::unlink(path.c_str()) != 0) {
        Status st = SysError("unlink", path);
        ::close(fd);
        return st;
      }
      return fd;
    }
    if (errno != EEXIST) return SysError("create", path);
  }
  return IoError("spill file: " + std::to_string(kAttempts) + " random names in " + dir +
                 " were all taken");
}

}  // namespace

UpdateSpill::~UpdateSpill() { Close(); }

Status UpdateSpill::Open(const std::string& dir, size_t values) {
  Close();
  if (values == 0) return InvalidArgument("spill file: updates of 0 values");
  SHOAL_RETURN_IF_ERROR(MakeDirs(dir));
  SHOAL_ASSIGN_OR_RETURN(fd_, OpenUnnamed(dir));
  dir_ = dir;
  values_ = values;
  updates_ = 0;
  return Status::Ok();
}

Status UpdateSpill::Clear() {
  if (fd_ < 0) return Status::Ok();
  updates_ = 0;
  if (::ftruncate(fd_, 0) != 0) return SysError("truncate", dir_);
  return Status::Ok();
}

void UpdateSpill::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  updates_ = 0;
}

Status UpdateSpill::Append(const float* update) {
  if (fd_ < 0) return Internal("spill file: append before open");
  const uint64_t update_bytes = static_cast<uint64_t>(values_) * sizeof(float);
  struct statvfs fs {};
  if (::fstatvfs(fd_, &fs) != 0) return SysError("statvfs", dir_);
  const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free_bytes < update_bytes + kSpillFreeReserve) {
    return Unavailable("spill file: update " + std::to_string(updates_ + 1) + " needs " +
                       std::to_string(update_bytes) + " bytes (+" +
                       std::to_string(kSpillFreeReserve) + " kept free) in " + dir_ + ", only " +
                       std::to_string(free_bytes) +
                       " are free (strategy.spill_dir; the round's robust aggregator keeps every "
                       "update on disk)");
  }
  // posix_fallocate reserves the blocks now: a disk that fills up later cannot fail a write
  // half-way through the update.
  const off_t at = static_cast<off_t>(bytes());
  if (int err = ::posix_fallocate(fd_, at, static_cast<off_t>(update_bytes));
      err != 0 && err != EOPNOTSUPP && err != EINVAL) {
    errno = err;
    return SysError("allocate " + std::to_string(update_bytes) + " bytes", dir_);
  }
  const char* p = reinterpret_cast<const char*>(update);
  uint64_t done = 0;
  while (done < update_bytes) {
    ssize_t w = ::pwrite(fd_, p + done, update_bytes - done, at + static_cast<off_t>(done));
    if (w < 0) {
      if (errno == EINTR) continue;
      Status st = SysError("write", dir_);
      (void)::ftruncate(fd_, at);  // the partial update is not part of the file
      return st;
    }
    done += static_cast<uint64_t>(w);
  }
  ++updates_;
  return Status::Ok();
}

Status UpdateSpill::Read(size_t index, size_t begin, size_t n, float* out) const {
  if (index >= updates_ || begin > values_ || n > values_ - begin) {
    return InvalidArgument("spill file: read of update " + std::to_string(index) + " [" +
                           std::to_string(begin) + ", +" + std::to_string(n) + ") outside " +
                           std::to_string(updates_) + " updates of " + std::to_string(values_) +
                           " values");
  }
  const off_t at =
      static_cast<off_t>((static_cast<uint64_t>(index) * values_ + begin) * sizeof(float));
  char* p = reinterpret_cast<char*>(out);
  const size_t want = n * sizeof(float);
  size_t done = 0;
  while (done < want) {
    ssize_t r = ::pread(fd_, p + done, want - done, at + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return SysError("read", dir_);
    }
    if (r == 0) return IoError("spill file: short read in " + dir_);
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

int UpdateSpill::RemoveLeftovers(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  int removed = 0;
  const size_t prefix_len = std::strlen(kSpillPrefix);
  while (dirent* e = ::readdir(d)) {
    if (std::strncmp(e->d_name, kSpillPrefix, prefix_len) != 0) continue;
    if (::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace shoal::coordinator
