// Ed25519 signatures (OpenSSL 3 EVP) for exported models, and the coordinator's signing key.
//
// Keys are PEM: PKCS#8 ("PRIVATE KEY") for private keys, SubjectPublicKeyInfo ("PUBLIC KEY") for
// public keys. A public key's fingerprint is the lowercase hex SHA-256 of its DER
// SubjectPublicKeyInfo, so it does not depend on PEM line breaks.
//
// The coordinator's key pair lives at <run_dir>/keys/coordinator.key (mode 0600) and
// <run_dir>/keys/coordinator.pub; keys/ itself is made mode 0700.
//
// Errors:
//   NotFound        a key file or the run directory does not exist.
//   InvalidArgument PEM text that is not an Ed25519 key of the expected kind (or is encrypted),
//                   hex text that is not hex.
//   Corrupt         a signature that does not verify; a coordinator key pair whose public half
//                   does not match the private key, or a public key without its private key.
//   IoError         reading, writing, locking or chmod failed.
//   Internal        OpenSSL failed to generate a key or to sign.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace shoal::security {

class PublicKey {
 public:
  static Result<PublicKey> FromPem(std::string_view pem);
  static Result<PublicKey> Load(const std::string& path);

  PublicKey(PublicKey&&) noexcept;
  PublicKey& operator=(PublicKey&&) noexcept;
  ~PublicKey();

  // Ok when `signature` (64 raw bytes) is this key's Ed25519 signature of `data`, else Corrupt.
  Status Verify(std::string_view data, std::string_view signature) const;
  // Canonical PEM (as OpenSSL writes it) and the SHA-256 fingerprint described above.
  const std::string& pem() const;
  const std::string& fingerprint() const;

 private:
  struct Impl;
  explicit PublicKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class PrivateKey {
 public:
  static Result<PrivateKey> Generate();
  static Result<PrivateKey> FromPem(std::string_view pem);
  static Result<PrivateKey> Load(const std::string& path);

  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;
  ~PrivateKey();

  // Writes the private key (then chmod 0600) and the public key, each atomically.
  Status Save(const std::string& private_path, const std::string& public_path) const;
  // The 64-byte Ed25519 signature of `data`.
  Result<std::string> Sign(std::string_view data) const;
  const PublicKey& public_key() const;
  // PKCS#8 PEM of the private key.
  Result<std::string> ToPem() const;

 private:
  struct Impl;
  explicit PrivateKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

std::string SigningKeyPath(const std::string& run_dir);        // <run_dir>/keys/coordinator.key
std::string SigningPublicKeyPath(const std::string& run_dir);  // <run_dir>/keys/coordinator.pub

// Creates the coordinator's key pair when it is missing (under an exclusive lock on
// keys/.lock, so a coordinator and an export starting together agree on one key). When the
// private key exists but the public one does not, the public one is rewritten from it. When
// both exist they must match (Corrupt otherwise). NotFound when run_dir does not exist.
Status EnsureCoordinatorKey(const std::string& run_dir);

}  // namespace shoal::security
