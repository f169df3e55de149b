// The planner's simulation: exact where the answer is known, monotone where it is not.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "jobs/disk_estimate.hpp"
#include "jobs/plan.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::jobs {
namespace {

TEST(Plan, FixedDurationsPackIntoWaves) {
  PlanInput in;
  in.tasks = 100;
  in.gpus = 8;
  in.gpus_per_node = 4;
  in.task_s = 600;
  in.task_cv = 0;
  PlanResult r = simulatePlan(in);
  EXPECT_DOUBLE_EQ(r.makespan_s, 13 * 600.0);  // ceil(100 / 8) waves
  EXPECT_EQ(r.nodes, 2);
  EXPECT_DOUBLE_EQ(r.gpu_hours, 8 * 13 * 600.0 / 3600);
  EXPECT_DOUBLE_EQ(r.node_hours, 2 * 13 * 600.0 / 3600);
  EXPECT_DOUBLE_EQ(r.busy_gpu_hours, 100 * 600.0 / 3600);
  EXPECT_EQ(r.attempts, 100);
  // Two tasks per GPU: twice the slots.
  in.tasks_per_gpu = 2;
  EXPECT_DOUBLE_EQ(simulatePlan(in).makespan_s, 7 * 600.0);
}

TEST(Plan, FailuresAndSpreadCostTime) {
  PlanInput in;
  in.tasks = 400;
  in.gpus = 16;
  in.task_s = 100;
  in.task_cv = 0;
  double base = simulatePlan(in).makespan_s;
  in.failure_rate = 0.2;
  PlanResult f = simulatePlan(in);
  EXPECT_GT(f.attempts, 400);
  EXPECT_GT(f.makespan_s, base);
  in.failure_rate = 0;
  in.task_cv = 0.5;
  PlanResult s = simulatePlan(in);
  EXPECT_GT(s.makespan_s, base) << "the slowest task of the last wave sets the makespan";
  EXPECT_LT(s.utilisation, 1.0);
  EXPECT_EQ(simulatePlan(in).makespan_s, s.makespan_s) << "deterministic in its seed";
}

// A variation's task waits for its nominal task: 4 nominal and 4 varied tasks on 8 GPUs take
// two task times, not one; a task whose need failed never runs (held).
TEST(Plan, TasksWaitForTheTasksTheyNeed) {
  PlanInput in;
  in.tasks = 8;
  in.gpus = 8;
  in.task_s = 600;
  in.task_cv = 0;
  EXPECT_DOUBLE_EQ(simulatePlan(in).makespan_s, 600.0);
  in.needs = {{}, {}, {}, {}, {0}, {1}, {2}, {3}};
  PlanResult r = simulatePlan(in);
  EXPECT_DOUBLE_EQ(r.makespan_s, 1200.0);
  EXPECT_EQ(r.attempts, 8);
  EXPECT_EQ(r.held_tasks, 0);
  EXPECT_DOUBLE_EQ(r.utilisation, 0.5);
  // A chain: each waits for the one before.
  in.needs = {{}, {0}, {1}, {2}, {3}, {4}, {5}, {6}};
  EXPECT_DOUBLE_EQ(simulatePlan(in).makespan_s, 8 * 600.0);
  in.tasks = 2;
  in.needs = {{}, {0}};
  in.failure_rate = 0.999999;
  in.max_attempts = 1;
  r = simulatePlan(in);
  EXPECT_EQ(r.failed_tasks, 1);
  EXPECT_EQ(r.held_tasks, 1);
  EXPECT_EQ(r.attempts, 1);
}

TEST(Plan, RejectsImpossibleInput) {
  PlanInput in;
  in.tasks = 10;
  in.gpus = 0;
  EXPECT_THROW(simulatePlan(in), InputError);
  // NaN, and values whose figures would be infinite or overflow (before: a failure rate of
  // NaN planned as 0%, and a task time of 1e308 minutes printed "utilisation -nan%").
  const PlanInput ok = [] {
    PlanInput p;
    p.tasks = 10;
    p.gpus = 4;
    p.task_s = 60;
    return p;
  }();
  EXPECT_NO_THROW(simulatePlan(ok));
  for (auto bad : std::vector<void (*)(PlanInput&)>{
           [](PlanInput& p) { p.failure_rate = std::nan(""); },
           [](PlanInput& p) { p.task_cv = std::nan(""); }, [](PlanInput& p) { p.task_cv = 1e300; },
           [](PlanInput& p) { p.task_s = std::numeric_limits<double>::infinity(); },
           [](PlanInput& p) { p.task_s = 1e308; }, [](PlanInput& p) { p.gpus = 2147483647; },
           [](PlanInput& p) { p.tasks_per_gpu = 100000; }}) {
    PlanInput in2 = ok;
    bad(in2);
    EXPECT_THROW(simulatePlan(in2), InputError);
  }
}

// The figures of a plan: what is given wins, then what was measured, then the defaults; each
// said with where it came from. A measured spread beyond the simulation's bound (a few long
// tasks among thousands of instant ones) is held at it and said with its value (before:
// `plan --from` was refused with "a spread from 0 to 10", naming no value).
TEST(Plan, FiguresAreGivenMeasuredOrDefaultAndAMeasuredSpreadBeyondTheBoundIsHeld) {
  MeasuredTaskTimes m;
  m.done = 150;
  m.mean_s = 0.02;
  m.cv = 12.3;
  m.failure_rate = 0.1;
  const PlanFigures held = planFigures(0, -1, -1, &m, "D");
  EXPECT_DOUBLE_EQ(held.task_s, 0.02);
  EXPECT_DOUBLE_EQ(held.task_cv, kMaxPlanSpread);
  EXPECT_DOUBLE_EQ(held.failure_rate, 0.1);
  EXPECT_EQ(held.source,
            "task time measured on 150 done task(s) of D, spread measured on 150 done task(s) of "
            "D, failure rate measured on 150 done task(s) of D; the measured spread 1230% is held "
            "at 1000% (give --spread to set it)");
  PlanInput in;
  in.tasks = 10;
  in.task_s = held.task_s;
  in.task_cv = held.task_cv;
  in.failure_rate = held.failure_rate;
  EXPECT_NO_THROW(simulatePlan(in));
  const PlanFigures given = planFigures(2, 0.5, -1, &m, "D");
  EXPECT_DOUBLE_EQ(given.task_s, 120);
  EXPECT_DOUBLE_EQ(given.task_cv, 0.5);
  EXPECT_EQ(given.source,
            "task time given, spread given, failure rate measured on 150 done task(s) of D");
  m.done = 0;  // nothing done: its failure rate only
  const PlanFigures none = planFigures(5, -1, -1, &m, "D");
  EXPECT_EQ(none.source,
            "task time given, spread default, failure rate measured on 0 done "
            "task(s) of D");
  EXPECT_DOUBLE_EQ(none.task_cv, 0.1);
  EXPECT_EQ(planFigures(5, -1, 0.2, nullptr, "").source,
            "task time given, spread default, failure rate given");
}

// What a campaign takes on disk: each task's estimate from its kind (once per set of params
// that differ in more than which task it is), in parts of equal tasks per group (the nominal,
// each variation), with the aggregation's, what running tasks add, and the kind's advice once;
// a kind without an estimate leaves its tasks not known.
TEST(DiskEstimate, TasksAreSummedPerGroupWithTheAggregation) {
  registerTaskKind(
      "sized", TaskRunner([](const nlohmann::json&, const std::string&) { return TaskOutcome{}; }),
      TaskKindTraits{
          true,
          nullptr,
          std::nullopt,
          nullptr,
          nullptr,
          {},
          [](const nlohmann::json& p) -> std::optional<DiskUseEstimate> {
            const double mb = p.at("mb").get<double>();
            return DiskUseEstimate{
                {mb * 1e6, 3}, 2 * mb * 1e6, "mb " + std::to_string(int(mb)), "less", ""};
          },
          [](const CampaignSpec& s) -> std::optional<DiskUseEstimate> {
            return DiskUseEstimate{{1e6 * s.replicas, 5}, 0, "bands", "fewer", "much memory"};
          }});
  registerTaskKind("unsized", TaskRunner([](const nlohmann::json&, const std::string&) {
                     return TaskOutcome{};
                   }),
                   TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr, {}});
  nlohmann::json j = {{"task", "sized"},
                      {"replicas", 3},
                      {"members", 2},
                      {"params", {{"mb", 2}}},
                      {"overrides", {{"r0001m0", {{"mb", 4}}}}},
                      {"variations", {{"alt", {{"params", {{"mb", 10}}}}}}}};
  const CampaignSpec spec = parseCampaignSpec(j, "spec", "/tmp", /*require_inputs=*/false);
  const CampaignDiskEstimate e = estimateCampaignDisk(spec);
  // Nominal: 5 tasks of 2 MB and one of 4 MB; alt: 2 tasks (its members) of 10 MB; each file
  // half a block more (2 kB) on disk.
  EXPECT_DOUBLE_EQ(e.tasks.bytes, (5 * 2 + 4 + 2 * 10) * 1e6 + 8 * 3 * 2048);
  EXPECT_DOUBLE_EQ(e.tasks.files, 8 * 3.0);
  EXPECT_EQ(e.tasks_unknown, 0);
  ASSERT_TRUE(e.aggregate.has_value());
  EXPECT_DOUBLE_EQ(e.total().bytes, (5 * 2 + 4 + 2 * 10 + 3) * 1e6 + (8 * 3 + 5) * 2048);
  EXPECT_DOUBLE_EQ(e.runningBytesEach(), 20e6);
  EXPECT_EQ(e.advice, (std::vector<std::string>{"less", "fewer"}));
  ASSERT_EQ(e.groups.size(), 2u);
  ASSERT_EQ(e.groups[0].parts.size(), 2u);
  EXPECT_EQ(e.groups[0].parts[0].tasks, 5);
  EXPECT_EQ(e.groups[0].parts[1].tasks, 1);
  const std::string text = describeDiskEstimate(e, 4);
  for (const char* line :
       {"  disk: about 37 MB in 29 files once every task is done and aggregated\n",
        "    nominal: 6 task(s)\n      5 x 2.0 MB (mb 2)\n      1 x 4.0 MB (mb 4)\n",
        "    variation alt: 2 task(s), 10 MB each (mb 10)\n", "    aggregate: 3.0 MB (bands)\n",
        "each running task's state/ adds up to about 20 MB (4 at once: 80 MB)\n",
        "    warning: much memory\n    smaller: less\n    smaller: fewer\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << " in\n" << text;
  const nlohmann::json js = e.toJson();
  EXPECT_DOUBLE_EQ(js.at("bytes").get<double>(), 37e6 + 29 * 2048);
  EXPECT_EQ(js.at("aggregate").at("how"), "bands");
  EXPECT_EQ(js.at("warnings"), nlohmann::json::array({"much memory"}));
  EXPECT_EQ(js.at("groups").at(1).at("parts").at(0).at("bytes_each"), 10e6 + 3 * 2048);
  j["task"] = "unsized";
  const CampaignDiskEstimate none =
      estimateCampaignDisk(parseCampaignSpec(j, "spec", "/tmp", /*require_inputs=*/false));
  EXPECT_EQ(none.tasks_unknown, 8);
  EXPECT_FALSE(none.aggregate.has_value());
  EXPECT_NE(describeDiskEstimate(none, 1).find("disk: not estimated"), std::string::npos)
      << describeDiskEstimate(none, 1);
}

// The warning of `campaign init`: the bytes and the inodes that do not fit (inodes only where
// the file system counts them), the kind's advice and the command that says more; nothing when
// both fit.
TEST(DiskEstimate, AShortfallNamesTheDirectoryTheFiguresAndWhatMakesItSmaller) {
  CampaignDiskEstimate e;
  e.tasks = {2e9, 100};
  e.aggregate = DiskUseEstimate{{1e9, 20}, 0, "bands", "", ""};
  e.advice = {"\"iteration_weights\": false"};
  FreeSpace free;
  free.bytes = 2.5e9;
  free.files = 1000;
  free.files_known = true;
  const std::string bytes = diskShortfall(e, free, "/scratch/my camp");
  for (const char* part : {"will take about 3.0 GB where the file system of /scratch/my camp has "
                           "2.5 GB free: tasks will fail once it is full",
                           "or make the outputs smaller (\"iteration_weights\": false)",
                           "`foldfarm campaign plan '/scratch/my camp/spec.json' --gpus 1 "
                           "--task-minutes 1` says what takes it"})
    EXPECT_NE(bytes.find(part), std::string::npos) << part << " in " << bytes;
  free.bytes = 4e9;
  EXPECT_EQ(diskShortfall(e, free, "/scratch/camp"), "");
  free.files = 50;
  EXPECT_NE(diskShortfall(e, free, "/d").find("about 120 files where it has 50 free inodes"),
            std::string::npos)
      << diskShortfall(e, free, "/d");
  free.bytes = 1e9;  // both
  EXPECT_NE(diskShortfall(e, free, "/d").find("1.0 GB free, and about 120 files where it has 50"),
            std::string::npos)
      << diskShortfall(e, free, "/d");
  free.bytes = 4e9;
  free.files_known = false;  // btrfs: no inode count
  EXPECT_EQ(diskShortfall(e, free, "/d"), "");
  EXPECT_EQ(formatBytes(0), "0 B");
  EXPECT_EQ(formatBytes(999), "999 B");
  EXPECT_EQ(formatBytes(1000), "1.0 kB");
  EXPECT_EQ(formatBytes(88e6), "88 MB");
  EXPECT_EQ(formatBytes(9.96e9), "10 GB");
  EXPECT_EQ(formatBytes(988e9), "988 GB");
  EXPECT_EQ(formatCount(99017), "99,017");
  EXPECT_EQ(formatCount(1e6), "1,000,000");
  EXPECT_EQ(formatCount(12), "12");
}

// `lfs quota -q -u|-g ID DIR` as Lustre prints it: the mount (on its own line when longer than
// 15 characters), then kbytes, quota, limit, grace, files, quota, limit, grace; '*' marks a
// value over its limit, "[ ]" an inaccurate one (an OST down). The room is the hard limit
// (else the soft one) less what is used; 0 is no limit.
TEST(DiskEstimate, ALustreQuotaLeavesItsLimitLessWhatIsUsed) {
  std::optional<QuotaRoom> q = parseLfsQuota("  /lus/scratch  1500  0  2000  -  40  0  100  -\n");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->bytes, 500 * 1024.0);
  EXPECT_EQ(q->files, 60);
  q = parseLfsQuota(
      "/lustre/orion/a-very-long-mount\n                 2100*  1000  2000  6d23h  7  0  0  -\n"
      "uid 1000 is using default file quota setting\n");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->bytes, 0) << "over the hard limit: no room";
  EXPECT_EQ(q->files, -1) << "no file limit";
  q = parseLfsQuota(
      "/lus [1500] 1800 0 - [40] 0 0 -\nSome errors happened when getting quota "
      "info. Some devices may be not working or deactivated.\n");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->bytes, 300 * 1024.0) << "the soft limit where no hard one is set";
  q = parseLfsQuota("/lus 1500** 1800 2000 6d 40 0 0 -\n");
  ASSERT_TRUE(q) << "inaccurate (a remote error) and over its soft limit";
  EXPECT_EQ(q->bytes, 300 * 1024.0) << "the soft limit where one is set: its grace runs out";
  // The path as lfs was given it, spaces and all, taken off whole.
  q = parseLfsQuota("my camp 1 2 3/c  1500  0  2000  -  40  0  100  -\n", "my camp 1 2 3/c");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->bytes, 500 * 1024.0);
  EXPECT_EQ(q->files, 60);
  q = parseLfsQuota("/scratch/a long 4 5/c\n               1500  0  2000  -  40  0  100  -\n",
                    "/scratch/a long 4 5/c");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->bytes, 500 * 1024.0);
  q = parseLfsQuota("/lus 0 0 0 - 0 0 0 -\n");
  ASSERT_TRUE(q);
  EXPECT_LT(q->bytes, 0);
  EXPECT_LT(q->files, 0);
  for (const char* text :
       {"", "Disk quotas for usr 1000 (uid 1000):\n     Filesystem  kbytes   quota   limit\n",
        "/lus 10 0 0 -\n", "/lus 1.5G 0 2G - 40 0 0 -\n",
        "lfs: /tmp is not on a Lustre file system\n"})
    EXPECT_FALSE(parseLfsQuota(text)) << text;
  // The shortfall names the quota that limits each figure.
  CampaignDiskEstimate e;
  e.tasks = {2e9, 100};
  FreeSpace free;
  free.bytes = 1e9;
  free.bytes_by = "the Lustre quota of user 1000 (`lfs quota -u 1000 /lus/d`)";
  free.files = 50;
  free.files_known = true;
  free.files_by = "the Lustre quota of group 7 (`lfs quota -g 7 /lus/d`)";
  const std::string said = diskShortfall(e, free, "/lus/d");
  EXPECT_NE(said.find("will take about 2.0 GB where the Lustre quota of user 1000 (`lfs quota -u "
                      "1000 /lus/d`) leaves 1.0 GB, and about 100 files where the Lustre quota "
                      "of group 7 (`lfs quota -g 7 /lus/d`) leaves 50: tasks will fail"),
            std::string::npos)
      << said;
}

}  // namespace
}  // namespace foldfarm::jobs
