// One-time join tokens (pki.h): creating one, parsing its text, redeeming it against a
// worker's CSR, and the worker's key and CSR. The hex parts of a token are checked with
// IsLowerHex before they are decoded, so their HexDecode cannot fail.
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "base/hex.h"
#include "base/sha256.h"
#include "security/ca_store.h"
#include "security/pki.h"
#include "security/x509.h"

namespace shoal::security {
namespace {

using nlohmann::json;

constexpr size_t kMaxTokenChars = 1024;
constexpr size_t kTokenIdBytes = 8;
constexpr size_t kTokenSecretBytes = 16;
constexpr int64_t kMaxTokenTtlSeconds = 30 * 24 * 3600;
constexpr const char* kTokenPrefix = "shoal1";

Result<std::string> RandomHex(size_t bytes) {
  std::string buf(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(buf.data()), static_cast<int>(bytes)) != 1) {
    return Internal("RAND_bytes failed: " + OpenSslError());
  }
  return HexEncode(buf);
}

constexpr char kBase64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string Base64UrlEncode(const std::string& in) {
  std::string out;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out.push_back(kBase64Url[(v >> 18) & 63]);
    out.push_back(kBase64Url[(v >> 12) & 63]);
    out.push_back(kBase64Url[(v >> 6) & 63]);
    out.push_back(kBase64Url[v & 63]);
  }
  size_t rest = in.size() - i;
  if (rest == 1) {
    uint32_t v = uint8_t(in[i]) << 16;
    out.push_back(kBase64Url[(v >> 18) & 63]);
    out.push_back(kBase64Url[(v >> 12) & 63]);
  } else if (rest == 2) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out.push_back(kBase64Url[(v >> 18) & 63]);
    out.push_back(kBase64Url[(v >> 12) & 63]);
    out.push_back(kBase64Url[(v >> 6) & 63]);
  }
  return out;
}

// Strict unpadded base64url: rejects other characters, a length of 1 mod 4 and non-zero
// trailing bits, so every encoding is canonical.
Result<std::string> Base64UrlDecode(const std::string& in) {
  if (in.size() % 4 == 1) return InvalidArgument("base64url text has an impossible length");
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const char* p = std::strchr(kBase64Url, c);
    if (c == '\0' || p == nullptr) {
      return InvalidArgument("base64url text contains a character outside [A-Za-z0-9_-]");
    }
    acc = (acc << 6) | static_cast<uint32_t>(p - kBase64Url);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return InvalidArgument("base64url text has trailing bits");
  return out;
}

// Whether `t` is a token record with this id (tolerates records of any shape).
bool HasId(const json& t, const std::string& id) {
  if (!t.is_object()) return false;
  auto it = t.find("id");
  return it != t.end() && it->is_string() && it->get_ref<const std::string&>() == id;
}

}  // namespace

Result<std::string> CreateJoinToken(const std::string& ca_dir, const std::string& name,
                                    int64_t ttl_seconds, const std::string& coordinator_address,
                                    int64_t now, bool reissue) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  if (ttl_seconds < 1 || ttl_seconds > kMaxTokenTtlSeconds) {
    return InvalidArgument("join token TTL of " + std::to_string(ttl_seconds) +
                           " s is outside 1 s to 30 days");
  }
  if (!coordinator_address.empty()) {
    SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(coordinator_address));
  }
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto lock, CaLock::Acquire(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(Ca ca, LoadCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(std::string address, AddressOrDefault(ca, coordinator_address));
  SHOAL_RETURN_IF_ERROR(CheckNotRevoked(ca_dir, name));
  if (!reissue) SHOAL_RETURN_IF_ERROR(CheckNotIssued(ca_dir, name));

  const std::string path = TokensPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json tokens, ArrayField(j, "tokens", path));
  std::string id;
  for (bool unique = false; !unique;) {
    SHOAL_ASSIGN_OR_RETURN(id, RandomHex(kTokenIdBytes));
    unique =
        std::none_of(tokens.begin(), tokens.end(), [&](const json& t) { return HasId(t, id); });
  }
  SHOAL_ASSIGN_OR_RETURN(std::string secret, RandomHex(kTokenSecretBytes));
  now = NowOr(now);
  tokens.push_back({{"id", id},
                    {"secret_sha256", Sha256Hex(*HexDecode(secret))},
                    {"name", name},
                    {"created_at", now},
                    {"expires_at", now + ttl_seconds},
                    {"expires_at_utc", UtcText(now + ttl_seconds)},
                    {"used", false},
                    {"reissue", reissue}});
  j["tokens"] = std::move(tokens);
  SHOAL_RETURN_IF_ERROR(SaveJson(path, j));
  return std::string(kTokenPrefix) + "." + id + "." + secret + "." + ca.fingerprint + "." +
         Base64UrlEncode(address);
}

