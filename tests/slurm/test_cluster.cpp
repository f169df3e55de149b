// Rendered scripts against the real local cluster, with a stand-in `foldfarm` executable
// (a shell script that records its argv) so these tests need nothing but Slurm.
#include <sched.h>
#include <sys/stat.h>

#include <regex>

#include "core/base/error.hpp"
#include "slurm/sbatch_script.hpp"
#include "tests/slurm/slurm_fixture.hpp"

using namespace foldfarm;
using namespace foldfarm::slurm;
using namespace foldfarm::slurm::testing;

namespace {

// A directory whose name a shell would misread in every way we can think of.
const char* kHostileName =
    "d i r 'q' \"dq\" $(touch INJECTED) `touch INJECTED2`; touch INJECTED3 #";

void writeExecutable(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  ASSERT_EQ(::chmod(path.c_str(), 0755), 0);
}

std::string showJobField(const std::string& jobId, const std::string& key) {
  ProcessResult r = runProcess({"scontrol", "show", "job", jobId});
  std::smatch m;
  std::regex re(key + "=([^ \n]*)");
  if (!std::regex_search(r.out, m, re)) return "";
  return m[1];
}

class SlurmCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    ensureLocalCluster();
    base_ = makeTempDir("ff-slurm");
    dir_ = base_ + "/" + kHostileName;
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    cancelJobsUnder(base_);
    std::filesystem::remove_all(base_);
  }
  std::string base_, dir_;
  SlurmClient client_;
};

}  // namespace

// Job name, output path, executable path and arguments with spaces, quotes, $(), `` and ;
// reach the program byte for byte, and nothing a shell would have run did run.
TEST_F(SlurmCluster, HostileNamesAndPathsAreNotInjected) {
  const std::string fake = dir_ + "/fake foldfarm";
  writeExecutable(fake,
                  "#!/bin/bash\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$(dirname "
                  "\"$0\")/argv.$SLURM_PROCID\"\n");
  SbatchResources r;
  r.jobName = std::string("job ") + kHostileName;
  r.output = dir_ + "/out %j.txt";
  r.workDir = dir_;
  r.foldfarm = fake;
  r.time = "2";
  r.signalGraceSeconds = 30;
  const std::vector<std::string> args = {"--data", "a b; touch INJECTED4", "$(touch INJECTED5)",
                                         "it's \"x\""};
  const std::string script = dir_ + "/pretrain.sbatch";
  std::ofstream(script) << renderPretrainScript(r, args);
  SubmittedJob job = client_.submit(script);
  ProcessResult name = runProcess({"squeue", "-h", "-t", "all", "-j", job.jobId, "-o", "%j"});
  EXPECT_EQ(name.out, r.jobName + "\n");
  waitForJob(client_, job.jobId, 60);
  EXPECT_EQ(showJobField(job.jobId, "JobState"), "COMPLETED")
      << slurp(dir_ + "/out " + job.jobId + ".txt");

  std::string expected = "pretrain\n--threads\n1\n";
  for (const auto& a : args) expected += a + "\n";
  EXPECT_EQ(slurp(dir_ + "/argv.0"), expected);
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/out " + job.jobId + ".txt"));
  // An injected `touch INJECTEDn` would have created the file in the job's working
  // directory (dir_) or in the submission directory.
  const std::string markers[] = {"INJECTED", "INJECTED2", "INJECTED3", "INJECTED4", "INJECTED5"};
  for (const auto& e : std::filesystem::recursive_directory_iterator(base_)) {
    for (const auto& m : markers) EXPECT_NE(e.path().filename().string(), m) << e.path();
  }
  for (const auto& m : markers) {
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::current_path() / m)) << m;
  }
}

// USR1 to the batch shell (what --signal=B:USR1@grace sends) reaches the workers running in
// the background at once; their 75 becomes the job's exit code. The fake worker stops on USR1
// and on TERM alike, as foldfarm does (core/base/stop_signal.hpp): srun's --kill-on-bad-exit
// sends TERM to the ranks still running when the first one exits 75, and a rank that meets
// that TERM before its USR1 must still exit 75 (the job then ended 143 now and then).
TEST_F(SlurmCluster, Usr1IsForwardedToWorkersAndExit75Propagates) {
  const std::string fake = dir_ + "/worker";
  writeExecutable(fake,
                  "#!/bin/bash\n"
                  "d=\"$(dirname \"$0\")\"\n"
                  "trap 'echo USR1 > \"$d/stopped.$SLURM_PROCID\"; exit 75' USR1\n"
                  "trap 'echo TERM > \"$d/stopped.$SLURM_PROCID\"; exit 75' TERM\n"
                  "touch \"$d/started.$SLURM_PROCID\"\n"
                  "for i in $(seq 1 600); do sleep 0.1; done\nexit 0\n");
  SbatchResources r;
  r.jobName = "usr1";
  r.output = dir_ + "/out.txt";
  r.foldfarm = fake;
  const std::string script = dir_ + "/pilot.sbatch";
  std::ofstream(script) << renderPilotScript(r, dir_);
  SubmittedJob job = client_.submit(script);
  // The pilot of one node runs 2 ranks (rank 0 dispatches beside the task slot).
  auto bothStarted = [&] {
    return std::filesystem::exists(dir_ + "/started.0") &&
           std::filesystem::exists(dir_ + "/started.1");
  };
  // A start-up limit: the job may wait for the node (free when it is quick).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!bothStarted() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(bothStarted()) << slurp(dir_ + "/out.txt");
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(runProcess({"scancel", "--batch", "--signal=USR1", job.jobId}).ok());
  waitForJob(client_, job.jobId, 55);
  // Not forwarded, the fake worker runs its 600 x 0.1 s (60 s): 45 s tells the two apart on
  // a loaded machine (about 2 s here).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(45));
  // Every rank stopped; the first to stop did so on the forwarded USR1.
  const std::string s0 = slurp(dir_ + "/stopped.0"), s1 = slurp(dir_ + "/stopped.1");
  EXPECT_TRUE(s0 == "USR1\n" || s0 == "TERM\n") << s0;
  EXPECT_TRUE(s1 == "USR1\n" || s1 == "TERM\n") << s1;
  EXPECT_TRUE(s0 == "USR1\n" || s1 == "USR1\n") << s0 << s1;
  EXPECT_EQ(showJobField(job.jobId, "ExitCode"), "75:0") << slurp(dir_ + "/out.txt");
}

