// `foldfarm` (the front end) and `foldfarm-torch` (every command) through the real binaries:
// the commands a login node runs (status, aggregate, report, data, …) run in a process that
// loads no LibTorch and answer as foldfarm-torch does, also with no foldfarm-torch beside them;
// every other command is handed to foldfarm-torch in the same process (pid, arguments,
// signals), with OMP_WAIT_POLICY set to PASSIVE unless the user set it; a front end without
// foldfarm-torch says so in one line and writes nothing; `cmake --install` puts the two
// together and the installed foldfarm runs both kinds of command. A build without LibTorch
// makes the front end alone, which runs the login commands and refuses the others. A
// LibTorch of the old string ABI is refused when the build is configured.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/exit_codes.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/process.hpp"
#include "core/build_info/build_info.hpp"
#include "tests/support/run_child.hpp"

namespace fs = std::filesystem;
using foldfarm::ProcessOptions;
using foldfarm::ProcessResult;
using foldfarm::runProcess;
using foldfarm::testing::errorLines;
using nlohmann::json;

namespace {

// The NUL-separated entries of /proc/PID/FILE.
std::vector<std::string> procEntries(pid_t pid, const char* file) {
  const std::string text = foldfarm::readFile("/proc/" + std::to_string(pid) + "/" + file);
  std::vector<std::string> entries;
  std::string one;
  for (char c : text) {
    if (c != '\0') {
      one += c;
      continue;
    }
    entries.push_back(one);
    one.clear();
  }
  return entries;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

class FrontEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (fs::temp_directory_path() / ("ff_front_end_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/alone");
    if (std::string(FOLDFARM_BINARY).empty()) return;  // built without LibTorch: the last test
    // The front end alone, with no foldfarm-torch beside it.
    fs::copy_file(FOLDFARM_BINARY, dir_ + "/alone/foldfarm");
    torch_ = fs::path(FOLDFARM_BINARY).parent_path().string() + "/foldfarm-torch";
    for (const char* tune : {"sim", "data"}) {
      const ProcessResult r = foldfarm::testing::runFoldfarm(
          {"data", "synth", "--kind", "unfold", "--tune", tune, "--events", "200", "--seed", "7",
           "--out", dir_ + "/" + tune + ".h5"},
          dir_, {}, 120);
      ASSERT_TRUE(r.ok()) << r.describeFailure();
    }
    std::ofstream(dir_ + "/chains.json") << json{
        {"name", "front-end"},
        {"task", "chain"},
        {"replicas", 2},
        {"inputs", {{"mc", dir_ + "/sim.h5"}, {"data", dir_ + "/data.h5"}}},
        {"chain", {{"iterations", 1}, {"config", {{"classifier", "mlp"}}}}},
        {"resources", {{"cpu_slots", 1}}}}.dump();
    const ProcessResult init = foldfarm::testing::runFoldfarm(
        {"campaign", "init", dir_ + "/chains.json", "--dir", dir_ + "/chains"}, dir_);
    ASSERT_TRUE(init.ok()) << init.describeFailure();
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static ProcessResult run(const std::string& exe, std::vector<std::string> args) {
    args.insert(args.begin(), exe);
    ProcessOptions o;
    o.timeout = std::chrono::seconds(120);
    return runProcess(args, o);
  }

  // The spec of a campaign of `replicas` sleep tasks of `seconds` each, written in dir_.
  static std::string sleepSpec(int replicas, double seconds) {
    const std::string path = dir_ + "/sleep.json";
    std::ofstream(path) << json{
        {"name", "sleep"},
        {"task", "sleep"},
        {"replicas", replicas},
        {"params", {{"seconds", seconds}}},
        {"resources",
         {{"cpu_slots", 1}}}}.dump();
    return path;
  }

  // Waits until `pid` is foldfarm-torch (the hand-over's exec done, LibTorch loading): a signal
  // before `foldfarm`'s own main (the dynamic loader, a busy machine) ends any program
  // silently, and a fixed wait met that window on a loaded 2-core machine. False, its status in
  // `st`, when it ended first.
  static bool waitUntilFoldfarmTorch(pid_t pid, int& st) {
    std::error_code ec;
    for (int k = 0; k < 20000; ++k) {
      if (::waitpid(pid, &st, WNOHANG) == pid) return false;
      if (fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).string() == torch_)
        return true;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    return true;
  }

  static std::string dir_, torch_;
};
std::string FrontEnd::dir_, FrontEnd::torch_;

TEST_F(FrontEnd, TheCommandsALoginNodeRunsLoadNoLibTorchAndAnswerAsFoldfarmTorchDoes) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  // What the dynamic loader would load (ld.so lists it and runs nothing).
  const auto libraries = [](const std::string& exe) {
    ProcessOptions o;
    o.extraEnv = {"LD_TRACE_LOADED_OBJECTS=1"};
    return runProcess({exe}, o).out;
  };
  EXPECT_EQ(libraries(FOLDFARM_BINARY).find("libtorch"), std::string::npos);
  EXPECT_EQ(libraries(FOLDFARM_BINARY).find("libc10"), std::string::npos);
  EXPECT_NE(libraries(torch_).find("libtorch"), std::string::npos) << "the check sees LibTorch";

  const std::string alone = dir_ + "/alone/foldfarm";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"campaign", "status", dir_ + "/chains", "--json"},
        std::vector<std::string>{"--log-level", "warn", "campaign", "status", dir_ + "/chains"},
        std::vector<std::string>{"data", "inspect", dir_ + "/sim.h5", "--json"},
        std::vector<std::string>{"--log-level=warn", "data", "inspect", dir_ + "/data.h5"},
        std::vector<std::string>{"--version"},
        std::vector<std::string>{"campaign", "status", "--help"},
        std::vector<std::string>{"campaign", "cancel", "--help"},
        std::vector<std::string>{"campaign", "repair", "--help"},
        std::vector<std::string>{"campaign", "aggregate", "--help"},
        std::vector<std::string>{"slurm", "status", "--help"},
        std::vector<std::string>{"aggregate", "--help"},
        std::vector<std::string>{"study", "compare", "--help"},
        std::vector<std::string>{"bench", "aggregate", "--help"},
        std::vector<std::string>{"bench", "data", "--help"},  // a list default (was "[1,2,4]")
        std::vector<std::string>{"data", "synth", "--help"},
        std::vector<std::string>{"report", "--help"}}) {
    const ProcessResult here = run(alone, args), there = run(torch_, args);
    ASSERT_TRUE(here.ok()) << here.describeFailure();
    ASSERT_TRUE(there.ok()) << there.describeFailure();
    if (args[0] == "campaign" && args.back() == "--json") {
      json a = json::parse(here.out), b = json::parse(there.out);
      EXPECT_EQ(a.at("counts"), b.at("counts"));
      EXPECT_EQ(a.at("counts").at("pending"), 2) << "the chain campaign's two tasks";
      a.erase("rate_tasks_per_s"), b.erase("rate_tasks_per_s");  // read at another time
      a.erase("eta_s"), b.erase("eta_s");
      EXPECT_EQ(a, b);
    } else {
      EXPECT_EQ(here.out, there.out) << args[0];
    }
  }
  // Errors read the same too: one line, the same exit status.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"campaign", "status", dir_ + "/nowhere"},
        std::vector<std::string>{"campaign", "aggregate", dir_ + "/chains"},
        std::vector<std::string>{"aggregate", "--runs", dir_ + "/chains", "--out", dir_ + "/agg"},
        std::vector<std::string>{"data", "inspect", dir_ + "/chains.json"}}) {
    const ProcessResult here = run(alone, args), there = run(torch_, args);
    EXPECT_EQ(here.exitCode, 2) << args[1] << ": " << here.err;
    EXPECT_EQ(here.exitCode, there.exitCode);
    EXPECT_EQ(here.err, there.err);
  }
  EXPECT_FALSE(fs::exists(dir_ + "/agg"));
  // Under mpirun every rank parses the same command line; rank 0 alone says what is wrong.
  const ProcessResult ranks =
      run(FOLDFARM_MPIRUN, {"--allow-run-as-root", "--oversubscribe", "-np", "2", alone, "campaign",
                            "status", "--bogus", dir_ + "/chains"});
  EXPECT_NE(ranks.exitCode, 0);
  EXPECT_EQ(errorLines(ranks.err), 1) << ranks.err;
  EXPECT_TRUE(fs::is_empty(dir_ + "/chains/aggregate"));  // as `campaign init` made it
  // The data commands write the same samples.
  for (const std::string& exe : {alone, torch_}) {
    const ProcessResult r =
        run(exe, {"--log-level", "warn", "data", "synth", "--kind", "unfold", "--events", "50",
                  "--seed", "3", "--out", dir_ + "/" + fs::path(exe).filename().string() + ".h5"});
    ASSERT_TRUE(r.ok()) << r.describeFailure();
  }
  const ProcessResult a = run(torch_, {"data", "inspect", dir_ + "/foldfarm.h5", "--json"});
  const ProcessResult b = run(torch_, {"data", "inspect", dir_ + "/foldfarm-torch.h5", "--json"});
  ASSERT_TRUE(a.ok() && b.ok()) << a.describeFailure() << b.describeFailure();
  json ja = json::parse(a.out), jb = json::parse(b.out);
  ja.erase("file"), jb.erase("file");
  EXPECT_EQ(ja, jb);
}

