#pragma once
// Splitting pending campaign tasks into Slurm job arrays that respect the cluster's limits.
//
// Element e of a submission handles a deterministic shard: tasks [e·s, (e+1)·s) of the
// pending list in campaign order, s = tasks per element. With s chosen automatically,
// s = max(lanes, ceil(n / min(MaxArraySize, budget))) so that one array usually holds the
// whole campaign (10,000 tasks, MaxArraySize 1001 -> s = 10, 1,000 elements); MaxArraySize
// here stands for SlurmLimits::maxArrayElements(), which SchedulerParameters'
// max_array_tasks may lower. The element budget is MaxJobCount minus the jobs already queued
// minus a 10 % margin (every array element counts as one job); tasks beyond it are deferred
// to a later round. Elements are cut into arrays of at most MaxArraySize (and of at most
// maxElementsPerArray); the total throttle K is divided among the arrays in proportion to
// their size (each gets at least 1), so at most ~K elements run at once. Arrays cut by
// maxElementsPerArray take K in order instead, each as much as it can run, and those left
// without any are deferred.
#include <map>
#include <string>
#include <vector>

#include "slurm/slurm_client.hpp"

namespace foldfarm::slurm {

struct ArrayPlanOptions {
  int lanes = 1;            // tasks an element runs at the same time
  int tasksPerElement = 0;  // 0: automatic (above)
  int throttle = 0;         // total concurrent elements; 0: no %K
  SlurmLimits limits;
  int queuedJobs = 0;  // jobs of all users already queued (-1: unknown, taken as 0)
  // Elements of one array at most, below the cluster's caps (0: none). The Slurm watch lowers
  // it when a submit limit refuses an array (MaxSubmitJobs counts an array as its elements);
  // the tasks per element stay what they would be, and so the time an element runs.
  int maxElementsPerArray = 0;
};

struct PlannedArray {
  std::vector<std::vector<std::string>> shards;  // shards[e] = task ids of element e
  int throttle = 0;                              // %K for this array (0: none)
};

struct ArrayPlan {
  std::vector<PlannedArray> arrays;
  int tasksPerElement = 0;
  std::vector<std::string> deferred;  // not submitted this round (job budget, throttle)
  int elements() const;
  int tasks() const;
};

// Pure. Throws InputError for a task id containing a tab, newline or NUL (it could not be
// written to a manifest line) and for bad options; Error when the cluster disables job arrays
// (MaxArraySize 0), naming the MPI pilot, which needs none.
ArrayPlan planArrays(const std::vector<std::string>& taskIds, const ArrayPlanOptions& options);

// The manifest of one array: line e = the shard of element e, ids separated by tabs.
std::string manifestText(const PlannedArray& array);
// The same with each task's attempt: "ID@N" (what `campaign work --task` takes), so that an
// element runs exactly the attempts the journal records and nothing older.
std::string manifestText(const PlannedArray& array, const std::map<std::string, int>& attempts);

}  // namespace foldfarm::slurm
