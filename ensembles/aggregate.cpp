#include "ensembles/aggregate.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/fault_point.hpp"
#include "core/base/log.hpp"
#include "core/base/output_lock.hpp"
#include "core/base/process.hpp"
#include "core/build_info/build_info.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/histogram.hpp"
#include "core/data/observables.hpp"
#include "core/plot/gnuplot.hpp"
#include "ensembles/aggregate_systematics.hpp"
#include "ensembles/band_stats.hpp"
#include "ensembles/chain_groups.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/event_weights.hpp"
#include "ensembles/systematics.hpp"
#include "ensembles/truth_comparison.hpp"
#include "jobs/campaign.hpp"
#include "jobs/disk_estimate.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;

// What a directory holds of a chain: nothing, a complete chain (result.json and
// histograms.h5), or an unfinished one, with the file it lacks (one of the two, or a chain's
// state/progress.json alone).
struct ChainDirState {
  bool complete = false;
  std::string lacks;  // unfinished: "result.json" or "histograms.h5"; else ""
};

ChainDirState chainDirState(const fs::path& p) {
  std::error_code ec;
  const bool result = fs::is_regular_file(p / kChainResultFile, ec);
  const bool hist = fs::is_regular_file(p / kChainHistogramsFile, ec);
  if (result && hist) return {true, ""};
  if (result || hist || fs::is_regular_file(p / "state" / "progress.json", ec))
    return {false, result ? kChainHistogramsFile : kChainResultFile};
  return {};
}

// Every chain under the run directories, sorted and once each; InputError when there is none,
// or when a run directory is itself a chain that did not finish (named, it is not left out
// unsaid); unfinished chains below a run directory are left out with a warning.
std::vector<std::string> chainDirsUnder(const std::vector<std::string>& run_dirs) {
  std::vector<std::string> chains;
  for (const auto& d : run_dirs) {
    std::error_code ec;
    if (fs::is_directory(d, ec)) {
      if (const std::string lacks = chainDirState(d).lacks; !lacks.empty())
        throw InputError(d + ": an unfinished chain (no " + lacks +
                         "): still running, stopped or failed; rerun its `foldfarm unfold` "
                         "command (it resumes) or leave it out");
    }
    std::vector<std::string> unfinished;
    auto found = findChainDirs(d, &unfinished);
    chains.insert(chains.end(), found.begin(), found.end());
    if (!unfinished.empty()) {
      logWarn(
          "aggregate: {} unfinished chain(s) under {} left out (no result.json or "
          "histograms.h5), the first {}; finish them to include them",
          unfinished.size(), d, unfinished.front());
    }
  }
  std::sort(chains.begin(), chains.end());
  chains.erase(std::unique(chains.begin(), chains.end()), chains.end());
  if (chains.empty())
    throw InputError(
        "aggregate: no completed chain (result.json + histograms.h5) under the given "
        "directories; run `foldfarm unfold` first");
  return chains;
}

// The event_weights.h5 columns to write; nullopt for none. Checked before anything is written:
// a chain whose `final` does not fit its simulation.
std::optional<EventWeightsPlan> planWeights(const std::map<std::string, ChainGroup>& groups,
                                            EventWeightsChoice choice) {
  if (choice == EventWeightsChoice::kNone) return std::nullopt;
  std::vector<WeightGroup> weight_groups;
  for (const auto& [name, g] : groups) {
    WeightGroup wg{name, g.variation ? variationTypeName(g.variation->type) : "nominal", g.mc,
                   g.member_dirs};
    if (name.empty())
      weight_groups.insert(weight_groups.begin(), std::move(wg));
    else
      weight_groups.push_back(std::move(wg));
  }
  std::optional<EventWeightsPlan> plan =
      planEventWeights(weight_groups, choice == EventWeightsChoice::kCentral);
  if (plan && choice == EventWeightsChoice::kCentral && plan->columns.empty()) {
    logWarn(
        "aggregate: no central result to write (no chain of the nominal's replica 0 is among "
        "those aggregated); no event_weights.h5");
    plan.reset();
  }
  return plan;
}

// What the nominal's statistical band is over.
struct BandReplicas {
  bool from_bootstrap = false;  // the bootstrap replicas r >= 1 only (else every replica)
  size_t count = 0;
  bool counted(int r) const { return from_bootstrap ? r != 0 : true; }
};

// Replicas from which the 16/84 and 2.5/97.5 percentiles cover about what they say.
constexpr size_t kSteadyPercentileReplicas = 40;

// Over the bootstrap replicas (r >= 1) when there are two or more of them, else over every
// replica (replica 0 included, warned about).
BandReplicas bandReplicas(const std::map<int, ReplicaSum>& replicas) {
  const size_t bootstrap = replicas.size() - static_cast<size_t>(replicas.count(0) ? 1 : 0);
  BandReplicas out;
  out.from_bootstrap = bootstrap >= 2;
  out.count = out.from_bootstrap ? bootstrap : replicas.size();
  if (!out.from_bootstrap && replicas.size() > 1)
    logWarn(
        "aggregate: {} replicas, of which {} bootstrap replica: the statistical band is the spread "
        "of all of them, replica 0 (the data as measured) included, and too narrow; run 2 or more "
        "bootstrap replicas",
        replicas.size(), bootstrap);
  // Percentiles of few replicas lie inside the spread they estimate: a new replica falls
  // within p16-p84 and p2.5-p97.5 about 52% and 73% of the time at 7 replicas, 60% and 85% at
  // 15, 65% and 91% at 50 (normal replicas, linear interpolation).
  if (out.count >= 2 && out.count < kSteadyPercentileReplicas)
    logWarn(
        "aggregate: the 68% and 95% bands (p16-p84, p2.5-p97.5, and coverage_68/95) are "
        "percentiles of {} replicas: below about {} they cover less than they say (at 15, about "
        "60% and 85%); std (±1σ) is the steadier measure; run more replicas for percentile bands",
        out.count, kSteadyPercentileReplicas);
  if (replicas.size() == 1)
    logWarn(
        "aggregate: one replica (replica {}): there is no statistical band (its spread is 0, and "
        "so are its coverages); bootstrap replicas (2 or more besides replica 0) give it",
        replicas.begin()->first);
  return out;
}

// One observable's results, all computed before anything is written.
struct ObservableResult {
  std::string name;
  std::vector<double> edges, prior;
  BandStats band;
  std::vector<std::vector<double>> rows;         // every replica's density
  std::vector<std::vector<double>> spread_rows;  // those the band's spread is over
  std::vector<int> spread_replicas;              // their replica numbers
  SystematicsResult sys;
  std::vector<std::pair<std::string, std::vector<double>>> sigmas;
  std::vector<double> covariance_training;  // the training noise in `covariance`; empty: none
};

// What every observable's computation shares.
struct AggregationInputs {
  const ChainGroups& chains;
  const Systematics& sys;
  BandReplicas band;
  const std::optional<TruthHistograms>& closure_truth;
  McTrainingNoise mc_training;
  ShiftNoise shift_noise;
};

