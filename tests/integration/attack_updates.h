// Test-only attack harness (issue #23): the updates a dishonest worker sends, built from an
// honest one. Used by the scripted workers of the integration tests; never part of the shipped
// worker.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace shoal::testing {

enum class Attack { kNone, kScaled, kSignFlipped, kGaussian, kConstant };

inline const char* AttackName(Attack a) {
  switch (a) {
    case Attack::kNone:
      return "none";
    case Attack::kScaled:
      return "scaled";
    case Attack::kSignFlipped:
      return "sign-flipped";
    case Attack::kGaussian:
      return "gaussian";
    case Attack::kConstant:
      return "constant";
  }
  return "?";
}

// What a worker running `attack` with `strength` sends instead of `honest`:
//   scaled: strength x honest; sign-flipped: -strength x honest; gaussian: noise of standard
//   deviation `strength` (seeded); constant: every value = strength.
inline std::vector<float> AttackUpdate(Attack attack, const std::vector<float>& honest,
                                       float strength, uint32_t seed = 1) {
  std::vector<float> out(honest.size());
  switch (attack) {
    case Attack::kNone:
      return honest;
    case Attack::kScaled:
      for (size_t i = 0; i < out.size(); ++i) out[i] = strength * honest[i];
      break;
    case Attack::kSignFlipped:
      for (size_t i = 0; i < out.size(); ++i) out[i] = -strength * honest[i];
      break;
    case Attack::kGaussian: {
      std::mt19937 rng(seed);
      std::normal_distribution<float> d(0.0f, strength);
      for (auto& x : out) x = d(rng);
      break;
    }
    case Attack::kConstant:
      for (auto& x : out) x = strength;
      break;
  }
  return out;
}

// An honest-looking update: a direction shared by every honest worker of the round plus a
// little noise of its own, reproducible from (worker, round).
inline std::vector<float> HonestUpdate(size_t n, int worker, uint64_t round) {
  std::mt19937 shared(static_cast<uint32_t>(1000 + round));
  std::mt19937 own(static_cast<uint32_t>(round * 7919 + static_cast<uint64_t>(worker) + 1));
  std::normal_distribution<float> dir(0.0f, 0.01f), noise(0.0f, 0.002f);
  std::vector<float> v(n);
  for (auto& x : v) x = dir(shared);
  for (auto& x : v) x += noise(own);
  return v;
}

}  // namespace shoal::testing
