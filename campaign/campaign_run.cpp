#include "campaign/campaign_run.hpp"

#include <cstdio>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/process.hpp"
#include "core/base/text.hpp"
#include "dist/launch.hpp"
#include "ensembles/campaign_aggregate.hpp"
#include "ensembles/chain_task.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/disk_estimate.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::campaign {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string absoluteDir(const std::string& dir) {
  return fs::absolute(dir).lexically_normal().string();
}

// After a run that ended without failures: aggregate here, on one process only.
void aggregateAfterRun(const std::string& dir, bool aggregate) {
  if (!aggregate || dist::detectLaunch().rank != 0) return;
  const json r = ensembles::aggregateCampaign(dir, "", {}, /*all_done=*/true).toJson();
  std::printf("%s\n", ensembles::aggregationLine(dir, r).c_str());
  // Asked for and not done (cancelled tasks left unrun): not a success (before: exit 0, and
  // `run --aggregate && report` went on with an old aggregation or none).
  if (!r.at("aggregated").get<bool>())
    throw Error(dir + ": --aggregate: not aggregated, " +
                    std::to_string(r.at("chains").get<int>()) + " of " +
                    std::to_string(r.at("tasks").get<int>()) +
                    " task(s) done (the others cancelled); `foldfarm campaign retry " +
                    shellWord(dir) + " --cancelled --aggregate` runs them and aggregates",
                kExitCancelled);
}

// The campaign run through Slurm: `slurm submit D` with the last submission's options.
void runThroughSlurm(const std::string& dir, const std::vector<jobs::TaskState>& retry,
                     bool record) {
  SubmitRequest s;
  s.retry = true;
  s.record_unrecorded = record;
  s.options.retry = retry;
  submitCommand(dir, s);
}

}  // namespace

void registerTaskKinds() {
  static bool done = false;
  if (done) return;
  done = true;
  jobs::registerBuiltinTaskKinds();
  ensembles::registerChainTaskKind();
}

void refuseUntrainable(const jobs::CampaignSpec& spec, const std::string& origin) {
  ensembles::refuseUntrainableChainCampaign(spec.kind, spec.resources.gpus, spec.chain, origin);
}

void refuseUntrainable(const std::string& dir) {
  registerTaskKinds();
  refuseUntrainable(jobs::loadFrozenSpec(dir), dir);
}

void checkAggregatable(const std::string& dir) {
  registerTaskKinds();
  const jobs::CampaignSpec frozen = jobs::loadFrozenSpec(dir);
  if (frozen.kind != "chain")
    throw InputError(dir + ": --aggregate needs a campaign of chain tasks (this one runs '" +
                     frozen.kind + "')");
  // The aggregation draws its figures in a temporary directory: a TMPDIR that cannot hold one
  // is said now, before any task runs (before: after all of them, at the aggregation).
  TempDir probe("foldfarm-aggregate");
}

void initCommand(const std::string& spec_path, const std::string& dir) {
  registerTaskKinds();
  // The inputs are checked (files opened) once, by jobs::initCommand.
  refuseUntrainable(jobs::loadCampaignSpec(spec_path, /*require_inputs=*/false), spec_path);
  jobs::initCommand(spec_path, dir);
}

void runCommand(const std::string& dir, const RunRequest& request) {
  registerTaskKinds();
  if (request.aggregate) checkAggregatable(dir);
  const jobs::CampaignSpec frozen = jobs::loadFrozenSpec(dir);
  const dist::LaunchInfo launch = dist::detectLaunch();
  // A campaign submitted through Slurm before is submitted again, with that submission's
  // options (before: `retry --failed`, which the Slurm messages advise, ran the tasks on the
  // login node when the spec said "local"). Not from within a job step (a pilot's ranks).
  const bool submitted_before = request.executor.empty() && frozen.executor != "slurm" &&
                                !launch.distributed() && slurm::recordedSubmitOptions(dir);
  if (submitted_before)
    logInfo(
        "campaign {}: submitted through Slurm before ({}): submitted again with its options; "
        "`--executor local` runs the tasks here",
        dir, slurm::submitOptionsPath(dir));
  if (submitted_before ||
      (request.executor.empty() ? frozen.executor : request.executor) == "slurm") {
    // Asked for by name on a campaign whose spec says otherwise: recorded, so that a later
    // `resume` or `retry` is submitted too (before: it ran the tasks on this host).
    runThroughSlurm(dir, request.options.retry,
                    request.executor == "slurm" && frozen.executor != "slurm");
    aggregateAfterRun(dir, request.aggregate);
    return;
  }
  refuseUntrainable(frozen, dir);
  if (launch.rank == 0) jobs::warnIfOutputsDoNotFit(dir);
  jobs::RunOptions o = request.options;
  // The local run; the pilot's rank 0 for all.
  o.before_run = [](const std::string& d) { slurm::refuseTasksInLiveSlurmJobs(d); };
  const int rc = jobs::runCommand(dir, request.executor, o);
  if (rc == kExitInterrupted)
    throw InterruptedError(
        dir + ": stopped; continue with " +
        (launch.distributed()
             ? "the pilot's batch script submitted again (`sbatch`; one made with --requeue "
               "requeues itself after a time limit), or `foldfarm campaign resume " +
                   shellWord(dir) + "` on this host"
             : "`foldfarm campaign resume " + shellWord(dir) + "`"));
  if (rc == kExitCancelled)
    throw Error(dir + ": cancelled by `foldfarm campaign cancel`; `foldfarm campaign retry " +
                    shellWord(dir) + " --cancelled` runs the cancelled tasks",
                kExitCancelled);
  if (rc != 0) {
    // Counted in the journal: a retry's message is of the campaign, not only of the tasks it
    // ran again (before: "tasks failed again" where the failed task was one it did not run).
    const jobs::StateCounts counts =
        jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly).counts();
    const auto failed = counts.find(jobs::TaskState::kFailed);
    throw Error(dir + ": " + std::to_string(failed == counts.end() ? 0 : failed->second) +
                " task(s) of the campaign failed (this run's line above says what it ran); see "
                "`foldfarm campaign status " +
                shellWord(dir) + "` and `foldfarm campaign retry " + shellWord(dir) + " --failed`");
  }
  aggregateAfterRun(dir, request.aggregate);
}

