// Campaigns through Slurm job arrays on the real local cluster: array elements run the
// jobs library's `work D --task ID …` (ff_jobs_tool, the torch-free front end of
// `foldfarm campaign work`) and write results only; the submitting process
// (runCampaignOnSlurm) is the only journal writer.
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <optional>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "jobs/accept_inputs.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/extend_campaign.hpp"
#include "jobs/task_kind.hpp"
#include "jobs/task_lease.hpp"
#include "slurm/array_plan.hpp"
#include "slurm/sbatch_script.hpp"
#include "slurm/slurm_campaign.hpp"
#include "tests/jobs/test_util.hpp"
#include "tests/slurm/slurm_fixture.hpp"

using namespace foldfarm;
using namespace foldfarm::slurm;
using namespace foldfarm::slurm::testing;
using jobs::TaskState;

namespace {

const char* kHostile = "c a m p 'q' \"dq\" $(touch INJECTED) `touch INJECTED2`; touch INJECTED3";

std::string createSleepCampaign(const std::string& dir, int tasks, double seconds,
                                const std::string& executor = "slurm") {
  jobs::registerBuiltinTaskKinds();
  nlohmann::json spec = {{"name", "sleepers"},
                         {"task", "sleep"},
                         {"replicas", tasks},
                         {"members", 1},
                         {"seed", 7},
                         {"params", {{"seconds", seconds}}},
                         {"executor", executor},
                         {"resources", {{"cpu_slots", 1}}}};
  jobs::Campaign::init(jobs::parseCampaignSpec(spec, "test spec", dir), dir);
  return dir;
}

SlurmCampaignOptions fastOptions() {
  SlurmCampaignOptions o;
  o.workArgv = {FF_JOBS_TOOL, "work"};
  o.pollInitialS = 1.0;
  o.pollMaxS = 2.0;
  return o;
}

// One task per element, at most `throttle` elements at once, one round without watching.
SlurmCampaignOptions oneTaskPerElement(int throttle) {
  SlurmCampaignOptions o = fastOptions();
  o.tasksPerElement = 1;
  o.throttle = throttle;
  o.wait = false;
  return o;
}

// A textual dump of everything the journal holds that a submission could change.
std::string journalDump(const std::string& dir) {
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  std::string s;
  for (const auto& t : c.tasks()) {
    s += t.id + " " + std::string(jobs::toString(t.state)) + " a=" + std::to_string(t.attempts) +
         " ext=" + t.external_id + " n=" + std::to_string(c.journal().eventCount(t.index)) + "\n";
  }
  return s + "events=" + std::to_string(c.journal().eventCount(-1)) + "\n";
}

// What a submitter leaves behind when it stops right after `sbatch --hold` and saving the
// job id (D/slurm/sub-0001/{manifest.tsv,array.sbatch,jobid}), before the journal write.
// With saveId false: stopped a moment earlier, before the id was saved. With attempt > 0 the
// manifest names it for every task, promised in the task directories as the submitter does.
std::string leaveHeldSubmission(const std::string& dir,
                                const std::vector<std::vector<std::string>>& shards,
                                bool saveId = true, int attempt = 0) {
  const std::string sub = dir + "/slurm/sub-0001";
  std::filesystem::create_directories(sub);
  PlannedArray a;
  a.shards = shards;
  ArrayJob job;
  job.campaignDir = dir;
  job.manifestPath = sub + "/manifest.tsv";
  job.elements = static_cast<int>(shards.size());
  job.workArgv = {FF_JOBS_TOOL, "work"};
  SbatchResources r;
  r.output = sub + "/slurm-%A_%a.out";
  if (attempt > 0) {
    std::map<std::string, int> attempts;
    for (const auto& shard : shards)
      for (const auto& id : shard) {
        attempts[id] = attempt;
        jobs::promiseAttempt(dir + "/tasks/" + id, attempt);
      }
    writeFileAtomic(job.manifestPath, manifestText(a, attempts));
  } else {
    writeFileAtomic(job.manifestPath, manifestText(a));
  }
  writeFileAtomic(sub + "/array.sbatch", renderArrayScript(r, job));
  SubmittedJob j = SlurmClient().submit(sub + "/array.sbatch", {"--hold"});
  if (saveId) writeFileAtomic(sub + "/jobid", j.jobId + "\n");
  return j.jobId;
}

bool allHeld(const std::string& jobId) {
  std::vector<QueuedJob> q = SlurmClient().queue({jobId});
  if (q.empty()) return false;
  for (const auto& j : q) {
    if (j.state != "PENDING" || j.reason.rfind("JobHeld", 0) != 0) return false;
  }
  return true;
}

// A campaign of two 60 s sleep tasks in `dir`, submitted as one array of `per_element` tasks
// per element without watching it; the array's job id ("" when not one array).
std::string submitTwoSleepers(const std::string& dir, int per_element) {
  createSleepCampaign(dir, 2, 60.0);
  SlurmCampaignOptions o = fastOptions();
  o.wait = false;
  o.tasksPerElement = per_element;
  const SlurmCampaignSummary first = runCampaignOnSlurm(dir, o);
  return first.jobIds.size() == 1 ? first.jobIds[0] : std::string();
}

// `foldfarm campaign resume D --executor local` while D's two tasks sit in live array
// elements: refused (exit 1, as a refusal by what holds the tasks), naming them as `named` says.
void expectALocalRunRefused(const std::string& dir, const std::string& named) {
  ProcessResult here =
      runProcess({FOLDFARM_BINARY, "campaign", "resume", dir, "--executor", "local"});
  EXPECT_EQ(here.status(), 1) << here.err;
  EXPECT_NE(here.err.find(": 2 task(s) are in Slurm jobs still queued or running (" + named +
                          "); let `foldfarm slurm submit"),
            std::string::npos)
      << here.err;
}

class SlurmCampaign : public ::testing::Test {
 protected:
  void SetUp() override {
    ensureLocalCluster();
    base_ = makeTempDir("ff-slurm-campaign");
  }
  void TearDown() override {
    cancelJobsUnder(base_);
    std::filesystem::remove_all(base_);
  }
  std::string base_;
};

}  // namespace

