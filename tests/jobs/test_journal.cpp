// The journal: named transitions only, group commits, results ingested exactly once, and
// standalone (Slurm array) runs that never touch it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/exit_codes.hpp"
#include "jobs/campaign.hpp"
#include "jobs/journal.hpp"
#include "jobs/sqlite_db.hpp"
#include "jobs/status_report.hpp"
#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"
#include "tests/support/resource_limits.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using namespace foldfarm::jobs::testing;

std::vector<TaskDef> threeTasks() {
  std::vector<TaskDef> v;
  for (int i = 0; i < 3; ++i) {
    TaskDef d;
    d.index = i;
    d.replica = i;
    d.id = taskIdFor(i, 0);
    v.push_back(d);
  }
  return v;
}

Completion completion(int index, int attempt, int status, const std::string& reason = "") {
  Completion c;
  c.index = index;
  c.attempt = attempt;
  c.status = status;
  c.reason = reason;
  c.started_at = wallClockNow();
  c.finished_at = c.started_at;
  if (status == 0) c.result = json{{"value", index}};
  return c;
}

// A result that ended before its attempt's dispatch (a run by hand that finished while the
// attempt was handed out, and which it takes over; a node whose clock lags) keeps its own times
// in the task's row, while the task's events stay in order (before: "done" was stamped before
// "running", and durations computed from the events ran backwards).
TEST(Journal, EventsStayInOrderWhenAResultEndedBeforeItsAttemptsDispatch) {
  std::string dir = makeScratchDir("journal_order");
  CampaignJournal j = CampaignJournal::create(dir + "/j.sqlite", threeTasks());
  std::vector<Dispatch> ds(2);
  ds[0].index = 0;
  ds[1].index = 1;
  ASSERT_EQ(j.markRunning(ds), 2);
  const double dispatched = j.task("r0000m0")->started_at;
  Completion done = completion(0, 1, 0), failed = completion(1, 1, 3, "exit 3");
  for (Completion* c : {&done, &failed}) {
    c->started_at = dispatched - 100;
    c->finished_at = dispatched - 50;
  }
  RetryPolicy retry;
  retry.max_attempts = 2;
  ASSERT_EQ(j.recordCompletions({done, failed}, retry), 2);
  EXPECT_EQ(j.task("r0000m0")->finished_at, dispatched - 50) << "the run's own times are kept";
  std::map<int, std::vector<double>> at;
  j.forEachEvent([&](const CampaignJournal::Event& e) { at[e.task].push_back(e.at); });
  for (int task : {0, 1}) {
    ASSERT_GE(at[task].size(), 3u) << "created, running, then the completion's";
    EXPECT_TRUE(std::is_sorted(at[task].begin(), at[task].end())) << "task " << task;
  }
}

TEST(Journal, CompletionsAreIngestedExactlyOnce) {
  std::string dir = makeScratchDir("journal");
  CampaignJournal j = CampaignJournal::create(dir + "/j.sqlite", threeTasks());
  std::vector<Dispatch> ds(3);
  for (int i = 0; i < 3; ++i) ds[i].index = i;
  EXPECT_EQ(j.markRunning(ds), 3);
  EXPECT_EQ(ds[0].attempt, 1);
  // Already running: a second dispatch is refused.
  std::vector<Dispatch> again(1);
  EXPECT_EQ(j.markRunning(again), 0);
  EXPECT_EQ(again[0].attempt, 0);

  RetryPolicy retry;
  retry.max_attempts = 2;
  EXPECT_EQ(j.recordCompletions({completion(0, 1, 0)}, retry), 1);
  // The same completion again (a duplicate message, a re-read result file): ignored.
  EXPECT_EQ(j.recordCompletions({completion(0, 1, 0)}, retry), 0);
  auto t0 = j.task("r0000m0");
  ASSERT_TRUE(t0);
  EXPECT_EQ(t0->state, TaskState::kDone);
  EXPECT_EQ(t0->ingested, 1);
  EXPECT_EQ(t0->result["value"], 0);

  // A failure with attempts left goes back to pending; at max_attempts it is failed.
  EXPECT_EQ(j.recordCompletions({completion(1, 1, 3, "exit 3")}, retry), 1);
  EXPECT_EQ(j.task("r0001m0")->state, TaskState::kPending);
  std::vector<Dispatch> d1(1);
  d1[0].index = 1;
  j.markRunning(d1);
  EXPECT_EQ(d1[0].attempt, 2);
  // A stale completion of attempt 1 does not touch attempt 2.
  EXPECT_EQ(j.recordCompletions({completion(1, 1, 0)}, retry), 0);
  EXPECT_EQ(j.recordCompletions({completion(1, 2, 3, "exit 3 again")}, retry), 1);
  auto t1 = j.task("r0001m0");
  EXPECT_EQ(t1->state, TaskState::kFailed);
  EXPECT_EQ(t1->failures, 2);
  EXPECT_EQ(t1->reason, "exit 3 again");

  // An interruption (75) is requeued without counting as a failure.
  EXPECT_EQ(j.recordCompletions({completion(2, 1, 75, "stopped")}, retry), 1);
  auto t2 = j.task("r0002m0");
  EXPECT_EQ(t2->state, TaskState::kPending);
  EXPECT_EQ(t2->failures, 0);

  EXPECT_EQ(j.retry(TaskState::kFailed, "retry requested"), 1);
  EXPECT_EQ(j.task("r0001m0")->state, TaskState::kPending);
  EXPECT_EQ(j.task("r0001m0")->failures, 0);
  auto counts = j.counts();
  EXPECT_EQ(counts[TaskState::kDone], 1);
  EXPECT_EQ(counts[TaskState::kPending], 2);
  // Every transition is in the event log: task 2 was created, dispatched, interrupted,
  // requeued.
  EXPECT_EQ(j.eventCount(2), 4);
}

