// foldfarm campaign init|run|resume|retry|work|plan (and, from cmd_login.cpp, status, cancel,
// repair and aggregate at their places), the internal `foldfarm worker`, and `foldfarm bench
// scheduler`. Thin: options are parsed here; the work is done by campaign/ (what composes the
// layers: task kinds, executors, Slurm, the aggregation after a run) and jobs/.
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "campaign/campaign_run.hpp"
#include "core/base/cli_checks.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "jobs/benchmarks.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/executor.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::app {

void registerCampaignTaskKinds() {
  campaign::registerTaskKinds();
}

namespace {

using nlohmann::json;

jobs::RunOptions runOptions(int slots) {
  jobs::RunOptions o;
  o.worker_argv = {jobs::selfExecutable(), "worker"};
  o.slots = slots;
  o.show_progress = true;
  return o;
}

// ---- bench scheduler -----------------------------------------------------------------
struct SchedulerBenchArgs : jobs::SchedulerBenchOptions {
  bool json = false;
};

void benchScheduler(const SchedulerBenchArgs& a) {
  const json out = jobs::benchScheduler(a);
  if (a.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("scheduler: %d noop tasks on %d slots in %.3f s: %.0f tasks/s (%.3f ms/task/slot)\n",
              a.tasks, a.slots, out["noop_elapsed_s"].get<double>(),
              out["tasks_per_s"].get<double>(), out["overhead_ms_per_task"].get<double>());
  if (out.contains("makespan_efficiency")) {
    std::printf(
        "sleep: %d x %.2f s on %d slots: makespan %.2f s, ideal %.2f s, efficiency %.1f%% "
        "(workers started within %.2f s, %.1f ms between two tasks of a slot, %.2f s from "
        "the last task's end to the workers' exit)\n",
        a.sleep_tasks, a.sleep_s, a.slots, out["sleep_makespan_s"].get<double>(),
        out["sleep_ideal_s"].get<double>(), 100 * out["makespan_efficiency"].get<double>(),
        out["sleep_worker_startup_s"].get<double>(), out["sleep_gap_ms_per_task"].get<double>(),
        out["sleep_tail_s"].get<double>());
  }
  if (out.contains("command_local_ms_per_task")) {
    std::printf(
        "command tasks (dir, lease, log, durable result): %d on %d local slots: %.2f "
        "ms/task/slot\n",
        a.command_tasks, a.slots, out["command_local_ms_per_task"].get<double>());
  }
  if (out.contains("command_pilot_ms_per_task")) {
    std::printf(
        "command tasks through the MPI pilot on %d worker ranks: %.2f ms/task/rank "
        "(with mpirun start-up)\n",
        a.pilot_ranks, out["command_pilot_ms_per_task"].get<double>());
  }
  if (out.contains("load_mb")) {
    std::printf(
        "persistent worker: %.0f MB input, %.4f s/task kept in memory vs %.4f s/task reloaded\n",
        a.load_mb, out["load_task_s_persistent"].get<double>(),
        out["load_task_s_reload"].get<double>());
  }
  if (out.contains("dir"))
    std::printf("scratch campaigns kept in %s\n", out["dir"].get<std::string>().c_str());
}

struct RunArgs {
  std::string dir, executor;
  int slots = 0;
  double lost_after = jobs::RunOptions{}.lost_after_s;
  bool aggregate = false;

  campaign::RunRequest request() const {
    campaign::RunRequest r;
    r.executor = executor;
    r.options = runOptions(slots);
    r.options.lost_after_s = lost_after;
    r.aggregate = aggregate;
    return r;
  }
};

// The options of every command that runs a campaign's tasks (`run`, `resume`, `retry`) on
// `c`, bound to `a`.
void addRunOptions(CLI::App* c, RunArgs& a) {
  c->add_option("dir", a.dir, "Campaign directory")->required();
  c->add_option("--executor", a.executor, "local, mpi or slurm (default: the spec's)")
      ->check(CLI::IsMember({"local", "mpi", "slurm"}));
  c->add_option("--slots", a.slots, "Override the number of local slots (0: from the spec)")
      ->check(cli::between(0, jobs::kMaxSlotsPerNode));
  c->add_option("--lost-after", a.lost_after,
                "mpi: seconds without a heartbeat after which a rank is lost (fenced; the "
                "pilot ends with exit 3 naming it once the rest is done; at most 1e6)")
      ->capture_default_str()
      ->check(cli::kPositive)
      ->check(cli::between(0, jobs::kMaxLostAfterS));
  addAggregateFlag(*c, a.aggregate);
}

// `campaign run` / `resume`'s options on `parent`, bound to `a` (no callback): the commands
// themselves, and `slurm render pilot`'s check of the arguments it puts in a batch script.
CLI::App* addRunCommand(CLI::App& parent, const std::string& name, RunArgs& a) {
  CLI::App* c = parent.add_subcommand(
      name, name == "run" ? "Run the campaign's pending tasks: the local worker pool, the MPI "
                            "pilot (--executor mpi, under mpirun/srun) or Slurm arrays "
                            "(--executor slurm, as `slurm submit` does)"
                          : "Continue a stopped or crashed campaign from its journal");
  addRunOptions(c, a);
  return c;
}

}  // namespace

void checkCampaignRunArguments(const std::vector<std::string>& args, const std::string& who) {
  CLI::App app{"check"};
  RunArgs unused;
  addRunCommand(app, "run", unused);
  checkArgumentsParse(app, "run", args, who, "campaign run");
}

void registerCampaignCommands(CommandGroups& g) {
  CLI::App* campaign = addCampaignGroup(g.root);

  // init
  {
    auto* c = campaign->add_subcommand(
        "init",
        "Validate a campaign spec and create its directory; reads every value the tasks and "
        "the aggregation will read (NaN, Inf, flags: refused naming the row) and records the "
        "size, time and sha256 of every input file (read in parallel)");
    auto spec = std::make_shared<std::string>();
    auto dir = std::make_shared<std::string>();
    c->add_option("spec", *spec, "Campaign spec (JSON; see docs or jobs/campaign_spec.hpp)")
        ->required();
    c->add_option("--dir", *dir, "Campaign directory to create (must not exist)")->required();
    c->callback([spec, dir] { campaign::initCommand(*spec, *dir); });
  }
  // run / resume
  for (const char* name : {"run", "resume"}) {
    auto a = std::make_shared<RunArgs>();
    addRunCommand(*campaign, name, *a)->callback([a] {
      campaign::runCommand(a->dir, a->request());
    });
  }
  registerCampaignStatusCommand(*campaign);
  // retry
  {
    auto* c = campaign->add_subcommand(
        "retry",
        "Rerun the failed (--failed) or cancelled (--cancelled) tasks, or the tasks named "
        "(--task ID, done ones too: an output damaged or lost; their directories and the "
        "aggregation's move to D/superseded/); no done task runs again unless named. They run "
        "first, then the campaign's tasks still pending, as `resume` runs them");
    auto a = std::make_shared<RunArgs>();
    auto failed = std::make_shared<bool>(false);
    auto cancelled = std::make_shared<bool>(false);
    auto tasks = std::make_shared<std::vector<std::string>>();
    // The options of `run` (before: no --slots, a retry ran on the spec's slots).
    addRunOptions(c, *a);
    // At least one of the three (retryStates refuses none, naming them).
    c->add_flag("--failed", *failed, "Move failed tasks back to pending and run them");
    c->add_flag("--cancelled", *cancelled,
                "Move cancelled tasks back to pending and run them (undoes `cancel`)");
    c->add_option(
        "--task", *tasks,
        "Run this task again (repeatable), done or failed (a cancelled one: --cancelled), and "
        "the tasks warm-started from it: a done task's outputs move to D/superseded/ first");
    auto tasks_file = std::make_shared<std::string>();
    c->add_option("--tasks-file", *tasks_file,
                  "As --task, for each id this file lists (one a line, `#` comments; - reads the "
                  "standard input, e.g. from `campaign status --json --tasks | jq -r …`)");
    auto dry_run = std::make_shared<bool>(false);
    c->add_flag("--dry-run", *dry_run,
                "Say what would run again and what would move to D/superseded/; change nothing");
    c->callback([a, failed, cancelled, tasks, tasks_file, dry_run] {
      if (*dry_run) {
        campaign::registerTaskKinds();  // the named tasks' checks read the spec's kind
        jobs::dryRunRetry(a->dir, *failed, *cancelled, *tasks, *tasks_file);
        return;
      }
      campaign::retryCommand(a->dir, a->request(), *failed, *cancelled, *tasks, *tasks_file);
    });
  }
  registerCampaignCancelCommand(*campaign);
  registerCampaignRepairCommand(*campaign);
  // accept-inputs
  {
    auto* c = campaign->add_subcommand(
        "accept-inputs",
        "Take the input files as they are now after one was replaced (a simulation "
        "regenerated, a foundation pretrained again): checks and records the new files as "
        "`campaign init` does, and runs again only the tasks that read a changed one and those "
        "that need them; their old outputs and the aggregation's move to D/superseded/");
    auto dir = std::make_shared<std::string>();
    auto dry_run = std::make_shared<bool>(false);
    auto as_json = std::make_shared<bool>(false);
    c->add_option("dir", *dir, "Campaign directory")->required();
    c->add_flag("--dry-run", *dry_run,
                "Say what changed and which tasks would run again; change nothing");
    c->add_flag("--json", *as_json, "Print JSON");
    c->callback([dir, dry_run, as_json] {
      campaign::registerTaskKinds();
      jobs::acceptInputsCommand(*dir, *dry_run, *as_json);
    });
  }
  // extend
  {
    auto* c = campaign->add_subcommand(
        "extend",
        "Add tasks to the campaign: more replicas or members (--replicas, --members; a "
        "systematic variation's with --variation), or new systematic variations (--spec, the "
        "campaign's spec with them added). The tasks done stay done; only the new ones run, and "
        "the results are those of a campaign made with the larger counts from the start");
    auto dir = std::make_shared<std::string>();
    auto spec = std::make_shared<std::string>();
    auto replicas = std::make_shared<int>(0);
    auto members = std::make_shared<int>(0);
    auto variation = std::make_shared<std::string>();
    auto dry_run = std::make_shared<bool>(false);
    auto as_json = std::make_shared<bool>(false);
    c->add_option("dir", *dir, "Campaign directory")->required();
    c->add_option("--spec", *spec,
                  "The campaign's spec with tasks added (counts, variations, overrides of new "
                  "tasks) or other run settings (time_limit_s, retry; alone too: they change no "
                  "result); anything else changed is refused, naming the key")
        ->check(CLI::ExistingFile);
    c->add_option("--replicas", *replicas,
                  "Replicas of the nominal tasks, or of --variation's (not below the campaign's)")
        ->check(CLI::Range(1, 1000000));
    c->add_option("--members", *members,
                  "Ensemble members of the nominal tasks, or of --variation's (not below the "
                  "campaign's)")
        ->check(CLI::Range(1, 1000000));
    c->add_option("--variation", *variation,
                  "The systematic variation whose --replicas and --members these are (one the "
                  "campaign has; a new one needs --spec)");
    c->add_flag("--dry-run", *dry_run, "Say what would be added; change nothing");
    c->add_flag("--json", *as_json, "Print JSON");
    c->callback([dir, spec, replicas, members, variation, dry_run, as_json] {
      campaign::registerTaskKinds();
      jobs::extendCommand(*dir, {*spec, *replicas, *members, *variation}, *dry_run, *as_json);
    });
  }
  // work
  {
    auto* c = campaign->add_subcommand(
        "work",
        "Run tasks in this process, writing task_result.json, without the journal "
        "(Slurm array elements; the orchestrator ingests the results)");
    auto dir = std::make_shared<std::string>();
    auto tasks = std::make_shared<std::vector<std::string>>();
    auto tasks_file = std::make_shared<std::string>();
    auto attempt = std::make_shared<int>(0);
    c->add_option("dir", *dir, "Campaign directory")->required();
    c->add_option("--task", *tasks,
                  "Task id (repeatable), e.g. r0007m1, or ID@N for attempt N of it");
    c->add_option("--tasks-file", *tasks_file,
                  "File with one task id per line (# comments and blank lines skipped; - reads "
                  "the standard input)");
    c->add_option("--attempt", *attempt,
                  "Attempt number the journal gave the tasks without @N (0: a run by hand)");
    c->callback([dir, tasks, tasks_file, attempt] {
      campaign::registerTaskKinds();
      jobs::workCommand(*dir, *tasks, *tasks_file, *attempt);
    });
  }
  registerCampaignAggregateCommand(*campaign);
  // plan
  {
    auto* c = campaign->add_subcommand(
        "plan",
        "Simulate the campaign on G GPUs: makespan, GPU-hours, node-hours; and the disk its "
        "outputs will take (each task's directory, the aggregation)");
    auto a = std::make_shared<jobs::PlanRequest>();
    c->add_option("spec", a->spec, "Campaign spec (JSON)")->required();
    c->add_option("--gpus", a->gpus, "GPUs to plan for")->required()->check(cli::kPositive);
    c->add_option("--task-minutes", a->task_minutes, "Mean task time in minutes (up to 10^7)")
        ->check(cli::kPositive)
        ->check(cli::between(0, 1e7));
    c->add_option("--from", a->from,
                  "Measure task time, spread, failure rate and the disk a task takes from this "
                  "campaign");
    c->add_option("--spread", a->spread, "Task time std/mean, 0 to 10 (default 0.1, or measured)")
        ->check(cli::between(0, 10));
    c->add_option("--failure-rate", a->failure_rate,
                  "Failed attempts per attempt, below 1 (default 0, or measured)")
        ->check(cli::fromToBelow(0, 1));
    c->add_option("--gpus-per-node", a->gpus_per_node, "GPUs per node")
        ->check(cli::kPositive)
        ->capture_default_str();
    c->add_option("--tasks-per-gpu", a->tasks_per_gpu, "Tasks sharing a GPU (default: the spec's)")
        ->check(cli::kPositive);
    c->add_option("--seed", a->seed, "Simulation seed")->capture_default_str();
    c->add_flag("--json", a->json, "Print JSON");
    c->callback([a] {
      campaign::registerTaskKinds();
      jobs::planCommand(*a);
    });
  }

  // worker (internal; started by the local executor and the MPI pilot)
  {
    auto* w = g.root.add_subcommand(
        "worker",
        "Internal: a persistent campaign worker speaking the framed task protocol "
        "on stdin/stdout (started by `campaign run`)");
    w->group("");
    w->callback([] {
      campaign::registerTaskKinds();
      std::exit(jobs::workerMain());
    });
  }

  // bench scheduler
  {
    auto* b = g.bench.add_subcommand(
        "scheduler",
        "Scheduler throughput (noop tasks, durable journal) and makespan efficiency (sleep tasks)");
    auto a = std::make_shared<SchedulerBenchArgs>();
    b->add_option("--tasks", a->tasks, "noop tasks")->capture_default_str();
    b->add_option("--slots", a->slots, "local worker slots")->capture_default_str();
    b->add_option("--sleep-tasks", a->sleep_tasks,
                  "sleep tasks for the efficiency figure (0: skip)")
        ->capture_default_str();
    b->add_option("--sleep-seconds", a->sleep_s, "duration of each sleep task")
        ->capture_default_str();
    b->add_option("--load-mb", a->load_mb,
                  "also measure a persistent worker keeping an input of this size (0: skip)")
        ->capture_default_str();
    b->add_option("--load-tasks", a->load_tasks, "tasks for the --load-mb figure")
        ->capture_default_str();
    b->add_option("--command-tasks", a->command_tasks,
                  "real tasks (/bin/true as a command task: directory, lease, log, durable "
                  "result) for the per-task overhead; 0 skips")
        ->capture_default_str();
    b->add_option("--pilot-ranks", a->pilot_ranks,
                  "worker ranks of the MPI pilot run of the command tasks (0 skips; needs mpirun)")
        ->capture_default_str();
    b->add_option("--scratch", a->scratch, "where the scratch campaigns go")->capture_default_str();
    b->add_flag("--keep", a->keep, "keep the scratch campaigns");
    b->add_flag("--json", a->json, "Print JSON on stdout");
    b->callback([a] { benchScheduler(*a); });
  }
}

}  // namespace foldfarm::app
