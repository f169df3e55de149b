#include "jobs/task_execution.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <optional>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/exit_codes.hpp"
#include "core/base/fd.hpp"
#include "core/base/full_disk.hpp"
#include "core/base/log.hpp"
#include "core/base/text.hpp"
#include "jobs/input_record.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::jobs {

namespace fs = std::filesystem;
namespace {

// Redirects fd 2 to a file for its lifetime; restores it in the destructor.
class StderrRedirect {
 public:
  explicit StderrRedirect(const std::string& path) {
    Fd file(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, kNewFileMode));
    if (!file.valid()) throwSystemError("open", __FILE__, __LINE__, path);
    ::fflush(stderr);
    saved_.reset(::fcntl(2, F_DUPFD_CLOEXEC, 3));
    if (!saved_.valid()) throwSystemError("fcntl", __FILE__, __LINE__, "stderr");
    if (::dup2(file.get(), 2) < 0) throwSystemError("dup2", __FILE__, __LINE__, path);
  }
  ~StderrRedirect() noexcept {
    ::fflush(stderr);
    spdlog::default_logger()->flush();
    if (saved_.valid()) ::dup2(saved_.get(), 2);
  }
  StderrRedirect(const StderrRedirect&) = delete;
  StderrRedirect& operator=(const StderrRedirect&) = delete;

 private:
  Fd saved_;
};

// The successful result of the attempt that held the lease last (previousHolder) that the
// task directory holds, when that attempt wrote it: nothing has run in the directory since (the
// holder record says so), so its outputs and result are whole. nullopt otherwise.
std::optional<TaskResult> lastHoldersSuccess(const TaskExecution& e, const TaskLease& lease) {
  const int last = lease.previousHolder();  // 0: a run by hand
  if (last < 0) return std::nullopt;
  std::optional<TaskResult> prior;
  try {
    prior = readTaskResult(e.task_dir + "/" + kTaskResultFile);
  } catch (const InputError& bad) {
    logWarn("ignoring {}", bad.what());
    return std::nullopt;
  }
  if (!prior || prior->task_id != e.task_id || prior->attempt != last || prior->status != 0)
    return std::nullopt;
  return prior;
}

// The last holder's success when that attempt was older than this one: an attempt of another
// host that outlived its dispatcher's view of it (a pilot rank declared lost, a resume on
// another login node), or a run by hand (attempt 0), that completed while this one waited for
// the lease (before: a run by hand's was not taken, and the task ran a second time).
std::optional<TaskResult> finishedByTheLastHolder(const TaskExecution& e, const TaskLease& lease) {
  if (e.attempt <= 0 || lease.previousHolder() >= e.attempt) return std::nullopt;
  return lastHoldersSuccess(e, lease);
}

// The last holder's success when that was this attempt itself (a second run of it: its array
// script submitted again, `campaign work ID@N` by hand), which would run a done task twice and
// rewrite its outputs; or, for a run by hand (attempt 0), any attempt's, which it would
// overwrite under attempt 0, a number the journal never takes.
std::optional<TaskResult> doneByThisAttemptBefore(const TaskExecution& e, const TaskLease& lease) {
  if (e.attempt > 0 && lease.previousHolder() != e.attempt) return std::nullopt;
  // A run by hand after a run by hand: what it overwrites no attempt of the journal took.
  if (e.attempt == 0 && lease.previousHolder() == 0) return std::nullopt;
  return lastHoldersSuccess(e, lease);
}

// The kind's runner, once the task's inputs are what `campaign init` recorded.
TaskOutcome runWithInputsAsRecorded(const TaskExecution& e) {
  if (const std::string change = inputChangeSince(e.inputs_at_init); !change.empty())
    return {kTaskBadInput, "not run: " + change + "; " + inputChangeAdvice(), nullptr};
  return runTaskKind(e.kind, e.params, e.task_dir);
}

}  // namespace

std::string taskFullDiskAdvice(const std::string& reason) {
  return fullDiskAdvice(reason,
                        "run the failed tasks again (`foldfarm campaign retry CAMPAIGN --failed`); "
                        "what they wrote before is whole");
}

