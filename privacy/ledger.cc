#include "privacy/ledger.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "base/file_util.h"
#include "privacy/dp_params.h"

namespace shoal::privacy {
namespace {

constexpr const char* kTag = "dp1";

std::string PrintableRunId(const std::string& id) {
  std::string out = id.empty() ? "-" : id;
  for (char& c : out) {
    if (c <= ' ' || c == 0x7f) c = '_';  // one field: no spaces, no line breaks
  }
  return out;
}

}  // namespace

std::string FormatLedgerLine(const LedgerEntry& e) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %llu %.17g %.17g %llu ", kTag,
                static_cast<unsigned long long>(e.round), e.sampling_rate, e.noise_multiplier,
                static_cast<unsigned long long>(e.steps));
  return buf + PrintableRunId(e.run_id) + "\n";
}

Result<LedgerEntry> ParseLedgerLine(const std::string& line) {
  std::istringstream in(line);
  std::string tag, round, q, sigma, steps, run_id, extra;
  if (!(in >> tag >> round >> q >> sigma >> steps >> run_id) || (in >> extra) || tag != kTag) {
    return InvalidArgument("not a ledger line: \"" + line.substr(0, 80) + "\"");
  }
  LedgerEntry e;
  e.run_id = run_id;
  char* end = nullptr;
  errno = 0;
  e.round = std::strtoull(round.c_str(), &end, 10);
  bool ok = errno == 0 && *end == 0;
  e.sampling_rate = std::strtod(q.c_str(), &end);
  ok = ok && *end == 0;
  e.noise_multiplier = std::strtod(sigma.c_str(), &end);
  ok = ok && *end == 0;
  e.steps = std::strtoull(steps.c_str(), &end, 10);
  ok = ok && errno == 0 && *end == 0;
  DpParams p{DpMode::kSample, 1.0, e.noise_multiplier, e.sampling_rate, e.steps, false};
  if (!ok) return InvalidArgument("bad number in ledger line \"" + line.substr(0, 80) + "\"");
  SHOAL_RETURN_IF_ERROR(ValidateDpParams(p, "ledger "));
  return e;
}

Result<PrivacyLedger> PrivacyLedger::Open(const std::string& path) {
  PrivacyLedger ledger;
  ledger.path_ = path;
  if (path.empty()) return ledger;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return ErrnoStatus("open privacy ledger", path);
  ledger.fd_ = fd;  // closed by the destructor from here on
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("stat privacy ledger", path);
  if (!S_ISREG(st.st_mode)) return InvalidArgument("privacy ledger " + path + " is not a file");
  if (static_cast<uint64_t>(st.st_size) > kMaxLedgerBytes) {
    return InvalidArgument("privacy ledger " + path + " is larger than " +
                           std::to_string(kMaxLedgerBytes) + " bytes");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus("read privacy ledger", path);
    got += static_cast<size_t>(n);
  }
  size_t complete = text.rfind('\n');
  complete = complete == std::string::npos ? 0 : complete + 1;
  if (complete < text.size()) {  // a torn last record: a task that never trained
    if (::ftruncate(fd, static_cast<off_t>(complete)) != 0 || ::fsync(fd) != 0) {
      return ErrnoStatus("cut the torn last line of privacy ledger", path);
    }
  }
  size_t start = 0;
  uint64_t line_no = 0;
  while (start < complete) {
    const size_t nl = text.find('\n', start);
    ++line_no;
    auto e = ParseLedgerLine(text.substr(start, nl - start));
    if (!e.ok()) {
      return Corrupt("privacy ledger " + path + " line " + std::to_string(line_no) + ": " +
                     e.status().message());
    }
    SHOAL_RETURN_IF_ERROR(ledger.accountant_.Compose(e->sampling_rate, e->noise_multiplier,
                                                     static_cast<int64_t>(e->steps)));
    ++ledger.tasks_;
    start = nl + 1;
  }
  return ledger;
}

PrivacyLedger::PrivacyLedger(PrivacyLedger&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(o.fd_),
      tasks_(o.tasks_),
      accountant_(std::move(o.accountant_)) {
  o.fd_ = -1;
}

PrivacyLedger& PrivacyLedger::operator=(PrivacyLedger&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    tasks_ = o.tasks_;
    accountant_ = std::move(o.accountant_);
    o.fd_ = -1;
  }
  return *this;
}

PrivacyLedger::~PrivacyLedger() {
  if (fd_ >= 0) ::close(fd_);
}

Result<PrivacySpent> PrivacyLedger::SpentWith(const LedgerEntry& next, double delta) const {
  RdpAccountant a = accountant_;
  SHOAL_RETURN_IF_ERROR(
      a.Compose(next.sampling_rate, next.noise_multiplier, static_cast<int64_t>(next.steps)));
  return a.Spent(delta);
}

Status PrivacyLedger::Record(const LedgerEntry& e) {
  RdpAccountant next = accountant_;
  SHOAL_RETURN_IF_ERROR(
      next.Compose(e.sampling_rate, e.noise_multiplier, static_cast<int64_t>(e.steps)));
  if (fd_ >= 0) {
    const std::string line = FormatLedgerLine(e);
    size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return ErrnoStatus("append to privacy ledger", path_);
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd_) != 0) return ErrnoStatus("fsync privacy ledger", path_);
  }
  accountant_ = std::move(next);
  ++tasks_;
  return Status::Ok();
}

}  // namespace shoal::privacy
