#include "core/train/finetune.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/output_lock.hpp"
#include "core/base/seed.hpp"
#include "core/base/stop_signal.hpp"
#include "core/data/jet_files.hpp"
#include "core/model/threads.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/jet_batches.hpp"
#include "core/train/train_config.hpp"
#include "dist/launch.hpp"

namespace foldfarm {
namespace fs = std::filesystem;
using nlohmann::json;

json FinetuneResult::toJson() const {
  // A figure that is not defined (one class among the test jets; a diverged model): null.
  const auto figure = [](double v) { return std::isnan(v) ? json() : json(v); };
  return {{"init", init},
          {"train_jets", train_jets},
          {"val_jets", val_jets},
          {"test_jets", test_jets},
          // null when no jet was held out (--test-fraction 0): no figure rather than zeros.
          {"test", test_jets == 0 ? json()
                                  : json{{"accuracy", figure(test.accuracy)},
                                         {"auc", figure(test.auc)},
                                         {"rejection_at_eps_s_0.5", figure(test.rejection50)},
                                         {"rejection_at_eps_s_0.3", figure(test.rejection30)}}},
          {"warm_start_skipped", warm_start_skipped},
          {"fit", foldfarm::toJson(fit)}};
}

FinetuneResult runFinetuning(const FinetuneOptions& opt) {
  // 1. Options, and what --out already holds, before anything is read.
  ClassifierFitOptions o = opt.fit;
  o.state_dir = (fs::path(opt.out) / "state").string();
  o.label = "finetune";
  o.data_options = {{"--train", opt.train},
                    {"--seed", o.seed},
                    {"--val-fraction", o.val_fraction},
                    {"--test-fraction", opt.test_fraction}};
  const std::string model_dir = (fs::path(opt.out) / "model").string();
  checkHeldOutFractions("finetune", o.val_fraction, opt.test_fraction);
  checkFitOptions(o);
  // One run writes --out; what a run killed while writing left there is removed.
  OutputDirectoryLock lock(opt.out, "--out");
  lock.removeLeftTemporaries({"state", "model"});
  if (const std::string other = otherCommandsOutput(opt.out); !other.empty())
    throw InputError(opt.out + ": " + other + ", not a fine-tuning; choose another --out");
  for (const std::string& dir : {o.state_dir, model_dir}) {
    if (!checkpointExists(dir)) continue;
    bool generator = false;
    try {
      generator = readJsonFile(dir + "/meta.json", "")
                      .value("config", nlohmann::json::object())
                      .value("generator", false);
    } catch (const std::exception&) {
    }
    if (generator)
      throw InputError(opt.out +
                       ": holds a pretraining (`foldfarm pretrain --out`), not a fine-tuning; "
                       "choose another --out (to fine-tune from it, give it as --init)");
  }
  if (o.resume && !checkpointExists(o.state_dir))
    logWarn("finetune --resume: {} holds no training state ({}): training starts at epoch 0",
            opt.out, o.state_dir);
  if (!o.resume && (checkpointExists(o.state_dir) || fs::exists(model_dir)))
    throw InputError(opt.out +
                     ": holds an earlier fine-tuning (state or model); pass --resume to continue "
                     "it or choose a new --out");
  const std::string init_dir = opt.init == "none" ? "" : resolveCheckpointDir(opt.init);
  // A resume continues the state's training: from another checkpoint it would be recorded
  // as warm-started from that one. The checkpoint is known by its description's checksum:
  // a copy elsewhere (scratch purged, moved to another file system) is the same --init.
  o.resume_options = {{"--init", "none"}};
  if (!init_dir.empty())
    o.resume_options["--init"] = {{"shown", fs::absolute(init_dir).lexically_normal().string()},
                                  {"identity", checkpointIdentity(init_dir)}};

  // 2. Test rows and the rest.
  const data::JetArrays raw = data::readJetsFiles({opt.train}, 0);
  requireBinary(raw, opt.train);  // the fit's own check, naming the file
  const auto ones = std::count(raw.labels.begin(), raw.labels.end(), int64_t{1});
  if (ones == 0 || ones == raw.n)
    throw InputError(opt.train + ": every jet has label " + std::to_string(ones == 0 ? 0 : 1) +
                     "; a classifier needs jets of both classes (0 and 1)");
  auto [rest, test_rows] = splitRows(raw.n, opt.test_fraction, o.seed);
  const data::JetArrays pool = raw.subset(rest), test = raw.subset(test_rows);
  // The jets the model trains on hold both classes (a file with few of one class can leave all
  // of them to the test: the model trained on one class without a word).
  const auto pool_ones = std::count(pool.labels.begin(), pool.labels.end(), int64_t{1});
  if (pool_ones == 0 || pool_ones == pool.n)
    throw InputError(opt.train + ": the " + std::to_string(pool.n) +
                     " jets left for training after the test's " + std::to_string(test.n) +
                     " (--test-fraction " + fmt::format("{:g}", opt.test_fraction) +
                     ") all have label " + std::to_string(pool_ones == 0 ? 0 : 1) +
                     "; a classifier needs both classes: give more jets of class " +
                     std::to_string(pool_ones == 0 ? 1 : 0) + " or a smaller --test-fraction");
  const auto test_ones = std::count(test.labels.begin(), test.labels.end(), int64_t{1});
  if (test.n > 0 && (test_ones == 0 || test_ones == test.n))
    logWarn(
        "finetune: the {} test jets all have label {}: AUC and rejection are not defined (null); "
        "give more jets of class {} for test figures",
        test.n, test_ones == 0 ? 0 : 1, test_ones == 0 ? 1 : 0);

  // 3. The classifier, warm-started or fresh.
  FinetuneResult r;
  r.init = opt.init;
  const uint64_t init_seed = deriveSeed({o.seed, 0x696e6974ULL});
  std::unique_ptr<PetClassifier> clf;
  if (opt.init == "none") {
    clf = std::make_unique<PetClassifier>(opt.model, init_seed);
  } else {
    const Checkpoint ck = readCheckpoint(init_dir);
    clf = std::make_unique<PetClassifier>(ck.meta.config, init_seed, ck.meta.stats);
    const WarmStartReport report = warmStart(clf->model(), ck);
    logInfo("warm start from {}: {}", opt.init, report.summary());
    r.warm_start_skipped = report.skipped;
  }

  // 4. Training, then the model.
  r.fit = clf->fit(pool, nullptr, o);
  clf->save(model_dir);

  // 5. The held-out test.
  // The fit holds out its validation jets of the pool as ClassifierTrainer::fit splits them.
  r.val_jets = o.val_fraction > 0
                   ? static_cast<int64_t>(splitRows(pool.n, o.val_fraction, o.seed).second.size())
                   : 0;
  r.train_jets = pool.n - r.val_jets;
  r.test_jets = test.n;
  if (test.n == 0) {
    logWarn("finetune: no jet held out for the test (--test-fraction {}): no test figures",
            opt.test_fraction);
    return r;
  }
  const std::vector<float> p = clf->predict(test);
  const std::vector<double> scores(p.begin(), p.end());
  const std::vector<int> labels(test.labels.begin(), test.labels.end());
  r.test = binaryMetrics(scores, labels);
  return r;
}

namespace {

std::string fixed(double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

void finetuneCommand(const FinetuneRequest& a) {
  // One process trains (fine-tuning is not data-parallel): under mpirun/srun every rank would
  // train the same model into the same --out, and all but one be refused its lock.
  const dist::LaunchInfo launch = dist::detectLaunch();
  checkAlikeOnEveryRank(launch.rank, [&] {
    if (launch.world_size > 1)
      throw InputError("finetune trains on one process (it is not data-parallel), not on " +
                       std::to_string(launch.world_size) +
                       " ranks: run it without mpirun/srun, or with one task");
  });
  configureThreads(a.threads);
  installStopHandlers();
  const DeviceChoice dev = selectDevice(a.device);
  if (a.cuda_graphs) requireCudaGraphs(dev.device, 1, "finetune --cuda-graphs");
  const TrainConfigFile file = readTrainConfigFile(a.config);
  const bool preset_given = a.given.count("preset") > 0;
  if (a.init != "none" && (preset_given || !file.model.empty()))
    throw InputError((preset_given ? std::string("--preset") : a.config + "'s \"model\"") +
                     ": the model is the checkpoint's (--init " + a.init +
                     "); sizes apply with --init none only");
  FinetuneOptions o;
  o.train = a.train;
  o.out = a.out;
  o.init = a.init;
  if (a.init == "none") o.model = petConfigFrom(a.preset, file);
  o.test_fraction = a.test_fraction;
  ClassifierFitOptions& f = o.fit;
  f.optimizer = a.optimizer;
  f.lr = a.lr;
  f.lr_factor = a.lr_factor;
  f.warmup_epochs = a.warmup_epochs;
  f.batch_size = a.batch;
  f.max_epochs = a.epochs;
  f.patience = a.patience;
  f.val_fraction = a.val_fraction;
  f.seed = a.seed;
  f.resume = a.resume;
  f.save_every_s = 60 * a.save_every_min;
  f.show_progress = true;
  f.device = dev.device;
  f.precision = a.precision;
  f.fixed_shapes = a.fixed_shapes;
  f.cuda_graphs = a.cuda_graphs;
  applyTrainRecipe(recipeUnlessGiven(file, a.given,
                                     {{"epochs", "epochs"},
                                      {"patience", "patience"},
                                      {"batch", "batch_size"},
                                      {"lr", "lr"},
                                      {"lr-factor", "lr_factor"},
                                      {"optimizer", "optimizer"},
                                      {"warmup-epochs", "warmup_epochs"}}),
                   file.path, f);
  const FinetuneResult r = runFinetuning(o);
  if (a.json) {
    nlohmann::json j = r.toJson();
    j["device"] = dev.toJson();
    std::printf("%s\n", j.dump(2).c_str());
  } else if (r.test_jets == 0) {
    std::printf("no test figures: no jet was held out (--test-fraction %g)\n", o.test_fraction);
  } else {
    std::printf(
        "test accuracy %.4f  AUC %s  1/eps_B(eps_S=0.5) %s  1/eps_B(eps_S=0.3) %s  (%lld jets)\n",
        r.test.accuracy,
        std::isnan(r.test.auc) ? "- (one class)" : fmt::format("{:.4f}", r.test.auc).c_str(),
        fixed(r.test.rejection50).c_str(), fixed(r.test.rejection30).c_str(),
        static_cast<long long>(r.test_jets));
  }
}

}  // namespace foldfarm
