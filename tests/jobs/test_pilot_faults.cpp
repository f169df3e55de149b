// The MPI pilot under a real mpirun (started by this test): a worker rank that hangs
// mid-task (SIGSTOP: alive, so the launcher does not notice) is declared lost and fenced,
// its tasks run elsewhere, the pilot ends naming the lost rank with exit 3 (MPI_Abort, which
// also ends the hung rank: MPI cannot be finalised without it), and a resume completes the
// campaign with every task done exactly once. (A rank that dies outright is reported by the
// launcher itself: mpirun, or srun --kill-on-bad-exit in the pilot scripts, ends the job.)
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "jobs/campaign.hpp"
#include "jobs/sqlite_db.hpp"
#include "jobs/task_kind.hpp"
#include "tests/jobs/test_util.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using namespace foldfarm::jobs::testing;

std::string readAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The pid of the process that is MPI rank `rank` of a `ff_jobs_tool run` (by its
// environment), or -1.
pid_t findRank(int rank) {
  DIR* d = ::opendir("/proc");
  if (!d) return -1;
  pid_t found = -1;
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = readAll("/proc/" + name + "/cmdline");
    if (cmd.find("ff_jobs_tool") == std::string::npos || cmd.find("run") == std::string::npos)
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

TEST(PilotFaults, AHungRankIsFencedAndNamedByThePilotAndAResumeCompletes) {
  registerBuiltinTaskKinds();
  const std::string scratch = makeScratchDir("pilot");
  const std::string dir = scratch + "/c";
  json spec{{"name", "pilot"},   {"task", "sleep"},
            {"replicas", 12},    {"params", {{"seconds", 0.6}}},
            {"executor", "mpi"}, {"resources", {{"cpu_slots", 1}}}};
  ToolRun init = runTool({"init", writeSpec(scratch, spec), "--dir", dir}, scratch, "init");
  ASSERT_EQ(init.exit_code, 0) << init.err;

  const std::string cmd = std::string(FF_MPIRUN) + " --allow-run-as-root --oversubscribe -np 3 " +
                          FF_JOBS_TOOL + " run " + dir +
                          " --executor mpi --lost-after 2 --heartbeat 0.2 > " + scratch +
                          "/pilot.out 2> " + scratch + "/pilot.err";
  pid_t launcher = ::fork();
  if (launcher == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Stop rank 2 once tasks are running.
  pid_t rank2 = -1;
  for (int i = 0; i < 600 && (rank2 < 0 || doneTaskLogs(dir + "/tasks") < 3); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (rank2 < 0) rank2 = findRank(2);
  }
  ASSERT_GT(rank2, 0) << readText(scratch + "/pilot.err");
  ASSERT_EQ(::kill(rank2, SIGSTOP), 0);

  int st = 0;
  for (int i = 0; i < 1200; ++i) {
    if (::waitpid(launcher, &st, WNOHANG) == launcher) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (i == 1199) {
      ::kill(rank2, SIGKILL);
      ::kill(launcher, SIGKILL);
      ADD_FAILURE() << "the pilot did not end after losing a rank (hung in MPI_Finalize?)";
    }
  }
  const std::string err = readText(scratch + "/pilot.err");
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 3) << "status " << st << "\n" << err;
  auto alive = [](pid_t pid) {  // a zombie (killed, not yet reaped) counts as gone
    const std::string stat = readAll("/proc/" + std::to_string(pid) + "/stat");
    const size_t close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
  };
  for (int i = 0; i < 100 && alive(rank2); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(alive(rank2)) << "the hung rank outlived the pilot";
  EXPECT_NE(err.find("lost rank 2"), std::string::npos) << err;
  EXPECT_NE(err.find("campaign resume"), std::string::npos) << err;

  ToolRun resume = runTool({"resume", dir, "--executor", "local"}, scratch, "resume");
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], 12);
  SqliteDb db(dir + "/journal.sqlite", false);
  SqliteStatement q(db, "SELECT COUNT(*) FROM events WHERE to_state='done'");
  q.step();
  EXPECT_EQ(q.columnInt(0), 12) << "each task became done exactly once";
  for (const auto& t : c.tasks())
    EXPECT_EQ(t.failures, 0) << t.id << ": a lost rank is not the task's fault";
}

}  // namespace
}  // namespace foldfarm::jobs