// `campaign accept-inputs`: done and failed tasks back to pending with a fresh start (result
// dropped, failures and the retry count reset), the others left as they are, the meta
// written in the same transaction; a completion of the old attempt is not ingested.
TEST(Journal, RerunMovesDoneAndFailedTasksBackWithAFreshStart) {
  std::string dir = makeScratchDir("rerun");
  CampaignJournal j = CampaignJournal::create(dir + "/j.sqlite", threeTasks());
  std::vector<Dispatch> ds(3);
  for (int i = 0; i < 3; ++i) ds[i].index = i;
  ASSERT_EQ(j.markRunning(ds), 3);
  RetryPolicy retry;
  retry.max_attempts = 1;
  ASSERT_EQ(j.recordCompletions({completion(0, 1, 0), completion(1, 1, 3, "exit 3")}, retry), 2);
  ASSERT_EQ(j.task("r0001m0")->state, TaskState::kFailed);
  EXPECT_EQ(j.rerun({0, 1, 2}, "input changed", {{"frozen_spec", "{}"}}), 2);
  for (const char* id : {"r0000m0", "r0001m0"}) {
    const auto t = j.task(id);
    EXPECT_EQ(t->state, TaskState::kPending) << id;
    EXPECT_EQ(t->failures, 0) << id;
    EXPECT_EQ(t->ingested, 0) << id;
    EXPECT_TRUE(t->result.is_null()) << id;
    EXPECT_EQ(t->reason, "input changed") << id;
    EXPECT_EQ(t->attemptsSinceRetry(), 0) << id;
  }
  EXPECT_EQ(j.task("r0002m0")->state, TaskState::kRunning) << "left as it was";
  EXPECT_EQ(j.meta("frozen_spec"), "{}");
  EXPECT_EQ(j.recordCompletions({completion(0, 1, 0)}, retry), 0) << "the old attempt";
  std::vector<Dispatch> again(1);
  ASSERT_EQ(j.markRunning(again), 1);
  EXPECT_EQ(again[0].attempt, 2);
  EXPECT_EQ(j.recordCompletions({completion(0, 2, 0)}, retry), 1);
  EXPECT_EQ(j.task("r0000m0")->ingested, 1);
}

TEST(Journal, BackoffDelaysRetries) {
  std::string dir = makeScratchDir("backoff");
  CampaignJournal j = CampaignJournal::create(dir + "/j.sqlite", threeTasks());
  std::vector<Dispatch> ds(1);
  j.markRunning(ds);
  RetryPolicy retry;
  retry.max_attempts = 5;
  retry.backoff_s = 30;
  std::vector<CampaignJournal::Applied> applied;
  double before = wallClockNow();
  j.recordCompletions({completion(0, 1, 1, "boom")}, retry, &applied);
  ASSERT_EQ(applied.size(), 1u);
  EXPECT_EQ(applied[0].state, TaskState::kPending);
  EXPECT_GE(applied[0].not_before, before + 29);
  EXPECT_GE(j.task("r0000m0")->not_before, before + 29);
}

