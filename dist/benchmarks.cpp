#include "dist/benchmarks.hpp"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include <fmt/format.h>

#include "core/base/clock.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/seed.hpp"
#include "core/data/features.hpp"
#include "core/data/synth.hpp"
#include "core/model/pet.hpp"
#include "core/model/pet_config.hpp"
#include "core/model/threads.hpp"
#include "core/train/benchmarks.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/optim.hpp"
#include "dist/bucketed_allreduce.hpp"
#include "dist/communicator.hpp"
#include "dist/control_plane.hpp"
#include "dist/data_parallel.hpp"
#include "dist/launch.hpp"

namespace foldfarm::dist {
namespace {

using Clock = std::chrono::steady_clock;

// Element i of rank r's input: (r + 1) * (i % 7 + 1); the sum over n ranks is
// n (n + 1) / 2 * (i % 7 + 1), exact in float32.
void fillPattern(at::Tensor& t, int rank) {
  auto idx = torch::arange(t.numel(), torch::kLong).remainder(7).add(1);
  t.copy_(idx.to(t.dtype()).mul(rank + 1));
}
double patternError(const at::Tensor& t, int world, double scale) {
  auto idx = torch::arange(t.numel(), torch::kLong).remainder(7).add(1).to(torch::kDouble);
  auto expect = idx.mul(world * (world + 1) / 2.0 * scale);
  // On the host: `expect` is a CPU tensor, and a GPU buffer (NCCL) minus it would throw.
  return (t.to(torch::kCPU, torch::kDouble) - expect).abs().max().item<double>();
}

nlohmann::json figure(const std::string& path, std::size_t bytes, double secs, int world) {
  const double algbw = bytes / secs / 1e9;
  return {{"path", path},
          {"bytes", bytes},
          {"time_us", secs * 1e6},
          {"algbw_GBps", algbw},
          {"busbw_GBps", algbw * 2.0 * (world - 1) / world}};
}

// Gradient bytes of the PET `omnilearn` pretraining model (as bench ddp builds it).
std::size_t petOmnilearnGradientBytes() {
  PetConfig cfg = petPreset("omnilearn");
  cfg.num_classes = 10;
  cfg.generator = true;
  Pet net(cfg);
  std::size_t bytes = 0;
  for (const auto& p : net->parameters()) {
    if (p.requires_grad()) bytes += static_cast<std::size_t>(p.numel() * p.element_size());
  }
  return bytes;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The all-reduce benchmark on `ctx`'s ranks (benchAllreduce).
nlohmann::json allreduceOn(DataParallelContext& ctx, const AllreduceBenchOptions& a,
                           const std::function<void(const std::string&)>& line) {
  const int world = ctx.worldSize();
  // One rank moves nothing: its bus bandwidth is 0 by the formula and its times are the
  // copies' alone (before: printed without a word).
  if (world == 1 && ctx.isRoot())
    logWarn(
        "bench allreduce: one rank exchanges nothing (busbw 0; the times are local copies); run "
        "it under mpirun -np N or srun with N >= 2");
  Communicator& comm = ctx.communicator();
  ControlPlane& control = ctx.control();
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(comm.device());
  std::vector<std::size_t> sizes;
  for (double b = a.min_kib * 1024; b <= a.max_mib * 1024 * 1024 + 1; b *= 4) {
    sizes.push_back(static_cast<std::size_t>(b));
  }
  const std::size_t pet_bytes = petOmnilearnGradientBytes();  // ~2 M fp32 gradients
  sizes.push_back(pet_bytes);
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());

  nlohmann::json rows = nlohmann::json::array();
  for (std::size_t bytes : sizes) {
    const std::int64_t n = static_cast<std::int64_t>(bytes / 4);
    const int iters = static_cast<int>(std::clamp<double>(256.0 * (1 << 20) / bytes, 5, 200));
    // Raw: one all-reduce of the whole buffer.
    at::Tensor flat = torch::zeros({n}, opts);
    auto raw_once = [&] {
      control.announce("benchmark all-reduce");
      auto w = comm.allreduceSum(flat);
      control.waitUntil([&] { return w->test(); });
    };
    std::string raw_check = "skipped";
    if (a.check) {
      fillPattern(flat, ctx.rank());
      raw_once();
      raw_check = patternError(flat, world, 1.0) == 0.0 ? "ok" : "WRONG";
    }
    for (int i = 0; i < 2; ++i) raw_once();

    // Bucketed: the same bytes as PET-like parameters (64 KiB each, the rest in the last).
    // Timed as the trainer runs it: autograd has accumulated each gradient into .grad
    // (which is the parameter's bucket view) and the hooks fire in reverse order as
    // backward produces them, then finish(): bookkeeping, bucket launches in order,
    // waiting, averaging. Autograd's own accumulation is not timed (a single process does
    // it too), just as the raw path starts with the gradients already in its buffer.
    // The checked pass feeds fresh gradients through gradientReady(), so it also covers
    // attaching .grad to the buckets (one copy, first step only).
    std::vector<at::Tensor> params;
    std::int64_t left = n;
    while (left > 0) {
      const std::int64_t m = std::min<std::int64_t>(left, 16384);
      params.push_back(torch::zeros({m}, opts).requires_grad_(true));
      left -= m;
    }
    std::vector<at::Tensor> grads;
    for (std::size_t k = 0; k < params.size(); ++k) {
      grads.push_back(torch::zeros({params[k].numel()}, opts));
    }
    auto bucketed = BucketedAllreduce::create(comm, control, params, a.dist.buckets);
    auto feed_once = [&] {
      for (std::size_t k = params.size(); k-- > 0;) bucketed->gradientReady(k, grads[k]);
      bucketed->finish();
    };
    auto bucket_once = [&] {
      for (std::size_t k = params.size(); k-- > 0;) bucketed->gradientAccumulated(k);
      bucketed->finish();
    };
    std::string bucket_check = "skipped";
    if (a.check) {
      for (auto& g : grads) fillPattern(g, ctx.rank());
    }
    feed_once();  // .grad undefined: attaches every .grad to its bucket
    if (a.check) {
      double err = 0;
      for (std::size_t k = 0; k < params.size(); ++k) {
        err = std::max(err, patternError(params[k].grad(), world, 1.0 / world));
        // .grad must be the bucket's memory, not the fed tensor
        if (params[k].grad().data_ptr() == grads[k].data_ptr()) err = 1.0;
      }
      // Again through the attached views (.grad holds the mean: mean + pattern in, the
      // mean of the pattern plus the old mean out).
      feed_once();
      for (std::size_t k = 0; k < params.size(); ++k) {
        err = std::max(err, patternError(params[k].grad(), world, 2.0 / world));
      }
      bucket_check = err <= 1e-6 ? "ok" : "WRONG";
    }
    for (int i = 0; i < 2; ++i) bucket_once();
    // Raw and bucketed alternate `repeats` times (side by side, so that load changes on a
    // shared machine hit both); each figure is the median, the ratio the median of the
    // per-repeat ratios. A repeat's time is the slowest rank's.
    std::vector<double> raw_t, bk_t, ratios;
    for (int r = 0; r < a.repeats; ++r) {
      ctx.barrier();
      auto t0 = Clock::now();
      for (int i = 0; i < iters; ++i) raw_once();
      std::vector<double> t{secondsSince(t0) / iters};
      ctx.barrier();
      t0 = Clock::now();
      for (int i = 0; i < iters; ++i) bucket_once();
      t.push_back(secondsSince(t0) / iters);
      control.allreduceMax(t);
      raw_t.push_back(t[0]);
      bk_t.push_back(t[1]);
      ratios.push_back(t[0] / t[1]);  // busbw ratio = inverse time ratio (same bytes)
    }
    nlohmann::json raw = figure("raw", bytes, median(raw_t), world);
    raw["check"] = raw_check;
    nlohmann::json bk = figure("bucketed", bytes, median(bk_t), world);
    bk["check"] = bucket_check;
    bk["buckets"] = bucketed->bucketCount();
    bk["busbw_vs_raw"] = median(ratios);
    bk["busbw_vs_raw_min"] = *std::min_element(ratios.begin(), ratios.end());
    bk["busbw_vs_raw_max"] = *std::max_element(ratios.begin(), ratios.end());
    bk["repeats"] = a.repeats;
    if (bytes == pet_bytes) bk["pet_omnilearn"] = true;
    if (ctx.isRoot() && line)
      line(fmt::format(
          "{:10} B  raw {:9.1f} us {:7.3f} GB/s bus   bucketed({}) {:9.1f} us {:7.3f} GB/s bus  "
          "ratio {:.2f}  check {}/{}",
          bytes, raw["time_us"].get<double>(), raw["busbw_GBps"].get<double>(),
          bucketed->bucketCount(), bk["time_us"].get<double>(), bk["busbw_GBps"].get<double>(),
          bk["busbw_vs_raw"].get<double>(), raw_check, bucket_check));
    rows.push_back(raw);
    rows.push_back(bk);
    if (a.check && (raw_check != "ok" || bucket_check != "ok")) {
      throw Error("all-reduce produced wrong sums at " + std::to_string(bytes) + " bytes");
    }
  }
  if (!ctx.isRoot()) return nullptr;
  return {{"benchmark", "allreduce"},
          {"ranks", world},
          {"backend", ctx.backendName()},
          {"host", detectLaunch().host},
          {"results", rows}};
}

}  // namespace

nlohmann::json benchAllreduce(const AllreduceBenchOptions& a,
                              const std::function<void(const std::string&)>& line) {
  // Sizes from one float to 1 GiB (a smaller start never grew: min-kib 0 filled the memory
  // with sizes); a largest size of 0 measures PET's gradient size alone.
  if (!(a.min_kib >= kMinAllreduceKib && a.min_kib <= kMaxAllreduceKib))
    throw InputError(fmt::format("bench allreduce: --min-kib must be from {} (4 bytes) to {}",
                                 kMinAllreduceKib, kMaxAllreduceKib));
  if (!(a.max_mib >= 0 && a.max_mib <= kMaxAllreduceMib))
    throw InputError(
        fmt::format("bench allreduce: --max-mib must be from 0 to {}", kMaxAllreduceMib));
  if (a.repeats < 1 || a.repeats > kMaxBenchSteps)
    throw InputError("bench allreduce: --repeats must be from 1 to " +
                     std::to_string(kMaxBenchSteps));
  configureThreads(a.threads);
  DataParallelContext ctx(detectLaunch(), a.dist);
  nlohmann::json out;
  // An error only this rank meets (its GPU out of memory) ends the others at once.
  leaveOnError(ctx, [&] { out = allreduceOn(ctx, a, line); });
  return out;
}

namespace {

// The weak-scaling benchmark on `ctx`'s ranks (benchDdp).
nlohmann::json ddpOn(DataParallelContext& ctx, const DdpBenchOptions& a) {
  const torch::Device dev = ctx.device();
  if (a.precision == "bf16" && !dev.is_cuda())
    throw InputError("bench ddp: --precision bf16 needs GPU ranks (--dist-backend nccl)");
  PetConfig cfg = petPreset(a.preset);
  cfg.num_classes = 10;
  cfg.generator = true;
  Pet net(cfg);
  net->resetParameters(1234);
  net->to(dev);
  net->train();
  // Flat buffers first: the gradient buckets become slices of the flat gradient.
  auto flat = std::make_shared<FlatParameters>(net->parameters());
  ctx.prepare(*net, flat.get());
  OptimizerSettings os;
  auto opt = makeFlatOptimizer(net, os, flat);
  Ema ema(net, 0.999, flat.get());
  GradientStepOptions so;
  so.objective = Objective::kPretrain;
  so.precision = a.precision;
  so.world_size = ctx.worldSize();
  GradientStep step(net, *opt, so);

  // Each rank's own jets (the generator's seed by rank), standardised as pretraining does.
  data::SynthConfig sc = data::SynthConfig::pretrainDefaults();
  sc.P = a.particles;
  const JetTensors set = JetTensors::fromArrays(
      data::synthPretrain(sc, 77 + static_cast<uint64_t>(ctx.rank()), 0, a.batch),
      data::FeatureStats::jetClass());
  std::vector<int64_t> rows(static_cast<size_t>(a.batch));
  std::iota(rows.begin(), rows.end(), 0);
  const JetBatch batch = batchToDevice(makeBatch(set, rows, /*trim=*/true), dev);

  double step_s = 0, comm_s = 0, wait_s = 0;
  std::size_t bytes = 0;
  int buckets = 0;
  const std::vector<at::Tensor> params = net->parameters();
  for (int s = 0; s < a.warmup + a.steps; ++s) {
    if (s == a.warmup) ctx.barrier();
    const auto t0 = Clock::now();
    step.run(batch, deriveSeed({77, static_cast<uint64_t>(s), static_cast<uint64_t>(ctx.rank())}));
    ctx.finishGradientSync();
    clipGradientNorm(params, 1.0, flat.get());
    opt->step();
    ema.update(net, s);
    // CUDA work is asynchronous: the step ends when the GPU is done with it.
    if (dev.is_cuda()) torch::cuda::synchronize(dev.index());
    if (s >= a.warmup) {
      step_s += secondsSince(t0);
      const SyncTiming st = ctx.lastSync();
      comm_s += st.comm_s;
      wait_s += st.wait_s;
      bytes = st.bytes;
      buckets = st.buckets;
    }
  }
  std::vector<double> m{step_s / a.steps, comm_s / a.steps, wait_s / a.steps};
  ctx.control().allreduceMax(m);  // the slowest rank sets the pace
  const double jets_per_s = static_cast<double>(a.batch) * ctx.worldSize() / m[0];
  if (!ctx.isRoot()) return nullptr;
  nlohmann::json out = {{"benchmark", "ddp"},
                        {"preset", a.preset},
                        {"objective", "pretrain"},
                        {"optimizer", os.kind + " (flat) + EMA"},
                        {"precision", a.precision},
                        {"device", dev.str()},
                        {"ranks", ctx.worldSize()},
                        {"backend", ctx.backendName()},
                        {"threads_per_rank", a.threads},
                        {"batch_per_rank", a.batch},
                        {"particles", a.particles},
                        {"particles_per_jet", batch.mask.sum().item<double>() / a.batch},
                        {"steps", a.steps},
                        {"parameters", net->parameterCounts().total},
                        {"gradient_bytes", bytes},
                        {"buckets", buckets},
                        {"buckets_slice_flat_gradient", ctx.bucketsSliceFlatGradient()},
                        {"jets_per_s", jets_per_s},
                        {"step_ms", m[0] * 1e3},
                        {"comm_ms", m[1] * 1e3},
                        {"comm_wait_ms", m[2] * 1e3}};
  return out;
}

}  // namespace

// Weak scaling: every rank takes the pretraining step of `foldfarm pretrain` on `batch`
// synthetic JetClass-like jets per step (GradientStep: classification + diffusion + noised
// classification; then the gradient all-reduce, clipping, flat Lion and EMA, as the Trainer
// takes them); global jets/s, step time, communication time and the part of it not hidden
// behind backward.
nlohmann::json benchDdp(const DdpBenchOptions& a) {
  checkBenchSteps("bench ddp", a.steps, a.warmup);
  configureThreads(a.threads);
  DataParallelContext ctx(detectLaunch(), a.dist);
  nlohmann::json out;
  // An error only this rank meets (its GPU out of memory) ends the others at once.
  leaveOnError(ctx, [&] { out = ddpOn(ctx, a); });
  return out;
}

}  // namespace foldfarm::dist
