#include "jobs/campaign_commands.hpp"

#include "core/base/stop_signal.hpp"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/text.hpp"
#include "core/mpi/check.hpp"
#include "core/mpi/mpi_runtime.hpp"
#include "dist/launch.hpp"
#include "jobs/accept_inputs.hpp"
#include "jobs/cancel_request.hpp"
#include "jobs/disk_estimate.hpp"
#include "jobs/extend_campaign.hpp"
#include "jobs/plan.hpp"
#include "jobs/status_report.hpp"
#include "jobs/task_lease.hpp"

namespace foldfarm::jobs {

void initCommand(const std::string& spec_path, const std::string& dir) {
  // Ctrl-C or scancel while the directory is made (seconds for 10^5 tasks) ends with nothing
  // made, not with a half-made "<dir>.init.<pid>": the signal is taken as a request, and the
  // directory is removed again once made.
  installStopHandlers();
  bool reference_added = false;
  CampaignSpec spec = withWarmReference(loadCampaignSpec(spec_path), &reference_added);
  refuseVariationKeysNotRead(spec, spec_path);
  if (spec.executor == "local") checkResourcesOnThisNode(spec, spec_path);
  const auto stopped = [&] {
    return InterruptedError("campaign init " + dir + ": stopped by signal " +
                            std::to_string(stopSignal()) + "; nothing was created");
  };
  if (stopRequested()) throw stopped();
  // Every value the tasks will read, once: a NaN in the simulation is refused here, not by
  // each of thousands of tasks (nor one in the truth by the aggregation, after them all).
  try {
    checkCampaignInputValues(spec, spec_path);
  } catch (const InterruptedError&) {
    throw stopped();
  }
  if (stopRequested()) throw stopped();
  // What its outputs will take, against the room its file system has: said now, not found by
  // the tasks that fail for want of it days later. Estimated before anything is made, and a
  // failed estimate is said and leaves it out.
  std::optional<CampaignDiskEstimate> disk;
  try {
    disk = estimateCampaignDisk(spec);
  } catch (const std::exception& e) {
    logWarn("campaign init {}: the disk its outputs will take is not estimated: {}", dir, e.what());
  }
  if (stopRequested()) throw stopped();
  std::optional<Campaign> made(Campaign::init(spec, dir));
  if (stopRequested()) {
    const std::string path = made->dir();
    made.reset();  // its lock and journal closed first
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    throw stopped();
  }
  const Campaign& c = *made;
  std::string variations;
  if (!spec.variations.empty())
    variations = ", and " + std::to_string(spec.numTasks() - spec.numNominalTasks()) + " in " +
                 std::to_string(spec.variations.size()) + " variation(s)";
  std::printf("created campaign %s in %s: %d task(s) of kind %s (%d replica(s) x %d member(s)%s)\n",
              spec.name.c_str(), c.dir().c_str(), spec.numTasks(), spec.kind.c_str(), spec.replicas,
              spec.members, variations.c_str());
  bool warm_shifts = false;
  for (const Variation& v : spec.variations)
    warm_shifts = warm_shifts || ((v.type == "detector" || v.type == "modelling") && v.warm_start);
  for (const Variation& v : spec.variations) {
    if (v.type != "reference") continue;
    std::printf(
        "  with the warm reference %s (%d task(s)%s): the nominal trained again as the "
        "warm-started variations are, from which their shifts are measured\n",
        v.name.c_str(), v.numTasks(), reference_added ? ", added" : "");
    if (!warm_shifts)
      logWarn(
          "campaign {}: the warm reference {} has no warm-started detector or modelling "
          "variation to serve: its {} task(s) measure nothing",
          c.dir(), v.name, v.numTasks());
  }
  // Tasks of a warm-started variation beyond the nominal's counts have no nominal task to
  // start from: they start cold, and their shifts have no reference partner.
  for (const Variation& v : spec.variations)
    if (startsTasksCold(spec, v))
      logWarn(
          "campaign {}: variation {} has {} x {} tasks, the nominal {} x {}: those beyond the "
          "nominal's start cold, and its shift is measured over the others only",
          c.dir(), v.name, v.replicas, v.members, spec.replicas, spec.members);
  if (disk && disk->total().bytes > 0) {
    std::printf(
        "  outputs: about %s once every task is done and aggregated%s (`foldfarm "
        "campaign plan %s --gpus 1 --task-minutes 1` says what takes it)\n",
        formatBytes(disk->total().bytes).c_str(),
        disk->tasks_unknown > 0
            ? (", without the " + formatCount(disk->tasks_unknown) + " task(s) not estimated")
                  .c_str()
            : "",
        shellWord(c.dir() + "/spec.json").c_str());
    for (const std::string& w : disk->warnings) logWarn("campaign {}: {}", c.dir(), w);
    if (const std::optional<FreeSpace> free = freeSpaceAt(c.dir()))
      if (const std::string shortfall = diskShortfall(*disk, *free, c.dir()); !shortfall.empty())
        logWarn("campaign {}: {}", c.dir(), shortfall);
  }
}

namespace {

int exitCodeFor(const RunSummary& s) {
  if (s.interrupted) return kExitInterrupted;
  if (s.cancelled) return kExitCancelled;
  auto get = [&](TaskState st) {
    auto it = s.counts.find(st);
    return it == s.counts.end() ? 0 : it->second;
  };
  return get(TaskState::kFailed) > 0 ? 1 : 0;
}

void printSummary(const std::string& dir, const RunSummary& s) {
  std::string counts;
  for (const auto& [st, n] : s.counts) {
    if (n > 0) counts += " " + std::string(toString(st)) + " " + std::to_string(n);
  }
  if (s.held > 0) counts += " (held " + std::to_string(s.held) + ")";
  if (s.retried > 0) counts += "; " + std::to_string(s.retried) + " retried";
  std::printf("campaign %s:%s; %lld task(s) done in this run in %.2f s on %d slot(s)%s\n",
              dir.c_str(), counts.c_str(), static_cast<long long>(s.tasks_done), s.elapsed_s,
              s.slots,
              s.interrupted ? " (stopped: resume with `foldfarm campaign resume`)"
              : s.cancelled ? " (cancelled by `foldfarm campaign cancel`)"
                            : "");
  if (!s.halted.empty()) {
    const auto pending = s.counts.find(TaskState::kPending);
    std::printf(
        "campaign %s: an input changed while it ran (%s): no further task was started (%d "
        "pending); restore it (its bytes and times: `cp -p`, `rsync -a`), or accept the new "
        "version (`foldfarm campaign accept-inputs %s`), then `foldfarm campaign retry %s "
        "--failed`\n",
        dir.c_str(), s.halted.c_str(), pending == s.counts.end() ? 0 : pending->second,
        shellWord(dir).c_str(), shellWord(dir).c_str());
  }
  // A run leaves cancelled tasks alone: say how to run them again.
  const auto cancelled = s.counts.find(TaskState::kCancelled);
  if (!s.interrupted && cancelled != s.counts.end() && cancelled->second > 0)
    std::printf(
        "campaign %s: %d cancelled task(s) not run; `foldfarm campaign retry %s "
        "--cancelled` runs them\n",
        dir.c_str(), cancelled->second, shellWord(dir).c_str());
  std::fflush(stdout);
}

}  // namespace

int runCommand(const std::string& dir, const std::string& executor_in, const RunOptions& options) {
  std::string executor = executor_in;
  if (executor.empty()) executor = loadFrozenSpec(dir).executor;
  if (executor == "local") {
    if (options.before_run) options.before_run(dir);
    Campaign c = Campaign::open(dir, Campaign::Access::kWriter);
    RunSummary s = runLocal(c, options);
    c.requireJournalInPlace();
    printSummary(dir, s);
    return exitCodeFor(s);
  }
  if (executor == "mpi") {
    // MPI's lifetime is core/mpi's (finalised at exit, or the job aborted after a lost
    // rank); an error on any rank ends the whole job, but for a worker rank that left the
    // running pilot (rank 0 goes on without it and ends the job when the campaign is done).
    dist::MpiRuntime::ensure();
    int rank = 0;
    FF_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    RunSummary s;
    try {
      s = runMpi(dir, options);
    } catch (const PeerLostError&) {
      throw;  // exit 3 through MPI_Abort at exit (MpiRuntime::markAborted)
    } catch (const PilotRankLeft& e) {
      // Rank 0 goes on without this rank and ends the job with MPI_Abort once the campaign
      // is done (a rank is lost). Waiting here, not in MPI_Finalize: Open MPI's launcher can
      // crash or hang when a job is aborted while a rank waits in MPI_Finalize.
      std::fprintf(stderr, "foldfarm: error: %s\n", e.what());
      std::fflush(stderr);
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "foldfarm: error: [%s] %s\n", dist::processLabel().c_str(), e.what());
      dist::MpiRuntime::abortJob(kExitFailure);
    }
    if (rank != 0) return 0;
    if (!s.journal_gone.empty()) throw Error(s.journal_gone);
    printSummary(dir, s);
    return exitCodeFor(s);
  }
  if (executor == "slurm") {
    throw InputError(dir + ": executor slurm: submit with `foldfarm slurm submit " +
                     shellWord(dir) + "`, or run here with --executor local or mpi");
  }
  throw InputError("--executor " + executor + ": use local or mpi");
}

