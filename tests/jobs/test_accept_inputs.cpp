// `campaign accept-inputs` through the real command-line tool: after an input file is
// replaced, exactly the tasks that read it (and those that need them) run again, their old
// outputs kept under D/superseded/; a changed file is read and checked, the unchanged ones
// are not; a file that fails its check, a task still in a Slurm job or a lease still held
// change nothing; a crash between the journal and spec.json is finished by running the
// command again.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/base/error.hpp"
#include "core/base/exit_codes.hpp"
#include "jobs/campaign.hpp"
#include "jobs/task_lease.hpp"
#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"
#include "tests/jobs/tool_campaign_test.hpp"

namespace foldfarm::jobs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace foldfarm::jobs::testing;

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

class AcceptInputs : public ToolCampaignTest {
 protected:
  AcceptInputs() : ToolCampaignTest("accept") {}

  // Nominal r0000m0, r0001m0 read mc and data; det_up.r000Xm0 read mc_up and data and need
  // the nominal task of their replica; boot.r0000m0 reads mc and data and needs none.
  void SetUp() override {
    ToolCampaignTest::SetUp();
    mc_ = scratch_ + "/mc.txt";
    mc_up_ = scratch_ + "/mc_up.txt";
    data_ = scratch_ + "/data.txt";
    truth_ = scratch_ + "/truth.txt";
    writeText(mc_, "mc v1");
    writeText(mc_up_, "mc_up v1");
    writeText(data_, "data v1");
    writeText(truth_, "truth v1");
    init(json{{"task", "reads"},
              {"replicas", 2},
              {"inputs", {{"mc", mc_}, {"data", data_}, {"truth", truth_}}},
              {"variations",
               {{"det_up", {{"replicas", 2}, {"inputs", {{"mc", mc_up_}}}}},
                {"boot", {{"replicas", 1}, {"warm_start", false}}}}},
              {"resources", {{"cpu_slots", 2}}}});
    const ToolRun r = runTool({"run", dir_}, scratch_, "first-run");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  std::map<std::string, TaskRecord> tasks() {
    Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
    std::map<std::string, TaskRecord> byId;
    for (TaskRecord& t : c.tasks()) byId[t.id] = t;
    return byId;
  }

  std::string mc_, mc_up_, data_, truth_;
};

TEST_F(AcceptInputs, RunsAgainOnlyTheTasksThatReadAChangedInputAndKeepsTheirOldOutputs) {
  writeText(mc_up_, "mc_up v2 (regenerated)");
  const std::string spec_before = readText(dir_ + "/spec.json");
  ToolRun refused = runTool({"run", dir_}, scratch_, "refused");
  EXPECT_EQ(refused.exit_code, kExitBadInput);
  EXPECT_NE(refused.err.find("`foldfarm campaign accept-inputs`"), std::string::npos)
      << refused.err;

  ToolRun status = runTool({"status", dir_}, scratch_, "status-changed");
  EXPECT_NE(status.out.find("`foldfarm campaign accept-inputs " + dir_ + "`"), std::string::npos)
      << status.out;

  // --dry-run: the plan, nothing changed.
  ToolRun dry = runTool({"accept-inputs", dir_, "--dry-run", "--json"}, scratch_, "dry");
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  const json plan = json::parse(dry.out);
  ASSERT_EQ(plan.at("changed").size(), 1u) << dry.out;
  EXPECT_EQ(plan["changed"][0].at("path"), mc_up_);
  EXPECT_EQ(plan["changed"][0].at("tasks"), 2);
  EXPECT_EQ(plan.at("restored"), json::array()) << dry.out;
  EXPECT_EQ(plan.at("rerun"), json::array({"det_up.r0000m0", "det_up.r0001m0"})) << dry.out;
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  EXPECT_FALSE(fs::exists(dir_ + "/superseded"));
  for (const auto& [id, t] : tasks()) EXPECT_EQ(t.state, TaskState::kDone) << id;

  const std::string values_log = scratch_ + "/values.log";
  {
    ScopedEnv log("FF_TEST_VALUES_LOG", values_log);
    ToolRun accepted = runTool({"accept-inputs", dir_}, scratch_, "accept");
    ASSERT_EQ(accepted.exit_code, 0) << accepted.err;
    EXPECT_NE(accepted.out.find("input " + mc_up_ + " changed since `campaign init`"),
              std::string::npos)
        << accepted.out;
    EXPECT_NE(accepted.out.find("2 task(s) run again (2 done)"), std::string::npos) << accepted.out;
  }
  // Only the changed file was read again.
  EXPECT_EQ(lines(readText(values_log)), std::vector<std::string>{mc_up_});
  // The old outputs are kept; the task directories hold only the next attempt's number.
  ASSERT_EQ(entries(dir_ + "/superseded"), 1);
  const std::string aside = fs::directory_iterator(dir_ + "/superseded")->path().string();
  EXPECT_EQ(readText(aside + "/spec.json"), spec_before);
  for (const char* id : {"det_up.r0000m0", "det_up.r0001m0"}) {
    const auto old = readTaskResult(aside + "/tasks/" + id + "/" + kTaskResultFile);
    ASSERT_TRUE(old.has_value()) << id;
    EXPECT_EQ(old->result.at("read").at("mc"), "mc_up v1");
    EXPECT_EQ(entries(dir_ + "/tasks/" + id), 1) << id;
    EXPECT_EQ(newestAttempt(dir_ + "/tasks/" + id), 2) << id;
  }
  auto before = tasks();
  EXPECT_EQ(before["det_up.r0000m0"].state, TaskState::kPending);
  EXPECT_TRUE(before["det_up.r0000m0"].result.is_null());
  EXPECT_EQ(before["r0000m0"].state, TaskState::kDone);
  EXPECT_EQ(before["boot.r0000m0"].state, TaskState::kDone);

  ToolRun rerun = runTool({"run", dir_}, scratch_, "rerun");
  ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
  for (const auto& [id, t] : tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << id;
    const bool up = id.rfind("det_up.", 0) == 0;
    EXPECT_EQ(t.attempts, up ? 2 : 1) << id;
    EXPECT_EQ(t.result.at("read").at("mc"), up ? "mc_up v2 (regenerated)" : "mc v1") << id;
  }
  ToolRun st = runTool({"status", dir_, "--json"}, scratch_, "status");
  EXPECT_EQ(json::parse(st.out).at("inputs_changed"), "") << st.out;

  // The truth alone: no task runs again.
  writeText(truth_, "truth v2");
  ToolRun truth = runTool({"accept-inputs", dir_, "--json"}, scratch_, "truth");
  ASSERT_EQ(truth.exit_code, 0) << truth.err;
  EXPECT_EQ(json::parse(truth.out).at("rerun"), json::array()) << truth.out;
  EXPECT_EQ(json::parse(truth.out).at("changed")[0].at("tasks"), 0) << truth.out;
  ToolRun nothing = runTool({"run", dir_}, scratch_, "nothing");
  ASSERT_EQ(nothing.exit_code, 0) << nothing.err;
  for (const auto& [id, t] : tasks())
    EXPECT_EQ(t.attempts, id.rfind("det_up.", 0) == 0 ? 2 : 1) << id;

  // The nominal simulation: its tasks, the bootstrap that reads it and the variation's tasks
  // that start from the nominal ones.
  writeText(mc_, "mc v2");
  ToolRun nominal = runTool({"accept-inputs", dir_, "--json"}, scratch_, "nominal");
  ASSERT_EQ(nominal.exit_code, 0) << nominal.err;
  const json n = json::parse(nominal.out);
  EXPECT_EQ(n.at("rerun"),
            json::array({"r0000m0", "r0001m0", "boot.r0000m0", "det_up.r0000m0", "det_up.r0001m0"}))
      << nominal.out;
  EXPECT_EQ(n.at("needed_only"), 2);
  ToolRun all = runTool({"run", dir_}, scratch_, "all");
  ASSERT_EQ(all.exit_code, 0) << all.err;
  for (const auto& [id, t] : tasks()) {
    EXPECT_EQ(t.attempts, id.rfind("det_up.", 0) == 0 ? 3 : 2) << id;
    if (id.rfind("det_up.", 0) != 0) {
      EXPECT_EQ(t.result.at("read").at("mc"), "mc v2") << id;
    }
  }
}

// A changed file that fails the check `campaign init` makes is refused, and nothing is
// changed; the same bytes copied again get their time back and run nothing again.
// `retry --task` checks the inputs before it moves anything (before: the task went back to
// pending and the aggregation aside, then the run exited 2, "nothing was written"); a missing
// input of a campaign is named with what mends it (before: "fix the path or create it", and a
// new file is refused as changed). `status --tasks` lists the ids `retry --task` takes.
TEST_F(AcceptInputs, ARetryOfATaskWithAChangedOrMissingInputChangesNothing) {
  fs::create_directories(dir_ + "/aggregate");
  writeText(dir_ + "/aggregate/summary.json", "{}");
  const auto unchanged = [&](const std::string& what) {
    for (const auto& [id, t] : tasks()) {
      EXPECT_EQ(t.state, TaskState::kDone) << what << ": " << id;
      EXPECT_EQ(t.attempts, 1) << what << ": " << id;
    }
    EXPECT_FALSE(fs::exists(dir_ + "/superseded")) << what;
    EXPECT_TRUE(fs::exists(dir_ + "/aggregate/summary.json")) << what;
  };
  writeText(data_, "data v2");
  ToolRun changed = runTool({"retry", dir_, "--task", "r0000m0"}, scratch_, "retry-changed");
  EXPECT_EQ(changed.exit_code, kExitBadInput) << changed.err;
  EXPECT_NE(changed.err.find("`foldfarm campaign accept-inputs`"), std::string::npos)
      << changed.err;
  unchanged("changed input");

  fs::remove(data_);
  ToolRun missing = runTool({"retry", dir_, "--task", "r0000m0"}, scratch_, "retry-missing");
  EXPECT_EQ(missing.exit_code, kExitBadInput) << missing.err;
  EXPECT_NE(missing.err.find(data_ + " does not exist; it was there at `campaign init`: "),
            std::string::npos)
      << missing.err;
  EXPECT_NE(missing.err.find("`foldfarm campaign accept-inputs`"), std::string::npos)
      << missing.err;
  unchanged("missing input");
  ToolRun resumed = runTool({"resume", dir_}, scratch_, "resume-missing");
  EXPECT_EQ(resumed.exit_code, kExitBadInput);
  EXPECT_NE(resumed.err.find("it was there at `campaign init`"), std::string::npos) << resumed.err;

  ToolRun unknown = runTool({"retry", dir_, "--task", "r0009m0"}, scratch_, "retry-unknown");
  EXPECT_EQ(unknown.exit_code, kExitBadInput);
  EXPECT_NE(unknown.err.find("has no task 'r0009m0' (its tasks: r0000m0 to r0001m0"),
            std::string::npos)
      << unknown.err;
  EXPECT_NE(unknown.err.find("status " + dir_ + " --tasks` lists them"), std::string::npos)
      << unknown.err;

  ToolRun listed = runTool({"status", dir_, "--tasks", "--json"}, scratch_, "status-tasks");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const json list = json::parse(listed.out).at("tasks");
  std::vector<std::string> ids;
  for (const json& t : list) ids.push_back(t.at("task"));
  EXPECT_EQ(ids, (std::vector<std::string>{"r0000m0", "r0001m0", "boot.r0000m0", "det_up.r0000m0",
                                           "det_up.r0001m0"}));
  EXPECT_EQ(list[3].at("group"), "det_up");
  EXPECT_EQ(list[0].at("group"), "nominal");
  EXPECT_EQ(list[0].at("state"), "done");
  EXPECT_EQ(list[0].at("attempts"), 1);
  EXPECT_EQ(list[0].at("exit_code"), 0);
  ToolRun text = runTool({"status", dir_, "--tasks"}, scratch_, "status-tasks-text");
  EXPECT_NE(text.out.find("det_up.r0001m0  done"), std::string::npos) << text.out;
}

TEST_F(AcceptInputs, AChangedFileThatFailsItsCheckChangesNothing) {
  writeText(mc_, "mc v2 with a NaN");
  const std::string spec_before = readText(dir_ + "/spec.json");
  ToolRun refused = runTool({"accept-inputs", dir_}, scratch_, "nan");
  EXPECT_EQ(refused.exit_code, kExitBadInput);
  EXPECT_EQ(countLines(refused.err), 1) << refused.err;
  EXPECT_NE(refused.err.find(mc_ + ": row 0 holds NaN"), std::string::npos) << refused.err;
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  EXPECT_FALSE(fs::exists(dir_ + "/superseded"));
  for (const auto& [id, t] : tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << id;
    EXPECT_TRUE(fs::exists(dir_ + "/tasks/" + id + "/" + kTaskResultFile)) << id;
  }

  writeText(mc_, "mc v1");  // copied again: the recorded bytes, a later time
  const auto mtime_copied = fs::last_write_time(mc_);
  // The dry run reads the bytes: it says the time would be restored and nothing would run again
  // (before: it counted the file as changed and its tasks as run again), and sets no time.
  ToolRun dry = runTool({"accept-inputs", dir_, "--dry-run"}, scratch_, "same-dry");
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("input " + mc_ +
                         " holds the bytes read at `campaign init`: its recorded time would be "
                         "restored, nothing run again for it"),
            std::string::npos)
      << dry.out;
  EXPECT_NE(dry.out.find("every input is as recorded; nothing to accept"), std::string::npos)
      << dry.out;
  EXPECT_EQ(dry.out.find("run again ("), std::string::npos) << dry.out;
  EXPECT_EQ(dry.out.find("campaign repair"), std::string::npos) << dry.out;
  EXPECT_EQ(fs::last_write_time(mc_), mtime_copied) << "a dry run set a time";
  const json dry_json = json::parse(
      runTool({"accept-inputs", dir_, "--dry-run", "--json"}, scratch_, "same-dry-j").out);
  EXPECT_EQ(dry_json.at("restored"), json::array({mc_}));
  EXPECT_EQ(dry_json.at("changed"), json::array());
  ToolRun same = runTool({"accept-inputs", dir_}, scratch_, "same");
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_NE(same.out.find("input " + mc_ + " holds the bytes read at `campaign init`"),
            std::string::npos)
      << same.out;
  EXPECT_NE(same.out.find("every input is as recorded; nothing to accept"), std::string::npos)
      << same.out;
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  ToolRun run = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  for (const auto& [id, t] : tasks()) EXPECT_EQ(t.attempts, 1) << id;
}

