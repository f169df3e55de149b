#pragma once
// Four-vectors -> OmniLearn features (those of OmniLearn's preprocessing scripts), and the
// standardisation statistics.
//
// Per particle (relative to the jet four-vector J = sum of the jet's kept particles):
//   0 deta = eta - eta_J            1 dphi = phi - phi_J wrapped to (-pi, pi]
//   2 log(1 - pT/pT_J)              3 log pT
//   4 log(1 - E/E_J)                5 log E
//   6 dR = hypot(deta, dphi)        7 charge
//   8..12 one-hot: charged hadron, neutral hadron, photon, electron, muon
// Jet: [pT_J, eta_J, m_J, multiplicity]. eta_J and phi_J are the pseudorapidity and azimuth
// of the summed four-vector (this matches the stored features of the QuarkGluon export).
// 1 - ratio is floored at 1e-8 so a one-particle jet gets a finite, non-zero feature 2.
// Particles are ordered by decreasing pT; beyond P slots the softest are dropped BEFORE
// the jet is formed, so `jet`, `data` and observables always describe the same particles.
// Particles with pT <= 0 or non-finite momenta are dropped (they could not be real rows).
#include <array>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/jet_arrays.hpp"

namespace foldfarm::data {

enum class ParticleType : uint8_t {
  kUnknown = 0,  // no one-hot set (e.g. the QuarkGluon export)
  kChargedHadron,
  kNeutralHadron,
  kPhoton,
  kElectron,
  kMuon,
};

struct FourVector {
  double px = 0, py = 0, pz = 0, e = 0;
  double pt() const;
  double eta() const;  // pseudorapidity; +-1e4-safe for pT -> 0
  double phi() const;  // atan2(py, px) in (-pi, pi]
  double m() const;    // sqrt(max(0, e^2 - p^2))
  FourVector& operator+=(const FourVector& o) {
    px += o.px;
    py += o.py;
    pz += o.pz;
    e += o.e;
    return *this;
  }
  static FourVector fromPtEtaPhiM(double pt, double eta, double phi, double m);
};

struct Particle {
  FourVector p;
  float charge = 0;
  ParticleType type = ParticleType::kUnknown;
};

// Wraps an angle difference into (-pi, pi].
double wrapPhi(double dphi);

// Invariant mass of the first n particles, computed without the cancellation of
// E^2 - p^2 (accurate for light, hard jets from float four-vectors).
double invariantMass(const std::vector<Particle>& parts, int64_t n);

// Fills one jet: `particle_out` has P*13 floats (all overwritten, padding zeroed) and
// `jet_out` 4 floats. `parts` is reordered (sorted by decreasing pT). Returns the number of
// real particles written. An empty (or all-dropped) jet gives all zeros.
int64_t fillJetFeatures(std::vector<Particle>& parts, int64_t P, float* particle_out,
                        float* jet_out);

// Standardisation statistics: x' = (x - mean) / std.
struct FeatureStats {
  std::array<float, kNumParticleFeatures> particle_mean{}, particle_std{};
  std::array<float, kNumJetFeatures> jet_mean{}, jet_std{};

  static FeatureStats jetClass();  // JetClass statistics (OmniLearn's data loaders' default)
  static FeatureStats zJets();     // JetClass particle statistics, OmniFold Z+jets jet statistics
  nlohmann::json toJson() const;
  // Throws InputError naming the missing/malformed key.
  static FeatureStats fromJson(const nlohmann::json& j);

  // In place. Particle features are standardised on real rows only (decided from the raw
  // feature 2 before it is changed); padding rows stay exactly 0. Jets are standardised on
  // every row. Not idempotent: call once on raw arrays.
  void standardize(JetArrays& a) const;
  // Inverse of standardize() on rows where `mask` (n*P, from JetArrays::realMask() of the raw
  // arrays) is 1; masked-out rows are set to 0.
  void unstandardize(JetArrays& a, const std::vector<uint8_t>& mask) const;
};

}  // namespace foldfarm::data
