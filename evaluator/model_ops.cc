#include "evaluator/model_ops.h"

#include "data/dataset.h"
#include "nn/models.h"
#include "nn/runtime.h"

namespace shoal::evaluator {

std::string ConfigureModelRuntime(int threads) { return nn::ConfigureTorchRuntime(threads); }

void ReleaseModelRuntime() {}

Result<model::Weights> InitialWeights(const model::ModelSource& model,
                               const std::vector<int64_t>& input_shape, int64_t num_classes,
                               uint64_t seed) {
  SHOAL_ASSIGN_OR_RETURN(auto net, nn::MakeModel(model, input_shape, num_classes, seed));
  return nn::GetWeights(*net);
}

namespace {

class TorchEvaluator : public CentralEvaluator {
 public:
  TorchEvaluator(std::shared_ptr<nn::Net> net, data::Dataset data)
      : net_(std::move(net)), data_(std::move(data)) {}
  Result<model::EvalMetrics> Evaluate(const model::Weights& weights) override {
    SHOAL_RETURN_IF_ERROR(nn::SetWeights(*net_, weights));
    try {
      return nn::Evaluate(*net_, data_);
    } catch (const c10::Error& e) {
      return Internal(std::string("evaluation failed: ") + e.what_without_backtrace());
    } catch (const std::exception& e) {  // TorchScript raises (torch::jit::JITException)
      return Internal(std::string("evaluation failed: ") + e.what());
    }
  }
  int64_t size() const override { return data_.size(); }

 private:
  std::shared_ptr<nn::Net> net_;
  data::Dataset data_;
};

}  // namespace

Result<std::unique_ptr<CentralEvaluator>> CentralEvaluator::Create(
    const model::ModelSource& model, const std::vector<int64_t>& input_shape, int64_t num_classes,
    const std::string& format, const std::string& path, const std::string& split,
    const std::string& label_column, int64_t limit) {
  Result<data::Dataset> data = format == "csv" ? data::LoadCsvDataset(path, label_column, limit)
                                         : data::LoadIdxDataset(path, split, limit);
  if (!data.ok()) return data.status().Annotate("central evaluation data");
  if (data->sample_shape != input_shape) {
    return InvalidArgument("central evaluation data " + path + " has samples of shape " +
                           model::ShapeString(data->sample_shape) + ", the model takes " +
                           model::ShapeString(input_shape));
  }
  if (data->num_classes() > num_classes) {
    return InvalidArgument("central evaluation data " + path + " has label " +
                           std::to_string(data->num_classes() - 1) + ", the model has " +
                           std::to_string(num_classes) + " classes");
  }
  SHOAL_ASSIGN_OR_RETURN(auto net, nn::MakeModel(model, input_shape, num_classes, 0));
  return std::unique_ptr<CentralEvaluator>(
      std::make_unique<TorchEvaluator>(std::move(net), std::move(data).value()));
}

}  // namespace shoal::evaluator
