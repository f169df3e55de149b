#include "jobs/plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <queue>
#include <random>
#include <tuple>
#include <vector>

#include "core/base/error.hpp"

namespace foldfarm::jobs {

nlohmann::json PlanResult::toJson() const {
  return {{"makespan_s", makespan_s},
          {"makespan_h", makespan_s / 3600.0},
          {"gpu_hours", gpu_hours},
          {"busy_gpu_hours", busy_gpu_hours},
          {"node_hours", node_hours},
          {"nodes", nodes},
          {"slots", slots},
          {"attempts", attempts},
          {"failed_tasks", failed_tasks},
          {"held_tasks", held_tasks},
          {"utilisation", utilisation}};
}

PlanResult simulatePlan(const PlanInput& in) {
  // Written so that NaN fails too; the upper bounds keep the figures finite (a task time
  // of 1e308 minutes printed "makespan ?" and "utilisation -nan%") and gpus * tasks per GPU
  // within an int.
  if (in.tasks < 0 || in.gpus < 1 || in.gpus > 1000000 || in.tasks_per_gpu < 1 ||
      in.tasks_per_gpu > 256 || in.gpus_per_node < 1 || !(in.task_s > 0 && in.task_s <= 1e9) ||
      !(in.task_cv >= 0 && in.task_cv <= kMaxPlanSpread) ||
      !(in.failure_rate >= 0 && in.failure_rate < 1) || in.max_attempts < 1) {
    throw InputError(
        "plan: need tasks >= 0, 1 to 10^6 GPUs, 1 to 256 tasks per GPU, a task time above 0 "
        "and up to 10^9 s, a spread from 0 to 10 and a failure rate from 0 to below 1");
  }
  PlanResult r;
  r.slots = in.gpus * in.tasks_per_gpu;
  r.nodes = (in.gpus + in.gpus_per_node - 1) / in.gpus_per_node;
  std::mt19937_64 rng(in.seed);
  // Log-normal with the requested mean and cv: sigma² = ln(1 + cv²), mu = ln(mean) - sigma²/2.
  double sigma2 = std::log1p(in.task_cv * in.task_cv);
  std::normal_distribution<double> gauss(std::log(in.task_s) - sigma2 / 2, std::sqrt(sigma2));
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  auto duration = [&] { return in.task_cv > 0 ? std::exp(gauss(rng)) : in.task_s; };

  using Slot = std::pair<double, int>;  // free at, slot
  std::priority_queue<Slot, std::vector<Slot>, std::greater<Slot>> free;
  for (int s = 0; s < r.slots; ++s) free.emplace(0.0, s);
  // Work items in dispatch order: a retried task re-enters at the time its attempt failed; a
  // task that waits for others enters when the last of them is done.
  using Item = std::tuple<double, int, int>;  // ready at, attempts so far, task
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> ready;
  std::vector<int> waiting(static_cast<size_t>(in.tasks), 0);
  std::vector<double> ready_at_least(static_cast<size_t>(in.tasks), 0.0);
  std::vector<std::vector<int>> dependents(static_cast<size_t>(in.tasks));
  for (int t = 0; t < in.tasks && t < static_cast<int>(in.needs.size()); ++t)
    for (int n : in.needs[static_cast<size_t>(t)]) {
      if (n < 0 || n >= in.tasks || n == t) throw Error("plan: task graph names no task");
      ++waiting[static_cast<size_t>(t)];
      dependents[static_cast<size_t>(n)].push_back(t);
    }
  for (int t = 0; t < in.tasks; ++t)
    if (waiting[static_cast<size_t>(t)] == 0) ready.emplace(0.0, 0, t);
  int ran = 0;
  double busy = 0;
  while (!ready.empty()) {
    auto [ready_at, attempts, task] = ready.top();
    ready.pop();
    auto [free_at, slot] = free.top();
    free.pop();
    double start = std::max(free_at, ready_at);
    double d = duration();
    ++r.attempts;
    bool fails = in.failure_rate > 0 && uni(rng) < in.failure_rate;
    double used = fails ? d * uni(rng) : d;
    double end = start + used;
    busy += used;
    free.emplace(end, slot);
    r.makespan_s = std::max(r.makespan_s, end);
    if (fails) {
      if (attempts + 1 < in.max_attempts)
        ready.emplace(end, attempts + 1, task);
      else
        ++r.failed_tasks;
      continue;
    }
    ++ran;
    for (int d : dependents[static_cast<size_t>(task)]) {
      double& at = ready_at_least[static_cast<size_t>(d)];
      at = std::max(at, end);
      if (--waiting[static_cast<size_t>(d)] == 0) ready.emplace(at, 0, d);
    }
  }
  r.held_tasks = in.tasks - ran - r.failed_tasks;
  r.gpu_hours = in.gpus * r.makespan_s / 3600.0;
  r.busy_gpu_hours = busy / in.tasks_per_gpu / 3600.0;
  r.node_hours = r.nodes * r.makespan_s / 3600.0;
  r.utilisation = r.makespan_s > 0 ? busy / (r.slots * r.makespan_s) : 0.0;
  return r;
}

MeasuredTaskTimes measureTaskTimes(Campaign& campaign, bool require_done) {
  MeasuredTaskTimes m;
  double sum = 0, sum2 = 0;
  int64_t attempts = 0, failures = 0;
  campaign.forEachTask([&](const TaskRecord& t) {
    attempts += t.attempts;
    failures += t.failures;
    if (t.state != TaskState::kDone || t.finished_at <= t.started_at) return;
    double d = t.finished_at - t.started_at;
    ++m.done;
    sum += d;
    sum2 += d * d;
  });
  m.failure_rate = attempts > 0 ? static_cast<double>(failures) / attempts : 0;
  if (m.done == 0) {
    if (!require_done) return m;
    throw InputError(campaign.dir() +
                     ": no task is done yet, so there is no measured task "
                     "time; run some tasks first or give --task-minutes");
  }
  m.mean_s = sum / m.done;
  double var = std::max(0.0, sum2 / m.done - m.mean_s * m.mean_s);
  m.cv = m.mean_s > 0 ? std::sqrt(var) / m.mean_s : 0;
  return m;
}

PlanFigures planFigures(double task_minutes, double spread, double failure_rate,
                        const MeasuredTaskTimes* measured, const std::string& from) {
  PlanFigures f;
  std::string time_from = "given", spread_from = "default", failure_from = "default";
  std::string note;
  if (measured != nullptr) {
    const std::string on =
        "measured on " + std::to_string(measured->done) + " done task(s) of " + from;
    f.failure_rate = measured->failure_rate;
    failure_from = on;
    if (measured->done > 0) {
      f.task_s = measured->mean_s;
      time_from = on;
      f.task_cv = std::min(measured->cv, kMaxPlanSpread);
      spread_from = on;
      if (measured->cv > kMaxPlanSpread)
        note = fmt::format(
            "; the measured spread {:.0f}% is held at {:.0f}% (give --spread to "
            "set it)",
            100 * measured->cv, 100 * kMaxPlanSpread);
    }
  }
  if (task_minutes > 0) {
    f.task_s = task_minutes * 60;
    time_from = "given";
  }
  if (spread >= 0) {
    f.task_cv = spread;
    spread_from = "given";
    note.clear();  // nothing measured is held
  }
  if (failure_rate >= 0) {
    f.failure_rate = failure_rate;
    failure_from = "given";
  }
  f.source = "task time " + time_from + ", spread " + spread_from + ", failure rate " +
             failure_from + note;
  return f;
}

}  // namespace foldfarm::jobs
