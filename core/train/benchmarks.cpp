#include "core/train/benchmarks.hpp"

#ifdef FOLDFARM_HAVE_LEGACY_PROFILER
#include <torch/csrc/autograd/profiler_legacy.h>
#endif
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/base/error.hpp"
#include "core/base/run_threads.hpp"
#include "core/base/seed.hpp"
#include "core/data/features.hpp"
#include "core/data/jet_files.hpp"
#include "core/model/attention.hpp"
#include "core/model/pet.hpp"
#include "core/model/threads.hpp"
#include "core/train/device.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/observable_classifier.hpp"
#include "core/train/optim.hpp"
#include "core/train/torch_error.hpp"

namespace foldfarm {

using nlohmann::json;

namespace {

#ifdef FOLDFARM_HAVE_LEGACY_PROFILER
// Per-operator self time of the profiled steps (the legacy CPU profiler's push/pop ranges),
// printed to stderr, largest first.
void printOperatorProfile(const torch::autograd::profiler::thread_event_lists& lists,
                          int64_t steps) {
  using torch::autograd::profiler::EventKind;
  using torch::autograd::profiler::LegacyEvent;
  struct Row {
    double self_us = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Row> rows;
  double total = 0;
  for (const auto& events : lists) {
    struct Open {
      const LegacyEvent* ev;
      double child_us;
    };
    std::vector<Open> stack;
    for (const auto& e : events) {
      if (e.kind() == EventKind::PushRange) {
        stack.push_back({&e, 0.0});
      } else if (e.kind() == EventKind::PopRange && !stack.empty()) {
        const Open o = stack.back();
        stack.pop_back();
        const double incl = o.ev->cpuElapsedUs(e);
        Row& r = rows[o.ev->name()];
        r.self_us += incl - o.child_us;
        r.calls += 1;
        if (!stack.empty())
          stack.back().child_us += incl;
        else
          total += incl;
      }
    }
  }
  std::vector<std::pair<std::string, Row>> sorted(rows.begin(), rows.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.self_us > b.second.self_us; });
  std::fprintf(stderr, "%-48s %10s %7s %8s\n", "operator (self time)", "ms/step", "share", "calls");
  for (size_t i = 0; i < sorted.size() && i < 30; ++i)
    std::fprintf(stderr, "%-48.48s %10.2f %6.1f%% %8lld\n", sorted[i].first.c_str(),
                 sorted[i].second.self_us / 1000.0 / static_cast<double>(steps),
                 100.0 * sorted[i].second.self_us / std::max(total, 1.0),
                 static_cast<long long>(sorted[i].second.calls / steps));
  std::fprintf(stderr, "%-48s %10.2f\n", "all operators",
               total / 1000.0 / static_cast<double>(steps));
}

void startOperatorProfile() {
  torch::autograd::profiler::enableProfilerLegacy(
      torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
}

void printOperatorProfile(int64_t steps) {
  printOperatorProfile(torch::autograd::profiler::disableProfilerLegacy(), steps);
}
#else
void startOperatorProfile() {}
void printOperatorProfile(int64_t) {}
#endif

struct BenchRun {
  double jets_per_s = 0, step_ms = 0, mean_width = 0;
  double mean_multiplicity = 0;  // of the timed jets (their FLOPs are counted at it)
  double jets_per_cpu_s = 0;     // per CPU-second of this process (less sensitive to other load)
  double device_memory_mb = -1;  // GPU memory in use after the steps, any holder's (-1: CPU)
  // The allocator's peaks over this run alone (its pool emptied and its peak reset first):
  // bytes allocated to tensors, and reserved from the driver (-1: CPU).
  double peak_memory_mb = -1, peak_reserved_mb = -1;
  int64_t graphs = 0;          // CUDA graphs captured (one per batch shape)
  int members = 1;             // models trained side by side (the figures are their total)
  int threads_per_member = 0;  // intra-op threads each member's operators ran with
  std::vector<double> member_checksums;  // each member's parameter sum after the steps
};

double processCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// --attention's kernel; InputError for another name, or sdpa on a LibTorch without it.
AttentionKernel attentionKernelOf(const std::string& name) {
  if (name == "auto") return AttentionKernel::kAuto;
  if (name == "padded") return AttentionKernel::kPadded;
  if (name == "sdpa") {
#if TORCH_VERSION_MAJOR < 2
    throw InputError("bench pet --attention sdpa: this LibTorch (" TORCH_VERSION
                     ") has no scaled_dot_product_attention (2.x has); use auto or padded");
#endif
    return AttentionKernel::kSdpa;
  }
  throw InputError("bench pet: --attention must be auto, sdpa or padded, not '" + name + "'");
}

// The optimised path: bucketed batches (fixed shapes with --fixed-shapes), flat parameters,
// the chosen precision, draws on the device, clipping without a host read, CUDA graphs with
// --cuda-graphs: the Trainer's step (core/train/gradient_step.hpp). The baseline: padded to
// P, naive edges, composed normalisation, per-parameter optimiser, float32, draws on the
// host, LibTorch's clipping (which reads the norm back). The steps' batches are gathered
// (and pinned on a GPU) before the clock starts, as the Trainer's helper thread gathers
// them while steps run; the copy to the device is timed. With graphs, each batch shape of
// the timed steps is warmed up and captured first.
//
// `members` > 1: that many models (seeds 1, 2, ...) train side by side in this process, each
// from its own host thread, with its own draw generator and, on a GPU, its own stream: the
// figures are their total. Member m's steps are those of a lone run of the model of seed
// m + 1 (each member's parameter checksum is reported).
BenchRun benchOnce(const PetBenchOptions& a, const PetConfig& cfg, const JetTensors& set,
                   bool baseline, int64_t batch_size, torch::Device device, int members) {
  const bool pretrain = a.mode == "pretrain";
  const bool graphs = !baseline && a.cuda_graphs;
  const bool fixed = !baseline && (a.fixed_shapes || graphs);
  const auto batches = epochBatches(set, batch_size, 7, 0, 0, 1, !baseline);
  if (static_cast<int64_t>(batches.size()) < a.warmup + a.steps)
    throw InputError(a.data + ": too few jets for " + std::to_string(a.warmup + a.steps) +
                     " batches of " + std::to_string(batch_size) + "; raise --max-jets");
  // This run's peak alone: the last run's models are gone, its cached blocks returned.
  resetDeviceMemoryPeak(device);
  std::vector<JetBatch> host;
  for (int64_t s = 0; s < a.warmup + a.steps; ++s) {
    JetBatch b = makeBatch(set, batches[static_cast<size_t>(s)], !baseline);
    if (fixed)
      b = padBatch(b, batch_size, fixedBatchWidth(b.particles.size(1), set.particles.size(1)));
    if (device.is_cuda()) b = pinned(std::move(b));
    host.push_back(std::move(b));
  }

  struct Member {
    Pet model{nullptr};
    std::unique_ptr<torch::optim::Optimizer> opt;
    std::unique_ptr<GradientStep> step;
    std::vector<torch::Tensor> params;
  };
  std::vector<Member> team(static_cast<size_t>(members));
  for (int m = 0; m < members; ++m) {
    Member& t = team[static_cast<size_t>(m)];
    t.model = Pet(cfg);
    t.model->resetParameters(static_cast<uint64_t>(m) + 1);
    t.model->setBaseline(baseline);
    if (!baseline) t.model->setAttentionKernel(attentionKernelOf(a.attention));
    t.model->to(device);
    t.model->train();
    OptimizerSettings os;
    os.lr = 1e-5;
    t.opt = baseline ? makeOptimizer(t.model, os) : makeFlatOptimizer(t.model, os);
    GradientStepOptions so;
    so.objective = pretrain ? Objective::kPretrain : Objective::kClassifier;
    so.precision = baseline ? "fp32" : a.precision;
    so.cuda_graphs = graphs;
    so.host_draws = baseline;
    so.fixed_shapes = fixed;
    if (members > 1 && !baseline) so.draw_generator = newGenerator(device, 0);
    t.step = std::make_unique<GradientStep>(t.model, *t.opt, so);
    t.params = t.model->parameters();
  }
  auto runStep = [&](Member& t, const JetBatch& hb, int64_t s) {
    t.step->run(batchToDevice(hb, device), deriveSeed({3, static_cast<uint64_t>(s)}));
    if (baseline)
      torch::nn::utils::clip_grad_norm_(t.params, 1.0);
    else
      clipGradientNorm(t.params, 1.0, flatParametersOf(*t.opt));
    t.opt->step();
  };
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
  };
  // Steps [from, to) of every member: in this thread for one member, else one thread each
  // (on its own stream); the first error is rethrown here. The caller synchronises.
  auto runSteps = [&](int64_t from, int64_t to) {
    if (members == 1) {
      for (int64_t s = from; s < to; ++s) runStep(team[0], host[static_cast<size_t>(s)], s);
      return;
    }
    runThreads(members, [&](int m) {
      const StreamScope stream(device, m);  // the warm-up's stream again for the timed steps
      for (int64_t s = from; s < to; ++s)
        runStep(team[static_cast<size_t>(m)], host[static_cast<size_t>(s)], s);
    });
  };
  if (graphs) {
    // Warm-up and capture of every shape the timed steps take (two steps each).
    std::set<int64_t> widths;
    for (int64_t s = a.warmup; s < a.warmup + a.steps; ++s)
      if (widths.insert(host[static_cast<size_t>(s)].particles.size(1)).second)
        for (int k = 0; k < 2; ++k) runStep(team[0], host[static_cast<size_t>(s)], -1 - k);
  }
  // On the CPU the members share this process's threads: each member's thread gets its share
  // (a thread sizes its intra-op team from the count set when it first runs an operator).
  // Otherwise every member starts a team of all of them and the teams spin against each other.
  struct ThreadShare {
    int all;
    bool on;
    ~ThreadShare() {
      if (on) configureThreads(all);
    }
  } const share{at::get_num_threads(), members > 1 && !device.is_cuda()};
  if (share.on) configureThreads(std::max(1, share.all / members));
  BenchRun r;
  r.threads_per_member = at::get_num_threads();
  double jets = 0, width = 0;
  const bool profile = a.profile && baseline == a.baseline;
  // The members' streams are not ordered after the set-up's copies on the default stream.
  sync();
  runSteps(0, a.warmup);
  sync();
  if (profile) startOperatorProfile();
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = processCpuSeconds();
  runSteps(a.warmup, a.warmup + a.steps);
  sync();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu_seconds = processCpuSeconds() - c0;
  if (profile) printOperatorProfile(a.steps);
  double particles = 0;
  for (int64_t s = a.warmup; s < a.warmup + a.steps; ++s) {
    jets += static_cast<double>(host[static_cast<size_t>(s)].realRows()) * members;
    width += static_cast<double>(host[static_cast<size_t>(s)].particles.size(1));
    particles += host[static_cast<size_t>(s)].mask.sum().item<double>();  // padding: 0
  }
  r.mean_multiplicity = particles * members / jets;
  r.jets_per_s = jets / seconds;
  r.jets_per_cpu_s = jets / cpu_seconds;
  r.step_ms = 1000.0 * seconds / static_cast<double>(a.steps);
  r.mean_width = width / static_cast<double>(a.steps);
  r.graphs = team[0].step->graphsCaptured();
  r.members = members;
  for (const Member& t : team) {
    double sum = 0;
    for (const auto& p : t.params) sum += p.detach().to(torch::kFloat64).sum().item<double>();
    r.member_checksums.push_back(sum);
  }
  if (device.is_cuda()) {
    r.device_memory_mb = static_cast<double>(deviceMemoryInUse(device)) / 1048576.0;
    const DeviceMemoryPeak peak = deviceMemoryPeak(device);
    r.peak_memory_mb = static_cast<double>(peak.allocated) / 1048576.0;
    r.peak_reserved_mb = static_cast<double>(peak.reserved) / 1048576.0;
  }
  return r;
}

double sgemmGflops() {
  const torch::Tensor x = torch::randn({1024, 1024}), y = torch::randn({1024, 1024});
  torch::mm(x, y);
  const int reps = 10;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) torch::mm(x, y);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * 1024.0 * 1024.0 * 1024.0 * reps / dt / 1e9;
}

}  // namespace

