// PET (tiny preset) trained data-parallel on 2 ranks with batch B each holds, after k
// steps, the parameters of PET trained on 1 rank with batch 2B on the same jets - with the
// trainer's own optimisers (Lion and AdamW from core/train), compared tensor by tensor -
// and all ranks hold bit-identical parameters. Sharded data (each rank holds only its own
// rows, pretrain --shard-data): evaluation summed over the shards equals evaluation of the
// whole set, and uneven shards still take the same number of steps on every rank. Run
// under mpirun -np 2.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include "core/model/pet.hpp"
#include "core/model/pet_config.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/optim.hpp"
#include "core/train/trainer.hpp"
#include "dist/data_parallel.hpp"
#include "dist/launch.hpp"

using namespace foldfarm;
using namespace foldfarm::dist;

namespace {

constexpr int kBatch = 8;  // per rank
constexpr int kParticles = 16;
constexpr int kSteps = 3;

PetConfig tinyConfig() {
  PetConfig c = petPreset("tiny");
  c.num_classes = 4;
  c.feature_dropout = 0.0;  // the 1-rank reference draws no different masks
  return c;
}

struct Jets {
  torch::Tensor x, mask, jets, labels;
};

// The global batch of step s, identical on every rank.
Jets globalBatch(int step) {
  torch::Generator g = at::detail::createCPUGenerator(4000 + step);
  const int n = 2 * kBatch;
  Jets j;
  torch::Tensor count = at::randint(4, kParticles + 1, {n, 1}, g, torch::kLong);
  j.mask = (torch::arange(kParticles).unsqueeze(0) < count).to(torch::kFloat32);
  j.x = at::randn({n, kParticles, 13}, g) * j.mask.unsqueeze(-1);
  j.jets = at::randn({n, 4}, g);
  j.labels = at::randint(0, 4, {n}, g, torch::kLong);
  return j;
}

void train(Pet& net, ParallelContext& ctx, torch::optim::Optimizer& opt, int rank, int world) {
  for (int step = 0; step < kSteps; ++step) {
    const Jets g = globalBatch(step);
    const int per = 2 * kBatch / world;
    auto shard = [&](const torch::Tensor& t) { return t.narrow(0, rank * per, per); };
    zeroGradients(opt);
    const ClassifierOutput out = net->classify(shard(g.x), shard(g.mask), shard(g.jets));
    const torch::Tensor loss = torch::cross_entropy_loss(out.logits, shard(g.labels)) +
                               torch::mse_loss(out.jet_pred, shard(g.jets));
    loss.backward();
    ctx.finishGradientSync();
    opt.step();
  }
}

// Relative L2 difference of all parameters together, ||a - b|| / ||b||.
double relL2(Pet& a, Pet& b) {
  double d2 = 0, s2 = 0;
  auto pa = a->parameters();
  auto pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    d2 += (pa[i] - pb[i]).pow(2).sum().item<double>();
    s2 += pb[i].pow(2).sum().item<double>();
  }
  return std::sqrt(d2 / std::max(s2, 1e-30));
}

// The part of a parameter whose gradient is not analytically zero. The key third of an
// attention's packed q/k/v bias gets none: the key bias adds q.b_k to every score of a
// query, and softmax ignores a constant added to all its inputs. Its computed gradient is
// rounding noise (~1e-9), which Lion's sign() and Adam's first steps (~g/|g|) turn into
// full-lr steps in an arbitrary direction, different for any two summation orders; it
// says nothing about data parallelism, so it is left out. Everything else is compared.
torch::Tensor comparable(const std::string& name, const torch::Tensor& p) {
  const std::string suffix = "attn.qkv.bias";
  if (name.size() >= suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    const int64_t d = p.size(0) / 3;
    return torch::cat({p.narrow(0, 0, d), p.narrow(0, 2 * d, d)});
  }
  return p;
}

// Per parameter tensor: ||a - b|| / ||b|| over its comparable part. Returns the worst
// value and its name.
std::pair<double, std::string> worstTensor(Pet& a, Pet& b) {
  std::pair<double, std::string> worst{0.0, ""};
  auto na = a->named_parameters();
  auto nb = b->named_parameters();
  for (const auto& item : nb) {
    const torch::Tensor x = comparable(item.key(), na[item.key()]);
    const torch::Tensor y = comparable(item.key(), item.value());
    const double rel = ((x - y).norm() / y.norm().clamp_min(1e-30)).item<double>();
    if (rel > worst.first) worst = {rel, item.key()};
  }
  return worst;
}

