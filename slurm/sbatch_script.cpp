#include "slurm/sbatch_script.hpp"

#include <algorithm>
#include <sstream>

#include "core/base/error.hpp"
#include "core/base/text.hpp"
#include "jobs/slots.hpp"
#include "slurm/sbatch_values.hpp"
#include "slurm/shell_quote.hpp"

namespace foldfarm::slurm {
namespace {

void requireRange(const char* option, long long v, long long lo, long long hi) {
  if (v < lo || v > hi) {
    throw InputError(std::string("--") + option + ": " + std::to_string(v) + " is out of range [" +
                     std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
}

// #SBATCH lines common to every kind; `kind` goes into the header comment.
void renderHeader(std::ostringstream& s, const SbatchResources& r, const std::string& kind) {
  s << "#!/bin/bash\n";
  s << "#SBATCH --job-name=" << sbatchQuote("--job-name", r.jobName) << "\n";
  if (!r.partition.empty())
    s << "#SBATCH --partition=" << validateSlurmName("partition", r.partition, true) << "\n";
  if (!r.account.empty())
    s << "#SBATCH --account=" << validateSlurmName("account", r.account, false) << "\n";
  if (!r.qos.empty()) s << "#SBATCH --qos=" << validateSlurmName("qos", r.qos, false) << "\n";
  if (!r.time.empty()) s << "#SBATCH --time=" << validateTimeLimit(r.time) << "\n";
  if (!r.constraint.empty())
    s << "#SBATCH --constraint=" << sbatchQuote("--constraint", validateConstraint(r.constraint))
      << "\n";
  if (!r.mem.empty()) s << "#SBATCH --mem=" << validateMemory(r.mem) << "\n";
  if (!r.output.empty())
    s << "#SBATCH --output=" << validateOutputPattern("output", r.output) << "\n";
  if (!r.error.empty()) s << "#SBATCH --error=" << validateOutputPattern("error", r.error) << "\n";
  if (!r.workDir.empty()) s << "#SBATCH --chdir=" << sbatchQuote("--chdir", r.workDir) << "\n";
  if (r.signalGraceSeconds > 0) s << "#SBATCH --signal=B:USR1@" << r.signalGraceSeconds << "\n";
  // A requeued job writes the same --output: appended, the first run's lines stay. Slurm may
  // requeue a job without --requeue too (a node failure, `scontrol requeue`): only array
  // elements, --no-requeue, never run twice.
  if (r.requeue) s << "#SBATCH --requeue\n";
  if (r.requeue || kind != "array") s << "#SBATCH --open-mode=append\n";
}

// The batch shell's supervision: traps first (a signal may come at any time), workers in
// the background, `wait` interrupted by a trapped signal is resumed until the worker ends.
// `through_srun`: the worker is srun, which takes a TERM as "kill every rank" (SIGKILL, no
// save): a TERM is passed on to it as USR1, which srun forwards to the ranks as it is and
// foldfarm takes as the same stop (before: `scancel -b`'s TERM reached the ranks as SIGKILL).
// Arrays ${a[@]+"${a[@]}"}: bash up to 4.3 takes an empty "${a[@]}" for unbound under set -u.
void renderSupervisor(std::ostringstream& s, bool through_srun) {
  s << R"SH(
# Supervision: forward USR1/TERM (time limit, preemption, scancel) to the workers, which
# save their state and exit 75; wait for them in a loop so the trap runs immediately.
ff_pids=()
ff_stop=""
ff_send=""
ff_time_limit=""
ff_unstarted=""
ff_forward() {
  ff_stop=$1
  ff_send=$2
  local p
  for p in ${ff_pids[@]+"${ff_pids[@]}"}; do kill -s "$2" "$p" 2>/dev/null || true; done
}
trap 'ff_time_limit=1; ff_forward USR1 USR1' USR1
)SH";
  s << "trap 'ff_forward TERM " << (through_srun ? "USR1" : "TERM") << "' TERM\n";
  s << R"SH(ff_start() {
  # Stopped before the workers exist: they are not started (a signal reaching them before
  # their handlers are set would end them with nothing saved); the job ends 75, stopped.
  if [ -n "$ff_stop" ]; then ff_unstarted=1; return 0; fi
  "$@" &
  ff_pids+=("$!")
  if [ -n "$ff_stop" ]; then kill -s "$ff_send" "$!" 2>/dev/null || true; fi
}
ff_wait_all() {
  local p s worst=0
  if [ -n "$ff_unstarted" ]; then worst=75; fi
  for p in ${ff_pids[@]+"${ff_pids[@]}"}; do
    while :; do
      wait "$p"; s=$?
      if [ "$s" -gt 128 ] && kill -0 "$p" 2>/dev/null; then continue; fi
      break
    done
    if [ "$s" -ne 0 ]; then
      if [ "$s" -eq 75 ]; then [ "$worst" -eq 0 ] && worst=75
      else [ "$worst" -eq 0 ] || [ "$worst" -eq 75 ] && worst=$s
      fi
    fi
  done
  return "$worst"
}
)SH";
}

void renderSetup(std::ostringstream& s, const SbatchResources& r) {
  if (r.setupLines.empty()) return;
  s << "\n# Set-up (the user's own lines, copied verbatim)\n";
  for (const auto& line : r.setupLines) {
    if (line.find('\0') != std::string::npos)
      throw InputError("--setup: a line contains a NUL byte");
    s << line << "\n";
  }
}

// Shell lines (each after `indent`) that give this process's GPUs the numbers the MPS server
// gives them, 0..n-1 for the n it was started with: a client keeping Slurm's "2" finds no
// GPU where devices are not constrained.
std::string mpsGpuNumbers(const std::string& indent) {
  return indent + "if [ -n \"${CUDA_VISIBLE_DEVICES:-}\" ]; then\n" + indent +
         "  CUDA_VISIBLE_DEVICES=$(seq -s, 0 $(($(echo \"$CUDA_VISIBLE_DEVICES\" | tr ',' '\\n' | "
         "grep -c .) - 1)))\n" +
         indent + "  export CUDA_VISIBLE_DEVICES\n" + indent + "fi\n";
}

// CUDA MPS for tasks sharing a GPU: their kernels then run side by side instead of the
// contexts taking turns. Started on the batch host when nvidia-cuda-mps-control exists and
// the GPU's compute mode lets it start; otherwise the tasks still share the GPU by
// time-slicing, and the log says so. Stopped when the job's workers have ended.
void renderMps(std::ostringstream& s) {
  s << R"SH(
# CUDA MPS: several tasks per GPU run their kernels concurrently.
ff_mps=0
if command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
  ff_mps_dir="${TMPDIR:-/tmp}/foldfarm-mps-${SLURM_JOB_ID:-$$}"
  export CUDA_MPS_PIPE_DIRECTORY="$ff_mps_dir/pipe" CUDA_MPS_LOG_DIRECTORY="$ff_mps_dir/log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    ff_mps=1
)SH" << mpsGpuNumbers("    ")
    << R"SH(    echo "foldfarm: CUDA MPS started on $(hostname -s)" >&2
  else
    echo "foldfarm: CUDA MPS did not start on $(hostname -s) (its log: $CUDA_MPS_LOG_DIRECTORY); tasks sharing a GPU time-slice" >&2
  fi
else
  echo "foldfarm: no nvidia-cuda-mps-control on $(hostname -s); tasks sharing a GPU time-slice" >&2
fi
)SH";
}

