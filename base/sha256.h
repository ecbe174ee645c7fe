// SHA-256 through OpenSSL 3's EVP interface. Used for version hashes and file checksums.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace shoal {

using Digest = std::array<uint8_t, 32>;

// Incremental hasher. Not thread-safe; move-only.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  // A second hasher in this one's state: what was hashed so far is hashed once for several
  // inputs that share it as a prefix.
  Sha256 Copy() const;
  void Update(const void* data, size_t size);
  // Returns the digest; the hasher must not be updated afterwards.
  Digest Finish();

  static Digest Of(const void* data, size_t size);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// HexEncode of the digest: 64 lowercase hex digits.
std::string ToHex(const Digest& d);

}  // namespace shoal
