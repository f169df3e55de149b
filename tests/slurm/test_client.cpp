// The Slurm client against fake sbatch/squeue/scontrol/scancel programs (shell scripts): how
// refusals are told apart, what `scontrol show config` caps, which variables of the user's
// environment reach the Slurm commands, and what the watch does with an array too large for a
// submit limit. No cluster needed.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "core/base/error.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_spec.hpp"
#include "jobs/task_kind.hpp"
#include "slurm/array_plan.hpp"
#include "slurm/slurm_campaign.hpp"
#include "slurm/slurm_client.hpp"

using namespace foldfarm;
using namespace foldfarm::slurm;

namespace {

namespace fs = std::filesystem;

const char kGeneric[] =
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit "
    "limit, user's size and/or time limits)\n";

std::string scratch(const std::string& stem) {
  std::string tmpl = fs::temp_directory_path().string() + "/" + stem + ".XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeExecutable(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  ASSERT_EQ(::chmod(path.c_str(), 0755), 0) << path;
}

// Sets a variable of this process for the scope of a test, and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// Fake Slurm commands in `dir`: scontrol answers ping (UP), show config (`config`) and
// release; squeue lists nothing (`squeue` replaces it); scancel appends its arguments to
// dir/scancel.log; sbatch is the caller's.
SlurmClient::Programs fakeSlurm(const std::string& dir, const std::string& sbatch,
                                const std::string& config = "MaxArraySize = 1001\n",
                                const std::string& squeue = "#!/bin/sh\nexit 0\n") {
  writeExecutable(dir + "/scontrol",
                  "#!/bin/sh\ncase \"$1\" in\n  ping) echo 'Slurmctld(primary) at fake is UP';;\n"
                  "  show) cat <<'EOF'\n" +
                      config + "EOF\n;;\nesac\nexit 0\n");
  writeExecutable(dir + "/squeue", squeue);
  writeExecutable(dir + "/scancel", "#!/bin/sh\necho \"$@\" >> '" + dir + "/scancel.log'\n");
  writeExecutable(dir + "/sbatch", sbatch);
  SlurmClient::Programs p;
  p.sbatch = dir + "/sbatch";
  p.squeue = dir + "/squeue";
  p.scontrol = dir + "/scontrol";
  p.scancel = dir + "/scancel";
  return p;
}

// A fake sbatch that refuses with `stderr_text` (exit 1).
std::string refusingSbatch(const std::string& stderr_text) {
  return "#!/bin/sh\ncat >&2 <<'EOF'\n" + stderr_text + "EOF\nexit 1\n";
}

std::string sleepCampaign(const std::string& dir, int replicas) {
  jobs::registerBuiltinTaskKinds();
  nlohmann::json spec = {{"name", "s"},          {"task", "sleep"},
                         {"replicas", replicas}, {"params", {{"seconds", 0.1}}},
                         {"executor", "slurm"},  {"resources", {{"cpu_slots", 1}}}};
  jobs::Campaign::init(jobs::parseCampaignSpec(spec, "test spec", dir), dir);
  return dir;
}

// The message of the error that ends the watch of `dir` (a failure of the test when it ends
// without one, or when a submit-limit error escapes it: the watch turns those into its own).
std::string watchError(const std::string& dir, const SlurmCampaignOptions& o) {
  try {
    runCampaignOnSlurm(dir, o);
    ADD_FAILURE() << "the watch ended without an error";
  } catch (const SbatchLimitError& e) {
    ADD_FAILURE() << "a limit error escaped the watch: " << e.what();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The element count of each submission's array script under D/slurm (#SBATCH --array=0-N).
std::vector<int> submittedArraySizes(const std::string& dir) {
  std::vector<int> sizes;
  for (const auto& e : fs::directory_iterator(dir + "/slurm")) {
    if (e.path().filename().string().rfind("sub-", 0) != 0) continue;
    std::istringstream lines(slurp(e.path().string() + "/array.sbatch"));
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("#SBATCH --array=0-", 0) == 0) sizes.push_back(std::stoi(line.substr(18)) + 1);
  }
  return sizes;
}

}  // namespace

// Slurm adds the generic ESLURM_ACCOUNTING_POLICY text, "job submit limit" in it, to every
// association or QOS refusal: only the reason on its own line says whether it is a submit
// limit, which clears as jobs end, or one that never clears (a MaxWall with DenyOnLimit).
TEST(SbatchRefusal, OnlyASubmitJobsReasonIsASubmitLimit) {
  for (const char* reason :
       {"QOSMaxSubmitJobPerUserLimit", "QOSMaxSubmitJobPerAccountLimit", "AssocMaxSubmitJobLimit",
        "AssocGrpSubmitJobsLimit", "QOSGrpSubmitJobsLimit", "MaxSubmitJobsPerAccount"}) {
    const std::string err = "sbatch: error: " + std::string(reason) + "\n" + kGeneric;
    EXPECT_TRUE(isSubmitLimitRefusal(err)) << err;
    EXPECT_EQ(submitLimitReason(err), reason);
  }
  for (const char* reason : {"QOSMaxWallDurationPerJobLimit", "QOSMaxGRESPerJob",
                             "AssocMaxWallDurationPerJobLimit", "QOSMaxCpuPerJobLimit"}) {
    const std::string err = "sbatch: error: " + std::string(reason) + "\n" + kGeneric;
    EXPECT_FALSE(isSubmitLimitRefusal(err)) << err;
  }
  EXPECT_FALSE(isSubmitLimitRefusal(kGeneric)) << "the generic text alone is a plain refusal";
  EXPECT_FALSE(isSubmitLimitRefusal("sbatch: error: invalid partition specified: x\n"));
  EXPECT_FALSE(isSubmitLimitRefusal(""));

  EXPECT_TRUE(isPerUserSubmitLimit("QOSMaxSubmitJobPerUserLimit"));
  EXPECT_TRUE(isPerUserSubmitLimit("AssocMaxSubmitJobLimit"));
  EXPECT_FALSE(isPerUserSubmitLimit("AssocGrpSubmitJobsLimit"));
  EXPECT_FALSE(isPerUserSubmitLimit("QOSGrpSubmitJobsLimit"));
  EXPECT_FALSE(isPerUserSubmitLimit("MaxSubmitJobsPerAccount"));

  EXPECT_EQ(sbatchRefusalMessage("sbatch: error: QOSMaxWallDurationPerJobLimit\n" +
                                 std::string(kGeneric)),
            "sbatch: error: QOSMaxWallDurationPerJobLimit; Batch job submission failed: Job "
            "violates accounting/QOS policy (job submit limit, user's size and/or time limits)");
}

// Through SlurmClient::submit: a submit limit is an SbatchLimitError naming the reason's line;
// a MaxWall refusal with the same generic text is a plain Error that names the reason.
TEST(SbatchRefusal, SubmitThrowsALimitErrorOnlyForASubmitLimit) {
  const std::string dir = scratch("ff-client-refusal");
  const std::string script = dir + "/job.sbatch";
  std::ofstream(script) << "#!/bin/bash\n#SBATCH --array=0-3\ntrue\n";

  SlurmClient limited(fakeSlurm(
      dir, refusingSbatch("sbatch: error: QOSMaxSubmitJobPerUserLimit\n" + std::string(kGeneric))));
  try {
    limited.submit(script, {"--hold"});
    ADD_FAILURE() << "accepted";
  } catch (const SbatchLimitError& e) {
    EXPECT_EQ(e.limit, "QOSMaxSubmitJobPerUserLimit");
    EXPECT_NE(std::string(e.what()).find(
                  "for a submit limit: sbatch: error: QOSMaxSubmitJobPerUserLimit"),
              std::string::npos)
        << e.what();
  }

  SlurmClient wall(fakeSlurm(dir, refusingSbatch("sbatch: error: QOSMaxWallDurationPerJobLimit\n" +
                                                 std::string(kGeneric))));
  try {
    wall.submit(script, {"--hold"});
    ADD_FAILURE() << "accepted";
  } catch (const SbatchLimitError& e) {
    ADD_FAILURE() << "a MaxWall refusal taken for a submit limit: " << e.what();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("sbatch rejected"), std::string::npos) << msg;
    EXPECT_NE(msg.find("QOSMaxWallDurationPerJobLimit"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  fs::remove_all(dir);
}

// SchedulerParameters' max_array_tasks caps the elements of one array below MaxArraySize;
// MaxArraySize 0 disables arrays (before: read as the default 1001).
TEST(SlurmConfig, MaxArrayTasksAndDisabledArrays) {
  SlurmLimits l = parseSlurmConfig(
      "ClusterName             = hpc1\nMaxArraySize            = 100001\n"
      "SchedulerParameters     = bf_continue,max_array_tasks=1000,default_queue_depth=200\n");
  EXPECT_EQ(l.maxArraySize, 100001);
  EXPECT_EQ(l.maxArrayTasks, 1000);
  EXPECT_EQ(l.maxArrayElements(), 1000);
  EXPECT_EQ(l.clusterName, "hpc1");

  l = parseSlurmConfig("MaxArraySize = 50\nSchedulerParameters = max_array_tasks=1000\n");
  EXPECT_EQ(l.maxArrayElements(), 50) << "the smaller of the two";

  l = parseSlurmConfig("MaxArraySize = 2000\nSchedulerParameters = (null)\n");
  EXPECT_EQ(l.maxArrayTasks, 0);
  EXPECT_EQ(l.maxArrayElements(), 2000);

  l = parseSlurmConfig("MaxArraySize            = 0\n");
  EXPECT_EQ(l.maxArraySize, 0);

  EXPECT_EQ(parseSlurmConfig("MaxJobCount = 10\n").maxArraySize, 1001) << "a missing key";
}

TEST(SlurmConfig, ThePlannerCapsArraysAtMaxArrayTasks) {
  std::vector<std::string> ids;
  for (int i = 0; i < 2500; ++i) ids.push_back("t" + std::to_string(i));
  ArrayPlanOptions o;
  o.tasksPerElement = 1;
  o.limits =
      parseSlurmConfig("MaxArraySize = 100001\nSchedulerParameters = max_array_tasks=1000\n");
  ArrayPlan p = planArrays(ids, o);
  ASSERT_EQ(p.arrays.size(), 3u);
  for (const auto& a : p.arrays) EXPECT_LE(a.shards.size(), 1000u);
  EXPECT_EQ(p.tasks(), 2500);

  // Automatic tasks per element: one array of at most max_array_tasks elements.
  o.tasksPerElement = 0;
  p = planArrays(ids, o);
  ASSERT_EQ(p.arrays.size(), 1u);
  EXPECT_EQ(p.tasksPerElement, 3);
  EXPECT_LE(p.arrays[0].shards.size(), 1000u);
}

TEST(SlurmConfig, DisabledArraysNameThePilot) {
  ArrayPlanOptions o;
  o.limits = parseSlurmConfig("MaxArraySize = 0\n");
  try {
    planArrays({"a", "b"}, o);
    ADD_FAILURE() << "planned arrays on a cluster without them";
  } catch (const InputError& e) {
    ADD_FAILURE() << "not the user's input: " << e.what();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("job arrays are disabled on this cluster (MaxArraySize = 0"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("foldfarm slurm render pilot"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// What a submit limit taught the watch (maxElementsPerArray) cuts the arrays smaller without
// changing the tasks per element.
TEST(SlurmConfig, ElementsPerArrayCutsArraysNotShards) {
  std::vector<std::string> ids;
  for (int i = 0; i < 100; ++i) ids.push_back("t" + std::to_string(i));
  ArrayPlanOptions o;
  ArrayPlan whole = planArrays(ids, o);
  o.maxElementsPerArray = 8;
  ArrayPlan cut = planArrays(ids, o);
  EXPECT_EQ(cut.tasksPerElement, whole.tasksPerElement);
  EXPECT_EQ(cut.elements(), whole.elements());
  EXPECT_EQ(cut.arrays.size(), 13u);  // 100 elements: 12 x 8 + 4
  for (const auto& a : cut.arrays) EXPECT_LE(a.shards.size(), 8u);
  EXPECT_EQ(cut.tasks(), 100);
}

// Arrays cut for a submit limit take the throttle in order, each as much as it can run (a
// proportional share would leave the first, the one the limit takes, running one element at a
// time); those left without any wait for a later round.
TEST(SlurmConfig, CutArraysTakeTheThrottleInOrder) {
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) ids.push_back("t" + std::to_string(i));
  ArrayPlanOptions o;
  o.tasksPerElement = 1;
  o.throttle = 10;
  o.maxElementsPerArray = 8;
  ArrayPlan p = planArrays(ids, o);
  ASSERT_EQ(p.arrays.size(), 2u);
  EXPECT_EQ(p.arrays[0].throttle, 8);
  EXPECT_EQ(p.arrays[1].throttle, 2);
  ASSERT_EQ(p.deferred.size(), 24u);
  EXPECT_EQ(p.deferred.front(), "t16");
  EXPECT_EQ(p.tasks() + static_cast<int>(p.deferred.size()), 40);
}

// The options of the leading #SBATCH lines, as sbatch reads them: long and short forms,
// quotes, comments, and nothing after the first command.
TEST(SlurmEnvironment, ScriptOptionsAreTheLeadingSbatchLines) {
  const std::string script =
      "#!/bin/bash\n"
      "# foldfarm array\n"
      "#SBATCH --job-name=\"a -p b\"\n"
      "#SBATCH --account=physics\n"
      "#SBATCH -t 10:00 # a comment --qos=x\n"
      "\n"
      "#SBATCH --no-requeue\n"
      "set -euo pipefail\n"
      "#SBATCH --partition=late\n";
  const std::vector<std::string> o = sbatchScriptOptions(script);
  const std::set<std::string> got(o.begin(), o.end());
  EXPECT_EQ(got, (std::set<std::string>{"job-name", "account", "time", "no-requeue"}));
}

// sbatch lets SBATCH_* override the script: those of options the script sets are set aside,
// the others stay (the user's defaults); the cluster and --wait ones always go.
TEST(SlurmEnvironment, SbatchGoesWithoutTheVariablesOfTheScriptsOptions) {
  const std::string script =
      "#!/bin/bash\n#SBATCH --job-name=foldfarm-s\n#SBATCH --account=physics\n"
      "#SBATCH --time=1:00:00\n#SBATCH --mem=4G\n#SBATCH --array=0-9%2\n#SBATCH --no-requeue\n"
      "#SBATCH --gpus=1\n#SBATCH --output=/d/slurm-%A_%a.out\n#SBATCH --chdir=/d\n"
      "#SBATCH --signal=B:USR1@60\nexec true\n";
  const std::vector<std::string> env = {
      "PATH=/usr/bin",        "SBATCH_ACCOUNT=other",   "SBATCH_QOS=high",
      "SBATCH_PARTITION=gpu", "SBATCH_TIMELIMIT=5",     "SBATCH_MEM_PER_CPU=1G",
      "SBATCH_ARRAY_INX=0-1", "SBATCH_REQUEUE=1",       "SBATCH_GPUS_PER_NODE=4",
      "SBATCH_OUTPUT=/tmp/x", "SBATCH_ERROR=/tmp/e",    "SBATCH_SIGNAL=USR2",
      "SBATCH_CLUSTERS=far",  "SLURM_CLUSTERS=far",     "SBATCH_WAIT=1",
      "SBATCH_JOB_NAME=mine", "SQUEUE_PARTITION=debug", "SBATCH_EXPORT=ALL"};
  const std::vector<std::string> out = sbatchEnvSetAside(script, env);
  const std::set<std::string> got(out.begin(), out.end());
  EXPECT_EQ(got, (std::set<std::string>{
                     "SBATCH_ACCOUNT", "SBATCH_TIMELIMIT", "SBATCH_MEM_PER_CPU", "SBATCH_ARRAY_INX",
                     "SBATCH_REQUEUE", "SBATCH_GPUS_PER_NODE", "SBATCH_OUTPUT", "SBATCH_SIGNAL",
                     "SBATCH_CLUSTERS", "SLURM_CLUSTERS", "SBATCH_WAIT", "SBATCH_JOB_NAME"}));
  // No --qos, --partition, --error in the script: the user's defaults stay.
  for (const char* kept : {"SBATCH_QOS", "SBATCH_PARTITION", "SBATCH_ERROR", "SBATCH_EXPORT"})
    EXPECT_EQ(got.count(kept), 0u) << kept;
}

TEST(SlurmEnvironment, QueriesGoWithoutTheirCommandsVariables) {
  const std::vector<std::string> env = {"PATH=/usr/bin",      "SQUEUE_PARTITION=debug",
                                        "SQUEUE_FORMAT=%i",   "SQUEUE_USERS=bob",
                                        "SCANCEL_QOS=low",    "SCONTROL_ALL=1",
                                        "SLURM_CLUSTERS=far", "SLURM_CONF=/etc/slurm.conf"};
  auto set = [](std::vector<std::string> v) { return std::set<std::string>(v.begin(), v.end()); };
  EXPECT_EQ(set(queryEnvSetAside("squeue", env)),
            (std::set<std::string>{"SQUEUE_PARTITION", "SQUEUE_FORMAT", "SQUEUE_USERS",
                                   "SLURM_CLUSTERS"}));
  EXPECT_EQ(set(queryEnvSetAside("scancel", env)),
            (std::set<std::string>{"SCANCEL_QOS", "SLURM_CLUSTERS"}));
  EXPECT_EQ(set(queryEnvSetAside("scontrol", env)),
            (std::set<std::string>{"SCONTROL_ALL", "SLURM_CLUSTERS"}));
}

// A real child: the fake squeue writes its environment down; the user's SQUEUE_PARTITION
// (which would hide foldfarm's live jobs) and SLURM_CLUSTERS never reach it, the rest does.
TEST(SlurmEnvironment, SqueueDoesNotSeeTheUsersSqueueVariables) {
  const std::string dir = scratch("ff-client-env");
  const std::string envOut = dir + "/squeue.env";
  SlurmClient client(fakeSlurm(dir, "#!/bin/sh\nexit 1\n", "MaxArraySize = 1001\n",
                               "#!/bin/sh\nenv > '" + envOut + "'\nexit 0\n"));
  ScopedEnv partition("SQUEUE_PARTITION", "debug");
  ScopedEnv format("SQUEUE_FORMAT", "%i");
  ScopedEnv clusters("SLURM_CLUSTERS", "far");
  ScopedEnv keep("FF_TEST_KEEP", "1");
  EXPECT_TRUE(client.queue({"123"}).empty());
  const std::string seen = slurp(envOut);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.find("SQUEUE_PARTITION="), std::string::npos) << seen;
  EXPECT_EQ(seen.find("SQUEUE_FORMAT="), std::string::npos) << seen;
  EXPECT_EQ(seen.find("SLURM_CLUSTERS="), std::string::npos) << seen;
  EXPECT_NE(seen.find("FF_TEST_KEEP=1"), std::string::npos) << seen;
  fs::remove_all(dir);
}

// The same for sbatch: `slurm submit --account A` with SBATCH_ACCOUNT=B runs under A.
TEST(SlurmEnvironment, SbatchDoesNotSeeTheVariablesOfTheScriptsOptions) {
  const std::string dir = scratch("ff-client-sbatch-env");
  const std::string envOut = dir + "/sbatch.env";
  const std::string script = dir + "/job.sbatch";
  std::ofstream(script) << "#!/bin/bash\n#SBATCH --account=physics\ntrue\n";
  SlurmClient client(fakeSlurm(dir, "#!/bin/sh\nenv > '" + envOut + "'\necho 4242\n"));
  ScopedEnv account("SBATCH_ACCOUNT", "other");
  ScopedEnv qos("SBATCH_QOS", "high");
  ScopedEnv clusters("SBATCH_CLUSTERS", "far");
  EXPECT_EQ(client.submit(script, {"--hold"}).jobId, "4242");
  const std::string seen = slurp(envOut);
  EXPECT_EQ(seen.find("SBATCH_ACCOUNT="), std::string::npos) << seen;
  EXPECT_EQ(seen.find("SBATCH_CLUSTERS="), std::string::npos) << seen;
  EXPECT_NE(seen.find("SBATCH_QOS=high"), std::string::npos) << "the user's default stays";
  fs::remove_all(dir);
}

// sbatch answering "id;cluster" for another cluster than the local one: the held job is
// cancelled there (scancel -M) and the submission refused; the local cluster's name is fine.
TEST(SlurmCluster, AJobOnAnotherClusterIsCancelledAndRefused) {
  const std::string dir = scratch("ff-client-cluster");
  const std::string script = dir + "/job.sbatch";
  std::ofstream(script) << "#!/bin/bash\ntrue\n";
  SlurmClient far(fakeSlurm(dir, "#!/bin/sh\necho '77;far'\n", "ClusterName = near\n"));
  far.retryDelays.clear();
  try {
    far.submit(script, {"--hold"});
    ADD_FAILURE() << "a job on another cluster was taken";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cluster far as job 77"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cancelled"), std::string::npos) << msg;
  }
  EXPECT_EQ(slurp(dir + "/scancel.log"), "-M far 77\n");

  SlurmClient near(fakeSlurm(dir, "#!/bin/sh\necho '78;near'\n", "ClusterName = near\n"));
  EXPECT_EQ(near.submit(script, {"--hold"}).jobId, "78");
  fs::remove_all(dir);
}

// A release that finds the job ended (cancelled while held; or released by a try whose answer
// was lost, and finished since) releases nothing and is no error; another refusal still is.
TEST(SlurmRelease, AJobThatHasAlreadyEndedIsNoError) {
  const std::string dir = scratch("ff-client-release");
  SlurmClient::Programs p = fakeSlurm(dir, "#!/bin/sh\nexit 1\n");
  writeExecutable(dir + "/scontrol-ended",
                  "#!/bin/sh\necho 'scontrol: error: Slurm job 12: Job/step already completing or "
                  "completed' >&2\nexit 1\n");
  writeExecutable(dir + "/scontrol-denied",
                  "#!/bin/sh\necho 'scontrol: error: Access/permission denied for job 12' >&2\n"
                  "exit 1\n");
  p.scontrol = dir + "/scontrol-ended";
  SlurmClient ended(p);
  ended.retryDelays.clear();
  EXPECT_NO_THROW(ended.release("12"));
  p.scontrol = dir + "/scontrol-denied";
  SlurmClient denied(p);
  denied.retryDelays.clear();
  EXPECT_THROW(denied.release("12"), Error);
  fs::remove_all(dir);
}

// A submit limit that refuses the whole array (MaxSubmitJobs counts its elements) while this
// campaign has nothing queued: the watch halves the arrays and submits at once, down to a
// size the limit takes (before: the same array again at every round, for ever).
TEST(SlurmWatch, AnArrayTooLargeForASubmitLimitIsSplit) {
  const std::string dir = sleepCampaign(scratch("ff-client-split") + "/c", 20);
  const std::string bin = scratch("ff-client-split-bin");
  const std::string log = bin + "/sizes.log";
  // Takes arrays of at most 3 elements, whatever is queued.
  const std::string sbatch =
      "#!/bin/sh\nfor a; do script=\"$a\"; done\n"
      "n=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' \"$script\")\n"
      "n=$((n + 1))\necho \"$n\" >> '" +
      log +
      "'\n"
      "if [ \"$n\" -gt 3 ]; then\n"
      "  echo 'sbatch: error: AssocMaxSubmitJobLimit' >&2\n"
      "  echo \"sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
      "(job submit limit, user's size and/or time limits)\" >&2\n  exit 1\nfi\n"
      "echo $((1000 + $(wc -l < '" +
      log + "')))\n";
  SlurmCampaignOptions o;
  o.programs = fakeSlurm(bin, sbatch);
  o.tasksPerElement = 1;
  o.wait = false;
  SlurmCampaignSummary sum = runCampaignOnSlurm(dir, o);
  EXPECT_EQ(slurp(log), "20\n10\n5\n2\n2\n2\n2\n2\n2\n2\n2\n2\n2\n");
  EXPECT_EQ(sum.submissions, 10);
  EXPECT_EQ(sum.elementsSubmitted, 20);
  EXPECT_EQ(sum.tasksSubmitted, 20);
  const std::vector<int> sizes = submittedArraySizes(dir);
  EXPECT_EQ(sizes, std::vector<int>(10, 2));
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, jobs::TaskState::kRunning) << t.id;
    EXPECT_EQ(t.attempts, 1) << t.id;
  }
  fs::remove_all(fs::path(dir).parent_path());
  fs::remove_all(bin);
}

// A one-element array refused for a per-user submit limit while none of the user's jobs is
// queued, in two rounds: the limit is below one job, and the watch ends saying so (before: it
// waited for ever). Nothing is recorded.
TEST(SlurmWatch, ALimitBelowOneJobEndsTheWatch) {
  const std::string dir = sleepCampaign(scratch("ff-client-zero") + "/c", 2);
  const std::string bin = scratch("ff-client-zero-bin");
  SlurmCampaignOptions o;
  o.programs = fakeSlurm(
      bin, refusingSbatch("sbatch: error: QOSMaxSubmitJobPerUserLimit\n" + std::string(kGeneric)));
  o.tasksPerElement = 1;
  o.pollInitialS = 0.05;
  o.pollMaxS = 0.1;
  const std::string msg = watchError(dir, o);
  EXPECT_NE(msg.find("QOSMaxSubmitJobPerUserLimit"), std::string::npos) << msg;
  EXPECT_NE(msg.find("below one job"), std::string::npos) << msg;
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) EXPECT_EQ(t.state, jobs::TaskState::kPending) << t.id;
  EXPECT_TRUE(submittedArraySizes(dir).empty());
  fs::remove_all(fs::path(dir).parent_path());
  fs::remove_all(bin);
}

