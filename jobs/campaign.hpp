#pragma once
// A campaign directory and the operations on it. This is the interface the executors,
// the `foldfarm campaign …` commands and the Slurm layer use.
//
// Layout of a campaign directory D:
//   D/spec.json              the frozen spec (absolute input paths)
//   D/journal.sqlite         the journal (jobs/journal.hpp), written by one process only
//   D/orchestrator.lock      flock()ed by the process that writes the journal
//   D/tasks/<id>/            one folder per task: task.log, task_result.json, the task's outputs
//                            (a chain's checkpoints and weights)
//   D/aggregate/             aggregated outputs (`campaign aggregate`)
//   D/aggregate.lock         flock()ed while an aggregation reads the outputs, or a change of
//                            the campaign makes them stale (lockCampaignOutputs); shared
//                            while `foldfarm report` reads them (readCampaignOutputs)
//   D/superseded/<time>-<pid>/  what a change of the campaign made stale: the old spec.json,
//                            tasks/<id>/ and aggregate/ (`campaign accept-inputs`,
//                            jobs/accept_inputs.hpp; `campaign extend`: aggregate/ only,
//                            jobs/extend_campaign.hpp)
//
// task_result.json (written atomically by the process that ran the task, never by the
// orchestrator): {"task": id, "attempt": n, "status": s, "reason": "...", "host": h,
// "slot": k, "started_at": t0, "finished_at": t1, "result": {...}}. Ingestion reads it
// into the journal exactly once (only while the task is `running` that attempt).
//
// Slurm arrays: the submitting process opens the campaign (Access::kWriter), moves tasks
// to running with markSubmitted(ids, "<jobid>_<k>"), and each array element runs
//   foldfarm campaign work D --task ID [--task ID …] [--tasks-file F] [--attempt N]
// which calls runTaskStandalone() for each task: it reads D/spec.json only and writes
// D/tasks/<id>/task_result.json; it never opens the journal. The submitter later calls
// ingestResults() (exactly once per result) and requeue() for tasks whose job ended
// without a result.
#include <optional>
#include <string>
#include <vector>

#include "core/base/fd.hpp"
#include "jobs/campaign_spec.hpp"
#include "jobs/journal.hpp"
#include "jobs/task_state.hpp"

namespace foldfarm::jobs {

// The journal's meta key holding the text of D/spec.json (`campaign repair` restores a
// damaged or lost spec.json from it; journals made before it hold none).
inline constexpr const char* kFrozenSpecMeta = "frozen_spec";
// The meta key holding the text of the spec before the campaign's last change (`campaign
// extend`, `accept-inputs`, which write both metas in their journal transaction before
// spec.json): a spec.json equal to it is one that change did not write yet (Campaign::open
// finishes the change); one equal to neither was edited by hand, and is refused.
inline constexpr const char* kFrozenSpecBeforeMeta = "frozen_spec_before";

// "20261203-211500": the UTC time now, in the names of what is kept aside (a damaged journal,
// the outputs of superseded inputs).
std::string utcStamp();

// D/superseded/<UTC time>-<pid>/: where a command that makes a campaign's outputs stale keeps
// them (`campaign accept-inputs`, `campaign extend`): made on the first move, with a copy of
// the spec.json they were made under. Nothing is deleted.
class SupersededOutputs {
 public:
  explicit SupersededOutputs(std::string campaign_dir);
  // Moves `from` durably to <path()>/<name> (its parent directories made).
  void move(const std::string& from, const std::string& name);
  // D/aggregate, when it holds outputs: moved here as aggregate/ and made anew, empty, with
  // D/report.html (the page of those numbers) when there is one. Returns whether it moved.
  bool moveAggregate();
  const std::string& path() const { return moved_to_; }  // "" until something moved
  // Once the command's moves are done: writes what they moved takes on disk (measured before
  // each move) into the set (D/superseded/<set>/disk_use.json), which `campaign status` adds
  // up. Logs instead of throwing: without it, status walks the set.
  void recordUse() noexcept;

