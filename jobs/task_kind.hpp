#pragma once
// The registry of task kinds. jobs runs tasks without knowing what is inside them: a kind
// is a name and a runner. A runner receives the task's params (CampaignSpec::taskDef) and
// its task directory, and returns a TaskOutcome whose status reads like an exit code:
//   0 done, 75 interrupted (stopped on request; the task is requeued, not failed),
//   2 bad input, anything else a failure. A runner may throw: foldfarm::Error maps to its
//   exit code with the message as the reason, any other exception to 1.
// Runners run inside a persistent worker process, one task at a time, so they may keep
// expensive state (a foundation checkpoint, datasets) in workerCache() across tasks.
// Long runners poll foldfarm::stopRequested() (core/base/stop_signal.hpp) at safe points.
//
// Built-in kinds (registerBuiltinTaskKinds):
//   noop     does nothing; no directory, no result file (scheduler overhead only)
//   sleep    params.seconds (number >= 0): sleeps, polling the stop flag; result
//            {"slept_s": x}
//   command  params.argv (non-empty array of strings; argv[0] a path or a name on PATH):
//            fork/exec'd (never a shell) in the task directory with stdout/stderr to
//            task.log (stdin /dev/null; no other descriptor but the lease's), in a process
//            group of its own that holds the task lease and gets SIGKILL when the worker
//            dies; what it leaves running is killed when it ends;
//            status = its exit code, or 128+N and reason "signal N" when killed;
//            the worker's time limit and stop flag terminate it (SIGTERM, then SIGKILL)
//   load     params.path, params.cache (bool): reads a file (its latest version kept in
//            workerCache() when cache is true) and checksums it; measures what persistent
//            workers save
//
// Thread-safety: register kinds before starting workers or dispatching; lookups are then
// read-only.
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/lru_cache.hpp"

namespace foldfarm::jobs {

inline constexpr int kTaskDone = 0;
inline constexpr int kTaskInterrupted = 75;
inline constexpr int kTaskBadInput = 2;
// The longest a built-in sleep task may sleep: 10^7 s (116 days); 1e308 overflowed the clock's
// duration and the task slept 0 s.
inline constexpr double kMaxSleepSeconds = 1e7;

struct TaskOutcome {
  int status = kTaskDone;
  std::string reason;     // why it failed/was interrupted; empty when done
  nlohmann::json result;  // null: nothing to record; otherwise written to task_result.json
};

using TaskRunner =
    std::function<TaskOutcome(const nlohmann::json& params, const std::string& task_dir)>;
// Checks a task's params before the campaign starts; throws InputError naming the key.
using TaskValidator = std::function<void(const nlohmann::json& params)>;
// Which input files a campaign's value check has read, in which role, and which it is to
// leave alone: each file is read once in each role however many sets of inputs name it
// (`campaign init`), and `campaign accept-inputs` reads only the files that changed.
class InputValueReads {
 public:
  InputValueReads() = default;
  // `unchanged`: files not to read in any role.
  explicit InputValueReads(std::set<std::string> unchanged) : skip_(std::move(unchanged)) {}
  // Whether the check is to read `path` in `role` ("": as the task reads it; "truth": as the
  // aggregation does): false when it was read so already or is to be left alone; true marks
  // it read.
  bool first(const std::string& path, const std::string& role = "") {
    return skip_.count(path) == 0 && read_.insert(role + "\n" + path).second;
  }

