#include "fuzz/test_pki.h"

#include <cstdio>
#include <cstdlib>

#include "base/file_util.h"
#include "fuzz/fuzz_support.h"
#include "security/pki.h"

namespace shoal::fuzz {
namespace {

[[noreturn]] void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "test PKI: %s: %s\n", what.c_str(), st.ToString().c_str());
  std::abort();
}

std::string Read(const std::string& path) {
  Result<std::string> r = ReadFile(path);
  if (!r.ok()) Die("read " + path, r.status());
  return std::move(r).value();
}

std::shared_ptr<const protocols::TlsContext> Make(const protocols::TlsConfig& config, bool server,
                                                  const char* what) {
  auto ctx = server ? protocols::TlsContext::Server(config) : protocols::TlsContext::Client(config);
  if (!ctx.ok()) Die(what, ctx.status());
  return *ctx;
}

}  // namespace

TestPki MakeTestPki() {
  TempDir dir;
  const std::string ca_dir = dir.path() + "/ca";
  const std::string bundle = dir.path() + "/worker-1";
  if (Status st = security::InitCa(ca_dir); !st.ok()) Die("InitCa", st);
  if (Status st = security::Enroll(ca_dir, "worker-1", bundle); !st.ok()) Die("Enroll", st);
  TestPki p;
  p.ca = Read(security::CaCertPath(ca_dir));
  p.server_cert = Read(security::CoordinatorCertPath(ca_dir));
  p.server_key = Read(security::CoordinatorKeyPath(ca_dir));
  p.client_cert = Read(security::BundleCertPath(bundle));
  p.client_key = Read(security::BundleKeyPath(bundle));
  Result<std::string> fp = security::CaFingerprint(p.ca);
  if (!fp.ok()) Die("CaFingerprint", fp.status());
  p.ca_fingerprint = *fp;
  return p;
}

TestContexts MakeTestContexts(const TestPki& pki) {
  TestContexts c;
  protocols::TlsConfig server;
  server.cert_pem = pki.server_cert;
  server.key_pem = pki.server_key;
  server.ca_pem = pki.ca;
  c.server = Make(server, true, "server TlsContext");

  protocols::TlsConfig enroll = server;
  enroll.cert_pem = pki.server_cert + pki.ca;
  enroll.require_peer_certificate = false;
  c.enroll_server = Make(enroll, true, "enrollment server TlsContext");

  protocols::TlsConfig client;
  client.cert_pem = pki.client_cert;
  client.key_pem = pki.client_key;
  client.ca_pem = pki.ca;
  client.expected_peer_name = "coordinator";
  c.client = Make(client, false, "client TlsContext");

  protocols::TlsConfig join;
  join.expected_peer_name = "coordinator";
  join.ca_fingerprint = pki.ca_fingerprint;
  c.join_client = Make(join, false, "join client TlsContext");
  return c;
}

}  // namespace shoal::fuzz
