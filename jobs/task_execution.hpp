#pragma once
// Running one task in the current process, the same way in a persistent worker and in a
// standalone `campaign work` run: create the task directory (for kinds that need one), take
// the attempt's lease (jobs/task_lease.hpp) before anything is written, send the process's
// stderr (logs) to <task dir>/task.log for the task's duration, run the kind's runner, and
// write task_result.json atomically when there is something to record. An attempt whose input
// files changed since `campaign init` (jobs/input_record.hpp) runs nothing: it ends as bad
// input (not retried) with a reason naming the file.
//
// An attempt whose lease is refused runs nothing and writes nothing: status
// kExitSuperseded (a newer attempt exists) or kExitInterrupted (an earlier attempt's
// processes still run and could not be fenced; retried later).
#include <string>

#include "jobs/campaign.hpp"
#include "jobs/task_lease.hpp"

namespace foldfarm::jobs {

struct TaskExecution {
  int index = 0;
  std::string kind;
  nlohmann::json params;
  std::string task_id;
  std::string task_dir;
  int attempt = 0;
  int slot = -1;
  // Write task_result.json even when the runner returned no result (standalone runs: the file
  // is then the only record of the attempt).
  bool always_write_result = false;
  // false: executeTask leaves task_result.json to the caller (a worker writes it on another
  // thread while the next task starts, and reports the attempt only once it is written).
  bool write_result_file = true;
  LeaseOptions lease;
  // The records of the task's input paths at `campaign init` (TaskDef::inputs_at_init): an
  // input that no longer matches fails the attempt as bad input before the kind runs.
  nlohmann::json inputs_at_init = nlohmann::json::object();
};

// Whether the attempt's task_result.json is to be written: never without the lease, and never
// for a kind without a directory (noop, load: the result is in the completion message).
bool resultFileWanted(const TaskExecution& e, const TaskResult& r, const TaskLease& lease);

// What to do, added to a task's failure reason that says its disk or quota is full ("" for
// any other reason): free space and retry the failed tasks.
std::string taskFullDiskAdvice(const std::string& reason);

// Never throws for task failures (they are in the result); throws Error only when the
// task directory or result file cannot be written. The attempt's lease is moved into
// `lease` (held when it was granted): the caller releases it once the result is durable.
TaskResult executeTask(const TaskExecution& e, TaskLease& lease);
// The same, releasing the lease on return (after writing the result file).
TaskResult executeTask(const TaskExecution& e);

}  // namespace foldfarm::jobs
