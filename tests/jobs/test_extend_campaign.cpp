// `campaign extend` through the real command-line tool: the tasks done stay done (results,
// attempts, history), only the new ones run, and the extended campaign equals one made with
// the larger counts from the start (its spec, every task's definition and result, its task
// graph); anything but more tasks is refused without a change; a crash between the journal
// and spec.json is finished by the next command; the journal renumbers rows, events and
// edges and keeps a task running in a Slurm job ingestible.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "core/base/error.hpp"
#include "core/base/exit_codes.hpp"
#include "core/base/file_stat.hpp"
#include "jobs/campaign.hpp"
#include "jobs/sqlite_db.hpp"
#include "tests/jobs/test_kinds.hpp"
#include "tests/jobs/test_util.hpp"
#include "tests/jobs/tool_campaign_test.hpp"

namespace foldfarm::jobs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace foldfarm::jobs::testing;

std::map<std::string, TaskRecord> tasksOf(const std::string& dir) {
  Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
  std::map<std::string, TaskRecord> byId;
  for (TaskRecord& t : c.tasks()) byId[t.id] = t;
  return byId;
}

// Each task's recorded transitions, by id: "<attempt> <from>-><to> <reason>".
std::map<std::string, std::vector<std::string>> eventsOf(const std::string& dir) {
  Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
  std::map<int, std::string> ids;
  for (const TaskRecord& t : c.tasks()) ids[t.index] = t.id;
  std::map<std::string, std::vector<std::string>> out;
  c.journal().forEachEvent([&](const CampaignJournal::Event& e) {
    out[ids.at(e.task)].push_back(std::to_string(e.attempt) + " " +
                                  (e.from ? std::string(toString(*e.from)) : "") + "->" +
                                  std::string(toString(e.to)) + " " + e.reason);
  });
  return out;
}

// The task graph by ids: task -> the tasks it needs.
std::map<std::string, std::set<std::string>> needsOf(const std::string& dir) {
  Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
  std::map<int, std::string> ids;
  for (const TaskRecord& t : c.tasks()) ids[t.index] = t.id;
  const TaskGraph g = c.journal().graph();
  std::map<std::string, std::set<std::string>> out;
  for (const auto& [index, id] : ids) {
    out[id];
    if (!g.empty())
      for (int n : g.needs(index)) out[id].insert(ids.at(n));
  }
  return out;
}

class ExtendCampaign : public ToolCampaignTest {
 protected:
  ExtendCampaign() : ToolCampaignTest("extend") {}

  // Nominal r0000m0 to r0002m0; det_up.r0000m0 and r0001m0 warm-started from the nominal
  // tasks of their replica (so those keep their models); boot.r0000m0 on its own.
  json baseSpec() const {
    return json{{"task", "reads"},
                {"replicas", 3},
                {"seed", 77},
                {"inputs", {{"mc", mc_}, {"data", data_}, {"truth", truth_}}},
                {"variations",
                 {{"det_up", {{"replicas", 2}, {"inputs", {{"mc", mc_up_}}}}},
                  {"boot", {{"replicas", 1}, {"warm_start", false}}}}},
                {"resources", {{"cpu_slots", 2}}}};
  }
  // 4 replicas x 2 members; the variations take the nominal members (det_up and boot grow);
  // a new variation "alt", whose name sorts first, on its own simulation.
  json extendedSpec() const {
    json j = baseSpec();
    j["replicas"] = 4;
    j["members"] = 2;
    j["variations"]["alt"] = {{"replicas", 1}, {"inputs", {{"mc", mc_alt_}}}};
    return j;
  }

