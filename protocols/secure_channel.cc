#include "protocols/secure_channel.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <utility>

#include "base/hex.h"
#include "base/malloc_tuning.h"
#include "protocols/frame_layout.h"
#include "security/openssl_util.h"

namespace shoal::protocols {
namespace {

// TLS record layout (RFC 8446 section 5): type(1) legacy_version(2) length(2), then the body.
constexpr size_t kRecordHeaderBytes = 5;
// Largest TLSCiphertext body allowed by RFC 8446: 2^14 + 256.
constexpr size_t kMaxRecordBody = 16384 + 256;
// Plaintext per record and the bytes a TLS 1.3 AES-GCM record adds around it.
constexpr size_t kRecordPlain = 16384;
constexpr size_t kRecordOverhead = kRecordHeaderBytes + 1 /* inner content type */ + 16 /* tag */;
// Plaintext handed to SSL_write at once when sealing a large message.
constexpr size_t kWriteChunk = 64 * kRecordPlain;  // 1 MiB
// Record content type of handshake messages (sent in the clear only before keys are set:
// ClientHello, ServerHello, HelloRetryRequest).
constexpr unsigned char kHandshakeRecord = 22;
constexpr size_t kHandshakeHeaderBytes = 4;  // msg_type(1) length(3)
// Largest Certificate message accepted (OpenSSL's max_cert_list; 100 KB by default). OpenSSL
// allocates for a handshake message from its claimed length, before the message arrives, so
// this is what a peer can make a session allocate by claiming a certificate chain. Shoal's
// chains are about 1-2 KB.
constexpr long kMaxCertificateMessageBytes = 16 << 10;

using security::BioPtr;
using security::EvpPkeyPtr;
using security::OpenSslError;
using security::OpenSslOwned;
using security::X509Ptr;
using security::X509StoreCtxPtr;
using security::X509StorePtr;

BioPtr ReadOnlyBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate in a PEM string, in order.
Result<std::vector<X509Ptr>> ParseCertificates(const std::string& pem, const char* what) {
  if (pem.empty()) return InvalidArgument(std::string(what) + " is empty");
  if (pem.size() > (64u << 20)) return InvalidArgument(std::string(what) + " is too large");
  BioPtr bio = ReadOnlyBio(pem);
  if (!bio) return Internal("BIO_new_mem_buf failed");
  std::vector<X509Ptr> certs;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(x);
  // Reading stops with "no start line" at the end of the input; anything else is a bad PEM.
  unsigned long last = ERR_peek_last_error();
  if (certs.empty() || (last != 0 && ERR_GET_REASON(last) != PEM_R_NO_START_LINE)) {
    return InvalidArgument(std::string(what) + ": not a PEM certificate (" + OpenSslError() + ")");
  }
  ERR_clear_error();
  return certs;
}

std::string SubjectCommonName(X509* cert) {
  X509_NAME* name = X509_get_subject_name(cert);
  int index = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
  if (index < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return "";
  const OpenSslOwned<unsigned char> owned(utf8);
  return std::string(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
}

std::string Sha256Hex(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return "";
  return HexEncode(std::string_view(reinterpret_cast<const char*>(md), len));
}

// A read-only memory BIO that reports "retry" (not EOF) once empty, so OpenSSL waits for the
// next frame instead of treating the end of this one as a closed connection.
BIO* EmptyInputBio() {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio) BIO_set_mem_eof_return(bio, -1);
  return bio;
}

// The output BIO: a write-only memory sink that appends TLS's records straight onto the frame
// being built (a std::string owned by the session). BIO_s_mem would grow its BUF_MEM with
// BUF_MEM_grow_clean, which copies and wipes the whole buffer on every growth, and then need a
// further copy to drain it: three extra passes over every sealed byte.
int SinkWrite(BIO* bio, const char* data, size_t len, size_t* written) {
  auto* frame = static_cast<std::string*>(BIO_get_data(bio));
  if (frame == nullptr) return 0;
  try {
    frame->append(data, len);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  *written = len;
  return 1;
}

long SinkCtrl(BIO* bio, int cmd, long num, void* ptr) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING:
      return 0;  // nothing is ever held back: bytes land in the frame at once
    default:
      return 0;
  }
}

int SinkCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

const BIO_METHOD* SinkMethod() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "shoal frame sink");
    if (m == nullptr || BIO_meth_set_write_ex(m, SinkWrite) != 1 ||
        BIO_meth_set_ctrl(m, SinkCtrl) != 1 || BIO_meth_set_create(m, SinkCreate) != 1) {
      std::abort();  // OpenSSL cannot allocate a few bytes: a broken invariant
    }
    return m;
  }();
  return method;
}

}  // namespace

