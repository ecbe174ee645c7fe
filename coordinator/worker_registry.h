// Who may talk to the coordinator and who is connected: the enrollment tables (certificates the
// federation's CA issued, revoked names), the admitted peers by connection, and the per-worker
// statistics the dashboard and /api/workers show.
//
// The registry decides (admission, authorization, revocation) but never sends: the round engine
// owns the channel, so it turns a refusal into an Error reply and closes the connection. Stats are
// kept by worker name and outlive the connection (a lost worker stays listed, and a resumed run
// starts its table from metrics.jsonl).
//
// Not thread-safe: owned by the round engine's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "protocols/channel.h"
#include "protocols/messages.h"
#include "security/pki.h"

namespace shoal::coordinator {

// An admitted worker's connection.
struct Peer {
  std::string id;    // connection id
  std::string name;  // with TLS, the certificate's CN (checked at Hello and on every message)
  std::string fingerprint;  // with TLS, the SHA-256 of the certificate it said Hello with
  int64_t num_train = 0;
  int64_t num_val = 0;
  std::chrono::steady_clock::time_point last_seen;
};

// What the dashboard shows per worker name; kept after a worker is lost.
struct WorkerStats {
  std::string state = "connected";
  std::string first_seen;
  std::string last_seen;
  std::vector<uint64_t> rounds;
  int64_t samples = 0;
  int64_t val_samples = 0;
  std::optional<double> last_train_loss;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t rejected = 0;
  std::optional<double> ewma_round_s;  // observed time from task sent to update accepted
};

// Why a peer or message is refused: `reason` is the rejection counter's name ("" = not
// counted), `why` the message for the log and the peer.
struct Refusal {
  std::string reason;
  std::string why;
};

class WorkerRegistry {
 public:
  // `ca_dir` empty: insecure mode, no enrollment tables (anyone may say Hello).
  explicit WorkerRegistry(std::string ca_dir) : ca_dir_(std::move(ca_dir)) {}

  // Reloads issued.json, revoked.json and tokens.json when their size or modification time
  // changed (always with `force`). Unreadable files keep the previous tables: revocations
  // already known stay; an unreadable tokens.json closes enrollment (no open token).
  void RefreshEnrollment(bool force);
  // Whether a join token is open (unused, unexpired) now, as of the last refresh: while none is,
  // the coordinator refuses TLS sessions without a certificate in the handshake.
  bool join_token_open() const;
  // The handshake's revocation check (protocols::RevocationCheck): the name is revoked, or the
  // certificate is recorded as revoked.
  bool Revoked(const std::string& name, const std::string& fingerprint) const;
  // Connected peers whose name is revoked, or whose certificate is (superseded by a
  // `shoalctl enroll --reissue`, or revoked by serial): to be cut off now.
  std::vector<std::string> RevokedConnections() const;
  // Whether the CA issued the certificate of this SHA-256 (hex) to an enrolled worker.
  bool enrolled(const std::string& fingerprint) const { return enrolled_.count(fingerprint) != 0; }
  // With TLS: the message's certificate must be enrolled and unrevoked, and an admitted
  // connection must keep its certificate name.
  std::optional<Refusal> Authorize(const protocols::ChannelMessage& in) const;
  // Redeems a join token against the request's CSR: the worker's certificate and the CA, with
  // the enrollment tables reloaded so the new certificate is admitted right away.
  Result<protocols::JoinResponse> Enroll(const protocols::JoinRequest& request);

  // A Hello the federation can admit: valid name, the certificate's name (`identity`, with
  // TLS), the federation's input shape, classes within num_classes, a training set, and
  // training and validation sets of at most `max_samples` (admission.max_samples: the declared
  // size weighs the worker's updates).
  static std::optional<Refusal> CheckHello(const protocols::Hello& hello, bool secure,
                                           const std::string& identity,
                                           const std::vector<int64_t>& input_shape,
                                           int64_t num_classes, int64_t max_samples);
  // Admits (or re-admits) connection `id` as the Hello's worker; `fresh` tells a new
  // connection from one that said Hello again. The caller dropped another connection of the
  // same name first. `fingerprint`: the SHA-256 of its certificate (with TLS), so that a
  // certificate superseded or revoked later is cut off by RevokedConnections.
  Peer& Admit(const std::string& id, const protocols::Hello& hello, bool* fresh,
              const std::string& fingerprint = "");
  // Forgets connection `id`; its worker's stats say "lost". False when it was not admitted.
  bool Remove(const std::string& id);

  Peer* Find(const std::string& id);
  Peer* ByName(const std::string& name);
  const std::map<std::string, Peer>& peers() const { return peers_; }
  size_t size() const { return peers_.size(); }
  // Admitted worker names, sorted.
  std::vector<std::string> Names() const;
  // Connections silent for longer than `timeout`.
  std::vector<std::string> SilentFor(std::chrono::milliseconds timeout) const;

  // The stats of connection `id`'s worker; nullptr when not admitted.
  WorkerStats* StatsFor(const std::string& id);
  WorkerStats& Stats(const std::string& name) { return stats_[name]; }
  // A resumed run's history: who took part in which round, listed as offline.
  void AddHistory(const nlohmann::json& round_record);
  // An accepted update: the round is counted and the worker's round time (`seconds` from the
  // round's start) enters its moving average.
  void RecordUpdate(const std::string& name, uint64_t round, double train_loss, double seconds);

  // The dashboard's worker table: every worker seen, then enrolled ones never connected.
  nlohmann::json WorkersJson() const;
  int connected() const;
  size_t enrolled_count() const { return enrolled_.size(); }
  size_t revoked_count() const { return revoked_.size(); }

 private:
  std::string ca_dir_;
  // Enrolled workers by certificate fingerprint (from the CA's issued.json) and revoked names;
  // enrollment_stamp_ is the files' size and mtime when last read.
  std::map<std::string, security::WorkerRecord> enrolled_;
  std::set<std::string> revoked_;
  std::string enrollment_stamp_;
  int64_t open_token_expiry_ = 0;             // Unix seconds; 0 = no open join token
  std::map<std::string, Peer> peers_;         // by connection id
  std::map<std::string, WorkerStats> stats_;  // by worker name
};

}  // namespace shoal::coordinator