  void SetUp() override {
    ToolCampaignTest::SetUp();
    mc_ = scratch_ + "/mc.txt";
    mc_up_ = scratch_ + "/mc_up.txt";
    mc_alt_ = scratch_ + "/mc_alt.txt";
    data_ = scratch_ + "/data.txt";
    truth_ = scratch_ + "/truth.txt";
    writeText(mc_, "mc v1");
    writeText(mc_up_, "mc_up v1");
    writeText(mc_alt_, "mc_alt v1");
    writeText(data_, "data v1");
    writeText(truth_, "truth v1");
    init(baseSpec());
    const ToolRun r = runTool({"run", dir_}, scratch_, "first-run");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  std::string mc_, mc_up_, mc_alt_, data_, truth_;
};

TEST_F(ExtendCampaign, RunsOnlyTheNewTasksAndEqualsACampaignMadeWhole) {
  writeText(dir_ + "/aggregate/summary.json", "{\"bands\": \"of 6 tasks\"}\n");
  writeText(dir_ + "/report.html", "<p>the bands of 6 tasks</p>\n");
  const auto tasks_before = tasksOf(dir_);
  const auto events_before = eventsOf(dir_);
  ASSERT_EQ(tasks_before.size(), 6u);
  const std::string spec_before = readText(dir_ + "/spec.json");
  const std::string new_spec = writeSpec(scratch_, extendedSpec(), "extended.json");

  ToolRun dry =
      runTool({"extend", dir_, "--spec", new_spec, "--dry-run", "--json"}, scratch_, "dry");
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  const json plan = json::parse(dry.out);
  EXPECT_EQ(plan.at("tasks_before"), 6);
  EXPECT_EQ(plan.at("tasks_after"), 16);
  EXPECT_EQ(plan.at("new_inputs"), json::array({mc_alt_}));
  EXPECT_EQ(plan.at("aggregate_moved"), true);
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  EXPECT_FALSE(fs::exists(dir_ + "/superseded"));
  EXPECT_EQ(eventsOf(dir_), events_before);

  const std::string values_log = scratch_ + "/values.log";
  {
    ScopedEnv log("FF_TEST_VALUES_LOG", values_log);
    ToolRun ext = runTool({"extend", dir_, "--spec", new_spec}, scratch_, "extend");
    ASSERT_EQ(ext.exit_code, 0) << ext.err;
    EXPECT_NE(ext.out.find("nominal tasks: 3 x 1 -> 4 x 2 (replicas x members): 5 task(s) added"),
              std::string::npos)
        << ext.out;
    EXPECT_NE(ext.out.find("variation alt: new 1 x 2 (replicas x members): 2 task(s) added"),
              std::string::npos)
        << ext.out;
    EXPECT_NE(ext.out.find("10 task(s) added (r0000m1, r0001m1, r0002m1, r0003m0, r0003m1, "
                           "alt.r0000m0, alt.r0000m1, boot.r0000m1, ...), 16 in all; 5 task(s) "
                           "renumbered behind them"),
              std::string::npos)
        << ext.out;
  }
  // Only the new file was read and checked.
  EXPECT_EQ(readText(values_log), mc_alt_ + "\n");
  // The old aggregation is kept aside; D/aggregate is empty.
  ASSERT_EQ(entries(dir_ + "/superseded"), 1);
  const std::string aside = fs::directory_iterator(dir_ + "/superseded")->path().string();
  EXPECT_EQ(readText(aside + "/aggregate/summary.json"), "{\"bands\": \"of 6 tasks\"}\n");
  // With the page of those numbers (before: left stale in D).
  EXPECT_EQ(readText(aside + "/report.html"), "<p>the bands of 6 tasks</p>\n");
  EXPECT_FALSE(fs::exists(dir_ + "/report.html"));
  EXPECT_EQ(readText(aside + "/spec.json"), spec_before);
  EXPECT_EQ(entries(dir_ + "/aggregate"), 0);

  // The tasks done stay done, with their results and history; the new ones are pending.
  const auto extended = tasksOf(dir_);
  ASSERT_EQ(extended.size(), 16u);
  for (const auto& [id, t] : extended) {
    const auto was = tasks_before.find(id);
    if (was == tasks_before.end()) {
      EXPECT_EQ(t.state, TaskState::kPending) << id;
      EXPECT_EQ(t.attempts, 0) << id;
      continue;
    }
    EXPECT_EQ(t.state, TaskState::kDone) << id;
    EXPECT_EQ(t.attempts, was->second.attempts) << id;
    EXPECT_EQ(t.result, was->second.result) << id;
    EXPECT_EQ(eventsOf(dir_).at(id), events_before.at(id)) << id;
  }
  EXPECT_EQ(eventsOf(dir_).at("alt.r0000m1"),
            std::vector<std::string>{"0 pending->pending created by `campaign extend`"});

  // Run: only the new tasks run.
  ToolRun run = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto after = tasksOf(dir_);
  for (const auto& [id, t] : after) {
    EXPECT_EQ(t.state, TaskState::kDone) << id;
    EXPECT_EQ(t.attempts, 1) << id;
  }

  // The same campaign made whole: the same spec, task graph, definitions and results.
  const std::string whole = scratch_ + "/whole";
  ToolRun made = runTool({"init", new_spec, "--dir", whole}, scratch_, "whole-init");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  ToolRun whole_run = runTool({"run", whole}, scratch_, "whole-run");
  ASSERT_EQ(whole_run.exit_code, 0) << whole_run.err;
  EXPECT_EQ(readText(dir_ + "/spec.json"), readText(whole + "/spec.json"));
  EXPECT_EQ(needsOf(dir_), needsOf(whole));
  EXPECT_EQ(needsOf(dir_).at("alt.r0000m1"), std::set<std::string>{"r0000m1"});
  const auto whole_tasks = tasksOf(whole);
  ASSERT_EQ(whole_tasks.size(), after.size());
  for (const auto& [id, t] : whole_tasks) {
    ASSERT_EQ(after.count(id), 1u) << id;
    EXPECT_EQ(after.at(id).index, t.index) << id;
    EXPECT_EQ(after.at(id).result, t.result) << id;
  }
  EXPECT_EQ(after.at("alt.r0000m1").result.at("read").at("mc"), "mc_alt v1");
  EXPECT_EQ(after.at("alt.r0000m1").result.at("params").at("warm_from_task"), "r0000m1");

  // The same spec again adds nothing and changes nothing.
  ToolRun again = runTool({"extend", dir_, "--spec", new_spec}, scratch_, "again");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("the spec adds no task to its 16; nothing changed"), std::string::npos)
      << again.out;
  EXPECT_EQ(entries(dir_ + "/superseded"), 1);

  // --replicas alone, on the campaign's own spec.
  ToolRun more = runTool({"extend", dir_, "--replicas", "5", "--json"}, scratch_, "more");
  ASSERT_EQ(more.exit_code, 0) << more.err;
  EXPECT_EQ(json::parse(more.out).at("first_added"), json::array({"r0004m0", "r0004m1"}))
      << more.out;
  EXPECT_EQ(tasksOf(dir_).at("r0004m1").state, TaskState::kPending);
}