// CUDA MPS on every node of a pilot of several nodes, in its step: a daemon started by the
// batch shell serves its own node only, one started by another step ends with that step, and
// Slurm's gres/mps cannot be asked for beside GPUs. Each rank runs this before foldfarm: the
// node's first rank of the step (SLURM_LOCALID 0) starts the daemon, the others wait for its
// word (at most 60 s, before any of them touches CUDA); every rank then names the server's
// GPUs from 0 (the server numbers those it was started with so), or, without a server, goes
// on without MPS. The daemon lives in the step; the script stops it on every node after.
void renderRankMps(std::ostringstream& s) {
  s << R"SH(
# CUDA MPS on every node: started by each node's first rank of the step, before foldfarm.
ff_mps_tag="${SLURM_JOB_ID:-$$}-${SLURM_RESTART_COUNT:-0}"
export ff_mps_tag
ff_mps_rank=$(cat <<'FF_EOF'
# A stop (srun forwards USR1 and TERM) before foldfarm runs: it does not start, and the rank
# ends 75, stopped, as foldfarm would (before: the signal ended this shell, a failure).
stop=""
trap 'stop=USR1' USR1
trap 'stop=TERM' TERM
d="${TMPDIR:-/tmp}/foldfarm-mps-$ff_mps_tag"
export CUDA_MPS_PIPE_DIRECTORY="$d/pipe" CUDA_MPS_LOG_DIRECTORY="$d/log"
if [ "${SLURM_LOCALID:-0}" = 0 ]; then
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if command -v nvidia-cuda-mps-control >/dev/null 2>&1 && nvidia-cuda-mps-control -d; then
    echo started > "$d/state.tmp"
    echo "foldfarm: CUDA MPS started on $(hostname -s)" >&2
  else
    echo none > "$d/state.tmp"
    echo "foldfarm: no CUDA MPS on $(hostname -s) (its log: $CUDA_MPS_LOG_DIRECTORY); tasks sharing a GPU time-slice" >&2
  fi
  mv -f "$d/state.tmp" "$d/state"
else
  for _ in $(seq 600); do { [ -s "$d/state" ] || [ -n "$stop" ]; } && break; sleep 0.1; done
fi
if [ "$(cat "$d/state" 2>/dev/null)" = started ]; then
)SH" << mpsGpuNumbers("  ")
    << R"SH(else
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
fi
trap - USR1 TERM
if [ -n "$stop" ]; then
  echo "foldfarm: rank ${SLURM_PROCID:-?} on $(hostname -s) stopped ($stop) before it started" >&2
  exit 75
fi
exec "$@"
FF_EOF
)
)SH";
}