TEST_F(FrontEnd, WithoutFoldfarmTorchBesideItACommandThatTrainsIsRefusedInOneLine) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  const std::string alone = dir_ + "/alone/foldfarm";
  const ProcessResult unfold =
      run(alone, {"unfold", "--mc", dir_ + "/sim.h5", "--data", dir_ + "/data.h5", "--init", "none",
                  "--out", dir_ + "/alone/x"});
  EXPECT_EQ(unfold.exitCode, 1);
  EXPECT_EQ(unfold.err, "foldfarm: error: cannot start " + dir_ +
                            "/alone/foldfarm-torch: No such file or directory; every command but "
                            "a login node's runs in that executable, built and installed beside " +
                            alone + ": rebuild foldfarm (or install both)\n");
  EXPECT_FALSE(fs::exists(dir_ + "/alone/x"));
  const ProcessResult campaign = run(alone, {"campaign", "run", dir_ + "/chains"});
  EXPECT_EQ(campaign.exitCode, 1);
  const ProcessResult status = run(alone, {"campaign", "status", dir_ + "/chains", "--json"});
  ASSERT_TRUE(status.ok()) << status.describeFailure();
  EXPECT_EQ(json::parse(status.out).at("counts").at("pending"), 2) << "nothing ran";
}

// A mistyped command or option: which, where, and the nearest one (before: "A subcommand is
// required" for `foldfarm campain` and `foldfarm slurm watch D` alike, and "--data is
// required" for `--dta`), exit 2.
TEST_F(FrontEnd, AMistypedCommandOrOptionIsNamedWithTheNearestOne) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"campain"}, "no command 'campain'; did you mean 'campaign'? Its commands: "},
      {{"slurm", "watch", "D"},
       "foldfarm slurm: no command 'watch'; its commands: render, submit, status"},
      {{"campaign", "sttaus", "D"},
       "foldfarm campaign: no command 'sttaus'; did you mean 'status'?"},
      {{"bench"}, "foldfarm bench: give one of its commands: data, pet,"},
      {{"campaign", "status", "D", "--jsn"},
       "foldfarm campaign status: no option --jsn; did you mean --json?"},
      {{"unfold", "--mc", "a.h5", "--dta=b.h5"},
       "foldfarm unfold: no option --dta; did you mean --data?"},
      {{"--log-level", "warn", "data", "inspect", "x.h5", "--zzzzzz"},
       "foldfarm data inspect: no option --zzzzzz (see --help)"},
      // An unknown option with its value (before: "The following arguments were not expected:
      // 2 --slot"), words too many (in their order), a positional left out (with its command).
      {{"campaign", "run", "D", "--slot", "2"},
       "foldfarm campaign run: no option --slot; did you mean --slots?"},
      {{"data", "synth", "--jets", "5", "--out", "q.h5", "extra1", "extra2"},
       "foldfarm data synth: unexpected arguments 'extra1' 'extra2' (see --help)"},
      {{"campaign", "status", "D", "a b", "c"},
       "foldfarm campaign status: unexpected arguments 'a b' 'c' (see --help)"},
      {{"campaign", "status"}, "foldfarm campaign status: dir is required"}};
  // The front end hands a command it does not know to foldfarm-torch: both speak here.
  const std::string exe = FOLDFARM_BINARY;
  for (const auto& [args, said] : cases) {
    const ProcessResult r = run(exe, args);
    EXPECT_EQ(r.exitCode, 2) << exe << " " << args.front();
    EXPECT_EQ(errorLines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("foldfarm: error: " + said), std::string::npos) << exe << ": " << r.err;
    EXPECT_EQ(r.err.find("foldfarm: error: foldfarm: "), std::string::npos) << r.err;
  }
}