ObservableResult computeObservable(size_t o, const AggregationInputs& in) {
  const ChainGroup& nominal = in.chains.groups.at("");
  ObservableResult res;
  res.name = nominal.prior[o].name;
  res.edges = nominal.prior[o].edges;
  res.prior = density(nominal.prior[o].sumw, res.edges);
  const std::map<int, std::vector<double>> nominal_rows =
      replicaDensities(nominal.replicas, o, res.edges);
  // The spread is that of the bootstrap replicas: replica 0 is the fit to the data as
  // measured (weights 1), not a draw, and would narrow the band by (R-1)/R in variance.
  // The central value is the mean over every replica.
  BandAccumulator spread(nominal.prior[o].bins());
  for (const auto& [r, row] : nominal_rows) {
    res.rows.push_back(row);
    if (!in.band.counted(r)) continue;
    spread.add(row);
    res.spread_replicas.push_back(r);
  }
  res.band = spread.compute();
  res.band.mean = meanOverReplicas(nominal_rows);
  res.spread_rows = spread.rows();
  const std::optional<std::vector<double>> per_member =
      memberCovariance(nominal.replicas, o, res.band.bins);
  if (per_member)
    res.covariance_training = trainingNoiseOfReplicas(*per_member, nominal.replicas,
                                                      [&](int r) { return in.band.counted(r); });
  res.sys = computeSystematics(o, res.edges, nominal_rows, res.band, in.chains.groups, in.sys,
                               in.closure_truth ? &in.closure_truth->density[o] : nullptr,
                               in.closure_truth ? &in.closure_truth->covariance[o] : nullptr,
                               in.mc_training, per_member, in.shift_noise);
  res.sigmas = uncertaintySigmas(res.band, res.sys);
  return res;
}

// Δ against the truth of the nominal (the mean over every replica, as delta_unfolded) after
// each iteration, the last delta_unfolded itself: whether more iterations would still move
// the result. Null where a replica's chains did not all keep their iterations (chains written
// before histograms.h5 held them) or kept other counts.
nlohmann::json deltaByIteration(const ChainGroup& nominal, size_t o,
                                const std::vector<double>& edges,
                                const std::vector<double>& truth_density) {
  if (nominal.iterations_unknown.count(o)) return nullptr;
  size_t k = 0;
  for (const auto& [r, rep] : nominal.replicas) {
    if (rep.iteration_sumw.empty() || rep.iteration_members != rep.members) return nullptr;
    if (k != 0 && k != rep.iteration_sumw.size()) return nullptr;
    k = rep.iteration_sumw.size();
  }
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < k; ++i) {
    std::map<int, std::vector<double>> rows;
    for (const auto& [r, rep] : nominal.replicas)
      rows[r] = density(rep.iteration_sumw[i][o], edges);
    out.push_back(
        data::triangularDiscriminator(meanOverReplicas(rows), truth_density, data::Binning{edges}));
  }
  return out;
}

// A share outside an observable's binning from which the aggregation says so.
constexpr double kOutsideBinningWarn = 0.05;

// {"below": f, "above": f}: the shares of a distribution's Σw outside the binning (what its
// unit-area density leaves out); null where the total is not positive.
nlohmann::json outsideShares(double below, double above, double inside) {
  const double total = below + above + inside;
  if (!(total > 0)) return nullptr;
  return {{"below", below / total}, {"above", above / total}};
}

// summary.json's entry of one observable.
nlohmann::json observableSummary(const ObservableResult& res, size_t o, const ChainGroup& nominal,
                                 const std::optional<TruthHistograms>& truth) {
  nlohmann::json js = truth ? truthComparison(*truth, o,
                                              {nominal.prior[o], res.prior, res.band,
                                               res.spread_rows, res.spread_replicas,
                                               nominal.replicas.begin()->second, res.sys.std_total})
                            : noTruthComparison();
  js["delta_by_iteration"] =
      truth ? deltaByIteration(nominal, o, res.edges, truth->density[o]) : nlohmann::json();
  js["bins"] = nominal.prior[o].bins();
  js["edges"] = res.edges;  // Δ of two binnings are not comparable: readers check these
  // How much of each distribution the binning leaves out (null: chains written before their
  // histograms kept it, the observable not rebinned; no truth).
  nlohmann::json& outside = js["outside_binning"];
  const std::optional<std::array<double, 3>>& unfolded_outside = nominal.unfolded_outside[o];
  outside["unfolded"] =
      unfolded_outside
          ? outsideShares((*unfolded_outside)[0], (*unfolded_outside)[1], (*unfolded_outside)[2])
          : nlohmann::json();
  const ObservableHistogram& prior = nominal.prior[o];
  double prior_inside = 0, unfolded_inside = 0;
  for (double x : prior.sumw) prior_inside += x;
  for (const auto& [r, rep] : nominal.replicas)
    for (double x : rep.sumw[o]) unfolded_inside += x;
  outside["prior"] = prior.outside
                         ? outsideShares((*prior.outside)[0], (*prior.outside)[1], prior_inside)
                         : nlohmann::json();
  outside["truth"] =
      truth ? outsideShares(truth->outside[o][0], truth->outside[o][1], truth->outside[o][2])
            : nlohmann::json();
  // Said where a distribution lies largely outside: its density, and Δ, are of the rest.
  const auto range = fmt::format("[{:g}, {:g}]", res.edges.front(), res.edges.back());
  for (const char* what : {"unfolded", "prior", "truth"}) {
    const nlohmann::json& share = outside[what];
    if (!share.is_object()) continue;
    for (const char* side : {"below", "above"})
      if (const double f = share[side].get<double>(); f >= kOutsideBinningWarn)
        logWarn(
            "aggregate: {}: {:.1f}% of the {} lies {} its binning {}, which the densities and Δ "
            "leave out (for wider edges, `aggregate --binning` rebins the chains from their "
            "weights without training again)",
            res.name, 100 * f, what, side, range);
  }
  // Nothing inside the binning: a density of zeros, whose Δ against another of zeros read 0
  // (a perfect unfolding); nothing is compared.
  if (truth && (!(prior_inside > 0) || !(unfolded_inside > 0) || !(truth->outside[o][2] > 0))) {
    const char* empty = !(truth->outside[o][2] > 0) ? "truth"
                        : !(prior_inside > 0)       ? "prior"
                                                    : "unfolded result";
    logWarn(
        "aggregate: {}: no event of the {} falls inside the binning {}: its Δ, means, shift and "
        "coverage are left null",
        res.name, empty, range);
    nlohmann::json none = noTruthComparison();
    for (auto& [k, v] : none.items()) js[k] = v;
    js["delta_by_iteration"] = nullptr;
  }
  js["uncertainty"] = nlohmann::json::object();
  for (const auto& [source, sigma] : res.sigmas) {
    const double rel = relativeRms(sigma, res.band.mean);
    js["uncertainty"][source] = std::isnan(rel) ? nlohmann::json() : nlohmann::json(rel);
  }
  // The part of "stat" that is the chains' training noise (same measure); null without
  // members to estimate it from.
  const double training =
      res.covariance_training.empty()
          ? std::nan("")
          : relativeRms(sqrtDiagonal(res.covariance_training, res.band.bins), res.band.mean);
  js["training_noise"] = std::isnan(training) ? nlohmann::json() : nlohmann::json(training);
  // Each source's shift_error in the measure of "uncertainty": a source whose shift is not
  // well above its noise is mostly noise (null: fewer than two paired chains).
  // Its two parts apart (shift_error_parts): the chains' training noise, and the statistics of
  // the independent samples a modelling or non-closure shift compares (null: none, or unknown).
  js["shift_error"] = nlohmann::json::object();
  js["shift_error_parts"] = nlohmann::json::object();
  const auto relOf = [&](const std::vector<double>& cov) {
    const double rel =
        cov.empty() ? std::nan("") : relativeRms(sqrtDiagonal(cov, res.band.bins), res.band.mean);
    return std::isnan(rel) ? nlohmann::json() : nlohmann::json(rel);
  };
  for (const auto& src : res.sys.sources) {
    js["shift_error"][src.name] = relOf(src.noise);
    js["shift_error_parts"][src.name] = {{"training", relOf(src.training_noise)},
                                         {"samples", relOf(src.sample_noise)}};
  }
  // How far the warm start alone moves the result (the reference against the nominal), in the
  // same measure: not an uncertainty (no shift is measured across it), a diagnostic.
  if (!res.sys.warm_start_effect.empty()) {
    std::vector<double> size(res.sys.warm_start_effect.size());
    for (size_t b = 0; b < size.size(); ++b) size[b] = std::abs(res.sys.warm_start_effect[b]);
    const double rel = relativeRms(size, res.band.mean);
    const double err =
        res.sys.warm_start_effect_noise.empty()
            ? std::nan("")
            : relativeRms(sqrtDiagonal(res.sys.warm_start_effect_noise, res.band.bins),
                          res.band.mean);
    js["warm_start_effect"] = {
        {"shift", std::isnan(rel) ? nlohmann::json() : nlohmann::json(rel)},
        {"shift_error", std::isnan(err) ? nlohmann::json() : nlohmann::json(err)}};
  }
  return js;
}