// Anything but more tasks is refused in one line naming it, and nothing changes.
TEST_F(ExtendCampaign, RefusesAnythingButMoreTasksAndChangesNothing) {
  const std::string spec_before = readText(dir_ + "/spec.json");
  const auto events_before = eventsOf(dir_);
  const auto refused = [&](const json& spec, const std::string& expected, const std::string& tag) {
    const std::string path = writeSpec(scratch_, spec, tag + ".json");
    ToolRun r = runTool({"extend", dir_, "--spec", path}, scratch_, tag);
    EXPECT_EQ(r.exit_code, kExitBadInput) << tag << ": " << r.err;
    EXPECT_EQ(countLines(r.err), 1) << tag << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << tag << ": " << r.err;
    EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before) << tag;
    EXPECT_EQ(eventsOf(dir_), events_before) << tag;
    EXPECT_FALSE(fs::exists(dir_ + "/superseded")) << tag;
  };
  json seed = extendedSpec();
  seed["seed"] = 78;
  refused(seed, "'seed' = 78 differs from the campaign's (77); `campaign extend` adds", "seed");
  json fewer = baseSpec();
  fewer["replicas"] = 2;
  refused(fewer, "'replicas' = 2 is below the campaign's 3", "fewer");
  json dropped = extendedSpec();
  dropped["variations"].erase("boot");
  refused(dropped, "'variations.boot' is missing", "dropped");
  json moved = extendedSpec();
  moved["variations"]["det_up"]["inputs"]["mc"] = mc_alt_;
  refused(moved, "'variations.det_up.inputs.mc' = \"" + mc_alt_ + "\" differs", "moved");
  json override_old = extendedSpec();
  override_old["overrides"] = {{"r0001m0", {{"x", 1}}}};
  refused(override_old, "'overrides.r0001m0' names task r0001m0, which the campaign has",
          "override");
  // r0002m0 was defined without keeping its models: no variation started from it.
  json warm = baseSpec();
  warm["variations"]["sys"] = {{"replicas", 3}, {"inputs", {{"mc", mc_alt_}}}};
  refused(warm,
          "the new tasks of variation 'sys' would start from task r0002m0, which the campaign "
          "defines without keeping its per-step models",
          "warm");
  json missing = extendedSpec();
  missing["variations"]["alt"]["inputs"]["mc"] = scratch_ + "/nowhere.txt";
  refused(missing, "'variations.alt.inputs.mc' = " + scratch_ + "/nowhere.txt does not exist",
          "missing");
  writeText(mc_alt_, "mc_alt with a NaN");
  refused(extendedSpec(), mc_alt_ + ": row 0 holds NaN", "nan");
  writeText(mc_alt_, "mc_alt v1");
  writeText(mc_, "mc v2");
  refused(extendedSpec(), "`foldfarm campaign accept-inputs`", "changed");
  writeText(mc_, "mc v1");  // the same bytes, another time: still a change until repaired

  // A variation with more replicas than the nominal tasks: its last task starts from none,
  // and would start from a new nominal task.
  const std::string wide = scratch_ + "/wide";
  json wide_spec = baseSpec();
  wide_spec["replicas"] = 1;
  wide_spec["variations"].erase("boot");
  ToolRun made = runTool({"init", writeSpec(scratch_, wide_spec, "wide.json"), "--dir", wide},
                         scratch_, "wide-init");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  ToolRun widened = runTool({"extend", wide, "--replicas", "2"}, scratch_, "widened");
  EXPECT_EQ(widened.exit_code, kExitBadInput);
  EXPECT_NE(widened.err.find("task det_up.r0001m0 would start from the new nominal task r0001m0, "
                             "which it did not"),
            std::string::npos)
      << widened.err;
  EXPECT_EQ(tasksOf(wide).size(), 3u);

  ToolRun nothing = runTool({"extend", dir_}, scratch_, "nothing");
  EXPECT_EQ(nothing.exit_code, kExitBadInput);
  EXPECT_NE(nothing.err.find("say what to add"), std::string::npos) << nothing.err;

  // An aggregation reading the outputs (their lock held here, as `campaign aggregate` holds
  // it): nothing is extended or moved under it; once it ended, the extension goes ahead.
  fs::create_directories(dir_ + "/aggregate");
  writeText(dir_ + "/aggregate/summary.json", "{}");
  {
    const Fd held = lockCampaignOutputs(dir_, "`foldfarm campaign aggregate`");
    refused(extendedSpec(),
            dir_ + ": `foldfarm campaign aggregate` (pid " + std::to_string(::getpid()) + " on " +
                hostName() + ") is using this campaign's outputs (" + dir_ +
                "/aggregate.lock is locked); wait for it or stop it, then run `foldfarm campaign "
                "extend` again (it changed nothing)",
            "aggregating");
    EXPECT_TRUE(fs::exists(dir_ + "/aggregate/summary.json"));
    // `campaign status` names the holder (its look at the lock refuses nobody).
    ToolRun busy = runTool({"status", dir_, "--json"}, scratch_, "status-busy");
    ASSERT_EQ(busy.exit_code, 0) << busy.err;
    EXPECT_EQ(json::parse(busy.out).at("outputs_in_use"), "`foldfarm campaign aggregate` (pid " +
                                                              std::to_string(::getpid()) + " on " +
                                                              hostName() + ")");
    ToolRun text = runTool({"status", dir_}, scratch_, "status-text");
    EXPECT_NE(text.out.find("  outputs: `foldfarm campaign aggregate` (pid "), std::string::npos)
        << text.out;
  }
  ToolRun idle = runTool({"status", dir_, "--json"}, scratch_, "status-idle");
  ASSERT_EQ(idle.exit_code, 0) << idle.err;
  EXPECT_EQ(json::parse(idle.out).at("outputs_in_use"), "");
  ASSERT_EQ(runTool({"accept-inputs", dir_}, scratch_, "times").exit_code, 0);  // mc_'s time
  ToolRun after = runTool({"extend", dir_, "--replicas", "4"}, scratch_, "after");
  EXPECT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(tasksOf(dir_).size(), 7u);
  EXPECT_FALSE(fs::exists(dir_ + "/aggregate/summary.json")) << "moved aside";
}

// How tasks are run (a time limit too short for them, more attempts) changes with `extend
// --spec`, with no task added: the spec every command reads says the new values, the tasks,
// their history and the aggregation stay as they were (before: refused; only a new campaign
// could raise a time limit).
TEST_F(ExtendCampaign, TheRunSettingsChangeAloneAndTheAggregationStays) {
  fs::create_directories(dir_ + "/aggregate");
  writeText(dir_ + "/aggregate/summary.json", "{}");
  const auto events_before = eventsOf(dir_);
  json longer = baseSpec();
  longer["time_limit_s"] = 7200;
  longer["retry"] = {{"max_attempts", 5}};
  const std::string path = writeSpec(scratch_, longer, "longer.json");
  const std::string spec_before = readText(dir_ + "/spec.json");
  ToolRun dry = runTool({"extend", dir_, "--spec", path, "--dry-run"}, scratch_, "longer-dry");
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("time_limit_s 0.0 -> 7200.0 (--dry-run: not changed)"), std::string::npos)
      << dry.out;
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  ToolRun r = runTool({"extend", dir_, "--spec", path}, scratch_, "longer");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("time_limit_s 0.0 -> 7200.0 from now on"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("retry.max_attempts 3 -> 5 from now on"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("the tasks' results and the aggregation are as they were"),
            std::string::npos)
      << r.out;
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.spec().time_limit_s, 7200.0);
    EXPECT_EQ(c.spec().retry.max_attempts, 5);
    EXPECT_EQ(c.tasks().size(), 6u);
  }
  EXPECT_EQ(eventsOf(dir_), events_before);
  EXPECT_TRUE(fs::exists(dir_ + "/aggregate/summary.json"));
  EXPECT_FALSE(fs::exists(dir_ + "/superseded"));
  // The same spec again changes nothing; a run setting beside another change is still refused
  // by that change.
  ToolRun again = runTool({"extend", dir_, "--spec", path}, scratch_, "longer-again");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("nothing changed"), std::string::npos) << again.out;
  // Killed after its commit point: the next writer finishes it, and the aggregation stays
  // (before: moved aside as for added tasks, though no result changed).
  longer["time_limit_s"] = 3600;
  {
    ScopedEnv fault("FOLDFARM_FAULT", "extend.journal");
    ToolRun killed = runTool({"extend", dir_, "--spec", writeSpec(scratch_, longer, "hour.json")},
                             scratch_, "hour-killed");
    EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.err;
  }
  ToolRun finish = runTool({"run", dir_}, scratch_, "hour-finish");
  ASSERT_EQ(finish.exit_code, 0) << finish.err;
  EXPECT_NE(finish.err.find("finished an interrupted `campaign extend`"), std::string::npos)
      << finish.err;
  EXPECT_EQ(loadFrozenSpec(dir_).time_limit_s, 3600.0);
  EXPECT_TRUE(fs::exists(dir_ + "/aggregate/summary.json"));
  EXPECT_FALSE(fs::exists(dir_ + "/superseded"));
  longer["seed"] = 78;
  ToolRun seed = runTool({"extend", dir_, "--spec", writeSpec(scratch_, longer, "seed.json")},
                         scratch_, "longer-seed");
  EXPECT_EQ(seed.exit_code, kExitBadInput) << seed.err;
  EXPECT_NE(seed.err.find("'seed' = 78 differs"), std::string::npos) << seed.err;
}

