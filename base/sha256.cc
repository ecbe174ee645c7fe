#include "base/sha256.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <string_view>

#include "base/hex.h"

namespace shoal {

struct Sha256::Impl {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  // Failure here means OpenSSL itself is broken (out of memory): an invariant, not input.
  if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx.get(), EVP_sha256(), nullptr) != 1) std::abort();
}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

Sha256 Sha256::Copy() const {
  Sha256 copy;
  if (EVP_MD_CTX_copy_ex(copy.impl_->ctx.get(), impl_->ctx.get()) != 1) std::abort();
  return copy;
}

void Sha256::Update(const void* data, size_t size) {
  if (size == 0) return;
  if (EVP_DigestUpdate(impl_->ctx.get(), data, size) != 1) std::abort();
}

Digest Sha256::Finish() {
  Digest d{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx.get(), d.data(), &len) != 1 || len != d.size()) std::abort();
  return d;
}

Digest Sha256::Of(const void* data, size_t size) {
  Sha256 h;
  h.Update(data, size);
  return h.Finish();
}

std::string ToHex(const Digest& d) {
  return HexEncode(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

}  // namespace shoal
