#include "ensembles/aggregate.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/output_lock.hpp"
#include "core/base/progress.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/histogram.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/observables.hpp"
#include "core/plot/gnuplot.hpp"
#include "ensembles/band_stats.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/event_weights.hpp"
#include "ensembles/systematics.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;

bool isChainDir(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p / kChainResultFile, ec) &&
         fs::is_regular_file(p / kChainHistogramsFile, ec);
}

// Unit-area density over the in-range bins (numpy density=True); zeros for an empty one.
std::vector<double> density(const std::vector<double>& sumw, const std::vector<double>& edges) {
  double total = 0;
  for (double v : sumw) total += v;
  std::vector<double> d(sumw.size(), 0.0);
  if (total <= 0) return d;
  for (size_t b = 0; b < sumw.size(); ++b) d[b] = sumw[b] / (total * (edges[b + 1] - edges[b]));
  return d;
}

// Per replica: sum over members of the unfolded Σw (and Σw²) per observable, the member
// count, and each member's unit-area density per observable (for the training noise).
struct ReplicaSum {
  int members = 0;
  std::vector<std::vector<double>> sumw, sumw2;
  std::map<int, std::vector<std::vector<double>>> member_density;  // member -> [observable]
};

struct TruthHistograms {
  std::vector<std::vector<double>> density;   // per observable
  std::vector<std::vector<double>> variance;  // per observable: densityVariance()
  std::vector<double> mean_error;             // per observable: meanError()
};

// Variance of each bin of the unit-area density of a weighted histogram (Σw, Σw² per bin):
// d_b = S_b / (W width_b) with W = Σ_b S_b; to first order
// Var d_b = [S2_b (1 - 2 f_b) + f_b² S2] / (W width_b)², f_b = S_b / W, S2 = Σ_b S2_b.
std::vector<double> densityVariance(const std::vector<double>& sumw,
                                    const std::vector<double>& sumw2,
                                    const std::vector<double>& edges) {
  double w = 0, w2 = 0;
  for (size_t b = 0; b < sumw.size(); ++b) {
    w += sumw[b];
    w2 += sumw2[b];
  }
  std::vector<double> v(sumw.size(), 0.0);
  if (w <= 0) return v;
  for (size_t b = 0; b < sumw.size(); ++b) {
    const double f = sumw[b] / w, width = edges[b + 1] - edges[b];
    v[b] = std::max(0.0, sumw2[b] * (1 - 2 * f) + f * f * w2) / (w * w * width * width);
  }
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
  for (size_t b = 0; b < p.size(); ++b)
    if (p[b] + q[b] > 0) s += (edges[b + 1] - edges[b]) * (var_p[b] + var_q[b]) / (p[b] + q[b]);
  return 0.5 * s * 1e3;
}

// Standard error of the (bin-centre) mean of a weighted histogram: the spread of the
// observable over sqrt of the effective number of entries (Σw)²/Σw².
double meanError(const std::vector<double>& sumw, const std::vector<double>& sumw2,
                 const std::vector<double>& edges) {
  double w = 0, w2 = 0, m = 0;
  for (size_t b = 0; b < sumw.size(); ++b) {
    w += sumw[b];
    w2 += sumw2[b];
    m += sumw[b] * 0.5 * (edges[b] + edges[b + 1]);
  }
  if (w <= 0 || w2 <= 0) return 0.0;
  m /= w;
  double var = 0;
  for (size_t b = 0; b < sumw.size(); ++b) {
    const double c = 0.5 * (edges[b] + edges[b + 1]) - m;
    var += sumw[b] * c * c;
  }
  return std::sqrt(var / w / (w * w / w2));
}

// Mean of the observable under a unit-area density (bin centres).
double densityMean(const std::vector<double>& d, const std::vector<double>& edges) {
  double m = 0;
  for (size_t b = 0; b < d.size(); ++b)
    m += d[b] * (edges[b + 1] - edges[b]) * 0.5 * (edges[b] + edges[b + 1]);
  return m;
}

