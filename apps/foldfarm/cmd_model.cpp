// model info, pretrain, finetune, generate, bench pet.
#include <algorithm>
#include <torch/torch.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <chrono>
#include <map>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/seed.hpp"
#include "core/base/stop_signal.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"
#include "core/model/diffusion.hpp"
#include "core/model/pet.hpp"
#include "core/model/threads.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/losses.hpp"
#include "core/train/metrics.hpp"
#include "core/train/optim.hpp"
#include "core/train/parallel.hpp"
#include "core/train/trainer.hpp"
#include "dist/cli_options.hpp"
#include "dist/make_context.hpp"

namespace foldfarm::app {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> splitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

json readJsonFile(const std::string& path) {
  try {
    return json::parse(readFile(path));
  } catch (const json::exception& e) {
    throw InputError(path + ": not valid JSON (" + e.what() + "); fix the file");
  }
}

// A training config file is {"model": {size overrides}, "train": {recipe}}, or a bare
// object of size overrides. Every key and type is checked here, before any work starts.
const std::vector<std::string> kTrainKeys = {"batch_size", "clip_norm",  "ema_decay", "epochs",
                                             "lr",         "lr_factor",  "optimizer", "patience",
                                             "warmup_epochs", "weight_decay"};

json readTrainConfig(const std::string& path) {
  const json j = readJsonFile(path);
  if (!j.is_object()) throw InputError(path + ": a config must be a JSON object with \"model\" and/or \"train\"");
  if (!j.contains("model") && !j.contains("train")) return json{{"model", j}};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "model" && it.key() != "train") {
      throw InputError(path + ": unknown top-level key '" + it.key() + "' (use \"model\" and \"train\")");
    }
  }
  if (j.contains("train")) {
    const json& t = j.at("train");
    if (!t.is_object()) throw InputError(path + ": \"train\" must be an object");
    for (auto it = t.begin(); it != t.end(); ++it) {
      if (std::find(kTrainKeys.begin(), kTrainKeys.end(), it.key()) == kTrainKeys.end()) {
        throw InputError(path + ": unknown train key '" + it.key() + "'");
      }
      bool ok = it.key() == "optimizer" ? it->is_string() : it->is_number();
      if (!ok || (it->is_number() && it->get<double>() < 0)) {
        throw InputError(path + ": train." + it.key() + " has a wrong type or a negative value");
      }
    }
  }
  return j;
}

// Preset, then the config file's model overrides.
PetConfig configFrom(const std::string& preset, const std::string& config_path) {
  PetConfig cfg = petPreset(preset);
  if (!config_path.empty()) {
    const json j = readTrainConfig(config_path);
    if (j.contains("model")) cfg = applyPetOverrides(cfg, j.at("model"), config_path);
  }
  return cfg;
}

// A jets-layout file (data/jet/pid); an unfolding file is refused naming it.
data::JetFile openJetsFile(const std::string& f) {
  data::JetFile file(f);
  if (file.layout() != data::FileLayout::kJets)
    throw InputError(f + ": expected a jets file (data/jet/pid), found an unfolding file");
  return file;
}

data::JetArrays readJetFiles(const std::vector<std::string>& files, int64_t max_jets) {
  if (files.empty()) throw InputError("no input files given");
  data::JetArrays all;
  for (const auto& f : files) {
    const data::JetFile file = openJetsFile(f);
    int64_t end = file.numJets();
    if (max_jets > 0) end = std::min(end, max_jets - all.n);
    if (end <= 0) break;
    data::JetArrays a = file.readJets(0, end);
    if (all.n == 0) all = std::move(a);
    else all.append(a);
  }
  return all;
}

// The rows `rows` (ascending, indices into the files read one after the other) of jets
// files, read block by block so that only those rows are held in memory.
data::JetArrays readJetRows(const std::vector<std::string>& files, const std::vector<int64_t>& rows) {
  constexpr int64_t kBlock = 16384;
  data::JetArrays out;
  size_t next = 0;
  int64_t offset = 0;
  for (const auto& f : files) {
    const data::JetFile file = openJetsFile(f);
    const int64_t n = file.numJets();
    while (next < rows.size() && rows[next] < offset + n) {
      const int64_t begin = rows[next] - offset, end = std::min(n, begin + kBlock);
      std::vector<int64_t> pick;
      for (; next < rows.size() && rows[next] < offset + end; ++next) pick.push_back(rows[next] - offset - begin);
      data::JetArrays part = file.readJets(begin, end).subset(pick);
      if (out.n == 0) out = std::move(part);
      else out.append(part);
    }
    offset += n;
    if (next == rows.size()) break;
  }
  return out;
}

