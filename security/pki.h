// The federation's PKI: a private CA, the coordinator's TLS certificate, worker enrollment
// (offline bundles or one-time join tokens), revocation, and peer-certificate checks.
//
// Keys are ECDSA P-256, certificates X.509 v3 signed with SHA-256, serials 128 random bits.
// A fingerprint is the lowercase hex SHA-256 of a certificate's DER encoding.
//
// Two directories (made by InitCa; each created mode 0700 when missing, and an existing one must
// belong to the current user and be closed to group and others):
//
// The root directory (`--root`, default "<ca_dir>-root"): kept offline, never on the
// coordinator. Needed only to create the CA, to issue offline bundles and to renew the
// enrollment CA.
//   ca.key, ca.crt                 the root CA (CN "Shoal federation CA", 10 years); key 0600
//
// The CA directory (`security.ca_dir`, what the coordinator mounts): no root key.
//   ca.crt                         the root certificate (what everyone trusts)
//   coordinator.key, .crt          serverAuth leaf issued by the root (CN "coordinator", 2 years,
//                                  SANs); key 0600
//   enrollment.key, .crt           the enrollment CA issued by the root: CA:TRUE pathlen:0,
//                                  extendedKeyUsage clientAuth only, short-lived (90 days by
//                                  default). The coordinator signs join requests with it, so a
//                                  stolen coordinator can mint worker certificates until it
//                                  expires, but never a certificate a worker accepts as the
//                                  coordinator (TLS checks the EKU of every CA in the chain).
//   ca.json                        {format, ca_fingerprint, created_at, coordinator_address}
//   issued.json                    every certificate issued to a worker (never a secret)
//   tokens.json                    join tokens: id, SHA-256 of the secret, name, expiry, used
//   revoked.json                   revoked worker names and the serials issued to them, and the
//                                  serials replaced by a reissue
//   .lock                          flock serializing read-modify-write of the JSON files
// Every file is replaced atomically; a key file is created 0600 and never overwritten.
//
// Offline bundles are issued by the root (1 year); token-joined workers by the enrollment CA
// (1 year, but never past the enrollment CA's own expiry) and carry it in their chain.
//
// Join token (as kubeadm's discovery-token-ca-cert-hash):
//   shoal1.<id: 16 hex>.<secret: 32 hex>.<CA fingerprint: 64 hex>.<base64url(coordinator)>
// The worker learns from it which CA to trust and where the coordinator is; it proves it holds
// the secret when the coordinator redeems the token against the worker's CSR.
//
// Times are Unix seconds (UTC).
//
// Where it lives: ca.cc (the CA, names and addresses), bundle.cc (offline enrollment),
// join_token.cc (tokens and CSRs), revocation.cc (revocation, the issued list), verify.cc (peer
// certificates); beneath them, internal to security/, ca_store.h (the CA directory: lock, JSON
// files, the loaded CA) and x509.h (PEM, keys, certificate fields, issuing).
//
// Errors:
//   InvalidArgument  a bad worker name, SAN, address, TTL, token text, PEM text or CSR.
//   NotFound         a CA directory, CA file, token id or worker name that does not exist.
//   Corrupt          a CA JSON file that is not what Shoal writes; a fingerprint mismatch.
//   Rejected         refused by policy: the CA or bundle already exists, a name that already
//                    has a certificate (without reissue), a directory that is not private, a
//                    used, expired or wrong-secret token, a CSR whose CN is not the token's
//                    name, a revoked name, a peer certificate that does not verify against the
//                    CA.
//   IoError          reading, writing, locking or chmod failed.
//   Internal         OpenSSL failed to generate, encode or sign.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"

