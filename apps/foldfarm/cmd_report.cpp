// foldfarm study scaling (and, from cmd_login.cpp, foldfarm report D at its place)
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "core/base/cli_checks.hpp"
#include "core/train/benchmarks.hpp"
#include "report/campaign_report.hpp"
#include "report/scaling_study.hpp"

namespace foldfarm::app {
namespace {

void registerScalingStudy(CommandGroups& g) {
  auto o = std::make_shared<report::ScalingOptions>();
  auto no_ddp = std::make_shared<bool>(false), no_sched = std::make_shared<bool>(false);
  CLI::App* cmd = g.study.add_subcommand(
      "scaling",
      "Run `bench ddp` under mpirun on 1..N ranks and `bench scheduler` on 1..K slots; write "
      "scaling.json, scaling.md, PNG plots of throughput and efficiency, and the alpha-beta "
      "extrapolation (report/alpha_beta.hpp)");
  cmd->add_option("--max-ranks", o->max_ranks, "largest MPI rank count (1..N)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--max-slots", o->max_slots, "largest scheduler slot count (1..K)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--preset", o->preset, "PET preset of the data-parallel benchmark")
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "jets per rank per step")
      ->capture_default_str()
      ->check(cli::kPositive);
  cmd->add_option("--steps", o->steps, "timed steps per run")
      ->capture_default_str()
      ->check(cli::between(1, kMaxBenchSteps));
  cmd->add_option("--particles", o->particles, "particle slots per jet")
      ->capture_default_str()
      ->check(CLI::Range(8, 512));
  cmd->add_option("--tasks", o->tasks, "noop tasks per scheduler run")
      ->capture_default_str()
      ->check(cli::kPositive);
  cmd->add_option("--sleep-tasks", o->sleep_tasks,
                  "sleep tasks per scheduler run (makespan efficiency)")
      ->capture_default_str()
      ->check(cli::kNonNegative);
  cmd->add_option("--sleep-seconds", o->sleep_s, "duration of each sleep task")
      ->capture_default_str()
      ->check(cli::kPositive);
  cmd->add_option("--out", o->out_dir, "output directory")->capture_default_str();
  cmd->add_option("--exe", o->exe, "foldfarm executable to benchmark (default: this one)");
  cmd->add_option("--mpirun", o->mpirun, "MPI launcher")->capture_default_str();
  cmd->add_option("--compute-ms", o->compute_ms,
                  "step compute time for the model (default: the measured 1-rank step)")
      ->check(cli::between(0, report::kMaxScalingMs));
  cmd->add_option("--alpha-us", o->alpha_us, "interconnect latency per message [us]")
      ->capture_default_str()
      ->check(cli::between(0, report::kMaxScalingMs));
  cmd->add_option("--bandwidth-gbps", o->bandwidth_gbps, "interconnect bandwidth [GB/s]")
      ->capture_default_str()
      ->check(cli::between(report::kMinScalingGbps, report::kMaxScalingGbps));
  cmd->add_option("--extrapolate-to", o->extrapolate_to, "largest rank count of the model table")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--timeout", o->timeout_s, "seconds allowed per benchmark run")
      ->capture_default_str()
      ->check(cli::between(report::kMinScalingTimeoutS, report::kMaxScalingTimeoutS));
  cmd->add_flag("--no-ddp", *no_ddp, "skip the data-parallel benchmark");
  cmd->add_flag("--no-scheduler", *no_sched, "skip the scheduler benchmark");
  cmd->callback([o, no_ddp, no_sched] {
    o->ddp = !*no_ddp;
    o->scheduler = !*no_sched;
    nlohmann::json s = report::runScalingStudy(*o);
    std::printf("%s", report::scalingMarkdown(s).c_str());
  });
}

}  // namespace

void registerReportCommands(CommandGroups& g) {
  registerReportCommand(g);
  registerScalingStudy(g);
}

}  // namespace foldfarm::app