void checkOptimizer(const std::string& kind) {
  DistOptions o;
  o.backend = "mpi";  // CPU tensors, also on a machine with a GPU
  o.collective_timeout_s = 60;
  o.buckets.first_bucket_bytes = 16 << 10;  // several buckets for the ~60k parameters
  o.buckets.bucket_cap_bytes = 64 << 10;
  DataParallelContext ctx(detectLaunch(), o);
  ASSERT_EQ(ctx.worldSize(), 2) << "run under mpirun -np 2";
  Pet net(tinyConfig());
  net->resetParameters(21 + static_cast<uint64_t>(ctx.rank()));  // prepare() must unify
  net->train();
  ctx.prepare(*net);
  OptimizerSettings s;
  s.kind = kind;
  s.lr = 3e-6;  // small: moves the model ~1e-4 relative in 3 steps
  auto opt = makeOptimizer(net, s);
  train(net, ctx, *opt, ctx.rank(), ctx.worldSize());
  EXPECT_NO_THROW(ctx.verifyParametersIdentical(*net));  // bitwise equal on all ranks

  if (ctx.rank() == 0) {
    Pet ref(tinyConfig());
    ref->resetParameters(21);
    ref->train();
    Pet init(tinyConfig());
    init->resetParameters(21);
    auto ref_opt = makeOptimizer(ref, s);
    SingleProcessContext alone;
    train(ref, alone, *ref_opt, 0, 1);
    const auto [rel, name] = worstTensor(net, ref);
    std::printf("%s: worst per-tensor relative difference %.3g (%s), whole model %.3g\n",
                kind.c_str(), rel, name.c_str(), relL2(net, ref));
    EXPECT_LE(rel, 1e-5) << kind << ": 2 ranks x " << kBatch << " vs 1 rank x " << 2 * kBatch
                         << ": parameter " << name;
    EXPECT_GT(relL2(net, init), 2e-5) << "training must move the parameters";
  }
  ctx.barrier();
}

// n random jets with 4 classes (up to kParticles particles each), as the trainer holds them.
JetTensors randomJets(int64_t n, uint64_t seed) {
  torch::Generator g = at::detail::createCPUGenerator(seed);
  JetTensors t;
  const torch::Tensor count = at::randint(1, kParticles + 1, {n, 1}, g, torch::kLong);
  t.mask = (torch::arange(kParticles).unsqueeze(0) < count).to(torch::kFloat32);
  t.particles = at::randn({n, kParticles, 13}, g) * t.mask.unsqueeze(-1);
  t.jets = at::randn({n, 4}, g);
  t.labels = at::randint(0, 4, {n}, g, torch::kLong);
  t.weights = torch::ones({n});
  for (int64_t i = 0; i < n; ++i) t.extent.push_back(count[i][0].item<int64_t>());
  return t;
}

// Rows k of `all` with k % world == rank: this rank's shard, as --shard-data deals them.
JetTensors shardOf(const JetTensors& all, int rank, int world) {
  std::vector<int64_t> rows;
  for (int64_t k = rank; k < all.size(); k += world) rows.push_back(k);
  return all.subset(rows);
}

DistOptions distOptions() {
  DistOptions o;
  o.backend = "mpi";  // CPU tensors, also on a machine with a GPU
  o.collective_timeout_s = 60;
  return o;
}

}  // namespace

TEST(PetDataParallel, ShardedEvaluationEqualsWholeSetEvaluation) {
  DataParallelContext ctx(detectLaunch(), distOptions());
  ASSERT_EQ(ctx.worldSize(), 2) << "run under mpirun -np 2";
  const JetTensors all = randomJets(37, 77);
  TrainOptions o;
  o.batch_size = 8;
  o.show_progress = false;
  o.sharded = true;
  Pet net(tinyConfig());
  net->resetParameters(5);
  const CheckpointMeta meta;
  Trainer sharded(net, meta, o, ctx);
  const EvalResult part = sharded.evaluate(shardOf(all, ctx.rank(), 2), Objective::kClassifier);

  o.sharded = false;
  SingleProcessContext alone;
  Pet ref(tinyConfig());
  ref->resetParameters(5);
  Trainer whole(ref, meta, o, alone);
  const EvalResult full = whole.evaluate(all, Objective::kClassifier);
  EXPECT_NEAR(part.loss, full.loss, 1e-6 * std::abs(full.loss)) << "rank " << ctx.rank();
  EXPECT_DOUBLE_EQ(part.metrics.at("accuracy").get<double>(),
                   full.metrics.at("accuracy").get<double>());
  EXPECT_EQ(part.metrics.at("jets").get<double>(), 37.0);
}