TEST_F(FrontEnd, ACommandHandedOverKeepsItsProcessItsArgumentsAndItsSignals) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  const std::string camp = dir_ + "/sleep";
  ASSERT_TRUE(run(FOLDFARM_BINARY, {"campaign", "init", sleepSpec(1, 120), "--dir", camp}).ok());
  // `foldfarm campaign run|resume D` started as a launcher would, stopped as Slurm stops it.
  for (const char* policy : {"", "ACTIVE"}) {
    const std::string command = *policy == '\0' ? "run" : "resume";
    const std::string err = dir_ + "/" + command + ".err";
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      if (*policy == '\0') {
        ::unsetenv("OMP_WAIT_POLICY");
      } else {
        ::setenv("OMP_WAIT_POLICY", policy, 1);
        // Set by hand (or left by a worker's environment): the stop signals are not held for
        // it (before: any value kept SIGINT, SIGTERM and SIGHUP blocked for the whole run).
        ::setenv("FOLDFARM_SIGNALS_HELD", "0", 1);
      }
      ::execl(FOLDFARM_BINARY, FOLDFARM_BINARY, "--log-level", "warn", "campaign", command.c_str(),
              camp.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ASSERT_GT(pid, 0);
    // The same process becomes foldfarm-torch and runs the task.
    std::error_code ec;
    bool running = false;
    for (int k = 0; k < 600 && !running; ++k) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const ProcessResult s = run(FOLDFARM_BINARY, {"campaign", "status", camp, "--json"});
      running = s.ok() && json::parse(s.out).at("counts").at("running") == 1;
    }
    EXPECT_TRUE(running) << foldfarm::readFile(err);
    EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).string(), torch_);
    const std::vector<std::string> argv = procEntries(pid, "cmdline");
    EXPECT_EQ(argv, (std::vector<std::string>{FOLDFARM_BINARY, "--log-level", "warn", "campaign",
                                              command, camp}));
    EXPECT_TRUE(contains(procEntries(pid, "environ"),
                         std::string("OMP_WAIT_POLICY=") + (*policy ? policy : "PASSIVE")));
    // Slurm's SIGTERM; a hang-up of the terminal (before: the process died, nothing saved).
    ASSERT_EQ(::kill(pid, command == "run" ? SIGTERM : SIGHUP), 0);
    int st = 0;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st)) << foldfarm::readFile(err);
    EXPECT_EQ(WEXITSTATUS(st), 75) << "interrupted, to resume: " << foldfarm::readFile(err);
    EXPECT_NE(foldfarm::readFile(err).find("campaign resume"), std::string::npos)
        << foldfarm::readFile(err);
  }
}

