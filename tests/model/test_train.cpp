// Training machinery users rely on: Lion's update rule, checkpoints that round-trip and
// refuse corruption or a mismatched model, warm starts that report what they skipped, and
// exact resume after an interruption.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <numeric>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>

#include "core/base/error.hpp"
#include "core/base/sha256.hpp"
#include "core/base/stop_signal.hpp"
#include "core/build_info/build_info.hpp"
#include "core/data/jet_writer.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/finetune.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/losses.hpp"
#include "core/train/metrics.hpp"
#include "core/train/optim.hpp"
#include "core/train/torch_error.hpp"
#include "core/train/train_config.hpp"
#include "core/train/trainer.hpp"
#include "tests/model/test_jets.hpp"

using namespace foldfarm;
namespace fs = std::filesystem;

namespace {

std::string tempDir() {
  char tmpl[] = "/tmp/ff_model_test.XXXXXX";
  const char* d = mkdtemp(tmpl);
  if (!d) throw std::runtime_error("mkdtemp failed");
  return d;
}

struct TempDir {
  std::string path = tempDir();
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

ClassifierFitOptions quickFit() {
  ClassifierFitOptions o;
  o.lr = 1e-3;
  o.lr_factor = 2;
  o.batch_size = 16;
  o.max_epochs = 3;
  o.patience = 0;
  o.val_fraction = 0.25;
  o.seed = 4;
  return o;
}

std::vector<torch::Tensor> params(PetClassifier& c) {
  return c.model()->parameters();
}

}  // namespace

TEST(Lion, StepMatchesHandComputation) {
  torch::Tensor p = torch::tensor({1.0, -2.0, 0.5, 3.0}, torch::kFloat64).requires_grad_();
  Lion opt({p}, LionOptions(0.1).beta1(0.9).beta2(0.99).weight_decay(0.01));
  const double g1[4] = {0.3, -0.1, 0.0, 2.0}, g2[4] = {-0.2, 0.4, 1.0, -0.5};
  double ref[4] = {1.0, -2.0, 0.5, 3.0}, m[4] = {0, 0, 0, 0};
  for (const double* g : {g1, g2}) {
    p.mutable_grad() = torch::tensor(std::vector<double>(g, g + 4), torch::kFloat64);
    opt.step();
    for (int i = 0; i < 4; ++i) {
      ref[i] *= 1.0 - 0.1 * 0.01;
      const double c = 0.9 * m[i] + 0.1 * g[i];
      ref[i] -= 0.1 * ((c > 0) - (c < 0));
      m[i] = 0.99 * m[i] + 0.01 * g[i];
    }
  }
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(p[i].item<double>(), ref[i], 1e-12) << i;
}

TEST(Schedule, WarmupThenCosine) {
  WarmupCosine s{1e-3, 2.0, 10, 110};
  EXPECT_NEAR(s.at(0), 2e-4, 1e-12);
  EXPECT_NEAR(s.at(9), 2e-3, 1e-12);
  EXPECT_NEAR(s.at(60), 1e-3, 1e-9);
  EXPECT_NEAR(s.at(110), 0.0, 1e-12);
}

TEST(Checkpoint, RoundTripGivesIdenticalOutputs) {
  TempDir dir;
  PetClassifier a(petPreset("tiny"), 21);
  const auto jets = modeltest::randomJets(20, 32, 25, 2);
  a.save(dir.path);
  PetClassifier b = PetClassifier::load(dir.path);
  EXPECT_EQ(a.predict(jets), b.predict(jets));
  EXPECT_EQ(b.config(), a.config());
}

TEST(Checkpoint, FlippedByteIsRefused) {
  TempDir dir;
  PetClassifier a(petPreset("tiny"), 1);
  a.save(dir.path);
  std::string payload;
  for (const auto& e : fs::directory_iterator(dir.path))
    if (e.path().extension() == ".pt") payload = e.path().string();
  ASSERT_FALSE(payload.empty());
  {
    std::fstream f(payload, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(fs::file_size(payload) / 2));
    char c;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    f.seekp(static_cast<std::streamoff>(fs::file_size(payload) / 2));
    f.write(&c, 1);
  }
  try {
    PetClassifier::load(dir.path);
    FAIL() << "corrupt checkpoint was accepted";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
    EXPECT_NE(msg.find(payload), std::string::npos) << msg;
  }
  // A checkpoint copied without its tensors file says that it is incomplete.
  fs::remove(payload);
  try {
    PetClassifier::load(dir.path);
    FAIL() << "a checkpoint without its tensors was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(payload + ": missing (named by meta.json): the "
                                                   "checkpoint is incomplete"),
              std::string::npos)
        << e.what();
  }
}

TEST(Checkpoint, EveryCommandTakesTheCheckpointOrTheRunDirectory) {
  // `pretrain --out R` writes R/model/meta.json: R and R/model name the same checkpoint.
  TempDir run;
  const std::string model = run.path + "/model";
  PetClassifier(petPreset("tiny"), 3).save(model);
  EXPECT_EQ(resolveCheckpointDir(model), model);
  EXPECT_EQ(resolveCheckpointDir(run.path), model);
  EXPECT_EQ(resolveCheckpointDir(model + "/meta.json"), model);  // the file named: its directory
  try {
    resolveCheckpointDir(run.path + "/nothing");
    FAIL() << "a directory without a checkpoint was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model/meta.json"), std::string::npos) << e.what();
  }
  // A training's directory before its model (still training, or stopped): said so (before:
  // "not a checkpoint directory; pass the output of `foldfarm pretrain`", which it is).
  TempDir unfinished;
  PetClassifier(petPreset("tiny"), 3).save(unfinished.path + "/state");
  try {
    resolveCheckpointDir(unfinished.path);
    FAIL() << "an unfinished training was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(unfinished.path + ": its training has not finished"),
              std::string::npos)
        << e.what();
  }
  // checkpointHoldsTensors: exactly the tensors a checkpoint holds, bit for bit.
  EXPECT_TRUE(checkpointHoldsTensors(model, readCheckpoint(model).tensors));
  std::map<std::string, torch::Tensor> other = readCheckpoint(model).tensors;
  other.begin()->second = other.begin()->second.clone();
  other.begin()->second.view(-1)[0] += 1;
  EXPECT_FALSE(checkpointHoldsTensors(model, other));
  other.erase(other.begin());
  EXPECT_FALSE(checkpointHoldsTensors(model, other));
  EXPECT_FALSE(checkpointHoldsTensors(run.path + "/nothing", other));
}

TEST(Checkpoint, EditedMetadataIsRefused) {
  TempDir dir;
  PetClassifier(petPreset("tiny"), 1).save(dir.path);
  const std::string meta = dir.path + "/meta.json";
  std::string text = readFile(meta);
  const auto pos = text.find("\"dim\": 32");
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, 9, "\"dim\": 64");
  std::ofstream(meta) << text;
  EXPECT_THROW(PetClassifier::load(dir.path), InputError);
}