// After the pilot's step: MPS stopped on every node (its daemon may outlive the step where
// Slurm tracks a step's processes by parentage), its directory removed.
std::string rankMpsStop() {
  return R"SH(srun --ntasks-per-node=1 --nodes="${SLURM_JOB_NUM_NODES:-1}" --kill-on-bad-exit=0 --export=ALL bash -c '
d="${TMPDIR:-/tmp}/foldfarm-mps-$ff_mps_tag"
if [ "$(cat "$d/state" 2>/dev/null)" = started ]; then
  echo quit | CUDA_MPS_PIPE_DIRECTORY="$d/pipe" timeout 60 nvidia-cuda-mps-control || true
fi
rm -rf "$d"' || true
)SH";
}

// `after_wait`: lines run once the workers have ended, before the rest.
// `how_to_continue` (pretrain, pilot; "" for an array element, whose campaign submits what is
// left): what a user does after a stop this script does not requeue, said with the status.
// `state_dir` (pretrain): where a save shows that any other ending can be continued too.
void renderFinish(std::ostringstream& s, const SbatchResources& r,
                  const std::string& after_wait = "", const std::string& how_to_continue = "",
                  const std::string& state_dir = "") {
  s << "\nff_wait_all\nff_rc=$?\n" << after_wait;
  // MPS stopped (bounded: a server that does not answer is left to the job's end) and its
  // directories removed: thousands of elements would otherwise leave theirs in the node's /tmp.
  s << "if [ \"${ff_mps:-0}\" = 1 ]; then\n"
       "  echo quit | timeout 60 nvidia-cuda-mps-control || true\n"
       "  rm -rf \"$ff_mps_dir\"\n"
       "fi\n";
  s << "echo \"foldfarm: job ${SLURM_JOB_ID:-?} on $(hostname -s) finished with status $ff_rc\" "
       ">&2\n";
  if (r.requeue) {
    // Only a stop at the time limit's warning (USR1) requeues the job (before: any stop,
    // so a `scancel`ed job requeued itself and ran again). TERM is a `scancel` (the user's
    // stop), or a preemption, which Slurm requeues itself in REQUEUE mode.
    s << "if [ \"$ff_rc\" -eq 75 ] && [ -n \"$ff_time_limit\" ]; then\n"
         "  echo \"foldfarm: interrupted at the time limit; requeueing job $SLURM_JOB_ID\" >&2\n"
         "  scontrol requeue \"$SLURM_JOB_ID\" && exit 0\n"
         "elif [ \"$ff_rc\" -eq 75 ]; then\n"
         "  echo \"foldfarm: stopped (${ff_stop:-no signal}: scancel or preemption): not "
         "requeued by this script; its state is saved: submit it again to continue\" >&2\n"
         "fi\n";
  } else if (!how_to_continue.empty()) {
    // Quoted whole: the paths and the backquotes are the user's text, not the shell's.
    s << "if [ \"$ff_rc\" -eq 75 ]; then\n"
         "  echo "
      << shellQuote("foldfarm: stopped, its state saved: " + how_to_continue) << " >&2\n";
    if (!state_dir.empty())
      s << "elif [ \"$ff_rc\" -ne 0 ] && [ -d " << shellJoin({state_dir}) << " ]; then\n"
        << "  echo "
        << shellQuote("foldfarm: " + state_dir + " holds the last save: " + how_to_continue)
        << " >&2\n";
    s << "fi\n";
  }
  s << "exit \"$ff_rc\"\n";
}

