// The body of a /predict request, {"inputs": [input, ...]}, parsed in one pass (nlohmann's SAX
// interface) straight into one float buffer: no JSON tree is built, so a request costs its body
// plus 4 bytes per value instead of ~20 times its body. Torch-free, so fuzz/ can drive it.
//
// Each input is a list of numbers, possibly nested up to kMaxInputNesting lists deep, that
// holds exactly `sample_values` finite float32 values; at most `max_batch` inputs. Other keys of
// the top object are ignored. The first problem found ends the parse with a message naming it
// ("inputs[3] has 700 values, expected 784").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::serve {

inline constexpr int kMaxInputNesting = 8;  // list levels inside one input

struct ParsedInputs {
  int64_t count = 0;          // inputs
  std::vector<float> values;  // count * sample_values, input after input
  std::string error;          // empty when the body is a valid request
};

ParsedInputs ParsePredictRequest(std::string_view body, int64_t sample_values, int64_t max_batch);

}  // namespace shoal::serve
