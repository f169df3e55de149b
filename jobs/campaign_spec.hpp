#pragma once
// The campaign spec: what to run (a task kind and its parameters, R replicas × M members),
// with which inputs, on which resources, under which retry policy. A spec is validated as
// a whole before anything runs: an unknown key, a missing input file or an impossible
// resource request is one InputError naming the key or file and what to do.
//
// JSON form (keys not listed here are errors):
//   {
//     "name": "zjets-bootstrap",          // optional, default "campaign"
//     "task": "chain",                    // task kind: chain | noop | sleep | command | …
//     "replicas": 8, "members": 2,        // R × M tasks, ids r0000m0 … (replica-major)
//     "seed": 1234,                       // campaign seed (seeds derive from it)
//     "inputs": {"mc": "mc.h5", "data": "data.h5", "truth": "truth.h5",
//                "foundation": "pet.ckpt"},  // every listed path (file or directory) must
//                                            // exist; chain needs mc and data (without
//                                            // foundation, chains train from scratch)
//     "chain": {"iterations": 4, "config": { … }, "keep_models": false},
//                                         // the chain configuration (its keys beside
//                                         // iterations, or "config"); keep_models: every
//                                         // nominal chain keeps its per-step models, so
//                                         // that warm-started variations can be added later
//     "params": { … },                    // kind parameters (sleep: seconds; command: argv)
//     "overrides": {"r0003m0": { … }},    // per-task parameters merged over "params"
//     "resources": {"gpus": 0, "tasks_per_gpu": 1, "cpu_slots": 2, "threads_per_task": 1},
//     "executor": "local",                // local | mpi | slurm
//     "retry": {"max_attempts": 3, "backoff_s": 0.0},
//     "time_limit_s": 0,                  // per task; 0 = none
//     "inputs_at_init": {"/abs/mc.h5": {"size": …, "mtime_ns": …}, …},
//                                         // written by `campaign init` into the frozen spec
//                                         // (jobs/input_record.hpp); dropped from a new one
//     "aggregate": {"shift_noise": "keep", "event_weights": "all", "plots": true},
//                                         // chain campaigns: how `campaign aggregate` (and
//                                         // --aggregate) aggregates them unless its options
//                                         // say otherwise (ensembles/aggregate.hpp); optional
//     "variations": {                     // systematic variations (below); optional
//       "det_up":   {"type": "detector", "source": "det", "direction": "up",
//                    "inputs": {"mc": "mc_det_up.h5"}},
//       "det_down": {"type": "detector", "source": "det", "direction": "down",
//                    "inputs": {"mc": "mc_det_down.h5"}},
//       "alt":      {"type": "modelling", "inputs": {"mc": "mc_alt.h5"}},
//       "mcstat":   {"type": "mc_bootstrap", "replicas": 8},
//       "closure":  {"type": "non_closure", "inputs": {"data": "mc_alt.h5"}}
//     }
//   }
// A variation is a second set of tasks that replaces some inputs (or params) of the nominal
// ones; the aggregation turns their differences into uncertainty sources (ensembles/aggregate).
// Keys of a variation:
//   type        detector     same generated events, reconstructed differently (inputs.mc)
//               modelling    another generator's simulation as the prior (inputs.mc)
//               mc_bootstrap Poisson(1) weights on the simulation per replica, data nominal
//               non_closure  unfold another simulation's reco (inputs.data) with the nominal
//                            simulation and compare with its own truth
//               (chain campaigns need a type; other kinds may omit it)
//   source      the uncertainty source it belongs to (default: its name)
//   direction   "up" | "down" for a pair of one source, "" (default) for a one-sided one
//   symmetrise  "half_difference" (default: (up - down) / 2) | "max" (larger of |up|, |down|)
//   replicas, members   its own counts (default 1 replica, the nominal's members)
//   inputs      paths replacing the nominal's; params: merged over the nominal's "params"
//   warm_start  true (default; false for mc_bootstrap): task (r, m) starts from the nominal
//               task (r, m) when there is one (a chain: each step from the nominal chain's
//               model of the same step), so it runs only after that task is done: the
//               campaign is a task graph. An mc_bootstrap replica r started so would inherit
//               the nominal replica r's data-bootstrap fluctuation.
// The warm reference (chain campaigns): `campaign init`, `plan` and `extend` add the variation
//   "warm_reference": {"type": "reference", "replicas": R, "members": M}
// when the spec has warm-started detector or modelling variations, R × M covering each of
// their tasks (r, m) within the nominal's counts: the nominal's inputs, each step started
// from the nominal chain's model as theirs are, so that each of their shifts is measured
// from chains trained as they were and holds the change of inputs alone (a variation
// warm-started from the nominal's final models trains further than the nominal did, and its
// shift from the nominal would hold that too). It is written into the frozen spec; a spec may
// name it itself (only so: type "reference" and that name go together; no inputs, no params,
// warm-started).
// Task ids: nominal r0007m1; a variation's <name>.r0000m0. Indices: the nominal tasks first
// (replica-major), then each variation's in the order of their names.
// Relative input paths are resolved against the spec file's directory; the frozen copy in
// the campaign directory holds absolute paths.
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldfarm::jobs {

// Upper bounds of the spec's counts and durations (InputError naming the key beyond them).
// They are far above any real node or policy and exist so that a typo (an extra zero,
// 2^32 + 1 read as 1, seconds for minutes) is refused instead of starting a million
// workers or overflowing a deadline.
inline constexpr int kMaxGpusPerNode = 64;
inline constexpr int kMaxTasksPerGpu = 64;
inline constexpr int kMaxCpuSlots = 1024;  // worker processes on one node
// Task slots of one node, CPU or GPU (gpus · tasks_per_gpu at most): the bound of --slots.
inline constexpr int kMaxSlotsPerNode = kMaxGpusPerNode * kMaxTasksPerGpu;
static_assert(kMaxSlotsPerNode >= kMaxCpuSlots);
inline constexpr int kMaxThreadsPerTask = 1024;
inline constexpr int kMaxAttempts = 1000;
inline constexpr int kMaxInterruptions = 100000;
// The largest attempt number `campaign work` takes (--attempt, ID@N): nine digits, far above
// what retries and interruptions reach, and far below where int arithmetic on it overflows.
inline constexpr int kMaxAttemptNumber = 999999999;
inline constexpr double kMaxBackoffSeconds = 86400;  // one day
inline constexpr double kMaxTimeLimitSeconds = 365 * 86400.0;

struct CampaignResources {
  int gpus = 0;              // GPUs used on a node; 0 = CPU slots only
  int tasks_per_gpu = 1;     // tasks sharing one GPU
  int cpu_slots = 0;         // slots when gpus == 0 (0: one per core)
  int threads_per_task = 1;  // OMP/OpenBLAS/intra-op threads of each task
};

struct RetryPolicy {
  int max_attempts = 3;  // failed attempts before the task ends `failed`
  double backoff_s = 0;  // delay before retry k: backoff_s · 2^(k-1)
  // Times a task may stop itself with exit 75 (state saved: a time limit, preemption, a
  // stop request) before it ends `failed`: a task that always exits 75 would otherwise be
  // dispatched forever. Interruptions that the orchestrator causes (its own stop, a lost
  // node) do not count.
  int max_interruptions = 20;
  // Seconds a new attempt waits for an earlier attempt's processes to leave the task
  // directory (its lease, jobs/task_lease.hpp) before it fences them (SIGTERM, SIGKILL).
  double lease_wait_s = 60;
};

// A systematic variation of the nominal tasks (see the spec format above).
struct Variation {
  std::string name;
  std::string type;  // detector | modelling | mc_bootstrap | non_closure | "" (non-chain kinds)
  std::string source;
  std::string direction;                       // up | down | ""
  std::string symmetrise = "half_difference";  // half_difference | max
  int replicas = 1;
  int members = 1;
  std::map<std::string, std::string> inputs;  // absolute paths replacing the nominal's
  nlohmann::json params = nlohmann::json::object();
  bool warm_start = true;
  int first_index = 0;  // index of its task r0000m0
  int numTasks() const { return replicas * members; }
  nlohmann::json describe() const;  // {name, type, source, direction, symmetrise}
};

inline constexpr const char* kVariationTypes[] = {"detector", "modelling", "mc_bootstrap",
                                                  "non_closure"};

// One task of the campaign, derived from the spec alone (so a compute node can rebuild it).
struct TaskDef {
  int index = 0;
  std::string id;  // "r0007m1", or "<variation>.r0000m0"
  int replica = 0;
  int member = 0;
  std::string variation;   // "" for a nominal task
  std::vector<int> needs;  // tasks that must be done before this one runs
  std::string kind;
  nlohmann::json params;  // what the task kind's runner receives (see taskDef())
  // The records of the task's input paths at `campaign init` (jobs/input_record.hpp), which
  // the attempt checks before it runs; empty for a campaign made before records.
  nlohmann::json inputs_at_init = nlohmann::json::object();
};

struct CampaignSpec {
  std::string name = "campaign";
  std::string kind;
  int replicas = 1;
  int members = 1;
  uint64_t seed = 0;
  std::map<std::string, std::string> inputs;
  nlohmann::json chain = nlohmann::json::object();
  nlohmann::json params = nlohmann::json::object();
  std::map<std::string, nlohmann::json> overrides;
  CampaignResources resources;
  std::string executor = "local";
  RetryPolicy retry;
  double time_limit_s = 0;
  std::vector<Variation> variations;  // in the order of their names
  // "aggregate" as given (validated: shift_noise keep|subtract, event_weights
  // all|central|none, plots a boolean); empty when the spec has none.
  nlohmann::json aggregate = nlohmann::json::object();
  // The frozen spec's "inputs_at_init": {absolute path: record} of every input path (the
  // nominal's and each variation's) as `campaign init` found them (jobs/input_record.hpp).
  // Written by Campaign::init only; a new spec's (one copied from a campaign) is dropped.
  nlohmann::json inputs_at_init = nlohmann::json::object();

  int numNominalTasks() const { return replicas * members; }
  int numTasks() const;
  // The variation owning task `index` (nullptr for a nominal task).
  const Variation* variationOf(int index) const;
  // Concurrent task slots on one node: gpus · tasks_per_gpu, or cpu_slots (>= 1).
  int slotsPerNode() const;
  // Task `index` (0 <= index < numTasks()). Its params are the spec's "params" with the
  // task's "overrides" merged over them, plus:
  //   task_id, replica, member, seed (campaign seed), threads (threads_per_task),
  //   inputs {name: absolute path}, and for the chain kind "chain" (the chain config).
  // A variation's task also gets the variation's params and inputs merged over those,
  //   "variation" (Variation::describe()) and, when it warm-starts, "warm_from_task" (the
  //   nominal task id it starts from, also its one entry of `needs`). A nominal task that a
  //   variation warm-starts from (every one, with chain.keep_models) gets "keep_models": true
  //   (it keeps its per-step models).
  TaskDef taskDef(int index) const;
  // The same without params (index, id, replica, member, variation, needs, kind): cheap.
  TaskDef taskPosition(int index) const;
  // "r0000m0 to r0007m1, det_up.r0000m0 to det_up.r0000m1": the ids, for messages.
  std::string idRangeText() const;
  // Index of a task id, or -1 when the campaign has no such task.
  int indexOf(const std::string& task_id) const;
  nlohmann::json toJson() const;
};

inline constexpr const char* kWarmReference = "warm_reference";

// The spec's keys of how tasks are run, not of what they compute (`extend --spec` may change
// them alone; no result changes with them).
inline constexpr const char* kRunSettingKeys[] = {"time_limit_s", "retry"};

// Whether warm-started variation `v` has tasks beyond the nominal's replicas or members of `s`
// (they have no nominal task to start from: they start cold, and their shift has no
// reference partner).
bool startsTasksCold(const CampaignSpec& s, const Variation& v);

// `s` with the warm reference added, or its counts raised, to cover the tasks of its
// warm-started detector and modelling variations (above); `s` itself when it already does
// (or is not a chain spec with such variations). `*added`: whether it changed.
CampaignSpec withWarmReference(const CampaignSpec& s, bool* added = nullptr);

// A spec the user gives (`campaign init`, `extend --spec`; not a frozen one, which may predate
// these checks) with variation keys that nothing reads or that mean another variation: in a
// chain campaign, 'symmetrise' = max on a one-sided variation (it applies to an up/down
// pair), a variation's inputs.truth (every result is compared with the spec's truth), and
// inputs.data on a detector or modelling variation (it unfolds the nominal's data with
// another simulation). InputError naming `origin` and the key.
void refuseVariationKeysNotRead(const CampaignSpec& s, const std::string& origin);

std::string taskIdFor(int replica, int member);
std::string taskIdFor(const std::string& variation, int replica, int member);

// Parses and validates. `origin` names the spec in messages; relative input paths resolve
// against `base_dir`. Throws InputError (one line: key or file, and what to do). With
// `require_inputs` every input file must exist (a new spec); a campaign's frozen spec is read
// without (loadFrozenSpec: status, report and cancel work after inputs moved), and the
// commands that start tasks call requireCampaignInputs.
CampaignSpec parseCampaignSpec(const nlohmann::json& j, const std::string& origin,
                               const std::string& base_dir, bool require_inputs = true);
// InputError naming the first input file (the nominal's, then each variation's) that does
// not exist, then the first set of inputs the task kind cannot use, then (a campaign's frozen
// spec) the first input changed since `campaign init`: requireCampaignInputFiles,
// checkCampaignInputsForKind and requireCampaignInputsAsRecorded. (The kind's check first:
// a corrupt checkpoint is named as such rather than as changed.)
void requireCampaignInputs(const CampaignSpec& spec, const std::string& origin);
// The first part: every input file exists (a stat each).
void requireCampaignInputFiles(const CampaignSpec& spec, const std::string& origin);
// The second: the kind's check_inputs over each set of inputs (the common one, each
// variation's); a chain opens its files and checks their levels. A pilot runs it on one rank.
void checkCampaignInputsForKind(const CampaignSpec& spec, const std::string& origin);
// At `campaign init` (and `campaign accept-inputs`) only: the kind's check_input_values over
// each set of inputs, each file read once (a chain's simulation, data and truth: every value a
// task or the aggregation will read), but those in `unchanged`. InputError as
// checkCampaignInputsForKind's.
void checkCampaignInputValues(const CampaignSpec& spec, const std::string& origin,
                              const std::set<std::string>& unchanged = {});
// The third: every input as `inputs_at_init` recorded it (jobs/input_record.hpp; nothing to
// check for a new spec or a campaign made before records). A stat each.
void requireCampaignInputsAsRecorded(const CampaignSpec& spec, const std::string& origin);
// Reads the file and parses it. Throws InputError.
// `require_inputs` as parseCampaignSpec's (false: `campaign plan`, which starts no task).
CampaignSpec loadCampaignSpec(const std::string& path, bool require_inputs = true);
// Checks that this node can host the spec's local slots (GPUs present, cores for the
// threads). Throws InputError. Called for the local executor before anything runs.
void checkResourcesOnThisNode(const CampaignSpec& spec, const std::string& origin);

// GPUs visible on this node: CUDA_VISIBLE_DEVICES when set, else /dev/nvidiaN devices.
int gpusOnThisNode();

// A place in a JSON value: the object keys that lead to it (none: the value as a whole).
using JsonKeys = std::vector<std::string>;
// The places where two JSON values (two specs) differ, at most `max`, an object's keys in
// order; a value that is not an object on either side differs as a whole. Empty when equal.
std::vector<JsonKeys> jsonDifferences(const nlohmann::json& a, const nlohmann::json& b,
                                      size_t max = 1);
// The value at `keys`; nullptr when absent.
const nlohmann::json* jsonAt(const nlohmann::json& j, const JsonKeys& keys);
// `keys` for a message, after `prefix`: variations.det_up.replicas; a key that holds a dot,
// a path, in brackets: inputs_at_init["/data/mc.h5"].mtime_ns. "(the whole value)" for none.
std::string jsonKeysText(const JsonKeys& keys, const std::string& prefix = "");
// A value for a message: its JSON cut short, or "absent".
std::string shortJsonText(const nlohmann::json* value);

}  // namespace foldfarm::jobs
