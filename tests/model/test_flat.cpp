// What the GPU path rests on, checked on the CPU: flat parameter buffers whose Lion, AdamW
// and EMA are bit-identical to the per-parameter versions (also with parameters that get no
// gradient, and across the two forms of saved optimiser state); a trainer on flat buffers
// ending bit-identical to one on per-parameter tensors; fixed batch shapes whose padding rows
// and columns leave the loss and every gradient unchanged; and the device resolution.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/data/features.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/device.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/losses.hpp"
#include "core/train/optim.hpp"
#include "tests/model/test_jets.hpp"

using namespace foldfarm;
using torch::Tensor;

namespace {

PetConfig pretrainConfig() {
  PetConfig cfg = petPreset("tiny");
  cfg.num_classes = 2;
  cfg.generator = true;
  cfg.feature_dropout = 0.2;  // random draws inside the model too
  return cfg;
}

JetTensors jets(int64_t n, uint64_t seed) {
  return JetTensors::fromArrays(modeltest::randomJets(n, 32, 25, seed),
                                data::FeatureStats::jetClass());
}

std::vector<int64_t> allRows(int64_t n) {
  std::vector<int64_t> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) r[static_cast<size_t>(i)] = i;
  return r;
}

bool sameBits(const std::vector<Tensor>& a, const std::vector<Tensor>& b, std::string* which) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) {
      *which = "tensor " + std::to_string(i);
      return false;
    }
  return true;
}

// Trains `model` for `steps` steps with `opt` (pretraining loss, or the classifier loss on
// a model with a generator head: then the generator's parameters never get a gradient).
void trainSteps(Pet& model, torch::optim::Optimizer& opt, Ema* ema, const JetTensors& set,
                bool pretrain, int steps) {
  model->train();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  model->generator().set_current_seed(5);
  for (int s = 0; s < steps; ++s) {
    const JetBatch b = makeBatch(set, allRows(set.size()), true);
    zeroGradients(opt);
    const Tensor loss =
        pretrain ? pretrainLoss(model, b, gen).total
                 : weightedClassifierLoss(model->classify(b.particles, b.mask, b.jets).logits,
                                          b.labels, b.weights);
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    setLearningRate(opt, 1e-3 * (1.0 + 0.25 * s), 3.0);
    opt.step();
    if (ema != nullptr) ema->update(model, s);
  }
}

struct Pair {
  Pet per_param{nullptr}, flat{nullptr};
  std::unique_ptr<torch::optim::Optimizer> opt_per_param, opt_flat;
};

Pair makePair(const std::string& kind) {
  Pair p;
  p.per_param = Pet(pretrainConfig());
  p.per_param->resetParameters(3);
  p.flat = Pet(pretrainConfig());
  p.flat->resetParameters(3);
  OptimizerSettings s;
  s.kind = kind;
  s.lr = 1e-3;
  s.lr_factor = 3.0;
  s.weight_decay = 0.05;
  p.opt_per_param = makeOptimizer(p.per_param, s);
  p.opt_flat = makeFlatOptimizer(p.flat, s);
  return p;
}

}  // namespace

TEST(FlatParameters, ParametersBecomeViewsOfOneBufferInReverseRegistrationOrder) {
  Pet model(pretrainConfig());
  model->resetParameters(3);
  std::vector<Tensor> before;
  for (const auto& p : model->parameters()) before.push_back(p.detach().clone());
  FlatParameters flat(model->parameters());
  const auto params = model->parameters();
  ASSERT_EQ(flat.params().size(), params.size());
  int64_t total = 0;
  for (const auto& p : params) total += p.numel();
  EXPECT_EQ(flat.values().numel(), total);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::equal(params[i], before[i])) << i;  // values kept
    const size_t k = params.size() - 1 - i;                // reverse registration order
    EXPECT_EQ(flat.positionOf(params[i]), static_cast<int64_t>(k));
    EXPECT_EQ(params[i].data_ptr(), flat.valueView(k).data_ptr()) << i;
  }
  // Writing the buffer writes the parameters.
  {
    torch::NoGradGuard ng;
    flat.values().fill_(0.5);
  }
  for (const auto& p : params) EXPECT_TRUE(torch::all(p == 0.5).item<bool>());
}

