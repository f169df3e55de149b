#include "core/train/pretrain.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/process.hpp"
#include "core/base/progress.hpp"
#include "core/base/seed.hpp"
#include "core/base/stop_signal.hpp"
#include "core/data/jet_files.hpp"
#include "core/data/jet_stream.hpp"
#include "core/data/synth.hpp"
#include "core/model/pet.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/jet_batches.hpp"

namespace foldfarm {

namespace fs = std::filesystem;
using nlohmann::json;

json jetConditioning(const JetTensors& t, int64_t classes, ParallelContext* sharded) {
  const int64_t J = t.jets.size(1);
  std::vector<double> sums(static_cast<size_t>(classes * (1 + 2 * J)), 0.0);
  const torch::Tensor jets = t.jets.to(torch::kFloat64).contiguous();
  const double* x = jets.data_ptr<double>();
  const torch::Tensor labels = t.labels.contiguous();
  const int64_t* y = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < t.size(); ++i) {
    double* s = sums.data() + y[i] * (1 + 2 * J);
    s[0] += 1;
    for (int64_t k = 0; k < J; ++k) {
      s[1 + k] += x[i * J + k];
      s[1 + J + k] += x[i * J + k] * x[i * J + k];
    }
  }
  if (sharded != nullptr) sharded->allreduceSum(sums);
  json out = json::object();
  for (int64_t c = 0; c < classes; ++c) {
    const double* s = sums.data() + c * (1 + 2 * J);
    const double n = s[0];
    if (n < 2) continue;
    std::vector<float> mean(static_cast<size_t>(J)), std(static_cast<size_t>(J));
    for (int64_t k = 0; k < J; ++k) {
      const double m = s[1 + k] / n;
      mean[static_cast<size_t>(k)] = static_cast<float>(m);
      std[static_cast<size_t>(k)] =
          static_cast<float>(std::sqrt(std::max(0.0, (s[1 + J + k] - n * m * m) / (n - 1))));
    }
    out[std::to_string(c)] = {{"mean", mean}, {"std", std}};
  }
  return out;
}

json PretrainResult::toJson() const {
  return {{"out", model_dir},
          {"train_jets", train_jets},
          {"val_jets", val_jets},
          {"test_jets", test_jets},
          // null without test jets (--test-fraction 0 or a tiny file), not a fake 0.
          {"test_accuracy", test_jets > 0 ? json(test.metrics.value("accuracy", 0.0)) : json()},
          {"test_loss", test_jets > 0 ? json(test.loss) : json()},
          {"peak_rss_MB", peak_rss_mb},
          {"fit", foldfarm::toJson(fit)}};
}