// `--variation V --replicas R --members M`: a variation's counts grow without a spec edit, to
// the campaign whose spec says so from the start; the nominal tasks and the other variation
// are untouched and only the new tasks run. A variation the campaign lacks, a --variation
// without a count, and a warm-started variation past the nominal tasks that keep their models
// are refused, changing nothing.
TEST_F(ExtendCampaign, AVariationGrowsByNameToTheCampaignThatSaysSoFromTheStart) {
  const std::string spec_before = readText(dir_ + "/spec.json");
  const auto refused = [&](const std::vector<std::string>& args, const std::string& expected,
                           const std::string& tag) {
    std::vector<std::string> argv{"extend", dir_};
    argv.insert(argv.end(), args.begin(), args.end());
    ToolRun r = runTool(argv, scratch_, tag);
    EXPECT_EQ(r.exit_code, kExitBadInput) << tag << ": " << r.err;
    EXPECT_EQ(countLines(r.err), 1) << tag << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << tag << ": " << r.err;
    EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before) << tag;
    EXPECT_EQ(tasksOf(dir_).size(), 6u) << tag;
  };
  refused({"--variation", "nope", "--replicas", "2"},
          dir_ +
              "/spec.json: has no variation 'nope' (it has boot, det_up); a new variation "
              "needs --spec with its inputs",
          "nope");
  refused({"--variation", "boot"}, "--variation boot says whose counts grow; give --replicas R",
          "no-count");
  refused({"--variation", "det_up", "--replicas", "3"},
          "the new tasks of variation 'det_up' would start from task r0002m0, which the "
          "campaign defines without keeping its per-step models",
          "warm");

  // A count beside a spec file that says another: the option wins, and a line says so.
  const std::string spec_file = writeSpec(scratch_, baseSpec(), "base-again.json");
  ToolRun both = runTool({"extend", dir_, "--spec", spec_file, "--replicas", "5", "--dry-run"},
                         scratch_, "both");
  ASSERT_EQ(both.exit_code, 0) << both.err;
  EXPECT_NE(both.err.find("--replicas 5 replaces the replicas 3 of " + spec_file),
            std::string::npos)
      << both.err;

  const auto before = tasksOf(dir_);
  ToolRun ext =
      runTool({"extend", dir_, "--variation", "boot", "--replicas", "3", "--members", "2"},
              scratch_, "boot");
  ASSERT_EQ(ext.exit_code, 0) << ext.err;
  EXPECT_NE(ext.out.find("variation boot: 1 x 1 -> 3 x 2 (replicas x members): 5 task(s) added"),
            std::string::npos)
      << ext.out;
  EXPECT_EQ(ext.out.find("nominal tasks"), std::string::npos) << ext.out;
  ToolRun run = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto after = tasksOf(dir_);
  ASSERT_EQ(after.size(), 11u);
  for (const auto& [id, t] : after) {
    EXPECT_EQ(t.state, TaskState::kDone) << id;
    EXPECT_EQ(t.attempts, 1) << id;
    if (before.count(id)) {
      EXPECT_EQ(t.result, before.at(id).result) << id;
      EXPECT_EQ(t.finished_at, before.at(id).finished_at) << id << " ran again";
    } else {
      EXPECT_EQ(id.rfind("boot.", 0), 0u) << id << " is not boot's";
    }
  }

  json whole_spec = baseSpec();
  whole_spec["variations"]["boot"]["replicas"] = 3;
  whole_spec["variations"]["boot"]["members"] = 2;
  const std::string whole = scratch_ + "/whole-boot";
  ToolRun made =
      runTool({"init", writeSpec(scratch_, whole_spec, "whole-boot.json"), "--dir", whole},
              scratch_, "whole-init");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_EQ(readText(dir_ + "/spec.json"), readText(whole + "/spec.json"));
  for (const auto& [id, t] : tasksOf(whole)) EXPECT_EQ(after.at(id).index, t.index) << id;
}

