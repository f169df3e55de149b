#pragma once
// The scheduler benchmark, as `foldfarm bench scheduler` runs it: scratch campaigns of the
// built-in task kinds through the local executor (and the MPI pilot), timed end to end.
//   noop     `tasks` tasks that do nothing: tasks/s and ms per task per slot, the cost of
//            dispatch and of the durable journal alone;
//   sleep    `sleep_tasks` tasks of `sleep_s` seconds: makespan against the ideal;
//   load     `load_tasks` tasks reading a `load_mb` MB input, kept by a persistent worker
//            against read every time: what a persistent worker saves per task;
//   command  `command_tasks` tasks running /bin/true: task directory, lease, log, durable
//            result, journal; then the same through the MPI pilot on `pilot_ranks` ranks
//            when mpirun is on the PATH.
// The campaigns live in a fresh directory under `scratch`, removed afterwards unless `keep`.
// Workers and the pilot are this executable (`worker`, `campaign run`): call it from foldfarm.
// Errors: InputError for bad options; Error when a campaign or the pilot fails.
#include <string>

#include <nlohmann/json.hpp>

namespace foldfarm::jobs {

struct SchedulerBenchOptions {
  int tasks = 10000;
  int slots = 2;
  int sleep_tasks = 200;
  double sleep_s = 0.2;
  double load_mb = 0;
  int load_tasks = 20;
  int command_tasks = 400;
  int pilot_ranks = 2;  // 0: no pilot figure
  std::string scratch = "/tmp";
  bool keep = false;
};
// The figures as JSON; "dir" names the scratch directory when it is kept.
nlohmann::json benchScheduler(const SchedulerBenchOptions& o);

}  // namespace foldfarm::jobs