// The server's verify callback (TlsConfig::is_revoked): once the client's certificate has
// verified against the CA, the revocation list decides. Fails closed when the session cannot be
// found.
int VerifyClientCertificate(int preverify_ok, X509_STORE_CTX* store) {
  if (preverify_ok != 1 || X509_STORE_CTX_get_error_depth(store) != 0) return preverify_ok;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* session = ssl != nullptr ? static_cast<SecureSession*>(SSL_get_app_data(ssl)) : nullptr;
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  if (session == nullptr || cert == nullptr) return 0;
  const RevocationCheck& is_revoked = session->context_->is_revoked();
  if (is_revoked && is_revoked(SubjectCommonName(cert), Sha256Hex(cert))) {
    session->peer_revoked_ = true;
    X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REVOKED);  // the alert says so
    return 0;
  }
  return 1;
}

// ---------------------------------------------------------------------------------------------
// TlsContext

void TlsContext::CtxDeleter::operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }

TlsContext::TlsContext(std::unique_ptr<SSL_CTX, CtxDeleter> ctx, bool server, std::string expected,
                       std::string ca_fingerprint, RevocationCheck is_revoked)
    : ctx_(std::move(ctx)),
      server_(server),
      expected_peer_name_(std::move(expected)),
      ca_fingerprint_(std::move(ca_fingerprint)),
      is_revoked_(std::move(is_revoked)) {}

TlsContext::~TlsContext() = default;

Result<std::shared_ptr<TlsContext>> TlsContext::Server(const TlsConfig& config) {
  return Make(config, /*server=*/true);
}

Result<std::shared_ptr<TlsContext>> TlsContext::Client(const TlsConfig& config) {
  return Make(config, /*server=*/false);
}