// Killed after the journal holds the new tasks, before spec.json does: every command sees the
// extended campaign, the first that writes finishes it, and `repair` does too.
TEST_F(ExtendCampaign, ACrashBeforeTheSpecIsWrittenIsFinishedByTheNextCommand) {
  const std::string spec_before = readText(dir_ + "/spec.json");
  const std::string new_spec = writeSpec(scratch_, extendedSpec(), "extended.json");
  fs::create_directories(dir_ + "/aggregate");
  writeText(dir_ + "/aggregate/summary.json", "{\"chains\": 6}\n");
  const auto moved_summaries = [&] {
    int n = 0;
    if (fs::exists(dir_ + "/superseded"))
      for (const auto& e : fs::directory_iterator(dir_ + "/superseded"))
        n += fs::exists(e.path() / "aggregate" / "summary.json") ? 1 : 0;
    return n;
  };
  // Killed before its commit point: nothing changed, the aggregate where it was (before, it
  // was moved aside first, and D/aggregate stayed empty).
  {
    ScopedEnv fault("FOLDFARM_FAULT", "extend.commit");
    ToolRun killed = runTool({"extend", dir_, "--spec", new_spec}, scratch_, "killed0");
    EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.err;
  }
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  EXPECT_TRUE(fs::exists(dir_ + "/aggregate/summary.json"));
  EXPECT_EQ(moved_summaries(), 0);
  EXPECT_EQ(tasksOf(dir_).size(), 6u);
  {
    ScopedEnv fault("FOLDFARM_FAULT", "extend.journal");
    ToolRun killed = runTool({"extend", dir_, "--spec", new_spec}, scratch_, "killed");
    EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.err;
  }
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  EXPECT_TRUE(fs::exists(dir_ + "/aggregate/summary.json")) << "moved after the commit only";
  // Read-only: the journal's copy of the spec, spec.json untouched.
  ToolRun status = runTool({"status", dir_, "--json"}, scratch_, "status");
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(json::parse(status.out).at("counts").at("pending"), 10) << status.out;
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_before);
  // A writer finishes it and runs the new tasks.
  ToolRun run = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("finished an interrupted `campaign extend`"), std::string::npos)
      << run.err;
  EXPECT_FALSE(fs::exists(dir_ + "/aggregate/summary.json")) << "stale: moved aside";
  EXPECT_EQ(moved_summaries(), 1);
  for (const auto& [id, t] : tasksOf(dir_)) {
    EXPECT_EQ(t.state, TaskState::kDone) << id;
    EXPECT_EQ(t.attempts, 1) << id;
  }
  ToolRun again = runTool({"extend", dir_, "--spec", new_spec}, scratch_, "again");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("adds no task to its 16"), std::string::npos) << again.out;

  // Again, finished by `campaign repair` this time.
  const std::string spec_16 = readText(dir_ + "/spec.json");
  {
    ScopedEnv fault("FOLDFARM_FAULT", "extend.journal");
    ToolRun killed = runTool({"extend", dir_, "--replicas", "5"}, scratch_, "killed2");
    EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.err;
  }
  EXPECT_EQ(readText(dir_ + "/spec.json"), spec_16);
  ToolRun repair = runTool({"repair", dir_, "--json"}, scratch_, "repair");
  ASSERT_EQ(repair.exit_code, 0) << repair.err;
  const json r = json::parse(repair.out);
  EXPECT_EQ(r.at("problem"), "") << repair.out;
  EXPECT_EQ(r.at("rebuilt"), false) << repair.out;
  EXPECT_EQ(r.at("spec_restored"), true) << repair.out;
  EXPECT_EQ(loadFrozenSpec(dir_).numTasks(), 18);
  EXPECT_EQ(tasksOf(dir_).at("r0004m1").state, TaskState::kPending);
  EXPECT_EQ(tasksOf(dir_).at("r0003m1").state, TaskState::kDone);
}

// `campaign retry --task ID` of a campaign with tasks still pending runs ID first (before:
// after every pending task; with thousands pending, a retry of one task ran them all first).
TEST_F(ExtendCampaign, ARetriedTaskRunsBeforeTheTasksStillPending) {
  ASSERT_EQ(runTool({"extend", dir_, "--replicas", "5"}, scratch_, "more").exit_code, 0);
  ToolRun retry = runTool({"retry", dir_, "--task", "r0000m0", "--slots", "1"}, scratch_, "retry");
  ASSERT_EQ(retry.exit_code, 0) << retry.err;
  const auto tasks = tasksOf(dir_);
  const TaskRecord& again = tasks.at("r0000m0");
  EXPECT_EQ(again.attempts, 2);
  int later = 0;
  for (const auto& [id, t] : tasks) {
    if (t.attempts != 1 || t.replica < 3) continue;  // the tasks extend added
    EXPECT_GT(t.started_at, again.started_at) << id;
    ++later;
  }
  EXPECT_EQ(later, 2);  // r0003m0, r0004m0
  // A named task that is pending and never ran goes first too.
  ASSERT_EQ(runTool({"extend", dir_, "--replicas", "8"}, scratch_, "more8").exit_code, 0);
  retry = runTool({"retry", dir_, "--task", "r0007m0", "--slots", "1"}, scratch_, "retry8");
  ASSERT_EQ(retry.exit_code, 0) << retry.err;
  const auto after = tasksOf(dir_);
  for (const char* id : {"r0005m0", "r0006m0"})
    EXPECT_GT(after.at(id).started_at, after.at("r0007m0").started_at) << id;
}