TEST(Journal, ATaskThatKeepsStoppingItselfEndsFailedAtTheInterruptionCap) {
  std::string dir = makeScratchDir("interruptions");
  CampaignJournal j = CampaignJournal::create(dir + "/j.sqlite", threeTasks());
  RetryPolicy retry;
  retry.max_interruptions = 3;
  auto runOnce = [&](int status, bool counts = true) {
    std::vector<Dispatch> ds(1);
    ds[0].index = 0;
    EXPECT_EQ(j.markRunning(ds), 1);
    Completion c = completion(0, ds[0].attempt, status, "stopped");
    c.counts_as_failure = counts;
    EXPECT_EQ(j.recordCompletions({c}, retry), 1);
  };
  runOnce(75);
  runOnce(75);
  // Interruptions the orchestrator caused (a lost node, its own stop) do not count.
  runOnce(1, false);
  EXPECT_EQ(j.task("r0000m0")->state, TaskState::kPending);
  runOnce(75);  // the third self-interruption: failed, with a reason that names the cap
  auto t = j.task("r0000m0");
  EXPECT_EQ(t->state, TaskState::kFailed);
  EXPECT_NE(t->reason.find("interrupted 3 times"), std::string::npos) << t->reason;
  EXPECT_NE(t->reason.find("retry.max_interruptions"), std::string::npos) << t->reason;
  EXPECT_EQ(t->failures, 0);
  // `campaign retry --failed` gives the task a fresh count of interruptions and of
  // dispatches (attempts keep counting, so results stay matched to their attempt).
  EXPECT_EQ(j.retry(TaskState::kFailed, "retry requested"), 1);
  EXPECT_EQ(j.task("r0000m0")->attempts, 4);
  EXPECT_EQ(j.task("r0000m0")->attemptsSinceRetry(), 0);
  runOnce(75);
  EXPECT_EQ(j.task("r0000m0")->state, TaskState::kPending);
  EXPECT_EQ(j.task("r0000m0")->attempts, 5);
  EXPECT_EQ(j.task("r0000m0")->attemptsSinceRetry(), 1);
}

// What Slurm's --max-submissions caps: attempts that ended without a result of their own
// (requeued: the job or worker ended first), not the task's own stops (exit 75) or failures,
// counted since the last `campaign retry`.
TEST(Journal, AttemptsLostWithoutAResultAreCountedApartFromStopsAndFailures) {
  std::string dir = makeScratchDir("lost");
  CampaignJournal j = CampaignJournal::create(dir + "/j.sqlite", threeTasks());
  RetryPolicy retry;
  retry.max_attempts = 2;
  auto dispatch = [&] {
    std::vector<Dispatch> ds(1);
    ds[0].index = 0;
    EXPECT_EQ(j.markRunning(ds), 1);
    return ds[0].attempt;
  };
  auto complete = [&](int status, bool counts = true) {
    Completion c = completion(0, dispatch(), status, "x");
    c.counts_as_failure = counts;
    EXPECT_EQ(j.recordCompletions({c}, retry), 1);
  };
  for (int k = 0; k < 4; ++k) complete(75);  // a chain cut by time limits: no loss
  EXPECT_EQ(j.task("r0000m0")->lost_since_retry, 0);
  dispatch();
  EXPECT_EQ(j.requeue({0}, "its Slurm job ended OUT_OF_MEMORY without a result"), 1);
  complete(1);         // a failure: max_attempts counts it
  complete(9, false);  // a worker lost under it
  auto t = j.task("r0000m0");
  EXPECT_EQ(t->lost_since_retry, 2);
  EXPECT_EQ(t->attemptsSinceRetry(), 7);
  EXPECT_EQ(t->state, TaskState::kPending);
  complete(1);  // the second failure: failed
  ASSERT_EQ(j.task("r0000m0")->state, TaskState::kFailed);
  EXPECT_EQ(j.retry(TaskState::kFailed, "retry requested"), 1);
  EXPECT_EQ(j.task("r0000m0")->lost_since_retry, 0);
  dispatch();
  EXPECT_EQ(j.requeue({0}, "lost"), 1);
  EXPECT_EQ(j.task("r0000m0")->lost_since_retry, 1);
  // Attempts not started because the lease was held elsewhere count toward no cap: neither
  // as lost (a Slurm element's requeue, or a worker's report) nor as the task's own stops.
  dispatch();
  const double later = wallClockNow() + 3600;
  EXPECT_EQ(j.requeue({0}, "not started: lease held", kEventLeaseRefused, later), 1);
  EXPECT_GE(j.task("r0000m0")->not_before, later) << "resubmitted after the backoff";
  for (int k = 0; k < 25; ++k) complete(75, false);
  t = j.task("r0000m0");
  EXPECT_EQ(t->lost_since_retry, 1);
  EXPECT_EQ(t->state, TaskState::kPending) << "refusals met max_interruptions (20)";
}

