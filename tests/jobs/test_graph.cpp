// The task graph: a variation's task runs only after the nominal task it needs is done; a
// failed need holds exactly its dependents (shown by status) until it is retried; a killed
// orchestrator's resume completes the graph with every task done once.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>

#include "core/base/error.hpp"
#include "jobs/campaign.hpp"
#include "jobs/sqlite_db.hpp"
#include "jobs/task_graph.hpp"
#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"
#include "tests/jobs/tool_campaign_test.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;
using namespace foldfarm::jobs::testing;

class Graph : public ToolCampaignTest {
 protected:
  Graph() : ToolCampaignTest("graph") {}
  // Per task id: when each attempt started (pending -> running) and when it became done.
  struct Times {
    std::vector<double> started;
    double done = -1;
    int done_events = 0;
  };
  std::map<std::string, Times> times() {
    std::map<std::string, Times> out;
    SqliteDb db(dir_ + "/journal.sqlite", false);
    SqliteStatement st(db,
                       "SELECT t.id, e.from_state, e.to_state, e.at FROM events e JOIN tasks t "
                       "ON t.idx=e.task_idx ORDER BY e.seq");
    while (st.step()) {
      Times& t = out[st.columnText(0)];
      const std::string from = st.columnIsNull(1) ? "" : st.columnText(1), to = st.columnText(2);
      if (from == "pending" && to == "running") t.started.push_back(st.columnDouble(3));
      if (to == "done") {
        t.done = st.columnDouble(3);
        ++t.done_events;
      }
    }
    return out;
  }
  // Every attempt of every task that needs another started after that one was done.
  void expectOrder() {
    Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
    const TaskGraph g = c.journal().graph();
    auto t = times();
    int edges = 0;
    for (int i = 0; i < c.spec().numTasks(); ++i) {
      const std::string id = c.spec().taskPosition(i).id;
      for (int n : g.needs(i)) {
        const std::string need = c.spec().taskPosition(n).id;
        ++edges;
        ASSERT_GE(t[need].done, 0) << need;
        for (double s : t[id].started)
          EXPECT_GE(s, t[need].done) << id << " started before " << need;
      }
    }
    EXPECT_EQ(static_cast<size_t>(edges), g.edges());
  }
};

TEST_F(Graph, VariationTasksRunOnlyAfterTheNominalTaskTheyNeed) {
  init(json{{"task", "sleep"},
            {"replicas", 4},
            {"members", 2},
            {"params", {{"seconds", 0.05}}},
            {"variations",
             {{"v", {{"replicas", 4}, {"params", {{"seconds", 0.01}}}}},
              {"more", {{"replicas", 6}, {"members", 1}}},
              {"free", {{"replicas", 4}, {"warm_start", false}}}}},
            {"resources", {{"cpu_slots", 2}}}});
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.spec().numTasks(), 8 + 8 + 6 + 8);
    EXPECT_EQ(c.journal().graph().edges(), 8u + 4u) << "v: 8; more: replicas 0-3 of member 0";
  }
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expectOrder();
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], 30);
  ToolRun st = runTool({"status", dir_}, scratch_, "status");
  EXPECT_NE(st.out.find("task graph: 12 dependencies"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("v: 8 task(s): done 8; each after nominal"), std::string::npos) << st.out;
}

TEST_F(Graph, AFailedNominalTaskHoldsExactlyItsDependentsUntilItIsRetried) {
  const std::string flag = scratch_ + "/fixed";
  init(json{{"task", "command"},
            {"replicas", 3},
            {"params", {{"argv", {"/bin/sh", "-c", "exit 0"}}}},
            {"overrides", {{"r0001m0", {{"argv", {"/bin/sh", "-c", "test -f " + flag}}}}}},
            {"variations", {{"up", {{"replicas", 3}}}, {"down", {{"replicas", 3}}}}},
            {"retry", {{"max_attempts", 1}}},
            {"resources", {{"cpu_slots", 2}}}});
  ToolRun r = runTool({"run", dir_}, scratch_, "run");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("held by failed dependencies"), std::string::npos) << r.err;
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
    for (const auto& t : c.tasks()) {
      const bool needs_failed = t.id == "up.r0001m0" || t.id == "down.r0001m0";
      const TaskState want = t.id == "r0001m0"
                                 ? TaskState::kFailed
                                 : (needs_failed ? TaskState::kPending : TaskState::kDone);
      EXPECT_EQ(t.state, want) << t.id;
      if (needs_failed) {
        EXPECT_EQ(t.attempts, 0) << t.id << " never ran";
      }
    }
  }
  ToolRun st = runTool({"status", dir_, "--json"}, scratch_, "status");
  ASSERT_EQ(st.exit_code, 0) << st.err;
  json s = json::parse(st.out);
  ASSERT_EQ(s["held"].size(), 2u) << s.dump(2);
  for (const auto& h : s["held"]) {
    EXPECT_EQ(h["needs"], "r0001m0");
    EXPECT_EQ(h["reason"], "needs r0001m0, which failed");
  }
  EXPECT_EQ(s["graph"]["held"], 2);
  EXPECT_EQ(s["graph"]["ready"], 0);
  ToolRun text = runTool({"status", dir_}, scratch_, "status-text");
  EXPECT_NE(text.out.find("up.r0001m0: needs r0001m0, which failed"), std::string::npos)
      << text.out;

  // Fixed and retried: the held tasks run after it.
  writeText(flag, "");
  ASSERT_EQ(runTool({"retry", dir_, "--failed"}, scratch_, "retry").exit_code, 0);
  ToolRun again = runTool({"resume", dir_}, scratch_, "resume");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], 9);
  expectOrder();
}