Result<std::shared_ptr<TlsContext>> TlsContext::Make(const TlsConfig& config, bool server) {
  const std::string side = server ? "TLS server config" : "TLS client config";
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, CtxDeleter> ctx(
      SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  if (!ctx) return Internal(side + ": SSL_CTX_new failed: " + OpenSslError());
  SSL_CTX* c = ctx.get();

  // Protocol and algorithms: TLS 1.3 with AES-GCM only, no resumption state to protect.
  if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(c, "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256") != 1 ||
      SSL_CTX_set1_groups_list(c, "X25519:P-256") != 1) {
    return Internal(side + ": cannot restrict protocol/suites: " + OpenSslError());
  }
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_max_cert_list(c, kMaxCertificateMessageBytes);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  if (server) SSL_CTX_set_num_tickets(c, 0);
  // Idle sessions give their record buffers back (about 34 KB each): a coordinator holds one
  // session per worker, and most are idle most of the time.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);

  // Own identity. Only a fingerprint-pinning client (enrollment) may go without one.
  const bool pinned = !config.ca_fingerprint.empty();
  if (pinned && server) return InvalidArgument(side + ": ca_fingerprint is for clients only");
  if (config.is_revoked && !server) return InvalidArgument(side + ": is_revoked is for servers");
  if (pinned && config.key_pem.empty() && config.cert_pem.empty()) {
    // No certificate to present: the join flow.
  } else {
    if (config.key_pem.empty()) return InvalidArgument(side + ": key_pem is empty");
    SHOAL_ASSIGN_OR_RETURN(std::vector<X509Ptr> chain,
                           ParseCertificates(config.cert_pem, (side + ": cert_pem").c_str()));
    if (SSL_CTX_use_certificate(c, chain[0].get()) != 1) {
      return InvalidArgument(side + ": certificate refused: " + OpenSslError());
    }
    for (size_t i = 1; i < chain.size(); ++i) {
      if (SSL_CTX_add1_chain_cert(c, chain[i].get()) != 1) {
        return InvalidArgument(side + ": chain certificate refused: " + OpenSslError());
      }
    }
    {
      BioPtr bio = ReadOnlyBio(config.key_pem);
      EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
      if (!key)
        return InvalidArgument(side + ": key_pem: not a PEM private key (" + OpenSslError() + ")");
      if (SSL_CTX_use_PrivateKey(c, key.get()) != 1 || SSL_CTX_check_private_key(c) != 1) {
        return InvalidArgument(side + ": key_pem does not match cert_pem: " + OpenSslError());
      }
    }
  }

  // Trust: exactly the configured CA(s); the system store is never loaded. A pinning client
  // accepts whatever chain the server sends during the handshake and checks it against the
  // fingerprint once the handshake is done (CheckPinnedChain), before anything is sent.
  std::string fingerprint;
  if (pinned) {
    for (char ch : config.ca_fingerprint) {
      if (!std::isxdigit(static_cast<unsigned char>(ch))) {
        return InvalidArgument(side + ": ca_fingerprint is not hex");
      }
      fingerprint += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    if (fingerprint.size() != 64) {
      return InvalidArgument(side + ": ca_fingerprint must be 64 hex characters (SHA-256)");
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
  } else {
    SHOAL_ASSIGN_OR_RETURN(std::vector<X509Ptr> cas,
                           ParseCertificates(config.ca_pem, (side + ": ca_pem").c_str()));
    X509_STORE* store = SSL_CTX_get_cert_store(c);
    for (const X509Ptr& ca : cas) {
      if (X509_STORE_add_cert(store, ca.get()) != 1) {
        return InvalidArgument(side + ": ca_pem refused: " + OpenSslError());
      }
    }
    int mode = SSL_VERIFY_PEER;
    if (!server || config.require_peer_certificate) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    // A server with a revocation list consults it for the client's certificate in the handshake.
    SSL_CTX_set_verify(c, mode, server && config.is_revoked ? VerifyClientCertificate : nullptr);
  }
  SSL_CTX_set_verify_depth(c, 4);
  ERR_clear_error();

  return std::shared_ptr<TlsContext>(new TlsContext(std::move(ctx), server,
                                                    config.expected_peer_name,
                                                    std::move(fingerprint), config.is_revoked));
}

// ---------------------------------------------------------------------------------------------
// SecureSession

void SecureSession::SslDeleter::operator()(SSL* ssl) const { SSL_free(ssl); }

SecureSession::SecureSession(std::shared_ptr<const TlsContext> context, size_t max_message_bytes)
    : context_(std::move(context)),
      max_message_bytes_(std::min(max_message_bytes, kMaxMessageCap)) {
  ERR_clear_error();
  ssl_.reset(SSL_new(context_->native()));
  BIO* rbio = EmptyInputBio();
  BIO* wbio = BIO_new(SinkMethod());
  if (!ssl_ || !rbio || !wbio) {
    BIO_free(rbio);
    BIO_free(wbio);
    failure_ = Internal("cannot create TLS session: " + OpenSslError());
    return;
  }
  BIO_set_data(wbio, &pending_out_);
  SSL_set_bio(ssl_.get(), rbio, wbio);  // ssl_ owns both from here
  SSL_set_app_data(ssl_.get(), this);   // for VerifyClientCertificate
  if (context_->is_server()) {
    SSL_set_accept_state(ssl_.get());
  } else {
    SSL_set_connect_state(ssl_.get());
    const std::string& name = context_->expected_peer_name();
    if (!name.empty() && SSL_set1_host(ssl_.get(), name.c_str()) != 1) {
      failure_ = InvalidArgument("expected_peer_name '" + name + "' refused: " + OpenSslError());
    }
  }
}

SecureSession::~SecureSession() = default;

void SecureSession::RequirePeerCertificate() {
  if (!ssl_ || !context_->is_server()) return;
  SSL_set_verify(ssl_.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                 SSL_CTX_get_verify_callback(context_->native()));
}

void SecureSession::set_max_message_bytes(size_t cap) {
  max_message_bytes_ = std::min(cap, kMaxMessageCap);
}

Status SecureSession::Fail(Status status) {
  if (failure_.ok()) failure_ = std::move(status);
  placement_ = {};  // nothing is read any more: let the receiver's buffer go
  return failure_;
}

Status SecureSession::FailFromOpenSsl(int ssl_error, const std::string& what) {
  std::string detail;
  std::string hint;
  bool certificate_problem = false;
  long verify = SSL_get_verify_result(ssl_.get());
  if (verify != X509_V_OK) {
    detail = std::string("peer certificate: ") + X509_verify_cert_error_string(verify) + "; ";
    certificate_problem = true;
  }
  unsigned long first = ERR_peek_error();
  if (first != 0) {
    int reason = ERR_GET_REASON(first);
    // Our own verification failed, or the peer's alert says it refused our certificate.
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
        reason == SSL_R_CERTIFICATE_VERIFY_FAILED || reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
        reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
        reason == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED ||
        reason == SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED ||
        reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
        reason == SSL_R_TLSV1_ALERT_ACCESS_DENIED ||
        reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
      certificate_problem = true;
    }
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) peer_sent_no_certificate_ = true;
    if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED && !context_->ca_fingerprint().empty()) {
      hint =
          " (the coordinator accepts a worker without a certificate only while a join token "
          "is open)";
    }
  }
  if (ssl_error == SSL_ERROR_ZERO_RETURN) {
    detail += "peer closed the TLS session";
    ERR_clear_error();
  } else if (ssl_error == SSL_ERROR_SYSCALL && first == 0) {
    detail += "unexpected end of the TLS stream";
  } else {
    detail += OpenSslError();
  }
  std::string message = what + ": " + detail + hint;
  return Fail(certificate_problem ? Rejected(std::move(message))
                                  : ProtocolError(std::move(message)));
}