// `retry --tasks-file F` runs again the tasks F lists (`#` comments, blank lines, spaces
// around ids; `-`: the standard input), first, as --task does; a file listing none is refused,
// changing nothing. `status` then says what the retries set aside in D/superseded/, and
// `status --tasks` (streamed from the journal) lists every task, as text and as JSON.
TEST_F(ExtendCampaign, ARetryTakesItsTasksFromAFileAndStatusSaysWhatIsSetAside) {
  auto attemptsOf = [&](const std::string& id) { return tasksOf(dir_).at(id).attempts; };
  const std::string list = scratch_ + "/again.txt";
  writeText(list, "# damaged outputs\n  r0001m0 \n\nr0002m0\t\n");
  // --dry-run: what would run again and move aside, and nothing changed.
  ToolRun dry = runTool({"retry", dir_, "--tasks-file", list, "--dry-run"}, scratch_, "retry-dry");
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("nothing changed (--dry-run); the retry would\n  run again 2 named "
                         "task(s): r0001m0, r0002m0\n  run again "),
            std::string::npos)
      << dry.out;
  EXPECT_NE(dry.out.find("task(s) warm-started from them: det_up.r0001m0"), std::string::npos)
      << dry.out;
  EXPECT_NE(dry.out.find("  move their outputs"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find(" to " + dir_ + "/superseded/<time>-<pid>/\n"), std::string::npos)
      << dry.out;
  EXPECT_EQ(attemptsOf("r0001m0"), 1);
  EXPECT_EQ(attemptsOf("det_up.r0001m0"), 1);
  EXPECT_FALSE(fs::exists(dir_ + "/superseded")) << "a dry run moved outputs";
  ToolRun retry = runTool({"retry", dir_, "--tasks-file", list}, scratch_, "retry-file");
  ASSERT_EQ(retry.exit_code, 0) << retry.err;
  EXPECT_EQ(attemptsOf("r0001m0"), 2);
  EXPECT_EQ(attemptsOf("r0002m0"), 2);
  EXPECT_EQ(attemptsOf("r0000m0"), 1);
  // Their warm-started variation tasks go with them, as with --task.
  EXPECT_EQ(attemptsOf("det_up.r0001m0"), 2);
  EXPECT_NE(retry.out.find("r0001m0"), std::string::npos) << retry.out;

  writeText(scratch_ + "/none.txt", "# nothing\n\n");
  ToolRun none = runTool({"retry", dir_, "--tasks-file", scratch_ + "/none.txt"}, scratch_, "none");
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find(scratch_ + "/none.txt lists no task id"), std::string::npos) << none.err;
  ToolRun missing =
      runTool({"retry", dir_, "--tasks-file", scratch_ + "/nope.txt"}, scratch_, "missing");
  EXPECT_EQ(missing.exit_code, 2) << missing.err;
  EXPECT_NE(missing.err.find(": --tasks-file " + scratch_ +
                             "/nope.txt: cannot read: No such file or directory; nothing was "
                             "changed"),
            std::string::npos)
      << missing.err;
  EXPECT_EQ(countLines(missing.err), 1) << missing.err;
  writeText(scratch_ + "/unknown.txt", "r0000m0\nr9999m9\n");
  ToolRun unknown =
      runTool({"retry", dir_, "--tasks-file", scratch_ + "/unknown.txt"}, scratch_, "unknown");
  EXPECT_EQ(unknown.exit_code, 2) << unknown.err;
  EXPECT_NE(unknown.err.find("has no task 'r9999m9'"), std::string::npos) << unknown.err;
  EXPECT_EQ(attemptsOf("r0000m0"), 1) << "nothing changed";

  // The standard input, through a pipe.
  const pid_t pipe = startProgram(
      "/bin/sh",
      {"-c", "printf 'r0000m0\\n' | \"$0\" retry \"$1\" --tasks-file -", FF_JOBS_TOOL, dir_},
      scratch_, "retry-stdin");
  ASSERT_EQ(waitExit(pipe), 0) << readText(scratch_ + "/retry-stdin.err");
  EXPECT_EQ(attemptsOf("r0000m0"), 2);

  // Two retries of done tasks: two sets set aside, said by status.
  ToolRun status = runTool({"status", dir_, "--json"}, scratch_, "status");
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const json sup = json::parse(status.out).at("superseded");
  ASSERT_TRUE(sup.is_object()) << status.out;
  EXPECT_EQ(sup.at("sets"), 2);
  EXPECT_GT(sup.at("bytes").get<double>(), 0);
  EXPECT_GT(sup.at("files").get<double>(), 4);
  EXPECT_FALSE(sup.at("partial").get<bool>());
  EXPECT_LT(sup.at("oldest").get<std::string>(), sup.at("newest").get<std::string>());
  EXPECT_TRUE(fs::is_directory(dir_ + "/superseded/" + sup.at("oldest").get<std::string>()));
  // The figures are what each retry recorded of what it moved and the set's own entries;
  // without a record (a set of an older build, a retry killed while it moved), status walks
  // the set: the same, but for the record itself.
  const std::string newest = dir_ + "/superseded/" + sup.at("newest").get<std::string>();
  ASSERT_TRUE(fs::exists(newest + "/disk_use.json"));
  fs::rename(newest + "/disk_use.json", scratch_ + "/disk_use.json");
  status = runTool({"status", dir_, "--json"}, scratch_, "status-walked");
  const json walked = json::parse(status.out).at("superseded");
  EXPECT_NEAR(walked.at("bytes").get<double>(), sup.at("bytes").get<double>() - 4096, 4096);
  EXPECT_EQ(walked.at("files").get<double>(), sup.at("files").get<double>() - 1);
  fs::rename(scratch_ + "/disk_use.json", newest + "/disk_use.json");
  status = runTool({"status", dir_}, scratch_, "status-text");
  EXPECT_NE(
      status.out.find(" in 2 set(s) of replaced outputs (" + dir_ + "/superseded/: the oldest "),
      std::string::npos)
      << status.out;

  // Every task, streamed: text and JSON agree with the journal.
  const auto tasks = tasksOf(dir_);
  ToolRun listed = runTool({"status", dir_, "--json", "--tasks"}, scratch_, "tasks-json");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const json all = json::parse(listed.out);
  EXPECT_EQ(all.at("total"), static_cast<int>(tasks.size())) << "the status keys are kept";
  ASSERT_EQ(all.at("tasks").size(), tasks.size()) << listed.out;
  for (const json& t : all.at("tasks")) {
    const TaskRecord& r = tasks.at(t.at("task").get<std::string>());
    EXPECT_EQ(t.at("state"), std::string(toString(r.state)));
    EXPECT_EQ(t.at("attempts"), r.attempts);
    EXPECT_EQ(t.at("group"),
              r.id.find('.') == std::string::npos ? "nominal" : r.id.substr(0, r.id.find('.')));
  }
  listed = runTool({"status", dir_, "--tasks"}, scratch_, "tasks-text");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const std::string table = listed.out.substr(listed.out.find("\ntask "));
  EXPECT_EQ(countLines(table), static_cast<int>(tasks.size()) + 2) << table;  // with "\n" first
  EXPECT_NE(table.find("\ndet_up.r0001m0  done"), std::string::npos) << table;
}

// Two sets of outputs moved aside by one process within a second (a command that finishes an
// interrupted extend, moving the aggregation, then moves tasks) get names of their own (before:
// both <time>-<pid>; the second failed on its spec copy and its clean-up removed the first set).
TEST_F(ExtendCampaign, TwoSetsMovedAsideInOneSecondKeepTheirOwnNames) {
  writeText(dir_ + "/one.txt", "one");
  writeText(dir_ + "/two.txt", "two");
  SupersededOutputs first(dir_), second(dir_);
  first.move(dir_ + "/one.txt", "one.txt");
  second.move(dir_ + "/two.txt", "two.txt");
  ASSERT_NE(first.path(), second.path());
  EXPECT_EQ(readText(first.path() + "/one.txt"), "one");
  EXPECT_EQ(readText(second.path() + "/two.txt"), "two");
  EXPECT_TRUE(fs::exists(first.path() + "/spec.json"));
  EXPECT_TRUE(fs::exists(second.path() + "/spec.json"));
}

