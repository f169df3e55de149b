#include "core/data/synth.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>

#include "core/base/error.hpp"
#include "core/base/seed.hpp"
#include "core/data/observables.hpp"
#include "core/data/rng.hpp"

namespace foldfarm::data {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kCF = 4.0 / 3.0, kCA = 3.0;
constexpr double kMZ = 91.1876;
constexpr double kBeta0 = 23.0 / 3.0;  // n_f = 5
// Decay partons must lie within kMatch * R of the jet axis (JetClass-like truth matching,
// with margin so that their radiation stays in the jet).
constexpr double kMatch = 0.6;

struct TuneParams {
  double alpha_mz;       // coupling at the Z mass (one-loop running below)
  double alpha_freeze;   // running coupling frozen at this value in the infrared
  double q0;             // shower cut-off on the emission kT (GeV)
  double frag_a;         // hadron energy fraction z ~ (1 + a)(1 - z)^a
  double e_stop;         // a parton remnant below this energy becomes the last hadron (GeV)
  double kick;           // Gaussian sigma of hadron transverse momentum (GeV)
  double p_photon_pair;  // probability a hadron is a pi0 -> two photons
  double p_neutral;      // probability a hadron is a neutral hadron
};

TuneParams tuneParams(Tune t) {
  if (t == Tune::kSim) return {0.118, 0.45, 1.8, 0.7, 2.5, 0.30, 0.24, 0.10};
  // "Another generator": between sim and data in the shower, with a hadronisation of its own.
  if (t == Tune::kAlt) return {0.121, 0.47, 1.65, 0.85, 2.3, 0.36, 0.22, 0.12};
  return {0.125, 0.50, 1.5, 0.9, 2.2, 0.40, 0.26, 0.11};
}

// 3-vectors and four-vectors as plain arrays keep the hot loops simple.
struct V4 {
  double e, x, y, z;
};

V4 add(const V4& a, const V4& b) {
  return {a.e + b.e, a.x + b.x, a.y + b.y, a.z + b.z};
}
double mass2(const V4& p) {
  return p.e * p.e - p.x * p.x - p.y * p.y - p.z * p.z;
}

V4 boost(const V4& p, double bx, double by, double bz) {
  const double b2 = bx * bx + by * by + bz * bz;
  if (b2 <= 0) return p;
  const double g = 1.0 / std::sqrt(1.0 - b2);
  const double bp = bx * p.x + by * p.y + bz * p.z;
  const double g2 = (g - 1.0) / b2;
  const double f = g2 * bp + g * p.e;
  return {g * (p.e + bp), p.x + f * bx, p.y + f * by, p.z + f * bz};
}

// Rotation taking +z to the unit vector (sin t cos f, sin t sin f, cos t).
struct Rotation {
  double ct, st, cf, sf;
  static Rotation toward(double x, double y, double z) {
    const double r = std::sqrt(x * x + y * y + z * z);
    const double ct = z / r, st = std::sqrt(std::max(0.0, 1 - ct * ct));
    const double rt = std::hypot(x, y);
    return {ct, st, rt > 0 ? x / rt : 1.0, rt > 0 ? y / rt : 0.0};
  }
  V4 apply(const V4& p) const {
    const double x1 = p.x * ct + p.z * st, z1 = -p.x * st + p.z * ct;
    return {p.e, x1 * cf - p.y * sf, x1 * sf + p.y * cf, z1};
  }
};

struct GenP {
  V4 p;
  float charge;
  ParticleType type;
};

struct Parton {
  double e;
  double tx, ty;  // small-angle direction offset from the parton frame's z axis
  double theta_max;
  bool gluon;
  bool heavy;
};

class Generator {
 public:
  Generator(const SynthConfig& cfg, Rng& rng) : cfg_(cfg), tp_(tuneParams(cfg.tune)), rng_(rng) {}

  double alpha(double kt) const {
    const double denom = 1.0 + kBeta0 * tp_.alpha_mz / (2 * kPi) * std::log(kt / kMZ);
    if (denom <= 0) return tp_.alpha_freeze;
    return std::min(tp_.alpha_freeze, tp_.alpha_mz / denom);
  }