// Whether a source has chains to estimate its noise from is the same for every observable:
// said once, when the noise is to be taken off.
void logShiftNoise(const std::vector<ObservableResult>& results, ShiftNoise shift_noise) {
  if (shift_noise != ShiftNoise::kSubtract || results.empty()) return;
  std::string without, sample_only;
  for (const auto& src : results.front().sys.sources)
    if (src.noise.empty())
      without += (without.empty() ? "" : ", ") + src.name;
    else if (src.training_noise.empty())
      sample_only += (sample_only.empty() ? "" : ", ") + src.name;
  if (!without.empty())
    logWarn(
        "aggregate: --shift-noise subtract: no noise estimate for {} (fewer than two chains "
        "that differ from the nominal's, or from the other side's, in training only): their "
        "s s^T is kept; run such variations with members >= 2 or more replicas",
        without);
  bool sample_noise = false;
  for (const auto& src : results.front().sys.sources) sample_noise |= !src.sample_noise.empty();
  if (sample_noise && results.front().sys.covariance_mc_stat.empty())
    logWarn(
        "aggregate: --shift-noise subtract takes the simulated samples' statistics off the "
        "modelling and non-closure shifts, and no mc_bootstrap variation puts them in the total: "
        "the total then leaves the simulation's statistics out; add an mc_bootstrap variation, or "
        "keep the shifts' noise (--shift-noise keep)");
  if (!sample_only.empty())
    logWarn(
        "aggregate: --shift-noise subtract: for {} only the samples' statistics are taken off "
        "(fewer than two chains to estimate the training noise from)",
        sample_only);
  if (without.empty() && sample_only.empty() && !results.front().sys.sources.empty())
    logInfo("aggregate: each source's shift noise is taken off in quadrature per bin");
}

// The standard deviation of each bin of observable o's truth density (0 where its variance
// is not positive).
std::vector<double> truthStd(const TruthHistograms& truth, size_t o) {
  std::vector<double> sd(truth.variance[o].size());
  for (size_t b = 0; b < sd.size(); ++b)
    sd[b] = truth.variance[o][b] > 0 ? std::sqrt(truth.variance[o][b]) : 0.0;
  return sd;
}

// bands.h5, staged (committed with the other outputs).
AtomicFile writeBands(const std::string& out_dir, const std::vector<ObservableResult>& results,
                      const std::optional<TruthHistograms>& truth, size_t replicas,
                      const BandReplicas& band, size_t chains, uint64_t campaign_seed) {
  const size_t band_replicas = band.count;
  AtomicFile out(out_dir + "/bands.h5");
  const std::string path = out.tempPath();
  data::H5Handle f;
  try {
    f = data::h5Create(path);
  } catch (const Error&) {
    throw Error(h5CreateFailure(path));
  }
  auto put = [&](const std::string& name, const std::vector<double>& v,
                 std::vector<uint64_t> dims = {}) {
    if (dims.empty()) dims = {v.size()};
    writeFloat64Dataset(f.get(), path, name, v, dims);
  };
  for (size_t o = 0; o < results.size(); ++o) {
    const auto& r = results[o];
    const uint64_t nb = r.band.bins, nr = r.rows.size();
    put(r.name + "/edges", r.edges);
    put(r.name + "/nominal", r.band.mean);
    put(r.name + "/std", r.band.std);
    put(r.name + "/p16", r.band.p16);
    put(r.name + "/p84", r.band.p84);
    put(r.name + "/p2_5", r.band.p2_5);
    put(r.name + "/p97_5", r.band.p97_5);
    put(r.name + "/covariance", r.band.covariance, {nb, nb});
    put(r.name + "/correlation", r.band.correlation, {nb, nb});
    std::vector<double> flat;
    for (const auto& row : r.rows) flat.insert(flat.end(), row.begin(), row.end());
    put(r.name + "/replicas", flat, {nr, nb});
    put(r.name + "/prior", r.prior);
    if (truth) {
      put(r.name + "/truth", truth->density[o]);
      // The truth's own statistical error per bin, which the figures draw.
      put(r.name + "/truth_std", truthStd(*truth, o));
    }
    const SystematicsResult& sr = r.sys;
    put(r.name + "/covariance_total", sr.covariance_total, {nb, nb});
    put(r.name + "/std_total", sr.std_total);
    if (!sr.covariance_mc_stat.empty())
      put(r.name + "/covariance_mc_stat", sr.covariance_mc_stat, {nb, nb});
    if (!sr.covariance_mc_stat_raw.empty())
      put(r.name + "/covariance_mc_stat_raw", sr.covariance_mc_stat_raw, {nb, nb});
    if (!r.covariance_training.empty())
      put(r.name + "/covariance_training", r.covariance_training, {nb, nb});
    for (const auto& src : sr.sources) {
      const std::string g = r.name + "/sources/" + src.name;
      put(g + "/shift", src.shift);
      put(g + "/covariance", src.covariance, {nb, nb});
      if (!src.up.empty()) put(g + "/up", src.up);
      if (!src.down.empty()) put(g + "/down", src.down);
      if (!src.noise.empty()) {
        put(g + "/shift_error", sqrtDiagonal(src.noise, nb));
        put(g + "/noise_covariance", src.noise, {nb, nb});
      }
      if (!src.training_noise.empty())
        put(g + "/training_noise_covariance", src.training_noise, {nb, nb});
      if (!src.sample_noise.empty())
        put(g + "/sample_noise_covariance", src.sample_noise, {nb, nb});
      if (!src.covariance_raw.empty()) put(g + "/covariance_raw", src.covariance_raw, {nb, nb});
    }
    for (const auto& [name, mean] : sr.variation_mean)
      put(r.name + "/variations/" + name + "/nominal", mean);
    if (!sr.warm_start_effect.empty()) {
      put(r.name + "/warm_start_effect/shift", sr.warm_start_effect);
      if (!sr.warm_start_effect_noise.empty())
        put(r.name + "/warm_start_effect/shift_error",
            sqrtDiagonal(sr.warm_start_effect_noise, nb));
    }
    if (!sr.closure_shift.empty()) {
      put(r.name + "/non_closure/shift", sr.closure_shift);
      put(r.name + "/non_closure/truth", sr.closure_truth);
      put(r.name + "/non_closure/unfolded", sr.closure_unfolded);
    }
  }
  data::h5WriteInt64Attr(f.get(), "replicas", static_cast<int64_t>(replicas));
  data::h5WriteInt64Attr(f.get(), "band_replicas", static_cast<int64_t>(band_replicas));
  // Whether the band is over the bootstrap replicas alone (1) or every replica, replica 0 among
  // them (0): the counts do not tell where replica 0 was not aggregated.
  data::h5WriteInt64Attr(f.get(), "band_from_bootstrap", band.from_bootstrap ? 1 : 0);
  data::h5WriteInt64Attr(f.get(), "chains", static_cast<int64_t>(chains));
  data::h5WriteStringAttr(f.get(), "campaign_seed", std::to_string(campaign_seed));
  data::h5WriteStringAttr(f.get(), "build", buildInfoJson().dump());
  data::h5WriteStringAttr(
      f.get(), "content",
      std::string("unit-area densities per bin; replicas = mean over members of each replica (0: "
                  "the data as measured, >= 1: bootstrap); nominal = mean over the replicas; "
                  "std, percentiles, covariance, correlation over the band_replicas ") +
          (band.from_bootstrap ? "bootstrap replicas (r >= 1)"
                               : "replicas, replica 0 included (fewer than two bootstrap "
                                 "replicas ran: too narrow a band)"));
  f.close(path + ": closing");
  return out;
}

