// Injected faults: a segfaulting task, kill -9 of a worker and of a command task, and
// kill -9 of the orchestrator at random moments. Each costs at most the attempt it hit;
// every task ends done exactly once.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <tuple>

#include "core/base/exit_codes.hpp"
#include "core/base/fault_point.hpp"
#include "core/base/process.hpp"
#include "jobs/campaign.hpp"
#include "jobs/task_lease.hpp"
#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"
#include "tests/jobs/tool_campaign_test.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using namespace foldfarm::jobs::testing;

class Faults : public ToolCampaignTest {
 protected:
  Faults() : ToolCampaignTest("faults") {}
  // Reasons of every journaled transition of a task.
  std::vector<std::string> reasons(const std::string& id) {
    std::vector<std::string> out;
    SqliteDb db(dir_ + "/journal.sqlite", false);
    SqliteStatement st(db,
                       "SELECT COALESCE(e.reason,'') FROM events e JOIN tasks t ON "
                       "t.idx=e.task_idx WHERE t.id=? ORDER BY e.seq");
    st.bind(1, id);
    while (st.step()) out.push_back(st.columnText(0));
    return out;
  }
  // A campaign of `replicas` sleep tasks of 0.01 s on 2 slots.
  void initSleeps(int replicas) {
    init(json{{"task", "sleep"},
              {"replicas", replicas},
              {"params", {{"seconds", 0.01}}},
              {"resources", {{"cpu_slots", 2}}}});
  }
  // Runs the campaign to its end (exit 0 expected) and opens it for reading.
  Campaign runToEnd(const std::string& tag = "run") {
    ToolRun r = runTool({"run", dir_}, scratch_, tag);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Campaign::open(dir_, Campaign::Access::kReadOnly);
  }
  // One `command` task, r0000m0, that appends "begin" to its directory's `runs`, waits for the
  // file `go` there, then appends "end". Returns its directory.
  std::string initGatedCommand(double lease_wait_s) {
    init(json{{"task", "command"},
              {"replicas", 1},
              {"params",
               {{"argv",
                 {"/bin/sh", "-c",
                  "echo begin >> runs; while [ ! -e go ]; do sleep 0.05; done; echo end >> "
                  "runs"}}}},
              {"retry", {{"lease_wait_s", lease_wait_s}}}});
    return dir_ + "/tasks/r0000m0";
  }
  // Starts `work --task task` (outputs under `tag`) and waits up to 30 s for a line in `runs`.
  pid_t startGatedRunner(const std::string& task, const std::string& tag) {
    const pid_t pid = startTool({"work", dir_, "--task", task}, scratch_, tag);
    for (int i = 0; i < 3000 && readText(dir_ + "/tasks/r0000m0/runs").empty(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return pid;
  }
  static bool anyContains(const std::vector<std::string>& v, const std::string& s) {
    for (const auto& x : v) {
      if (x.find(s) != std::string::npos) return true;
    }
    return false;
  }
};

TEST_F(Faults, SegfaultingTaskCostsOnlyThatAttempt) {
  init(json{{"task", "crash"},
            {"replicas", 4},
            {"members", 2},
            {"params", {{"signal", 11}}},
            {"retry", {{"max_attempts", 2}}},
            {"resources", {{"cpu_slots", 2}}}});
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id;
    EXPECT_EQ(t.failures, 1) << t.id << ": only the crashing attempt counts";
    // A finished task whose report was still being written when the worker crashed on
    // a later one is rerun (without blame) unless its result file was already durable.
    EXPECT_GE(t.attempts, 2) << t.id;
    EXPECT_TRUE(anyContains(reasons(t.id), "signal 11")) << t.id;
  }
}

TEST_F(Faults, AlwaysCrashingTaskFailsWhileTheRestFinish) {
  init(json{{"task", "crash"},
            {"replicas", 5},
            {"params", {{"signal", 6}}},
            {"overrides", {{"r0003m0", {{"always", true}}}}},
            {"retry", {{"max_attempts", 3}}},
            {"resources", {{"cpu_slots", 2}}}});
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  EXPECT_EQ(r.exit_code, 1);
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  auto t = c.journal().task("r0003m0");
  EXPECT_EQ(t->state, TaskState::kFailed);
  EXPECT_EQ(t->failures, 3) << "failed after max_attempts crashes";
  EXPECT_NE(t->reason.find("signal 6"), std::string::npos) << t->reason;
  EXPECT_EQ(c.counts()[TaskState::kDone], 4);
}

// A task that does not stop at its time limit: the worker's watchdog fails it and ends the
// worker. The task queued behind it on that slot never started: it is requeued without
// blame (before, it was charged with the worker's end and, at max_attempts 1, failed
// without having run).
TEST_F(Faults, AWorkerEndedByItsWatchdogBlamesNoTaskQueuedBehind) {
  init(json{{"task", "ignores_stop"},
            {"replicas", 2},
            {"params", {{"seconds", 0.01}}},
            {"overrides", {{"r0000m0", {{"seconds", 30}}}}},
            {"time_limit_s", 1},
            {"retry", {{"max_attempts", 1}}},
            {"resources", {{"cpu_slots", 1}}}});
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  EXPECT_EQ(r.exit_code, 1) << r.err;  // the task that ignored its stop failed
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  auto stuck = c.journal().task("r0000m0");
  EXPECT_EQ(stuck->state, TaskState::kFailed);
  EXPECT_NE(stuck->reason.find("did not stop"), std::string::npos) << stuck->reason;
  // The limit as the spec gives it (before: "1.000000 s").
  EXPECT_NE(stuck->reason.find("time limit of 1 s exceeded"), std::string::npos) << stuck->reason;
  auto behind = c.journal().task("r0001m0");
  EXPECT_EQ(behind->state, TaskState::kDone) << behind->reason;
  EXPECT_EQ(behind->failures, 0);
  EXPECT_FALSE(anyContains(reasons("r0001m0"), "worker died"));
}

// A task that stops at its time limit with its state saved made progress: the stop is one
// of its interruptions and the next attempt goes on, until it is done (before: each such
// stop was a failure, and max_attempts of them failed a task that advanced every time).
TEST_F(Faults, ATaskStoppedByItsTimeLimitWithItsStateSavedGoesOnNextAttempt) {
  init(json{{"task", "resumable"},
            {"replicas", 1},
            {"params", {{"units", 8}, {"unit_s", 0.25}}},
            {"time_limit_s", 0.6},
            {"retry", {{"max_attempts", 1}, {"backoff_s", 0}}},
            {"resources", {{"cpu_slots", 1}}}});
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  const auto t = c.journal().task("r0000m0");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state, TaskState::kDone) << t->reason;
  EXPECT_EQ(t->failures, 0);
  EXPECT_GE(t->attempts, 3) << "8 units of 0.25 s take several attempts of 0.6 s";
  EXPECT_TRUE(
      anyContains(reasons("r0000m0"), "time limit of 0.6 s reached: stopped with its state saved"));
}

