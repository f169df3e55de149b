// foldfarm slurm render pretrain|pilot|array, slurm submit D (and, from cmd_login.cpp,
// slurm status D).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>

#include "apps/foldfarm/commands.hpp"
#include "campaign/campaign_run.hpp"
#include "core/base/atomic_file.hpp"
#include "core/base/cli_checks.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/executor.hpp"
#include "jobs/task_kind.hpp"
#include "slurm/array_plan.hpp"
#include "slurm/sbatch_script.hpp"
#include "slurm/slurm_campaign.hpp"
#include "slurm/slurm_client.hpp"

namespace foldfarm::app {
namespace {

namespace fs = std::filesystem;

using slurm::SbatchResources;

struct ResourceArgs {
  SbatchResources res;
  std::vector<std::string> setupFiles;

  // `campaign`: the script runs a campaign, whose spec fills what these options leave at
  // their defaults (slurm_campaign.hpp). `requeue`: the job may requeue itself, and runs its
  // ranks under srun (not array elements: the submitter resubmits an interrupted task as its
  // next attempt).
  void addTo(CLI::App& c, bool campaign, bool requeue = true) {
    const std::string spec = campaign ? " (default: the campaign's)" : "";
    // With a campaign, what these leave at their defaults comes from its spec: the help shows
    // that, not the option's initial value (before: "INT=0 … (default: the campaign's)").
    const auto shown = [campaign](CLI::Option* o) {
      if (!campaign) o->capture_default_str();
      return o;
    };
    // Not given stays "not given" (0, ""): a campaign's spec fills it, even where the value
    // given equals the default. Without a campaign the defaults are shown and used.
    if (!campaign) res = slurm::withDefaults(res);
    shown(c.add_option("--job-name", res.jobName,
                       "Job name (any text; quoted)" +
                           std::string(campaign ? "; default: foldfarm-<campaign name>" : "")));
    c.add_option("-p,--partition", res.partition, "Partition(s), comma-separated");
    c.add_option("-A,--account", res.account, "Account to charge");
    c.add_option("-q,--qos", res.qos, "Quality of service");
    c.add_option("-t,--time", res.time,
                 "Time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED");
    c.add_option("-C,--constraint", res.constraint, "Node features, e.g. a100&ib");
    c.add_option("--mem", res.mem, "Memory per node, e.g. 64G");
    // An array element runs on one node (its lanes side by side); a campaign over several
    // nodes in one allocation is the pilot (before: `--nodes` was taken there and ignored).
    if (requeue) c.add_option("-N,--nodes", res.nodes, "Nodes")->capture_default_str();
    shown(c.add_option("--gpus-per-node", res.gpusPerNode, "GPUs per node (0: CPU nodes)" + spec));
    // Campaign tasks only: a pretraining runs one rank per GPU (before: listed for `render
    // pretrain` too, and ignored there without a word).
    if (campaign)
      shown(
          c.add_option("--tasks-per-gpu", res.tasksPerGpu, "Campaign tasks sharing one GPU" + spec))
          ->check(CLI::Range(1, 4096));
    shown(c.add_option("--tasks-per-node", res.tasksPerNode,
                       "Ranks/task slots per node on CPU nodes" + spec))
        ->check(CLI::Range(1, 4096));
    shown(c.add_option("-c,--cpus-per-task", res.cpusPerTask, "CPUs (and threads) per task" + spec))
        ->check(CLI::Range(1, 4096));
    c.add_option("-o,--output", res.output,
                 "Output file pattern (%A array job, %a element, %j job)");
    c.add_option("-e,--error", res.error, "Error file pattern (default: with --output)");
    c.add_option("--chdir", res.workDir, "Working directory of the job");
    c.add_option("--setup", res.setupLines,
                 "A shell line run before the workers (module load …, export …); repeatable. "
                 "These lines are your own shell and are copied verbatim");
    c.add_option("--setup-file", setupFiles, "A file of setup lines, copied verbatim");
    c.add_option("--signal-grace", res.signalGraceSeconds,
                 "Seconds before the time limit when USR1 asks workers to checkpoint (0: none)")
        ->capture_default_str();
    if (requeue) {
      c.add_flag("--requeue", res.requeue,
                 "Let Slurm requeue the job; an interrupted job requeues itself");
      c.add_option("--mpi", res.mpi,
                   "srun's MPI plugin for the ranks (`srun --mpi=list` lists the site's; "
                   "'default': the site's MpiDefault, no --mpi)")
          ->capture_default_str();
    }
    c.add_option("--foldfarm", res.foldfarm,
                 "Path of the executable the script runs on the compute nodes (default: the "
                 "foldfarm-torch beside this foldfarm)");
  }