// Jets in the files, at most max_jets (0: all), without reading the arrays.
int64_t countJets(const std::vector<std::string>& files, int64_t max_jets) {
  if (files.empty()) throw InputError("no input files given");
  int64_t n = 0;
  for (const auto& f : files) n += openJetsFile(f).numJets();
  return max_jets > 0 ? std::min(n, max_jets) : n;
}

std::string fixed(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// ---- model info -----------------------------------------------------------------------

struct InfoArgs {
  std::string preset = "omnilearn", config;
  int classes = 1;
  bool generator = false, json_out = false;
};

void runInfo(const InfoArgs& a) {
  PetConfig cfg = configFrom(a.preset, a.config);
  cfg.num_classes = a.classes;
  cfg.generator = a.generator;
  validatePetConfig(cfg, "--classes");
  Pet m(cfg);
  const auto n = m->parameterCounts();
  json j = {{"preset", cfg.preset},
            {"config", petConfigToJson(cfg)},
            {"parameters",
             {{"body", n.body}, {"classifier_head", n.classifier}, {"generator_head", n.generator}, {"total", n.total}}}};
  if (a.json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("PET %s: body %lld, classifier head %lld, generator head %lld, total %lld parameters\n",
                cfg.preset.c_str(), static_cast<long long>(n.body), static_cast<long long>(n.classifier),
                static_cast<long long>(n.generator), static_cast<long long>(n.total));
  }
}

// ---- pretrain -------------------------------------------------------------------------

struct PretrainArgs {
  std::string data, out, config, preset = "tiny", optimizer = "lion";
  int64_t epochs = 10, batch = 250, max_jets = 0;
  int threads = 0;
  bool resume = false, shard_data = false;
  double lr = 3e-4, lr_factor = 1.0, val_fraction = 0.1, test_fraction = 0.1, warmup_epochs = 1;
  uint64_t seed = 1;
  dist::DistCli dist;  // --collective-timeout, --dist-backend, --bucket-cap-mb
};

// Per class: mean and standard deviation of the standardised jet features of the training
// set (the generator's conditioning). Sharded: sums over every rank's shard (collective).
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

void runPretrain(const PretrainArgs& a) {
  configureThreads(a.threads);
  installStopHandlers();
  // Alone: SingleProcessContext; under mpirun/mpiexec/srun: data-parallel (dist/).
  std::unique_ptr<ParallelContext> ctx =
      dist::makeParallelContext(a.dist.resolveForCpuTraining("pretrain"));

  json train_cfg = json::object();
  if (!a.config.empty()) {
    const json j = readTrainConfig(a.config);
    if (j.contains("train")) train_cfg = j.at("train");
  }
  if (!a.config.empty()) (void)configFrom(a.preset, a.config);  // refuse a bad config before reading data
  // Test rows first, then validation rows out of the rest (the same split on every rank).
  // --shard-data: rank r reads and keeps only every W-th row of each part, starting at r.
  const std::vector<std::string> files = splitList(a.data);
  const int64_t total = countJets(files, a.max_jets);
  auto [rest, test_rows] = splitRows(total, a.test_fraction, a.seed);
  auto [train_pos, val_pos] = splitRows(static_cast<int64_t>(rest.size()), a.val_fraction, a.seed + 1);
  const int W = a.shard_data ? ctx->worldSize() : 1, R = a.shard_data ? ctx->rank() : 0;
  // Entries R, R + W, R + 2W, ... of `part`, as rows of the file(s) through `rows` (or as is).
  const auto mine = [W, R](const std::vector<int64_t>& part, const std::vector<int64_t>* rows) {
    std::vector<int64_t> out;
    for (size_t k = static_cast<size_t>(R); k < part.size(); k += static_cast<size_t>(W))
      out.push_back(rows ? (*rows)[static_cast<size_t>(part[k])] : part[k]);
    return out;
  };
  std::vector<int64_t> train_rows = mine(train_pos, &rest), val_rows = mine(val_pos, &rest);
  std::vector<int64_t> my_test = mine(test_rows, nullptr);
  // The same test on every rank (no rank may go on alone into a collective).
  if (static_cast<int64_t>(train_pos.size()) < W)
    throw InputError(a.data + ": " + std::to_string(total) + " jets leave " +
                     std::to_string(train_pos.size()) + " training jets for " + std::to_string(W) +
                     " ranks; use more jets or fewer ranks");

  data::JetArrays raw;
  if (a.shard_data) {
    std::vector<int64_t> mine;
    mine.reserve(train_rows.size() + val_rows.size() + my_test.size());
    mine.insert(mine.end(), train_rows.begin(), train_rows.end());
    mine.insert(mine.end(), val_rows.begin(), val_rows.end());
    mine.insert(mine.end(), my_test.begin(), my_test.end());
    std::sort(mine.begin(), mine.end());
    raw = readJetRows(files, mine);
    // Row indices of the file(s) -> positions in `raw`.
    const auto at = [&mine](std::vector<int64_t>& rows) {
      for (int64_t& r : rows)
        r = std::lower_bound(mine.begin(), mine.end(), r) - mine.begin();
    };
    at(train_rows);
    at(val_rows);
    at(my_test);
    logInfo("--shard-data: this rank holds {} training, {} validation and {} test jets of {}",
            train_rows.size(), val_rows.size(), my_test.size(), total);
  } else {
    raw = readJetFiles(files, a.max_jets);
  }
  if (raw.labels.empty()) throw InputError(a.data + ": pretraining needs class labels (pid)");
  int64_t classes = 0;
  for (int64_t y : raw.labels) classes = std::max(classes, y + 1);
  if (a.shard_data) {
    const std::vector<double> all = allGather(*ctx, static_cast<double>(classes));
    classes = static_cast<int64_t>(*std::max_element(all.begin(), all.end()));
  }
  PetConfig cfg = configFrom(a.preset, a.config);
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

  TrainOptions t;
  t.optimizer.kind = train_cfg.value("optimizer", a.optimizer);
  t.optimizer.lr = train_cfg.value("lr", a.lr);
  t.optimizer.lr_factor = train_cfg.value("lr_factor", a.lr_factor);
  t.optimizer.weight_decay = train_cfg.value("weight_decay", 1e-5);
  t.warmup_epochs = train_cfg.value("warmup_epochs", a.warmup_epochs);
  t.warmup_scale = std::sqrt(static_cast<double>(ctx->worldSize()));
  t.clip_norm = train_cfg.value("clip_norm", 1.0);
  t.ema = true;
  t.ema_decay = train_cfg.value("ema_decay", 0.999);
  t.batch_size = train_cfg.value("batch_size", a.batch);
  t.max_epochs = train_cfg.value("epochs", a.epochs);
  t.patience = train_cfg.value("patience", int64_t{0});
  t.seed = a.seed;
  t.state_dir = (fs::path(a.out) / "state").string();
  t.resume = a.resume;
  t.label = "pretrain";
  t.sharded = a.shard_data;
  if (!a.resume && checkpointExists(t.state_dir))
    throw InputError(a.out + ": holds a training state; pass --resume to continue or choose a new --out");

  std::vector<std::string> names;
  const bool synth_labels = classes == data::kNumSynthClasses;
  for (int64_t c = 0; c < cfg.num_classes; ++c)
    names.push_back(synth_labels ? data::jetClassName(static_cast<int>(c)) : std::to_string(c));
  CheckpointMeta meta;
  meta.stats = stats;
  meta.class_names = names;
  Pet model(cfg);
  model->resetParameters(deriveSeed({a.seed, 0x696e6974ULL}));
  Trainer trainer(model, meta, t, *ctx);
  const FitResult fit = trainer.fit(train, &val, Objective::kPretrain);

  const EvalResult ev = trainer.evaluate(test, Objective::kPretrain);
  const auto test_jets = static_cast<int64_t>(test_rows.size());
  const json conditioning = jetConditioning(train, cfg.num_classes, a.shard_data ? ctx.get() : nullptr);
  if (ctx->isRoot()) {
    meta.config = cfg;
    meta.training = {{"fit", toJson(fit)}, {"test", ev.metrics}, {"data", a.data}};
    meta.extra = {{"jet_conditioning", conditioning},
                  {"num_particles", num_particles}};
    writeCheckpoint((fs::path(a.out) / "model").string(), meta, trainer.modelTensors());
    json j = {{"out", (fs::path(a.out) / "model").string()},
              {"train_jets", a.shard_data ? static_cast<int64_t>(train_pos.size()) : train.size()},
              {"val_jets", a.shard_data ? static_cast<int64_t>(val_pos.size()) : val.size()},
              {"test_jets", test_jets},
              // null without test jets (--test-fraction 0 or a tiny file), not a fake 0.
              {"test_accuracy", test_jets > 0 ? json(ev.metrics.value("accuracy", 0.0)) : json()},
              {"test_loss", test_jets > 0 ? json(ev.loss) : json()},
              {"fit", toJson(fit)}};
    std::printf("%s\n", j.dump(2).c_str());
  }
  ctx->barrier();
}

// ---- finetune -------------------------------------------------------------------------

struct FinetuneArgs {
  std::string init = "none", preset = "tiny", config, train, out, optimizer = "lion";
  double val_fraction = 0.1, test_fraction = 0.2, lr = 3e-4, lr_factor = 5.0;
  int64_t epochs = 10, batch = 64, patience = 3;
  int threads = 0;
  uint64_t seed = 1;
  bool json_out = false, resume = false;
};

void runFinetune(const FinetuneArgs& a) {
  configureThreads(a.threads);
  installStopHandlers();
  const data::JetArrays raw = readJetFiles({a.train}, 0);
  auto [rest, test_rows] = splitRows(raw.n, a.test_fraction, a.seed);
  const data::JetArrays pool = raw.subset(rest), test = raw.subset(test_rows);

  const uint64_t init_seed = deriveSeed({a.seed, 0x696e6974ULL});
  std::unique_ptr<PetClassifier> clf;
  WarmStartReport report;
  if (a.init == "none") {
    clf = std::make_unique<PetClassifier>(configFrom(a.preset, a.config), init_seed);
  } else {
    const Checkpoint ck = readCheckpoint(resolveCheckpointDir(a.init));
    clf = std::make_unique<PetClassifier>(ck.meta.config, init_seed, ck.meta.stats);
    report = warmStart(clf->model(), ck);
    logInfo("warm start from {}: {}", a.init, report.summary());
  }
  ClassifierFitOptions o;
  o.optimizer = a.optimizer;
  o.lr = a.lr;
  o.lr_factor = a.lr_factor;
  o.batch_size = a.batch;
  o.max_epochs = a.epochs;
  o.patience = a.patience;
  o.val_fraction = a.val_fraction;
  o.seed = a.seed;
  o.state_dir = (fs::path(a.out) / "state").string();
  o.resume = a.resume;
  o.show_progress = true;
  o.label = "finetune";
  const FitResult fit = clf->fit(pool, nullptr, o);
  const std::vector<float> p = clf->predict(test);
  std::vector<double> s(p.begin(), p.end());
  std::vector<int> y(test.labels.begin(), test.labels.end());
  const BinaryMetrics m = binaryMetrics(s, y);
  clf->save((fs::path(a.out) / "model").string());
  json j = {{"init", a.init},
            {"train_jets", pool.n},
            {"test_jets", test.n},
            {"test", {{"accuracy", m.accuracy}, {"auc", m.auc},
                      {"rejection_at_eps_s_0.5", m.rejection50}, {"rejection_at_eps_s_0.3", m.rejection30}}},
            {"warm_start_skipped", report.skipped},
            {"fit", toJson(fit)}};
  if (a.json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("test accuracy %.4f  AUC %.4f  1/eps_B(eps_S=0.5) %s  1/eps_B(eps_S=0.3) %s  (%lld jets)\n",
                m.accuracy, m.auc, fixed(m.rejection50).c_str(), fixed(m.rejection30).c_str(),
                static_cast<long long>(test.n));
  }
}

// ---- generate -------------------------------------------------------------------------

struct GenerateArgs {
  std::string ckpt, out;
  int64_t cls = 0, jets = 100, steps = 64, batch = 256;
  int threads = 0;
  uint64_t seed = 1;
};

void runGenerate(const GenerateArgs& a) {
  configureThreads(a.threads);
  const Checkpoint ck = readCheckpoint(resolveCheckpointDir(a.ckpt));
  if (!ck.meta.config.generator)
    throw InputError(a.ckpt + ": checkpoint has no generator head; use a pretrained checkpoint");
  if (a.cls < 0 || a.cls >= ck.meta.config.num_classes)
    throw InputError("--class " + std::to_string(a.cls) + " is out of range for " + a.ckpt + " (" +
                     std::to_string(ck.meta.config.num_classes) + " classes)");
  const json cond = ck.meta.extra.value("jet_conditioning", json::object());
  const std::string key = std::to_string(a.cls);
  if (!cond.contains(key))
    throw InputError(a.ckpt + ": no jet conditioning statistics for class " + key +
                     "; use a checkpoint written by foldfarm pretrain");
  const int64_t P = ck.meta.extra.value("num_particles", int64_t{128});
  Pet model = loadPet(ck, /*prefer_ema=*/true);
  model->eval();
  const auto mean = cond.at(key).at("mean").get<std::vector<float>>();
  const auto sd = cond.at(key).at("std").get<std::vector<float>>();
  const auto& st = ck.meta.stats;
  std::mt19937_64 rng(deriveSeed({a.seed, 0x67656eULL}));
  std::normal_distribution<double> norm;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(deriveSeed({a.seed, 0x6e6f697365ULL}));

  data::JetArrays out = data::JetArrays::zeros(a.jets, P, true);
  Progress progress("generate", a.jets, "jet");
  for (int64_t begin = 0; begin < a.jets; begin += a.batch) {
    const int64_t n = std::min(a.batch, a.jets - begin);
    torch::Tensor jets = torch::zeros({n, 4});
    torch::Tensor mask = torch::zeros({n, P});
    std::vector<int64_t> mult(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      for (int f = 0; f < 4; ++f) jets[i][f] = mean[f] + sd[f] * norm(rng);
      const double raw_mult = jets[i][3].item<double>() * st.jet_std[3] + st.jet_mean[3];
      mult[static_cast<size_t>(i)] = std::clamp<int64_t>(std::llround(raw_mult), 1, P);
      jets[i][3] = (static_cast<double>(mult[static_cast<size_t>(i)]) - st.jet_mean[3]) / st.jet_std[3];
      mask[i].narrow(0, 0, mult[static_cast<size_t>(i)]).fill_(1.0);
    }
    const torch::Tensor labels = torch::full({n}, a.cls, torch::kLong);
    const torch::Tensor x = sampleParticles(model, mask, jets, labels, a.steps, gen);
    for (int64_t i = 0; i < n; ++i) {
      float* jet = out.jet(begin + i);
      for (int f = 0; f < 4; ++f) jet[f] = jets[i][f].item<float>() * st.jet_std[f] + st.jet_mean[f];
      jet[3] = static_cast<float>(mult[static_cast<size_t>(i)]);
      out.labels[static_cast<size_t>(begin + i)] = a.cls;
      auto acc = x.accessor<float, 3>();
      for (int64_t j = 0; j < mult[static_cast<size_t>(i)]; ++j) {
        float* p = out.particle(begin + i, j);
        for (int f = 0; f < 3; ++f) p[f] = acc[i][j][f] * st.particle_std[f] + st.particle_mean[f];
        // Feature 2 = log(1 - pT/pT_jet) is negative for a real particle; keep it non-zero.
        p[2] = std::min(p[2], -1e-6f);
      }
    }
    progress.update(begin + n);
  }
  progress.finish();
  data::writeJetFile(a.out, out,
                     json{{"generated_by", "foldfarm generate"}, {"checkpoint", a.ckpt},
                          {"class", a.cls}, {"steps", a.steps}, {"seed", a.seed}});
  std::printf("%s\n", json{{"out", a.out}, {"jets", a.jets}, {"class", a.cls}}.dump().c_str());
}

// ---- bench pet ------------------------------------------------------------------------

struct BenchArgs {
  std::string preset = "omnilearn", mode = "classifier", data;
  int64_t batch = 64, steps = 6, warmup = 2, max_jets = 2000;
  int threads = 2;
  bool baseline = false, compare = false, json_out = false, profile = false;
};

// Per-operator self time of the profiled steps (the legacy CPU profiler's push/pop ranges),
// printed to stderr, largest first.
void printOperatorProfile(const torch::autograd::profiler::thread_event_lists& lists,
                          int64_t steps) {
  using torch::autograd::profiler::EventKind;
  using torch::autograd::profiler::LegacyEvent;
  struct Row { double self_us = 0; int64_t calls = 0; };
  std::map<std::string, Row> rows;
  double total = 0;
  for (const auto& events : lists) {
    struct Open { const LegacyEvent* ev; double child_us; };
    std::vector<Open> stack;
    for (const auto& e : events) {
      if (e.kind() == EventKind::PushRange) {
        stack.push_back({&e, 0.0});
      } else if (e.kind() == EventKind::PopRange && !stack.empty()) {
        const Open o = stack.back();
        stack.pop_back();
        const double incl = o.ev->cpuElapsedUs(e);
        Row& r = rows[o.ev->name()];
        r.self_us += incl - o.child_us;
        r.calls += 1;
        if (!stack.empty()) stack.back().child_us += incl;
        else total += incl;
      }
    }
  }
  std::vector<std::pair<std::string, Row>> sorted(rows.begin(), rows.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.self_us > b.second.self_us; });
  std::fprintf(stderr, "%-48s %10s %7s %8s\n", "operator (self time)", "ms/step", "share", "calls");
  for (size_t i = 0; i < sorted.size() && i < 30; ++i)
    std::fprintf(stderr, "%-48.48s %10.2f %6.1f%% %8lld\n", sorted[i].first.c_str(),
                 sorted[i].second.self_us / 1000.0 / static_cast<double>(steps),
                 100.0 * sorted[i].second.self_us / std::max(total, 1.0),
                 static_cast<long long>(sorted[i].second.calls / steps));
  std::fprintf(stderr, "%-48s %10.2f\n", "all operators", total / 1000.0 / static_cast<double>(steps));
}

