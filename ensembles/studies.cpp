#include "ensembles/studies.hpp"

#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/seed.hpp"
#include "core/data/histogram.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/observables.hpp"
#include "core/model/pet_config.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/classifier_trainer.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/plot.hpp"
#include "ensembles/seeds.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

ClassifierFitOptions fitOptions(const ChainConfig& c, uint64_t seed, const std::string& label) {
  ClassifierFitOptions fo;
  fo.optimizer = c.optimizer;
  fo.lr = c.lr;
  fo.lr_factor = c.lr_factor;
  fo.weight_decay = c.weight_decay;
  fo.batch_size = c.batch_size;
  fo.max_epochs = c.epochs;
  fo.patience = c.patience;
  fo.val_fraction = c.val_fraction;
  fo.seed = seed;
  fo.label = label;
  return fo;
}

std::vector<double> valCurve(const FitResult& r) {
  std::vector<double> v;
  for (const auto& e : r.history) v.push_back(e.val_loss);
  return v;
}

data::FeatureStats statsFor(const ChainConfig& c, const Checkpoint* ck) {
  if (c.feature_stats == "jetclass") return data::FeatureStats::jetClass();
  if (c.feature_stats == "zjets") return data::FeatureStats::zJets();
  return ck ? ck->meta.stats : data::FeatureStats::zJets();
}

}  // namespace

json runWarmstartStudy(const WarmstartStudyOptions& o, const std::string& out_dir) {
  data::UnfoldArrays mc = data::readUnfoldFile(o.mc_path);
  data::UnfoldArrays dat = data::readUnfoldFile(o.data_path);
  if (o.config.max_mc_events > 0 && o.config.max_mc_events < mc.n())
    mc = mc.slice(0, o.config.max_mc_events);
  if (o.config.max_data_events > 0 && o.config.max_data_events < dat.n())
    dat = dat.slice(0, o.config.max_data_events);
  const Checkpoint ck = readCheckpoint(resolveCheckpointDir(o.init));
  const data::FeatureStats stats = statsFor(o.config, &ck);
  std::vector<double> push(static_cast<size_t>(mc.n()), 1.0), w_data(static_cast<size_t>(dat.n()));
  for (int64_t i = 0; i < dat.n(); ++i) w_data[i] = dat.weight(i);
  const data::JetArrays train = step1TrainingSet(mc, dat, push, w_data);
  const uint64_t member_seed = memberSeed(o.seed, 0, 0);

  ChainConfig cfg = o.config;
  cfg.patience = 0;  // full curves
  json out = {{"mc", o.mc_path}, {"data", o.data_path}, {"init", o.init},
              {"events", train.n}, {"epochs", cfg.epochs}};
  std::vector<double> curves[2];
  for (int warm = 1; warm >= 0; --warm) {
    PetClassifier clf(ck.meta.config, deriveSeed({member_seed, 0x1A17, 1}), stats);
    if (warm) logInfo("warm start: {}", warmStart(clf.model(), ck).summary());
    FitResult fit = clf.fit(train, nullptr,
                            fitOptions(cfg, deriveSeed({member_seed, 0xF17, 0}),
                                       warm ? "warm start" : "from scratch"));
    curves[warm] = valCurve(fit);
    out[warm ? "warm" : "scratch"] = toJson(fit);
  }
  const auto& scratch = curves[0];
  const auto& warmc = curves[1];
  const size_t best = static_cast<size_t>(std::min_element(scratch.begin(), scratch.end()) -
                                          scratch.begin());
  const double target = scratch[best];
  json reach = nullptr;
  for (size_t e = 0; e < warmc.size(); ++e)
    if (warmc[e] <= target) {
      reach = e + 1;
      break;
    }
  out["scratch_best_val_loss"] = target;
  out["warm_best_val_loss"] = *std::min_element(warmc.begin(), warmc.end());
  out["epochs_scratch_to_best"] = best + 1;
  out["epochs_warm_to_scratch_best"] = reach;
  out["speedup"] = reach.is_null() ? json(nullptr)
                                   : json(static_cast<double>(best + 1) / reach.get<double>());
  out["val_loss_warm"] = warmc;
  out["val_loss_scratch"] = scratch;

  fs::create_directories(out_dir);
  writeJsonAtomic(out_dir + "/warmstart.json", out);
  if (o.plot) {
    std::vector<Curve> cs(2);
    cs[0].label = "warm start (foundation)";
    cs[1].label = "from scratch";
    for (int c = 0; c < 2; ++c) {
      const auto& y = c == 0 ? warmc : scratch;
      for (size_t e = 0; e < y.size(); ++e) {
        cs[c].x.push_back(static_cast<double>(e + 1));
        cs[c].y.push_back(y[e]);
      }
    }
    renderCurves("OmniFold iteration 0, step 1: validation loss", "epoch", "weighted BCE (val)", cs,
                 out_dir + "/warmstart.png");
  }
  return out;
}

