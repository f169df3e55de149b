#include "ensembles/studies.hpp"

#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/seed.hpp"
#include "core/data/histogram.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/observables.hpp"
#include "core/model/pet_config.hpp"
#include "core/plot/gnuplot.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/device.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/seeds.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<double> valCurve(const FitResult& r) {
  std::vector<double> v;
  for (const auto& e : r.history) v.push_back(e.val_loss);
  return v;
}

}  // namespace

json runWarmstartStudy(const WarmstartStudyOptions& o, const std::string& out_dir) {
  if (o.init == "none")
    throw InputError(
        "study warmstart: --init none leaves nothing to warm-start from; pass a foundation "
        "checkpoint (the --out of `foldfarm pretrain`), which the study compares with training "
        "from scratch");
  requireOutputDirectoryPath(out_dir, "--out");
  const DeviceChoice dev = selectDevice(o.config.device);  // the config's, as a chain's
  const Checkpoint ck = readCheckpoint(resolveCheckpointDir(o.init));
  data::UnfoldArrays mc = data::readUnfoldFile(o.mc_path);
  data::UnfoldArrays dat = data::readUnfoldFile(o.data_path);
  if (o.config.max_mc_events > 0 && o.config.max_mc_events < mc.n())
    mc = mc.slice(0, o.config.max_mc_events);
  if (o.config.max_data_events > 0 && o.config.max_data_events < dat.n())
    dat = dat.slice(0, o.config.max_data_events);
  const data::FeatureStats stats =
      chainFeatureStats(o.config, &ck, {{&mc.reco, &mc.pass_reco}, {&mc.gen, &mc.pass_gen}});
  std::vector<double> w_mc(static_cast<size_t>(mc.n())), w_data(static_cast<size_t>(dat.n()));
  for (int64_t i = 0; i < mc.n(); ++i) w_mc[i] = mc.weight(i);
  for (int64_t i = 0; i < dat.n(); ++i) w_data[i] = dat.weight(i);
  const data::JetArrays train = step1TrainingSet(mc, dat, w_mc, w_data);
  const uint64_t member_seed = memberSeed(o.seed, 0, 0);

  ChainConfig cfg = o.config;
  cfg.patience = 0;  // full curves
  json out = {{"mc", o.mc_path},
              {"data", o.data_path},
              {"init", o.init},
              {"events", train.n},
              {"epochs", cfg.epochs}};
  std::vector<double> curves[2];
  for (int warm = 1; warm >= 0; --warm) {
    PetClassifier clf(ck.meta.config, deriveSeed({member_seed, 0x1A17, 1}), stats);
    if (warm) logInfo("warm start: {}", warmStart(clf.model(), ck).summary());
    FitResult fit = clf.fit(train, nullptr,
                            stepFitOptions(cfg, deriveSeed({member_seed, 0xF17, 0}),
                                           warm ? "warm start" : "from scratch", dev.device));
    curves[warm] = valCurve(fit);
    out[warm ? "warm" : "scratch"] = toJson(fit);
  }
  const auto& scratch = curves[0];
  const auto& warmc = curves[1];
  const size_t best =
      static_cast<size_t>(std::min_element(scratch.begin(), scratch.end()) - scratch.begin());
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
  out["speedup"] =
      reach.is_null() ? json(nullptr) : json(static_cast<double>(best + 1) / reach.get<double>());
  out["val_loss_warm"] = warmc;
  out["val_loss_scratch"] = scratch;
  out["device"] = dev.toJson();

  MadeDirectories made(out_dir);
  writeJsonAtomic(out_dir + "/warmstart.json", out);
  if (o.plot) {
    plot::LineFigure fig;
    fig.title = "OmniFold iteration 0, step 1: validation loss";
    fig.xlabel = "epoch";
    fig.ylabel = "weighted BCE (val)";
    fig.series.resize(2);
    fig.series[0].label = "warm start (foundation)";
    fig.series[1].label = "from scratch";
    for (int c = 0; c < 2; ++c) {
      const auto& y = c == 0 ? warmc : scratch;
      for (size_t e = 0; e < y.size(); ++e) {
        fig.series[static_cast<size_t>(c)].x.push_back(static_cast<double>(e + 1));
        fig.series[static_cast<size_t>(c)].y.push_back(y[e]);
      }
    }
    plot::GnuplotBatch batch;
    batch.add("warmstart", fig);
    writeFileAtomic(out_dir + "/warmstart.png", batch.render().at("warmstart"));
  }
  made.keep();
  return out;
}

