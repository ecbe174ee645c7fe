// Test fixture for end-to-end export tests: skips unless Fashion-MNIST and Debian's Python torch
// are installed, gives each test a temporary directory (kept on failure), and runs commands to
// completion with a bounded wait.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "tests/integration/process.h"
#include "tests/integration/test_pki.h"

namespace shoal::testing {

inline const char* kFashion = "/usr/share/datasets/fashion-mnist";
inline const char* kPython = "/usr/bin/python3";

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class PythonExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
      if (!PathExists(std::string(kFashion) + "/" + f)) {
        GTEST_SKIP() << "Fashion-MNIST not installed (" << kFashion << "/" << f
                     << " missing; apt-get install dataset-fashion-mnist)";
      }
    }
    char tmpl[] = "/tmp/shoal-export-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pki_ = std::make_unique<testing::ScopedTestPki>(dir_);  // every process runs over TLS
    Process probe({kPython, "-c", "import torch, numpy"}, dir_ + "/python-probe.log");
    auto code = probe.Wait(std::chrono::seconds(120));
    if (code != 0) {
      GTEST_SKIP() << kPython << " cannot import torch and numpy (apt-get install python3-torch "
                   << "python3-numpy): " << probe.Log();
    }
  }
  void TearDown() override {
    if (dir_.empty()) return;
    if (HasFailure()) {
      std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
    } else {
      std::filesystem::remove_all(dir_);
    }
  }

  // Runs a command to completion (bounded) and returns its exit code; the output is in *log.
  int Run(const std::vector<std::string>& argv, const std::string& name, std::string* log,
          std::chrono::seconds timeout = std::chrono::seconds(120)) {
    Process p(argv, dir_ + "/" + name + ".log");
    auto code = p.Wait(timeout);
    *log = p.Log();
    return code.value_or(-1000);
  }

  std::string dir_;
  std::unique_ptr<testing::ScopedTestPki> pki_;
};

}  // namespace shoal::testing