// The record's list (forEachRecordedOption) names options `slurm submit` has: a renamed
// option would otherwise be taken from the record although given on the command line.
TEST(SlurmSubmitOptions, EveryRecordedOptionIsAnOptionOfSlurmSubmit) {
  if (std::string(FOLDFARM_BINARY).empty() || !std::filesystem::exists(FOLDFARM_BINARY))
    GTEST_SKIP() << "foldfarm executable not built";
  const ProcessResult help = runProcess({FOLDFARM_BINARY, "slurm", "submit", "--help"});
  ASSERT_TRUE(help.ok()) << help.err;
  int named = 0;
  forEachRecordedOption([&](const RecordedOption& opt, auto) {
    for (const char* name : opt.options) {
      if (name == nullptr) continue;
      ++named;
      EXPECT_NE(help.out.find(std::string("--") + name + " "), std::string::npos)
          << "--" << name << " (recorded as " << opt.key << ") is not in slurm submit --help";
    }
  });
  EXPECT_GE(named, 20);
}

// Sleep tasks as arrays complete; the campaign directory, job name and output pattern
// carry spaces, quotes, $(), `` and ; and nothing is injected.
TEST_F(SlurmCampaign, SleepCampaignInHostilePathCompletes) {
  const std::string dir = base_ + "/" + kHostile;
  createSleepCampaign(dir, 6, 0.5);
  SlurmCampaignOptions o = fastOptions();
  o.resources.jobName = std::string("job ") + kHostile;
  o.resources.output = base_ + "/out $(touch INJECTED4) %A_%a.txt";
  o.throttle = 2;
  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(sum.counts[TaskState::kDone], 6);
  EXPECT_EQ(sum.tasksSubmitted, 6);
  EXPECT_EQ(sum.tasksRequeued, 0);
  EXPECT_EQ(sum.resultsIngested, 6);

  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id;
    EXPECT_EQ(t.attempts, 1) << t.id;
    EXPECT_EQ(t.ingested, 1) << t.id;
    EXPECT_EQ(arrayJobIdOf(t.external_id), sum.jobIds.at(0)) << t.external_id;
  }
  int outputs = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(base_)) {
    std::string name = e.path().filename().string();
    for (const char* m : {"INJECTED", "INJECTED2", "INJECTED3", "INJECTED4"})
      EXPECT_NE(name, m) << e.path();
    if (name.rfind("out $(touch INJECTED4) ", 0) == 0) ++outputs;
  }
  EXPECT_EQ(outputs, 6);  // one output file per element, at the quoted path
}

// A campaign named by a relative path runs with the jobs in another working directory
// (--chdir): the scripts, manifests and output patterns name it by its absolute path (they
// once named it as given, and every element failed to find it).
TEST_F(SlurmCampaign, ARelativeCampaignRunsWhereverItsJobsStart) {
  createSleepCampaign(base_ + "/rel", 2, 0.2);
  std::filesystem::create_directories(base_ + "/elsewhere");
  const std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(base_);
  SlurmCampaignOptions o = fastOptions();
  o.resources.workDir = base_ + "/elsewhere";
  SlurmCampaignSummary sum;
  try {
    sum = runCampaignOnSlurm("rel", o);
  } catch (...) {
    std::filesystem::current_path(cwd);
    throw;
  }
  std::filesystem::current_path(cwd);
  EXPECT_EQ(sum.counts[TaskState::kDone], 2);
  EXPECT_EQ(sum.tasksRequeued, 0);
  const std::string script = readFile(base_ + "/rel/slurm/sub-0001/array.sbatch");
  EXPECT_NE(script.find("ff_campaign='" + base_ + "/rel'"), std::string::npos) << script;
  EXPECT_TRUE(std::filesystem::is_empty(base_ + "/elsewhere"));
}

// `campaign retry D --cancelled` of a Slurm campaign: the submitter moves the cancelled tasks
// back to pending once it holds the journal, and submits them.
TEST_F(SlurmCampaign, RetryOfCancelledTasksSubmitsThem) {
  const std::string dir = createSleepCampaign(base_ + "/cancelled", 2, 0.1);
  {
    jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kWriter);
    ASSERT_EQ(c.cancel("test"), 2);
  }
  SlurmCampaignOptions o = fastOptions();
  o.retry = {TaskState::kCancelled};
  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(sum.tasksRetried, 2);
  EXPECT_EQ(sum.counts[TaskState::kDone], 2);
  EXPECT_EQ(sum.tasksSubmitted, 2);
}

// `campaign run D --executor slurm` of a campaign whose spec says local records the options it
// submitted with, so that a later `campaign resume D` goes through Slurm again (before: nothing
// was recorded, and the resume ran the tasks on the login node).
TEST_F(SlurmCampaign, ARunThroughSlurmByNameIsResumedThroughSlurm) {
  if (std::string(FOLDFARM_BINARY).empty() || !std::filesystem::exists(FOLDFARM_BINARY))
    GTEST_SKIP() << "foldfarm executable not built";
  const std::string dir = createSleepCampaign(base_ + "/byname", 2, 0.1, "local");
  const ProcessResult run =
      runProcess({FOLDFARM_BINARY, "campaign", "run", dir, "--executor", "slurm"});
  EXPECT_EQ(run.status(), 0) << run.err;
  EXPECT_TRUE(std::filesystem::exists(dir + "/slurm/submit-options.json")) << run.err;
  const ProcessResult resume = runProcess({FOLDFARM_BINARY, "campaign", "resume", dir});
  EXPECT_EQ(resume.status(), 0) << resume.err;
  EXPECT_NE(resume.err.find("submitted through Slurm before"), std::string::npos) << resume.err;
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], 2);
}