// srun and its options for the job's one step:
// - --cpus-per-task: Slurm 22.05 to 23.02 do not give srun the job's (SLURM_CPUS_PER_TASK is
//   not read), and each rank was bound to one CPU;
// - --export=ALL: a site's or user's SBATCH_EXPORT=NONE would start the ranks without the
//   set-up's environment;
// - --gpu-bind=none (ranks that pick their own GPU): a site's per-task GPU binding would show
//   each rank one GPU, where the pilot's slots bind by index on the node.
std::vector<std::string> srunCommand(const SbatchResources& r, bool own_gpu_choice) {
  std::vector<std::string> cmd = {"srun"};
  if (r.mpi != "default") cmd.push_back("--mpi=" + r.mpi);
  cmd.insert(cmd.end(), {"--kill-on-bad-exit=1", "--cpus-per-task=" + std::to_string(r.cpusPerTask),
                         "--export=ALL"});
  if (own_gpu_choice && r.gpusPerNode > 0) cmd.push_back("--gpu-bind=none");
  return cmd;
}

int ranksPerNode(const SbatchResources& r) {
  return r.gpusPerNode > 0 ? r.gpusPerNode * r.tasksPerGpu : r.tasksPerNode;
}

}  // namespace

SbatchResources withDefaults(SbatchResources r) {
  if (r.jobName.empty()) r.jobName = "foldfarm";
  for (int* n : {&r.tasksPerGpu, &r.tasksPerNode, &r.cpusPerTask})
    if (*n == 0) *n = 1;
  return r;
}