  SbatchResources resolved() const { return slurm::resolveResources(res, setupFiles); }
};

struct RenderArgs {
  ResourceArgs res;
  std::string dir;
  std::vector<std::string> extra;
  int tasksPerElement = 0;
  int throttle = 0;
  std::string manifestDir;
};

// Opening a campaign validates its spec, task kind included; the submitter never runs
// tasks, but the kind's name must be known.
void registerKinds() {
  campaign::registerTaskKinds();
}

// The campaign of a rendered script, by its absolute path: the script names it, and the
// job may run in another directory (--chdir).
jobs::Campaign openForRender(const std::string& dir) {
  registerKinds();
  return jobs::Campaign::open(fs::absolute(dir).lexically_normal().string(),
                              jobs::Campaign::Access::kReadOnly);
}

void renderArray(const RenderArgs& a) {
  jobs::Campaign c = openForRender(a.dir);
  // The elements `slurm submit` would submit: the spec fills what the options leave.
  SbatchResources r = slurm::arrayElementResources(c.spec(), a.res.resolved());
  std::vector<std::string> ids;
  for (const auto& t : c.tasks(jobs::TaskState::kPending)) ids.push_back(t.id);
  if (ids.empty()) throw InputError(a.dir + ": no pending tasks to render an array for");
  slurm::SlurmClient client;
  slurm::ArrayPlanOptions po;
  po.lanes = slurm::arrayElementLanes(r);
  po.tasksPerElement = a.tasksPerElement;
  po.throttle = a.throttle;
  po.limits = client.limits();
  po.queuedJobs = 0;
  slurm::ArrayPlan plan = slurm::planArrays(ids, po);
  const std::string mdir = a.manifestDir.empty()
                               ? c.dir() + "/slurm"
                               : fs::absolute(a.manifestDir).lexically_normal().string();
  std::vector<std::string> scripts;
  for (size_t k = 0; k < plan.arrays.size(); ++k) {
    slurm::ArrayJob job;
    job.campaignDir = c.dir();
    job.manifestPath = mdir + "/manifest-" + std::to_string(k) + ".tsv";
    job.elements = static_cast<int>(plan.arrays[k].shards.size());
    job.throttle = plan.arrays[k].throttle;
    job.lanes = po.lanes;
    scripts.push_back(slurm::renderArrayScript(r, job));
  }
  // Everything rendered: only now write the manifests (when asked; the directory made, its
  // parent must exist) and print.
  if (!a.manifestDir.empty()) {
    makeDirectory(mdir);
    for (size_t k = 0; k < plan.arrays.size(); ++k) {
      writeFileAtomic(mdir + "/manifest-" + std::to_string(k) + ".tsv",
                      slurm::manifestText(plan.arrays[k]));
    }
  }
  std::fprintf(stderr,
               "foldfarm: %zu pending task(s) -> %zu array(s), %d element(s) of <= %d task(s) "
               "(%d element(s) per array at most, MaxJobCount %d%s)%s\n",
               ids.size(), plan.arrays.size(), plan.elements(), plan.tasksPerElement,
               po.limits.maxArrayElements(), po.limits.maxJobCount,
               po.limits.fromCluster ? ", from scontrol" : ", Slurm defaults",
               a.manifestDir.empty() ? "; manifests not written (use --manifest-dir)" : "");
  for (size_t k = 0; k < scripts.size(); ++k) {
    if (scripts.size() > 1)
      std::printf("%s# ---- array %zu of %zu ----\n", k ? "\n" : "", k + 1, scripts.size());
    std::fputs(scripts[k].c_str(), stdout);
  }
}

struct SubmitArgs {
  ResourceArgs res;
  std::string dir;
  campaign::SubmitRequest request;
  bool noWait = false;

