#include "core/data/features.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/base/error.hpp"

namespace foldfarm::data {
namespace {

constexpr int64_t F = kNumParticleFeatures;
constexpr double kPi = 3.14159265358979323846;
// 1 - ratio floor: keeps a one-particle jet's feature 2 finite and non-zero (a real row).
constexpr double kOneMinusFloor = 1e-8;

}  // namespace

double FourVector::pt() const {
  return std::sqrt(px * px + py * py);
}

double FourVector::eta() const {
  const double pt_ = pt();
  if (pt_ <= 0) return pz >= 0 ? 1e4 : -1e4;
  return std::asinh(pz / pt_);
}

double FourVector::phi() const {
  if (px == 0 && py == 0) return 0;
  double p = std::atan2(py, px);
  return p <= -kPi ? p + 2 * kPi : p;
}

double FourVector::m() const {
  const double m2 = e * e - px * px - py * py - pz * pz;
  return m2 > 0 ? std::sqrt(m2) : 0.0;
}

FourVector FourVector::fromPtEtaPhiM(double pt, double eta, double phi, double m) {
  FourVector v;
  v.px = pt * std::cos(phi);
  v.py = pt * std::sin(phi);
  v.pz = pt * std::sinh(eta);
  v.e = std::sqrt(v.px * v.px + v.py * v.py + v.pz * v.pz + m * m);
  return v;
}

double wrapPhi(double d) {
  if (d > kPi || d <= -kPi) {
    d = std::remainder(d, 2 * kPi);  // [-pi, pi]
    if (d <= -kPi) d += 2 * kPi;
  }
  return d;
}

double invariantMass(const std::vector<Particle>& parts, int64_t n) {
  // m^2 = (sum E)^2 - |sum p|^2 cancels catastrophically for a light, hard jet (m/E ~ 1e-2:
  // float inputs then lose ~0.3% of the mass). With a_i = E_i - |p_i|, s_i = E_i + |p_i|,
  // w_i = |p_i|, u_i = p_i / |p_i| and u = sum p / sum w, the same m^2 is
  //   (sum a)(sum s) + (sum w) sum_i w_i |u_i - u|^2,
  // two terms without cancellation (the pairwise form of sum_{i<j} w_i w_j |u_i - u_j|^2).
  double sa = 0, ss = 0, sw = 0, px = 0, py = 0, pz = 0;
  for (int64_t i = 0; i < n; ++i) {
    const FourVector& v = parts[static_cast<size_t>(i)].p;
    const double p2 = v.px * v.px + v.py * v.py + v.pz * v.pz, p = std::sqrt(p2);
    const double s = v.e + p;
    sa += s > 0 ? (v.e * v.e - p2) / s : 0.0;
    ss += s;
    sw += p;
    px += v.px;
    py += v.py;
    pz += v.pz;
  }
  if (sw <= 0) return 0;
  const double ux = px / sw, uy = py / sw, uz = pz / sw;
  double spread = 0;
  for (int64_t i = 0; i < n; ++i) {
    const FourVector& v = parts[static_cast<size_t>(i)].p;
    const double p = std::sqrt(v.px * v.px + v.py * v.py + v.pz * v.pz);
    if (p <= 0) continue;
    const double dx = v.px / p - ux, dy = v.py / p - uy, dz = v.pz / p - uz;
    spread += p * (dx * dx + dy * dy + dz * dz);
  }
  return std::sqrt(std::max(0.0, sa * ss + sw * spread));
}

int64_t fillJetFeatures(std::vector<Particle>& parts, int64_t P, float* out, float* jet_out) {
  std::fill(out, out + P * F, 0.0f);
  std::fill(jet_out, jet_out + kNumJetFeatures, 0.0f);
  // pT is computed once per particle: the sort and the features reuse it.
  struct Keyed {
    double pt;
    size_t idx;
  };
  std::vector<Keyed> keys;
  keys.reserve(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    const FourVector& v = parts[i].p;
    const double pt = v.pt();
    if (pt > 0 && std::isfinite(pt) && std::isfinite(v.pz) && std::isfinite(v.e))
      keys.push_back({pt, i});
  }
  std::sort(keys.begin(), keys.end(), [](const Keyed& a, const Keyed& b) {
    return a.pt > b.pt || (a.pt == b.pt && a.idx < b.idx);
  });
  std::vector<Particle> sorted;
  sorted.reserve(keys.size());
  for (const Keyed& k : keys) sorted.push_back(parts[k.idx]);
  parts.swap(sorted);
  const int64_t n = std::min<int64_t>(P, static_cast<int64_t>(parts.size()));
  if (n == 0) return 0;
  FourVector J;
  for (int64_t i = 0; i < n; ++i) J += parts[i].p;
  const double jpt = J.pt(), jeta = J.eta(), jphi = J.phi(), je = J.e;
  jet_out[0] = static_cast<float>(jpt);
  jet_out[1] = static_cast<float>(jeta);
  jet_out[2] = static_cast<float>(invariantMass(parts, n));
  jet_out[3] = static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i) {
    const Particle& p = parts[i];
    const double pt = keys[i].pt;
    const double e = p.p.e;
    const double deta = std::asinh(p.p.pz / pt) - jeta;
    const double dphi = wrapPhi(std::atan2(p.p.py, p.p.px) - jphi);
    float* f = out + i * F;
    f[0] = static_cast<float>(deta);
    f[1] = static_cast<float>(dphi);
    f[2] = static_cast<float>(std::log(std::max(1.0 - pt / jpt, kOneMinusFloor)));
    if (f[2] == 0.0f) f[2] = -1e-30f;  // a real particle must never look like padding
    f[3] = static_cast<float>(std::log(pt));
    f[4] = static_cast<float>(std::log(std::max(1.0 - e / je, kOneMinusFloor)));
    f[5] = static_cast<float>(std::log(std::max(e, 1e-30)));
    f[6] = static_cast<float>(std::sqrt(deta * deta + dphi * dphi));
    f[7] = p.charge;
    switch (p.type) {
      case ParticleType::kChargedHadron:
        f[8] = 1;
        break;
      case ParticleType::kNeutralHadron:
        f[9] = 1;
        break;
      case ParticleType::kPhoton:
        f[10] = 1;
        break;
      case ParticleType::kElectron:
        f[11] = 1;
        break;
      case ParticleType::kMuon:
        f[12] = 1;
        break;
      case ParticleType::kUnknown:
        break;
    }
  }
  return n;
}