void retryCommand(const std::string& dir, RunRequest request, bool failed, bool cancelled,
                  const std::vector<std::string>& tasks, const std::string& tasks_file) {
  // Before anything moves: a retry refused afterwards would have moved outputs for nothing.
  if (request.aggregate) checkAggregatable(dir);
  // The kinds first: the named tasks' checks read the campaign's spec.
  registerTaskKinds();
  // The same preparation as the jobs layer's retry (before: this one did not run the named
  // tasks first, RunOptions::first).
  request.options = jobs::prepareRetry(dir, request.options, failed, cancelled, tasks, tasks_file,
                                       dist::detectLaunch().rank == 0);
  runCommand(dir, request);
}

void submitCommand(const std::string& dir, SubmitRequest request) {
  registerTaskKinds();
  const std::string abs = absoluteDir(dir);
  slurm::SlurmCampaignOptions& opts = request.options;
  if (std::optional<slurm::SlurmCampaignOptions> rec = slurm::recordedSubmitOptions(abs)) {
    opts = slurm::withRecordedOptions(opts, *rec, request.given);
    logInfo("{}: submitting with the options of its last submission ({}){}", dir,
            slurm::submitOptionsPath(abs),
            request.given.empty() ? "" : ", but for those given here");
  } else if (request.retry) {
    // Nothing of the user's to record (a later `slurm submit` records its own), but for a run
    // asked for through Slurm by name.
    opts.record = request.record_unrecorded;
    logWarn(
        "{}: no `foldfarm slurm submit` of it recorded its options: submitting with the spec's "
        "resources and Slurm's defaults (no partition, account or time limit of yours); "
        "`foldfarm slurm submit {} [options]` submits with yours",
        dir, shellWord(dir));
  }
  if (request.aggregate && !opts.wait)
    throw InputError("slurm submit " + dir +
                     ": --aggregate needs the watch (it aggregates once every task is done); "
                     "drop --no-wait, or run `foldfarm campaign aggregate " +
                     shellWord(dir) + "` later");
  if (request.aggregate) checkAggregatable(dir);
  refuseUntrainable(dir);
  opts.resources = slurm::resolveResources(opts.resources, request.setup_files);
  jobs::warnIfOutputsDoNotFit(abs);
  slurm::SlurmCampaignSummary sum = slurm::runCampaignOnSlurm(dir, opts);
  json j = sum.toJson();
  const json& counts = j["counts"];
  const int failed = counts.value("failed", 0), cancelled = counts.value("cancelled", 0);
  const bool ended_well = !sum.interrupted && !sum.cancelled && failed == 0;
  if (request.aggregate && ended_well)
    j["aggregate"] = ensembles::aggregateCampaign(dir, "", {}, /*all_done=*/true).toJson();
  if (request.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "%s: %d array(s) submitted (%d task submission(s)); back to pending: %d stopped in "
        "their job with their state saved, %d whose job ended without a result, %d never "
        "started (their job stopped before their turn); %s\n",
        dir.c_str(), sum.submissions, sum.tasksSubmitted, sum.tasksStopped, sum.tasksRequeued,
        sum.tasksNotStarted, jobs::stateCountsLine(counts).c_str());
    if (j.contains("aggregate"))
      std::printf("%s\n", ensembles::aggregationLine(dir, j["aggregate"]).c_str());
  }
  if (!opts.wait && sum.tasksThrottled > 0)
    logInfo(
        "{}: {} ready task(s) not submitted: earlier arrays' elements fill --throttle {}; a later "
        "`foldfarm slurm submit {}` submits them",
        dir, sum.tasksThrottled, opts.throttle, shellWord(dir));
  // Nothing to submit but tasks a retry would run: say so (before: "0 array(s)", exit 0).
  if (sum.submissions == 0 && counts.value("pending", 0) == 0 && counts.value("running", 0) == 0 &&
      failed + cancelled > 0)
    logWarn(
        "{}: no pending task to submit; `foldfarm campaign retry {} {}` submits the {} with "
        "these options (recorded in {})",
        dir, shellWord(dir),
        failed > 0 && cancelled > 0 ? "--failed --cancelled"
        : failed > 0                ? "--failed"
                                    : "--cancelled",
        failed > 0 && cancelled > 0 ? "failed and cancelled tasks"
        : failed > 0                ? "failed tasks"
                                    : "cancelled tasks",
        slurm::submitOptionsPath(abs));
  if (sum.interrupted)
    throw InterruptedError("stopped watching " + dir + "; its jobs keep running");
  if (sum.cancelled)
    throw Error(dir + ": the watch ended on `foldfarm campaign cancel`: " +
                    std::to_string(sum.tasksCancelled) + " unfinished task(s) cancelled, " +
                    std::to_string(sum.jobsCancelled.size()) +
                    " Slurm job(s) scancelled; `foldfarm campaign retry " + shellWord(dir) +
                    " --cancelled` submits the cancelled tasks again",
                kExitCancelled);
  if (failed > 0)
    throw Error(dir + ": " + std::to_string(failed) +
                " task(s) failed; see `foldfarm campaign status " + shellWord(dir) + "`");
}

}  // namespace foldfarm::campaign