TEST(FlatOptimizer, LionIsBitIdenticalToPerParameterLion) {
  const JetTensors set = jets(24, 2);
  Pair p = makePair("lion");
  Ema ema_a(p.per_param, 0.9), ema_b(p.flat, 0.9, flatParametersOf(*p.opt_flat));
  trainSteps(p.per_param, *p.opt_per_param, &ema_a, set, true, 4);
  trainSteps(p.flat, *p.opt_flat, &ema_b, set, true, 4);
  std::string which;
  EXPECT_TRUE(sameBits(p.per_param->parameters(), p.flat->parameters(), &which)) << which;
  EXPECT_TRUE(sameBits(ema_a.shadow(), ema_b.shadow(), &which)) << "EMA " << which;
  // The gradients stayed views of the flat buffer through zeroGradients and four steps.
  FlatParameters& flat = *flatParametersOf(*p.opt_flat);
  for (size_t k = 0; k < flat.params().size(); ++k)
    EXPECT_EQ(flat.params()[k].grad().data_ptr(), flat.gradView(k).data_ptr()) << k;
}

// The average warms up: its decay is min(decay, (1 + n) / (10 + n)) after n updates, so that
// it forgets the random initial weights within the first steps (before: a constant 0.999, and
// after the 24 steps of a short pretraining the average that `generate` samples with was 98%
// the initial weights). Flat and per-parameter alike.
TEST(Ema, WarmsUpAndForgetsTheInitialWeightsWithinTheFirstSteps) {
  for (const bool flat : {false, true}) {
    Pair p = makePair("lion");
    Pet& model = flat ? p.flat : p.per_param;
    Ema ema(model, 0.999, flat ? flatParametersOf(*p.opt_flat) : nullptr);
    EXPECT_DOUBLE_EQ(ema.decayAt(0), 0.1);
    EXPECT_DOUBLE_EQ(ema.decayAt(5), 6.0 / 15.0);
    EXPECT_DOUBLE_EQ(ema.decayAt(100000), 0.999);
    std::vector<Tensor> initial;
    for (const auto& q : model->parameters()) initial.push_back(q.detach().clone());
    {
      torch::NoGradGuard ng;
      for (auto& q : model->parameters()) q.fill_(1.0);
    }
    double expect = 1;  // the product of the decays: the initial weights' share
    for (int64_t n = 0; n < 24; ++n) {
      ema.update(model, n);
      expect *= ema.decayAt(n);
    }
    // After 24 updates at 1.0 from the initial weights x: shadow = (1 - k) + k x, with k the
    // product of the decays (24! 9! / 33!, about 3e-8, where 0.999^24 is 0.976).
    EXPECT_LT(expect, 1e-6);
    const auto params = model->parameters();
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(
          torch::allclose(ema.shadow()[i], (1.0 - expect) + expect * initial[i], 1e-5, 1e-6))
          << (flat ? "flat " : "") << i;
  }
}

TEST(FlatOptimizer, ZeroGradientsZeroesTheBufferAndReplacedGradientsKeepingTheViews) {
  // One zero_ of the gradient buffer covers every gradient that is a view of it; a gradient
  // tensor that replaced its view lives elsewhere and is zeroed on its own.
  Pair p = makePair("adamw");
  trainSteps(p.flat, *p.opt_flat, nullptr, jets(8, 4), true, 1);  // gradients become views
  FlatParameters& flat = *flatParametersOf(*p.opt_flat);
  const std::vector<Tensor> params = p.flat->parameters();
  Tensor replaced = params.front();
  {
    torch::NoGradGuard ng;
    flat.grads().fill_(1.0);
    replaced.mutable_grad() = torch::ones_like(replaced);
  }
  const void* replaced_at = replaced.grad().data_ptr();
  ASSERT_FALSE(replaced.grad().is_alias_of(flat.grads()));
  zeroGradients(*p.opt_flat);
  EXPECT_EQ(flat.grads().abs().sum().item<double>(), 0.0);
  for (size_t k = 0; k < flat.params().size(); ++k) {
    const Tensor& q = flat.params()[k];
    ASSERT_TRUE(q.grad().defined()) << k;
    EXPECT_EQ(q.grad().abs().sum().item<double>(), 0.0) << k;
    if (!q.is_same(replaced)) {
      EXPECT_EQ(q.grad().data_ptr(), flat.gradView(k).data_ptr()) << k;  // still a view
    }
  }
  EXPECT_EQ(replaced.grad().data_ptr(), replaced_at);  // zeroed in place, not dropped
}