TaskResult executeTask(const TaskExecution& e, TaskLease& lease) {
  TaskResult r;
  r.task_id = e.task_id;
  r.attempt = e.attempt;
  r.host = hostName();
  r.slot = e.slot;
  r.started_at = wallClockNow();
  bool needs_dir =
      !hasTaskKind(e.kind) || taskKindTraits(e.kind).needs_directory || e.always_write_result;
  TaskOutcome out;
  std::optional<TaskResult> prior;  // when an older attempt finished the task
  if (needs_dir) {
    makeDirectory(e.task_dir);
    try {
      lease = TaskLease::acquire(e.task_dir, e.task_id, e.attempt, e.lease);
    } catch (const Error& refused) {
      logWarn("{}", refused.what());
      r.finished_at = wallClockNow();
      r.status = refused.exitCode();
      r.reason = refused.what();
      // Still held after the wait and the fencing: by processes of another attempt this
      // host cannot end (another host's). Not this attempt's doing: retried, uncounted.
      r.counts_as_failure = r.status != kExitInterrupted;
      return r;  // nothing written: the directory belongs to another attempt
    }
    CurrentTaskLeaseScope scope(&lease);
    StderrRedirect redirect(e.task_dir + "/task.log");
    setLogTask(e.task_id);
    logInfo("attempt {} of {} ({}) on slot {}", e.attempt, e.task_id, e.kind, e.slot);
    if (std::optional<TaskResult> done = doneByThisAttemptBefore(e, lease)) {
      // Its result stands as written; nothing is run, and nothing written.
      setLogTask("");
      if (e.attempt > 0) {
        done->reason = "attempt " + std::to_string(e.attempt) + " already finished " + e.task_id +
                       " on " + done->host +
                       " (this is a second run of it: its array script submitted again, or "
                       "`campaign work` by hand); its result stands, nothing was run again";
        logInfo("{}", done->reason);
        return *done;
      }
      TaskResult refused = r;
      refused.finished_at = wallClockNow();
      refused.status = kExitSuperseded;
      // The campaign's directory: the task directory's grandparent (D/tasks/<id>).
      const std::string campaign =
          fs::path(e.task_dir).lexically_normal().parent_path().parent_path().string();
      refused.reason = "task " + e.task_id + " is done (attempt " + std::to_string(done->attempt) +
                       "); a run by hand would overwrite its outputs, so nothing was run: "
                       "`foldfarm campaign retry " +
                       shellWord(campaign) + " --task " + e.task_id + "` runs it again";
      logWarn("{}", refused.reason);
      // The directory is still that attempt's: a later attempt finds it the last holder.
      lease.restorePreviousHolder();
      return refused;
    }
    if ((prior = finishedByTheLastHolder(e, lease))) {
      out = {0,
             "finished by " +
                 (prior->attempt == 0 ? std::string("a run by hand (attempt 0)")
                                      : "attempt " + std::to_string(prior->attempt)) +
                 " on " + prior->host +
                 " before this attempt could run it; its result is taken, nothing was run again",
             std::move(prior->result)};
      logInfo("{}", out.reason);
    } else {
      // With the lease held no process of an earlier attempt lives: a temporary file here is
      // what one killed by SIGKILL (or the OOM killer) was writing.
      if (const int stale = removeTemporaryFilesUnder(e.task_dir); stale > 0)
        logInfo("removed {} temporary file(s) an earlier attempt left unfinished", stale);
      out = runWithInputsAsRecorded(e);
      if (out.status != 0) logWarn("ended with status {}: {}", out.status, out.reason);
    }
    setLogTask("");
  } else {
    out = runWithInputsAsRecorded(e);
  }
  r.finished_at = wallClockNow();
  if (prior) {  // the times and host of the attempt that did the work
    r.host = prior->host;
    r.started_at = prior->started_at;
    r.finished_at = prior->finished_at;
  }
  r.status = out.status;
  r.reason = out.reason + taskFullDiskAdvice(out.reason);
  r.result = std::move(out.result);
  if (e.write_result_file && resultFileWanted(e, r, lease)) {
    lease.requireStillHeld(e.task_id);
    writeTaskResult(e.task_dir + "/" + kTaskResultFile, r);
  }
  return r;
}

TaskResult executeTask(const TaskExecution& e) {
  TaskLease lease;
  return executeTask(e, lease);
}

bool resultFileWanted(const TaskExecution& e, const TaskResult& r, const TaskLease& lease) {
  const bool needs_dir =
      !hasTaskKind(e.kind) || taskKindTraits(e.kind).needs_directory || e.always_write_result;
  // A kind without a directory has nowhere to write: its result travels in the attempt's
  // completion message only.
  if (!needs_dir || !lease.held()) return false;
  return e.always_write_result || (!r.result.is_null() && r.status == 0);
}

}  // namespace foldfarm::jobs
