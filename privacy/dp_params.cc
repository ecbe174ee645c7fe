#include "privacy/dp_params.h"

#include <cmath>

namespace shoal::privacy {

Result<DpMode> ParseDpMode(const std::string& text, const std::string& key) {
  if (text == "none") return DpMode::kNone;
  if (text == "sample") return DpMode::kSample;
  return InvalidArgument(key + " must be \"none\" or \"sample\", not \"" + text + "\"");
}

const char* DpModeName(DpMode mode) {
  switch (mode) {
    case DpMode::kNone:
      return "none";
    case DpMode::kSample:
      return "sample";
  }
  return "unknown";
}

Status ValidateDpParams(const DpParams& p, const std::string& prefix) {
  if (static_cast<uint8_t>(p.mode) > kMaxDpMode) {
    return InvalidArgument(prefix + "dp_mode " + std::to_string(static_cast<int>(p.mode)) +
                           " is not a known mechanism (0 none, 1 sample)");
  }
  if (p.mode == DpMode::kNone) return Status::Ok();
  // Written as !(in range) so that NaN is refused too.
  if (!(p.clip_norm > 0 && p.clip_norm <= kMaxClipNorm)) {
    return InvalidArgument(prefix + "clip_norm " + std::to_string(p.clip_norm) +
                           " is out of range (0, " + std::to_string(kMaxClipNorm) + "]");
  }
  if (!(p.noise_multiplier > 0 && p.noise_multiplier <= kMaxSigma)) {
    return InvalidArgument(prefix + "noise_multiplier " + std::to_string(p.noise_multiplier) +
                           " is out of range (0, " + std::to_string(kMaxSigma) + "]");
  }
  if (!(p.sampling_rate >= kMinSamplingRate && p.sampling_rate <= 1)) {
    return InvalidArgument(prefix + "sampling_rate " + std::to_string(p.sampling_rate) +
                           " is out of range [1e-9, 1]");
  }
  if (p.steps < 1 || p.steps > kMaxSteps) {
    return InvalidArgument(prefix + "steps " + std::to_string(p.steps) + " is out of range [1, " +
                           std::to_string(kMaxSteps) + "]");
  }
  return Status::Ok();
}

uint64_t DpSgdSteps(int64_t epochs, int64_t n, int64_t batch) {
  if (epochs <= 0 || n <= 0 || batch <= 0) return 0;
  // epochs <= 2^31, n <= 2^53 in practice: the product is computed in long double to stay
  // exact where int64 could overflow.
  const long double total = static_cast<long double>(epochs) * static_cast<long double>(n);
  return static_cast<uint64_t>(std::ceil(total / static_cast<long double>(batch)));
}

uint64_t DpSgdStepsAtRate(int64_t epochs, double q) {
  if (epochs <= 0 || !(q > 0)) return 0;
  return static_cast<uint64_t>(std::ceil(static_cast<long double>(epochs) / q - 1e-9L));
}

}  // namespace shoal::privacy
