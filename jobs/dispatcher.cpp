#include "jobs/dispatcher.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <queue>
#include <unordered_map>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/stop_signal.hpp"

namespace foldfarm::jobs {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

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
  return m.dump();
}

RunSummary dispatch(Campaign& campaign, Transport& transport, const RunOptions& options) {
  const CampaignSpec& spec = campaign.spec();
  CampaignJournal& journal = campaign.journal();
  RunSummary summary;
  summary.slots = transport.slots();
  auto t_start = Clock::now();

  // Ready queue (index order) and retry-backoff queue (earliest first). A pending task
  // whose needs (the task graph) are not all done waits outside both, and joins the ready
  // queue when its last need is done.
  std::deque<int> ready;
  using Delayed = std::pair<double, int>;
  std::priority_queue<Delayed, std::vector<Delayed>, std::greater<Delayed>> delayed;
  const TaskGraph graph = journal.graph();
  std::vector<TaskState> states = journal.states();
  std::vector<double> not_before(states.size(), 0.0);
  for (const auto& t : journal.tasks(TaskState::kPending)) not_before[t.index] = t.not_before;
  auto enqueue = [&](int index) {
    if (not_before[index] > wallClockNow())
      delayed.emplace(not_before[index], index);
    else
      ready.push_back(index);
  };
  for (size_t i = 0; i < states.size(); ++i)
    if (states[i] == TaskState::kPending && graph.ready(static_cast<int>(i), states))
      enqueue(static_cast<int>(i));
  StateCounts counts = journal.counts();
  int total = journal.numTasks() - counts[TaskState::kCancelled];
  int64_t done = counts[TaskState::kDone];
  int64_t failed = counts[TaskState::kFailed];
  Progress progress("campaign " + spec.name, total, "tasks");
  progress.setSilent(!options.show_progress);
  progress.update(done);

  std::vector<std::deque<int>> inflight(transport.slots());
  std::vector<int> started(transport.slots(), -1);  // task a slot announced as running
  std::vector<char> exiting(transport.slots(), 0);  // the slot's worker said it ends
  std::unordered_map<int, int> attempt_of;          // attempt of each task in flight
  int64_t inflight_total = 0;
  // Adaptive prefetch: keep ~20 ms of work queued at each slot.
  double mean_task_s = -1;
  auto depth = [&]() -> size_t {
    if (mean_task_s < 0) return 1;
    double d = 1.0 + 0.02 / std::max(mean_task_s, 1e-6);
    return static_cast<size_t>(std::clamp(d, 1.0, 256.0));
  };

  bool stopping = false;
  Clock::time_point stop_at;
  std::vector<SlotEvent> events;
  std::vector<Completion> completions;
  std::vector<CampaignJournal::Applied> applied;
  std::vector<Dispatch> dispatches;
  std::vector<std::vector<Assignment>> batches(transport.slots());

  for (;;) {
    if (!stopping && stopRequested()) {
      stopping = true;
      stop_at = Clock::now();
      summary.interrupted = true;
      logWarn("stop requested (signal {}): no new tasks; stopping {} running", stopSignal(),
              inflight_total);
      transport.requestStop();
    }
    if (stopping && inflight_total > 0 && secondsSince(stop_at) > 60.0) {
      logWarn("workers did not stop within 60 s: ending them");
      transport.forceStop();
    }

    if (!stopping) {
      double now = wallClockNow();
      while (!delayed.empty() && delayed.top().first <= now) {
        ready.push_back(delayed.top().second);
        delayed.pop();
      }
      dispatches.clear();
      size_t want = depth();
      // While plenty of work is left, keep one more task queued at each slot so the
      // worker never waits for the journal's commit; near the end, one at a time keeps
      // the slots balanced.
      if (want < 2 && ready.size() >= 2 * static_cast<size_t>(transport.slots())) want = 2;
      bool any_usable = false;
      // Round-robin, one task per slot per round, so short tasks spread over the slots.
      for (bool placed = true; placed && !ready.empty();) {
        placed = false;
        for (int s = 0; s < transport.slots() && !ready.empty(); ++s) {
          if (!transport.usable(s)) continue;
          any_usable = true;
          if (inflight[s].size() >= want) continue;
          Dispatch d;
          d.index = ready.front();
          d.slot = s;
          d.host = transport.host(s);
          ready.pop_front();
          dispatches.push_back(d);
          inflight[s].push_back(d.index);
          placed = true;
        }
      }
      for (int s = 0; s < transport.slots() && !any_usable; ++s) any_usable = transport.usable(s);
      if (!any_usable) {
        throw Error(campaign.dir() +
                    ": no usable worker slot is left (workers keep dying at "
                    "start); see the log above, fix the worker, then `foldfarm campaign resume`");
      }
      if (!dispatches.empty()) {
        // Written before the tasks are sent: the journal never misses a running task.
        journal.markRunning(dispatches);
        for (auto& b : batches) b.clear();
        for (const auto& d : dispatches) {
          if (d.attempt == 0) {  // no longer pending (cannot happen with one writer)
            auto& q = inflight[d.slot];
            q.erase(std::find(q.begin(), q.end(), d.index));
            continue;
          }
          attempt_of[d.index] = d.attempt;
          TaskDef def = spec.taskDef(d.index);
          batches[d.slot].push_back(
              {d.index, d.attempt, runMessage(campaign, def, d.attempt, d.slot)});
          ++inflight_total;
        }
        for (int s = 0; s < transport.slots(); ++s) {
          if (!batches[s].empty()) transport.send(s, batches[s]);
        }
      }
    }

    if (inflight_total == 0) {
      if (stopping || (ready.empty() && delayed.empty())) break;
    }

    double timeout = 0.5;
    if (!delayed.empty()) {
      timeout = std::clamp(delayed.top().first - wallClockNow(), 0.0, 0.5);
    }
    events.clear();
    transport.wait(timeout, events);
    if (events.empty()) {
      progress.update(done, "running " + std::to_string(inflight_total) +
                                (failed ? ", failed " + std::to_string(failed) : ""));
      continue;
    }

    completions.clear();
    for (auto& ev : events) {
      auto& q = inflight[ev.slot];
      if (ev.kind == SlotEvent::Kind::kStarted) {
        started[ev.slot] = ev.completion.index;
        continue;
      }
      if (ev.kind == SlotEvent::Kind::kDone) {
        if (started[ev.slot] == ev.completion.index) started[ev.slot] = -1;
        if (ev.worker_exits) exiting[ev.slot] = 1;
        auto it = std::find(q.begin(), q.end(), ev.completion.index);
        auto at = attempt_of.find(ev.completion.index);
        if (it == q.end() || at == attempt_of.end() || at->second != ev.completion.attempt) {
          logDebug("slot {}: ignoring a stale report of task {} attempt {}", ev.slot,
                   ev.completion.index, ev.completion.attempt);
          continue;
        }
        attempt_of.erase(at);
        q.erase(it);
        --inflight_total;
        ev.completion.slot = ev.slot;
        if (ev.completion.host.empty()) ev.completion.host = transport.host(ev.slot);
        double dur = ev.completion.finished_at - ev.completion.started_at;
        if (dur >= 0) {
          summary.busy_s += dur;
          mean_task_s = mean_task_s < 0 ? dur : 0.8 * mean_task_s + 0.2 * dur;
        }
        completions.push_back(std::move(ev.completion));
      } else {
        logWarn("slot {} on {}: {}; {} task(s) in flight there", ev.slot, transport.host(ev.slot),
                ev.reason, q.size());
        int culprit = -1;
        if (ev.blame_running_task && !q.empty() && !exiting[ev.slot]) {
          culprit = started[ev.slot] >= 0 ? started[ev.slot] : q.front();
        }
        started[ev.slot] = -1;
        exiting[ev.slot] = 0;
        for (int idx : q) {
          attempt_of.erase(idx);
          auto rec = journal.task(spec.taskDef(idx).id);
          Completion c;
          c.index = idx;
          c.attempt = rec ? rec->attempts : 0;
          c.status = 1;
          c.slot = ev.slot;
          c.host = transport.host(ev.slot);
          c.finished_at = wallClockNow();
          c.started_at = rec ? rec->started_at : 0;
          c.counts_as_failure = idx == culprit;
          if (rec) {
            // A task the worker finished whose report died with it: its result file (written
            // before the report) completes the attempt instead of a rerun. This holds for the
            // task the worker was running too: a worker killed after the result was durable
            // (OOM killer, kill -9) did not fail it.
            std::optional<TaskResult> r;
            try {
              r = readTaskResult(campaign.resultPath(rec->id));
            } catch (const InputError&) {
            }
            if (r && r->attempt == c.attempt && r->status == 0) {
              c.status = 0;
              c.counts_as_failure = false;
              c.reason = r->reason;
              c.started_at = r->started_at;
              c.finished_at = r->finished_at;
              c.result = r->result;
              completions.push_back(std::move(c));
              --inflight_total;
              continue;
            }
          }
          c.reason = c.counts_as_failure ? "worker died while running the task: " + ev.reason
                                         : "requeued: " + ev.reason;
          completions.push_back(std::move(c));
          --inflight_total;
        }
        q.clear();
      }
    }
    applied.clear();
    journal.recordCompletions(completions, spec.retry, &applied);
    summary.completions += static_cast<int64_t>(completions.size());
    for (const auto& a : applied) {
      states[a.index] = a.state;
      not_before[a.index] = a.not_before;
      if (a.state == TaskState::kDone) {
        ++done;
        ++summary.tasks_done;
        if (!stopping)
          for (int d : graph.dependents(a.index))
            if (states[d] == TaskState::kPending && graph.ready(d, states)) enqueue(d);
      } else if (a.state == TaskState::kFailed) {
        ++failed;
        auto rec = journal.task(spec.taskDef(a.index).id);
        logWarn("task {} failed after {} attempt(s): {}", rec ? rec->id : "?",
                rec ? rec->attempts : 0, rec ? rec->reason : "");
      } else if (a.state == TaskState::kPending && !stopping) {
        enqueue(a.index);
      }
    }
    progress.update(done, "running " + std::to_string(inflight_total) +
                              (failed ? ", failed " + std::to_string(failed) : ""));
  }

  if (stopping) {
    // Anything still marked running (a worker that never answered) goes back to pending.
    std::vector<int> left;
    for (const auto& t : journal.tasks(TaskState::kRunning)) left.push_back(t.index);
    journal.requeue(left, "orchestrator stopped (signal " + std::to_string(stopSignal()) + ")");
  } else {
    transport.shutdown();
  }
  summary.elapsed_s = secondsSince(t_start);
  summary.counts = journal.counts();
  if (!stopping && !graph.empty()) {
    // Pending tasks left behind here are held: something they need failed.
    for (const auto& t : journal.tasks(TaskState::kPending)) {
      auto b = graph.blocked(t.index, states);
      if (!b || !b->held) continue;
      ++summary.held;
      if (summary.held <= 5)
        logWarn("task {} is held: it {}", t.id,
                TaskGraph::reason(*b, spec.taskPosition(b->culprit).id));
    }
    if (summary.held > 0)
      logWarn(
          "{} task(s) held by failed dependencies; fix those and run `foldfarm campaign "
          "retry --failed {}`",
          summary.held, campaign.dir());
  }
  progress.finish(summary.interrupted ? "interrupted" : "");
  return summary;
}

}  // namespace foldfarm::jobs