  // Angular-ordered shower + fragmentation of one parton of energy `e` moving along +z,
  // appending hadrons (in the parton frame) to `out`.
  void showerAndHadronise(double e, bool gluon, bool heavy, double theta_max,
                          std::vector<GenP>& out) {
    stack_.clear();
    stack_.push_back({e, 0, 0, theta_max, gluon, heavy});
    const double amax = alpha(tp_.q0);
    while (!stack_.empty()) {
      Parton p = stack_.back();
      stack_.pop_back();
      const double C = p.gluon ? kCA : kCF;
      double ln_theta = std::log(p.theta_max);
      while (true) {
        const double z_abs = tp_.q0 / (p.e * std::exp(ln_theta));
        if (z_abs >= 0.5) break;
        const double ln_inv = -std::log(z_abs);
        // Per unit ln(theta); gluons sample the softer daughter (z <= 1/2) of a symmetric
        // splitting function, so both halves of z in (0, 1) are counted: twice the rate.
        const double rate = (p.gluon ? 2.0 : 1.0) * 2.0 * amax * C / kPi * 2.0 * ln_inv;
        ln_theta -= rng_.exponential() / rate;
        const double theta = std::exp(ln_theta);
        if (p.e * theta < 4 * tp_.q0) break;  // kT = z(1-z) E theta <= E theta / 4
        const double z = std::exp(-ln_inv * rng_.uniform());
        if (p.gluon && z > 0.5) continue;
        const double kt = z * (1 - z) * p.e * theta;
        if (kt < tp_.q0) continue;
        const double ratio = p.gluon ? (1 - z + z * z) * (1 - z + z * z) / (2 * (1 - z))
                                     : (1 + (1 - z) * (1 - z)) / 2;
        if (rng_.uniform() * amax > ratio * alpha(kt)) continue;
        const double phi = 2 * kPi * rng_.uniform();
        const double cx = std::cos(phi), cy = std::sin(phi);
        Parton g{z * p.e, p.tx + theta * (1 - z) * cx, p.ty + theta * (1 - z) * cy, theta, true,
                 false};
        p.e *= 1 - z;
        p.tx -= theta * z * cx;
        p.ty -= theta * z * cy;
        stack_.push_back(g);
      }
      hadronise(p, out);
    }
  }

  void emitHadron(double e, double tx, double ty, std::vector<GenP>& out, bool heavy_lepton) {
    // Transverse kick, then species.
    // Transverse kick; capped so that hadronisation cannot throw a soft hadron far outside
    // the parton's cone (kick_cap_ is a 3-D angle).
    const double kx = tp_.kick * rng_.normal(), ky = tp_.kick * rng_.normal();
    const double ang = std::sqrt(kx * kx + ky * ky) / e;
    const double f = ang > kick_cap_ ? kick_cap_ / ang : 1.0;
    tx += f * kx / e;
    ty += f * ky / e;
    double m = 0.1396;
    ParticleType type = ParticleType::kChargedHadron;
    float charge = rng_.uniform() < 0.5 ? 1.0f : -1.0f;
    const double u = rng_.uniform();
    if (heavy_lepton) {
      type = u < 0.5 ? ParticleType::kElectron : ParticleType::kMuon;
      m = type == ParticleType::kElectron ? 0.000511 : 0.10566;
    } else if (u < tp_.p_photon_pair) {
      // pi0 -> gamma gamma: energy shared flat, opening ~ m/E.
      const double f = 0.1 + 0.8 * rng_.uniform();
      const double open = 0.135 / e, phi = 2 * kPi * rng_.uniform();
      const double ox = open * std::cos(phi), oy = open * std::sin(phi);
      pushMassless(f * e, tx + (1 - f) * ox, ty + (1 - f) * oy, 0.0f, ParticleType::kPhoton, out);
      pushMassless((1 - f) * e, tx - f * ox, ty - f * oy, 0.0f, ParticleType::kPhoton, out);
      return;
    } else if (u < tp_.p_photon_pair + tp_.p_neutral) {
      type = ParticleType::kNeutralHadron;
      charge = 0;
      m = 0.4976;
    } else if (u > 0.985) {
      type = u > 0.9925 ? ParticleType::kMuon : ParticleType::kElectron;
      m = type == ParticleType::kMuon ? 0.10566 : 0.000511;
    }
    if (e <= 1.02 * m) {  // too soft for its mass: becomes a photon
      pushMassless(e, tx, ty, 0.0f, ParticleType::kPhoton, out);
      return;
    }
    const double pmag = std::sqrt(e * e - m * m);
    const double th = std::sqrt(tx * tx + ty * ty);
    const double st = std::sin(th), ct = std::cos(th);
    const double cphi = th > 0 ? tx / th : 1.0, sphi = th > 0 ? ty / th : 0.0;
    out.push_back({{e, pmag * st * cphi, pmag * st * sphi, pmag * ct}, charge, type});
  }