// The front end names its build to the foldfarm-torch it hands a command to: the same build
// says nothing; another one (one of the two rebuilt or copied alone) is said in one line that
// names both and what differs, the command still runs, and the workers it starts are not told
// (one line, not one per process).
TEST_F(FrontEnd, AFoldfarmTorchOfAnotherBuildThanTheFrontEndIsSaidInOneLine) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  const ProcessResult same = run(FOLDFARM_BINARY, {"pretrain", "--help"});
  ASSERT_TRUE(same.ok()) << same.describeFailure();
  EXPECT_EQ(same.err.find("warning"), std::string::npos) << same.err;

  // A front end of another commit, as its hand-over names it (this test is of the same build
  // as the binaries: its build identity is theirs).
  json front = foldfarm::buildInfoJson();
  front["commit"] = "0123abc";
  const std::string camp = dir_ + "/other_build";
  ASSERT_TRUE(run(FOLDFARM_BINARY, {"campaign", "init", sleepSpec(3, 0), "--dir", camp}).ok());
  ProcessOptions o;
  o.timeout = std::chrono::seconds(120);
  o.extraEnv = {"FOLDFARM_FRONT_END_BUILD=" + front.dump()};
  const ProcessResult other = runProcess({torch_, "campaign", "run", camp}, o);
  ASSERT_TRUE(other.ok()) << other.describeFailure();
  std::vector<std::string> warned;
  std::istringstream lines(other.err);
  for (std::string l; std::getline(lines, l);)
    if (l.find("warning: foldfarm-torch") != std::string::npos) warned.push_back(l);
  ASSERT_EQ(warned.size(), 1u) << other.err;
  EXPECT_NE(warned[0].find("foldfarm-torch (" + foldfarm::buildLine(foldfarm::buildInfoJson())),
            std::string::npos)
      << warned[0];
  EXPECT_NE(warned[0].find("(" + foldfarm::buildLine(front) + "; they differ in commit)"),
            std::string::npos)
      << warned[0];
  const ProcessResult status = run(FOLDFARM_BINARY, {"campaign", "status", camp, "--json"});
  ASSERT_TRUE(status.ok()) << status.describeFailure();
  EXPECT_EQ(json::parse(status.out).at("counts").at("done"), 3) << status.out;
}

// Output that cannot be written (a full disk, /dev/full) is an error naming the standard
// output, whichever binary ran the command (before: exit 0 and an empty file, so
// `foldfarm ... --json > x.json && use x.json` went on with nothing).
TEST_F(FrontEnd, StandardOutputThatCannotBeWrittenIsAnError) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"campaign", "status", dir_ + "/chains", "--json"},
        std::vector<std::string>{"data", "inspect", dir_ + "/sim.h5", "--json"},
        std::vector<std::string>{"model", "info", "--preset", "tiny", "--json"}}) {
    // sh -c 'exec "$0" "$@" > /dev/full' FOLDFARM ARGS...
    std::vector<std::string> args{"-c", "exec \"$0\" \"$@\" > /dev/full", FOLDFARM_BINARY};
    args.insert(args.end(), command.begin(), command.end());
    const ProcessResult r = run("/bin/sh", args);
    EXPECT_EQ(r.exitCode, 1) << command[0] << " " << command[1] << "\n" << r.err;
    EXPECT_EQ(errorLines(r.err), 1) << r.err;
    // The system's words when the last write failed; a failed write before it is said too.
    EXPECT_NE(r.err.find("foldfarm: error: writing the standard output"), std::string::npos)
        << r.err;
    // The same command into a file that takes it succeeds.
    EXPECT_TRUE(run(FOLDFARM_BINARY, command).ok()) << command[0] << " " << command[1];
  }
}