void statusCommand(const std::string& dir, bool as_json, bool list_tasks) {
  Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
  const nlohmann::json s = statusJson(c);
  if (!as_json) {
    std::printf("%s", statusText(s).c_str());
    if (list_tasks) writeTasksText(stdout, c);
    return;
  }
  std::string text = s.dump(2);  // "{\n  ...\n}"
  if (!list_tasks) {
    std::printf("%s\n", text.c_str());
    return;
  }
  // The tasks as the status object's last key, streamed.
  text.resize(text.size() - 2);
  std::printf("%s,\n  \"tasks\": ", text.c_str());
  writeTasksJson(stdout, c, "  ");
  std::printf("\n}\n");
}

std::vector<TaskState> retryStates(const std::string& dir, bool failed, bool cancelled,
                                   bool tasks) {
  if (!failed && !cancelled && !tasks)
    throw InputError(
        "campaign retry " + dir +
        ": say which tasks: --failed, --cancelled, --task ID, --tasks-file F (one or more of "
        "them)");
  std::vector<TaskState> states;
  if (failed) states.push_back(TaskState::kFailed);
  if (cancelled) states.push_back(TaskState::kCancelled);
  return states;
}

int retryCommand(const std::string& dir, const std::string& executor, const RunOptions& options,
                 bool failed, bool cancelled, const std::vector<std::string>& tasks,
                 const std::string& tasks_file) {
  // Under the MPI pilot rank 0 alone prepares it (before: every rank read the list and moved
  // the named tasks, racing; a rank without the standard input refused the retry). The rank
  // from the launcher, MPI not started yet: a retry rank 0 refuses ends it, and mpirun ends
  // the ranks waiting for it (MPI started, they would wait for it forever).
  const bool orchestrator = (executor.empty() ? loadFrozenSpec(dir).executor : executor) != "mpi" ||
                            dist::detectLaunch().rank == 0;
  return runCommand(dir, executor,
                    prepareRetry(dir, options, failed, cancelled, tasks, tasks_file, orchestrator));
}