TEST(TaskStates, EveryTransitionOutsideTheTableIsRefused) {
  const TaskState all[] = {TaskState::kPending, TaskState::kRunning,     TaskState::kDone,
                           TaskState::kFailed,  TaskState::kInterrupted, TaskState::kCancelled};
  int allowed = 0;
  for (TaskState from : all)
    for (TaskState to : all) {
      if (transitionAllowed(from, to)) {
        ++allowed;
        EXPECT_NO_THROW(requireTransition(from, to, "r0000m0"));
      } else {
        EXPECT_THROW(requireTransition(from, to, "r0000m0"), Error)
            << toString(from) << " -> " << toString(to);
      }
    }
  EXPECT_EQ(allowed, 12);  // the table in task_state.cpp, counted by hand
  EXPECT_TRUE(transitionAllowed(TaskState::kDone, TaskState::kPending));  // accept-inputs
  EXPECT_FALSE(transitionAllowed(TaskState::kDone, TaskState::kFailed));
  EXPECT_FALSE(transitionAllowed(TaskState::kPending, TaskState::kDone));
}

class CampaignDir : public ::testing::Test {
 protected:
  void SetUp() override {
    registerTestTaskKinds();
    scratch_ = makeScratchDir("campaign");
    json spec{{"name", "slurm-like"},
              {"task", "sleep"},
              {"replicas", 4},
              {"params", {{"seconds", 0.0}}},
              {"resources", {{"cpu_slots", 1}}}};
    dir_ = scratch_ + "/c";
    Campaign::init(parseCampaignSpec(spec, "spec", scratch_), dir_);
  }
  std::string scratch_, dir_;
};

// `campaign status`'s rate is that of the last 100 tasks done: a campaign that paused (a day
// between two runs) is not read as slow, and its ETA is that of the recent throughput.
// A noop campaign of `tasks` tasks in a new scratch directory whose first starts.size() tasks
// are done, task i started starts[i] s after t0 (wallClockNow() - ago) and finished 0.5 s later.
Campaign campaignDoneAt(const std::string& name, int tasks, const std::vector<double>& starts,
                        double ago) {
  registerTestTaskKinds();
  const std::string scratch = makeScratchDir(name);
  const std::string dir = scratch + "/c";
  Campaign::init(parseCampaignSpec(json{{"name", name}, {"task", "noop"}, {"replicas", tasks}},
                                   "spec", scratch),
                 dir);
  Campaign c = Campaign::open(dir);
  std::vector<Dispatch> ds(starts.size());
  for (size_t i = 0; i < starts.size(); ++i) ds[i].index = static_cast<int>(i);
  c.journal().markRunning(ds);
  std::vector<Completion> done;
  const double t0 = wallClockNow() - ago;
  for (size_t i = 0; i < starts.size(); ++i) {
    Completion k = completion(static_cast<int>(i), 1, 0);
    k.started_at = t0 + starts[i];
    k.finished_at = k.started_at + 0.5;
    done.push_back(k);
  }
  c.journal().recordCompletions(done, RetryPolicy{});
  return c;
}