 private:
  std::string dir_, aside_, moved_to_;
  double moved_bytes_ = 0, moved_files_ = 0;
};
// Whether D/aggregate holds outputs (which a change of the campaign makes stale).
bool aggregateHoldsOutputs(const std::string& campaign_dir);

// D/aggregate.lock, flocked by a command that reads the campaign's outputs into D/aggregate
// (`campaign aggregate`, `campaign run --aggregate`) and by one that makes them stale
// (`campaign extend`, `campaign accept-inputs`), for as long as it runs: the two never overlap,
// so an aggregation reads the spec, the done tasks and their outputs of one moment, and its
// bands never land in D/aggregate after the change that made them stale. `doing` names the
// holder's command (written into the file). InputError naming D, the holder (its command,
// pid and host) and what to do when another process holds it; nothing is changed then.
Fd lockCampaignOutputs(const std::string& campaign_dir, const std::string& doing);
// D/aggregate.lock shared, for a command that only reads the campaign's outputs (`foldfarm
// report`: D/aggregate, the tasks' histories, the journal): while it reads, no aggregation
// replaces D/aggregate file by file and no extend or accept-inputs moves it aside (they are
// refused, naming the reader, as a reader is refused naming them). InputError as for
// lockCampaignOutputs when one of them holds it; an invalid Fd (read unlocked, logged) when
// the lock file is missing and cannot be made (a campaign directory this user may not write).
Fd readCampaignOutputs(const std::string& campaign_dir, const std::string& doing);
// What holds D/aggregate.lock ("`foldfarm campaign aggregate` (pid 4242 on node7)"), "" when
// nothing does (`campaign status`: its shared lock for an instant, which lockCampaignOutputs
// waits out) or only readCampaignOutputs' readers do.
std::string campaignOutputsUser(const std::string& campaign_dir);
inline constexpr const char* kOutputsLockFile = "aggregate.lock";
// Who orchestrates the campaign now, as a process of this host that holds D/orchestrator.lock
// wrote it ("node7 pid 4242"); "" when none of this host's processes holds it (none at all, or
// one on another node: a pilot's rank 0, a Slurm submitter elsewhere).
std::string campaignOrchestrator(const std::string& campaign_dir);
// The line the last process to orchestrate the campaign wrote into D/orchestrator.lock ("node7
// pid 4242"), whether it still holds it or not; "" when none did. Where a run left rows
// running, it says which host to look on (another node's lock is not seen from here).
std::string campaignLastOrchestrator(const std::string& campaign_dir);

// The attempt record in each task folder (a task's own outputs, e.g. a chain's
// result.json, live beside it under their own names).
inline constexpr const char* kTaskResultFile = "task_result.json";
// The journal in a campaign directory.
inline constexpr const char* kJournalFile = "journal.sqlite";
// In an aggregation's output directory (D/aggregate for a campaign) while the aggregation
// renames its staged outputs into place; one killed then leaves it, and its outputs are of two
// aggregations until the next aggregation into the directory finishes the renames
// (ensembles/aggregate.cpp writes it; `report` refuses the directory, `status` says so).
inline constexpr const char* kAggregateCommitRecord = ".aggregate-commit.json";

struct TaskResult {
  std::string task_id;
  int attempt = 0;  // 0: unknown (a `work` run without --attempt)
  int status = 0;
  std::string reason;
  std::string host;
  int slot = -1;
  double started_at = 0;
  double finished_at = 0;
  nlohmann::json result;
  // false: the attempt never started because another attempt's processes, which this host
  // cannot end, hold the task's lease; it counts toward no cap (not in the result file: such
  // an attempt writes none).
  bool counts_as_failure = true;

  nlohmann::json toJson() const;
  static TaskResult fromJson(const nlohmann::json& j);  // throws InputError
};

// What `campaign repair D` found and did (Campaign::repair).
struct RepairSummary {
  std::string problem;            // what was wrong with the journal ("": sound)
  bool rebuilt = false;           // a new journal replaced it
  std::string damaged_copy;       // the directory the damaged journal's files went to ("": none)
  int done = 0;                   // tasks restored as done from their task_result.json
  int pending = 0;                // every other task (to run again)
  int unreadable = 0;             // result files that could not be read (their tasks pending)
  std::string spec_problem;       // what was wrong with D/spec.json ("": sound)
  bool spec_restored = false;     // D/spec.json written back from the journal's copy
  std::string spec_damaged_copy;  // where the damaged spec.json went ("": it was missing)
  std::vector<std::string> inputs_restored;  // inputs copied again, given back their time
  std::vector<std::string> inputs_changed;   // a clause per input still not as recorded
  nlohmann::json toJson() const;
};

// Campaign::open(kWriter) refused: another process holds D/orchestrator.lock. `holder` is the
// line it wrote there ("node7 pid 4242"; "" when it could not be read).
class CampaignBusy : public Error {
 public:
  CampaignBusy(const std::string& what, std::string holder)
      : Error(what), holder_(std::move(holder)) {}
  const std::string& holder() const { return holder_; }

 private:
  std::string holder_;
};

class Campaign {
 public:
  enum class Access {
    kWriter,   // takes D/orchestrator.lock (CampaignBusy when another process holds it)
    kReadOnly  // status, listing: never writes
  };

