// The six observables on cases with known answers.
#include <gtest/gtest.h>

#include <cmath>

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/observables.hpp"
#include "core/data/observables_file.hpp"
#include "core/data/synth.hpp"

using namespace foldfarm::data;

namespace {
FourVector massless(double pt, double eta, double phi) {
  return FourVector::fromPtEtaPhiM(pt, eta, phi, 0);
}
}  // namespace

TEST(Observables, TwoMasslessParticlesInvariantMassAndMultiplicity) {
  const std::vector<FourVector> parts{massless(100, 0.1, 0.2), massless(50, -0.2, 0.4)};
  const double expected = std::sqrt(2 * 100 * 50 * (std::cosh(0.3) - std::cos(0.2)));
  const ObservableValues o = computeObservables(parts);
  EXPECT_NEAR(o[kObsMass], expected, 1e-9 * expected);
  EXPECT_DOUBLE_EQ(o[kObsMultiplicity], 2.0);
  // Two particles: each tau2 axis sits on a particle.
  EXPECT_DOUBLE_EQ(o[kObsTau21], 0.0);
}

TEST(Observables, OneProngJetHasZeroWidthAndTau21) {
  const ObservableValues one = computeObservables({massless(300, 0.5, 1.0)});
  EXPECT_DOUBLE_EQ(one[kObsWidth], 0.0);
  EXPECT_DOUBLE_EQ(one[kObsTau21], 0.0);
  EXPECT_DOUBLE_EQ(one[kObsMultiplicity], 1.0);
  EXPECT_DOUBLE_EQ(one[kObsZg], 0.0);
  EXPECT_DOUBLE_EQ(one[kObsLnRho], kLnRhoFloor);
  // Collinear particles: same direction, different energies.
  const ObservableValues col =
      computeObservables({massless(100, 0.5, 1.0), massless(30, 0.5, 1.0), massless(5, 0.5, 1.0)});
  EXPECT_NEAR(col[kObsWidth], 0.0, 1e-9);
  EXPECT_NEAR(col[kObsMass], 0.0, 1e-5);
  EXPECT_DOUBLE_EQ(col[kObsTau21], 0.0);
  EXPECT_DOUBLE_EQ(col[kObsMultiplicity], 3.0);
}

TEST(Observables, WidthIsPtWeightedDistanceToAxis) {
  // Symmetric pair about the axis at eta = 0: each particle 0.1 from the axis.
  const std::vector<FourVector> parts{massless(100, 0.1, 0.0), massless(100, -0.1, 0.0)};
  const ObservableValues o = computeObservables(parts);
  const double jet_pt = 200.0;  // the pair is along phi = 0, pz cancels
  EXPECT_NEAR(o[kObsWidth], (100 * 0.1 + 100 * 0.1) / jet_pt, 1e-9);
}

TEST(Observables, SymmetricSplittingHasZgOneHalfAndSoftDropGroomsSoftWideParticle) {
  const FourVector a = massless(200, 0.15, 0.0), b = massless(200, -0.15, 0.0);
  const ObservableValues sym = computeObservables({a, b});
  EXPECT_NEAR(sym[kObsZg], 0.5, 1e-12);
  const double m = std::sqrt(2 * 200 * 200 * (std::cosh(0.3) - 1));
  EXPECT_NEAR(sym[kObsLnRho], 2 * std::log(m / 400.0), 1e-9);
  // A soft (z ~ 0.01), wide-angle particle is clustered last by C/A and fails z_cut.
  const FourVector soft = massless(4, 0.0, 0.9);
  const ObservableValues groomed = computeObservables({a, b, soft});
  EXPECT_NEAR(groomed[kObsZg], 0.5, 1e-12);
  const SoftDropResult sd = softDrop({a, b, soft});
  EXPECT_NEAR(sd.groomed_mass, m, 1e-6 * m);
  EXPECT_GT(groomed[kObsMass], m);  // the ungroomed mass includes the soft particle
}

TEST(Observables, TwoProngJetHasSmallTau21AndOneProngLarge) {
  // Two hard prongs, each with a near-collinear companion: tau2 << tau1.
  std::vector<FourVector> two{massless(200, 0.2, 0.0), massless(20, 0.21, 0.01),
                              massless(180, -0.2, 0.0), massless(20, -0.21, -0.01)};
  const double t21 = computeObservables(two)[kObsTau21];
  EXPECT_GT(t21, 0.0);
  EXPECT_LT(t21, 0.1);
  // A one-prong core with diffuse soft radiation: tau2 stays comparable to tau1.
  std::vector<FourVector> one{massless(300, 0.0, 0.0)};
  for (int k = 0; k < 8; ++k)
    one.push_back(massless(5, 0.3 * std::cos(k * 0.785), 0.3 * std::sin(k * 0.785)));
  EXPECT_GT(computeObservables(one)[kObsTau21], 0.5);
  EXPECT_NEAR(nSubjettiness(two, 4), 0.0, 1e-9);  // one axis per particle
}

