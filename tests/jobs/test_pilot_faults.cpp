// The MPI pilot under a real mpirun (started by this test): a worker rank that hangs
// mid-task (SIGSTOP: alive, so the launcher does not notice) is declared lost and fenced,
// its tasks run elsewhere, the pilot ends naming the lost rank with exit 3 (MPI_Abort, which
// also ends the hung rank: MPI cannot be finalised without it), and a resume completes the
// campaign with every task done exactly once. (A rank that dies outright is reported by the
// launcher itself: mpirun, or srun --kill-on-bad-exit in the pilot scripts, ends the job.)
// A worker rank that ends with an error of its own tells rank 0, which fences it at once,
// says why, and finishes the campaign with the other ranks. A lost rank 0 (under a launcher
// that lets a job outlive a rank) is found by the worker ranks, which end the job.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <thread>

#include "core/base/process.hpp"
#include "jobs/campaign.hpp"
#include "jobs/sqlite_db.hpp"
#include "jobs/task_kind.hpp"
#include "tests/jobs/test_util.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using namespace foldfarm::jobs::testing;

// The file's bytes; "" if it cannot be read (a /proc file of a process that ended meanwhile:
// its read fails with ESRCH, which the stream throws).
std::string readAll(const std::string& path) {
  try {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  } catch (const std::exception&) {
    return "";
  }
}

// The pid of the process that is MPI rank `rank` of a `ff_jobs_tool run` of campaign `dir`
// (by its command line and environment), or -1.
pid_t findRank(int rank, const std::string& dir) {
  DIR* d = ::opendir("/proc");
  if (!d) return -1;
  pid_t found = -1;
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = readAll("/proc/" + name + "/cmdline");
    if (cmd.find("ff_jobs_tool") == std::string::npos || cmd.find("run") == std::string::npos ||
        cmd.find(dir + '\0') == std::string::npos)
      continue;
    std::string env = readAll("/proc/" + name + "/environ");
    size_t at = 0;
    while (at < env.size()) {
      size_t end = env.find('\0', at);
      if (end == std::string::npos) end = env.size();
      if (env.compare(at, end - at, want) == 0) found = std::stoi(name);
      at = end + 1;
    }
  }
  ::closedir(d);
  return found;
}

int doneTaskLogs(const std::string& tasks) {
  int n = 0;
  DIR* d = ::opendir(tasks.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.' && ::access((tasks + "/" + e->d_name + "/task.log").c_str(), F_OK) == 0)
      ++n;
  }
  ::closedir(d);
  return n;
}

// A 12-task campaign through a pilot of 3 ranks under mpirun (with `mpirun_options`, and
// `--lost-after lost_after`): once both worker ranks run a task, rank `hit` gets `sig`. Each
// task is a command that waits for the file `go` in the scratch directory, made just after
// the hit, then sleeps 0.6 s: however late a loaded machine lets this process look, the hit
// lands while the worker ranks hold tasks and most of the campaign is still to run (before, 3
// finished tasks of 12 x 0.6 s started a 2.7 s window the pilot could end in). Returns the
// launcher's wait status; *err gets the pilot's stderr.
struct PilotRun {
  std::string scratch, dir, err;
  int status = 0;
  pid_t rank2 = -1;  // the rank hit
};