  void pushMassless(double e, double tx, double ty, float charge, ParticleType type,
                    std::vector<GenP>& out) {
    const double th = std::sqrt(tx * tx + ty * ty);
    const double st = std::sin(th), ct = std::cos(th);
    const double cphi = th > 0 ? tx / th : 1.0, sphi = th > 0 ? ty / th : 0.0;
    out.push_back({{e, e * st * cphi, e * st * sphi, e * ct}, charge, type});
  }

  void hadronise(const Parton& p, std::vector<GenP>& out) {
    double rem = p.e;
    bool first = true;
    while (rem > tp_.e_stop) {
      // z ~ (1 + a)(1 - z)^a by inversion.
      const double z = 1.0 - std::pow(rng_.uniformPos(), 1.0 / (1.0 + tp_.frag_a));
      const double eh = std::max(z * rem, 0.2);
      if (eh >= rem) break;
      const bool lepton = first && p.heavy && rng_.uniform() < 0.2;
      emitHadron(eh, p.tx, p.ty, out, lepton);
      rem -= eh;
      first = false;
    }
    if (rem > 0.05) emitHadron(rem, p.tx, p.ty, out, false);
  }

  // Showers a parton with lab four-momentum k (massless at first); returns its hadrons in
  // the parton frame (z along the parton) and their total.
  struct Prong {
    std::vector<GenP> hadrons;
    V4 total{0, 0, 0, 0};
    double mass = 0;
  };
  Prong showerProng(double e, bool gluon, bool heavy, double theta_max) {
    Prong pr;
    showerAndHadronise(e, gluon, heavy, theta_max, pr.hadrons);
    for (const auto& h : pr.hadrons) pr.total = add(pr.total, h.p);
    pr.mass = std::sqrt(std::max(0.0, mass2(pr.total)));
    return pr;
  }

  // Moves a prong's hadrons so that their total becomes `target` (same mass): boost to the
  // prong's rest frame, rotate +z onto the target direction, boost to the target.
  void placeProng(const Prong& pr, const V4& target, std::vector<GenP>& out) {
    const V4& q = pr.total;
    const Rotation rot = Rotation::toward(target.x, target.y, target.z);
    const double bx = target.x / target.e, by = target.y / target.e, bz = target.z / target.e;
    for (const auto& h : pr.hadrons) {
      V4 v = boost(h.p, -q.x / q.e, -q.y / q.e, -q.z / q.e);
      v = rot.apply(v);
      v = boost(v, bx, by, bz);
      out.push_back({v, h.charge, h.type});
    }
  }

  // Two-body decay of `parent` (mass M) along rest-frame unit direction n into masses m1, m2.
  static bool decay(const V4& parent, double M, const std::array<double, 3>& n, double m1,
                    double m2, V4& d1, V4& d2) {
    if (m1 + m2 >= M) return false;
    const double a = M * M - (m1 + m2) * (m1 + m2), b = M * M - (m1 - m2) * (m1 - m2);
    const double ps = std::sqrt(a * b) / (2 * M);
    V4 r1{std::sqrt(ps * ps + m1 * m1), ps * n[0], ps * n[1], ps * n[2]};
    V4 r2{std::sqrt(ps * ps + m2 * m2), -ps * n[0], -ps * n[1], -ps * n[2]};
    const double bx = parent.x / parent.e, by = parent.y / parent.e, bz = parent.z / parent.e;
    d1 = boost(r1, bx, by, bz);
    d2 = boost(r2, bx, by, bz);
    return true;
  }

  std::array<double, 3> isotropic() {
    const double c = 2 * rng_.uniform() - 1, s = std::sqrt(std::max(0.0, 1 - c * c));
    const double f = 2 * kPi * rng_.uniform();
    return {s * std::cos(f), s * std::sin(f), c};
  }

