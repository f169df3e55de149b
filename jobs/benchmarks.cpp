#include "jobs/benchmarks.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <utility>
#include <vector>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/process.hpp"
#include "core/base/text.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_spec.hpp"
#include "jobs/executor.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;

// Runs one scratch campaign; its figures mean something only when every task is done.
RunSummary runBenchCampaign(const std::string& dir, const json& spec, int slots) {
  Campaign c = Campaign::init(parseCampaignSpec(spec, "bench spec", dir), dir);
  RunOptions o;
  o.slots = slots;
  o.show_progress = false;
  const RunSummary s = runLocal(c, o);
  if (s.interrupted) throw InterruptedError("bench scheduler: stopped");
  const int tasks = c.spec().numTasks();
  if (s.tasks_done != tasks)
    throw Error("bench scheduler: " + std::to_string(tasks - s.tasks_done) + " of " +
                std::to_string(tasks) + " " + spec.at("task").get<std::string>() +
                " tasks did not finish, so their timings mean nothing; rerun with --keep and see "
                "`foldfarm campaign status " +
                shellWord(dir) + "`");
  return s;
}

// Where a sleep campaign's makespan went, from the task times its workers reported (the
// journal): each slot's worker starts (a process that loads its libraries) before its first
// task, then between two tasks on a slot the orchestrator journals one and dispatches the
// next, and after the last task the workers are stopped. {"worker_startup_s": the latest
// first start after `run_start`, "gap_ms": the mean time between a task's end and the next
// task's start on the same slot, "tail_s": from the last task's end to `run_end`}.
json makespanParts(Campaign& c, double run_start, double run_end) {
  std::map<int, std::vector<std::pair<double, double>>> by_slot;  // slot -> [start, end]
  for (const TaskRecord& t : c.tasks(TaskState::kDone))
    by_slot[t.slot].emplace_back(t.started_at, t.finished_at);
  double startup = 0, gaps = 0, last_end = run_start;
  int64_t count = 0;
  for (auto& [slot, runs] : by_slot) {
    std::sort(runs.begin(), runs.end());
    startup = std::max(startup, runs.front().first - run_start);
    for (const auto& r : runs) last_end = std::max(last_end, r.second);
    for (size_t k = 1; k < runs.size(); ++k, ++count) gaps += runs[k].first - runs[k - 1].second;
  }
  return {{"worker_startup_s", startup},
          {"gap_ms", count > 0 ? 1e3 * gaps / count : 0.0},
          {"tail_s", run_end - last_end}};
}

}  // namespace

