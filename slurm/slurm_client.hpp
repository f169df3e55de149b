#pragma once
// The Slurm commands foldfarm uses — sbatch, squeue, scontrol, scancel — run as child
// processes with an explicit argv (core/base/process.hpp) and with every output parsed
// and checked: an unexpected answer is an Error naming the command and what it printed,
// never a silently wrong job id or state.
//
// Thread-safety: a SlurmClient has no mutable state; calls may come from any thread.
#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/process.hpp"

namespace foldfarm::slurm {

// slurmctld could not answer (busy, restarting, unreachable, a timed-out call): worth
// retrying later, unlike an sbatch rejection. Nothing the caller asked for is known to have
// happened — an sbatch that timed out may still have been accepted.
class SlurmQueryError : public Error {
 public:
  explicit SlurmQueryError(const std::string& what) : Error(what) {}
};

// sbatch refused a job for a limit that clears as the user's jobs end (the QOS's or the
// association's MaxSubmitJobs or GrpSubmitJobs): nothing was submitted; worth submitting again
// at a later round, unlike a refusal of the options. An array counts as its elements toward
// these limits, so one with more elements than the limit is refused however long one waits:
// runCampaignOnSlurm submits smaller arrays then (slurm_campaign.cpp).
class SbatchLimitError : public Error {
 public:
  SbatchLimitError(const std::string& what, std::string limit, int elements = 0)
      : Error(what), limit(std::move(limit)), elements(elements) {}
  std::string limit;  // the reason sbatch named: QOSMaxSubmitJobPerUserLimit, ...
  int elements = 0;   // elements of the refused array (0: not known)
};

// The submit limit sbatch's stderr names: its first word containing "MaxSubmitJob" or
// "GrpSubmitJobs" (QOSMaxSubmitJobPerUserLimit, AssocMaxSubmitJobLimit, AssocGrpSubmitJobsLimit,
// QOSGrpSubmitJobsLimit, MaxSubmitJobsPerAccount, ...), "" when none. Slurm adds the same
// "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)" to
// every association or QOS refusal, a MaxWall or MaxGRES one too, which no wait clears: that
// text alone is a plain refusal.
std::string submitLimitReason(const std::string& sbatch_stderr);
inline bool isSubmitLimitRefusal(const std::string& sbatch_stderr) {
  return !submitLimitReason(sbatch_stderr).empty();
}
// Whether submit limit `reason` counts this user's jobs only (QOSMaxSubmitJobPerUserLimit,
// AssocMaxSubmitJobLimit), not also other users' (GrpSubmitJobs, MaxSubmitJobsPerAccount).
bool isPerUserSubmitLimit(const std::string& reason);
// sbatch's refusal in one line: its stderr lines joined by "; ", the "sbatch: error: " prefix
// said once (the reason Slurm names, QOSMaxWallDurationPerJobLimit, comes on a line of its own
// before the generic one).
std::string sbatchRefusalMessage(const std::string& sbatch_stderr);

// The variables of `env` (NAME=value entries) that a Slurm command would take for options
// foldfarm did not give, and that are therefore kept from it (SlurmClient runs its commands
// without them). `program` "squeue", "scontrol", "scancel": every SQUEUE_*, SCONTROL_*,
// SCANCEL_* (SQUEUE_PARTITION would hide live jobs, SQUEUE_FORMAT change the output parsed,
// SCANCEL_PARTITION leave a job uncancelled) and SLURM_CLUSTERS (another cluster's queue).
std::vector<std::string> queryEnvSetAside(const std::string& program,
                                          const std::vector<std::string>& env);
// The same for `sbatch` of a script whose text is `script`: each SBATCH_* variable of an
// option that the script's leading #SBATCH lines set (sbatch lets its environment override
// them: `slurm submit --account A` with SBATCH_ACCOUNT=B would run under B; one setting the
// memory or the GPU count sets aside the variables of the others of its kind), and always
// SBATCH_CLUSTERS and SLURM_CLUSTERS (the job would go to another cluster, which the watch
// does not query) and SBATCH_WAIT (sbatch would not answer until the held job ended).
// Variables of options the script leaves alone stay: they are the user's defaults.
std::vector<std::string> sbatchEnvSetAside(const std::string& script,
                                           const std::vector<std::string>& env);
// The long names (no "--") of the options the leading #SBATCH lines of `script` set, short
// ones (-A) given by their long name; sbatch reads no #SBATCH line after the first command.
std::vector<std::string> sbatchScriptOptions(const std::string& script);

// Whether a failed Slurm command looks like slurmctld not answering (a timeout, "Unable to
// contact slurm controller", "Socket timed out", "temporarily unable", ...), as opposed to
// a refusal of what was asked.
bool isTransientSlurmFailure(const ProcessResult& r);

// Cluster limits that shape array submissions (defaults: Slurm's own, slurm.conf's
// MaxArraySize 1001 and MaxJobCount 10000).
struct SlurmLimits {
  int maxArraySize = 1001;   // array indices 0 … maxArraySize-1; 0: job arrays disabled
  int maxArrayTasks = 0;     // SchedulerParameters max_array_tasks (0: unset)
  int maxJobCount = 10000;   // jobs (array elements count one each) slurmctld keeps
  int minJobAge = 300;       // seconds a finished job stays visible in squeue
  std::string clusterName;   // ClusterName ("" unknown)
  bool fromCluster = false;  // read from `scontrol show config` (else defaults)
  // Elements one array may have: MaxArraySize bounds the largest index, max_array_tasks the
  // count, and the planner numbers elements 0 … n-1, so both bound n.
  int maxArrayElements() const {
    return maxArrayTasks > 0 ? std::min(maxArraySize, maxArrayTasks) : maxArraySize;
  }
};

// `sbatch --parsable` answer: "jobid" or "jobid;cluster".
struct SubmittedJob {
  std::string jobId;
  std::string cluster;
};

// One line of squeue -r: a plain job or one array element.
struct QueuedJob {
  std::string arrayJobId;  // %F: the array's job id (the job id itself for plain jobs)
  int arrayTask = -1;      // %K: the element index (-1: not an array element)
  std::string jobId;       // %A: the element's own job id (equals arrayJobId while pending)
  std::string state;       // %T: PENDING, RUNNING, COMPLETED, TIMEOUT, …
  std::string reason;      // %r
  // "<arrayJobId>_<arrayTask>" or the job id: the external id recorded in the journal.
  std::string externalId() const;
  bool finished() const;  // a terminal state (isTerminalJobState)
};

// COMPLETED, FAILED, TIMEOUT, NODE_FAIL, PREEMPTED, OUT_OF_MEMORY, CANCELLED, BOOT_FAIL,
// DEADLINE, SPECIAL_EXIT, REVOKED: the job will not run (again) without a requeue.
bool isTerminalJobState(const std::string& state);

// Parses one `sbatch --parsable` stdout; throws Error naming the output when malformed.
SubmittedJob parseSbatchParsable(const std::string& out);
// Parses `squeue -h -r -o %F|%K|%A|%T|%r` lines; throws Error on a malformed line.
std::vector<QueuedJob> parseSqueue(const std::string& out);
// Reads MaxArraySize (0 kept: arrays disabled), max_array_tasks of SchedulerParameters,
// MaxJobCount, MinJobAge and ClusterName from `scontrol show config` output (missing keys keep
// their defaults).
SlurmLimits parseSlurmConfig(const std::string& out);

class SlurmClient {
 public:
  struct Programs {
    std::string sbatch = "sbatch";
    std::string squeue = "squeue";
    std::string scontrol = "scontrol";
    std::string scancel = "scancel";
  };
  SlurmClient() = default;
  explicit SlurmClient(Programs programs) : programs_(std::move(programs)) {}

