#pragma once
// The six Z+jets observables of the OmniFold paper, in the order of OmniLearn's files, of one
// jet, from its particles:
//   [0] mass of the summed four-vector
//   [1] width = sum pT_i dR_i / pT_J (dR to the jet axis, pT_J of the summed four-vector)
//   [2] multiplicity (number of particles)
//   [3] ln rho = 2 ln(m_SD / pT_J), Soft Drop z_cut = 0.1, beta = 0 on a Cambridge/Aachen
//       reclustering (distance dR in rapidity-azimuth, E-scheme recombination); when grooming
//       leaves a massless single particle ln rho = kLnRhoFloor (below every bin of histogram.hpp)
//   [4] z_g = min(pT1, pT2)/(pT1 + pT2) of the first declustering that passes Soft Drop;
//       0 when none passes
//   [5] tau21 = tau2/tau1 with beta = 1, tau_N = sum_i pT_i min_k dR_ik (normalisation
//       cancels). Axes: exclusive-kT axes (particles reclustered with the kT algorithm to
//       exactly N subjets, winner-take-all recombination, which is the recommended axis for
//       beta = 1 and needs no minimisation). tau21 = 0 when tau1 = 0 (one particle or all
//       collinear).
// Distances: the width uses (eta, phi) to the jet axis, exactly particle feature 6; the
// clusterings and tau_N use (rapidity, phi) as FastJet does (equal for massless particles).
// Thread-safety: pure functions; safe from many threads.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/data/features.hpp"
#include "core/data/jet_arrays.hpp"

namespace foldfarm::data {

constexpr double kSoftDropZcut = 0.1;
constexpr double kLnRhoFloor = -20.0;

enum Observable : int { kObsMass = 0, kObsWidth, kObsMultiplicity, kObsLnRho, kObsZg, kObsTau21 };
const char* observableName(int index);  // "mass", "width", "multiplicity", "lnrho", "zg", "tau21"

// The one table of observables that files, chains, bands and figures name: the six
// substructure observables in the order of `subs` columns (index = Observable), then the
// jet-feature columns a chain may also unfold. `label` is the axis label, plain text (the
// figures render text literally).
struct ObservableInfo {
  const char* name;
  const char* label;
};
const std::vector<ObservableInfo>& observableTable();
// The names of the six substructure observables, in order (a chain's default).
std::vector<std::string> substructureObservableNames();
// Position in observableTable(), or -1 for a name it does not hold.
int observableIndex(const std::string& name);
// The axis label of `name`; the name itself when it is not in the table.
std::string observableLabel(const std::string& name);

using ObservableValues = std::array<double, kNumSubs>;

// From four-vectors (any order; empty -> all zeros and ln rho = kLnRhoFloor).
ObservableValues computeObservables(const std::vector<FourVector>& parts);

// From one jet's raw (unstandardised) features: P rows of 13 and the jet's 4 features.
// Particle four-vectors are rebuilt from pT = exp(f3), E = exp(f5), eta = eta_J + f0,
// phi = f1 (relative azimuth); padding rows (f2 == 0) are ignored.
ObservableValues observablesFromFeatures(const float* particles, int64_t P, const float* jet);

// n*6 floats for every jet of `a` (raw features).
std::vector<float> computeObservables(const JetArrays& a);

// Building blocks, exposed for tests and other observables.
struct SoftDropResult {
  double groomed_mass = 0;
  double zg = 0;
};
SoftDropResult softDrop(const std::vector<FourVector>& parts, double zcut = kSoftDropZcut);
// tau_N (beta = 1) with exclusive-kT WTA axes; unnormalised (sum pT_i min dR).
double nSubjettiness(const std::vector<FourVector>& parts, int n_axes);

}  // namespace foldfarm::data
