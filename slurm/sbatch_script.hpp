#pragma once
// Rendering of the three kinds of batch script foldfarm submits:
//   (a) data-parallel pretraining: `srun --mpi=pmix foldfarm pretrain …`, one rank per GPU
//       over N nodes (or tasksPerNode ranks per node on CPU nodes);
//   (b) a campaign pilot: one allocation running `foldfarm campaign run D --executor mpi`
//       under srun;
//   (c) one job array of a campaign: element i reads line i of a manifest file (its shard
//       of task ids, tab-separated) and runs them in `lanes` parallel worker processes
//       (`foldfarm campaign work D --task ID …`), which never touch the journal.
//
// Safety contract: every value from options is either validated against a strict pattern
// (partition, account, qos, time, constraint, memory, counts) or quoted — sbatch's own
// quoting inside #SBATCH lines, POSIX single quotes in the shell body — so no name, path
// or argument can inject shell or #SBATCH options. The one exception is `setupLines`:
// they are the user's own shell (module loads, environment), copied verbatim by design.
//
// Preemption and time limits: every script asks for `--signal=B:USR1@<grace>`; the batch
// shell traps USR1 and TERM and forwards them to its workers, which run in the background
// while the shell waits (so the trap fires at once). Workers save state and exit 75; the
// script exits 75 when any worker was interrupted (and no worker failed otherwise). With
// `requeue`, #SBATCH --requeue is set and an interrupted script requeues its own job
// (pretraining and pilot jobs only). Array jobs carry --no-requeue and refuse `requeue`:
// their tasks' next attempts are submitted by the campaign's submitter, with new attempt
// numbers, so that a requeued element and a resubmission can never both run a task.
//
// All render functions are pure (no I/O) and throw InputError naming the bad option.
#include <string>
#include <vector>

namespace foldfarm::slurm {

// jobName "" and tasksPerGpu, tasksPerNode, cpusPerTask 0 are "not given": a campaign's
// script takes them from its spec (slurm_campaign.hpp), others "foldfarm" and 1
// (withDefaults). An option given with the value of that default is given (before: taken
// for one not given, and replaced by the spec's).
struct SbatchResources {
  std::string jobName;    // "": foldfarm, or foldfarm-<campaign name>
  std::string partition;  // empty: the cluster's default
  std::string account;
  std::string qos;
  std::string time;  // empty: the partition's default
  std::string constraint;
  std::string mem;  // per node, e.g. "64G"
  int nodes = 1;
  int gpusPerNode = 0;   // 0: CPU nodes
  int tasksPerGpu = 0;   // campaign tasks sharing one GPU
  int tasksPerNode = 0;  // ranks/task slots per node on CPU nodes (gpusPerNode == 0)
  int cpusPerTask = 0;
  std::string output;                   // file pattern (%A, %a, %j, %x ...); empty: Slurm's default
  std::string error;                    // empty: with output
  std::string workDir;                  // --chdir; empty: the submission directory
  std::vector<std::string> setupLines;  // the user's shell, verbatim
  int signalGraceSeconds = 120;         // --signal=B:USR1@grace; 0: none
  bool requeue = false;
  std::string foldfarm = "foldfarm";  // the executable the script runs (quoted)
  std::string mpi = "pmix";           // srun --mpi=<this>; "default": the site's MpiDefault
};

// `r` with what it was not given at its defaults: job name "foldfarm", 1 task per GPU, 1
// rank per node, 1 CPU per task. Every script renders from this.
SbatchResources withDefaults(SbatchResources r);

// (a) Pretraining: pretrainArgs are the arguments after `foldfarm pretrain` (each quoted),
// after `--threads <cpusPerTask>` unless they set --threads themselves.
std::string renderPretrainScript(const SbatchResources& res,
                                 const std::vector<std::string>& pretrainArgs);

// (b) Pilot: `srun --mpi=pmix … foldfarm campaign run <campaignDir> --executor mpi <extra>`,
// with tasksPerGpu·gpusPerNode (or tasksPerNode) ranks per node; on one node rank 0, the
// dispatcher, beside them (on their CPUs, `srun --overcommit`, when the job has none spare).
std::string renderPilotScript(const SbatchResources& res, const std::string& campaignDir,
                              const std::vector<std::string>& extraArgs = {});

struct ArrayJob {
  std::string campaignDir;
  std::string manifestPath;  // line i = tab-separated task ids of element i
  int elements = 0;          // --array=0-(elements-1)
  int throttle = 0;          // %K; 0: none
  int lanes = 1;             // parallel workers per element (tasks sharing its GPU)
  // The worker command before "D --task ID …"; empty: {res.foldfarm, "campaign", "work"}.
  // (Any program speaking `… work D --task ID [--task ID …]` and writing result files.)
  std::vector<std::string> workArgv;
};

// (c) One array of a campaign. Each element requests one GPU (when gpusPerNode > 0) or
// cpusPerTask·lanes CPUs, and runs its shard's tasks in `lanes` background workers.
std::string renderArrayScript(const SbatchResources& res, const ArrayJob& job);

// Checks the resource options (patterns, counts, grace < time limit); throws InputError.
void validateResources(const SbatchResources& res);

}  // namespace foldfarm::slurm