  // Whether sbatch/squeue exist here and slurmctld answers `scontrol ping`.
  bool available() const;
  // `sbatch --parsable [args] script`. Throws Error "sbatch rejected <script>: <stderr>"
  // when sbatch fails (its message is the user's to act on: unknown partition, ...),
  // SbatchLimitError for a submit limit (submitLimitReason), and SlurmQueryError when it did
  // not get an answer (never retried here: slurmctld may have accepted the job; the caller
  // looks for it by its script path). A job that sbatch put on another cluster than the local
  // one (its answer names it) is cancelled there and Error thrown: the watch queries the
  // local cluster only.
  SubmittedJob submit(const std::string& scriptPath,
                      const std::vector<std::string>& args = {}) const;
  // `sbatch --test-only script`: "" when sbatch would take it (nothing is submitted), else
  // its reason. Throws SlurmQueryError when sbatch got no answer.
  std::string testOnly(const std::string& scriptPath) const;
  // The elements/jobs of the given job ids still known to slurmctld (finished ones stay
  // visible for MinJobAge). Ids slurmctld has forgotten are simply absent. Throws
  // SlurmQueryError when squeue fails.
  std::vector<QueuedJob> queue(const std::vector<std::string>& jobIds) const;
  // This user's pending jobs and arrays as (array job id, batch script path, reason), from
  // `squeue -u <me> -t PENDING -o %F|%o|%r`. Throws SlurmQueryError when squeue fails.
  struct PendingScript {
    std::string arrayJobId;
    std::string script;
    std::string reason;
  };
  std::vector<PendingScript> pendingScripts() const;
  // Jobs of all users in the queue (for the MaxJobCount budget); -1 when unknown.
  int queuedJobCount() const;
  // This user's jobs in the queue, array elements one each (what MaxSubmitJobs counts); -1
  // when unknown.
  int userQueuedJobCount() const;
  // scontrol release. Both are idempotent, so a transient failure is retried
  // (retryDelays: 1, 2, 4 s by default) before SlurmQueryError is thrown; a refusal throws
  // Error at once.
  void release(const std::string& jobId) const;
  // scancel (`-M cluster` when given); a job that already ended is not an error.
  void cancel(const std::string& jobId, const std::string& cluster = "") const;
  // Delays between tries of idempotent calls (tests shorten them).
  std::vector<std::chrono::milliseconds> retryDelays{std::chrono::milliseconds(1000),
                                                     std::chrono::milliseconds(2000),
                                                     std::chrono::milliseconds(4000)};
  // `scontrol show config` when slurmctld answers, defaults otherwise.
  SlurmLimits limits() const;

 private:
  // Runs Slurm command `program` ("sbatch", "squeue", "scontrol", "scancel": argv[0] may be
  // another path) without the variables set aside for it (queryEnvSetAside; for sbatch
  // sbatchEnvSetAside of `script`, the text of the script it submits).
  ProcessResult run(const std::string& program, const std::vector<std::string>& argv,
                    std::chrono::seconds timeout = std::chrono::seconds(60),
                    const std::string& script = "") const;
  // run() again after each of retryDelays while the failure is transient.
  ProcessResult runRetrying(const std::string& program, const std::vector<std::string>& argv) const;
  // sbatch (`args`) of the script at `scriptPath`, read for sbatchEnvSetAside.
  ProcessResult runSbatch(std::vector<std::string> args, const std::string& scriptPath,
                          std::chrono::seconds timeout) const;
  Programs programs_;
};

}  // namespace foldfarm::slurm