json runQuarkGluonStudy(const QuarkGluonStudyOptions& o, const std::string& out_dir) {
  data::JetFile file(o.jets_path);
  if (file.layout() != data::FileLayout::kJets || !file.hasLabels())
    throw InputError(o.jets_path + ": needs the jets layout with 'pid' (1 = quark, 0 = gluon)");
  data::JetArrays all = file.readJets();
  // 1. Seeded halves.
  std::vector<int64_t> perm(static_cast<size_t>(all.n));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(deriveSeed({o.seed, 0x96}));
  for (size_t i = perm.size(); i > 1; --i)
    std::swap(perm[i - 1], perm[std::uniform_int_distribution<size_t>(0, i - 1)(rng)]);
  const size_t half = perm.size() / 2;
  std::vector<int64_t> train_rows(perm.begin(), perm.begin() + static_cast<long>(half));
  std::vector<int64_t> test_rows(perm.begin() + static_cast<long>(half), perm.end());
  std::sort(train_rows.begin(), train_rows.end());
  std::sort(test_rows.begin(), test_rows.end());
  data::JetArrays train = all.subset(train_rows);
  for (auto& l : train.labels) l = l == 1 ? 1 : 0;
  train.weights.assign(static_cast<size_t>(train.n), 1.0f);

  // 2. The step-2 classifier (gluon = label 0 is reweighted to quark = label 1).
  std::shared_ptr<Checkpoint> ck;
  if (o.init != "none") ck = std::make_shared<Checkpoint>(readCheckpoint(resolveCheckpointDir(o.init)));
  PetConfig cfg = ck ? ck->meta.config
                     : applyPetOverrides(petPreset(o.config.preset), o.config.model, "config");
  PetClassifier clf(cfg, deriveSeed({o.seed, 0x1A17}), statsFor(o.config, ck.get()));
  if (ck) logInfo("warm start: {}", warmStart(clf.model(), *ck).summary());
  FitResult fit = clf.fit(train, nullptr, fitOptions(o.config, deriveSeed({o.seed, 0xF17}), "qg"));

  // 3. Held-out half: weights on gluons, observables, discriminators.
  data::JetArrays test = all.subset(test_rows);
  std::vector<float> prob = clf.predict(test, 1024);
  std::vector<uint8_t> is_gluon(static_cast<size_t>(test.n)), is_quark(static_cast<size_t>(test.n));
  for (int64_t i = 0; i < test.n; ++i) {
    is_quark[i] = test.labels[i] == 1;
    is_gluon[i] = !is_quark[i];
  }
  std::vector<double> w = likelihoodRatio(prob);
  WeightReport rep = sanitizeAndNormalise(w, is_gluon, o.config.limits, "quark/gluon weights");
  const std::vector<float> subs = data::computeObservables(test);
  auto h_quark = histogramObservables(subs, {}, is_quark);
  auto h_gluon = histogramObservables(subs, {}, is_gluon);
  auto h_weighted = histogramObservables(subs, w, is_gluon);
  json obs = json::object();
  for (int ob : {data::kObsMass, data::kObsWidth, data::kObsMultiplicity}) {
    data::Binning b{h_quark[ob].edges};
    auto dens = [&](const ObservableHistogram& h) {
      double s = std::accumulate(h.sumw.begin(), h.sumw.end(), 0.0);
      std::vector<double> d(h.sumw.size());
      for (size_t i = 0; i < d.size(); ++i) d[i] = s > 0 ? h.sumw[i] / (s * b.width(int(i))) : 0;
      return d;
    };
    const double before = data::triangularDiscriminator(dens(h_gluon[ob]), dens(h_quark[ob]), b);
    const double after = data::triangularDiscriminator(dens(h_weighted[ob]), dens(h_quark[ob]), b);
    obs[data::observableName(ob)] = {{"delta_unweighted", before},
                                     {"delta_reweighted", after},
                                     {"reduction", after > 0 ? before / after : INFINITY}};
  }
  json out = {{"jets", o.jets_path},
              {"init", o.init},
              {"train_jets", train.n},
              {"heldout_jets", test.n},
              {"heldout_quarks", std::count(is_quark.begin(), is_quark.end(), 1)},
              {"heldout_gluons", std::count(is_gluon.begin(), is_gluon.end(), 1)},
              {"weights", rep},
              {"fit", toJson(fit)},
              {"observables", obs}};
  fs::create_directories(out_dir);
  writeJsonAtomic(out_dir + "/reweight_qg.json", out);
  return out;
}

}  // namespace foldfarm::ensembles
