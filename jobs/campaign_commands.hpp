#pragma once
// The `campaign …` commands as library calls, so that the `foldfarm` app (which parses
// options with CLI11) and torch-free tools share one implementation. Results go to
// stdout, logs to stderr; errors are thrown (InputError -> exit 2).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "jobs/executor.hpp"
#include "jobs/extend_campaign.hpp"
#include "jobs/task_rerun.hpp"

namespace foldfarm::jobs {

// `campaign init SPEC --dir D`: validates everything first (nothing is created on error),
// then creates D. Prints a one-line summary.
void initCommand(const std::string& spec_path, const std::string& dir);
// `campaign run D [--executor local|mpi]` and `campaign resume D` (the same: a run always
// continues from the journal). executor "" = the spec's (slurm is refused here: use the
// slurm commands). Returns the exit code: 0 all tasks done, 1 some failed, 75 stopped by
// a signal (resume later), 79 ended by `campaign cancel` (jobs/cancel_request.hpp). For mpi, MPI is
// initialised and finalised here; every rank must call it.
int runCommand(const std::string& dir, const std::string& executor, const RunOptions& options);
// `campaign status D [--json]`.
void statusCommand(const std::string& dir, bool json, bool list_tasks = false);
// `campaign retry D [--failed] [--cancelled] [--task ID …] [--tasks-file F]`: runs like
// resume with the options prepareRetry gives (this process orchestrating it).
int retryCommand(const std::string& dir, const std::string& executor, const RunOptions& options,
                 bool failed, bool cancelled, const std::vector<std::string>& tasks = {},
                 const std::string& tasks_file = "");
// A retry's options: the failed or cancelled tasks move back to pending once the run holds the
// journal (RunOptions::retry). On the process that orchestrates the run (`orchestrator`: rank 0
// of a pilot) also the named tasks (`tasks` and those `tasks_file` lists: readTaskIdsFile, read
// there alone) are made ready to run again now (rerunNamedTasks, jobs/task_rerun.hpp: a done
// task's outputs move aside), with --failed also the tasks whose outputs a failed task found
// lost (exit 66), and run first (RunOptions::first). InputError when none of the four is asked
// for, or the file lists no task.
RunOptions prepareRetry(const std::string& dir, const RunOptions& options, bool failed,
                        bool cancelled, std::vector<std::string> tasks,
                        const std::string& tasks_file, bool orchestrator);
// `campaign retry D … --dry-run`: what the retry would run again and move aside, with the same
// checks (retryStates, the ids, the inputs, a task a Slurm job or a lease holds), printed;
// nothing is changed and nothing runs.
void dryRunRetry(const std::string& dir, bool failed, bool cancelled,
                 std::vector<std::string> tasks, const std::string& tasks_file);
// The states `campaign retry D` moves back to pending: failed, cancelled, both or (with
// `tasks`, named tasks asked for) none; InputError naming D when nothing is asked for.
std::vector<TaskState> retryStates(const std::string& dir, bool failed, bool cancelled,
                                   bool tasks = false);
// What rerunNamedTasks did, in a line or two.
void printTaskRerun(const std::string& dir, const TaskRerunSummary& s);
// `campaign cancel D [--wait S]`: every unfinished task -> cancelled, by this process when it
// can open the journal, else by the run that orchestrates D, asked through D/cancel.request
// and waited for up to wait_s (0: asked only); jobs/cancel_request.hpp. `cancel_here` cancels
// in an open campaign (default: the journal's cancel; with Slurm jobs, scancel too). Prints a
// line; returns 0, or throws Error when the run did not act within wait_s.
int cancelCommand(const std::string& dir, double wait_s = 600,
                  const std::function<int(Campaign&)>& cancel_here = {});
// `campaign repair D [--force] [--json]`: Campaign::repair, then one line (or JSON) saying
// what was wrong and what the new journal holds.
void repairCommand(const std::string& dir, bool force, bool json);
// `campaign accept-inputs D [--dry-run] [--json]`: acceptInputs (jobs/accept_inputs.hpp),
// then a line per input and one saying what runs again and where the old outputs went (or
// the summary as JSON).
void acceptInputsCommand(const std::string& dir, bool dry_run, bool json);
// `campaign extend D [--spec NEW] [--variation V] [--replicas R] [--members M] [--dry-run]
// [--json]`: extendCampaign (jobs/extend_campaign.hpp), then a line per set of tasks that grows
// and one saying what was added (or the summary as JSON).
void extendCommand(const std::string& dir, const ExtendRequest& request, bool dry_run, bool json);
// `campaign work D --task ID[@N] …`: runs the tasks in this process, writing
// task_result.json; never opens the journal. N is the attempt the journal gave the task
// (`attempt` for ids without one; 0: a run by hand). Each task runs under its lease
// (task_lease.hpp): an attempt older than the task's newest is superseded and runs nothing.
// Returns 0 when all succeeded, else the first failing status (kExitSuperseded ranks below
// every other failure, above success).
int workTasks(const std::string& dir, const std::vector<std::string>& task_ids, int attempt);
// `campaign work D [--task ID[@N] …] [--tasks-file F] [--attempt N]`: workTasks on the ids
// given and those listed in `tasks_file` (readTaskIdsFile; "" for none), its status thrown as
// the command's exit code: Error(76) when a newer attempt runs a task (or, by hand, it is
// done), InterruptedError(75) on a stop (the task saved its state), Error(2) when a task's
// input is bad, Error(1) for any other failure.
void workCommand(const std::string& dir, std::vector<std::string> task_ids,
                 const std::string& tasks_file, int attempt);
// "ID@N" -> ("ID", N); "ID" -> ("ID", 0). Throws InputError for a malformed N.
std::pair<std::string, int> splitTaskAttempt(const std::string& entry);
// Reads task ids from a file (one per line; blank lines and '#' comments skipped; "-": the
// standard input, e.g. `jq -r … | foldfarm campaign retry D --tasks-file -`).
std::vector<std::string> readTaskIdsFile(const std::string& path);

// `campaign plan SPEC --gpus G …`: simulates the tasks `campaign init` would make of SPEC
// (its warm reference included; its inputs are not read: they may be staged later) on G GPUs
// (jobs/plan.hpp) and prints the makespan, attempts, GPU- and node-hours (or JSON). The task
// time is `task_minutes`, else measured on the done tasks of campaign `from` (which also gives
// the spread and failure rate unless those are given: >= 0). The caller registers the spec's
// task kind. InputError when neither a task time nor `from` is given.
struct PlanRequest {
  std::string spec;
  int gpus = 0;
  double task_minutes = 0;
  std::string from;
  double spread = -1;
  double failure_rate = -1;
  int gpus_per_node = 4;
  int tasks_per_gpu = 0;  // 0: the spec's
  uint64_t seed = 1;
  bool json = false;
};
void planCommand(const PlanRequest& request);

// "N done, N running, N pending, N failed, N cancelled" of a {"done": N, ...} object (a
// state missing counts 0).
std::string stateCountsLine(const nlohmann::json& counts);

}  // namespace foldfarm::jobs