Status SecureSession::CheckFrame(std::string_view frame) const {
  if (frame.empty()) return ProtocolError("empty TLS frame");
  size_t pos = 0;
  while (pos < frame.size()) {
    if (frame.size() - pos < kRecordHeaderBytes) {
      return ProtocolError("TLS frame of " + std::to_string(frame.size()) +
                           " bytes ends inside a record header at offset " + std::to_string(pos));
    }
    const auto* h = reinterpret_cast<const unsigned char*>(frame.data() + pos);
    size_t body = (size_t{h[3]} << 8) | h[4];
    if (body > kMaxRecordBody) {
      return ProtocolError("TLS record at offset " + std::to_string(pos) + " claims " +
                           std::to_string(body) + " bytes (limit " +
                           std::to_string(kMaxRecordBody) + ")");
    }
    if (frame.size() - pos - kRecordHeaderBytes < body) {
      return ProtocolError("TLS frame of " + std::to_string(frame.size()) +
                           " bytes ends inside the record at offset " + std::to_string(pos));
    }
    if (h[0] == kHandshakeRecord) {
      // A handshake record in the clear holds whole messages. OpenSSL allocates for a message
      // from the length its header claims (a ClientHello may claim 128 KiB, allocated as
      // 171 KiB) before the rest arrives: a record that claims more than it carries is refused
      // here instead. OpenSSL's peers never split these messages (each fits in one record).
      for (size_t at = kRecordHeaderBytes; at < kRecordHeaderBytes + body;) {
        const size_t left = kRecordHeaderBytes + body - at;
        const size_t claimed =
            left < kHandshakeHeaderBytes
                ? left  // a cut header: refused below whatever it says
                : (size_t{h[at + 1]} << 16) | (size_t{h[at + 2]} << 8) | h[at + 3];
        if (left < kHandshakeHeaderBytes || claimed > left - kHandshakeHeaderBytes) {
          return ProtocolError("TLS handshake record at offset " + std::to_string(pos) +
                               " holds part of a handshake message (" + std::to_string(claimed) +
                               " bytes claimed, " + std::to_string(left) +
                               " left); handshake messages must not be split across records");
        }
        at += kHandshakeHeaderBytes + claimed;
      }
    }
    pos += kRecordHeaderBytes + body;
  }
  return Status::Ok();
}