// `slurm submit D` records the options it submitted with; `campaign retry D --cancelled` of a
// Slurm campaign submits with them (before: with Slurm's defaults: no time limit, throttle or
// output pattern of the user's, and on a real cluster no partition or account), and a submit
// that finds no pending task names the retry that submits the cancelled ones.
TEST_F(SlurmCampaign, ARetrySubmitsWithTheOptionsOfTheLastSubmit) {
  // A spec that says "local" (the README's): submitted through Slurm once, its retry is
  // submitted too (before: run on the login node, where the retry advised by the Slurm
  // messages was typed).
  const std::string dir = createSleepCampaign(base_ + "/options", 2, 0.1, "local");
  {
    jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kWriter);
    ASSERT_EQ(c.cancel("test"), 2);
  }
  const ProcessResult sub =
      runProcess({FOLDFARM_BINARY, "slurm", "submit", dir, "--time", "7", "--throttle", "1",
                  "--output", base_ + "/logs/job-%A_%a.out", "--poll", "0.3", "--poll-max", "1"});
  EXPECT_EQ(sub.status(), 0) << sub.err;
  EXPECT_NE(sub.err.find("no pending task to submit; `foldfarm campaign retry " + dir +
                         " --cancelled` submits the cancelled tasks with these options"),
            std::string::npos)
      << sub.err;
  ASSERT_TRUE(std::filesystem::exists(dir + "/slurm/submit-options.json"));
  const ProcessResult retry =
      runProcess({FOLDFARM_BINARY, "campaign", "retry", dir, "--cancelled"});
  EXPECT_EQ(retry.status(), 0) << retry.err;
  EXPECT_NE(retry.err.find("submitting with the options of its last submission ("),
            std::string::npos)
      << retry.err;
  EXPECT_NE(retry.err.find("submitted through Slurm before (" + dir +
                           "/slurm/submit-options.json): submitted again with its options; "
                           "`--executor local` runs the tasks here"),
            std::string::npos)
      << retry.err;
  const std::string script = readFile(dir + "/slurm/sub-0001/array.sbatch");
  EXPECT_NE(script.find("#SBATCH --time=7\n"), std::string::npos) << script;
  EXPECT_NE(script.find("%1\n"), std::string::npos) << script;
  EXPECT_NE(script.find("/job-%A_%a.out"), std::string::npos) << script;
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], 2);
  // The output pattern's directory, missing, was made (before: every job failed with no
  // output anywhere, and its tasks' submissions ended "without a result").
  size_t outputs = 0;
  for (const auto& e : std::filesystem::directory_iterator(base_ + "/logs"))
    outputs += e.path().filename().string().rfind("job-", 0) == 0 ? 1 : 0;
  EXPECT_EQ(outputs, 2u);
  // A bare `slurm submit D` (what the watch's messages offer) keeps what it is not given
  // (before: it recorded Slurm's defaults over them); one option given changes that one.
  const auto recorded = [&] {
    return nlohmann::json::parse(readFile(dir + "/slurm/submit-options.json"))["resources"];
  };
  ASSERT_TRUE(runProcess({FOLDFARM_BINARY, "slurm", "submit", dir, "--no-wait"}).ok());
  EXPECT_EQ(recorded()["time"], "7");
  EXPECT_EQ(recorded()["output"], base_ + "/logs/job-%A_%a.out");
  ASSERT_TRUE(
      runProcess({FOLDFARM_BINARY, "slurm", "submit", dir, "--no-wait", "--time", "9"}).ok());
  EXPECT_EQ(recorded()["time"], "9");
  EXPECT_EQ(recorded()["output"], base_ + "/logs/job-%A_%a.out");
  EXPECT_EQ(nlohmann::json::parse(readFile(dir + "/slurm/submit-options.json"))["throttle"], 1);
  // Nothing to submit: options sbatch would refuse (`--test-only`) are not recorded (before:
  // recorded unchecked, and the next submission pended for ever on a --mem no node has).
  const ProcessResult huge =
      runProcess({FOLDFARM_BINARY, "slurm", "submit", dir, "--no-wait", "--mem", "999999G"});
  EXPECT_TRUE(huge.ok()) << huge.err;
  EXPECT_NE(huge.err.find("these options are not recorded: `sbatch --test-only` refuses them ("),
            std::string::npos)
      << huge.err;
  EXPECT_EQ(recorded()["mem"], "");
  EXPECT_EQ(recorded()["time"], "9");
  EXPECT_FALSE(std::filesystem::exists(dir + "/slurm/options-check.sbatch"));
  // A retry of a campaign never submitted by `slurm submit` records nothing of its defaults.
  const std::string fresh = createSleepCampaign(base_ + "/fresh", 1, 0.1);
  {
    jobs::Campaign c = jobs::Campaign::open(fresh, jobs::Campaign::Access::kWriter);
    ASSERT_EQ(c.cancel("test"), 1);
  }
  const ProcessResult bare =
      runProcess({FOLDFARM_BINARY, "campaign", "retry", fresh, "--cancelled"});
  EXPECT_EQ(bare.status(), 0) << bare.err;
  EXPECT_NE(bare.err.find("no `foldfarm slurm submit` of it recorded its options"),
            std::string::npos)
      << bare.err;
  EXPECT_FALSE(std::filesystem::exists(fresh + "/slurm/submit-options.json"));
  // Damaged, the record is refused naming it, not guessed at.
  writeFileAtomic(dir + "/slurm/submit-options.json", "{\"resources\": 1}");
  try {
    recordedSubmitOptions(dir);
    ADD_FAILURE() << "a damaged submit-options.json was read";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("submit-options.json: damaged"), std::string::npos)
        << e.what();
  }
}

// An input replaced during the watch (here by the nominal task itself): the variation's task,
// ready once the nominal one is done, is not submitted; the submitter stops with one line
// naming the file, the finished task's result ingested and the other task pending, unrun.
TEST_F(SlurmCampaign, AnInputReplacedDuringTheWatchStopsTheSubmissions) {
  jobs::registerBuiltinTaskKinds();
  const std::string dir = base_ + "/inputs", mc = base_ + "/mc.h5", ran = base_ + "/ran";
  jobs::testing::writeText(mc, "simulation");
  std::filesystem::create_directories(ran);
  const nlohmann::json spec = {
      {"name", "inputs"},
      {"task", "command"},
      {"inputs", {{"mc", mc}}},
      {"params",
       {{"argv", {"/bin/sh", "-c", "touch " + ran + "/$(basename $PWD); printf ' v2' >> " + mc}}}},
      {"variations", {{"alt", nlohmann::json::object()}}},
      {"executor", "slurm"},
      {"resources", {{"cpu_slots", 1}}}};
  jobs::Campaign::init(jobs::parseCampaignSpec(spec, "test spec", base_), dir);
  std::string refused;
  try {
    runCampaignOnSlurm(dir, fastOptions());
  } catch (const InputError& e) {
    refused = e.what();
  }
  EXPECT_NE(refused.find(mc + " changed since `campaign init` (10 bytes"), std::string::npos)
      << refused;
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    if (t.id == "r0000m0") {
      EXPECT_EQ(t.state, TaskState::kDone) << t.reason;
    } else {
      EXPECT_EQ(t.state, TaskState::kPending) << t.id << ": " << t.reason;
      EXPECT_EQ(t.attempts, 0) << t.id << " was submitted";
      EXPECT_FALSE(jobs::testing::exists(ran + "/" + t.id));
    }
  }
}

