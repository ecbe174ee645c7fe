// shoalctl subcommands for the federation's PKI (security/pki.h):
//   ca init DIR [--coordinator-address tcp://HOST:PORT] [--san DNS:name|IP:addr ...]
//   enroll NAME --ca DIR --out BUNDLE_DIR [--coordinator tcp://HOST:PORT]
//   token create --name NAME --ca DIR [--ttl 1h|30m|3600s] [--coordinator tcp://HOST:PORT]
//   revoke NAME --ca DIR
//   enrolled --ca DIR [--json]
// Errors print "error: ..." to stderr and exit 2.
#pragma once

#include <CLI/CLI.hpp>

namespace shoal::ctl {

void AddPkiCommands(CLI::App& app);

}  // namespace shoal::ctl
