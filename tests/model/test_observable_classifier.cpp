// The observable MLP (classic OmniFold's classifier) and the boosted PET fit on top of it:
// the MLP learns a weighted density ratio, is deterministic and survives save/load; a PET
// with a zeroed output layer predicts exactly its offsets; a fit that validates its starting
// point never ends worse on validation than it started.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "core/base/error.hpp"
#include "core/model/threads.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/observable_classifier.hpp"
#include "test_jets.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;

namespace {

using modeltest::observableSample;

MlpFitOptions quickOptions() {
  MlpFitOptions o;
  o.epochs = 30;
  o.patience = 5;
  o.batch_size = 128;
  o.lr = 3e-3;
  o.seed = 5;
  return o;
}

}  // namespace

TEST(ObservableClassifier, LearnsTheWeightedDensityRatio) {
  configureThreads(1);
  const modeltest::ObservableSample s = observableSample(3000, 1);
  ObservableClassifier mlp({"a", "b"}, {32, 32}, 3);
  const FitResult fit = mlp.fit(s.x, s.y, s.w, quickOptions());
  EXPECT_GE(fit.best_epoch, 0);
  // The logit's slope in x0 is about 1 (log of exp(x0)) and it hardly depends on x1.
  const std::vector<float> l = mlp.logits({-1.f, 0.f, 1.f, 0.f, 0.f, -1.f, 0.f, 1.f});
  EXPECT_NEAR((l[1] - l[0]) / 2.0, 1.0, 0.3);
  EXPECT_LT(std::abs(l[3] - l[2]) / 2.0, 0.3);
}

TEST(ObservableClassifier, DeterministicAndSaveLoadRoundTrip) {
  configureThreads(1);
  const modeltest::ObservableSample s = observableSample(500, 2);
  ObservableClassifier a({"a", "b"}, {16}, 9), b({"a", "b"}, {16}, 9);
  a.fit(s.x, s.y, s.w, quickOptions());
  b.fit(s.x, s.y, s.w, quickOptions());
  EXPECT_EQ(a.logits(s.x), b.logits(s.x));
  const fs::path dir = fs::temp_directory_path() / ("ff_mlp_" + std::to_string(::getpid()));
  a.save(dir.string());
  const ObservableClassifier c = ObservableClassifier::load(dir.string(), {"a", "b"});
  EXPECT_EQ(a.logits(s.x), c.logits(s.x));
  EXPECT_THROW(ObservableClassifier::load(dir.string(), {"a", "c"}), InputError);
  fs::remove_all(dir);
}

TEST(ObservableClassifier, RefusesNonFiniteInputsNamingTheColumn) {
  modeltest::ObservableSample s = observableSample(50, 3);
  s.x[7] = std::nanf("");
  ObservableClassifier mlp({"mass", "tau21"}, {8}, 1);
  try {
    mlp.fit(s.x, s.y, s.w, quickOptions());
    FAIL() << "non-finite input accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tau21"), std::string::npos) << e.what();
  }
}

// Rows of one class to train on, all of them or after the validation split took the others:
// refused naming the class to add (it trained on one class without a word).
TEST(ObservableClassifier, RefusesTrainingRowsOfOneClass) {
  modeltest::ObservableSample s = observableSample(40, 4);
  for (int64_t& y : s.y) y = 0;
  ObservableClassifier mlp({"mass", "tau21"}, {8}, 1);
  MlpFitOptions o = quickOptions();
  o.label = "step 1";
  try {
    mlp.fit(s.x, s.y, s.w, o);
    FAIL() << "one class accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("step 1: the "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("are all of class 0; a classifier needs both classes: "
                                         "use more events of class 1"),
              std::string::npos)
        << e.what();
  }
  // One row of class 1: refused with the seeds whose validation split takes it, trained with
  // the others.
  s.y[17] = 1;
  o.val_fraction = 0.3;
  int refused = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    o.seed = seed;
    o.epochs = 1;
    ObservableClassifier m({"mass", "tau21"}, {8}, 1);
    try {
      m.fit(s.x, s.y, s.w, o);
    } catch (const InputError& e) {
      ++refused;
      EXPECT_NE(std::string(e.what()).find("held out for validation) are all of class 0"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_LT(refused, 20);
}

TEST(ObservableClassifier, ADivergedFitStopsNamingTheEpoch) {
  configureThreads(1);
  const modeltest::ObservableSample s = observableSample(200, 4);
  ObservableClassifier mlp({"a", "b"}, {8}, 1);
  MlpFitOptions o = quickOptions();
  o.label = "step 1 MLP";
  // Finite weights whose weighted loss overflows.
  const std::vector<float> huge(s.w.size(), 3e38f);
  try {
    mlp.fit(s.x, s.y, huge, o);
    FAIL() << "a diverged fit returned";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("step 1 MLP: training diverged at epoch 0", 0), 0u)
        << e.what();
  }
}

TEST(ObservableClassifier, AWeightDecayThatWouldZeroTheWeightsIsRefused) {
  const modeltest::ObservableSample s = observableSample(40, 4);
  ObservableClassifier mlp({"a", "b"}, {8}, 1);
  MlpFitOptions o = quickOptions();
  o.label = "step 1 MLP";
  for (const double wd : {2.0 / o.lr, 1e308, -1.0, std::nan("")}) {
    o.weight_decay = wd;
    try {
      mlp.fit(s.x, s.y, s.w, o);
      ADD_FAILURE() << "weight_decay " << wd << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("step 1 MLP: weight_decay", 0), 0u) << e.what();
    }
  }
  o.weight_decay = 0.5 / o.lr;  // halves the weights each step: legal, if odd
  o.epochs = 2;
  EXPECT_NO_THROW(mlp.fit(s.x, s.y, s.w, o));
}