Status SecureSession::DrainOutput(std::vector<std::string>* out) {
  if (pending_out_.empty()) return Status::Ok();
  out->push_back(std::move(pending_out_));
  pending_out_ = std::string();
  return Status::Ok();
}

void SecureSession::SetInput(std::string_view frame) {
  // Zero-copy: OpenSSL reads the caller's bytes in place. Replaced by an empty BIO before
  // OnWire returns, so no pointer into the caller's frame outlives the call.
  BIO* bio = frame.empty() ? EmptyInputBio()
                           : BIO_new_mem_buf(frame.data(), static_cast<int>(frame.size()));
  if (bio) BIO_set_mem_eof_return(bio, -1);
  SSL_set0_rbio(ssl_.get(), bio);
}

Status SecureSession::Start(std::vector<std::string>* out) {
  if (!failure_.ok()) return failure_;
  if (started_) return Fail(Internal("SecureSession::Start called twice"));
  started_ = true;
  if (context_->is_server()) return Status::Ok();
  return AdvanceHandshake(out);
}

Status SecureSession::AdvanceHandshake(std::vector<std::string>* out) {
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_.get());
  if (rc == 1) {
    SHOAL_RETURN_IF_ERROR(DrainOutput(out));
    return OnHandshakeDone();
  }
  int err = SSL_get_error(ssl_.get(), rc);
  if (err == SSL_ERROR_WANT_READ) return DrainOutput(out);
  // Send the alert (if any) so the peer learns why, then fail for good.
  (void)DrainOutput(out);
  return FailFromOpenSsl(err, "TLS handshake failed");
}

Status SecureSession::OnHandshakeDone() {
  if (SSL_version(ssl_.get()) != TLS1_3_VERSION) {
    return Fail(Internal("TLS handshake negotiated something other than TLS 1.3"));
  }
  X509* peer = SSL_get0_peer_certificate(ssl_.get());
  if (!context_->ca_fingerprint().empty()) {
    SHOAL_RETURN_IF_ERROR(CheckPinnedChain());
  } else if (peer == nullptr) {
    // Only a server that made the client certificate optional gets here (OpenSSL enforces
    // SSL_VERIFY_FAIL_IF_NO_PEER_CERT otherwise); checked so a policy slip fails closed.
    if (!context_->is_server() ||
        SSL_get_verify_mode(ssl_.get()) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) {
      return Fail(Rejected("TLS handshake completed without a peer certificate"));
    }
    // An unauthenticated client (enrollment) only ever sends one small JoinRequest.
    max_message_bytes_ = std::min(max_message_bytes_, kUnauthenticatedMaxMessageBytes);
    established_ = true;
    return Status::Ok();
  } else if (SSL_get_verify_result(ssl_.get()) != X509_V_OK) {
    return Fail(Rejected("TLS handshake completed without a verified peer certificate"));
  }
  peer_name_ = SubjectCommonName(peer);
  peer_fingerprint_ = Sha256Hex(peer);
  peer_authenticated_ = true;
  established_ = true;
  return Status::Ok();
}

// The join flow's trust decision: the server's chain must contain the CA whose fingerprint the
// token carries, and the server's certificate must verify against that CA alone (including the
// expected name). Runs before established_ is set, so nothing is ever sent to an impostor.
Status SecureSession::CheckPinnedChain() {
  X509* leaf = SSL_get0_peer_certificate(ssl_.get());
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl_.get());
  if (leaf == nullptr || chain == nullptr) {
    return Fail(Rejected("coordinator sent no certificate"));
  }
  X509* ca = nullptr;
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    X509* candidate = sk_X509_value(chain, i);
    if (Sha256Hex(candidate) == context_->ca_fingerprint()) ca = candidate;
  }
  if (ca == nullptr) {
    return Fail(
        Rejected("coordinator's certificate chain does not contain the CA with "
                 "fingerprint " +
                 context_->ca_fingerprint() + " (a different federation, or an impostor)"));
  }
  if (X509_check_ca(ca) <= 0) {
    return Fail(Rejected("the certificate with the pinned fingerprint is not a CA"));
  }
  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), leaf, chain) != 1) {
    return Fail(Internal("cannot verify the pinned chain: " + OpenSslError()));
  }
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER);
  const std::string& name = context_->expected_peer_name();
  if (!name.empty()) {
    X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(ctx.get()), name.c_str(), name.size());
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    return Fail(Rejected(std::string("coordinator certificate does not verify against the "
                                     "pinned CA: ") +
                         X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), ca) != 1) {
    return Fail(Internal("cannot encode the pinned CA: " + OpenSslError()));
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  pinned_ca_pem_.assign(data, static_cast<size_t>(len));
  return Status::Ok();
}