namespace {

// The generator's conditioning, class names and checkpoint: step 5 of both paths.
void writePretrained(const PretrainOptions& o, ParallelContext& ctx, Trainer& trainer,
                     CheckpointMeta meta, const PetConfig& cfg, const json& conditioning,
                     int64_t num_particles, PretrainResult& r) {
  r.model_dir = (fs::path(o.out) / "model").string();
  r.peak_rss_mb = peakRssMB();
  // Rank 0 writes; every rank ends with an error when that fails (none waits for it).
  checkOnEveryRank(ctx, [&] {
    if (!ctx.isRoot()) return;
    meta.config = cfg;
    meta.training = {
        {"fit", foldfarm::toJson(r.fit)}, {"test", r.test.metrics}, {"data", o.data_label}};
    meta.extra = {{"jet_conditioning", conditioning}, {"num_particles", num_particles}};
    const std::map<std::string, torch::Tensor> tensors = trainer.modelTensors();
    // A --resume of a training that had finished (a requeued job, a job script run again):
    // its model is that one; rewritten, it would read as changed to the campaigns that
    // recorded it.
    if (o.train.resume && checkpointHoldsTensors(r.model_dir, tensors)) {
      logInfo(
          "pretrain: {} already holds the model this training ends with (it had finished); "
          "kept as it was",
          r.model_dir);
      return;
    }
    writeCheckpoint(r.model_dir, meta, tensors);
  });
}

// The files' names of the classes where they give them, else those of the synthetic jets
// (six classes), else the indices.
std::vector<std::string> classNames(int64_t num_classes, int64_t classes,
                                    const std::vector<std::string>& named) {
  std::vector<std::string> names;
  const bool synth_labels = classes == data::kNumSynthClasses;
  for (int64_t c = 0; c < num_classes; ++c)
    names.push_back(c < static_cast<int64_t>(named.size()) ? named[static_cast<size_t>(c)]
                    : synth_labels && named.empty()        ? data::jetClassName(static_cast<int>(c))
                                                           : std::to_string(c));
  return names;
}

// (collective) The classes of the training files, checked once (rank 0 says what is wrong):
// files labelled otherwise than each other, a label far beyond the others.
data::ClassCensus checkedClasses(ParallelContext& ctx, const std::vector<std::string>& files) {
  data::ClassCensus census;
  checkOnEveryRank(ctx, [&] { census = data::classCensus(files); });
  return census;
}

// The checkpoint description and the freshly initialised model (seeded from train.seed).
std::pair<CheckpointMeta, Pet> initialModel(const PretrainOptions& o, const PetConfig& cfg,
                                            const data::FeatureStats& stats, int64_t classes,
                                            const data::ClassCensus& census) {
  CheckpointMeta meta;
  meta.stats = stats;
  meta.class_names = classNames(cfg.num_classes, classes, census.names);
  Pet model(cfg);
  model->resetParameters(deriveSeed({o.train.seed, 0x696e6974ULL}));
  return {std::move(meta), std::move(model)};
}

// Whether the state in `dir` is a pretraining's (its model has the generator); true when its
// description cannot be read (the resume names what is wrong with it).
bool stateOfPretraining(const std::string& dir) {
  try {
    const json meta = readJsonFile(dir + "/meta.json", "");
    return meta.value("config", json::object()).value("generator", true);
  } catch (const std::exception&) {
    return true;
  }
}

// The warm-up target's scale of the learning rate on this many ranks: sqrt(ranks), as
// OmniLearn's Horovod training (scripts/train.py) scales it.
double warmupScale(const ParallelContext& ctx) {
  return std::sqrt(static_cast<double>(ctx.worldSize()));
}

TrainOptions trainOptionsFor(const PretrainOptions& o, const ParallelContext& ctx) {
  TrainOptions t = o.train;
  t.warmup_scale = warmupScale(ctx);
  t.state_dir = (fs::path(o.out) / "state").string();
  t.label = "pretrain";
  t.sharded = o.shard_data;
  t.data_options = {{"--data", o.files},
                    {"--seed", o.train.seed},
                    {"--val-fraction", o.val_fraction},
                    {"--test-fraction", o.test_fraction}};
  if (o.stream) {
    t.data_options["--block-rows"] = o.block_rows;
    t.data_options["--eval-jets"] = o.eval_jets;  // it chooses the held-out blocks too
  } else {
    t.data_options["--max-jets"] = o.max_jets;
  }
  // Another command's output: its files beside a model and a state would pass for neither
  // (before: written into, and a chain directory then passed as `unfold --init`).
  if (const std::string other = otherCommandsOutput(o.out); !other.empty())
    throw InputError(o.out + ": " + other + ", not a pretraining; choose another --out");
  if (checkpointExists(t.state_dir) && !stateOfPretraining(t.state_dir))
    throw InputError(o.out +
                     ": holds the training state of a fine-tuning (a classifier: `foldfarm "
                     "finetune --out`), not of a pretraining; choose another --out");
  if (!t.resume && checkpointExists(t.state_dir))
    throw InputError(o.out +
                     ": holds a training state; pass --resume to continue or choose a new --out");
  // A pretrained model without the state it was trained from (removed to save space, or
  // written by another command): nothing to resume, and a new training would replace it.
  const std::string model_dir = (fs::path(o.out) / "model").string();
  if (!checkpointExists(t.state_dir) && fs::exists(model_dir))
    throw InputError(o.out + ": holds a model (" + model_dir +
                     ") but no training state to resume; choose a new --out (the model is kept)");
  // A typo in a resubmitted --out would otherwise start hours of training again, unsaid.
  if (t.resume && !checkpointExists(t.state_dir) && ctx.isRoot())
    logWarn("pretrain --resume: {} holds no training state ({}): training starts at epoch 0", o.out,
            t.state_dir);
  return t;
}

// Refuses options that no run can use, before anything is read (the learning rate at the
// schedule's peak as this many ranks would train).
void checkPretrainOptions(const PretrainOptions& o, const ParallelContext& ctx) {
  requireOutputDirectoryPath(o.out, "--out");
  checkHeldOutFractions("pretrain", o.val_fraction, o.test_fraction);
  if (o.max_jets < 0) throw InputError("pretrain: --max-jets must be >= 0 (0: every jet)");
  if (o.train.max_epochs < 1)
    throw InputError(
        "pretrain: epochs (--epochs or a config's \"train\") must be >= 1 (an untrained "
        "model is no foundation)");
  TrainOptions t = o.train;
  t.label = "pretrain";
  t.warmup_scale = warmupScale(ctx);
  validateTrainOptions(t);
}

// What the held-out fractions held out, said once when it is not what they asked for: no jet
// at all (a few jets, a small fraction), rather than "val loss nan" or a missing test figure;
// or, streamed (`block_rows` > 0: blocks are held out whole), far more or fewer jets than
// asked for.
void warnHeldOut(const std::string& what, int64_t total, const PretrainOptions& o, int64_t val_jets,
                 int64_t test_jets, int64_t block_rows) {
  // Held-out sets that leave less than half the jets to train on are seldom meant (in memory,
  // --val-fraction is a share of the jets left after the test split, so 0.9 and 0.9 train on
  // 1%); said once, with what trains.
  const int64_t train_jets = total - val_jets - test_jets;
  if (total > 0 && 2 * train_jets < total)
    logWarn(
        "{}: trains on {} of {} jets ({:.1f}%): --test-fraction {} and --val-fraction {} hold "
        "out the rest{}",
        what, train_jets, total, 100.0 * static_cast<double>(train_jets) / total, o.test_fraction,
        o.val_fraction,
        block_rows > 0 ? " (streamed: each a share of all jets, in whole blocks)"
                       : " (in memory: --val-fraction is a share of the jets the test split left)");
  const std::string advice = block_rows > 0 ? "use a smaller --block-rows (now " +
                                                  std::to_string(block_rows) + ") or more jets"
                                            : std::string("use more jets or a larger fraction");
  const auto check = [&](const char* set, const char* option, double fraction, int64_t jets,
                         const char* without) {
    if (!(fraction > 0)) return;
    if (jets == 0) {
      logWarn("{}: {} jets hold out no {} jet at {} {}: {}; {}", what, total, set, option, fraction,
              without, advice);
    } else if (block_rows > 0 && total > 0 &&
               std::abs(static_cast<double>(jets) / total - fraction) > 0.5 * fraction) {
      logWarn(
          "{}: {} {} holds out {} of {} jets ({:.0f}%) as {} jets: blocks are held out "
          "whole; {}",
          what, option, fraction, jets, total, 100.0 * jets / total, set, advice);
    }
  };
  check("test", "--test-fraction", o.test_fraction, test_jets, "no test figures");
  check("validation", "--val-fraction", o.val_fraction, val_jets,
        "no best-epoch choice or early stopping (the last epoch is kept)");
}

// Every value of `files` (`rows` jets each) that the stream and the held-out sets will read,
// in pieces of `piece_rows`: this rank's share of each file's pieces (part `rank` of `ranks`),
// on `threads` threads, with a progress line on rank 0 from 256 MiB of files. InputError
// naming the file, dataset and row.
void checkStreamValues(const std::vector<std::string>& files, const std::vector<int64_t>& rows,
                       int64_t piece_rows, const ParallelContext& ctx, int threads) {
  data::JetFile::ValueCheck how;
  how.rows_per_piece = piece_rows;
  how.threads = threads;
  how.part = ctx.rank();
  how.parts = ctx.worldSize();
  int64_t bytes = 0, share = 0;
  for (size_t k = 0; k < files.size(); ++k) {
    std::error_code ec;
    bytes += static_cast<int64_t>(fs::file_size(files[k], ec));
    share += how.partRows(rows[k], piece_rows);
  }
  Progress progress(
      ctx.worldSize() > 1 ? "values of the files (rank 0's share)" : "values of the files",
      std::max<int64_t>(1, share), "jets");
  progress.setSilent(!ctx.isRoot() || bytes < (int64_t{256} << 20));
  int64_t before = 0;
  for (const auto& f : files) {
    int64_t mine = 0;
    how.on_rows = [&](int64_t done, int64_t) {
      mine = done;
      progress.update(before + done);
      if (stopRequested())
        throw InterruptedError(f + ": reading stopped by signal " + std::to_string(stopSignal()));
    };
    data::JetFile(f).checkValues(how);
    before += mine;
  }
  progress.finish();
}

PretrainResult runStreamed(const PretrainOptions& o, ParallelContext& ctx) {
  const std::string what = o.data_label.empty() ? std::string("pretraining data") : o.data_label;
  // 1. Blocks, held out ones, the stream (every file opened and checked before training).
  // Every rank finds the same in the files and options: rank 0 says it, once.
  std::vector<int64_t> rows;
  std::vector<data::StreamBlock> blocks;
  data::StreamSplit split;
  data::JetStreamOptions so = o.stream_options;
  so.batch_size = o.train.batch_size;
  so.seed = o.train.seed;
  so.bucket = o.train.bucket;
  std::optional<data::JetStream> opened;
  checkOnEveryRank(ctx, [&] {
    if (o.shard_data) throw InputError("--stream and --shard-data exclude each other; choose one");
    if (o.max_jets > 0) throw InputError("--max-jets is not used with --stream; list fewer files");
    rows = data::countJetsPerFile(o.files);
    blocks = data::cutStreamBlocks(rows, o.block_rows);
    split =
        data::splitStreamBlocks(blocks, o.val_fraction, o.test_fraction, o.train.seed, o.eval_jets);
    opened.emplace(o.files, split.train, so);
    if (opened->trainRows() < ctx.worldSize())
      throw InputError(what + ": " + std::to_string(opened->trainRows()) + " training jets for " +
                       std::to_string(ctx.worldSize()) + " ranks; use more jets or fewer ranks");
    if (!opened->hasLabels()) throw InputError(what + ": pretraining needs class labels (pid)");
  });
  data::JetStream& stream = *opened;
  if (ctx.isRoot())
    warnHeldOut(what, std::accumulate(rows.begin(), rows.end(), int64_t{0}), o, split.val_rows,
                split.test_rows, o.block_rows);
  // Every value before the first step, each file's pieces shared among the ranks: a NaN in the
  // last file ends every rank now with one line naming its row (read by the stream, it ended
  // one rank hours into an epoch while the others waited out --collective-timeout for it).
  // Pieces of whole blocks, about 32 MiB each (fewer partly read chunks to decompress twice).
  const double row_bytes = 4.0 * (stream.numParticles() * data::kNumParticleFeatures + 8);
  const int64_t piece =
      o.block_rows *
      std::max<int64_t>(1, static_cast<int64_t>((32 << 20) / (o.block_rows * row_bytes)));
  checkOnEveryRank(ctx, [&] { checkStreamValues(o.files, rows, piece, ctx, so.readers); });
  // 2. Classes: from the files' label datasets (small beside the particles).
  const data::ClassCensus census = checkedClasses(ctx, o.files);
  // A one-hot file's width, or (integer labels) the largest label + 1 of the census: the
  // labels are not read a second time.
  int64_t classes = 0;
  for (const auto& f : o.files) {
    const int64_t c = data::JetFile(f).numClasses();
    classes = std::max(classes, c > 0 ? c : static_cast<int64_t>(census.counts.size()));
  }
  PetConfig cfg = o.model;
  cfg.num_classes = std::max<int64_t>(2, classes);
  cfg.generator = true;
  const data::FeatureStats stats = data::FeatureStats::jetClass();
  JetTensors val, test;
  if (!split.val.empty())
    val = JetTensors::fromArrays(data::readStreamRows(o.files, blocks, split.val), stats);
  if (!split.test.empty())
    test = JetTensors::fromArrays(data::readStreamRows(o.files, blocks, split.test), stats);
  if (ctx.isRoot())
    logInfo(
        "--stream: {} training jets in {} blocks of {} over {} rank(s), {} steps per epoch; "
        "{} validation and {} test jets held out ({} and {} evaluated); buffer {} jets, {} "
        "reader(s), at most {:.0f} MiB of stream memory per rank",
        stream.trainRows(), split.train.size(), o.block_rows, ctx.worldSize(),
        stream.stepsPerEpoch(ctx.worldSize()), split.val_rows, split.test_rows, val.size(),
        test.size(), so.buffer_jets, so.readers, stream.memoryBytes() / double(1 << 20));

  // 3. Train.
  TrainOptions t = trainOptionsFor(o, ctx);
  auto [meta, model] = initialModel(o, cfg, stats, classes, census);
  Trainer trainer(model, meta, t, ctx);
  // The files as the stream sees them: names, rows, blocks and held-out fractions.
  std::string fp = std::to_string(o.block_rows) + ":" + std::to_string(o.val_fraction) + ":" +
                   std::to_string(o.test_fraction);
  for (size_t k = 0; k < o.files.size(); ++k)
    fp += "|" + fs::path(o.files[k]).filename().string() + ":" + std::to_string(rows[k]);
  PretrainResult r;
  // No validation set when none was held out (its tensors were never made).
  r.fit = trainer.fitStream(stream, val.size() > 0 ? &val : nullptr, Objective::kPretrain, fp);
  if (ctx.isRoot()) logInfo("--stream: the trainer waited {:.1f} s for data", stream.waitSeconds());

  // 4. Test, write, wait.
  if (test.size() > 0) r.test = trainer.evaluate(test, Objective::kPretrain);
  r.test_jets = test.size();
  r.train_jets = stream.trainRows();
  r.val_jets = val.size();
  // The generator's conditioning from held-out jets; with none held out (fractions of 0, or
  // too few jets), from the first training rows: at most --eval-jets of them, and never the
  // whole stream (--eval-jets 0: 100,000, plenty for per-class means and spreads).
  JetTensors sample;
  if (val.size() == 0 && test.size() == 0) {
    const int64_t cap = o.eval_jets > 0 ? o.eval_jets : 100000;
    std::vector<int64_t> ids;
    for (const data::StreamBlock& b : split.train)
      for (int64_t g = b.global; g < b.global + b.size() && static_cast<int64_t>(ids.size()) < cap;
           ++g)
        ids.push_back(g);
    sample = JetTensors::fromArrays(data::readStreamRows(o.files, blocks, ids), stats);
  }
  const json conditioning = jetConditioning(val.size() > 0    ? val
                                            : test.size() > 0 ? test
                                                              : sample,
                                            cfg.num_classes, nullptr);
  writePretrained(o, ctx, trainer, meta, cfg, conditioning, stream.numParticles(), r);
  return r;
}

}  // namespace