// An argument that is not UTF-8 is refused before anything is written, by the command of either
// binary, naming it with its bytes escaped (before: `pretrain --out` of such a name wrote the
// model, then failed printing its JSON summary; login commands failed on it in their JSON).
TEST_F(FrontEnd, AnArgumentThatIsNotUtf8IsRefusedBeforeAnythingIsWritten) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  const std::string bad = dir_ + "/model\xff";
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"pretrain", "--data", dir_ + "/sim.h5", "--out", bad},
        std::vector<std::string>{"campaign", "status", bad, "--json"}}) {
    const ProcessResult r = run(FOLDFARM_BINARY, command);
    EXPECT_EQ(r.exitCode, foldfarm::kExitBadInput) << command[0] << "\n" << r.err;
    EXPECT_EQ(errorLines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("'" + dir_ + "/model\\xff', is not valid UTF-8"), std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(bad)) << command[0];
  }
}

// `campaign run --aggregate` with a TMPDIR that cannot hold the aggregation's temporary
// directory is refused before any task runs, naming it (before: every task ran first, and
// the aggregation failed at the end).
TEST_F(FrontEnd, ARunThatWouldAggregateChecksTmpdirBeforeAnyTaskRuns) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  const std::string camp = dir_ + "/tmpdir_chains";
  ASSERT_TRUE(
      run(FOLDFARM_BINARY, {"campaign", "init", dir_ + "/chains.json", "--dir", camp}).ok());
  const ProcessResult r = run("/usr/bin/env", {"TMPDIR=" + dir_ + "/no-such-dir", FOLDFARM_BINARY,
                                               "campaign", "run", camp, "--aggregate"});
  EXPECT_EQ(r.exitCode, 1) << r.err;
  EXPECT_EQ(errorLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("TMPDIR=" + dir_ + "/no-such-dir"), std::string::npos) << r.err;
  const ProcessResult s = run(FOLDFARM_BINARY, {"campaign", "status", camp, "--json"});
  ASSERT_TRUE(s.ok()) << s.err;
  EXPECT_EQ(json::parse(s.out).at("counts").at("pending"), 2) << "no task ran";
}

// A stop that comes while `foldfarm` hands a command over (foldfarm-torch loading LibTorch,
// most of a second) is held across the exec and said once its handlers are in place (before:
// the process died of it silently).
TEST_F(FrontEnd, ASignalWhileTheCommandIsHandedOverIsSaid) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  int said = 0;
  for (const int sig : {SIGHUP, SIGTERM}) {
    const std::string err = dir_ + "/early" + std::to_string(sig) + ".err";
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 2);
      ::execl(FOLDFARM_BINARY, FOLDFARM_BINARY, "model", "info", "--preset", "tiny",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ASSERT_GT(pid, 0);
    // Sent once the process is foldfarm-torch.
    int st = 0;
    if (waitUntilFoldfarmTorch(pid, st)) {
      ::kill(pid, sig);
      ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;  // it finished first: nothing to say
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == sig) << st;
    EXPECT_NE(foldfarm::readFile(err).find("foldfarm: ended by signal " + std::to_string(sig)),
              std::string::npos)
        << sig;
    ++said;
  }
  EXPECT_GT(said, 0) << "the command finished before each signal: nothing was tested";
}

// Slurm's warning (--signal=USR1@grace), or the USR1 the README tells mpirun users to send,
// while the command is handed over and LibTorch loads: held until main, then recorded as a stop.
// A pretraining stops at its first check with its state saved (exit 75, which a job script
// requeues); a command that does not stop on signals runs to its end. Before: USR1's default
// action ended both, 138, nothing said.
TEST_F(FrontEnd, AStopSignalWhileTheCommandLoadsStopsATrainingAndSparesOtherCommands) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  const std::string data = dir_ + "/usr1.h5";
  ASSERT_TRUE(run(FOLDFARM_BINARY, {"data", "synth", "--kind", "pretrain", "--jets", "600",
                                    "--particles", "16", "--out", data})
                  .ok());
  struct Case {
    std::vector<std::string> args;
    int code;
  };
  int tested = 0;
  for (const Case& c :
       {Case{{"pretrain", "--data", data, "--out", dir_ + "/usr1", "--epochs", "3", "--threads",
              "1", "--batch", "50"},
             75},
        Case{{"model", "info", "--preset", "tiny"}, 0},
        // A fit that cannot resume (a benchmark): not stopped by it (a first version of the
        // fix stopped it with 75 and "runs again from its start on resume").
        Case{{"bench", "mlp", "--rows", "2000", "--epochs", "2", "--threads", "1"}, 0}}) {
    const std::string err = dir_ + "/usr1_" + c.args[0] + ".err";
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv{const_cast<char*>(FOLDFARM_BINARY)};
      for (const std::string& a : c.args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(FOLDFARM_BINARY, argv.data());
      ::_exit(127);
    }
    ASSERT_GT(pid, 0);
    // Sent once the process is foldfarm-torch.
    int st = 0;
    if (!waitUntilFoldfarmTorch(pid, st)) continue;  // it finished first: nothing to test
    ASSERT_EQ(::kill(pid, SIGUSR1), 0);
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st)) << "ended by signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0) << ": "
                               << foldfarm::readFile(err);
    EXPECT_EQ(WEXITSTATUS(st), c.code) << foldfarm::readFile(err);
    ++tested;
  }
  EXPECT_GT(tested, 0) << "each command finished before its signal: nothing was tested";
  EXPECT_NE(foldfarm::readFile(dir_ + "/usr1_pretrain.err").find("--resume"), std::string::npos)
      << foldfarm::readFile(dir_ + "/usr1_pretrain.err");
}