// Each observable's band figure and breakdown, staged; the total band with variations only.
}  // namespace

size_t bandsMatrices(bool members, bool mc_bootstrap, const std::vector<SourceShape>& sources,
                     ShiftNoise shift_noise) {
  size_t n = 3 + (members ? 1 : 0) + (mc_bootstrap ? 2 : 0);
  for (const SourceShape& src : sources) {
    const bool training = src.runs >= 2;
    const bool noise = src.samples || training;
    n += 1 + (noise ? 1 : 0) + (src.samples ? 1 : 0) + (training ? 1 : 0) +
         (noise && shift_noise == ShiftNoise::kSubtract ? 1 : 0);
  }
  return n;
}

BandsSize bandsSize(const std::vector<std::pair<std::string, size_t>>& bins, size_t replicas,
                    size_t matrices, const std::string& rebin_hint) {
  BandsSize out;
  size_t widest = 0;
  for (const auto& [name, b] : bins) {
    const double n = static_cast<double>(b);
    out.bytes +=
        8.0 * (static_cast<double>(matrices) * n * n + static_cast<double>(replicas + 12) * n) +
        20e3;
    widest = std::max(widest, b);
  }
  if (out.bytes <= kLargeBands) return out;
  // The observables that make it large: those of at least a tenth of the widest's bins.
  std::vector<std::string> names;
  for (const auto& [name, b] : bins)
    if (10 * b >= widest)
      names.push_back(name + " (" + jobs::formatCount(static_cast<double>(b)) + " bins)");
  std::string list;
  for (size_t i = 0; i < names.size(); ++i)
    list += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  const double w = static_cast<double>(widest);
  out.warning = fmt::format(
      "bands.h5 will take about {}, and the aggregation one to two times as much memory: {} {} "
      "matrices "
      "of bins x bins ({} x {}: {} each); fewer bins make them smaller (the weights do not "
      "depend on the binning: {} rebins finished chains without training again)",
      jobs::formatBytes(out.bytes),
      names.size() == 1 ? "the binning of " + list + " gives"
                        : "the binnings of " + list + " give each",
      matrices, jobs::formatCount(w), jobs::formatCount(w), jobs::formatBytes(8.0 * w * w),
      rebin_hint);
  return out;
}

std::string distributionTitle(const std::string& name, const std::string& classifier,
                              const std::vector<double>& edges, const std::vector<double>& nominal,
                              const std::vector<double>& prior, const std::vector<double>* truth) {
  // The classifier beside the observable: a campaign's figure and its baseline's (or two
  // campaigns' copied side by side) were told apart by their directory alone.
  std::string title = name + ", " + classifier;
  const auto empty = [](const std::vector<double>& d) {
    return std::all_of(d.begin(), d.end(), [](double x) { return x == 0; });
  };
  std::string none;
  for (const auto& [what, d] :
       {std::pair<const char*, const std::vector<double>*>{"unfolded", &nominal},
        {"prior", &prior},
        {"truth", truth}})
    if (d != nullptr && empty(*d)) none += (none.empty() ? "" : ", ") + std::string(what);
  if (!none.empty())
    title += fmt::format(" (no {} inside [{:g}, {:g}]: see summary.json outside_binning)", none,
                         edges.front(), edges.back());
  return title;
}

