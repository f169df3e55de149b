#pragma once
// The benchmarks of the model layer, as `foldfarm bench pet|optim|mlp` runs them: each
// returns its figures as JSON (the command prints them, or a line per figure); side-by-side
// comparisons run in the same process, so that their ratios hold on a shared machine.
//
//   PetBenchOptions o; o.data = "jets.h5"; o.device = "cuda"; o.compare = true;
//   json j = benchPet(o, [](const std::string& l) { std::puts(l.c_str()); });
//
// Errors: InputError for bad options (one line naming the option), as the commands report.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldfarm {

// Timed and warm-up steps (or repeats) of a benchmark: a million steps is hours; warmup +
// steps of two INT64_MAX overflowed (SIGSEGV), of two INT_MAX ran no step (inf jets/s).
inline constexpr int64_t kMaxBenchSteps = 1000000;
// InputError("<what>: needs --steps from 1 and --warmup from 0, each at most 1000000").
void checkBenchSteps(const std::string& what, int64_t steps, int64_t warmup);

// PET's training step: the optimised path (bucketed batches, flat parameters, the precision,
// draws on the device, CUDA graphs where asked) and, with `compare`, the padded fp32 eager
// baseline beside it (core/train/gradient_step.hpp).
struct PetBenchOptions {
  std::string preset = "omnilearn", mode = "classifier", data;
  int64_t batch = 64, steps = 6, warmup = 2, max_jets = 2000;
  std::vector<int64_t> batches;  // several batch sizes in one run (empty: `batch`)
  std::vector<int> members{1};   // models trained side by side, per run (several counts)
  int threads = 2;
  bool baseline = false, compare = false, profile = false;
  bool fixed_shapes = false, cuda_graphs = false;
  std::string device = "cpu", precision = "fp32";
  // The optimised path's attention: auto (by device: SDPA on a GPU, trimmed on the CPU),
  // sdpa (LibTorch's fused kernel on any device; LibTorch 2.x) or padded.
  std::string attention = "auto";
  double peak_tflops = 0;  // the device's dense bf16 peak (0: 989 on a GPU, sgemm on the CPU)
};
// `line`, when set, receives one line per run (batch size, members) as it finishes.
nlohmann::json benchPet(const PetBenchOptions& o,
                        const std::function<void(const std::string&)>& line = nullptr);

// Optimiser + EMA + zeroing per step on the same gradients: per-parameter tensors against
// flat buffers; "bit_identical" says whether both ended with the same parameters.
struct OptimBenchOptions {
  std::string preset = "omnilearn", kind = "lion", device = "cpu";
  int64_t steps = 50, warmup = 5;
  int threads = 2;
};
nlohmann::json benchOptim(const OptimBenchOptions& o);

// The observable MLP's fit (observable_classifier.hpp) on a device, and with `compare` the
// same fit on the CPU.
struct MlpBenchOptions {
  std::string device = "auto";
  int64_t rows = 20000, columns = 6, batch = 256, epochs = 5;
  std::vector<int64_t> hidden = {64, 64};
  int threads = 0;
  bool compare = false;
};
nlohmann::json benchMlp(const MlpBenchOptions& o);

}  // namespace foldfarm
