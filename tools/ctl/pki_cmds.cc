#include "tools/ctl/pki_cmds.h"

#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "base/status.h"
#include "security/pki.h"

namespace shoal::ctl {
namespace {

using nlohmann::json;

[[noreturn]] void Fail(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
  std::exit(2);
}

void Check(const Status& st) {
  if (!st.ok()) Fail(st);
}

// "90", "90s", "30m", "1h", "2d" -> seconds.
Result<int64_t> ParseDuration(const std::string& text) {
  auto bad = [&] {
    return InvalidArgument("bad --ttl \"" + text + "\": expected a number with s, m, h or d");
  };
  if (text.empty() || text.size() > 12) return bad();
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || text.size() - digits > 1) return bad();
  const int64_t n = std::stoll(text.substr(0, digits));
  const char unit = digits < text.size() ? text[digits] : 's';
  switch (unit) {
    case 's':
      return n;
    case 'm':
      return n * 60;
    case 'h':
      return n * 3600;
    case 'd':
      return n * 86400;
    default:
      return bad();
  }
}

void AddCaCommand(CLI::App& app) {
  auto* ca = app.add_subcommand("ca", "The federation's certificate authority");
  ca->require_subcommand(1);
  struct Args {
    std::string dir;
    security::CaOptions options;
    std::vector<std::string> sans;
  };
  auto args = std::make_shared<Args>();
  auto* init = ca->add_subcommand(
      "init",
      "Create a CA: the root in --root (keep it offline), the coordinator's certificate and the "
      "enrollment CA in DIR (refuses to overwrite)");
  init->add_option("dir", args->dir, "CA directory for the coordinator (created mode 0700)")
      ->required();
  init->add_option("--root", args->options.root_dir,
                   "Root CA directory, never inside DIR (default: DIR-root; created mode 0700)");
  init->add_option("--enrollment-days", args->options.enrollment_days,
                   "Validity of the enrollment CA with which the coordinator signs join requests")
      ->capture_default_str();
  init->add_option("--coordinator-address", args->options.coordinator_address,
                   "The coordinator's address written into bundles and tokens")
      ->capture_default_str();
  init->add_option("--san", args->sans,
                   "subjectAltName of the coordinator certificate, DNS:name or IP:addr "
                   "(repeatable; default DNS:localhost DNS:coordinator IP:127.0.0.1)");
  init->callback([args] {
    if (!args->sans.empty()) args->options.coordinator_sans = args->sans;
    Check(security::InitCa(args->dir, args->options));
    auto pem = ReadFile(security::CaCertPath(args->dir), security::kMaxCertFileBytes);
    if (!pem.ok()) Fail(pem.status());
    auto fingerprint = security::CaFingerprint(*pem);
    if (!fingerprint.ok()) Fail(fingerprint.status());
    std::printf("created CA in %s\n", args->dir.c_str());
    std::printf("ca fingerprint (sha256): %s\n", fingerprint->c_str());
    std::printf("coordinator: %s, %s\n", security::CoordinatorCertPath(args->dir).c_str(),
                security::CoordinatorKeyPath(args->dir).c_str());
    const std::string root = args->options.root_dir.empty() ? security::DefaultRootDir(args->dir)
                                                            : args->options.root_dir;
    std::printf("enrollment CA (%lld days): %s\n",
                static_cast<long long>(args->options.enrollment_days),
                security::EnrollmentCertPath(args->dir).c_str());
    std::printf(
        "root CA key: %s (keep it offline: only `enroll` and `ca renew-enrollment` need "
        "it, never the coordinator)\n",
        security::CaKeyPath(root).c_str());
  });

  struct RenewArgs {
    std::string dir, root;
    int64_t days = security::kDefaultEnrollmentCaValidityDays;
  };
  auto renew_args = std::make_shared<RenewArgs>();
  auto* renew = ca->add_subcommand(
      "renew-enrollment",
      "Issue a new enrollment CA from the root (before the old one expires); a CA directory "
      "still holding the root key (the old layout) has it moved to --root");
  renew->add_option("dir", renew_args->dir, "CA directory of the coordinator")->required();
  renew->add_option("--root", renew_args->root, "Root CA directory (default: DIR-root)");
  renew->add_option("--days", renew_args->days, "Validity of the new enrollment CA")
      ->capture_default_str();
  renew->callback([renew_args] {
    Check(security::RenewEnrollmentCa(renew_args->dir, renew_args->root, renew_args->days));
    std::printf("new enrollment CA (%lld days): %s\n", static_cast<long long>(renew_args->days),
                security::EnrollmentCertPath(renew_args->dir).c_str());
  });
}

void AddEnrollCommand(CLI::App& app) {
  struct Args {
    std::string name, ca_dir, out_dir, coordinator;
    security::IssueOptions options;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "enroll", "Issue an offline enrollment bundle (worker key, certificate, CA) for a worker");
  cmd->add_option("name", args->name, "Worker name: 1-64 of [A-Za-z0-9._-]")->required();
  cmd->add_option("--ca", args->ca_dir, "CA directory")->required();
  cmd->add_option("--out", args->out_dir, "Bundle directory to create")->required();
  cmd->add_option("--coordinator", args->coordinator,
                  "Coordinator address for the bundle (default: the CA's)");
  cmd->add_option("--root", args->options.root_dir,
                  "Root CA directory that signs the bundle (default: CA_DIR-root)");
  cmd->add_flag("--reissue", args->options.reissue,
                "The worker already has a certificate: issue a new one and revoke the old ones");
  cmd->callback([args] {
    Check(security::Enroll(args->ca_dir, args->name, args->out_dir, args->coordinator,
                           args->options));
    std::printf("enrolled %s: bundle in %s (copy it to the worker; worker.key is secret)\n",
                args->name.c_str(), args->out_dir.c_str());
  });
}

void AddTokenCommand(CLI::App& app) {
  auto* token = app.add_subcommand("token", "One-time join tokens");
  token->require_subcommand(1);
  struct Args {
    std::string name, ca_dir, ttl = "1h", coordinator;
    bool reissue = false;
  };
  auto args = std::make_shared<Args>();
  auto* create = token->add_subcommand(
      "create", "Create a join token for a worker and print it (shown only once)");
  create->add_option("--name", args->name, "Worker name: 1-64 of [A-Za-z0-9._-]")->required();
  create->add_option("--ca", args->ca_dir, "CA directory")->required();
  create->add_option("--ttl", args->ttl, "Lifetime: 3600s, 30m, 1h, 2d (at most 30d)")
      ->capture_default_str();
  create->add_option("--coordinator", args->coordinator,
                     "Coordinator address in the token (default: the CA's)");
  create->add_flag("--reissue", args->reissue,
                   "The worker already has a certificate: redeeming the token revokes the old "
                   "ones");
  create->callback([args] {
    auto ttl = ParseDuration(args->ttl);
    if (!ttl.ok()) Fail(ttl.status());
    auto text = security::CreateJoinToken(args->ca_dir, args->name, *ttl, args->coordinator, 0,
                                          args->reissue);
    if (!text.ok()) Fail(text.status());
    std::printf("%s\n", text->c_str());
  });
}

void AddRevokeCommand(CLI::App& app) {
  struct Args {
    std::string name, ca_dir;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("revoke", "Revoke a worker: its certificates and its name");
  cmd->add_option("name", args->name, "Worker name")->required();
  cmd->add_option("--ca", args->ca_dir, "CA directory")->required();
  cmd->callback([args] {
    Check(security::Revoke(args->ca_dir, args->name));
    std::printf("revoked %s\n", args->name.c_str());
  });
}

void AddEnrolledCommand(CLI::App& app) {
  struct Args {
    std::string ca_dir;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("enrolled", "Certificates the CA issued to workers");
  cmd->add_option("--ca", args->ca_dir, "CA directory")->required();
  cmd->add_flag("--json", args->json, "Print JSON");
  cmd->callback([args] {
    auto records = security::ListEnrolled(args->ca_dir);
    if (!records.ok()) Fail(records.status());
    if (args->json) {
      json arr = json::array();
      for (const auto& r : *records) {
        arr.push_back({{"name", r.name},
                       {"serial", r.serial},
                       {"fingerprint", r.fingerprint},
                       {"issued_at", r.issued_at},
                       {"not_after", r.not_after},
                       {"how", r.how},
                       {"revoked", r.revoked}});
      }
      std::cout << arr.dump(2) << "\n";
      return;
    }
    std::printf("%-24s %-32s %-20s %-6s %s\n", "name", "serial", "expires", "how", "revoked");
    for (const auto& r : *records) {
      std::printf("%-24s %-32s %-20s %-6s %s\n", r.name.c_str(), r.serial.c_str(),
                  security::UtcText(r.not_after).c_str(), r.how.c_str(), r.revoked ? "yes" : "no");
    }
  });
}

}  // namespace

void AddPkiCommands(CLI::App& app) {
  AddCaCommand(app);
  AddEnrollCommand(app);
  AddTokenCommand(app);
  AddRevokeCommand(app);
  AddEnrolledCommand(app);
}

}  // namespace shoal::ctl
