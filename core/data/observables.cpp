#include "core/data/observables.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace foldfarm::data {
namespace {

constexpr double kPi = 3.14159265358979323846;

struct Pseudo {
  double px = 0, py = 0, pz = 0, e = 0;
  double pt2 = 0, y = 0, phi = 0;
};

Pseudo makePseudo(double px, double py, double pz, double e) {
  Pseudo p{px, py, pz, e};
  p.pt2 = px * px + py * py;
  p.phi = (px == 0 && py == 0) ? 0.0 : std::atan2(py, px);
  if (p.phi < 0) p.phi += 2 * kPi;
  const double ez = e - pz, ep = e + pz;
  if (ez > 0 && ep > 0 && p.pt2 > 0) {
    p.y = 0.5 * std::log(ep / ez);
  } else {
    // Numerically lightlike along the beam or E < |pz| from rounding: fall back to eta.
    const double pt = std::sqrt(p.pt2);
    p.y = pt > 0 ? std::asinh(pz / pt) : (pz >= 0 ? 1e4 : -1e4);
  }
  return p;
}

Pseudo makePseudo(const FourVector& v) {
  return makePseudo(v.px, v.py, v.pz, v.e);
}

double deltaR2(const Pseudo& a, const Pseudo& b) {
  double dphi = std::fabs(a.phi - b.phi);
  if (dphi > kPi) dphi = 2 * kPi - dphi;
  const double dy = a.y - b.y;
  return dy * dy + dphi * dphi;
}

double mass(const Pseudo& p) {
  const double m2 = p.e * p.e - p.pt2 - p.pz * p.pz;
  return m2 > 0 ? std::sqrt(m2) : 0.0;
}

enum class Algo { kCambridgeAachen, kKtWta };

// Pairwise sequential recombination with cached geometric nearest neighbours (FastJet's
// "N2Plain" idea): O(n^2) overall. For kT the pair minimising min(pt_i^2, pt_j^2) dR_ij^2 is
// always a geometric nearest-neighbour pair, so one cache serves both algorithms.
// `on_merge(a, b, merged)` is called with the slot contents before the merge;
// `on_count(n, slots)` after every merge with the remaining count.
template <typename OnMerge, typename OnCount>
void recombine(std::vector<Pseudo> slots, Algo algo, int stop_at, OnMerge on_merge,
               OnCount on_count) {
  int n = static_cast<int>(slots.size());
  std::vector<int> nn(n, -1);
  std::vector<double> nnd(n, std::numeric_limits<double>::infinity());
  auto findNN = [&](int k) {
    nn[k] = -1;
    nnd[k] = std::numeric_limits<double>::infinity();
    for (int m = 0; m < n; ++m) {
      if (m == k) continue;
      const double d = deltaR2(slots[k], slots[m]);
      if (d < nnd[k]) {
        nnd[k] = d;
        nn[k] = m;
      }
    }
  };
  for (int k = 0; k < n; ++k) findNN(k);
  std::vector<char> redo(n);
  while (n > stop_at && n > 1) {
    int best = -1;
    double bestd = std::numeric_limits<double>::infinity();
    for (int k = 0; k < n; ++k) {
      double d = nnd[k];
      if (algo == Algo::kKtWta) d *= std::min(slots[k].pt2, slots[nn[k]].pt2);
      if (d < bestd || best < 0) {
        bestd = d;
        best = k;
      }
    }
    const int a = std::min(best, nn[best]), b = std::max(best, nn[best]);
    Pseudo merged;
    if (algo == Algo::kCambridgeAachen) {
      const Pseudo& p = slots[a];
      const Pseudo& q = slots[b];
      merged = makePseudo(p.px + q.px, p.py + q.py, p.pz + q.pz, p.e + q.e);
    } else {
      // Winner-take-all: the harder one's direction, scalar sum of pT.
      const Pseudo& hard = slots[a].pt2 >= slots[b].pt2 ? slots[a] : slots[b];
      const double pt = std::sqrt(slots[a].pt2) + std::sqrt(slots[b].pt2);
      merged = hard;
      merged.pt2 = pt * pt;
    }
    on_merge(a, b, merged);
    slots[a] = merged;
    const int last = n - 1;
    if (b != last) {
      slots[b] = slots[last];
      nn[b] = nn[last];
      nnd[b] = nnd[last];
    }
    --n;
    for (int k = 0; k < n; ++k) {
      redo[k] = 0;
      if (k == a) continue;
      if (nn[k] == a || nn[k] == b) {
        redo[k] = 1;
      } else if (nn[k] == last) {
        nn[k] = b;
      }
    }
    findNN(a);
    for (int k = 0; k < n; ++k) {
      if (k == a) continue;
      if (redo[k]) {
        findNN(k);
      } else {
        const double d = deltaR2(slots[k], slots[a]);
        if (d < nnd[k]) {
          nnd[k] = d;
          nn[k] = a;
        }
      }
    }
    on_count(n, slots);
  }
}

struct Node {
  Pseudo p;
  int c1 = -1, c2 = -1;
};

}  // namespace