json benchScheduler(const SchedulerBenchOptions& a) {
  if (a.tasks < 1 || a.slots < 1)
    throw InputError("bench scheduler: --tasks and --slots must be >= 1");
  if (a.sleep_tasks < 0 || a.command_tasks < 0 || a.pilot_ranks < 0)
    throw InputError(
        "bench scheduler: --sleep-tasks, --command-tasks and --pilot-ranks must be "
        ">= 0 (0 skips the figure)");
  // The pilot runs on this node, a rank per worker process like a slot (before: 2^31 - 1
  // ranks overflowed the rank count handed to mpirun).
  if (a.pilot_ranks > kMaxCpuSlots)
    throw InputError("bench scheduler: --pilot-ranks must be at most " +
                     std::to_string(kMaxCpuSlots) + " (worker processes on one node)");
  if (a.sleep_tasks > 0 && !(a.sleep_s > 0 && a.sleep_s <= kMaxSleepSeconds))
    throw InputError(
        "bench scheduler: --sleep-seconds must be above 0 and at most 10^7 (the sleep "
        "task's limit)");
  if (!(a.load_mb >= 0 && std::isfinite(a.load_mb)))
    throw InputError("bench scheduler: --load-mb must be >= 0 (0 skips the figure)");
  if (a.load_mb > 0 && a.load_tasks < 1)
    throw InputError("bench scheduler: --load-tasks must be >= 1 with --load-mb");
  registerBuiltinTaskKinds();
  TempDir scratch("ff_bench_scheduler", a.scratch);  // kept, also after a failure, with `keep`
  const std::string root = a.keep ? scratch.release() : scratch.path();
  json out{{"tasks", a.tasks}, {"slots", a.slots}, {"journal", "sqlite WAL synchronous=FULL"}};
  if (a.keep) out["dir"] = root;

  const RunSummary noop = runBenchCampaign(root + "/noop",
                                           json{{"name", "bench-noop"},
                                                {"task", "noop"},
                                                {"replicas", a.tasks},
                                                {"resources", {{"cpu_slots", a.slots}}}},
                                           a.slots);
  out["noop_elapsed_s"] = noop.elapsed_s;
  out["tasks_per_s"] = a.tasks / noop.elapsed_s;
  out["overhead_ms_per_task"] = 1e3 * noop.elapsed_s * a.slots / a.tasks;

  if (a.sleep_tasks > 0) {
    const double run_start = wallClockNow();
    const RunSummary sl = runBenchCampaign(root + "/sleep",
                                           json{{"name", "bench-sleep"},
                                                {"task", "sleep"},
                                                {"replicas", a.sleep_tasks},
                                                {"params", {{"seconds", a.sleep_s}}},
                                                {"resources", {{"cpu_slots", a.slots}}}},
                                           a.slots);
    const double ideal = std::ceil(static_cast<double>(a.sleep_tasks) / a.slots) * a.sleep_s;
    out["sleep_tasks"] = a.sleep_tasks;
    out["sleep_s"] = a.sleep_s;
    out["sleep_makespan_s"] = sl.elapsed_s;
    out["sleep_ideal_s"] = ideal;
    out["makespan_efficiency"] = ideal / sl.elapsed_s;
    const double run_end = wallClockNow();
    Campaign done = Campaign::open(root + "/sleep", Campaign::Access::kReadOnly);
    const json parts = makespanParts(done, run_start, run_end);
    out["sleep_worker_startup_s"] = parts["worker_startup_s"];
    out["sleep_gap_ms_per_task"] = parts["gap_ms"];
    out["sleep_tail_s"] = parts["tail_s"];
  }
  if (a.load_mb > 0) {
    // What a persistent worker saves: the same tasks reading a big input, once with the
    // worker keeping it in memory (cache), once reading it for every task.
    const std::string big = root + "/input.bin";
    {
      std::string block(1 << 20, '\0');
      for (size_t k = 0; k < block.size(); ++k) block[k] = static_cast<char>(k * 2654435761u >> 24);
      AtomicFile f(big);
      for (int m = 0; m < static_cast<int>(a.load_mb); ++m) f.write(block);
      f.commit();
    }
    auto per_task = [&](bool cache, const std::string& name) {
      const RunSummary s = runBenchCampaign(root + "/" + name,
                                            json{{"name", name},
                                                 {"task", "load"},
                                                 {"replicas", a.load_tasks},
                                                 {"params", {{"path", big}, {"cache", cache}}},
                                                 {"resources", {{"cpu_slots", 1}}}},
                                            1);
      return s.busy_s / a.load_tasks;
    };
    const double cached = per_task(true, "load-persistent");
    const double fresh = per_task(false, "load-per-task");
    out["load_mb"] = a.load_mb;
    out["load_task_s_persistent"] = cached;
    out["load_task_s_reload"] = fresh;
    out["persistent_saves_s_per_task"] = fresh - cached;
  }
  if (a.command_tasks > 0) {
    // What a real task costs the scheduler: `command` tasks running /bin/true, each of which
    // creates its task directory, takes its lease, writes task.log and a durable
    // task_result.json, and is journaled; the noop figure leaves all of that out.
    const json commandSpec{{"name", "bench-command"},
                           {"task", "command"},
                           {"replicas", a.command_tasks},
                           {"params", {{"argv", {"/bin/true"}}}},
                           {"resources", {{"cpu_slots", a.slots}}}};
    const RunSummary cmd = runBenchCampaign(root + "/command", commandSpec, a.slots);
    out["command_tasks"] = a.command_tasks;
    out["command_local_elapsed_s"] = cmd.elapsed_s;
    out["command_local_ms_per_task"] = 1e3 * cmd.elapsed_s * a.slots / a.command_tasks;
    const std::string mpirun = findProgram("mpirun");
    if (a.pilot_ranks > 0 && !mpirun.empty()) {
      // The same tasks through the MPI pilot: rank 0 dispatches, pilot_ranks ranks run them.
      json pilotSpec = commandSpec;
      pilotSpec["name"] = "bench-command-pilot";
      pilotSpec["executor"] = "mpi";
      pilotSpec["resources"] = {{"cpu_slots", 1}};
      const std::string dir = root + "/command-pilot";
      Campaign::init(parseCampaignSpec(pilotSpec, "bench spec", dir), dir);
      const auto t0 = std::chrono::steady_clock::now();
      const ProcessResult r =
          runProcess({mpirun, "--allow-run-as-root", "--oversubscribe", "-np",
                      std::to_string(a.pilot_ranks + 1), selfExecutable(), "--log-level", "warn",
                      "campaign", "run", dir, "--executor", "mpi"});
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!r.ok()) throw Error("bench scheduler: the MPI pilot failed: " + r.describeFailure());
      out["pilot_ranks"] = a.pilot_ranks;
      out["command_pilot_elapsed_s"] = elapsed;
      out["command_pilot_ms_per_task"] = 1e3 * elapsed * a.pilot_ranks / a.command_tasks;
      out["command_pilot_note"] = "includes mpirun start-up and MPI_Init of every rank";
    }
  }
  return out;
}

}  // namespace foldfarm::jobs
