// A throwaway PKI for the fuzz targets and the seed generator, made with Shoal's own CA code
// (security/pki.h) in a temporary directory: CA "Shoal federation CA", the coordinator's server
// certificate (CN and DNS SAN "coordinator") and a worker certificate (CN "worker-1").
#pragma once

#include <memory>
#include <string>

#include "protocols/secure_channel.h"

namespace shoal::fuzz {

struct TestPki {
  std::string ca;
  std::string ca_fingerprint;  // SHA-256 hex of the CA certificate (what a join token carries)
  std::string server_cert, server_key;
  std::string client_cert, client_key;
};

// Aborts with a message when the PKI cannot be made.
TestPki MakeTestPki();

struct TestContexts {
  // The coordinator's usual server: every client must present a certificate from the CA.
  std::shared_ptr<const protocols::TlsContext> server;
  // The coordinator with enrollment enabled: a client certificate is optional
  // (require_peer_certificate = false) and the chain it sends includes the CA certificate.
  std::shared_ptr<const protocols::TlsContext> enroll_server;
  // A worker with its certificate (expects the server name "coordinator").
  std::shared_ptr<const protocols::TlsContext> client;
  // A worker joining with a token: no certificate, trusts the CA by fingerprint.
  std::shared_ptr<const protocols::TlsContext> join_client;
};

TestContexts MakeTestContexts(const TestPki& pki);

}  // namespace shoal::fuzz