// scancel in the middle: the tasks without a result go back to pending and are the only
// ones resubmitted; every task ends done with exactly one result ingested.
// A replaced input accepted between two runs on Slurm (`campaign accept-inputs`): the second
// run submits exactly the tasks that read it, each once more, on the new file; the others are
// not submitted again.
TEST_F(SlurmCampaign, AcceptedInputsResubmitOnlyTheTasksThatReadThem) {
  jobs::registerBuiltinTaskKinds();
  const std::string dir = base_ + "/accept", mc = base_ + "/mc.h5", alt = base_ + "/mc_alt.h5",
                    ran = base_ + "/ran";
  jobs::testing::writeText(mc, "simulation\n");
  jobs::testing::writeText(alt, "alternative\n");
  std::filesystem::create_directories(ran);
  const auto reading = [&](const std::string& file) {
    return nlohmann::json{
        {"argv", {"/bin/sh", "-c", "cat '" + file + "' >> " + ran + "/$(basename $PWD)"}}};
  };
  const nlohmann::json spec = {
      {"name", "accept"},
      {"task", "command"},
      {"replicas", 2},
      {"inputs", {{"mc", mc}}},
      {"params", reading(mc)},
      {"variations",
       {{"alt", {{"replicas", 2}, {"inputs", {{"mc", alt}}}, {"params", reading(alt)}}}}},
      {"executor", "slurm"},
      {"resources", {{"cpu_slots", 1}}}};
  jobs::Campaign::init(jobs::parseCampaignSpec(spec, "test spec", base_), dir);
  runCampaignOnSlurm(dir, fastOptions());
  jobs::testing::writeText(alt, "alternative v2\n");
  const jobs::AcceptSummary accepted = jobs::acceptInputs(dir, /*dry_run=*/false);
  EXPECT_EQ(accepted.rerun, (std::vector<std::string>{"alt.r0000m0", "alt.r0001m0"}));
  runCampaignOnSlurm(dir, fastOptions());
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id << ": " << t.reason;
    const bool variation = t.id.rfind("alt.", 0) == 0;
    EXPECT_EQ(t.attempts, variation ? 2 : 1) << t.id;
    EXPECT_EQ(jobs::testing::readText(ran + "/" + t.id),
              variation ? "alternative\nalternative v2\n" : "simulation\n")
        << t.id;
  }
}

// A campaign extended while its jobs run (`campaign extend`, which renumbers the variation's
// tasks behind the new nominal one): the running tasks' results are ingested as before, the
// next run submits only the new task, and every task runs exactly once.
TEST_F(SlurmCampaign, ExtendedWhileItsJobsRunSubmitsOnlyTheNewTasks) {
  jobs::registerBuiltinTaskKinds();
  const std::string dir = base_ + "/extend", ran = base_ + "/ran-extend";
  std::filesystem::create_directories(ran);
  const nlohmann::json spec = {
      {"name", "extend"},
      {"task", "command"},
      {"replicas", 2},
      {"params",
       {{"argv", {"/bin/sh", "-c", "sleep 2; echo ran >> " + ran + "/$(basename $PWD)"}}}},
      {"variations", {{"alt", {{"replicas", 2}, {"warm_start", false}}}}},
      {"executor", "slurm"},
      {"resources", {{"cpu_slots", 1}}}};
  jobs::Campaign::init(jobs::parseCampaignSpec(spec, "test spec", base_), dir);
  SlurmCampaignOptions o = fastOptions();
  o.wait = false;
  const SlurmCampaignSummary first = runCampaignOnSlurm(dir, o);
  ASSERT_EQ(first.tasksSubmitted, 4);

  const jobs::ExtendSummary added = jobs::extendCampaign(dir, {"", 3, 0, ""}, /*dry_run=*/false);
  EXPECT_EQ(added.first_added, std::vector<std::string>{"r0002m0"});
  EXPECT_EQ(added.renumbered, 2);  // alt.r0000m0 and alt.r0001m0
  {
    jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
    EXPECT_EQ(c.journal().task("alt.r0001m0")->state, TaskState::kRunning);
    EXPECT_EQ(c.journal().task("alt.r0001m0")->index, 4);
  }

  const SlurmCampaignSummary second = runCampaignOnSlurm(dir, fastOptions());
  EXPECT_EQ(second.tasksSubmitted, 1);
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  ASSERT_EQ(c.tasks().size(), 5u);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id << ": " << t.reason;
    EXPECT_EQ(t.attempts, 1) << t.id;
    EXPECT_EQ(t.ingested, 1) << t.id;
    EXPECT_EQ(jobs::testing::readText(ran + "/" + t.id), "ran\n") << t.id;
  }
}

