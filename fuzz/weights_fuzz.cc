// weights_fuzz: the ".shw" weights file parser (DecodeWeightsFile, model/weights.h).
//
// The file ends with a SHA-256 of everything before it, which random mutations almost never
// get right. Each input is therefore decoded twice: as is (the checksum path), and with its
// last 32 bytes replaced by the correct SHA-256 (so the length fields, the spec JSON and the
// data reach the parser; a checksum is no defence against a crafted file).
//
// Checks: a refusal is Corrupt; an accepted file has a spec that validates and exactly
// total_numel floats; it re-encodes to a file that decodes to the same spec, data bytes and
// version hash; no single allocation is larger than a small multiple of the input (the length
// fields are never trusted for an allocation).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "base/sha256.h"
#include "base/status.h"
#include "fuzz/fuzz_support.h"
#include "model/weights.h"

namespace shoal::fuzz {
namespace {

constexpr size_t kMinFileBytes = 8 + 8 + 8 + 32;

// JSON values are ~16 bytes each and vectors double their capacity, so a parse may allocate a
// few dozen times the input in one block; a length field trusted for an allocation would be
// orders of magnitude above that.
size_t AllocationCapFor(size_t input) { return 64 * input + (1u << 20); }

void DecodeAndCheck(const std::string& bytes) {
  Result<model::Weights> w = [&] {
    AllocationCap cap(AllocationCapFor(bytes.size()), "DecodeWeightsFile");
    return model::DecodeWeightsFile(bytes, "fuzz.shw");
  }();
  if (!w.ok()) {
    FUZZ_CHECK(w.status().code() == Code::kCorrupt, w.status().ToString());
    return;
  }
  Status valid = w->spec.Validate();
  FUZZ_CHECK(valid.ok(), "accepted a spec that does not validate: " + valid.ToString());
  FUZZ_CHECK(static_cast<int64_t>(w->data.size()) == w->spec.total_numel(),
             "data size differs from the spec");
  (void)w->FirstNonFinite();
  for (size_t i = 0; i < w->spec.tensors.size(); ++i) (void)w->Offset(i);

  const std::string again = model::EncodeWeightsFile(*w);
  Result<model::Weights> w2 = model::DecodeWeightsFile(again, "again.shw");
  FUZZ_CHECK(w2.ok(), "re-encoded file refused: " + w2.status().ToString());
  FUZZ_CHECK(w2->spec == w->spec, "spec changed across a round trip");
  FUZZ_CHECK(w2->data.size() == w->data.size() &&
                 std::memcmp(w2->data.data(), w->data.data(), w->data.size() * sizeof(float)) == 0,
             "data changed across a round trip");
  FUZZ_CHECK(w2->Hash() == w->Hash(), "version hash changed across a round trip");
}

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  shoal::fuzz::DecodeAndCheck(bytes);
  if (size >= shoal::fuzz::kMinFileBytes) {
    const shoal::Digest d = shoal::Sha256::Of(bytes.data(), size - 32);
    if (std::memcmp(bytes.data() + size - 32, d.data(), 32) != 0) {
      std::memcpy(bytes.data() + size - 32, d.data(), 32);
      shoal::fuzz::DecodeAndCheck(bytes);
    }
  }
  return 0;
}