void validateResources(const SbatchResources& r) {
  requireRange("nodes", r.nodes, 1, 100000);
  requireRange("gpus-per-node", r.gpusPerNode, 0, 64);
  requireRange("tasks-per-gpu", r.tasksPerGpu, 1, 256);
  requireRange("tasks-per-node", r.tasksPerNode, 1, 4096);
  requireRange("cpus-per-task", r.cpusPerTask, 1, 4096);
  requireRange("signal-grace", r.signalGraceSeconds, 0, 65535);
  if (!r.time.empty()) {
    long long limit = timeLimitSeconds(r.time);
    if (limit > 0 && r.signalGraceSeconds >= limit) {
      throw InputError("--signal-grace: " + std::to_string(r.signalGraceSeconds) +
                       " s is not shorter than the time limit " + r.time + " (" +
                       std::to_string(limit) +
                       " s); workers would be told to stop before they start: give a "
                       "shorter --signal-grace or a longer --time");
    }
  }
  if (r.foldfarm.empty()) throw InputError("--foldfarm: empty path of the foldfarm executable");
  if (r.mpi.empty() ||
      r.mpi.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
    throw InputError("--mpi: '" + r.mpi +
                     "' is no MPI plugin name of srun (pmix, pmix_v4, pmi2, cray_shasta, …; "
                     "`srun --mpi=list` lists the site's), or 'default' for the site's default");
}

std::string renderPretrainScript(const SbatchResources& given,
                                 const std::vector<std::string>& args) {
  const SbatchResources r = withDefaults(given);
  validateResources(r);
  std::ostringstream s;
  // One rank per GPU: ranks per node other than the GPUs' count would be ignored (before:
  // silently).
  if (r.gpusPerNode > 0 && r.tasksPerNode != 1 && r.tasksPerNode != r.gpusPerNode)
    throw InputError("--tasks-per-node " + std::to_string(r.tasksPerNode) +
                     " with --gpus-per-node " + std::to_string(r.gpusPerNode) +
                     ": pretraining runs one rank per GPU; drop --tasks-per-node");
  renderHeader(s, r, "pretrain");
  int perNode = r.gpusPerNode > 0 ? r.gpusPerNode : r.tasksPerNode;
  s << "#SBATCH --nodes=" << r.nodes << "\n";
  s << "#SBATCH --ntasks-per-node=" << perNode << "\n";
  s << "#SBATCH --cpus-per-task=" << r.cpusPerTask << "\n";
  if (r.gpusPerNode > 0) s << "#SBATCH --gpus-per-node=" << r.gpusPerNode << "\n";
  s << "# foldfarm pretrain: data-parallel PET, " << r.nodes << " node(s) x " << perNode
    << " rank(s), one rank per " << (r.gpusPerNode > 0 ? "GPU" : "task slot") << ".\n";
  s << "set -u\n";
  renderSupervisor(s, /*through_srun=*/true);
  renderSetup(s, r);
  s << "\nexport OMP_NUM_THREADS=" << r.cpusPerTask << " OPENBLAS_NUM_THREADS=" << r.cpusPerTask
    << "\n";
  std::vector<std::string> cmd = srunCommand(r, /*own_gpu_choice=*/false);
  cmd.insert(cmd.end(), {r.foldfarm, "pretrain"});
  // Threads per rank follow --cpus-per-task unless the arguments set them (pretrain takes
  // --threads once).
  const bool threads_given = std::any_of(args.begin(), args.end(), [](const std::string& a) {
    return a == "--threads" || a.rfind("--threads=", 0) == 0;
  });
  if (!threads_given) cmd.insert(cmd.end(), {"--threads", std::to_string(r.cpusPerTask)});
  cmd.insert(cmd.end(), args.begin(), args.end());
  // A requeued run continues from the state the interrupted one saved: without --resume,
  // pretrain refuses an --out that holds a training state (before: every requeue failed).
  // Without --requeue too: Slurm requeues a job after a node failure or a preemption unless
  // it is told not to (JobRequeue=1, its default).
  const bool resume_given = std::find(args.begin(), args.end(), "--resume") != args.end();
  const bool resume_on_requeue = !resume_given;
  // The --out of the arguments: the script submitted again after a cancel continues too.
  std::string out;
  for (size_t k = 0; k < args.size(); ++k) {
    if (args[k] == "--out" && k + 1 < args.size()) out = args[k + 1];
    if (args[k].rfind("--out=", 0) == 0) out = args[k].substr(6);
  }
  if (resume_on_requeue) {
    s << "\n# Requeued (SLURM_RESTART_COUNT > 0)" << (out.empty() ? "" : ", or submitted again")
      << ": continue from the saved training state.\n"
         "ff_resume=\"\"\n"
         "if [ \"${SLURM_RESTART_COUNT:-0}\" -gt 0 ]; then ff_resume=--resume; fi\n";
    if (!out.empty())
      s << "if [ -d " << shellJoin({out + "/state"}) << " ]; then ff_resume=--resume; fi\n";
  }
  s << "ff_start " << shellJoin(cmd) << (resume_on_requeue ? " $ff_resume" : "") << "\n";
  // (--resume given by hand: submitted again, it continues as well.)
  renderFinish(s, r, "",
               "submit this script again (sbatch): it continues from there" +
                   std::string(out.empty() ? " given --resume" : ""),
               out.empty() ? "" : out + "/state");
  return s.str();
}

std::string renderPilotScript(const SbatchResources& given, const std::string& campaignDir,
                              const std::vector<std::string>& extraArgs) {
  const SbatchResources r = withDefaults(given);
  validateResources(r);
  if (campaignDir.empty()) throw InputError("pilot: empty campaign directory");
  std::ostringstream s;
  renderHeader(s, r, "pilot");
  // Rank 0 dispatches and runs no task; the worker ranks of a node take its task slots in
  // order, rank 0 left out (jobs/mpi_executor.cpp). On one node it is a rank beside the slots
  // (before: a pilot of 4 GPUs x 1 ran 3 tasks, one of cpu_slots 1 none). On several nodes,
  // whose ranks per node are alike, node 0 runs one task fewer.
  const int slots = ranksPerNode(r);
  const bool beside = r.nodes == 1;
  s << "#SBATCH --nodes=" << r.nodes << "\n";
  s << "#SBATCH --ntasks-per-node=" << slots << "\n";
  s << "#SBATCH --cpus-per-task=" << r.cpusPerTask << "\n";
  if (r.gpusPerNode > 0) s << "#SBATCH --gpus-per-node=" << r.gpusPerNode << "\n";
  s << "# foldfarm campaign pilot: one allocation of " << r.nodes << " node(s) x " << slots
    << " task slot(s) running the mpi executor (rank 0 dispatches";
  if (beside) s << ", beside the slots";
  s << ", the others run tasks)";
  if (r.gpusPerNode > 0) s << " (" << r.tasksPerGpu << " task(s) per GPU)";
  s << ".\nset -u\n";
  renderSupervisor(s, /*through_srun=*/true);
  renderSetup(s, r);
  s << "\nexport OMP_NUM_THREADS=" << r.cpusPerTask << " OPENBLAS_NUM_THREADS=" << r.cpusPerTask
    << "\n";
  // One node: its MPS daemon, started by the batch shell, serves every rank. Several: one per
  // node, started in the step by each node's first rank (renderRankMps).
  const bool share = r.gpusPerNode > 0 && r.tasksPerGpu > 1;
  if (share && r.nodes == 1) renderMps(s);
  if (share && r.nodes > 1) renderRankMps(s);
  if (beside) {
    // The allocation asks for the slots' CPUs only (before: (slots + 1) x --cpus-per-task,
    // so slots that fill a node, e.g. 4 GPUs x 4 tasks x -c 4 on 64 cores, pended for ever:
    // Reason=PartitionConfig). Rank 0 mostly sleeps between its rounds (naps of up to 2 ms).
    // The step is always overcommitted: srun then takes every CPU of the job and checks no
    // count (without it, -c implies --exact, and Slurm 22.05 places each task in whole cores,
    // so 5 tasks of -c 3 on 2-thread cores need 10 cores where the job holds 8, and the step
    // waits "busy" until the time limit). Where the job has no CPUs to spare, the ranks are
    // also left unbound: Slurm's binding would shrink every rank's CPUs to fit one more task.
    const int spare = (slots + 1) * r.cpusPerTask;
    s << "\n# Rank 0 beside the " << slots << " task slot(s), on the job's CPUs: bound as the "
      << "others when the job has " << spare << ", else unbound.\n"
      << "ff_ranks=(--ntasks=" << slots + 1 << " --ntasks-per-node=" << slots + 1
      << " --overcommit)\n"
      << "ff_cpus=${SLURM_JOB_CPUS_PER_NODE:-}\n"
      << "ff_cpus=${ff_cpus%%[!0-9]*}\n"
      << "if [ \"${ff_cpus:-0}\" -lt " << spare << " ]; then\n"
      << "  ff_ranks+=(--cpu-bind=none)\n"
      << "  echo \"foldfarm: pilot on $(hostname -s): rank 0 (the dispatcher) shares the task "
         "slots' ${ff_cpus:-?} CPUs (ranks not bound to CPUs)\" >&2\n"
      << "fi\n";
  }
  std::vector<std::string> run = {r.foldfarm, "campaign", "run", campaignDir, "--executor", "mpi"};
  run.insert(run.end(), extraArgs.begin(), extraArgs.end());
  s << "ff_start " << shellJoin(srunCommand(r, /*own_gpu_choice=*/true))
    << (beside ? " \"${ff_ranks[@]}\"" : "")
    << (share && r.nodes > 1 ? " bash -c \"$ff_mps_rank\" foldfarm-rank " : " ") << shellJoin(run)
    << "\n";
  renderFinish(s, r, share && r.nodes > 1 ? rankMpsStop() : "",
               "`foldfarm campaign resume " + shellWord(campaignDir) +
                   "` continues, or this script submitted again");
  return s.str();
}

std::string renderArrayScript(const SbatchResources& given, const ArrayJob& job) {
  const SbatchResources r = withDefaults(given);
  validateResources(r);
  if (job.campaignDir.empty()) throw InputError("array: empty campaign directory");
  if (job.manifestPath.empty()) throw InputError("array: empty manifest path");
  requireRange("elements", job.elements, 1, 4000000);
  requireRange("throttle", job.throttle, 0, 4000000);
  requireRange("lanes", job.lanes, 1, 256);
  if (r.requeue) {
    throw InputError(
        "--requeue: array elements never requeue themselves; the submitter "
        "resubmits an interrupted task as its next attempt (drop --requeue)");
  }
  std::ostringstream s;
  renderHeader(s, r, "array");
  s << "#SBATCH --array=0-" << job.elements - 1;
  if (job.throttle > 0) s << "%" << job.throttle;
  // Neither the element nor Slurm (preemption in REQUEUE mode, node failure) may run it
  // again: a task's next attempt is the submitter's to make, with a new attempt number.
  s << "\n#SBATCH --no-requeue\n";
  s << "#SBATCH --ntasks=1\n";
  if (r.gpusPerNode > 0) {
    s << "#SBATCH --cpus-per-task=" << r.cpusPerTask * job.lanes << "\n";
    s << "#SBATCH --gpus=1\n";
  } else {
    s << "#SBATCH --cpus-per-task=" << r.cpusPerTask * job.lanes << "\n";
  }
  s << "# foldfarm campaign array: element i runs the tasks on line i of the manifest in "
    << job.lanes << " parallel worker(s)";
  if (r.gpusPerNode > 0) s << " sharing one GPU";
  s << ".\n# Workers write results only; the submitting foldfarm ingests them into the journal.\n";
  s << "set -u\n";
  renderSupervisor(s, /*through_srun=*/false);
  renderSetup(s, r);
  s << "\nff_campaign=" << shellQuote(job.campaignDir) << "\n";
  s << "ff_manifest=" << shellQuote(job.manifestPath) << "\n";
  std::vector<std::string> work = job.workArgv;
  if (work.empty()) work = {r.foldfarm, "campaign", "work"};
  s << "ff_work=(" << shellJoin(work) << ")\n";
  s << "ff_lanes=" << job.lanes << "\n";
  // An element asks for one GPU, but a node-exclusive partition gives it the node's: its
  // lanes then take them in turn (before: every lane on the first, the others idle).
  s << "ff_spread=" << (r.gpusPerNode > 0 ? 1 : 0) << "\n";
  if (r.gpusPerNode > 0 && job.lanes > 1) {
    renderMps(s);
    // The lanes share the element's GPU: each caps its allocator at an equal share of its
    // memory, as the local pool's and the pilot's slots do (jobs/slots.cpp), so that one lane
    // cannot starve the others (before: the array's lanes ran uncapped).
    s << "export FOLDFARM_GPU_MEMORY_FRACTION=" << jobs::gpuMemoryFraction(job.lanes) << "\n";
  }
  s << "export OMP_NUM_THREADS=" << r.cpusPerTask << " OPENBLAS_NUM_THREADS=" << r.cpusPerTask
    << "\n";
  s << R"SH(ff_element=${SLURM_ARRAY_TASK_ID:?not running as a Slurm array element}
ff_line=()
mapfile -t -s "$ff_element" -n 1 ff_line < "$ff_manifest" || {
  echo "foldfarm: cannot read manifest $ff_manifest" >&2; exit 2; }
ff_tasks=()
IFS=$'\t' read -r -a ff_tasks <<< "${ff_line[0]:-}"
if [ "${#ff_tasks[@]}" -eq 0 ]; then
  echo "foldfarm: manifest $ff_manifest has no tasks for element $ff_element" >&2; exit 2
fi
echo "foldfarm: element $ff_element (job ${SLURM_JOB_ID:-?}) on $(hostname -s): ${#ff_tasks[@]} task(s)" >&2
ff_gpus=()
if [ "$ff_spread" = 1 ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -r -a ff_gpus <<< "$CUDA_VISIBLE_DEVICES"
fi
if [ "${#ff_gpus[@]}" -gt 1 ]; then
  echo "foldfarm: element $ff_element holds ${#ff_gpus[@]} GPUs (a node-exclusive partition?): its $ff_lanes lane(s) spread over them; a pilot (\`foldfarm slurm render pilot\`) fills every GPU of its nodes" >&2
fi
for ((ff_lane = 0; ff_lane < ff_lanes && ff_lane < ${#ff_tasks[@]}; ff_lane++)); do
  ff_args=()
  for ((ff_i = ff_lane; ff_i < ${#ff_tasks[@]}; ff_i += ff_lanes)); do
    ff_args+=(--task "${ff_tasks[ff_i]}")
  done
  if [ "${#ff_gpus[@]}" -gt 1 ]; then
    ff_start env CUDA_VISIBLE_DEVICES="${ff_gpus[ff_lane % ${#ff_gpus[@]}]}" "${ff_work[@]}" "$ff_campaign" "${ff_args[@]}"
  else
    ff_start "${ff_work[@]}" "$ff_campaign" "${ff_args[@]}"
  fi
done
)SH";
  renderFinish(s, r);
  return s.str();
}

}  // namespace foldfarm::slurm