FeatureStats FeatureStats::jetClass() {
  FeatureStats s;
  s.particle_mean = {0, 0, -0.0278f, 1.8999407f, -0.027f, 2.244736f, 0, 0, 0, 0, 0, 0, 0};
  s.particle_std = {0.215f, 0.215f, 0.070f, 1.2212526f, 0.069f, 1.2334691f, 1, 1, 1, 1, 1, 1, 1};
  s.jet_mean = {618.224920f, 0.0f, 120.64709f, 39.4133173f};
  s.jet_std = {106.71761f, 0.88998157f, 40.196922f, 15.096386f};
  return s;
}

FeatureStats FeatureStats::zJets() {
  FeatureStats s = jetClass();
  s.jet_mean = {225.826286f, 1.25739745e-3f, 18.3963520f, 18.8828832f};
  s.jet_std = {90.39824296f, 1.34598289f, 10.73467645f, 8.45697634f};
  return s;
}

nlohmann::json FeatureStats::toJson() const {
  return {{"particle_mean", particle_mean},
          {"particle_std", particle_std},
          {"jet_mean", jet_mean},
          {"jet_std", jet_std}};
}

FeatureStats FeatureStats::fromJson(const nlohmann::json& j) {
  FeatureStats s;
  auto get = [&](const char* key, auto& arr) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_array() || j[key].size() != arr.size())
      throw InputError(std::string("feature statistics: key '") + key +
                       "' missing or not an array of " + std::to_string(arr.size()) +
                       " numbers; write them with FeatureStats::toJson()");
    for (size_t i = 0; i < arr.size(); ++i) {
      if (!j[key][i].is_number())
        throw InputError(std::string("feature statistics: '") + key + "' holds a non-number");
      arr[i] = j[key][i].template get<float>();
    }
  };
  get("particle_mean", s.particle_mean);
  get("particle_std", s.particle_std);
  get("jet_mean", s.jet_mean);
  get("jet_std", s.jet_std);
  for (float v : s.particle_std)
    if (!(v > 0)) throw InputError("feature statistics: particle_std must be positive");
  for (float v : s.jet_std)
    if (!(v > 0)) throw InputError("feature statistics: jet_std must be positive");
  return s;
}

void FeatureStats::standardize(JetArrays& a) const {
  std::array<float, F> inv;
  for (int k = 0; k < F; ++k) inv[k] = 1.0f / particle_std[k];
  const int64_t rows = a.n * a.P;
  for (int64_t r = 0; r < rows; ++r) {
    float* f = a.particles.data() + r * F;
    if (f[2] == 0.0f) continue;
    for (int k = 0; k < F; ++k) f[k] = (f[k] - particle_mean[k]) * inv[k];
  }
  for (int64_t i = 0; i < a.n; ++i)
    for (int k = 0; k < kNumJetFeatures; ++k) {
      float& v = a.jets[i * kNumJetFeatures + k];
      v = (v - jet_mean[k]) / jet_std[k];
    }
}

void FeatureStats::unstandardize(JetArrays& a, const std::vector<uint8_t>& mask) const {
  const int64_t rows = a.n * a.P;
  if (mask.size() != static_cast<size_t>(rows))
    throw Error("unstandardize: mask has " + std::to_string(mask.size()) + " entries, expected " +
                std::to_string(rows));
  for (int64_t r = 0; r < rows; ++r) {
    float* f = a.particles.data() + r * F;
    if (!mask[r]) {
      std::fill(f, f + F, 0.0f);
      continue;
    }
    for (int k = 0; k < F; ++k) f[k] = f[k] * particle_std[k] + particle_mean[k];
  }
  for (int64_t i = 0; i < a.n; ++i)
    for (int k = 0; k < kNumJetFeatures; ++k) {
      float& v = a.jets[i * kNumJetFeatures + k];
      v = v * jet_std[k] + jet_mean[k];
    }
}

}  // namespace foldfarm::data
