// A mutually authenticated, encrypted channel: TLS 1.3 carried in the transport's frames.
//
// Why TLS through memory BIOs. ZeroMQ owns the TCP connections (connects with back-off, one
// polled socket for every worker; transport.h), so TLS cannot own a socket. Each
// SecureSession drives an OpenSSL SSL object whose input and output are memory BIOs: a
// received frame is handed to TLS as a read-only memory BIO (BIO_s_mem) over the caller's bytes (no
// copy), and whatever TLS produces (handshake flights, alerts, encrypted records) goes through a
// write-only memory sink BIO straight into the frame the caller will send (BIO_s_mem's growth would
// copy and wipe its buffer repeatedly and need one more copy to drain). The session does no I/O
// itself; the coordinator keeps one session per connection, a worker keeps one for its connection.
//
// Policy (TlsContext). TLS 1.3 only, AES-GCM suites only, no session tickets or resumption.
// Both sides present a certificate and both verify the peer's chain against `ca_pem` alone (the
// system trust store is never loaded). A client given `expected_peer_name` also requires the
// server certificate to carry that name (DNS SAN, or CN when the certificate has no DNS SAN).
// The identity of a peer is the verified certificate (peer_name(), peer_fingerprint()), never
// the connection id.
//
// Wire framing. Every frame a session emits holds whole TLS records, and a received frame must
// hold whole records too (the record headers are walked before anything reaches OpenSSL), so a
// truncated, padded or length-tampered frame is refused at once instead of being buffered.
// Seal() splits a large message into several frames of at most kMaxWireFrameBytes each.
//
// Message framing. Inside the TLS stream every application message is a 4-byte little-endian
// length followed by that many bytes. The length is checked against the session's cap before
// any memory is reserved for it, so the reassembly buffer never exceeds cap + 4 bytes.
// Decrypted bytes are read straight into the message being reassembled, or, for the payload of
// a codec frame that a payload placer claims, straight where the placer says (placement.h).
//
// Failure. Any error (handshake failure, certificate from another CA, wrong or missing peer
// certificate, a record that fails authentication because of flipped bits, a replayed or
// foreign record, a malformed frame, a length over the cap, the peer closing the session) makes
// the session failed for good: every later call returns the same Status, whose message names
// the reason (OpenSSL's error queue and certificate verification result are included). A record
// that fails authentication never yields plaintext, and a failed OnWire appends no message at
// all (not even one completed by authentic records earlier in the same frame). After a failure
// the caller drops the session (and its peer); a TLS alert describing the failure may have been
// appended to `out` and is worth sending.
//
// Threads: a TlsContext may be shared by sessions on any threads; a SecureSession belongs to
// one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "protocols/placement.h"

// OpenSSL types, declared here so that this header does not include OpenSSL.
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;
typedef struct x509_store_ctx_st X509_STORE_CTX;

namespace shoal::protocols {

// Largest application message a session accepts by default.
inline constexpr size_t kDefaultMaxMessageBytes = size_t{80} << 20;  // 80 MiB
// Largest frame a session emits; larger messages are sealed into several frames.
inline constexpr size_t kMaxWireFrameBytes = size_t{8} << 20;  // 8 MiB
// Cap on messages from a client that presented no certificate (enrollment only).
inline constexpr size_t kUnauthenticatedMaxMessageBytes = size_t{64} << 10;  // 64 KiB
// The length prefix is 32-bit, so no cap can exceed this.
inline constexpr size_t kMaxMessageCap = 0xFFFFFFFFu;
// Most application messages that may start in one received frame. A Shoal sender seals every
// message into frames of its own, so one is the norm; without a cap one 8 MiB frame of empty
// messages became two million messages handled one by one.
inline constexpr size_t kMaxMessagesPerFrame = 64;
// A server session reserves for a message at most kServerReceiveAheadBytes, or
// kServerReceiveGrowth times the bytes received when more, never the announced size at once: a
// peer that announces a large message and sends little ties up little, and a large message is
// copied at most a seventh of its size while its buffer grows. A client trusts its
// coordinator's announcements and reserves the whole message at once.
inline constexpr size_t kServerReceiveAheadBytes = size_t{1} << 20;
inline constexpr size_t kServerReceiveGrowth = 8;

// Server only: decides in the handshake whether a client certificate that verified against the
// CA is revoked (its subject CN and lowercase hex SHA-256). A revoked certificate ends the
// handshake with a "certificate revoked" alert, before any application data is read. Called on
// the thread that drives the session.
using RevocationCheck =
    std::function<bool(const std::string& common_name, const std::string& fingerprint)>;

struct TlsConfig {
  std::string cert_pem;  // this side's certificate (PEM), optionally followed by its chain
  std::string key_pem;   // its private key (PEM; e.g. ECDSA P-256)
  std::string ca_pem;    // the only trusted CA certificate(s) (PEM)
  // Name the peer certificate must carry (DNS SAN, or CN without DNS SANs). Empty = any
  // certificate issued by the CA. Used by clients to pin the coordinator's name.
  std::string expected_peer_name;
  // Server only. false lets a client without a certificate finish the handshake (used for
  // enrollment with a join token): such a session has peer_authenticated() == false and an
  // empty peer_name(). A client that does present a certificate must still pass verification.
  bool require_peer_certificate = true;
  // Client only, instead of ca_pem (the join flow: the worker knows only the CA's SHA-256
  // fingerprint from its token). cert_pem/key_pem may then be empty. The server must send the
  // CA certificate in its chain; the handshake succeeds only when a certificate in that chain
  // has this fingerprint, is a CA, and the server's certificate verifies against it alone.
  std::string ca_fingerprint;
  // Server only: the revocation list, consulted in the handshake (see RevocationCheck).
  RevocationCheck is_revoked;
};

// An immutable SSL_CTX configured with the policy above. Shared by all sessions of one side.
class TlsContext {
 public:
  static Result<std::shared_ptr<TlsContext>> Server(const TlsConfig& config);
  static Result<std::shared_ptr<TlsContext>> Client(const TlsConfig& config);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  bool is_server() const { return server_; }
  const RevocationCheck& is_revoked() const { return is_revoked_; }
  const std::string& expected_peer_name() const { return expected_peer_name_; }
  // Lower-case; non-empty for a client that pins the CA by fingerprint.
  const std::string& ca_fingerprint() const { return ca_fingerprint_; }
  SSL_CTX* native() const { return ctx_.get(); }