// meta.json names the build that wrote the checkpoint, beside its version, inside the checksum.
// A checkpoint of another build (a foundation pretrained before a rebuild) is read as any
// other: the build is recorded, never compared.
TEST(Checkpoint, MetaJsonRecordsTheBuildThatWroteIt) {
  TempDir dir;
  PetClassifier(petPreset("tiny"), 1).save(dir.path);
  const std::string meta = dir.path + "/meta.json";
  nlohmann::json j = nlohmann::json::parse(readFile(meta));
  EXPECT_EQ(j.at("foldfarm_version"), FOLDFARM_VERSION);
  EXPECT_EQ(j.at("build"), buildInfoJson());
  EXPECT_EQ(j.at("build").at("commit"), buildInfo().commit);
  // The LibTorch it names is that of the headers this program was compiled against (the
  // front end, which links no LibTorch, prints the same from the configuration).
  EXPECT_EQ(j.at("build").at("libtorch"), TORCH_VERSION);
  const std::map<std::string, torch::Tensor> tensors = readCheckpoint(dir.path).tensors;

  // Edited by hand: refused, as any edit of the description is.
  j["build"]["commit"] = "0123abc";
  std::ofstream(meta) << j.dump(2);
  EXPECT_THROW(readCheckpoint(dir.path), InputError);
  // Written so by another build (its checksum its own): read, and holding the same tensors.
  j.erase("meta_sha256");
  j["meta_sha256"] = sha256Hex(j.dump());
  std::ofstream(meta) << j.dump(2);
  EXPECT_NO_THROW(PetClassifier::load(dir.path));
  EXPECT_TRUE(checkpointHoldsTensors(dir.path, tensors));
  EXPECT_EQ(checkpointIdentity(dir.path), j["meta_sha256"]);
}

TEST(WarmStart, ReportsSkippedOutputLayer) {
  TempDir dir;
  PetConfig ten = petPreset("tiny");
  ten.num_classes = 10;
  ten.generator = true;
  Pet source(ten);
  source->resetParameters(99);
  std::map<std::string, torch::Tensor> t;
  addModelTensors(source, "model.", t);
  CheckpointMeta meta;
  meta.config = ten;
  writeCheckpoint(dir.path, meta, t);

  PetClassifier clf(petPreset("tiny"), 5);
  const WarmStartReport r = clf.warmStart(dir.path);
  ASSERT_EQ(r.skipped.size(), 2u) << r.summary();
  EXPECT_NE(r.skipped[0].find("classifier.logits.weight"), std::string::npos);
  EXPECT_NE(r.skipped[1].find("classifier.logits.bias"), std::string::npos);
  EXPECT_TRUE(torch::equal(clf.model()->named_parameters()["body.in1.weight"],
                           source->named_parameters()["body.in1.weight"]));
  EXPECT_TRUE(torch::equal(clf.model()->named_parameters()["classifier.jet_reg.weight"],
                           source->named_parameters()["classifier.jet_reg.weight"]));
}

TEST(Resume, StopAndResumeEndsWithIdenticalParameters) {
  const auto jets = modeltest::randomJets(64, 32, 25, 8);
  ClassifierFitOptions o = quickFit();

  PetClassifier straight(petPreset("tiny"), 3);
  const FitResult full = straight.fit(jets, nullptr, o);

  TempDir state;
  PetClassifier interrupted(petPreset("tiny"), 3);
  o.state_dir = state.path;
  o.stop_at_step = 5;  // mid-epoch (3 steps per epoch)
  EXPECT_THROW(interrupted.fit(jets, nullptr, o), InterruptedError);
  ASSERT_TRUE(checkpointExists(state.path));

  PetClassifier resumed(petPreset("tiny"),
                        77);  // different init: everything must come from the state
  o.stop_at_step = -1;
  o.resume = true;
  const FitResult rest = resumed.fit(jets, nullptr, o);
  EXPECT_TRUE(rest.resumed);
  ASSERT_EQ(rest.history.size(), full.history.size());
  for (size_t i = 0; i < full.history.size(); ++i)
    EXPECT_EQ(rest.history[i].train_loss, full.history[i].train_loss) << i;
  const auto a = params(straight), b = params(resumed);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << i;
}

// A fit stopped by one build and resumed by another names the earlier build in its result
// (and so in the model's meta.json, training.fit), and keeps naming it through later stops and
// resumes by this build; a fit that one build ran throughout names none.
TEST(Resume, AFitResumedByAnotherBuildNamesTheEarlierBuild) {
  const auto jets = modeltest::randomJets(64, 32, 25, 8);
  ClassifierFitOptions o = quickFit();
  TempDir state;
  o.state_dir = state.path;
  o.stop_at_step = 4;
  PetClassifier first(petPreset("tiny"), 3);
  EXPECT_THROW(first.fit(jets, nullptr, o), InterruptedError);
  // The state as another build would have written it (its checksum its own).
  const std::string meta = state.path + "/meta.json";
  nlohmann::json j = nlohmann::json::parse(readFile(meta));
  ASSERT_EQ(j.at("build"), buildInfoJson());
  nlohmann::json other = buildInfoJson();
  other["commit"] = "0123abc";
  j["build"] = other;
  j.erase("meta_sha256");
  j["meta_sha256"] = sha256Hex(j.dump());
  std::ofstream(meta) << j.dump(2);

  o.resume = true;
  o.stop_at_step = 7;  // stopped again, by this build
  PetClassifier second(petPreset("tiny"), 3);
  EXPECT_THROW(second.fit(jets, nullptr, o), InterruptedError);
  EXPECT_EQ(nlohmann::json::parse(readFile(meta)).at("training").at("result").at("earlier_builds"),
            nlohmann::json::array({other}));
  o.stop_at_step = -1;
  PetClassifier third(petPreset("tiny"), 3);
  const FitResult rest = third.fit(jets, nullptr, o);
  EXPECT_TRUE(rest.resumed);
  EXPECT_EQ(rest.earlier_builds, std::vector<nlohmann::json>({other}));
  EXPECT_EQ(toJson(rest).at("earlier_builds"), nlohmann::json::array({other}));

  TempDir whole;
  o.state_dir = whole.path;
  o.resume = false;
  o.stop_at_step = 4;
  PetClassifier a(petPreset("tiny"), 3);
  EXPECT_THROW(a.fit(jets, nullptr, o), InterruptedError);
  o.resume = true;
  o.stop_at_step = -1;
  PetClassifier b(petPreset("tiny"), 3);
  const FitResult one = b.fit(jets, nullptr, o);
  EXPECT_TRUE(one.resumed);
  EXPECT_TRUE(one.earlier_builds.empty());
  EXPECT_FALSE(toJson(one).contains("earlier_builds")) << "one build ran it all";
}

