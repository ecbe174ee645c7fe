// The round engine's state and steps (Coordinator::Impl), shared by its two source files:
// round_engine.cc (setup, the run, a round's phases, the evaluation of committed versions) and
// peer_messages.cc (the channel: the message pump, admission, and the handlers of what workers
// send). Internal to the coordinator library; the public interface is round_engine.h.
//
// The state lives in the parts it belongs to (worker_registry.h, upload_scheduler.h, round.h,
// evaluation_tracker.h, aggregation/); Impl holds them, the run's model and version, and the
// channel, and sequences them. One thread runs all of it.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/aggregation/aggregator.h"
#include "coordinator/aggregation/server_optimizer.h"
#include "coordinator/config.h"
#include "coordinator/evaluation_tracker.h"
#include "coordinator/http_server.h"
#include "coordinator/privacy_budget.h"
#include "coordinator/reply_budget.h"
#include "coordinator/round.h"
#include "coordinator/round_engine.h"
#include "coordinator/run_resume.h"
#include "coordinator/status_board.h"
#include "coordinator/update_defences.h"
#include "coordinator/upload_scheduler.h"
#include "coordinator/worker_registry.h"
#include "evaluator/model_runtime.h"
#include "model/compression.h"
#include "protocols/channel.h"
#include "protocols/codec.h"
#include "store/model_store.h"

namespace shoal::coordinator {

class Coordinator::Impl {
 public:
  using Clock = std::chrono::steady_clock;
  using ErrorCode = protocols::ErrorCode;

  // How long each phase of a round took, for its metrics.jsonl record.
  struct PhaseSeconds {
    double broadcast = 0;
    double collect = 0;
    double aggregate = 0;
    double evaluate = 0;  // waiting for an evaluation (the previous version's with eval.overlap)
    double commit = 0;
  };

  Impl(CoordinatorConfig config, std::unique_ptr<evaluator::ModelRuntime> runtime,
       std::atomic<bool>& stop);

  Status Run();

 private:
  // Setup (round_engine.cc).
  Status Prepare();
  Status StartHttp();

  // The channel and the message pump (peer_messages.cc).
  Status SetUpChannel();
  bool PumpUntil(Clock::time_point deadline, const std::function<bool()>& done);
  void Housekeeping();
  void Dispatch(const protocols::ChannelMessage& in);
  bool Authorize(const protocols::ChannelMessage& in);
  void RefreshEnrollment(bool force);
  void RecordChannelEvents();
  void OnJoinRequest(const protocols::ChannelMessage& in, const protocols::FrameView& f);
  void OnHello(const std::string& id, const protocols::FrameView& f, const std::string& identity,
               const std::string& fingerprint);
  void OnUpdateReady(Peer& p, const protocols::FrameView& f);
  void OnChunk(Peer& p, const protocols::FrameView& f);
  void OnEvalResult(Peer& p, const protocols::FrameView& f);
  void SendTo(const std::string& id, std::shared_ptr<const std::string> frame,
              bool may_overtake = false);
  void SendTo(const std::string& id, std::string frame) {
    SendTo(id, std::make_shared<const std::string>(std::move(frame)));
  }
  void SendError(const std::string& id, ErrorCode code, uint64_t round, const std::string& msg);
  template <class M>
  void SendMsg(const std::string& id, const M& m) {
    SendTo(id, protocols::Encode(m));
  }
  void DropPeer(const std::string& id, const std::string& why);
  void MaybeGrant();
  void SendTrainTask(const Peer& p);

  // One round, phase by phase (round_engine.cc).
  Status RunRound(uint64_t round, int attempt, bool* committed);
  Status WaitForWorkers();
  // With DP: the round's selected silos' task parameters (round_dp_), or, when one more round
  // would take a silo past privacy.target_epsilon, budget_stop_ set (the run ends cleanly).
  Status PlanPrivacy(uint64_t round, int attempt);
  double SelectAndBroadcast(uint64_t round, int attempt);
  bool Collect();
  Result<store::VersionMeta> Commit(const model::Weights& next);
  nlohmann::json RoundRecord(const store::VersionMeta& meta, const PhaseSeconds& phases,
                             Clock::time_point started, const std::string& started_at) const;
  std::vector<std::string> SelectWorkers(uint64_t round, int attempt);
  // The accepted updates' workers, comma-separated (logs).
  std::string ParticipantsList() const;
  double RoundDeadlineSeconds();

  // The evaluation of a committed version (evals_ tracks it).
  void StartEvaluation(store::VersionMeta meta, nlohmann::json record,
                       Clock::time_point round_started, bool next_round_follows);
  void SendDeferredEvalTasks();
  // Serves messages until the pending evaluation (if any) is complete, then completes it.
  Status FinishEvaluation();
  // Completes the pending evaluation: the version's meta, the round's record, the printed row.
  Status CompleteEvaluation();

  void Publish();

  CoordinatorConfig cfg_;
  std::atomic<bool>& stop_;
  const protocols::Limits limits_;
  const model::Encoding encoding_;  // train.compression
  std::unique_ptr<protocols::ServerChannel> channel_;
  WorkerRegistry workers_;
  UploadScheduler uploads_;
  EvaluationTracker evals_;
  ReplyBudget error_replies_;               // Error replies per connection (SendError)
  std::unique_ptr<Aggregator> aggregator_;  // strategy.aggregator (behind strategy.clip)
  UpdateDefences defences_;                 // the clip bound, robust options, their record
  // strategy.server_optimizer; its state is that of version_ except between a round's server
  // step and its commit (a round not committed restores it from state_meta_).
  std::unique_ptr<ServerOptimizer> optimizer_;
  store::VersionMeta state_meta_;  // the meta of version_ (where its server state is recorded)
  std::string run_id_;
  std::unique_ptr<store::ModelStore> store_;
  std::unique_ptr<evaluator::ModelRuntime> runtime_;
  std::unique_ptr<evaluator::CentralEvaluator> evaluator_;
  RunModel model_;  // source.script_bytes released once model_frames_ are built
  std::vector<std::shared_ptr<const std::string>>
      model_frames_;  // ModelFile frames sent after every Welcome
  // Read by the central evaluation thread: replaced only once that evaluation is done.
  model::Weights global_;
  uint64_t version_ = 0;
  uint64_t next_round_ = 1;
  Round round_;
  PrivacyBudget budget_{cfg_};  // [privacy]: per-silo accounting, restored from the versions
  std::map<std::string, privacy::DpParams> round_dp_;  // the round's DP tasks, by silo
  protocols::TrainTask train_task_;  // the round's task, for the per-silo DP copies
  uint64_t train_eval_round_ = 0;    // its eval_round for the workers that owe an evaluation
  std::string budget_stop_;          // why the run stopped at its privacy budget
  std::string round_failure_;        // why the last attempt was not committed (the run's error)
  Clock::time_point last_housekeeping_ = Clock::now();

  StatusBoard board_;
  std::unique_ptr<HttpServer> http_;
  std::string state_ = "starting";
  std::string started_at_ = store::UtcNow();
};

}  // namespace shoal::coordinator