TEST(Observables, FromFeaturesMatchesFromFourVectors) {
  std::vector<Particle> parts;
  const double eta0 = 0.7, phi0 = 3.1;
  const double pts[] = {120, 80, 40, 15, 7, 3};
  for (int i = 0; i < 6; ++i) {
    Particle p;
    p.p = FourVector::fromPtEtaPhiM(pts[i], eta0 + 0.05 * i - 0.1,
                                    wrapPhi(phi0 + 0.07 * (i % 3) - 0.06), 0.14);
    parts.push_back(p);
  }
  std::vector<FourVector> v;
  for (auto& p : parts) v.push_back(p.p);
  const ObservableValues direct = computeObservables(v);
  std::vector<float> feat(10 * kNumParticleFeatures);
  float jet[4];
  fillJetFeatures(parts, 10, feat.data(), jet);
  const ObservableValues viaF = observablesFromFeatures(feat.data(), 10, jet);
  for (int k = 0; k < kNumSubs; ++k)
    EXPECT_NEAR(viaF[k], direct[k], 1e-3 * std::max(1.0, std::fabs(direct[k])))
        << observableName(k);
}

TEST(Observables, OneTableNamesOrdersAndLabelsThem) {
  const auto& t = observableTable();
  ASSERT_GE(t.size(), static_cast<size_t>(kNumSubs));
  for (int k = 0; k < kNumSubs; ++k) {
    EXPECT_STREQ(t[static_cast<size_t>(k)].name, observableName(k));
    EXPECT_EQ(observableIndex(observableName(k)), k);
  }
  EXPECT_EQ(substructureObservableNames(),
            (std::vector<std::string>{"mass", "width", "multiplicity", "lnrho", "zg", "tau21"}));
  EXPECT_EQ(observableLabel("mass"), "jet mass [GeV]");
  EXPECT_EQ(observableLabel("tau21"), "N-subjettiness ratio τ₂₁");
  EXPECT_EQ(observableIndex("jet_pt"), kNumSubs);
  EXPECT_EQ(observableIndex("nonsense"), -1);
  EXPECT_EQ(observableLabel("nonsense"), "nonsense");
}

// `data observables` as a library call: every jet's six observables of the level asked for
// (gen by default where the file has it), in the order of the events, named in `columns`.
TEST(ObservablesFile, HoldsEachJetsObservablesOfTheLevelAskedFor) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("ff_obs_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  foldfarm::data::SynthConfig c = foldfarm::data::SynthConfig::unfoldDefaults();
  c.P = 24;
  const foldfarm::data::UnfoldArrays u = foldfarm::data::synthUnfold(c, 5, 0, 40);
  const std::string in = (dir / "in.h5").string();
  foldfarm::data::writeUnfoldFile(in, u);
  for (const std::string level : {"", "reco"}) {
    const std::string out = (dir / ("obs" + level + ".h5")).string();
    foldfarm::data::writeObservablesFile(in, out, level);
    const foldfarm::data::JetFile src(in);
    const std::vector<float> expected =
        foldfarm::data::computeObservables(src.readJets(0, -1, level.empty() ? "gen" : level));
    const foldfarm::data::H5Handle f = foldfarm::data::h5OpenRead(out);
    const foldfarm::data::H5Handle ds(H5Dopen2(f.get(), "subs", H5P_DEFAULT),
                                      foldfarm::data::H5Kind::kDataset, "H5Dopen2", __FILE__,
                                      __LINE__, out);
    ASSERT_EQ(foldfarm::data::h5Dims(ds.get()), (std::vector<hsize_t>{40, 6}));
    std::vector<float> subs(expected.size());
    ASSERT_GE(H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, subs.data()), 0);
    EXPECT_EQ(subs, expected) << "level '" << level << "'";
    EXPECT_EQ(foldfarm::data::h5ReadAttrAsString(f.get(), "level"), level.empty() ? "gen" : level);
  }
  EXPECT_THROW(foldfarm::data::writeObservablesFile(in, (dir / "x.h5").string(), "parton"),
               foldfarm::InputError);
  EXPECT_THROW(foldfarm::data::writeObservablesFile(in, in, ""), foldfarm::InputError);
  EXPECT_FALSE(fs::exists(dir / "x.h5"));
  fs::remove_all(dir);
}
