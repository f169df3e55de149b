// Data-parallel training under mpirun -np 2: a step on 2 ranks with batch B each must give
// the parameters of a step on 1 rank with batch 2B (the same samples), every rank must
// hold bit-identical parameters, gradient accumulation must not communicate early, and the
// metric/stop collectives must agree.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "core/base/error.hpp"
#include "core/train/optim.hpp"
#include "dist/benchmarks.hpp"
#include "dist/bucketed_allreduce.hpp"
#include "dist/control_plane.hpp"
#include "dist/data_parallel.hpp"
#include "dist/launch.hpp"

using namespace foldfarm;
using namespace foldfarm::dist;

namespace {

constexpr int kBatch = 16;  // per rank
constexpr int kSteps = 5;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 48));
    fc2 = register_module("fc2", torch::nn::Linear(48, 48));
    fc3 = register_module("fc3", torch::nn::Linear(48, 3));
    shift = register_buffer("shift", torch::randn({8}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fc3(torch::tanh(fc2(torch::gelu(fc1(x - shift)))));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  torch::Tensor shift;
};
TORCH_MODULE(Net);

DistOptions smallBuckets() {
  DistOptions o;
  o.backend = "mpi";  // CPU tensors, also on a machine with a GPU
  o.collective_timeout_s = 60;
  // Several buckets even for this small net: 2 KiB first, then 8 KiB.
  o.buckets.first_bucket_bytes = 2048;
  o.buckets.bucket_cap_bytes = 8192;
  return o;
}

// The global batch of step s: identical on every rank (seeded by the step).
std::pair<torch::Tensor, torch::Tensor> globalBatch(int step, int global_batch) {
  torch::Generator g = at::detail::createCPUGenerator(1000 + step);
  torch::Tensor x = at::randn({global_batch, 8}, g);
  torch::Tensor y = at::randn({global_batch, 3}, g);
  return {x, y};
}

using OptimFactory = std::function<std::unique_ptr<torch::optim::Optimizer>(Net&)>;

// Trains `net` for kSteps on this rank's shard of the global batch (`world` shards),
// `micro` micro-batches per step with sync only on the last.
void train(Net& net, ParallelContext& ctx, torch::optim::Optimizer& opt, int rank, int world,
           int micro) {
  for (int step = 0; step < kSteps; ++step) {
    auto [x, y] = globalBatch(step, kBatch * 2);
    const int per_rank = kBatch * 2 / world;
    x = x.narrow(0, rank * per_rank, per_rank);
    y = y.narrow(0, rank * per_rank, per_rank);
    zeroGradients(opt);
    const int mb = per_rank / micro;
    for (int m = 0; m < micro; ++m) {
      ctx.setGradientSync(m == micro - 1);
      auto out = net->forward(x.narrow(0, m * mb, mb));
      auto loss = torch::mse_loss(out, y.narrow(0, m * mb, mb)) / micro;
      loss.backward();
    }
    ctx.finishGradientSync();
    opt.step();
  }
}

double relDiff(Net& a, Net& b) {
  double worst = 0;
  auto pa = a->parameters();
  auto pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    const double d = (pa[i] - pb[i]).abs().max().item<double>();
    const double s = std::max(pb[i].abs().max().item<double>(), 1e-12);
    worst = std::max(worst, d / s);
  }
  return worst;
}

// Data-parallel run (all ranks) against a 1-rank run with the doubled batch (rank 0 alone).
void checkEquivalence(const OptimFactory& make_opt, int micro) {
  DataParallelContext ctx(detectLaunch(), smallBuckets());
  ASSERT_EQ(ctx.worldSize(), 2) << "run under mpirun -np 2";
  torch::manual_seed(7 + ctx.rank());  // different init per rank: prepare() must fix it
  Net net;
  ctx.prepare(*net);
  // Rank 0's initial state, for the reference run and to see that training moved it.
  Net ref, init;
  {
    torch::NoGradGuard ng;
    auto src = net->parameters();
    for (Net* to : {&ref, &init}) {
      auto dst = (*to)->parameters();
      for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
      (*to)->shift.copy_(net->shift);
    }
  }
  auto opt = make_opt(net);
  train(net, ctx, *opt, ctx.rank(), ctx.worldSize(), micro);

  const std::uint64_t h = ctx.verifyParametersIdentical(*net);  // throws if any rank differs
  EXPECT_NE(h, 0u);
  if (ctx.rank() == 0) {
    SingleProcessContext alone;
    auto ref_opt = make_opt(ref);
    train(ref, alone, *ref_opt, 0, 1, micro);
    const double rd = relDiff(net, ref);
    EXPECT_LE(rd, 1e-5) << "2 ranks x batch " << kBatch << " vs 1 rank x batch " << 2 * kBatch;
    // And training did move the parameters from where both runs started (the comparison is
    // not vacuous; before, against a fresh random net, it held whatever training did).
    EXPECT_GT(relDiff(net, init), 1e-3);
  }
  ctx.barrier();
}

}  // namespace

