// The parameters of one silo's differentially private training task, as the coordinator plans
// them and the worker checks them, and how DP-SGD counts its steps.
//
// The coordinator sends them in the TrainTask (protocols/messages.h); the worker refuses a task
// whose values are out of range (naming the field) and accounts for the ones it runs in its
// own ledger (privacy/ledger.h), whatever the coordinator says it spent. The mechanism field
// leaves room for client-level DP (the coordinator clips and noises whole updates): the budget
// code reads epsilon per silo and does not care which mechanism produced it.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace shoal::privacy {

// The wire values of TrainTask.dp_mode.
enum class DpMode : uint8_t {
  kNone = 0,
  kSample = 1,  // DP-SGD on the worker: Poisson batches, per-example clipping, noise per step
};
inline constexpr uint8_t kMaxDpMode = 1;
// "none" / "sample"; InvalidArgument naming `key` for anything else.
Result<DpMode> ParseDpMode(const std::string& text, const std::string& key);
const char* DpModeName(DpMode mode);

// Ranges of the parameters (config keys and wire fields alike).
inline constexpr double kMaxClipNorm = 1e6;
inline constexpr double kMaxSigma = 1e4;  // = kMaxNoiseMultiplier of rdp_accountant.h
// Steps of one task: 2^24 Poisson batches (an epoch at q = 1e-4 is 10^4 steps).
inline constexpr uint64_t kMaxSteps = uint64_t{1} << 24;
inline constexpr double kMinSamplingRate = 1e-9;
// The largest epsilon a worker reports (an unbounded loss, e.g. noise 0, is reported as this).
inline constexpr double kMaxReportedEpsilon = 1e12;

struct DpParams {
  DpMode mode = DpMode::kNone;
  double clip_norm = 0;         // C
  double noise_multiplier = 0;  // sigma: noise N(0, (sigma C)^2) per coordinate per step
  double sampling_rate = 0;     // q: each record joins a step's batch with this probability
  uint64_t steps = 0;           // Poisson batches of the task
  // The noise (and the sampling) is drawn from the task's seed (run.deterministic): whoever
  // knows the seed - the coordinator - can subtract it. Otherwise the worker draws it from the
  // operating system's random source.
  bool seeded_noise = false;
};

// Ok for mode none (the other fields are then ignored) and for sample-level parameters in
// range: clip_norm in (0, kMaxClipNorm], noise_multiplier in (0, kMaxSigma], sampling_rate in
// [kMinSamplingRate, 1], steps in [1, kMaxSteps]. InvalidArgument naming `prefix` + the field.
Status ValidateDpParams(const DpParams& p, const std::string& prefix);

// DP-SGD's steps for `epochs` passes over `n` records at expected batch size `batch` (q =
// batch / n): ceil(epochs * n / batch), TensorFlow Privacy's count (docs/privacy.md). 0 when an
// argument is not positive.
uint64_t DpSgdSteps(int64_t epochs, int64_t n, int64_t batch);
// The same for an explicit sampling rate q: ceil(epochs / q).
uint64_t DpSgdStepsAtRate(int64_t epochs, double q);

}  // namespace shoal::privacy
