#include "evaluator/child_process_runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/file_util.h"
#include "base/restart_budget.h"
#include "evaluator/wire.h"

namespace shoal::evaluator {
namespace {

constexpr const char* kEvaluator = "shoal-evaluator";

// SHOAL_EVALUATOR, else beside this executable, else on PATH.
Result<std::string> FindEvaluator() {
  if (const char* env = std::getenv("SHOAL_EVALUATOR"); env != nullptr && *env != '\0') {
    if (::access(env, X_OK) != 0) {
      return NotFound(std::string("SHOAL_EVALUATOR=") + env + " is not an executable file");
    }
    return std::string(env);
  }
  auto found = FindCompanionExecutable(kEvaluator);
  if (!found.ok()) {
    return NotFound(found.status().message() +
                    " (the coordinator's LibTorch process: initial weights and central "
                    "evaluation); install it beside shoal-coordinator or set SHOAL_EVALUATOR");
  }
  return found;
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "was killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "stopped";
}

// One shoal-evaluator process; requests are serialized.
class Host {
 public:
  static Result<std::shared_ptr<Host>> Start(int threads,
                                             const std::vector<std::string>& readable) {
    SHOAL_ASSIGN_OR_RETURN(std::string path, FindEvaluator());
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return ErrnoStatus("socketpair for", kEvaluator);
    }
    const char* level = spdlog::level::to_string_view(spdlog::get_level()).data();
    std::vector<std::string> args = {path, "--log-level", level};
    for (const std::string& r : readable) {
      args.push_back("--read");
      args.push_back(r);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      return ErrnoStatus("fork for", kEvaluator);
    }
    if (pid == 0) {  // the child: async-signal-safe calls only, then exec
      if (sv[1] == 3) {
        ::fcntl(3, F_SETFD, 0);
      } else if (::dup2(sv[1], 3) < 0) {
        ::_exit(127);
      }
      ::close_range(4, ~0U, 0);  // none of the coordinator's sockets and files
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(sv[1]);
    auto host = std::shared_ptr<Host>(new Host(sv[0], pid));
    SHOAL_ASSIGN_OR_RETURN(nlohmann::json reply,
                           host->Call({{"op", "configure"}, {"threads", threads}}, nullptr, 0));
    host->runtime_ =
        reply.value("runtime", "") + " (in " + kEvaluator + ", pid " + std::to_string(pid) + ")";
    return host;
  }

  ~Host() {
    ::close(fd_);  // the child reads end-of-stream and exits
    AwaitExit(100);
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      Reap(0);
    }
  }

  const std::string& runtime() const { return runtime_; }

  // Sends a request (with `blob`) and returns the reply's header; its blob goes to `read_blob`
  // (which must read exactly the announced bytes) or is skipped.
  Result<nlohmann::json> Call(
      const nlohmann::json& request, const void* blob, uint64_t n,
      const std::function<Status(const nlohmann::json&, uint64_t)>& read_blob = nullptr) {
    std::lock_guard<std::mutex> l(mu_);
    if (!broken_.ok()) return broken_;
    auto reply = [&]() -> Result<nlohmann::json> {
      SHOAL_RETURN_IF_ERROR(wire::Write(fd_, request, blob, n));
      SHOAL_ASSIGN_OR_RETURN(wire::Header h, wire::ReadHeader(fd_));
      const Status st = wire::StatusFromJson(h.json.value("status", nlohmann::json()));
      if (!st.ok()) {
        SHOAL_RETURN_IF_ERROR(wire::SkipBlob(fd_, h.blob_bytes));
        return st;
      }
      if (read_blob) {
        SHOAL_RETURN_IF_ERROR(read_blob(h.json, h.blob_bytes));
      } else {
        SHOAL_RETURN_IF_ERROR(wire::SkipBlob(fd_, h.blob_bytes));
      }
      return h.json;
    }();
    if (!reply.ok() &&
        (reply.status().code() == Code::kUnavailable || reply.status().code() == Code::kProtocol)) {
      // The stream is unusable from here on: say why, once the child's fate is known.
      AwaitExit(40);
      broken_ = Unavailable(std::string(kEvaluator) + " (pid " + std::to_string(pid_) + ") " +
                            (exited_ ? DescribeExit(exit_status_) : "stopped answering") + ": " +
                            reply.status().message());
      return broken_;
    }
    return reply;
  }

  int fd() const { return fd_; }
  // The process died or its stream broke: every call fails from here on.
  bool broken() {
    std::lock_guard<std::mutex> l(mu_);
    return !broken_.ok();
  }

 private:
  Host(int fd, pid_t pid) : fd_(fd), pid_(pid) {}