TEST(DataParallel, BroadcastMakesRanksIdentical) {
  DataParallelContext ctx(detectLaunch(), smallBuckets());
  torch::manual_seed(100 + ctx.rank());
  Net net;
  const std::uint64_t before = hashModuleState(*net);
  std::vector<std::uint64_t> all = ctx.control().allgather(before);
  EXPECT_NE(all[0], all[1]) << "seeds differ per rank, so the initial models must differ";
  ctx.prepare(*net);
  EXPECT_NO_THROW(ctx.verifyParametersIdentical(*net));
}

TEST(DataParallel, VerifyNamesDivergedRank) {
  DataParallelContext ctx(detectLaunch(), smallBuckets());
  Net net;
  ctx.prepare(*net);
  if (ctx.rank() == 1) {
    torch::NoGradGuard ng;
    net->fc2->bias[3].add_(1e-6);
  }
  try {
    ctx.verifyParametersIdentical(*net);
    ADD_FAILURE() << "a diverged replica was not detected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank(s) 1"), std::string::npos) << e.what();
  }
}

TEST(DataParallel, BucketsInReverseOrderFirstSmall) {
  DataParallelContext ctx(detectLaunch(), smallBuckets());
  Net net;
  std::vector<at::Tensor> params = net->parameters();
  BucketOptions opt;
  opt.first_bucket_bytes = 2048;
  opt.bucket_cap_bytes = 8192;
  auto b = BucketedAllreduce::create(ctx.communicator(), ctx.control(), params, opt);
  const auto sizes = b->bucketBytes();
  ASSERT_GE(sizes.size(), 3u);
  // Reverse order: fc3 (bias 12 B, weight 576 B) lands in the first bucket, which stays
  // under 2 KiB; a later bucket exceeds its cap only when one parameter alone does.
  EXPECT_LE(sizes[0], 2048u);
  std::size_t total = 0;
  for (std::size_t s : sizes) total += s;
  std::size_t expect = 0;
  for (const auto& p : params) expect += static_cast<std::size_t>(p.numel() * 4);
  EXPECT_EQ(total, expect);
}

TEST(DataParallel, GradientsStayBucketViewsAcrossSteps) {
  // zeroGradients keeps each .grad as the view of its all-reduce bucket that the first
  // synchronised backward attached: no gradient is reallocated (and copied into the bucket)
  // at later steps, on any LibTorch (2.x's zero_grad() would set them to none).
  DataParallelContext ctx(detectLaunch(), smallBuckets());
  Net net;
  ctx.prepare(*net);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  auto step = [&](int s) {
    zeroGradients(opt);
    auto [x, y] = globalBatch(s, kBatch);
    torch::mse_loss(net->forward(x), y).backward();
    ctx.finishGradientSync();
    opt.step();
  };
  step(0);
  std::vector<const void*> first;
  for (const auto& p : net->parameters()) first.push_back(p.grad().data_ptr());
  zeroGradients(opt);
  for (const auto& p : net->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().abs().max().item<float>(), 0.0f);
  }
  for (int s = 1; s < 4; ++s) step(s);
  const auto params = net->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].grad().data_ptr(), first[i]) << "parameter " << i << " got a new gradient";
  }
}

TEST(DataParallel, TwoRanksEqualOneRankDoubleBatchAdamW) {
  checkEquivalence(
      [](Net& n) {
        return std::make_unique<torch::optim::AdamW>(
            n->parameters(), torch::optim::AdamWOptions(1e-2).weight_decay(1e-2));
      },
      1);
}

TEST(DataParallel, TwoRanksEqualOneRankDoubleBatchSGDMomentum) {
  checkEquivalence(
      [](Net& n) {
        return std::make_unique<torch::optim::SGD>(n->parameters(),
                                                   torch::optim::SGDOptions(0.05).momentum(0.9));
      },
      1);
}

TEST(DataParallel, GradientAccumulationEqualsOneBigBatch) {
  checkEquivalence(
      [](Net& n) {
        return std::make_unique<torch::optim::AdamW>(n->parameters(),
                                                     torch::optim::AdamWOptions(1e-2));
      },
      4);
}