TEST(CampaignStatus, TheRateIsThatOfTheRecentTasks) {
  // 100 tasks 10 s apart, a pause of 10^4 s, then 100 tasks 1 s apart; 100 pending.
  std::vector<double> starts;
  for (int i = 0; i < 200; ++i) starts.push_back(i < 100 ? 10.0 * i : 1e4 + i);
  Campaign c = campaignDoneAt("status_rate", 300, starts, 3e4);
  const json s = statusJson(c);
  EXPECT_NEAR(s["rate_tasks_per_s"].get<double>(), 1.0, 1e-6);
  EXPECT_EQ(s["rate_window_tasks"], 100);
  EXPECT_NEAR(s["eta_s"].get<double>(), 100.0, 1e-3);
  EXPECT_NE(statusText(s).find("rate 1 tasks/s (over the last 100 done), ETA"), std::string::npos)
      << statusText(s);
  // No run holds it, no Slurm job runs a task: the ETA is that of a run started again
  // (before: read as the time left, on a campaign that had crashed).
  // (Here this process holds it: as a run does.)
  EXPECT_EQ(statusText(s).find("once it runs again"), std::string::npos) << statusText(s);
  EXPECT_NE(statusText(s).find("\n  orchestrated by " + hostName() + " pid " +
                               std::to_string(::getpid()) +
                               " (a run, a pilot's rank 0 or a "
                               "`slurm submit` watch)\n"),
            std::string::npos)
      << statusText(s);
  json idle = s;
  idle["orchestrator"] = "";
  EXPECT_NE(statusText(idle).find("ETA 1m40s once it runs again (nothing runs it now)"),
            std::string::npos)
      << statusText(idle);
  EXPECT_EQ(statusText(idle).find("orchestrated by"), std::string::npos) << statusText(idle);
  idle["running"] = json::array({{{"id", "r0201m0"}, {"external_id", "77_3"}}});
  EXPECT_EQ(statusText(idle).find("once it runs again"), std::string::npos) << "a Slurm job runs";
  EXPECT_NE(statusText(idle).find(" (1 of the running in Slurm jobs, queued or running: "
                                  "`foldfarm slurm status " +
                                  s["dir"].get<std::string>() + "` says which)\n"),
            std::string::npos)
      << statusText(idle);
  EXPECT_EQ(statusText(s).find("in Slurm jobs"), std::string::npos) << statusText(s);
}

// Fewer tasks done than the window, in two runs a day apart (a campaign extended, or resumed):
// the pause is not counted as work (before: the rate was 20 tasks over the whole day).
TEST(CampaignStatus, APauseBetweenRunsIsNotReadAsSlowWork) {
  std::vector<double> starts;
  for (int i = 0; i < 20; ++i) starts.push_back(i < 10 ? i : 1e5 + i);
  Campaign c = campaignDoneAt("status_pause", 30, starts, 2e5);
  const json s = statusJson(c);
  // Intervals from the first start: 0.5, nine of 1, the pause (capped at 10 x the median, 1),
  // nine of 1: 28.5 s of work for 20 tasks.
  EXPECT_NEAR(s["rate_tasks_per_s"].get<double>(), 20 / 28.5, 1e-6);
  EXPECT_EQ(s["rate_window_tasks"], 20);
  EXPECT_NEAR(s["eta_s"].get<double>(), 10 / (20 / 28.5), 1e-3);
}

TEST_F(CampaignDir, StandaloneRunsWriteResultsAndNeverTheJournal) {
  std::vector<int> attempts;
  {
    Campaign c = Campaign::open(dir_);
    attempts = c.markSubmitted({"r0000m0", "r0001m0", "r0002m0"}, "4242_0", "node1");
    EXPECT_EQ(attempts, (std::vector<int>{1, 1, 1}));
    EXPECT_EQ(c.journal().task("r0001m0")->external_id, "4242_0");
  }
  struct stat before {};
  ASSERT_EQ(::stat((dir_ + "/journal.sqlite").c_str(), &before), 0);
  int events_before = Campaign::open(dir_, Campaign::Access::kReadOnly).journal().eventCount();

  // An array element with the attempt it was given, and a run by hand (attempt 0).
  TaskResult r0 = runTaskStandalone(dir_, "r0000m0", 1);
  TaskResult r1 = runTaskStandalone(dir_, "r0001m0");
  EXPECT_EQ(r0.status, 0);
  EXPECT_TRUE(exists(dir_ + "/tasks/r0000m0/task_result.json"));
  EXPECT_TRUE(exists(dir_ + "/tasks/r0000m0/task.log"));
  struct stat after {};
  ASSERT_EQ(::stat((dir_ + "/journal.sqlite").c_str(), &after), 0);
  EXPECT_EQ(before.st_size, after.st_size);
  EXPECT_EQ(before.st_mtime, after.st_mtime);
  EXPECT_FALSE(exists(dir_ + "/journal.sqlite-wal") &&
               Campaign::open(dir_, Campaign::Access::kReadOnly).journal().eventCount() !=
                   events_before);

  Campaign c = Campaign::open(dir_);
  EXPECT_EQ(c.ingestResults(), 1);
  EXPECT_EQ(c.ingestResults(), 0) << "a result is ingested once";
  EXPECT_EQ(c.journal().task("r0000m0")->state, TaskState::kDone);
  EXPECT_EQ(c.journal().task("r0000m0")->ingested, 1);
  // A run by hand (attempt 0) is not the attempt the journal records, whatever the clocks
  // say: results are matched by attempt number only.
  EXPECT_EQ(r1.status, 0);
  EXPECT_EQ(c.journal().task("r0001m0")->state, TaskState::kRunning);
  // r0002m0 never produced a result: still running until the submitter requeues it.
  EXPECT_EQ(c.journal().task("r0002m0")->state, TaskState::kRunning);
  EXPECT_EQ(c.requeue({"r0002m0"}, "job 4242_0 ended without a result"), 1);
  EXPECT_EQ(c.journal().task("r0002m0")->state, TaskState::kPending);
}