// The helper thread that gathers the next batch while a step runs (TrainOptions::prefetch;
// by default on a GPU only) trains on the batches the main thread would have gathered, and
// a stop while it holds the next batch resumes as the straight run: run here on the CPU,
// pretraining (bucketed widths, fixed shapes with padding rows, EMA).
TEST(Resume, PrefetchedBatchesTrainAndResumeAsBatchesGatheredInTheStep) {
  data::JetArrays a = modeltest::randomJets(56, 32, 25, 9);
  for (size_t i = 0; i < a.labels.size(); ++i) a.labels[i] = static_cast<int64_t>(i % 3);
  const JetTensors train = JetTensors::fromArrays(a, data::FeatureStats::jetClass());
  auto fit = [&](TrainOptions::Prefetch prefetch, int64_t stop_at, const std::string& state) {
    PetConfig cfg = petPreset("tiny");
    cfg.num_classes = 3;
    cfg.generator = true;
    const bool resume = !state.empty() && stop_at < 0;
    Pet model(cfg);
    model->resetParameters(resume ? 71 : 4);  // a resume takes every weight from the state
    TrainOptions o;
    o.batch_size = 16;  // 4 steps per epoch, the last one short
    o.max_epochs = 2;
    o.seed = 6;
    o.ema = true;
    o.fixed_shapes = true;
    o.show_progress = false;
    o.optimizer.lr = 3e-4;
    o.prefetch = prefetch;
    o.state_dir = state;
    o.resume = resume;
    o.stop_at_step = stop_at;
    CheckpointMeta meta;
    SingleProcessContext single;
    Trainer t(model, meta, o, single);
    const FitResult r = t.fit(train, nullptr, Objective::kPretrain);
    std::vector<torch::Tensor> p;
    for (const auto& x : t.model()->parameters()) p.push_back(x.detach().clone());
    return std::make_pair(p, r);
  };
  const auto [inline_p, inline_r] = fit(TrainOptions::Prefetch::kOff, -1, "");
  const auto [pre_p, pre_r] = fit(TrainOptions::Prefetch::kOn, -1, "");
  ASSERT_EQ(pre_r.history.size(), 2u);
  ASSERT_EQ(inline_r.history.size(), 2u);
  for (size_t e = 0; e < 2; ++e)
    EXPECT_EQ(pre_r.history[e].train_loss, inline_r.history[e].train_loss);
  for (size_t i = 0; i < inline_p.size(); ++i)
    EXPECT_TRUE(torch::equal(pre_p[i], inline_p[i])) << i;

  TempDir state;
  EXPECT_THROW(fit(TrainOptions::Prefetch::kOn, 6, state.path),
               InterruptedError);  // epoch 1, step 2
  const auto [resumed_p, resumed_r] = fit(TrainOptions::Prefetch::kOn, -1, state.path);
  EXPECT_TRUE(resumed_r.resumed);
  ASSERT_EQ(resumed_r.history.size(), 2u);
  EXPECT_EQ(resumed_r.history[1].train_loss, inline_r.history[1].train_loss);
  for (size_t i = 0; i < inline_p.size(); ++i)
    EXPECT_TRUE(torch::equal(resumed_p[i], inline_p[i])) << i;
}

namespace {

// A tiny fit on `jets` stopped (as by a signal) after its first steps, its state in `dir`;
// the options to resume it with.
ClassifierFitOptions stoppedFit(const data::JetArrays& jets, const std::string& dir) {
  ClassifierFitOptions o = quickFit();
  o.state_dir = dir;
  PetClassifier clf(petPreset("tiny"), 3);
  requestStop(10);
  EXPECT_THROW(clf.fit(jets, nullptr, o), InterruptedError);
  clearStopRequest();
  EXPECT_TRUE(checkpointExists(dir));
  o.resume = true;
  return o;
}

}  // namespace

TEST(Resume, SignalStopSavesStateAndMismatchedConfigIsRefused) {
  const auto jets = modeltest::randomJets(32, 32, 25, 8);
  TempDir state;
  ClassifierFitOptions o = stoppedFit(jets, state.path);

  PetConfig other = petPreset("tiny");
  other.dim = 16;
  PetClassifier wrong(other, 3);
  try {
    wrong.fit(jets, nullptr, o);
    FAIL() << "resumed a state of another model";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(state.path), std::string::npos) << msg;
    EXPECT_NE(msg.find("dim"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--preset/--config"), std::string::npos) << msg;
  }
  // Other classes: the data's labels set them, not a preset (the advice said "--preset").
  Checkpoint ck = readCheckpoint(state.path);
  PetConfig more = ck.meta.config;
  more.num_classes += 4;
  try {
    requireSameConfig(ck, more, "resume with the same --preset/--config");
    FAIL() << "accepted another number of classes";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("the classes come from the training data's labels: this "
                                         "data has " +
                                         std::to_string(more.num_classes) + " classes"),
              std::string::npos)
        << e.what();
  }
}

// A resume on the same jets whose values were changed in place (a recalibrated file: the same
// number of jets, labels, weights and real particles, which the fingerprint counts and sums) is
// refused, and so are the same jets in another order; on the data it was written with it
// resumes.
TEST(Resume, TheSameJetsWithOtherValuesOrInAnotherOrderAreRefused) {
  const auto jets = modeltest::randomJets(32, 32, 25, 8);
  TempDir state;
  ClassifierFitOptions o = stoppedFit(jets, state.path);

  auto recalibrated = jets;
  recalibrated.particle(0, 0)[0] *= 1.01f;  // one real particle's first feature, 1% off
  PetClassifier again(petPreset("tiny"), 3);
  try {
    again.fit(recalibrated, nullptr, o);
    FAIL() << "resumed a state on other values";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("written for other values of the training data"),
              std::string::npos)
        << e.what();
  }
  // The same jets in another order of rows: every sum alike, the batches not.
  std::vector<int64_t> rows(static_cast<size_t>(jets.n));
  std::iota(rows.begin(), rows.end(), 0);
  std::swap(rows[3], rows[17]);
  try {
    again.fit(jets.subset(rows), nullptr, o);
    FAIL() << "resumed a state on reordered rows";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("in another order of rows"), std::string::npos)
        << e.what();
  }
  const FitResult r = again.fit(jets, nullptr, o);
  EXPECT_TRUE(r.resumed);
}