Status SecureSession::OnWire(std::string_view frame, std::vector<std::string>* out,
                             std::vector<std::string>* messages) {
  std::vector<Plaintext> read;
  Status status = OnWire(frame, out, &read);
  for (Plaintext& m : read) messages->push_back(std::move(m).Join());
  return status;
}

Status SecureSession::OnWire(std::string_view frame, std::vector<std::string>* out,
                             std::vector<Plaintext>* messages) {
  if (!failure_.ok()) return failure_;
  if (!started_) return Fail(Internal("SecureSession::OnWire called before Start"));
  if (frame.size() > static_cast<size_t>(INT32_MAX)) {
    return Fail(
        ProtocolError("TLS frame of " + std::to_string(frame.size()) + " bytes is too large"));
  }
  if (Status s = CheckFrame(frame); !s.ok()) return Fail(std::move(s));

  SetInput(frame);
  messages_this_frame_ = 0;
  const size_t delivered_before = messages->size();
  Status status = Status::Ok();
  if (!established_) status = AdvanceHandshake(out);
  // The rest of the frame (if any) is application data.
  if (status.ok() && established_) status = ReadApplicationData(out, messages);
  if (status.ok() && BIO_ctrl_pending(SSL_get_rbio(ssl_.get())) != 0) {
    status = Fail(Internal("TLS left part of a frame unread"));
  }
  SetInput({});                                // drop the pointer into the caller's frame
  if (status.ok()) status = DrainOutput(out);  // e.g. a KeyUpdate response
  // A failed frame delivers nothing, not even messages from its authentic leading records.
  if (!status.ok()) messages->resize(delivered_before);
  return status;
}

Status SecureSession::ReadApplicationData(std::vector<std::string>* out,
                                          std::vector<Plaintext>* messages) {
  ERR_clear_error();
  for (;;) {
    // Decrypt straight into the length prefix, the message (or its head), or the placed payload.
    unsigned char* dst = nullptr;
    size_t want = 0;
    switch (reading_) {
      case Reading::kLength:
        dst = length_bytes_ + length_have_;
        want = 4 - length_have_;
        break;
      case Reading::kHead:
      case Reading::kBody:
        if (reading_ == Reading::kBody && partial_have_ == partial_.size()) GrowBody();
        dst = reinterpret_cast<unsigned char*>(partial_.data()) + partial_have_;
        want = partial_.size() - partial_have_;
        break;
      case Reading::kPlaced:
        dst = reinterpret_cast<unsigned char*>(placement_.data) + placed_have_;
        want = message_bytes_ - partial_.size() - placed_have_;
        break;
    }
    size_t got = 0;
    if (want > 0) {
      int rc = SSL_read_ex(ssl_.get(), dst, want, &got);
      if (rc != 1) {
        int err = SSL_get_error(ssl_.get(), rc);
        if (err == SSL_ERROR_WANT_READ) return Status::Ok();  // the frame is used up
        (void)DrainOutput(out);                               // the alert, if TLS produced one
        return FailFromOpenSsl(err, "TLS record rejected");
      }
    }
    switch (reading_) {
      case Reading::kLength:
        length_have_ += got;
        if (length_have_ < 4) continue;
        length_have_ = 0;
        SHOAL_RETURN_IF_ERROR(
            OnLength(uint32_t{length_bytes_[0]} | (uint32_t{length_bytes_[1]} << 8) |
                     (uint32_t{length_bytes_[2]} << 16) | (uint32_t{length_bytes_[3]} << 24)));
        break;
      case Reading::kHead:
        partial_have_ += got;
        if (partial_have_ == partial_.size()) SHOAL_RETURN_IF_ERROR(OnHead());
        break;
      case Reading::kBody:
        partial_have_ += got;
        break;
      case Reading::kPlaced:
        placed_have_ += got;
        break;
    }
    const bool done =
        (reading_ == Reading::kBody && partial_have_ == message_bytes_) ||
        (reading_ == Reading::kPlaced && partial_.size() + placed_have_ == message_bytes_);
    if (done) Deliver(messages);
  }
}