namespace {

// The ids of --task and of --tasks-file (read here: under mpirun only rank 0 has the standard
// input); InputError naming the file when it cannot be read or lists none.
void addListedTasks(const std::string& dir, std::vector<std::string>& tasks,
                    const std::string& tasks_file) {
  if (!tasks_file.empty()) {
    const std::string file = tasks_file == "-" ? "the standard input" : tasks_file;
    std::vector<std::string> listed;
    try {
      listed = readTaskIdsFile(tasks_file);
    } catch (const Error& e) {
      // readFile's "PATH: cannot read: why", the path said once.
      std::string why = e.what();
      for (const std::string& path : {tasks_file, std::string("/dev/stdin")})
        if (why.rfind(path + ": ", 0) == 0) why.erase(0, path.size() + 2);
      throw InputError("campaign retry " + dir + ": --tasks-file " + file + ": " + why +
                       "; nothing was changed");
    }
    if (listed.empty())
      throw InputError("campaign retry " + dir + ": " + file +
                       " lists no task id (one a line, `#` starts a comment); nothing was "
                       "changed");
    tasks.insert(tasks.end(), listed.begin(), listed.end());
  }
}

}  // namespace

RunOptions prepareRetry(const std::string& dir, const RunOptions& options, bool failed,
                        bool cancelled, std::vector<std::string> tasks,
                        const std::string& tasks_file, bool orchestrator) {
  // The run moves them once it holds the journal (rank 0 of a pilot), then dispatches.
  RunOptions o = options;
  o.retry = retryStates(dir, failed, cancelled, !tasks.empty() || !tasks_file.empty());
  if (!orchestrator) return o;
  addListedTasks(dir, tasks, tasks_file);
  o.first = tasks;  // the named ones first, pending already or not
  if (!tasks.empty() || failed) printTaskRerun(dir, rerunNamedTasks(dir, tasks, failed));
  return o;
}