// The task's lease held by processes of another host (a lost pilot rank's worker still
// running, a resume on another login node): each attempt waits, is not started, and is
// retried, toward no cap; once the lease is free the task runs. Before, each refusal counted
// as one of the task's own stops, and at max_interruptions the task ended failed.
TEST_F(Faults, ALeaseHeldFromAnotherHostDelaysTheTaskWithoutFailingIt) {
  init(json{{"task", "command"},
            {"replicas", 1},
            {"params", {{"argv", {"/bin/sh", "-c", "exit 0"}}}},
            {"retry", {{"lease_wait_s", 0.3}, {"max_interruptions", 2}, {"backoff_s", 0}}},
            {"resources", {{"cpu_slots", 1}}}});
  const std::string task_dir = Campaign::open(dir_, Campaign::Access::kReadOnly).taskDir("r0000m0");
  // Each attempt waits lease_wait_s (and the fence grace, 5 s, from the second on) and is
  // refused; the other host's attempt ends, and the lock with it, once two refusals are
  // journaled (however long the run took to start: a fixed hold let a slow start's second
  // attempt take the lease).
  const std::string release = scratch_ + "/release-lease";
  const pid_t holder = holdLeaseAsAnotherHost(task_dir, 1, 180, {}, release);
  ASSERT_GT(holder, 0);
  const pid_t orch = startTool({"run", dir_}, scratch_, "run");
  const auto refusals = [&] {
    int n = 0;
    try {
      for (const auto& r : reasons("r0000m0")) n += r.find("host elsewhere") != std::string::npos;
    } catch (const std::exception&) {  // the journal busy for an instant: looked at again
    }
    return n;
  };
  for (int i = 0; i < 1200 && refusals() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const int refused = refusals();
  writeText(release, "");
  EXPECT_EQ(waitExit(orch), 0) << readText(scratch_ + "/run.err");
  EXPECT_EQ(waitExit(holder), 0);
  EXPECT_GE(refused, 2) << "no two refusals within 120 s";
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  auto t = c.journal().task("r0000m0");
  EXPECT_EQ(t->state, TaskState::kDone) << t->reason;
  EXPECT_EQ(t->failures, 0);
  EXPECT_GE(t->attempts, 3) << "refused while the lease was held";
  EXPECT_TRUE(anyContains(reasons("r0000m0"), "host elsewhere"));
}

// The other host's older attempt finishes the task while this campaign's attempt waits for
// the lease: its result is taken, and the task is not run a second time. Before, the waiting
// attempt ran the command again once the lease was free.
TEST_F(Faults, AnOlderAttemptThatFinishesWhileANewerOneWaitsIsTakenNotRunAgain) {
  init(json{{"task", "command"},
            {"replicas", 2},
            {"params", {{"argv", {"/bin/sh", "-c", "echo ran >> runs"}}}},
            {"retry", {{"lease_wait_s", 0.3}, {"backoff_s", 0}}},
            {"resources", {{"cpu_slots", 1}}}});
  const std::string task_dir = Campaign::open(dir_, Campaign::Access::kReadOnly).taskDir("r0000m0");
  // The campaign's attempt 1 waits 0.3 s and the fence grace (5 s) and is refused; its
  // attempt 2 is waiting when the other host's attempt 1 ends, 7 s in, with its result.
  const pid_t holder = holdLeaseAsAnotherHost(task_dir, 1, 7, [&] {
    TaskResult r;
    r.task_id = "r0000m0";
    r.attempt = 1;
    r.status = 0;
    r.host = "elsewhere";
    r.started_at = 1000;
    r.finished_at = 1002;
    r.result = json{{"exit_code", 0}, {"done_by", "elsewhere"}};
    writeTaskResult(task_dir + "/task_result.json", r);
  });
  ASSERT_GT(holder, 0);
  Campaign c = runToEnd();
  EXPECT_EQ(waitExit(holder), 0);
  auto t = c.journal().task("r0000m0");
  EXPECT_EQ(t->state, TaskState::kDone) << t->reason;
  EXPECT_EQ(t->failures, 0);
  EXPECT_EQ(t->result.value("done_by", ""), "elsewhere") << t->result.dump();
  EXPECT_FALSE(exists(task_dir + "/runs")) << "the task ran again";
  EXPECT_TRUE(anyContains(reasons("r0000m0"), "finished by attempt 1 on elsewhere"));
  auto r = readTaskResult(task_dir + "/task_result.json");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->attempt, t->attempts) << "the result file names the attempt that took it";
  EXPECT_EQ(r->finished_at, 1002);
  // The other task, whose directory no other attempt held, ran as usual.
  EXPECT_EQ(readText(c.taskDir("r0001m0") + "/runs"), "ran\n");
}

// An attempt whose lease was taken from it (a network file system that evicted its client
// granted the lock to another attempt, whose holder record replaced its own) does not commit
// its result over the other attempt's directory: the attempt fails and the task is retried.
TEST_F(Faults, AnAttemptThatLostItsLeaseCommitsNoResult) {
  init(json{{"task", "loses_lease"},
            {"replicas", 1},
            {"retry", {{"max_attempts", 2}, {"backoff_s", 0}}},
            {"resources", {{"cpu_slots", 1}}}});
  Campaign c = runToEnd();
  auto t = c.journal().task("r0000m0");
  EXPECT_EQ(t->state, TaskState::kDone) << t->reason;
  EXPECT_EQ(t->attempts, 2);
  EXPECT_EQ(t->failures, 1);
  EXPECT_TRUE(anyContains(reasons("r0000m0"),
                          "attempt 1 lost its lease to attempt 99 (host elsewhere, pid 1)"));
  auto r = readTaskResult(c.taskDir("r0000m0") + "/task_result.json");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->attempt, 2) << "only the attempt that held the lease wrote its result";
}

