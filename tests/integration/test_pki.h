// Test helper: a federation CA in a test's temporary directory, so that integration tests run
// the coordinator and workers over TLS exactly as users do (the default).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "protocols/channel.h"
#include "security/pki.h"
#include "tests/integration/process.h"

namespace shoal::testing {

class TestPki {
 public:
  // Creates DIR/ca (once) with a coordinator certificate valid for localhost / 127.0.0.1.
  explicit TestPki(const std::string& dir) : dir_(dir), ca_dir_(dir + "/ca") {
    if (!PathExists(security::CaCertPath(ca_dir_))) {
      Status st = security::InitCa(ca_dir_);
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
  }
  const std::string& ca_dir() const { return ca_dir_; }

  // A bundle for `name` (issued on first use) in DIR/bundles/NAME.
  std::string Bundle(const std::string& name) const {
    const std::string out = dir_ + "/bundles/" + name;
    if (!PathExists(security::BundleCertPath(out))) {
      Status st = security::Enroll(ca_dir_, name, out);
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    return out;
  }

  std::vector<std::string> CoordinatorArgs() const { return {"--ca-dir", ca_dir_}; }
  std::vector<std::string> WorkerArgs(const std::string& name) const {
    return {"--bundle", Bundle(name)};
  }

  // A client TLS context holding `name`'s certificate, for scripted workers.
  std::shared_ptr<const protocols::TlsContext> ClientTls(const std::string& name) const {
    return ClientTlsFromBundle(Bundle(name));
  }

  // The same from any bundle directory (e.g. one issued by another CA).
  static std::shared_ptr<const protocols::TlsContext> ClientTlsFromBundle(const std::string& dir) {
    auto b = security::LoadBundle(dir);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    if (!b.ok()) return nullptr;
    auto tls = protocols::WorkerTls(*b, security::kCoordinatorCommonName);
    EXPECT_TRUE(tls.ok()) << tls.status().ToString();
    return tls.ok() ? *tls : nullptr;
  }

 private:
  std::string dir_;
  std::string ca_dir_;
};

}  // namespace shoal::testing

namespace shoal::testing {

// Adds the credentials a shoal-coordinator or shoal-worker command line needs (the worker's
// name is read from its --name flag); other commands are returned unchanged.
inline std::vector<std::string> Secured(const TestPki& pki, std::vector<std::string> argv) {
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for (size_t i = 0; i < argv.size(); ++i) {
    if (ends_with(argv[i], "/shoal-coordinator")) {
      for (auto& a : pki.CoordinatorArgs()) argv.push_back(a);
      return argv;
    }
    if (ends_with(argv[i], "/shoal-worker")) {
      for (size_t j = i + 1; j + 1 < argv.size(); ++j) {
        if (argv[j] == "--name") {
          for (auto& a : pki.WorkerArgs(argv[j + 1])) argv.push_back(a);
          return argv;
        }
      }
      return argv;
    }
  }
  return argv;
}

}  // namespace shoal::testing

namespace shoal::testing {

// While alive, every Process started by the test gets the credentials of a test federation in
// `dir` (the coordinator its CA, each worker a bundle for its --name): tests run over TLS.
class ScopedTestPki {
 public:
  explicit ScopedTestPki(const std::string& dir) : pki_(dir) {
    ArgvHook() = [this](std::vector<std::string> argv) { return Secured(pki_, std::move(argv)); };
  }
  ~ScopedTestPki() { ArgvHook() = nullptr; }
  ScopedTestPki(const ScopedTestPki&) = delete;
  ScopedTestPki& operator=(const ScopedTestPki&) = delete;
  const TestPki& pki() const { return pki_; }

 private:
  TestPki pki_;
};

}  // namespace shoal::testing
