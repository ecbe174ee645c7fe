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
// an event stops the parse. Checks come in the order of the tree-based parser this replaced:
// the body must be valid JSON and have the right shape and batch size (these stop the parse at
// once); the first input that is wrong is reported only once the body is known to be valid.
class InputsSax : public nlohmann::json_sax<json> {
 public:
  InputsSax(int64_t sample_values, int64_t max_batch, ParsedInputs* out)
      : sample_values_(sample_values), max_batch_(max_batch), out_(out) {}

  bool found_inputs() const { return found_inputs_; }
  const std::string& input_error() const { return input_error_; }

  bool null() override { return Scalar("null"); }
  bool boolean(bool) override { return Scalar("a boolean"); }
  bool string(string_t&) override { return Scalar("a string"); }
  bool binary(binary_t&) override { return Scalar("binary data"); }
  bool number_integer(number_integer_t v) override { return Number(static_cast<double>(v)); }
  bool number_unsigned(number_unsigned_t v) override { return Number(static_cast<double>(v)); }
  bool number_float(number_float_t v, const string_t&) override { return Number(v); }

  bool start_object(std::size_t) override { return Open(/*is_object=*/true); }
  bool start_array(std::size_t) override { return Open(/*is_object=*/false); }

  bool key(string_t& k) override {
    if (where_ != Where::kObject) return true;  // a key inside a skipped value
    if (k == "inputs") {
      if (found_inputs_) return Fail("\"inputs\" appears twice");
      where_ = Where::kInputsValue;
    } else {
      StartSkip(Where::kObject);
    }
    return true;
  }

  bool end_object() override { return Close(); }
  bool end_array() override { return Close(); }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    out_->error = "request body is not valid JSON";
    return false;
  }

 private:
  enum class Where { kTop, kObject, kSkipping, kInputsValue, kInputsList, kInput, kDone };

  std::string Here() const { return "inputs[" + std::to_string(elements_ - 1) + "]"; }

  bool Fail(std::string message) {
    out_->error = std::move(message);
    return false;
  }
  // An input is wrong: remembered (the first one only) and the parse goes on.
  bool Note(const std::string& message) {
    if (input_error_.empty()) input_error_ = message;
    return true;
  }

  // A value (object or list) opens.
  bool Open(bool is_object) {
    const char* type = is_object ? "an object" : "a list";
    switch (where_) {
      case Where::kTop:
        if (!is_object) return Fail(kShapeError);
        where_ = Where::kObject;
        return true;
      case Where::kSkipping:
        if (++skip_depth_ > kMaxSkippedNesting) return Fail("request body is nested too deep");
        return true;
      case Where::kInputsValue:
        if (is_object) return Fail("\"inputs\" is an object, expected a list of inputs");
        found_inputs_ = true;
        where_ = Where::kInputsList;
        return true;
      case Where::kInputsList:
        if (!NextElement()) return false;
        if (is_object) {
          Note(Here() + " is an object, expected a list of " + std::to_string(sample_values_) +
               " numbers");
          StartSkip(Where::kInputsList);
          return Open(true);
        }
        where_ = Where::kInput;
        nesting_ = 1;
        values_in_input_ = 0;
        return true;
      case Where::kInput:
        if (is_object) {
          Note(Here() + " value " + std::to_string(values_in_input_) + " is " + type +
               ", expected a number");
          StartSkip(Where::kInput);
          return Open(true);
        }
        if (++nesting_ > kMaxInputNesting) {
          Note(Here() + " is nested more than " + std::to_string(kMaxInputNesting) + " lists deep");
          if (nesting_ > kMaxSkippedNesting) return Fail("request body is nested too deep");
        }
        return true;
      case Where::kObject:
      case Where::kDone:
        break;
    }
    return Fail(kShapeError);
  }

  // A value (object or list) closes.
  bool Close() {
    switch (where_) {
      case Where::kSkipping:
        if (--skip_depth_ == 0) where_ = skip_return_;
        return true;
      case Where::kObject:
        where_ = Where::kDone;
        return true;
      case Where::kInputsList:
        if (elements_ == 0) return Fail("\"inputs\" is empty");
        where_ = Where::kObject;
        return true;
      case Where::kInput:
        if (--nesting_ > 0) return true;
        if (values_in_input_ != sample_values_) {
          Note(Here() + " has " + std::to_string(values_in_input_) + " values, expected " +
               std::to_string(sample_values_));
        }
        where_ = Where::kInputsList;
        return true;
      default:
        return true;
    }
  }

  void StartSkip(Where back) {
    where_ = Where::kSkipping;
    skip_return_ = back;
    skip_depth_ = 0;
  }

  // One more element of "inputs"; stops the parse beyond max_batch.
  bool NextElement() {
    if (++elements_ > max_batch_) {
      return Fail("\"inputs\" has more than " + std::to_string(max_batch_) + " inputs, at most " +
                  std::to_string(max_batch_) + " per request");
    }
    return true;
  }

  bool Scalar(const char* type) {
    switch (where_) {
      case Where::kSkipping:
        if (skip_depth_ == 0) where_ = skip_return_;
        return true;
      case Where::kInputsValue:
        return Fail(std::string("\"inputs\" is ") + type + ", expected a list of inputs");
      case Where::kInputsList:
        if (!NextElement()) return false;
        return Note(Here() + " is " + type + ", expected a list of " +
                    std::to_string(sample_values_) + " numbers");
      case Where::kInput:
        Note(Here() + " value " + std::to_string(values_in_input_) + " is " + type +
             ", expected a number");
        ++values_in_input_;
        return true;
      default:
        return Fail(kShapeError);
    }
  }

  bool Number(double d) {
    if (where_ != Where::kInput) return Scalar("a number");
    if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max()) {
      std::ostringstream msg;
      msg << Here() << " value " << values_in_input_ << " (" << d << ") is not a finite float32";
      Note(msg.str());
    }
    // Kept only while every input so far is right, and only up to the expected count (past it,
    // values are counted for the error message).
    if (input_error_.empty() && values_in_input_ < sample_values_) {
      out_->values.push_back(static_cast<float>(d));
    }
    ++values_in_input_;
    return true;
  }

  const int64_t sample_values_;
  const int64_t max_batch_;
  ParsedInputs* out_;
  Where where_ = Where::kTop;
  Where skip_return_ = Where::kObject;
  int skip_depth_ = 0;
  int nesting_ = 0;
  int64_t elements_ = 0;
  int64_t values_in_input_ = 0;
  bool found_inputs_ = false;
  std::string input_error_;
};

}  // namespace

ParsedInputs ParsePredictRequest(std::string_view body, int64_t sample_values, int64_t max_batch) {
  ParsedInputs out;
  InputsSax sax(sample_values, max_batch, &out);
  const bool ok = json::sax_parse(body.begin(), body.end(), &sax);
  if (!ok && out.error.empty()) out.error = "request body is not valid JSON";
  if (ok && !sax.found_inputs()) out.error = kShapeError;
  if (out.error.empty()) out.error = sax.input_error();
  if (out.error.empty()) {
    out.count = static_cast<int64_t>(out.values.size()) / sample_values;
  } else {
    out.count = 0;
    out.values = {};
  }
  return out;
}

}  // namespace shoal::serve