void dryRunRetry(const std::string& dir, bool failed, bool cancelled,
                 std::vector<std::string> tasks, const std::string& tasks_file) {
  const std::vector<TaskState> states =
      retryStates(dir, failed, cancelled, !tasks.empty() || !tasks_file.empty());
  addListedTasks(dir, tasks, tasks_file);
  const TaskRerunSummary s =
      rerunNamedTasks(dir, tasks, failed, /*dry_run=*/true);  // throws what the retry would
  // The failed and cancelled tasks the run would move back to pending (rerunNamedTasks took
  // the named ones already).
  const std::set<std::string> named(s.rerun.begin(), s.rerun.end());
  int64_t requeued = 0;
  std::vector<std::string> some;
  Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
  c.forEachTask([&](TaskRecord& t) {
    if (std::find(states.begin(), states.end(), t.state) == states.end() || named.count(t.id))
      return;
    ++requeued;
    if (some.size() < 20) some.push_back(t.id);
  });
  std::printf("campaign %s: nothing changed (--dry-run); the retry would\n", dir.c_str());
  if (!s.lost_needs.empty())
    std::printf("  run again first the task(s) whose models failed tasks found lost: %s\n",
                listWithMore(s.lost_needs, 20).c_str());
  const std::set<std::string> dependents(s.dependents.begin(), s.dependents.end());
  std::vector<std::string> own, warm;
  for (const std::string& id : s.rerun) (dependents.count(id) ? warm : own).push_back(id);
  if (!own.empty())
    std::printf("  run again %zu named task(s): %s\n", own.size(), listWithMore(own, 20).c_str());
  if (!warm.empty())
    std::printf("  run again %zu task(s) warm-started from them: %s\n", warm.size(),
                listWithMore(warm, 20).c_str());
  if (!s.rerun.empty())
    std::printf("  move their outputs%s to %s/superseded/<time>-<pid>/\n",
                s.aggregate_moved ? " and the aggregation" : "", dir.c_str());
  if (!s.already_pending.empty())
    std::printf("  find %zu named task(s) pending already\n", s.already_pending.size());
  if (requeued > 0) {
    std::string which;
    for (TaskState st : states) which += (which.empty() ? "" : " or ") + std::string(toString(st));
    std::printf("  move %lld %s task(s) back to pending and run them: %s\n",
                static_cast<long long>(requeued), which.c_str(),
                (listWithMore(some, 20) +
                 (requeued > 20 ? " and " + std::to_string(requeued - 20) + " more" : ""))
                    .c_str());
  }
  if (s.rerun.empty() && s.lost_needs.empty() && requeued == 0)
    std::printf(
        "  run nothing again (no task of those asked for; `resume` runs what is pending)\n");
}

void printTaskRerun(const std::string& dir, const TaskRerunSummary& s) {
  // The ids, the first 20 of each list (a retry of thousands names them in its journal).
  constexpr size_t kIds = 20;
  const std::set<std::string> dependents(s.dependents.begin(), s.dependents.end());
  std::vector<std::string> named, warm;
  for (const std::string& id : s.rerun) (dependents.count(id) ? warm : named).push_back(id);
  const std::string ids = listWithMore(named, kIds);
  std::string needing;
  if (!warm.empty())
    needing = (ids.empty() ? "" : "; and ") + std::to_string(dependents.size()) +
              " warm-started from them: " + listWithMore(warm, kIds);
  if (!s.lost_needs.empty()) {
    const std::string lost = listWithMore(s.lost_needs, kIds);
    std::printf(
        "campaign %s: failed tasks found the models they warm-start from lost or damaged: "
        "%s run%s again first\n",
        dir.c_str(), lost.c_str(), s.lost_needs.size() == 1 ? "s" : "");
  }
  if (!s.rerun.empty())
    std::printf("campaign %s: %zu task(s) run again (%s%s)%s%s\n", dir.c_str(), s.rerun.size(),
                ids.c_str(), needing.c_str(), s.moved_to.empty() ? "" : "; their outputs moved to ",
                s.moved_to.c_str());
  if (!s.already_pending.empty())
    std::printf("campaign %s: %zu named task(s) are pending already (they run now)\n", dir.c_str(),
                s.already_pending.size());
}

