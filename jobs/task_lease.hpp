#pragma once
// TaskLease: the right to run one attempt of a task in its task directory. Every runner
// (persistent worker, `campaign work`, Slurm array element, pilot rank) takes it before the
// task writes anything, and holds it until the attempt's result file is durable, so that no
// two processes ever run a task at the same time, wherever they were started from.
//
// The lease is an exclusive flock(2) on <task dir>/.lease. A `command` task's processes
// inherit the descriptor (jobs/task_kind.cpp), so the lease lasts as long as any process of
// the attempt lives — also when its worker was killed with SIGKILL. Beside it,
// <task dir>/.attempt holds the newest attempt that took (or was promised, see
// promiseAttempt) the task: an attempt older than that is superseded and runs nothing.
//
// acquire():
//   0. an attempt older than the one .attempt records: SupersededError at once, before any
//      wait (it must never stop the newer attempt that may hold the lease);
//   1. open (create) .lease and try the lock; while another process holds it, wait (polling
//      the stop flag) up to `wait_s`, logging who holds it (attempt, host, pid);
//   2. still held after wait_s: superseded meanwhile, or a run by hand (attempt 0):
//      SupersededError; a second runner of the holder's own attempt: InterruptedError; the
//      holder is left running either way. Otherwise, with the holder on this host: fence it —
//      SIGTERM to its
//      process group and pid (only if the pid is still the process that took the lease,
//      by its start time), SIGKILL after `fence_grace_s`, then wait `fence_grace_s` more;
//      still held (another host, or unkillable): InterruptedError (the task is retried
//      later, bounded by retry.max_interruptions);
//   3. with the lock: read .attempt; a larger number than ours: SupersededError; else write
//      ours (unless ours is 0: a run by hand, which takes the lock but no number) and the
//      holder record (attempt, host, pid, pid start time, process group), made durable, after
//      noting the previous holder's attempt (previousHolder());
//   4. remove an earlier attempt's .lease-refused (recordLeaseRefusal): the journal's writer
//      read it when it made this attempt.
// Releasing is closing the descriptor (the destructor), or the death of every holder.
//
// Works on local file systems and on NFS (Linux maps flock to NFS byte-range locks);
// Lustre needs its `flock` mount option; GPFS supports flock.
#include <sys/types.h>

#include <optional>
#include <string>

#include "core/base/error.hpp"
#include "core/base/fd.hpp"

namespace foldfarm::jobs {

inline constexpr const char* kLeaseFile = ".lease";
inline constexpr const char* kAttemptFile = ".attempt";
// Written by a runner whose attempt was not started because the lease was held elsewhere
// (recordLeaseRefusal), for a journal writer that learns of the attempt only from its
// result file, which such an attempt does not write (a Slurm array element).
inline constexpr const char* kLeaseRefusedFile = ".lease-refused";

struct LeaseOptions {
  double wait_s = 60.0;        // wait for an earlier holder before fencing it
  double fence_grace_s = 5.0;  // after SIGTERM before SIGKILL, and after SIGKILL
};

class SupersededError : public Error {
 public:
  explicit SupersededError(const std::string& what) : Error(what, kExitSuperseded) {}
};

class TaskLease {
 public:
  TaskLease() = default;
  // Takes the lease of `task_dir` (which must exist) for `attempt` of `task_id`. Throws
  // SupersededError, InterruptedError (held elsewhere, or a stop was requested while
  // waiting) or Error (I/O).
  static TaskLease acquire(const std::string& task_dir, const std::string& task_id, int attempt,
                           const LeaseOptions& options = {});
  TaskLease(TaskLease&&) noexcept = default;
  TaskLease& operator=(TaskLease&&) noexcept = default;
  TaskLease(const TaskLease&) = delete;
  TaskLease& operator=(const TaskLease&) = delete;

  bool held() const { return fd_.valid(); }
  // The locked descriptor (FD_CLOEXEC): a child that is to hold the lease clears the flag
  // after fork.
  int fd() const { return fd_.get(); }
  int attempt() const { return attempt_; }
  // The attempt that held the lease last before this one, from its holder record (-1: none
  // recorded). When a result file names that attempt, nothing has run in the directory since
  // that attempt wrote it.
  int previousHolder() const { return previous_holder_; }
  // Writes the previous holder's record back (durably): this attempt decided to run nothing
  // and wrote nothing, so the directory still holds what that attempt left, and the next
  // attempt must read so (a run by hand refused on a done task).
  void restorePreviousHolder();
  // Records the process group of the attempt's child processes (fencing targets it).
  void setProcessGroup(pid_t pgid);
  // Before the attempt's result is committed: Error ("task T: attempt N lost its lease to
  // <holder>; its result is discarded") when the holder record names another process. On a
  // local file system a held flock cannot be taken away, so this never fires; a network file
  // system can drop the lock of a client it evicted and grant it to another attempt, whose
  // record then replaces ours. Best effort there: a client's cached read may lag.
  void requireStillHeld(const std::string& task_id) const;
  void release() { fd_.reset(); }

 private:
  void writeHolder(pid_t pgid, bool durable);
  Fd fd_;
  std::string dir_;
  int attempt_ = 0;
  int previous_holder_ = -1;
  std::string previous_record_;  // the holder record before this attempt's ("": none)
};

// Promises `attempt` of a task before it is handed to a runner that the journal's writer
// does not control (a Slurm array element): raises <task dir>/.attempt to `attempt` if it
// is lower (creating the directory), so that older attempts starting later are superseded.
void promiseAttempt(const std::string& task_dir, int attempt);
// Who holds the lease of `task_dir` now ("attempt 3 (host n1, pid 42)"), or "" when nobody
// does (or the directory has no lease file). Takes and releases the lock when it is free.
std::string leaseHolderNow(const std::string& task_dir);
// The newest attempt <task dir>/.attempt records (0: none, or no such directory).
int newestAttempt(const std::string& task_dir);

// <task dir>/.lease-refused: `attempt` was not started (`reason`): the lease was held by
// processes it could not end, or its Slurm job was stopped before the task's turn in it. Outside
// every attempt's outputs, so written without the lease; the newest refusal replaces an older one.
// Best effort (a warning on failure).
struct LeaseRefusal {
  int attempt = 0;
  std::string reason;
};
void recordLeaseRefusal(const std::string& task_dir, const LeaseRefusal& refusal);
// The refusal recorded in `task_dir`, if any (and readable).
std::optional<LeaseRefusal> readLeaseRefusal(const std::string& task_dir);

// The start time of a process (clock ticks since boot, /proc/PID/stat field 22); 0 when it
// does not exist.
unsigned long long processStartTicks(pid_t pid);

// Scoped: the lease of the task that runs on this thread (a runner that starts child
// processes hands them the lease). nullptr outside executeTask.
TaskLease* currentTaskLease();
class CurrentTaskLeaseScope {
 public:
  explicit CurrentTaskLeaseScope(TaskLease* lease);
  ~CurrentTaskLeaseScope();
  CurrentTaskLeaseScope(const CurrentTaskLeaseScope&) = delete;
  CurrentTaskLeaseScope& operator=(const CurrentTaskLeaseScope&) = delete;

 private:
  TaskLease* previous_;
};

}  // namespace foldfarm::jobs