  void submit(const CLI::App& app) {
    campaign::SubmitRequest r = request;
    // The options given on this command line: the others come from the last submission's
    // record (D/slurm/submit-options.json) when there is one.
    r.given = givenOptionNames(app);
    r.options.resources = res.res;
    r.setup_files = res.setupFiles;
    r.options.wait = !noWait;
    campaign::submitCommand(dir, r);
  }
};

}  // namespace

void registerSlurmCommands(CommandGroups& g) {
  CLI::App* s = addSlurmGroup(g.root);
  CLI::App* render = s->add_subcommand("render", "Print a batch script to stdout");
  render->require_subcommand(1);

  auto pre = std::make_shared<RenderArgs>();
  CLI::App* rp = render->add_subcommand(
      "pretrain",
      "Data-parallel pretraining: srun --mpi=pmix … foldfarm pretrain ARGS…, one rank per GPU");
  pre->res.addTo(*rp, false);
  rp->add_option("args", pre->extra, "Arguments of `foldfarm pretrain` (after --)");
  rp->callback([pre] {
    const std::string script = slurm::renderPretrainScript(pre->res.resolved(), pre->extra);
    // A job that cannot start should fail here, not after its wait in the queue.
    checkPretrainArguments(pre->extra, "slurm render pretrain");
    std::fputs(script.c_str(), stdout);
  });

  auto pil = std::make_shared<RenderArgs>();
  CLI::App* rpl = render->add_subcommand(
      "pilot", "Campaign pilot: one allocation running `foldfarm campaign run D --executor mpi`");
  pil->res.addTo(*rpl, true);
  rpl->add_option("dir", pil->dir, "Campaign directory")->required();
  rpl->add_option("args", pil->extra, "More arguments of `campaign run` (after --)");
  rpl->callback([pil] {
    jobs::Campaign c = openForRender(pil->dir);
    const SbatchResources r = slurm::pilotResources(c.spec(), pil->res.resolved(), pil->dir);
    const std::string script = slurm::renderPilotScript(r, c.dir(), pil->extra);
    // The pilot's own command line, as it will run: refused here rather than in the queue.
    std::vector<std::string> run = {c.dir(), "--executor", "mpi"};
    run.insert(run.end(), pil->extra.begin(), pil->extra.end());
    checkCampaignRunArguments(run, "slurm render pilot");
    std::fputs(script.c_str(), stdout);
  });

  auto arr = std::make_shared<RenderArgs>();
  CLI::App* ra = render->add_subcommand(
      "array",
      "Campaign as job arrays over its pending tasks (split under MaxArraySize/MaxJobCount)");
  arr->res.addTo(*ra, true, /*requeue=*/false);
  ra->add_option("dir", arr->dir, "Campaign directory")->required();
  ra->add_option("--tasks-per-element", arr->tasksPerElement,
                 "Tasks per array element (0: automatic)")
      ->capture_default_str();
  ra->add_option("--throttle", arr->throttle,
                 "Elements running at once, all arrays together (%K; 0: none)")
      ->capture_default_str();
  ra->add_option("--manifest-dir", arr->manifestDir,
                 "Write the manifests (task shards) here (made if missing; its parent must exist)");
  ra->callback([arr] { renderArray(*arr); });

  auto sub = std::make_shared<SubmitArgs>();
  CLI::App* sc = s->add_subcommand(
      "submit",
      "Run campaign D as Slurm job arrays and watch it until done (the results on disk are the "
      "truth: tasks whose job ended without a result are resubmitted)");
  sub->res.addTo(*sc, true, /*requeue=*/false);
  sc->add_option("dir", sub->dir, "Campaign directory")->required();
  sc->add_option("--tasks-per-element", sub->request.options.tasksPerElement,
                 "Tasks per array element (0: automatic)")
      ->capture_default_str();
  sc->add_option("--throttle", sub->request.options.throttle,
                 "Elements running at once, all arrays together (%K; 0: none)")
      ->capture_default_str();
  sc->add_flag("--no-wait", sub->noWait, "Submit and return without watching");
  sc->add_option("--poll", sub->request.options.pollInitialS,
                 "First squeue interval in seconds (backs off)")
      ->capture_default_str()
      ->check(cli::kPositive);
  sc->add_option("--poll-max", sub->request.options.pollMaxS, "Longest squeue interval in seconds")
      ->capture_default_str()
      ->check(cli::kPositive);
  sc->add_option("--max-submissions", sub->request.options.maxSubmissions,
                 "Give up on a task whose jobs ended this many times without a result")
      ->capture_default_str();
  sc->add_flag("--json", sub->request.json, "Print the summary as JSON");
  addAggregateFlag(*sc, sub->request.aggregate, " (here, once the watch has seen them done)");
  sc->callback([sub, sc] { sub->submit(*sc); });

  registerSlurmStatusCommand(*s);
}

}  // namespace foldfarm::app
