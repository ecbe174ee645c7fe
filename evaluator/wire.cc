#include "evaluator/wire.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace shoal::evaluator::wire {
namespace {

Status SendAll(int fd, const void* data, uint64_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // MSG_NOSIGNAL: a child that died gives EPIPE here, not a SIGPIPE that ends the coordinator.
    const ssize_t w =
        ::send(fd, p, static_cast<size_t>(std::min<uint64_t>(n, 1 << 30)), MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Unavailable(std::string("model process connection: ") + std::strerror(errno));
    }
    p += w;
    n -= static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

Status RecvAll(int fd, void* data, uint64_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, static_cast<size_t>(std::min<uint64_t>(n, 1 << 30)), 0);
    if (r == 0) return Unavailable("model process connection closed");
    if (r < 0) {
      if (errno == EINTR) continue;
      return Unavailable(std::string("model process connection: ") + std::strerror(errno));
    }
    p += r;
    n -= static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

void PutLe(unsigned char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

uint64_t GetLe(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace

Status Write(int fd, const nlohmann::json& header, const void* blob, uint64_t n) {
  const std::string text = header.dump();
  if (text.size() > kMaxHeaderBytes) return InvalidArgument("model process request too large");
  if (n > kMaxBlobBytes) return InvalidArgument("model process blob too large");
  unsigned char len[4];
  PutLe(len, text.size(), 4);
  SHOAL_RETURN_IF_ERROR(SendAll(fd, len, 4));
  SHOAL_RETURN_IF_ERROR(SendAll(fd, text.data(), text.size()));
  unsigned char blen[8];
  PutLe(blen, n, 8);
  SHOAL_RETURN_IF_ERROR(SendAll(fd, blen, 8));
  return n > 0 ? SendAll(fd, blob, n) : Status::Ok();
}

Result<Header> ReadHeader(int fd) {
  unsigned char len[4];
  SHOAL_RETURN_IF_ERROR(RecvAll(fd, len, 4));
  const uint64_t n = GetLe(len, 4);
  if (n > kMaxHeaderBytes) {
    return ProtocolError("model process message header of " + std::to_string(n) +
                         " bytes (at most " + std::to_string(kMaxHeaderBytes) + ")");
  }
  std::string text(n, '\0');
  SHOAL_RETURN_IF_ERROR(RecvAll(fd, text.data(), n));
  Header h;
  h.json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (h.json.is_discarded() || !h.json.is_object()) {
    return ProtocolError("model process message header is not a JSON object");
  }
  unsigned char blen[8];
  SHOAL_RETURN_IF_ERROR(RecvAll(fd, blen, 8));
  h.blob_bytes = GetLe(blen, 8);
  if (h.blob_bytes > kMaxBlobBytes) {
    return ProtocolError("model process blob of " + std::to_string(h.blob_bytes) + " bytes");
  }
  return h;
}

Status ReadBlob(int fd, void* dst, uint64_t n) { return RecvAll(fd, dst, n); }

Status SkipBlob(int fd, uint64_t n) {
  std::vector<char> buf(std::min<uint64_t>(n, 1 << 20));
  while (n > 0) {
    const uint64_t k = std::min<uint64_t>(n, buf.size());
    SHOAL_RETURN_IF_ERROR(RecvAll(fd, buf.data(), k));
    n -= k;
  }
  return Status::Ok();
}

nlohmann::json StatusJson(const Status& s) {
  return {{"code", CodeName(s.code())}, {"message", s.message()}};
}

Status StatusFromJson(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("code") || !j["code"].is_string()) {
    return ProtocolError("model process reply without a status");
  }
  const std::string name = j["code"].get<std::string>();
  const std::string message = j.value("message", "");
  for (int c = static_cast<int>(Code::kOk); c <= static_cast<int>(Code::kInternal); ++c) {
    if (name == CodeName(static_cast<Code>(c))) return Status(static_cast<Code>(c), message);
  }
  return Internal(name + ": " + message);
}

}  // namespace shoal::evaluator::wire