TEST(FlatOptimizer, AdamWIsBitIdenticalToLibTorchAdamW) {
  const JetTensors set = jets(24, 3);
  Pair p = makePair("adamw");
  trainSteps(p.per_param, *p.opt_per_param, nullptr, set, true, 4);
  trainSteps(p.flat, *p.opt_flat, nullptr, set, true, 4);
  std::string which;
  EXPECT_TRUE(sameBits(p.per_param->parameters(), p.flat->parameters(), &which)) << which;
}

TEST(FlatOptimizer, ParametersWithoutGradientsAreLeftAloneAsPerParameter) {
  // The classifier loss never reaches the generator head: LibTorch's AdamW and Lion skip
  // those parameters (no weight decay, no step count), and so must the flat versions.
  const JetTensors set = jets(24, 4);
  for (const char* kind : {"adamw", "lion"}) {
    Pair p = makePair(kind);
    std::vector<Tensor> gen_before;
    for (const auto& item : p.flat->named_parameters())
      if (item.key().rfind("generator.", 0) == 0) gen_before.push_back(item.value().clone());
    ASSERT_FALSE(gen_before.empty());
    trainSteps(p.per_param, *p.opt_per_param, nullptr, set, false, 3);
    trainSteps(p.flat, *p.opt_flat, nullptr, set, false, 3);
    std::string which;
    EXPECT_TRUE(sameBits(p.per_param->parameters(), p.flat->parameters(), &which))
        << kind << " " << which;
    size_t i = 0;
    for (const auto& item : p.flat->named_parameters()) {
      if (item.key().rfind("generator.", 0) == 0) {
        EXPECT_TRUE(torch::equal(item.value(), gen_before[i++])) << kind << " " << item.key();
      }
    }
  }
}

TEST(FlatOptimizer, StatesMoveBetweenTheFlatAndThePerParameterForm) {
  const JetTensors set = jets(24, 5);
  for (const char* kind : {"adamw", "lion"}) {
    Pair p = makePair(kind);
    trainSteps(p.per_param, *p.opt_per_param, nullptr, set, true, 2);
    trainSteps(p.flat, *p.opt_flat, nullptr, set, true, 2);
    std::map<std::string, Tensor> ta, tb;
    nlohmann::json ma, mb;
    exportOptimizerState(*p.opt_per_param, "opt.", ta, ma);
    exportOptimizerState(*p.opt_flat, "opt.", tb, mb);
    ASSERT_EQ(ta.size(), tb.size()) << kind;
    for (const auto& [name, t] : ta) {
      ASSERT_TRUE(tb.count(name)) << kind << " " << name;
      EXPECT_TRUE(torch::equal(t, tb.at(name))) << kind << " " << name;
    }
    EXPECT_EQ(ma, mb) << kind;
    // Crossed: each model continues from the other form's state.
    importOptimizerState(*p.opt_per_param, "opt.", tb, mb, "flat state");
    importOptimizerState(*p.opt_flat, "opt.", ta, ma, "per-parameter state");
    trainSteps(p.per_param, *p.opt_per_param, nullptr, set, true, 2);
    trainSteps(p.flat, *p.opt_flat, nullptr, set, true, 2);
    std::string which;
    EXPECT_TRUE(sameBits(p.per_param->parameters(), p.flat->parameters(), &which))
        << kind << " " << which;
  }
}

TEST(FlatOptimizer, AStateOfAnotherOptimizerIsRefusedNamingItsSource) {
  // A Lion state resumed with AdamW (either form): one InputError naming the state.
  const JetTensors set = jets(24, 7);
  Pair lion = makePair("lion");
  trainSteps(lion.per_param, *lion.opt_per_param, nullptr, set, true, 1);
  std::map<std::string, Tensor> t;
  nlohmann::json m;
  exportOptimizerState(*lion.opt_per_param, "opt.", t, m);
  Pair adamw = makePair("adamw");
  for (torch::optim::Optimizer* opt : {adamw.opt_per_param.get(), adamw.opt_flat.get()}) {
    try {
      importOptimizerState(*opt, "opt.", t, m, "/runs/x/state");
      ADD_FAILURE() << "a Lion state was imported into AdamW";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("/runs/x/state"), std::string::npos) << e.what();
    }
  }
}