json runQuarkGluonStudy(const QuarkGluonStudyOptions& o, const std::string& out_dir) {
  requireOutputDirectoryPath(out_dir, "--out");
  const DeviceChoice dev = selectDevice(o.config.device);  // the config's, as a chain's
  if (o.folds < 2)
    throw InputError("reweight-qg: --folds must be at least 2 (got " + std::to_string(o.folds) +
                     ")");
  if (o.members < 1)
    throw InputError("reweight-qg: --members must be at least 1 (got " + std::to_string(o.members) +
                     ")");
  if (o.bins < 0 || o.bins > 100000)  // bins + 1 edges overflowed an int at 2147483647
    throw InputError(
        "reweight-qg: --bins must be from 0 (the observables' own binning) to 100000 "
        "(got " +
        std::to_string(o.bins) + ")");
  data::JetFile file(o.jets_path);
  if (file.layout() != data::FileLayout::kJets || !file.hasLabels())
    throw InputError(o.jets_path + ": needs the jets layout with 'pid' (1 = quark, 0 = gluon)");
  data::JetArrays all = file.readJets();
  // Quark (1) against gluon (0): another class (a pretraining file's W, Z, H or top jets) was
  // taken for a gluon, silently; finetune refuses it too.
  for (size_t i = 0; i < all.labels.size(); ++i)
    if (all.labels[i] != 0 && all.labels[i] != 1)
      throw InputError(o.jets_path + ": 'pid' of row " + std::to_string(i) + " is " +
                       std::to_string(all.labels[i]) +
                       "; labels must be 0 (gluon) or 1 (quark): a file of more classes (a "
                       "pretraining sample) is not a quark/gluon sample");
  const size_t n = static_cast<size_t>(all.n);
  if (n < static_cast<size_t>(5 * o.folds))
    throw InputError(o.jets_path + ": too few jets (" + std::to_string(all.n) + ") for " +
                     std::to_string(o.folds) + " folds");
  // 1. Seeded permutation; fold k holds the permuted positions i with i % folds == k, the
  //    halves (noise reference) the first and second half of the permutation.
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(deriveSeed({o.seed, 0x96}));
  for (size_t i = perm.size(); i > 1; --i)
    std::swap(perm[i - 1], perm[std::uniform_int_distribution<size_t>(0, i - 1)(rng)]);
  std::vector<std::vector<int64_t>> folds(static_cast<size_t>(o.folds));
  std::vector<uint8_t> in_half0(n, 0);
  for (size_t i = 0; i < n; ++i) {
    folds[i % folds.size()].push_back(perm[i]);
    if (i < n / 2) in_half0[static_cast<size_t>(perm[i])] = 1;
  }
  for (auto& f : folds) std::sort(f.begin(), f.end());

  std::vector<uint8_t> is_gluon(n), is_quark(n);
  for (size_t i = 0; i < n; ++i) {
    is_quark[i] = all.labels[i] == 1;
    is_gluon[i] = !is_quark[i];
  }

  // 2. The step-2 classifier (gluon = label 0 is reweighted to quark = label 1), cross-fitted:
  //    for fold k, each ensemble member is trained on the other folds and scores fold k, so
  //    every jet's probability comes from models that never saw it. Each member's weights
  //    f/(1-f) are sanitised and normalised like a chain's; the study's weights are the mean
  //    over members (OmniFold ensembling, as a chain replica's result is the mean of its
  //    members', ensembles/aggregate.hpp).
  std::shared_ptr<Checkpoint> ck;
  if (o.init != "none")
    ck = std::make_shared<Checkpoint>(readCheckpoint(resolveCheckpointDir(o.init)));
  PetConfig cfg = ck ? ck->meta.config
                     : applyPetOverrides(petPreset(o.config.preset), o.config.model, "config");
  std::vector<std::vector<double>> member_w;
  json fits = json::array();
  json member_reports = json::array();
  for (int m = 0; m < o.members; ++m) {
    std::vector<float> prob(n, 0.5f);
    for (int k = 0; k < o.folds; ++k) {
      std::vector<int64_t> train_rows;
      for (int j = 0; j < o.folds; ++j)
        if (j != k) train_rows.insert(train_rows.end(), folds[j].begin(), folds[j].end());
      std::sort(train_rows.begin(), train_rows.end());
      data::JetArrays train = all.subset(train_rows);
      train.weights.assign(static_cast<size_t>(train.n), 1.0f);
      const uint64_t mk = static_cast<uint64_t>(m) * 1000 + static_cast<uint64_t>(k);
      PetClassifier clf(cfg, deriveSeed({o.seed, 0x1A17, mk}),
                        chainFeatureStats(o.config, ck.get(), {{&all}}));
      if (ck)
        logInfo("member {} fold {}: warm start: {}", m, k, warmStart(clf.model(), *ck).summary());
      FitResult fit =
          clf.fit(train, nullptr,
                  stepFitOptions(o.config, deriveSeed({o.seed, 0xF17, mk}),
                                 "qg member " + std::to_string(m) + " fold " + std::to_string(k),
                                 dev.device));
      json fj = toJson(fit);
      fj["member"] = m;
      fj["fold"] = k;
      fits.push_back(fj);
      const std::vector<int64_t>& held = folds[static_cast<size_t>(k)];
      std::vector<float> p = clf.predict(all.subset(held), 1024);
      for (size_t i = 0; i < held.size(); ++i) prob[static_cast<size_t>(held[i])] = p[i];
    }
    std::vector<double> w = likelihoodRatio(prob);
    member_reports.push_back(sanitizeAndNormalise(
        w, is_gluon, o.config.limits, "quark/gluon weights of member " + std::to_string(m)));
    member_w.push_back(std::move(w));
  }
  std::vector<double> w(n, 0.0);
  for (const auto& mw : member_w)
    for (size_t i = 0; i < n; ++i) w[i] += mw[i] / static_cast<double>(member_w.size());
  WeightReport rep = sanitizeAndNormalise(w, is_gluon, o.config.limits, "quark/gluon weights");

  // 3. Every jet, each scored by models that did not see it: observables, discriminators.
  const std::vector<float> subs = data::computeObservables(all);
  auto select = [&](const std::vector<uint8_t>& a, int half_flag) {
    std::vector<uint8_t> mask(a.size());
    for (size_t i = 0; i < a.size(); ++i) mask[i] = a[i] && in_half0[i] == half_flag;
    return mask;
  };
  const std::vector<uint8_t> quark0 = select(is_quark, 1), quark1 = select(is_quark, 0);
  auto h_quark = histogramObservables(subs, {}, is_quark);
  auto h_gluon = histogramObservables(subs, {}, is_gluon);
  auto h_weighted = histogramObservables(subs, w, is_gluon);
  auto h_member0 = histogramObservables(subs, member_w[0], is_gluon);
  // Reference for the histogram noise: quark jets of one half vs those of the other (two
  // samples of the same distribution, each about half the size of the compared ones).
  auto h_quark0 = histogramObservables(subs, {}, quark0);
  auto h_quark1 = histogramObservables(subs, {}, quark1);
  const double nq = static_cast<double>(std::count(is_quark.begin(), is_quark.end(), 1));
  const double nq0 = static_cast<double>(std::count(quark0.begin(), quark0.end(), 1));
  const double nq1 = static_cast<double>(std::count(quark1.begin(), quark1.end(), 1));
  json obs = json::object(), obs_matched = json::object();
  auto discriminators =
      [&](int ob, const std::vector<ObservableHistogram>& hq,
          const std::vector<ObservableHistogram>& hg, const std::vector<ObservableHistogram>& hw,
          const std::vector<ObservableHistogram>& hm0, const std::vector<ObservableHistogram>& hq0,
          const std::vector<ObservableHistogram>& hq1) {
        data::Binning b{hq[ob].edges};
        auto dens = [&](const ObservableHistogram& h) {
          double s = std::accumulate(h.sumw.begin(), h.sumw.end(), 0.0);
          std::vector<double> d(h.sumw.size());
          for (size_t i = 0; i < d.size(); ++i)
            d[i] = s > 0 ? h.sumw[i] / (s * b.width(int(i))) : 0;
          return d;
        };
        auto vsQuark = [&](const ObservableHistogram& h) {
          return data::triangularDiscriminator(dens(h), dens(hq[ob]), b);
        };
        const double before = vsQuark(hg[ob]);
        const double after = vsQuark(hw[ob]);
        const double single = vsQuark(hm0[ob]);
        const double noise = data::triangularDiscriminator(dens(hq0[ob]), dens(hq1[ob]), b);
        // Pure histogram noise between two samples of sizes N1, N2 grows like 1/N1 + 1/N2; scaled
        // from the half-vs-half value to (effective size of the reweighted gluons, all quarks) it
        // estimates what a perfect reweighting would still show.
        const double floor = noise * (1.0 / rep.ess + 1.0 / nq) / (1.0 / nq0 + 1.0 / nq1);
        return json{{"bins", b.numBins()},
                    {"delta_unweighted", before},
                    {"delta_reweighted", after},
                    {"reduction", after > 0 ? before / after : INFINITY},
                    {"delta_reweighted_member0", single},
                    {"reduction_member0", single > 0 ? before / single : INFINITY},
                    {"delta_quark_half_vs_half", noise},
                    {"noise_floor_estimate", floor},
                    {"max_reduction_estimate", floor > 0 ? before / floor : INFINITY}};
      };
  // Binning matched to this sample: `bins` equal-width bins between the 1st and 99th
  // percentile of all jets' values (both classes, so it does not favour either).
  std::vector<std::vector<double>> matched_edges(static_cast<size_t>(data::kNumSubs));
  auto histogramMatched = [&](const std::vector<double>& weights,
                              const std::vector<uint8_t>& pass) {
    std::vector<ObservableHistogram> out(static_cast<size_t>(data::kNumSubs));
    for (int ob : {data::kObsMass, data::kObsWidth, data::kObsMultiplicity}) {
      data::Histogram1D h(data::Binning{matched_edges[static_cast<size_t>(ob)]});
      for (size_t i = 0; i < n; ++i)
        if (pass[i])
          h.fill(subs[i * data::kNumSubs + static_cast<size_t>(ob)],
                 weights.empty() ? 1.0 : weights[i]);
      out[static_cast<size_t>(ob)] = {data::observableName(ob), h.binning().edges, h.sumW(),
                                      h.sumW2(),
                                      std::array<double, 2>{h.underflow(), h.overflow()}};
    }
    return out;
  };
  if (o.bins > 0) {
    for (int ob : {data::kObsMass, data::kObsWidth, data::kObsMultiplicity}) {
      std::vector<double> v;
      for (size_t i = 0; i < n; ++i) {
        const double x = subs[i * data::kNumSubs + static_cast<size_t>(ob)];
        if (std::isfinite(x)) v.push_back(x);
      }
      std::sort(v.begin(), v.end());
      const double lo = v[v.size() / 100], hi = v[v.size() - 1 - v.size() / 100];
      matched_edges[static_cast<size_t>(ob)] =
          data::Binning::linspace(lo, hi > lo ? hi : lo + 1.0, o.bins + 1).edges;
    }
  }
  std::vector<ObservableHistogram> mq, mg, mw, mm0, mq0, mq1;
  if (o.bins > 0) {
    mq = histogramMatched({}, is_quark);
    mg = histogramMatched({}, is_gluon);
    mw = histogramMatched(w, is_gluon);
    mm0 = histogramMatched(member_w[0], is_gluon);
    mq0 = histogramMatched({}, quark0);
    mq1 = histogramMatched({}, quark1);
  }
  for (int ob : {data::kObsMass, data::kObsWidth, data::kObsMultiplicity}) {
    obs[data::observableName(ob)] =
        discriminators(ob, h_quark, h_gluon, h_weighted, h_member0, h_quark0, h_quark1);
    if (o.bins > 0)
      obs_matched[data::observableName(ob)] = discriminators(ob, mq, mg, mw, mm0, mq0, mq1);
  }
  json out = {{"jets", o.jets_path},
              {"init", o.init},
              {"method", std::to_string(o.folds) + "-fold cross-fit, " + std::to_string(o.members) +
                             " ensemble member(s): every jet is scored by models trained on the "
                             "other folds; weights = mean over members"},
              {"folds", o.folds},
              {"members", o.members},
              {"config", chainConfigToJson(o.config)},
              {"device", dev.toJson()},
              {"heldout_jets", all.n},
              {"heldout_quarks", static_cast<int64_t>(nq)},
              {"heldout_gluons", all.n - static_cast<int64_t>(nq)},
              {"weights", rep},
              {"weights_members", member_reports},
              {"fit", fits},
              {"observables", obs}};
  if (o.bins > 0) out["observables_matched_binning"] = obs_matched;
  MadeDirectories made(out_dir);
  writeJsonAtomic(out_dir + "/reweight_qg.json", out);
  made.keep();
  return out;
}

}  // namespace foldfarm::ensembles