// A task to run again that a Slurm job still runs, or whose lease a process still holds,
// stops the command before it changes anything; a task left running by an orchestrator that
// died is requeued and runs again.
TEST_F(AcceptInputs, ATaskStillRunningElsewhereChangesNothing) {
  writeText(mc_up_, "mc_up v2");
  const std::string spec_before = readText(dir_ + "/spec.json");
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kWriter);
    // det_up.r0001m0 retried, now in a Slurm job (the journal's state for a submitted task).
    c.journal().rerun({c.spec().indexOf("det_up.r0001m0")}, "test");
    ASSERT_EQ(c.markSubmitted({"det_up.r0001m0"}, "4242_1")[0], 2);
  }
  ToolRun slurm = runTool({"accept-inputs", dir_}, scratch_, "slurm");
  EXPECT_EQ(slurm.exit_code, kExitBadInput);
  EXPECT_NE(slurm.err.find("task det_up.r0001m0, which runs again with the new inputs, is "
                           "running in Slurm job 4242_1"),
            std::string::npos)
      << slurm.err;
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  EXPECT_FALSE(fs::exists(dir_ + "/superseded"));
  EXPECT_EQ(tasks()["det_up.r0000m0"].state, TaskState::kDone);

  // The job ended without a result; a process of an earlier attempt still holds a lease.
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kWriter);
    ASSERT_EQ(c.requeue({"det_up.r0001m0"}, "job ended"), 1);
  }
  {
    TaskLease held = TaskLease::acquire(dir_ + "/tasks/det_up.r0000m0", "det_up.r0000m0", 0);
    ToolRun leased = runTool({"accept-inputs", dir_}, scratch_, "leased");
    EXPECT_EQ(leased.exit_code, kExitBadInput);
    EXPECT_NE(leased.err.find("task det_up.r0000m0, which runs again with the new inputs, is "
                              "still held by"),
              std::string::npos)
        << leased.err;
    EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
    EXPECT_FALSE(fs::exists(dir_ + "/superseded"));
  }

  // An aggregation reading the outputs (their lock held here, as `campaign aggregate` holds
  // it): no output is moved under it, no task made pending.
  fs::create_directories(dir_ + "/aggregate");
  writeText(dir_ + "/aggregate/summary.json", "{}");
  {
    const Fd held = lockCampaignOutputs(dir_, "`foldfarm campaign aggregate`");
    ToolRun aggregating = runTool({"accept-inputs", dir_}, scratch_, "aggregating");
    EXPECT_EQ(aggregating.exit_code, kExitBadInput);
    EXPECT_EQ(countLines(aggregating.err), 1) << aggregating.err;
    EXPECT_NE(aggregating.err.find(dir_ + ": `foldfarm campaign aggregate` (pid " +
                                   std::to_string(::getpid()) + " on " + hostName() +
                                   ") is using this campaign's outputs"),
              std::string::npos)
        << aggregating.err;
    EXPECT_NE(aggregating.err.find("then run `foldfarm campaign accept-inputs` again (it changed "
                                   "nothing)"),
              std::string::npos)
        << aggregating.err;
    EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
    EXPECT_FALSE(fs::exists(dir_ + "/superseded"));
    EXPECT_TRUE(fs::exists(dir_ + "/aggregate/summary.json"));
    EXPECT_EQ(tasks()["det_up.r0000m0"].state, TaskState::kDone);
  }

  // An orchestrator that died with det_up.r0000m0 running left its row running.
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kWriter);
    c.journal().rerun({c.spec().indexOf("det_up.r0000m0")}, "test");
    std::vector<Dispatch> d{{c.spec().indexOf("det_up.r0000m0"), "host", 0, "", 0}};
    ASSERT_EQ(c.journal().markRunning(d), 1);
  }
  ToolRun accepted = runTool({"accept-inputs", dir_}, scratch_, "accepted");
  ASSERT_EQ(accepted.exit_code, 0) << accepted.err;
  EXPECT_NE(accepted.out.find("2 task(s) run again (1 pending, 1 left running by an orchestrator "
                              "that ended)"),
            std::string::npos)
      << accepted.out;
  EXPECT_EQ(tasks()["det_up.r0000m0"].state, TaskState::kPending) << "requeued";
  ToolRun run = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  for (const auto& [id, t] : tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << id;
    if (id.rfind("det_up.", 0) == 0) {
      EXPECT_EQ(t.result.at("read").at("mc"), "mc_up v2") << id;
    }
  }
}

