#include "tools/serve/request_parser.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace shoal::serve {
namespace {

using json = nlohmann::json;

// Values of unknown top-level keys are skipped; they may nest this deep.
constexpr int kMaxSkippedNesting = 64;

const char kShapeError[] = "request body must be a JSON object {\"inputs\": [input, ...]}";

// Receives the parser's events in order and keeps only what a batch needs. Returning false from
// an event stops the parse.
class InputsSax : public nlohmann::json_sax<json> {
 public:
  InputsSax(int64_t sample_values, int64_t max_batch, ParsedInputs* out)
      : sample_values_(sample_values), max_batch_(max_batch), out_(out) {}

  bool found_inputs() const { return found_inputs_; }

  bool null() override { return Scalar("null"); }
  bool boolean(bool) override { return Scalar("a boolean"); }
  bool string(string_t&) override { return Scalar("a string"); }
  bool binary(binary_t&) override { return Scalar("binary data"); }
  bool number_integer(number_integer_t v) override { return Number(static_cast<double>(v)); }
  bool number_unsigned(number_unsigned_t v) override { return Number(static_cast<double>(v)); }
  bool number_float(number_float_t v, const string_t&) override { return Number(v); }

  bool start_object(std::size_t) override {
    switch (where_) {
      case Where::kTop:
        if (depth_ != 0) return Fail(kShapeError);
        ++depth_;
        where_ = Where::kObject;
        return true;
      case Where::kSkipping:
        return Skip(+1);
      case Where::kInputsValue:
        return Fail("\"inputs\" is an object, expected a list of inputs");
      case Where::kInputsList:
        return Fail(Here() + " is an object, expected a list of " + std::to_string(sample_values_) +
                    " numbers");
      case Where::kInput:
        return Fail(Here() + " value " + std::to_string(values_in_input_) +
                    " is an object, expected a number");
      case Where::kObject:
        break;
    }
    return Fail(kShapeError);
  }

  bool key(string_t& k) override {
    if (where_ != Where::kObject) return where_ == Where::kSkipping;
    if (k == "inputs") {
      if (found_inputs_) return Fail("\"inputs\" appears twice");
      where_ = Where::kInputsValue;
    } else {
      where_ = Where::kSkipping;
      skip_depth_ = 0;
    }
    return true;
  }

  bool end_object() override {
    if (where_ == Where::kSkipping) return Skip(-1);
    if (where_ == Where::kObject) where_ = Where::kDone;
    return true;
  }

  bool start_array(std::size_t) override {
    switch (where_) {
      case Where::kTop:
        return Fail(kShapeError);
      case Where::kSkipping:
        return Skip(+1);
      case Where::kInputsValue:
        found_inputs_ = true;
        where_ = Where::kInputsList;
        return true;
      case Where::kInputsList:
        if (out_->count >= max_batch_) {
          return Fail("\"inputs\" has more than " + std::to_string(max_batch_) +
                      " inputs, at most " + std::to_string(max_batch_) + " per request");
        }
        where_ = Where::kInput;
        nesting_ = 1;
        values_in_input_ = 0;
        return true;
      case Where::kInput:
        if (++nesting_ > kMaxInputNesting) {
          return Fail(Here() + " is nested more than " + std::to_string(kMaxInputNesting) +
                      " lists deep");
        }
        return true;
      default:
        return Fail(kShapeError);
    }
  }

  bool end_array() override {
    if (where_ == Where::kSkipping) return Skip(-1);
    if (where_ == Where::kInputsList) {
      if (out_->count == 0) return Fail("\"inputs\" is empty");
      where_ = Where::kObject;
      return true;
    }
    if (where_ == Where::kInput && --nesting_ == 0) {
      if (values_in_input_ != sample_values_) {
        return Fail(Here() + " has " + std::to_string(values_in_input_) + " values, expected " +
                    std::to_string(sample_values_));
      }
      ++out_->count;
      where_ = Where::kInputsList;
    }
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    if (out_->error.empty()) out_->error = "request body is not valid JSON";
    return false;
  }

 private:
  enum class Where { kTop, kObject, kSkipping, kInputsValue, kInputsList, kInput, kDone };

  std::string Here() const { return "inputs[" + std::to_string(out_->count) + "]"; }

  bool Fail(std::string message) {
    out_->error = std::move(message);
    return false;
  }

  bool Skip(int step) {
    skip_depth_ += step;
    if (skip_depth_ > kMaxSkippedNesting) return Fail("request body is nested too deep");
    if (skip_depth_ == 0) where_ = Where::kObject;
    return true;
  }

  bool Scalar(const char* type) {
    switch (where_) {
      case Where::kSkipping:
        if (skip_depth_ == 0) where_ = Where::kObject;
        return true;
      case Where::kInputsValue:
        return Fail(std::string("\"inputs\" is ") + type + ", expected a list of inputs");
      case Where::kInputsList:
        return Fail(Here() + " is " + type + ", expected a list of " +
                    std::to_string(sample_values_) + " numbers");
      case Where::kInput:
        return Fail(Here() + " value " + std::to_string(values_in_input_) + " is " + type +
                    ", expected a number");
      default:
        return Fail(kShapeError);
    }
  }

  bool Number(double d) {
    if (where_ != Where::kInput) return Scalar("a number");
    if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max()) {
      std::ostringstream msg;
      msg << Here() << " value " << values_in_input_ << " (" << d << ") is not a finite float32";
      return Fail(msg.str());
    }
    // Past the expected count the values are only counted, for the error message.
    if (values_in_input_ < sample_values_) out_->values.push_back(static_cast<float>(d));
    ++values_in_input_;
    return true;
  }

  const int64_t sample_values_;
  const int64_t max_batch_;
  ParsedInputs* out_;
  Where where_ = Where::kTop;
  int depth_ = 0;
  int skip_depth_ = 0;
  int nesting_ = 0;
  int64_t values_in_input_ = 0;
  bool found_inputs_ = false;
};

}  // namespace

ParsedInputs ParsePredictRequest(std::string_view body, int64_t sample_values, int64_t max_batch) {
  ParsedInputs out;
  InputsSax sax(sample_values, max_batch, &out);
  const bool ok = json::sax_parse(body.begin(), body.end(), &sax);
  if (ok && out.error.empty() && !sax.found_inputs()) out.error = kShapeError;
  if (!ok && out.error.empty()) out.error = "request body is not valid JSON";
  if (!out.error.empty()) {
    out.count = 0;
    out.values = {};
  }
  return out;
}

}  // namespace shoal::serve