TEST(DataParallel, MetricsAndStopAgreement) {
  DataParallelContext ctx(detectLaunch(), smallBuckets());
  std::vector<double> v{static_cast<double>(ctx.rank()), 10.0 * (ctx.rank() + 1)};
  ctx.allreduceMean(v);
  EXPECT_DOUBLE_EQ(v[0], 0.5);
  EXPECT_DOUBLE_EQ(v[1], 15.0);
  std::vector<double> c{1.0};
  ctx.allreduceSum(c);
  EXPECT_DOUBLE_EQ(c[0], 2.0);
  EXPECT_TRUE(ctx.anyTrue(ctx.rank() == 1));
  EXPECT_FALSE(ctx.anyTrue(false));
  // Several agreements in one collective (the trainer's stop and periodic save): each bit
  // is its own "any rank".
  EXPECT_EQ(ctx.anyOf(ctx.rank() == 0 ? 1u : 2u), 3u);
  EXPECT_EQ(ctx.anyOf(ctx.rank() == 1 ? 0x80u : 0u), 0x80u);
  EXPECT_EQ(ctx.anyOf(0u), 0u);
}

// An error found on rank 0 (one every rank finds alike: an option, a config) is thrown by
// rank 0 alone and ends the others quietly; one found only on another rank (a file that node
// cannot read) is thrown there and ends rank 0 quietly. Every rank ends either way.
TEST(DataParallel, ChecksOnEveryRankEndEveryRankAndOneReportsEach) {
  DataParallelContext ctx(detectLaunch(), smallBuckets());
  ASSERT_EQ(ctx.worldSize(), 2);
  EXPECT_NO_THROW(checkOnEveryRank(ctx, [] {}));
  auto outcome = [&](const std::function<void()>& check) -> std::pair<std::string, int> {
    try {
      checkOnEveryRank(ctx, check);
    } catch (const ReportedByAnotherRank& e) {
      return {"quiet", e.exitCode()};
    } catch (const Error& e) {
      return {e.what(), e.exitCode()};
    } catch (const std::exception& e) {
      return {e.what(), kExitFailure};
    }
    return {"none", 0};
  };
  // Alike on every rank: rank 0 reports it.
  auto [what, code] = outcome([&] { throw InputError("rank " + std::to_string(ctx.rank())); });
  EXPECT_EQ(what, ctx.rank() == 0 ? "rank 0" : "quiet");
  EXPECT_EQ(code, kExitBadInput);
  // Only rank 1 fails: rank 1 reports it, rank 0 ends too, with its exit code.
  std::tie(what, code) = outcome([&] {
    if (ctx.rank() == 1) throw Error("rank 1 cannot read its file", kExitFailure);
  });
  EXPECT_EQ(what, ctx.rank() == 1 ? "rank 1 cannot read its file" : "quiet");
  EXPECT_EQ(code, kExitFailure);
  // Not an Error (a library's exception): still every rank ends.
  std::tie(what, code) = outcome([&] {
    if (ctx.rank() == 0) throw std::runtime_error("boom");
  });
  EXPECT_EQ(code, kExitFailure);
  EXPECT_EQ(what, ctx.rank() == 0 ? "boom" : "quiet");
}

TEST(DataParallel, AllreduceBenchSumsExactlyOnBothPaths) {
  // bench allreduce's work (dist/benchmarks.hpp): every size, raw and bucketed, checked
  // against the exact sum; the root rank gets the figures, the other rank nothing.
  AllreduceBenchOptions o;
  o.check = true;
  o.max_mib = 1.0 / 16;  // 1, 4, 16, 64 KiB, and PET omnilearn's gradient size
  o.repeats = 1;
  std::vector<std::string> lines;
  const nlohmann::json j = benchAllreduce(o, [&](const std::string& l) { lines.push_back(l); });
  const int rank = detectLaunch().rank;
  if (rank != 0) {
    EXPECT_TRUE(j.is_null());
    EXPECT_TRUE(lines.empty());
    return;
  }
  EXPECT_EQ(j.at("ranks"), 2);
  const auto& rows = j.at("results");
  ASSERT_EQ(rows.size(), 10u);  // 5 sizes x (raw, bucketed)
  ASSERT_EQ(lines.size(), 5u);
  bool pet = false;
  for (const auto& r : rows) {
    EXPECT_EQ(r.at("check"), "ok") << r.dump();
    EXPECT_GT(r.at("busbw_GBps").get<double>(), 0) << r.dump();
    pet = pet || r.value("pet_omnilearn", false);
  }
  EXPECT_TRUE(pet);
}