TEST(FlatOptimizer, TrainerOnFlatBuffersEndsBitIdenticalToPerParameterTraining) {
  // The --device cpu result of every command is what it was before flat buffers: same
  // parameters, same loss history.
  const auto train = modeltest::randomJets(64, 32, 25, 8);
  ClassifierFitOptions o;
  o.lr = 1e-3;
  o.lr_factor = 2;
  o.batch_size = 16;
  o.max_epochs = 2;
  o.patience = 0;
  o.val_fraction = 0.25;
  o.seed = 4;
  PetClassifier a(petPreset("tiny"), 3), b(petPreset("tiny"), 3);
  o.flat = false;
  const FitResult ra = a.fit(train, nullptr, o);
  o.flat = true;
  const FitResult rb = b.fit(train, nullptr, o);
  ASSERT_EQ(ra.history.size(), rb.history.size());
  for (size_t i = 0; i < ra.history.size(); ++i) {
    EXPECT_EQ(ra.history[i].train_loss, rb.history[i].train_loss) << i;
    EXPECT_EQ(ra.history[i].val_loss, rb.history[i].val_loss) << i;
  }
  std::string which;
  EXPECT_TRUE(sameBits(a.model()->parameters(), b.model()->parameters(), &which)) << which;
}

TEST(FixedShapes, WidthsComeFromAFewBucketEdges) {
  EXPECT_EQ(fixedBatchWidth(1), 16);
  EXPECT_EQ(fixedBatchWidth(16), 16);
  EXPECT_EQ(fixedBatchWidth(17), 32);
  EXPECT_EQ(fixedBatchWidth(64), 64);
  EXPECT_EQ(fixedBatchWidth(65), 96);
  EXPECT_EQ(fixedBatchWidth(128), 128);
  EXPECT_EQ(fixedBatchWidth(129), 192);
  // Not past the data's slots rounded up to 16: 150 slots, the widest batches 160 wide.
  EXPECT_EQ(fixedBatchWidth(129, 150), 160);
  EXPECT_EQ(fixedBatchWidth(150, 150), 160);
  EXPECT_EQ(fixedBatchWidth(100, 150), 128);
  EXPECT_EQ(fixedBatchWidth(30, 30), 32);
  EXPECT_EQ(fixedBatchWidth(65, 70), 80);
  EXPECT_EQ(fixedBatchWidth(129, 0), 192);
}

// A batch larger than the rows is one batch of all of them, bucketed or not; before, the
// bucketing window (batch * 8) overflowed and `pretrain --batch 99999999999999999999` (CLI11
// reads it as INT64_MAX) crashed with SIGSEGV.
TEST(Batches, ABatchBeyondTheRowsIsOneBatchOfAllOfThem) {
  const JetTensors set = jets(40, 3);
  for (bool bucket : {false, true}) {
    for (int64_t b : {int64_t{40}, int64_t{41}, std::numeric_limits<int64_t>::max()}) {
      const auto batches = epochBatches(set, b, 1, 0, 0, 1, bucket);
      ASSERT_EQ(batches.size(), 1u) << b;
      EXPECT_EQ(batches[0].size(), 40u) << b;
      const auto shard = shardEpochBatches(set, b, 1, 0, 0, 30, bucket);
      ASSERT_EQ(shard.size(), 1u) << b;
      EXPECT_EQ(shard[0].size(), 30u) << b;
    }
    EXPECT_EQ(epochBatches(set, 16, 1, 0, 0, 1, bucket).size(), 3u);
  }
}

// Every rank takes its part of one global shuffle per epoch (README: so that a run resumes on
// another number of ranks): the ranks' rows are disjoint, as many on each, and together the
// single process's first world * (n / world) rows of that epoch, in its order (not bucketed).
TEST(Batches, RanksTakeDisjointEqualPartsOfOneGlobalShuffle) {
  const JetTensors set = jets(41, 3);
  const auto rowsOf = [](const std::vector<std::vector<int64_t>>& batches) {
    std::vector<int64_t> rows;
    for (const auto& b : batches) rows.insert(rows.end(), b.begin(), b.end());
    return rows;
  };
  for (const int64_t epoch : {int64_t{0}, int64_t{3}}) {
    const std::vector<int64_t> all = rowsOf(epochBatches(set, 4, 7, epoch, 0, 1, false));
    ASSERT_EQ(all.size(), 41u);
    for (const int world : {2, 3}) {
      const size_t per_rank = 41 / static_cast<size_t>(world);
      std::set<int64_t> seen;
      for (int rank = 0; rank < world; ++rank) {
        const std::vector<int64_t> mine =
            rowsOf(epochBatches(set, 4, 7, epoch, rank, world, false));
        ASSERT_EQ(mine.size(), per_rank) << "rank " << rank << " of " << world;
        const std::vector<int64_t> part(
            all.begin() + static_cast<std::ptrdiff_t>(rank * per_rank),
            all.begin() + static_cast<std::ptrdiff_t>((rank + 1) * per_rank));
        EXPECT_EQ(mine, part) << "rank " << rank << " of " << world << ", epoch " << epoch;
        // Bucketed: the same rows, in another order.
        std::vector<int64_t> bucketed = rowsOf(epochBatches(set, 4, 7, epoch, rank, world, true));
        std::sort(bucketed.begin(), bucketed.end());
        std::vector<int64_t> sorted = mine;
        std::sort(sorted.begin(), sorted.end());
        EXPECT_EQ(bucketed, sorted) << "rank " << rank << " of " << world;
        seen.insert(mine.begin(), mine.end());
      }
      EXPECT_EQ(seen.size(), per_rank * static_cast<size_t>(world)) << "ranks share rows";
    }
  }
  // Another epoch, another shuffle.
  EXPECT_NE(rowsOf(epochBatches(set, 4, 7, 0, 0, 1, false)),
            rowsOf(epochBatches(set, 4, 7, 1, 0, 1, false)));
}

