#pragma once
// CampaignJournal: the durable record of a campaign (SQLite, WAL, synchronous=FULL).
// Written by exactly one process, the orchestrator (Campaign::open takes the lock).
// Every transition of jobs/task_state.hpp is written here, in a committed transaction,
// before it takes effect (a task is sent to a worker only after its `running` row is
// committed); completions are ingested in batches, one transaction per batch (group
// commit). A completion is applied only when the task is `running` with the same
// attempt number, so each result is ingested exactly once.
//
// Tables: tasks (current state of each task), events (every transition, in order:
// task, attempt, from, to, time, host, slot, exit code, reason), needs (the task graph:
// task_idx needs needs_idx done first; absent in journals of campaigns made before it),
// meta (key/value).
// Thread-safety: one thread.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobs/campaign_spec.hpp"
#include "jobs/sqlite_db.hpp"
#include "jobs/task_graph.hpp"
#include "jobs/task_state.hpp"

namespace foldfarm::jobs {

struct TaskRecord {
  int index = 0;
  std::string id;
  int replica = 0;
  int member = 0;
  TaskState state = TaskState::kPending;
  int attempts = 0;  // dispatches so far (the current attempt when running)
  int failures = 0;  // failed attempts counted against RetryPolicy::max_attempts
  std::string host;  // where the last attempt ran or runs
  int slot = -1;
  std::string external_id;  // e.g. a Slurm job id "1234_7"
  int exit_code = -1;       // last attempt's status (-1: none yet)
  std::string reason;       // last failure/interruption reason
  double started_at = 0;    // seconds since the epoch
  double finished_at = 0;
  double not_before = 0;  // retry backoff: not dispatched before this time
  int ingested = 0;       // how many results were ingested (1 for a done task)
  nlohmann::json result;  // the ingested result (null if none)
  // attempts at the last `campaign retry --failed` (0: never): attempts keep counting so that
  // results stay matched to the attempt that produced them.
  int retried_at_attempt = 0;
  int attemptsSinceRetry() const { return attempts - retried_at_attempt; }
  // Attempts since the last `campaign retry` that ended without a result (requeued because
  // their job or worker ended first): what Slurm's --max-submissions caps. A task's own
  // stops (exit 75) and failures have caps of their own (max_interruptions, max_attempts);
  // attempts not started because another attempt held the lease count toward no cap.
  int lost_since_retry = 0;
};

// The exit code events record for an attempt that was not started because processes of
// another attempt, which its host could not end, held the task's lease: counted neither as
// one of the task's own stops (75) nor as an attempt lost without a result.
inline constexpr int kEventLeaseRefused = -2;

// A task being dispatched (pending -> running).
struct Dispatch {
  int index = 0;
  std::string host;
  int slot = -1;
  std::string external_id;
  int attempt = 0;  // filled in by markRunning(): the attempt number now running
};

// What came back for one attempt (from a worker's message or a task_result.json file).
struct Completion {
  int index = 0;
  int attempt = 0;
  int status = 0;  // exit-code-like (task_kind.hpp)
  std::string reason;
  std::string host;
  int slot = -1;
  double started_at = 0;
  double finished_at = 0;
  nlohmann::json result;
  // false: this attempt ended through no fault of the task (a lost node, an orchestrator
  // stop): it is requeued without counting against max_attempts.
  bool counts_as_failure = true;
};

using StateCounts = std::map<TaskState, int>;

class CampaignJournal {
 public:
  // Creates the journal with every task pending. Throws Error.
  static CampaignJournal create(const std::string& path, const std::vector<TaskDef>& tasks);
  // Opens an existing journal. Throws InputError when missing or not a campaign journal.
  // An older build's journal gets what this build's have (upgradeSchema) at once.
  static CampaignJournal open(const std::string& path);
  // As open(), the file left as it was found (no upgrade): `campaign repair`, which judges it
  // and keeps a damaged one as it was.
  static CampaignJournal openAsFound(const std::string& path);
  // Opens it to read (status, a report, an aggregation's look at the tasks): as open() does
  // where this user can write; else read-only; else as the file is on disk
  // (SqliteDb::Mode::kImmutable; a warning when its write-ahead log holds changes that this
  // misses): a read-only file system, another user's campaign, a full disk. Throws as open()
  // does, with the first attempt's reason.
  static CampaignJournal openToRead(const std::string& path);

  CampaignJournal(CampaignJournal&&) noexcept = default;
  CampaignJournal& operator=(CampaignJournal&&) noexcept = default;

  std::vector<TaskRecord> tasks(std::optional<TaskState> state = std::nullopt);
  // Every task (of `state`) in index order, streamed to `fn` (which may move from it): read in
  // pages of 4,096 rows, each by a statement finished before `fn` sees them, so at most a page
  // is in memory (a campaign's tasks with their results can take hundreds of MB), no read is
  // held open while `fn` works, and `fn` may use the journal. Unlike tasks(), the pages are
  // not of one moment: a task changed meanwhile is seen once, as its page was read.
  void forEachTask(const std::function<void(TaskRecord&)>& fn,
                   std::optional<TaskState> state = std::nullopt);
  std::optional<TaskRecord> task(const std::string& id);
  StateCounts counts();
  int numTasks();
  // The length of the longest task id (0 without tasks): one light query.
  int longestTaskId();
  // The task graph recorded at creation (empty for campaigns without dependencies).
  TaskGraph graph();
  // Every task's state, by index (one light query: no results are read).
  std::vector<TaskState> states();

