#pragma once
// The campaign commands that compose every layer below the command line: the task kinds
// (jobs' built-in ones and ensembles' chain), the executors (jobs' local pool and MPI
// pilot, slurm's submitter and watch) and the aggregation after a run. `foldfarm campaign
// init|run|resume|retry` and `foldfarm slurm submit` are these calls with their options
// parsed (apps/foldfarm); the commands that need one layer only are that layer's
// (jobs/campaign_commands.hpp, slurm/slurm_campaign.hpp). Results go to stdout, logs to
// stderr; errors are thrown with the commands' exit codes (core/base/error.hpp).
#include <set>
#include <string>
#include <vector>

#include "jobs/campaign_spec.hpp"
#include "jobs/executor.hpp"
#include "slurm/slurm_campaign.hpp"

namespace foldfarm::campaign {

// Registers every task kind this executable runs: noop, sleep, command, load (jobs) and chain
// (ensembles). Any command that opens a campaign calls it first: opening validates the spec's
// task kind. Idempotent.
void registerTaskKinds();

// Refuses a campaign whose chains could not train as configured with this foldfarm (GPUs
// allocated to chains that would train on the CPU; a GPU, CUDA graphs or bf16 asked for chains
// that get none): InputError naming `origin` (the spec) or the campaign directory `dir`, before
// any task starts (ensembles::refuseUntrainableChainCampaign).
void refuseUntrainable(const jobs::CampaignSpec& spec, const std::string& origin);
void refuseUntrainable(const std::string& dir);

// `--aggregate` on a campaign that is not made of chains: InputError naming it and its kind.
void checkAggregatable(const std::string& dir);

// `campaign init SPEC --dir D`: the spec refused when its chains could not train here, then
// jobs::initCommand (everything checked before D is created).
void initCommand(const std::string& spec_path, const std::string& dir);

// `campaign run|resume D` and `campaign retry D`'s run.
struct RunRequest {
  std::string executor;      // local, mpi or slurm; "": the spec's
  jobs::RunOptions options;  // options.retry: `retry`'s states (jobs::retryStates)
  bool aggregate = false;    // aggregate once every task is done (chain campaigns)
};

// Runs campaign D's pending tasks: through Slurm when the spec or `executor` says slurm, or
// when D was submitted through Slurm before and no executor is named (with that submission's
// recorded options: a `retry --failed` advised by a Slurm message must not run on the login
// node); else here, on the local pool or, under mpirun/srun, as the MPI pilot (every rank
// calls it). A local run first refuses tasks that live Slurm elements hold. Then, with
// `aggregate`, rank 0 aggregates. Throws: InterruptedError (75) saying how to continue, Error
// with kExitCancelled (79) after `campaign cancel`, Error (1) naming the
// number of failed tasks in the campaign and the status and retry commands, Error (79) when asked
// to aggregate and tasks were cancelled.
void runCommand(const std::string& dir, const RunRequest& request);

// `campaign retry D [--failed] [--cancelled] [--task ID …] [--tasks-file F]`: prepared as
// jobs::prepareRetry prepares it (the named tasks on rank 0: a done task's outputs move to
// D/superseded/; they run first), then run as runCommand runs it.
void retryCommand(const std::string& dir, RunRequest request, bool failed, bool cancelled,
                  const std::vector<std::string>& tasks, const std::string& tasks_file = "");

// `foldfarm slurm submit D [options]` (and runCommand's Slurm path).
struct SubmitRequest {
  slurm::SlurmCampaignOptions options;   // options.resources as given, not yet resolved
  std::vector<std::string> setup_files;  // --setup-file (slurm::resolveResources)
  // The long names of the options given on the command line: the others come from the last
  // submission's record (D/slurm/submit-options.json) when there is one.
  std::set<std::string> given;
  bool aggregate = false;  // once every task is done (needs options.wait)
  bool json = false;       // the summary as JSON
  // `campaign run|resume|retry` of a Slurm campaign: no options of its own; without a record,
  // submits with the spec's resources and records nothing (but see record_unrecorded).
  bool retry = false;
  // With `retry` and no record: record the options submitted with (the spec's resources,
  // Slurm's defaults), so that a later `campaign resume D` submits through Slurm again rather
  // than run the tasks here (`campaign run D --executor slurm` of a campaign whose spec says
  // local).
  bool record_unrecorded = false;
};

// Submits D's ready tasks as job arrays and, with options.wait, watches until every task has
// ended (slurm::runCampaignOnSlurm), then prints the summary (a line, or JSON) and, with
// `aggregate` and no failure, aggregates. Throws: InputError (--aggregate without the watch,
// or on a campaign that is not made of chains; an untrainable campaign), InterruptedError
// when the watch is stopped (the jobs keep running), Error (79) after `campaign cancel`,
// Error (1) when tasks failed.
void submitCommand(const std::string& dir, SubmitRequest request);

}  // namespace foldfarm::campaign