  // Waits up to `tries` x 50 ms for the child to exit (it has been told to, or has died).
  void AwaitExit(int tries) {
    for (int i = 0; i < tries && !exited_; ++i) {
      Reap(WNOHANG);
      if (!exited_) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  void Reap(int flags) {
    int status = 0;
    if (::waitpid(pid_, &status, flags) == pid_) {
      exited_ = true;
      exit_status_ = status;
    }
  }

  std::mutex mu_;
  int fd_;
  pid_t pid_;
  std::string runtime_;
  Status broken_;
  bool exited_ = false;
  int exit_status_ = 0;
};

// The child processes of one runtime: the one its users share (it lives while one of them holds
// it) and the start-up reference that keeps it from Configure to Release. Shared by the runtime
// and its evaluators, which may outlive it.
class ProcessPool {
 public:
  explicit ProcessPool(std::vector<std::string> readable) : readable_(std::move(readable)) {}

  void set_threads(int threads) {
    std::lock_guard<std::mutex> l(mu_);
    threads_ = threads;
  }

  // The running process, or a new one.
  Result<std::shared_ptr<Host>> Shared() {
    std::lock_guard<std::mutex> l(mu_);
    if (auto h = host_.lock()) return h;
    SHOAL_ASSIGN_OR_RETURN(auto h, Host::Start(threads_, readable_));
    host_ = h;
    return h;
  }

  // A new process in place of `broken` (which its last user then releases).
  Result<std::shared_ptr<Host>> Replace(const std::shared_ptr<Host>& broken) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (host_.lock() == broken) host_.reset();
      if (startup_ == broken) startup_.reset();
    }
    return Shared();
  }

  void HoldForStartUp(std::shared_ptr<Host> host) {
    std::lock_guard<std::mutex> l(mu_);
    startup_ = std::move(host);
  }

  void EndStartUp() {
    std::shared_ptr<Host> last;
    std::lock_guard<std::mutex> l(mu_);
    last.swap(startup_);  // (the process, if this was its last user, ends after the unlock)
  }

 private:
  std::mutex mu_;
  const std::vector<std::string> readable_;
  int threads_ = 1;
  std::weak_ptr<Host> host_;
  std::shared_ptr<Host> startup_;
};

// The fields every request about a model carries; the TorchScript archive is the blob.
nlohmann::json ModelRequest(const char* op, const model::ModelSource& model,
                            const std::vector<int64_t>& input_shape, int64_t num_classes) {
  return {{"op", op},
          {"model", model.name},
          {"input_shape", input_shape},
          {"num_classes", num_classes}};
}

// Opens an evaluator (its test set loaded) in `host`'s process; the reply has its id and size.
Result<nlohmann::json> OpenEvaluatorIn(Host& host, const nlohmann::json& request,
                                       const std::string& script) {
  return host.Call(request, script.data(), script.size());
}

// A central evaluator in the child process. When the process dies during an evaluation (the OOM
// killer, a crashing TorchScript model, kill -9), a new one is started after a back-off (250 ms,
// doubling with each restart in the last 10 minutes), the test set opened again and the
// evaluation repeated; an evaluation that also kills the new process is not tried a third time.
// At most kMaxRestarts restarts within any 10 minutes: a process that keeps dying stops the run
// (a coordinator restart resumes it), one that dies now and then in a long run is replaced each
// time. Either way the error names the process, its pid and how it ended.
class RemoteEvaluator : public CentralEvaluator {
 public:
  static constexpr int kMaxRestarts = 3;
  static constexpr std::chrono::minutes kRestartWindow{10};

  RemoteEvaluator(std::shared_ptr<ProcessPool> pool, std::shared_ptr<Host> host,
                  nlohmann::json open_request, std::string script, int64_t id, int64_t size)
      : pool_(std::move(pool)),
        host_(std::move(host)),
        open_request_(std::move(open_request)),
        script_(std::move(script)),
        id_(id),
        size_(size) {}
  ~RemoteEvaluator() override {
    (void)host_->Call({{"op", "close_evaluator"}, {"id", id_}}, nullptr, 0);
  }

  Result<model::EvalMetrics> Evaluate(const model::Weights& weights) override {
    auto m = EvaluateOnce(weights);
    if (m.ok() || !host_->broken()) return m;
    const auto delay = restarts_.Take(RestartBudget::Clock::now());
    const std::string window = std::to_string(kRestartWindow.count()) + " min";
    if (!delay) {
      return m.status().Annotate("not restarted: " + std::to_string(kMaxRestarts) +
                                 " restarts within the last " + window);
    }
    const auto delay_ms = std::chrono::duration_cast<std::chrono::milliseconds>(*delay).count();
    spdlog::warn("{}; starting a new {} in {} ms and evaluating again (restart {} of {} within {})",
                 m.status().message(), kEvaluator, delay_ms,
                 restarts_.Recent(RestartBudget::Clock::now()), kMaxRestarts, window);
    std::this_thread::sleep_for(*delay);
    SHOAL_ASSIGN_OR_RETURN(auto host, pool_->Replace(host_));
    auto opened = OpenEvaluatorIn(*host, open_request_, script_);
    if (!opened.ok()) return opened.status().Annotate("reopening the central evaluation");
    host_ = std::move(host);
    id_ = opened->value("id", int64_t{-1});
    spdlog::info("{} restarted: {}", kEvaluator, host_->runtime());
    auto again = EvaluateOnce(weights);
    if (!again.ok()) {
      return again.status().Annotate("the same evaluation after restarting " +
                                     std::string(kEvaluator));
    }
    return again;
  }
  int64_t size() const override { return size_; }