struct BenchRun {
  double jets_per_s = 0, step_ms = 0, mean_width = 0;
  double jets_per_cpu_s = 0;  // per CPU-second of this process (less sensitive to other load)
};

double processCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

BenchRun benchOnce(const BenchArgs& a, const PetConfig& cfg, const JetTensors& set, bool baseline) {
  const bool pretrain = a.mode == "pretrain";
  Pet model(cfg);
  model->resetParameters(1);
  model->setBaseline(baseline);
  model->train();
  OptimizerSettings os;
  os.lr = 1e-5;
  auto opt = makeOptimizer(model, os);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto batches = epochBatches(set, a.batch, 7, 0, 0, 1, !baseline);
  if (static_cast<int64_t>(batches.size()) < a.warmup + a.steps)
    throw InputError(a.data + ": too few jets for " + std::to_string(a.warmup + a.steps) +
                     " batches of " + std::to_string(a.batch));
  BenchRun r;
  double seconds = 0, cpu_seconds = 0, jets = 0, width = 0;
  const bool profile = a.profile && baseline == a.baseline;
  for (int64_t s = 0; s < a.warmup + a.steps; ++s) {
    if (profile && s == a.warmup)
      torch::autograd::profiler::enableProfilerLegacy(
          torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = processCpuSeconds();
    const JetBatch b = makeBatch(set, batches[static_cast<size_t>(s)], !baseline);
    opt->zero_grad();
    torch::Tensor loss;
    if (pretrain) {
      loss = pretrainLoss(model, b, gen).total;
    } else {
      const auto out = model->classify(b.particles, b.mask, b.jets);
      loss = weightedClassifierLoss(out.logits, b.labels, b.weights);
    }
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt->step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double dc = processCpuSeconds() - c0;
    if (s >= a.warmup) {
      seconds += dt;
      cpu_seconds += dc;
      jets += static_cast<double>(b.size());
      width += static_cast<double>(b.particles.size(1));
    }
  }
  if (profile) printOperatorProfile(torch::autograd::profiler::disableProfilerLegacy(), a.steps);
  r.jets_per_s = jets / seconds;
  r.jets_per_cpu_s = jets / cpu_seconds;
  r.step_ms = 1000.0 * seconds / static_cast<double>(a.steps);
  r.mean_width = width / static_cast<double>(a.steps);
  return r;
}

double sgemmGflops() {
  const torch::Tensor x = torch::randn({1024, 1024}), y = torch::randn({1024, 1024});
  torch::mm(x, y);
  const int reps = 10;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) torch::mm(x, y);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * 1024.0 * 1024.0 * 1024.0 * reps / dt / 1e9;
}

