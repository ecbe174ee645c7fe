// shoal-evaluator: the coordinator's LibTorch process (coordinator/model_host.h). Started by
// shoal-coordinator with its end of a Unix socket as fd 3; serves model_ops.h requests one at a
// time until the coordinator closes the socket (or exits), then exits 0.
//
//   shoal-evaluator [--log-level LEVEL]
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "base/log.h"
#include "base/malloc_tuning.h"
#include "model/model_source.h"
#include "model/weights.h"
#include "evaluator/model_host.h"
#include "evaluator/model_ops.h"

namespace shoal::evaluator {
namespace {

constexpr int kFd = 3;

struct Request {
  nlohmann::json json;
  std::string script;  // the blob of initial_weights / open_evaluator
};

class Server {
 public:
  // Serves until the coordinator closes the connection (OK) or the stream breaks.
  Status Run() {
    while (true) {
      auto h = model_host::ReadHeader(kFd);
      if (!h.ok()) {
        return h.status().code() == Code::kUnavailable ? Status::Ok() : h.status();
      }
      SHOAL_RETURN_IF_ERROR(Handle(*h));
    }
  }

 private:
  Status Reply(const Status& st, nlohmann::json body = nlohmann::json::object(),
               const void* blob = nullptr, uint64_t n = 0) {
    body["status"] = model_host::StatusJson(st);
    return model_host::Write(kFd, body, st.ok() ? blob : nullptr, st.ok() ? n : 0);
  }

  Status Handle(const model_host::Header& h) {
    const std::string op = h.json.value("op", "");
    if (op == "evaluate") return Evaluate(h);
    // The other requests carry a TorchScript archive or nothing.
    std::string script;
    if (h.blob_bytes > model::kMaxScriptModelBytes) {
      SHOAL_RETURN_IF_ERROR(model_host::SkipBlob(kFd, h.blob_bytes));
      return Reply(InvalidArgument("model archive of " + std::to_string(h.blob_bytes) + " bytes"));
    }
    script.resize(h.blob_bytes);
    SHOAL_RETURN_IF_ERROR(model_host::ReadBlob(kFd, script.data(), h.blob_bytes));
    const nlohmann::json& j = h.json;
    try {
      if (op == "configure") {
        return Reply(Status::Ok(), {{"runtime", ConfigureModelRuntime(j.at("threads").get<int>())}});
      }
      model::ModelSource model{j.at("model").get<std::string>(), std::move(script)};
      const auto shape = j.at("input_shape").get<std::vector<int64_t>>();
      const int64_t classes = j.at("num_classes").get<int64_t>();
      if (op == "initial_weights") {
        auto w = InitialWeights(model, shape, classes, j.at("seed").get<uint64_t>());
        if (!w.ok()) return Reply(w.status());
        return Reply(Status::Ok(), {{"spec", w->spec.ToJson()}}, w->data.data(),
                     w->data.size() * sizeof(float));
      }
      if (op == "open_evaluator") {
        auto e = CentralEvaluator::Create(model, shape, classes, j.at("format").get<std::string>(),
                                          j.at("path").get<std::string>(),
                                          j.at("split").get<std::string>(),
                                          j.at("label_column").get<std::string>(),
                                          j.at("limit").get<int64_t>());
        if (!e.ok()) return Reply(e.status());
        const int64_t id = next_id_++;
        const int64_t size = (*e)->size();
        evaluators_[id] = std::move(e).value();
        ReleaseFreeMemory();  // the decoded test set's intermediate copies
        return Reply(Status::Ok(), {{"id", id}, {"size", size}});
      }
      if (op == "close_evaluator") {
        evaluators_.erase(j.at("id").get<int64_t>());
        ReleaseFreeMemory();
        return Reply(Status::Ok());
      }
    } catch (const nlohmann::json::exception& e) {
      return Reply(InvalidArgument(std::string("bad ") + op + " request: " + e.what()));
    }
    return Reply(InvalidArgument("unknown request '" + op + "'"));
  }

  Status Evaluate(const model_host::Header& h) {
    auto fail = [&](const Status& st) -> Status {
      SHOAL_RETURN_IF_ERROR(model_host::SkipBlob(kFd, h.blob_bytes));
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
    SHOAL_RETURN_IF_ERROR(model_host::ReadBlob(kFd, w.data.data(), h.blob_bytes));
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

  // Fault injection for crash tests: with SHOAL_FAULT_EVALUATOR_ABORT=N this process is killed
  // (SIGKILL, as by the OOM killer; no core file) at its N-th evaluation. Every new evaluator
  // process counts from zero.
  void MaybeAbortForTests() {
    const char* env = std::getenv("SHOAL_FAULT_EVALUATOR_ABORT");
    if (env != nullptr && ++evaluations_ == std::atol(env)) ::raise(SIGKILL);
  }

  std::map<int64_t, std::unique_ptr<CentralEvaluator>> evaluators_;
  int64_t next_id_ = 1;
  long evaluations_ = 0;
};

}  // namespace
}  // namespace shoal::evaluator

int main(int argc, char** argv) {
  shoal::TuneMallocForLargeBuffers();
  shoal::UseOneMallocArena();
  std::string level = "info";
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--log-level") == 0) level = argv[i + 1];
  }
  // fd 1 would be the coordinator's stdout (its round table): whatever LibTorch prints goes to
  // the log instead.
  ::dup2(2, 1);
  if (::fcntl(3, F_GETFD) < 0) {
    std::fprintf(stderr, "shoal-evaluator is started by shoal-coordinator (it expects fd 3)\n");
    return 2;
  }
  if (shoal::Status st = shoal::InitLogging("evaluator", level); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  shoal::evaluator::Server server;
  shoal::Status st = server.Run();
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  return 0;
}