TEST_F(Faults, ATaskThatAlwaysExits75EndsFailedNamingTheCapWhileTheRestFinish) {
  // Without the cap the local executor would dispatch it forever.
  init(json{{"task", "command"},
            {"replicas", 3},
            {"params", {{"argv", {"/bin/sh", "-c", "exit 0"}}}},
            {"overrides", {{"r0001m0", {{"argv", {"/bin/sh", "-c", "exit 75"}}}}}},
            {"retry", {{"max_attempts", 2}, {"max_interruptions", 4}}},
            {"resources", {{"cpu_slots", 2}}}});
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  EXPECT_EQ(r.exit_code, 1);
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  auto t = c.journal().task("r0001m0");
  EXPECT_EQ(t->state, TaskState::kFailed);
  EXPECT_EQ(t->attempts, 4);
  EXPECT_NE(t->reason.find("retry.max_interruptions"), std::string::npos) << t->reason;
  EXPECT_EQ(c.counts()[TaskState::kDone], 2);
}

std::vector<pid_t> childrenOf(pid_t pid) {
  std::vector<pid_t> out;
  std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t c;
  while (f >> c) out.push_back(c);
  return out;
}

TEST_F(Faults, KillMinus9OfAWorkerFailsOneAttemptAndTheTaskIsRetried) {
  init(json{{"task", "sleep"},
            {"replicas", 10},
            {"params", {{"seconds", 0.4}}},
            {"retry", {{"max_attempts", 2}}},
            {"resources", {{"cpu_slots", 2}}}});
  pid_t orch = startTool({"run", dir_}, scratch_, "run");
  std::vector<pid_t> workers;
  // Both started within 30 s (a start-up limit: a loaded machine may take seconds).
  for (int k = 0; k < 1500 && workers.size() < 2; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    workers = childrenOf(orch);
  }
  ASSERT_EQ(workers.size(), 2u);
  // Killed while it runs a task: its lease names its pid and the task has no result yet (a
  // fixed wait killed a slow worker, under a sanitizer, before its first task).
  const std::string mine = "\"pid\":" + std::to_string(workers[0]) + ",";
  bool running = false;
  for (int k = 0; k < 500 && !running; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (int r = 0; r < 10 && !running; ++r) {
      char id[16];
      std::snprintf(id, sizeof id, "r%04dm0", r);
      const std::string task = dir_ + "/tasks/" + id;
      running = readText(task + "/.lease").find(mine) != std::string::npos &&
                !exists(task + "/" + kTaskResultFile);
    }
  }
  ASSERT_TRUE(running) << "worker " << workers[0] << " never ran a task";  // seen within 10 ms
  ASSERT_EQ(::kill(workers[0], SIGKILL), 0);
  EXPECT_EQ(waitExit(orch), 0) << readText(scratch_ + "/run.err");
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], 10);
  int hit = 0;
  for (const auto& t : c.tasks()) {
    if (t.failures > 0) {
      ++hit;
      EXPECT_TRUE(anyContains(reasons(t.id), "signal 9")) << t.id;
      // The worker named by its pid (before: "worker pid exited", no number).
      EXPECT_TRUE(anyContains(reasons(t.id),
                              "worker (pid " + std::to_string(workers[0]) + ") exited: signal 9"))
          << t.id;
    }
  }
  EXPECT_EQ(hit, 1) << "exactly the task the worker was running pays one attempt";
}

// The worker killed (OOM killer, kill -9) after the task's result was durable and before
// its report: the attempt finished, so the task is done with that result and is charged
// nothing. Before, the task the worker was running was blamed for the death and, at
// max_attempts 1, ended failed although its result was on disk.
// (The task is the last one: a worker that dies while it runs another task after it, as results
// are written beside the next task, charges that one.)
TEST_F(Faults, AWorkerKilledAfterTheResultIsDurableCostsTheTaskNothing) {
  init(json{{"task", "sleep"},
            {"replicas", 2},
            {"params", {{"seconds", 0.05}}},
            {"retry", {{"max_attempts", 1}}},
            {"resources", {{"cpu_slots", 1}}}});
  ::setenv(kFaultEnv, "worker.result_durable:r0001m0", 1);
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  ::unsetenv(kFaultEnv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("signal 9"), std::string::npos) << "the fault fired: " << r.err;
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id << ": " << t.reason;
    EXPECT_EQ(t.failures, 0) << t.id;
    EXPECT_EQ(t.attempts, 1) << t.id;
  }
  auto hit = c.journal().task("r0001m0");
  EXPECT_TRUE(hit->result.contains("slept_s")) << hit->result.dump();
}

TEST_F(Faults, KillMinus9OfACommandTaskFailsThatAttempt) {
  init(json{{"task", "command"},
            {"replicas", 3},
            {"params",
             {{"argv",
               {"/bin/sh", "-c", "if [ -e marker ]; then exit 0; fi; touch marker; kill -9 $$"}}}},
            {"retry", {{"max_attempts", 2}}},
            {"resources", {{"cpu_slots", 2}}}});
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone);
    EXPECT_EQ(t.attempts, 2);
    EXPECT_TRUE(anyContains(reasons(t.id), "signal 9")) << t.id;
  }
}

// kill -9 of the worker while a command task runs: the command's whole process group ends
// with it, a process it started that closed the lease descriptor included (Python's
// subprocess does by default). Before, only the command itself died (PR_SET_PDEATHSIG); such
// a process lived on without the lease, so the next attempt started beside it.
TEST_F(Faults, KillMinus9OfAWorkerEndsEveryProcessItsCommandStarted) {
  init(json{{"task", "command"},
            {"replicas", 1},
            {"params",
             {{"argv",
               {"/bin/bash", "-c",
                "if [ -e started ]; then exit 0; fi;"
                " for fd in $(ls /proc/$$/fd); do [ $fd -gt 2 ] && eval \"exec $fd>&-\"; done;"
                " sleep 300 & echo $! > orphan.pid; touch started; wait"}}}},
            {"retry", {{"max_attempts", 2}}},
            {"resources", {{"cpu_slots", 1}}}});
  const std::string task_dir = Campaign::open(dir_, Campaign::Access::kReadOnly).taskDir("r0000m0");
  pid_t orch = startTool({"run", dir_}, scratch_, "run");
  for (int k = 0; k < 500 && !exists(task_dir + "/started"); ++k)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(exists(task_dir + "/started")) << readText(scratch_ + "/run.err");
  const pid_t orphan = static_cast<pid_t>(std::stol(readText(task_dir + "/orphan.pid")));
  const std::vector<pid_t> workers = childrenOf(orch);
  ASSERT_EQ(workers.size(), 1u);
  ASSERT_EQ(::kill(workers[0], SIGKILL), 0);
  bool gone = false;
  for (int k = 0; k < 250 && !gone; ++k) {
    gone = !exists("/proc/" + std::to_string(orphan)) ||
           readText("/proc/" + std::to_string(orphan) + "/stat").find(") Z ") != std::string::npos;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone) << "the command's background process " << orphan << " outlived the worker";
  if (!gone) ::kill(orphan, SIGKILL);
  EXPECT_EQ(waitExit(orch), 0) << readText(scratch_ + "/run.err");
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  EXPECT_EQ(c.journal().task("r0000m0")->state, TaskState::kDone);
}