TEST_F(CampaignDir, StaleResultOfAnEarlierAttemptIsNotIngested) {
  Campaign c = Campaign::open(dir_);
  c.markSubmitted({"r0003m0"}, "1_3");
  runTaskStandalone(dir_, "r0003m0", 1);
  c.requeue({"r0003m0"}, "preempted");
  auto att = c.markSubmitted({"r0003m0"}, "2_3");
  EXPECT_EQ(att[0], 2);
  EXPECT_EQ(c.ingestResults(), 0) << "attempt 1's file must not complete attempt 2";
  runTaskStandalone(dir_, "r0003m0", 2);
  EXPECT_EQ(c.ingestResults(), 1);
}

// A journal write the file system refuses (full, over quota, over the size limit) ends in
// one error that names the journal and gives the system's reason ("disk I/O error" alone
// reads like failing hardware), and `campaign init` leaves no directory behind.
TEST(Journal, AWriteTheSystemRefusesNamesTheReasonAndInitLeavesNothing) {
  registerTestTaskKinds();
  const std::string scratch = makeScratchDir("full");
  json spec{{"name", "big"},
            {"task", "sleep"},
            {"replicas", 20000},
            {"params", {{"seconds", 0.0}}},
            {"resources", {{"cpu_slots", 1}}}};
  const std::string dir = scratch + "/c";
  try {
    foldfarm::testing::FileSizeLimit limit(256 * 1024);
    Campaign::init(parseCampaignSpec(spec, "spec", scratch), dir);
    FAIL() << "a journal grew past the file-size limit";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("journal.sqlite"), std::string::npos) << what;
    EXPECT_NE(what.find("(File too large)"), std::string::npos) << what;
  }
  EXPECT_FALSE(std::filesystem::exists(dir));
  for (const auto& e : std::filesystem::directory_iterator(scratch))
    ADD_FAILURE() << "left behind: " << e.path();
}

// A campaign directory whose name is near NAME_MAX (255 bytes) is made: its staging directory
// takes the name's beginning (before: "<dir>.init.<pid>" was too long, and `campaign init`
// refused a legal name). One byte more is refused with the limit, and leaves nothing.
TEST(Journal, ACampaignDirectoryNameOfUpTo255BytesIsMade) {
  registerTestTaskKinds();
  const std::string scratch = makeScratchDir("long_name");
  const json spec{{"task", "sleep"}, {"replicas", 3}, {"params", {{"seconds", 0.0}}}};
  for (const size_t length : {size_t{250}, size_t{255}}) {
    const std::string dir = scratch + "/" + std::string(length, 'c');
    { Campaign::init(parseCampaignSpec(spec, "spec", scratch), dir); }
    EXPECT_EQ(Campaign::open(dir, Campaign::Access::kReadOnly).spec().numTasks(), 3) << length;
  }
  const std::string too_long = scratch + "/" + std::string(256, 'd');
  try {
    Campaign::init(parseCampaignSpec(spec, "spec", scratch), too_long);
    ADD_FAILURE() << "a name of 256 bytes was made";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("255"), std::string::npos) << e.what();
  }
  size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(scratch)) {
    ++entries;
    const size_t size = e.path().filename().string().size();
    EXPECT_TRUE(size == 250 || size == 255) << "left behind: " << e.path();
  }
  EXPECT_EQ(entries, 2u);
}