TEST_F(SlurmCampaign, ScancelMidwayResubmitsOnlyTheMissingTasks) {
  const std::string dir = createSleepCampaign(base_ + "/c", 6, 2.0);
  SlurmCampaignOptions o = oneTaskPerElement(2);
  SlurmCampaignSummary first = runCampaignOnSlurm(dir, o);
  ASSERT_EQ(first.jobIds.size(), 1u);
  const std::string job = first.jobIds[0];

  // Cancel once two results are on disk (the first two elements finished).
  auto results = [&] {
    std::set<std::string> done;
    jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
    for (const auto& t : c.tasks()) {
      auto r = jobs::readTaskResult(c.resultPath(t.id));
      if (r && r->status == 0) done.insert(t.id);
    }
    return done;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (results().size() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_GE(results().size(), 2u);
  ASSERT_TRUE(runProcess({"scancel", job}).ok());
  SlurmClient client;
  waitForJob(client, job, 30);
  const std::set<std::string> before = results();
  ASSERT_LT(before.size(), 6u) << "the array finished before it was cancelled";

  o.wait = true;
  SlurmCampaignSummary second = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(second.counts[TaskState::kDone], 6);
  EXPECT_EQ(second.tasksSubmitted, static_cast<int>(6 - before.size()));
  // Each missing task came back to pending once: either its job ended without a result, or
  // the scancel's TERM reached its worker, which wrote an "interrupted" (75) result.
  const int missing = static_cast<int>(6 - before.size());
  // Ingested by this call: every task's final result (6), plus the interrupted ones.
  const int interruptedResults = second.resultsIngested - 6;
  EXPECT_GE(interruptedResults, 0);
  EXPECT_EQ(second.tasksRequeued + interruptedResults, missing);
  EXPECT_EQ(second.tasksStopped, interruptedResults);  // said apart (before: not counted)

  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id;
    EXPECT_EQ(t.ingested, 1) << t.id;
    const bool finishedFirst = before.count(t.id) > 0;
    EXPECT_EQ(t.attempts, finishedFirst ? 1 : 2) << t.id;
    EXPECT_EQ(arrayJobIdOf(t.external_id), finishedFirst ? job : second.jobIds.at(0)) << t.id;
  }
}

// A task whose jobs end without a result (here its worker exits 1 before it writes one) is
// given up at --max-submissions: failed in the journal, its reason naming the count and where
// to look, so that `campaign status` shows it and `campaign retry --failed` submits it again
// (before: it stayed pending with nothing said, and the watch ended with an error).
TEST_F(SlurmCampaign, ATaskWhoseJobsEndWithoutAResultFailsAfterMaxSubmissions) {
  const std::string dir = createSleepCampaign(base_ + "/lost", 1, 0.1);
  SlurmCampaignOptions o = fastOptions();
  o.workArgv = {"/bin/false"};
  o.maxSubmissions = 2;
  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(sum.counts[TaskState::kFailed], 1);
  EXPECT_EQ(sum.submissions, 2);
  EXPECT_EQ(sum.tasksRequeued, 1);  // the first end; the second gives up
  {
    jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
    const std::optional<jobs::TaskRecord> t = c.journal().task("r0000m0");
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->state, TaskState::kFailed);
    EXPECT_EQ(t->attempts, 2);
    EXPECT_NE(t->reason.find("; its Slurm jobs ended 2 times without a result (--max-submissions "
                             "2): see its task.log and the job output (" +
                             dir +
                             "/slurm/sub-*/); once the cause is mended, `foldfarm campaign "
                             "retry " +
                             dir + " --failed` submits it again"),
              std::string::npos)
        << t->reason;
  }
  o.workArgv = fastOptions().workArgv;
  o.retry = {TaskState::kFailed};
  sum = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(sum.counts[TaskState::kDone], 1);
  EXPECT_EQ(sum.tasksRetried, 1);
}

// --throttle K caps the elements of all arrays together: a task requeued after its element
// was scancelled waits while K elements of the first array are queued or running (before: a
// second array with a throttle of its own ran beside them), and is submitted once they end.
TEST_F(SlurmCampaign, TheThrottleCapsTheElementsOfEveryArrayTogether) {
  // Tasks that run until the test lets them end (a file `go`): the other element is still
  // queued or running when the second round looks, however slow the machine (a 4 s sleep
  // could end during the scancel and the round's Slurm queries).
  const std::string dir = base_ + "/throttle", go = base_ + "/go";
  jobs::registerBuiltinTaskKinds();
  const nlohmann::json spec = {
      {"name", "throttle"},
      {"task", "command"},
      {"replicas", 2},
      {"params",
       {{"argv",
         {"/bin/sh", "-c",
          "i=0; while [ ! -e '" + go + "' ] && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); done"}}}},
      {"executor", "slurm"},
      {"resources", {{"cpu_slots", 1}}}};
  jobs::Campaign::init(jobs::parseCampaignSpec(spec, "test spec", base_), dir);
  SlurmCampaignOptions o = oneTaskPerElement(1);
  const SlurmCampaignSummary first = runCampaignOnSlurm(dir, o);
  ASSERT_EQ(first.jobIds.size(), 1u);
  const std::string job = first.jobIds[0];
  SlurmClient client;
  // The element that runs first, scancelled (the other waits behind %1).
  std::string running;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (running.empty() && std::chrono::steady_clock::now() < deadline) {
    for (const auto& j : client.queue({job}))
      if (j.state == "RUNNING") running = j.externalId();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_FALSE(running.empty());
  ASSERT_TRUE(runProcess({"scancel", running}).ok());
  bool gone = false;
  while (!gone && std::chrono::steady_clock::now() < deadline) {
    gone = true;
    for (const auto& j : client.queue({job}))
      if (j.externalId() == running && !j.finished()) gone = false;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(gone);
  // Its task is pending again; the other element is queued or running: no room under %1.
  const SlurmCampaignSummary second = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(second.submissions, 0) << "an array beside the live element of " << job;
  EXPECT_EQ(second.tasksThrottled, 1);
  EXPECT_EQ(second.tasksStopped + second.tasksRequeued, 1);  // the scancelled element's task
  // Watching: the first array ends, then the task is submitted and done.
  std::ofstream(go).close();
  o.wait = true;
  const SlurmCampaignSummary third = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(third.counts.at(TaskState::kDone), 2);
  EXPECT_EQ(third.submissions, 1);
}

// The task's lease held by processes of another host (an attempt that outlived its job):
// each array element waits, is not started and records why; the submitter requeues the task
// without counting it toward --max-submissions and submits it again. Before, the element
// counted as a job that ended without a result, and at --max-submissions 1 the task was
// stranded after the first refusal.
TEST_F(SlurmCampaign, ALeaseHeldElsewhereDelaysTheTaskWithoutStrandingIt) {
  const std::string dir = base_ + "/held";
  jobs::registerBuiltinTaskKinds();
  nlohmann::json spec = {{"name", "held"},
                         {"task", "sleep"},
                         {"replicas", 1},
                         {"params", {{"seconds", 0.1}}},
                         {"retry", {{"lease_wait_s", 0.3}, {"backoff_s", 0}}},
                         {"executor", "slurm"},
                         {"resources", {{"cpu_slots", 1}}}};
  jobs::Campaign::init(jobs::parseCampaignSpec(spec, "test spec", dir), dir);
  const std::string task_dir =
      jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly).taskDir("r0000m0");
  // An element waits 0.3 s and the fence grace (5 s) and is refused; the holder ends once an
  // element recorded its refusal (at most 60 s: however late the first element starts).
  const pid_t holder = jobs::testing::holdLeaseAsAnotherHost(
      task_dir, 9, 60, {}, task_dir + "/" + jobs::kLeaseRefusedFile);
  ASSERT_GT(holder, 0);
  SlurmCampaignOptions o = fastOptions();
  o.maxSubmissions = 1;
  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, o);
  int status = 0;
  ASSERT_EQ(::waitpid(holder, &status, 0), holder);
  EXPECT_EQ(sum.counts[TaskState::kDone], 1);
  // Counted as never started, not as a job that ended without a result.
  EXPECT_GE(sum.tasksNotStarted, 1);
  EXPECT_EQ(sum.tasksRequeued, 0);
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  auto t = c.journal().task("r0000m0");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state, TaskState::kDone) << t->reason;
  EXPECT_GE(t->attempts, 2) << "an element was refused while the lease was held";
  EXPECT_EQ(t->failures, 0);
}

