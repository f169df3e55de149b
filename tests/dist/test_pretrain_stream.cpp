// `foldfarm pretrain --stream` under mpirun -np 2 (started by the test): a run stopped by
// SIGUSR1 in the middle of an epoch and resumed on two ranks ends with a model bit-identical
// to an uninterrupted run; a stopped run resumes on one rank and completes; a file among
// many that cannot be read, or a NaN in one, is refused by name before training, with nothing
// written.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "core/base/atomic_file.hpp"
#include "core/base/process.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"
#include "tests/dist/stream_pretrain.hpp"
#include "tests/support/run_child.hpp"

using foldfarm::ProcessResult;
using foldfarm::testing::runSingleThreaded;
namespace fs = std::filesystem;

namespace {

// The text of a file, "" while it does not exist yet.
std::string slurp(const fs::path& p) {
  return fs::exists(p) ? foldfarm::readFile(p.string()) : std::string();
}

// The tensors file of a checkpoint directory.
std::string tensorsOf(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".pt") return slurp(e.path());
  return "";
}

struct Scratch {
  Scratch() {
    dir = fs::temp_directory_path() /
          ("ff-pretrain-stream-" + std::to_string(static_cast<long>(::getpid())));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() { fs::remove_all(dir); }
  fs::path dir;
};

std::vector<std::string> mpirun(int np, const std::vector<std::string>& cmd) {
  std::vector<std::string> argv = {FOLDFARM_MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np",
                                   std::to_string(np)};
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  return argv;
}

std::vector<std::string> pretrain(const std::string& data, const std::string& out) {
  return foldfarm::testing::streamPretrainArgs(data, out);
}

// `streamed` (pretrain's arguments) without --stream and its options: the jets in memory.
std::vector<std::string> inMemory(const std::vector<std::string>& streamed) {
  std::vector<std::string> args;
  for (size_t i = 0; i < streamed.size(); ++i) {
    if (streamed[i] == "--stream") continue;
    if (streamed[i] == "--block-rows" || streamed[i] == "--shuffle-buffer" ||
        streamed[i] == "--read-ahead") {
      ++i;
      continue;
    }
    args.push_back(streamed[i]);
  }
  return args;
}

// Epoch recorded in the training state under `state_dir` (-1: none yet).
int64_t stateEpoch(const fs::path& state_dir) {
  try {
    const auto j = nlohmann::json::parse(slurp(state_dir / "meta.json"));
    return j.at("training").at("epoch").get<int64_t>();
  } catch (const std::exception&) {
    return -1;
  }
}

// The processes of the session `sid`: mpirun started as its leader and its ranks (which
// Open MPI puts in process groups of their own).
std::vector<pid_t> sessionMembers(pid_t sid) {
  std::vector<pid_t> members;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = slurp(e.path() / "stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    long ppid = 0, pgrp = 0, session = 0;
    rest >> state >> ppid >> pgrp >> session;
    if (session == sid && state != "Z") members.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return members;
}

// SIGKILL to every process of the session `sid`, as a node lost does it: no rank saves.
void killSession(pid_t sid) {
  for (const pid_t p : sessionMembers(sid)) ::kill(p, SIGKILL);
}

// Runs argv with stdout to <log>.out and stderr to `log`, calling poll(pid) every 50 ms until
// it ends (at most 120 s: then it is killed and the test fails). Returns the exit status and
// the stderr text. The process leads a session of its own (pid): mpirun and its ranks.
std::pair<int, std::string> runPolling(const std::vector<std::string>& argv, const fs::path& log,
                                       const std::function<void(pid_t)>& poll) {
  // What this process printed goes out once: the child's freopen would flush it again.
  std::cout.flush();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    std::FILE* out = std::freopen((log.string() + ".out").c_str(), "w", stdout);
    std::FILE* err = std::freopen(log.string().c_str(), "w", stderr);
    (void)out;
    (void)err;
    ::setenv("OMP_NUM_THREADS", "1", 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  for (int i = 0; i < 2400; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return {status, slurp(log)};
    poll(pid);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  killSession(pid);
  ::waitpid(pid, &status, 0);
  ADD_FAILURE() << "the run did not end";
  return {status, slurp(log)};
}

// runPolling that, once `trigger` appears in stderr and the state under `state_dir` records
// epoch 1 (epoch 0 is saved, epoch 1 under way), waits a little and sends SIGUSR1 to the
// launcher: a stop in the middle of epoch 1.
std::pair<int, std::string> runAndStop(const std::vector<std::string>& argv, const fs::path& log,
                                       const std::string& trigger, const fs::path& state_dir) {
  bool sent = false;
  return runPolling(argv, log, [&](pid_t pid) {
    if (!sent && slurp(log).find(trigger) != std::string::npos && stateEpoch(state_dir) >= 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      ::kill(pid, SIGUSR1);
      sent = true;
    }
  });
}

}  // namespace

// Three files of synthetic jets in `dir`; their glob.
std::string writeParts(const fs::path& dir) {
  for (int k = 0; k < 3; ++k) {
    ProcessResult g = runSingleThreaded(
        {FOLDFARM_BINARY, "data", "synth", "--kind", "pretrain", "--jets",
         std::to_string(300 + 101 * k), "--seed", std::to_string(k), "--particles", "24", "--out",
         (dir / ("part" + std::to_string(k) + ".h5")).string()},
        120);
    EXPECT_TRUE(g.ok()) << g.describeFailure();
  }
  return (dir / "part*.h5").string();
}

TEST(PretrainStream, StoppedMidEpochAndResumedEqualsAnUninterruptedRunBitForBit) {
  Scratch s;
  const std::string data = writeParts(s.dir);

  const std::string whole = (s.dir / "whole").string();
  ProcessResult a = runSingleThreaded(mpirun(2, pretrain(data, whole)), 300);
  ASSERT_TRUE(a.ok()) << a.describeFailure() << "\n" << a.err;
  EXPECT_NE(a.err.find("--stream: "), std::string::npos) << a.err;

  const std::string stopped = (s.dir / "stopped").string();
  auto [status, err] = runAndStop(mpirun(2, pretrain(data, stopped)), s.dir / "stopped.log",
                                  "pretrain: epoch 0 train loss", fs::path(stopped) / "state");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 75) << "status " << status << "\n" << err;
  const auto at = err.find("stopped at epoch");
  ASSERT_NE(at, std::string::npos) << err;
  std::cout << "[ stopped  ] " << err.substr(at, err.find(';', at) - at) << "\n";
  long stop_epoch = -1, stop_step = -1;
  std::sscanf(err.c_str() + at, "stopped at epoch %ld step %ld", &stop_epoch, &stop_step);
  const bool mid_epoch = stop_step > 0;
  EXPECT_FALSE(fs::exists(fs::path(stopped) / "model")) << "no model from a stopped run";
  // Keep a copy of the stopped state for the resume on one rank.
  const std::string one = (s.dir / "one").string();
  fs::copy(stopped, one, fs::copy_options::recursive);
  // Another --batch or --shuffle-buffer would draw other rows than the steps taken: refused
  // by name, the state left as it was.
  const std::string other = (s.dir / "other").string();
  fs::copy(stopped, other, fs::copy_options::recursive);
  const std::string state_before = slurp(fs::path(other) / "state" / "meta.json");
  for (const auto& [option, value, saved] :
       {std::tuple<std::string, std::string, std::string>{"--batch", "8", "16"},
        {"--shuffle-buffer", "200", "300"}}) {
    std::vector<std::string> changed = pretrain(data, other);
    changed.push_back("--resume");
    for (size_t i = 0; i + 1 < changed.size(); ++i)
      if (changed[i] == option) changed[i + 1] = value;
    ProcessResult r = runSingleThreaded(changed, 120);
    EXPECT_EQ(r.status(), 2) << r.err;
    EXPECT_NE(r.err.find("drawn with " + option + " " + saved + ", not " + value),
              std::string::npos)
        << r.err;
    EXPECT_EQ(slurp(fs::path(other) / "state" / "meta.json"), state_before);
    EXPECT_FALSE(fs::exists(fs::path(other) / "model"));
  }
  // The streamed state resumed with the data in memory: said so (it was "different training
  // data"), the state left as it was.
  {
    std::vector<std::string> in_memory = inMemory(pretrain(data, other));
    in_memory.push_back("--resume");
    ProcessResult r = runSingleThreaded(in_memory, 120);
    EXPECT_EQ(r.status(), 2) << r.err;
    EXPECT_NE(r.err.find("training state was written streaming the data (--stream); resume with "
                         "--stream"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(slurp(fs::path(other) / "state" / "meta.json"), state_before);
  }
  // Another --eval-jets holds out other rows: named (before: "different training data").
  {
    std::vector<std::string> changed = pretrain(data, other);
    changed.insert(changed.end(), {"--eval-jets", "5", "--resume"});
    ProcessResult r = runSingleThreaded(changed, 120);
    EXPECT_EQ(r.status(), 2) << r.err;
    EXPECT_NE(r.err.find("training state was written with --eval-jets 10000, not 5; resume with "
                         "--eval-jets 10000 or use a new output directory"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(slurp(fs::path(other) / "state" / "meta.json"), state_before);
  }
  // Under mpirun every rank finds it: one line, from rank 0, and no rank waits for another.
  {
    std::vector<std::string> changed = pretrain(data, other);
    changed.push_back("--resume");
    for (size_t i = 0; i + 1 < changed.size(); ++i)
      if (changed[i] == "--batch") changed[i + 1] = "8";
    ProcessResult r = runSingleThreaded(mpirun(2, changed), 120);
    EXPECT_FALSE(r.timedOut) << r.err;
    EXPECT_NE(r.status(), 0) << r.err;
    size_t lines = 0;
    for (size_t at = r.err.find("foldfarm: error:"); at != std::string::npos;
         at = r.err.find("foldfarm: error:", at + 1))
      ++lines;
    EXPECT_EQ(lines, 1u) << r.err;
    EXPECT_NE(r.err.find("drawn with --batch 16, not 8"), std::string::npos) << r.err;
  }

  std::vector<std::string> again = pretrain(data, stopped);
  again.push_back("--resume");
  ProcessResult b = runSingleThreaded(mpirun(2, again), 300);
  ASSERT_TRUE(b.ok()) << b.describeFailure() << "\n" << b.err;
  EXPECT_NE(b.err.find("resuming from"), std::string::npos) << b.err;
  const std::string ta = tensorsOf(fs::path(whole) / "model");
  ASSERT_FALSE(ta.empty());
  EXPECT_TRUE(ta == tensorsOf(fs::path(stopped) / "model"))
      << "the resumed model differs from the uninterrupted one";
  const auto fit = [](const std::string& dir) {
    return nlohmann::json::parse(slurp(fs::path(dir) / "model" / "meta.json"))["training"]["fit"];
  };
  ASSERT_EQ(fit(whole)["history"].size(), 3u);
  for (size_t e = 0; e < 3; ++e)
    EXPECT_EQ(fit(whole)["history"][e]["train_loss"], fit(stopped)["history"][e]["train_loss"])
        << "epoch " << e;

  // The same stopped state on one rank: the epoch goes on with the rows not yet drawn.
  std::vector<std::string> solo = pretrain(data, one);
  solo.push_back("--resume");
  ProcessResult c = runSingleThreaded(solo, 300);
  ASSERT_TRUE(c.ok()) << c.describeFailure() << "\n" << c.err;
  // Steps of epoch 1 ran on 2 ranks: the one rank goes on with the jets not yet drawn. (A
  // stop that the machine's load delayed to step 0 leaves nothing to continue.)
  if (mid_epoch)
    EXPECT_NE(c.err.find("continues epoch"), std::string::npos) << c.err;
  else
    std::cout << "[ note     ] the stop landed at step 0 of epoch " << stop_epoch
              << ": nothing to continue\n";
  EXPECT_EQ(fit(one)["history"].size(), 3u);
  // The learning-rate schedule ends where it should: after 3 epochs of this run's steps.
  // (Before, the 2-rank state's schedule step went on in 1-rank steps: the schedule ended
  // early, or on more ranks, late or past its end at lr 0.)
  const auto stepsPerEpoch = [](const std::string& dir) {
    return nlohmann::json::parse(
               slurp(fs::path(dir) / "state" / "meta.json"))["training"]["steps_per_epoch"]
        .get<int64_t>();
  };
  EXPECT_EQ(fit(whole)["steps"].get<int64_t>(), 3 * stepsPerEpoch(whole));
  EXPECT_NE(stepsPerEpoch(one), stepsPerEpoch(whole));
  EXPECT_EQ(fit(one)["steps"].get<int64_t>(), 3 * stepsPerEpoch(one)) << c.err;
}

// Runs `args(out)` on 2 ranks uninterrupted, and again killed outright (SIGKILL to mpirun and
// both ranks: a lost node, the OOM killer) once it has saved its state within epoch 1 (a
// periodic save, --save-every about every step); resumed from that save, it must end
// bit-identical to the uninterrupted run, loss history included. `tag` names the runs.
namespace {

void expectKilledMidEpochAndResumedEqualsUninterrupted(
    const fs::path& dir, const std::string& tag,
    const std::function<std::vector<std::string>(const std::string&)>& args) {
  const std::string whole = (dir / (tag + "-whole")).string();
  ProcessResult a = runSingleThreaded(mpirun(2, args(whole)), 300);
  ASSERT_TRUE(a.ok()) << a.describeFailure() << "\n" << a.err;

  const std::string killed = (dir / (tag + "-killed")).string();
  std::vector<std::string> often = args(killed);
  often.insert(often.end(), {"--save-every", "0.0002"});  // 12 ms: about every step
  const fs::path state = fs::path(killed) / "state";
  const auto stepInEpoch = [&] {
    try {
      return nlohmann::json::parse(slurp(state / "meta.json"))
          .at("training")
          .at("step_in_epoch")
          .get<int64_t>();
    } catch (const std::exception&) {
      return int64_t{-1};
    }
  };
  bool sent = false;
  pid_t launched = -1;
  auto [status, err] = runPolling(mpirun(2, often), dir / (tag + "-killed.log"), [&](pid_t pid) {
    launched = pid;
    if (!sent && stateEpoch(state) >= 1 && stepInEpoch() > 0) {
      killSession(pid);  // mpirun and its ranks, with no chance to save
      sent = true;
    }
  });
  ASSERT_TRUE(sent) << "the run ended before a save within epoch 1: " << err;
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status << "\n" << err;
  for (int i = 0; i < 500 && !sessionMembers(launched).empty(); ++i)  // the ranks gone too
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(sessionMembers(launched).empty()) << "a rank outlived the kill";
  EXPECT_FALSE(fs::exists(fs::path(killed) / "model"));
  const int64_t epoch = stateEpoch(state), step = stepInEpoch();
  std::cout << "[ killed   ] " << tag << ": the last state saved: epoch " << epoch << " step "
            << step << "\n";
  EXPECT_GT(step, 0) << "a state within the epoch";

  std::vector<std::string> again = args(killed);
  again.push_back("--resume");
  ProcessResult b = runSingleThreaded(mpirun(2, again), 300);
  ASSERT_TRUE(b.ok()) << b.describeFailure() << "\n" << b.err;
  EXPECT_NE(b.err.find("at epoch " + std::to_string(epoch) + " step " + std::to_string(step)),
            std::string::npos)
      << b.err;
  const std::string ta = tensorsOf(fs::path(whole) / "model");
  ASSERT_FALSE(ta.empty());
  EXPECT_TRUE(ta == tensorsOf(fs::path(killed) / "model"))
      << "the model resumed from the periodic save differs from the uninterrupted one";
  const auto history = [](const std::string& d) {
    return nlohmann::json::parse(
        slurp(fs::path(d) / "model" / "meta.json"))["training"]["fit"]["history"];
  };
  ASSERT_EQ(history(whole).size(), 3u);
  for (size_t e = 0; e < 3; ++e)
    EXPECT_EQ(history(whole)[e]["train_loss"], history(killed)[e]["train_loss"]) << "epoch " << e;
}

}  // namespace

// A streamed run killed outright in the middle of an epoch loses only the steps since its
// last periodic save (--save-every), and resumed from it ends bit-identical to an
// uninterrupted run. (Before: the state was written at epoch ends only; an epoch of a long
// pretraining was lost.)
TEST(PretrainStream, KilledOutrightMidEpochAndResumedFromItsPeriodicSaveEqualsAnUninterruptedRun) {
  Scratch s;
  const std::string data = writeParts(s.dir);
  expectKilledMidEpochAndResumedEqualsUninterrupted(
      s.dir, "stream", [&](const std::string& out) { return pretrain(data, out); });
}

// The same for the jets held in memory, every rank reading all of them (its part of one
// global shuffle) or only its 1/N (--shard-data) (docs/scaling.md; before, only --stream was
// tested so).
TEST(PretrainStream, InMemoryAndShardedRunsKilledMidEpochAndResumedEqualAnUninterruptedRun) {
  Scratch s;
  const std::string data = writeParts(s.dir);
  for (const bool sharded : {false, true}) {
    SCOPED_TRACE(sharded ? "--shard-data" : "in memory");
    expectKilledMidEpochAndResumedEqualsUninterrupted(
        s.dir, sharded ? "shard" : "memory", [&](const std::string& out) {
          std::vector<std::string> args = inMemory(pretrain(data, out));
          if (sharded) args.push_back("--shard-data");
          return args;
        });
  }
}

// An HDF5 library not built thread-safe is read with one thread, said once (before: two reader
// threads called it at once, which a serial library does not survive); the model is the one
// that two reader threads train, bit for bit. FOLDFARM_HDF5_THREADSAFE=0 treats this build's
// (thread-safe) library as serial.
TEST(PretrainStream, ASerialHdf5IsReadWithOneThreadAndTrainsTheSameModel) {
  Scratch s;
  const std::string data = writeParts(s.dir);
  std::vector<std::string> args = pretrain(data, (s.dir / "threads").string());
  args.insert(args.end(), {"--readers", "2"});
  ProcessResult two = runSingleThreaded(args, 300);
  ASSERT_TRUE(two.ok()) << two.describeFailure() << "\n" << two.err;
  EXPECT_EQ(two.err.find("not built thread-safe"), std::string::npos) << two.err;
  args = pretrain(data, (s.dir / "serial").string());
  args.insert(args.end(), {"--readers", "2"});
  foldfarm::ProcessOptions o;
  o.timeout = std::chrono::seconds(300);
  o.extraEnv = {"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "FOLDFARM_HDF5_THREADSAFE=0"};
  ProcessResult one = foldfarm::runProcess(args, o);
  ASSERT_TRUE(one.ok()) << one.describeFailure() << "\n" << one.err;
  size_t said = 0;
  for (size_t at = one.err.find("is not built thread-safe (FOLDFARM_HDF5_THREADSAFE=0)");
       at != std::string::npos; at = one.err.find("is not built thread-safe", at + 1))
    ++said;
  EXPECT_EQ(said, 1u) << one.err;
  EXPECT_NE(one.err.find("reading with 1 thread instead of 2"), std::string::npos) << one.err;
  EXPECT_EQ(tensorsOf(s.dir / "threads" / "model"), tensorsOf(s.dir / "serial" / "model"));
  EXPECT_FALSE(tensorsOf(s.dir / "serial" / "model").empty());
}

TEST(PretrainStream, AnUnreadableFileAmongManyIsRefusedByNameBeforeTraining) {
  Scratch s;
  for (int k = 0; k < 2; ++k) {
    ProcessResult g =
        runSingleThreaded({FOLDFARM_BINARY, "data", "synth", "--kind", "pretrain", "--jets", "200",
                           "--seed", std::to_string(k), "--particles", "24", "--out",
                           (s.dir / ("part" + std::to_string(k) + ".h5")).string()},
                          120);
    ASSERT_TRUE(g.ok()) << g.describeFailure();
  }
  const std::string good = slurp(s.dir / "part1.h5");
  std::ofstream(s.dir / "part2.h5", std::ios::binary) << good.substr(0, good.size() / 3);
  const std::string out = (s.dir / "run").string();
  ProcessResult r = runSingleThreaded(pretrain((s.dir / "part*.h5").string(), out), 120);
  EXPECT_EQ(r.exitCode, 2) << r.describeFailure() << "\n" << r.err;
  EXPECT_NE(r.err.find("part2.h5"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(fs::path(out) / "state"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "model"));
}

// A NaN deep in the last of three files is found before the first step, each rank reading its
// share of every file: both ranks end at once with exit 2 and one line naming the file, the
// dataset and the row (before: the stream met it on one rank mid-epoch, which ended alone; the
// other waited out --collective-timeout and the job ended with exit 3, "check node health").
// The collective timeout here is longer than the test's own limit: a wait fails the test.
TEST(PretrainStream, ANaNInTheLastFileEndsEveryRankBeforeTheFirstStep) {
  Scratch s;
  foldfarm::data::SynthConfig cfg = foldfarm::data::SynthConfig::pretrainDefaults();
  cfg.P = 24;
  for (int k = 0; k < 3; ++k) {
    foldfarm::data::JetArrays a = foldfarm::data::synthPretrain(cfg, 10 + k, 0, 300);
    if (k == 2) a.particles[static_cast<size_t>(287 * 24 * 13 + 40)] = std::nanf("");
    foldfarm::data::writeJetFile((s.dir / ("part" + std::to_string(k) + ".h5")).string(), a);
  }
  const std::string out = (s.dir / "run").string();
  std::vector<std::string> cmd = pretrain((s.dir / "part*.h5").string(), out);
  cmd.back() = "1000";  // --collective-timeout
  ProcessResult r = runSingleThreaded(mpirun(2, cmd), 150);
  EXPECT_EQ(r.exitCode, 2) << r.describeFailure() << "\n" << r.err;
  EXPECT_NE(r.err.find((s.dir / "part2.h5").string() +
                       ": dataset 'data': row 287 holds a non-finite value (NaN)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(foldfarm::testing::errorLines(r.err), 1) << r.err;
  EXPECT_EQ(r.err.find("did not finish within"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(fs::path(out) / "state"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "model"));
}

// A read that fails on one rank only in the middle of an epoch (its node's file system, say;
// here FOLDFARM_FAULT on rank 1, through mpirun's second program): rank 1 ends with its
// error, and rank 0, waiting for a step's collective that rank 1 will never start, ends at
// once with rank 1's exit code and says why (before: it waited out --collective-timeout,
// longer here than the test waits, then ended with exit 3, "check node health").
TEST(PretrainStream, AReadThatFailsOnOneRankMidEpochEndsEveryRankAtOnce) {
  Scratch s;
  ProcessResult g = foldfarm::testing::synthStreamJets((s.dir / "part0.h5").string(), 3000);
  ASSERT_TRUE(g.ok()) << g.describeFailure();
  const fs::path out = s.dir / "run";
  const std::vector<std::string> cmd =
      foldfarm::testing::streamPretrainArgs((s.dir / "part0.h5").string(), out.string(), "1000");
  // Rank 1's 12th piece of the epoch: its shuffle buffer (300 jets, pieces of 64) is full and
  // training steps are under way when the stream needs it (a failed read ends the stream there,
  // not at an earlier piece still being read when it failed: the step does not depend on the
  // reader threads' timing).
  std::vector<std::string> argv = mpirun(1, cmd);
  argv.insert(argv.end(), {":", "-np", "1", "env", "FOLDFARM_FAULT=stream.read:11"});
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  const auto t0 = std::chrono::steady_clock::now();
  ProcessResult r = runSingleThreaded(argv, 150);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.exitCode, 1) << r.describeFailure() << "\n" << r.err;
  EXPECT_NE(r.err.find("foldfarm: error: stream.read (11): failure injected by FOLDFARM_FAULT"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("rank 1 ("), std::string::npos) << r.err;
  const std::string after = ") ended with exit 1 after collective #";
  const size_t at = r.err.find(after);
  ASSERT_NE(at, std::string::npos) << r.err;
  // Two collectives a step (the stop agreement, the gradients): steps were taken before.
  EXPECT_GT(std::atoi(r.err.c_str() + at + after.size()), 10) << "not mid-epoch\n" << r.err;
  EXPECT_EQ(foldfarm::testing::errorLines(r.err), 2) << r.err;
  EXPECT_EQ(r.err.find("did not finish within"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out / "model"));
  EXPECT_LT(secs, 120.0) << r.err;
}

// Rank 0 writes the training state; when that fails (here its directory replaced by a file
// after epoch 0, as a full disk or a quota would fail it), every rank ends at once with the
// error, printed once (before: rank 0 ended alone and rank 1 waited out --collective-timeout,
// longer here than the test waits).
TEST(PretrainStream, AStateWriteThatFailsOnRankZeroEndsEveryRank) {
  Scratch s;
  ProcessResult g = foldfarm::testing::synthStreamJets((s.dir / "part0.h5").string(), 600);
  ASSERT_TRUE(g.ok()) << g.describeFailure();
  const fs::path out = s.dir / "run", state = out / "state", log = s.dir / "log";
  std::vector<std::string> cmd = pretrain((s.dir / "part0.h5").string(), out.string());
  cmd[cmd.size() - 1] = "1000";  // --collective-timeout
  for (size_t k = 0; k + 1 < cmd.size(); ++k)
    if (cmd[k] == "--epochs") cmd[k + 1] = "400";
  bool replaced = false;
  int tries = 0;
  const auto [status, err] = runPolling(mpirun(2, cmd), log, [&](pid_t) {
    if (replaced || stateEpoch(state) < 0) return;
    // Moved aside in one step (a removal could meet a file rank 0 writes meanwhile and throw),
    // then a file in its place; tried again at the next poll if rank 0 made it again first.
    std::error_code ec;
    fs::rename(state, out / ("state.gone." + std::to_string(tries++)), ec);
    if (!fs::exists(state)) std::ofstream(state.string()) << "not a directory\n";
    replaced = fs::is_regular_file(state);
  });
  ASSERT_TRUE(replaced) << err;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status << "\n" << err;
  EXPECT_NE(err.find(state.string()), std::string::npos) << err;
  EXPECT_EQ(foldfarm::testing::errorLines(err), 1) << err;
  EXPECT_EQ(err.find("did not finish within"), std::string::npos) << err;
}
