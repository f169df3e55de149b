#pragma once
// The Slurm commands foldfarm uses — sbatch, squeue, scontrol, scancel — run as child
// processes with an explicit argv (core/base/process.hpp) and with every output parsed
// and checked: an unexpected answer is an Error naming the command and what it printed,
// never a silently wrong job id or state.
//
// Thread-safety: a SlurmClient has no mutable state; calls may come from any thread.
#include <chrono>
#include <optional>
#include <string>
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

// sbatch refused a job for a limit that clears as the user's jobs end (QOS or association
// submit limits: MaxSubmitJobs, "job submit limit"): nothing was submitted; worth submitting
// again at a later round, unlike a refusal of the options.
class SbatchLimitError : public Error {
 public:
  explicit SbatchLimitError(const std::string& what) : Error(what) {}
};

// Whether a failed Slurm command looks like slurmctld not answering (a timeout, "Unable to
// contact slurm controller", "Socket timed out", "temporarily unable", ...), as opposed to
// a refusal of what was asked.
bool isTransientSlurmFailure(const ProcessResult& r);

// Cluster limits that shape array submissions (SPEC §5: Slurm's defaults 1001/10000).
struct SlurmLimits {
  int maxArraySize = 1001;   // array indices 0 … maxArraySize-1
  int maxJobCount = 10000;   // jobs (array elements count one each) slurmctld keeps
  int minJobAge = 300;       // seconds a finished job stays visible in squeue
  bool fromCluster = false;  // read from `scontrol show config` (else defaults)
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
// Reads MaxArraySize, MaxJobCount, MinJobAge from `scontrol show config` output (missing
// keys keep their defaults).
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
  // when sbatch fails (its message is the user's to act on: unknown partition, ...), and
  // SlurmQueryError when it did not get an answer (never retried here: slurmctld may have
  // accepted the job; the caller looks for it by its script path).
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
  // scontrol release. Both are idempotent, so a transient failure is retried
  // (retryDelays: 1, 2, 4 s by default) before SlurmQueryError is thrown; a refusal throws
  // Error at once.
  void release(const std::string& jobId) const;
  // scancel; a job that already ended is not an error.
  void cancel(const std::string& jobId) const;
  // Delays between tries of idempotent calls (tests shorten them).
  std::vector<std::chrono::milliseconds> retryDelays{std::chrono::milliseconds(1000),
                                                     std::chrono::milliseconds(2000),
                                                     std::chrono::milliseconds(4000)};
  // `scontrol show config` when slurmctld answers, defaults otherwise.
  SlurmLimits limits() const;

 private:
  ProcessResult run(const std::vector<std::string>& argv,
                    std::chrono::seconds timeout = std::chrono::seconds(60)) const;
  // run() again after each of retryDelays while the failure is transient.
  ProcessResult runRetrying(const std::vector<std::string>& argv) const;
  Programs programs_;
};

}  // namespace foldfarm::slurm
