// The --out of the standalone commands through the real binary: a second run into a
// directory that a run holds is refused with one line naming the holder (alone and under
// `mpirun -np 2`, where no rank hangs), and the temporaries that a run killed while writing
// left there are removed by the next run into it. Under mpirun an error that every rank
// finds alike (a bad option or config, a held --out) is printed once, by rank 0.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/output_lock.hpp"
#include "core/base/process.hpp"
#include "core/data/h5_file.hpp"
#include "tests/data/bad_files.hpp"
#include "tests/support/run_child.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;
using foldfarm::testing::errorLines;
using foldfarm::testing::runFoldfarm;
using foldfarm::testing::runSingleThreaded;

namespace {

class OutputDirs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (fs::temp_directory_path() / ("ff_output_dirs_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const std::vector<std::string>& a :
         {std::vector<std::string>{"data", "synth", "--kind", "pretrain", "--jets", "150", "--seed",
                                   "3", "--particles", "32", "--out", dir_ + "/jets.h5"},
          std::vector<std::string>{"data", "synth", "--kind", "unfold", "--tune", "sim", "--events",
                                   "120", "--seed", "4", "--out", dir_ + "/mc.h5"},
          std::vector<std::string>{"data", "synth", "--kind", "unfold", "--tune", "data",
                                   "--events", "120", "--seed", "5", "--out", dir_ + "/data.h5"}}) {
      const ProcessResult r = runFoldfarm(a, dir_, {}, 120);
      ASSERT_TRUE(r.ok()) << r.describe() << "\n" << r.err;
    }
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::vector<std::string> pretrain(const std::string& out, const char* epochs = "1") {
    return {"pretrain", "--data", dir_ + "/jets.h5", "--out", out, "--preset", "tiny",
            "--epochs", epochs,   "--threads",       "1"};
  }

  static std::string dir_;
};
std::string OutputDirs::dir_;

// `mpirun -np 2 foldfarm --log-level warn ARGS`, as an argv and run.
std::vector<std::string> mpirunArgv(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {FOLDFARM_MPIRUN,
                                   "--allow-run-as-root",
                                   "--oversubscribe",
                                   "-np",
                                   "2",
                                   FOLDFARM_BINARY,
                                   "--log-level",
                                   "warn"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}
ProcessResult underMpirun(const std::vector<std::string>& args) {
  return runSingleThreaded(mpirunArgv(args), 120);
}

std::string slurpFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The processes whose parent is `parent` (mpirun's ranks on this node).
std::vector<pid_t> childrenOf(pid_t parent) {
  std::vector<pid_t> pids;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = slurpFile(e.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    long ppid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent)
      pids.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return pids;
}

std::vector<std::string> temporariesUnder(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (isTemporaryFileName(e.path().filename().string())) found.push_back(e.path().string());
  return found;
}

}  // namespace

TEST_F(OutputDirs, ASecondRunIntoAHeldDirectoryIsRefusedAndWritesNothing) {
  const std::string out = dir_ + "/held";
  OutputDirectoryLock held(out, "--out");  // this process plays the first run
  ASSERT_TRUE(held.locked());
  const std::string holder = out + ": another foldfarm run is writing into this directory (pid " +
                             std::to_string(::getpid());
  const std::string qg = std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5";
  const std::vector<std::vector<std::string>> runs = {
      pretrain(out),
      {"finetune", "--init", "none", "--train", qg, "--out", out, "--epochs", "1"},
      {"unfold", "--mc", dir_ + "/mc.h5", "--data", dir_ + "/data.h5", "--init", "none", "--out",
       out, "--replica", "0", "--member", "0"}};
  for (const auto& args : runs) {
    const ProcessResult r = runFoldfarm(args, dir_, {}, 120);
    EXPECT_EQ(r.status(), 2) << args[0] << ": " << r.err;
    EXPECT_NE(r.err.find(holder), std::string::npos) << args[0] << ": " << r.err;
    EXPECT_EQ(errorLines(r.err), 1) << args[0] << ": " << r.err;
    EXPECT_TRUE(fs::is_empty(out)) << args[0];
  }

  // Under mpirun -np 2 rank 0 takes the directory; both ranks end at once, and only rank 0
  // prints the line.
  const ProcessResult r = underMpirun(pretrain(out));
  EXPECT_FALSE(r.timedOut) << r.err;
  EXPECT_NE(r.status(), 0) << r.err;
  EXPECT_NE(r.err.find(holder), std::string::npos) << r.err;
  EXPECT_EQ(errorLines(r.err), 1) << r.err;
  EXPECT_TRUE(fs::is_empty(out));
}

// Before: each of the N ranks printed the same line.
TEST_F(OutputDirs, UnderMpirunAnErrorEveryRankFindsIsPrintedOnce) {
  std::ofstream(dir_ + "/bad_chain.json") << R"({"epochs": "many"})";
  const std::vector<std::vector<std::string>> cases = {
      pretrain(dir_ + "/zero_epochs", "0"),
      {"pretrain", "--data", dir_ + "/jets.h5", "--out", dir_ + "/typo", "--epoch", "1"},
      {"pretrain", "--data", dir_ + "/jets.h5", "--out", dir_ + "/decay", "--preset", "tiny",
       "--lr", "0.5", "--config", dir_ + "/decay.json"},
      {"unfold", "--mc", dir_ + "/mc.h5", "--data", dir_ + "/data.h5", "--init", "none", "--out",
       dir_ + "/bad_chain", "--replica", "0", "--member", "0", "--config",
       dir_ + "/bad_chain.json"},
      {"unfold", "--mc", dir_ + "/mc.h5", "--data", dir_ + "/data.h5", "--init", "none", "--out",
       dir_ + "/bad_iterations", "--replica", "0", "--member", "0", "--iterations", "0"},
      {"unfold", "--mc", dir_ + "/mc.h5", "--data", dir_ + "/data.h5", "--init", "none", "--out",
       dir_ + "/no_config", "--replica", "0", "--member", "0", "--config", dir_ + "/missing.json"},
      {"unfold", "--mc", dir_ + "/mc.h5", "--data", dir_ + "/data.h5", "--init", "none", "--out",
       dir_ + "/syntax", "--replica", "0", "--member", "0", "--config", dir_ + "/syntax.json"},
      // Fine-tuning is one process's: refused once (before: both ranks trained into one --out
      // and one was refused its lock, failing the job after the other finished).
      {"finetune", "--train", dir_ + "/jets.h5", "--out", dir_ + "/ft_ranks"},
      // What every rank finds in the files or options before and after MPI starts (each was
      // said by both ranks before).
      {"pretrain", "--data", dir_ + "/jets.h5", "--out", dir_ + "/nccl", "--dist-backend", "nccl"},
      {"pretrain", "--data", dir_ + "/mc.h5", "--out", dir_ + "/unfolding_file"},
      {"pretrain", "--data", dir_ + "/mc.h5", "--out", dir_ + "/unfolding_stream", "--stream"},
      {"pretrain", "--data", dir_ + "/jets.h5", "--out", dir_ + "/both", "--stream",
       "--shard-data"},
      {"pretrain", "--data", dir_ + "/nan.h5", "--out", dir_ + "/nan"},
      {"unfold", "--mc", dir_ + "/mc.h5", "--data", dir_ + "/data.h5", "--init", "none", "--out",
       dir_ + "/other_chain", "--replica", "0", "--member", "0"},
      {"generate", "--ckpt", dir_ + "/none", "--class", "0", "--jets", "4", "--out",
       dir_ + "/gen.h5"},
      {"pretrain", "--data", dir_ + "/jets.h5", "--out", dir_ + "/foo", "--dist-backend", "foo"},
      // A path missing on the node: its first rank says so (before: each rank did).
      {"unfold", "--mc", dir_ + "/missing_mc.h5", "--data", dir_ + "/data.h5", "--init", "none",
       "--out", dir_ + "/no_mc", "--replica", "0", "--member", "0"},
      {"unfold", "--mc", dir_ + "/mc.h5", "--data", dir_ + "/data.h5", "--init",
       dir_ + "/missing_ckpt", "--out", dir_ + "/no_init", "--replica", "0", "--member", "0"}};
  // The state of a chain of other parameters (of this build's chain format: one without is an
  // older build's, refused as such), and a jets file with a NaN.
  fs::create_directories(dir_ + "/other_chain/state");
  std::ofstream(dir_ + "/other_chain/state/progress.json")
      << R"({"spec": {"replica": 7}, "done_steps": 0, "history": [], "chain_format": 2})";
  data::badfiles::writeBad(dir_ + "/nan.h5", "nan");
  std::ofstream(dir_ + "/syntax.json") << R"({"epochs": 2,})";
  std::ofstream(dir_ + "/decay.json") << R"({"train": {"weight_decay": 3}})";
  const std::string expected[] = {"epochs",
                                  "--epoch",
                                  "weight_decay",
                                  "'epochs'",
                                  "iterations",
                                  "missing.json",
                                  "not valid JSON",
                                  "finetune trains on one process",
                                  "--dist-backend nccl",
                                  "expected a jets file",
                                  "expected a jets file",
                                  "exclude each other",
                                  "nan.h5",
                                  "holds the state of a chain with different parameters",
                                  "generate samples on one process",
                                  "--dist-backend foo: not a data-parallel backend",
                                  "--mc " + dir_ + "/missing_mc.h5: no such file",
                                  "--init " + dir_ + "/missing_ckpt: no such file"};
  static_assert(std::size(expected) == 18);
  for (size_t i = 0; i < std::size(cases); ++i) {
    const ProcessResult r = underMpirun(cases[i]);
    EXPECT_FALSE(r.timedOut) << cases[i][0] << ": " << r.err;
    EXPECT_NE(r.status(), 0) << r.err;
    EXPECT_EQ(errorLines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(expected[i]), std::string::npos) << r.err;
  }
}

// A stop that every rank agrees on (SIGTERM to the ranks, as Slurm sends it) is said once, by
// rank 0, and not as an error; each rank exits 75 and --resume finishes the training.
TEST_F(OutputDirs, UnderMpirunAStopIsSaidOnceAndResumes) {
  const std::string out = dir_ + "/stopped";
  std::vector<std::string> args = pretrain(out, "40");
  const std::string log = dir_ + "/stopped.log";
  const pid_t mpirun = foldfarm::testing::spawnLogged(mpirunArgv(args), log);
  ASSERT_GT(mpirun, 0);
  // Once the first epoch's state is written, SIGTERM to both ranks.
  for (int i = 0; i < 1200 && !fs::exists(out + "/state/meta.json"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(out + "/state/meta.json"));
  const std::vector<pid_t> ranks = childrenOf(mpirun);
  ASSERT_EQ(ranks.size(), 2u);
  for (const pid_t r : ranks) ::kill(r, SIGTERM);
  EXPECT_EQ(foldfarm::testing::waitExitWithin(mpirun, 240), 75);
  const std::string err = slurpFile(log);
  EXPECT_EQ(errorLines(err), 0) << err;
  size_t said = 0;
  for (size_t at = err.find("stopped at epoch"); at != std::string::npos;
       at = err.find("stopped at epoch", at + 1))
    ++said;
  EXPECT_EQ(said, 1u) << err;
  // The command says how it continues (the trainer does not: a campaign task's stop is
  // continued by its next attempt, and its log said "rerun with --resume" there too).
  EXPECT_NE(err.find("; state saved to " + out +
                     "/state; rerun the same command with --resume "
                     "to continue"),
            std::string::npos)
      << err;
  args.push_back("--resume");
  const ProcessResult r = underMpirun(args);
  EXPECT_TRUE(r.ok()) << r.err;
  EXPECT_TRUE(fs::exists(out + "/model/meta.json"));
}

TEST_F(OutputDirs, TemporariesOfARunKilledWhileWritingAreRemovedByTheNextRun) {
  const std::string out = dir_ + "/killed";
  ProcessResult r = runFoldfarm(pretrain(out), dir_, {}, 180);
  ASSERT_TRUE(r.ok()) << r.err;
  ASSERT_TRUE(fs::exists(out + "/state/meta.json"));
  // What SIGKILL during a checkpoint write leaves (the pid of a writer long gone).
  for (const char* left : {"/state/meta.json.tmp.999999.0", "/state/tensors-0123.pt.tmp.999999.1",
                           "/model/meta.json.tmp.999999.2"})
    std::ofstream(out + left) << "partial";
  std::vector<std::string> resume = pretrain(out, "2");
  resume.push_back("--resume");
  r = runFoldfarm(resume, dir_, {}, 180);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_TRUE(temporariesUnder(out).empty());
  EXPECT_TRUE(fs::exists(out + "/model/meta.json"));
  // Resumed again after it finished: the model is kept as it was (before: its meta.json was
  // written again, "resumed": true, and the campaigns that recorded it refused to run).
  const std::string meta = foldfarm::readFile(out + "/model/meta.json");
  const auto written = fs::last_write_time(out + "/model/meta.json");
  r = runFoldfarm(resume, dir_, {}, 180);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(foldfarm::readFile(out + "/model/meta.json"), meta);
  EXPECT_EQ(fs::last_write_time(out + "/model/meta.json"), written);
}

namespace {

// The output directory of the other command is named as such (before: pretrain into a
// fine-tuning's directory said "pass --resume", which then failed on the model's shape), and a
// --resume with no state to resume says that training starts from the beginning.
TEST_F(OutputDirs, TheOtherCommandsOutputIsNamedAndAResumeOfNothingIsSaid) {
  const auto fakeState = [](const std::string& dir, bool generator) {
    fs::create_directories(dir);
    std::ofstream(dir + "/meta.json")
        << nlohmann::json{{"config", {{"generator", generator}}}}.dump();
  };
  const std::string fine = dir_ + "/a_finetuning", pre = dir_ + "/a_pretraining";
  fakeState(fine + "/state", false);
  fakeState(pre + "/model", true);
  const std::string qg = std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5";
  ProcessResult r = runFoldfarm(pretrain(fine), dir_, {}, 120);
  EXPECT_EQ(r.status(), 2) << r.err;
  EXPECT_NE(r.err.find(fine + ": holds the training state of a fine-tuning"), std::string::npos)
      << r.err;
  r = runFoldfarm({"finetune", "--init", "none", "--train", qg, "--out", pre, "--epochs", "1"},
                  dir_, {}, 120);
  EXPECT_EQ(r.status(), 2) << r.err;
  EXPECT_NE(r.err.find(pre + ": holds a pretraining (`foldfarm pretrain --out`)"),
            std::string::npos)
      << r.err;
  // A model without its state: refused, in one line (before: after a warning that training
  // starts at epoch 0).
  std::vector<std::string> model_only = pretrain(pre);
  model_only.push_back("--resume");
  r = runFoldfarm(model_only, dir_, {}, 120);
  EXPECT_EQ(r.status(), 2) << r.err;
  EXPECT_NE(r.err.find(pre + ": holds a model"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("training starts at epoch 0"), std::string::npos) << r.err;
  // Another command's output (a chain, a campaign): refused, nothing written (before:
  // model/ and state/ beside its files, and a chain directory then passed as `unfold --init`).
  const std::string chain = dir_ + "/a_chain", camp = dir_ + "/a_campaign";
  fs::create_directories(chain);
  fs::create_directories(camp);
  std::ofstream(chain + "/result.json") << "{}";
  std::ofstream(chain + "/histograms.h5") << "x";
  std::ofstream(camp + "/spec.json") << "{}";
  std::ofstream(camp + "/journal.sqlite") << "x";
  r = runFoldfarm(pretrain(chain), dir_, {}, 120);
  EXPECT_EQ(r.status(), 2) << r.err;
  EXPECT_NE(r.err.find(chain + ": holds an OmniFold chain (`foldfarm unfold --out`), not a "
                               "pretraining; choose another --out"),
            std::string::npos)
      << r.err;
  r = runFoldfarm({"finetune", "--init", "none", "--train", qg, "--out", camp, "--epochs", "1"},
                  dir_, {}, 120);
  EXPECT_EQ(r.status(), 2) << r.err;
  EXPECT_NE(r.err.find(camp + ": holds a campaign (`foldfarm campaign init --dir`), not a "
                              "fine-tuning"),
            std::string::npos)
      << r.err;
  for (const std::string& d : {chain, camp}) {
    EXPECT_FALSE(fs::exists(d + "/model")) << d;
    EXPECT_FALSE(fs::exists(d + "/state")) << d;
  }
  // Below one too: a campaign's tasks/ (before: model/ and state/ beside the task folders).
  r = runFoldfarm(pretrain(camp + "/tasks"), dir_, {}, 120);
  EXPECT_EQ(r.status(), 2) << r.err;
  EXPECT_NE(
      r.err.find(camp + "/tasks: is inside a campaign (`foldfarm campaign init --dir`) at " + camp),
      std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(camp + "/tasks"));
  std::vector<std::string> args = pretrain(dir_ + "/fresh");
  args.push_back("--resume");
  r = runFoldfarm(args, dir_, {}, 120);
  EXPECT_TRUE(r.ok()) << r.err;
  EXPECT_NE(r.err.find("pretrain --resume: " + dir_ + "/fresh holds no training state"),
            std::string::npos)
      << r.err;
}

}  // namespace

// Chains of one unfolding started from different directories, with relative paths: they
// record their files by absolute path, so they aggregate together, from any directory, and
// event_weights.h5 names the simulation by its absolute path (before: as typed: "unfolds
// otherwise", and "mc.h5: no such file" from another directory). A missing file names its
// option.
TEST_F(OutputDirs, ChainsStartedFromDifferentDirectoriesAggregateTogether) {
  const std::string runs = dir_ + "/rel_runs";
  std::ofstream(dir_ + "/mlp1.json") << R"({"classifier": "mlp", "mlp": {"epochs": 1}})";
  const auto unfold = [&](const std::string& cwd, const std::string& prefix, const char* replica) {
    return runFoldfarm(
        {"unfold", "--mc", prefix + "mc.h5", "--data", prefix + "data.h5", "--init", "none",
         "--out", runs + "/r" + replica, "--replica", replica, "--member", "0", "--iterations", "1",
         "--config", dir_ + "/mlp1.json", "--threads", "1"},
        cwd);
  };
  const std::string base = fs::path(dir_).filename().string() + "/";
  for (const auto& [cwd, prefix, replica] :
       {std::tuple<std::string, std::string, const char*>{dir_, "", "0"},
        {fs::path(dir_).parent_path().string(), base, "1"},
        {dir_, dir_ + "/", "2"}}) {
    const ProcessResult r = unfold(cwd, prefix, replica);
    ASSERT_TRUE(r.ok()) << r.describe() << "\n" << r.err;
  }
  const ProcessResult agg =
      runFoldfarm({"aggregate", "--runs", runs, "--out", dir_ + "/rel_agg", "--no-plots"}, "/");
  ASSERT_TRUE(agg.ok()) << agg.describe() << "\n" << agg.err;
  const foldfarm::data::H5Handle ew =
      foldfarm::data::h5OpenRead(dir_ + "/rel_agg/event_weights.h5");
  EXPECT_EQ(foldfarm::data::h5ReadAttrAsString(ew.get(), "simulation"),
            fs::path(dir_ + "/mc.h5").lexically_normal().string());
  const ProcessResult missing =
      runFoldfarm({"unfold", "--mc", "mc.h5", "--data", "nope.h5", "--init", "none", "--out",
                   dir_ + "/rel_missing", "--replica", "0", "--member", "0"},
                  dir_);
  EXPECT_EQ(missing.status(), 2);
  EXPECT_NE(missing.err.find("--data nope.h5: no such file; check the path"), std::string::npos)
      << missing.err;
  EXPECT_FALSE(fs::exists(dir_ + "/rel_missing"));
}

// A gnuplot on PATH that fails its check (here it crashes; a time-out on a loaded login node
// does the same) is refused with one line before anything is written: the earlier figures stay
// (before: "gnuplot ... is not installed", exit 0, and the earlier figures removed).
TEST_F(OutputDirs, AGnuplotThatFailsItsCheckIsSaidAndTheEarlierFiguresStay) {
  if (!foldfarm::programAvailable("gnuplot")) GTEST_SKIP() << "no gnuplot here";
  const std::string runs = dir_ + "/gp_runs", out = dir_ + "/gp_agg", fake = dir_ + "/fakebin";
  std::ofstream(dir_ + "/gp_mlp.json") << R"({"classifier": "mlp", "mlp": {"epochs": 1}})";
  for (const char* replica : {"0", "1"}) {
    const ProcessResult r =
        runFoldfarm({"unfold", "--mc", dir_ + "/mc.h5", "--data", dir_ + "/data.h5", "--init",
                     "none", "--out", runs + "/r" + replica, "--replica", replica, "--member", "0",
                     "--iterations", "1", "--config", dir_ + "/gp_mlp.json", "--threads", "1"},
                    dir_);
    ASSERT_TRUE(r.ok()) << r.describe() << "\n" << r.err;
  }
  ProcessResult agg = runFoldfarm({"aggregate", "--runs", runs, "--out", out}, dir_);
  ASSERT_TRUE(agg.ok()) << agg.describe() << "\n" << agg.err;
  std::map<std::string, std::string> before;
  for (const auto& e : fs::directory_iterator(out))
    before[e.path().filename().string()] = foldfarm::readFile(e.path().string());
  ASSERT_TRUE(before.count("mass.png")) << "figures were written";

  fs::create_directories(fake);
  std::ofstream(fake + "/gnuplot") << "#!/bin/sh\nkill -SEGV $$\n";
  fs::permissions(fake + "/gnuplot", fs::perms::owner_all);
  const char* path = std::getenv("PATH");
  agg = runFoldfarm({"aggregate", "--runs", runs, "--out", out}, dir_,
                    {"PATH=" + fake + ":" + (path ? path : "/usr/bin:/bin")});
  EXPECT_EQ(agg.status(), 1) << agg.err;
  EXPECT_EQ(foldfarm::testing::errorLines(agg.err), 1) << agg.err;
  EXPECT_NE(agg.err.find("the gnuplot on PATH fails"), std::string::npos) << agg.err;
  EXPECT_NE(agg.err.find("--no-plots"), std::string::npos) << agg.err;
  std::map<std::string, std::string> after;
  for (const auto& e : fs::directory_iterator(out))
    after[e.path().filename().string()] = foldfarm::readFile(e.path().string());
  EXPECT_TRUE(after == before) << "the refused aggregation changed " << out;
}

namespace {

// An `mlp` chain stopped during a long MLP fit (SIGUSR1: a time limit's warning) stops at the
// next batch with exit 75 (before: it trained all its epochs first, past a Slurm job's grace),
// and the chain runs on from its saved state when run again.
TEST_F(OutputDirs, AnMlpFitStopsAtTheNextBatch) {
  std::ofstream(dir_ + "/mlp_long.json")
      << R"({"classifier": "mlp", "mlp": {"epochs": 1000000, "patience": 0}})";
  const std::string out = dir_ + "/mlp_stopped", log = dir_ + "/mlp_stopped.log";
  const pid_t pid = foldfarm::testing::spawnLogged({FOLDFARM_BINARY, "unfold",
                                                    "--mc",          dir_ + "/mc.h5",
                                                    "--data",        dir_ + "/data.h5",
                                                    "--init",        "none",
                                                    "--out",         out,
                                                    "--replica",     "0",
                                                    "--member",      "0",
                                                    "--iterations",  "1",
                                                    "--config",      dir_ + "/mlp_long.json",
                                                    "--threads",     "1"},
                                                   log);
  // Into the fit: its epochs are logged at debug only, so wait for the step to start.
  for (int i = 0; i < 600 && !fs::exists(out + "/state"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(foldfarm::testing::waitExitWithin(pid, 120), 75) << foldfarm::readFile(log);
  EXPECT_NE(foldfarm::readFile(log).find(out + ": interrupted; state saved"), std::string::npos)
      << foldfarm::readFile(log);
  EXPECT_FALSE(fs::exists(out + "/result.json"));
}

}  // namespace

// The commands that messages suggest are pasted into a shell as they are: a campaign whose
// directory holds a space and a quote is named in them as one shell word, so that the
// suggested `campaign status` and `campaign retry … --failed` run on that campaign (before:
// the path went in bare and the shell split it at the space).
TEST_F(OutputDirs, TheCommandsAMessageSuggestsRunAsPastedWhereThePathHasASpaceAndAQuote) {
  const std::string work = dir_ + "/paste";
  fs::create_directories(work + "/bin");
  fs::create_symlink(FOLDFARM_BINARY, work + "/bin/foldfarm");
  const std::string camp = work + "/it's a campaign";
  const std::string marker = work + "/failed-once";
  // One command task that fails on its first run and succeeds on the next.
  std::ofstream(work + "/spec.json") << nlohmann::json{
      {"name", "paste"},
      {"task", "command"},
      {"replicas", 1},
      {"retry", {{"max_attempts", 1}}},
      {"params",
       {{"argv",
         {"/bin/sh", "-c", "test -e \"$0\" || { : > \"$0\"; exit 3; }",
          marker}}}}}.dump();
  ProcessResult r = runFoldfarm({"campaign", "init", work + "/spec.json", "--dir", camp}, work);
  ASSERT_TRUE(r.ok()) << r.describeFailure();
  r = runFoldfarm({"campaign", "run", camp, "--slots", "1"}, work);
  ASSERT_EQ(r.exitCode, 1) << r.describeFailure();
  // The error line's commands, between backticks.
  std::vector<std::string> suggested;
  const size_t line = r.err.find("foldfarm: error:");
  ASSERT_NE(line, std::string::npos) << r.err;
  const std::string error = r.err.substr(line, r.err.find('\n', line) - line);
  EXPECT_NE(error.find(": 1 task(s) of the campaign failed"), std::string::npos) << error;
  for (size_t a = error.find('`'); a != std::string::npos; a = error.find('`', a + 1)) {
    const size_t b = error.find('`', a + 1);
    ASSERT_NE(b, std::string::npos) << error;
    suggested.push_back(error.substr(a + 1, b - a - 1));
    a = b;
  }
  const std::string word = "'" + work + "/it'\\''s a campaign'";
  ASSERT_EQ(suggested, (std::vector<std::string>{"foldfarm campaign status " + word,
                                                 "foldfarm campaign retry " + word + " --failed"}))
      << error;
  // Pasted into a shell (from another directory), each runs on the campaign.
  const auto paste = [&](const std::string& command) {
    ProcessOptions o;
    o.cwd = dir_;
    o.timeout = std::chrono::seconds(120);
    o.extraEnv = {"PATH=" + work + "/bin:" + std::string(std::getenv("PATH")), "OMP_NUM_THREADS=1"};
    return runProcess({"/bin/sh", "-c", command}, o);
  };
  r = paste(suggested[0]);
  ASSERT_TRUE(r.ok()) << r.describeFailure();
  EXPECT_NE(r.out.find("failed 1"), std::string::npos) << r.out;
  r = paste(suggested[1]);
  ASSERT_TRUE(r.ok()) << r.describeFailure();
  r = runFoldfarm({"campaign", "status", camp, "--json"}, work);
  ASSERT_TRUE(r.ok()) << r.describeFailure();
  EXPECT_EQ(nlohmann::json::parse(r.out)["counts"].value("done", 0), 1) << r.out;
}
