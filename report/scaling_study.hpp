#pragma once
// `foldfarm study scaling`: runs the data-parallel benchmark on 1…N ranks and the campaign
// scheduler benchmark on 1…K slots, each as a child process, and writes
//   scaling.json   every measurement, the derived speed-ups/efficiencies, the α–β fit and
//                  the extrapolation
//   scaling.md     the same as Markdown tables
//   ddp_throughput.png, ddp_efficiency.png, ddp_model.png, scheduler_throughput.png,
//   scheduler_efficiency.png
// into the output directory, each atomically, after every benchmark has run (a failing
// benchmark writes nothing).
//
// Data parallel (weak scaling, --batch jets per rank):
//   mpirun --allow-run-as-root --oversubscribe -np n EXE bench ddp --preset P --batch B
//          --steps S --particles Q --threads 1 --json
//   read: ranks, jets_per_s, step_ms, comm_ms, comm_wait_ms, gradient_bytes, buckets.
//   efficiency(n) = jets_per_s(n) / (n · jets_per_s(1)).
// Scheduler (one orchestrator, k local worker slots):
//   EXE bench scheduler --tasks T --slots k --sleep-tasks M --sleep-seconds s --json
//   read: tasks_per_s (noop tasks: pure scheduling overhead), overhead_ms_per_task, and
//   makespan_efficiency (M sleep tasks: ideal makespan ceil(M/k)·s over the measured one);
//   speed-up(k) = tasks_per_s(k) / tasks_per_s(1), efficiency = speed-up / k.
// Extrapolation: report/alpha_beta.hpp, with T_compute = the 1-rank step time (or
// --compute-ms, e.g. a GPU's measured step), the overlap measured on the multi-rank runs,
// and two links: α, β fitted to this node's measured all-reduce times, and the given
// interconnect (--alpha-us, --bandwidth-gbps).
//
// Children run with OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1 (one core per rank).
#include <string>

#include <nlohmann/json.hpp>

namespace foldfarm::report {

struct ScalingOptions {
  int max_ranks = 4;
  int max_slots = 4;
  std::string preset = "tiny";
  int batch = 32;
  int steps = 10;
  int particles = 64;
  int tasks = 2000;
  int sleep_tasks = 20;
  double sleep_s = 0.1;
  std::string out_dir = "scaling";
  std::string exe;  // "" = this executable (/proc/self/exe)
  std::string mpirun = "mpirun";
  bool ddp = true;
  bool scheduler = true;
  double compute_ms = 0;         // 0 = the measured 1-rank step time
  double alpha_us = 5.0;         // interconnect latency per message
  double bandwidth_gbps = 12.5;  // interconnect bandwidth, GB/s (100 Gb/s InfiniBand)
  int extrapolate_to = 1024;
  double timeout_s = 600;  // per benchmark run
};

// The interconnect and timing values the model accepts (beyond them its figures are inf or
// NaN, and a timeout beyond int64 milliseconds was undefined).
inline constexpr double kMaxScalingMs = 1e6;     // --compute-ms, --alpha-us (µs)
inline constexpr double kMinScalingGbps = 1e-3;  // --bandwidth-gbps
inline constexpr double kMaxScalingGbps = 1e6;
inline constexpr double kMinScalingTimeoutS = 1;  // --timeout
inline constexpr double kMaxScalingTimeoutS = 1e6;

// Throws InputError for impossible options, Error when a benchmark fails (its command and
// the tail of its stderr in the message). Returns scaling.json's content.
nlohmann::json runScalingStudy(const ScalingOptions& options);

// From measurements (the "ddp" and "scheduler" arrays of scaling.json) to the derived
// tables and the model; pure, for tests. `ddp` rows need ranks, jets_per_s, step_ms,
// comm_ms, comm_wait_ms, gradient_bytes, buckets, batch_per_rank.
nlohmann::json analyseScaling(const nlohmann::json& ddp, const nlohmann::json& scheduler,
                              const ScalingOptions& options);

// Markdown tables of an analysed study.
std::string scalingMarkdown(const nlohmann::json& study);

}  // namespace foldfarm::report
