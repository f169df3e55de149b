#pragma once
// Running a campaign through Slurm job arrays: the submitting process is the campaign's
// only journal writer; array elements only write result files.
//
// One round (reconcile):
//   1. ask squeue about every array job the journal's running tasks name;
//   2. ingest the results on disk (exactly once — jobs::Campaign::ingestResults);
//   3. every task still `running` whose job ended (any terminal state, or forgotten by
//      slurmctld) goes back to pending: the results on disk are the truth, so only tasks
//      without a result are resubmitted;
//   4. plan the pending tasks into arrays (slurm/array_plan.hpp), and for each array:
//      write its manifest and script under D/slurm/sub-NNNN/ (atomically), `sbatch --hold`
//      it, record pending -> running with the external id "<jobid>_<element>" in one
//      transaction, then `scontrol release` it. A job therefore never runs a task the
//      journal does not know it runs. If sbatch fails nothing is recorded (the journal is
//      unchanged) and the round throws Error with sbatch's message.
// Before its first round a writer settles what an earlier submitter left between `sbatch
// --hold` and `scontrol release` (crash, kill -9, a failing scontrol): every D/slurm/sub-N
// with a jobid but no `settled` marker is looked up (one squeue call). A held
// job whose manifest tasks are all recorded as running under it is released (adopted); a
// held job the journal does not (fully) record is scancelled and the tasks recorded under
// it go back to pending; a running job no task names is scancelled (no task runs twice).
// The submission directory then gets its `settled` file (released|cancelled|ended).
// Watching repeats rounds at a modest cadence with backoff (pollInitialS, ×1.5 while
// nothing changes, up to pollMaxS; back to pollInitialS when something changed) until no
// task is pending or running, or a stop signal arrives (the jobs keep running; a later
// `foldfarm slurm submit D` or `status D` picks them up), or a cancel request addressed to
// it (`campaign cancel D`: it cancels the tasks and scancels their jobs, as
// cancelCampaignOnSlurm does, then ends). A round whose squeue fails changes
// nothing and is retried (up to 10 times in a row).
//
// Calling it: `foldfarm slurm submit D` and `foldfarm campaign run D --executor slurm`
// both call runCampaignOnSlurm(dir, options). Thread-safety: one call at a time per
// campaign (Campaign::open takes D/orchestrator.lock).
#include <array>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobs/campaign.hpp"
#include "slurm/sbatch_script.hpp"
#include "slurm/slurm_client.hpp"