// The fingerprint's float sums (weights, mask, offsets) can change in their last printed digits
// under another thread count (LibTorch splits sums of 32,768 values and more by thread): where
// the state kept the values' exact bit sums, a resume whose float sums print otherwise goes on;
// a count or label sum that differs is still refused, and so is a float sum without the exact
// values (a state written before they were kept).
TEST(Resume, FloatSumsOfTheFingerprintGiveWayToTheExactValues) {
  const auto jets = modeltest::randomJets(32, 32, 25, 8);
  auto rewrite = [](const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
    Checkpoint ck = readCheckpoint(dir);
    edit(ck.meta.training);
    writeCheckpoint(dir, ck.meta, ck.tensors);
  };
  // "size:labels:weights:mask|..." -> the weights' sum with another last digit.
  auto otherFloat = [](nlohmann::json& t) {
    std::string fp = t.at("data_fingerprint").get<std::string>();
    const size_t third = fp.find(':', fp.find(':') + 1) + 1;
    fp.insert(fp.find(':', third), "1");
    t["data_fingerprint"] = fp;
  };
  {
    TempDir state;
    ClassifierFitOptions o = stoppedFit(jets, state.path);
    rewrite(state.path, otherFloat);
    PetClassifier again(petPreset("tiny"), 3);
    EXPECT_TRUE(again.fit(jets, nullptr, o).resumed);
  }
  {
    TempDir state;
    ClassifierFitOptions o = stoppedFit(jets, state.path);
    rewrite(state.path, [](nlohmann::json& t) {
      std::string fp = t.at("data_fingerprint").get<std::string>();
      fp.insert(fp.find(':') + 1, "9");  // the label sum
      t["data_fingerprint"] = fp;
    });
    PetClassifier again(petPreset("tiny"), 3);
    try {
      again.fit(jets, nullptr, o);
      FAIL() << "resumed a state of other labels";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("written for different training data"),
                std::string::npos)
          << e.what();
    }
  }
  {
    TempDir state;
    ClassifierFitOptions o = stoppedFit(jets, state.path);
    rewrite(state.path, [&](nlohmann::json& t) {
      otherFloat(t);
      t.erase("data_values");
    });
    PetClassifier again(petPreset("tiny"), 3);
    EXPECT_THROW(again.fit(jets, nullptr, o), InputError);
  }
}

// A state past the epochs a resume asks for is refused saying so (before: nothing trained and
// the progress read "130/78 steps").
TEST(Resume, AStatePastTheEpochsAskedForIsRefused) {
  const auto jets = modeltest::randomJets(32, 32, 25, 8);
  TempDir state;
  ClassifierFitOptions o = quickFit();
  o.state_dir = state.path;
  o.max_epochs = 3;
  PetClassifier(petPreset("tiny"), 3).fit(jets, nullptr, o);
  ASSERT_TRUE(checkpointExists(state.path)) << "the state of a finished run is kept";
  o.resume = true;
  o.max_epochs = 2;
  try {
    PetClassifier(petPreset("tiny"), 3).fit(jets, nullptr, o);
    FAIL() << "resumed a state past the epochs asked for";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(state.path + ": training state is at epoch 3, past the 2 "
                                                      "epochs asked for"),
              std::string::npos)
        << e.what();
  }
  o.max_epochs = 3;  // as written: the finished run's result again
  EXPECT_TRUE(PetClassifier(petPreset("tiny"), 3).fit(jets, nullptr, o).resumed);
}

TEST(Fit, LearnsSeparableJetsAndEarlyStopsWithBestWeights) {
  const auto train = modeltest::randomJets(160, 32, 25, 10);
  const auto test = modeltest::randomJets(80, 32, 25, 11);
  PetClassifier clf(petPreset("tiny"), 2);
  ClassifierFitOptions o = quickFit();
  o.max_epochs = 6;
  o.patience = 2;
  const FitResult r = clf.fit(train, nullptr, o);
  ASSERT_GE(r.best_epoch, 0);
  const auto p = clf.predict(test);
  double correct = 0;
  for (int64_t i = 0; i < test.n; ++i) correct += (p[i] > 0.5f) == (test.labels[i] == 1);
  EXPECT_GT(correct / test.n, 0.8);
  double best = 1e9;
  for (const auto& e : r.history) best = std::min(best, e.val_loss);
  EXPECT_EQ(best, r.best_val_loss);
}

namespace {

// Validation loss and probabilities of `set` through the model's forward pass, as the Trainer
// computes them (evaluation batches sorted by extent, trimmed; the loss summed in double).
struct ForwardScores {
  torch::Tensor probs;
  double loss = 0;
};

ForwardScores forwardScores(Pet& m, const JetTensors& set, int64_t batch) {
  torch::NoGradGuard no_grad;
  m->eval();
  torch::Tensor probs = torch::zeros({set.size()});
  torch::Tensor loss = torch::zeros({}, torch::kFloat64);
  for (const auto& rows : evalBatches(set, batch, true)) {
    const JetBatch b = makeBatch(set, rows, true);
    const torch::Tensor logits = classifierLogits(m, b);
    loss.add_(weightedClassifierLoss(logits, b.labels, b.weights).to(torch::kFloat64) *
              static_cast<double>(b.size()));
    probs.index_copy_(0, torch::tensor(rows), classProbabilities(logits));
  }
  return {probs, loss.item<double>() / static_cast<double>(set.size())};
}

// Bit for bit (+0 and -0 apart; NaN where the other has NaN).
bool sameBits(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::equal(a.contiguous().view(torch::kInt32), b.contiguous().view(torch::kInt32));
}

}  // namespace

// A boosted classifier's output layer starts at zero (and a step whose epochs never beat the
// start ends there): validation and prediction then score each jet's offset without running
// PET, and must give exactly what the forward pass gives: the same probabilities and
// validation loss, bit for bit, empty jets and offsets of -0 included. A non-finite parameter
// takes the forward pass (its NaNs are the result).
TEST(Scoring, AZeroOutputLayerScoresTheOffsetsAsTheForwardPassDoes) {
  data::JetArrays raw = modeltest::randomJets(500, 64, 60, 12);
  for (int64_t i = 0; i < raw.n; i += 97)  // jets without particles
    std::fill(raw.particle(i, 0), raw.particle(i, 0) + 64 * data::kNumParticleFeatures, 0.0f);
  JetTensors set = JetTensors::fromArrays(raw, data::FeatureStats::jetClass());
  std::vector<float> offset(static_cast<size_t>(set.size()));
  for (size_t i = 0; i < offset.size(); ++i)
    offset[i] = i % 50 == 0 ? -0.0f : i % 50 == 1 ? 0.0f : std::sin(0.37f * static_cast<float>(i));
  set.setOffset(offset);
  PetClassifier clf(petPreset("tiny"), 5);
  clf.zeroOutputLayer();
  Pet& m = clf.model();
  ASSERT_TRUE(m->classifierOutputIsZero());

  const ForwardScores full = forwardScores(m, set, 1024);
  EXPECT_TRUE(sameBits(predictProbabilities(m, set, 1024), full.probs));
  SingleProcessContext alone;
  TrainOptions t;
  t.batch_size = 64;  // evaluation batches of 256
  t.show_progress = false;
  const CheckpointMeta meta;  // a named one: GCC 12 warns of a temporary's string as unset
  Trainer trainer(m, meta, t, alone);
  const EvalResult ev = trainer.evaluate(set, Objective::kClassifier);
  const ForwardScores full256 = forwardScores(m, set, 256);
  EXPECT_EQ(ev.loss, full256.loss);
  EXPECT_TRUE(sameBits(ev.probabilities, full256.probs));

  {
    torch::NoGradGuard no_grad;
    m->named_parameters()["body.in1.weight"][0][0] = std::nanf("");
  }
  const torch::Tensor p = predictProbabilities(m, set, 1024);
  const ForwardScores broken = forwardScores(m, set, 1024);
  EXPECT_GT(torch::isnan(p).sum().item<int64_t>(), 0);
  EXPECT_TRUE(torch::equal(torch::isnan(p), torch::isnan(broken.probs)));
  EXPECT_TRUE(torch::equal(torch::nan_to_num(p), torch::nan_to_num(broken.probs)));
}