// A failure after the commit point (here the stale aggregation cannot be moved aside: a file
// where D/superseded/ goes) says that the campaign is extended and what finishes it (before: a
// bare "cannot rename ... into place", exit 1, as if nothing had changed).
TEST_F(ExtendCampaign, AFailureAfterTheCommitSaysTheCampaignIsExtended) {
  const std::string new_spec = writeSpec(scratch_, extendedSpec(), "extended.json");
  fs::create_directories(dir_ + "/aggregate");
  writeText(dir_ + "/aggregate/summary.json", "{\"chains\": 6}\n");
  writeText(dir_ + "/superseded", "in the way\n");
  ToolRun failed = runTool({"extend", dir_, "--spec", new_spec}, scratch_, "failed");
  EXPECT_EQ(failed.exit_code, 1) << failed.err;
  EXPECT_EQ(countLines(failed.err), 1) << failed.err;
  EXPECT_NE(failed.err.find("campaign " + dir_ + " is extended (10 task(s) added to its journal)"),
            std::string::npos)
      << failed.err;
  EXPECT_NE(failed.err.find("`foldfarm campaign run " + dir_ + "`) finishes it"), std::string::npos)
      << failed.err;
  EXPECT_EQ(tasksOf(dir_).size(), 16u);
  fs::remove(dir_ + "/superseded");
  ToolRun run = runTool({"run", dir_}, scratch_, "run");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("finished an interrupted `campaign extend`"), std::string::npos)
      << run.err;
  EXPECT_FALSE(fs::exists(dir_ + "/aggregate/summary.json")) << "stale: moved aside";
}

// D/spec.json edited by hand (a count, an input, the seed) is refused by every command, naming
// the key, the file's value and the frozen one (before: an input, seed or config edit was used
// by the tasks still to run, unchecked, and a count edit was undone as if an extension had
// been interrupted); `campaign repair` puts the frozen spec back and keeps the edited file.
TEST_F(ExtendCampaign, ASpecEditedByHandIsRefusedAndRepairPutsItBack) {
  const std::string spec_path = dir_ + "/spec.json";
  const std::string frozen = readText(spec_path);
  const json original = json::parse(frozen);
  struct Edit {
    const char* key;
    json value;
    const char* says;
  };
  for (const Edit& e : {Edit{"replicas", 5,
                             "'replicas' = 5 differs from the campaign's frozen "
                             "spec (3, its copy in "},
                        Edit{"seed", 99, "'seed' = 99 differs"}}) {
    json edited = original;
    edited[e.key] = e.value;
    writeText(spec_path, edited.dump(2) + "\n");
    for (const std::vector<std::string>& cmd :
         {std::vector<std::string>{"status", dir_}, std::vector<std::string>{"run", dir_}}) {
      ToolRun r = runTool(cmd, scratch_, "edited");
      EXPECT_EQ(r.exit_code, kExitBadInput) << cmd[0] << ": " << r.err;
      EXPECT_NE(r.err.find(spec_path + ": " + e.says), std::string::npos) << r.err;
      EXPECT_NE(r.err.find("`foldfarm campaign repair " + dir_ + "`"), std::string::npos) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    }
    EXPECT_EQ(json::parse(readText(spec_path)), edited) << "the edited file is left as it is";
    ToolRun repair = runTool({"repair", dir_, "--json"}, scratch_, "repair");
    ASSERT_EQ(repair.exit_code, 0) << repair.err;
    const json rep = json::parse(repair.out);
    EXPECT_EQ(rep.at("spec_restored"), true) << repair.out;
    EXPECT_EQ(rep.at("rebuilt"), false) << repair.out;
    const std::string kept = rep.at("spec_damaged_copy").get<std::string>();
    EXPECT_EQ(json::parse(readText(kept)), edited);
    fs::remove(kept);
    EXPECT_EQ(readText(spec_path), frozen);
  }
  // An edit through a tool that rewrites the file (jq 1.6 rounds the recorded times, integers
  // of 19 digits) changes an input's record too: every edit is named, a path key in brackets;
  // `repair` gives the inputs the frozen spec's times (before: the edited file's, written onto
  // the input files of every campaign reading them, which then refused to run).
  {
    const long long mc_time = statPath(mc_).mtime_ns;
    ASSERT_EQ(original.at("inputs_at_init").at(mc_).at("mtime_ns").get<long long>(), mc_time);
    json edited = original;
    edited["replicas"] = 5;
    edited["inputs_at_init"][mc_]["mtime_ns"] = 1000000000000000000LL;
    writeText(spec_path, edited.dump(2) + "\n");
    ToolRun st = runTool({"status", dir_}, scratch_, "edited-two");
    EXPECT_EQ(st.exit_code, kExitBadInput) << st.err;
    EXPECT_NE(st.err.find(spec_path + ": 'inputs_at_init[\"" + mc_ +
                          "\"].mtime_ns' = 1000000000000000000 (frozen: " +
                          std::to_string(mc_time) + "), 'replicas' = 5 (frozen: 3) differ from " +
                          "the campaign's frozen spec (its copy in "),
              std::string::npos)
        << st.err;
    ToolRun repair = runTool({"repair", dir_, "--json"}, scratch_, "repair-two");
    ASSERT_EQ(repair.exit_code, 0) << repair.err;
    EXPECT_EQ(json::parse(repair.out).at("inputs_restored"), json::array()) << repair.out;
    EXPECT_EQ(statPath(mc_).mtime_ns, mc_time) << "the input keeps its time";
    fs::remove(json::parse(repair.out).at("spec_damaged_copy").get<std::string>());
    EXPECT_EQ(readText(spec_path), frozen);
  }
  // Another layout of the same spec is no edit.
  writeText(spec_path, original.dump() + "\n");
  ToolRun status = runTool({"status", dir_}, scratch_, "status");
  EXPECT_EQ(status.exit_code, 0) << status.err;
  ASSERT_EQ(runTool({"run", dir_}, scratch_, "run").exit_code, 0);
}

