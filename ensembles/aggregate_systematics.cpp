#include "ensembles/aggregate_systematics.hpp"

#include <algorithm>
#include <cmath>

#include "core/base/error.hpp"
#include "core/base/log.hpp"

namespace foldfarm::ensembles {
namespace {

std::string sharedReplicasText(const std::map<int, ReplicaSum>& replicas) {
  std::string s;
  for (const auto& [r, rep] : replicas) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

// The covariance of the mean of `samples` (their covariance, n - 1, over n); empty with fewer
// than two.
std::vector<double> covarianceOfMean(const std::vector<std::vector<double>>& samples, size_t bins) {
  if (samples.size() < 2) return {};
  BandAccumulator acc(bins);
  for (const auto& x : samples) acc.add(x);
  std::vector<double> cov = acc.compute().covariance;
  for (double& v : cov) v /= static_cast<double>(samples.size());
  return cov;
}

// The noise of a source's shift (the covariance of its estimate), from chains that differ in
// their training only; empty with fewer than two of them:
// Each side's baseline is what its shift is measured from (baselineOf: the warm reference for a
// warm-started variation, else the nominal):
//  - one-sided: the differences varied (r, m) - baseline (r, m);
//  - half_difference: the half differences up (r, m) - down (r, m) (the nominal cancels, as in
//    the shift); where up and down share fewer than two chains, the two sides' differences
//    from their baselines taken as independent (an upper estimate: a shared baseline counted
//    twice);
//  - max: per bin the chosen side's difference from its baseline, signed as the shift.
// The chains a variation's shift is measured from (Systematics::from_reference).
const std::map<int, ReplicaSum>& baselineOf(const std::string& name, const Systematics& sys,
                                            const std::map<std::string, ChainGroup>& groups) {
  return groups.at(sys.from_reference.count(name) ? sys.reference : std::string()).replicas;
}

// Per bin, the mean of `rows` (empty for none).
std::vector<double> meanOfRows(const std::vector<std::vector<double>>& rows) {
  std::vector<double> mean;
  for (const auto& x : rows) {
    if (mean.empty()) mean.assign(x.size(), 0.0);
    for (size_t b = 0; b < x.size(); ++b) mean[b] += x[b];
  }
  for (double& v : mean) v /= static_cast<double>(rows.size());
  return mean;
}

std::vector<double> shiftNoise(const SourcePlan& sp, const Systematics& sys,
                               const std::map<std::string, ChainGroup>& groups,
                               const std::vector<double>& up_shift,
                               const std::vector<double>& down_shift, size_t o, size_t bins) {
  if (!sp.one_sided.empty())
    return covarianceOfMean(chainDifferences(groups.at(sp.one_sided).replicas,
                                             baselineOf(sp.one_sided, sys, groups), o, 1.0),
                            bins);
  const std::map<int, ReplicaSum>& up = groups.at(sp.up).replicas;
  const std::map<int, ReplicaSum>& down = groups.at(sp.down).replicas;
  const std::map<int, ReplicaSum>& up_base = baselineOf(sp.up, sys, groups);
  const std::map<int, ReplicaSum>& down_base = baselineOf(sp.down, sys, groups);
  if (sp.symmetrise == "max") {
    const auto sign = [](double v) { return v < 0 ? -1.0 : 1.0; };
    std::vector<std::vector<double>> samples;
    forSharedChains(up, up_base, [&](const auto& du, const auto& dn, int r, int m) {
      const auto* dd = chainDensity(down, r, m);
      const auto* dn_down = chainDensity(down_base, r, m);
      if (!dd || !dn_down) return;
      std::vector<double> x(bins);
      for (size_t b = 0; b < bins; ++b)
        x[b] = std::abs(up_shift[b]) >= std::abs(down_shift[b])
                   ? du[o][b] - dn[o][b]
                   : sign(up_shift[b]) * sign(down_shift[b]) * ((*dd)[o][b] - (*dn_down)[o][b]);
      samples.push_back(std::move(x));
    });
    return covarianceOfMean(samples, bins);
  }
  std::vector<double> paired = covarianceOfMean(chainDifferences(up, down, o, 0.5), bins);
  if (!paired.empty()) return paired;
  const std::vector<double> nu = covarianceOfMean(chainDifferences(up, up_base, o, 1.0), bins);
  const std::vector<double> nd = covarianceOfMean(chainDifferences(down, down_base, o, 1.0), bins);
  if (nu.empty() || nd.empty()) return {};
  std::vector<double> n(nu.size());
  for (size_t i = 0; i < n.size(); ++i) n[i] = 0.25 * (nu[i] + nd[i]);
  return n;
}

// `a` + `b`, either of them empty (unknown): the other alone; both empty: empty.
std::vector<double> sumOfKnown(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  std::vector<double> c(a.size());
  for (size_t i = 0; i < c.size(); ++i) c[i] = a[i] + b[i];
  return c;
}

// The density covariance of observable o from the statistics of a group's simulated events
// under its unfolded weights (densityCovariance of each replica's member-mean Σw and Σw²,
// averaged over its replicas: they all reweight the same events). What an unfolding on another,
// independent simulated sample differs by even where nothing else differs.
std::vector<double> sampleCovariance(const ChainGroup& g, size_t o,
                                     const std::vector<double>& edges) {
  // Unknown (empty) where the chains' histograms hold no Σw² (all 0: none was written).
  bool known = false;
  for (const auto& [r, rep] : g.replicas)
    for (double v : rep.sumw2[o]) known = known || v > 0;
  if (!known) return {};
  std::vector<double> mean;
  for (const auto& [r, rep] : g.replicas) {
    std::vector<double> w1 = rep.sumw[o], w2 = rep.sumw2[o];
    for (size_t b = 0; b < w1.size(); ++b) {
      w1[b] /= rep.members;
      w2[b] /= rep.members;
    }
    const std::vector<double> c = densityCovariance(w1, w2, edges);
    if (mean.empty()) mean.assign(c.size(), 0.0);
    for (size_t i = 0; i < c.size(); ++i) mean[i] += c[i];
  }
  for (double& v : mean) v /= static_cast<double>(g.replicas.size());
  return mean;
}

// The sample statistics in a source's shift: nonzero where its shift compares unfoldings on
// independent simulated samples, a modelling variation (another generator's events) against its
// baseline (the nominal's events). A detector variation reconstructs the nominal's generated
// events again: their statistics are common to both sides and cancel in the shift.
std::vector<double> shiftSampleNoise(const SourcePlan& sp, const Systematics& sys,
                                     const std::map<std::string, ChainGroup>& groups, size_t o,
                                     const std::vector<double>& edges) {
  const auto modelling = [&](const std::string& name) {
    return groups.at(name).variation->type == VariationType::kModelling &&
           !sys.same_simulation.count(name);
  };
  const auto base = [&](const std::string& name) {
    return sampleCovariance(groups.at(sys.from_reference.count(name) ? sys.reference : ""), o,
                            edges);
  };
  if (!sp.one_sided.empty()) {
    if (!modelling(sp.one_sided) || sys.same_simulation.count(sp.one_sided)) return {};
    return sumOfKnown(sampleCovariance(groups.at(sp.one_sided), o, edges), base(sp.one_sided));
  }
  if (!modelling(sp.up) && !modelling(sp.down)) return {};
  // half_difference: (up - down) / 2, the baseline cancelling; max: one side less its baseline,
  // taken as the two sides' mean.
  std::vector<double> c = sumOfKnown(sampleCovariance(groups.at(sp.up), o, edges),
                                     sampleCovariance(groups.at(sp.down), o, edges));
  if (sp.symmetrise == "max") {
    for (double& v : c) v *= 0.5;
    return sumOfKnown(c, base(sp.up));
  }
  for (double& v : c) v *= 0.25;
  return c;
}

// The MC-statistics covariance of observable o: the spread of the variation's replicas, less
// the chains' training noise where it can be estimated (`raw` then keeps the spread).
std::vector<double> mcStatCovariance(const std::map<int, std::vector<double>>& rows,
                                     const std::map<int, ReplicaSum>& mc, size_t o, size_t bins,
                                     McTrainingNoise mc_training,
                                     const std::optional<std::vector<double>>& nominal_member_cov,
                                     std::vector<double>& raw, double& removed_fraction) {
  BandAccumulator acc(bins);
  for (const auto& [r, row] : rows) acc.add(row);
  std::vector<double> cov = acc.compute().covariance;
  // Its replicas differ in their training seeds as well as in the simulation's weights, as
  // the data-bootstrap replicas do: the training noise is in both covariances, and the
  // total would count it twice. It is removed here (estimated from the variation's own
  // members, else from the nominal's: the same chains but for the weights), and what is
  // left is kept a covariance between zero and the replicas' spread (covarianceLess).
  const std::optional<std::vector<double>> per_member =
      mc_training == McTrainingNoise::kFromMcBootstrap ? memberCovariance(mc, o, bins)
      : mc_training == McTrainingNoise::kFromNominal   ? nominal_member_cov
                                                       : std::nullopt;
  if (!per_member) return cov;
  raw = cov;
  const std::vector<double> noise =
      trainingNoiseOfReplicas(*per_member, mc, [](int) { return true; });
  std::vector<double> left = covarianceLess(raw, noise, bins);
  // The share of the noise's trace taken off: only its part within the replicas' range can be
  // (R - 1 directions of `bins`), while the spread holds all of it.
  double t_noise = 0, t_removed = 0;
  for (size_t b = 0; b < bins; ++b) {
    t_noise += noise[b * bins + b];
    t_removed += raw[b * bins + b] - left[b * bins + b];
  }
  removed_fraction = t_noise > 0 ? t_removed / t_noise : std::nan("");
  return left;
}

}  // namespace

Systematics checkVariations(const std::map<std::string, ChainGroup>& groups) {
  Systematics sys;
  const ChainGroup& nominal = groups.at("");
  for (const auto& [name, g] : groups) {
    if (name.empty()) continue;
    for (size_t o = 0; o < g.prior.size(); ++o)
      if (g.prior[o].edges != nominal.prior[o].edges)
        throw InputError(g.first_chain + ": variation '" + name + "' bins " + g.prior[o].name +
                         " differently from the nominal (" + nominal.first_chain +
                         "); rerun it with the nominal's binning");
    const VariationType type = g.variation->type;
    if (type == VariationType::kReference) {
      if (!sys.reference.empty())
        throw InputError("aggregate: variations '" + sys.reference + "' and '" + name +
                         "' are both warm references (" + g.first_chain +
                         "); aggregate one of them");
      sys.reference = name;
      continue;
    }
    sys.variations.push_back(*g.variation);
    if (type == VariationType::kDetector || type == VariationType::kModelling) {
      bool shared = false;
      for (const auto& [r, rep] : g.replicas) shared = shared || nominal.replicas.count(r) > 0;
      if (!shared)
        throw InputError("aggregate: variation '" + name + "' (" + g.first_chain +
                         ") has replicas " + sharedReplicasText(g.replicas) +
                         ", none of which the nominal has; run a replica r that the nominal "
                         "has (the shift compares replica r with nominal replica r)");
    }
    if (type == VariationType::kNonClosure && (g.data.size() != 1 || g.data.count("")))
      throw InputError("aggregate: the chains of non-closure variation '" + name + "' (" +
                       g.first_chain +
                       ") do not name one pseudo-data file (result.json \"data\"); rerun them "
                       "on one file");
    if (type == VariationType::kMcBootstrap && g.replicas.size() < 2)
      logWarn("aggregate: mc_bootstrap variation '{}' has {} replica; its covariance is zero", name,
              g.replicas.size());
  }
  sys.plan = planSystematics(sys.variations);
  // The baseline of each warm-started shift: the reference, over the chains (r, m) both ran
  // (the nominal trained again as the variation was: what differs is the inputs). A chain of
  // the variation without a reference partner (beyond the nominal's replicas or members, so
  // started cold; or its reference chain did not run or failed) is left out of the shift.
  std::string from_nominal, unpaired;
  for (const Variation& v : sys.variations) {
    const ChainGroup& g = groups.at(v.name);
    if ((v.type != VariationType::kDetector && v.type != VariationType::kModelling) ||
        !g.warm_started)
      continue;
    size_t chains = 0, paired = 0;
    for (const auto& [r, rep] : g.replicas)
      for (const auto& [m, d] : rep.member_density) {
        ++chains;
        if (!sys.reference.empty() && chainDensity(groups.at(sys.reference).replicas, r, m))
          ++paired;
      }
    if (paired == 0) {
      from_nominal += (from_nominal.empty() ? "" : ", ") + v.name;
      continue;
    }
    sys.from_reference.insert(v.name);
    sys.paired_chains[v.name] = paired;
    if (paired < chains)
      unpaired += (unpaired.empty() ? "" : ", ") + v.name + " " + std::to_string(paired) + " of " +
                  std::to_string(chains);
  }
  if (!from_nominal.empty())
    logWarn(
        "aggregate: variation(s) {} were warm-started from the nominal chains and no chain of "
        "theirs has a partner in a warm reference: their shifts from the nominal hold the warm "
        "start's extra training as well as the change of inputs{}",
        from_nominal,
        sys.reference.empty()
            ? " (a campaign made now adds the reference 'warm_reference' itself)"
            : "; run (or retry) the warm reference's chains of their replicas and members");
  if (!unpaired.empty())
    logWarn(
        "aggregate: shifts measured over the chains that have a partner in the warm reference "
        "'{}' only ({} chains): the others are beyond the nominal's replicas or members (so "
        "started cold), or their reference chain did not run or failed",
        sys.reference, unpaired);
  return sys;
}

void findSameSimulation(Systematics& sys, const std::map<std::string, ChainGroup>& groups,
                        const nlohmann::json& inputs) {
  const ChainGroup& nominal = groups.at("");
  const auto checksum = [&](const nlohmann::json& roles) -> std::string {
    if (!roles.is_object() || !roles.contains("mc") || !roles["mc"].is_object()) return "";
    return roles["mc"].value("sha256", std::string());
  };
  const std::string nominal_sum =
      inputs.is_object() ? checksum(inputs.value("nominal", nlohmann::json())) : "";
  // The non-closure's pseudo-data: the nominal's simulation itself (by path or checksum)?
  if (!sys.plan.non_closure.empty()) {
    const ChainGroup& g = groups.at(sys.plan.non_closure);
    bool same = !g.data.empty() && !g.data.count("") && g.data == nominal.mc;
    const auto data_sum = [&]() -> std::string {
      const nlohmann::json& vars =
          inputs.is_object() ? inputs.value("variations", nlohmann::json()) : nlohmann::json();
      if (!vars.is_object() || !vars.contains(sys.plan.non_closure)) return "";
      const nlohmann::json& roles = vars[sys.plan.non_closure];
      if (!roles.is_object() || !roles.contains("data") || !roles["data"].is_object()) return "";
      return roles["data"].value("sha256", std::string());
    };
    same = same || (!nominal_sum.empty() && data_sum() == nominal_sum);
    sys.closure_on_own_simulation = same;
    if (same)
      logInfo(
          "aggregate: the non-closure '{}' unfolds the nominal's own simulation (a technical "
          "closure): the unfolded result and its truth are the same events, and its noise is "
          "the training's alone",
          sys.plan.non_closure);
  }
  for (const Variation& v : sys.variations) {
    if (v.type != VariationType::kModelling) continue;
    const ChainGroup& g = groups.at(v.name);
    bool same = !g.mc.empty() && !g.mc.count("") && g.mc == nominal.mc;
    if (!same && !nominal_sum.empty() && inputs.contains("variations")) {
      const nlohmann::json& vars = inputs["variations"];
      same = vars.is_object() && vars.contains(v.name) && checksum(vars[v.name]) == nominal_sum;
    }
    if (!same) continue;
    sys.same_simulation.insert(v.name);
    logInfo(
        "aggregate: modelling variation '{}' reads the nominal's simulation (the same bytes): its "
        "shift compares no independent samples, and its noise is the training's alone",
        v.name);
  }
}

McTrainingChoice mcTrainingNoise(const std::map<std::string, ChainGroup>& groups,
                                 const Systematics& sys) {
  McTrainingChoice choice;
  if (sys.plan.mc_bootstrap.empty()) return choice;
  const std::string& name = sys.plan.mc_bootstrap;
  const ChainGroup& mc = groups.at(name);
  if (mc.warm_started)
    logWarn(
        "aggregate: the chains of MC-statistics variation '{}' ({}) were warm-started from the "
        "nominal chains of their replicas, each trained on that replica's data-bootstrap draw: "
        "its covariance carries those draws' fluctuations as well; rerun it with \"warm_start\": "
        "false (the default for mc_bootstrap)",
        name, mc.first_chain);
  const bool own = hasMemberPairs(mc.replicas);
  const bool removed = mc.replicas.size() >= 2 && (own || hasMemberPairs(groups.at("").replicas));
  if (removed)
    choice.from = own ? McTrainingNoise::kFromMcBootstrap : McTrainingNoise::kFromNominal;
  choice.summary = {{"removed", removed},
                    {"estimated_from", removed ? nlohmann::json(own ? "mc_bootstrap" : "nominal")
                                               : nlohmann::json()}};
  if (removed)
    logInfo(
        "aggregate: the chains' training noise (from the {} chains' members) is removed from "
        "the MC-statistics covariance of '{}' within the range its replicas span (the share "
        "taken off: summary.json mc_stat_training_noise.removed_fraction)",
        own ? "mc_bootstrap" : "nominal", name);
  else if (mc.replicas.size() >= 2)
    logWarn(
        "aggregate: the MC-statistics covariance of '{}' and the statistical covariance both "
        "contain the chains' training noise, and the total counts it twice: no replica has two "
        "members to estimate it from; run members >= 2 in the nominal (or in '{}') to have it "
        "removed",
        name, name);
  return choice;
}

std::vector<double> sqrtDiagonal(const std::vector<double>& cov, size_t bins) {
  std::vector<double> s(bins);
  for (size_t b = 0; b < bins; ++b) s[b] = std::sqrt(std::max(0.0, cov[b * bins + b]));
  return s;
}

SystematicsResult computeSystematics(
    size_t o, const std::vector<double>& edges,
    const std::map<int, std::vector<double>>& nominal_rows, const BandStats& band,
    const std::map<std::string, ChainGroup>& groups, const Systematics& sys,
    const std::vector<double>* closure_truth, const std::vector<double>* closure_truth_covariance,
    McTrainingNoise mc_training, const std::optional<std::vector<double>>& nominal_member_cov,
    ShiftNoise shift_noise) {
  SystematicsResult out;
  std::map<std::string, std::map<int, std::vector<double>>> rows;
  for (const auto& v : sys.variations) {
    rows[v.name] = replicaDensities(groups.at(v.name).replicas, o, edges);
    out.variation_mean[v.name] = meanOverReplicas(rows[v.name]);
  }
  // A variation's shift: from the reference, the mean of its chains' differences from the
  // reference's chains of the same replica and member; from the nominal, the mean over
  // replicas of its replica's density less the nominal's.
  const auto shiftOf = [&](const std::string& name) {
    if (!sys.from_reference.count(name)) return meanShift(rows.at(name), nominal_rows);
    return meanOfRows(
        chainDifferences(groups.at(name).replicas, groups.at(sys.reference).replicas, o, 1.0));
  };
  for (const auto& sp : sys.plan.sources) {
    SourceResult s;
    s.name = sp.name;
    if (!sp.one_sided.empty()) {
      s.shift = shiftOf(sp.one_sided);
    } else {
      s.up = shiftOf(sp.up);
      s.down = shiftOf(sp.down);
      s.shift = symmetrisedShift(s.up, s.down, sp.symmetrise);
    }
    s.training_noise = shiftNoise(sp, sys, groups, s.up, s.down, o, band.bins);
    s.sample_noise = shiftSampleNoise(sp, sys, groups, o, edges);
    s.noise = sumOfKnown(s.training_noise, s.sample_noise);
    s.covariance = outerProduct(s.shift);
    out.sources.push_back(std::move(s));
  }
  if (!sys.reference.empty()) {
    const std::vector<std::vector<double>> d =
        chainDifferences(groups.at(sys.reference).replicas, groups.at("").replicas, o, 1.0);
    out.warm_start_effect = meanOfRows(d);
    out.warm_start_effect_noise = covarianceOfMean(d, band.bins);
    out.variation_mean[sys.reference] =
        meanOverReplicas(replicaDensities(groups.at(sys.reference).replicas, o, edges));
  }
  if (!sys.plan.mc_bootstrap.empty())
    out.covariance_mc_stat =
        mcStatCovariance(rows.at(sys.plan.mc_bootstrap), groups.at(sys.plan.mc_bootstrap).replicas,
                         o, band.bins, mc_training, nominal_member_cov, out.covariance_mc_stat_raw,
                         out.mc_stat_noise_removed_fraction);
  if (!sys.plan.non_closure.empty()) {
    out.closure_unfolded = out.variation_mean.at(sys.plan.non_closure);
    out.closure_truth = *closure_truth;
    out.closure_shift.resize(band.bins);
    for (size_t b = 0; b < band.bins; ++b)
      out.closure_shift[b] = out.closure_unfolded[b] - out.closure_truth[b];
    // Its noise: that of the mean over its chains (training, and the pseudo-data's bootstrap
    // where its replicas draw one), and the statistics of the two samples it compares: the
    // nominal's simulated events under the unfolded weights, and the pseudo-data's truth.
    std::vector<std::vector<double>> chains;
    for (const auto& [r, rep] : groups.at(sys.plan.non_closure).replicas)
      for (const auto& [m, density] : rep.member_density) chains.push_back(density[o]);
    SourceResult s;
    s.name = "non_closure";
    s.shift = out.closure_shift;
    s.covariance = outerProduct(s.shift);
    s.training_noise = covarianceOfMean(chains, band.bins);
    // A technical closure (pseudo-data that are the nominal's own simulation): the unfolded
    // simulation and the truth are the same events, whose statistics cancel.
    if (!sys.closure_on_own_simulation)
      s.sample_noise = sumOfKnown(
          sampleCovariance(groups.at(sys.plan.non_closure), o, edges),
          closure_truth_covariance != nullptr ? *closure_truth_covariance : std::vector<double>());
    s.noise = sumOfKnown(s.training_noise, s.sample_noise);
    out.sources.push_back(std::move(s));
  }
  // Each shift's noise, where asked, taken off in quadrature bin by bin (E[s_b²] = t_b² + se_b² for
  // a true shift t): s~_b = sign(s_b) sqrt((s_b² - se_b²)_+), the source's covariance s~ s~^T
  // (still one fully correlated shift). Bin by bin, not along s alone: noise spread over the bins
  // inflates |s|² by the trace of the noise, of which s's own direction holds about one bin's
  // share.
  for (SourceResult& s : out.sources) {
    if (s.noise.empty() || shift_noise != ShiftNoise::kSubtract) continue;
    std::vector<double> left(band.bins);
    for (size_t b = 0; b < band.bins; ++b)
      left[b] = std::copysign(
          std::sqrt(std::max(0.0, s.shift[b] * s.shift[b] - s.noise[b * band.bins + b])),
          s.shift[b]);
    s.covariance_raw = s.covariance;
    s.covariance = outerProduct(left);
  }
  out.covariance_total = band.covariance;
  auto add = [&](const std::vector<double>& c) {
    for (size_t i = 0; i < c.size(); ++i) out.covariance_total[i] += c[i];
  };
  add(out.covariance_mc_stat);
  for (const auto& s : out.sources) add(s.covariance);
  out.std_total = sqrtDiagonal(out.covariance_total, band.bins);
  return out;
}

std::vector<std::pair<std::string, std::vector<double>>> uncertaintySigmas(
    const BandStats& band, const SystematicsResult& sys) {
  std::vector<std::pair<std::string, std::vector<double>>> out = {{"stat", band.std}};
  if (!sys.covariance_mc_stat.empty())
    out.emplace_back("mc_stat", sqrtDiagonal(sys.covariance_mc_stat, band.bins));
  // |shift| per bin, or what is left of it once its noise is taken off.
  for (const auto& s : sys.sources) out.emplace_back(s.name, sqrtDiagonal(s.covariance, band.bins));
  out.emplace_back("total", sys.std_total);
  return out;
}

}  // namespace foldfarm::ensembles