 private:
  struct CtxDeleter {
    void operator()(SSL_CTX* ctx) const;
  };
  TlsContext(std::unique_ptr<SSL_CTX, CtxDeleter> ctx, bool server, std::string expected,
             std::string ca_fingerprint, RevocationCheck is_revoked);
  static Result<std::shared_ptr<TlsContext>> Make(const TlsConfig& config, bool server);

  std::unique_ptr<SSL_CTX, CtxDeleter> ctx_;
  bool server_;
  std::string expected_peer_name_;
  std::string ca_fingerprint_;
  RevocationCheck is_revoked_;
};

// One TLS session with one peer.
class SecureSession {
 public:
  // `max_message_bytes` caps each received application message (<= kMaxMessageCap).
  explicit SecureSession(std::shared_ptr<const TlsContext> context,
                         size_t max_message_bytes = kDefaultMaxMessageBytes);
  ~SecureSession();
  SecureSession(const SecureSession&) = delete;
  SecureSession& operator=(const SecureSession&) = delete;

  // Server only, before Start: this session's client must present a certificate even when the
  // context lets clients go without one (no join token is open).
  void RequirePeerCertificate();

  // Begins the handshake. A client appends its ClientHello frame to `out`; a server appends
  // nothing (it waits for the ClientHello). Call once, before OnWire.
  Status Start(std::vector<std::string>* out);

  // Feeds one received frame of raw TLS bytes: advances the handshake or decrypts. Frames to
  // send back are appended to `out`, complete application messages to `messages`.
  Status OnWire(std::string_view frame, std::vector<std::string>* out,
                std::vector<Plaintext>* messages);
  // The same, each message in one string (a placed payload is copied back behind its head).
  Status OnWire(std::string_view frame, std::vector<std::string>* out,
                std::vector<std::string>* messages);

  // Called for each incoming message that is a codec frame (frame_layout.h SplitFrame) with a
  // non-empty payload, once its head (`head`: fixed + structured header) is decrypted; a
  // placement it returns receives the payload, and the message is delivered as its head with
  // the payload placed (placement.h). A null placement, or no placer, keeps the payload in the
  // message. Frames that do not split are read whole, for the receiver to reject.
  using PayloadPlacer =
      std::function<PayloadPlacement(std::string_view head, size_t payload_bytes)>;
  void set_payload_placer(PayloadPlacer placer) { placer_ = std::move(placer); }

  // Encrypts one application message (at most kMaxMessageCap bytes; the receiver enforces its
  // own cap) into one or more frames appended to `out`. Fails before the handshake completes.
  Status Seal(std::string_view message, std::vector<std::string>* out);
  // Seal() of the message head + body, without joining them first (a frame's header and the
  // payload it describes, sealed from where the payload lies).
  Status Seal(std::string_view head, std::string_view body, std::vector<std::string>* out);
  // Encrypts the next part of `message`, from *offset on and about `budget` bytes of it (whole
  // records; at least one), and advances *offset. Call first with *offset == 0 (the length
  // prefix goes out then); the message is sealed once *offset == message.size(). The frames
  // of consecutive calls concatenate to what Seal() would emit, so a sender can encrypt a
  // large message only as fast as its connection takes it. No other message may be sealed
  // before this one is finished.
  Status SealPart(std::string_view message, size_t* offset, size_t budget,
                  std::vector<std::string>* out);