// sbatch refusing the job (unknown partition): one clear error from the command, a
// non-zero exit, the journal unchanged and no submission directory left behind.
TEST_F(SlurmCampaign, SbatchFailureLeavesTheJournalUnchanged) {
  const std::string dir = createSleepCampaign(base_ + "/c", 3, 0.1);
  const std::string before = journalDump(dir);
  const std::string sumBefore = runProcess({"sha256sum", dir + "/journal.sqlite"}).out;
  SlurmCampaignOptions o = fastOptions();
  o.resources.partition = "no-such-partition";
  try {
    runCampaignOnSlurm(dir, o);
    ADD_FAILURE() << "sbatch accepted an unknown partition";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("sbatch rejected"), std::string::npos) << msg;
    EXPECT_NE(msg.find("invalid partition"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_EQ(journalDump(dir), before);
  if (!std::string(FOLDFARM_BINARY).empty() && std::filesystem::exists(FOLDFARM_BINARY)) {
    // The command: one `foldfarm: error:` line and exit status 1.
    ProcessResult r = runProcess({FOLDFARM_BINARY, "slurm", "submit", dir, "--partition",
                                  "no-such-partition", "--poll", "1"});
    EXPECT_EQ(r.exitCode, 1) << r.err;
    int errorLines = 0;
    std::istringstream err(r.err);
    for (std::string line; std::getline(err, line);) {
      if (line.find("error") != std::string::npos) {
        ++errorLines;
        EXPECT_EQ(line.rfind("foldfarm: error: sbatch rejected", 0), 0u) << line;
      }
    }
    EXPECT_EQ(errorLines, 1) << r.err;
    EXPECT_EQ(journalDump(dir), before);
  }
  EXPECT_EQ(runProcess({"sha256sum", dir + "/journal.sqlite"}).out, sumBefore);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/slurm", ec)) {
    ADD_FAILURE() << "left behind: " << e.path();
  }
}

// A submitter stopped between `sbatch --hold` and the journal write: its held job (id saved
// in sub-0001/jobid, tasks still pending in the journal) is scancelled by the next
// `slurm submit`, never runs, and the tasks run once in a new submission.
void expectOrphanCancelled(const std::string& base, bool saveId) {
  const std::string dir = createSleepCampaign(base + "/c", 3, 0.1);
  const std::string orphan =
      leaveHeldSubmission(dir, {{"r0000m0", "r0001m0"}, {"r0002m0"}}, saveId);
  ASSERT_TRUE(allHeld(orphan));

  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, fastOptions());
  EXPECT_EQ(sum.orphansCancelled, 1);
  EXPECT_EQ(sum.heldReleased, 0);
  EXPECT_EQ(sum.counts[TaskState::kDone], 3);
  EXPECT_EQ(sum.tasksSubmitted, 3);
  ASSERT_EQ(sum.jobIds.size(), 1u);
  EXPECT_NE(sum.jobIds[0], orphan);
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id;
    EXPECT_EQ(t.attempts, 1) << t.id;
    EXPECT_EQ(arrayJobIdOf(t.external_id), sum.jobIds[0]) << t.id;
  }
  // The orphan never ran: slurmctld reports it cancelled (or has forgotten it) and no
  // element wrote output.
  for (const auto& j : SlurmClient().queue({orphan}))
    EXPECT_EQ(j.state, "CANCELLED") << j.externalId();
  for (const auto& e : std::filesystem::directory_iterator(dir + "/slurm/sub-0001")) {
    EXPECT_NE(e.path().filename().string().rfind("slurm-", 0), 0u) << "orphan ran: " << e.path();
  }
  EXPECT_EQ(slurp(dir + "/slurm/sub-0001/settled"), "cancelled\n");
}

TEST_F(SlurmCampaign, HeldJobTheJournalNeverRecordedIsCancelled) {
  expectOrphanCancelled(base_, true);
}

// The same, stopped before even the job id was saved: the job is found by its script path.
TEST_F(SlurmCampaign, HeldJobWhoseIdWasNeverSavedIsCancelled) {
  expectOrphanCancelled(base_, false);
}

// A submitter killed between `sbatch --hold` and the journal, whose held job the user then
// released by hand and which ran to its end: the next `slurm submit` reserves the attempts that
// job named, submits the tasks as attempt 2, and its elements take attempt 1's finished results
// and run nothing (before: attempt 1 again; its results were taken, the watch said "nothing
// left to watch", and its array ran every task a second time).
TEST_F(SlurmCampaign, AJobReleasedByHandAfterItsSubmitterDiedRunsNoTaskTwice) {
  const std::string dir = createSleepCampaign(base_ + "/c", 2, 0.1);
  const std::string orphan =
      leaveHeldSubmission(dir, {{"r0000m0", "r0001m0"}}, /*saveId=*/true, /*attempt=*/1);
  ASSERT_TRUE(allHeld(orphan));
  ASSERT_TRUE(runProcess({"scontrol", "release", orphan}).ok());
  SlurmClient client;
  waitForJob(client, orphan, 60);
  for (const char* id : {"r0000m0", "r0001m0"}) {
    const auto r = jobs::readTaskResult(dir + "/tasks/" + id + "/" + jobs::kTaskResultFile);
    ASSERT_TRUE(r.has_value()) << id << ": the released job did not run it";
    EXPECT_EQ(r->attempt, 1) << id;
    EXPECT_EQ(r->status, 0) << id;
  }

  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, fastOptions());
  EXPECT_EQ(sum.counts[TaskState::kDone], 2);
  EXPECT_EQ(sum.tasksSubmitted, 2);
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id;
    EXPECT_EQ(t.attempts, 2) << t.id;
    const auto r = jobs::readTaskResult(c.resultPath(t.id));
    ASSERT_TRUE(r.has_value()) << t.id;
    EXPECT_EQ(r->attempt, 2) << t.id;
    EXPECT_NE(r->reason.find("finished by attempt 1"), std::string::npos)
        << t.id << " ran again: " << r->reason;
  }
  EXPECT_EQ(slurp(dir + "/slurm/sub-0001/settled"), "ended\n");
}