namespace {

void stageFigures(std::vector<AtomicFile>& staged, const std::string& out_dir,
                  const std::vector<ObservableResult>& results,
                  const std::optional<TruthHistograms>& truth, bool with_total,
                  bool replica_0_in_band, const std::string& classifier) {
  // One gnuplot process for every observable's figure.
  plot::GnuplotBatch batch;
  for (size_t o = 0; o < results.size(); ++o) {
    const auto& r = results[o];
    plot::BandPlot fig;
    fig.title = distributionTitle(r.name, classifier, r.edges, r.band.mean, r.prior,
                                  truth ? &truth->density[o] : nullptr);
    fig.xlabel = data::observableLabel(r.name);
    fig.edges = r.edges;
    fig.nominal = r.band.mean;
    fig.p16 = r.band.p16;
    fig.p84 = r.band.p84;
    fig.p2_5 = r.band.p2_5;
    fig.p97_5 = r.band.p97_5;
    if (truth) {
      fig.truth = truth->density[o];
      fig.truth_sigma = truthStd(*truth, o);
    }
    fig.prior = r.prior;
    fig.replicas = r.band.replicas;
    fig.replica_0_in_band = replica_0_in_band;
    if (with_total) fig.total_sigma = r.sys.std_total;
    batch.add(r.name, fig);
    // The training noise, a part of stat, beside it when it could be estimated.
    std::vector<std::pair<std::string, std::vector<double>>> drawn = r.sigmas;
    if (!r.covariance_training.empty())
      drawn.insert(drawn.begin() + 1,
                   {"stat: training noise", sqrtDiagonal(r.covariance_training, r.band.bins)});
    batch.add(r.name + "_breakdown", breakdownFigure(r.name, r.edges, r.band.mean, drawn));
    if (!r.sys.sources.empty())
      batch.add(r.name + "_shifts",
                shiftsFigure(r.name, r.edges, r.band.mean, r.band.std, r.sys.sources));
  }
  for (const auto& [name, png] : batch.render()) {
    staged.emplace_back(out_dir + "/" + name + ".png");
    staged.back().write(png);
  }
}

// The files an earlier aggregation wrote into out_dir, by name: its summary.json's "outputs".
// Empty when out_dir holds no summary.json, or one that is not an aggregation's (no "outputs").
std::set<std::string> earlierOutputs(const std::string& out_dir) {
  std::set<std::string> names;
  const std::string path = out_dir + "/summary.json";
  if (std::error_code ec; !fs::is_regular_file(path, ec)) return names;
  const nlohmann::json j = nlohmann::json::parse(readFile(path), nullptr, false);
  // An aggregation's summary (not another tool's that has an "outputs" list), and of what it
  // lists only names an aggregation writes: never, say, a paper.tex.
  if (!j.is_object() || !j.contains("outputs") || !j["outputs"].is_array() ||
      !j.contains("observables") || !j.contains("chains"))
    return names;
  const auto ours = [](const std::string& name) {
    return name == "bands.h5" || name == "event_weights.h5" || name == "summary.json" ||
           (name.size() > 4 && name.compare(name.size() - 4, 4, ".png") == 0 &&
            name.find('/') == std::string::npos);
  };
  for (const nlohmann::json& name : j["outputs"])
    if (name.is_string() && ours(name.get<std::string>())) names.insert(name.get<std::string>());
  return names;
}

// The files of `names` that out_dir already holds and no earlier aggregation wrote (a user's
// figure, another campaign's event_weights.h5): refused before anything is renamed (before:
// overwritten, and those of names this run did not write removed). Checked for the names known
// before the chains are read, again once the observables are known, and for what was staged.
void refuseForeignFiles(const std::vector<std::string>& names, const std::string& out_dir,
                        const std::set<std::string>& earlier) {
  std::vector<std::string> foreign;
  for (const std::string& name : names) {
    if (std::error_code ec;
        fs::exists(fs::symlink_status(out_dir + "/" + name, ec)) && !earlier.count(name))
      foreign.push_back(name);
  }
  if (foreign.empty()) return;
  std::string list;
  for (const std::string& name : foreign) list += (list.empty() ? "" : ", ") + name;
  throw InputError(out_dir + ": holds " + list +
                   ", which no earlier aggregation into it wrote (its summary.json does not list "
                   "them); nothing was written: move them away (`foldfarm aggregate`: or choose "
                   "another --out)");
}

// The commit record. The outputs are renamed into place one by one: a SIGKILL (the OOM
// killer, a lost node) between the first rename and the last would leave two aggregations
// mixed (bands.h5 of one beside summary.json of another), and every later aggregation
// refused, the new names not being in the old summary.json. The record, made durable after
// every staged file and before the first rename, lists the renames and the earlier outputs
// to remove; the next aggregation into the directory finishes them (all were staged whole),
// and `report` refuses the directory while it is there.
constexpr const char* kCommitRecord = jobs::kAggregateCommitRecord;

void writeCommitRecord(const std::string& out_dir, const std::vector<AtomicFile>& staged,
                       const std::vector<std::string>& remove) {
  nlohmann::json j = {{"renames", nlohmann::json::array()}, {"remove", remove}};
  for (const AtomicFile& f : staged) {
    fsyncPath(f.tempPath());
    j["renames"].push_back({{"from", fs::path(f.tempPath()).filename().string()},
                            {"to", fs::path(f.path()).filename().string()}});
  }
  writeFileAtomic(out_dir + "/" + kCommitRecord, j.dump() + "\n");
}

// A plain file name (no directory part): what a record may name.
bool plainName(const nlohmann::json& name) {
  if (!name.is_string()) return false;
  const std::string n = name.get<std::string>();
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos;
}

// Finishes the commit of an aggregation that was killed while it renamed its outputs (its
// record in out_dir): the staged files still there are renamed into place, the earlier
// outputs it did not write are removed, the record goes. Idempotent: a kill during this is
// finished by the next run. Under the directory's lock.
void finishInterruptedCommit(const std::string& out_dir) {
  const std::string record = out_dir + "/" + kCommitRecord;
  std::error_code ec;
  if (!fs::is_regular_file(record, ec)) return;
  const nlohmann::json j = nlohmann::json::parse(readFile(record), nullptr, false);
  if (!j.is_object() || !j.contains("renames") || !j["renames"].is_array() ||
      !j.contains("remove") || !j["remove"].is_array())
    throw Error(record +
                ": unreadable commit record of an interrupted aggregation; remove it and "
                "aggregate again");
  int renamed = 0;
  for (const nlohmann::json& r : j["renames"]) {
    if (!r.is_object() || !plainName(r.value("from", nlohmann::json())) ||
        !plainName(r.value("to", nlohmann::json())))
      throw Error(record +
                  ": unreadable commit record of an interrupted aggregation; remove it "
                  "and aggregate again");
    const std::string from = out_dir + "/" + r["from"].get<std::string>();
    if (!fs::exists(fs::symlink_status(from, ec))) continue;  // renamed before the kill
    renameDurable(from, out_dir + "/" + r["to"].get<std::string>());
    ++renamed;
  }
  for (const nlohmann::json& name : j["remove"])
    if (plainName(name)) fs::remove(out_dir + "/" + name.get<std::string>(), ec);
  if (!fs::remove(record, ec) && ec) throw Error(record + ": cannot remove (" + ec.message() + ")");
  logWarn(
      "{}: an aggregation killed while it renamed its outputs into place had left them mixed; "
      "its renames are finished ({} file(s)) before this one starts",
      out_dir, renamed);
}

std::vector<std::string> stagedNames(const std::vector<AtomicFile>& staged) {
  std::vector<std::string> names;
  for (const AtomicFile& f : staged) names.push_back(fs::path(f.path()).filename().string());
  return names;
}
}  // namespace

std::vector<std::string> findChainDirs(const std::string& root,
                                       std::vector<std::string>* unfinished) {
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    throw InputError(root + ": not a directory (pass chain output directories or their parents)");
  std::vector<std::string> out;
  const auto look = [&](const fs::path& p) {
    const ChainDirState st = chainDirState(p);
    if (st.complete)
      out.push_back(p.lexically_normal().string());
    else if (unfinished && !st.lacks.empty())
      unfinished->push_back(p.lexically_normal().string());
  };
  look(root);
  for (auto it = fs::recursive_directory_iterator(
           root, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) look(it->path());
  }
  if (ec) throw InputError(root + ": cannot list: " + ec.message());
  std::sort(out.begin(), out.end());
  if (unfinished) std::sort(unfinished->begin(), unfinished->end());
  return out;
}

EventWeightsChoice parseEventWeightsChoice(const std::string& word) {
  if (word == "all") return EventWeightsChoice::kAll;
  if (word == "central") return EventWeightsChoice::kCentral;
  if (word == "none") return EventWeightsChoice::kNone;
  throw InputError("event weights: expected all, central or none, not '" + word + "'");
}