TEST_F(FrontEnd, AnInstalledFoldfarmRunsBothKindsOfCommands) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm-torch not built";
  const std::string prefix = dir_ + "/prefix";
  ProcessOptions o;
  o.timeout = std::chrono::seconds(120);
  const ProcessResult install =
      runProcess({FF_CMAKE_COMMAND, "--install", FF_BUILD_DIR, "--prefix", prefix}, o);
  ASSERT_TRUE(install.ok()) << install.describeFailure();
  const std::string installed = prefix + "/bin/foldfarm";
  ASSERT_TRUE(fs::exists(prefix + "/bin/foldfarm-torch"));
  // Here: the campaign's status; handed over: a model's sizes (LibTorch, found from P/bin).
  const ProcessResult status = run(installed, {"campaign", "status", dir_ + "/chains", "--json"});
  ASSERT_TRUE(status.ok()) << status.describeFailure();
  EXPECT_EQ(json::parse(status.out).at("total"), 2);
  const ProcessResult model = run(installed, {"model", "info", "--preset", "tiny", "--json"});
  ASSERT_TRUE(model.ok()) << model.describeFailure();
  EXPECT_EQ(model.out, run(torch_, {"model", "info", "--preset", "tiny", "--json"}).out);
  // It is the installed foldfarm-torch that ran: without it the installed front end says so.
  fs::remove(prefix + "/bin/foldfarm-torch");
  const ProcessResult alone = run(installed, {"model", "info", "--preset", "tiny"});
  EXPECT_EQ(alone.exitCode, 1);
  EXPECT_NE(alone.err.find(prefix + "/bin/foldfarm-torch"), std::string::npos) << alone.err;
}

TEST_F(FrontEnd, BuiltWithoutLibTorchItRunsTheLoginCommandsAndRefusesTheOthersInOneLine) {
  if (!std::string(FOLDFARM_BINARY).empty())
    GTEST_SKIP() << "built with LibTorch (the tests above); scripts/sanitize.sh runs this one";
  const std::string ff = FF_FRONT_END;
  // A campaign made by another executable of the same journal (ff_jobs_tool), read here.
  ASSERT_TRUE(runProcess({FF_JOBS_TOOL, "init", sleepSpec(3, 0), "--dir", dir_ + "/sleep"}).ok());
  const ProcessResult status = run(ff, {"campaign", "status", dir_ + "/sleep", "--json"});
  ASSERT_TRUE(status.ok()) << status.describeFailure();
  EXPECT_EQ(json::parse(status.out).at("counts").at("pending"), 3);
  const ProcessResult synth = run(ff, {"--log-level", "warn", "data", "synth", "--kind", "unfold",
                                       "--events", "40", "--seed", "2", "--out", dir_ + "/u.h5"});
  ASSERT_TRUE(synth.ok()) << synth.describeFailure();
  const ProcessResult inspect = run(ff, {"data", "inspect", dir_ + "/u.h5", "--json"});
  ASSERT_TRUE(inspect.ok()) << inspect.describeFailure();
  EXPECT_EQ(json::parse(inspect.out).at("jets"), 40);
  // The others: one line naming what this build runs; nothing written.
  const ProcessResult unfold = run(ff, {"unfold", "--mc", dir_ + "/u.h5", "--data", dir_ + "/u.h5",
                                        "--init", "none", "--out", dir_ + "/x"});
  EXPECT_EQ(unfold.exitCode, 2);
  EXPECT_EQ(unfold.err.rfind("foldfarm: error: this foldfarm was built without LibTorch "
                             "(-DFOLDFARM_WITH_TORCH=OFF) and runs only ",
                             0),
            0u)
      << unfold.err;
  EXPECT_NE(unfold.err.find("campaign status"), std::string::npos) << unfold.err;
  EXPECT_EQ(std::count(unfold.err.begin(), unfold.err.end(), '\n'), 1) << unfold.err;
  EXPECT_FALSE(fs::exists(dir_ + "/x"));
  EXPECT_EQ(run(ff, {"campaign", "run", dir_ + "/sleep"}).exitCode, 2);
  EXPECT_EQ(json::parse(run(ff, {"campaign", "status", dir_ + "/sleep", "--json"}).out)
                .at("counts")
                .at("pending"),
            3)
      << "nothing ran";
  // Its help lists what it has.
  const ProcessResult help = run(ff, {"--help"});
  ASSERT_TRUE(help.ok()) << help.describeFailure();
  EXPECT_NE(help.out.find("report"), std::string::npos) << help.out;
}