// A writer killed by SIGKILL leaves its temporary files; the next attempt, once it holds the
// lease, starts without them (and says so in the task's log).
TEST_F(Faults, TemporaryFilesOfAKilledAttemptAreGoneWhenTheNextAttemptStarts) {
  init(json{{"task", "command"},
            {"replicas", 2},
            {"params",
             {{"argv",
               {"/bin/sh", "-c",
                "if [ -e marker ]; then ls | grep -q tmp && exit 3; ls sub | grep -q tmp && exit 4;"
                " exit 0; fi; touch marker; mkdir -p sub; echo x > out.h5.tmp.$$.0;"
                " echo x > sub/ckpt.pt.tmp.$$.1; kill -9 $$"}}}},
            {"retry", {{"max_attempts", 2}}},
            {"resources", {{"cpu_slots", 2}}}});
  Campaign c = runToEnd();
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << t.id;
    EXPECT_EQ(t.attempts, 2) << t.id;
    EXPECT_NE(readText(c.taskDir(t.id) + "/task.log")
                  .find("removed 2 temporary file(s) an earlier attempt left unfinished"),
              std::string::npos)
        << t.id;
  }
}

// A journal whose file is damaged (here its header overwritten) is refused with the advice to
// repair it; `repair` rebuilds it from the results on disk: every task done as before, with
// the same attempt and result, the damaged file kept; a second repair finds nothing to do.
TEST_F(Faults, ADamagedJournalIsRebuiltFromTheResultsOnDisk) {
  initSleeps(4);
  std::map<std::string, std::pair<int, json>> before;
  for (const auto& t : runToEnd().tasks()) before[t.id] = {t.attempts, t.result};
  const std::string journal = dir_ + "/" + kJournalFile;
  {
    std::fstream f(journal, std::ios::in | std::ios::out | std::ios::binary);
    f.write("this is no longer a SQLite file", 31);
  }
  try {
    Campaign::open(dir_, Campaign::Access::kReadOnly);
    ADD_FAILURE() << "a damaged journal was opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("foldfarm campaign repair " + dir_), std::string::npos)
        << e.what();
  }
  const RepairSummary s = Campaign::repair(dir_, false);
  EXPECT_TRUE(s.rebuilt);
  EXPECT_FALSE(s.problem.empty());
  EXPECT_EQ(s.done, 4);
  EXPECT_EQ(s.pending, 0);
  ASSERT_FALSE(s.damaged_copy.empty());
  EXPECT_EQ(readText(s.damaged_copy + "/" + kJournalFile).rfind("this is no longer", 0), 0u)
      << "the damaged file is kept as it was";
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
    for (const auto& t : c.tasks()) {
      EXPECT_EQ(t.state, TaskState::kDone) << t.id;
      EXPECT_EQ(t.attempts, before[t.id].first) << t.id;
      EXPECT_EQ(t.result, before[t.id].second) << t.id;
    }
  }
  const RepairSummary again = Campaign::repair(dir_, false);
  EXPECT_FALSE(again.rebuilt) << again.problem;
  EXPECT_TRUE(again.problem.empty()) << again.problem;
}

// An empty journal file (a full disk, a copy cut short) is damaged too: `status` (a read-only
// open) says so with the advice to repair, without writing to it (before: an SQL error on a
// missing table, and the file turned into an empty WAL database); repair rebuilds it.
TEST_F(Faults, AnEmptyJournalIsRefusedWithoutWritingAndRebuilt) {
  initSleeps(2);
  (void)runToEnd();
  const std::string journal = dir_ + "/" + kJournalFile;
  std::ofstream(journal, std::ios::trunc).close();
  for (const char* side : {"-wal", "-shm"}) std::filesystem::remove(journal + side);
  const ToolRun st = runTool({"status", dir_}, scratch_, "status");
  EXPECT_EQ(st.exit_code, 1) << st.err;
  EXPECT_NE(
      st.err.find(journal + ": the campaign journal is damaged (" + journal + ": empty file)"),
      std::string::npos)
      << st.err;
  EXPECT_NE(st.err.find("foldfarm campaign repair " + dir_), std::string::npos) << st.err;
  EXPECT_EQ(std::filesystem::file_size(journal), 0u) << "a read-only open wrote the journal";
  EXPECT_FALSE(std::filesystem::exists(journal + "-wal"));
  const RepairSummary s = Campaign::repair(dir_, false);
  EXPECT_TRUE(s.rebuilt);
  EXPECT_EQ(s.done, 2);
  EXPECT_EQ(Campaign::open(dir_, Campaign::Access::kReadOnly).counts()[TaskState::kDone], 2);
}