ShiftNoise parseShiftNoise(const std::string& word) {
  if (word == "keep") return ShiftNoise::kKeep;
  if (word == "subtract") return ShiftNoise::kSubtract;
  throw InputError("shift noise: expected keep or subtract, not '" + word + "'");
}

namespace {

// The colour of each source's line, by its name, not its position: a source is drawn alike in
// every campaign's figures and in both of an observable's (a colour of its own while the palette
// lasts, then a colour again, dashed). The statistical lines in blue, mc_stat in cyan, the total
// in black. Names are to be asked in one order (the sources' own) for the same colours.
class SourcePalette {
 public:
  struct Style {
    std::string color;
    bool dashed = false;
  };
  Style of(const std::string& label) {
    if (label == "total") return {"#000000", false};
    if (label == "stat" || label == "stat: training noise") return {"#1f77b4", label != "stat"};
    if (label == "mc_stat") return {"#17becf", false};
    if (const auto it = given_.find(label); it != given_.end()) return it->second;
    uint64_t h = 1469598103934665603ull;  // FNV-1a of the name
    for (unsigned char c : label) h = (h ^ c) * 1099511628211ull;
    size_t k = h % kColors.size();
    Style st;
    if (free_ > 0) {
      while (taken_[k]) k = (k + 1) % kColors.size();
      taken_[k] = true;
      --free_;
    } else {
      st.dashed = true;  // past the palette: a colour again, dashed
    }
    st.color = kColors[k];
    return given_[label] = st;
  }