// A nominal task run again by name (`retry --task`: its outputs damaged or lost): the variation
// tasks warm-started from its models ran from the outputs replaced, and run again after it;
// the others (its replicas, a cold variation) stay done.
TEST_F(Graph, ATaskRetriedByNameTakesTheTasksWarmStartedFromItAlong) {
  init(json{{"task", "sleep"},
            {"replicas", 3},
            {"params", {{"seconds", 0.01}}},
            {"variations",
             {{"v", {{"replicas", 3}}}, {"free", {{"replicas", 3}, {"warm_start", false}}}}},
            {"resources", {{"cpu_slots", 2}}}});
  ASSERT_EQ(runTool({"run", dir_}, scratch_, "run").exit_code, 0);
  ToolRun r = runTool({"retry", dir_, "--task", "r0001m0"}, scratch_, "retry");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2 task(s) run again (r0001m0; and 1 warm-started from them: v.r0001m0)"),
            std::string::npos)
      << r.out;
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  EXPECT_EQ(c.counts()[TaskState::kDone], 9);
  auto t = times();
  for (const auto& [id, times_of] : t)
    EXPECT_EQ(times_of.done_events, id == "r0001m0" || id == "v.r0001m0" ? 2 : 1) << id;
  ASSERT_EQ(t["v.r0001m0"].started.size(), 2u);
  EXPECT_GE(t["v.r0001m0"].started.back(), t["r0001m0"].done) << "ran again after its need";
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/tasks/v.r0001m0/task_result.json"));
}

TEST_F(Graph, KillMinus9OfTheOrchestratorThenResumeCompletesTheGraphOnce) {
  init(json{{"task", "sleep"},
            {"replicas", 60},
            {"members", 2},
            {"params", {{"seconds", 0.01}}},
            {"variations", {{"v", {{"replicas", 60}}}, {"w", {{"replicas", 30}}}}},
            {"resources", {{"cpu_slots", 2}}}});
  std::random_device rd;
  const unsigned seed = rd();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> when_ms(50, 900);
  SCOPED_TRACE("kill schedule seed " + std::to_string(seed));
  for (int round = 0; round < 3; ++round) {
    pid_t orch = startTool({"resume", dir_}, scratch_, "run" + std::to_string(round));
    std::this_thread::sleep_for(std::chrono::milliseconds(when_ms(rng)));
    ::kill(orch, SIGKILL);
    waitExit(orch);
  }
  ToolRun r = runTool({"resume", dir_}, scratch_, "final");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
  const int total = 120 + 120 + 60;
  EXPECT_EQ(c.counts()[TaskState::kDone], total);
  for (const auto& [id, t] : times()) EXPECT_EQ(t.done_events, 1) << id << " done exactly once";
  for (const auto& t : c.tasks()) EXPECT_EQ(t.ingested, 1) << t.id;
  int mismatched = 0;
  EXPECT_EQ(countResultFiles(dir_ + "/tasks", mismatched), total);
  EXPECT_EQ(mismatched, 0);
  expectOrder();
}

TEST(TaskGraphUnit, ReadyWaitingAndHeldFollowTheStatesOfWhatATaskNeeds) {
  // 0 <- 2 <- 3, 1 <- 3
  TaskGraph g(4, {{2, 0}, {3, 2}, {3, 1}});
  // What a rerun of 0 makes stale: 2 directly, 3 through 2; 1 not.
  std::vector<char> marked = {1, 0, 0, 0};
  EXPECT_EQ(g.markDependents(marked), (std::vector<int>{2, 3}));
  EXPECT_EQ(marked, (std::vector<char>{1, 0, 1, 1}));
  using S = TaskState;
  std::vector<S> st = {S::kRunning, S::kDone, S::kPending, S::kPending};
  EXPECT_FALSE(g.ready(2, st));
  auto b = g.blocked(3, st);
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->held);
  st[0] = S::kFailed;
  b = g.blocked(3, st);
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->held) << "held through 2, whose need failed";
  EXPECT_EQ(b->culprit, 0);
  st[0] = S::kDone;
  st[2] = S::kDone;
  EXPECT_TRUE(g.ready(3, st));
  EXPECT_FALSE(g.blocked(3, st));
  EXPECT_THROW(TaskGraph(2, {{0, 1}}), Error) << "a task may need only earlier tasks";
}

}  // namespace
}  // namespace foldfarm::jobs
