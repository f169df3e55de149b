#pragma once
// Process exit codes of every foldfarm command. Scripts (Slurm batch shells, the campaign
// executors) branch on these, so they are part of the public interface: never renumber.
namespace foldfarm {

inline constexpr int kExitOk = 0;
// A run-time failure that is not the user's input: a bug, an I/O error, a crashed peer.
inline constexpr int kExitFailure = 1;
// Bad input: malformed config or spec, missing/ill-shaped HDF5 data, corrupt checkpoint,
// bad command-line arguments. Nothing was written.
inline constexpr int kExitBadInput = 2;
// A collective did not finish in time or a peer rank was lost; the message names the ranks.
inline constexpr int kExitPeerLost = 3;
// A campaign task found an input that another task of the campaign makes (the models of the
// chain it warm-starts from) missing or damaged: retrying it alone cannot mend that;
// `campaign retry --failed` runs that task again first. Not retried automatically.
// (sysexits EX_NOINPUT)
inline constexpr int kExitNeedLost = 66;
// Stopped on request (SIGUSR1/SIGTERM, Slurm time limit or preemption) after a checkpoint
// was written; rerun the same command (or with --resume) to continue. (sysexits EX_TEMPFAIL)
inline constexpr int kExitInterrupted = 75;
// A campaign task's attempt that is older than the task's newest attempt (a requeued Slurm
// element after a resubmission, an orphaned worker): it ran nothing and wrote nothing.
inline constexpr int kExitSuperseded = 76;
// `campaign run` (resume, retry) ended by `campaign cancel`: its unfinished tasks cancelled,
// none failed (`campaign retry --cancelled` runs them). Not 0: what waits for the campaign to be
// done (an afterok job dependency) must not start.
inline constexpr int kExitCancelled = 79;
// Tests: the test could not run here (no GPU, no Slurm); CTest's SKIP_RETURN_CODE.
inline constexpr int kExitSkipped = 77;

}  // namespace foldfarm