TEST(PetDataParallel, UnevenShardsTakeTheSameStepsOnEveryRank) {
  DataParallelContext ctx(detectLaunch(), distOptions());
  ASSERT_EQ(ctx.worldSize(), 2) << "run under mpirun -np 2";
  // 45 training jets: 23 on rank 0, 22 on rank 1; 1 validation jet: rank 1 holds none.
  const JetTensors train = shardOf(randomJets(45, 78), ctx.rank(), 2);
  const JetTensors val = shardOf(randomJets(1, 79), ctx.rank(), 2);
  TrainOptions o;
  o.batch_size = 8;
  o.max_epochs = 2;
  o.show_progress = false;
  o.sharded = true;
  o.seed = 3;
  Pet net(tinyConfig());
  net->resetParameters(6);
  const CheckpointMeta meta;
  Trainer trainer(net, meta, o, ctx);
  const FitResult r = trainer.fit(train, &val, Objective::kClassifier);
  EXPECT_EQ(r.steps, 2 * 3) << "22 rows per rank per epoch in batches of 8";
  ASSERT_EQ(r.history.size(), 2u);
  EXPECT_TRUE(std::isfinite(r.history[1].val_loss)) << "validation runs on every rank";
  EXPECT_NO_THROW(ctx.verifyParametersIdentical(*net));
}

// Flat buffers over two ranks: the all-reduce buckets are slices of the flat gradient (the
// gradients the optimiser reads are where the reduction left them, no copies), and the
// steps are bit-identical to the per-parameter form's over the same ranks.
void checkFlat(const std::string& kind) {
  DistOptions o;
  o.backend = "mpi";
  o.collective_timeout_s = 60;
  o.buckets.first_bucket_bytes = 16 << 10;  // several buckets
  o.buckets.bucket_cap_bytes = 64 << 10;
  DataParallelContext ctx(detectLaunch(), o);
  ASSERT_EQ(ctx.worldSize(), 2) << "run under mpirun -np 2";
  OptimizerSettings s;
  s.kind = kind;
  s.lr = 3e-6;

  Pet plain(tinyConfig());
  plain->resetParameters(21 + static_cast<uint64_t>(ctx.rank()));
  plain->train();
  ctx.prepare(*plain);
  auto plain_opt = makeOptimizer(plain, s);
  train(plain, ctx, *plain_opt, ctx.rank(), ctx.worldSize());

  Pet net(tinyConfig());
  net->resetParameters(21 + static_cast<uint64_t>(ctx.rank()));
  net->train();
  auto flat = std::make_shared<FlatParameters>(net->parameters());
  ctx.prepare(*net, flat.get());
  EXPECT_TRUE(ctx.bucketsSliceFlatGradient()) << kind;
  auto opt = makeFlatOptimizer(net, s, flat);
  train(net, ctx, *opt, ctx.rank(), ctx.worldSize());
  EXPECT_NO_THROW(ctx.verifyParametersIdentical(*net));
  for (size_t k = 0; k < flat->params().size(); ++k)
    EXPECT_EQ(flat->params()[k].grad().data_ptr(), flat->gradView(k).data_ptr())
        << kind << ": gradient " << k << " is not its slice of the flat buffer";
  const auto a = plain->parameters(), b = net->parameters();
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::equal(a[i], b[i])) << kind << ": parameter " << i << " differs";
  ctx.barrier();
}

TEST(PetDataParallel, FlatBuffersAreTheBucketsAndStepBitIdenticallyLion) {
  checkFlat("lion");
}
TEST(PetDataParallel, FlatBuffersAreTheBucketsAndStepBitIdenticallyAdamW) {
  checkFlat("adamw");
}

TEST(PetDataParallel, TwoRanksEqualOneRankDoubleBatchLion) {
  checkOptimizer("lion");
}
TEST(PetDataParallel, TwoRanksEqualOneRankDoubleBatchAdamW) {
  checkOptimizer("adamw");
}