  // Distance in (eta, phi), the jet-radius metric.
  static double deltaR(const V4& a, const V4& b) {
    const FourVector fa{a.x, a.y, a.z, a.e}, fb{b.x, b.y, b.z, b.e};
    return std::hypot(fa.eta() - fb.eta(), wrapPhi(fa.phi() - fb.phi()));
  }

  static double angle(const V4& a, const V4& b) {
    const double na = std::sqrt(a.x * a.x + a.y * a.y + a.z * a.z);
    const double nb = std::sqrt(b.x * b.x + b.y * b.y + b.z * b.z);
    const double c = (a.x * b.x + a.y * b.y + a.z * b.z) / (na * nb);
    return std::acos(std::clamp(c, -1.0, 1.0));
  }

  double sampleMass(double m0, double width) {
    // Breit-Wigner truncated to +-3 widths.
    for (int i = 0; i < 100; ++i) {
      const double m = m0 + 0.5 * width * std::tan(kPi * (rng_.uniform() - 0.5));
      if (std::fabs(m - m0) < 3 * width) return m;
    }
    return m0;
  }

  double samplePt() {
    const double a = cfg_.pt_min, b = cfg_.pt_max, n = cfg_.pt_power;
    if (!(b > a)) return a;
    const double u = rng_.uniform();
    if (n == 0) return a + (b - a) * u;
    if (std::fabs(n - 1) < 1e-9) return a * std::pow(b / a, u);
    const double ea = std::pow(a, 1 - n), eb = std::pow(b, 1 - n);
    return std::pow(ea + u * (eb - ea), 1 / (1 - n));
  }

  std::vector<Particle> jet(JetClass cls) {
    const double pt = samplePt();
    const double eta = cfg_.eta_max * (2 * rng_.uniform() - 1);
    const double phi = kPi * (2 * rng_.uniform() - 1);
    std::vector<GenP> hadrons;
    const double R = cfg_.jet_radius;
    kick_cap_ = 0.3 * R / std::cosh(eta);
    if (cls == JetClass::kQuark || cls == JetClass::kGluon) {
      const FourVector dir = FourVector::fromPtEtaPhiM(pt, eta, phi, 0);
      // Shower angles are 3-D angles: dR ~ theta * cosh(eta) near the jet axis.
      Prong pr = showerProng(dir.e, cls == JetClass::kGluon, false, R / std::cosh(eta));
      const Rotation rot = Rotation::toward(dir.px, dir.py, dir.pz);
      for (const auto& h : pr.hadrons) hadrons.push_back({rot.apply(h.p), h.charge, h.type});
    } else if (cls == JetClass::kTop) {
      topJet(pt, eta, phi, hadrons);
    } else {
      const double m0 = cls == JetClass::kW ? 80.4 : cls == JetClass::kZ ? 91.2 : 125.0;
      const double w = cls == JetClass::kW ? 2.1 : cls == JetClass::kZ ? 2.5 : 0.01;
      twoProngJet(sampleMass(m0, w), w, pt, eta, phi, cls == JetClass::kHiggs, hadrons);
    }
    // The jet: particles within R of the generated jet axis.
    const FourVector axis = FourVector::fromPtEtaPhiM(pt, eta, phi, 0);
    const double aeta = axis.eta(), aphi = axis.phi();
    std::vector<Particle> out;
    out.reserve(hadrons.size());
    for (const auto& h : hadrons) {
      Particle p;
      p.p = {h.p.x, h.p.y, h.p.z, h.p.e};
      const double deta = p.p.eta() - aeta, dphi = wrapPhi(p.p.phi() - aphi);
      if (deta * deta + dphi * dphi > R * R) continue;
      p.charge = h.charge;
      p.type = h.type;
      out.push_back(p);
    }
    return out;
  }