void runBench(const BenchArgs& a) {
  configureThreads(a.threads);
  if (a.mode != "classifier" && a.mode != "pretrain")
    throw InputError("--mode must be classifier or pretrain");
  const data::JetArrays raw = readJetFiles({a.data}, a.max_jets);
  int64_t classes = 1;
  for (int64_t y : raw.labels) classes = std::max(classes, y + 1);
  PetConfig cfg = petPreset(a.preset);
  const bool pretrain = a.mode == "pretrain";
  cfg.num_classes = pretrain ? std::max<int64_t>(2, classes) : 1;
  cfg.generator = pretrain;
  data::JetArrays binary = raw;
  if (!pretrain)
    for (auto& y : binary.labels) y = y > 0 ? 1 : 0;
  const JetTensors set = JetTensors::fromArrays(binary, data::FeatureStats::jetClass());
  double mean_mult = 0;
  for (int64_t i = 0; i < raw.n; ++i) mean_mult += static_cast<double>(raw.multiplicity(i));
  mean_mult /= static_cast<double>(raw.n);

  const double sgemm = sgemmGflops();
  const double flops_per_jet = 3.0 * petForwardFlops(cfg, mean_mult, pretrain);
  json j = {{"preset", a.preset}, {"mode", a.mode}, {"batch", a.batch}, {"threads", a.threads},
            {"steps", a.steps}, {"data", a.data}, {"padded_particles", raw.P},
            {"mean_multiplicity", mean_mult}, {"flops_per_jet", flops_per_jet},
            {"sgemm_gflops", sgemm}};
  auto record = [&](const BenchRun& r, const std::string& prefix) {
    j[prefix + "jets_per_s"] = r.jets_per_s;
    j[prefix + "jets_per_cpu_s"] = r.jets_per_cpu_s;
    j[prefix + "step_ms"] = r.step_ms;
    j[prefix + "mean_batch_width"] = r.mean_width;
    j[prefix + "useful_gflops"] = r.jets_per_s * flops_per_jet / 1e9;
    j[prefix + "fraction_of_sgemm"] = r.jets_per_s * flops_per_jet / 1e9 / sgemm;
  };
  const BenchRun main = benchOnce(a, cfg, set, a.baseline);
  j["baseline"] = a.baseline;
  record(main, "");
  if (a.compare) {
    const BenchRun other = benchOnce(a, cfg, set, !a.baseline);
    record(other, a.baseline ? "optimised_" : "baseline_");
    j["speedup"] = a.baseline ? other.jets_per_s / main.jets_per_s : main.jets_per_s / other.jets_per_s;
    j["speedup_cpu"] = a.baseline ? other.jets_per_cpu_s / main.jets_per_cpu_s
                                  : main.jets_per_cpu_s / other.jets_per_cpu_s;
  }
  if (a.json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s %s: %.1f jets/s (%.0f ms/step), %.3g FLOP/jet, %.1f%% of sgemm %.0f GFLOP/s\n",
                a.preset.c_str(), a.mode.c_str(), main.jets_per_s, main.step_ms, flops_per_jet,
                100.0 * j["fraction_of_sgemm"].get<double>(), sgemm);
  }
}

}  // namespace