// Bucketed, every rank takes its batches in one order: at each step the ranks' batches have
// the same size (the short one falls on the same step, so the gradient mean over ranks weighs
// every jet alike) and come from the same window at the same place in its extent order (no
// rank waits on another's longest jets). A single process's order is rank 0's.
TEST(Batches, BucketedRanksTakeBatchesOfOneSizeAndWindowPlaceAtEachStep) {
  const JetTensors set = jets(151, 5);
  const auto extentOf = [&](int64_t row) { return set.extent[static_cast<size_t>(row)]; };
  for (const bool sharded : {false, true}) {
    for (const int world : {2, 3}) {
      const int64_t batch = 4, per_rank = 151 / world, window = batch * kBucketWindow;
      ASSERT_NE(per_rank % batch, 0) << "the test needs a short batch";
      std::vector<std::vector<std::pair<int64_t, int64_t>>> places(static_cast<size_t>(world));
      std::vector<std::vector<size_t>> sizes(static_cast<size_t>(world));
      for (int rank = 0; rank < world; ++rank) {
        const auto batchesOf = [&](bool bucket) {
          return sharded ? shardEpochBatches(set, batch, 7, 1, rank, per_rank, bucket)
                         : epochBatches(set, batch, 7, 1, rank, world, bucket);
        };
        // The rank's rows in their unbucketed order: window w is rows [w * window, ...).
        std::vector<int64_t> mine;
        for (const auto& b : batchesOf(false)) mine.insert(mine.end(), b.begin(), b.end());
        ASSERT_EQ(static_cast<int64_t>(mine.size()), per_rank);
        for (const auto& b : batchesOf(true)) {
          sizes[static_cast<size_t>(rank)].push_back(b.size());
          const auto at = std::find(mine.begin(), mine.end(), b.front()) - mine.begin();
          const int64_t w = at / window;
          // The batch's place in its window: how many of the window's rows sort before it.
          std::vector<int64_t> win(mine.begin() + w * window,
                                   mine.begin() + std::min(per_rank, (w + 1) * window));
          std::stable_sort(win.begin(), win.end(),
                           [&](int64_t x, int64_t y) { return extentOf(x) < extentOf(y); });
          const auto first = std::find(win.begin(), win.end(), b.front()) - win.begin();
          ASSERT_EQ(first % batch, 0) << "rank " << rank;
          for (size_t k = 0; k < b.size(); ++k)
            ASSERT_EQ(win[static_cast<size_t>(first) + k], b[k]) << "a batch is one slice";
          places[static_cast<size_t>(rank)].emplace_back(w, first / batch);
        }
      }
      for (int rank = 1; rank < world; ++rank) {
        EXPECT_EQ(sizes[static_cast<size_t>(rank)], sizes[0])
            << "rank " << rank << " of " << world << (sharded ? ", sharded" : "");
        EXPECT_EQ(places[static_cast<size_t>(rank)], places[0])
            << "rank " << rank << " of " << world << (sharded ? ", sharded" : "");
      }
      // The short batch is not always last (the order is shuffled).
      EXPECT_NE(sizes[0].back(), static_cast<size_t>(per_rank % batch)) << world;
    }
  }
}