// A submitter stopped after the journal write but before `scontrol release` (here: release
// fails): the job is recorded and held. The next `slurm submit` releases (adopts) it, and
// the tasks run once, under that job, without a resubmission.
TEST_F(SlurmCampaign, HeldJobTheJournalRecordsIsReleased) {
  const std::string dir = createSleepCampaign(base_ + "/c", 3, 0.1);
  const std::string fake = base_ + "/scontrol-release-fails";
  writeFileAtomic(
      fake,
      "#!/bin/sh\nif [ \"$1\" = release ]; then echo 'scontrol: error: simulated' >&2; exit 1; fi\n"
      "exec scontrol \"$@\"\n");
  ASSERT_EQ(::chmod(fake.c_str(), 0755), 0);
  SlurmCampaignOptions o = fastOptions();
  o.programs.scontrol = fake;
  o.wait = false;
  try {
    runCampaignOnSlurm(dir, o);
    ADD_FAILURE() << "a failing scontrol release went unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("recorded but held"), std::string::npos) << e.what();
  }
  std::string held;
  {
    jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
    for (const auto& t : c.tasks()) {
      ASSERT_EQ(t.state, TaskState::kRunning) << t.id;
      held = arrayJobIdOf(t.external_id);
    }
  }
  ASSERT_TRUE(allHeld(held));

  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, fastOptions());
  EXPECT_EQ(sum.heldReleased, 1);
  EXPECT_EQ(sum.orphansCancelled, 0);
  EXPECT_EQ(sum.tasksSubmitted, 0);
  EXPECT_EQ(sum.counts[TaskState::kDone], 3);
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id;
    EXPECT_EQ(t.attempts, 1) << t.id;
    EXPECT_EQ(arrayJobIdOf(t.external_id), held) << t.id;
  }
  EXPECT_EQ(slurp(dir + "/slurm/sub-0001/settled"), "released\n");
}

// sbatch that times out after slurmctld accepted the job (the reply was lost): the
// submitter keeps the submission's script, the next round finds the held job by it and
// cancels it, and the tasks are submitted again under a job the journal records — each
// runs once, as attempt 2 (the number promised to the lost job is never used again).
TEST_F(SlurmCampaign, SbatchTimingOutAfterSlurmctldAcceptedIsSettledAndEachTaskRunsOnce) {
  const std::string dir = createSleepCampaign(base_ + "/c", 3, 0.1);
  const std::string fake = base_ + "/sbatch-lost-reply";
  const std::string count = base_ + "/sbatch-calls";
  writeFileAtomic(
      fake, "#!/bin/sh\necho x >> '" + count +
                "'\n"
                "if [ \"$(wc -l < '" +
                count +
                "')\" -eq 1 ]; then\n"
                "  sbatch \"$@\" > /dev/null || exit 1\n"
                "  echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv "
                "operation' >&2; exit 1\nfi\nexec sbatch \"$@\"\n");
  ASSERT_EQ(::chmod(fake.c_str(), 0755), 0);
  SlurmCampaignOptions o = fastOptions();
  o.programs.sbatch = fake;
  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(sum.counts[TaskState::kDone], 3);
  EXPECT_EQ(sum.orphansCancelled, 1) << "the job sbatch lost the reply of was not cancelled";
  EXPECT_EQ(slurp(dir + "/slurm/sub-0001/settled"), "cancelled\n");
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id;
    EXPECT_EQ(t.attempts, 2) << t.id;
    EXPECT_EQ(t.ingested, 1) << t.id;
  }
}

// sbatch refusing for a submit limit (the QOS's cap on the user's jobs): nothing submitted,
// the tasks stay pending and a later round submits them (before: the watch ended with exit 1
// and "fix the option it names"). Without the watch, one line saying how to go on.
TEST_F(SlurmCampaign, ASubmitLimitWaitsForALaterRound) {
  const std::string dir = createSleepCampaign(base_ + "/c", 2, 0.1);
  const std::string fake = base_ + "/sbatch-limited";
  const std::string count = base_ + "/sbatch-calls";
  writeFileAtomic(fake, "#!/bin/sh\necho x >> '" + count +
                            "'\n"
                            "if [ \"$(wc -l < '" +
                            count +
                            "')\" -le 2 ]; then\n"
                            "  echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2\n"
                            "  echo 'sbatch: error: Batch job submission failed: Job violates "
                            "accounting/QOS policy (job submit limit, user'\\''s size and/or "
                            "time limits)' >&2; exit 1\nfi\nexec sbatch \"$@\"\n");
  ASSERT_EQ(::chmod(fake.c_str(), 0755), 0);
  SlurmCampaignOptions o = oneTaskPerElement(0);
  o.programs.sbatch = fake;
  try {
    runCampaignOnSlurm(dir, o);  // one round, no watch
    ADD_FAILURE() << "a round refused by a submit limit said nothing";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("for a submit limit: sbatch: error: "
                                         "QOSMaxSubmitJobPerUserLimit; its tasks stay pending"),
              std::string::npos)
        << e.what();
  }
  o.wait = true;
  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(sum.counts[TaskState::kDone], 2);
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) EXPECT_EQ(t.attempts, 1) << t.id;
}