const std::vector<ObservableInfo>& observableTable() {
  static const std::vector<ObservableInfo> table = {
      {"mass", "jet mass [GeV]"},
      {"width", "jet width"},
      {"multiplicity", "constituent multiplicity"},
      {"lnrho", "ln ρ = 2 ln(m_SD / pT)"},
      {"zg", "soft-drop momentum fraction z_g"},
      {"tau21", "N-subjettiness ratio τ₂₁"},
      {"jet_pt", "jet pT [GeV]"},
      {"jet_eta", "jet eta"},
      {"jet_mass", "jet mass from the jet features [GeV]"},
      {"jet_multiplicity", "jet multiplicity (jet features)"},
  };
  return table;
}

std::vector<std::string> substructureObservableNames() {
  std::vector<std::string> n;
  for (int k = 0; k < kNumSubs; ++k) n.push_back(observableTable()[static_cast<size_t>(k)].name);
  return n;
}

int observableIndex(const std::string& name) {
  const auto& t = observableTable();
  for (size_t i = 0; i < t.size(); ++i)
    if (name == t[i].name) return static_cast<int>(i);
  return -1;
}

std::string observableLabel(const std::string& name) {
  const int i = observableIndex(name);
  return i < 0 ? name : observableTable()[static_cast<size_t>(i)].label;
}

const char* observableName(int index) {
  return index >= 0 && index < kNumSubs ? observableTable()[static_cast<size_t>(index)].name
                                        : "unknown";
}

SoftDropResult softDrop(const std::vector<FourVector>& parts, double zcut) {
  SoftDropResult r;
  if (parts.empty()) return r;
  std::vector<Node> nodes;
  nodes.reserve(2 * parts.size());
  std::vector<Pseudo> slots;
  std::vector<int> slot_node;
  for (const auto& v : parts) {
    slots.push_back(makePseudo(v));
    nodes.push_back({slots.back()});
    slot_node.push_back(static_cast<int>(nodes.size()) - 1);
  }
  recombine(
      slots, Algo::kCambridgeAachen, 1,
      [&](int a, int b, const Pseudo& merged) {
        nodes.push_back({merged, slot_node[a], slot_node[b]});
        slot_node[a] = static_cast<int>(nodes.size()) - 1;
        slot_node[b] = slot_node.back();
        slot_node.pop_back();
      },
      [](int, const std::vector<Pseudo>&) {});
  int cur = slot_node[0];
  while (nodes[cur].c1 >= 0) {
    const Node& n1 = nodes[nodes[cur].c1];
    const Node& n2 = nodes[nodes[cur].c2];
    const double pt1 = std::sqrt(n1.p.pt2), pt2 = std::sqrt(n2.p.pt2);
    const double z = std::min(pt1, pt2) / (pt1 + pt2);
    if (z > zcut) {
      r.zg = z;
      r.groomed_mass = mass(nodes[cur].p);
      return r;
    }
    cur = pt1 >= pt2 ? nodes[cur].c1 : nodes[cur].c2;
  }
  r.groomed_mass = mass(nodes[cur].p);
  r.zg = 0;
  return r;
}