// A one-node pilot whose task slots take every CPU of the node starts: the job asks for the
// slots' CPUs and the step starts rank 0 (the dispatcher) beside them on the same CPUs (srun
// --overcommit). Before, the job asked for (slots + 1) x --cpus-per-task and pended for ever
// (Reason=PartitionConfig): 4 GPUs x 4 tasks x -c 4 on a 64-core node. On a node-exclusive
// allocation with CPUs to spare, rank 0 takes CPUs of its own and nothing is overcommitted.
TEST_F(SlurmCluster, APilotWhoseSlotsFillTheNodeStarts) {
  cpu_set_t set;
  ASSERT_EQ(::sched_getaffinity(0, sizeof(set), &set), 0);
  const int cpus = CPU_COUNT(&set);  // the node's (NodeOffersEveryCpu)
  const std::string fake = dir_ + "/worker";
  writeExecutable(
      fake,
      "#!/bin/bash\n"
      "echo \"$SLURM_PROCID of $SLURM_NTASKS\" > \"$(dirname \"$0\")/rank.$SLURM_PROCID\"\n");
  auto run = [&](const std::string& name, int slots, bool exclusive, std::string& out) {
    SCOPED_TRACE(name);
    SbatchResources r;
    r.jobName = name;
    r.output = dir_ + "/" + name + ".txt";
    r.foldfarm = fake;
    r.tasksPerNode = slots;
    r.cpusPerTask = 1;
    std::string text = renderPilotScript(r, dir_);
    if (exclusive) text.insert(text.find('\n') + 1, "#SBATCH --exclusive\n");
    const std::string script = dir_ + "/" + name + ".sbatch";
    std::ofstream(script) << text;
    for (int k = 0; k <= slots; ++k) std::filesystem::remove(dir_ + "/rank." + std::to_string(k));
    SubmittedJob job = client_.submit(script);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    std::string state;
    while (std::chrono::steady_clock::now() < deadline) {
      state = showJobField(job.jobId, "JobState");
      if (state != "PENDING" && state != "RUNNING" && state != "CONFIGURING" &&
          state != "COMPLETING")
        break;
      ASSERT_NE(showJobField(job.jobId, "Reason"), "PartitionConfig")
          << "the pilot of " << slots << " slot(s) asks for more CPUs than the node has";
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    out = slurp(r.output);
    ASSERT_EQ(state, "COMPLETED") << out;
    for (int k = 0; k <= slots; ++k) {
      EXPECT_EQ(slurp(dir_ + "/rank." + std::to_string(k)),
                std::to_string(k) + " of " + std::to_string(slots + 1) + "\n")
          << k << "\n"
          << out;
    }
  };
  std::string full, spare;
  ASSERT_NO_FATAL_FAILURE(run("full", cpus, false, full));
  EXPECT_NE(
      full.find("rank 0 (the dispatcher) shares the task slots' " + std::to_string(cpus) + " CPUs"),
      std::string::npos)
      << full;
  if (cpus < 2) GTEST_SKIP() << "one CPU: no node-exclusive allocation with a CPU to spare";
  ASSERT_NO_FATAL_FAILURE(run("spare", cpus - 1, true, spare));
  EXPECT_EQ(spare.find("shares the task slots'"), std::string::npos) << spare;
}

TEST_F(SlurmCluster, SbatchRejectionIsOneClearError) {
  SbatchResources r;
  r.partition = "no-such-partition";
  r.foldfarm = "/bin/true";
  const std::string script = dir_ + "/bad.sbatch";
  std::ofstream(script) << renderPilotScript(r, dir_);
  try {
    client_.submit(script);
    FAIL() << "sbatch accepted an unknown partition";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("sbatch rejected"), std::string::npos) << msg;
    EXPECT_NE(msg.find("partition"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST_F(SlurmCluster, LimitsComeFromTheCluster) {
  SlurmLimits l = client_.limits();
  EXPECT_TRUE(l.fromCluster);
  EXPECT_GE(l.maxArraySize, 1);
  EXPECT_GE(l.maxJobCount, 1);
  EXPECT_GE(client_.queuedJobCount(), 0);
}

// The node offers every CPU of the machine, however the test runner limits threads
// (OMP_NUM_THREADS=1 is set for every test): a node declared with fewer CPUs leaves
// multi-task steps such as `srun -n2` pending for ever.
TEST_F(SlurmCluster, NodeOffersEveryCpu) {
  ProcessResult r = runProcess({"scontrol", "show", "node"});
  ASSERT_TRUE(r.ok()) << r.describeFailure();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("CPUTot=([0-9]+)"))) << r.out;
  cpu_set_t set;
  ASSERT_EQ(::sched_getaffinity(0, sizeof(set), &set), 0);
  EXPECT_EQ(std::stoi(m[1]), CPU_COUNT(&set)) << r.out;
}