TruthHistograms readTruth(const std::string& path, const std::vector<ObservableHistogram>& like) {
  data::JetFile file(path);
  if (file.layout() != data::FileLayout::kUnfold || !file.has("gen_subs"))
    throw InputError(path + ": truth file needs the unfold layout with 'gen_subs' (N,6)");
  std::vector<float> subs = file.readFloat("gen_subs");
  std::vector<double> w;
  if (file.has("weights")) {
    auto wf = file.readFloat("weights");
    w.assign(wf.begin(), wf.end());
  }
  std::vector<uint8_t> pass;
  if (file.has("pass_gen")) {
    auto pf = file.readFloat("pass_gen");
    pass.resize(pf.size());
    for (size_t i = 0; i < pf.size(); ++i) pass[i] = pf[i] != 0.0f;
  }
  auto hists = histogramObservables(subs, w, pass);
  TruthHistograms t;
  for (size_t o = 0; o < hists.size(); ++o) {
    if (hists[o].edges != like[o].edges)
      throw InputError(path + ": truth binning of " + hists[o].name + " differs from the chains'");
    t.density.push_back(density(hists[o].sumw, hists[o].edges));
    t.variance.push_back(densityVariance(hists[o].sumw, hists[o].sumw2, hists[o].edges));
    t.mean_error.push_back(meanError(hists[o].sumw, hists[o].sumw2, hists[o].edges));
  }
  return t;
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

// The chains of the nominal (variation nullopt) or of one variation.
struct ChainGroup {
  std::optional<Variation> variation;
  std::string first_chain;  // the description and binning every other chain must match
  std::map<int, ReplicaSum> replicas;
  std::set<std::pair<int, int>> seen;
  std::vector<ObservableHistogram> prior;  // the first chain's
  size_t chains = 0;
  std::map<int, std::vector<std::string>> member_dirs;
  std::set<std::string> mc, data;  // result.json paths ("" when absent)
  bool warm_started = false;       // a chain started from another chain's models (warm_from)
  nlohmann::json unfolding;        // the first chain's (unfoldingOf)
  nlohmann::json inputs;           // the first recorded size and time of its mc and data files
};

// What every chain of a group (the nominal, or one variation) unfolds alike: its record but
// for its place (replica, member), its warm start and where it ran (chain.hpp). The
// foundation is compared by its hash when the record has one.
nlohmann::json unfoldingOf(const nlohmann::json& res) {
  nlohmann::json u = nlohmann::json::object();
  for (const char* k : {"mc", "data", "iterations", "config", "bootstrap"})
    if (res.contains(k)) u[k] = res[k];
  const auto sha = res.find("init_sha256");
  if (sha != res.end() && sha->is_string() && !sha->get<std::string>().empty())
    u["init_sha256"] = *sha;
  else if (res.contains("init"))
    u["init"] = res["init"];
  return u;
}

// The first key (dotted, e.g. "config.lr") where `a` and `b` differ, with both values.
std::string firstDifference(const nlohmann::json& a, const nlohmann::json& b,
                            const std::string& prefix = "") {
  if (a.is_object() && b.is_object()) {
    std::set<std::string> keys;
    for (auto it = a.begin(); it != a.end(); ++it) keys.insert(it.key());
    for (auto it = b.begin(); it != b.end(); ++it) keys.insert(it.key());
    for (const auto& k : keys) {
      const nlohmann::json none;
      const nlohmann::json& x = a.contains(k) ? a[k] : none;
      const nlohmann::json& y = b.contains(k) ? b[k] : none;
      if (x != y) return firstDifference(x, y, prefix + (prefix.empty() ? "" : ".") + k);
    }
    return prefix;
  }
  return prefix + " " + (a.is_null() ? std::string("(none)") : a.dump()) + " against " +
         (b.is_null() ? std::string("(none)") : b.dump());
}

struct Systematics {
  SystematicsPlan plan;
  std::vector<Variation> variations;  // by name
};

std::string sharedReplicasText(const std::map<int, ReplicaSum>& replicas) {
  std::string s;
  for (const auto& [r, rep] : replicas) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

// The refusals that need every chain read: binning against the nominal's, the pairing of
// sources, replicas shared with the nominal, the pseudo-data of the non-closure.
Systematics checkVariations(const std::map<std::string, ChainGroup>& groups) {
  Systematics sys;
  const ChainGroup& nominal = groups.at("");
  for (const auto& [name, g] : groups) {
    if (name.empty()) continue;
    sys.variations.push_back(*g.variation);
    for (size_t o = 0; o < g.prior.size(); ++o)
      if (g.prior[o].edges != nominal.prior[o].edges)
        throw InputError(g.first_chain + ": variation '" + name + "' bins " + g.prior[o].name +
                         " differently from the nominal (" + nominal.first_chain +
                         "); rerun it with the nominal's binning");
    const VariationType type = g.variation->type;
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
  return sys;
}

// The training noise of one member's result: the pooled covariance of the members' unit-area
// densities of observable o about their replica's mean, over the replicas with two or more
// members (Σ (M_r - 1) degrees of freedom). Members of a replica unfold the same weighted
// events and differ only in their seeds (initialisation of new layers, data order), so their
// spread is the training's alone. nullopt when no replica has two members.
std::optional<std::vector<double>> memberCovariance(const std::map<int, ReplicaSum>& replicas,
                                                    size_t o, size_t bins) {
  std::vector<double> cov(bins * bins, 0.0);
  size_t dof = 0;
  for (const auto& [r, rep] : replicas) {
    if (rep.member_density.size() < 2) continue;
    BandAccumulator members(bins);
    for (const auto& [m, density] : rep.member_density) members.add(density[o]);
    const size_t replica_dof = rep.member_density.size() - 1;
    const std::vector<double> c = members.compute().covariance;
    for (size_t i = 0; i < c.size(); ++i) cov[i] += c[i] * static_cast<double>(replica_dof);
    dof += replica_dof;
  }
  if (dof == 0) return std::nullopt;
  for (double& v : cov) v /= static_cast<double>(dof);
  return cov;
}

// Whether memberCovariance() has something to estimate from.
bool hasMemberPairs(const std::map<int, ReplicaSum>& replicas) {
  for (const auto& [r, rep] : replicas)
    if (rep.member_density.size() >= 2) return true;
  return false;
}

// The training noise in a covariance over replica results: a replica result is the mean of
// its M_r members, so each replica carries per_member / M_r; over the replicas `counted`
// accepts, on average per_member x mean(1 / M_r).
template <typename Counted>
std::vector<double> trainingNoiseOfReplicas(std::vector<double> per_member,
                                            const std::map<int, ReplicaSum>& replicas,
                                            Counted counted) {
  double inverse = 0;
  size_t n = 0;
  for (const auto& [r, rep] : replicas)
    if (counted(r)) {
      inverse += 1.0 / rep.members;
      ++n;
    }
  for (double& v : per_member) v *= n ? inverse / static_cast<double>(n) : 0.0;
  return per_member;
}

// Where the training noise taken off the MC-statistics covariance is estimated from (decided
// once per aggregation): nowhere (no variation, one replica, or no replica with two members),
// the variation's own members, or the nominal's.
enum class McTrainingNoise { kNotRemoved, kFromMcBootstrap, kFromNominal };

// Replica -> unit-area density of observable o (the mean over the replica's members).
std::map<int, std::vector<double>> replicaDensities(const std::map<int, ReplicaSum>& replicas,
                                                    size_t o, const std::vector<double>& edges) {
  std::map<int, std::vector<double>> out;
  for (const auto& [r, rep] : replicas) {
    std::vector<double> mean = rep.sumw[o];
    for (double& v : mean) v /= rep.members;
    out[r] = density(mean, edges);
  }
  return out;
}

std::vector<double> sqrtDiagonal(const std::vector<double>& cov, size_t bins) {
  std::vector<double> s(bins);
  for (size_t b = 0; b < bins; ++b) s[b] = std::sqrt(std::max(0.0, cov[b * bins + b]));
  return s;
}

struct SourceResult {
  std::string name;
  std::vector<double> shift, covariance;
  std::vector<double> up, down;  // the raw shifts of a pair; empty otherwise
  std::vector<double> noise;     // the covariance of the shift's estimate (the square root of its
                                 // diagonal: shift_error); empty: unknown
  std::vector<double> covariance_raw;  // s s^T, when the noise was taken off `covariance`
};

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

// The density set of chain (replica r, member m) of a group; null when it did not run.
const std::vector<std::vector<double>>* chainDensity(const std::map<int, ReplicaSum>& group, int r,
                                                     int m) {
  const auto rep = group.find(r);
  if (rep == group.end()) return nullptr;
  const auto d = rep->second.member_density.find(m);
  return d == rep->second.member_density.end() ? nullptr : &d->second;
}

// Calls f(a's density set, b's, r, m) for each chain (replica r, member m) both groups ran.
template <class F>
void forSharedChains(const std::map<int, ReplicaSum>& a, const std::map<int, ReplicaSum>& b,
                     F&& f) {
  for (const auto& [r, ra] : a)
    for (const auto& [m, da] : ra.member_density)
      if (const auto* db = chainDensity(b, r, m)) f(da, *db, r, m);
}

// The per-chain differences scale * (a (r, m) - b (r, m)) of observable o: chains of the same
// replica and member saw the same data draw, so what differs besides the variation is the
// training.
std::vector<std::vector<double>> chainDifferences(const std::map<int, ReplicaSum>& a,
                                                  const std::map<int, ReplicaSum>& b, size_t o,
                                                  double scale) {
  std::vector<std::vector<double>> out;
  forSharedChains(a, b, [&](const auto& da, const auto& db, int, int) {
    std::vector<double> d(da[o].size());
    for (size_t bin = 0; bin < d.size(); ++bin) d[bin] = scale * (da[o][bin] - db[o][bin]);
    out.push_back(std::move(d));
  });
  return out;
}

// The noise of a source's shift (the covariance of its estimate), from chains that differ in
// their training only; empty with fewer than two of them:
//  - one-sided: the differences varied (r, m) - nominal (r, m);
//  - half_difference: the half differences up (r, m) - down (r, m) (the nominal cancels, as in
//    the shift); where up and down share fewer than two chains, the two sides' differences
//    from the nominal taken as independent (an upper estimate: their shared nominal counted
//    twice);
//  - max: per bin the chosen side's difference from the nominal, signed as the shift.
std::vector<double> shiftNoise(const SourcePlan& sp,
                               const std::map<std::string, ChainGroup>& groups,
                               const std::vector<double>& up_shift,
                               const std::vector<double>& down_shift, size_t o, size_t bins) {
  const std::map<int, ReplicaSum>& nominal = groups.at("").replicas;
  if (!sp.one_sided.empty())
    return covarianceOfMean(chainDifferences(groups.at(sp.one_sided).replicas, nominal, o, 1.0),
                            bins);
  const std::map<int, ReplicaSum>& up = groups.at(sp.up).replicas;
  const std::map<int, ReplicaSum>& down = groups.at(sp.down).replicas;
  if (sp.symmetrise == "max") {
    const auto sign = [](double v) { return v < 0 ? -1.0 : 1.0; };
    std::vector<std::vector<double>> samples;
    forSharedChains(up, nominal, [&](const auto& du, const auto& dn, int r, int m) {
      const auto* dd = chainDensity(down, r, m);
      if (!dd) return;
      std::vector<double> x(bins);
      for (size_t b = 0; b < bins; ++b)
        x[b] = std::abs(up_shift[b]) >= std::abs(down_shift[b])
                   ? du[o][b] - dn[o][b]
                   : sign(up_shift[b]) * sign(down_shift[b]) * ((*dd)[o][b] - dn[o][b]);
      samples.push_back(std::move(x));
    });
    return covarianceOfMean(samples, bins);
  }
  std::vector<double> paired = covarianceOfMean(chainDifferences(up, down, o, 0.5), bins);
  if (!paired.empty()) return paired;
  const std::vector<double> nu = covarianceOfMean(chainDifferences(up, nominal, o, 1.0), bins);
  const std::vector<double> nd = covarianceOfMean(chainDifferences(down, nominal, o, 1.0), bins);
  if (nu.empty() || nd.empty()) return {};
  std::vector<double> n(nu.size());
  for (size_t i = 0; i < n.size(); ++i) n[i] = 0.25 * (nu[i] + nd[i]);
  return n;
}

// One observable's systematic uncertainties, all unit-area densities per bin.
struct SystematicsResult {
  std::vector<SourceResult> sources;  // detector and modelling by name, then non_closure
  std::map<std::string, std::vector<double>> variation_mean;  // variation -> its mean result
  std::vector<double> covariance_mc_stat;                     // empty: not run
  // The MC-statistics covariance as its replicas spread, the chains' training noise
  // included; empty unless that noise was removed from covariance_mc_stat.
  std::vector<double> covariance_mc_stat_raw;
  std::vector<double> closure_shift, closure_truth, closure_unfolded;  // empty: not run
  std::vector<double> covariance_total, std_total;
};

SystematicsResult computeSystematics(
    size_t o, const std::vector<double>& edges,
    const std::map<int, std::vector<double>>& nominal_rows, const BandStats& band,
    const std::map<std::string, ChainGroup>& groups, const Systematics& sys,
    const std::optional<TruthHistograms>& closure_truth, McTrainingNoise mc_training,
    const std::optional<std::vector<double>>& nominal_member_cov, ShiftNoise shift_noise) {
  SystematicsResult out;
  std::map<std::string, std::map<int, std::vector<double>>> rows;
  for (const auto& v : sys.variations) {
    rows[v.name] = replicaDensities(groups.at(v.name).replicas, o, edges);
    out.variation_mean[v.name] = meanOverReplicas(rows[v.name]);
  }
  for (const auto& sp : sys.plan.sources) {
    SourceResult s;
    s.name = sp.name;
    if (!sp.one_sided.empty()) {
      s.shift = meanShift(rows.at(sp.one_sided), nominal_rows);
    } else {
      s.up = meanShift(rows.at(sp.up), nominal_rows);
      s.down = meanShift(rows.at(sp.down), nominal_rows);
      s.shift = symmetrisedShift(s.up, s.down, sp.symmetrise);
    }
    s.noise = shiftNoise(sp, groups, s.up, s.down, o, band.bins);
    s.covariance = outerProduct(s.shift);
    out.sources.push_back(std::move(s));
  }
  if (!sys.plan.mc_bootstrap.empty()) {
    BandAccumulator acc(band.bins);
    for (const auto& [r, row] : rows.at(sys.plan.mc_bootstrap)) acc.add(row);
    out.covariance_mc_stat = acc.compute().covariance;
    // Its replicas differ in their training seeds as well as in the simulation's weights, as
    // the data-bootstrap replicas do: the training noise is in both covariances, and the
    // total would count it twice. It is removed here (estimated from the variation's own
    // members, else from the nominal's: the same chains but for the weights), and what is
    // left is kept a covariance between zero and the replicas' spread (covarianceLess).
    const std::map<int, ReplicaSum>& mc = groups.at(sys.plan.mc_bootstrap).replicas;
    const std::optional<std::vector<double>> per_member =
        mc_training == McTrainingNoise::kFromMcBootstrap ? memberCovariance(mc, o, band.bins)
        : mc_training == McTrainingNoise::kFromNominal   ? nominal_member_cov
                                                         : std::nullopt;
    if (per_member) {
      out.covariance_mc_stat_raw = out.covariance_mc_stat;
      const std::vector<double> noise =
          trainingNoiseOfReplicas(*per_member, mc, [](int) { return true; });
      out.covariance_mc_stat = covarianceLess(out.covariance_mc_stat_raw, noise, band.bins);
    }
  }
  if (!sys.plan.non_closure.empty()) {
    out.closure_unfolded = out.variation_mean.at(sys.plan.non_closure);
    out.closure_truth = closure_truth->density[o];
    out.closure_shift.resize(band.bins);
    for (size_t b = 0; b < band.bins; ++b)
      out.closure_shift[b] = out.closure_unfolded[b] - out.closure_truth[b];
    // Its noise: that of the mean over its chains (the truth is fixed).
    std::vector<std::vector<double>> chains;
    for (const auto& [r, rep] : groups.at(sys.plan.non_closure).replicas)
      for (const auto& [m, density] : rep.member_density) chains.push_back(density[o]);
    SourceResult s;
    s.name = "non_closure";
    s.shift = out.closure_shift;
    s.covariance = outerProduct(s.shift);
    s.noise = covarianceOfMean(chains, band.bins);
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
  out.std_total.resize(band.bins);
  for (size_t b = 0; b < band.bins; ++b)
    out.std_total[b] = std::sqrt(std::max(0.0, out.covariance_total[b * band.bins + b]));
  return out;
}

// Relative size of each uncertainty (summary.json "uncertainty"), stat first.
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

// Relative uncertainty per bin of each source, the statistical and the total, drawn over the
// bins that hold at least 0.1% of the unfolded distribution (the far tails' ratios would set
// the scale).
plot::LineFigure breakdownFigure(
    const std::string& name, const std::vector<double>& edges, const std::vector<double>& nominal,
    const std::vector<std::pair<std::string, std::vector<double>>>& sigmas) {
  plot::LineFigure fig;
  fig.title = name + ": relative uncertainty per bin";
  fig.xlabel = data::observableLabel(name);
  fig.ylabel = "uncertainty / unfolded";
  for (const auto& [label, sigma] : sigmas) {
    plot::Series s;
    s.label = label;
    s.style = "lines";
    for (size_t b = 0; b < nominal.size(); ++b) {
      if (!(nominal[b] * (edges[b + 1] - edges[b]) >= 1e-3)) continue;
      for (double x : {edges[b], edges[b + 1]}) {
        s.x.push_back(x);
        s.y.push_back(sigma[b] / nominal[b]);
      }
    }
    fig.series.push_back(std::move(s));
  }
  return fig;
}

}  // namespace

nlohmann::json compareAggregations(const std::vector<std::string>& dirs,
                                   const std::vector<std::string>& names_in) {
  using nlohmann::json;
  if (dirs.empty()) throw InputError("compare: give at least one aggregation directory");
  if (!names_in.empty() && names_in.size() != dirs.size())
    throw InputError("compare: " + std::to_string(names_in.size()) + " names for " +
                     std::to_string(dirs.size()) + " directories");
  json out = {{"inputs", json::array()}, {"observables", json::object()}, {"best", json::object()}};
  std::vector<std::string> names;
  for (size_t i = 0; i < dirs.size(); ++i) {
    std::string d = dirs[i];
    std::error_code ec;
    if (!fs::is_regular_file(d + "/summary.json", ec) &&
        fs::is_regular_file(d + "/aggregate/summary.json", ec))
      d += "/aggregate";
    const std::string path = d + "/summary.json";
    if (!fs::is_regular_file(path, ec))
      throw InputError(dirs[i] +
                       ": no summary.json (nor aggregate/summary.json); aggregate it "
                       "first (`foldfarm campaign aggregate` or `foldfarm aggregate`)");
    const json s = readJson(path);
    const std::string clf = s.value("classifier", std::string("pet"));
    std::string name = names_in.empty() ? clf : names_in[i];
    if (std::find(names.begin(), names.end(), name) != names.end())
      name += "#" + std::to_string(i + 1);
    names.push_back(name);
    out["inputs"].push_back(
        {{"name", name}, {"dir", d}, {"classifier", clf}, {"chains", s.value("chains", 0)}});
    if (!s.contains("observables") || !s["observables"].is_object())
      throw InputError(path + ": no \"observables\" object; not an aggregation summary");
    for (auto it = s["observables"].begin(); it != s["observables"].end(); ++it) {
      const json& o = it.value();
      if (!o.contains("delta_unfolded") || o["delta_unfolded"].is_null())
        throw InputError(path + ": no truth comparison for " + it.key() +
                         "; aggregate with --truth (or a spec input 'truth')");
      json& row = out["observables"][it.key()];
      if (row.is_null()) {
        row["delta_prior"] = o["delta_prior"];
        row["delta_floor"] = o.value("delta_floor", json());
        row["shift_significance"] = o.value("shift_significance", json());
      } else if (std::abs(row["delta_prior"].get<double>() - o["delta_prior"].get<double>()) >
                 1e-6 * std::max(1.0, std::abs(o["delta_prior"].get<double>()))) {
        throw InputError(path + ": Δ of the prior for " + it.key() +
                         " differs from the first "
                         "input's; compare unfoldings of the same MC, data and truth");
      }
      row[name] = {{"delta_unfolded", o["delta_unfolded"]},
                   {"delta_unfolded_err", o.value("delta_unfolded_err", json())},
                   {"shift_recovered", o.value("shift_recovered", json())}};
    }
  }
  for (auto it = out["observables"].begin(); it != out["observables"].end(); ++it) {
    std::string best;
    double best_delta = 0;
    for (const auto& n : names) {
      if (!it->contains(n)) continue;
      const double d = (*it)[n]["delta_unfolded"].get<double>();
      if (best.empty() || d < best_delta) {
        best = n;
        best_delta = d;
      }
    }
    out["best"][it.key()] = best;
  }
  return out;
}

std::string comparisonMarkdown(const nlohmann::json& c) {
  auto num = [](const nlohmann::json& v, int digits) {
    if (!v.is_number()) return std::string("-");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v.get<double>());
    return std::string(buf);
  };
  std::vector<std::string> names;
  for (const auto& in : c["inputs"]) names.push_back(in["name"].get<std::string>());
  std::string s = "| Δ×10³ | prior | floor |";
  for (const auto& n : names) s += " " + n + " | shift " + n + " |";
  s += "\n|---|---:|---:|";
  for (size_t i = 0; i < names.size(); ++i) s += "---:|---:|";
  s += "\n";
  for (auto it = c["observables"].begin(); it != c["observables"].end(); ++it) {
    const auto& r = it.value();
    s += "| " + it.key() + " | " + num(r["delta_prior"], 1) + " | " + num(r["delta_floor"], 1) +
         " |";
    for (const auto& n : names) {
      if (!r.contains(n)) {
        s += " - | - |";
        continue;
      }
      const auto& e = r[n];
      const bool best = c["best"].value(it.key(), std::string()) == n;
      std::string cell = num(e["delta_unfolded"], 1) + " ± " + num(e["delta_unfolded_err"], 1);
      s += " " + (best ? "**" + cell + "**" : cell) + " | ";
      // In brackets when the prior-to-truth shift is under 2 standard errors (noise).
      const bool noise =
          r["shift_significance"].is_number() && r["shift_significance"].get<double>() < 2;
      const std::string shift =
          e["shift_recovered"].is_number()
              ? num(nlohmann::json(100 * e["shift_recovered"].get<double>()), 0) + "%"
              : std::string("-");
      s += noise ? "(" + shift + ")" : shift;
      s += " |";
    }
    s += "\n";
  }
  return s;
}

std::vector<std::string> findChainDirs(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    throw InputError(root + ": not a directory (pass chain output directories or their parents)");
  std::vector<std::string> out;
  if (isChainDir(root)) out.push_back(fs::path(root).lexically_normal().string());
  for (auto it = fs::recursive_directory_iterator(
           root, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && isChainDir(it->path()))
      out.push_back(it->path().lexically_normal().string());
  }
  if (ec) throw InputError(root + ": cannot list: " + ec.message());
  std::sort(out.begin(), out.end());
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

nlohmann::json aggregateRunsWithOptions(const std::vector<std::string>& run_dirs,
                                        const std::string& out_dir,
                                        const std::optional<std::string>& truth_path,
                                        const AggregateOptions& options) {
  // One aggregation at a time writes out_dir (held from the start: a second one is refused
  // before it reads the chains, not after).
  OutputDirectoryLock lock(out_dir, "");  // `aggregate --out`, or a campaign's aggregate/
  lock.removeLeftTemporaries({});
  std::vector<std::string> chains;
  for (const auto& d : run_dirs) {
    auto found = findChainDirs(d);
    chains.insert(chains.end(), found.begin(), found.end());
  }
  std::sort(chains.begin(), chains.end());
  chains.erase(std::unique(chains.begin(), chains.end()), chains.end());
  if (chains.empty())
    throw InputError(
        "aggregate: no completed chain (result.json + histograms.h5) under the given "
        "directories; run `foldfarm unfold` first");

  // 1. Stream the chains: only per-replica sums are kept, per group (the nominal, named "",
  //    and each variation).
  std::map<std::string, ChainGroup> groups;
  std::optional<uint64_t> campaign_seed;
  std::set<std::string> classifiers;
  Progress progress("aggregate", static_cast<int64_t>(chains.size()), "chains");
  int64_t read_chains = 0;
  for (const auto& dir : chains) {
    progress.update(read_chains++);
    nlohmann::json res = readJson(dir + "/" + kChainResultFile);
    int r = 0, m = 0;
    uint64_t seed = 0;
    try {
      r = res.at("replica").get<int>();
      m = res.at("member").get<int>();
      seed = res.at("campaign_seed").get<uint64_t>();
    } catch (const nlohmann::json::exception& e) {
      throw InputError(dir + "/" + kChainResultFile + ": missing replica/member/campaign_seed (" +
                       e.what() + ")");
    }
    if (campaign_seed && *campaign_seed != seed)
      throw InputError(dir + ": campaign seed " + std::to_string(seed) + " differs from " +
                       std::to_string(*campaign_seed) +
                       " of the other chains; aggregate one "
                       "campaign at a time");
    campaign_seed = seed;
    // Chains written before the classifier choice existed trained PET.
    const std::string clf = res.contains("config") && res["config"].is_object()
                                ? res["config"].value("classifier", std::string("pet"))
                                : std::string("pet");
    classifiers.insert(clf);
    const std::optional<Variation> variation = parseVariation(res, dir + "/" + kChainResultFile);
    ChainGroup& g = groups[variation ? variation->name : std::string()];
    if (g.first_chain.empty()) {
      g.variation = variation;
      g.first_chain = dir;
    } else if (!(g.variation == variation)) {
      throw InputError(dir + "/" + kChainResultFile + ": variation '" + variation->name +
                       "' is described differently (type, source, direction or symmetrise) in " +
                       g.first_chain + "/" + kChainResultFile +
                       "; give every chain of a variation the same description");
    }
    const nlohmann::json unfolding = unfoldingOf(res);
    if (g.unfolding.is_null()) {
      g.unfolding = unfolding;
    } else if (unfolding != g.unfolding) {
      // Replicas and members of one unfolding only: another input, iteration count,
      // configuration or foundation would enter the band as if it were a fluctuation.
      throw InputError(dir + ": unfolds otherwise than " + g.first_chain + " (" +
                       firstDifference(unfolding, g.unfolding) +
                       "); aggregate the chains of one unfolding at a time");
    }
    // The same paths, but did they hold the same files? (Chains written before the record
    // have none and are taken on their paths.)
    const nlohmann::json read = res.value("inputs", nlohmann::json());
    if (g.inputs.is_null()) {
      g.inputs = read;
    } else if (!read.is_null() && read != g.inputs) {
      const std::string key = firstDifference(read, g.inputs);
      const std::string file = key.substr(0, key.find('.'));
      throw InputError(dir + ": read another version of its " + file + " file " +
                       res.value(file, std::string("?")) + " than " + g.first_chain + " (" + key +
                       "): the file changed between the chains; rerun them on one version of it");
    }
    if (!g.seen.insert({r, m}).second) {
      logWarn("aggregate: {} repeats replica {} member {}; ignored", dir, r, m);
      continue;
    }
    ChainHistograms h = readChainHistograms(dir);
    if (g.prior.empty()) g.prior = h.prior;
    for (size_t o = 0; o < h.unfolded.size(); ++o)
      if (h.unfolded[o].edges != g.prior[o].edges)
        throw InputError(dir + ": binning of " + h.unfolded[o].name + " differs from " +
                         g.first_chain +
                         (variation ? " (both of variation '" + variation->name +
                                          "'); rerun the variation's chains with one binning"
                                    : std::string()));
    ReplicaSum& acc = g.replicas[r];
    std::vector<std::vector<double>> member_density;
    for (const auto& u : h.unfolded) member_density.push_back(density(u.sumw, u.edges));
    acc.member_density[m] = std::move(member_density);
    if (acc.sumw.empty()) {
      for (const auto& u : h.unfolded) {
        acc.sumw.push_back(u.sumw);
        acc.sumw2.push_back(u.sumw2);
      }
    } else {
      for (size_t o = 0; o < h.unfolded.size(); ++o)
        for (size_t b = 0; b < h.unfolded[o].sumw.size(); ++b) {
          acc.sumw[o][b] += h.unfolded[o].sumw[b];
          acc.sumw2[o][b] += h.unfolded[o].sumw2[b];
        }
    }
    ++acc.members;
    ++g.chains;
    g.member_dirs[r].push_back(dir);
    g.mc.insert(res.contains("mc") && res["mc"].is_string() ? res["mc"].get<std::string>() : "");
    const auto warm = res.find("warm_from");
    g.warm_started = g.warm_started ||
                     (warm != res.end() && warm->is_string() && !warm->get<std::string>().empty());
    g.data.insert(res.contains("data") && res["data"].is_string() ? res["data"].get<std::string>()
                                                                  : "");
  }
  progress.update(read_chains);
  progress.finish();
  if (!groups.count(""))
    throw InputError(
        "aggregate: only variation chains under the given directories; the nominal chains "
        "(result.json without \"variation\") are needed to aggregate variations");
  const ChainGroup& nominal_group = groups.at("");
  const std::map<int, ReplicaSum>& replicas = nominal_group.replicas;
  const std::vector<ObservableHistogram>& prior = nominal_group.prior;
  const size_t used_chains = nominal_group.chains;
  const Systematics sys = checkVariations(groups);
  // The statistical band's spread: over the bootstrap replicas (r >= 1) when there are two or
  // more of them, else over every replica (replica 0 included).
  const size_t bootstrap_replicas =
      replicas.size() - static_cast<size_t>(replicas.count(0) ? 1 : 0);
  const bool band_from_bootstrap = bootstrap_replicas >= 2;
  const size_t band_replicas = band_from_bootstrap ? bootstrap_replicas : replicas.size();
  if (!band_from_bootstrap && replicas.size() > 1)
    logWarn(
        "aggregate: {} replicas, of which {} bootstrap replica: the statistical band is the spread "
        "of all of them, replica 0 (the data as measured) included, and too narrow; run 2 or more "
        "bootstrap replicas",
        replicas.size(), bootstrap_replicas);
  std::optional<TruthHistograms> truth;
  if (truth_path) truth = readTruth(*truth_path, prior);
  std::optional<TruthHistograms> closure_truth;
  if (!sys.plan.non_closure.empty())
    closure_truth = readTruth(*groups.at(sys.plan.non_closure).data.begin(), prior);
  // The chains' training noise: estimated from the members of a replica (two or more).
  McTrainingNoise mc_training = McTrainingNoise::kNotRemoved;
  nlohmann::json mc_stat_training = nullptr;  // summary.json: how the MC statistics were treated
  if (!sys.plan.mc_bootstrap.empty()) {
    const ChainGroup& mc = groups.at(sys.plan.mc_bootstrap);
    if (mc.warm_started)
      logWarn(
          "aggregate: the chains of MC-statistics variation '{}' ({}) were warm-started from the "
          "nominal chains of their replicas, each trained on that replica's data-bootstrap draw: "
          "its covariance carries those draws' fluctuations as well; rerun it with \"warm_start\": "
          "false (the default for mc_bootstrap)",
          sys.plan.mc_bootstrap, mc.first_chain);
    const bool own = hasMemberPairs(mc.replicas);
    const bool removed = mc.replicas.size() >= 2 && (own || hasMemberPairs(replicas));
    if (removed)
      mc_training = own ? McTrainingNoise::kFromMcBootstrap : McTrainingNoise::kFromNominal;
    mc_stat_training = {
        {"removed", removed},
        {"estimated_from",
         removed ? nlohmann::json(own ? "mc_bootstrap" : "nominal") : nlohmann::json()}};
    if (removed)
      logInfo(
          "aggregate: the chains' training noise (from the {} chains' members) is removed from "
          "the MC-statistics covariance of '{}'; the statistical covariance keeps it, so the "
          "total counts it once",
          own ? "mc_bootstrap" : "nominal", sys.plan.mc_bootstrap);
    else if (mc.replicas.size() >= 2)
      logWarn(
          "aggregate: the MC-statistics covariance of '{}' and the statistical covariance both "
          "contain the chains' training noise, and the total counts it twice: no replica has two "
          "members to estimate it from; run members >= 2 in the nominal (or in '{}') to have it "
          "removed",
          sys.plan.mc_bootstrap, sys.plan.mc_bootstrap);
  }
  if (groups.size() > 1)
    logInfo("aggregate: {} nominal chains, {} replicas; {} variation(s)", used_chains,
            replicas.size(), groups.size() - 1);
  else
    logInfo("aggregate: {} chains, {} replicas", used_chains, replicas.size());
  // Checked before anything is written: a chain whose `final` does not fit its simulation.
  std::vector<WeightGroup> weight_groups;
  for (const auto& [name, g] : groups) {
    WeightGroup wg{name, g.variation ? variationTypeName(g.variation->type) : "nominal", g.mc,
                   g.member_dirs};
    if (name.empty())
      weight_groups.insert(weight_groups.begin(), std::move(wg));
    else
      weight_groups.push_back(std::move(wg));
  }
  std::optional<EventWeightsPlan> weights_plan;
  if (options.event_weights != EventWeightsChoice::kNone)
    weights_plan =
        planEventWeights(weight_groups, options.event_weights == EventWeightsChoice::kCentral);
  if (weights_plan && options.event_weights == EventWeightsChoice::kCentral) {
    if (weights_plan->columns.empty()) {
      logWarn(
          "aggregate: no central result to write (the nominal has no replica 0); no "
          "event_weights.h5");
      weights_plan.reset();
    }
  }

  // 2. Bands per observable (everything computed before anything is written).
  nlohmann::json summary = {
      {"replicas", replicas.size()},
      {"band_replicas", band_replicas},
      {"chains", used_chains},
      {"campaign_seed", *campaign_seed},
      {"classifier", classifiers.size() == 1 ? *classifiers.begin() : std::string("mixed")},
      {"truth", truth_path ? nlohmann::json(*truth_path) : nlohmann::json()},
      {"observables", nlohmann::json::object()}};
  summary["variations"] = nlohmann::json::array();
  if (!mc_stat_training.is_null()) summary["mc_stat_training_noise"] = mc_stat_training;
  if (!sys.plan.sources.empty() || !sys.plan.non_closure.empty())
    summary["shift_noise"] = options.shift_noise == ShiftNoise::kSubtract ? "subtracted" : "kept";
  for (const auto& v : sys.variations) {
    const ChainGroup& g = groups.at(v.name);
    summary["variations"].push_back({{"name", v.name},
                                     {"type", variationTypeName(v.type)},
                                     {"source", v.source},
                                     {"direction", v.direction},
                                     {"chains", g.chains},
                                     {"replicas", g.replicas.size()}});
  }
  struct ObsResult {
    std::string name;
    std::vector<double> edges, prior;
    BandStats band;
    std::vector<std::vector<double>> rows;         // every replica's density
    std::vector<std::vector<double>> spread_rows;  // those the band's spread is over
    SystematicsResult sys;
    std::vector<std::pair<std::string, std::vector<double>>> sigmas;
    std::vector<double> covariance_training;  // the training noise in `covariance`; empty: none
  };
  std::vector<ObsResult> results;
  for (size_t o = 0; o < prior.size(); ++o) {
    ObsResult res;
    res.name = prior[o].name;
    res.edges = prior[o].edges;
    res.prior = density(prior[o].sumw, res.edges);
    const std::map<int, std::vector<double>> nominal_rows =
        replicaDensities(replicas, o, res.edges);
    // The spread is that of the bootstrap replicas: replica 0 is the fit to the data as
    // measured (weights 1), not a draw, and would narrow the band by (R-1)/R in variance.
    // The central value is the mean over every replica.
    BandAccumulator spread(prior[o].bins());
    for (const auto& [r, row] : nominal_rows) {
      res.rows.push_back(row);
      if (band_from_bootstrap ? r != 0 : true) spread.add(row);
    }
    res.band = spread.compute();
    res.band.mean = meanOverReplicas(nominal_rows);
    res.spread_rows = spread.rows();
    const std::optional<std::vector<double>> per_member =
        memberCovariance(replicas, o, res.band.bins);
    if (per_member)
      res.covariance_training = trainingNoiseOfReplicas(
          *per_member, replicas, [&](int r) { return band_from_bootstrap ? r != 0 : true; });
    res.sys = computeSystematics(o, res.edges, nominal_rows, res.band, groups, sys, closure_truth,
                                 mc_training, per_member, options.shift_noise);
    res.sigmas = uncertaintySigmas(res.band, res.sys);
    nlohmann::json js = {{"bins", prior[o].bins()}};
    if (truth) {
      data::Binning binning{res.edges};
      const auto& t = truth->density[o];
      js["delta_prior"] = data::triangularDiscriminator(res.prior, t, binning);
      js["delta_unfolded"] = data::triangularDiscriminator(res.band.mean, t, binning);
      std::vector<double> per_replica;
      for (const auto& row : res.spread_rows)
        per_replica.push_back(data::triangularDiscriminator(row, t, binning));
      double mean = 0, var = 0;
      for (double d : per_replica) mean += d;
      mean /= per_replica.size();
      for (double d : per_replica) var += (d - mean) * (d - mean);
      js["delta_unfolded_err"] =
          per_replica.size() > 1 ? std::sqrt(var / (per_replica.size() - 1)) : 0.0;
      js["coverage_68"] = coverage(t, res.band.mean, res.band.p16, res.band.p84);
      js["coverage_95"] = coverage(t, res.band.mean, res.band.p2_5, res.band.p97_5);
      // The floor, from the nominal (lowest) replica's weights: Σw² of its members, averaged.
      // Members reweight the same events, so one member's Σw² (the mean over members), not
      // the Σw² of M independent samples, measures the nominal's statistical precision.
      const ReplicaSum& nominal = replicas.begin()->second;
      std::vector<double> w1 = nominal.sumw[o], w2 = nominal.sumw2[o];
      for (size_t b = 0; b < w1.size(); ++b) {
        w1[b] /= nominal.members;
        w2[b] /= nominal.members;
      }
      const std::vector<double> var_unfolded = densityVariance(w1, w2, res.edges);
      js["delta_floor"] = deltaFloor(res.band.mean, var_unfolded, t, truth->variance[o], res.edges);
      // Fraction of the prior-to-truth shift of the mean that the unfolding recovered.
      const double m_prior = densityMean(res.prior, res.edges);
      const double m_truth = densityMean(t, res.edges);
      const double m_unfolded = densityMean(res.band.mean, res.edges);
      js["mean_prior"] = m_prior;
      js["mean_truth"] = m_truth;
      js["mean_unfolded"] = m_unfolded;
      const double shift = m_truth - m_prior;
      const double scale = std::max(std::abs(m_truth), std::abs(m_prior));
      js["shift_recovered"] = std::abs(shift) > 1e-9 * std::max(scale, 1e-300)
                                  ? nlohmann::json((m_unfolded - m_prior) / shift)
                                  : nlohmann::json();
      // How many standard errors the prior-to-truth shift is: below ~2 the recovered
      // fraction is noise (the prior is already compatible with the truth).
      const double err =
          std::hypot(truth->mean_error[o], meanError(prior[o].sumw, prior[o].sumw2, res.edges));
      js["shift_significance"] = err > 0 ? nlohmann::json(std::abs(shift) / err) : nlohmann::json();
      // The total band nominal ± k sigma_total, sigma from the total covariance's diagonal.
      for (const auto& [key, k] : {std::pair<const char*, double>{"coverage_68_total", 1.0},
                                   std::pair<const char*, double>{"coverage_95_total", 1.96}}) {
        std::vector<double> lo(res.band.bins), hi(res.band.bins);
        for (size_t b = 0; b < res.band.bins; ++b) {
          lo[b] = res.band.mean[b] - k * res.sys.std_total[b];
          hi[b] = res.band.mean[b] + k * res.sys.std_total[b];
        }
        js[key] = coverage(t, res.band.mean, lo, hi);
      }
    } else {
      for (const char* k :
           {"delta_prior", "delta_unfolded", "delta_unfolded_err", "coverage_68", "coverage_95",
            "delta_floor", "mean_prior", "mean_truth", "mean_unfolded", "shift_recovered",
            "shift_significance", "coverage_68_total", "coverage_95_total"})
        js[k] = nullptr;
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
    js["shift_error"] = nlohmann::json::object();
    for (const auto& src : res.sys.sources) {
      const double rel = src.noise.empty()
                             ? std::nan("")
                             : relativeRms(sqrtDiagonal(src.noise, res.band.bins), res.band.mean);
      js["shift_error"][src.name] = std::isnan(rel) ? nlohmann::json() : nlohmann::json(rel);
    }
    summary["observables"][res.name] = js;
    results.push_back(std::move(res));
  }
  // Whether a source has chains to estimate its noise from is the same for every observable.
  if (options.shift_noise == ShiftNoise::kSubtract && !results.empty()) {
    std::string without;
    for (const auto& src : results.front().sys.sources)
      if (src.noise.empty()) without += (without.empty() ? "" : ", ") + src.name;
    if (!without.empty())
      logWarn(
          "aggregate: --shift-noise subtract: no noise estimate for {} (fewer than two chains "
          "that differ from the nominal's, or from the other side's, in training only): their "
          "s s^T is kept; run such variations with members >= 2 or more replicas",
          without);
    else if (!results.front().sys.sources.empty())
      logInfo("aggregate: each source's shift noise is taken off in quadrature per bin");
  }

  // 3. Write: bands.h5, summary.json, figures.
  // Every output goes to a temporary first and all are renamed into place together at the
  // end: a run that fails changes nothing (not bands.h5 of this run beside an earlier
  // summary.json), and a directory it made is removed again.
  std::vector<AtomicFile> staged;
  {
    AtomicFile out(out_dir + "/bands.h5");
    const std::string path = out.tempPath();
    data::H5Handle f;
    try {
      f = data::h5Create(path);
    } catch (const Error&) {
      throw Error(path + ": cannot create HDF5 file (check the directory is writable)");
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
      if (truth) put(r.name + "/truth", truth->density[o]);
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
        if (!src.covariance_raw.empty()) put(g + "/covariance_raw", src.covariance_raw, {nb, nb});
      }
      for (const auto& [name, mean] : sr.variation_mean)
        put(r.name + "/variations/" + name + "/nominal", mean);
      if (!sr.closure_shift.empty()) {
        put(r.name + "/non_closure/shift", sr.closure_shift);
        put(r.name + "/non_closure/truth", sr.closure_truth);
        put(r.name + "/non_closure/unfolded", sr.closure_unfolded);
      }
    }
    data::h5WriteInt64Attr(f.get(), "replicas", static_cast<int64_t>(replicas.size()));
    data::h5WriteInt64Attr(f.get(), "band_replicas", static_cast<int64_t>(band_replicas));
    data::h5WriteInt64Attr(f.get(), "chains", static_cast<int64_t>(used_chains));
    data::h5WriteStringAttr(f.get(), "campaign_seed", std::to_string(*campaign_seed));
    data::h5WriteStringAttr(f.get(), "content",
                            "unit-area densities per bin; replicas = mean over members of each "
                            "replica (0: the data as measured, >= 1: bootstrap); nominal = mean "
                            "over the replicas; std, percentiles, covariance, correlation over "
                            "the band_replicas bootstrap replicas");
    f.close(path + ": closing");
    staged.push_back(std::move(out));
  }
  if (weights_plan)
    staged.push_back(writeEventWeights(*weights_plan, out_dir + "/event_weights.h5"));
  if (options.plots && !plot::gnuplotAvailable()) {
    logWarn("aggregate: gnuplot (with pngcairo) is not installed; no figures in {}", out_dir);
  } else if (options.plots) {
    // One gnuplot process for every observable's figure.
    plot::GnuplotBatch batch;
    for (size_t o = 0; o < results.size(); ++o) {
      const auto& r = results[o];
      plot::BandPlot fig;
      fig.title = r.name;
      fig.xlabel = data::observableLabel(r.name);
      fig.edges = r.edges;
      fig.nominal = r.band.mean;
      fig.p16 = r.band.p16;
      fig.p84 = r.band.p84;
      fig.p2_5 = r.band.p2_5;
      fig.p97_5 = r.band.p97_5;
      if (truth) fig.truth = truth->density[o];
      fig.prior = r.prior;
      fig.replicas = r.band.replicas;
      if (groups.size() > 1) fig.total_sigma = r.sys.std_total;  // with variations only
      batch.add(r.name, fig);
      // The training noise, a part of stat, beside it when it could be estimated.
      std::vector<std::pair<std::string, std::vector<double>>> drawn = r.sigmas;
      if (!r.covariance_training.empty())
        drawn.insert(drawn.begin() + 1,
                     {"stat: training noise", sqrtDiagonal(r.covariance_training, r.band.bins)});
      batch.add(r.name + "_breakdown", breakdownFigure(r.name, r.edges, r.band.mean, drawn));
    }
    for (const auto& [name, png] : batch.render()) {
      staged.emplace_back(out_dir + "/" + name + ".png");
      staged.back().write(png);
    }
  }
  // summary.json last: it lists what this aggregation wrote.
  summary["outputs"] = nlohmann::json::array();
  for (const AtomicFile& f : staged)
    summary["outputs"].push_back(fs::path(f.path()).filename().string());
  summary["outputs"].push_back("summary.json");
  staged.emplace_back(out_dir + "/summary.json");
  staged.back().write(jsonText(summary));
  for (AtomicFile& f : staged) f.commit();
  // 4. What an earlier aggregation into this directory wrote and this one did not (its
  //    event_weights.h5 with other columns, figures of older bands) is removed: the directory
  //    holds one aggregation.
  std::vector<std::string> written;
  for (const AtomicFile& f : staged) written.push_back(f.path());
  std::vector<std::string> ours{out_dir + "/event_weights.h5"};
  for (const auto& r : results) {
    ours.push_back(out_dir + "/" + r.name + ".png");
    ours.push_back(out_dir + "/" + r.name + "_breakdown.png");
  }
  removeOutputsNotWritten(ours, written, "aggregate");
  if (weights_plan)
    logInfo("aggregate: wrote {}/event_weights.h5 ({} columns of {} events)", out_dir,
            weights_plan->columns.size(), weights_plan->rows);
  return summary;
}

}  // namespace foldfarm::ensembles