  void twoProngJet(double M, double width, double pt, double eta, double phi, bool bb,
                   std::vector<GenP>& hadrons) {
    const FourVector res = FourVector::fromPtEtaPhiM(pt, eta, phi, M);
    const V4 P{res.e, res.px, res.py, res.pz};
    std::array<double, 3> n{};
    V4 k1{}, k2{};
    for (int attempt = 0; attempt < 50; ++attempt) {
      n = isotropic();
      decay(P, M, n, 0, 0, k1, k2);
      if (deltaR(k1, P) < kMatch * cfg_.jet_radius && deltaR(k2, P) < kMatch * cfg_.jet_radius)
        break;
    }
    const double rmax = cfg_.jet_radius / std::cosh(eta);
    const double open = std::min(angle(k1, k2), rmax);
    for (int attempt = 0; attempt < 5; ++attempt) {
      Prong a = showerProng(k1.e, false, bb, open), b = showerProng(k2.e, false, bb, open);
      V4 d1, d2;
      if (!decay(P, M, n, a.mass, b.mass, d1, d2)) continue;
      placeProng(a, d1, hadrons);
      placeProng(b, d2, hadrons);
      return;
    }
    // Showers too massive for the resonance five times in a row: unshowered partons.
    for (const V4& k : {k1, k2}) hadrons.push_back({k, 0.0f, ParticleType::kChargedHadron});
    (void)width;
  }

  void topJet(double pt, double eta, double phi, std::vector<GenP>& hadrons) {
    const double mt = sampleMass(172.5, 1.4), mw = sampleMass(80.4, 2.1);
    const FourVector res = FourVector::fromPtEtaPhiM(pt, eta, phi, mt);
    const V4 T{res.e, res.px, res.py, res.pz};
    std::array<double, 3> nt{}, nw{};
    V4 b{}, W{}, q1{}, q2{};
    for (int attempt = 0; attempt < 100; ++attempt) {
      nt = isotropic();
      nw = isotropic();
      decay(T, mt, nt, 0, mw, b, W);
      decay(W, mw, nw, 0, 0, q1, q2);
      const double lim = kMatch * cfg_.jet_radius;
      if (deltaR(b, T) < lim && deltaR(q1, T) < lim && deltaR(q2, T) < lim) break;
    }
    const double r = cfg_.jet_radius / std::cosh(eta);
    const double th_b = std::min({angle(b, q1), angle(b, q2), r});
    const double th_q = std::min(angle(q1, q2), r);
    for (int attempt = 0; attempt < 5; ++attempt) {
      Prong pb = showerProng(b.e, false, true, th_b);
      Prong p1 = showerProng(q1.e, false, false, th_q), p2 = showerProng(q2.e, false, false, th_q);
      V4 db, dW, d1, d2;
      if (!decay(T, mt, nt, pb.mass, mw, db, dW)) continue;
      if (!decay(dW, mw, nw, p1.mass, p2.mass, d1, d2)) continue;
      placeProng(pb, db, hadrons);
      placeProng(p1, d1, hadrons);
      placeProng(p2, d2, hadrons);
      return;
    }
    for (const V4& k : {b, q1, q2}) hadrons.push_back({k, 0.0f, ParticleType::kChargedHadron});
  }