namespace foldfarm::slurm {

struct SlurmCampaignOptions {
  // Resources of each array element. resources.foldfarm "foldfarm" (the default) or empty:
  // this executable's absolute path (jobs::selfExecutable()).
  // resources.tasksPerGpu is the number of lanes (tasks an element runs at once) when the
  // spec asks for GPUs; on CPU nodes lanes = tasksPerNode.
  SbatchResources resources;
  bool resourcesFromSpec = true;  // fill gpus/lanes/cpus from the spec's "resources"
  // Worker command of the array elements before "D --task ID …"; empty:
  // {resources.foldfarm, "campaign", "work"}.
  std::vector<std::string> workArgv;
  int tasksPerElement = 0;  // 0: automatic (array_plan.hpp)
  int throttle = 0;         // total concurrent elements (%K); 0: none
  bool wait = true;         // watch until done; false: submit one round and return
  double pollInitialS = 5.0;
  double pollMaxS = 60.0;
  // A task whose jobs ended this many times without a result (since its last `campaign
  // retry`) fails, its reason naming the count, its task.log and the job output; `campaign
  // retry --failed` submits it again. Jobs that ended with the task's own stop (exit 75, a
  // time limit) or failure count against retry.max_interruptions and max_attempts instead.
  int maxSubmissions = 5;
  SlurmClient::Programs programs;
  // `campaign retry`: tasks in these states (failed, cancelled) go back to pending once the
  // submitter holds the journal and Slurm answers, before the first round.
  std::vector<jobs::TaskState> retry;
  // Record these options (submitOptionsPath) once a round has run with them; false for a
  // submission that has none of the user's (a `campaign retry` before any `slurm submit`).
  bool record = true;
};

struct SlurmCampaignSummary {
  jobs::StateCounts counts;  // after the call
  int submissions = 0;       // arrays submitted by this call
  int elementsSubmitted = 0;
  int tasksSubmitted = 0;
  int tasksRequeued = 0;  // jobs ended without a result -> pending again
  int tasksStopped = 0;   // tasks that stopped in their job, state saved (75) -> pending again
  // Tasks whose element stopped (a time limit, a scancel) or whose lease another attempt held
  // before their turn: never started, pending again (counted toward no cap). Not among
  // tasksRequeued, which counts jobs that ended without a result.
  int tasksNotStarted = 0;
  int tasksThrottled = 0;  // ready but not submitted in the last round: no room under throttle
  int resultsIngested = 0;
  int tasksHeld = 0;                // pending behind failed dependencies when the watch ended
  std::vector<std::string> jobIds;  // arrays submitted by this call
  bool interrupted = false;         // stopped watching on a signal
  // Stopped watching on a cancel request (`campaign cancel`, jobs/cancel_request.hpp): the
  // unfinished tasks cancelled, their jobs scancelled.
  bool cancelled = false;
  int tasksCancelled = 0;
  std::vector<std::string> jobsCancelled;
  // Left by an earlier submitter that stopped between sbatch and release (see below).
  int orphansCancelled = 0;  // held jobs the journal never (fully) recorded: scancelled
  int heldReleased = 0;      // held jobs the journal records: released (adopted)
  int tasksRetried = 0;      // moved back to pending by SlurmCampaignOptions::retry
  nlohmann::json toJson() const;
};

// The resources of one array element of campaign `spec`: `given` with what it leaves at its
// defaults filled from the spec's "resources": one GPU per element (gpusPerNode >= 1) when
// the spec asks for GPUs, tasksPerGpu from tasks_per_gpu, cpusPerTask from
// threads_per_task, and the job name "foldfarm-<name>".
SbatchResources arrayElementResources(const jobs::CampaignSpec& spec, SbatchResources given);
// Tasks an element runs side by side: tasksPerGpu on GPU nodes, tasksPerNode on CPU nodes.
int arrayElementLanes(const SbatchResources& r);

// The resources of an MPI pilot of campaign `spec`: `given` with its defaults filled from
// the spec (GPUs per node from resources.gpus, tasksPerGpu from tasks_per_gpu, or on CPU
// nodes tasksPerNode from cpu_slots; cpusPerTask from threads_per_task; the job name).
// Throws InputError naming `origin` for a shape whose ranks would lack a GPU or leave GPUs
// idle: more GPUs per node than resources.gpus, another tasks per GPU, or GPUs for a CPU
// campaign.
SbatchResources pilotResources(const jobs::CampaignSpec& spec, SbatchResources given,
                               const std::string& origin);

// The options of the last submission of campaign D (D/slurm/submit-options.json, written
// atomically by runCampaignOnSlurm after its first round, whose sbatch took them or that had
// nothing to submit; options sbatch refused are not recorded): the element resources as given
// (partition, account, time, output, set-up lines, ...), tasks per element, throttle, poll
// intervals and max submissions. `campaign run`, `resume` and `retry` of a Slurm campaign
// submit with them, so that a retry keeps the user's partition, account and time limit.
// std::nullopt when D was never submitted; InputError naming the file when it is damaged.
std::string submitOptionsPath(const std::string& dir);
std::optional<SlurmCampaignOptions> recordedSubmitOptions(const std::string& dir);

// One recorded option: where the record holds it (`section` "resources" or "" for its top
// level, `key`) and the command-line options of `slurm submit` that give it (none for one
// that no option gives).
struct RecordedOption {
  const char* section;
  const char* key;
  std::array<const char*, 2> options;
};

// Every option the record holds, once: f(option, field), `field(o)` the option's member of a
// SlurmCampaignOptions `o` (const or not). Writing the record, reading it and taking it for
// the options a command line did not give all walk this list.
template <class F>
void forEachRecordedOption(F&& f) {
#define FF_RECORDED(section, key, option1, option2, member) \
  f(                                                        \
      RecordedOption{section, key, {option1, option2}}, [](auto& o) -> auto& { return o.member; })
  FF_RECORDED("resources", "job_name", "job-name", nullptr, resources.jobName);
  FF_RECORDED("resources", "partition", "partition", nullptr, resources.partition);
  FF_RECORDED("resources", "account", "account", nullptr, resources.account);
  FF_RECORDED("resources", "qos", "qos", nullptr, resources.qos);
  FF_RECORDED("resources", "time", "time", nullptr, resources.time);
  FF_RECORDED("resources", "constraint", "constraint", nullptr, resources.constraint);
  FF_RECORDED("resources", "mem", "mem", nullptr, resources.mem);
  // Not an option of `slurm submit` (an array element runs on one node): kept so that a
  // record reads and writes as before.
  FF_RECORDED("resources", "nodes", nullptr, nullptr, resources.nodes);
  FF_RECORDED("resources", "gpus_per_node", "gpus-per-node", nullptr, resources.gpusPerNode);
  FF_RECORDED("resources", "tasks_per_gpu", "tasks-per-gpu", nullptr, resources.tasksPerGpu);
  FF_RECORDED("resources", "tasks_per_node", "tasks-per-node", nullptr, resources.tasksPerNode);
  FF_RECORDED("resources", "cpus_per_task", "cpus-per-task", nullptr, resources.cpusPerTask);
  FF_RECORDED("resources", "output", "output", nullptr, resources.output);
  FF_RECORDED("resources", "error", "error", nullptr, resources.error);
  FF_RECORDED("resources", "chdir", "chdir", nullptr, resources.workDir);
  FF_RECORDED("resources", "setup", "setup", "setup-file", resources.setupLines);
  FF_RECORDED("resources", "signal_grace_s", "signal-grace", nullptr, resources.signalGraceSeconds);
  FF_RECORDED("resources", "foldfarm", "foldfarm", nullptr, resources.foldfarm);
  FF_RECORDED("", "resources_from_spec", nullptr, nullptr, resourcesFromSpec);
  FF_RECORDED("", "tasks_per_element", "tasks-per-element", nullptr, tasksPerElement);
  FF_RECORDED("", "throttle", "throttle", nullptr, throttle);
  FF_RECORDED("", "poll_s", "poll", nullptr, pollInitialS);
  FF_RECORDED("", "poll_max_s", "poll-max", nullptr, pollMaxS);
  FF_RECORDED("", "max_submissions", "max-submissions", nullptr, maxSubmissions);
#undef FF_RECORDED
}

// `given` with `recorded`'s value for every recorded option whose command-line options
// (RecordedOption::options, long names) are not in `given_names`: a bare `slurm submit D`, or
// `campaign retry D`, submits with the last submission's partition, account and time limit.
SlurmCampaignOptions withRecordedOptions(const SlurmCampaignOptions& given,
                                         const SlurmCampaignOptions& recorded,
                                         const std::set<std::string>& given_names);

// Resources as given on a command line made ready to render: the lines of each of
// `setup_files` appended to setupLines (verbatim; InputError naming an unreadable file), and
// foldfarm "" or "foldfarm" made this executable's absolute path (the compute nodes run the
// foldfarm that submitted).
SbatchResources resolveResources(SbatchResources given,
                                 const std::vector<std::string>& setup_files);

// Runs (or continues) campaign D on Slurm. Throws InputError for bad options or a
// campaign directory that is not one; Error when sbatch fails (nothing recorded) or tasks
// exhausted maxSubmissions.
SlurmCampaignSummary runCampaignOnSlurm(const std::string& dir,
                                        const SlurmCampaignOptions& options);

// One reconcile round without submitting (steps 1–3) when D's lock is free; a read-only
// view when another process is watching D. Returns the status as JSON:
// {"counts": {...}, "jobs": [{"id": "123_4", "state": "RUNNING", "tasks": n}, ...],
//  "requeued": n, "ingested": n, "orphans_cancelled": n, "held_released": n,
//  "watched_elsewhere": bool}. The writer path settles earlier submissions first (above).
nlohmann::json slurmCampaignStatus(const std::string& dir,
                                   const SlurmClient::Programs& programs = {});

// `campaign cancel D` for a campaign that has Slurm jobs: every unfinished task becomes
// `cancelled` in the journal (one transaction), then every array job that runs or may run
// its tasks — the jobs the journal's running tasks name and the unsettled submissions under
// D/slurm/ — is scancelled (a transient failure is retried). Returns the job ids cancelled;
// throws Error naming the jobs it could not cancel (the journal already says cancelled: a
// result they still write is never ingested). Refused while another process watches D.
struct SlurmCancelSummary {
  int tasksCancelled = 0;
  std::vector<std::string> jobsCancelled;
};
SlurmCancelSummary cancelCampaignOnSlurm(const std::string& dir,
                                         const SlurmClient::Programs& programs = {});
// The same in a campaign this process holds as the journal's writer (`campaign cancel` once it
// holds it; the Slurm watch asked by a cancel request, jobs/cancel_request.hpp).
SlurmCancelSummary cancelOnSlurm(jobs::Campaign& c, const SlurmClient::Programs& programs = {});
// Whether D has ever submitted to Slurm (D/slurm/ holds a submission).
bool campaignUsedSlurm(const std::string& dir);

// Before a run that is not Slurm's takes campaign D over (the local pool; the pilot's rank 0,
// for every rank): tasks sitting in Slurm array elements still queued or running are refused,
// Error (exit 1) naming them and what to do (taken over, the elements, once started, would find
// a newer attempt and end with exit 76). Without an answering Slurm the tasks are taken over,
// said so in a warning. Nothing is said while a run or a `slurm submit` watch holds the
// campaign: opening it as a writer refuses then, naming the holder. Reads the journal's
// running rows only.
void refuseTasksInLiveSlurmJobs(const std::string& dir, const SlurmClient::Programs& programs = {});

// The array job id in an external id "123_4" (or "123"); empty when it is not a Slurm id.
std::string arrayJobIdOf(const std::string& externalId);

}  // namespace foldfarm::slurm