// Ctrl-C while `campaign init` makes a large campaign ends with the interrupted exit code and
// nothing made: neither the campaign nor its "<dir>.init.<pid>" staging directory.
TEST(Journal, ASignalDuringInitLeavesNothing) {
  const std::string scratch = makeScratchDir("init_signal");
  const std::string spec = writeSpec(scratch, json{{"task", "noop"}, {"replicas", 400000}});
  const std::string dir = scratch + "/c";
  const pid_t pid = startTool({"init", spec, "--dir", dir}, scratch, "init");
  bool staging = false;
  for (int i = 0; i < 6000 && !staging; ++i) {
    for (const auto& e : std::filesystem::directory_iterator(scratch))
      staging = staging || e.path().filename().string().rfind("c.init.", 0) == 0;
    if (!staging) ::usleep(5000);
  }
  ASSERT_TRUE(staging) << "no staging directory appeared";
  ::kill(pid, SIGINT);
  EXPECT_EQ(waitExit(pid), kExitInterrupted) << readText(scratch + "/init.err");
  EXPECT_NE(readText(scratch + "/init.err").find("nothing was created"), std::string::npos);
  for (const auto& e : std::filesystem::directory_iterator(scratch)) {
    const std::string name = e.path().filename().string();
    EXPECT_TRUE(name == "spec.json" || name.rfind("init.", 0) == 0) << "left behind: " << name;
  }
}

int openDescriptors() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

TEST_F(CampaignDir, OneWriterAtATime) {
  std::optional<Campaign> writer;
  writer.emplace(Campaign::open(dir_));
  const int fds = openDescriptors();
  try {
    Campaign::open(dir_);
    ADD_FAILURE() << "a second writer opened the campaign";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another foldfarm process is orchestrating this "
                                         "campaign (" +
                                         hostName() + " pid " + std::to_string(::getpid()) + "; "),
              std::string::npos)
        << "the holder named: " << e.what();
  }
  EXPECT_EQ(openDescriptors(), fds) << "a refused writer leaves no descriptor open";
  EXPECT_NO_THROW(Campaign::open(dir_, Campaign::Access::kReadOnly));
  // The lock moves with the campaign and is released when its last owner goes.
  Campaign moved = std::move(*writer);
  writer.reset();
  EXPECT_THROW(Campaign::open(dir_), Error);
  { Campaign gone = std::move(moved); }
  EXPECT_NO_THROW(Campaign::open(dir_));
}

// A journal path that SQLite cannot take with its side files (its "-journal" name 8 bytes
// more than the path, 512 at most) is said as too long, with the limit that holds (before:
// paths of 505 to 508 bytes got "check the campaign directory and its permissions").
TEST(SqliteDb, AJournalPathTooLongForItsSideFilesIsSaidSo) {
  namespace fs = std::filesystem;
  const fs::path base =
      fs::canonical(fs::temp_directory_path()) / ("ff_long_journal_" + std::to_string(::getpid()));
  fs::remove_all(base);
  // Directories of 50 bytes, then one that brings the file's absolute path to `length`.
  const auto pathOf = [&](size_t length) {
    std::string dir = base.string();
    const std::string file = "/journal.sqlite";
    while (dir.size() + 51 + 20 + file.size() < length) dir += "/" + std::string(50, 'd');
    dir += "/" + std::string(length - dir.size() - 1 - file.size(), 'e');
    fs::create_directories(dir);
    return dir + file;
  };
  const std::string fits = pathOf(504);
  ASSERT_EQ(fits.size(), 504u);
  EXPECT_NO_THROW(SqliteDb(fits, SqliteDb::Mode::kCreate).exec("CREATE TABLE t (x)"));
  for (const size_t length : {505, 506, 508}) {
    const std::string path = pathOf(length);
    ASSERT_EQ(path.size(), length);
    try {
      SqliteDb db(path, SqliteDb::Mode::kCreate);
      db.exec("CREATE TABLE t (x)");
      ADD_FAILURE() << length << " bytes opened";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("its absolute path is " + std::to_string(length) +
                                           " bytes; SQLite takes at most 504 here"),
                std::string::npos)
          << e.what();
    }
  }
  fs::remove_all(base);
}

}  // namespace
}  // namespace foldfarm::jobs