  bool established() const { return established_; }
  // Why the handshake failed, when it was the peer's certificate: it was revoked
  // (RevocationCheck), or it presented none where one was required.
  bool peer_revoked() const { return peer_revoked_; }
  bool peer_sent_no_certificate() const { return peer_sent_no_certificate_; }
  // The cap on each received message, from the next message on (<= kMaxMessageCap).
  void set_max_message_bytes(size_t cap);
  size_t max_message_bytes() const { return max_message_bytes_; }
  // Bytes held for the message being reassembled (its buffer's capacity): what a peer's
  // announcement has made this session reserve.
  size_t receive_buffer_bytes() const { return partial_.capacity(); }
  bool failed() const { return !failure_.ok(); }
  const Status& failure() const { return failure_; }
  // True once the peer presented a certificate that verified (always, except for a server
  // with require_peer_certificate = false whose client sent none).
  bool peer_authenticated() const { return peer_authenticated_; }
  // Subject CN of the verified peer certificate; empty before the handshake completes.
  std::string peer_name() const { return peer_name_; }
  // PEM of the CA certificate a fingerprint-pinning client verified the server against.
  const std::string& pinned_ca_pem() const { return pinned_ca_pem_; }
  // Lower-case hex SHA-256 of the peer certificate's DER encoding; empty before completion.
  std::string peer_fingerprint() const { return peer_fingerprint_; }

  // Test hook: encrypts `plaintext` into the TLS stream as is, without a length prefix, so
  // tests can forge the inner framing (e.g. a lying length) inside authentic records.
  Status SealRawForTesting(std::string_view plaintext, std::vector<std::string>* out);
  // Test hook: asks the peer to update its keys (a TLS 1.3 KeyUpdate with update_requested),
  // appending the frame that carries the request to `out`.
  Status RequestKeyUpdateForTesting(std::vector<std::string>* out);

 private:
  struct SslDeleter {
    void operator()(SSL* ssl) const;
  };
  friend int VerifyClientCertificate(int preverify_ok, X509_STORE_CTX* store);

  // SealPart() of the message head + body.
  Status SealRange(std::string_view head, std::string_view body, size_t* offset, size_t budget,
                   std::vector<std::string>* out);
  Status Fail(Status status);
  Status FailFromOpenSsl(int ssl_error, const std::string& what);
  Status CheckFrame(std::string_view frame) const;
  Status DrainOutput(std::vector<std::string>* out);
  Status AdvanceHandshake(std::vector<std::string>* out);
  Status OnHandshakeDone();
  Status CheckPinnedChain();
  Status ReadApplicationData(std::vector<std::string>* out, std::vector<Plaintext>* messages);
  Status WritePlain(std::string_view data, std::vector<std::string>* out);
  void SetInput(std::string_view frame);

  std::shared_ptr<const TlsContext> context_;
  std::unique_ptr<SSL, SslDeleter> ssl_;
  std::string pending_out_;  // the frame TLS is writing into (through the output BIO)
  size_t max_message_bytes_;
  bool started_ = false;
  bool established_ = false;
  bool peer_authenticated_ = false;
  bool peer_revoked_ = false;
  bool peer_sent_no_certificate_ = false;
  size_t messages_this_frame_ = 0;  // messages begun in the frame being read (OnWire)
  Status failure_;
  std::string pinned_ca_pem_;
  std::string peer_name_;
  std::string peer_fingerprint_;

  // Reassembly of the next incoming message: its length prefix, then either the whole message
  // into `partial_` (kBody), or, with a placer, its head into `partial_` (kHead) and its payload
  // into `placement_` (kPlaced).
  enum class Reading { kLength, kHead, kBody, kPlaced };
  Status OnLength(uint32_t length);
  Status OnHead();
  void ReadWhole();
  // Kind kBody: makes room in `partial_` for more of the message as its bytes arrive.
  void GrowBody();
  void Deliver(std::vector<Plaintext>* messages);

  PayloadPlacer placer_;
  Reading reading_ = Reading::kLength;
  unsigned char length_bytes_[4] = {0, 0, 0, 0};
  size_t length_have_ = 0;    // bytes of the length prefix received so far
  size_t message_bytes_ = 0;  // the length of the message being read
  size_t head_bytes_ = 0;     // kHead: the head's length once known (0: reading the fixed header)
  std::string partial_;       // the message (kBody) or its head (kHead, kPlaced)
  size_t partial_have_ = 0;
  PayloadPlacement placement_;  // kPlaced: where the payload goes
  size_t placed_have_ = 0;
};

}  // namespace shoal::protocols