// scontrol release failing twice with slurmctld unreachable: retried, not fatal.
TEST_F(SlurmCampaign, TransientReleaseFailuresAreRetried) {
  const std::string dir = createSleepCampaign(base_ + "/c", 2, 0.1);
  const std::string fake = base_ + "/scontrol-flaky";
  const std::string count = base_ + "/release-calls";
  writeFileAtomic(fake, "#!/bin/sh\nif [ \"$1\" = release ]; then echo x >> '" + count +
                            "'\n"
                            "  if [ \"$(wc -l < '" +
                            count +
                            "')\" -le 2 ]; then\n"
                            "    echo 'scontrol: error: Unable to contact slurm controller "
                            "(connect failure)' >&2; exit 1\n"
                            "  fi\nfi\nexec scontrol \"$@\"\n");
  ASSERT_EQ(::chmod(fake.c_str(), 0755), 0);
  SlurmCampaignOptions o = fastOptions();
  o.programs.scontrol = fake;
  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(sum.counts[TaskState::kDone], 2);
  EXPECT_EQ(sum.submissions, 1);
  const std::string calls = slurp(count);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), '\n'), 3);
}

// `campaign cancel` reaches Slurm: the journal says cancelled and the array is scancelled.
// An element can never be requeued (--no-requeue), so neither Slurm nor the element can run
// a task a second time behind the submitter's back.
TEST_F(SlurmCampaign, CancelReachesSlurmAndElementsCannotBeRequeued) {
  const std::string dir = base_ + "/c";
  const std::string job = submitTwoSleepers(dir, 1);
  ASSERT_FALSE(job.empty());
  SlurmClient client;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool running = false;
  while (!running && std::chrono::steady_clock::now() < deadline) {
    for (const auto& j : client.queue({job})) running = running || j.state == "RUNNING";
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(running);
  // A run here would take over the tasks still in the array (its elements, once started,
  // found a newer attempt and failed): refused, naming them, the journal unchanged.
  if (!std::string(FOLDFARM_BINARY).empty() && std::filesystem::exists(FOLDFARM_BINARY)) {
    const std::string before = journalDump(dir);
    expectALocalRunRefused(dir, "r0000m0 in " + job + "_0, r0001m0 in " + job + "_1");
    EXPECT_EQ(journalDump(dir), before);
  }
  ProcessResult requeue = runProcess({"scontrol", "requeue", job + "_0"});
  EXPECT_FALSE(requeue.ok()) << "Slurm requeued an array element: " << requeue.out;

  SlurmCancelSummary sum = cancelCampaignOnSlurm(dir);
  EXPECT_EQ(sum.tasksCancelled, 2);
  EXPECT_EQ(sum.jobsCancelled, std::vector<std::string>{job});
  waitForJob(client, job, 30);
  for (const auto& j : client.queue({job}))
    EXPECT_TRUE(j.finished()) << j.externalId() << " " << j.state;
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) EXPECT_EQ(t.state, TaskState::kCancelled) << t.id;
}

// An element that runs several tasks (--tasks-per-element): a local run here names each of
// them (before the count, a map by element, kept one); an MPI pilot refuses as a local run.
TEST_F(SlurmCampaign, ALocalRunNamesEveryTaskOfALiveElement) {
  if (std::string(FOLDFARM_BINARY).empty() || !std::filesystem::exists(FOLDFARM_BINARY))
    GTEST_SKIP() << "foldfarm executable not built";
  const std::string dir = base_ + "/pair";
  const std::string job = submitTwoSleepers(dir, 2);
  ASSERT_FALSE(job.empty());
  expectALocalRunRefused(dir, "r0000m0 in " + job + "_0, r0001m0 in " + job + "_0");
  // So is an MPI pilot (before: its ranks took the tasks over): rank 0 asks Slurm and every
  // rank refuses with it, the journal unchanged.
  if (std::string(FF_MPIRUN).empty()) {
    ADD_FAILURE() << "mpirun not found";
  } else {
    const std::string before = journalDump(dir);
    ProcessResult pilot =
        runProcess({FF_MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2",
                    FOLDFARM_BINARY, "campaign", "resume", dir, "--executor", "mpi"});
    EXPECT_NE(pilot.status(), 0) << pilot.err;
    EXPECT_NE(pilot.err.find(": 2 task(s) are in Slurm jobs still queued or running (r0000m0 in " +
                             job + "_0, r0001m0 in " + job + "_0)"),
              std::string::npos)
        << pilot.err;
    EXPECT_EQ(journalDump(dir), before);
  }
  cancelCampaignOnSlurm(dir);
  waitForJob(SlurmClient(), job, 30);
}

// `campaign cancel D` while `slurm submit D` watches it: the watch is asked
// (D/cancel.request), cancels the tasks, scancels their array job, answers and ends; the
// cancel, waiting, reports what the watch did.
TEST_F(SlurmCampaign, CancelWhileAWatchHoldsTheCampaignIsCarriedOutByTheWatch) {
  const std::string dir = createSleepCampaign(base_ + "/c", 2, 60.0);
  SlurmCampaignOptions o = fastOptions();
  o.tasksPerElement = 1;
  SlurmCampaignSummary watched;
  std::string watch_error;
  std::thread watch([&] {
    try {
      watched = runCampaignOnSlurm(dir, o);
    } catch (const std::exception& e) {
      watch_error = e.what();
    }
  });
  SlurmClient client;
  std::string job;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool running = false;
  while (!running && std::chrono::steady_clock::now() < deadline) {
    jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
    for (const auto& t : c.tasks(TaskState::kRunning)) job = arrayJobIdOf(t.external_id);
    if (!job.empty())
      for (const auto& j : client.queue({job})) running = running || j.state == "RUNNING";
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(running);
  std::optional<SlurmCancelSummary> here;
  EXPECT_EQ(jobs::cancelCommand(dir, 60,
                                [&here](jobs::Campaign& c) {
                                  here = cancelOnSlurm(c);
                                  return here->tasksCancelled;
                                }),
            0);
  watch.join();
  EXPECT_EQ(watch_error, "");
  EXPECT_FALSE(here) << "the watch cancelled, not the cancel command";
  EXPECT_TRUE(watched.cancelled);
  EXPECT_EQ(watched.tasksCancelled, 2);
  EXPECT_EQ(watched.jobsCancelled, std::vector<std::string>{job});
  EXPECT_FALSE(std::filesystem::exists(dir + "/cancel.request"));
  waitForJob(client, job, 30);
  for (const auto& j : client.queue({job}))
    EXPECT_TRUE(j.finished()) << j.externalId() << " " << j.state;
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) EXPECT_EQ(t.state, TaskState::kCancelled) << t.id;
}