 private:
  const SynthConfig& cfg_;
  TuneParams tp_;
  Rng& rng_;
  std::vector<Parton> stack_;
  double kick_cap_ = 1.0;
};

struct DetectorResponse {
  double eff, threshold;  // threshold on pT (tracks) or E (calorimeter)
  bool calo;
  double stoch, constant;  // sigma/E = stoch/sqrt(E) (+) constant; tracks: constant (+) slope*pT
  double angle;
};

DetectorResponse response(ParticleType t) {
  switch (t) {
    case ParticleType::kChargedHadron:
      return {0.95, 0.5, false, 0.0005, 0.01, 0.002};
    case ParticleType::kNeutralHadron:
      return {0.90, 2.0, true, 0.6, 0.05, 0.03};
    case ParticleType::kPhoton:
      return {0.98, 1.0, true, 0.1, 0.01, 0.01};
    case ParticleType::kElectron:
      return {0.90, 1.0, false, 0.0005, 0.02, 0.002};
    case ParticleType::kMuon:
      return {0.95, 2.0, false, 0.0005, 0.02, 0.001};
    case ParticleType::kUnknown:
      break;
  }
  return {0.9, 1.0, true, 0.5, 0.05, 0.02};
}

// The nominal detector decides which random numbers are drawn (a particle it loses draws
// no smearing), so that the nominal sample stays what it always was; a variation uses the
// same numbers, and a particle that only the variation keeps draws its smearing from a
// stream of its own (event seed, particle).
std::vector<Particle> detector(const std::vector<Particle>& gen, Rng& rng,
                               const DetectorVariation& v, uint64_t event_seed) {
  constexpr uint64_t kPurposeExtra = 0x6578747261ULL;  // "extra"
  std::vector<Particle> out;
  out.reserve(gen.size());
  for (size_t k = 0; k < gen.size(); ++k) {
    const Particle& g = gen[k];
    const DetectorResponse r = response(g.type);
    const double pt = g.p.pt(), e = g.p.e;
    const double u = rng.uniform();
    const bool above = (r.calo ? e : pt) >= r.threshold;
    const bool nominal_keeps = u < r.eff && above;
    const bool keeps =
        v.efficiency == 1.0 ? nominal_keeps : u < std::min(1.0, r.eff * v.efficiency) && above;
    if (!nominal_keeps && !keeps) continue;
    Rng extra(0);
    if (!nominal_keeps)
      extra = Rng(deriveSeed({event_seed, kPurposeExtra, static_cast<uint64_t>(k)}));
    Rng& draw = nominal_keeps ? rng : extra;
    double sigma;
    if (r.calo) {
      const double s = r.stoch / std::sqrt(e);
      sigma = std::sqrt(s * s + r.constant * r.constant);
    } else {
      sigma = std::hypot(r.constant, r.stoch * pt);
    }
    const double scale = std::max(0.05, 1.0 + sigma * v.resolution * draw.normal());
    const double m = g.p.m();
    const double eta = g.p.eta() + r.angle * v.angular * draw.normal();
    const double phi = wrapPhi(g.p.phi() + r.angle * v.angular * draw.normal());
    if (!keeps) continue;  // drawn for the nominal detector, lost by the variation
    Particle p = g;
    p.p = FourVector::fromPtEtaPhiM(pt * scale * v.energy_scale, eta, phi, m);
    out.push_back(p);
  }
  return out;
}

// Observables are computed from the stored (float) features, exactly as `data observables`
// recomputes them, so stored subs and recomputed subs agree bit for bit. (Rebuilding
// four-vectors from float log E loses particle masses, but that is common to both.)
void fillSubs(const JetArrays& a, int64_t i, float* subs) {
  const ObservableValues o = observablesFromFeatures(a.particle(i, 0), a.P, a.jet(i));
  for (int k = 0; k < kNumSubs; ++k) subs[k] = static_cast<float>(o[k]);
}

}  // namespace

const char* jetClassName(int cls) {
  static const char* names[kNumSynthClasses] = {"q", "g", "W", "Z", "H", "t"};
  return cls >= 0 && cls < kNumSynthClasses ? names[cls] : "unknown";
}

Tune parseTune(const std::string& s) {
  if (s == "sim") return Tune::kSim;
  if (s == "data") return Tune::kData;
  if (s == "alt") return Tune::kAlt;
  throw InputError("unknown tune '" + s + "'; use sim, data or alt");
}

const char* tuneName(Tune t) {
  return t == Tune::kSim ? "sim" : t == Tune::kData ? "data" : "alt";
}

SynthConfig SynthConfig::pretrainDefaults() {
  return SynthConfig{};
}

SynthConfig SynthConfig::unfoldDefaults(Tune tune) {
  SynthConfig c;
  c.tune = tune;
  c.pt_min = 140;
  c.pt_max = 800;
  c.pt_power = 5.0;
  c.eta_max = 2.0;
  c.jet_radius = 0.4;
  c.P = 100;
  c.quark_fraction = 0.7;
  c.pass_pt_min = 150;
  return c;
}

nlohmann::json SynthConfig::toJson() const {
  return {{"tune", tuneName(tune)},
          {"pt_min", pt_min},
          {"pt_max", pt_max},
          {"pt_power", pt_power},
          {"eta_max", eta_max},
          {"jet_radius", jet_radius},
          {"P", P},
          {"quark_fraction", quark_fraction},
          {"pass_pt_min", pass_pt_min},
          {"detector", detector.toJson()}};
}

