// The gradient step shared by the Trainer and `bench pet` (core/train/gradient_step.hpp), on
// the CPU: it is exactly the step written out by hand (seeded draws, zeroed gradients,
// forward, loss, backward); draws "on the device" are the CPU generator's on the CPU;
// clipping without a host read is bit-identical to LibTorch's clip_grad_norm_; the static
// form a CUDA graph takes ignores what its padding holds and, without draws, gives the
// unpadded loss and gradients; the GPU's bf16 step runs under the CPU's autocast (LibTorch
// 2.x) with float32 master weights; CUDA graphs asked for where they cannot run are refused
// with a line that says why.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/data/features.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/losses.hpp"
#include "core/train/optim.hpp"
#include "core/train/trainer.hpp"
#include "tests/model/test_jets.hpp"

using namespace foldfarm;
using modeltest::worstRelative;
using torch::Tensor;

namespace {

PetConfig config(bool pretrain, double dropout) {
  PetConfig cfg = petPreset("tiny");
  cfg.num_classes = pretrain ? 2 : 1;
  cfg.generator = pretrain;
  cfg.feature_dropout = dropout;
  return cfg;
}

JetTensors jets(int64_t n, uint64_t seed) {
  return JetTensors::fromArrays(modeltest::randomJets(n, 32, 25, seed),
                                data::FeatureStats::jetClass());
}

std::vector<int64_t> rowsUpTo(int64_t n, int64_t from = 0) {
  std::vector<int64_t> r;
  for (int64_t i = from; i < n; ++i) r.push_back(i);
  return r;
}

std::vector<Tensor> parameters(Pet& model) {
  std::vector<Tensor> out;
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

std::vector<Tensor> gradients(Pet& model) {
  std::vector<Tensor> out;
  for (const auto& p : model->parameters())
    out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return out;
}

// A PET of `config(pretrain, 0.2)` seeded with `seed`, in training mode, its flat-buffer
// optimiser (learning rate `lr`) and a GradientStep of `so` with the objective set.
struct StepRig {
  Pet model{nullptr};
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::unique_ptr<GradientStep> step;
};
StepRig stepRig(bool pretrain, uint64_t seed, double lr, GradientStepOptions so,
                AttentionKernel attention = AttentionKernel::kAuto) {
  StepRig r;
  r.model = Pet(config(pretrain, 0.2));
  r.model->resetParameters(seed);
  r.model->setAttentionKernel(attention);
  r.model->train();
  OptimizerSettings os;
  os.lr = lr;
  r.opt = makeFlatOptimizer(r.model, os);
  so.objective = pretrain ? Objective::kPretrain : Objective::kClassifier;
  r.step = std::make_unique<GradientStep>(r.model, *r.opt, so);
  return r;
}

bool sameBits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

}  // namespace

TEST(GradientStep, IsTheStepWrittenOutByHandAndDrawsOnTheCpuGeneratorOnTheCpu) {
  const JetTensors set = jets(48, 2);
  for (const bool pretrain : {false, true}) {
    std::vector<std::vector<Tensor>> ends;
    std::vector<std::vector<double>> losses;
    // 0: by hand; 1: GradientStep with device draws (the default); 2: with host draws.
    for (int form = 0; form < 3; ++form) {
      GradientStepOptions so;
      so.host_draws = form == 2;
      StepRig rig = stepRig(pretrain, 4, 1e-3, so);
      Pet& model = rig.model;
      torch::optim::Optimizer* opt = rig.opt.get();
      GradientStep& step = *rig.step;
      std::vector<double> l;
      for (int64_t s = 0; s < 3; ++s) {
        const JetBatch b = makeBatch(set, rowsUpTo(16 * (s + 1), 16 * s), true);
        const uint64_t seed = 100 + static_cast<uint64_t>(s);
        Tensor loss;
        if (form == 0) {
          model->generator().set_current_seed(seed);
          zeroGradients(*opt);
          {
            const DrawRowsGuard rows(model, b.realRows());
            loss = pretrain
                       ? pretrainLoss(model, b, model->generator()).total
                       : weightedClassifierLoss(classifierLogits(model, b), b.labels, b.weights);
          }
          loss.backward();
        } else {
          loss = step.run(b, seed);
          EXPECT_FALSE(loss.requires_grad());
        }
        l.push_back(loss.item<double>());
        clipGradientNorm(model->parameters(), 1.0, flatParametersOf(*opt));
        opt->step();
      }
      ends.push_back(parameters(model));
      losses.push_back(l);
    }
    EXPECT_TRUE(sameBits(ends[0], ends[1])) << "pretrain " << pretrain;
    EXPECT_TRUE(sameBits(ends[0], ends[2])) << "pretrain " << pretrain;
    EXPECT_EQ(losses[0], losses[1]);
    EXPECT_EQ(losses[0], losses[2]);
  }
}

TEST(GradientStep, ClippingWithoutAHostReadIsBitIdenticalToLibTorch) {
  const JetTensors set = jets(24, 3);
  const JetBatch b = makeBatch(set, rowsUpTo(24), true);
  for (const double max_norm : {1e-3, 1.0, 1e6}) {  // clipped hard, somewhat, not at all
    std::vector<std::vector<Tensor>> grads;
    for (int form = 0; form < 3; ++form) {
      Pet model(config(true, 0.0));
      model->resetParameters(5);
      model->train();
      OptimizerSettings os;
      // Form 2: flat buffers (on the CPU the per-parameter operations all the same).
      auto opt = form == 2 ? makeFlatOptimizer(model, os) : makeOptimizer(model, os);
      zeroGradients(*opt);
      model->generator().set_current_seed(7);
      pretrainLoss(model, b, model->generator()).total.backward();
      if (form == 0)
        torch::nn::utils::clip_grad_norm_(model->parameters(), max_norm);
      else
        clipGradientNorm(model->parameters(), max_norm, flatParametersOf(*opt));
      grads.push_back(gradients(model));
    }
    EXPECT_TRUE(sameBits(grads[0], grads[1])) << "max norm " << max_norm;
    EXPECT_TRUE(sameBits(grads[0], grads[2])) << "max norm " << max_norm;
  }
}

TEST(StaticForm, MarksTheRealRowsAndDrawsOverTheWholeShape) {
  const JetTensors set = jets(20, 6);
  const JetBatch plain = makeBatch(set, rowsUpTo(13), true);
  const JetBatch padded = padBatch(plain, 32, fixedBatchWidth(plain.particles.size(1)));
  const JetBatch s = staticForm(padded);
  ASSERT_TRUE(s.row_mask.defined());
  EXPECT_EQ(s.row_mask.size(0), 32);
  EXPECT_EQ(s.row_mask.sum().item<double>(), 13.0);
  EXPECT_EQ(s.row_mask.narrow(0, 0, 13).min().item<double>(), 1.0);
  EXPECT_EQ(s.realRows(), 32);
  EXPECT_EQ(s.realCols(), padded.particles.size(1));
  // Moved to a device (here: the CPU) it keeps its mask.
  EXPECT_TRUE(batchToDevice(s, torch::kCPU).row_mask.defined());
}

TEST(JetTensors, MoveToADeviceWholeAndCountTheirBytes) {
  const JetTensors set = jets(20, 6);
  // particles (20, 32, F) + mask (20, 32) + jets (20, J) float32, labels int64, weights float32.
  const int64_t expected =
      4 * set.particles.numel() + 4 * set.mask.numel() + 4 * set.jets.numel() + 8 * 20 + 4 * 20;
  EXPECT_EQ(set.bytes(), expected);
  const JetTensors moved = set.to(torch::kCPU);
  EXPECT_EQ(moved.extent, set.extent);
  EXPECT_TRUE(torch::equal(moved.particles, set.particles));
  const JetBatch b = makeBatch(moved, rowsUpTo(5), true);
  EXPECT_EQ(b.size(), 5);
}

TEST(StaticForm, WithoutDrawsGivesTheUnpaddedLossAndGradients) {
  const JetTensors set = jets(20, 6);
  const JetBatch plain = makeBatch(set, rowsUpTo(13), true);
  const JetBatch graph_form =
      staticForm(padBatch(plain, 32, fixedBatchWidth(plain.particles.size(1)) + 16));
  auto lossAndGrads = [&](const JetBatch& b) {
    Pet model(config(false, 0.0));
    model->resetParameters(9);
    model->train();
    const Tensor loss = classifierLoss(classifierLogits(model, b), b);
    loss.backward();
    std::vector<Tensor> g{loss.detach().reshape({1})};
    for (const Tensor& t : gradients(model)) g.push_back(t);
    return g;
  };
  const auto a = lossAndGrads(plain), c = lossAndGrads(graph_form);
  EXPECT_NEAR(a[0].item<double>(), c[0].item<double>(), 1e-5 * std::abs(a[0].item<double>()));
  EXPECT_LT(worstRelative(a, c), 1e-4);
}

TEST(StaticForm, WhatThePaddingHoldsChangesNothing) {
  // A captured step replays on whatever the padding of its input tensors holds: rows past
  // row_mask and particles past the mask must not reach the loss or the gradients.
  const JetTensors set = jets(20, 6);
  const JetBatch plain = makeBatch(set, rowsUpTo(13), true);
  const JetBatch clean = staticForm(padBatch(plain, 32, fixedBatchWidth(plain.particles.size(1))));
  JetBatch junk = clean;
  junk.particles = clean.particles.clone();
  junk.jets = clean.jets.clone();
  junk.labels = clean.labels.clone();
  {
    torch::NoGradGuard no_grad;
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(99);
    const Tensor pad_particles = (1 - clean.mask).unsqueeze(-1);
    junk.particles += torch::randn(clean.particles.sizes(), g) * pad_particles;
    junk.jets.narrow(0, 13, 19).copy_(torch::randn({19, clean.jets.size(1)}, g));
    junk.labels.narrow(0, 13, 19).fill_(1);
  }
  ASSERT_FALSE(torch::equal(junk.particles, clean.particles));
  for (const bool pretrain : {false, true}) {
    auto lossAndGrads = [&](const JetBatch& b) {
      StepRig rig = stepRig(pretrain, 9, OptimizerSettings().lr, GradientStepOptions());
      std::vector<Tensor> g{rig.step->run(b, 31).reshape({1})};
      for (const Tensor& t : gradients(rig.model)) g.push_back(t);
      return g;
    };
    const auto a = lossAndGrads(clean), c = lossAndGrads(junk);
    ASSERT_TRUE(std::isfinite(a[0].item<double>()));
    EXPECT_NEAR(a[0].item<double>(), c[0].item<double>(), 1e-6 * std::abs(a[0].item<double>()))
        << "pretrain " << pretrain;
    EXPECT_LT(worstRelative(a, c), 1e-5) << "pretrain " << pretrain;
  }
}

// The bf16 step as a GPU takes it (autocast of the forward pass and loss, SDPA attention,
// batches padded to fixed shapes), run under the CPU's autocast: LibTorch 2.x casts the same
// operations to bfloat16 there, so the step's dtype flow (every mixed-precision operation of
// the model and the losses) runs without a GPU. Parameters and gradients stay float32 and
// finite, the losses and the first step's gradients follow the float32 step's within
// bfloat16's precision, and the autocast ends with the step. The GPU's own kernels (fused
// norm in bfloat16) are tests/model/test_gpu_train.cpp's.
TEST(GradientStep, Bf16StepRunsUnderTheCpusAutocastWithFloat32MasterWeights) {
#if TORCH_VERSION_MAJOR < 2
  GTEST_SKIP() << "LibTorch " TORCH_VERSION " has no per-device autocast (2.x has)";
#endif
  const JetTensors set = jets(48, 12);
  for (const bool pretrain : {false, true}) {
    std::vector<double> losses[2];
    std::vector<Tensor> first_grads[2];
    for (int run = 0; run < 2; ++run) {
      GradientStepOptions so;
      so.precision = run == 1 ? "bf16" : "fp32";
      so.fixed_shapes = true;
      StepRig rig = stepRig(pretrain, 5, 1e-3, so, AttentionKernel::kSdpa);
      Pet& model = rig.model;
      torch::optim::Optimizer* opt = rig.opt.get();
      GradientStep& step = *rig.step;
      for (int64_t s = 0; s < 3; ++s) {
        const JetBatch plain = makeBatch(set, rowsUpTo(13 * (s + 1), 13 * s), true);
        const JetBatch b = padBatch(plain, 16, fixedBatchWidth(plain.particles.size(1)));
        const Tensor loss = step.run(b, 200 + static_cast<uint64_t>(s));
        EXPECT_EQ(loss.scalar_type(), torch::kFloat32) << "pretrain " << pretrain;
        losses[run].push_back(loss.item<double>());
        if (s == 0) first_grads[run] = gradients(model);
        clipGradientNorm(model->parameters(), 1.0, flatParametersOf(*opt));
        opt->step();
      }
      size_t with_grad = 0;  // the classifier leaves the time embedding without one
      for (const auto& p : model->named_parameters()) {
        EXPECT_EQ(p.value().scalar_type(), torch::kFloat32) << p.key();
        EXPECT_TRUE(torch::isfinite(p.value()).all().item<bool>()) << p.key();
        if (!p.value().grad().defined()) continue;
        ++with_grad;
        EXPECT_EQ(p.value().grad().scalar_type(), torch::kFloat32) << p.key();
      }
      EXPECT_GT(with_grad, model->parameters().size() / 2) << "pretrain " << pretrain;
      // The autocast ended with the step: a float32 product stays float32.
      EXPECT_EQ(torch::matmul(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type(),
                torch::kFloat32);
    }
    for (size_t s = 0; s < 3; ++s) {
      ASSERT_TRUE(std::isfinite(losses[1][s])) << "pretrain " << pretrain << " step " << s;
      EXPECT_NEAR(losses[1][s], losses[0][s], 0.01 * std::abs(losses[0][s]))
          << "pretrain " << pretrain << " step " << s;
    }
    // bfloat16 did run (float32 throughout would give the same bits), within its precision
    // (LibTorch 2.6: 0.6% for the classifier, 0.4% for pretraining; losses within 0.1%).
    const double grad_distance = modeltest::relativeL2(first_grads[1], first_grads[0]);
    EXPECT_GT(grad_distance, 1e-4) << "pretrain " << pretrain;
    EXPECT_LT(grad_distance, 0.05) << "pretrain " << pretrain;
  }
}

TEST(GradientStep, CudaGraphsWhereTheyCannotRunAreRefusedSayingWhy) {
  GradientStepOptions o;
  o.fixed_shapes = true;
  const std::string here = GradientStep::graphsUnavailableReason(torch::kCPU, o);
  EXPECT_FALSE(here.empty());
  if (torch::cuda::is_available()) {
    const torch::Device gpu(torch::kCUDA, 0);
    EXPECT_EQ(GradientStep::graphsUnavailableReason(gpu, o), "");
    GradientStepOptions ranks = o;
    ranks.world_size = 2;
    EXPECT_NE(GradientStep::graphsUnavailableReason(gpu, ranks).find("one rank"),
              std::string::npos);
    GradientStepOptions shapes = o;
    shapes.fixed_shapes = false;
    EXPECT_NE(GradientStep::graphsUnavailableReason(gpu, shapes).find("--fixed-shapes"),
              std::string::npos);
  }
  Pet model(config(false, 0.0));
  OptimizerSettings os;
  auto opt = makeFlatOptimizer(model, os);
  GradientStepOptions graphs = o;
  graphs.cuda_graphs = true;
  try {
    GradientStep step(model, *opt, graphs);
    FAIL() << "graphs on the CPU were accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA graphs cannot be used"), std::string::npos)
        << e.what();
  }
  // The Trainer refuses them when it is made, before any training, naming its label.
  TrainOptions t;
  t.cuda_graphs = true;
  t.label = "step-test";
  SingleProcessContext single;
  CheckpointMeta meta;
  meta.config = model->config();
  try {
    Trainer trainer(model, meta, t, single);
    FAIL() << "a Trainer with graphs on the CPU was made";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("step-test: CUDA graphs cannot be used"),
              std::string::npos)
        << e.what();
  }
}
