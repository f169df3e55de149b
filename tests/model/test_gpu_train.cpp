// Training on a GPU equals training on the CPU (label gpu; exit 77, skipped, without one):
// three trainer steps of each objective end within 1e-4 of the same steps on the CPU (fp32,
// TF32 off, the draws on the host), a fixed-shape padded batch gives the unpadded loss and
// gradients on the GPU, checkpoints written from a GPU model load on the CPU with the same
// outputs, and bf16 autocast trains (finite, decreasing loss) with fp32 master weights.
// Draws on the device: a run is repeatable from its seed. CUDA graphs: replaying a captured
// step equals the eager step in the same (static) form, step after step, in fp32 and bf16,
// and a Trainer with graphs trains. The observable MLP (classic OmniFold's classifier) fitted on
// the GPU ends where the same fit on the CPU ends, and its checkpoint loads on either device.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "core/data/features.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/device.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/losses.hpp"
#include "core/train/observable_classifier.hpp"
#include "core/train/optim.hpp"
#include "core/train/trainer.hpp"
#include "tests/model/test_jets.hpp"
#include "tests/support/gpu_skip.hpp"

using namespace foldfarm;
using modeltest::relativeL2;
using modeltest::worstRelative;
using torch::Tensor;

namespace {

JetTensors jets(int64_t n, uint64_t seed, bool multiclass) {
  data::JetArrays a = modeltest::randomJets(n, 32, 25, seed);
  if (multiclass)
    for (size_t i = 0; i < a.labels.size(); ++i) a.labels[i] = static_cast<int64_t>(i % 3);
  return JetTensors::fromArrays(a, data::FeatureStats::jetClass());
}

// The tiny preset with the generator head and 3 classes (the pretraining objective); with
// `feature_dropout`, that dropout instead of the preset's.
PetConfig pretrainTiny(std::optional<double> feature_dropout = std::nullopt) {
  PetConfig cfg = petPreset("tiny");
  cfg.num_classes = 3;
  cfg.generator = true;
  if (feature_dropout) cfg.feature_dropout = *feature_dropout;
  return cfg;
}

// Options of the GPU tests' short fits (no progress bar).
TrainOptions gpuOptions(int64_t batch_size, int64_t epochs, uint64_t seed) {
  TrainOptions o;
  o.batch_size = batch_size;
  o.max_epochs = epochs;
  o.seed = seed;
  o.device = torch::Device(torch::kCUDA, 0);
  o.show_progress = false;
  return o;
}

// Three epochs of the pretraining objective with `o` (lr 3e-4): finite losses, a later epoch
// below the first, float32 parameters (master weights under bf16).
void expectPretrainingLearns(TrainOptions o) {
  Pet model(pretrainTiny());
  model->resetParameters(2);
  o.optimizer.lr = 3e-4;
  CheckpointMeta meta;
  SingleProcessContext single;
  Trainer t(model, meta, o, single);
  const FitResult r = t.fit(jets(96, 4, true), nullptr, Objective::kPretrain);
  ASSERT_EQ(r.history.size(), 3u);
  for (const auto& e : r.history) EXPECT_TRUE(std::isfinite(e.train_loss));
  EXPECT_LT(std::min(r.history[1].train_loss, r.history[2].train_loss),
            r.history.front().train_loss);
  for (const auto& p : t.model()->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat32);
}

struct Trained {
  std::vector<Tensor> params;
  double train_loss = 0;
};

Trained trainThreeSteps(Objective objective, torch::Device device) {
  PetConfig cfg = petPreset("tiny");
  cfg.num_classes = objective == Objective::kPretrain ? 3 : 1;
  cfg.generator = objective == Objective::kPretrain;
  Pet model(cfg);
  model->resetParameters(7);
  const JetTensors train = jets(48, 3, objective == Objective::kPretrain);
  TrainOptions o;
  o.batch_size = 16;  // 3 steps per epoch
  o.max_epochs = 1;
  o.seed = 5;
  o.ema = true;
  o.device = device;
  o.host_draws = true;  // the CPU run's noise
  o.show_progress = false;
  o.optimizer.lr = 1e-4;
  CheckpointMeta meta;
  SingleProcessContext single;
  Trainer t(model, meta, o, single);
  const FitResult r = t.fit(train, nullptr, objective);
  Trained out;
  for (const auto& p : t.model()->parameters()) out.params.push_back(p.detach().cpu());
  out.train_loss = r.history.at(0).train_loss;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (!torch::cuda::is_available())
    foldfarm::testing::skipGpuTest("test_model_gpu_train",
                                   "no CUDA device (or LibTorch without CUDA)");
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

TEST(GpuTrainer, ThreeStepsOnTheGpuEqualThreeOnTheCpu) {
  const torch::Device gpu(torch::kCUDA, 0);
  for (const Objective objective : {Objective::kClassifier, Objective::kPretrain}) {
    const Trained cpu = trainThreeSteps(objective, torch::kCPU);
    const Trained cuda = trainThreeSteps(objective, gpu);
    const char* name = objective == Objective::kPretrain ? "pretrain" : "classifier";
    // Lion moves every parameter by +-lr per step, so a gradient element that is 0 on one
    // device and 1e-12 on the other differs by lr: compare the whole model (relative L2)
    // and the mean loss of the three steps, not single elements.
    EXPECT_LT(relativeL2(cuda.params, cpu.params), 1e-4) << name;
    EXPECT_NEAR(cuda.train_loss, cpu.train_loss, 1e-4 * std::abs(cpu.train_loss)) << name;
  }
}

TEST(GpuTrainer, PaddedBatchGivesTheUnpaddedLossAndGradientsOnTheGpu) {
  const torch::Device gpu(torch::kCUDA, 0);
  const JetTensors set = jets(20, 6, true);
  std::vector<int64_t> rows(13);
  for (int64_t i = 0; i < 13; ++i) rows[static_cast<size_t>(i)] = i;
  const JetBatch plain = batchToDevice(makeBatch(set, rows, true), gpu);
  const JetBatch padded = batchToDevice(
      padBatch(makeBatch(set, rows, true), 32, fixedBatchWidth(plain.particles.size(1))), gpu);
  auto lossAndGrads = [&](const JetBatch& b) {
    Pet model(pretrainTiny());
    model->resetParameters(9);
    model->to(gpu);
    model->train();
    model->generator().set_current_seed(21);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(12);
    Tensor loss;
    {
      const DrawRowsGuard draw(model, b.realRows());
      loss = pretrainLoss(model, b, gen).total;
    }
    loss.backward();
    std::vector<Tensor> g{loss.detach().cpu().reshape({1})};
    for (const auto& p : model->parameters())
      g.push_back(p.grad().defined() ? p.grad().cpu() : torch::zeros_like(p).cpu());
    return g;
  };
  const auto a = lossAndGrads(plain), b = lossAndGrads(padded);
  EXPECT_NEAR(a[0].item<double>(), b[0].item<double>(), 1e-5 * std::abs(a[0].item<double>()));
  EXPECT_LT(worstRelative(a, b), 1e-4);
}

TEST(GpuTrainer, CheckpointOfAGpuModelLoadsOnTheCpuWithTheSameOutputs) {
  const torch::Device gpu(torch::kCUDA, 0);
  PetConfig cfg = petPreset("tiny");
  cfg.num_classes = 1;
  cfg.generator = false;
  Pet model(cfg);
  model->resetParameters(4);
  model->to(gpu);
  model->eval();
  const JetTensors set = jets(16, 8, false);
  const Tensor on_gpu = predictProbabilities(model, set, 8);
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("ff_gpu_ckpt_" + std::to_string(::getpid())))
          .string();
  std::map<std::string, Tensor> t;
  addModelTensors(model, "model.", t);
  CheckpointMeta meta;
  meta.config = cfg;
  writeCheckpoint(dir, meta, t);
  const Checkpoint ck = readCheckpoint(dir);
  Pet cpu_model = loadPet(ck, false);
  const Tensor on_cpu = predictProbabilities(cpu_model, set, 8);
  EXPECT_TRUE(on_gpu.device().is_cpu());
  EXPECT_LT((on_gpu - on_cpu).abs().max().item<double>(), 1e-4);
  std::filesystem::remove_all(dir);
}

TEST(GpuTrainer, Bf16AutocastTrainsWithFloat32MasterWeights) {
  TrainOptions o = gpuOptions(16, 3, 1);
  o.precision = "bf16";
  o.fixed_shapes = true;
  expectPretrainingLearns(o);
}

TEST(GpuTrainer, DrawsOnTheDeviceRepeatFromTheSeed) {
  auto run = [&](uint64_t seed) {
    Pet model(pretrainTiny(0.2));
    model->resetParameters(3);
    TrainOptions o = gpuOptions(16, 2, seed);
    CheckpointMeta meta;
    SingleProcessContext single;
    Trainer t(model, meta, o, single);
    const FitResult r = t.fit(jets(64, 5, true), nullptr, Objective::kPretrain);
    EXPECT_TRUE(std::isfinite(r.history.back().train_loss));
    std::vector<Tensor> p;
    for (const auto& x : t.model()->parameters()) p.push_back(x.detach().cpu());
    // The model's draws are its CPU generator's again once the fit is over.
    EXPECT_TRUE(t.model()->drawGenerator().device().is_cpu());
    return p;
  };
  const auto a = run(11), b = run(11), c = run(12);
  // Another seed draws other noise; the same seed the same (what differs is the GPU's
  // atomics, far less).
  const double same = relativeL2(a, b), other = relativeL2(a, c);
  EXPECT_GT(other, 1e-5);
  EXPECT_LT(same, 0.1 * other) << "same seed " << same << ", other seed " << other;
}

namespace {

// `steps` gradient steps (+ clipping and Lion) over batches of two widths, alternating, so
// that a graph run warms up, captures and replays each shape. Returns the losses and the
// parameters after every step.
struct StepTrace {
  std::vector<double> losses;
  std::vector<std::vector<Tensor>> params;
  int64_t captured = 0, replays = 0;
};

StepTrace traceSteps(bool graphs, const std::string& precision, int steps) {
  const torch::Device gpu(torch::kCUDA, 0);
  Pet model(pretrainTiny(0.2));
  model->resetParameters(6);
  model->to(gpu);
  model->train();
  OptimizerSettings os;
  os.lr = 1e-4;
  auto opt = makeFlatOptimizer(model, os);
  GradientStepOptions so;
  so.objective = Objective::kPretrain;
  so.precision = precision;
  so.cuda_graphs = graphs;
  so.fixed_shapes = true;
  GradientStep step(model, *opt, so);
  const JetTensors set = jets(160, 9, true);
  StepTrace out;
  for (int s = 0; s < steps; ++s) {
    std::vector<int64_t> rows;
    const int64_t real = 9 + (s % 3);  // real rows vary under one padded shape
    for (int64_t i = 0; i < real; ++i) rows.push_back(16 * s + i);
    JetBatch b = makeBatch(set, rows, true);
    // Two widths: 32 and 48 columns.
    b = padBatch(b, 16, (s % 2 == 0) ? 32 : 48);
    b = batchToDevice(b, gpu);
    // The eager run takes the batch in the static form itself; the graph run converts it.
    const Tensor loss = step.run(graphs ? b : staticForm(b), 1000 + static_cast<uint64_t>(s));
    out.losses.push_back(loss.item<double>());
    clipGradientNorm(model->parameters(), 1.0, flatParametersOf(*opt));
    opt->step();
    std::vector<Tensor> p;
    for (const auto& x : model->parameters()) p.push_back(x.detach().cpu());
    out.params.push_back(p);
  }
  out.captured = step.graphsCaptured();
  out.replays = step.replays();
  return out;
}

}  // namespace

TEST(GpuGraphs, ReplayEqualsTheEagerStep) {
  std::vector<std::string> precisions{"fp32"};
#if TORCH_VERSION_MAJOR >= 2
  precisions.push_back("bf16");
#endif
  for (const std::string& precision : precisions) {
    const int steps = 8;  // per width: warm-up, capture + replay, then 2 replays
    const StepTrace eager = traceSteps(false, precision, steps);
    const StepTrace graph = traceSteps(true, precision, steps);
    EXPECT_EQ(graph.captured, 2) << precision;
    EXPECT_EQ(graph.replays, steps - 2) << precision;
    // The same kernels either way; what may differ is the GPU's atomics.
    const double tol = precision == "bf16" ? 1e-3 : 1e-4;
    for (int s = 0; s < steps; ++s) {
      EXPECT_TRUE(std::isfinite(graph.losses[static_cast<size_t>(s)]));
      EXPECT_NEAR(graph.losses[static_cast<size_t>(s)], eager.losses[static_cast<size_t>(s)],
                  tol * std::abs(eager.losses[static_cast<size_t>(s)]))
          << precision << " step " << s;
      EXPECT_LT(
          relativeL2(graph.params[static_cast<size_t>(s)], eager.params[static_cast<size_t>(s)]),
          tol)
          << precision << " step " << s;
    }
  }
}

TEST(GpuGraphs, ATrainerWithGraphsTrains) {
  TrainOptions o = gpuOptions(16, 3, 1);
  o.cuda_graphs = true;  // implies fixed shapes
  expectPretrainingLearns(o);
}

// The same with the jets gathered on the host by the helper thread (prefetch): its page-locked
// allocations during a capture would invalidate it (a capture is process-wide), so the next
// batch is fetched only once a capturing step returned.
TEST(GpuGraphs, ATrainerWithGraphsAndPrefetchTrains) {
  TrainOptions o = gpuOptions(16, 3, 1);
  o.cuda_graphs = true;
  o.resident_data_mb = 0;  // gathered on the host, pinned, copied
  o.prefetch = TrainOptions::Prefetch::kOn;
  expectPretrainingLearns(o);
}

TEST(GpuTrainer, JetsHeldOnTheGpuTrainAsJetsGatheredOnTheHost) {
  const JetTensors train = jets(64, 7, false), val = jets(32, 8, false);
  auto run = [&](int64_t resident_mb) {
    PetConfig cfg = petPreset("tiny");
    cfg.num_classes = 1;
    cfg.generator = false;
    Pet model(cfg);
    model->resetParameters(5);
    TrainOptions o = gpuOptions(16, 2, 3);
    o.resident_data_mb = resident_mb;
    CheckpointMeta meta;
    SingleProcessContext single;
    Trainer t(model, meta, o, single);
    const FitResult r = t.fit(train, &val, Objective::kClassifier);
    std::vector<Tensor> p;
    for (const auto& x : t.model()->parameters()) p.push_back(x.detach().cpu());
    return std::make_pair(p, r);
  };
  const auto [on_gpu, r_gpu] = run(4096);
  const auto [on_host, r_host] = run(0);
  // The same batches and draws: equal up to the GPU's atomics.
  EXPECT_LT(relativeL2(on_gpu, on_host), 1e-4);
  ASSERT_EQ(r_gpu.history.size(), r_host.history.size());
  for (size_t e = 0; e < r_gpu.history.size(); ++e) {
    EXPECT_NEAR(r_gpu.history[e].val_loss, r_host.history[e].val_loss,
                1e-4 * std::abs(r_host.history[e].val_loss));
    EXPECT_NEAR(r_gpu.history[e].metrics.at("auc").get<double>(),
                r_host.history[e].metrics.at("auc").get<double>(), 1e-3);
  }
}

using modeltest::ObservableSample;
using modeltest::observableSample;

TEST(GpuObservableMlp, FitOnTheGpuEndsWhereTheCpuFitEnds) {
  const ObservableSample s = observableSample(800, 4);
  MlpFitOptions o;
  o.epochs = 3;
  o.patience = 0;
  o.batch_size = 128;
  o.lr = 3e-3;
  o.val_fraction = 0.25;
  o.seed = 6;
  ObservableClassifier cpu({"a", "b"}, {32, 32}, 9);
  ObservableClassifier gpu({"a", "b"}, {32, 32}, 9, torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(gpu.device().is_cuda());
  const FitResult rc = cpu.fit(s.x, s.y, s.w, o);
  const FitResult rg = gpu.fit(s.x, s.y, s.w, o);
  ASSERT_EQ(rg.history.size(), rc.history.size());
  EXPECT_EQ(rg.steps, rc.steps);
  for (size_t e = 0; e < rc.history.size(); ++e) {
    EXPECT_NEAR(rg.history[e].train_loss, rc.history[e].train_loss,
                1e-4 * std::abs(rc.history[e].train_loss))
        << "epoch " << e;
    EXPECT_NEAR(rg.history[e].val_loss, rc.history[e].val_loss,
                1e-4 * std::abs(rc.history[e].val_loss))
        << "epoch " << e;
  }
  EXPECT_EQ(rg.best_epoch, rc.best_epoch);
  const std::vector<float> lc = cpu.logits(s.x), lg = gpu.logits(s.x);
  ASSERT_EQ(lg.size(), lc.size());
  // All logits together within 1e-4 (relative L2); each within 1e-3, as AdamW's first step
  // moves a weight by +-lr whatever its gradient's size, so a gradient element within
  // rounding of 0 may move it either way.
  double worst = 0, diff2 = 0, norm2 = 0;
  for (size_t i = 0; i < lc.size(); ++i) {
    const double d = static_cast<double>(lg[i]) - lc[i];
    worst = std::max(worst, std::abs(d) / std::max(1.0, std::abs(static_cast<double>(lc[i]))));
    diff2 += d * d;
    norm2 += static_cast<double>(lc[i]) * lc[i];
  }
  EXPECT_LT(std::sqrt(diff2 / std::max(norm2, 1e-30)), 1e-4);
  EXPECT_LT(worst, 1e-3);
}

TEST(GpuObservableMlp, CheckpointOfAGpuMlpLoadsOnEitherDevice) {
  const ObservableSample s = observableSample(300, 5);
  MlpFitOptions o;
  o.epochs = 2;
  o.seed = 2;
  ObservableClassifier gpu({"a", "b"}, {16}, 3, torch::Device(torch::kCUDA, 0));
  gpu.fit(s.x, s.y, s.w, o);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("ff_gpu_mlp_" + std::to_string(::getpid()));
  gpu.save(dir.string());
  const ObservableClassifier on_cpu = ObservableClassifier::load(dir.string(), {"a", "b"});
  const ObservableClassifier on_gpu =
      ObservableClassifier::load(dir.string(), {"a", "b"}, torch::Device(torch::kCUDA, 0));
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(on_cpu.device().is_cpu());
  EXPECT_TRUE(on_gpu.device().is_cuda());
  const std::vector<float> l = gpu.logits(s.x), lc = on_cpu.logits(s.x), lg = on_gpu.logits(s.x);
  // The same weights; the fitted network's live in a flat buffer (other alignment, so cuBLAS
  // may take another kernel), the loaded ones in tensors of their own: equal up to rounding.
  for (size_t i = 0; i < l.size(); ++i) {
    EXPECT_NEAR(lg[i], l[i], 1e-5 * std::max(1.f, std::abs(l[i]))) << i;
    EXPECT_NEAR(lc[i], l[i], 1e-5 * std::max(1.f, std::abs(l[i]))) << i;
  }
}