DetectorVariation DetectorVariation::parse(const std::string& text) {
  DetectorVariation v;
  size_t at = 0;
  while (at <= text.size() && !text.empty()) {
    size_t end = text.find(',', at);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(at, end - at);
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    double* slot = key == "energy_scale" ? &v.energy_scale
                   : key == "resolution" ? &v.resolution
                   : key == "efficiency" ? &v.efficiency
                   : key == "angular"    ? &v.angular
                                         : nullptr;
    if (slot == nullptr || eq == std::string::npos)
      throw InputError("detector variation '" + item +
                       "': use KEY=VALUE with KEY one of energy_scale, resolution, efficiency, "
                       "angular (e.g. energy_scale=1.02,resolution=1.1)");
    char* rest = nullptr;
    const std::string value = item.substr(eq + 1);
    *slot = std::strtod(value.c_str(), &rest);
    if (value.empty() || *rest != '\0' || !(*slot > 0) || !std::isfinite(*slot) || *slot > 100)
      throw InputError("detector variation '" + item + "': " + key +
                       " must be a positive number (a multiplier, 1 = nominal)");
    at = end + 1;
  }
  return v;
}

nlohmann::json DetectorVariation::toJson() const {
  return {{"energy_scale", energy_scale},
          {"resolution", resolution},
          {"efficiency", efficiency},
          {"angular", angular}};
}

std::vector<Particle> generateJetParticles(const SynthConfig& cfg, uint64_t seed, int64_t index,
                                           JetClass cls) {
  Rng rng(deriveSeed({seed, static_cast<uint64_t>(index)}));
  Generator g(cfg, rng);
  return g.jet(cls);
}

std::vector<Particle> simulateDetector(const std::vector<Particle>& gen, uint64_t rng_seed,
                                       const DetectorVariation& variation) {
  Rng rng(rng_seed);
  return detector(gen, rng, variation, rng_seed);
}

JetArrays synthPretrain(const SynthConfig& cfg, uint64_t seed, int64_t begin, int64_t end) {
  const int64_t n = end - begin;
  JetArrays a = JetArrays::zeros(n, cfg.P, true);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t index = begin + i;
    const auto cls = static_cast<JetClass>(index % kNumSynthClasses);
    Rng rng(deriveSeed({seed, static_cast<uint64_t>(index)}));
    Generator g(cfg, rng);
    std::vector<Particle> parts = g.jet(cls);
    fillJetFeatures(parts, cfg.P, a.particle(i, 0), a.jet(i));
    a.labels[i] = static_cast<int64_t>(cls);
  }
  return a;
}

UnfoldArrays synthUnfold(const SynthConfig& cfg, uint64_t seed, int64_t begin, int64_t end) {
  const int64_t n = end - begin;
  UnfoldArrays u;
  u.gen = JetArrays::zeros(n, cfg.P);
  u.reco = JetArrays::zeros(n, cfg.P);
  u.gen_subs.assign(static_cast<size_t>(n * kNumSubs), 0.0f);
  u.reco_subs.assign(static_cast<size_t>(n * kNumSubs), 0.0f);
  u.pass_gen.assign(static_cast<size_t>(n), 0);
  u.pass_reco.assign(static_cast<size_t>(n), 0);
  u.weights.assign(static_cast<size_t>(n), 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t index = begin + i;
    Rng rng(deriveSeed({seed, static_cast<uint64_t>(index)}));
    const JetClass cls = rng.uniform() < cfg.quark_fraction ? JetClass::kQuark : JetClass::kGluon;
    Generator g(cfg, rng);
    std::vector<Particle> gen = g.jet(cls);
    std::vector<Particle> reco =
        detector(gen, rng, cfg.detector, deriveSeed({seed, static_cast<uint64_t>(index)}));
    const int64_t ng = fillJetFeatures(gen, cfg.P, u.gen.particle(i, 0), u.gen.jet(i));
    const int64_t nr = fillJetFeatures(reco, cfg.P, u.reco.particle(i, 0), u.reco.jet(i));
    fillSubs(u.gen, i, u.gen_subs.data() + i * kNumSubs);
    fillSubs(u.reco, i, u.reco_subs.data() + i * kNumSubs);
    u.pass_gen[i] = ng >= 2 && u.gen.jet(i)[0] >= cfg.pass_pt_min;
    u.pass_reco[i] = nr >= 2 && u.reco.jet(i)[0] >= cfg.pass_pt_min;
  }
  return u;
}

}  // namespace foldfarm::data
