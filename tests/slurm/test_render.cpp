// Rendering, validation, array planning and output parsing — no cluster needed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/process.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_spec.hpp"
#include "jobs/task_kind.hpp"
#include "slurm/array_plan.hpp"
#include "slurm/sbatch_script.hpp"
#include "slurm/sbatch_values.hpp"
#include "slurm/shell_quote.hpp"
#include "slurm/slurm_campaign.hpp"
#include "slurm/slurm_client.hpp"

using namespace foldfarm;
using namespace foldfarm::slurm;

namespace {

std::vector<std::string> ids(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back("t" + std::to_string(i));
  return v;
}

// bash reads the script back without a syntax error.
void expectBashSyntaxOk(const std::string& script) {
  std::string path = ::testing::TempDir() + "/syntax.sh";
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fwrite(script.data(), 1, script.size(), f);
  std::fclose(f);
  ProcessResult r = runProcess({"bash", "-n", path});
  EXPECT_TRUE(r.ok()) << r.err << "\n" << script;
}

// Writes `text` to `path`, executable by its owner (a stand-in for a command, or a script).
void writeExecutable(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
}

// Runs `bash script` with `env` added, expecting success, and returns the lines the
// stand-ins it starts appended to `seen` (removed first).
std::set<std::string> seenByScript(const std::string& script, const std::string& seen,
                                   const std::vector<std::string>& env) {
  std::filesystem::remove(seen);
  ProcessOptions o;
  o.extraEnv = env;
  const ProcessResult p = runProcess({"bash", script}, o);
  EXPECT_TRUE(p.ok()) << p.err;
  std::set<std::string> lines;
  std::ifstream in(seen);
  for (std::string line; std::getline(in, line);) lines.insert(line);
  return lines;
}

}  // namespace

TEST(SbatchValues, StrictNamesRejectShell) {
  EXPECT_EQ(validateSlurmName("partition", "gpu,gpu-long", true), "gpu,gpu-long");
  EXPECT_THROW(validateSlurmName("partition", "gpu;touch x", true), InputError);
  EXPECT_THROW(validateSlurmName("account", "a b", false), InputError);
  EXPECT_THROW(validateSlurmName("account", "a,b", false), InputError);
  EXPECT_THROW(validateSlurmName("qos", "", false), InputError);
  EXPECT_THROW(validateSlurmName("qos", "$(id)", false), InputError);
  EXPECT_THROW(validateConstraint("a100 && x"), InputError);
  EXPECT_EQ(validateConstraint("[a100*2&ib]|v100"), "[a100*2&ib]|v100");
  EXPECT_THROW(validateMemory("8GB"), InputError);
}

TEST(SbatchValues, TimeLimits) {
  EXPECT_EQ(timeLimitSeconds("30"), 1800);
  EXPECT_EQ(timeLimitSeconds("1:30"), 90);
  EXPECT_EQ(timeLimitSeconds("02:00:00"), 7200);
  EXPECT_EQ(timeLimitSeconds("1-12"), 86400 + 12 * 3600);
  EXPECT_EQ(timeLimitSeconds("1-00:10:05"), 86400 + 605);
  EXPECT_EQ(timeLimitSeconds("UNLIMITED"), -1);
  EXPECT_EQ(timeLimitSeconds("99999999"), 99999999LL * 60);
  // Beyond 8 digits: refused with the forms, not "internal error: stoll" or an overflow.
  for (const char* bad : {"", "0", "1h", "1:2:3:4", "-5", "10 ", "1-", "$(date)",
                          "99999999999999999999", "123456789-00", "123456789:00"}) {
    EXPECT_THROW(validateTimeLimit(bad), InputError) << bad;
  }
}

TEST(SbatchValues, SbatchQuoteEscapesAndRejectsLineBreaks) {
  EXPECT_EQ(sbatchQuote("x", "a \"b\" \\c $(d);#"), "\"a \\\"b\\\" \\\\c $(d);#\"");
  EXPECT_THROW(sbatchQuote("--job-name", "a\nb"), InputError);
  EXPECT_THROW(sbatchQuote("--job-name", std::string("a\0b", 3)), InputError);
  EXPECT_THROW(validateOutputPattern("output", "out-%q.txt"), InputError);
  EXPECT_THROW(validateOutputPattern("output", "out-%"), InputError);
  EXPECT_NO_THROW(validateOutputPattern("output", "logs/%x-%A_%4a.%%.out"));
}