// The line "item: value" of `text` whose item is `item` (its value), "" when none.
std::string versionItem(const std::string& text, const std::string& item) {
  const std::string key = "\n" + item + ": ";
  const size_t at = text.find(key);
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size();
  return text.substr(begin, text.find('\n', begin) - begin);
}

// `foldfarm --version` names the build: the version first (what scripts read), then the commit
// the source tree was at when it was built, as git gives it, and how it was built.
TEST(Version, NamesTheVersionFirstThenTheCommitTheBuildWasMadeFrom) {
  const ProcessResult v = runProcess({FF_FRONT_END, "--version"});
  ASSERT_TRUE(v.ok()) << v.describeFailure();
  EXPECT_EQ(v.out.rfind(std::string("foldfarm ") + FOLDFARM_VERSION + "\n", 0), 0u) << v.out;
  for (const char* item : {"build type", "compiler", "LibTorch", "CUDA kernels", "NCCL", "MPI"})
    EXPECT_NE(versionItem(v.out, item), "") << item << " in\n" << v.out;
  EXPECT_EQ(versionItem(v.out, "LibTorch") == "none", std::string(FOLDFARM_BINARY).empty())
      << v.out;
  const std::string commit = versionItem(v.out, "commit");
  const std::string source = FOLDFARM_SOURCE_DIR;
  if (!fs::exists(source + "/.git")) {
    EXPECT_EQ(commit, "unknown") << "built from a tree without .git";
    GTEST_SKIP() << source << " is no git checkout: no commit to compare";
  }
  if (!foldfarm::programAvailable("git")) GTEST_SKIP() << "no git to ask for the commit";
  const auto git = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"git", "-c", "safe.directory=" + source, "-C", source};
    argv.insert(argv.end(), args.begin(), args.end());
    const ProcessResult r = runProcess(argv);
    EXPECT_TRUE(r.ok()) << r.describeFailure();
    return r.out.substr(0, r.out.find('\n'));
  };
  const std::string expected = git({"rev-parse", "--short", "HEAD"});
  const auto withoutDirty = [](const std::string& c) {
    const std::string dirty = "-dirty";
    const bool marked =
        c.size() > dirty.size() && c.compare(c.size() - dirty.size(), dirty.size(), dirty) == 0;
    return marked ? c.substr(0, c.size() - dirty.size()) : c;
  };
  const std::string built = withoutDirty(commit);
  if (built == expected) return;
  // Another commit than HEAD: one before it, when HEAD moved since the build (a commit made
  // after it, or while it ran). What the build last generated (build_commit.cpp) and what the
  // programs say must each be a commit of this repository, HEAD's or an earlier one.
  const std::string generated_path =
      std::string(FF_BUILD_DIR) + "/core/build_info/build_commit.cpp";
  const std::string text = foldfarm::readFile(generated_path);
  const size_t at = text.find("return \"");
  ASSERT_NE(at, std::string::npos) << text;
  const std::string generated = withoutDirty(text.substr(at + 8, text.find('"', at + 8) - at - 8));
  for (const std::string& c : {built, generated}) {
    const ProcessResult is = runProcess({"git", "-c", "safe.directory=" + source, "-C", source,
                                         "merge-base", "--is-ancestor", c, "HEAD"});
    ASSERT_EQ(is.exitCode, 0) << "'" << c << "' is no commit of " << source << " up to HEAD ("
                              << expected << "): --version says " << commit << ", "
                              << generated_path << " " << generated;
  }
  if (generated != expected)
    GTEST_SKIP() << "HEAD (" << expected << ") moved since the last build (" << generated
                 << "): rebuild, then test";
  // The build generated HEAD's: the programs name it once they are linked again.
  if (foldfarm::statPath(FF_FRONT_END).mtime_ns < foldfarm::statPath(generated_path).mtime_ns)
    GTEST_SKIP() << "a build is under way: it wrote " << expected << " into " << generated_path
                 << " but has not linked " << FF_FRONT_END << " yet";
  ADD_FAILURE() << "--version names " << built << ", linked after the build wrote " << expected
                << " into " << generated_path;
}

