#pragma once
// The data-parallel benchmarks, as `foldfarm bench allreduce|ddp` runs them under mpirun or
// srun (collective: every rank calls them; the root rank gets the figures as JSON, the
// others null).
//   benchAllreduce: raw against bucketed all-reduce from 1 KiB to 64 MiB and at PET
//     omnilearn's gradient size, nccl-tests' algbw and busbw (= algbw * 2 (n-1) / n), the two
//     paths alternating `repeats` times; `check` compares every sum with the exact one.
//   benchDdp: weak scaling of the pretraining step of `foldfarm pretrain` (GradientStep, the
//     all-reduce of buckets that slice the flat gradient, clipping, flat Lion, EMA) on
//     `batch` synthetic JetClass-like jets per rank.
// Errors: InputError for bad options; Error when `check` finds a wrong sum.
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "dist/make_context.hpp"

namespace foldfarm::dist {

// The message sizes bench allreduce accepts.
inline constexpr double kMinAllreduceKib = 1.0 / 256;      // one float
inline constexpr double kMaxAllreduceKib = 1024.0 * 1024;  // 1 GiB
inline constexpr double kMaxAllreduceMib = 65536;          // 64 GiB
struct AllreduceBenchOptions {
  bool check = false;
  double min_kib = 1, max_mib = 64;
  int repeats = 5;
  int threads = 1;
  DistOptions dist;
};
// `line`, when set, gets one line per size on the root rank as it is measured.
nlohmann::json benchAllreduce(const AllreduceBenchOptions& o,
                              const std::function<void(const std::string&)>& line = nullptr);

struct DdpBenchOptions {
  std::string preset = "tiny";
  std::string precision = "fp32";  // bf16: GPU ranks
  int batch = 32;                  // jets per rank per step
  int steps = 10, warmup = 2;
  int particles = 64;  // particle slots per jet
  int threads = 1;
  DistOptions dist;
};
nlohmann::json benchDdp(const DdpBenchOptions& o);

}  // namespace foldfarm::dist
