// The NCCL backend on a GPU (label `gpu`; exit 77, skipped, without CUDA or NCCL): under
// mpirun -np 1 the data-parallel context picks NCCL on this rank's GPU, PET trains there
// through the bucketed all-reduce (gradients as bucket views on the GPU, hooks, the
// communication stream), and the synchronised gradients equal those of the same step on
// the CPU. One rank only (NCCL needs a GPU per rank, the check has one): the sum over one
// rank is the identity, so this tests the plumbing (communicator, buckets as views of the
// flat gradient, stream ordering), not a reduction across ranks; the 2-rank equality is
// tested over MPI (test_dist_data_parallel, test_dist_pet).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/model/pet.hpp"
#include "core/model/pet_config.hpp"
#include "dist/data_parallel.hpp"
#include "dist/launch.hpp"
#include "tests/support/gpu_skip.hpp"

using namespace foldfarm;
using namespace foldfarm::dist;

namespace {

void skipWithoutGpu() {
#ifndef FOLDFARM_HAVE_NCCL
  foldfarm::testing::skipGpuTest("test_dist_nccl",
                                 "foldfarm was built without the NCCL communicator");
#endif
  if (!torch::cuda::is_available())
    foldfarm::testing::skipGpuTest("test_dist_nccl", "no CUDA device visible to LibTorch");
}

struct Batch {
  torch::Tensor x, mask, jets, labels;
  Batch to(const torch::Device& d) const { return {x.to(d), mask.to(d), jets.to(d), labels.to(d)}; }
};

Batch batch() {
  torch::Generator g = at::detail::createCPUGenerator(91);
  const int n = 32, p = 24;
  Batch b;
  const torch::Tensor count = at::randint(3, p + 1, {n, 1}, g, torch::kLong);
  b.mask = (torch::arange(p).unsqueeze(0) < count).to(torch::kFloat32);
  b.x = at::randn({n, p, 13}, g) * b.mask.unsqueeze(-1);
  b.jets = at::randn({n, 4}, g);
  b.labels = at::randint(0, 4, {n}, g, torch::kLong);
  return b;
}

PetConfig config() {
  PetConfig c = petPreset("tiny");
  c.num_classes = 4;
  c.feature_dropout = 0.0;
  return c;
}

void lossBackward(Pet& net, const Batch& b) {
  const ClassifierOutput out = net->classify(b.x, b.mask, b.jets);
  (torch::cross_entropy_loss(out.logits, b.labels) + torch::mse_loss(out.jet_pred, b.jets))
      .backward();
}

}  // namespace

TEST(Nccl, PetGradientsOnTheGpuEqualTheCpuOnes) {
  skipWithoutGpu();
  DistOptions o;
  o.backend = "nccl";
  o.collective_timeout_s = 120;
  DataParallelContext ctx(detectLaunch(), o);
  ASSERT_EQ(std::string(ctx.backendName()), "nccl");
  ASSERT_TRUE(ctx.device().is_cuda());

  Pet gpu(config());
  gpu->resetParameters(7);
  gpu->to(ctx.device());
  gpu->train();
  ctx.prepare(*gpu);
  const Batch b = batch();
  for (int step = 0; step < 2; ++step) {  // the second step reuses the attached buckets
    // Zeroed in place, as the trainer does (zeroGradients): Module::zero_grad() sets the
    // gradients to none on LibTorch 2.x, and step 2 would no longer write into the buckets.
    {
      torch::NoGradGuard no_grad;
      for (auto& p : gpu->parameters())
        if (p.grad().defined()) p.mutable_grad().zero_();
    }
    lossBackward(gpu, b.to(ctx.device()));
    ctx.finishGradientSync();
  }
  EXPECT_NO_THROW(ctx.verifyParametersIdentical(*gpu));

  Pet cpu(config());
  cpu->resetParameters(7);
  cpu->train();
  lossBackward(cpu, b);

  auto pg = gpu->named_parameters();
  double worst = 0;
  std::string worst_name;
  for (const auto& item : cpu->named_parameters()) {
    const torch::Tensor gc = item.value().grad();
    const torch::Tensor gg = pg[item.key()].grad();
    ASSERT_TRUE(gg.defined()) << item.key();
    ASSERT_TRUE(gg.is_cuda()) << item.key();
    if (!gc.defined() || gc.norm().item<double>() == 0) continue;
    const double rel = ((gg.cpu() - gc).norm() / gc.norm()).item<double>();
    if (rel > worst) {
      worst = rel;
      worst_name = item.key();
    }
  }
  std::printf("worst per-tensor relative gradient difference GPU vs CPU: %.3g (%s)\n", worst,
              worst_name.c_str());
  EXPECT_LE(worst, 1e-3) << worst_name;
}