void checkBenchSteps(const std::string& what, int64_t steps, int64_t warmup) {
  if (steps < 1 || warmup < 0 || steps > kMaxBenchSteps || warmup > kMaxBenchSteps)
    throw InputError(what + ": needs --steps from 1 and --warmup from 0, each at most " +
                     std::to_string(kMaxBenchSteps));
}

// Optimiser + EMA + zeroing per step on the same gradients: per-parameter tensors against
// flat buffers, one after the other in this process; also checks that both end bit-identical.
json benchOptim(const OptimBenchOptions& a) {
  checkBenchSteps("bench optim", a.steps, a.warmup);
  configureThreads(a.threads);
  const DeviceChoice dev = selectDevice(a.device);
  PetConfig cfg = petPreset(a.preset);
  cfg.num_classes = 10;
  cfg.generator = true;
  OptimizerSettings os;
  os.kind = a.kind;
  os.lr = 1e-5;
  os.lr_factor = 5;
  struct Run {
    double step_ms = 0;
    std::vector<torch::Tensor> params;
  };
  auto once = [&](bool flat) {
    Pet model(cfg);
    model->resetParameters(1);
    model->to(dev.device);
    auto opt = flat ? makeFlatOptimizer(model, os) : makeOptimizer(model, os);
    Ema ema(model, 0.999, flatParametersOf(*opt));
    // Fixed pseudo-gradients, the same for both runs.
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
    std::vector<torch::Tensor> grads;
    for (const auto& p : model->parameters())
      grads.push_back(torch::randn(p.sizes(), gen).to(dev.device) * 1e-3);
    Run r;
    double seconds = 0;
    for (int64_t s = 0; s < a.warmup + a.steps; ++s) {
      if (dev.isCuda()) torch::cuda::synchronize(dev.device.index());
      const auto t0 = std::chrono::steady_clock::now();
      zeroGradients(*opt);
      {
        torch::NoGradGuard ng;
        auto params = model->parameters();
        for (size_t i = 0; i < params.size(); ++i) {
          if (!params[i].grad().defined()) params[i].mutable_grad() = torch::zeros_like(params[i]);
          params[i].mutable_grad().add_(grads[i]);
        }
      }
      opt->step();
      ema.update(model, s);
      if (dev.isCuda()) torch::cuda::synchronize(dev.device.index());
      if (s >= a.warmup)
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    r.step_ms = 1000.0 * seconds / static_cast<double>(a.steps);
    for (const auto& p : model->parameters()) r.params.push_back(p.detach().cpu());
    return r;
  };
  const Run per = once(false), flat = once(true);
  bool same = per.params.size() == flat.params.size();
  for (size_t i = 0; same && i < per.params.size(); ++i)
    same = torch::equal(per.params[i], flat.params[i]);
  int64_t n = 0;
  for (const auto& p : per.params) n += p.numel();
  const json j = {{"preset", a.preset},
                  {"kind", a.kind},
                  {"device", dev.toJson()},
                  {"threads", a.threads},
                  {"parameters", n},
                  {"tensors", per.params.size()},
                  {"steps", a.steps},
                  {"per_parameter_step_ms", per.step_ms},
                  {"flat_step_ms", flat.step_ms},
                  {"speedup", per.step_ms / flat.step_ms},
                  {"bit_identical", same}};
  return j;
}

// The observable MLP's fit (the classifier of "mlp" chains and the base of "pet+mlp" ones) on
// a device, and with --compare the same fit on the CPU in the same process: whether the MLP
// pays on the task's GPU. Rows: `columns` standard normals, half labelled 1 and weighted by
// exp(x0), so that the fit has a density ratio to learn.
json benchMlp(const MlpBenchOptions& a) {
  if (a.rows < 20 || a.columns < 1 || a.batch < 1 || a.epochs < 1)
    throw InputError("bench mlp: needs --rows >= 20, --columns, --batch and --epochs >= 1");
  configureThreads(a.threads);
  const DeviceChoice dev = selectDevice(a.device);
  std::vector<std::string> names;
  for (int64_t c = 0; c < a.columns; ++c) names.push_back("x" + std::to_string(c));
  std::vector<float> x(static_cast<size_t>(a.rows * a.columns)), w(static_cast<size_t>(a.rows));
  std::vector<int64_t> y(static_cast<size_t>(a.rows));
  std::mt19937_64 g(1);
  std::normal_distribution<float> norm(0.f, 1.f);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t c = 0; c < a.columns; ++c) x[static_cast<size_t>(i * a.columns + c)] = norm(g);
    y[static_cast<size_t>(i)] = 2 * i < a.rows ? 0 : 1;
    w[static_cast<size_t>(i)] =
        y[static_cast<size_t>(i)] ? std::exp(x[static_cast<size_t>(i * a.columns)] - 0.5f) : 1.f;
  }
  MlpFitOptions o;
  o.epochs = a.epochs;
  o.patience = 0;
  o.batch_size = a.batch;
  o.seed = 2;
  struct Run {
    double seconds = 0;
    int64_t steps = 0;
    double val_loss = 0;
    std::vector<float> logits;
  };
  auto once = [&](const torch::Device& on) {
    {  // untimed: one epoch on a model of its own (CUDA context, kernels, allocator pool)
      ObservableClassifier warm(names, a.hidden, 3, on);
      MlpFitOptions wo = o;
      wo.epochs = 1;
      wo.label = "bench mlp warm-up";
      warm.fit(x, y, w, wo);
    }
    ObservableClassifier mlp(names, a.hidden, 3, on);
    if (on.is_cuda()) torch::cuda::synchronize(on.index());
    const auto t0 = std::chrono::steady_clock::now();
    o.label = "bench mlp on " + on.str();
    const FitResult fit = mlp.fit(x, y, w, o);
    Run r;
    r.logits = mlp.logits(x);  // reads the result back: the fit has finished on the device
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.steps = fit.steps;
    r.val_loss = fit.best_val_loss;
    return r;
  };
  auto figures = [&](const Run& r) {
    return json{{"seconds", r.seconds},
                {"epoch_s", r.seconds / static_cast<double>(a.epochs)},
                {"step_ms", 1e3 * r.seconds / static_cast<double>(std::max<int64_t>(1, r.steps))},
                {"steps", r.steps},
                {"rows_per_s", static_cast<double>(a.rows * a.epochs) / r.seconds},
                {"best_val_loss", r.val_loss}};
  };
  const Run run = once(dev.device);
  json j = {{"device", dev.toJson()}, {"rows", a.rows},     {"columns", a.columns},
            {"hidden", a.hidden},     {"batch", a.batch},   {"epochs", a.epochs},
            {"threads", a.threads},   {"fit", figures(run)}};
  if (a.compare && !dev.isCuda()) {
    // Before: the CPU fit compared with itself, "speedup_vs_cpu": 1.
    j["speedup_vs_cpu"] = nullptr;
    j["compare_note"] =
        "the fit ran on the CPU (" + dev.reason + "): there is no GPU fit to compare it with";
  } else if (a.compare) {
    const Run cpu = once(torch::kCPU);
    double worst = 0;
    for (size_t i = 0; i < run.logits.size(); ++i)
      worst = std::max(worst, std::abs(static_cast<double>(run.logits[i]) - cpu.logits[i]));
    j["cpu"] = figures(cpu);
    j["speedup_vs_cpu"] = cpu.seconds / run.seconds;
    j["max_logit_difference"] = worst;
  }
  return j;
}