Result<ParsedToken> ParseJoinToken(const std::string& token) {
  if (token.size() > kMaxTokenChars) {
    return InvalidArgument("join token is " + std::to_string(token.size()) +
                           " characters, more than the limit of " + std::to_string(kMaxTokenChars));
  }
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = token.find('.', start);
    parts.push_back(
        token.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (parts.size() != 5) {
    return InvalidArgument("join token has " + std::to_string(parts.size()) +
                           " dot-separated parts, expected 5 "
                           "(shoal1.ID.SECRET.CA_SHA256.COORDINATOR)");
  }
  if (parts[0] != kTokenPrefix) {
    return InvalidArgument("join token does not start with \"" + std::string(kTokenPrefix) + ".\"");
  }
  ParsedToken out;
  out.id = parts[1];
  out.secret = parts[2];
  out.ca_fingerprint = parts[3];
  if (!IsLowerHex(out.id, 2 * kTokenIdBytes)) {
    return InvalidArgument("join token id is not 16 lowercase hex characters");
  }
  if (!IsLowerHex(out.secret, 2 * kTokenSecretBytes)) {
    return InvalidArgument("join token secret is not 32 lowercase hex characters");
  }
  if (!IsLowerHex(out.ca_fingerprint, 64)) {
    return InvalidArgument("join token CA fingerprint is not 64 lowercase hex characters");
  }
  if (parts[4].empty()) return InvalidArgument("join token has no coordinator address");
  auto address = Base64UrlDecode(parts[4]);
  if (!address.ok()) {
    return InvalidArgument("join token coordinator address: " + address.status().message());
  }
  SHOAL_RETURN_IF_ERROR(ValidateCoordinatorAddress(*address).Annotate("join token"));
  out.coordinator_address = std::move(address).value();
  return out;
}

Result<std::string> RedeemJoinToken(const std::string& ca_dir, const std::string& token_id,
                                    const std::string& secret, const std::string& csr_pem,
                                    int64_t now) {
  if (!IsLowerHex(token_id, 2 * kTokenIdBytes)) {
    return InvalidArgument("join token id is not 16 lowercase hex characters");
  }
  if (!IsLowerHex(secret, 2 * kTokenSecretBytes)) {
    return InvalidArgument("join token secret is not 32 lowercase hex characters");
  }
  now = NowOr(now);
  SHOAL_RETURN_IF_ERROR(RequireCa(ca_dir));
  SHOAL_ASSIGN_OR_RETURN(auto lock, CaLock::Acquire(ca_dir));

  const std::string path = TokensPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json tokens, ArrayField(j, "tokens", path));
  json* token = nullptr;
  for (auto& t : tokens) {
    if (HasId(t, token_id)) token = &t;
  }
  if (token == nullptr) return NotFound("unknown join token " + token_id);
  std::string name, stored_hash;
  bool used = false, reissue = false;
  int64_t expires_at = 0;
  try {
    name = token->at("name").get<std::string>();
    stored_hash = token->at("secret_sha256").get<std::string>();
    used = token->at("used").get<bool>();
    expires_at = token->at("expires_at").get<int64_t>();
    reissue = token->value("reissue", false);
  } catch (const json::exception& e) {
    return Corrupt(path + ": bad record for join token " + token_id + ": " + e.what());
  }
  if (!IsLowerHex(stored_hash, 64)) {
    return Corrupt(path + ": join token " + token_id + " has a malformed secret hash");
  }
  // The secret is checked before the token's state, so that only its holder learns whether
  // the token was used or has expired.
  const Digest actual = Sha256::Of(HexDecode(secret)->data(), kTokenSecretBytes);
  const std::string expected = *HexDecode(stored_hash);
  if (CRYPTO_memcmp(actual.data(), expected.data(), actual.size()) != 0) {
    return Rejected("wrong secret for join token " + token_id);
  }
  if (used) return Rejected("join token " + token_id + " was already used");
  if (now >= expires_at) {
    return Rejected("join token " + token_id + " expired at " + UtcText(expires_at));
  }

  // The CSR: well formed, self-signature valid, a P-256 key, CN = the token's name.
  ERR_clear_error();
  SHOAL_ASSIGN_OR_RETURN(BioPtr bio, PemBio(csr_pem, "CSR"));
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!req) return InvalidArgument("bad CSR: not a PEM certificate request: " + OpenSslError());
  EVP_PKEY* csr_key = X509_REQ_get0_pubkey(req.get());
  if (csr_key == nullptr)
    return InvalidArgument("bad CSR: no readable public key: " + OpenSslError());
  if (X509_REQ_verify(req.get(), csr_key) != 1) {
    ERR_clear_error();
    return InvalidArgument("bad CSR: its signature does not verify");
  }
  if (!IsP256(csr_key)) return InvalidArgument("bad CSR: the key is not ECDSA P-256");
  auto cn = CommonName(X509_REQ_get_subject_name(req.get()), "bad CSR: the subject");
  if (!cn.ok()) return cn.status();
  if (*cn != name) {
    return Rejected("CSR common name \"" + *cn + "\" is not the join token's worker name \"" +
                    name + "\"");
  }
  SHOAL_RETURN_IF_ERROR(CheckNotRevoked(ca_dir, name));
  if (!reissue) SHOAL_RETURN_IF_ERROR(CheckNotIssued(ca_dir, name));

  // Signed by the enrollment CA: the root key is never read here (it is not on the coordinator).
  SHOAL_ASSIGN_OR_RETURN(Ca ca, LoadCa(ca_dir));
  SHOAL_RETURN_IF_ERROR(LoadEnrollmentSigner(ca_dir, now, &ca));
  CertSpec spec;
  spec.common_name = name;
  spec.days = kWorkerValidityDays;
  spec.extended_key_usage = "clientAuth";
  spec.not_after = ToUnix(X509_get0_notAfter(ca.signer_cert.get()));
  SHOAL_ASSIGN_OR_RETURN(X509Ptr cert,
                         IssueCert(spec, csr_key, ca.signer_cert.get(), ca.signer_key.get(), now));
  SHOAL_ASSIGN_OR_RETURN(std::string leaf_pem, CertPem(cert.get()));
  const std::string cert_pem = leaf_pem + ca.chain_pem;
  // Reissue: the name's earlier certificates are refused before the new one is delivered.
  if (reissue) SHOAL_RETURN_IF_ERROR(SupersedeCertificates(ca_dir, name, now).status());

  // Burn the token before anything leaves this function.
  (*token)["used"] = true;
  (*token)["used_at"] = now;
  (*token)["serial"] = SerialHex(cert.get());
  j["tokens"] = std::move(tokens);
  SHOAL_RETURN_IF_ERROR(SaveJson(path, j));
  SHOAL_RETURN_IF_ERROR(RecordIssued(ca_dir, cert.get(), name, "token", now));
  return cert_pem;
}

