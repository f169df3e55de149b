#include "jobs/dispatcher.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <numeric>
#include <queue>
#include <unordered_map>

#include "core/base/clock.hpp"
#include "core/base/error.hpp"
#include "core/base/exit_codes.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/stop_signal.hpp"
#include "core/base/text.hpp"
#include "jobs/cancel_request.hpp"
#include "jobs/input_record.hpp"

namespace foldfarm::jobs {
namespace {

using Clock = std::chrono::steady_clock;

// One run of dispatch(): the queues, what each slot has in flight, and the loop's steps.
// Until a stop is requested, each round
//  1. moves delayed tasks whose back-off has passed to the ready queue;
//  2. places ready tasks on the slots with room (journal first: it never misses a running
//     task), round-robin, each slot's queue as deep as ~20 ms of work;
//  3. waits for the slots' events (at most 0.5 s, or until the next delayed task);
//  4. turns them into completions: a task done, or the tasks of a slot whose worker was lost
//     (the one it was running blamed, the others requeued; a durable result completes its
//     attempt instead);
//  5. records the completions in the journal, and queues what they made ready (a retry, the
//     dependents of a task done).
// A stop (signal) sends no new task, asks the workers to stop, ends them after 60 s, and puts
// what is still marked running back to pending. A cancel request addressed to this run
// (`campaign cancel`, jobs/cancel_request.hpp) stops the same way, then cancels every
// unfinished task, and only then removes the request.
// The failures a run says one by one; the later ones at the milestones 50, 100, 200, 500,
// 1000, ...
constexpr int64_t kFailureLines = 20;
bool isFailureMilestone(int64_t n) {
  for (int64_t scale = 1; scale <= n; scale *= 10)
    if (n == 5 * scale || n == 10 * scale || n == 20 * scale) return n > kFailureLines;
  return false;
}

class Dispatcher {
 public:
  Dispatcher(Campaign& campaign, Transport& transport, const RunOptions& options)
      : t_start_(Clock::now()),
        campaign_(campaign),
        transport_(transport),
        spec_(campaign.spec()),
        journal_(campaign.journal()),
        graph_(journal_.graph()),
        states_(journal_.states()),
        not_before_(states_.size(), 0.0),
        start_counts_(journal_.counts()),
        done_(start_counts_[TaskState::kDone]),
        failed_(start_counts_[TaskState::kFailed]),
        // The tasks this run can still end with: all but the cancelled ones.
        progress_("campaign " + spec_.name,
                  journal_.numTasks() - start_counts_[TaskState::kCancelled], "tasks"),
        cancel_watch_(campaign.dir()),
        inflight_(transport.slots()),
        started_(transport.slots(), -1),
        exiting_(transport.slots(), 0),
        batches_(transport.slots()) {
    summary_.slots = transport.slots();
    // Pending tasks that ran before (retried, requeued after a stop or a lost worker) go
    // first, then those never started, each in index order: `campaign retry D --task ID`
    // runs ID before the rest of a stopped campaign (before: after every pending task).
    // Tasks named by RunOptions::first before both.
    std::vector<char> ran_before(states_.size(), 0);
    for (const auto& t : journal_.tasks(TaskState::kPending)) {
      not_before_[t.index] = t.not_before;
      ran_before[t.index] = t.attempts > 0;
    }
    for (const std::string& id : options.first)
      if (const int i = spec_.indexOf(id); i >= 0 && static_cast<size_t>(i) < states_.size())
        ran_before[static_cast<size_t>(i)] = 2;
    for (const char first : {2, 1, 0})
      for (size_t i = 0; i < states_.size(); ++i)
        if (states_[i] == TaskState::kPending && ran_before[i] == first &&
            graph_.ready(static_cast<int>(i), states_))
          enqueue(static_cast<int>(i));
    progress_.setSilent(!options.show_progress);
    // Tasks done by earlier runs count towards done/total, not towards this run's rate (before:
    // a resumed run's first lines showed them as done in its first seconds).
    progress_.resumedAt(done_);
  }