// The source of the commit (cmake/FoldfarmBuildCommit.cmake, run at every build) names the
// work tree's commit, marks tracked changes, says "unknown" without .git, and is rewritten only
// when what it says changes: a build at the same commit compiles nothing again.
TEST(Version, TheBuildsCommitSourceIsWrittenOnlyWhenTheCommitChanges) {
  if (!foldfarm::programAvailable("git")) GTEST_SKIP() << "no git";
  const fs::path dir = fs::temp_directory_path() / ("ff_commit_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "tree");
  const std::string tree = (dir / "tree").string(), out = (dir / "build_commit.cpp").string();
  const auto generate = [&] {
    const ProcessResult r =
        runProcess({FF_CMAKE_COMMAND, "-DSOURCE_DIR=" + tree, "-DOUTPUT=" + out,
                    "-DGIT_EXECUTABLE=" + foldfarm::findProgram("git"), "-P",
                    std::string(FOLDFARM_SOURCE_DIR) + "/cmake/FoldfarmBuildCommit.cmake"});
    EXPECT_TRUE(r.ok()) << r.describeFailure();
    const std::string text = foldfarm::readFile(out);
    const size_t at = text.find("return \"");
    return at == std::string::npos ? text : text.substr(at + 8, text.find('"', at + 8) - at - 8);
  };
  const auto git = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"git", "-C", tree, "-c", "user.name=t", "-c", "user.email=t@t"});
    const ProcessResult r = runProcess(args);
    EXPECT_TRUE(r.ok()) << r.describeFailure();
    return r.out.substr(0, r.out.find('\n'));
  };
  EXPECT_EQ(generate(), "unknown");
  git({"init", "-q"});
  std::ofstream(tree + "/a.txt") << "one\n";
  git({"add", "a.txt"});
  git({"commit", "-q", "-m", "one"});
  const std::string first = git({"rev-parse", "--short", "HEAD"});
  EXPECT_EQ(generate(), first);
  // Unchanged: not written again (its time stays, so make and ninja compile nothing).
  const auto written = fs::last_write_time(out) - std::chrono::seconds(10);
  fs::last_write_time(out, written);
  EXPECT_EQ(generate(), first);
  EXPECT_EQ(fs::last_write_time(out), written) << "rewritten with the same content";
  // An untracked file is no change of the tree (git describe's rule); a tracked one is.
  std::ofstream(tree + "/notes.txt") << "x\n";
  EXPECT_EQ(generate(), first);
  std::ofstream(tree + "/a.txt") << "two\n";
  EXPECT_EQ(generate(), first + "-dirty");
  EXPECT_NE(fs::last_write_time(out), written);
  git({"commit", "-q", "-am", "two"});
  const std::string second = git({"rev-parse", "--short", "HEAD"});
  EXPECT_NE(second, first);
  EXPECT_EQ(generate(), second);
  fs::remove_all(dir);
}

// The build: a LibTorch of the old libstdc++ string ABI is refused when the build is
// configured, in a message naming where it is, instead of a build that ends in undefined
// symbols (cmake/FoldfarmDeps.cmake); nothing is generated.
TEST(Configure, ALibTorchOfThePreCxx11StringAbiIsRefusedNamingIt) {
  const fs::path dir = fs::temp_directory_path() / ("ff_configure_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string torch_dir = (dir / "old_abi_torch").string();
  fs::create_directories(torch_dir);
  // What a LibTorch of that ABI tells CMake (TorchConfig.cmake).
  std::ofstream(torch_dir + "/TorchConfig.cmake")
      << "set(TORCH_FOUND TRUE)\nset(TORCH_INCLUDE_DIRS \"\")\nset(TORCH_LIBRARIES \"\")\n"
         "set(TORCH_CXX_FLAGS \"-D_GLIBCXX_USE_CXX11_ABI=0\")\n";
  ProcessOptions o;
  o.timeout = std::chrono::seconds(240);
  o.extraEnv = {"CMAKE_GENERATOR=Unix Makefiles"};
  const ProcessResult r =
      runProcess({FF_CMAKE_COMMAND, "-S", FOLDFARM_SOURCE_DIR, "-B", (dir / "build").string(),
                  "-DTorch_DIR=" + torch_dir, "-DFOLDFARM_WITH_TORCH=ON",
                  "-DFOLDFARM_WITH_CUDA=OFF", "-DFOLDFARM_BUILD_TESTS=OFF"},
                 o);
  EXPECT_NE(r.exitCode, 0) << r.out;
  // CMake wraps messages: compared with every run of white space as one space.
  std::string text;
  for (char c : r.out + r.err) {
    const bool space = c == ' ' || c == '\n';
    if (!space || (!text.empty() && text.back() != ' ')) text += space ? ' ' : c;
  }
  EXPECT_NE(text.find("the LibTorch at " + torch_dir + " was built with the pre-C++11 string ABI"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("use a LibTorch built with the C++11 ABI"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(dir / "build" / "Makefile"));
  fs::remove_all(dir);
}

}  // namespace
