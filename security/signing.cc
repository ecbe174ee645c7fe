#include "security/signing.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/file_util.h"
#include "base/sha256.h"
#include "security/openssl_util.h"
#include "security/x509.h"  // BioText

namespace shoal::security {
namespace {

constexpr size_t kSignatureBytes = 64;

Result<std::string> PublicPemOf(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) {
    return Internal("write public key PEM: " + OpenSslError());
  }
  return BioText(bio.get());
}

Result<std::string> FingerprintOf(EVP_PKEY* key) {
  int len = i2d_PUBKEY(key, nullptr);
  if (len <= 0) return Internal("encode public key as DER: " + OpenSslError());
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_PUBKEY(key, &p) != len) return Internal("encode public key as DER: " + OpenSslError());
  return ToHex(Sha256::Of(der.data(), der.size()));
}

bool IsEd25519(EVP_PKEY* key) { return EVP_PKEY_get_id(key) == EVP_PKEY_ED25519; }

Status Errno(const std::string& what, const std::string& path) {
  return IoError(what + " " + path + ": " + std::strerror(errno));
}

// An open file descriptor, closed on destruction.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

struct PublicKey::Impl {
  EvpPkeyPtr key;
  std::string pem;
  std::string fingerprint;
};

struct PrivateKey::Impl {
  EvpPkeyPtr key;
  PublicKey public_key;
};

// The public half of `key` (a private or public Ed25519 key), holding no private material.
static Result<PublicKey> PublicHalf(EVP_PKEY* key) {
  SHOAL_ASSIGN_OR_RETURN(std::string pem, PublicPemOf(key));
  return PublicKey::FromPem(pem);
}

PublicKey::PublicKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PublicKey::PublicKey(PublicKey&&) noexcept = default;
PublicKey& PublicKey::operator=(PublicKey&&) noexcept = default;
PublicKey::~PublicKey() = default;

Result<PublicKey> PublicKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxPemBytes) return InvalidArgument("public key PEM is larger than 64 KiB");
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Internal("OpenSSL could not allocate a BIO");
  EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) return InvalidArgument("not a PEM public key: " + OpenSslError());
  if (!IsEd25519(key.get())) return InvalidArgument("public key is not an Ed25519 key");
  SHOAL_ASSIGN_OR_RETURN(std::string canonical, PublicPemOf(key.get()));
  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, FingerprintOf(key.get()));
  return PublicKey(
      std::make_unique<Impl>(Impl{std::move(key), std::move(canonical), std::move(fingerprint)}));
}

Result<PublicKey> PublicKey::Load(const std::string& path) {
  SHOAL_ASSIGN_OR_RETURN(std::string pem, ReadFile(path, kMaxPemBytes));
  auto key = FromPem(pem);
  if (!key.ok()) return key.status().Annotate(path);
  return key;
}

Status PublicKey::Verify(std::string_view data, std::string_view signature) const {
  if (signature.size() != kSignatureBytes) {
    return Corrupt("signature is " + std::to_string(signature.size()) + " bytes, an Ed25519 " +
                   "signature is 64");
  }
  ERR_clear_error();
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, impl_->key.get()) != 1) {
    return Internal("start Ed25519 verification: " + OpenSslError());
  }
  int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                            signature.size(), reinterpret_cast<const unsigned char*>(data.data()),
                            data.size());
  ERR_clear_error();
  if (rc != 1) return Corrupt("signature does not verify with key " + impl_->fingerprint);
  return Status::Ok();
}

const std::string& PublicKey::pem() const { return impl_->pem; }
const std::string& PublicKey::fingerprint() const { return impl_->fingerprint; }

PrivateKey::PrivateKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrivateKey::PrivateKey(PrivateKey&&) noexcept = default;
PrivateKey& PrivateKey::operator=(PrivateKey&&) noexcept = default;
PrivateKey::~PrivateKey() = default;

Result<PrivateKey> PrivateKey::Generate() {
  ERR_clear_error();
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return Internal("generate Ed25519 key: " + OpenSslError());
  }
  EvpPkeyPtr key(raw);
  SHOAL_ASSIGN_OR_RETURN(PublicKey pub, PublicHalf(key.get()));
  return PrivateKey(std::make_unique<Impl>(Impl{std::move(key), std::move(pub)}));
}