json benchPet(const PetBenchOptions& a, const std::function<void(const std::string&)>& line) {
  checkBenchSteps("bench pet", a.steps, a.warmup);
  if (a.max_jets < 0) throw InputError("bench pet: --max-jets must be >= 0 (0: every jet)");
  if (!(a.peak_tflops >= 0 && std::isfinite(a.peak_tflops)))
    throw InputError("bench pet: --peak-tflops must be >= 0 (0: the default peak)");
  configureThreads(a.threads);
  if (a.mode != "classifier" && a.mode != "pretrain")
    throw InputError("--mode must be classifier or pretrain");
  const DeviceChoice dev = selectDevice(a.device, -1, /*allow_tf32=*/true);
  requirePrecision(a.precision, dev.device, "bench pet --precision");
  if (a.cuda_graphs) requireCudaGraphs(dev.device, 1, "bench pet --cuda-graphs");
  if (a.members.empty()) throw InputError("bench pet: --members needs at least one count");
  const int most_members = *std::max_element(a.members.begin(), a.members.end());
  if (most_members > 1 && a.cuda_graphs)
    throw InputError("bench pet: --cuda-graphs captures one model's steps; use --members 1");
  if (most_members > 1 && a.profile)
    throw InputError("bench pet: --profile reads one thread's operators; use --members 1");
  attentionKernelOf(a.attention);  // refused before the data is read
#ifndef FOLDFARM_HAVE_LEGACY_PROFILER
  if (a.profile)
    throw InputError("bench pet --profile: this LibTorch (" TORCH_VERSION
                     ") lacks the legacy profiler that --profile reads; run without it");
#endif
  const data::JetArrays raw = data::readJetsFiles({a.data}, a.max_jets);
  int64_t classes = 1;
  for (int64_t y : raw.labels) classes = std::max(classes, y + 1);
  PetConfig cfg = petPreset(a.preset);
  const bool pretrain = a.mode == "pretrain";
  cfg.num_classes = pretrain ? std::max<int64_t>(2, classes) : 1;
  cfg.generator = pretrain;
  data::JetArrays binary = raw;
  if (!pretrain)
    for (auto& y : binary.labels) y = y > 0 ? 1 : 0;
  const JetTensors set = JetTensors::fromArrays(binary, data::FeatureStats::jetClass());
  double mean_mult = 0;
  for (int64_t i = 0; i < raw.n; ++i) mean_mult += static_cast<double>(raw.multiplicity(i));
  mean_mult /= static_cast<double>(raw.n);

  const double sgemm = dev.isCuda() ? 0.0 : sgemmGflops();
  // The reference peak: the GPU's dense bf16 (H100/H200 SXM: 989 TFLOP/s), else this CPU's
  // measured sgemm.
  const double peak_gflops = a.peak_tflops > 0 ? a.peak_tflops * 1e3 : dev.isCuda() ? 989e3 : sgemm;
  json j = {{"preset", a.preset},
            {"mode", a.mode},
            {"device", dev.toJson()},
            {"precision", a.precision},
            {"attention", a.attention},
            {"fixed_shapes", a.fixed_shapes || a.cuda_graphs},
            {"cuda_graphs", a.cuda_graphs},
            {"threads", a.threads},
            {"steps", a.steps},
            {"data", a.data},
            {"padded_particles", raw.P},
            {"mean_multiplicity", mean_mult},
            {"peak_gflops", peak_gflops}};
  if (!dev.isCuda()) j["sgemm_gflops"] = sgemm;
  // The FLOPs of the jets timed (a few bucketed batches may hold jets narrower or wider than
  // the data's mean: counted at the data's mean they misstate the rate).
  auto record = [&](json& out, const BenchRun& r, const std::string& prefix) {
    const double flops_per_jet = 3.0 * petForwardFlops(cfg, r.mean_multiplicity, pretrain);
    if (line && std::abs(r.mean_multiplicity - mean_mult) > 0.1 * mean_mult)
      line(fmt::format(
          "note: the timed batches{} hold jets of mean multiplicity {:.1f}, the data's is {:.1f}: "
          "jets/s is that of those jets (FLOPs counted at theirs); more --steps time a sample "
          "closer to the data",
          prefix.empty() ? "" : " of the other path", r.mean_multiplicity, mean_mult));
    out[prefix + "timed_mean_multiplicity"] = r.mean_multiplicity;
    out[prefix + "flops_per_jet"] = flops_per_jet;
    out[prefix + "jets_per_s"] = r.jets_per_s;
    out[prefix + "jets_per_cpu_s"] = r.jets_per_cpu_s;
    out[prefix + "step_ms"] = r.step_ms;
    out[prefix + "mean_batch_width"] = r.mean_width;
    out[prefix + "useful_gflops"] = r.jets_per_s * flops_per_jet / 1e9;
    out[prefix + "achieved_tflops"] = r.jets_per_s * flops_per_jet / 1e12;
    out[prefix + "fraction_of_peak"] = r.jets_per_s * flops_per_jet / 1e9 / peak_gflops;
    if (!dev.isCuda())
      out[prefix + "fraction_of_sgemm"] = r.jets_per_s * flops_per_jet / 1e9 / sgemm;
    if (r.device_memory_mb >= 0) out[prefix + "device_memory_mb"] = r.device_memory_mb;
    if (r.peak_memory_mb >= 0) {
      out[prefix + "peak_memory_mb"] = r.peak_memory_mb;
      out[prefix + "peak_reserved_mb"] = r.peak_reserved_mb;
    }
    if (r.graphs > 0) out[prefix + "cuda_graphs_captured"] = r.graphs;
  };
  const std::vector<int64_t> sizes = a.batches.empty() ? std::vector<int64_t>{a.batch} : a.batches;
  json runs = json::array();
  for (int64_t batch : sizes) {
    double first_members_jets_per_s = 0;
    for (int members : a.members) {
      json r = {{"batch", batch}, {"members", members}};
      // A run that does not fit the device is said in its record and the others go on (before:
      // the padded baseline at batch 4096 ran out of a GPU's memory and took the figures
      // measured before it along).
      const auto attempt = [&](bool baseline,
                               const std::string& prefix) -> std::optional<BenchRun> {
        try {
          return benchOnce(a, cfg, set, baseline, batch, dev.device, members);
        } catch (const std::exception& e) {
          if (!isOutOfMemory(e)) throw;
          resetDeviceMemoryPeak(dev.device);  // what the failed run left cached
          r[prefix + "error"] = "out of memory: " + exceptionMessage(e);
          if (line)
            line(fmt::format(
                "{} {} batch {}{}: out of memory ({}); going on", a.preset, a.mode, batch,
                prefix.empty() ? "" : " (" + prefix.substr(0, prefix.size() - 1) + " path)",
                exceptionMessage(e)));
          return std::nullopt;
        }
      };
      const std::optional<BenchRun> tried = attempt(a.baseline, "");
      r["baseline"] = a.baseline;
      if (!tried) {
        runs.push_back(r);
        continue;
      }
      const BenchRun& main = *tried;
      record(r, main, "");
      r["member_checksums"] = main.member_checksums;
      r["threads_per_member"] = main.threads_per_member;
      if (a.members.size() > 1) {
        if (first_members_jets_per_s == 0) first_members_jets_per_s = main.jets_per_s;
        // Total jets/s against the first --members count's, same batch, same run.
        r["members_speedup"] = main.jets_per_s / first_members_jets_per_s;
      }
      const std::optional<BenchRun> compared =
          a.compare ? attempt(!a.baseline, a.baseline ? "optimised_" : "baseline_") : std::nullopt;
      if (compared) {
        const BenchRun& other = *compared;
        record(r, other, a.baseline ? "optimised_" : "baseline_");
        r["speedup"] =
            a.baseline ? other.jets_per_s / main.jets_per_s : main.jets_per_s / other.jets_per_s;
        r["speedup_cpu"] = a.baseline ? other.jets_per_cpu_s / main.jets_per_cpu_s
                                      : main.jets_per_cpu_s / other.jets_per_cpu_s;
      }
      if (line)
        line(fmt::format(
            "{} {} batch {}{} on {}: {:.1f} jets/s ({:.1f} ms/step), {:.3g} FLOP/jet, {:.2f}% of "
            "{:.0f} GFLOP/s{}",
            a.preset, a.mode, batch, members > 1 ? fmt::format(" x {} members", members) : "",
            dev.device.str(), main.jets_per_s, main.step_ms, r["flops_per_jet"].get<double>(),
            100.0 * r["fraction_of_peak"].get<double>(), peak_gflops,
            compared ? fmt::format(", the optimised path x{:.4g} the baseline's speed",
                                   r["speedup"].get<double>())
                     : std::string()));
      runs.push_back(r);
    }
  }
  // One batch size: its figures at the top level too (the form scripts read).
  if (runs.size() == 1)
    for (auto it = runs[0].begin(); it != runs[0].end(); ++it) j[it.key()] = it.value();
  j["runs"] = runs;
  return j;
}

}  // namespace foldfarm