Status SecureSession::OnLength(uint32_t length) {
  if (++messages_this_frame_ > kMaxMessagesPerFrame) {
    return Fail(ProtocolError("more than " + std::to_string(kMaxMessagesPerFrame) +
                              " messages begin in one TLS frame"));
  }
  if (length > max_message_bytes_) {
    return Fail(ProtocolError("message length prefix " + std::to_string(length) +
                              " exceeds the limit of " + std::to_string(max_message_bytes_) +
                              " bytes"));
  }
  message_bytes_ = length;  // checked against the cap just above
  partial_have_ = 0;
  if (placer_ && length > kFrameHeaderBytes) {
    partial_.resize(kFrameHeaderBytes);  // the fixed header first, to learn the head's length
    head_bytes_ = 0;
    reading_ = Reading::kHead;
  } else {
    ReadWhole();
  }
  return Status::Ok();
}

// The head read so far is complete: the fixed header (learn the head's length), or the whole
// head (ask the placer where the payload goes). Whatever does not split or is not claimed is
// read whole.
Status SecureSession::OnHead() {
  if (head_bytes_ == 0) {
    const std::optional<FrameSplit> split = SplitFrame(partial_, message_bytes_);
    if (!split || split->payload_bytes == 0) {
      ReadWhole();
      return Status::Ok();
    }
    head_bytes_ = split->head_bytes;  // <= message_bytes_, itself under the cap
    partial_.resize(head_bytes_);
    if (partial_have_ < head_bytes_) return Status::Ok();  // the structured header next
  }
  placement_ = placer_(partial_, message_bytes_ - head_bytes_);
  if (placement_.data == nullptr) {
    placement_ = {};
    ReadWhole();
    return Status::Ok();
  }
  placed_have_ = 0;
  reading_ = Reading::kPlaced;
  return Status::Ok();
}

// Reads the rest of the message into `partial_`, after what it already holds.
void SecureSession::ReadWhole() {
  reading_ = Reading::kBody;
  GrowBody();
}

// A client reserves the whole message at once (its coordinator's frames carry the model; growing
// them copied it). A server grows the buffer as the bytes arrive (kServerReceiveGrowth).
void SecureSession::GrowBody() {
  size_t target = message_bytes_;
  if (context_->is_server()) {
    target = std::min(message_bytes_,
                      std::max(kServerReceiveAheadBytes, kServerReceiveGrowth * partial_have_));
  }
  if (target <= partial_.size()) return;
  if (partial_.capacity() < target) ReserveForWrite(partial_, target);
  partial_.resize(target);
}

void SecureSession::Deliver(std::vector<Plaintext>* messages) {
  Plaintext m;
  m.bytes = std::move(partial_);
  if (reading_ == Reading::kPlaced) {
    m.placed = true;
    m.payload = std::string_view(placement_.data, placed_have_);
    m.owner = std::move(placement_.owner);
    placement_ = {};
  }
  messages->push_back(std::move(m));
  partial_ = std::string();
  partial_have_ = 0;
  placed_have_ = 0;
  reading_ = Reading::kLength;
}

Status SecureSession::WritePlain(std::string_view data, std::vector<std::string>* out) {
  ERR_clear_error();
  size_t written = 0;
  int rc = SSL_write_ex(ssl_.get(), data.data(), data.size(), &written);
  if (rc != 1 || written != data.size()) {
    int err = SSL_get_error(ssl_.get(), rc);
    (void)DrainOutput(out);
    return FailFromOpenSsl(err, "TLS encryption failed");
  }
  return Status::Ok();
}

Status SecureSession::Seal(std::string_view message, std::vector<std::string>* out) {
  return Seal(message, {}, out);
}

Status SecureSession::Seal(std::string_view head, std::string_view body,
                           std::vector<std::string>* out) {
  size_t offset = 0;
  do {
    SHOAL_RETURN_IF_ERROR(SealRange(head, body, &offset, head.size() + body.size(), out));
  } while (offset < head.size() + body.size());
  return Status::Ok();
}