// Slurm (the burst-buffer plugins) splits a job at any #SBATCH line containing "hetjob" or
// "packjob", quoted or not: such names and paths are refused, naming the option.
TEST(SbatchValues, WordsThatSplitAJobAreRefused) {
  for (const char* bad : {"my hetjob", "HetJob-study", "x_packjob"}) {
    try {
      sbatchQuote("--job-name", bad);
      ADD_FAILURE() << bad << ": accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--job-name"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(validateSlurmName("partition", "gpu,hetjob", true), InputError);
  EXPECT_THROW(validateSlurmName("account", "packjob", false), InputError);
  EXPECT_THROW(validateConstraint("hetjob|a100"), InputError);
  EXPECT_THROW(validateOutputPattern("output", "/scratch/hetjob/%A_%a.out"), InputError);
  EXPECT_NO_THROW(sbatchQuote("--job-name", "het job, pack job"));

  SbatchResources r;
  r.jobName = "foldfarm-zjets hetjob";
  ArrayJob j;
  j.campaignDir = "/c";
  j.manifestPath = "/c/m.tsv";
  j.elements = 2;
  EXPECT_THROW(renderArrayScript(r, j), InputError);
  r.jobName = "foldfarm";
  r.workDir = "/scratch/packjob";
  EXPECT_THROW(renderArrayScript(r, j), InputError);
}

// A backslash in an output pattern makes slurmstepd drop the backslashes and expand no
// %-symbol at all, so every array element would write the same literal file.
TEST(SbatchValues, BackslashInOutputPatternIsRefused) {
  try {
    validateOutputPattern("output", "/scratch/a\\b/slurm-%A_%a.out");
    ADD_FAILURE() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--output"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("backslash"), std::string::npos) << e.what();
  }
  EXPECT_THROW(validateOutputPattern("error", "\\%j.err"), InputError);
}

// A campaign directory is a literal inside a pattern: '%j' in it must stay '%j' on disk.
TEST(SbatchValues, LiteralDirectoriesInPatternsHaveTheirPercentDoubled) {
  EXPECT_EQ(outputPatternLiteral("/scratch/run_%j/100%"), "/scratch/run_%%j/100%%");
  EXPECT_EQ(outputPatternLiteral("/plain dir"), "/plain dir");
  // "%q" is no Slurm symbol: as a literal it passes validation instead of being refused.
  const std::string dir = "/scratch/a%q/run_%j";
  EXPECT_THROW(validateOutputPattern("output", dir + "/slurm-%A_%a.out"), InputError);
  EXPECT_EQ(validateOutputPattern("output", outputPatternLiteral(dir) + "/slurm-%A_%a.out"),
            "\"/scratch/a%%q/run_%%j/slurm-%A_%a.out\"");
  SbatchResources r;
  r.output = outputPatternLiteral(dir) + "/slurm-%A_%a.out";
  r.workDir = dir;  // --chdir takes no pattern: the directory as it is
  ArrayJob j;
  j.campaignDir = dir;
  j.manifestPath = dir + "/m.tsv";
  j.elements = 2;
  const std::string s = renderArrayScript(r, j);
  EXPECT_NE(s.find("#SBATCH --output=\"/scratch/a%%q/run_%%j/slurm-%A_%a.out\"\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("#SBATCH --chdir=\"/scratch/a%q/run_%j\"\n"), std::string::npos) << s;
}

TEST(SbatchScript, GraceMustBeShorterThanTimeLimit) {
  SbatchResources r;
  r.time = "2";
  r.signalGraceSeconds = 120;
  EXPECT_THROW(renderPilotScript(r, "/c"), InputError);
  r.signalGraceSeconds = 60;
  EXPECT_NO_THROW(renderPilotScript(r, "/c"));
}

TEST(SbatchScript, PretrainOneRankPerGpu) {
  SbatchResources r;
  r.nodes = 16;
  r.gpusPerNode = 4;
  r.cpusPerTask = 8;
  r.partition = "gpu";
  r.time = "12:00:00";
  r.setupLines = {"module load cuda/12"};
  std::string s = renderPretrainScript(r, {"--config", "pet config.json"});
  EXPECT_NE(s.find("#SBATCH --nodes=16\n"), std::string::npos);
  EXPECT_NE(s.find("#SBATCH --ntasks-per-node=4\n"), std::string::npos);
  EXPECT_NE(s.find("#SBATCH --gpus-per-node=4\n"), std::string::npos);
  EXPECT_NE(s.find("#SBATCH --signal=B:USR1@120\n"), std::string::npos);
  EXPECT_NE(s.find("'srun' '--mpi=pmix'"), std::string::npos);
  EXPECT_NE(s.find("'pet config.json'"), std::string::npos);
  EXPECT_NE(s.find("\nmodule load cuda/12\n"), std::string::npos);
  // The trap is installed before the workers start.
  EXPECT_LT(s.find("trap 'ff_time_limit=1; ff_forward USR1 USR1' USR1"), s.find("ff_start 'srun'"));
  // srun is told the CPUs per rank (22.05 to 23.02 do not take the job's) and the environment.
  EXPECT_NE(s.find("'--cpus-per-task=8' '--export=ALL' "), std::string::npos) << s;
  // Ranks of a pretraining pick their GPU by local rank among those they see: no binding asked.
  EXPECT_EQ(s.find("--gpu-bind"), std::string::npos) << s;
  // Another MPI plugin, or the site's default; a name srun could not know is refused.
  SbatchResources other = r;
  other.mpi = "pmi2";
  EXPECT_NE(renderPretrainScript(other, {}).find("'srun' '--mpi=pmi2' "), std::string::npos);
  other.mpi = "default";
  EXPECT_NE(renderPretrainScript(other, {}).find("'srun' '--kill-on-bad-exit=1' "),
            std::string::npos);
  other.mpi = "pmix; rm -rf";
  EXPECT_THROW(renderPretrainScript(other, {}), InputError);
  EXPECT_NE(s.find("'pretrain' '--threads' '8' '--config'"), std::string::npos) << s;
  expectBashSyntaxOk(s);
  // Ranks per node beside GPUs: one rank per GPU, so another count is refused, not ignored.
  SbatchResources both = r;
  both.tasksPerNode = 2;
  EXPECT_THROW(renderPretrainScript(both, {}), InputError);
  both.tasksPerNode = 4;
  EXPECT_NO_THROW(renderPretrainScript(both, {}));
  // Threads the arguments set are theirs alone (pretrain refuses --threads twice).
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--threads", "3"}, std::vector<std::string>{"--threads=3"}}) {
    const std::string t = renderPretrainScript(r, args);
    EXPECT_EQ(t.find("'--threads' '8'"), std::string::npos) << t;
    EXPECT_NE(t.find("'pretrain' '--threads"), std::string::npos) << t;
  }
}

// An array element run with a stand-in worker that records what each lane sees: its tasks and
// its GPUs. Lanes take the element's GPUs in turn where it holds several (a node-exclusive
// partition gives an element of one GPU the whole node; before: every lane on the first).
// With MPS started, the lanes name the server's GPUs, 0..n-1 (a client keeping Slurm's "6"
// finds no GPU where devices are not constrained), and its directory is removed at the end.
TEST(SbatchScript, ArrayLanesSpreadOverTheElementsGpusAndNameMpsGpusFromZero) {
  const std::string dir = ::testing::TempDir() + "/lanes_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/bin");
  // The worker: "D --task A --task B" -> a line "A B|<CUDA_VISIBLE_DEVICES>" per lane.
  writeExecutable(
      dir + "/work",
      "#!/bin/bash\nshift\nt=\"\"\nwhile [ $# -gt 1 ]; do t=\"$t $2\"; shift 2; done\n"
      "flock \"$(dirname \"$0\")/seen\" -c \"echo '${t# }|${CUDA_VISIBLE_DEVICES:-}' >> "
      "'$(dirname \"$0\")/seen'\"\n");
  std::ofstream(dir + "/manifest.tsv") << "a\tb\tc\td\te\n";
  SbatchResources r;
  r.gpusPerNode = 1;
  r.tasksPerGpu = 4;
  r.signalGraceSeconds = 0;
  ArrayJob j;
  j.campaignDir = dir + "/camp";
  j.manifestPath = dir + "/manifest.tsv";
  j.elements = 1;
  j.lanes = 4;
  j.workArgv = {dir + "/work"};
  std::ofstream(dir + "/job.sh") << renderArrayScript(r, j);
  const auto lanes = [&](const std::string& visible, const std::string& tmp) {
    return seenByScript(dir + "/job.sh", dir + "/seen",
                        {"PATH=" + dir + "/bin:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID=0",
                         "SLURM_JOB_ID=41", "CUDA_VISIBLE_DEVICES=" + visible, "TMPDIR=" + tmp});
  };
  // One GPU, no MPS here (no nvidia-cuda-mps-control on PATH): every lane on it.
  EXPECT_EQ(lanes("3", dir), (std::set<std::string>{"a e|3", "b|3", "c|3", "d|3"}));
  // The whole node's four GPUs: a lane on each.
  EXPECT_EQ(lanes("4,5,6,7", dir), (std::set<std::string>{"a e|4", "b|5", "c|6", "d|7"}));
  // MPS started (a stand-in that answers): the server numbers its GPUs from 0.
  writeExecutable(dir + "/bin/nvidia-cuda-mps-control",
                  "#!/bin/sh\ncat >/dev/null 2>&1 &\nexit 0\n");
  const std::string tmp = dir + "/tmp";
  std::filesystem::create_directories(tmp);
  EXPECT_EQ(lanes("6", tmp), (std::set<std::string>{"a e|0", "b|0", "c|0", "d|0"}));
  EXPECT_EQ(lanes("4,5,6,7", tmp), (std::set<std::string>{"a e|0", "b|1", "c|2", "d|3"}));
  EXPECT_FALSE(std::filesystem::exists(tmp + "/foldfarm-mps-41")) << "MPS directory left";
  std::filesystem::remove_all(dir);
}

// A one-node pilot's step: its slots and rank 0, overcommitted (every CPU of the job, no count
// checked); unbound only where the job holds fewer CPUs than (slots + 1) x -c, read from
// SLURM_JOB_CPUS_PER_NODE in each of its forms, and unset (a script run by hand, under set -u).
// Run with a stand-in srun that records its arguments.
TEST(SbatchScript, AOneNodePilotsStepIsOvercommittedAndUnboundOnlyWhenCpusAreShort) {
  const std::string dir = ::testing::TempDir() + "/pilot_cpus_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/bin");
  writeExecutable(dir + "/bin/srun", "#!/bin/bash\necho \"$*\" >> \"$(dirname \"$0\")/../seen\"\n");
  SbatchResources r;
  r.tasksPerNode = 2;
  r.cpusPerTask = 2;
  r.signalGraceSeconds = 0;
  r.foldfarm = "ff";
  const std::string script = renderPilotScript(r, "D");
  expectBashSyntaxOk(script);
  writeExecutable(dir + "/job.sh", script);
  const std::string step =
      "--mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=2 --export=ALL --ntasks=3 "
      "--ntasks-per-node=3 --overcommit";
  const std::string run = " ff campaign run D --executor mpi";
  const auto seen = [&](const std::vector<std::string>& env, bool unset = false) {
    std::filesystem::remove(dir + "/seen");
    ProcessOptions o;
    o.extraEnv = env;
    o.extraEnv.push_back("PATH=" + dir + "/bin:/usr/bin:/bin");
    if (unset) o.unsetEnv = {"SLURM_JOB_CPUS_PER_NODE"};
    const ProcessResult p = runProcess({"bash", dir + "/job.sh"}, o);
    EXPECT_TRUE(p.ok()) << p.err;
    return foldfarm::readFile(dir + "/seen");
  };
  EXPECT_EQ(seen({"SLURM_JOB_CPUS_PER_NODE=6"}), step + run + "\n");
  EXPECT_EQ(seen({"SLURM_JOB_CPUS_PER_NODE=64(x1)"}), step + run + "\n");
  EXPECT_EQ(seen({"SLURM_JOB_CPUS_PER_NODE=4"}), step + " --cpu-bind=none" + run + "\n");
  EXPECT_EQ(seen({}, /*unset=*/true), step + " --cpu-bind=none" + run + "\n");
  // A pilot stopped (75, no --requeue) says what continues it; its backquotes are text (a
  // shell that ran them would start `foldfarm campaign resume` inside the job's last lines).
  writeExecutable(dir + "/bin/srun", "#!/bin/bash\nexit 75\n");
  writeExecutable(dir + "/bin/foldfarm", "#!/bin/bash\ntouch \"$(dirname \"$0\")/../ran\"\n");
  ProcessOptions o;
  o.extraEnv = {"PATH=" + dir + "/bin:/usr/bin:/bin", "SLURM_JOB_CPUS_PER_NODE=6"};
  const ProcessResult p = runProcess({"bash", dir + "/job.sh"}, o);
  EXPECT_EQ(p.status(), 75) << p.err;
  EXPECT_NE(p.err.find("foldfarm: stopped, its state saved: `foldfarm campaign resume D` "
                       "continues, or this script submitted again\n"),
            std::string::npos)
      << p.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/ran"));
  std::filesystem::remove_all(dir);
}

// A pilot of several nodes whose tasks share GPUs starts CUDA MPS on every node, in its step:
// each node's first rank starts it before foldfarm and the others wait for its word; every
// rank then names the server's GPUs from 0; after the step, MPS is stopped on every node and
// its directory removed. Without nvidia-cuda-mps-control the ranks go on without MPS.
// Run with a stand-in srun that starts a node's two ranks (the second first).
TEST(SbatchScript, APilotOfSeveralNodesStartsMpsOnEachNodeInItsStep) {
  const std::string dir = ::testing::TempDir() + "/pilot_mps_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/bin");
  std::filesystem::create_directories(dir + "/tmp");
  writeExecutable(
      dir + "/bin/srun",
      "#!/bin/bash\nwhile [ $# -gt 0 ] && [ \"$1\" != bash ]; do shift; done\n"
      "case \" $* \" in\n  *\" foldfarm-rank \"*)\n"
      "    if [ -n \"$FF_TEST_STOP\" ]; then\n"
      "      SLURM_LOCALID=1 \"$@\" & a=$!; sleep 0.3; kill -USR1 $a; wait $a; exit $?\n"
      "    fi\n"
      "    SLURM_LOCALID=1 \"$@\" & a=$!; sleep 0.3; SLURM_LOCALID=0 \"$@\" & b=$!\n"
      "    wait $a; wait $b;;\n"
      "  *) SLURM_LOCALID=0 \"$@\";;\nesac\n");
  writeExecutable(
      dir + "/foldfarm",
      "#!/bin/bash\necho \"$SLURM_LOCALID|$CUDA_VISIBLE_DEVICES|${CUDA_MPS_PIPE_DIRECTORY:+pipe}\" "
      ">> \"$(dirname \"$0\")/seen\"\n");
  SbatchResources r;
  r.nodes = 2;
  r.gpusPerNode = 2;
  r.tasksPerGpu = 2;
  r.signalGraceSeconds = 0;
  r.foldfarm = dir + "/foldfarm";
  const std::string script = renderPilotScript(r, "D");
  expectBashSyntaxOk(script);
  writeExecutable(dir + "/job.sh", script);
  const auto ranks = [&] {
    return seenByScript(
        dir + "/job.sh", dir + "/seen",
        {"PATH=" + dir + "/bin:/usr/bin:/bin", "SLURM_JOB_ID=51", "SLURM_JOB_NUM_NODES=2",
         "CUDA_VISIBLE_DEVICES=6,7", "TMPDIR=" + dir + "/tmp"});
  };
  // No MPS here: the GPUs as Slurm gave them, no pipe directory.
  EXPECT_EQ(ranks(), (std::set<std::string>{"0|6,7|", "1|6,7|"}));
  // MPS (a stand-in that answers and records the quit).
  writeExecutable(dir + "/bin/nvidia-cuda-mps-control",
                  "#!/bin/sh\n[ \"$1\" = -d ] && exit 0\ncat >> \"$(dirname \"$0\")/../quit\"\n");
  EXPECT_EQ(ranks(), (std::set<std::string>{"0|0,1|pipe", "1|0,1|pipe"}));
  std::ifstream quit(dir + "/quit");
  std::string said;
  std::getline(quit, said);
  EXPECT_EQ(said, "quit") << "MPS was not stopped after the step";
  EXPECT_FALSE(std::filesystem::exists(dir + "/tmp/foldfarm-mps-51-0")) << "MPS directory left";
  // A stop (USR1, forwarded by srun) while a rank waits for its node's MPS: foldfarm is not
  // started and the rank ends 75, stopped (before: the signal ended its shell, a failure).
  {
    std::filesystem::remove(dir + "/seen");
    ProcessOptions o;
    o.extraEnv = {"PATH=" + dir + "/bin:/usr/bin:/bin", "SLURM_JOB_ID=52", "SLURM_JOB_NUM_NODES=2",
                  "TMPDIR=" + dir + "/tmp", "FF_TEST_STOP=1"};
    const ProcessResult p = runProcess({"bash", dir + "/job.sh"}, o);
    EXPECT_EQ(p.status(), 75) << p.err;
    EXPECT_NE(p.err.find("stopped (USR1) before it started"), std::string::npos) << p.err;
    EXPECT_FALSE(std::filesystem::exists(dir + "/seen")) << "foldfarm ran after the stop";
  }
  // One node: the batch shell's daemon, as before, and no per-rank start.
  r.nodes = 1;
  EXPECT_EQ(renderPilotScript(r, "D").find("ff_mps_rank"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(SbatchScript, ArrayScriptQuotesPathsAndThrottles) {
  SbatchResources r;
  r.jobName = "fold \"farm\" $(touch /tmp/x)";
  r.gpusPerNode = 4;
  r.tasksPerGpu = 4;
  ArrayJob j;
  j.campaignDir = "/scratch/it's a $(dir);";
  j.manifestPath = "/scratch/m.tsv";
  j.elements = 1000;
  j.throttle = 256;
  j.lanes = 4;
  std::string s = renderArrayScript(r, j);
  EXPECT_NE(s.find("#SBATCH --array=0-999%256\n"), std::string::npos);
  EXPECT_NE(s.find("#SBATCH --gpus=1\n"), std::string::npos);
  EXPECT_NE(s.find("#SBATCH --job-name=\"fold \\\"farm\\\" $(touch /tmp/x)\"\n"),
            std::string::npos);
  EXPECT_NE(s.find("ff_campaign='/scratch/it'\\''s a $(dir);'\n"), std::string::npos);
  // Never run again by Slurm or by itself: the next attempt is the submitter's.
  EXPECT_NE(s.find("#SBATCH --no-requeue\n"), std::string::npos);
  EXPECT_EQ(s.find("#SBATCH --requeue\n"), std::string::npos);
  EXPECT_EQ(s.find("scontrol requeue"), std::string::npos);
  // Four lanes share the element's GPU: CUDA MPS is started before them, stopped after.
  EXPECT_LT(s.find("nvidia-cuda-mps-control -d"), s.find("ff_start \"${ff_work[@]}\""));
  EXPECT_NE(s.find("echo quit | timeout 60 nvidia-cuda-mps-control"), std::string::npos);
  // Each lane caps its allocator at an equal share of the GPU's memory, as the local pool's
  // slots do, before the lanes start.
  EXPECT_LT(s.find("export FOLDFARM_GPU_MEMORY_FRACTION=0.237500\n"),
            s.find("ff_start \"${ff_work[@]}\""));
  expectBashSyntaxOk(s);
  // One lane per element: no MPS, the whole GPU.
  j.lanes = 1;
  EXPECT_EQ(renderArrayScript(r, j).find("nvidia-cuda-mps-control -d"), std::string::npos);
  EXPECT_EQ(renderArrayScript(r, j).find("FOLDFARM_GPU_MEMORY_FRACTION"), std::string::npos);
  j.lanes = 4;
  r.requeue = true;
  try {
    renderArrayScript(r, j);
    ADD_FAILURE() << "an array that requeues itself was rendered";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--requeue"), std::string::npos) << e.what();
  }
}

namespace {

jobs::CampaignSpec sleepSpec(const nlohmann::json& resources) {
  jobs::registerBuiltinTaskKinds();
  return jobs::parseCampaignSpec({{"name", "z"},
                                  {"task", "sleep"},
                                  {"replicas", 4},
                                  {"params", {{"seconds", 0}}},
                                  {"resources", resources}},
                                 "spec.json", "/");
}

}  // namespace

// A pilot's shape comes from its campaign's spec: ranks bind GPU (index on the node) /
// resources.tasks_per_gpu, so a shape the spec cannot bind is refused, naming the campaign.
// `--requeue`: the job requeues itself when interrupted, and the requeued run (Slurm sets
// SLURM_RESTART_COUNT) continues with --resume (before: pretrain refused the --out holding the
// saved state, and every requeue ended there); the log is appended to. Run with an srun that
// records its arguments.
TEST(SbatchScript, ARequeuedPretrainingContinuesFromItsSavedState) {
  SbatchResources r;
  r.requeue = true;
  r.signalGraceSeconds = 0;
  r.foldfarm = "/opt/ff";
  const std::string s = renderPretrainScript(r, {"--data", "d.h5", "--out", "o"});
  EXPECT_NE(s.find("#SBATCH --requeue\n#SBATCH --open-mode=append\n"), std::string::npos) << s;
  expectBashSyntaxOk(s);
  const std::string dir = ::testing::TempDir() + "/requeue_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  FILE* f = std::fopen((dir + "/srun").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("#!/bin/sh\necho \"$*\" > \"$(dirname \"$0\")/args\"\n", f);
  std::fclose(f);
  std::filesystem::permissions(dir + "/srun", std::filesystem::perms::owner_all);
  f = std::fopen((dir + "/job.sh").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(s.c_str(), f);
  std::fclose(f);
  const auto args = [&](const std::string& restarts) {
    ProcessOptions o;
    o.extraEnv = {"PATH=" + dir + ":/usr/bin:/bin", "SLURM_RESTART_COUNT=" + restarts};
    const ProcessResult p = runProcess({"bash", dir + "/job.sh"}, o);
    EXPECT_TRUE(p.ok()) << p.err;
    std::ifstream in(dir + "/args");
    std::string line;
    std::getline(in, line);
    return line;
  };
  const std::string first =
      "--mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=1 --export=ALL /opt/ff pretrain --threads 1 "
      "--data d.h5 --out o";
  EXPECT_EQ(args("0"), first);
  EXPECT_EQ(args("2"), first + " --resume");
  // --resume given by the user: as given, every run.
  const std::string t = renderPretrainScript(r, {"--data", "d.h5", "--out", "o", "--resume"});
  EXPECT_EQ(t.find("ff_resume"), std::string::npos) << t;
  // Submitted again (no restart count) onto an --out that holds a saved state: continued.
  const std::string out = dir + "/out";
  const std::string v = renderPretrainScript(r, {"--data", "d.h5", "--out", out});
  f = std::fopen((dir + "/job.sh").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(v.c_str(), f);
  std::fclose(f);
  const std::string fresh =
      "--mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=1 --export=ALL /opt/ff pretrain --threads 1 "
      "--data d.h5 --out " +
      out;
  EXPECT_EQ(args("0"), fresh);
  std::filesystem::create_directories(out + "/state");
  EXPECT_EQ(args("0"), fresh + " --resume");

  // Stopped at the time limit's warning (USR1): requeued. Stopped by TERM (a scancel; a
  // preemption, which Slurm requeues itself in REQUEUE mode): not, exit 75, saying so (before:
  // a scancel'd job requeued itself and ran again). srun is passed the TERM as USR1: srun
  // answers a TERM by SIGKILLing every rank (before: `scancel -b`'s TERM lost the ranks' work).
  f = std::fopen((dir + "/srun").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(
      "#!/bin/bash\ntrap 'echo TERM > \"$(dirname \"$0\")/got\"; exit 75' TERM\n"
      "trap 'echo USR1 > \"$(dirname \"$0\")/got\"; exit 75' USR1\n"
      "kill -s \"$FF_TEST_SIGNAL\" $PPID\nsleep 5 >/dev/null 2>&1 & wait\n",
      f);
  std::fclose(f);
  f = std::fopen((dir + "/scontrol").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("#!/bin/sh\necho \"$*\" > \"$(dirname \"$0\")/requeued\"\n", f);
  std::fclose(f);
  std::filesystem::permissions(dir + "/scontrol", std::filesystem::perms::owner_all);
  const auto stopped = [&](const std::string& signal) {
    std::filesystem::remove(dir + "/requeued");
    ProcessOptions o;
    o.extraEnv = {"PATH=" + dir + ":/usr/bin:/bin", "SLURM_JOB_ID=7", "FF_TEST_SIGNAL=" + signal};
    const ProcessResult p = runProcess({"bash", dir + "/job.sh"}, o);
    return std::make_tuple(p.status(), std::filesystem::exists(dir + "/requeued"), p.err);
  };
  auto [rc, requeued, err] = stopped("TERM");
  EXPECT_EQ(rc, 75);
  {
    std::ifstream got(dir + "/got");
    std::string line;
    std::getline(got, line);
    EXPECT_EQ(line, "USR1") << "srun was passed the TERM as it came";
  }
  EXPECT_FALSE(requeued) << "a scancel'd job requeued itself";
  EXPECT_NE(err.find("stopped (TERM: scancel or preemption): not requeued by this script; its "
                     "state is saved: submit it again to continue"),
            std::string::npos)
      << err;
  std::tie(rc, requeued, err) = stopped("USR1");
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(requeued);
  EXPECT_NE(err.find("interrupted at the time limit; requeueing job 7"), std::string::npos) << err;
  // A stop during the set-up lines: srun is not started (a signal sent to it before its
  // handlers, or the ranks', are set would end them with nothing saved); the job ends 75.
  {
    SbatchResources early = r;
    early.setupLines = {"kill -s TERM $$", "sleep 0.2"};
    const std::string e = renderPretrainScript(early, {"--data", "d.h5", "--out", "o"});
    f = std::fopen((dir + "/job.sh").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(e.c_str(), f);
    std::fclose(f);
    std::filesystem::remove(dir + "/got");
    std::tie(rc, requeued, err) = stopped("TERM");
    EXPECT_EQ(rc, 75) << err;
    EXPECT_FALSE(std::filesystem::exists(dir + "/got")) << "srun was started after the stop";
    EXPECT_NE(err.find("stopped (TERM: scancel or preemption)"), std::string::npos) << err;
  }

  // Without --requeue the job does not requeue itself, but Slurm requeues it after a node
  // failure or a preemption (JobRequeue=1): that run continues too (before: pretrain refused
  // the --out holding the state, and the job failed), and the output is appended to.
  r.requeue = false;
  const std::string u = renderPretrainScript(r, {"--data", "d.h5", "--out", "o"});
  EXPECT_EQ(u.find("scontrol requeue"), std::string::npos) << u;
  EXPECT_NE(u.find("#SBATCH --open-mode=append\n"), std::string::npos) << u;
  f = std::fopen((dir + "/job.sh").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(u.c_str(), f);
  std::fclose(f);
  f = std::fopen((dir + "/srun").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("#!/bin/sh\necho \"$*\" > \"$(dirname \"$0\")/args\"\n", f);
  std::fclose(f);
  EXPECT_EQ(args("1"), first + " --resume");
  // Stopped (75), or ended otherwise with a save on disk (a rank killed: 137): the job says what
  // continues it, as the --requeue script does (before: only "finished with status 75", and
  // each rank's "rerun the same command with --resume", which the script adds itself).
  const std::string w = renderPretrainScript(r, {"--data", "d.h5", "--out", out});
  f = std::fopen((dir + "/job.sh").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(w.c_str(), f);
  std::fclose(f);
  for (const int code : {75, 137, 1}) {
    f = std::fopen((dir + "/srun").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(("#!/bin/sh\nexit " + std::to_string(code) + "\n").c_str(), f);
    std::fclose(f);
    if (code == 1) std::filesystem::remove_all(out + "/state");
    ProcessOptions o;
    o.extraEnv = {"PATH=" + dir + ":/usr/bin:/bin", "SLURM_JOB_ID=7"};
    const ProcessResult p = runProcess({"bash", dir + "/job.sh"}, o);
    EXPECT_EQ(p.status(), code) << p.err;
    const std::string said = code == 75 ? "foldfarm: stopped, its state saved: "
                                        : "foldfarm: " + out + "/state holds the last save: ";
    EXPECT_EQ(p.err.find(said + "submit this script again (sbatch): it continues from there\n") !=
                  std::string::npos,
              code != 1)
        << code << ": " << p.err;
  }
  std::filesystem::remove_all(dir);
}

TEST(SbatchScript, APilotTakesItsShapeFromTheCampaignAndRefusesAnother) {
  const jobs::CampaignSpec gpu =
      sleepSpec({{"gpus", 4}, {"tasks_per_gpu", 2}, {"threads_per_task", 3}});
  const SbatchResources r = pilotResources(gpu, SbatchResources{}, "D");
  EXPECT_EQ(r.gpusPerNode, 4);
  EXPECT_EQ(r.tasksPerGpu, 2);
  EXPECT_EQ(r.cpusPerTask, 3);
  EXPECT_EQ(r.jobName, "foldfarm-z");
  const std::string s = renderPilotScript(r, "/c");
  // Eight task slots and rank 0, which dispatches (before: 8 ranks ran 7 tasks). The job asks
  // for the slots' CPUs only (before: 9 x 3, so slots filling a node pended for ever); the step
  // starts rank 0 beside them, sharing their CPUs when the allocation has none to spare.
  EXPECT_NE(s.find("#SBATCH --ntasks-per-node=8\n"), std::string::npos) << s;
  EXPECT_NE(s.find("ff_ranks=(--ntasks=9 --ntasks-per-node=9 --overcommit)\n"), std::string::npos)
      << s;
  EXPECT_NE(s.find("if [ \"${ff_cpus:-0}\" -lt 27 ]; then\n  ff_ranks+=(--cpu-bind=none)\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("'--gpu-bind=none' \"${ff_ranks[@]}\" 'foldfarm' 'campaign'"), std::string::npos)
      << s;
  EXPECT_NE(s.find("#SBATCH --gpus-per-node=4\n"), std::string::npos) << s;
  // Fewer GPUs per node than the spec's, and what the user set, are kept.
  SbatchResources given;
  given.gpusPerNode = 2;
  given.cpusPerTask = 8;
  given.jobName = "mine";
  const SbatchResources g = pilotResources(gpu, given, "D");
  EXPECT_EQ(g.gpusPerNode, 2);
  EXPECT_EQ(g.cpusPerTask, 8);
  EXPECT_EQ(g.jobName, "mine");
  auto refused = [](const jobs::CampaignSpec& spec, const SbatchResources& res,
                    const std::string& what) {
    try {
      pilotResources(spec, res, "D");
      ADD_FAILURE() << what << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("D: " + what, 0), 0u) << e.what();
    }
  };
  SbatchResources more;
  more.gpusPerNode = 8;
  refused(gpu, more, "--gpus-per-node 8");
  SbatchResources other;
  other.tasksPerGpu = 4;
  refused(gpu, other, "--tasks-per-gpu 4");
  // A CPU campaign: one rank per slot and, on one node, rank 0 beside them (before: 6 ranks
  // ran 5 tasks, and a pilot of cpu_slots 1 none); no GPUs to idle.
  const jobs::CampaignSpec cpu = sleepSpec({{"cpu_slots", 6}});
  const SbatchResources c = pilotResources(cpu, SbatchResources{}, "D");
  EXPECT_EQ(c.gpusPerNode, 0);
  EXPECT_EQ(c.tasksPerNode, 6);
  EXPECT_NE(renderPilotScript(c, "/c").find("#SBATCH --ntasks-per-node=6\n"), std::string::npos);
  EXPECT_NE(
      renderPilotScript(c, "/c").find("ff_ranks=(--ntasks=7 --ntasks-per-node=7 --overcommit)\n"),
      std::string::npos);
  const SbatchResources one = pilotResources(sleepSpec({{"cpu_slots", 1}}), SbatchResources{}, "D");
  EXPECT_NE(
      renderPilotScript(one, "/c").find("ff_ranks=(--ntasks=2 --ntasks-per-node=2 --overcommit)\n"),
      std::string::npos);
  // Several nodes: the allocation's ranks, node 0's first the dispatcher.
  SbatchResources two_nodes;
  two_nodes.nodes = 2;
  const std::string two = renderPilotScript(pilotResources(cpu, two_nodes, "D"), "/c");
  EXPECT_NE(two.find("#SBATCH --ntasks-per-node=6\n"), std::string::npos);
  EXPECT_EQ(two.find("ff_ranks"), std::string::npos) << two;
  EXPECT_EQ(two.find("--overcommit"), std::string::npos) << two;
  refused(cpu, more, "--gpus-per-node 8");
  // A value given that equals the option's default is given: kept, not the spec's (before:
  // --tasks-per-node 1 and --cpus-per-task 1 were replaced by cpu_slots and
  // threads_per_task, and a pilot too big for its node pended for ever).
  SbatchResources small;
  small.tasksPerNode = 1;
  small.cpusPerTask = 1;
  small.jobName = "foldfarm";
  const SbatchResources shrunk =
      pilotResources(sleepSpec({{"cpu_slots", 6}, {"threads_per_task", 3}}), small, "D");
  EXPECT_EQ(shrunk.tasksPerNode, 1);
  EXPECT_EQ(shrunk.cpusPerTask, 1);
  EXPECT_EQ(shrunk.jobName, "foldfarm");
  SbatchResources one_per_gpu;
  one_per_gpu.tasksPerGpu = 1;
  refused(gpu, one_per_gpu, "--tasks-per-gpu 1");
}

// An array element as `slurm submit` renders it: one GPU, the spec's tasks per GPU as lanes.
TEST(SbatchScript, AnArrayElementTakesItsLanesFromTheCampaign) {
  const SbatchResources r = arrayElementResources(
      sleepSpec({{"gpus", 4}, {"tasks_per_gpu", 2}, {"threads_per_task", 3}}), SbatchResources{});
  EXPECT_EQ(r.gpusPerNode, 1);
  EXPECT_EQ(arrayElementLanes(r), 2);
  EXPECT_EQ(r.cpusPerTask, 3);
  SbatchResources cpu_given;
  cpu_given.tasksPerNode = 5;
  EXPECT_EQ(arrayElementLanes(arrayElementResources(sleepSpec({{"cpu_slots", 2}}), cpu_given)), 5);
}

TEST(ArrayPlan, TenThousandTasksFitOneArray) {
  ArrayPlanOptions o;
  o.lanes = 4;
  o.throttle = 256;
  ArrayPlan p = planArrays(ids(10000), o);
  ASSERT_EQ(p.arrays.size(), 1u);
  EXPECT_EQ(p.tasksPerElement, 10);
  EXPECT_EQ(p.elements(), 1000);
  EXPECT_LE(p.elements(), o.limits.maxArraySize);
  EXPECT_EQ(p.arrays[0].throttle, 256);
  EXPECT_EQ(p.tasks(), 10000);
  EXPECT_TRUE(p.deferred.empty());
}

TEST(ArrayPlan, SplitsUnderMaxArraySizeAndKeepsEveryTaskOnce) {
  ArrayPlanOptions o;
  o.lanes = 1;
  o.tasksPerElement = 3;
  o.throttle = 100;
  o.limits.maxArraySize = 50;
  ArrayPlan p = planArrays(ids(400), o);  // 134 elements -> 50 + 50 + 34
  ASSERT_EQ(p.arrays.size(), 3u);
  std::multiset<std::string> seen;
  int throttle = 0;
  for (const auto& a : p.arrays) {
    EXPECT_LE(static_cast<int>(a.shards.size()), 50);
    EXPECT_GE(a.throttle, 1);
    throttle += a.throttle;
    for (const auto& s : a.shards) {
      EXPECT_LE(s.size(), 3u);
      seen.insert(s.begin(), s.end());
    }
  }
  EXPECT_EQ(throttle, 100);
  EXPECT_EQ(seen.size(), 400u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 400u);
}

TEST(ArrayPlan, DefersBeyondMaxJobCountBudget) {
  ArrayPlanOptions o;
  o.tasksPerElement = 1;
  o.limits.maxJobCount = 100;
  o.queuedJobs = 60;  // budget = 100 - 60 - 10 = 30 elements
  ArrayPlan p = planArrays(ids(50), o);
  EXPECT_EQ(p.elements(), 30);
  EXPECT_EQ(p.deferred.size(), 20u);
  EXPECT_EQ(p.deferred.front(), "t30");
  o.queuedJobs = 95;
  EXPECT_EQ(planArrays(ids(5), o).elements(), 0);
}

TEST(ArrayPlan, ManifestLinesAndBadIds) {
  ArrayPlanOptions o;
  o.tasksPerElement = 2;
  ArrayPlan p = planArrays(ids(5), o);
  EXPECT_EQ(manifestText(p.arrays.at(0)), "t0\tt1\nt2\tt3\nt4\n");
  EXPECT_THROW(planArrays({"a\tb"}, o), InputError);
}

TEST(SlurmParse, SbatchParsable) {
  EXPECT_EQ(parseSbatchParsable("123\n").jobId, "123");
  SubmittedJob j = parseSbatchParsable("456;cluster-a\n");
  EXPECT_EQ(j.jobId, "456");
  EXPECT_EQ(j.cluster, "cluster-a");
  EXPECT_THROW(parseSbatchParsable("Submitted batch job 7\n"), Error);
  EXPECT_THROW(parseSbatchParsable(""), Error);
}

TEST(SlurmParse, SqueueAndConfig) {
  auto jobs =
      parseSqueue("7|0|8|RUNNING|None\n7|1|7|PENDING|Resources\n9|N/A|9|TIMEOUT|TimeLimit\n");
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].externalId(), "7_0");
  EXPECT_FALSE(jobs[1].finished());
  EXPECT_EQ(jobs[2].externalId(), "9");
  EXPECT_TRUE(jobs[2].finished());
  EXPECT_THROW(parseSqueue("7|0-5%2|7|PENDING|None\n"), Error);
  EXPECT_THROW(parseSqueue("garbage\n"), Error);
  // An index beyond int is a format error with the line, not std::stoi's "stoi".
  EXPECT_THROW(parseSqueue("7|99999999999|7|PENDING|None\n"), Error);
  // A value beyond long long clamps like any other large one instead of throwing "stoll".
  EXPECT_EQ(parseSlurmConfig("MaxArraySize = 99999999999999999999999\n").maxArraySize, 1 << 30);
  SlurmLimits l = parseSlurmConfig(
      "MaxArraySize            = 40001\nMaxJobCount  = 50000\nMinJobAge = 60 sec\n");
  EXPECT_EQ(l.maxArraySize, 40001);
  EXPECT_EQ(l.maxJobCount, 50000);
  EXPECT_EQ(l.minJobAge, 60);
  EXPECT_EQ(arrayJobIdOf("123_4"), "123");
  EXPECT_EQ(arrayJobIdOf("123"), "123");
  EXPECT_EQ(arrayJobIdOf("local:1"), "");
}

TEST(ChildProcess, ArgvIsNotParsedByAShell) {
  ProcessResult r = runProcess({"printf", "%s|", "a b", "$(id)", ";x"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.out, "a b|$(id)|;x|");
  EXPECT_THROW(runProcess({"/nonexistent/prog"}), Error);
  ProcessResult f = runProcess({"sh", "-c", "echo oops >&2; exit 3"});
  EXPECT_EQ(f.exitCode, 3);
  EXPECT_NE(f.describeFailure().find("oops"), std::string::npos);
}

// `slurm submit` names a bad option before it asks Slurm anything or touches a task
// directory (here Slurm is unreachable: the options must be the first thing refused).
TEST(SlurmSubmit, BadOptionsAreNamedBeforeSlurmIsAsked) {
  jobs::registerBuiltinTaskKinds();
  const std::string dir = std::filesystem::temp_directory_path().string() + "/ff-submit-opts-" +
                          std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  nlohmann::json spec = {{"name", "s"},         {"task", "sleep"},
                         {"replicas", 2},       {"params", {{"seconds", 0.1}}},
                         {"executor", "slurm"}, {"resources", {{"cpu_slots", 1}}}};
  jobs::Campaign::init(jobs::parseCampaignSpec(spec, "test spec", dir), dir);
  struct Case {
    const char* option;
    void (*set)(SbatchResources&);
  };
  const Case cases[] = {
      {"--nodes", [](SbatchResources& r) { r.nodes = -1; }},
      {"--cpus-per-task", [](SbatchResources& r) { r.cpusPerTask = -1; }},
      {"--time", [](SbatchResources& r) { r.time = "soon"; }},
      {"--mem", [](SbatchResources& r) { r.mem = "lots"; }},
      {"--partition", [](SbatchResources& r) { r.partition = "a;b"; }},
      {"--output", [](SbatchResources& r) { r.output = "out\\%j"; }},
  };
  for (const Case& c : cases) {
    SlurmCampaignOptions o;
    o.programs.sbatch = o.programs.squeue = o.programs.scontrol = o.programs.scancel =
        "/nonexistent/slurm-program";
    c.set(o.resources);
    try {
      runCampaignOnSlurm(dir, o);
      ADD_FAILURE() << c.option << ": accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.option), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.option << ": " << e.what();
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/slurm")) << "nothing submitted, nothing written";
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir + "/tasks"))
    EXPECT_NE(e.path().filename(), ".attempt") << "no attempt promised: " << e.path();
  std::filesystem::remove_all(dir);
}

// A bare `slurm submit D` (or `campaign retry D`) takes the last submission's value of every
// option not given; one given wins, and --setup or --setup-file given takes neither set-up
// from the record (they are one recorded option).
TEST(SubmitOptions, RecordedValuesFillOnlyTheOptionsNotGiven) {
  SlurmCampaignOptions recorded;
  recorded.resources.partition = "gpu";
  recorded.resources.account = "physics";
  recorded.resources.time = "2:00:00";
  recorded.resources.setupLines = {"module load cuda"};
  recorded.throttle = 7;
  recorded.maxSubmissions = 9;
  SlurmCampaignOptions given;
  given.resources.partition = "debug";
  given.resources.setupLines = {};
  given.throttle = 3;
  given.wait = false;  // not a recorded option: always this command's
  const SlurmCampaignOptions o =
      withRecordedOptions(given, recorded, {"partition", "throttle", "setup-file"});
  EXPECT_EQ(o.resources.partition, "debug");
  EXPECT_EQ(o.throttle, 3);
  EXPECT_TRUE(o.resources.setupLines.empty());
  EXPECT_EQ(o.resources.account, "physics");
  EXPECT_EQ(o.resources.time, "2:00:00");
  EXPECT_EQ(o.maxSubmissions, 9);
  EXPECT_FALSE(o.wait);
  const SlurmCampaignOptions bare = withRecordedOptions(given, recorded, {});
  EXPECT_EQ(bare.resources.partition, "gpu");
  EXPECT_EQ(bare.throttle, 7);
  EXPECT_EQ(bare.resources.setupLines, std::vector<std::string>{"module load cuda"});
}

// Set-up files are appended line by line after the --setup lines, the default foldfarm
// becomes this executable's absolute path, and an unreadable file is named.
TEST(SubmitOptions, ResolvedResourcesReadSetupFilesAndNameThisFoldfarm) {
  const std::string dir = testing::TempDir() + "/ff-resolve-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  { std::ofstream(dir + "/setup.sh") << "module load cuda\nexport X='a b'\n"; }
  SbatchResources given;
  given.setupLines = {"set -x"};
  const SbatchResources r = resolveResources(given, {dir + "/setup.sh"});
  EXPECT_EQ(r.setupLines,
            (std::vector<std::string>{"set -x", "module load cuda", "export X='a b'"}));
  EXPECT_TRUE(std::filesystem::path(r.foldfarm).is_absolute()) << r.foldfarm;
  given.foldfarm = "/opt/ff/bin/foldfarm";
  EXPECT_EQ(resolveResources(given, {}).foldfarm, "/opt/ff/bin/foldfarm");
  try {
    resolveResources(given, {dir + "/missing.sh"});
    ADD_FAILURE() << "a missing set-up file was read";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/missing.sh"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}