 private:
  static constexpr std::array<const char*, 8> kColors = {
      "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};
  std::array<bool, 8> taken_{};
  size_t free_ = kColors.size();
  std::map<std::string, Style> given_;
};

// `values` over `nominal`, bin by bin, as steps on `edges` into `s`: the bins holding less than
// 0.1% of the unit-area `nominal` are a gap (an undefined point breaks the line), not a line
// drawn across them.
void relativeSteps(const std::vector<double>& edges, const std::vector<double>& nominal,
                   const std::vector<double>& values, plot::Series& s) {
  for (size_t b = 0; b < nominal.size(); ++b) {
    if (!(nominal[b] * (edges[b + 1] - edges[b]) >= 1e-3)) {
      if (!s.x.empty() && !std::isnan(s.y.back())) {
        s.x.push_back(edges[b]);
        s.y.push_back(std::nan(""));
      }
      continue;
    }
    for (double x : {edges[b], edges[b + 1]}) {
      s.x.push_back(x);
      s.y.push_back(values[b] / nominal[b]);
    }
  }
  if (!s.y.empty() && std::isnan(s.y.back())) {  // a gap at the end is none
    s.x.pop_back();
    s.y.pop_back();
  }
}

}  // namespace

// Over the bins that hold at least 0.1% of the unfolded distribution: the far tails' ratios
// would set the scale.
plot::LineFigure breakdownFigure(
    const std::string& name, const std::vector<double>& edges, const std::vector<double>& nominal,
    const std::vector<std::pair<std::string, std::vector<double>>>& sigmas) {
  plot::LineFigure fig;
  fig.title = name + ": relative uncertainty per bin";
  fig.xlabel = data::observableLabel(name);
  fig.ylabel = "uncertainty / unfolded";
  fig.xmin = edges.front();  // the distribution figure's range
  fig.xmax = edges.back();
  fig.key_below = true;  // a legend beside it took a third of the width
  fig.height = 520;
  SourcePalette palette;
  // Without a source beside the statistical one the total is that line, and drawn over it in
  // black it hid it (the legend named a "stat" line that was nowhere): one line, named as both.
  const auto named = [&](const std::string& label) {
    return std::find_if(sigmas.begin(), sigmas.end(),
                        [&](const auto& l) { return l.first == label; });
  };
  const auto stat = named("stat"), total = named("total");
  const bool total_is_stat =
      stat != sigmas.end() && total != sigmas.end() && stat->second == total->second &&
      std::all_of(sigmas.begin(), sigmas.end(), [](const auto& l) {
        return l.first == "stat" || l.first == "total" || l.first == "stat: training noise";
      });
  for (const auto& [label, sigma] : sigmas) {
    if (total_is_stat && label == "stat") continue;
    plot::Series s;
    s.label = total_is_stat && label == "total" ? "total = stat (no systematic variations)" : label;
    s.style = "lines";
    const SourcePalette::Style st = palette.of(label);
    s.color = st.color;
    s.dashed = st.dashed;
    if (label == "total") s.line_width = 3;
    relativeSteps(edges, nominal, sigma, s);
    fig.series.push_back(std::move(s));
  }
  return fig;
}

plot::LineFigure shiftsFigure(const std::string& name, const std::vector<double>& edges,
                              const std::vector<double>& nominal,
                              const std::vector<double>& stat_sigma,
                              const std::vector<SourceResult>& sources) {
  plot::LineFigure fig;
  fig.title = name + ": each variation's shift of the unfolded result";
  fig.xlabel = data::observableLabel(name);
  fig.ylabel = "shift / unfolded";
  fig.xmin = edges.front();
  fig.xmax = edges.back();
  fig.key_below = true;
  fig.height = 520;
  SourcePalette palette;  // the sources' colours of the breakdown figure
  // The statistical band's edges, for scale: a shift inside them is within the data's noise.
  for (const double sign : {1.0, -1.0}) {
    plot::Series s(sign > 0 ? "stat ±1σ" : "", {}, {}, "lines");
    s.color = "#1f77b4";
    s.dashed = true;
    s.line_width = 1.5;
    std::vector<double> v(stat_sigma.size());
    for (size_t b = 0; b < v.size(); ++b) v[b] = sign * stat_sigma[b];
    relativeSteps(edges, nominal, v, s);
    fig.series.push_back(std::move(s));
  }
  for (const SourceResult& src : sources) {
    const SourcePalette::Style st = palette.of(src.name);
    // A pair's two sides, raw (up solid, down dashed), else the one-sided shift.
    std::vector<std::pair<std::string, const std::vector<double>*>> sides;
    if (!src.up.empty() && !src.down.empty())
      sides = {{src.name + " up", &src.up}, {src.name + " down", &src.down}};
    else
      sides = {{src.name, &src.shift}};
    for (size_t k = 0; k < sides.size(); ++k) {
      plot::Series s(sides[k].first, {}, {}, "lines");
      s.color = st.color;
      s.dashed = k == 1 || (sides.size() == 1 && st.dashed);
      relativeSteps(edges, nominal, *sides[k].second, s);
      fig.series.push_back(std::move(s));
    }
  }
  return fig;
}

nlohmann::json aggregateRunsWithOptions(const std::vector<std::string>& run_dirs,
                                        const std::string& out_dir,
                                        const std::optional<std::string>& truth_path,
                                        const AggregateOptions& options) {
  // A chain's own directory is no place for the bands (its files beside them, and an
  // aggregation of its parent would take the directory for a chain with extra files).
  if (std::error_code ec; fs::is_directory(out_dir, ec)) {
    if (const ChainDirState st = chainDirState(out_dir); st.complete || !st.lacks.empty())
      throw InputError(out_dir + ": holds a chain (result.json, histograms.h5 or state/); " +
                       "aggregate into another directory");
  }
  // One aggregation at a time writes out_dir (held from the start: a second one is refused
  // before it reads the chains, not after).
  OutputDirectoryLock lock(out_dir, "");  // `aggregate --out`, or a campaign's aggregate/
  finishInterruptedCommit(out_dir);       // before its staged files count as left over
  lock.removeLeftTemporaries({});
  // A file of the user's under an output's name is refused now, not after every chain was read.
  const std::set<std::string> earlier = earlierOutputs(out_dir);
  refuseForeignFiles({"bands.h5", "summary.json"}, out_dir, earlier);
  // So is a --truth that is not there (before: after every chain was read).
  if (std::error_code ec; truth_path && !fs::exists(*truth_path, ec))
    throw InputError("--truth " + *truth_path + ": no such file; check the path");

  // 1. Read the chains, one at a time: only per-replica sums and each chain's densities are
  //    kept, per group (the nominal, named "", and each variation). Everything that can be
  //    refused is refused before anything is written.
  std::optional<ChainRebinner> rebinner;
  if (!options.rebin.empty()) rebinner.emplace(options.rebin);
  const ChainGroups chains =
      readChainGroups(chainDirsUnder(run_dirs), rebinner ? &*rebinner : nullptr);
  if (rebinner && rebinner->withoutIterations() > 0)
    logWarn(
        "aggregate: {} chain(s) kept no per-iteration weights (iteration_weights false): the "
        "observables rebinned have no Δ per iteration (delta_by_iteration null), the others "
        "keep theirs",
        rebinner->withoutIterations());
  const ChainGroup& nominal = chains.groups.at("");
  Systematics sys = checkVariations(chains.groups);
  findSameSimulation(sys, chains.groups, options.inputs);
  {
    // Said before the matrices are made: at 10,000 bins each is 800 MB.
    std::vector<std::pair<std::string, size_t>> bins;
    for (const ObservableHistogram& h : nominal.prior) bins.emplace_back(h.name, h.sumw.size());
    size_t replicas = 0;
    bool members = false;  // a replica of two members or more: the training noise's matrix
    for (const auto& [name, g] : chains.groups) replicas += g.replicas.size();
    for (const auto& [r, sum] : nominal.replicas) members = members || sum.members > 1;
    // A source's runs: the fewest replicas that a side of it shares with the nominal.
    std::vector<SourceShape> sources;
    for (const SourcePlan& sp : sys.plan.sources) {
      SourceShape shape{false, std::numeric_limits<size_t>::max()};
      for (const std::string& side : {sp.one_sided, sp.up, sp.down}) {
        if (side.empty()) continue;
        const ChainGroup& g = chains.groups.at(side);
        shape.samples =
            shape.samples || (g.variation && g.variation->type == VariationType::kModelling &&
                              !sys.same_simulation.count(side));
        size_t shared = 0;
        for (const auto& [r, sum] : g.replicas) shared += nominal.replicas.count(r);
        shape.runs = std::min(shape.runs, shared);
      }
      sources.push_back(shape);
    }
    if (!sys.plan.non_closure.empty())
      sources.push_back(
          {!sys.closure_on_own_simulation, chains.groups.at(sys.plan.non_closure).chains});
    const size_t matrices =
        bandsMatrices(members, !sys.plan.mc_bootstrap.empty(), sources, options.shift_noise);
    if (const BandsSize size = bandsSize(bins, replicas, matrices, options.rebin_hint);
        !size.warning.empty())
      logWarn("aggregate: {}", size.warning);
  }
  const BandReplicas band = bandReplicas(nominal.replicas);
  std::optional<TruthHistograms> truth;
  if (truth_path) truth = readTruth(*truth_path, nominal.prior);
  std::optional<TruthHistograms> closure_truth;
  if (!sys.plan.non_closure.empty()) {
    const std::string& pseudo = *chains.groups.at(sys.plan.non_closure).data.begin();
    closure_truth = readTruth(pseudo, nominal.prior);
    // The non-closure shift is the unfolded density less this truth's, over the bins: what
    // falls outside them is in neither; nothing inside makes the shift the whole density.
    for (size_t o = 0; o < closure_truth->outside.size(); ++o) {
      const auto& [below, above, inside] = closure_truth->outside[o];
      const double total = below + above + inside;
      const std::string& name = nominal.prior[o].name;
      if (!(inside > 0))
        logWarn(
            "aggregate: non-closure: no event of {}'s truth falls inside the binning of {}: its "
            "non-closure shift there is the whole unfolded density; bin {} to hold the sample "
            "(the chain config's \"binning\")",
            pseudo, name, name);
      else if (total > 0 && (below + above) / total >= kOutsideBinningWarn)
        logWarn("aggregate: non-closure: {:.1f}% of {}'s truth lies outside the binning of {}",
                100 * (below + above) / total, pseudo, name);
    }
  }
  const McTrainingChoice mc_training = mcTrainingNoise(chains.groups, sys);
  if (chains.groups.size() > 1)
    logInfo("aggregate: {} nominal chains, {} replicas; {} variation(s)", nominal.chains,
            nominal.replicas.size(), chains.groups.size() - 1);
  else
    logInfo("aggregate: {} chains, {} replicas", nominal.chains, nominal.replicas.size());
  std::optional<EventWeightsPlan> weights_plan = planWeights(chains.groups, options.event_weights);
  const bool figures = options.plots && plot::gnuplotAvailable();
  // A gnuplot on PATH that fails its check (a crash, a time-out on a loaded login node, no
  // pngcairo) is refused before anything is written (before: "not installed", exit 0, and
  // the earlier aggregation's figures removed as outputs this one did not write).
  if (options.plots && !figures && programAvailable("gnuplot"))
    throw Error(
        "aggregate: the gnuplot on PATH fails `gnuplot -e 'set terminal pngcairo'` (a "
        "crash, a time-out or no pngcairo terminal); nothing was written in " +
        out_dir + ": mend it (apt-get install gnuplot-nox), or aggregate with --no-plots");
  {
    std::vector<std::string> names;
    if (weights_plan) names.push_back("event_weights.h5");
    if (figures)
      for (const ObservableHistogram& h : nominal.prior)
        for (const char* suffix : {".png", "_breakdown.png", "_shifts.png"})
          if (std::string(suffix) != "_shifts.png" || !sys.plan.sources.empty() ||
              !sys.plan.non_closure.empty())
            names.push_back(h.name + suffix);
    refuseForeignFiles(names, out_dir, earlier);
  }
  // A variation's column minus the column of what its shift is measured from is its shift (a
  // warm-started one's from the warm reference: the raw column minus the nominal holds the
  // warm start's extra training as well).
  // Only where the two columns are of one replica and as many members: otherwise (a chain of
  // one of them failed) their difference is not the shift, and no shift_from is written.
  if (weights_plan) {
    std::map<std::string, const EventWeightColumn*> by_dataset;
    for (const EventWeightColumn& c : weights_plan->columns) by_dataset[c.dataset] = &c;
    std::string unpaired;
    for (EventWeightColumn& c : weights_plan->columns) {
      if (c.type != "detector" && c.type != "modelling") continue;
      const std::string base =
          "weights/" +
          (sys.from_reference.count(c.variation) ? sys.reference : std::string("nominal"));
      const auto it = by_dataset.find(base);
      if (it != by_dataset.end() && it->second->replica == c.replica &&
          it->second->chains.size() == c.chains.size()) {
        c.shift_from = base;
        continue;
      }
      unpaired +=
          (unpaired.empty() ? "" : ", ") + c.variation + " (replica " + std::to_string(c.replica) +
          ", " + std::to_string(c.chains.size()) + " member(s); " + base +
          (it == by_dataset.end() ? ": none"
                                  : ": replica " + std::to_string(it->second->replica) + ", " +
                                        std::to_string(it->second->chains.size()) + " member(s)") +
          ")";
    }
    if (!unpaired.empty())
      logWarn(
          "aggregate: event_weights.h5: the column of {} has no like column to take its shift "
          "from (a chain failed or did not run): no shift_from attribute; its shift is in "
          "bands.h5 (sources/), or retry the missing chains and aggregate again",
          unpaired);
  }

  // 2. Bands, systematics and the truth comparison per observable.
  nlohmann::json summary = {
      {"replicas", nominal.replicas.size()},
      {"band_replicas", band.count},
      {"chains", nominal.chains},
      {"campaign_seed", chains.campaign_seed},
      {"classifier",
       chains.classifiers.size() == 1 ? *chains.classifiers.begin() : std::string("mixed")},
      {"truth", truth_path ? nlohmann::json(*truth_path) : nlohmann::json()},
      {"observables", nlohmann::json::object()}};
  summary["variations"] = nlohmann::json::array();
  // Which build computed the bands, and which finished the chains they are of (recorded only:
  // chains of several builds are aggregated together).
  summary["build"] = buildInfoJson();
  summary["chain_builds"] = nlohmann::json::array();
  for (const auto& [build, count] : chains.builds)
    summary["chain_builds"].push_back({{"build", build}, {"chains", count}});
  if (!options.inputs.is_null()) summary["inputs"] = options.inputs;
  if (rebinner) {
    summary["rebinned"] = nlohmann::json::array();
    for (const auto& [name, edges] : options.rebin) summary["rebinned"].push_back(name);
  }
  if (!options.incomplete.is_null()) summary["incomplete"] = options.incomplete;
  if (!mc_training.summary.is_null()) {
    summary["mc_stat_training_noise"] = mc_training.summary;
  }
  if (!sys.plan.sources.empty() || !sys.plan.non_closure.empty())
    summary["shift_noise"] = options.shift_noise == ShiftNoise::kSubtract ? "subtracted" : "kept";
  for (const auto& v : sys.variations) {
    const ChainGroup& g = chains.groups.at(v.name);
    nlohmann::json entry = {{"name", v.name},     {"type", variationTypeName(v.type)},
                            {"source", v.source}, {"direction", v.direction},
                            {"chains", g.chains}, {"replicas", g.replicas.size()}};
    if (v.type == VariationType::kDetector || v.type == VariationType::kModelling) {
      entry["shift_from"] = sys.from_reference.count(v.name) ? sys.reference : "nominal";
      // Measured from the reference: over the chains with a partner there only
      // (variations/<name>/nominal is over all of them).
      const auto paired = sys.paired_chains.find(v.name);
      if (paired != sys.paired_chains.end()) entry["chains_in_shift"] = paired->second;
    }
    summary["variations"].push_back(std::move(entry));
  }
  if (!sys.reference.empty()) {
    const ChainGroup& g = chains.groups.at(sys.reference);
    summary["warm_reference"] = {
        {"name", sys.reference}, {"chains", g.chains}, {"replicas", g.replicas.size()}};
  }
  const AggregationInputs inputs{
      chains, sys, band, closure_truth, mc_training.from, options.shift_noise};
  std::vector<ObservableResult> results;
  for (size_t o = 0; o < nominal.prior.size(); ++o) {
    results.push_back(computeObservable(o, inputs));
    summary["observables"][results.back().name] =
        observableSummary(results.back(), o, nominal, truth);
  }
  logShiftNoise(results, options.shift_noise);
  if (mc_training.summary.is_object() && mc_training.summary.value("removed", false)) {
    nlohmann::json fractions = nlohmann::json::object();
    for (const ObservableResult& r : results)
      fractions[r.name] = std::isnan(r.sys.mc_stat_noise_removed_fraction)
                              ? nlohmann::json()
                              : nlohmann::json(r.sys.mc_stat_noise_removed_fraction);
    summary["mc_stat_training_noise"]["removed_fraction"] = fractions;
  }

  // 3. Write: bands.h5, event_weights.h5, figures, summary.json. Every output goes to a
  //    temporary first and all are renamed into place together at the end: a run that fails
  //    changes nothing (not bands.h5 of this run beside an earlier summary.json), and a
  //    directory it made is removed again.
  std::vector<AtomicFile> staged;
  staged.push_back(writeBands(out_dir, results, truth, nominal.replicas.size(), band,
                              nominal.chains, chains.campaign_seed));
  if (weights_plan)
    staged.push_back(writeEventWeights(*weights_plan, out_dir + "/event_weights.h5"));
  if (options.plots && !figures)
    logWarn("aggregate: gnuplot (with pngcairo) is not installed; no figures in {}", out_dir);
  else if (figures)
    stageFigures(staged, out_dir, results, truth, chains.groups.size() > 1, !band.from_bootstrap,
                 summary["classifier"].get<std::string>());
  // summary.json last: it lists what this aggregation wrote.
  summary["outputs"] = nlohmann::json::array();
  for (const AtomicFile& f : staged)
    summary["outputs"].push_back(fs::path(f.path()).filename().string());
  summary["outputs"].push_back("summary.json");
  staged.emplace_back(out_dir + "/summary.json");
  staged.back().write(jsonText(summary));
  const std::vector<std::string> names = stagedNames(staged);
  refuseForeignFiles(names, out_dir, earlier);
  // 4. What an earlier aggregation into this directory wrote and this one did not (its
  //    event_weights.h5 with other columns, figures of older bands) is removed: the directory
  //    holds one aggregation. Only what its summary.json lists: never a file of the user's.
  std::vector<std::string> written, ours, gone;
  for (const AtomicFile& f : staged) written.push_back(f.path());
  for (const std::string& name : earlier) {
    ours.push_back(out_dir + "/" + name);
    if (std::find(names.begin(), names.end(), name) == names.end()) gone.push_back(name);
  }
  writeCommitRecord(out_dir, staged, gone);
  for (AtomicFile& f : staged) {
    f.commit();
    // Tests: FOLDFARM_FAULT=aggregate.commit:<name> kills the process once <name> is renamed.
    faultPoint("aggregate.commit", fs::path(f.path()).filename().string());
  }
  removeOutputsNotWritten(ours, written, "aggregate");
  if (std::error_code ec; !fs::remove(out_dir + "/" + kCommitRecord, ec) && ec)
    logWarn("aggregate: cannot remove {}/{} ({}); the next aggregation finds nothing to finish",
            out_dir, kCommitRecord, ec.message());
  if (weights_plan)
    logInfo("aggregate: wrote {}/event_weights.h5 ({} columns of {} events)", out_dir,
            weights_plan->columns.size(), weights_plan->rows);
  return summary;
}

}  // namespace foldfarm::ensembles