namespace {

// tau_1 and tau_2 from one exclusive-kT (WTA) clustering.
std::pair<double, double> tau12(const std::vector<Pseudo>& ps) {
  if (ps.size() <= 1) return {0.0, 0.0};
  std::vector<Pseudo> axes2;
  std::vector<Pseudo> axes1;
  recombine(
      ps, Algo::kKtWta, 1, [](int, int, const Pseudo&) {},
      [&](int n, const std::vector<Pseudo>& slots) {
        if (n == 2) axes2.assign(slots.begin(), slots.begin() + 2);
        if (n == 1) axes1.assign(slots.begin(), slots.begin() + 1);
      });
  if (ps.size() == 2) axes2 = ps;
  double t1 = 0, t2 = 0;
  for (const Pseudo& p : ps) {
    const double pt = std::sqrt(p.pt2);
    t1 += pt * std::sqrt(deltaR2(p, axes1[0]));
    t2 += pt * std::sqrt(std::min(deltaR2(p, axes2[0]), deltaR2(p, axes2[1])));
  }
  return {t1, t2};
}

}  // namespace

double nSubjettiness(const std::vector<FourVector>& parts, int n_axes) {
  std::vector<Pseudo> ps;
  for (const auto& v : parts) ps.push_back(makePseudo(v));
  if (static_cast<int>(ps.size()) <= n_axes) return 0.0;
  std::vector<Pseudo> axes;
  recombine(
      ps, Algo::kKtWta, n_axes, [](int, int, const Pseudo&) {},
      [&](int n, const std::vector<Pseudo>& slots) {
        if (n == n_axes) axes.assign(slots.begin(), slots.begin() + n_axes);
      });
  double tau = 0;
  for (const Pseudo& p : ps) {
    double best = std::numeric_limits<double>::infinity();
    for (const Pseudo& a : axes) best = std::min(best, deltaR2(p, a));
    tau += std::sqrt(p.pt2) * std::sqrt(best);
  }
  return tau;
}

ObservableValues computeObservables(const std::vector<FourVector>& parts) {
  ObservableValues out{};
  out[kObsLnRho] = kLnRhoFloor;
  if (parts.empty()) return out;
  FourVector J;
  for (const auto& v : parts) J += v;
  const double jpt = J.pt(), jeta = J.eta(), jphi = J.phi();
  out[kObsMass] = J.m();
  double w = 0;
  for (const auto& v : parts) w += v.pt() * std::hypot(v.eta() - jeta, wrapPhi(v.phi() - jphi));
  out[kObsWidth] = jpt > 0 ? w / jpt : 0.0;
  out[kObsMultiplicity] = static_cast<double>(parts.size());
  const SoftDropResult sd = softDrop(parts);
  out[kObsLnRho] =
      (sd.groomed_mass > 0 && jpt > 0) ? 2.0 * std::log(sd.groomed_mass / jpt) : kLnRhoFloor;
  out[kObsLnRho] = std::max(out[kObsLnRho], kLnRhoFloor);
  out[kObsZg] = sd.zg;
  std::vector<Pseudo> ps;
  ps.reserve(parts.size());
  for (const auto& v : parts) ps.push_back(makePseudo(v));
  const auto [t1, t2] = tau12(ps);
  out[kObsTau21] = t1 > 0 ? t2 / t1 : 0.0;
  return out;
}

ObservableValues observablesFromFeatures(const float* particles, int64_t P, const float* jet) {
  std::vector<FourVector> parts;
  parts.reserve(static_cast<size_t>(P));
  const double jeta = jet[1];
  for (int64_t j = 0; j < P; ++j) {
    const float* f = particles + j * kNumParticleFeatures;
    if (f[2] == 0.0f) continue;
    const double pt = std::exp(static_cast<double>(f[3]));
    const double e = std::exp(static_cast<double>(f[5]));
    const double eta = jeta + f[0], phi = f[1];
    FourVector v;
    v.px = pt * std::cos(phi);
    v.py = pt * std::sin(phi);
    v.pz = pt * std::sinh(eta);
    const double p = pt * std::cosh(eta);
    v.e = std::max(e, p);  // rounding can make E < |p| by a hair: treat as massless
    parts.push_back(v);
  }
  return computeObservables(parts);
}

std::vector<float> computeObservables(const JetArrays& a) {
  std::vector<float> out(static_cast<size_t>(a.n * kNumSubs));
  for (int64_t i = 0; i < a.n; ++i) {
    const ObservableValues v = observablesFromFeatures(a.particle(i, 0), a.P, a.jet(i));
    for (int k = 0; k < kNumSubs; ++k) out[i * kNumSubs + k] = static_cast<float>(v[k]);
  }
  return out;
}

}  // namespace foldfarm::data