// Every recipe value no run can use is refused by name, before anything is trained (before:
// clip_norm 1e308 overflowed the float norm, an "internal error").
// A classifier fit on W data-parallel ranks (a chain's steps under mpirun) trains its batch
// size per rank at the learning rate scaled by sqrt(W), as pretraining does (OmniLearn's √W
// scaling; before: a global batch W times larger at the one-rank rate).
TEST(TrainOptions, AFitOnSeveralRanksScalesItsLearningRateWithTheirSquareRoot) {
  ClassifierFitOptions o;
  o.batch_size = 64;
  EXPECT_DOUBLE_EQ(fitTrainOptions(o).warmup_scale, 1.0);
  const TrainOptions four = fitTrainOptions(o, 4);
  EXPECT_DOUBLE_EQ(four.warmup_scale, 2.0);
  EXPECT_EQ(four.batch_size, 64);
}

TEST(TrainOptions, ValuesNoRunCanUseAreRefusedByName) {
  struct Case {
    const char* name;
    void (*set)(TrainOptions&);
  };
  const Case cases[] = {
      {"clip_norm", [](TrainOptions& o) { o.clip_norm = 1e308; }},
      {"clip_norm", [](TrainOptions& o) { o.clip_norm = -1; }},
      {"warmup_epochs", [](TrainOptions& o) { o.warmup_epochs = 1e308; }},
      {"warmup_epochs", [](TrainOptions& o) { o.warmup_epochs = std::nan(""); }},
      {"weight_decay", [](TrainOptions& o) { o.optimizer.weight_decay = INFINITY; }},
      // lr * weight_decay >= 1 zeroes or flips the weights every step, at the peak lr
      // (lr * warmup_scale): 3e-4 * 4 * 1000 = 1.2.
      {"weight_decay", [](TrainOptions& o) { o.optimizer.weight_decay = 1e308; }},
      {"weight_decay",
       [](TrainOptions& o) {
         o.optimizer.lr = 3e-4;
         o.warmup_scale = 4;
         o.optimizer.weight_decay = 1000;
       }},
      {"ema_decay", [](TrainOptions& o) { o.ema_decay = 1; }},
      {"optimizer must be lion or adamw, not 'sgd'",
       [](TrainOptions& o) { o.optimizer.kind = "sgd"; }},
      {"lr", [](TrainOptions& o) { o.optimizer.lr = 2; }},
      {"batch size", [](TrainOptions& o) { o.batch_size = 0; }},
      {"interval between state saves", [](TrainOptions& o) { o.save_every_s = -1; }},
      {"interval between state saves", [](TrainOptions& o) { o.save_every_s = std::nan(""); }},
  };
  for (const Case& c : cases) {
    TrainOptions o;
    o.label = "finetune";
    c.set(o);
    try {
      validateTrainOptions(o);
      ADD_FAILURE() << c.name << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("finetune: ", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.name), std::string::npos) << e.what();
    }
  }
  TrainOptions fine;
  fine.clip_norm = 1e6;
  fine.warmup_epochs = 3;
  fine.optimizer.lr = 3e-4;
  fine.optimizer.weight_decay = 1000;  // 3e-4 * 1000 = 0.3 at warmup_scale 1
  EXPECT_NO_THROW(validateTrainOptions(fine));
}

// A config file's recipe replaces the options key by key (the CLI leaves out the keys whose
// options were given: tested through the binary in test_e2e_bad_inputs); keys and types are
// checked by name.
TEST(TrainConfig, FileRecipeThenGivenOptionsAndTheirChecks) {
  const fs::path dir =
      fs::temp_directory_path() / ("ff_train_config_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "cfg.json").string();
  std::ofstream(path) << R"({"model": {"dim": 48}, "train": {"lr": 1e-3, "epochs": 7,
                             "weight_decay": 0.01, "optimizer": "adamw"}})";
  const TrainConfigFile file = readTrainConfigFile(path);
  EXPECT_EQ(petConfigFrom("tiny", file).dim, 48);
  TrainOptions t;
  t.batch_size = 100;
  applyTrainRecipe(file.train, file.path, t);
  EXPECT_DOUBLE_EQ(t.optimizer.lr, 1e-3);
  EXPECT_EQ(t.optimizer.kind, "adamw");
  EXPECT_DOUBLE_EQ(t.optimizer.weight_decay, 0.01);
  EXPECT_EQ(t.max_epochs, 7);
  EXPECT_EQ(t.batch_size, 100) << "a key the file does not name keeps the command's default";
  ClassifierFitOptions f;
  applyTrainRecipe(file.train, file.path, f);
  EXPECT_EQ(f.max_epochs, 7);
  EXPECT_EQ(f.optimizer, "adamw");
  EXPECT_THROW(applyTrainRecipe({{"ema_decay", 0.9}}, "x", f), InputError);
  // A bare object is all size overrides; no file, no change.
  std::ofstream(path) << R"({"dim": 40})";
  EXPECT_EQ(petConfigFrom("tiny", readTrainConfigFile(path)).dim, 40);
  EXPECT_EQ(petConfigFrom("tiny", readTrainConfigFile("")).dim, petPreset("tiny").dim);
  for (const auto& [body, wanted] : std::vector<std::pair<std::string, std::string>>{
           {R"({"train": {"lr": "fast"}})", "'train.lr'"},
           {R"({"train": {"epochs": 2.5}})", "'train.epochs' must be an integer"},
           {R"({"train": {"epoch": 2}})", "unknown train key 'epoch'"},
           {R"({"train": [1]})", "\"train\" must be an object"},
           {R"({"model": {}, "optimiser": "lion"})", "unknown top-level key 'optimiser'"},
           {R"({"trian": {"lr": 1e-3}})", "unknown top-level key 'trian'"},
           {R"({"train": {"batch_size": 0}})", "'train.batch_size' must be >= 1"},
           {R"({"train": {"patience": -1}})", "'train.patience' must be >= 0"},
           {R"({"model": 3})", "\"model\" must be an object"},
           {"[1, 2]", "a config must be a JSON object"},
           {"{,}", "not valid JSON"}}) {
    std::ofstream(path) << body;
    try {
      readTrainConfigFile(path);
      ADD_FAILURE() << body << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find(wanted), std::string::npos) << e.what();
    }
  }
  fs::remove_all(dir);
}