TEST(BoostedPet, ZeroedOutputLayerPredictsExactlyTheOffsets) {
  configureThreads(1);
  data::JetArrays jets = modeltest::randomJets(40, 16, 10, 4);
  PetClassifier clf(petPreset("tiny"), 7);
  clf.zeroOutputLayer();
  std::vector<float> offset(40);
  for (size_t i = 0; i < offset.size(); ++i) offset[i] = -2.f + 0.1f * static_cast<float>(i);
  const std::vector<float> p = clf.predict(jets, 16, offset);
  for (size_t i = 0; i < p.size(); ++i)
    EXPECT_NEAR(p[i], 1.0 / (1.0 + std::exp(-offset[i])), 1e-6) << i;
}

TEST(BoostedPet, ValidatedStartIsNeverBeatenByAWorseEpoch) {
  configureThreads(1);
  data::JetArrays jets = modeltest::randomJets(200, 16, 10, 5);
  // Offsets that already separate the classes: a good starting point that a short PET fit
  // with a large learning rate may spoil.
  std::vector<float> offset(200);
  for (size_t i = 0; i < offset.size(); ++i) offset[i] = jets.labels[i] ? 1.5f : -1.5f;
  ClassifierFitOptions o;
  o.lr = 3e-2;
  o.lr_factor = 1;
  o.batch_size = 32;
  o.max_epochs = 3;
  o.patience = 0;
  o.seed = 3;
  o.validate_initial = true;
  PetClassifier clf(petPreset("tiny"), 7);
  clf.zeroOutputLayer();
  const FitResult fit = clf.fit(jets, nullptr, o, nullptr, offset);
  ASSERT_FALSE(std::isnan(fit.initial_val_loss));
  EXPECT_LE(fit.best_val_loss, fit.initial_val_loss);
  double best_epoch_loss = fit.initial_val_loss;
  for (const auto& e : fit.history) best_epoch_loss = std::min(best_epoch_loss, e.val_loss);
  EXPECT_EQ(fit.best_val_loss, best_epoch_loss);
  if (fit.best_epoch < 0) {
    // No epoch beat the start: the model is back at the start, predicting the offsets.
    const std::vector<float> p = clf.predict(jets, 64, offset);
    for (size_t i = 0; i < p.size(); ++i)
      EXPECT_NEAR(p[i], 1.0 / (1.0 + std::exp(-offset[i])), 1e-6);
  }
  // Offsets for a set of another size are refused.
  EXPECT_THROW(clf.predict(jets, 64, std::vector<float>(3, 0.f)), InputError);
}

TEST(BoostedPet, InterruptedBoostedFitResumesToTheSameWeights) {
  // The validated start is part of the training state: a fit stopped after its first epoch
  // (which may or may not have beaten the start) and resumed ends where an uninterrupted
  // fit ends, bit for bit.
  configureThreads(1);
  data::JetArrays jets = modeltest::randomJets(200, 16, 10, 6);
  std::vector<float> offset(200);
  for (size_t i = 0; i < offset.size(); ++i) offset[i] = jets.labels[i] ? 0.3f : -0.3f;
  const fs::path root = fs::temp_directory_path() / ("ff_boost_" + std::to_string(::getpid()));
  ClassifierFitOptions o;
  o.lr = 2e-2;  // epoch 0 ends worse than the start, a later epoch better
  o.lr_factor = 1;
  o.batch_size = 32;
  o.max_epochs = 6;
  o.patience = 0;
  o.seed = 4;
  o.validate_initial = true;
  o.resume = true;
  auto fresh = [] {
    PetClassifier c(petPreset("tiny"), 7);
    c.zeroOutputLayer();
    return c;
  };
  PetClassifier ref = fresh();
  o.state_dir = (root / "ref").string();
  const FitResult full = ref.fit(jets, nullptr, o, nullptr, offset);

  PetClassifier cut = fresh();
  o.state_dir = (root / "cut").string();
  o.stop_at_step = 6;  // 180 training jets in batches of 32: the first step of epoch 1
  EXPECT_THROW(cut.fit(jets, nullptr, o, nullptr, offset), InterruptedError);
  PetClassifier resumed = fresh();
  o.stop_at_step = -1;
  const FitResult rest = resumed.fit(jets, nullptr, o, nullptr, offset);
  EXPECT_TRUE(rest.resumed);
  EXPECT_EQ(rest.best_epoch, full.best_epoch);
  EXPECT_EQ(rest.best_val_loss, full.best_val_loss);
  EXPECT_EQ(ref.predict(jets, 64, offset), resumed.predict(jets, 64, offset));
  fs::remove_all(root);
}
