#pragma once
// Tasks run again after they ran: what `campaign accept-inputs` (the tasks that read a changed
// input, jobs/accept_inputs.hpp) and `campaign retry --task` (tasks whose outputs were damaged
// or lost) share. Each, under the orchestrator lock and the outputs lock:
//   1. checkRerunnable: none of the tasks may be running: a row left running by an
//      orchestrator that ended (a crash, a lost node) is requeued first; one in a Slurm job, or
//      whose lease a process of an earlier attempt holds, refuses the command (nothing changed);
//   2. rerunTasks: each task's directory moved to D/superseded/<UTC time>-<pid>/tasks/<id>/
//      (nothing is deleted) and made anew holding only .attempt, one above its last attempt, so
//      that no older attempt (a Slurm element still queued) starts in it; D/aggregate moved
//      aside too; then one journal transaction: those done or failed -> pending, with a fresh
//      count of failures (cancelled ones stay cancelled), and `meta` written.
// Crash-safe by order: the journal transaction is the commit point; before it, running the
// command again moves only what is still in place.
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobs/campaign.hpp"

namespace foldfarm::jobs {

struct RerunSet {
  std::vector<int> indices;                              // in index order
  std::vector<std::string> ids;                          // of `indices`
  std::vector<int> attempts;                             // of `indices`: their last attempt
  std::vector<int> left_running;                         // rows an ended orchestrator left running
  int done = 0, failed = 0, pending = 0, cancelled = 0;  // their states (left running apart)
};

// Step 1 for the tasks whose index is set in `wanted` (the campaign's task count long).
// InputError "D: task ID, <why>, is running in Slurm job J …; …, then <then>; the campaign was
// not changed" (`why`: "which runs again with the new inputs"; `then`: "accept the inputs").
RerunSet checkRerunnable(Campaign& c, const std::vector<char>& wanted, const std::string& why,
                         const std::string& then);

// Step 2 (with the campaign opened as a writer and its outputs locked). Returns where the
// outputs went ("" when nothing was moved); `aggregate_moved` says whether D/aggregate was.
std::string rerunTasks(Campaign& c, const RerunSet& set, const std::string& reason,
                       const std::map<std::string, std::string>& meta, bool* aggregate_moved);

// `foldfarm campaign retry D --task ID …`: the named tasks run again, whatever their state
// (done: a damaged or lost output; failed), and with them the done or failed tasks that need
// one of them (the task graph: a variation warm-started from its models ran from the outputs
// replaced); steps 1 and 2. InputError naming an id the campaign does not have, or a named
// cancelled task (`retry --cancelled` runs those; a cancelled dependent stays cancelled).
// With `needs_of_failed` (`retry --failed`), the tasks needed by a failed task that found
// their outputs lost (exit 66, kExitNeedLost: the models it warm-starts from) count as named:
// retried alone, it would fail alike. Nothing named and none such: nothing is locked or
// changed.
struct TaskRerunSummary {
  std::vector<std::string> rerun;       // moved to pending (done or failed before)
  std::vector<std::string> dependents;  // of `rerun`: those not named, which need one named
  std::vector<std::string> lost_needs;  // the tasks needs_of_failed added
  std::vector<std::string> already_pending;
  bool aggregate_moved = false;
  std::string moved_to;
  nlohmann::json toJson() const;
};
// `dry_run`: what it would do, the same checks made (an unknown id, a task held by a Slurm job
// or a lease, a missing input), the campaign read only and nothing changed; `moved_to` empty,
// `aggregate_moved` whether there is an aggregation that would move.
TaskRerunSummary rerunNamedTasks(const std::string& dir, const std::vector<std::string>& ids,
                                 bool needs_of_failed = false, bool dry_run = false);

}  // namespace foldfarm::jobs