TEST(Metrics, AucAndRejectionOfKnownScoresAndNaNScoresGiveNaN) {
  // Signals above every background but one tie: AUC = (3 + 0.5) / 4.
  const std::vector<double> scores{0.9, 0.8, 0.4, 0.4, 0.1};
  const std::vector<int> labels{1, 1, 1, 0, 0};
  const BinaryMetrics m = binaryMetrics(scores, labels);
  EXPECT_DOUBLE_EQ(m.auc, (2.0 * 2 + 1.0 * 1 + 0.5) / 6.0);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.8);
  EXPECT_TRUE(std::isinf(m.rejection30)) << "no background above the top signal";
  // A diverged model's NaN scores: every figure NaN, at once (before: the evaluation hung).
  const BinaryMetrics n = binaryMetrics({0.9, std::nan(""), 0.2}, {1, 0, 0});
  EXPECT_TRUE(std::isnan(n.auc) && std::isnan(n.accuracy) && std::isnan(n.rejection50));
  EXPECT_TRUE(std::isnan(backgroundRejection({std::nan(""), 0.5}, {1, 0}, {}, 0.5)));
}

// Negative event weights (NLO generators) make the weighted cross entropy unbounded below: a
// negative-weight event's loss counts only up to kNegativeWeightLossCap, so a fit gains nothing
// by pushing its logit far to the wrong side. Weights >= 0 give the plain loss and gradients bit
// for bit.
TEST(Losses, ANegativeWeightEventCountsOnlyUpToTheCap) {
  const auto loss = [](const std::vector<float>& z, const std::vector<float>& w,
                       torch::Tensor* grad) {
    torch::Tensor logits = torch::tensor(z).unsqueeze(1).set_requires_grad(true);
    const torch::Tensor labels = torch::tensor({0, 0, 1, 1}, torch::kLong);
    torch::Tensor l = weightedClassifierLoss(logits, labels, torch::tensor(w));
    l.backward();
    *grad = logits.grad().squeeze(1);
    return l.item<double>();
  };
  const auto bce = [](double z, int y) { return std::log1p(std::exp(y == 1 ? -z : z)); };
  torch::Tensor g;
  // Event 0 (label 0, weight -2) far on the wrong side: its loss is capped, its gradient 0.
  const double capped = loss({8.0f, 8.0f, -1.0f, 0.5f}, {-2.0f, 1.0f, 0.5f, 1.0f}, &g);
  EXPECT_NEAR(capped,
              (-2 * kNegativeWeightLossCap + bce(8, 0) + 0.5 * bce(-1, 1) + bce(0.5, 1)) / 4, 1e-5);
  EXPECT_EQ(g[0].item<float>(), 0.0f);
  EXPECT_GT(g[1].item<float>(), 0.0f) << "the positive-weight event beside it still pulls";
  // Below the cap a negative-weight event counts as it is (its gradient has the weight's sign).
  loss({1.0f, 8.0f, -1.0f, 0.5f}, {-2.0f, 1.0f, 0.5f, 1.0f}, &g);
  EXPECT_LT(g[0].item<float>(), 0.0f);
  // Weights >= 0: the plain mean of w_i * loss_i and its gradients, bit for bit.
  const std::vector<float> z = {8.0f, -3.0f, -1.0f, 0.5f}, w = {2.0f, 0.0f, 0.5f, 1.0f};
  const double capped_plain = loss(z, w, &g);
  torch::Tensor logits = torch::tensor(z).unsqueeze(1).set_requires_grad(true);
  torch::Tensor plain =
      (classificationLossPerEvent(logits, torch::tensor({0, 0, 1, 1})) * torch::tensor(w)).mean();
  plain.backward();
  EXPECT_EQ(capped_plain, plain.item<double>());
  EXPECT_TRUE(torch::equal(g, logits.grad().squeeze(1)));
}

// A run whose loss is no longer finite stops with an error naming the epoch and what to
// change, instead of returning (and a command writing) a model of NaN weights.
TEST(Fit, ADivergedRunStopsNamingTheEpoch) {
  const auto train = modeltest::randomJets(64, 32, 25, 10);
  PetClassifier clf(petPreset("tiny"), 2);
  ClassifierFitOptions o = quickFit();
  o.max_epochs = 3;
  auto heavy = train;  // finite jet weights whose weighted loss overflows
  heavy.weights.assign(static_cast<size_t>(heavy.n), 3e38f);
  try {
    clf.fit(heavy, nullptr, o);
    ADD_FAILURE() << "a diverged run returned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("training diverged at epoch 0"), std::string::npos)
        << e.what();
  }
  EpochRecord fine;
  fine.train_loss = 0.5;
  fine.val_loss = std::nan("");
  EXPECT_NO_THROW(requireFiniteEpoch("x", fine, /*validated=*/false));
  EXPECT_THROW(requireFiniteEpoch("x", fine, /*validated=*/true), Error);
  fine.val_loss = 0.4;
  fine.train_loss = INFINITY;
  EXPECT_THROW(requireFiniteEpoch("x", fine, /*validated=*/true), Error);
}

namespace {

// A jets file of `n` random 0/1-labelled jets (32 slots), as `finetune --train` reads it.
std::string writeLabelledJets(const std::string& dir, int64_t n) {
  const std::string path = dir + "/train.h5";
  data::JetFileWriter w(path, data::FileLayout::kJets, 32, true);
  w.append(modeltest::randomJets(n, 32, 25, 21));
  w.commit();
  return path;
}

FinetuneOptions quickFinetune(const std::string& train, const std::string& out) {
  FinetuneOptions o;
  o.train = train;
  o.out = out;
  o.model = petPreset("tiny");
  o.test_fraction = 0.25;
  o.fit = quickFit();
  o.fit.max_epochs = 4;
  return o;
}

}  // namespace

