#pragma once
// Running one task in the current process, the same way in a persistent worker and in a
// standalone `campaign work` run: create the task directory (for kinds that need one),
// send the process's stderr (logs) to <task dir>/task.log for the task's duration, run
// the kind's runner, and write task_result.json atomically when there is something to record.
#include <string>

#include "jobs/campaign.hpp"

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
};

// Whether the attempt's task_result.json is to be written.
bool resultFileWanted(const TaskExecution& e, const TaskResult& r);

// Never throws for task failures (they are in the result); throws Error only when the
// task directory or result file cannot be written.
TaskResult executeTask(const TaskExecution& e);

}  // namespace foldfarm::jobs