 private:
  std::set<std::string> skip_, read_;
};

// Reads every value of the input files a task will read; throws InputError naming the file,
// dataset and row.
using InputValueCheck = std::function<void(const nlohmann::json& params, InputValueReads& reads)>;

struct CampaignSpec;

// Bytes and files (directories counted as files: both take an inode).
struct DiskUse {
  double bytes = 0;
  double files = 0;
};
// A task kind's estimate of one finished task's directory, or of the aggregation's outputs:
// how it was reached, for a person ("weights.h5 8.8 MB (100,000 events x 11 rows x 8 B)"),
// what a running task adds to it (its state), and how to make it smaller ("" when nothing
// would: a setting and what it would give).
struct DiskUseEstimate {
  DiskUse use;
  double running_bytes = 0;
  std::string how;
  std::string advice;
  // What the user should know before it is made, beyond its size on disk (the aggregation's
  // memory); "" when nothing. `campaign init` logs it, `campaign plan` prints it.
  std::string warning;
};

struct TaskKindTraits {
  bool needs_directory = true;  // the worker creates the task directory and task.log
  TaskValidator validate;       // optional
  // The keys of "params"/"overrides" the runner reads; set: any other key in a spec is
  // refused at `campaign init` (it would be dropped). Unset: not checked.
  std::optional<std::vector<std::string>> param_keys;
  // Optional: checks the input files a task will read (they exist: requireCampaignInputs),
  // e.g. their layout, at `campaign init` and before a run starts; throws InputError naming
  // the file.
  TaskValidator check_inputs;
  // Optional: reads every value of those files (NaN, Inf, ...), at `campaign init` only: a
  // value every task would fail on is found before any task runs, and the files cannot change
  // afterwards unnoticed (inputs_at_init). Minutes for inputs of hundreds of GB.
  InputValueCheck check_input_values;
  // The keys of a task's "inputs" that its runner does not read, only checks, and the
  // aggregation reads (a chain's "truth"): `campaign accept-inputs` runs no task again for a
  // change to one of them alone.
  std::vector<std::string> aggregation_inputs;
  // Optional: what one finished task of these params leaves in its directory, from the params
  // and the sizes of their inputs (jobs/disk_estimate.hpp); nullopt when it cannot be known
  // (an input is not there yet). Unset: not estimated.
  // (Initialised here, so that the kinds that estimate nothing leave them out.)
  std::function<std::optional<DiskUseEstimate>(const nlohmann::json& params)> estimate_task_output =
      nullptr;
  // Optional: what the campaign's aggregation writes (D/aggregate); nullopt as above.
  std::function<std::optional<DiskUseEstimate>(const CampaignSpec& spec)>
      estimate_aggregate_output = nullptr;
};

void registerTaskKind(const std::string& name, TaskRunner runner, TaskKindTraits traits = {});
// Adapter for runners that return an exit-code-like int (e.g. ensembles::runChainTask).
void registerTaskKind(const std::string& name,
                      std::function<int(const nlohmann::json&, const std::string&)> runner,
                      TaskKindTraits traits = {});
bool hasTaskKind(const std::string& name);
std::vector<std::string> taskKindNames();
const TaskKindTraits& taskKindTraits(const std::string& name);  // throws InputError
// Runs the kind's runner, mapping exceptions to outcomes. Never throws.
TaskOutcome runTaskKind(const std::string& name, const nlohmann::json& params,
                        const std::string& task_dir);

// noop, sleep, command, load. Idempotent.
void registerBuiltinTaskKinds();

// Tests only: the `command` kind's supervisor waits this long (ms; 0: not at all) after it is
// set up and before it forks the command, so that a test can stop a task in that window.
void setCommandForkDelayForTests(int ms);

// State kept by a worker process across tasks (loaded checkpoints, datasets). Keyed by a
// string the runner chooses (e.g. path + size + mtime); bounded: beyond `capacity` entries the
// least recently used goes, so that a worker that meets many inputs over thousands of tasks
// holds the latest few. Thread-safe; a load runs under the lock (one load at a time).
class WorkerCache {
 public:
  static constexpr size_t kDefaultCapacity = 4;
  explicit WorkerCache(size_t capacity = kDefaultCapacity) : entries_(capacity) {}

  template <typename T>
  std::shared_ptr<T> getOrLoad(const std::string& key,
                               const std::function<std::shared_ptr<T>()>& load) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (const auto* hit = entries_.find(key)) return std::static_pointer_cast<T>(*hit);
    std::shared_ptr<T> v = load();
    entries_.put(key, v);
    return v;
  }
  // Drops every entry whose key starts with `prefix` but `keep` (an older version of a file
  // when the runner meets a newer one).
  void dropOthers(const std::string& prefix, const std::string& keep);
  void clear();
  size_t size() const;

 private:
  mutable std::mutex mutex_;
  LruCache<std::string, std::shared_ptr<void>> entries_;
};
WorkerCache& workerCache();

}  // namespace foldfarm::jobs