int cancelCommand(const std::string& dir, double wait_s,
                  const std::function<int(Campaign&)>& cancel_here) {
  const CancelOutcome o = cancelCampaign(
      dir, wait_s,
      cancel_here ? cancel_here : [](Campaign& c) { return c.cancel("cancelled by the user"); });
  const auto count = [&](TaskState st) {
    auto it = o.counts.find(st);
    return it == o.counts.end() ? 0 : it->second;
  };
  const std::string retry =
      "`foldfarm campaign retry " + shellWord(dir) + " --cancelled` runs the cancelled tasks again";
  if (o.stopped_waiting) {
    std::printf(
        "campaign %s: stopped waiting; the request stands (%s/%s): %s cancels when it reads it, "
        "`foldfarm campaign status %s` shows it until then\n",
        dir.c_str(), dir.c_str(), kCancelRequestFile,
        ("the run that orchestrates it (" + o.run + ")").c_str(), shellWord(dir).c_str());
    return 0;
  }
  if (o.run.empty() && o.cancelled_here == 0) {
    std::printf(
        "campaign %s: nothing to cancel: no task is unfinished (done %d, failed %d, "
        "cancelled %d)\n",
        dir.c_str(), count(TaskState::kDone), count(TaskState::kFailed),
        count(TaskState::kCancelled));
    return 0;
  }
  if (o.run.empty() || (o.cancelled_here > 0 && !o.asked_only)) {
    std::printf("campaign %s: %d unfinished task(s) cancelled; %s\n", dir.c_str(), o.cancelled_here,
                retry.c_str());
    return 0;
  }
  const std::string run = "the run that orchestrates it (" + o.run + ")";
  if (!o.asked_only && !o.timed_out && count(TaskState::kCancelled) == 0) {
    std::printf(
        "campaign %s: nothing was left to cancel: %s ended with %d task(s) done, %d failed\n",
        dir.c_str(), run.c_str(), count(TaskState::kDone), count(TaskState::kFailed));
    return 0;
  }
  if (o.asked_only) {
    std::printf(
        "campaign %s: asked %s to cancel (%s/%s): it stops its running tasks (they keep their "
        "state) and cancels every unfinished task when it reads the request; `foldfarm campaign "
        "status %s` shows the request until then\n",
        dir.c_str(), run.c_str(), dir.c_str(), kCancelRequestFile, shellWord(dir).c_str());
    return 0;
  }
  if (o.timed_out)
    throw Error(dir + ": " + run + " did not act on the cancel request within " +
                fmt::format("{:g}", wait_s) + " s; the request stands (" + dir + "/" +
                kCancelRequestFile +
                "): the run cancels when it reads it; or stop that run (SIGTERM or Ctrl-C) and "
                "cancel again");
  std::printf(
      "campaign %s: %s stopped its tasks and cancelled the unfinished ones: %d cancelled, %d "
      "done, %d failed; %s\n",
      dir.c_str(), run.c_str(), count(TaskState::kCancelled), count(TaskState::kDone),
      count(TaskState::kFailed), retry.c_str());
  return 0;
}

void repairCommand(const std::string& dir, bool force, bool json) {
  const RepairSummary s = Campaign::repair(dir, force);
  if (!json && s.spec_restored)
    std::printf("campaign %s: spec.json restored from the journal's copy (%s)%s%s\n", dir.c_str(),
                s.spec_problem.c_str(),
                s.spec_damaged_copy.empty() ? "" : "; the damaged file is kept as ",
                s.spec_damaged_copy.c_str());
  if (!json) {
    for (const std::string& path : s.inputs_restored) {
      const bool directory = statPath(path).directory;
      std::printf(
          "campaign %s: input %s holds the bytes read at `campaign init` (%s): %s\n", dir.c_str(),
          path.c_str(), directory ? "its files' sha256" : "its sha256",
          directory ? "their recorded times are restored" : "its recorded time is restored");
    }
    for (const std::string& change : s.inputs_changed)
      std::printf(
          "campaign %s: input %s; no task runs until it is as it was, or accepted as it is "
          "(`foldfarm campaign accept-inputs %s`: the tasks that read it run again)\n",
          dir.c_str(), change.c_str(), shellWord(dir).c_str());
  }
  if (json) {
    std::printf("%s\n", s.toJson().dump(2).c_str());
  } else if (!s.rebuilt) {
    std::printf("campaign %s: the journal is sound; nothing to repair (--force rebuilds it)\n",
                dir.c_str());
  } else {
    std::printf(
        "campaign %s: journal rebuilt (%s): %d task(s) done from their results, %d to run "
        "(%d unreadable result file(s))%s%s\n",
        dir.c_str(), s.problem.empty() ? "--force" : s.problem.c_str(), s.done, s.pending,
        s.unreadable,
        s.damaged_copy.empty() ? ""
        : s.problem.empty()    ? "; the journal it replaced is kept in "
                               : "; the damaged journal is kept in ",
        s.damaged_copy.c_str());
  }
}