// The journal alone: rows, events and edges renumbered; a task running in a Slurm job keeps
// its attempt and job id, and its result is ingested after the extension; a bad numbering
// changes nothing.
TEST_F(ExtendCampaign, TheJournalRenumbersEverythingAndKeepsARunningTaskIngestible) {
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kWriter);
    c.journal().rerun({c.spec().indexOf("det_up.r0001m0")}, "test");
    ASSERT_EQ(c.markSubmitted({"det_up.r0001m0"}, "4242_1")[0], 2);
  }
  const auto events_before = eventsOf(dir_);
  const auto needs_before = needsOf(dir_);
  const std::string new_spec = writeSpec(scratch_, extendedSpec(), "extended.json");
  ToolRun ext = runTool({"extend", dir_, "--spec", new_spec}, scratch_, "extend");
  ASSERT_EQ(ext.exit_code, 0) << ext.err;
  const auto after = tasksOf(dir_);
  const TaskRecord& running = after.at("det_up.r0001m0");
  EXPECT_EQ(running.state, TaskState::kRunning);
  EXPECT_EQ(running.attempts, 2);
  EXPECT_EQ(running.external_id, "4242_1");
  const auto events_after = eventsOf(dir_);
  for (const auto& [id, events] : events_before) EXPECT_EQ(events_after.at(id), events) << id;
  const auto needs_after = needsOf(dir_);
  for (const auto& [id, needs] : needs_before) EXPECT_EQ(needs_after.at(id), needs) << id;
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kWriter);
    EXPECT_EQ(c.journal().integrityProblem(), "");
    // The Slurm element ends: its result file, by id, is ingested under the new index.
    TaskResult r;
    r.task_id = "det_up.r0001m0";
    r.attempt = 2;
    r.status = 0;
    r.result = {{"from", "the element"}};
    writeTaskResult(c.resultPath(r.task_id), r);
    EXPECT_EQ(c.ingestResults(), 1);
    EXPECT_EQ(c.journal().task("det_up.r0001m0")->state, TaskState::kDone);
    EXPECT_EQ(c.journal().task("det_up.r0001m0")->result, json({{"from", "the element"}}));

    // Two tasks given one index: refused, nothing changed.
    const int n = c.journal().numTasks();
    std::vector<int> clash(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) clash[static_cast<size_t>(i)] = i;
    clash[1] = 0;
    EXPECT_THROW(c.journal().extend(clash, {}, "test"), Error);
    EXPECT_EQ(c.journal().numTasks(), n);
    EXPECT_EQ(c.journal().task("r0000m1")->index, c.spec().indexOf("r0000m1"));
  }
}

// A campaign made by a build older than the task graph (before 9fb798e: schema "1" without the
// `needs` table or its index), continued by this build after a module update: readers take it
// for a campaign without edges and write nothing, and the first writer adds the table; extend
// then grows it as any other (before: "sqlite3_exec(...) failed ...: no such table:
// main.needs", exit 1).
class OlderBuildCampaign : public ToolCampaignTest {
 protected:
  OlderBuildCampaign() : ToolCampaignTest("older-build") {}
};

TEST_F(OlderBuildCampaign, AJournalWithoutTheTaskGraphIsExtendedAndRun) {
  init(json{{"task", "noop"}, {"replicas", 2}, {"resources", {{"cpu_slots", 1}}}});
  ToolRun first = runTool({"run", dir_}, scratch_, "first-run");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const auto tableCount = [&] {
    SqliteDb db(dir_ + "/journal.sqlite", SqliteDb::Mode::kReadOnly);
    SqliteStatement st(db,
                       "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('needs','needs_need')");
    st.step();
    return st.columnInt(0);
  };
  {
    SqliteDb db(dir_ + "/journal.sqlite", false);
    db.exec("DROP TABLE needs");
  }
  ASSERT_EQ(tableCount(), 0);
  {
    Campaign c = Campaign::open(dir_, Campaign::Access::kReadOnly);
    EXPECT_EQ(c.tasks().size(), 2u);
    EXPECT_EQ(c.journal().graph().edges(), 0u);
  }
  ToolRun status = runTool({"status", dir_}, scratch_, "status");
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(tableCount(), 0) << "a reader wrote the journal";

  ToolRun more = runTool({"extend", dir_, "--replicas", "3"}, scratch_, "more");
  ASSERT_EQ(more.exit_code, 0) << more.err;
  EXPECT_EQ(tableCount(), 2);
  const auto tasks = tasksOf(dir_);
  ASSERT_EQ(tasks.size(), 3u);
  EXPECT_EQ(tasks.at("r0000m0").state, TaskState::kDone);
  EXPECT_EQ(tasks.at("r0001m0").state, TaskState::kDone);
  EXPECT_EQ(tasks.at("r0002m0").state, TaskState::kPending);
  ToolRun rest = runTool({"resume", dir_}, scratch_, "rest");
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  for (const auto& [id, t] : tasksOf(dir_)) EXPECT_EQ(t.state, TaskState::kDone) << id;
}

// `campaign status`'s look at the outputs lock (a shared flock for an instant) makes no
// aggregation or extension fail: the lock is tried again for half a second. A holder that
// stays is named.
TEST(CampaignOutputsLock, AGlanceAtItRefusesNobodyAndAHolderIsNamed) {
  const std::string dir =
      (fs::temp_directory_path() / ("ff_outputs_lock_" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_EQ(campaignOutputsUser(dir), "") << "never locked";
  {
    const Fd held = lockCampaignOutputs(dir, "`foldfarm campaign extend`");
    EXPECT_EQ(campaignOutputsUser(dir), "`foldfarm campaign extend` (pid " +
                                            std::to_string(::getpid()) + " on " + hostName() + ")");
    try {
      lockCampaignOutputs(dir, "`foldfarm campaign aggregate`");
      ADD_FAILURE() << "a held lock was taken again";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(dir + ": `foldfarm campaign extend` (pid "),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(campaignOutputsUser(dir), "");
  // A glance that lasts 150 ms (a slow status): the aggregation waits it out. A refusal proves
  // it did not only if the glance ended inside the half second of tries (which the last try
  // follows); one that a loaded machine let end later, or before the aggregation began, tells
  // nothing, and the look is tried again.
  bool waited_out = false;
  for (int attempt = 0; attempt < 5 && !waited_out; ++attempt) {
    const Fd glance(::open((dir + "/" + kOutputsLockFile).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(glance.valid());
    ASSERT_EQ(::flock(glance.get(), LOCK_SH | LOCK_NB), 0);
    using Clock = std::chrono::steady_clock;
    std::atomic<Clock::rep> released_at{0};
    std::thread release([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      ::flock(glance.get(), LOCK_UN);
      released_at = Clock::now().time_since_epoch().count();
    });
    const Clock::time_point asked = Clock::now();
    std::string refused;
    try {
      const Fd taken = lockCampaignOutputs(dir, "`foldfarm campaign aggregate`");
    } catch (const InputError& e) {
      refused = e.what();
    }
    release.join();
    const double released_s = std::chrono::duration<double>(
                                  Clock::time_point(Clock::duration(released_at.load())) - asked)
                                  .count();
    if (refused.empty()) {
      waited_out = released_s >= 0;  // else the glance was over before the aggregation looked
      continue;
    }
    ASSERT_GE(released_s, 0.5) << "refused although the glance ended " << released_s
                               << " s into the half second of tries: " << refused;
  }
  EXPECT_TRUE(waited_out) << "the glance never ended inside the aggregation's half second";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace foldfarm::jobs
