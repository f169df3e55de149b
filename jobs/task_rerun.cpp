#include "jobs/task_rerun.hpp"

#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>

#include "core/base/error.hpp"
#include "core/base/fault_point.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/progress.hpp"
#include "core/base/text.hpp"
#include "jobs/task_graph.hpp"
#include "jobs/task_lease.hpp"

namespace foldfarm::jobs {
namespace {

namespace fs = std::filesystem;

// Whether a task directory holds anything but the attempt number promised to it (a directory
// made anew by an earlier, interrupted command holds only that).
bool holdsOutputs(const std::string& task_dir) {
  std::error_code ec;
  for (fs::directory_iterator it(task_dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec))
    if (it->path().filename() != kAttemptFile) return true;
  return false;
}

}  // namespace

RerunSet checkRerunnable(Campaign& c, const std::vector<char>& wanted, const std::string& why,
                         const std::string& then) {
  const std::string& dir = c.dir();
  RerunSet set;
  c.forEachTask([&](const TaskRecord& t) {
    if (!wanted[static_cast<size_t>(t.index)]) return;
    if (t.state == TaskState::kRunning || t.state == TaskState::kInterrupted) {
      if (!t.external_id.empty())
        throw InputError(dir + ": task " + t.id + ", " + why + ", is " +
                         std::string(toString(t.state)) + " in Slurm job " + t.external_id +
                         " (attempt " + std::to_string(t.attempts) +
                         "); wait for the job to end (`foldfarm slurm status " + shellWord(dir) +
                         "`) or cancel the campaign (`foldfarm campaign cancel " + shellWord(dir) +
                         "`), then " + then + "; the campaign was not changed");
      // The orchestrator holds the lock while it runs: this row is left by one that ended
      // without settling it (a crash, a lost node), as `campaign resume` would find it.
      set.left_running.push_back(t.index);
    }
    const std::string holder = leaseHolderNow(c.taskDir(t.id));
    if (!holder.empty())
      throw InputError(dir + ": task " + t.id + ", " + why + ", is still held by " + holder +
                       " (its lease, " + c.taskDir(t.id) + "/" + kLeaseFile +
                       "): end that process, then " + then + "; the campaign was not changed");
    set.indices.push_back(t.index);
    set.ids.push_back(t.id);
    set.attempts.push_back(t.attempts);
    switch (t.state) {
      case TaskState::kDone:
        ++set.done;
        break;
      case TaskState::kFailed:
        ++set.failed;
        break;
      case TaskState::kCancelled:
        ++set.cancelled;
        break;
      case TaskState::kRunning:
      case TaskState::kInterrupted:
        break;
      default:
        ++set.pending;
        break;
    }
  });
  return set;
}

std::string rerunTasks(Campaign& c, const RerunSet& set, const std::string& reason,
                       const std::map<std::string, std::string>& meta, bool* aggregate_moved) {
  if (!set.left_running.empty()) c.journal().requeue(set.left_running, "orchestrator restarted");
  SupersededOutputs aside(c.dir());
  // Two durable renames and a file each: a minute for 10^5 tasks on a parallel file system.
  Progress progress(
      "moving aside the outputs of " + std::to_string(set.indices.size()) + " task(s)",
      static_cast<int64_t>(set.indices.size()), "tasks");
  progress.setSilent(set.indices.size() < 1000);
  for (size_t k = 0; k < set.indices.size(); ++k) {
    const std::string& id = set.ids[k];
    const std::string task_dir = c.taskDir(id);
    progress.update(static_cast<int64_t>(k));
    if (!statPath(task_dir).exists) continue;
    if (holdsOutputs(task_dir)) aside.move(task_dir, "tasks/" + id);
    promiseAttempt(task_dir, set.attempts[k] + 1);  // the journal's next dispatch of it
  }
  progress.update(static_cast<int64_t>(set.indices.size()));
  progress.finish();
  const bool moved = aside.moveAggregate();
  aside.recordUse();
  if (aggregate_moved) *aggregate_moved = moved;
  c.journal().rerun(set.indices, reason, meta);
  return aside.path();
}

nlohmann::json TaskRerunSummary::toJson() const {
  return {{"rerun", rerun},
          {"dependents", dependents},
          {"lost_needs", lost_needs},
          {"already_pending", already_pending},
          {"aggregate_moved", aggregate_moved},
          {"moved_to", moved_to}};
}

TaskRerunSummary rerunNamedTasks(const std::string& dir_in, const std::vector<std::string>& ids,
                                 bool needs_of_failed, bool dry_run) {
  Campaign c =
      Campaign::open(dir_in, dry_run ? Campaign::Access::kReadOnly : Campaign::Access::kWriter);
  const std::string& dir = c.dir();
  std::vector<char> wanted(static_cast<size_t>(c.spec().numTasks()), 0);
  for (const std::string& id : ids) {
    const int index = c.spec().indexOf(id);
    if (index < 0)
      throw InputError(dir + ": has no task '" + id + "' (its tasks: " + c.spec().idRangeText() +
                       "; `foldfarm campaign status " + shellWord(dir) +
                       " --tasks` lists them); nothing was changed");
    wanted[static_cast<size_t>(index)] = 1;
  }
  const TaskGraph graph = c.journal().graph();
  TaskRerunSummary sum;
  if (needs_of_failed)
    for (const TaskRecord& t : c.journal().tasks(TaskState::kFailed)) {
      if (t.exit_code != kExitNeedLost) continue;
      for (int need : graph.needs(t.index)) {
        if (wanted[static_cast<size_t>(need)]) continue;
        wanted[static_cast<size_t>(need)] = 1;
        sum.lost_needs.push_back(c.spec().taskPosition(need).id);
      }
    }
  if (std::find(wanted.begin(), wanted.end(), 1) == wanted.end()) return sum;
  // The run that follows refuses missing or changed inputs: refused here, before any task
  // moves (before: the tasks went back to pending and the aggregation moved aside, then the
  // run exited 2, "nothing was written").
  requireCampaignInputs(c.spec(), dir + "/spec.json");
  const Fd outputs_lock = dry_run ? Fd() : lockCampaignOutputs(dir, "`foldfarm campaign retry`");
  // The tasks that need a named one (a variation warm-started from its models) ran from the
  // outputs that are to be replaced: they run again too, as `accept-inputs` reruns them.
  std::vector<char> dependent(wanted.size(), 0);
  for (int i : graph.markDependents(wanted)) dependent[static_cast<size_t>(i)] = 1;
  const RerunSet set = checkRerunnable(c, wanted, "which is to run again", "retry it");
  RerunSet moving;
  moving.left_running = set.left_running;
  for (size_t k = 0; k < set.indices.size(); ++k) {
    const bool is_dependent = dependent[static_cast<size_t>(set.indices[k])] != 0;
    const auto rec = c.journal().task(set.ids[k]);
    if (rec && rec->state == TaskState::kCancelled) {
      if (is_dependent) continue;  // stays cancelled; `retry --cancelled` runs it
      throw InputError(dir + ": task " + set.ids[k] +
                       " is cancelled; run the cancelled tasks again with `foldfarm campaign "
                       "retry " +
                       shellWord(dir) + " --cancelled`; nothing was changed");
    }
    if (rec && rec->state == TaskState::kPending) {
      if (!is_dependent) sum.already_pending.push_back(set.ids[k]);
      continue;
    }
    moving.indices.push_back(set.indices[k]);
    moving.ids.push_back(set.ids[k]);
    moving.attempts.push_back(set.attempts[k]);
    sum.rerun.push_back(set.ids[k]);
    if (is_dependent) sum.dependents.push_back(set.ids[k]);
  }
  if (moving.indices.empty() && moving.left_running.empty()) return sum;
  if (dry_run) {
    sum.aggregate_moved = statPath(dir + "/aggregate").exists;
    return sum;
  }
  sum.moved_to = rerunTasks(c, moving, "run again by the user (`campaign retry --task`)", {},
                            &sum.aggregate_moved);
  faultPoint("retry_task.journal");
  return sum;
}

}  // namespace foldfarm::jobs