  RunSummary run() {
    for (;;) {
      checkStop();
      if (!stopping_ && halted_.empty()) {
        releaseDelayed();
        placeReady();
      }
      if (inflight_total_ == 0 &&
          (stopping_ || !halted_.empty() || (ready_.empty() && delayed_.empty())))
        break;
      events_.clear();
      transport_.wait(waitSeconds(), events_);
      // A signal that reached the workers too (srun forwards it to every rank) arrives with
      // their stopped tasks' reports: said before those are counted (before: "stopping 0
      // running" while the tasks it stopped were being reported).
      checkStop();
      if (events_.empty()) {
        showProgress();
        continue;
      }
      completions_.clear();
      for (SlotEvent& ev : events_) {
        if (ev.kind == SlotEvent::Kind::kStarted)
          started_[ev.slot] = ev.completion.index;
        else if (ev.kind == SlotEvent::Kind::kDone)
          onDone(ev);
        else
          onSlotLost(ev);
      }
      applyCompletions();
      showProgress();
    }
    finish();
    return summary_;
  }

 private:
  using Delayed = std::pair<double, int>;  // not before (epoch s), task index

  void enqueue(int index) {
    if (not_before_[index] > wallClockNow())
      delayed_.emplace(not_before_[index], index);
    else
      ready_.push_back(index);
  }

  // A stop signal or a cancel request: no new tasks, the workers asked to stop their tasks;
  // those that do not within 60 s are ended.
  void checkStop() {
    if (!stopping_ && stopRequested()) {
      stopping_ = true;
      stop_at_ = Clock::now();
      summary_.interrupted = true;
      logWarn("stop requested (signal {}): no new tasks; stopping {} running", stopSignal(),
              inflight_total_);
      transport_.requestStop();
    } else if (!stopping_) {
      if (std::optional<CancelRequest> r = cancel_watch_.poll()) {
        stopping_ = true;
        stop_at_ = Clock::now();
        summary_.cancelled = true;
        cancelled_by_ = r->by.empty() ? "`foldfarm campaign cancel`" : r->by;
        logWarn(
            "cancel requested by {}: no new tasks; stopping {} running (they keep their state), "
            "then every unfinished task is cancelled",
            cancelled_by_, inflight_total_);
        transport_.requestStop();
      }
    }
    if (stopping_ && !forced_ && inflight_total_ > 0 && secondsSince(stop_at_) > 60.0) {
      logWarn("workers did not stop within 60 s: ending them");
      forced_ = true;
      transport_.forceStop();
    }
  }

  // 1.
  void releaseDelayed() {
    const double now = wallClockNow();
    while (!delayed_.empty() && delayed_.top().first <= now) {
      ready_.push_back(delayed_.top().second);
      delayed_.pop();
    }
  }

  // How many tasks each slot may have queued: ~20 ms of work (adaptive prefetch).
  size_t depth() const {
    if (mean_task_s_ < 0) return 1;
    double d = 1.0 + 0.02 / std::max(mean_task_s_, 1e-6);
    return static_cast<size_t>(std::clamp(d, 1.0, 256.0));
  }

  // 2. Error when no slot is usable (workers keep dying at start).
  void placeReady() {
    dispatches_.clear();
    size_t want = depth();
    // While plenty of short tasks are left, keep one more task queued at each slot so the
    // worker never waits for the journal's commit; near the end, one at a time keeps the
    // slots balanced. Tasks of 0.1 s or more (or not yet timed) are sent one at a time: the
    // commit is nothing beside them, and a queued task would count as running in `status`
    // (and, at a stop, as an interrupted attempt) without having started.
    if (want < 2 && mean_task_s_ >= 0 && mean_task_s_ < 0.1 &&
        ready_.size() >= 2 * static_cast<size_t>(transport_.slots()))
      want = 2;
    bool any_usable = false;
    // Round-robin, one task per slot per round, so short tasks spread over the slots.
    for (bool placed = true; placed && !ready_.empty();) {
      placed = false;
      for (int s = 0; s < transport_.slots() && !ready_.empty(); ++s) {
        if (!transport_.usable(s)) continue;
        any_usable = true;
        if (inflight_[s].size() >= want) continue;
        Dispatch d;
        d.index = ready_.front();
        d.slot = s;
        d.host = transport_.host(s);
        ready_.pop_front();
        dispatches_.push_back(d);
        inflight_[s].push_back(d.index);
        placed = true;
      }
    }
    for (int s = 0; s < transport_.slots() && !any_usable; ++s) any_usable = transport_.usable(s);
    if (!any_usable) {
      throw Error(campaign_.dir() +
                  ": no usable worker slot is left (workers keep dying at "
                  "start); see the log above, fix the worker, then `foldfarm campaign resume`");
    }
    if (dispatches_.empty()) return;
    // Written before the tasks are sent: the journal never misses a running task.
    journal_.markRunning(dispatches_);
    for (auto& b : batches_) b.clear();
    for (const auto& d : dispatches_) {
      if (d.attempt == 0) {  // no longer pending (cannot happen with one writer)
        auto& q = inflight_[d.slot];
        q.erase(std::find(q.begin(), q.end(), d.index));
        continue;
      }
      attempt_of_[d.index] = d.attempt;
      TaskDef def = spec_.taskDef(d.index);
      batches_[d.slot].push_back(
          {d.index, d.attempt, runMessage(campaign_, def, d.attempt, d.slot)});
      ++inflight_total_;
    }
    for (int s = 0; s < transport_.slots(); ++s)
      if (!batches_[s].empty()) transport_.send(s, batches_[s]);
  }