namespace shoal::security {

inline constexpr const char* kCaCommonName = "Shoal federation CA";
inline constexpr const char* kCoordinatorCommonName = "coordinator";
inline constexpr const char* kDefaultCoordinatorAddress = "tcp://127.0.0.1:5555";
inline constexpr int64_t kCaValidityDays = 3650;
inline constexpr int64_t kCoordinatorValidityDays = 730;
inline constexpr int64_t kWorkerValidityDays = 365;
inline constexpr const char* kEnrollmentCaCommonName = "Shoal enrollment CA";
// The enrollment CA lives on the coordinator: short-lived, so a stolen key expires soon.
inline constexpr int64_t kDefaultEnrollmentCaValidityDays = 90;
inline constexpr int64_t kMaxEnrollmentCaValidityDays = 365;
// The most any reader takes of a certificate file (the federation's are 1-2 KB).
inline constexpr uint64_t kMaxCertFileBytes = uint64_t{1} << 20;

// File names inside a CA directory and an enrollment bundle.
std::string CaKeyPath(const std::string& ca_dir);
std::string CaCertPath(const std::string& ca_dir);
std::string CoordinatorKeyPath(const std::string& ca_dir);
std::string CoordinatorCertPath(const std::string& ca_dir);
std::string EnrollmentKeyPath(const std::string& ca_dir);
std::string EnrollmentCertPath(const std::string& ca_dir);
// Where the root CA's directory is when none is given: "<ca_dir>-root" (beside, never inside).
std::string DefaultRootDir(const std::string& ca_dir);
std::string BundleKeyPath(const std::string& bundle_dir);   // worker.key
std::string BundleCertPath(const std::string& bundle_dir);  // worker.crt
std::string BundleCaPath(const std::string& bundle_dir);    // ca.crt

struct CaOptions {
  // The coordinator's ZeroMQ address written to ca.json, bundles and tokens by default.
  std::string coordinator_address = kDefaultCoordinatorAddress;
  // subjectAltNames of the coordinator certificate, each "DNS:name" or "IP:address".
  std::vector<std::string> coordinator_sans = {"DNS:localhost", "DNS:coordinator", "IP:127.0.0.1"};
  // Issue time; 0 means the current time.
  int64_t now = 0;
  // Where the root key goes; empty = DefaultRootDir(dir). Must not be `dir` or inside it.
  std::string root_dir;
  // Validity of the enrollment CA (1 to kMaxEnrollmentCaValidityDays).
  int64_t enrollment_days = kDefaultEnrollmentCaValidityDays;
};

// Creates a new CA: the root in options.root_dir, the rest in `dir` (see the layout above).
// Rejected when either already holds a CA.
Status InitCa(const std::string& dir, const CaOptions& options = CaOptions());

// Issues a new enrollment CA from the root in `root_dir` (empty = DefaultRootDir(ca_dir)) and
// replaces enrollment.key/.crt in ca_dir: renewal before it expires. A CA directory of the old
// layout (ca.key inside it) is migrated: its root key moves to root_dir first. `days` as
// CaOptions::enrollment_days; `now` 0 = the current time.
Status RenewEnrollmentCa(const std::string& ca_dir, const std::string& root_dir = "",
                         int64_t days = kDefaultEnrollmentCaValidityDays, int64_t now = 0);

// Ok when `dir` is a directory (not a symlink) owned by the current user with no permission
// for group or others (mode 0700 or stricter): it holds private keys. Rejected naming the
// directory, its owner or mode, and the fix otherwise; NotFound when it does not exist.
Status CheckPrivateDir(const std::string& dir);

// SHA-256 hex of the DER of the first certificate in `ca_cert_pem`.
Result<std::string> CaFingerprint(const std::string& ca_cert_pem);

// Ok when the certificate's fingerprint equals `expected_hex` (case-insensitive, 64 hex
// characters; InvalidArgument otherwise), Corrupt when it differs.
Status CheckCertMatchesFingerprint(const std::string& ca_cert_pem, const std::string& expected_hex);

// 1 to 64 characters of [A-Za-z0-9._-], not "." or "..", and not a reserved name
// (kReservedWorkerNames, any case: "coordinator" is the coordinator's certificate name).
inline constexpr const char* kReservedWorkerNames[] = {"coordinator", "localhost", "root", "ca"};
Status ValidateWorkerName(const std::string& name);
// "tcp://HOST:PORT" that a worker can connect to: a host of [A-Za-z0-9.-] or a bracketed IPv6
// address, a port of 1-65535 (no "*" wildcard: that is for binding).
Status ValidateCoordinatorAddress(const std::string& address);

// Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" (UTC), as the CA's JSON files record times.
std::string UtcText(int64_t unix_seconds);

struct IssueOptions {
  // The root CA's directory (empty = DefaultRootDir(ca_dir)); offline bundles are signed by it.
  std::string root_dir;
  // The name already has a certificate: issue a new one and revoke every earlier one (their
  // serials go to revoked.json before the new certificate exists). Without it, a second
  // certificate for a name is Rejected.
  bool reissue = false;
};

// Issues an offline enrollment bundle in `out_dir` (created when missing): worker.key (0600),
// worker.crt (CN = name, clientAuth, 1 year, issued by the root), ca.crt and bundle.json
// {name, coordinator, ca_fingerprint}. An empty coordinator_address uses the one in ca.json.
// Rejected when out_dir already holds a worker.key, the name is revoked, or it already has a
// certificate and options.reissue is not set. Records the certificate in issued.json.
Status Enroll(const std::string& ca_dir, const std::string& name, const std::string& out_dir,
              const std::string& coordinator_address = "",
              const IssueOptions& options = IssueOptions());

// Writes an enrollment bundle (the layout Enroll makes) from parts: used by a worker that joined
// with a token. Rejected when out_dir already holds a worker.key.
Status WriteBundle(const std::string& out_dir, const std::string& name, const std::string& key_pem,
                   const std::string& cert_pem, const std::string& ca_pem,
                   const std::string& coordinator_address);

struct Bundle {
  std::string name;
  std::string coordinator_address;
  std::string key_pem;
  std::string cert_pem;
  std::string ca_pem;
  std::string ca_fingerprint;
};
// Reads a bundle directory. NotFound without bundle.json, Corrupt when its CA is not the one
// bundle.json names, Rejected when the directory is not private (CheckPrivateDir).
Result<Bundle> LoadBundle(const std::string& dir);

struct ParsedToken {
  std::string id;                   // 16 lowercase hex
  std::string secret;               // 32 lowercase hex
  std::string ca_fingerprint;       // 64 lowercase hex
  std::string coordinator_address;  // decoded
};

// Creates a one-time join token for worker `name`, valid for ttl_seconds (1 s to 30 days) from
// `now` (0 = the current time). An empty coordinator_address uses the one in ca.json. Only the
// id, SHA-256 of the secret, the name, the expiry, used=false and `reissue` are stored
// (tokens.json). Rejected when the name already has a certificate and `reissue` is false; with
// it, redeeming the token revokes the name's earlier certificates.
Result<std::string> CreateJoinToken(const std::string& ca_dir, const std::string& name,
                                    int64_t ttl_seconds,
                                    const std::string& coordinator_address = "", int64_t now = 0,
                                    bool reissue = false);

// Checks the shape of a token (prefix, five parts, lengths, hex, base64url, address) and splits
// it. InvalidArgument naming the bad part otherwise.
Result<ParsedToken> ParseJoinToken(const std::string& token);

// Redeems a join token against a worker's CSR and returns the signed certificate PEM followed by
// the enrollment CA's (CN = the token's name, clientAuth, 1 year capped at the enrollment CA's
// expiry, the CSR's public key; nothing else of the CSR is copied). Signed with the enrollment
// CA: the root key is never read. Checks, each with its own error: the token id is known
// (NotFound), the secret matches (constant time), the token is not used and not expired at
// `now`, the CSR is a well-formed P-256 request whose signature verifies, its CN is the token's
// name, the name is not revoked, and it has no certificate yet unless the token says reissue.
// The token is marked used in tokens.json before the certificate is recorded and returned.
Result<std::string> RedeemJoinToken(const std::string& ca_dir, const std::string& token_id,
                                    const std::string& secret, const std::string& csr_pem,
                                    int64_t now = 0);

// The latest expiry (Unix seconds) of a join token that is unused and unexpired at `now`
// (0 = the current time); 0 when there is none (tokens.json missing or empty). The coordinator
// accepts sessions without a certificate only while one is open.
Result<int64_t> LatestOpenJoinTokenExpiry(const std::string& ca_dir, int64_t now = 0);

struct KeyAndCsr {
  std::string key_pem;  // PKCS#8, unencrypted
  std::string csr_pem;  // CN = name, signed with the key
};
// A new P-256 key and a CSR for it, for the worker side of a join.
Result<KeyAndCsr> MakeKeyAndCsr(const std::string& name);

// Adds `name` and every serial issued to it to revoked.json. NotFound when the CA never issued
// a certificate to that name. Revoking again is Ok (and picks up serials issued since).
Status Revoke(const std::string& ca_dir, const std::string& name);
// The revoked names (empty when revoked.json does not exist yet).
Result<std::set<std::string>> RevokedNames(const std::string& ca_dir);
// The serials (lowercase hex) of every revoked certificate.
Result<std::set<std::string>> RevokedSerials(const std::string& ca_dir);

struct CertInfo {
  std::string common_name;
  std::string serial;       // lowercase hex
  std::string fingerprint;  // SHA-256 hex of the DER
  int64_t not_before = 0;
  int64_t not_after = 0;
  bool client_auth = false;       // extendedKeyUsage contains clientAuth
  bool server_auth = false;       // extendedKeyUsage contains serverAuth
  std::vector<std::string> sans;  // "DNS:name" / "IP:address"
};

// Verifies that the first certificate of `cert_pem` is a leaf (not a CA) that chains to the CA
// in `ca_cert_pem` (directly, or through CA certificates following it in `cert_pem`, such as the
// enrollment CA) and is valid at `now` (0 = the current time). Rejected with OpenSSL's reason
// otherwise. client_auth / server_auth are set only when every CA between the leaf and the root
// allows that use too. It does not consult revocation: check the returned name and serial
// against RevokedNames/ListEnrolled.
Result<CertInfo> VerifyPeerCert(const std::string& ca_cert_pem, const std::string& cert_pem,
                                int64_t now = 0);

struct WorkerRecord {
  std::string name;
  std::string serial;
  std::string fingerprint;
  int64_t issued_at = 0;
  int64_t not_after = 0;
  std::string how;  // "bundle" or "token"
  bool revoked = false;
};
// Every certificate issued to a worker, in issue order.
Result<std::vector<WorkerRecord>> ListEnrolled(const std::string& ca_dir);

}  // namespace shoal::security