Result<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxPemBytes) return InvalidArgument("private key PEM is larger than 64 KiB");
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Internal("OpenSSL could not allocate a BIO");
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) return InvalidArgument("not an unencrypted PEM private key: " + OpenSslError());
  if (!IsEd25519(key.get())) return InvalidArgument("private key is not an Ed25519 key");
  SHOAL_ASSIGN_OR_RETURN(PublicKey pub, PublicHalf(key.get()));
  return PrivateKey(std::make_unique<Impl>(Impl{std::move(key), std::move(pub)}));
}

Result<PrivateKey> PrivateKey::Load(const std::string& path) {
  SHOAL_ASSIGN_OR_RETURN(std::string pem, ReadFile(path, kMaxPemBytes));
  auto key = FromPem(pem);
  // The PEM text holds the secret: do not keep it around longer than needed.
  OPENSSL_cleanse(pem.data(), pem.size());
  if (!key.ok()) return key.status().Annotate(path);
  return key;
}

Result<std::string> PrivateKey::ToPem() const {
  ERR_clear_error();
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), impl_->key.get(), nullptr, nullptr, 0, nullptr,
                                       nullptr) != 1) {
    return Internal("write private key PEM: " + OpenSslError());
  }
  return BioText(bio.get());
}

Status PrivateKey::Save(const std::string& private_path, const std::string& public_path) const {
  SHOAL_ASSIGN_OR_RETURN(std::string pem, ToPem());
  Status st = WriteFileAtomic(private_path, pem, 0600);
  OPENSSL_cleanse(pem.data(), pem.size());
  SHOAL_RETURN_IF_ERROR(st);
  return WriteFileAtomic(public_path, impl_->public_key.pem());
}

Result<std::string> PrivateKey::Sign(std::string_view data) const {
  ERR_clear_error();
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, impl_->key.get()) != 1) {
    return Internal("start Ed25519 signing: " + OpenSslError());
  }
  std::string sig(kSignatureBytes, '\0');
  size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1 ||
      len != kSignatureBytes) {
    return Internal("Ed25519 signing failed: " + OpenSslError());
  }
  return sig;
}

const PublicKey& PrivateKey::public_key() const { return impl_->public_key; }

std::string SigningKeyPath(const std::string& run_dir) { return run_dir + "/keys/coordinator.key"; }
std::string SigningPublicKeyPath(const std::string& run_dir) {
  return run_dir + "/keys/coordinator.pub";
}

Status EnsureCoordinatorKey(const std::string& run_dir) {
  struct stat sb;
  if (::stat(run_dir.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    return NotFound("run directory " + run_dir + " does not exist");
  }
  const std::string keys = run_dir + "/keys";
  SHOAL_RETURN_IF_ERROR(MakeDirs(keys));
  // Like ~/.ssh: nobody else may even look into the directory holding the private key, which
  // also covers the moment between the key file's rename and its chmod.
  if (::chmod(keys.c_str(), 0700) != 0) return Errno("chmod 0700", keys);

  const std::string lock_path = keys + "/.lock";
  Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (lock.get() < 0) return Errno("open", lock_path);
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Errno("lock", lock_path);
  }  // Released when `lock` closes.

  const std::string priv_path = SigningKeyPath(run_dir);
  const std::string pub_path = SigningPublicKeyPath(run_dir);
  const bool have_priv = PathExists(priv_path);
  const bool have_pub = PathExists(pub_path);
  if (!have_priv && have_pub) {
    return Corrupt(pub_path + " exists without its private key " + priv_path +
                   "; refusing to replace the coordinator's public key (restore the private key "
                   "or remove both files)");
  }
  if (!have_priv) {
    SHOAL_ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Generate());
    return key.Save(priv_path, pub_path);
  }
  SHOAL_ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Load(priv_path));
  if (!have_pub) return WriteFileAtomic(pub_path, key.public_key().pem());
  SHOAL_ASSIGN_OR_RETURN(PublicKey pub, PublicKey::Load(pub_path));
  if (pub.fingerprint() != key.public_key().fingerprint()) {
    return Corrupt(pub_path + " (fingerprint " + pub.fingerprint() + ") is not the public key of " +
                   priv_path + " (fingerprint " + key.public_key().fingerprint() + ")");
  }
  return Status::Ok();
}

}  // namespace shoal::security