  // 3. Until the next delayed task is due, at most 0.5 s.
  double waitSeconds() const {
    if (delayed_.empty()) return 0.5;
    return std::clamp(delayed_.top().first - wallClockNow(), 0.0, 0.5);
  }

  // 4. A task's report; a stale one (another attempt, or a task no longer in flight there)
  //    is ignored.
  void onDone(SlotEvent& ev) {
    auto& q = inflight_[ev.slot];
    if (started_[ev.slot] == ev.completion.index) started_[ev.slot] = -1;
    if (ev.worker_exits) exiting_[ev.slot] = 1;
    auto it = std::find(q.begin(), q.end(), ev.completion.index);
    auto at = attempt_of_.find(ev.completion.index);
    if (it == q.end() || at == attempt_of_.end() || at->second != ev.completion.attempt) {
      logDebug("slot {}: ignoring a stale report of task {} attempt {}", ev.slot,
               ev.completion.index, ev.completion.attempt);
      return;
    }
    attempt_of_.erase(at);
    q.erase(it);
    --inflight_total_;
    ev.completion.slot = ev.slot;
    if (ev.completion.host.empty()) ev.completion.host = transport_.host(ev.slot);
    double dur = ev.completion.finished_at - ev.completion.started_at;
    if (dur >= 0) {
      summary_.busy_s += dur;
      recent_s_[timed_ % recent_s_.size()] = dur;
      ++timed_;
      // The mean of the last completions, once there are enough of them: one task that
      // ended at once (its result already there, a quick failure) no longer made the tasks
      // look tiny and queued a dozen behind each running one.
      if (timed_ >= kTimedBeforeQueueing) {
        const size_t n = std::min(timed_, recent_s_.size());
        mean_task_s_ = std::accumulate(recent_s_.begin(), recent_s_.begin() + n, 0.0) / n;
      }
    }
    completions_.push_back(std::move(ev.completion));
  }

  // 4. A slot's worker is gone: each task in flight there completes its attempt from its
  //    durable result, or is requeued, the one it was running counted as failed.
  void onSlotLost(const SlotEvent& ev) {
    auto& q = inflight_[ev.slot];
    if (stopping_ && q.empty())  // a worker that ended as the stop asked
      logDebug("slot {} on {}: {}", ev.slot, transport_.host(ev.slot), ev.reason);
    else if (stopping_)
      logInfo("slot {} on {}: {} (stopping); its {} task(s) are not run by this run", ev.slot,
              transport_.host(ev.slot), ev.reason, q.size());
    else
      logWarn("slot {} on {}: {}; {} task(s) in flight there", ev.slot, transport_.host(ev.slot),
              ev.reason, q.size());
    int culprit = -1;
    if (ev.blame_running_task && !q.empty() && !exiting_[ev.slot])
      culprit = started_[ev.slot] >= 0 ? started_[ev.slot] : q.front();
    started_[ev.slot] = -1;
    exiting_[ev.slot] = 0;
    for (int idx : q) {
      attempt_of_.erase(idx);
      completions_.push_back(lostTask(idx, ev, idx == culprit));
      --inflight_total_;
    }
    q.clear();
  }

