// bench allreduce and bench ddp: options and printing; the work is dist/benchmarks.hpp's.
#include <cstdio>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "core/base/cli_checks.hpp"
#include "core/train/benchmarks.hpp"
#include "dist/benchmarks.hpp"
#include "dist/cli_options.hpp"

namespace foldfarm::app {
namespace {

struct AllreduceArgs : dist::AllreduceBenchOptions {
  bool json = false;
  dist::DistCli cli;  // --dist-backend, --bucket-cap-mb, --collective-timeout
};

struct DdpArgs : dist::DdpBenchOptions {
  bool json = false;
  dist::DistCli cli;
};

void runAllreduce(AllreduceArgs a) {
  a.dist = a.cli.resolve();
  const nlohmann::json j = benchAllreduce(
      a, a.json ? std::function<void(const std::string&)>()
                : [](const std::string& l) { std::printf("%s\n", l.c_str()); });
  if (a.json && !j.is_null()) std::printf("%s\n", j.dump(2).c_str());
}

void runDdp(DdpArgs a) {
  a.dist = a.cli.resolve();
  const nlohmann::json j = benchDdp(a);
  if (j.is_null()) return;  // not the root rank
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "%s x%d ranks: %.1f jets/s, step %.1f ms, all-reduce %.2f ms (%.2f ms not overlapped)\n",
        a.preset.c_str(), j.at("ranks").get<int>(), j.at("jets_per_s").get<double>(),
        j.at("step_ms").get<double>(), j.at("comm_ms").get<double>(),
        j.at("comm_wait_ms").get<double>());
  }
}

}  // namespace

void registerDistCommands(CommandGroups& g) {
  auto ar = std::make_shared<AllreduceArgs>();
  CLI::App* cmd = g.bench.add_subcommand(
      "allreduce",
      "All-reduce time, algorithm and bus bandwidth (busbw = algbw*2(n-1)/n) from 1 KiB to "
      "64 MiB and at PET omnilearn's gradient size, raw vs bucketed; run under mpirun -np N");
  cmd->add_flag("--json", ar->json, "Print the figures as JSON on stdout");
  cmd->add_flag("-c,--check", ar->check, "Check every result against the exact sum");
  cmd->add_option("--min-kib", ar->min_kib, "Smallest size in KiB")
      ->capture_default_str()
      ->check(cli::between(dist::kMinAllreduceKib, dist::kMaxAllreduceKib));
  cmd->add_option("--max-mib", ar->max_mib,
                  "Largest size in MiB (0: PET omnilearn's gradient size alone)")
      ->capture_default_str()
      ->check(cli::between(0, dist::kMaxAllreduceMib));
  cmd->add_option("--repeats", ar->repeats,
                  "Alternating raw/bucketed measurements per size (medians are reported)")
      ->capture_default_str()
      ->check(cli::between(1, kMaxBenchSteps));
  cmd->add_option("--threads", ar->threads, "Intra-op threads per rank")->capture_default_str();
  ar->cli.addTo(*cmd);
  cmd->callback([ar] { runAllreduce(*ar); });

  auto dd = std::make_shared<DdpArgs>();
  CLI::App* ddp = g.bench.add_subcommand(
      "ddp",
      "Data-parallel PET pretraining steps, as foldfarm pretrain takes them (weak scaling: "
      "--batch jets per rank); run under mpirun -np N and compare jets_per_s with -np 1");
  ddp->add_option("--preset", dd->preset, "PET preset: tiny or omnilearn")->capture_default_str();
  ddp->add_option("--batch", dd->batch, "Jets per rank per step")
      ->capture_default_str()
      ->check(cli::kPositive);
  ddp->add_option("--steps", dd->steps, "Timed steps")
      ->capture_default_str()
      ->check(cli::between(1, kMaxBenchSteps));
  ddp->add_option("--warmup", dd->warmup, "Untimed steps first")
      ->capture_default_str()
      ->check(cli::between(0, kMaxBenchSteps));
  ddp->add_option("--precision", dd->precision, "fp32, or bf16 (autocast; GPU ranks)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  ddp->add_option("--particles", dd->particles,
                  "Particle slots per jet (synthetic JetClass-like jets, truncated)")
      ->capture_default_str()
      ->check(CLI::Range(8, 512));
  ddp->add_option("--threads", dd->threads, "Intra-op and BLAS threads per rank")
      ->capture_default_str();
  ddp->add_flag("--json", dd->json, "Print the figures as JSON on stdout");
  dd->cli.addTo(*ddp);
  ddp->callback([dd] { runDdp(*dd); });
}

}  // namespace foldfarm::app