// `before_go` (when set) runs after the hit and before `go` is made.
PilotRun runPilotAndHit(int hit, int sig, const std::string& mpirun_options = "",
                        const std::string& lost_after = "2",
                        const std::function<void(PilotRun&)>& before_go = nullptr) {
  registerBuiltinTaskKinds();
  PilotRun p;
  p.scratch = makeScratchDir("pilot");
  p.dir = p.scratch + "/c";
  const std::string go = p.scratch + "/go";
  json spec{
      {"name", "pilot"},
      {"task", "command"},
      {"replicas", 12},
      {"params",
       {{"argv",
         {"/bin/sh", "-c", "while [ ! -e '" + go + "' ]; do sleep 0.05; done; exec sleep 0.6"}}}},
      {"executor", "mpi"},
      {"resources", {{"cpu_slots", 1}}}};
  ToolRun init = runTool({"init", writeSpec(p.scratch, spec), "--dir", p.dir}, p.scratch, "init");
  EXPECT_EQ(init.exit_code, 0) << init.err;
  const std::string cmd =
      "exec " + std::string(FF_MPIRUN) + " --allow-run-as-root --oversubscribe " + mpirun_options +
      " -np 3 " + FF_JOBS_TOOL + " run " + p.dir + " --executor mpi --lost-after " + lost_after +
      " --heartbeat 0.2 > " + p.scratch + "/pilot.out 2> " + p.scratch + "/pilot.err";
  pid_t launcher = ::fork();
  if (launcher == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Untimed tasks go one per rank: two task logs are one running (waiting) task on each.
  for (int i = 0; i < 1200 && (p.rank2 < 0 || doneTaskLogs(p.dir + "/tasks") < 2); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (p.rank2 < 0) p.rank2 = findRank(hit, p.dir);
  }
  EXPECT_GT(p.rank2, 0) << readText(p.scratch + "/pilot.err");
  EXPECT_EQ(doneTaskLogs(p.dir + "/tasks"), 2) << readText(p.scratch + "/pilot.err");
  if (p.rank2 > 0) ::kill(p.rank2, sig);
  if (before_go) before_go(p);
  std::ofstream(go).close();
  for (int i = 0; i < 1200; ++i) {
    if (::waitpid(launcher, &p.status, WNOHANG) == launcher) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (i == 1199) {
      // Which process is stuck, and where: the launcher, a rank in MPI_Abort or Finalize.
      ADD_FAILURE() << "processes at the hang:\n"
                    << runProcess({"sh", "-c",
                                   "ps -eo pid,ppid,stat,wchan:24,etime,args | grep -E "
                                   "'mpirun|orted|ff_jobs_tool' | grep -v grep"})
                           .out;
      if (p.rank2 > 0) ::kill(p.rank2, SIGKILL);
      ::kill(launcher, SIGKILL);
      ::waitpid(launcher, &p.status, 0);
      ADD_FAILURE() << "the pilot did not end after losing a rank (hung in MPI_Finalize?)";
    }
  }
  p.err = readText(p.scratch + "/pilot.err");
  return p;
}

// The pilot's last line says what is left as the journal has it: a resume when tasks are
// still pending, else that every task has ended.
void expectWhatIsLeftSaid(const PilotRun& p) {
  Campaign c = Campaign::open(p.dir, Campaign::Access::kReadOnly);
  StateCounts n = c.counts();
  if (n[TaskState::kPending] + n[TaskState::kRunning] > 0)
    EXPECT_NE(p.err.find("run `foldfarm campaign resume " + p.dir + "` to finish what is left"),
              std::string::npos)
        << p.err;
  else
    EXPECT_NE(p.err.find("every task has ended all the same"), std::string::npos) << p.err;
}

// A resume on the local executor completes the campaign, each task done exactly once and no
// failure counted against a task for the lost rank.
void expectResumeCompletes(const PilotRun& p) {
  ToolRun resume = runTool({"resume", p.dir, "--executor", "local"}, p.scratch, "resume");
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  Campaign c = Campaign::open(p.dir, Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], 12);
  SqliteDb db(p.dir + "/journal.sqlite", false);
  SqliteStatement q(db, "SELECT COUNT(*) FROM events WHERE to_state='done'");
  q.step();
  EXPECT_EQ(q.columnInt(0), 12) << "each task became done exactly once";
  for (const auto& t : c.tasks())
    EXPECT_EQ(t.failures, 0) << t.id << ": a lost rank is not the task's fault";
}