  // pending -> running for each dispatch, one transaction; fills Dispatch::attempt.
  // Returns how many moved (tasks no longer pending are skipped and get attempt 0).
  int markRunning(std::vector<Dispatch>& dispatches);
  // Attempt numbers an array job may have used without the journal recording them (its
  // submitter stopped between `sbatch` and the journal; the job may have been released by
  // hand and run): each (index, attempt) raises that task's attempt count to at least
  // `attempt`, so that its next dispatch is newer, where the task waits for one (pending,
  // failed, cancelled). One transaction; returns how many rows changed.
  int reserveAttempts(const std::vector<std::pair<int, int>>& index_attempts);
  // Applies completions in one transaction: status 0 -> done (result stored, ingested);
  // 75 that does not count as a failure (the attempt found its lease held by another
  // attempt's processes) -> pending after retry.backoff_s, toward no cap;
  // 75 or !counts_as_failure -> interrupted -> pending, except that a task's
  // retry.max_interruptions-th exit 75 -> failed (reason names the cap); 2 (bad input) -> failed;
  // otherwise failures+1 and pending (not_before = now + backoff) or failed when
  // failures reach max_attempts. Stale ones (task not running that attempt) are ignored.
  // Returns how many were applied; `applied` (optional) receives the state each applied
  // completion left its task in, with its not_before.
  struct Applied {
    int index;
    TaskState state;
    double not_before;
  };
  int recordCompletions(const std::vector<Completion>& completions, const RetryPolicy& retry,
                        std::vector<Applied>* applied = nullptr);
  // running -> interrupted -> pending for the given task indices (orchestrator stop,
  // resume after a crash). The running -> interrupted event records `event_exit_code`
  // (-1: none; kEventLeaseRefused); `not_before` > 0 delays the next dispatch. Returns how
  // many moved.
  int requeue(const std::vector<int>& indices, const std::string& reason, int event_exit_code = -1,
              double not_before = 0);
  // running -> failed for the given task indices, with `reason` and exit code kExitFailure: a
  // task the Slurm submitter gives up on (its jobs ended too often without a result), so that
  // `campaign retry --failed` runs it again. Returns how many moved.
  int giveUp(const std::vector<int>& indices, const std::string& reason);
  // `from` (failed or cancelled) -> pending, with failures and backoff reset; each move an
  // event with `reason`. Returns how many.
  int retry(TaskState from, const std::string& reason);
  // `campaign accept-inputs`: of `indices` (task indices), each done or failed task ->
  // pending with its result dropped, failures and backoff reset and `reason` on its row and
  // event (a fresh start, as a retry's); tasks in other states are left as they are. `meta`
  // is written in the same transaction. Returns how many moved.
  int rerun(const std::vector<int>& indices, const std::string& reason,
            const std::map<std::string, std::string>& meta = {});
  // `campaign extend`: task `old` gets index `new_index_of[old]` (its row, its events and
  // its edges in the task graph, whatever its state: a Slurm job still running it keeps its
  // external id) and `added` are created pending with their `needs` (indices in the new
  // numbering, each below its task's), a "created" event with `reason` each, and `meta`
  // written, all in one transaction. The old and added indices together must be 0 … N-1
  // (Error otherwise, nothing changed).
  void extend(const std::vector<int>& new_index_of, const std::vector<TaskDef>& added,
              const std::string& reason, const std::map<std::string, std::string>& meta = {});
  // pending/running/interrupted -> cancelled. Returns how many.
  int cancelUnfinished(const std::string& reason);
  // Number of rows in `events` (transitions recorded) for a task (-1: all tasks).
  int eventCount(int index = -1);
  // One row of `events`: a recorded transition.
  struct Event {
    int64_t seq = 0;
    int task = 0;  // task index
    int attempt = 0;
    std::optional<TaskState> from;  // none: the task's creation
    TaskState to = TaskState::kPending;
    double at = 0;
    std::string host;
    int slot = -1;
    int exit_code = -1;  // -1: none recorded
    std::string reason;
  };
  // Every event in order (seq), streamed to `fn` (the table can be large).
  void forEachEvent(const std::function<void(const Event&)>& fn);

  std::string meta(const std::string& key);
  void setMeta(const std::string& key, const std::string& value);

  // SQLite's integrity check of the whole file, then a read of every task and event: "" when
  // sound, else the first problem found.
  std::string integrityProblem();
  // A rebuilt journal only (Campaign::repair): gives a pending task the attempt count the
  // damaged journal had reached (as its task directory records it), so that its next
  // dispatch is newer than any attempt that ran; `reason` goes to the task's row. Returns
  // false when the task is not pending.
  bool setPendingAttempts(int index, int attempts, const std::string& reason);

 private:
  explicit CampaignJournal(SqliteDb db);
  void prepare();
  void prepareStatements();
  // A writer's open: adds what journals of schema "1" made by older builds lack (the task
  // graph's `needs` table and its index), in one transaction.
  void upgradeSchema();
  // Rows of `tasks` (in index order), pending, each with its creation event (`reason`) and
  // its edges; inside the caller's transaction.
  void insertPendingTasks(const std::vector<TaskDef>& tasks, const std::string& reason);
  void insertEvent(int index, int attempt, TaskState from, TaskState to, double at,
                   const std::string& host, int slot, int exit_code, const std::string& reason);

  SqliteDb db_;
  SqliteStatement insert_event_;
};

double wallClockNow();

}  // namespace foldfarm::jobs