PretrainResult runPretraining(const PretrainOptions& o, ParallelContext& ctx) {
  checkOnEveryRank(ctx, [&] { checkPretrainOptions(o, ctx); });
  // One run writes --out (rank 0); what a run killed while writing left there is removed.
  const auto lock = lockOutputOnRoot(ctx, o.out, "--out", {"state", "model"});
  if (o.stream) return runStreamed(o, ctx);
  // 1. The split, the same on every rank.
  const std::string what = o.data_label.empty() ? std::string("pretraining data") : o.data_label;
  // Also refuses a file whose layout differs from the first, before any reading. What every
  // rank finds alike in the files is said once, by rank 0 (checkOnEveryRank).
  int64_t total = 0;
  checkOnEveryRank(ctx, [&] { total = data::countJetsInFiles(o.files, o.max_jets); });
  auto [rest, test_rows] = splitRows(total, o.test_fraction, o.train.seed);
  auto [train_pos, val_pos] =
      splitRows(static_cast<int64_t>(rest.size()), o.val_fraction, o.train.seed + 1);
  const int W = o.shard_data ? ctx.worldSize() : 1, R = o.shard_data ? ctx.rank() : 0;
  // Entries R, R + W, R + 2W, ... of `part`, as rows of the file(s) through `rows` (or as is).
  const auto mine = [W, R](const std::vector<int64_t>& part, const std::vector<int64_t>* rows) {
    std::vector<int64_t> out;
    for (size_t k = static_cast<size_t>(R); k < part.size(); k += static_cast<size_t>(W))
      out.push_back(rows ? (*rows)[static_cast<size_t>(part[k])] : part[k]);
    return out;
  };
  if (ctx.isRoot())
    warnHeldOut(what, total, o, static_cast<int64_t>(val_pos.size()),
                static_cast<int64_t>(test_rows.size()), 0);
  std::vector<int64_t> train_rows = mine(train_pos, &rest), val_rows = mine(val_pos, &rest);
  std::vector<int64_t> my_test = mine(test_rows, nullptr);
  // The same test on every rank (no rank may go on alone into a collective), said once: each
  // rank's batches take a share of the training jets, sharded or not (before: without
  // --shard-data, every rank said "cannot shard" from its first epoch).
  checkOnEveryRank(ctx, [&] {
    if (static_cast<int64_t>(train_pos.size()) < ctx.worldSize())
      throw InputError(what + ": " + std::to_string(total) + " jets leave " +
                       std::to_string(train_pos.size()) + " training jets for " +
                       std::to_string(ctx.worldSize()) + " ranks; use more jets or fewer ranks");
  });

  // The labels first (small beside the particles): a file labelled otherwise than another is
  // refused before the particles are read.
  const data::ClassCensus census = checkedClasses(ctx, o.files);

  // 2. Read all, or this rank's shard.
  data::JetArrays raw;
  if (o.shard_data) {
    std::vector<int64_t> rows;
    rows.reserve(train_rows.size() + val_rows.size() + my_test.size());
    rows.insert(rows.end(), train_rows.begin(), train_rows.end());
    rows.insert(rows.end(), val_rows.begin(), val_rows.end());
    rows.insert(rows.end(), my_test.begin(), my_test.end());
    std::sort(rows.begin(), rows.end());
    // A NaN in one rank's shard ends every rank (that rank says where), not that rank alone
    // while the others wait out --collective-timeout at the first collective.
    checkOnEveryRank(ctx, [&] {
      raw = data::readJetsRows(o.files, rows);
      if (raw.labels.empty()) throw InputError(what + ": pretraining needs class labels (pid)");
    });
    // Row indices of the file(s) -> positions in `raw`.
    const auto at = [&rows](std::vector<int64_t>& v) {
      for (int64_t& r : v) r = std::lower_bound(rows.begin(), rows.end(), r) - rows.begin();
    };
    at(train_rows);
    at(val_rows);
    at(my_test);
    logInfo("--shard-data: this rank holds {} training, {} validation and {} test jets of {}",
            train_rows.size(), val_rows.size(), my_test.size(), total);
  } else {
    // Every rank reads every jet: a NaN or a missing dataset is said once, by rank 0.
    checkOnEveryRank(ctx, [&] {
      raw = data::readJetsFiles(o.files, o.max_jets);
      if (raw.labels.empty()) throw InputError(what + ": pretraining needs class labels (pid)");
    });
  }

  // 3. Classes.
  int64_t classes = 0;
  for (int64_t y : raw.labels) classes = std::max(classes, y + 1);
  if (o.shard_data) {
    const std::vector<double> all = allGather(ctx, static_cast<double>(classes));
    classes = static_cast<int64_t>(*std::max_element(all.begin(), all.end()));
  }
  PetConfig cfg = o.model;
  cfg.num_classes = std::max<int64_t>(2, classes);
  cfg.generator = true;

  const data::FeatureStats stats = data::FeatureStats::jetClass();
  // Peak memory: the raw arrays, then one standardised copy, then the three subsets.
  const int64_t num_particles = raw.P;
  JetTensors train, val, test;
  {
    JetTensors all = JetTensors::fromArrays(std::move(raw), stats);
    raw = data::JetArrays();
    test = all.subset(my_test);
    val = all.subset(val_rows);
    train = all.subset(train_rows);
  }

  // 4. Train.
  TrainOptions t = trainOptionsFor(o, ctx);
  auto [meta, model] = initialModel(o, cfg, stats, classes, census);
  Trainer trainer(model, meta, t, ctx);
  PretrainResult r;
  r.fit = trainer.fit(train, &val, Objective::kPretrain);

  // 5. Test, write, wait.
  r.test = trainer.evaluate(test, Objective::kPretrain);
  r.test_jets = static_cast<int64_t>(test_rows.size());
  r.train_jets = o.shard_data ? static_cast<int64_t>(train_pos.size()) : train.size();
  r.val_jets = o.shard_data ? static_cast<int64_t>(val_pos.size()) : val.size();
  const json conditioning = jetConditioning(train, cfg.num_classes, o.shard_data ? &ctx : nullptr);
  writePretrained(o, ctx, trainer, meta, cfg, conditioning, num_particles, r);
  return r;
}

}  // namespace foldfarm