// Killed after the journal moved the tasks back (its commit point), before spec.json holds the
// new records: commands that read see the accepted campaign; the first that writes (here `run`)
// finishes the change and runs the tasks on the new file. (Before, a run was refused until
// `accept-inputs` was run again.)
TEST_F(AcceptInputs, ACrashAfterTheCommitIsFinishedByTheNextCommandThatWrites) {
  writeText(mc_up_, "mc_up v2");
  const std::string spec_before = readText(dir_ + "/spec.json");
  {
    ScopedEnv fault("FOLDFARM_FAULT", "accept.journal");
    ToolRun killed = runTool({"accept-inputs", dir_}, scratch_, "killed");
    EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.err;
  }
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  EXPECT_EQ(tasks()["det_up.r0000m0"].state, TaskState::kPending);
  EXPECT_EQ(entries(dir_ + "/superseded"), 1) << "the directories moved once";
  ToolRun run = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("finished an interrupted `campaign extend` or `accept-inputs`"),
            std::string::npos)
      << run.err;
  EXPECT_NE(readText(dir_ + "/spec.json"), spec_before);
  for (const auto& [id, t] : tasks()) {
    EXPECT_EQ(t.state, TaskState::kDone) << id;
    EXPECT_EQ(t.attempts, id.rfind("det_up.", 0) == 0 ? 2 : 1) << id;
    if (id.rfind("det_up.", 0) == 0) {
      EXPECT_EQ(t.result.at("read").at("mc"), "mc_up v2") << id;
    }
  }
  ToolRun again = runTool({"accept-inputs", dir_, "--json"}, scratch_, "again");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(json::parse(again.out).at("rerun"), json::array()) << again.out;
  EXPECT_EQ(entries(dir_ + "/superseded"), 1);
}

}  // namespace
}  // namespace foldfarm::jobs