// A damaged frozen spec (written once by `init`; here cut short) stops `status` with one line
// naming the file, the line and column and what to do, in its own words, not the JSON
// library's ("[json.exception.parse_error.101] ..."); `repair` writes it back from the
// journal's copy (the damaged file kept beside it) and the campaign goes on with its results;
// so for a lost spec.json. A journal without a copy (made before it kept one) is said so, and
// nothing is touched.
TEST_F(Faults, ADamagedOrLostFrozenSpecIsRestoredFromTheJournal) {
  initSleeps(2);
  (void)runToEnd();
  const std::string spec = dir_ + "/spec.json";
  const std::string text = readText(spec);
  std::ofstream(spec, std::ios::trunc) << text.substr(0, text.size() / 2);
  ToolRun st = runTool({"status", dir_}, scratch_, "status");
  EXPECT_EQ(st.exit_code, 2) << st.err;
  EXPECT_NE(st.err.find(spec + ": not valid JSON (line "), std::string::npos) << st.err;
  EXPECT_NE(st.err.find("restore it with `foldfarm campaign repair " + dir_ +
                        "` (the journal keeps a copy)"),
            std::string::npos)
      << st.err;
  EXPECT_EQ(st.err.find("json.exception"), std::string::npos) << st.err;
  EXPECT_EQ(readText(spec), text.substr(0, text.size() / 2));

  const RepairSummary restored = Campaign::repair(dir_, false);
  EXPECT_TRUE(restored.spec_restored);
  EXPECT_NE(restored.spec_problem.find("not valid JSON"), std::string::npos)
      << restored.spec_problem;
  EXPECT_FALSE(restored.rebuilt) << restored.problem;  // the journal itself is sound
  EXPECT_EQ(readText(spec), text);
  int kept = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_))
    if (e.path().filename().string().rfind("spec.json.damaged-", 0) == 0) {
      ++kept;
      EXPECT_EQ(e.path().string(), restored.spec_damaged_copy);
      EXPECT_EQ(readText(e.path().string()), text.substr(0, text.size() / 2));
    }
  EXPECT_EQ(kept, 1);
  EXPECT_EQ(Campaign::open(dir_, Campaign::Access::kReadOnly).counts()[TaskState::kDone], 2);

  // Lost: said so (not "not a campaign directory"), and restored.
  std::filesystem::remove(spec);
  st = runTool({"status", dir_}, scratch_, "status-lost");
  EXPECT_EQ(st.exit_code, 2) << st.err;
  EXPECT_NE(st.err.find(spec + ": missing: the campaign's frozen spec is lost"), std::string::npos)
      << st.err;
  const RepairSummary s = Campaign::repair(dir_, false);
  EXPECT_TRUE(s.spec_restored);
  EXPECT_TRUE(s.spec_damaged_copy.empty()) << s.spec_damaged_copy;
  EXPECT_EQ(readText(spec), text);

  // No copy in the journal: refused naming the file; nothing written.
  CampaignJournal::open(dir_ + "/" + kJournalFile).setMeta("frozen_spec", "");
  std::filesystem::remove(spec);
  std::string why = "repaired without a copy";
  try {
    Campaign::repair(dir_, false);
  } catch (const InputError& e) {
    why = e.what();
  }
  EXPECT_NE(why.find(spec + ": damaged or missing, and the journal holds no copy of it"),
            std::string::npos)
      << why;
  EXPECT_FALSE(std::filesystem::exists(spec));
}

// A missing journal is rebuilt too; a task whose result is gone runs again, as a newer
// attempt than its directory records (an older one would be superseded and never run), and
// the tasks that were done are not run again.
TEST_F(Faults, ARebuiltJournalRunsOnlyWhatLeftNoResultAsANewerAttempt) {
  initSleeps(3);
  std::string lost_dir, first_log;
  {
    Campaign c = runToEnd();
    lost_dir = c.taskDir("r0001m0");
    first_log = readText(c.taskDir("r0000m0") + "/task.log");
  }
  std::filesystem::remove(lost_dir + "/" + kTaskResultFile);
  std::ofstream(lost_dir + "/.attempt") << "3\n";  // attempt 3 was promised, then lost
  std::filesystem::remove(dir_ + "/" + kJournalFile);
  EXPECT_THROW(Campaign::open(dir_, Campaign::Access::kReadOnly), Error);
  const RepairSummary s = Campaign::repair(dir_, false);
  EXPECT_EQ(s.problem, "missing");
  EXPECT_EQ(s.done, 2);
  EXPECT_EQ(s.pending, 1);
  EXPECT_TRUE(s.damaged_copy.empty()) << "nothing to keep";
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
    const auto t = c.journal().task("r0001m0");
    ASSERT_TRUE(t);
    EXPECT_EQ(t->state, TaskState::kPending);
    EXPECT_EQ(t->attempts, 3);
  }
  Campaign c = runToEnd("run2");
  EXPECT_EQ(c.counts()[TaskState::kDone], 3);
  EXPECT_EQ(c.journal().task("r0001m0")->attempts, 4);
  EXPECT_EQ(c.journal().task("r0000m0")->attempts, 1);
  EXPECT_EQ(readText(c.taskDir("r0000m0") + "/task.log"), first_log) << "a done task ran again";
}