// --lost-after 10 here: rank 0's own silence (a journal commit that a loaded disk keeps for
// seconds, this process starved) must not reach it, or the worker ranks end the job naming rank
// 0; a healthy rank 1 declared lost too would only add its name, so rank 2 is looked for
// among the lost, not first. It costs the 10 s rank 2 takes to be declared lost.
TEST(PilotFaults, AHungRankIsFencedAndNamedByThePilotAndAResumeCompletes) {
  const PilotRun p = runPilotAndHit(2, SIGSTOP, "", "10");
  EXPECT_TRUE(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 3) << "status " << p.status << "\n"
                                                                 << p.err;
  const size_t lost = p.err.find("mpi pilot: lost ");
  EXPECT_NE(lost, std::string::npos) << p.err;
  const std::string named =
      lost == std::string::npos ? "" : p.err.substr(lost, p.err.find('\n', lost) - lost);
  EXPECT_NE(named.find("rank 2 on "), std::string::npos) << p.err;
  // The healthy rank 1 did not end the job for rank 0's silence. (Rank 2, woken by the
  // launcher's kill, may say it heard nothing from rank 0: its own stop.)
  EXPECT_EQ(p.err.find(" r1] mpi pilot: rank 0, which keeps the journal"), std::string::npos)
      << "rank 1 took rank 0 for lost:\n"
      << p.err;
  expectWhatIsLeftSaid(p);
  for (int i = 0; i < 100 && processAlive(p.rank2); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(processAlive(p.rank2)) << "the hung rank outlived the pilot";
  expectResumeCompletes(p);
}

// A hung rank that runs again once it is fenced (stopped past --lost-after, then continued:
// a node that stalled) leaves the pilot, saying so, instead of ending the job for rank 0's
// silence towards it (before: it took rank 0 for lost and aborted the whole pilot); rank 0
// and rank 1 finish the campaign. The tasks wait for `go` until the woken rank has spoken, so
// the campaign has all its work left when it does.
TEST(PilotFaults, AFencedRankThatRunsAgainLeavesThePilotToTheOthers) {
  const PilotRun p = runPilotAndHit(2, SIGSTOP, "", "6", [](PilotRun& run) {
    const auto said = [&](const std::string& what) {
      return readText(run.scratch + "/pilot.err").find(what) != std::string::npos;
    };
    for (int i = 0; i < 1200 && !said("rank 2 on "); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(said("rank 2 on ")) << "rank 2 was not fenced\n"
                                    << readText(run.scratch + "/pilot.err");
    ::kill(run.rank2, SIGCONT);
    for (int i = 0; i < 600 && !said(" r2] mpi pilot: "); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  });
  EXPECT_TRUE(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 3) << "status " << p.status << "\n"
                                                                 << p.err;
  EXPECT_NE(p.err.find(" r2] mpi pilot: rank 0 fenced this rank"), std::string::npos) << p.err;
  EXPECT_EQ(p.err.find("rank 0, which keeps the journal"), std::string::npos)
      << "a rank took rank 0 for lost:\n"
      << p.err;
  {
    // Rank 0 went on: rank 1 ran every task, rank 2's among them; each became done once.
    Campaign c = Campaign::open(p.dir, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.counts()[TaskState::kDone], 12) << p.err;
    SqliteDb db(p.dir + "/journal.sqlite", false);
    SqliteStatement q(db, "SELECT COUNT(*) FROM events WHERE to_state='done'");
    q.step();
    EXPECT_EQ(q.columnInt(0), 12);
    for (const auto& t : c.tasks()) EXPECT_EQ(t.failures, 0) << t.id;
  }
  expectWhatIsLeftSaid(p);
}

TEST(PilotFaults, AKilledRankEndsTheJobNamingItAndAResumeCompletes) {
  // The launcher notices a dead rank itself (mpirun here; srun --kill-on-bad-exit in the
  // pilot scripts) and ends the job naming it; the journal stays consistent.
  const PilotRun p = runPilotAndHit(2, SIGKILL);
  EXPECT_TRUE(WIFEXITED(p.status) && WEXITSTATUS(p.status) != 0) << "status " << p.status;
  EXPECT_NE(p.err.find("rank 2"), std::string::npos) << p.err;
  expectResumeCompletes(p);
}

// Rank 0, which keeps the journal, killed under a launcher that keeps the job going when a
// rank dies (Open MPI's recovery): the worker ranks hear nothing from it for --lost-after, stop
// their tasks and end the job naming it (exit 3; before: they, their workers and mpirun ran on
// until the allocation's time limit). The journal is consistent: a resume completes.
TEST(PilotFaults, ALostRankZeroEndsTheJobFromTheWorkerRanksAndAResumeCompletes) {
  const PilotRun p = runPilotAndHit(0, SIGKILL, "--mca orte_enable_recovery 1");
  // The job ended (runPilotAndHit fails on a hang) through MPI_Abort(3); Open MPI 4.1's
  // mpirun under recovery exits 0 all the same, so its status says nothing here.
  EXPECT_TRUE(WIFEXITED(p.status)) << "status " << p.status << "\n" << p.err;
  // mpirun's word of the abort; under recovery and load Open MPI 4.1 now and then fails to
  // print it ("ORTE_ERROR_LOG: Out of resource in file …/show_help.c"): the ranks' own line
  // below, written just before their MPI_Abort(3), is the job's word then.
  EXPECT_TRUE(p.err.find("with errorcode 3") != std::string::npos ||
              p.err.find("show_help.c") != std::string::npos)
      << p.err;
  EXPECT_NE(p.err.find("rank 0, which keeps the journal, silent for 2 s (lost): this rank "
                       "stopped what it ran and ends the job; `foldfarm campaign resume " +
                       p.dir + "` continues"),
            std::string::npos)
      << p.err;
  expectResumeCompletes(p);
}

// Rank 0 stopped (SIGSTOP) past --lost-after: the worker ranks end the job naming rank 0, and
// rank 0, woken by the launcher's kill, does not blame the healthy worker ranks for its own
// silence (before: "rank 1 on vm silent for 2 s (lost)" for each, and "no usable worker slot
// is left (workers keep dying at start)"). A resume completes.
TEST(PilotFaults, AStoppedRankZeroEndsTheJobAndBlamesNoWorkerRank) {
  const PilotRun p = runPilotAndHit(0, SIGSTOP);
  EXPECT_TRUE(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 3) << "status " << p.status << "\n"
                                                                 << p.err;
  EXPECT_NE(p.err.find("rank 0, which keeps the journal, silent for 2 s (lost)"), std::string::npos)
      << p.err;
  // Woken, rank 0 first says that it stalled. Should the launcher's kill leave it running
  // longer than --lost-after after that, the worker ranks, gone by then, are lost indeed.
  const size_t stalled = p.err.find("rank 0 did not run for");
  for (const char* blame : {"its tasks go back to pending", "workers keep dying"}) {
    const size_t at = p.err.find(blame);
    if (at == std::string::npos) continue;
    EXPECT_TRUE(stalled != std::string::npos && stalled < at)
        << "rank 0 blamed the worker ranks for its own silence:\n"
        << p.err;
  }
  for (int i = 0; i < 100 && processAlive(p.rank2); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(processAlive(p.rank2)) << "the stopped rank 0 outlived the job";
  expectResumeCompletes(p);
}

// A worker rank that ends with an error of its own (here FOLDFARM_FAULT on rank 2 alone,
// through mpirun's second program: its first finished task is not forwarded) tells rank 0
// before it ends: rank 0 fences it at once and says why, the other rank runs the rest, and
// the pilot ends naming it (exit 3; MPI cannot be finalised without it). --lost-after is far
// longer than the test waits: rank 0 must not wait for the rank's silence.
TEST(PilotFaults, ARankThatEndsWithAnErrorIsFencedAtOnceWithItsReason) {
  registerBuiltinTaskKinds();
  const std::string scratch = makeScratchDir("pilot-left"), dir = scratch + "/c";
  json spec{{"name", "pilot"},   {"task", "sleep"},
            {"replicas", 12},    {"params", {{"seconds", 0.3}}},
            {"executor", "mpi"}, {"resources", {{"cpu_slots", 1}}}};
  ToolRun init = runTool({"init", writeSpec(scratch, spec), "--dir", dir}, scratch, "init");
  ASSERT_EQ(init.exit_code, 0) << init.err;
  const std::string run = std::string(FF_JOBS_TOOL) + " run " + dir +
                          " --executor mpi --lost-after 600 --heartbeat 0.2";
  const std::string cmd = "exec " + std::string(FF_MPIRUN) +
                          " --allow-run-as-root --oversubscribe -np 2 " + run +
                          " : -np 1 env FOLDFARM_FAULT=pilot.forward " + run + " > " + scratch +
                          "/pilot.out 2> " + scratch + "/pilot.err";
  ProcessOptions o;
  o.timeout = std::chrono::seconds(120);
  const auto t0 = std::chrono::steady_clock::now();
  const ProcessResult r = runProcess({"/bin/sh", "-c", cmd}, o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string err = readText(scratch + "/pilot.err");
  EXPECT_EQ(r.exitCode, 3) << r.describe() << "\n" << err;
  EXPECT_NE(err.find("rank 2 on "), std::string::npos) << err;
  EXPECT_NE(err.find(" left: pilot.forward ("), std::string::npos) << err;
  EXPECT_NE(err.find("failure injected by FOLDFARM_FAULT"), std::string::npos) << err;
  EXPECT_EQ(err.find("silent for"), std::string::npos) << err;
  EXPECT_LT(secs, 100.0) << err;
  {
    // Rank 0 went on: rank 1 ran every task rank 2 did not report, the pilot ended after.
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.counts()[TaskState::kDone], 12) << err;
  }
  PilotRun p;
  p.scratch = scratch;
  p.dir = dir;
  p.err = err;
  expectWhatIsLeftSaid(p);
  expectResumeCompletes(p);
}

}  // namespace
}  // namespace foldfarm::jobs