// The `finetune` pipeline: held-out test rows, the model written, the warm-up honoured
// (the learning rate rises over the warm-up epochs and falls after them; without warm-up
// it falls from the first epoch), and an --out holding a model is not trained over.
TEST(Finetune, TrainsTestsAndWritesTheModelOnceWithItsWarmup) {
  TempDir dir;
  const std::string train = writeLabelledJets(dir.path, 128);

  FinetuneOptions o = quickFinetune(train, dir.path + "/warm");
  o.fit.warmup_epochs = 2;
  const FinetuneResult warm = runFinetuning(o);
  EXPECT_EQ(warm.test_jets, 32);
  // The 96 others: those trained on, and the validation jets the fit held out of them.
  EXPECT_EQ(warm.train_jets + warm.val_jets, 96);
  EXPECT_EQ(warm.val_jets,
            static_cast<int64_t>(splitRows(96, o.fit.val_fraction, o.fit.seed).second.size()));
  EXPECT_GT(warm.val_jets, 0);
  EXPECT_EQ(warm.init, "none");
  ASSERT_TRUE(fs::exists(dir.path + "/warm/model/meta.json"));
  EXPECT_GE(warm.test.auc, 0.0);
  EXPECT_LE(warm.test.auc, 1.0);
  ASSERT_EQ(warm.fit.history.size(), 4u);
  const auto& wh = warm.fit.history;
  EXPECT_LT(wh[0].lr, wh[1].lr) << "the warm-up raises the learning rate";
  EXPECT_NEAR(wh[1].lr, o.fit.lr, 1e-12) << "the peak at the end of the warm-up";
  EXPECT_GT(wh[1].lr, wh[2].lr) << "then it decays";

  // No jet held out: no test figures, rather than zeros that read as a useless classifier.
  FinetuneOptions cold = quickFinetune(train, dir.path + "/cold");
  cold.test_fraction = 0;
  const FinetuneResult plain = runFinetuning(cold);
  EXPECT_EQ(plain.test_jets, 0);
  EXPECT_EQ(plain.train_jets + plain.val_jets, 128);
  EXPECT_TRUE(plain.toJson().at("test").is_null()) << plain.toJson().dump();
  EXPECT_FALSE(warm.toJson().at("test").is_null());
  ASSERT_EQ(plain.fit.history.size(), 4u);
  EXPECT_GT(plain.fit.history[0].lr, plain.fit.history[1].lr) << "no warm-up: decay from the start";

  // Again into the same --out: refused before anything is read or written.
  const std::string weights = dir.path + "/warm/model/meta.json";
  const std::string before = readFile(weights);
  try {
    runFinetuning(o);
    FAIL() << "an --out holding a model was trained over";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path + "/warm"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
  EXPECT_EQ(readFile(weights), before);
}

// A file whose jets are all of one class is refused naming it (the fit reported an AUC of 0
// and an accuracy of 1), and nothing is written.
TEST(Finetune, AFileOfOneClassIsRefusedAndSoAreOneClassTrainingJets) {
  TempDir dir;
  const std::string path = dir.path + "/one_class.h5";
  data::JetArrays jets = modeltest::randomJets(64, 32, 25, 21);
  jets.labels.assign(static_cast<size_t>(jets.n), 1);
  data::JetFileWriter w(path, data::FileLayout::kJets, 32, true);
  w.append(jets);
  w.commit();
  try {
    runFinetuning(quickFinetune(path, dir.path + "/out"));
    FAIL() << "a classifier was trained on one class";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": every jet has label 1"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(dir.path + "/out/model"));
  EXPECT_FALSE(fs::exists(dir.path + "/out/state"));

  // One jet of label 0: where the test split takes it, the jets left to train on are of one
  // class (refused, naming the fraction); where training keeps it, the test jets are of one
  // class, whose AUC and rejection are not defined (null; they read 0).
  FinetuneOptions o = quickFinetune(path, dir.path + "/few");
  const auto [rest, test] = splitRows(jets.n, o.test_fraction, o.fit.seed);
  ASSERT_FALSE(test.empty());
  for (const auto& [row, refused] :
       {std::pair{test.front(), true}, std::pair{rest.front(), false}}) {
    jets.labels.assign(static_cast<size_t>(jets.n), 1);
    jets.labels[static_cast<size_t>(row)] = 0;
    const std::string few = dir.path + "/few_" + std::to_string(row) + ".h5";
    data::JetFileWriter fw(few, data::FileLayout::kJets, 32, true);
    fw.append(jets);
    fw.commit();
    FinetuneOptions f = quickFinetune(few, dir.path + "/few_out_" + std::to_string(row));
    if (refused) {
      try {
        runFinetuning(f);
        FAIL() << "trained on one class";
      } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("jets left for training after the test's " +
                                             std::to_string(test.size()) +
                                             " (--test-fraction 0.25) all have label 1"),
                  std::string::npos)
            << e.what();
      }
      EXPECT_FALSE(fs::exists(f.out + "/model"));
      continue;
    }
    const FinetuneResult r = runFinetuning(f);
    EXPECT_TRUE(std::isnan(r.test.auc));
    EXPECT_TRUE(r.toJson().at("test").at("auc").is_null()) << r.toJson().dump();
    EXPECT_TRUE(r.toJson().at("test").at("rejection_at_eps_s_0.5").is_null());
  }
  // No test split: where the validation split takes the one jet of label 0, the jets trained on
  // are of one class (refused; it trained without a word).
  {
    FinetuneOptions f = quickFinetune(path, dir.path + "/val_out");
    f.test_fraction = 0;
    const auto [train_rows, val_rows] = splitRows(jets.n, f.fit.val_fraction, f.fit.seed);
    ASSERT_FALSE(val_rows.empty());
    jets.labels.assign(static_cast<size_t>(jets.n), 1);
    jets.labels[static_cast<size_t>(val_rows.front())] = 0;
    f.train = dir.path + "/few_val.h5";
    data::JetFileWriter fw(f.train, data::FileLayout::kJets, 32, true);
    fw.append(jets);
    fw.commit();
    try {
      runFinetuning(f);
      FAIL() << "trained on one class";
    } catch (const InputError& e) {
      EXPECT_NE(
          std::string(e.what()).find("jets trained on (after " + std::to_string(val_rows.size()) +
                                     " held out for validation) are all of class 1"),
          std::string::npos)
          << e.what();
    }
  }
  const BinaryMetrics one = binaryMetrics({0.9, 0.2, 0.4}, {1, 1, 1});
  EXPECT_TRUE(std::isnan(one.auc) && std::isnan(one.rejection50) && std::isnan(one.rejection30));
  EXPECT_FALSE(std::isnan(one.accuracy));
}