 private:
  Result<model::EvalMetrics> EvaluateOnce(const model::Weights& weights) {
    SHOAL_ASSIGN_OR_RETURN(
        nlohmann::json r,
        host_->Call({{"op", "evaluate"}, {"id", id_}, {"spec", weights.spec.ToJson()}},
                    weights.data.data(), weights.data.size() * sizeof(float)));
    model::EvalMetrics m;
    try {
      m.count = r.at("count").get<int64_t>();
      m.loss = r.at("loss").get<double>();
      m.accuracy = r.at("accuracy").get<double>();
      m.cpu_seconds = r.value("cpu_seconds", 0.0);
    } catch (const nlohmann::json::exception& e) {
      return ProtocolError(std::string(kEvaluator) + " evaluation reply: " + e.what());
    }
    return m;
  }

  const std::shared_ptr<ProcessPool> pool_;
  std::shared_ptr<Host> host_;
  const nlohmann::json open_request_;
  const std::string script_;
  int64_t id_;
  const int64_t size_;
  RestartBudget restarts_{kMaxRestarts, kRestartWindow, std::chrono::milliseconds(250),
                          std::chrono::seconds(4)};
};

class ChildProcessRuntime : public ModelRuntime {
 public:
  explicit ChildProcessRuntime(std::vector<std::string> readable)
      : pool_(std::make_shared<ProcessPool>(std::move(readable))) {}

  std::string Configure(int threads) override {
    pool_->set_threads(threads);
    auto host = pool_->Shared();
    if (!host.ok()) return "unavailable: " + host.status().ToString();
    pool_->HoldForStartUp(*host);
    return (*host)->runtime();
  }

  Result<model::Weights> InitialWeights(const model::ModelSource& model,
                                        const std::vector<int64_t>& input_shape,
                                        int64_t num_classes, uint64_t seed) override {
    SHOAL_ASSIGN_OR_RETURN(auto host, pool_->Shared());
    nlohmann::json req = ModelRequest("initial_weights", model, input_shape, num_classes);
    req["seed"] = seed;
    model::Weights w;
    auto read = [&](const nlohmann::json& reply, uint64_t n) -> Status {
      auto spec = model::ModelSpec::FromJson(reply.value("spec", nlohmann::json()));
      Status st = spec.ok() ? spec->Validate() : spec.status();
      if (st.ok() && static_cast<uint64_t>(spec->total_bytes()) != n) {
        st = ProtocolError(std::to_string(n) + " bytes of weights for a spec of " +
                           std::to_string(spec->total_bytes()));
      }
      if (!st.ok()) {
        SHOAL_RETURN_IF_ERROR(wire::SkipBlob(host->fd(), n));
        return st.Annotate(std::string(kEvaluator) + " initial weights");
      }
      w.spec = std::move(spec).value();
      w.data.resize(static_cast<size_t>(w.spec.total_numel()));
      return wire::ReadBlob(host->fd(), w.data.data(), n);
    };
    SHOAL_RETURN_IF_ERROR(
        host->Call(req, model.script_bytes.data(), model.script_bytes.size(), read).status());
    return w;
  }

  Result<std::unique_ptr<CentralEvaluator>> OpenEvaluator(const model::ModelSource& model,
                                                          const std::vector<int64_t>& input_shape,
                                                          int64_t num_classes,
                                                          const EvalData& data) override {
    SHOAL_ASSIGN_OR_RETURN(auto host, pool_->Shared());
    nlohmann::json req = ModelRequest("open_evaluator", model, input_shape, num_classes);
    req["format"] = data.format;
    req["path"] = data.path;
    req["split"] = data.split;
    req["label_column"] = data.label_column;
    req["limit"] = data.limit;
    SHOAL_ASSIGN_OR_RETURN(nlohmann::json r, OpenEvaluatorIn(*host, req, model.script_bytes));
    return std::unique_ptr<CentralEvaluator>(std::make_unique<RemoteEvaluator>(
        pool_, std::move(host), std::move(req), model.script_bytes, r.value("id", int64_t{-1}),
        r.value("size", int64_t{0})));
  }

  void Release() override { pool_->EndStartUp(); }

 private:
  const std::shared_ptr<ProcessPool> pool_;
};

}  // namespace

std::unique_ptr<ModelRuntime> MakeChildProcessRuntime(std::vector<std::string> readable) {
  return std::make_unique<ChildProcessRuntime>(std::move(readable));
}

}  // namespace shoal::evaluator
