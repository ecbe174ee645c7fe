// Offline enrollment bundles (pki.h): issuing one from the CA, writing one from parts (a worker
// that joined with a token), and reading one.
#include <openssl/crypto.h>

#include <nlohmann/json.hpp>
#include <string>

#include "base/file_util.h"
#include "security/ca_store.h"
#include "security/pki.h"
#include "security/x509.h"

namespace shoal::security {
namespace {

using nlohmann::json;

// Largest key or certificate file read from a bundle. Larger than kMaxPemBytes because a
// bundle's certificate PEM is handed to TLS whole, which also accepts a longer chain.
constexpr size_t kMaxBundleFileBytes = size_t{1} << 20;

}  // namespace

Status Enroll(const std::string& ca_dir, const std::string& name, const std::string& out_dir,
              const std::string& coordinator_address, const IssueOptions& options) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  if (!coordinator_address.empty()) {
    SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(coordinator_address));
  }
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  if (out_dir.empty()) return InvalidArgument("no bundle directory given");
  if (PathExists(BundleKeyPath(out_dir))) {
    return Rejected(out_dir + " already holds an enrollment bundle (" + BundleKeyPath(out_dir) +
                    " exists); refusing to overwrite it");
  }
  SHOAL_ASSIGN_OR_RETURN(auto lock, CaLock::Acquire(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(Ca ca, LoadCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(std::string address, AddressOrDefault(ca, coordinator_address));
  SHOAL_RETURN_IF_ERROR(CheckNotRevoked(ca_dir, name));
  if (!options.reissue) SHOAL_RETURN_IF_ERROR(CheckNotIssued(ca_dir, name));
  if (PathExists(out_dir)) SHOAL_RETURN_IF_ERROR(CheckPrivateDir(out_dir));
  SHOAL_RETURN_IF_ERROR(LoadRootSigner(ca_dir, options.root_dir, &ca));

  const int64_t now = NowOr(0);
  // Reissue: the old certificates are refused before the new one exists.
  if (options.reissue) SHOAL_RETURN_IF_ERROR(SupersedeCertificates(ca_dir, name, now).status());
  SHOAL_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey());
  CertSpec spec;
  spec.common_name = name;
  spec.days = kWorkerValidityDays;
  spec.extended_key_usage = "clientAuth";
  SHOAL_ASSIGN_OR_RETURN(
      X509Ptr cert, IssueCert(spec, key.get(), ca.signer_cert.get(), ca.signer_key.get(), now));
  SHOAL_ASSIGN_OR_RETURN(std::string cert_pem, CertPem(cert.get()));
  SHOAL_ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));

  // Record first: a certificate that was issued but never delivered is harmless, one that was
  // delivered but not recorded could not be listed or revoked by serial.
  SHOAL_RETURN_IF_ERROR(RecordIssued(ca_dir, cert.get(), name, "bundle", now));
  Status st = WriteBundle(out_dir, name, key_pem, cert_pem, ca.cert_pem, address);
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  return st;
}

Status WriteBundle(const std::string& out_dir, const std::string& name, const std::string& key_pem,
                   const std::string& cert_pem, const std::string& ca_pem,
                   const std::string& coordinator_address) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(coordinator_address));
  SHOAL_ASSIGN_OR_RETURN(std::string fingerprint, CaFingerprint(ca_pem));
  if (PathExists(BundleKeyPath(out_dir))) {
    return Rejected(out_dir + " already holds an enrollment bundle (" + BundleKeyPath(out_dir) +
                    " exists); refusing to overwrite it");
  }
  SHOAL_RETURN_IF_ERROR(MakePrivateDir(out_dir));
  SHOAL_RETURN_IF_ERROR(WriteKeyFile(BundleKeyPath(out_dir), key_pem));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(BundleCertPath(out_dir), cert_pem));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(BundleCaPath(out_dir), ca_pem));
  json bundle = {
      {"name", name}, {"coordinator", coordinator_address}, {"ca_fingerprint", fingerprint}};
  return SaveJson(out_dir + "/bundle.json", bundle);
}

Result<Bundle> LoadBundle(const std::string& dir) {
  const std::string meta_path = dir + "/bundle.json";
  // Checked before anything is read: a directory others can write could hold their key.
  if (PathExists(dir)) SHOAL_RETURN_IF_ERROR(CheckPrivateDir(dir));
  if (!PathExists(meta_path)) {
    return NotFound(dir +
                    " is not an enrollment bundle (no bundle.json; make one with "
                    "`shoalctl enroll NAME --ca CA_DIR --out " +
                    dir + "`)");
  }
  SHOAL_ASSIGN_OR_RETURN(json meta, LoadJson(meta_path, json::object()));
  Bundle b;
  if (!meta.is_object() || !meta.contains("name") || !meta["name"].is_string() ||
      !meta.contains("coordinator") || !meta["coordinator"].is_string()) {
    return Corrupt(meta_path + ": expected {name, coordinator, ca_fingerprint}");
  }
  b.name = meta["name"].get<std::string>();
  b.coordinator_address = meta["coordinator"].get<std::string>();
  SHOAL_ASSIGN_OR_RETURN(b.key_pem, ReadFile(BundleKeyPath(dir), kMaxBundleFileBytes));
  SHOAL_ASSIGN_OR_RETURN(b.cert_pem, ReadFile(BundleCertPath(dir), kMaxBundleFileBytes));
  SHOAL_ASSIGN_OR_RETURN(b.ca_pem, ReadFile(BundleCaPath(dir), kMaxBundleFileBytes));
  SHOAL_ASSIGN_OR_RETURN(b.ca_fingerprint, CaFingerprint(b.ca_pem));
  if (meta.contains("ca_fingerprint") && meta["ca_fingerprint"].is_string() &&
      meta["ca_fingerprint"].get<std::string>() != b.ca_fingerprint) {
    return Corrupt(BundleCaPath(dir) + " is not the CA recorded in " + meta_path);
  }
  return b;
}

}  // namespace shoal::security
