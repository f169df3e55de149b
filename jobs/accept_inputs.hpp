#pragma once
// `foldfarm campaign accept-inputs D`: the campaign takes its input files as they are now.
//
// An input replaced since `campaign init` (a simulation regenerated, a foundation pretrained
// again, a truth corrected) stops every task that would read it (jobs/input_record.hpp): the
// tasks done so far read the old version. Rather than a new campaign that runs every task
// again, this records the new version and runs again exactly the tasks whose results it
// makes stale:
//   1. under the orchestrator lock (refused while a run holds the campaign), inputs copied
//      again with the bytes `campaign init` read (their sha256) get their recorded time back
//      and count as unchanged (restoreInputTimes, as `campaign repair` does);
//   2. the changed inputs: every recorded path whose record differs now; a missing one is
//      refused (restore it first);
//   3. the tasks to run again: those whose "inputs" name a changed path under a key the task
//      reads (not the kind's aggregation_inputs: a chain's truth is read by the aggregation
//      only), and every task that needs one of them, transitively (the task graph: a
//      variation's chain warm-started from the nominal one);
//   4. refused, changing nothing, when one of them is running or interrupted (a run, a pilot
//      or a Slurm job has it) or a process of an earlier attempt still holds its lease;
//   5. the changed files checked as `campaign init` checks them (the kind's check of their
//      layout over each set of inputs, then every value they hold, the unchanged files not
//      read again), and recorded: size, time and sha256;
//   6. the directories of those tasks, the aggregation's outputs (D/aggregate) and the old
//      spec.json moved to D/superseded/<UTC time>-<pid>/ (nothing is deleted); each task's
//      directory made anew holding only .attempt, one above its last attempt, so that no
//      older attempt (a Slurm element still queued) can start in it;
//   7. one journal transaction: those of them done or failed -> pending (with a fresh count
//      of failures; cancelled ones stay cancelled, pending ones pending) and the journal's
//      copy of the new spec and of the spec before it (the commit point);
//   8. D/spec.json written atomically with the new records.
// Crash-safe by order: before 7 the files differ from D/spec.json's records, so no task runs
// and no aggregation reads them, and the same command run again finishes the work (7 moves
// only what is still done or failed; directories already moved are not moved again). After 7,
// the next command that writes the campaign finishes it (Campaign::open: spec.json is the
// journal's spec before, so the journal's copy is written to it); commands that only read see
// the accepted campaign meanwhile.
// With `dry_run`: 1 to 4 on the campaign opened read-only, step 1 reading and comparing the
// bytes without setting a time: its `restored` are the inputs accepting would give back their
// time, left out of `changed` (before: a file only touched was counted as changed, so the dry
// run said tasks would run again that accepting did not run).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldfarm::jobs {

struct AcceptedInput {
  std::string path;
  std::string change;  // how it changed (inputChangeSince's clause)
  int tasks = 0;       // tasks that read it
};

struct AcceptSummary {
  bool dry_run = false;
  std::vector<std::string> restored;   // same bytes copied again: given back their time (dry
                                       // run: would be)
  std::vector<AcceptedInput> changed;  // accepted (dry run: would be)
  std::vector<std::string> rerun;      // ids of the tasks that run again, in index order
  int needed_only = 0;                 // of `rerun`: only because a task they need runs again
  int done = 0, failed = 0, pending = 0, cancelled = 0;  // their states before
  // Rows left running by an orchestrator that ended (a crash, a lost node; no Slurm job):
  // requeued first (not counted in `pending`).
  int left_running = 0;
  bool aggregate_moved = false;  // D/aggregate held outputs (dry run: holds)
  std::string moved_to;          // D/superseded/<time>-<pid> ("" when nothing moved)
  nlohmann::json toJson() const;
};

// Steps 1-8 above on campaign directory `dir`. Throws InputError (a missing input, a task
// still running, a changed file that fails the kind's checks: nothing changed) or Error.
AcceptSummary acceptInputs(const std::string& dir, bool dry_run);

}  // namespace foldfarm::jobs
