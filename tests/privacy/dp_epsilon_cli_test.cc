// `shoalctl dp-epsilon` run as a real process: the published vectors come out as printed text,
// and bad flags are errors that say what was wrong.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

struct CmdResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

CmdResult Shoalctl(const std::string& args) {
  const char* bin_dir = std::getenv("SHOAL_BIN_DIR");
  const std::string bin = std::string(bin_dir != nullptr ? bin_dir : "bin") + "/shoalctl";
  CmdResult run;
  FILE* pipe = ::popen((bin + " " + args + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return run;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) run.out.append(buf, n);
  const int status = ::pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(DpEpsilonCliTest, PrintsEpsilonAndTheBestOrder) {
  CmdResult r = Shoalctl(
      "dp-epsilon --sampling-rate 0.0025 --noise-multiplier 1.3 --steps 6000 --delta 1e-5 "
      "--orders tensorflow");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(Contains(r.out, "epsilon 0.7242234 at order 19")) << r.out;
  r = Shoalctl(
      "dp-epsilon --sampling-rate 0.04 --noise-multiplier 1.5 --steps 2250 --delta 1e-5 "
      "--orders opacus");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(Contains(r.out, "epsilon 7.3291112 at order 3.9")) << r.out;
}

TEST(DpEpsilonCliTest, TargetEpsilonPrintsTheNoiseMultiplier) {
  CmdResult r = Shoalctl(
      "dp-epsilon --sampling-rate 0.04 --target-epsilon 8 --steps 2250 --delta 1e-5 "
      "--orders opacus");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(Contains(r.out, "noise multiplier 1.4157872 for epsilon 8")) << r.out;
}

TEST(DpEpsilonCliTest, BadFlagsAreClearErrors) {
  CmdResult r = Shoalctl(
      "dp-epsilon --sampling-rate 1.5 --noise-multiplier 1 --steps 3 "
      "--delta 1e-5");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.out, "error: sampling rate must be in [0, 1], got 1.5")) << r.out;
  r = Shoalctl("dp-epsilon --sampling-rate 0.1 --steps 3 --delta 1e-5");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.out, "--noise-multiplier or --target-epsilon")) << r.out;
  r = Shoalctl(
      "dp-epsilon --sampling-rate 0.1 --noise-multiplier 1 --target-epsilon 2 "
      "--steps 3 --delta 1e-5");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  r = Shoalctl(
      "dp-epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 3 --delta 1e-5 "
      "--orders weird");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.out, "unknown --orders 'weird'")) << r.out;
}

}  // namespace
