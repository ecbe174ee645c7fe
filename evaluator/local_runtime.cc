#include "evaluator/local_runtime.h"

#include "data/dataset.h"
#include "nn/models.h"
#include "nn/runtime.h"

namespace shoal::evaluator {
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

class LocalRuntime : public ModelRuntime {
 public:
  std::string Configure(int threads) override { return nn::ConfigureTorchRuntime(threads); }

  Result<model::Weights> InitialWeights(const model::ModelSource& model,
                                        const std::vector<int64_t>& input_shape,
                                        int64_t num_classes, uint64_t seed) override {
    SHOAL_ASSIGN_OR_RETURN(auto net, nn::MakeModel(model, input_shape, num_classes, seed));
    return nn::GetWeights(*net);
  }

  Result<std::unique_ptr<CentralEvaluator>> OpenEvaluator(const model::ModelSource& model,
                                                          const std::vector<int64_t>& input_shape,
                                                          int64_t num_classes,
                                                          const EvalData& eval) override {
    Result<data::Dataset> data = data::LoadDataset(eval);
    if (!data.ok()) return data.status().Annotate("central evaluation data");
    if (data->sample_shape != input_shape) {
      return InvalidArgument("central evaluation data " + eval.path + " has samples of shape " +
                             model::ShapeString(data->sample_shape) + ", the model takes " +
                             model::ShapeString(input_shape));
    }
    if (data->num_classes() > num_classes) {
      return InvalidArgument("central evaluation data " + eval.path + " has label " +
                             std::to_string(data->num_classes() - 1) + ", the model has " +
                             std::to_string(num_classes) + " classes");
    }
    SHOAL_ASSIGN_OR_RETURN(auto net, nn::MakeModel(model, input_shape, num_classes, 0));
    return std::unique_ptr<CentralEvaluator>(
        std::make_unique<TorchEvaluator>(std::move(net), std::move(data).value()));
  }

  void Release() override {}  // the process's LibTorch stays as long as the process
};

}  // namespace

std::unique_ptr<ModelRuntime> MakeLocalRuntime() { return std::make_unique<LocalRuntime>(); }

}  // namespace shoal::evaluator
