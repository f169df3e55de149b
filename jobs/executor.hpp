#pragma once
// Running a campaign: the dispatcher loop shared by the executors.
//
//   local  a pool of persistent worker processes on this node, one per slot (jobs/slots.hpp
//          sets CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER=PCI_BUS_ID and thread counts per
//          slot). Each worker runs tasks in its own process, so a crash (segfault,
//          kill -9) costs one attempt: it is recorded as failed ("worker died: signal N"),
//          retried, and a fresh worker takes the slot. Other tasks queued on that worker
//          go back to pending without blame; one it had finished but not yet reported
//          is completed from its task_result.json when that file is already written, and
//          otherwise rerun.
//   mpi    a pilot inside one allocation: rank 0 keeps the journal and dispatches
//          dynamically; every other rank keeps one local worker process (as above) and
//          relays tasks to it; ranks send heartbeats and a silent rank's tasks go back to
//          pending.
//
// The loop: (1) take ready pending tasks (every task they need is done: task_graph.hpp)
// for free slots, mark them running in one
// transaction, send them; (2) wait for completions; (3) ingest the batch in one
// transaction; (4) replace dead workers. A slot is given several short tasks at once when
// tasks are short (adaptive prefetch), one at a time when they are long.
// SIGTERM/SIGINT (core/base/stop_signal.hpp): dispatching stops, workers are told to stop,
// their tasks end interrupted and go back to pending; the journal stays consistent and
// `campaign resume` continues.
#include <functional>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "jobs/campaign.hpp"

namespace foldfarm::jobs {

// The longest --lost-after in seconds: 1e6, 11 days; a deadline of now plus it must fit the
// steady clock's count of nanoseconds.
inline constexpr double kMaxLostAfterS = 1e6;

struct RunOptions {
  // argv that starts a worker process speaking the worker protocol on stdin/stdout, e.g.
  // {"/path/to/foldfarm", "worker"}. Empty: this executable's path + "worker".
  std::vector<std::string> worker_argv;
  int slots = 0;               // override the spec's slots (0: from the spec)
  bool show_progress = true;   // bar on a terminal, log lines otherwise
  double heartbeat_s = 1.0;    // mpi: worker ranks' heartbeat period
  double lost_after_s = 30.0;  // mpi: a rank silent this long is lost (at most kMaxLostAfterS)
  int max_worker_restarts = 100;
  // `campaign retry`: tasks in these states (failed, cancelled) go back to pending once the
  // run holds the journal (rank 0 of a pilot), before it dispatches.
  std::vector<TaskState> retry;
  // Task ids dispatched before every other pending task (`campaign retry --task ID` of a task
  // that is pending already: it runs first, as the tasks the retry moved back do).
  std::vector<std::string> first;
  // Called with the campaign directory by the process that takes the journal (the local run;
  // rank 0 of the pilot, whose refusal every rank shares) before it takes it: an InputError
  // refuses the run, nothing changed. (The CLI: tasks in live Slurm jobs, which jobs/ cannot
  // ask Slurm about.)
  std::function<void(const std::string&)> before_run;
};

struct RunSummary {
  StateCounts counts;       // after the run
  int64_t completions = 0;  // attempts that ended during this run
  int64_t tasks_done = 0;   // tasks that became done during this run
  double elapsed_s = 0;
  double busy_s = 0;  // sum of task run times reported by workers
  int slots = 0;
  bool interrupted = false;  // stopped by a signal
  bool cancelled = false;    // stopped by a cancel request (jobs/cancel_request.hpp)
  int tasks_cancelled = 0;   // unfinished tasks that request cancelled
  int held = 0;              // pending tasks left because a task they need failed (task_graph.hpp)
  int retried = 0;           // tasks RunOptions::retry moved back to pending
  // Not empty: a task failed because a recorded input changed while the campaign ran (the
  // input and how), and no further task was started (every one would fail alike).
  std::string halted;
  // Not empty (the MPI pilot's rank 0): the journal the run recorded in is no longer the
  // campaign's (moved, deleted or replaced meanwhile); the error to end the command with.
  std::string journal_gone;
};

// Local executor. Requires a writer Campaign. Runs until no task is pending/running or a
// stop is requested. Throws Error when workers cannot be started.
RunSummary runLocal(Campaign& campaign, const RunOptions& options);
// MPI pilot. Collective over MPI_COMM_WORLD (MPI must be initialised, >= 2 ranks): rank 0
// opens `campaign_dir` as writer and dispatches; the summary is meaningful on rank 0.
// Throws PilotRankLeft on a worker rank that ended with an error of its own once the pilot
// runs; any other error on any rank should end the job (MPI_Abort).
RunSummary runMpi(const std::string& campaign_dir, const RunOptions& options);

// A worker rank of the MPI pilot met an error of its own (its node's worker cannot be
// started, a transport failure) and told rank 0, which fences it and goes on with the other
// ranks (jobs/mpi_executor.cpp, step 3). The rank prints the error and waits, without
// aborting the job and outside MPI_Finalize, until rank 0 ends the pilot, naming it.
class PilotRankLeft : public Error {
 public:
  explicit PilotRankLeft(const std::string& what) : Error(what, kExitFailure) {}
};

// The worker side of the protocol: reads task frames from in_fd, runs them in this process
// with runTaskKind, writes completions to out_fd. Returns the process exit code: at the end of
// its input, or after the task during which a SIGTERM/SIGINT reached it (the task stopped and
// was reported; the orchestrator starts another worker unless it is stopping itself).
int runWorker(int in_fd, int out_fd);
// Entry point of a `worker` subcommand: moves the protocol off fds 0/1 (stdout is then the
// task's stderr, so a task printing to stdout cannot corrupt the protocol) and runs.
int workerMain();

// This executable's path (/proc/self/exe).
std::string selfExecutable();

}  // namespace foldfarm::jobs