  // Creates D from a validated spec. D must not exist (InputError otherwise). The
  // directory appears complete or not at all (built beside D, then renamed).
  static Campaign init(const CampaignSpec& spec, const std::string& dir);
  // Opens D. Throws InputError when D is not a campaign directory, Error naming
  // `campaign repair` when its journal is missing or damaged.
  static Campaign open(const std::string& dir, Access access = Access::kWriter);
  // `campaign repair D`: checks D/journal.sqlite (SQLite's integrity check, every task and
  // event read back). When it is damaged or missing, or `force`, builds a new journal from
  // D/spec.json and the task directories, which hold the truth: a task whose
  // task_result.json records success is done, with that result and attempt number; every
  // other task is pending, its attempt count raised to the newest its directory records
  // (.attempt), so that its next attempt supersedes any that ran. The damaged files are
  // moved to D/journal.damaged-<time>/ and the new journal replaces journal.sqlite
  // atomically. Takes the orchestrator lock (refused while a run holds the campaign); stop
  // the campaign's Slurm jobs first. Not recovered: the history of attempts (events) and
  // failure counts; tasks of kinds without a directory (noop, load) have no result file and
  // run again. First, a damaged or lost D/spec.json is written back from the copy the
  // journal keeps (meta "frozen_spec"; campaigns made before it have none: InputError); then
  // every input file copied again with its bytes as recorded by `campaign init` (its
  // checksum) is given back its recorded time (restoreInputTimes); the inputs still changed
  // are named in the summary (the journal is checked whatever they are).
  static RepairSummary repair(const std::string& dir, bool force);

  Campaign(Campaign&& other) noexcept = default;
  Campaign& operator=(Campaign&&) = delete;
  ~Campaign() noexcept = default;  // closing the lock file releases its flock

  const CampaignSpec& spec() const { return spec_; }
  const std::string& dir() const { return dir_; }
  std::string taskDir(const std::string& task_id) const;
  std::string resultPath(const std::string& task_id) const;
  CampaignJournal& journal() { return journal_; }

  std::vector<TaskRecord> tasks(std::optional<TaskState> state = std::nullopt) {
    return journal_.tasks(state);
  }
  void forEachTask(const std::function<void(TaskRecord&)>& fn,
                   std::optional<TaskState> state = std::nullopt) {
    journal_.forEachTask(fn, state);
  }
  StateCounts counts() { return journal_.counts(); }

  // pending -> running with an external job id (Slurm), one transaction. Returns the
  // attempt number each task now runs (0 for ids that were not pending).
  std::vector<int> markSubmitted(const std::vector<std::string>& task_ids,
                                 const std::string& external_id, const std::string& host = "");
  // running -> interrupted -> pending (a job ended without a result, preemption); see
  // CampaignJournal::requeue.
  int requeue(const std::vector<std::string>& task_ids, const std::string& reason,
              int event_exit_code = -1, double not_before = 0);
  // running -> failed (the Slurm submitter gives up on them); see CampaignJournal::giveUp.
  int giveUp(const std::vector<std::string>& task_ids, const std::string& reason);
  // Reads task_result.json of every running task and ingests those of the running attempt
  // (or, for attempt 0, written after it started), one transaction. Exactly once: a
  // result is ingested only while its task is running. Returns how many were ingested.
  int ingestResults();
  // After an orchestrator crash: ingests results already on disk, then requeues every
  // task still `running` (reason "orchestrator restarted"). Returns tasks requeued.
  int recoverAfterCrash();
  // Tasks in each of `from` (failed, cancelled) back to pending, with a fresh count of
  // failures (journal.hpp); returns how many.
  int retry(const std::vector<TaskState>& from);
  // Every unfinished task to cancelled, after the results already on disk are ingested (a
  // Slurm element that finished since the last submitter round: done, not cancelled).
  // Returns how many were cancelled.
  int cancel(const std::string& reason);
  // Error when D/journal.sqlite is no longer the file this Campaign opened: the campaign
  // directory was moved or renamed, or the journal deleted or replaced, while a run went on.
  // What the run recorded is then not at D (a deleted journal: nowhere), and tasks may have
  // written their outputs under D's old path; a run that ends must not say "done".
  void requireJournalInPlace() const;

 private:
  Campaign(std::string dir, CampaignSpec spec, CampaignJournal journal, Fd lock);

  std::string dir_;
  CampaignSpec spec_;
  CampaignJournal journal_;
  Fd lock_;  // orchestrator.lock, flocked while this writer lives; none when read-only
  // The journal file's identity (st_dev, st_ino) when it was opened.
  unsigned long long journal_dev_ = 0, journal_ino_ = 0;
};

// Runs one task in this process and writes its task_result.json atomically; never touches the
// journal (Slurm array elements on compute nodes). Task kinds must be registered.
// The task's log goes to D/tasks/<id>/task.log. Throws InputError for an unknown task id.
TaskResult runTaskStandalone(const std::string& campaign_dir, const std::string& task_id,
                             int attempt = 0);

// D/tasks/<id>: a task's directory (Campaign::taskDir, for code without a Campaign open).
std::string taskDirOf(const std::string& campaign_dir, const std::string& task_id);

// Reads D/spec.json (the frozen spec) without opening the journal. Throws InputError.
CampaignSpec loadFrozenSpec(const std::string& campaign_dir);

// Reads a task_result.json (nullopt when absent; InputError when unreadable).
std::optional<TaskResult> readTaskResult(const std::string& path);
void writeTaskResult(const std::string& path, const TaskResult& r);

}  // namespace foldfarm::jobs
