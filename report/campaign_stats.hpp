#pragma once
// Campaign statistics for the report, from the journal (jobs/journal.hpp) only: tasks per
// state, attempts, failures with their reasons, the time tasks spent running (every
// attempt, from the journal's events), GPU- and CPU-hours, and completions over time.
//
// Thread-safety: one thread (SQLite connections are per thread).
#include <map>
#include <string>
#include <vector>

#include "jobs/campaign.hpp"

namespace foldfarm::report {

struct FailedTask {
  std::string task;
  std::string state;  // current state
  int attempts = 0;
  int failures = 0;
  int exit_code = -1;
  std::string reason;
};

struct CampaignStats {
  std::string name, kind, executor;
  int tasks = 0;
  int replicas = 0, members = 0;
  int gpus = 0, tasks_per_gpu = 1, threads_per_task = 1, slots = 0;
  std::map<std::string, int> counts;           // state name -> tasks (every state listed)
  int64_t attempts = 0;                        // dispatches (pending -> running), all tasks
  int64_t failed_attempts = 0;                 // attempts that ended in a failure (retried or not)
  int64_t interrupted_attempts = 0;            // attempts that ended interrupted (requeued)
  int tasks_retried = 0;                       // tasks that needed more than one attempt
  std::vector<FailedTask> failures;            // tasks with failed attempts or in state failed
  std::map<std::string, int> failure_reasons;  // reason of each failed attempt -> count
  double run_s = 0;                            // Σ over attempts of running time
  double gpu_hours = 0;                        // run_s x GPUs per task / 3600 (0 on CPU slots)
  double cpu_hours = 0;                        // run_s x threads_per_task / 3600
  double first_start = 0, last_end = 0;        // epoch seconds (0: nothing ran)
  std::vector<double> done_at;                 // epoch seconds of each completion (done), sorted
  int runs_again = 0;  // completions of a task done before (`campaign retry --task`, accept-inputs)
  std::map<std::string, int> hosts;  // host -> attempts run there
  bool spec_truth = false;  // the spec names a truth (inputs.truth): aggregate needs no --truth
  int peak_running = 0;     // the most attempts running at once (the slots a run really used)
};

// Opens D read-only (jobs::Campaign::open). Throws InputError when D is not a campaign
// directory.
CampaignStats readCampaignStats(const std::string& campaign_dir);

}  // namespace foldfarm::report
