// predict_request_fuzz: shoal-serve's /predict body parser (ParsePredictRequest,
// tools/serve/request_parser.h), which an HTTP client controls byte for byte.
//
// Input: [sample values selector][max batch selector][body]. Checks: a refused body leaves no
// inputs and no values and names a reason; an accepted one holds 1..max_batch inputs of exactly
// sample_values finite float32 values each; no single allocation is larger than a small multiple
// of the body (the parser keeps floats only, never a JSON tree or a count from the body).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_support.h"
#include "tools/serve/request_parser.h"

namespace shoal::fuzz {
namespace {

// Each accepted value takes at least 2 body bytes ("0,") and becomes 4 bytes of float; the
// float vector doubles its capacity as it grows.
size_t AllocationCapFor(size_t body) { return 8 * body + (1u << 16); }

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shoal;
  if (size < 2) return 0;
  const int64_t sample_values = 1 + data[0] % 64;
  const int64_t max_batch = 1 + data[1] % 16;
  const std::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);
  serve::ParsedInputs parsed;
  {
    fuzz::AllocationCap cap(fuzz::AllocationCapFor(body.size()), "ParsePredictRequest");
    parsed = serve::ParsePredictRequest(body, sample_values, max_batch);
  }
  if (!parsed.error.empty()) {
    FUZZ_CHECK(parsed.count == 0 && parsed.values.empty(), "a refused body kept its values");
    return 0;
  }
  FUZZ_CHECK(parsed.count >= 1 && parsed.count <= max_batch, "batch size out of range");
  FUZZ_CHECK(static_cast<int64_t>(parsed.values.size()) == parsed.count * sample_values,
             "values do not fill count inputs");
  for (float v : parsed.values) FUZZ_CHECK(std::isfinite(v), "a non-finite value was accepted");
  return 0;
}