void registerModelCommands(CommandGroups& g) {
  auto info = std::make_shared<InfoArgs>();
  CLI::App* model = g.root.add_subcommand("model", "PET model: sizes and parameter counts");
  model->require_subcommand(1);
  CLI::App* i = model->add_subcommand("info", "Parameter counts per component (body, heads, total)");
  i->add_option("--preset", info->preset, "omnilearn or tiny")->capture_default_str();
  i->add_option("--config", info->config, "JSON file whose \"model\" object overrides sizes");
  i->add_option("--classes", info->classes, "Classifier outputs (1 = one logit)")->capture_default_str();
  i->add_flag("--generator", info->generator, "Include the diffusion generator head");
  i->add_flag("--json", info->json_out, "Print JSON");
  i->callback([info] { runInfo(*info); });

  auto pre = std::make_shared<PretrainArgs>();
  CLI::App* p = g.root.add_subcommand("pretrain", "Pretrain PET (classification + diffusion + noised classification)");
  p->add_option("--data", pre->data, "Jets HDF5 file(s), comma-separated, with pid labels")->required();
  p->add_option("--out", pre->out, "Output directory (state/ while training, model/ at the end)")->required();
  p->add_option("--config", pre->config, "JSON with \"model\" (size overrides) and \"train\" (lr, epochs, ...)");
  p->add_option("--preset", pre->preset, "omnilearn or tiny")->capture_default_str();
  p->add_option("--epochs", pre->epochs, "Epochs")->capture_default_str();
  p->add_option("--batch", pre->batch, "Batch size per rank")->capture_default_str();
  p->add_option("--lr", pre->lr, "Head learning rate after warm-up (x sqrt(ranks))")->capture_default_str();
  p->add_option("--lr-factor", pre->lr_factor, "Body learns at lr / lr_factor")->capture_default_str();
  p->add_option("--optimizer", pre->optimizer, "lion or adamw")->capture_default_str();
  p->add_option("--warmup-epochs", pre->warmup_epochs, "Linear warm-up epochs")->capture_default_str();
  p->add_option("--val-fraction", pre->val_fraction, "Validation fraction")->capture_default_str();
  p->add_option("--test-fraction", pre->test_fraction, "Held-out test fraction")->capture_default_str();
  p->add_option("--max-jets", pre->max_jets, "Read at most this many jets (0: all)")->capture_default_str();
  p->add_option("--seed", pre->seed, "Seed of initialisation, splits, data order and noise")->capture_default_str();
  p->add_option("--threads", pre->threads, "Threads (0: all cores)")->capture_default_str();
  p->add_flag("--resume", pre->resume, "Continue from <out>/state");
  p->add_flag("--shard-data", pre->shard_data,
              "Each rank reads and holds only its 1/N of the jets and shuffles them per epoch "
              "(memory per rank / N; resume on the same number of ranks)");
  pre->dist.addTo(*p);
  p->callback([pre] { runPretrain(*pre); });

  auto ft = std::make_shared<FinetuneArgs>();
  CLI::App* f = g.root.add_subcommand("finetune", "Train a one-logit PET classifier, from a checkpoint or from scratch");
  f->add_option("--init", ft->init,
                "Checkpoint to warm-start from (a checkpoint directory or the output directory "
                "of `foldfarm pretrain`), or none")->capture_default_str();
  f->add_option("--preset", ft->preset, "Preset when --init none")->capture_default_str();
  f->add_option("--config", ft->config, "JSON with \"model\" size overrides (--init none)");
  f->add_option("--train", ft->train, "Jets HDF5 file with 0/1 pid labels")->required();
  f->add_option("--out", ft->out, "Output directory (model/, state/)")->required();
  f->add_option("--val-fraction", ft->val_fraction, "Validation fraction of the training part")->capture_default_str();
  f->add_option("--test-fraction", ft->test_fraction, "Held-out test fraction")->capture_default_str();
  f->add_option("--epochs", ft->epochs, "Maximum epochs")->capture_default_str();
  f->add_option("--patience", ft->patience, "Early-stopping patience (0: off)")->capture_default_str();
  f->add_option("--batch", ft->batch, "Batch size")->capture_default_str();
  f->add_option("--lr", ft->lr, "Head learning rate")->capture_default_str();
  f->add_option("--lr-factor", ft->lr_factor, "Body learns at lr / lr_factor")->capture_default_str();
  f->add_option("--optimizer", ft->optimizer, "lion or adamw")->capture_default_str();
  f->add_option("--seed", ft->seed, "Seed")->capture_default_str();
  f->add_option("--threads", ft->threads, "Threads (0: all cores)")->capture_default_str();
  f->add_flag("--resume", ft->resume, "Continue from <out>/state");
  f->add_flag("--json", ft->json_out, "Print JSON");
  f->callback([ft] { runFinetune(*ft); });

  auto gen = std::make_shared<GenerateArgs>();
  CLI::App* ge = g.root.add_subcommand("generate", "Sample jets of one class with the diffusion head (EMA weights)");
  ge->add_option("--ckpt", gen->ckpt,
                 "Pretrained checkpoint (a checkpoint directory or the output directory of "
                 "`foldfarm pretrain`)")->required();
  ge->add_option("--class", gen->cls, "Class index")->required();
  ge->add_option("--jets", gen->jets, "Number of jets")->required();
  ge->add_option("--out", gen->out, "Output HDF5 (jets layout, written atomically)")->required();
  ge->add_option("--steps", gen->steps, "Second-order sampler steps")->capture_default_str();
  ge->add_option("--seed", gen->seed, "Seed")->capture_default_str();
  ge->add_option("--threads", gen->threads, "Threads (0: all cores)")->capture_default_str();
  ge->callback([gen] { runGenerate(*gen); });

  auto bench = std::make_shared<BenchArgs>();
  CLI::App* b = g.bench.add_subcommand("pet", "PET training-step throughput (forward + backward + optimiser)");
  b->add_option("--preset", bench->preset, "omnilearn or tiny")->capture_default_str();
  b->add_option("--mode", bench->mode, "classifier or pretrain")->capture_default_str();
  b->add_option("--batch", bench->batch, "Batch size")->capture_default_str();
  b->add_option("--threads", bench->threads, "Threads")->capture_default_str();
  b->add_option("--data", bench->data, "Jets HDF5 file")->required();
  b->add_option("--steps", bench->steps, "Timed steps")->capture_default_str();
  b->add_option("--warmup", bench->warmup, "Untimed warm-up steps")->capture_default_str();
  b->add_flag("--baseline", bench->baseline, "Padded to P, naive (gather + concat) edge layers");
  b->add_flag("--compare", bench->compare, "Also run the other path in the same process and report the speed-up");
  b->add_flag("--json", bench->json_out, "Print JSON");
  b->add_flag("--profile", bench->profile,
              "Print the per-operator self time of the timed steps to stderr (slows them down)");
  b->callback([bench] { runBench(*bench); });
}

}  // namespace foldfarm::app