Result<int64_t> LatestOpenJoinTokenExpiry(const std::string& ca_dir, int64_t now) {
  now = NowOr(now);
  const std::string path = TokensPath(ca_dir);
  SHOAL_ASSIGN_OR_RETURN(json j, LoadJson(path, json::object()));
  SHOAL_ASSIGN_OR_RETURN(json tokens, ArrayField(j, "tokens", path));
  int64_t latest = 0;
  for (const json& t : tokens) {
    try {
      const int64_t expires_at = t.at("expires_at").get<int64_t>();
      if (!t.at("used").get<bool>() && expires_at > now) latest = std::max(latest, expires_at);
    } catch (const json::exception& e) {
      return Corrupt(path + ": bad join token record: " + e.what());
    }
  }
  return latest;
}

Result<KeyAndCsr> MakeKeyAndCsr(const std::string& name) {
  SHOAL_RETURN_IF_ERROR(ValidateWorkerName(name));
  SHOAL_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey());
  X509ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1) {
    return Internal("X509_REQ_new: " + OpenSslError());
  }
  X509_NAME* subject = X509_REQ_get_subject_name(req.get());
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1,
                                 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), key.get()) != 1 ||
      X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) {
    return Internal("build CSR: " + OpenSslError());
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return Internal("write CSR PEM: " + OpenSslError());
  }
  KeyAndCsr out;
  SHOAL_ASSIGN_OR_RETURN(out.csr_pem, BioText(bio.get()));
  SHOAL_ASSIGN_OR_RETURN(out.key_pem, KeyPem(key.get()));
  return out;
}

}  // namespace shoal::security
