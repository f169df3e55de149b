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
  for (auto& l : all.labels) l = l == 1 ? 1 : 0;
  // 1. Seeded halves.
  std::vector<int64_t> perm(static_cast<size_t>(all.n));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(deriveSeed({o.seed, 0x96}));
  for (size_t i = perm.size(); i > 1; --i)
    std::swap(perm[i - 1], perm[std::uniform_int_distribution<size_t>(0, i - 1)(rng)]);
  const size_t half = perm.size() / 2;
  std::vector<int64_t> halves[2] = {
      std::vector<int64_t>(perm.begin(), perm.begin() + static_cast<long>(half)),
      std::vector<int64_t>(perm.begin() + static_cast<long>(half), perm.end())};
  for (auto& h : halves) std::sort(h.begin(), h.end());
  if (halves[0].size() < 10)
    throw InputError(o.jets_path + ": too few jets (" + std::to_string(all.n) + ") for two halves");

  // 2. The step-2 classifier (gluon = label 0 is reweighted to quark = label 1), cross-fitted:
  //    a model trained on one half scores the other, so every jet gets a held-out probability.
  std::shared_ptr<Checkpoint> ck;
  if (o.init != "none")
    ck = std::make_shared<Checkpoint>(readCheckpoint(resolveCheckpointDir(o.init)));
  PetConfig cfg = ck ? ck->meta.config
                     : applyPetOverrides(petPreset(o.config.preset), o.config.model, "config");
  std::vector<float> prob(static_cast<size_t>(all.n), 0.5f);
  json fits = json::array();
  for (int fold = 0; fold < 2; ++fold) {
    data::JetArrays train = all.subset(halves[fold]);
    train.weights.assign(static_cast<size_t>(train.n), 1.0f);
    PetClassifier clf(cfg, deriveSeed({o.seed, 0x1A17, static_cast<uint64_t>(fold)}),
                      statsFor(o.config, ck.get()));
    if (ck) logInfo("fold {}: warm start: {}", fold, warmStart(clf.model(), *ck).summary());
    FitResult fit = clf.fit(train, nullptr,
                            fitOptions(o.config, deriveSeed({o.seed, 0xF17, static_cast<uint64_t>(fold)}),
                                       "qg fold " + std::to_string(fold)));
    fits.push_back(toJson(fit));
    const std::vector<int64_t>& other = halves[1 - fold];
    std::vector<float> p = clf.predict(all.subset(other), 1024);
    for (size_t i = 0; i < other.size(); ++i) prob[static_cast<size_t>(other[i])] = p[i];
  }

  // 3. Every jet, each scored by the model that did not see it: weights on gluons,
  //    observables, discriminators.
  std::vector<uint8_t> is_gluon(static_cast<size_t>(all.n)), is_quark(static_cast<size_t>(all.n));
  std::vector<uint8_t> in_half0(static_cast<size_t>(all.n), 0);
  for (int64_t r : halves[0]) in_half0[static_cast<size_t>(r)] = 1;
  for (int64_t i = 0; i < all.n; ++i) {
    is_quark[i] = all.labels[i] == 1;
    is_gluon[i] = !is_quark[i];
  }
  std::vector<double> w = likelihoodRatio(prob);
  WeightReport rep = sanitizeAndNormalise(w, is_gluon, o.config.limits, "quark/gluon weights");
  const std::vector<float> subs = data::computeObservables(all);
  auto select = [&](const std::vector<uint8_t>& a, int half_flag) {
    std::vector<uint8_t> m(a.size());
    for (size_t i = 0; i < a.size(); ++i) m[i] = a[i] && (half_flag < 0 || in_half0[i] == half_flag);
    return m;
  };
  auto h_quark = histogramObservables(subs, {}, is_quark);
  auto h_gluon = histogramObservables(subs, {}, is_gluon);
  auto h_weighted = histogramObservables(subs, w, is_gluon);
  // Reference for the histogram noise: quark jets of one half vs those of the other (two
  // samples of the same distribution, each about half the size of the compared ones).
  auto h_quark0 = histogramObservables(subs, {}, select(is_quark, 1));
  auto h_quark1 = histogramObservables(subs, {}, select(is_quark, 0));
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
    const double noise = data::triangularDiscriminator(dens(h_quark0[ob]), dens(h_quark1[ob]), b);
    obs[data::observableName(ob)] = {{"delta_unweighted", before},
                                     {"delta_reweighted", after},
                                     {"reduction", after > 0 ? before / after : INFINITY},
                                     {"delta_quark_half_vs_half", noise}};
  }
  json out = {{"jets", o.jets_path},
              {"init", o.init},
              {"method", "2-fold cross-fit: each half's jets are scored by the model trained on "
                         "the other half"},
              {"train_jets_per_fold", {halves[0].size(), halves[1].size()}},
              {"heldout_jets", all.n},
              {"heldout_quarks", std::count(is_quark.begin(), is_quark.end(), 1)},
              {"heldout_gluons", std::count(is_gluon.begin(), is_gluon.end(), 1)},
              {"weights", rep},
              {"fit", fits},
              {"observables", obs}};
  fs::create_directories(out_dir);
  writeJsonAtomic(out_dir + "/reweight_qg.json", out);
  return out;
}

}  // namespace foldfarm::ensembles