TEST(FixedShapes, PaddingRowsAndColumnsGiveTheSameLossAndGradients) {
  const JetTensors set = jets(20, 6);
  const JetBatch plain = makeBatch(set, allRows(13), true);
  const JetBatch padded = padBatch(plain, 32, fixedBatchWidth(plain.particles.size(1)) + 16);
  ASSERT_TRUE(padded.padded());
  ASSERT_EQ(padded.size(), 32);
  ASSERT_EQ(padded.realRows(), 13);
  EXPECT_EQ(padded.weights.narrow(0, 13, 19).sum().item<double>(), 0.0);
  for (const bool pretrain : {false, true}) {
    auto lossAndGrads = [&](const JetBatch& b) {
      PetConfig cfg = pretrainConfig();
      if (!pretrain) {
        cfg.num_classes = 1;
        cfg.generator = false;
      }
      Pet model(cfg);
      model->resetParameters(9);
      model->train();
      model->generator().set_current_seed(21);
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(12);
      Tensor loss;
      {
        const DrawRowsGuard rows(model, b.realRows());
        loss = pretrain
                   ? pretrainLoss(model, b, gen).total
                   : weightedClassifierLoss(model->classify(b.particles, b.mask, b.jets).logits,
                                            b.labels, b.weights, b.padded() ? b.realRows() : -1);
      }
      loss.backward();
      std::vector<Tensor> g{loss.detach().reshape({1})};
      for (const auto& p : model->parameters())
        g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      return g;
    };
    const auto a = lossAndGrads(plain), b = lossAndGrads(padded);
    ASSERT_TRUE(torch::isfinite(b[0]).all().item<bool>()) << "pretrain " << pretrain;
    EXPECT_NEAR(a[0].item<double>(), b[0].item<double>(), 1e-5 * std::abs(a[0].item<double>()))
        << "loss, pretrain " << pretrain;
    double worst = 0;
    for (size_t i = 1; i < a.size(); ++i) {
      const double scale = std::max(1e-3, a[i].abs().max().item<double>());
      worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>() / scale);
    }
    EXPECT_LT(worst, 1e-4) << "largest relative gradient difference, pretrain " << pretrain;
  }
}

TEST(Device, ResolutionFollowsTheRequestTheBuildAndTheSlot) {
  DeviceFacts none;  // LibTorch without CUDA
  EXPECT_EQ(resolveDevice(DeviceRequest::kCpu, none).device.str(), "cpu");
  const DeviceChoice a = resolveDevice(DeviceRequest::kAuto, none);
  EXPECT_EQ(a.device.str(), "cpu");
  EXPECT_NE(a.reason.find("without CUDA"), std::string::npos) << a.reason;
  try {
    resolveDevice(DeviceRequest::kCuda, none);
    FAIL() << "cuda resolved without CUDA";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--device cpu"), std::string::npos) << e.what();
  }
  // A campaign slot: CUDA_VISIBLE_DEVICES leaves one GPU, which CUDA numbers 0.
  DeviceFacts slot;
  slot.torch_cuda = true;
  slot.visible_gpus = 1;
  slot.cvd_set = true;
  slot.cuda_visible_devices = "5";
  const DeviceChoice s = resolveDevice(DeviceRequest::kAuto, slot);
  EXPECT_EQ(s.device.str(), "cuda:0");
  EXPECT_EQ(s.physical, "5");
  // Ranks of a node that sees all its GPUs: local rank modulo their count.
  DeviceFacts node;
  node.torch_cuda = true;
  node.visible_gpus = 4;
  node.local_rank = 6;
  EXPECT_EQ(resolveDevice(DeviceRequest::kCuda, node).device.str(), "cuda:2");
  // A slot without a GPU (CUDA_VISIBLE_DEVICES empty): auto falls back, cuda is refused.
  DeviceFacts empty;
  empty.torch_cuda = true;
  empty.cvd_set = true;
  const DeviceChoice e = resolveDevice(DeviceRequest::kAuto, empty);
  EXPECT_EQ(e.device.str(), "cpu");
  EXPECT_NE(e.reason.find("no GPU is visible"), std::string::npos) << e.reason;
  EXPECT_THROW(resolveDevice(DeviceRequest::kCuda, empty), InputError);
  EXPECT_THROW(parseDeviceRequest("tpu", "--device"), InputError);
  // This build: what the process sees agrees with LibTorch.
  EXPECT_EQ(probeDeviceFacts().torch_cuda, torchHasCuda());
}