  Completion lostTask(int idx, const SlotEvent& ev, bool culprit) const {
    auto rec = journal_.task(spec_.taskDef(idx).id);
    Completion c;
    c.index = idx;
    c.attempt = rec ? rec->attempts : 0;
    c.status = 1;
    c.slot = ev.slot;
    c.host = transport_.host(ev.slot);
    c.finished_at = wallClockNow();
    c.started_at = rec ? rec->started_at : 0;
    c.counts_as_failure = culprit;
    if (rec) {
      // A task the worker finished whose report died with it: its result file (written
      // before the report) completes the attempt instead of a rerun. This holds for the
      // task the worker was running too: a worker killed after the result was durable
      // (OOM killer, kill -9) did not fail it.
      std::optional<TaskResult> r;
      try {
        r = readTaskResult(campaign_.resultPath(rec->id));
      } catch (const InputError&) {
      }
      if (r && r->attempt == c.attempt && r->status == 0) {
        c.status = 0;
        c.counts_as_failure = false;
        c.reason = r->reason;
        c.started_at = r->started_at;
        c.finished_at = r->finished_at;
        c.result = r->result;
        return c;
      }
    }
    c.reason = c.counts_as_failure ? "worker died while running the task: " + ev.reason
                                   : "requeued: " + ev.reason;
    return c;
  }

  // 5.
  void applyCompletions() {
    applied_.clear();
    journal_.recordCompletions(completions_, spec_.retry, &applied_);
    summary_.completions += static_cast<int64_t>(completions_.size());
    for (const auto& a : applied_) {
      states_[a.index] = a.state;
      not_before_[a.index] = a.not_before;
      if (a.state == TaskState::kDone) {
        ++done_;
        ++summary_.tasks_done;
        if (!stopping_)
          for (int d : graph_.dependents(a.index))
            if (states_[d] == TaskState::kPending && graph_.ready(d, states_)) enqueue(d);
      } else if (a.state == TaskState::kFailed) {
        ++failed_;
        ++failed_in_run_;
        auto rec = journal_.task(spec_.taskDef(a.index).id);
        // The first failures of a run each in a line, then a line at 50, 100, 200, 500, ...
        // (before: thousands of lines when an input every task reads was bad; `campaign
        // status` groups them by reason).
        if (failed_in_run_ <= kFailureLines)
          logWarn("task {} failed after {} attempt(s): {}{}", rec ? rec->id : "?",
                  rec ? rec->attemptsSinceRetry() : 0, rec ? rec->reason : "",
                  failed_in_run_ == kFailureLines
                      ? "; the tasks that fail after it in this run are counted, not each "
                        "said (`foldfarm campaign status " +
                            shellWord(campaign_.dir()) + "` groups them by reason)"
                      : std::string());
        else if (isFailureMilestone(failed_in_run_))
          logWarn("campaign {}: {} task(s) failed in this run, the latest {}: {}", spec_.name,
                  failed_in_run_, rec ? rec->id : "?", rec ? rec->reason : "");
        // Bad input: a recorded input that changed since `campaign init` fails every task that
        // reads it, so none more is started (before: thousands failed one by one, each with
        // the same lines).
        if (rec && rec->exit_code == kExitBadInput && halted_.empty() &&
            !spec_.inputs_at_init.empty()) {
          const auto changed = changedInputs(spec_.inputs_at_init);
          if (!changed.empty()) {
            halted_ = changed.front().first + ": " + changed.front().second;
            summary_.halted = halted_;
            logWarn("campaign {}: an input changed while it ran ({}); no further task is started",
                    spec_.name, halted_);
          }
        }
      } else if (a.state == TaskState::kPending && !stopping_) {
        enqueue(a.index);
      }
    }
  }

  void showProgress() {
    // Running: the tasks the workers said they started; a short task queued behind one is
    // "queued" (before: counted as running, more than the slots).
    const int running = static_cast<int>(
        std::count_if(started_.begin(), started_.end(), [](int i) { return i >= 0; }));
    const int queued = inflight_total_ - running;
    progress_.update(done_, "running " + std::to_string(running) +
                                (queued > 0 ? ", queued " + std::to_string(queued) : "") +
                                (failed_ ? ", failed " + std::to_string(failed_) : ""));
  }

