// The planner's simulation: exact where the answer is known, monotone where it is not.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/base/error.hpp"
#include "jobs/plan.hpp"

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

}  // namespace
}  // namespace foldfarm::jobs