void acceptInputsCommand(const std::string& dir, bool dry_run, bool json) {
  const AcceptSummary s = acceptInputs(dir, dry_run);
  if (json) {
    std::printf("%s\n", s.toJson().dump(2).c_str());
    return;
  }
  for (const std::string& path : s.restored)
    std::printf(
        "campaign %s: input %s holds the bytes read at `campaign init`: its recorded "
        "time %s\n",
        dir.c_str(), path.c_str(),
        s.dry_run ? "would be restored, nothing run again for it" : "is restored");
  if (s.changed.empty()) {
    std::printf("campaign %s: every input is as recorded; nothing to accept\n", dir.c_str());
    return;
  }
  for (const AcceptedInput& a : s.changed)
    std::printf("campaign %s: input %s: %s\n", dir.c_str(), a.change.c_str(),
                a.tasks == 0 ? "no task reads it (the aggregation does)"
                             : (std::to_string(a.tasks) + " task(s) read it").c_str());
  std::string was;
  for (const auto& [n, what] : {std::pair<int, const char*>{s.done, "done"},
                                {s.failed, "failed"},
                                {s.pending, "pending"},
                                {s.left_running, "left running by an orchestrator that ended"},
                                {s.cancelled, "cancelled, staying so"}})
    if (n > 0) was += (was.empty() ? "" : ", ") + std::to_string(n) + " " + what;
  std::string line = std::to_string(s.rerun.size()) + " task(s) run again";
  if (!was.empty()) line += " (" + was + ")";
  if (s.needed_only > 0)
    line += ", " + std::to_string(s.needed_only) + " of them because a task they need does";
  if (s.dry_run) {
    std::printf("campaign %s: nothing changed (--dry-run); accepting would make %s%s\n",
                dir.c_str(), line.c_str(),
                s.aggregate_moved ? " and move the aggregation's outputs aside" : "");
    return;
  }
  std::printf(
      "campaign %s: %zu input(s) accepted as they are now; %s%s%s; run the campaign "
      "(`foldfarm campaign run %s`)\n",
      dir.c_str(), s.changed.size(), line.c_str(),
      s.moved_to.empty() ? "" : "; what the old inputs made is kept in ", s.moved_to.c_str(),
      shellWord(dir).c_str());
}

void extendCommand(const std::string& dir, const ExtendRequest& request, bool dry_run, bool json) {
  if (request.spec_path.empty() && request.replicas == 0 && request.members == 0 &&
      request.variation.empty())
    throw InputError("campaign extend " + dir +
                     ": say what to add: --replicas R, --members M (of a variation with "
                     "--variation V) or --spec NEW.json");
  ExtendSummary s = extendCampaign(dir, request, dry_run);
  if (!s.dry_run && s.added() > 0) s.disk_shortfall = outputsShortfall(dir);
  if (!s.disk_shortfall.empty()) logWarn("campaign {}: {}", dir, s.disk_shortfall);
  if (json) {
    std::printf("%s\n", s.toJson().dump(2).c_str());
    return;
  }
  for (const std::string& setting : s.settings)
    std::printf("campaign %s: %s%s\n", dir.c_str(), setting.c_str(),
                s.dry_run ? " (--dry-run: not changed)" : " from now on");
  if (s.added() == 0) {
    std::printf("campaign %s: the spec adds no task to its %d; %s\n", dir.c_str(), s.tasks_before,
                s.settings.empty() ? "nothing changed"
                : s.dry_run        ? "nothing changed (--dry-run)"
                                   : "the tasks' results and the aggregation are as they were");
    return;
  }
  for (const ExtendedSet& set : s.sets) {
    const std::string name = set.variation.empty() ? "nominal tasks" : "variation " + set.variation;
    const std::string before = set.replicas_before == 0
                                   ? std::string("new")
                                   : std::to_string(set.replicas_before) + " x " +
                                         std::to_string(set.members_before) + " ->";
    std::printf("campaign %s: %s: %s %d x %d (replicas x members): %d task(s) added\n", dir.c_str(),
                name.c_str(), before.c_str(), set.replicas, set.members, set.added);
  }
  for (const std::string& path : s.new_inputs)
    std::printf("campaign %s: input %s %s\n", dir.c_str(), path.c_str(),
                s.dry_run ? "is new: it would be checked and recorded"
                          : "checked and recorded as `campaign init` records its inputs");
  std::string ids;
  for (const std::string& id : s.first_added) ids += (ids.empty() ? "" : ", ") + id;
  if (s.added() > static_cast<int>(s.first_added.size())) ids += ", ...";
  std::string line = std::to_string(s.added()) + " task(s) added (" + ids + "), " +
                     std::to_string(s.tasks_after) + " in all";
  if (s.renumbered > 0)
    line += "; " + std::to_string(s.renumbered) +
            " task(s) renumbered behind them, their states and results kept";
  if (s.added_bytes >= 0)
    line += "; their outputs: about " + formatBytes(s.added_bytes) +
            (s.added_unknown > 0
                 ? " (without the " + formatCount(s.added_unknown) + " task(s) not estimated)"
                 : std::string());
  if (s.dry_run) {
    std::printf("campaign %s: nothing changed (--dry-run); extending would make %s%s\n",
                dir.c_str(), line.c_str(),
                s.aggregate_moved ? ", and move the aggregation's outputs aside" : "");
    return;
  }
  std::printf("campaign %s: %s%s%s; run the campaign (`foldfarm campaign run %s`)\n", dir.c_str(),
              line.c_str(), s.moved_to.empty() ? "" : "; the aggregation's outputs are kept in ",
              s.moved_to.c_str(), shellWord(dir).c_str());
}

