#include "ensembles/truth_comparison.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/data/histogram.hpp"
#include "core/data/jet_reader.hpp"

namespace foldfarm::ensembles {
namespace {

// Variance of each bin of the unit-area density of a weighted histogram (Σw, Σw² per bin):
// the diagonal of densityCovariance.
std::vector<double> densityVariance(const std::vector<double>& sumw,
                                    const std::vector<double>& sumw2,
                                    const std::vector<double>& edges) {
  const std::vector<double> cov = densityCovariance(sumw, sumw2, edges);
  std::vector<double> v(sumw.size());
  for (size_t b = 0; b < v.size(); ++b) v[b] = cov[b * v.size() + b];
  return v;
}

// The statistical floor of the triangular discriminator (x10^3): its expectation between two
// independent histograms with the same underlying density and these per-bin variances,
// 1/2 Σ_b width_b (Var p_b + Var q_b) / (p_b + q_b), at the observed p + q. A perfect
// unfolding of samples of these sizes would still show about this Δ.
double deltaFloor(const std::vector<double>& p, const std::vector<double>& var_p,
                  const std::vector<double>& q, const std::vector<double>& var_q,
                  const std::vector<double>& edges) {
  double s = 0;
  for (size_t b = 0; b < p.size(); ++b) {
    // Negative densities as 0, as the discriminator takes them.
    const double sum = std::max(p[b], 0.0) + std::max(q[b], 0.0);
    if (sum > 0) s += (edges[b + 1] - edges[b]) * (var_p[b] + var_q[b]) / sum;
  }
  return 0.5 * s * 1e3;
}

// Standard error of the (bin-centre) mean of a weighted histogram: the spread of the
// observable over sqrt of the effective number of entries (Σw)²/Σw². NaN, not known, where
// fewer than two effective entries leave no spread to estimate it from (it was 0, and a
// one-event truth made a prior-to-truth shift of 60 standard errors); all in one bin, the
// spread within that bin.
double meanError(const std::vector<double>& sumw, const std::vector<double>& sumw2,
                 const std::vector<double>& edges) {
  double w = 0, w2 = 0, m = 0;
  for (size_t b = 0; b < sumw.size(); ++b) {
    w += sumw[b];
    w2 += sumw2[b];
    m += sumw[b] * 0.5 * (edges[b] + edges[b + 1]);
  }
  if (w <= 0 || w2 <= 0) return std::nan("");
  m /= w;
  double var = 0;
  for (size_t b = 0; b < sumw.size(); ++b) {
    const double c = 0.5 * (edges[b] + edges[b + 1]) - m;
    var += sumw[b] * c * c;
  }
  const double entries = w * w / w2;
  if (entries < 2) return std::nan("");
  // All in one bin: the spread within it, as if uniform (h²/12), bounds what the bins resolve.
  if (!(var > 0))
    for (size_t b = 0; b < sumw.size(); ++b)
      var += sumw[b] * (edges[b + 1] - edges[b]) * (edges[b + 1] - edges[b]) / 12;
  return std::sqrt(var / w / entries);
}

// Mean of the observable under a unit-area density (bin centres).
double densityMean(const std::vector<double>& d, const std::vector<double>& edges) {
  double m = 0;
  for (size_t b = 0; b < d.size(); ++b)
    m += d[b] * (edges[b + 1] - edges[b]) * 0.5 * (edges[b] + edges[b + 1]);
  return m;
}

double coverage(const std::vector<double>& truth, const std::vector<double>& nominal,
                const std::vector<double>& lo, const std::vector<double>& hi) {
  int considered = 0, inside = 0;
  for (size_t b = 0; b < truth.size(); ++b) {
    if (truth[b] <= 0 && nominal[b] <= 0) continue;
    ++considered;
    if (truth[b] >= lo[b] && truth[b] <= hi[b]) ++inside;
  }
  return considered ? static_cast<double>(inside) / considered : 0.0;
}

constexpr const char* kTruthKeys[] = {"delta_prior",
                                      "delta_unfolded",
                                      "delta_unfolded_err",
                                      "coverage_68",
                                      "coverage_95",
                                      "delta_floor",
                                      "mean_prior",
                                      "mean_truth",
                                      "mean_unfolded",
                                      "shift_recovered",
                                      "shift_significance",
                                      "coverage_68_total",
                                      "coverage_95_total",
                                      "replica_delta_unfolded",
                                      "replica_shift_recovered"};

// The truth file's pass flags (empty: every event passes) after its layout is checked.
std::vector<uint8_t> truthPassFlags(const data::JetFile& file, const std::string& path) {
  if (file.layout() == data::FileLayout::kUnfold && !file.hasLevel("gen"))
    throw InputError(path +
                     ": holds its reco level only, as experimental data does; the truth is a "
                     "particle-level sample: give a file with 'gen_subs' (N,6)");
  if (file.layout() != data::FileLayout::kUnfold || !file.has("gen_subs"))
    throw InputError(path + ": truth file needs the unfold layout with 'gen_subs' (N,6)");
  const std::vector<uint8_t> pass = file.readPassFlags("pass_gen");  // as the chains read them
  if (!pass.empty() && std::find(pass.begin(), pass.end(), uint8_t{1}) == pass.end())
    throw InputError(path + ": no event passes 'pass_gen' (all " + std::to_string(pass.size()) +
                     " are 0): the truth would be empty; give a particle-level sample with "
                     "selected events");
  return pass;
}

}  // namespace

void checkTruthFile(const std::string& path) {
  truthPassFlags(data::JetFile(path), path);
}

void checkTruthValues(const std::string& path) {
  const data::JetFile file(path);
  truthPassFlags(file, path);
  file.readFloat("gen_subs");
  if (file.has("weights")) file.readFloat("weights");
}

TruthHistograms readTruth(const std::string& path, const std::vector<ObservableHistogram>& like) {
  data::JetFile file(path);
  const std::vector<uint8_t> pass = truthPassFlags(file, path);
  std::vector<float> subs = file.readFloat("gen_subs");
  std::vector<double> w;
  if (file.has("weights")) {
    auto wf = file.readFloat("weights");
    w.assign(wf.begin(), wf.end());
  }
  // Binned as the chains are (their config's binning, OmniLearn's by default).
  std::vector<std::vector<double>> edges;
  for (const ObservableHistogram& l : like) edges.push_back(l.edges);
  auto hists = histogramObservables(subs, w, pass, edges);
  TruthHistograms t;
  for (size_t o = 0; o < hists.size(); ++o) {
    t.density.push_back(density(hists[o].sumw, hists[o].edges));
    t.covariance.push_back(densityCovariance(hists[o].sumw, hists[o].sumw2, hists[o].edges));
    std::vector<double> var(hists[o].sumw.size());
    for (size_t b = 0; b < var.size(); ++b) var[b] = t.covariance.back()[b * var.size() + b];
    t.variance.push_back(std::move(var));
    t.mean_error.push_back(meanError(hists[o].sumw, hists[o].sumw2, hists[o].edges));
    double inside = 0, inside2 = 0;
    for (double x : hists[o].sumw) inside += x;
    for (double x : hists[o].sumw2) inside2 += x;
    t.outside.push_back({(*hists[o].outside)[0], (*hists[o].outside)[1], inside});
    t.entries.push_back(inside2 > 0 ? inside * inside / inside2 : 0.0);
  }
  return t;
}

nlohmann::json truthComparison(const TruthHistograms& truth, size_t o,
                               const UnfoldedObservable& u) {
  nlohmann::json js = nlohmann::json::object();
  const std::vector<double>& edges = u.prior.edges;
  const std::vector<double>& nominal = u.band.mean;
  const std::vector<double>& t = truth.density[o];
  data::Binning binning{edges};
  js["delta_prior"] = data::triangularDiscriminator(u.prior_density, t, binning);
  js["delta_unfolded"] = data::triangularDiscriminator(nominal, t, binning);
  std::vector<double> per_replica;
  nlohmann::json& replica_delta = js["replica_delta_unfolded"] = nlohmann::json::object();
  for (size_t k = 0; k < u.spread_rows.size(); ++k) {
    per_replica.push_back(data::triangularDiscriminator(u.spread_rows[k], t, binning));
    replica_delta[std::to_string(u.spread_replicas[k])] = per_replica.back();
  }
  js["delta_unfolded_err"] = meanAndStd(per_replica).std;
  js["coverage_68"] = coverage(t, nominal, u.band.p16, u.band.p84);
  js["coverage_95"] = coverage(t, nominal, u.band.p2_5, u.band.p97_5);
  // The floor, from the nominal (lowest) replica's weights: Σw² of its members, averaged.
  // Members reweight the same events, so one member's Σw² (the mean over members), not
  // the Σw² of M independent samples, measures the nominal's statistical precision.
  const ReplicaSum& replica = u.nominal_replica;
  std::vector<double> w1 = replica.sumw[o], w2 = replica.sumw2[o];
  for (size_t b = 0; b < w1.size(); ++b) {
    w1[b] /= replica.members;
    w2[b] /= replica.members;
  }
  const std::vector<double> var_unfolded = densityVariance(w1, w2, edges);
  const double floor = deltaFloor(nominal, var_unfolded, t, truth.variance[o], edges);
  js["delta_floor"] = floor;
  // The floor is the expectation's second-order expansion in the bins' fluctuations: with few
  // truth events a bin it is low (a multinomial study of a smooth 49-bin spectrum against an
  // unfolded sample of 10^5: 4% at 40 events a bin, 14% at 10, half at 0.2, and 0 for a truth
  // of one event, whose density has no spread of its own).
  size_t filled = 0;
  for (size_t b = 0; b < t.size(); ++b) filled += (t[b] > 0 || nominal[b] > 0) ? 1 : 0;
  if (filled > 0 && truth.entries[o] < kFloorEntriesPerBin * static_cast<double>(filled))
    logWarn(
        "aggregate: {}: the truth holds {:.0f} effective event(s) over the {} bins that it or "
        "the unfolded result fills ({:.1f} a bin): delta_floor ({:.1f}) is an expansion for many "
        "events a bin and lies below the Δ a perfect unfolding would show (by about 14% at 10 a "
        "bin, half at 0.2, all of it for one event); more truth events or fewer bins (--binning "
        "rebins without training again) make it a floor",
        u.prior.name, truth.entries[o], filled, truth.entries[o] / static_cast<double>(filled),
        floor);
  // Fraction of the prior-to-truth shift of the mean that the unfolding recovered.
  const double m_prior = densityMean(u.prior_density, edges);
  const double m_truth = densityMean(t, edges);
  const double m_unfolded = densityMean(nominal, edges);
  js["mean_prior"] = m_prior;
  js["mean_truth"] = m_truth;
  js["mean_unfolded"] = m_unfolded;
  const double shift = m_truth - m_prior;
  const double scale = std::max(std::abs(m_truth), std::abs(m_prior));
  // A truth of under two effective events has a mean but no spread: what fraction of its
  // shift was recovered is not measured (null, with the significance).
  const bool shifted =
      std::abs(shift) > 1e-9 * std::max(scale, 1e-300) && !std::isnan(truth.mean_error[o]);
  js["shift_recovered"] =
      shifted ? nlohmann::json((m_unfolded - m_prior) / shift) : nlohmann::json();
  nlohmann::json& replica_shift = js["replica_shift_recovered"] = nlohmann::json::object();
  for (size_t k = 0; k < u.spread_rows.size() && shifted; ++k)
    replica_shift[std::to_string(u.spread_replicas[k])] =
        (densityMean(u.spread_rows[k], edges) - m_prior) / shift;
  // How many standard errors the prior-to-truth shift is: below ~2 the recovered
  // fraction is noise (the prior is already compatible with the truth).
  const double err = std::hypot(truth.mean_error[o], meanError(u.prior.sumw, u.prior.sumw2, edges));
  js["shift_significance"] = err > 0 ? nlohmann::json(std::abs(shift) / err) : nlohmann::json();
  // The total band nominal ± k sigma_total, sigma from the total covariance's diagonal.
  for (const auto& [key, k] : {std::pair<const char*, double>{"coverage_68_total", 1.0},
                               std::pair<const char*, double>{"coverage_95_total", 1.96}}) {
    std::vector<double> lo(u.band.bins), hi(u.band.bins);
    for (size_t b = 0; b < u.band.bins; ++b) {
      lo[b] = nominal[b] - k * u.std_total[b];
      hi[b] = nominal[b] + k * u.std_total[b];
    }
    js[key] = coverage(t, nominal, lo, hi);
  }
  return js;
}

nlohmann::json noTruthComparison() {
  nlohmann::json js = nlohmann::json::object();
  for (const char* k : kTruthKeys) js[k] = nullptr;
  return js;
}

}  // namespace foldfarm::ensembles