// MaxArraySize = 0: `slurm submit` refuses in one line naming the pilot, before any sbatch,
// and the journal stays as it was.
TEST(SlurmWatch, DisabledArraysRefuseTheSubmission) {
  const std::string dir = sleepCampaign(scratch("ff-client-noarrays") + "/c", 2);
  const std::string bin = scratch("ff-client-noarrays-bin");
  SlurmCampaignOptions o;
  o.programs = fakeSlurm(bin, "#!/bin/sh\ntouch '" + bin + "/sbatch-called'\necho 1\n",
                         "MaxArraySize = 0\n");
  const std::string msg = watchError(dir, o);
  EXPECT_NE(msg.find("job arrays are disabled on this cluster (MaxArraySize = 0"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("foldfarm slurm render pilot"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(bin + "/sbatch-called"));
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, jobs::TaskState::kPending) << t.id;
    EXPECT_EQ(t.attempts, 0) << t.id;
  }
  fs::remove_all(fs::path(dir).parent_path());
  fs::remove_all(bin);
}

// A limit that never clears, refused with the generic "job submit limit" text (a MaxWall with
// DenyOnLimit): the watch ends with sbatch's reason at once instead of waiting for ever.
TEST(SlurmWatch, APermanentRefusalEndsTheWatchAtOnce) {
  const std::string dir = sleepCampaign(scratch("ff-client-wall") + "/c", 2);
  const std::string bin = scratch("ff-client-wall-bin");
  SlurmCampaignOptions o;
  o.programs = fakeSlurm(bin, refusingSbatch("sbatch: error: QOSMaxWallDurationPerJobLimit\n" +
                                             std::string(kGeneric)));
  o.pollInitialS = 0.05;
  o.pollMaxS = 0.1;
  const std::string msg = watchError(dir, o);
  EXPECT_NE(msg.find("sbatch rejected"), std::string::npos) << msg;
  EXPECT_NE(msg.find("QOSMaxWallDurationPerJobLimit"), std::string::npos) << msg;
  fs::remove_all(fs::path(dir).parent_path());
  fs::remove_all(bin);
}

// A group limit (other users' jobs count too) refusing one element is waited for; without the
// watch, one line says the tasks stay pending.
TEST(SlurmWatch, AGroupLimitIsWaitedFor) {
  const std::string dir = sleepCampaign(scratch("ff-client-grp") + "/c", 1);
  const std::string bin = scratch("ff-client-grp-bin");
  SlurmCampaignOptions o;
  o.programs = fakeSlurm(
      bin, refusingSbatch("sbatch: error: AssocGrpSubmitJobsLimit\n" + std::string(kGeneric)));
  o.wait = false;
  const std::string msg = watchError(dir, o);
  EXPECT_NE(msg.find("for a submit limit: sbatch: error: AssocGrpSubmitJobsLimit; its tasks "
                     "stay pending"),
            std::string::npos)
      << msg;
  fs::remove_all(fs::path(dir).parent_path());
  fs::remove_all(bin);
}
