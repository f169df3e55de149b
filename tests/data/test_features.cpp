// Features from four-vectors reproduce the stored features of real jets; standardisation
// leaves padding untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/base/error.hpp"
#include "core/data/features.hpp"
#include "core/data/jet_reader.hpp"

using namespace foldfarm::data;

namespace {
const std::string kQg = std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5";
}

TEST(Features, RecomputedFromFourVectorsMatchStoredQuarkGluonFeatures) {
  JetFile f(kQg);
  const JetArrays stored = f.readJets();
  const auto px = f.readFloat("part_px"), py = f.readFloat("part_py"), pz = f.readFloat("part_pz"),
             e = f.readFloat("part_energy");
  const int64_t P = stored.P;
  ASSERT_EQ(static_cast<int64_t>(px.size()), stored.n * P);
  std::vector<float> out(static_cast<size_t>(P * kNumParticleFeatures));
  float jet[kNumJetFeatures];
  double max_particle = 0, max_jet_rel = 0, max_mass2 = 0;
  int64_t compared = 0;
  for (int64_t i = 0; i < stored.n; ++i) {
    std::vector<Particle> parts;
    for (int64_t j = 0; j < P; ++j) {
      const size_t k = static_cast<size_t>(i * P + j);
      if (e[k] == 0) continue;
      Particle p;
      p.p = {px[k], py[k], pz[k], e[k]};
      parts.push_back(p);
    }
    const int64_t n = fillJetFeatures(parts, P, out.data(), jet);
    ASSERT_EQ(n, stored.multiplicity(i)) << "jet " << i;
    // Match particles by pT (both sides ordered by decreasing pT, ties aside).
    for (int64_t j = 0; j < n; ++j) {
      const float* s = stored.particle(i, j);
      const float* r = out.data() + j * kNumParticleFeatures;
      for (int k = 0; k < 7; ++k)
        max_particle = std::max(max_particle, std::fabs(double(s[k]) - r[k]));
      ++compared;
    }
    // Jet eta/phi are those of the summed four-vector (not pT-weighted means).
    for (int k : {0, 1, 3}) {
      const double s = stored.jet(i)[k];
      max_jet_rel = std::max(max_jet_rel, std::fabs(s - jet[k]) / std::max(1.0, std::fabs(s)));
    }
    // The export computed the mass in float32: m^2 = E^2 - p^2 cancels ~1e-7 E^2, which moves
    // light (~5 GeV) jets by ~0.01 GeV. Compare m^2 on that scale.
    const double e_jet = std::sqrt(double(jet[0]) * jet[0] * std::cosh(jet[1]) * std::cosh(jet[1]) +
                                   double(jet[2]) * jet[2]);
    max_mass2 = std::max(max_mass2, std::fabs(double(stored.jet(i)[2]) * stored.jet(i)[2] -
                                              double(jet[2]) * jet[2]) /
                                        (e_jet * e_jet));
  }
  EXPECT_GT(compared, 50000);
  EXPECT_LE(max_particle, 1e-3);
  EXPECT_LE(max_jet_rel, 1e-3);
  EXPECT_LE(max_mass2, 1e-6);
}

TEST(Features, DeltaPhiWrapsIntoHalfOpenInterval) {
  EXPECT_NEAR(wrapPhi(3 * M_PI / 2), -M_PI / 2, 1e-12);
  EXPECT_NEAR(wrapPhi(-3 * M_PI / 2), M_PI / 2, 1e-12);
  EXPECT_NEAR(wrapPhi(-M_PI), M_PI, 1e-12);
  EXPECT_NEAR(wrapPhi(M_PI), M_PI, 1e-12);
  // A jet straddling phi = +-pi: particles get small dphi of both signs.
  std::vector<Particle> parts(2);
  parts[0].p = FourVector::fromPtEtaPhiM(50, 0.1, M_PI - 0.05, 0);
  parts[1].p = FourVector::fromPtEtaPhiM(40, 0.0, -M_PI + 0.05, 0);
  std::vector<float> out(4 * kNumParticleFeatures);
  float jet[4];
  ASSERT_EQ(fillJetFeatures(parts, 4, out.data(), jet), 2);
  EXPECT_LT(std::fabs(out[1]), 0.1);
  EXPECT_LT(std::fabs(out[kNumParticleFeatures + 1]), 0.1);
  EXPECT_LT(out[1] * out[kNumParticleFeatures + 1], 0.0f);
}