  // After the loop: a stop puts what is still marked running (a worker that never answered)
  // back to pending; a normal end shuts the workers down and names the tasks held by failed
  // dependencies.
  void finish() {
    // A run stopped by a signal with a cancel request standing (the request came while it
    // stopped, or just before the signal): the request is honoured, not left to be removed by
    // the next run as one that no run read.
    if (stopping_ && !summary_.cancelled) {
      if (std::optional<CancelRequest> r = cancel_watch_.poll(/*now=*/true)) {
        summary_.cancelled = true;
        summary_.interrupted = false;
        cancelled_by_ = r->by.empty() ? "`foldfarm campaign cancel`" : r->by;
      }
    }
    if (summary_.cancelled) {
      // What the stop left running (a worker that never answered) too; then the request is
      // answered (removed) once the journal says so.
      summary_.tasks_cancelled = journal_.cancelUnfinished("cancelled by " + cancelled_by_);
      cancel_watch_.done();
      logWarn(
          "campaign {}: {} unfinished task(s) cancelled (`foldfarm campaign retry {} "
          "--cancelled` runs them again)",
          spec_.name, summary_.tasks_cancelled, shellWord(campaign_.dir()));
    } else if (stopping_) {
      std::vector<int> left;
      for (const auto& t : journal_.tasks(TaskState::kRunning)) left.push_back(t.index);
      journal_.requeue(left, "orchestrator stopped (signal " + std::to_string(stopSignal()) + ")");
    } else {
      transport_.shutdown();
    }
    summary_.elapsed_s = secondsSince(t_start_);
    summary_.counts = journal_.counts();
    if (!stopping_ && !graph_.empty()) {
      // Pending tasks left behind here are held: something they need failed.
      for (const auto& t : journal_.tasks(TaskState::kPending)) {
        auto b = graph_.blocked(t.index, states_);
        if (!b || !b->held) continue;
        ++summary_.held;
        if (summary_.held <= 5)
          logWarn("task {} is held: it {}", t.id,
                  TaskGraph::reason(*b, spec_.taskPosition(b->culprit).id));
      }
      if (summary_.held > 0)
        logWarn(
            "{} task(s) held by failed dependencies; fix those and run `foldfarm campaign "
            "retry --failed {}`",
            summary_.held, shellWord(campaign_.dir()));
    }
    progress_.finish(summary_.interrupted ? "interrupted" : summary_.cancelled ? "cancelled" : "");
  }

  const Clock::time_point t_start_;
  Campaign& campaign_;
  Transport& transport_;
  const CampaignSpec& spec_;
  CampaignJournal& journal_;
  RunSummary summary_;
  // Ready queue (index order) and retry-backoff queue (earliest first). A pending task
  // whose needs (the task graph) are not all done waits outside both, and joins the ready
  // queue when its last need is done.
  std::deque<int> ready_;
  std::priority_queue<Delayed, std::vector<Delayed>, std::greater<Delayed>> delayed_;
  const TaskGraph graph_;
  std::vector<TaskState> states_;
  std::vector<double> not_before_;
  StateCounts start_counts_;
  int64_t done_ = 0, failed_ = 0;
  int64_t failed_in_run_ = 0;  // tasks this run saw fail (the lines it says of them)
  Progress progress_;
  CancelWatch cancel_watch_;
  std::vector<std::deque<int>> inflight_;    // per slot, the tasks sent there, in order
  std::vector<int> started_;                 // per slot, the task it announced as running
  std::string halted_;                       // RunSummary::halted: no new task is started
  std::vector<char> exiting_;                // per slot, whether its worker said it ends
  std::unordered_map<int, int> attempt_of_;  // attempt of each task in flight
  int64_t inflight_total_ = 0;
  // The run time of the last 16 tasks (a ring) and their mean (-1 until 8 are timed): tasks
  // are queued behind running ones only when that mean says they are short.
  static constexpr size_t kTimedBeforeQueueing = 8;
  std::array<double, 16> recent_s_{};
  size_t timed_ = 0;
  double mean_task_s_ = -1;
  bool stopping_ = false;
  bool forced_ = false;       // the workers that did not stop were ended (once)
  std::string cancelled_by_;  // who asked, once a cancel request stopped the run
  Clock::time_point stop_at_;
  // Reused from round to round.
  std::vector<SlotEvent> events_;
  std::vector<Completion> completions_;
  std::vector<CampaignJournal::Applied> applied_;
  std::vector<Dispatch> dispatches_;
  std::vector<std::vector<Assignment>> batches_;
};

}  // namespace

std::string runMessage(const Campaign& campaign, const TaskDef& def, int attempt, int slot) {
  nlohmann::json m{{"t", "run"},
                   {"i", def.index},
                   {"id", def.id},
                   {"a", attempt},
                   {"k", def.kind},
                   {"d", campaign.taskDir(def.id)},
                   {"p", def.params},
                   {"l", campaign.spec().time_limit_s},
                   {"lw", campaign.spec().retry.lease_wait_s},
                   {"s", slot}};
  if (!def.inputs_at_init.empty()) m["ir"] = def.inputs_at_init;
  return m.dump();
}

RunSummary dispatch(Campaign& campaign, Transport& transport, const RunOptions& options) {
  return Dispatcher(campaign, transport, options).run();
}

}  // namespace foldfarm::jobs
