#pragma once
// Campaign planning: a discrete-event simulation of a campaign on G GPUs, before anything
// is submitted. Tasks are dispatched in order to the earliest free slot (the dispatcher's
// policy); a task's duration is drawn from a log-normal with the given mean and
// coefficient of variation; with probability failure_rate an attempt fails part-way (at a
// uniform fraction of its duration) and is retried up to max_attempts. Deterministic in
// its seed.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobs/campaign.hpp"

namespace foldfarm::jobs {

// The largest spread (std / mean of a task's time) the simulation takes.
inline constexpr double kMaxPlanSpread = 10;

struct PlanInput {
  int tasks = 0;
  int gpus = 1;
  int tasks_per_gpu = 1;
  int gpus_per_node = 4;
  double task_s = 60;       // mean duration of one attempt on a slot
  double task_cv = 0.1;     // spread: std / mean
  double failure_rate = 0;  // per attempt
  int max_attempts = 3;
  uint64_t seed = 1;
  // The task graph: needs[t], the tasks (indices below `tasks`) that t waits for (a
  // variation's task, its nominal task); empty: none waits.
  std::vector<std::vector<int>> needs;
};

struct PlanResult {
  double makespan_s = 0;
  double gpu_hours = 0;       // GPUs held for the makespan
  double busy_gpu_hours = 0;  // GPU time the attempts used (shared GPUs count 1/k)
  double node_hours = 0;      // whole nodes held for the makespan
  int nodes = 0;
  int slots = 0;
  int64_t attempts = 0;
  int failed_tasks = 0;    // tasks that exhausted max_attempts
  int held_tasks = 0;      // tasks that never ran: a task they need failed
  double utilisation = 0;  // busy slot time / (slots × makespan)

  nlohmann::json toJson() const;
};

PlanResult simulatePlan(const PlanInput& in);

// Task time statistics measured from a campaign's journal (done tasks' run times, and
// failed attempts / attempts). Throws InputError when no task is done yet.
struct MeasuredTaskTimes {
  int done = 0;
  double mean_s = 0;
  double cv = 0;
  double failure_rate = 0;
};
// Throws InputError when no task is done and `require_done` (the mean task time is wanted);
// otherwise a campaign without done tasks gives done 0 and its failure rate.
MeasuredTaskTimes measureTaskTimes(Campaign& campaign, bool require_done = true);

// The figures a plan simulates with, and where each came from, for `source`: "task time
// given, spread measured on 40 done task(s) of D, failure rate default". What is given wins
// (task_minutes > 0, spread >= 0, failure_rate >= 0), then what was `measured` on the campaign
// `from` (the task time and spread when a task is done), then the defaults (spread 0.1,
// failure rate 0; a task time must be given or measured). A measured spread beyond
// kMaxPlanSpread (a few long tasks among thousands of instant ones) is held there, and
// `source` says so with the measured value.
struct PlanFigures {
  double task_s = 0;
  double task_cv = 0.1;
  double failure_rate = 0;
  std::string source;
};
PlanFigures planFigures(double task_minutes, double spread, double failure_rate,
                        const MeasuredTaskTimes* measured, const std::string& from);

}  // namespace foldfarm::jobs