std::pair<std::string, int> splitTaskAttempt(const std::string& entry) {
  const size_t at = entry.rfind('@');
  if (at == std::string::npos) return {entry, 0};
  const std::string num = entry.substr(at + 1);
  if (num.empty() || num.size() > 9 || num.find_first_not_of("0123456789") != std::string::npos) {
    throw InputError("task '" + entry + "': expected ID or ID@ATTEMPT (a number up to " +
                     std::to_string(kMaxAttemptNumber) + ")");
  }
  return {entry.substr(0, at), std::stoi(num)};
}

int workTasks(const std::string& dir, const std::vector<std::string>& entries, int attempt) {
  if (entries.empty())
    throw InputError("campaign work: give at least one --task ID or --tasks-file");
  if (attempt < 0 || attempt > kMaxAttemptNumber)
    throw InputError("campaign work: --attempt must be from 0 (a run by hand) to " +
                     std::to_string(kMaxAttemptNumber) + ", not " + std::to_string(attempt));
  CampaignSpec spec = loadFrozenSpec(dir);
  std::vector<std::pair<std::string, int>> work;
  for (const auto& entry : entries) {
    auto [id, n] = splitTaskAttempt(entry);
    if (spec.indexOf(id) < 0) {
      throw InputError(dir + ": no task '" + id + "' in this campaign (ids run from " +
                       spec.idRangeText() + ")");
    }
    work.emplace_back(id, n > 0 ? n : attempt);
  }
  // Slurm forwards USR1 (time limit) and TERM (scancel, preemption) to this process: the
  // running task checkpoints and returns 75; no further task is started.
  installStopHandlers();
  int first_bad = 0;
  auto note = [&](int status) {
    if (status == 0) return;
    if (first_bad == 0 || first_bad == kExitSuperseded) first_bad = status;
  };
  for (const auto& [id, n] : work) {
    if (stopRequested()) {
      std::printf("%s interrupted: not started (stop requested)\n", id.c_str());
      std::fflush(stdout);
      // The journal's writer (Slurm) sees only that this element wrote no result for it: the
      // record says it never started, so that no cap counts it (before: a lost submission,
      // failed after --max-submissions time-limit cuts of elements it waited in).
      if (n > 0)
        recordLeaseRefusal(taskDirOf(dir, id),
                           LeaseRefusal{n,
                                        "its job was stopped (a time limit, a scancel) before "
                                        "the task's turn in it"});
      note(kExitInterrupted);
      continue;
    }
    TaskResult r = runTaskStandalone(dir, id, n);
    if (r.status == kExitInterrupted && !r.counts_as_failure && n > 0) {
      // Not started: the lease is held elsewhere. The journal's writer (Slurm) sees only that
      // this element wrote no result; the record tells it not to count that as a lost attempt.
      recordLeaseRefusal(taskDirOf(dir, id), LeaseRefusal{n, r.reason});
    }
    if (r.status == kExitInterrupted) {
      std::printf("%s interrupted: %s\n", id.c_str(), r.reason.c_str());
      std::fflush(stdout);
      note(kExitInterrupted);
      continue;
    }
    if (r.status == kExitSuperseded) {
      std::printf("%s not run: %s\n", id.c_str(), r.reason.c_str());
      std::fflush(stdout);
      note(kExitSuperseded);
      continue;
    }
    std::printf("%s %s%s%s\n", id.c_str(), r.status == 0 ? "done" : "failed",
                r.reason.empty() ? "" : ": ", r.reason.c_str());
    std::fflush(stdout);
    note(r.status);
  }
  return first_bad;
}

void workCommand(const std::string& dir, std::vector<std::string> task_ids,
                 const std::string& tasks_file, int attempt) {
  if (!tasks_file.empty()) {
    auto more = readTaskIdsFile(tasks_file);
    task_ids.insert(task_ids.end(), more.begin(), more.end());
  }
  const int rc = workTasks(dir, task_ids, attempt);
  if (rc == 0) return;
  if (rc == kExitSuperseded)
    throw Error(dir +
                    ": this run did nothing for a task that a newer attempt runs, or (a run by "
                    "hand) that is done; the line above names it",
                kExitSuperseded);
  // A stop (scancel, a time limit, preemption) is no failure: the task saved its state.
  if (rc == kExitInterrupted)
    throw InterruptedError(dir +
                           ": a task stopped (a stop signal: its state is saved, its next "
                           "attempt continues); see its task.log");
  throw Error(dir + ": a task failed (status " + std::to_string(rc) + "); see its task.log",
              rc == kExitBadInput ? kExitBadInput : kExitFailure);
}

