#include "evaluator/server.h"

#include <signal.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "base/malloc_tuning.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace shoal::evaluator {

Status Server::Run() {
  while (true) {
    auto h = wire::ReadHeader(fd_);
    if (!h.ok()) {
      return h.status().code() == Code::kUnavailable ? Status::Ok() : h.status();
    }
    SHOAL_RETURN_IF_ERROR(Handle(*h));
  }
}

Status Server::Reply(const Status& st, nlohmann::json body, const void* blob, uint64_t n) {
  body["status"] = wire::StatusJson(st);
  return wire::Write(fd_, body, st.ok() ? blob : nullptr, st.ok() ? n : 0);
}

Status Server::Handle(const wire::Header& h) {
  const std::string op = h.json.value("op", "");
  if (op == "evaluate") return Evaluate(h);
  // The other requests carry a TorchScript archive or nothing.
  std::string script;
  if (h.blob_bytes > model::kMaxScriptModelBytes) {
    SHOAL_RETURN_IF_ERROR(wire::SkipBlob(fd_, h.blob_bytes));
    return Reply(InvalidArgument("model archive of " + std::to_string(h.blob_bytes) + " bytes"));
  }
  script.resize(h.blob_bytes);
  SHOAL_RETURN_IF_ERROR(wire::ReadBlob(fd_, script.data(), h.blob_bytes));
  const nlohmann::json& j = h.json;
  try {
    if (op == "configure") {
      return Reply(Status::Ok(), {{"runtime", runtime_.Configure(j.at("threads").get<int>())}});
    }
    if (op == "close_evaluator") {
      evaluators_.erase(j.at("id").get<int64_t>());
      ReleaseFreeMemory();
      return Reply(Status::Ok());
    }
    if (op != "initial_weights" && op != "open_evaluator") {
      return Reply(InvalidArgument("unknown request '" + op + "'"));
    }
    // The requests about a model.
    model::ModelSource model{j.at("model").get<std::string>(), std::move(script)};
    const auto shape = j.at("input_shape").get<std::vector<int64_t>>();
    const int64_t classes = j.at("num_classes").get<int64_t>();
    if (op == "initial_weights") {
      auto w = runtime_.InitialWeights(model, shape, classes, j.at("seed").get<uint64_t>());
      if (!w.ok()) return Reply(w.status());
      return Reply(Status::Ok(), {{"spec", w->spec.ToJson()}}, w->data.data(),
                   w->data.size() * sizeof(float));
    }
    EvalData data{j.at("format").get<std::string>(), j.at("path").get<std::string>(),
                  j.at("split").get<std::string>(), j.at("label_column").get<std::string>(),
                  j.at("limit").get<int64_t>()};
    auto e = runtime_.OpenEvaluator(model, shape, classes, data);
    if (!e.ok()) return Reply(e.status());
    const int64_t id = next_id_++;
    const int64_t size = (*e)->size();
    evaluators_[id] = std::move(e).value();
    ReleaseFreeMemory();  // the decoded test set's intermediate copies
    return Reply(Status::Ok(), {{"id", id}, {"size", size}});
  } catch (const nlohmann::json::exception& e) {
    return Reply(InvalidArgument(std::string("bad ") + op + " request: " + e.what()));
  }
}

Status Server::Evaluate(const wire::Header& h) {
  auto fail = [&](const Status& st) -> Status {
    SHOAL_RETURN_IF_ERROR(wire::SkipBlob(fd_, h.blob_bytes));
    return Reply(st);
  };
  auto it = evaluators_.find(h.json.value("id", int64_t{-1}));
  if (it == evaluators_.end()) return fail(InvalidArgument("evaluate: no such evaluator"));
  auto spec = model::ModelSpec::FromJson(h.json.value("spec", nlohmann::json()));
  if (!spec.ok()) return fail(spec.status().Annotate("evaluate"));
  if (Status st = spec->Validate(); !st.ok()) return fail(st.Annotate("evaluate"));
  if (static_cast<uint64_t>(spec->total_bytes()) != h.blob_bytes) {
    return fail(InvalidArgument("evaluate: " + std::to_string(h.blob_bytes) +
                                " bytes of weights for a spec of " +
                                std::to_string(spec->total_bytes())));
  }
  model::Weights w;
  w.spec = std::move(spec).value();
  w.data.resize(static_cast<size_t>(w.spec.total_numel()));
  SHOAL_RETURN_IF_ERROR(wire::ReadBlob(fd_, w.data.data(), h.blob_bytes));
  MaybeAbortForTests();
  auto m = it->second->Evaluate(w);
  w = model::Weights();
  // The weights and LibTorch's evaluation workspace, when more than the next evaluation will
  // allocate again (each page handed back is faulted in again at ~14 us on these VMs).
  ReleaseFreeMemoryBeyond(kKeptFreeHeapBytes);
  if (!m.ok()) return Reply(m.status());
  return Reply(Status::Ok(), {{"count", m->count},
                              {"loss", m->loss},
                              {"accuracy", m->accuracy},
                              {"cpu_seconds", m->cpu_seconds}});
}

void Server::MaybeAbortForTests() {
  const char* env = std::getenv("SHOAL_FAULT_EVALUATOR_ABORT");
  if (env != nullptr && ++evaluations_ == std::atol(env)) ::raise(SIGKILL);
}

}  // namespace shoal::evaluator