TEST(Features, LogOneMinusRatioAndOneHotsAndTruncation) {
  std::vector<Particle> parts;
  for (int i = 0; i < 5; ++i) {
    Particle p;
    p.p = FourVector::fromPtEtaPhiM(10.0 * (i + 1), 0.01 * i, 0.02 * i, 0);
    p.charge = i % 2 ? 1.0f : -1.0f;
    p.type = ParticleType::kMuon;
    parts.push_back(p);
  }
  std::vector<float> out(3 * kNumParticleFeatures);
  float jet[4];
  ASSERT_EQ(fillJetFeatures(parts, 3, out.data(), jet), 3);  // the 2 softest are dropped
  EXPECT_FLOAT_EQ(jet[3], 3.0f);
  const double jpt = jet[0];
  EXPECT_NEAR(jpt, 120.0, 0.1);  // 50 + 40 + 30, nearly collinear
  EXPECT_NEAR(out[2], std::log(1 - 50.0 / jpt), 1e-4);
  EXPECT_NEAR(out[3], std::log(50.0), 1e-5);
  EXPECT_FLOAT_EQ(out[12], 1.0f);
  EXPECT_FLOAT_EQ(out[8], 0.0f);
  // A single-particle jet still has a finite, non-zero feature 2.
  std::vector<Particle> one(1, parts[0]);
  ASSERT_EQ(fillJetFeatures(one, 3, out.data(), jet), 1);
  EXPECT_TRUE(std::isfinite(out[2]));
  EXPECT_NE(out[2], 0.0f);
  EXPECT_EQ(out[kNumParticleFeatures + 2], 0.0f);
}

TEST(Features, StandardisationKeepsPaddingZeroAndRoundTrips) {
  JetArrays a = JetFile(kQg).readJets(0, 20);
  const JetArrays raw = a;
  const auto mask = a.realMask();
  const FeatureStats s = FeatureStats::jetClass();
  s.standardize(a);
  for (int64_t r = 0; r < a.n * a.P; ++r) {
    if (mask[r]) continue;
    for (int k = 0; k < kNumParticleFeatures; ++k)
      ASSERT_EQ(a.particles[r * kNumParticleFeatures + k], 0.0f);
  }
  EXPECT_NEAR(a.particle(0, 0)[3], (raw.particle(0, 0)[3] - 1.8999407f) / 1.2212526f, 1e-5);
  EXPECT_NEAR(a.jet(0)[0], (raw.jet(0)[0] - 618.224920f) / 106.71761f, 1e-5);
  s.unstandardize(a, mask);
  for (size_t k = 0; k < a.particles.size(); ++k)
    ASSERT_NEAR(a.particles[k], raw.particles[k], 1e-4);
  const FeatureStats z = FeatureStats::fromJson(FeatureStats::zJets().toJson());
  EXPECT_FLOAT_EQ(z.jet_mean[0], 225.826286f);
  EXPECT_FLOAT_EQ(z.particle_std[3], 1.2212526f);
  EXPECT_THROW(FeatureStats::fromJson(nlohmann::json{{"particle_mean", {1, 2}}}),
               foldfarm::InputError);
}

TEST(Features, InvariantMassOfALightHardJetSurvivesTheCancellation) {
  // Two massless particles of 5 and 8 TeV, 1e-9 rad apart: m^2 = 4 p1 p2 sin^2(theta/2),
  // 16 orders of magnitude below E^2, where E^2 - p^2 in double gives noise.
  const double p1 = 5000, p2 = 8000, theta = 1e-9;
  std::vector<Particle> parts(2);
  parts[0].p = {p1, 0, 0, p1};
  parts[1].p = {p2 * std::cos(theta), p2 * std::sin(theta), 0, p2};
  const double want = std::sqrt(4 * p1 * p2) * std::sin(theta / 2);
  EXPECT_NEAR(invariantMass(parts, 2), want, 1e-6 * want);
  // And an ordinary massive pair agrees with the textbook formula.
  std::vector<Particle> pair(2);
  pair[0].p = FourVector::fromPtEtaPhiM(50, 0.1, 0.2, 1.0);
  pair[1].p = FourVector::fromPtEtaPhiM(30, -0.3, 1.1, 0.5);
  FourVector J = pair[0].p;
  J += pair[1].p;
  EXPECT_NEAR(invariantMass(pair, 2), J.m(), 1e-9 * J.m());
}