Status SecureSession::SealPart(std::string_view message, size_t* offset, size_t budget,
                               std::vector<std::string>* out) {
  return SealRange(message, {}, offset, budget, out);
}

Status SecureSession::SealRange(std::string_view head, std::string_view body, size_t* offset,
                                size_t budget, std::vector<std::string>* out) {
  if (!failure_.ok()) return failure_;
  if (!established_) {
    // Refused without failing the session: nothing reached the wire.
    return Internal("Seal before the TLS handshake completed");
  }
  const size_t size = head.size() + body.size();
  if (size > kMaxMessageCap) {
    return InvalidArgument("message of " + std::to_string(size) +
                           " bytes exceeds the 32-bit length prefix");
  }
  // The message's bytes from `pos` on, up to `n` of them, within one of its two pieces.
  auto bytes_at = [&](size_t pos, size_t n) {
    return pos < head.size() ? head.substr(pos, n) : body.substr(pos - head.size(), n);
  };
  size_t pos = *offset;
  if (pos > size) return Internal("SealPart offset beyond the message");
  budget = std::max(budget, kRecordPlain);
  const size_t end = size - pos > budget ? pos + budget : size;
  if (pos == 0) {
    // First record: the length prefix and the head of the message together.
    unsigned char first[kRecordPlain];
    const uint32_t n = static_cast<uint32_t>(size);
    first[0] = static_cast<unsigned char>(n);
    first[1] = static_cast<unsigned char>(n >> 8);
    first[2] = static_cast<unsigned char>(n >> 16);
    first[3] = static_cast<unsigned char>(n >> 24);
    size_t filled = 4;
    while (pos < std::min(size, kRecordPlain - 4)) {
      const std::string_view part = bytes_at(pos, kRecordPlain - filled);
      std::memcpy(first + filled, part.data(), part.size());
      filled += part.size();
      pos += part.size();
    }
    SHOAL_RETURN_IF_ERROR(
        WritePlain(std::string_view(reinterpret_cast<const char*>(first), filled), out));
  }

  // The rest in large writes; a frame is closed before it would pass kMaxWireFrameBytes.
  // Each frame's buffer is reserved once for what it will hold, so records are written into
  // it without reallocation.
  auto wire_bytes = [](size_t plain) {
    return (plain + kRecordPlain - 1) / kRecordPlain * (kRecordPlain + kRecordOverhead);
  };
  while (pos < end) {
    const std::string_view part = bytes_at(pos, std::min(end - pos, kWriteChunk));
    if (pending_out_.size() + wire_bytes(part.size()) > kMaxWireFrameBytes) {
      SHOAL_RETURN_IF_ERROR(DrainOutput(out));
    }
    if (pending_out_.capacity() < kMaxWireFrameBytes) {
      ReserveForWrite(pending_out_,
                      std::min(pending_out_.size() + wire_bytes(end - pos), kMaxWireFrameBytes));
    }
    SHOAL_RETURN_IF_ERROR(WritePlain(part, out));
    pos += part.size();
  }
  *offset = pos;
  return DrainOutput(out);
}

Status SecureSession::RequestKeyUpdateForTesting(std::vector<std::string>* out) {
  if (!failure_.ok()) return failure_;
  if (!established_) return Internal("KeyUpdate before the TLS handshake completed");
  ERR_clear_error();
  if (SSL_key_update(ssl_.get(), SSL_KEY_UPDATE_REQUESTED) != 1 ||
      SSL_do_handshake(ssl_.get()) != 1) {
    return Fail(Internal("KeyUpdate failed: " + OpenSslError()));
  }
  return DrainOutput(out);
}

Status SecureSession::SealRawForTesting(std::string_view plaintext, std::vector<std::string>* out) {
  if (!failure_.ok()) return failure_;
  if (!established_) return Internal("Seal before the TLS handshake completed");
  if (!plaintext.empty()) SHOAL_RETURN_IF_ERROR(WritePlain(plaintext, out));
  return DrainOutput(out);
}

}  // namespace shoal::protocols