// An interrupted fine-tuning, resumed, ends with the model and the test figures of the run
// that was not interrupted.
TEST(Finetune, ResumedAfterAnInterruptionEndsAsTheStraightRun) {
  TempDir dir;
  const std::string train = writeLabelledJets(dir.path, 96);
  const FinetuneResult straight = runFinetuning(quickFinetune(train, dir.path + "/straight"));

  FinetuneOptions o = quickFinetune(train, dir.path + "/stopped");
  o.fit.stop_at_step = 5;
  EXPECT_THROW(runFinetuning(o), InterruptedError);
  EXPECT_FALSE(fs::exists(dir.path + "/stopped/model")) << "no model before the end";
  o.fit.stop_at_step = -1;
  o.fit.resume = true;
  // Another learning rate or optimiser over the state is refused, naming the option (before: a
  // faster run continued it, giving what no single run gives).
  FinetuneOptions faster = o;
  faster.fit.lr *= 2;
  FinetuneOptions adamw = o;
  adamw.fit.optimizer = "adamw";
  FinetuneOptions clipped = o;  // before: resumed without a word
  clipped.fit.clip_norm = 0.01;
  for (const auto& [changed, says] :
       {std::pair<const FinetuneOptions*, std::string>{&faster, "written with --lr "},
        {&adamw, "written with --optimizer \"lion\", not \"adamw\""},
        {&clipped, "written with clip_norm 1.0, not 0.01"}}) {
    try {
      runFinetuning(*changed);
      ADD_FAILURE() << says << ": resumed";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(dir.path + "/stopped/state: training state was " + says),
                std::string::npos)
          << e.what();
    }
  }
  const FinetuneResult resumed = runFinetuning(o);
  EXPECT_TRUE(resumed.fit.resumed);
  EXPECT_EQ(resumed.test.auc, straight.test.auc);
  EXPECT_EQ(resumed.test.accuracy, straight.test.accuracy);
  PetClassifier a = PetClassifier::load(dir.path + "/straight/model");
  PetClassifier b = PetClassifier::load(dir.path + "/stopped/model");
  auto pa = a.model()->parameters(), pb = b.model()->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << i;
}

// A resume whose options choose other training rows, or another --init, is refused naming the
// option and the value the state was written with, and the state is left as it was.
TEST(Finetune, ResumeWithOtherDataOptionsNamesTheOption) {
  TempDir dir;
  const std::string train = writeLabelledJets(dir.path, 96);
  FinetuneOptions o = quickFinetune(train, dir.path + "/stopped");
  o.fit.seed = 7;
  o.fit.stop_at_step = 3;
  EXPECT_THROW(runFinetuning(o), InterruptedError);
  const std::string state = readFile(dir.path + "/stopped/state/meta.json");
  o.fit.stop_at_step = -1;
  o.fit.resume = true;
  const auto refused = [&](FinetuneOptions changed, const std::string& expected) {
    try {
      runFinetuning(changed);
      ADD_FAILURE() << "resumed with other data (" << expected << ")";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
    EXPECT_EQ(readFile(dir.path + "/stopped/state/meta.json"), state);
  };
  FinetuneOptions seed = o;
  seed.fit.seed = 8;
  refused(seed, "written with --seed 7, not 8; resume with --seed 7");
  FinetuneOptions held_out = o;
  held_out.test_fraction = 0.5;
  refused(held_out, "--test-fraction 0.25");
  // From another checkpoint (here a classifier of the same preset) the resumed model would
  // be recorded as warm-started from it.
  const std::string other = dir.path + "/other";
  runFinetuning(quickFinetune(train, other));
  FinetuneOptions init = o;
  init.init = other;
  refused(init, "written with --init \"none\", not \"" +
                    fs::absolute(other + "/model").lexically_normal().string() +
                    "\"; resume with --init \"none\"");
  EXPECT_TRUE(runFinetuning(o).fit.resumed);
}

// The checkpoint a fine-tuning started from is known by its checksum, not its path: a copy
// elsewhere (its scratch purged) resumes (before: refused, "written with --init <old path>"),
// another checkpoint put at the same path is refused, saying so.
TEST(Finetune, AResumeTakesACopyOfItsInitElsewhereButNotAnotherCheckpointAtItsPath) {
  TempDir dir;
  const std::string train = writeLabelledJets(dir.path, 96);
  const std::string base = dir.path + "/base", other = dir.path + "/other";
  runFinetuning(quickFinetune(train, base));
  FinetuneOptions other_o = quickFinetune(train, other);
  other_o.fit.seed = 9;
  runFinetuning(other_o);
  const auto stopped = [&](const std::string& init, const std::string& out) {
    FinetuneOptions o = quickFinetune(train, out);
    o.init = init;
    o.fit.stop_at_step = 3;
    EXPECT_THROW(runFinetuning(o), InterruptedError);
    o.fit.stop_at_step = -1;
    o.fit.resume = true;
    return o;
  };
  FinetuneOptions o = stopped(base, dir.path + "/a");
  const std::string moved = dir.path + "/moved";
  fs::copy(base, moved, fs::copy_options::recursive);
  fs::remove_all(base);
  o.init = moved;
  EXPECT_TRUE(runFinetuning(o).fit.resumed);

  FinetuneOptions b = stopped(moved, dir.path + "/b");
  const std::string state = readFile(dir.path + "/b/state/meta.json");
  fs::remove_all(moved);
  fs::copy(other, moved, fs::copy_options::recursive);
  try {
    runFinetuning(b);
    ADD_FAILURE() << "resumed from another checkpoint at the same path";
  } catch (const InputError& e) {
    EXPECT_NE(
        std::string(e.what()).find("written from --init \"" +
                                   fs::absolute(moved + "/model").lexically_normal().string() +
                                   "\" as it was then; it holds another one now"),
        std::string::npos)
        << e.what();
  }
  EXPECT_EQ(readFile(dir.path + "/b/state/meta.json"), state);
}

// LibTorch's errors reach the user as one line: their message without the C++ backtrace
// that c10::Error::what() appends, and an allocation failure is told apart.
TEST(TorchError, LibTorchErrorsAreOneLineAndAllocationFailuresAreKnown) {
  try {
    TORCH_CHECK(false, "shapes [2, 3] and [4] do not match");
    FAIL() << "TORCH_CHECK did not throw";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find('\n'), std::string::npos) << "what() has a backtrace";
    EXPECT_EQ(foldfarm::exceptionMessage(e), "shapes [2, 3] and [4] do not match");
    EXPECT_FALSE(foldfarm::isOutOfMemory(e));
  }
  try {
    torch::Tensor t = torch::empty({int64_t{1} << 50}, torch::kFloat32);  // 4 PiB
    FAIL() << "allocated " << t.numel() << " floats";
  } catch (const std::exception& e) {
    EXPECT_TRUE(foldfarm::isOutOfMemory(e)) << e.what();
    EXPECT_EQ(foldfarm::exceptionMessage(e).find('\n'), std::string::npos);
  }
  EXPECT_TRUE(foldfarm::isOutOfMemory(std::bad_alloc()));
  try {
    std::vector<double> v(static_cast<size_t>(-1));
    FAIL() << "allocated " << v.size() << " doubles";
  } catch (const std::exception& e) {
    EXPECT_TRUE(foldfarm::isOutOfMemory(e)) << e.what();
  }
  EXPECT_FALSE(foldfarm::isOutOfMemory(std::length_error("basic_string::_M_replace_aux")));
  const std::runtime_error plain("plain");
  EXPECT_EQ(foldfarm::exceptionMessage(plain), "plain");
  EXPECT_FALSE(foldfarm::isOutOfMemory(plain));
}