pid_t readPid(const std::string& path) {
  for (int i = 0; i < 500; ++i) {
    std::string s = readText(path);
    if (!s.empty() && s.back() == '\n') return static_cast<pid_t>(std::stol(s));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

TEST_F(Faults, OrchestratorAndWorkerKilledWhileACommandRunsNothingSurvivesAndResumeRunsItOnce) {
  // First attempt: records its start, leaves a background process (which inherits the task
  // lease) and waits. Any later attempt: records "resumed" and ends at once.
  init(json{{"task", "command"},
            {"replicas", 1},
            {"params",
             {{"argv",
               {"/bin/sh", "-c",
                "if [ -e bg ]; then echo resumed >> runs; exit 0; fi; echo start >> runs; "
                "sleep 300 & echo $! > bg; wait"}}}},
            {"retry", {{"lease_wait_s", 1.0}}},
            {"resources", {{"cpu_slots", 1}}}});
  pid_t orch = startTool({"run", dir_}, scratch_, "run");
  const std::string tdir = dir_ + "/tasks/r0000m0";
  pid_t bg = readPid(tdir + "/bg");
  ASSERT_GT(bg, 0) << readText(scratch_ + "/run.err");
  std::vector<pid_t> workers = childrenOf(orch);
  ASSERT_EQ(workers.size(), 1u);
  // The command's supervisor killed with its worker (as one OOM kill of both would): nothing
  // is left to end the command's process group. The command's shell dies with its supervisor
  // (parent-death signal); its background child still holds the task's lease.
  const std::vector<pid_t> supervisors = childrenOf(workers[0]);
  ASSERT_EQ(supervisors.size(), 1u);
  // The worker is stopped first: otherwise, on a loaded machine, it can see its supervisor
  // end before its own SIGKILL arrives and end the command's group itself, as it should.
  ASSERT_EQ(::kill(workers[0], SIGSTOP), 0);
  ASSERT_EQ(::kill(supervisors[0], SIGKILL), 0);
  ASSERT_EQ(::kill(workers[0], SIGKILL), 0);
  ASSERT_EQ(::kill(orch, SIGKILL), 0);
  waitExit(orch);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(processAlive(bg)) << "precondition: the orphan outlived its worker";

  ToolRun r = runTool({"resume", dir_}, scratch_, "resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int i = 0; i < 100 && processAlive(bg); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(processAlive(bg)) << "a process of the killed attempt survived the resume";
  EXPECT_EQ(readText(tdir + "/runs"), "start\nresumed\n") << "the resumed campaign ran it once";
  // Before it holds the lease an attempt writes nothing in the task directory: its
  // waiting and fencing are logged by its worker.
  EXPECT_NE(r.err.find("fencing"), std::string::npos)
      << "the new attempt fenced the old one's processes";
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  auto t = c.journal().task("r0000m0");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state, TaskState::kDone);
}

TEST_F(Faults, TwoRunnersOfOneTaskNeverOverlapAndAnOlderAttemptStartedLaterRunsNothing) {
  // What a Slurm requeue racing a resubmission amounts to: `work` runs of the same task
  // with attempts 1 and 2. The task appends its start and end to a file; its first run
  // fails, so that the second has to run it again (a finished one's result it would take).
  // The first run waits in the middle until the second attempt has been seen waiting for the
  // lease (before: a `sleep 1`, and a second worker that started later than that on a busy
  // machine met no running attempt, so the test passed without a lease).
  init(json{{"task", "command"},
            {"replicas", 1},
            {"params",
             {{"argv",
               {"/bin/sh", "-c",
                "echo begin $$ >> runs; while [ ! -e go ]; do sleep 0.05; done; echo end $$ >> "
                "runs; if [ ! -e failed ]; then touch failed; exit 1; fi"}}}},
            {"retry", {{"lease_wait_s", 60.0}}}});
  const std::string tdir = dir_ + "/tasks/r0000m0";
  pid_t first = startTool({"work", dir_, "--task", "r0000m0@1"}, scratch_, "w1");
  for (int i = 0; i < 3000 && readText(tdir + "/runs").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_FALSE(readText(tdir + "/runs").empty()) << readText(scratch_ + "/w1.err");
  pid_t second = startTool({"work", dir_, "--task", "r0000m0@2"}, scratch_, "w2");
  const auto waiting = [&] {
    return readText(scratch_ + "/w2.err").find("still holds") != std::string::npos;
  };
  for (int i = 0; i < 3000 && !waiting(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(waiting()) << "the second attempt did not wait for the first one's lease:\n"
                         << readText(scratch_ + "/w2.err");
  std::ofstream(tdir + "/go").close();
  EXPECT_EQ(waitExit(first), 1) << readText(scratch_ + "/w1.err");
  EXPECT_EQ(waitExit(second), 0) << readText(scratch_ + "/w2.err");
  std::string runs = readText(tdir + "/runs");
  EXPECT_EQ(countLines(runs), 4);
  // begin/end pairs never interleave.
  std::istringstream in(runs);
  std::string a, b, c, d;
  std::getline(in, a);
  std::getline(in, b);
  std::getline(in, c);
  std::getline(in, d);
  EXPECT_EQ(a.substr(0, 5), "begin");
  EXPECT_EQ(b, "end" + a.substr(5));
  EXPECT_EQ(c.substr(0, 5), "begin");
  EXPECT_EQ(d, "end" + c.substr(5));
  auto r = readTaskResult(tdir + "/task_result.json");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->attempt, 2);
  const std::string resultBefore = readText(tdir + "/task_result.json");

  // The requeued element of attempt 1 starts now: superseded, runs and writes nothing.
  ToolRun late = runTool({"work", dir_, "--task", "r0000m0@1"}, scratch_, "late");
  EXPECT_EQ(late.exit_code, foldfarm::kExitSuperseded) << late.err;
  EXPECT_NE(late.out.find("superseded"), std::string::npos) << late.out;
  EXPECT_EQ(countLines(readText(tdir + "/runs")), 4) << "the superseded attempt ran the command";
  EXPECT_EQ(readText(tdir + "/task_result.json"), resultBefore);

  // The same attempt run again (its array script submitted again by hand, a restarted
  // submitter that reused the number): its result stands, nothing runs or is written (before:
  // the done task ran a second time and its result was rewritten).
  ToolRun again = runTool({"work", dir_, "--task", "r0000m0@2"}, scratch_, "again");
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(countLines(readText(tdir + "/runs")), 4) << "a finished attempt ran again";
  EXPECT_EQ(readText(tdir + "/task_result.json"), resultBefore);
  // A run by hand (no @N) of the done task: refused, nothing run or written (before: it ran and
  // left a result of attempt 0 beside a journal that took attempt 2's).
  ToolRun by_hand = runTool({"work", dir_, "--task", "r0000m0"}, scratch_, "by-hand");
  EXPECT_EQ(by_hand.exit_code, foldfarm::kExitSuperseded) << by_hand.err;
  EXPECT_NE(by_hand.out.find("r0000m0 is done (attempt 2); a run by hand would overwrite its "
                             "outputs, so nothing was run: `foldfarm campaign retry"),
            std::string::npos)
      << by_hand.out;
  EXPECT_EQ(countLines(readText(tdir + "/runs")), 4) << "the run by hand ran the command";
  EXPECT_EQ(readText(tdir + "/task_result.json"), resultBefore);

  // A newer element (attempt 3) after attempt 2 finished the task: it takes that result.
  ToolRun next = runTool({"work", dir_, "--task", "r0000m0@3"}, scratch_, "w3");
  EXPECT_EQ(next.exit_code, 0) << next.err;
  EXPECT_EQ(countLines(readText(tdir + "/runs")), 4) << "a finished task ran again";
  r = readTaskResult(tdir + "/task_result.json");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->attempt, 3);
  EXPECT_EQ(r->status, 0);
  EXPECT_NE(r->reason.find("finished by attempt 2"), std::string::npos) << r->reason;
}

// A command stopped by its task's stop is interrupted, whatever it then exits with: one that
// handles SIGTERM by exiting 0 (a graceful give-up) has not necessarily finished, and taking
// its partial output as done would lose work without a word. Its next attempt runs it again.
TEST_F(Faults, ACommandStoppedByItsStopSignalIsInterruptedEvenWhenItExitsZero) {
  init(json{{"task", "command"},
            {"replicas", 1},
            {"params",
             {{"argv",
               {"/bin/sh", "-c",
                "trap 'echo gave-up >> runs; exit 0' TERM; echo begin >> runs; "
                "while [ ! -e go ]; do sleep 0.05; done; echo end >> runs"}}}}});
  const std::string tdir = dir_ + "/tasks/r0000m0";
  const pid_t element = startTool({"work", dir_, "--task", "r0000m0@1"}, scratch_, "element");
  for (int i = 0; i < 3000 && readText(tdir + "/runs").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(readText(tdir + "/runs"), "begin\n") << readText(scratch_ + "/element.err");
  ASSERT_EQ(::kill(element, SIGTERM), 0);  // a scancel, a time limit
  EXPECT_EQ(waitExit(element), foldfarm::kExitInterrupted) << readText(scratch_ + "/element.err");
  EXPECT_EQ(readText(tdir + "/runs"), "begin\ngave-up\n");
  const auto r = readTaskResult(tdir + "/task_result.json");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->attempt, 1);
  EXPECT_EQ(r->status, foldfarm::kExitInterrupted) << r->reason;
}

// A runner that must not stop the attempt holding the lease: an older attempt (superseded at
// once, without waiting), a second runner of the holder's own attempt and a run by hand (both
// wait, then run nothing). Before, each waited and then fenced the live attempt, whose work was
// lost.
TEST_F(Faults, NoOlderSecondOrByHandRunnerStopsTheAttemptThatHoldsTheTask) {
  const std::string tdir = initGatedCommand(0.5);
  const pid_t holder = startGatedRunner("r0000m0@2", "holder");
  ASSERT_EQ(readText(tdir + "/runs"), "begin\n") << readText(scratch_ + "/holder.err");
  // Exit 76 (nothing run or written) for the older attempt and the run by hand; 75 for the
  // second runner (not started: retried later, as when another host holds the lease).
  for (const auto& [task, tag, code] :
       {std::tuple<std::string, std::string, int>{"r0000m0@1", "older", foldfarm::kExitSuperseded},
        {"r0000m0@2", "second", foldfarm::kExitInterrupted},
        {"r0000m0", "by-hand", foldfarm::kExitSuperseded}}) {
    const ToolRun r = runTool({"work", dir_, "--task", task}, scratch_, tag);
    EXPECT_EQ(r.exit_code, code) << tag << ": " << r.err;
    EXPECT_EQ(r.err.find("fencing"), std::string::npos) << tag << ": " << r.err;
    EXPECT_EQ(::kill(holder, 0), 0) << tag << " stopped the attempt that holds the task";
    EXPECT_EQ(readText(tdir + "/runs"), "begin\n") << tag;
  }
  EXPECT_EQ(readText(scratch_ + "/older.err").find("still holds"), std::string::npos)
      << "the older attempt waited for the lease: " << readText(scratch_ + "/older.err");
  EXPECT_NE(
      readText(scratch_ + "/by-hand.out").find("a run by hand does not stop a running attempt"),
      std::string::npos)
      << readText(scratch_ + "/by-hand.out");
  EXPECT_NE(readText(scratch_ + "/second.out").find("a second runner of attempt 2 does not stop"),
            std::string::npos)
      << readText(scratch_ + "/second.out");
  std::ofstream(tdir + "/go").close();
  EXPECT_EQ(waitExit(holder), 0) << readText(scratch_ + "/holder.err");
  EXPECT_EQ(readText(tdir + "/runs"), "begin\nend\n");
  const auto done = readTaskResult(tdir + "/task_result.json");
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->attempt, 2);
  EXPECT_EQ(done->status, 0);
}

// A run by hand (`campaign work D --task ID`, attempt 0) that finishes the task while the
// campaign's attempt waits for its lease: the campaign's attempt takes that result and runs
// nothing (before: the holder's attempt 0 read as "no earlier holder", and the task ran a
// second time over the outputs of the first).
TEST_F(Faults, ARunByHandThatFinishesWhileTheCampaignsAttemptWaitsIsTakenNotRunAgain) {
  const std::string tdir = initGatedCommand(60.0);
  const pid_t by_hand = startGatedRunner("r0000m0", "by-hand");
  ASSERT_EQ(readText(tdir + "/runs"), "begin\n") << readText(scratch_ + "/by-hand.err");
  const pid_t campaign = startTool({"work", dir_, "--task", "r0000m0@1"}, scratch_, "attempt1");
  const auto waiting = [&] {
    return readText(scratch_ + "/attempt1.err").find("still holds") != std::string::npos;
  };
  for (int i = 0; i < 3000 && !waiting(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(waiting()) << readText(scratch_ + "/attempt1.err");
  std::ofstream(tdir + "/go").close();
  EXPECT_EQ(waitExit(by_hand), 0) << readText(scratch_ + "/by-hand.err");
  EXPECT_EQ(waitExit(campaign), 0) << readText(scratch_ + "/attempt1.err");
  EXPECT_EQ(readText(tdir + "/runs"), "begin\nend\n") << "the task ran a second time";
  const auto r = readTaskResult(tdir + "/task_result.json");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->attempt, 1);
  EXPECT_EQ(r->status, 0);
  EXPECT_NE(r->reason.find("finished by a run by hand (attempt 0)"), std::string::npos)
      << r->reason;
}

// A Slurm element of two tasks stopped (a time limit, a scancel) while its first runs: the
// second, never started, is recorded so (its attempt, why) for the submitter, which counts it
// toward no cap (before: a submission "ended without a result", and after --max-submissions
// such cuts the task failed without ever having run).
TEST_F(Faults, ATaskItsElementWasStoppedBeforeIsRecordedAsNotStarted) {
  init(json{{"task", "command"},
            {"replicas", 2},
            {"params", {{"argv", {"/bin/sh", "-c", "echo begin >> runs; sleep 30"}}}}});
  const std::string first = dir_ + "/tasks/r0000m0", second = dir_ + "/tasks/r0001m0";
  pid_t work =
      startTool({"work", dir_, "--task", "r0000m0@1", "--task", "r0001m0@1"}, scratch_, "work");
  for (int i = 0; i < 500 && readText(first + "/runs").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(readText(first + "/runs"), "begin\n");
  ::kill(work, SIGTERM);
  EXPECT_EQ(waitExit(work), foldfarm::kExitInterrupted) << readText(scratch_ + "/work.err");
  EXPECT_NE(readText(scratch_ + "/work.out").find("r0001m0 interrupted: not started"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(second + "/runs"));
  const std::optional<foldfarm::jobs::LeaseRefusal> r = foldfarm::jobs::readLeaseRefusal(second);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->attempt, 1);
  EXPECT_NE(r->reason.find("before the task's turn"), std::string::npos) << r->reason;
  EXPECT_FALSE(foldfarm::jobs::readLeaseRefusal(first).has_value()) << "the first one ran";
  // The next attempt, once it holds the lease, removes the record its submitter has read
  // (before: it stayed beside the task's result).
  work = startTool({"work", dir_, "--task", "r0001m0@2"}, scratch_, "work2");
  for (int i = 0; i < 500 && readText(second + "/runs").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(readText(second + "/runs"), "begin\n");
  EXPECT_FALSE(std::filesystem::exists(second + "/" + foldfarm::jobs::kLeaseRefusedFile));
  ::kill(work, SIGTERM);
  EXPECT_EQ(waitExit(work), foldfarm::kExitInterrupted) << readText(scratch_ + "/work2.err");
}

// `campaign status` on a read-only file system (also: another user's campaign, a full disk),
// where SQLite cannot make the -shm file a reader of the WAL journal needs: it reads the
// journal as it is on disk (before: "unable to open database file (No such file or
// directory)", exit 1). The campaign is bound read-only onto itself in a mount namespace of
// the status process alone (skipped where mounts cannot be made: no CAP_SYS_ADMIN).
TEST_F(Faults, StatusReadsAJournalOnAReadOnlyFileSystem) {
  if (!foldfarm::programAvailable("unshare")) GTEST_SKIP() << "no unshare(1)";
  init(json{{"task", "sleep"}, {"replicas", 3}, {"params", {{"seconds", 0.01}}}});
  ASSERT_EQ(runTool({"run", dir_}, scratch_, "run").exit_code, 0);
  const std::string script = "mount --bind '" + dir_ + "' '" + dir_ +
                             "' && mount -o remount,bind,ro '" + dir_ + "' || exit 99; exec '" +
                             FF_JOBS_TOOL + "' status '" + dir_ + "' --json";
  const pid_t pid =
      startProgram("/usr/bin/unshare", {"-m", "/bin/sh", "-c", script}, scratch_, "status");
  const int rc = waitExit(pid);
  if (rc == 99)
    GTEST_SKIP() << "no read-only bind mount here: " << readText(scratch_ + "/status.err");
  ASSERT_EQ(rc, 0) << readText(scratch_ + "/status.err");
  EXPECT_EQ(json::parse(readText(scratch_ + "/status.out")).at("counts").value("done", 0), 3);
}

// A task sent to a local worker behind the one it runs is marked running in the journal but
// has not taken its lease: `status` says so (before: "running 4" on 2 slots).
TEST_F(Faults, StatusSaysWhichRunningTasksWaitInAWorker) {
  init(json{{"task", "sleep"}, {"replicas", 2}, {"params", {{"seconds", 0.01}}}});
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kWriter);
    std::vector<Dispatch> d{{0, hostName(), 0, "", 0}, {1, hostName(), 0, "", 0}};
    ASSERT_EQ(c.journal().markRunning(d), 2);
    std::filesystem::create_directories(c.taskDir("r0000m0"));
    writeText(c.taskDir("r0000m0") + "/" + kAttemptFile, "1\n");  // took its lease
  }
  const ToolRun js = runTool({"status", dir_, "--json"}, scratch_, "status-json");
  ASSERT_EQ(js.exit_code, 0) << js.err;
  const json running = json::parse(js.out).at("running");
  ASSERT_EQ(running.size(), 2u);
  EXPECT_EQ(running[0].at("started"), true);
  EXPECT_EQ(running[1].at("started"), false);
  const ToolRun text = runTool({"status", dir_}, scratch_, "status");
  EXPECT_NE(text.out.find("running 2 (1 of the running sent to a worker, waiting behind the task "
                          "it runs)"),
            std::string::npos)
      << text.out;
}

TEST_F(Faults, KillMinus9OfTheOrchestratorFiveTimesThenResumeDoesEveryTaskOnce) {
  const int kTasks = 500;
  init(json{{"task", "sleep"},
            {"replicas", 250},
            {"members", 2},
            {"params", {{"seconds", 0.004}}},
            {"resources", {{"cpu_slots", 2}}}});
  std::random_device rd;
  unsigned seed = rd();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> when_ms(30, 700);
  SCOPED_TRACE("kill schedule seed " + std::to_string(seed));
  int killed = 0;
  for (int round = 0; round < 5; ++round) {
    pid_t orch = startTool({"resume", dir_}, scratch_, "run" + std::to_string(round));
    std::this_thread::sleep_for(std::chrono::milliseconds(when_ms(rng)));
    ::kill(orch, SIGKILL);
    // Killed while it ran (one that had ended would have exited 0; kill() succeeds on it too,
    // until it is reaped).
    if (waitExit(orch) == 128 + SIGKILL) ++killed;
  }
  EXPECT_GT(killed, 0) << "no kill landed while an orchestrator ran";
  // Rows a killed orchestrator left running: `status` says nothing here holds the campaign and
  // what brings them back.
  ToolRun left = runTool({"status", dir_, "--json"}, scratch_, "left");
  ASSERT_EQ(left.exit_code, 0) << left.err;
  EXPECT_EQ(json::parse(left.out).at("orchestrator"), "");
  if (json::parse(left.out).at("counts").value("running", 0) > 0) {
    ToolRun text = runTool({"status", dir_}, scratch_, "left-text");
    EXPECT_NE(text.out.find("running: no process on this host orchestrates the campaign; if its "
                            "run ended (a crash, a lost node), `foldfarm campaign resume " +
                            dir_ + "`"),
              std::string::npos)
        << text.out;
    // And which run was the last to orchestrate it, where to look when it ran on another host.
    const std::string last = json::parse(left.out).at("last_orchestrator");
    EXPECT_NE(last.find(" pid "), std::string::npos) << left.out;
    EXPECT_NE(text.out.find("(the last run to orchestrate it: " + last +
                            "; a run on another "
                            "host is not seen from here)"),
              std::string::npos)
        << text.out;
  }
  ToolRun r = runTool({"resume", dir_}, scratch_, "final");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], kTasks);
  int done_events = 0;
  {
    SqliteDb db(dir_ + "/journal.sqlite", false);
    SqliteStatement st(db, "SELECT COUNT(*) FROM events WHERE to_state='done'");
    st.step();
    done_events = static_cast<int>(st.columnInt(0));
  }
  EXPECT_EQ(done_events, kTasks) << "each task became done exactly once";
  for (const auto& t : c.tasks()) {
    EXPECT_EQ(t.ingested, 1) << t.id;
    EXPECT_EQ(t.failures, 0) << t.id << ": an orchestrator crash is not the task's failure";
    ASSERT_FALSE(t.result.is_null()) << t.id;
  }
  int mismatched = 0;
  EXPECT_EQ(countResultFiles(dir_ + "/tasks", mismatched), kTasks);
  EXPECT_EQ(mismatched, 0);
}

}  // namespace
}  // namespace foldfarm::jobs