std::vector<std::string> readTaskIdsFile(const std::string& path) {
  std::istringstream in(path == "-" ? readFile("/dev/stdin") : readFile(path));
  std::vector<std::string> ids;
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find_first_not_of(" \t\r");
    if (a == std::string::npos || line[a] == '#') continue;
    auto b = line.find_last_not_of(" \t\r");
    ids.push_back(line.substr(a, b - a + 1));
  }
  return ids;
}

void planCommand(const PlanRequest& a) {
  // A plan starts no task: its inputs need not be there yet (staged later, or elsewhere).
  // The tasks `campaign init` would make of it, its warm reference included.
  const CampaignSpec spec = withWarmReference(loadCampaignSpec(a.spec, /*require_inputs=*/false));
  PlanInput in;
  in.tasks = spec.numTasks();
  in.gpus = a.gpus;
  in.tasks_per_gpu = a.tasks_per_gpu > 0 ? a.tasks_per_gpu : spec.resources.tasks_per_gpu;
  in.gpus_per_node = a.gpus_per_node;
  in.max_attempts = spec.retry.max_attempts;
  in.seed = a.seed;
  // Variations wait for their nominal tasks.
  for (int t = 0; t < in.tasks; ++t) in.needs.push_back(spec.taskPosition(t).needs);
  if (a.from.empty() && !(a.task_minutes > 0))
    throw InputError("plan: give --task-minutes T or --from D (a campaign with done tasks)");
  // What is given wins over what --from measures (as --spread and --failure-rate do).
  std::optional<Campaign> from;
  std::optional<MeasuredTaskTimes> measured;
  if (!a.from.empty()) {
    Campaign& c = from.emplace(Campaign::open(a.from, Campaign::Access::kReadOnly));
    measured = measureTaskTimes(c, /*require_done=*/!(a.task_minutes > 0));
  }
  const PlanFigures figures = planFigures(a.task_minutes, a.spread, a.failure_rate,
                                          measured ? &*measured : nullptr, a.from);
  in.task_s = figures.task_s;
  in.task_cv = figures.task_cv;
  in.failure_rate = figures.failure_rate;
  const std::string& source = figures.source;
  PlanResult r = simulatePlan(in);
  nlohmann::json j = r.toJson();
  j["tasks"] = in.tasks;
  j["gpus"] = in.gpus;
  j["tasks_per_gpu"] = in.tasks_per_gpu;
  j["task_s"] = in.task_s;
  j["task_cv"] = in.task_cv;
  j["failure_rate"] = in.failure_rate;
  j["task_time_source"] = source;
  const CampaignDiskEstimate disk = estimateCampaignDisk(spec, from ? &*from : nullptr);
  j["disk"] = disk.toJson();
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("plan for %s: %d task(s) on %d GPU(s) x %d task(s)/GPU, %d node(s)\n", a.spec.c_str(),
              in.tasks, in.gpus, in.tasks_per_gpu, r.nodes);
  std::printf("  task time %.1f s, spread %.0f%%, failure rate %.1f%% (%s)\n", in.task_s,
              100 * in.task_cv, 100 * in.failure_rate, source.c_str());
  std::printf(
      "  makespan %s (%.2f h), %lld attempt(s), %d task(s) failing%s\n",
      formatDuration(r.makespan_s).c_str(), r.makespan_s / 3600, static_cast<long long>(r.attempts),
      r.failed_tasks,
      r.held_tasks > 0 ? (", " + std::to_string(r.held_tasks) + " held behind them").c_str() : "");
  std::printf("  GPU-hours %.1f held (%.1f busy), node-hours %.1f, utilisation %.1f%%\n",
              r.gpu_hours, r.busy_gpu_hours, r.node_hours, 100 * r.utilisation);
  std::printf("%s", describeDiskEstimate(disk, std::min(r.slots, in.tasks)).c_str());
}

std::string stateCountsLine(const nlohmann::json& counts) {
  return std::to_string(counts.value("done", 0)) + " done, " +
         std::to_string(counts.value("running", 0)) + " running, " +
         std::to_string(counts.value("pending", 0)) + " pending, " +
         std::to_string(counts.value("failed", 0)) + " failed, " +
         std::to_string(counts.value("cancelled", 0)) + " cancelled";
}

}  // namespace foldfarm::jobs
