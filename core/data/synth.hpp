#pragma once
// The synthetic jet generator: fast, seeded, simple physics.
//
// Per jet: a jet pT from a power-law spectrum in [pt_min, pt_max], eta uniform in
// [-eta_max, eta_max], phi uniform. Classes (label = index in JetClass):
//   q, g: one parton with the jet's momentum;
//   W (80.4), Z (91.2), H->bb (125): two-body decay isotropic in the rest frame, boosted to
//   the jet pT; t (172.5) -> b W(-> q q'). Decay angles are re-drawn until every parton is
//   within `jet_radius` of the jet axis (the matching JetClass applies).
// Each parton showers (angular-ordered toy Sudakov shower starting at the angle to its
// colour partner or jet_radius: emission density (alpha_s(kT) C / pi) dtheta^2/theta^2 P(z) dz
// with C = C_F for quarks, C_A for gluons, kT > Q0) and every final parton fragments into
// hadrons (iterative fragmentation, Gaussian transverse kicks) with types and charges
// (charged hadrons, neutral hadrons, photons from pi0, electrons, muons). Decay products are
// showered first and the decays redone with the showered masses, so a resonance jet's
// particle-level mass is the resonance mass (before P truncation and detector).
// Tunes: `sim` and `data` differ in alpha_s, Q0 and fragmentation (mean multiplicity of
// `data` is > 10% higher; width, mass and substructure differ); `alt` plays another
// generator (a modelling variation's prior): its shower lies between the two, its
// hadronisation differs from both.
// Detector (reco level): per-type efficiency and pT threshold, pT/energy resolution,
// angular smearing. pass_gen / pass_reco: jet pT >= pass_pt_min at that level and >= 2
// particles.
// Determinism: jet `index` is generated from its own generator seeded by
// deriveSeed({seed, index}) only, so any range of indices can be generated independently
// (parallel, sharded) and the same (seed, index) always gives identical particles.
// Thread-safety: the functions are pure; call from many threads on disjoint ranges.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/features.hpp"
#include "core/data/jet_arrays.hpp"

namespace foldfarm::data {

enum class JetClass : int { kQuark = 0, kGluon, kW, kZ, kHiggs, kTop };
constexpr int kNumSynthClasses = 6;
const char* jetClassName(int cls);  // "q", "g", "W", "Z", "H", "t"

enum class Tune { kSim, kData, kAlt };
// "sim" | "data" | "alt"; throws InputError otherwise.
Tune parseTune(const std::string& s);
const char* tuneName(Tune t);

// A detector variation of the unfolding sample (systematic studies): multipliers on the
// detector response. Generated events do not depend on it (same seed, same gen), and the
// random numbers of each particle's response are those of the nominal detector wherever it
// drew them, so a varied file differs from the nominal one by the variation alone.
struct DetectorVariation {
  double energy_scale = 1.0;  // reconstructed pT x this
  double resolution = 1.0;    // momentum/energy resolution x this
  double efficiency = 1.0;    // reconstruction efficiency x this (capped at 1)
  double angular = 1.0;       // angular smearing x this
  bool nominal() const {
    return energy_scale == 1.0 && resolution == 1.0 && efficiency == 1.0 && angular == 1.0;
  }
  // "energy_scale=1.02,resolution=1.1": InputError naming an unknown key or a value that is
  // not a positive number.
  static DetectorVariation parse(const std::string& text);
  nlohmann::json toJson() const;
};

struct SynthConfig {
  Tune tune = Tune::kSim;
  double pt_min = 500, pt_max = 1000;
  double pt_power = 4.0;  // dN/dpT ~ pT^-power (0: uniform)
  double eta_max = 2.0;
  double jet_radius = 0.8;
  int64_t P = 128;              // particle slots per jet
  double quark_fraction = 0.7;  // unfold events: q vs g initiated
  double pass_pt_min = 0;       // unfold selection (0: everything passes)
  DetectorVariation detector;   // unfold events: the detector's response

  static SynthConfig pretrainDefaults();  // JetClass-like: 500-1000 GeV, R 0.8, P 128
  static SynthConfig unfoldDefaults(Tune tune = Tune::kSim);  // Z+jets-like: ~200 GeV, R 0.4, P 100
  nlohmann::json toJson() const;
};

// Particle-level particles of jet `index` of class `cls` (unsorted, not truncated).
std::vector<Particle> generateJetParticles(const SynthConfig& cfg, uint64_t seed, int64_t index,
                                           JetClass cls);
// Detector response to particle-level particles, using the generator `rng_seed`.
std::vector<Particle> simulateDetector(const std::vector<Particle>& gen, uint64_t rng_seed,
                                       const DetectorVariation& variation = {});

// Pretraining jets [begin, end): label of jet i is i % 6 (balanced over any 6 consecutive
// jets); features per features.hpp; weights empty.
JetArrays synthPretrain(const SynthConfig& cfg, uint64_t seed, int64_t begin, int64_t end);
// Unfolding events [begin, end): gen and reco jets, gen_subs/reco_subs, pass flags, weights 1.
UnfoldArrays synthUnfold(const SynthConfig& cfg, uint64_t seed, int64_t begin, int64_t end);

}  // namespace foldfarm::data
