// The generator: deterministic in its seed, shardable, and physical enough to be useful.
#include <gtest/gtest.h>

#include <cmath>

#include "core/base/error.hpp"
#include "core/data/observables.hpp"
#include "core/data/synth.hpp"

using namespace foldfarm::data;

TEST(Synth, SameSeedSameArraysDifferentSeedDiffers) {
  const SynthConfig cfg = SynthConfig::pretrainDefaults();
  const JetArrays a = synthPretrain(cfg, 7, 0, 60);
  const JetArrays b = synthPretrain(cfg, 7, 0, 60);
  const JetArrays c = synthPretrain(cfg, 8, 0, 60);
  EXPECT_EQ(a.particles, b.particles);
  EXPECT_EQ(a.jets, b.jets);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_NE(a.particles, c.particles);
  const UnfoldArrays u = synthUnfold(SynthConfig::unfoldDefaults(), 3, 0, 30);
  const UnfoldArrays v = synthUnfold(SynthConfig::unfoldDefaults(), 3, 0, 30);
  EXPECT_EQ(u.reco.particles, v.reco.particles);
  EXPECT_EQ(u.gen_subs, v.gen_subs);
}

TEST(Synth, RangesAreIndependentSoGenerationShards) {
  const SynthConfig cfg = SynthConfig::pretrainDefaults();
  const JetArrays whole = synthPretrain(cfg, 11, 0, 24);
  JetArrays parts = synthPretrain(cfg, 11, 0, 10);
  parts.append(synthPretrain(cfg, 11, 10, 24));
  EXPECT_EQ(whole.particles, parts.particles);
  EXPECT_EQ(whole.labels, parts.labels);
  const UnfoldArrays u = synthUnfold(SynthConfig::unfoldDefaults(), 5, 0, 12);
  UnfoldArrays w = synthUnfold(SynthConfig::unfoldDefaults(), 5, 0, 5);
  w.append(synthUnfold(SynthConfig::unfoldDefaults(), 5, 5, 12));
  EXPECT_EQ(u.gen.particles, w.gen.particles);
  EXPECT_EQ(u.reco_subs, w.reco_subs);
}

TEST(Synth, ResonanceJetMassesAndBalancedLabels) {
  const SynthConfig cfg = SynthConfig::pretrainDefaults();
  const int64_t n = 1800;
  const JetArrays a = synthPretrain(cfg, 2024, 0, n);
  double mass[kNumSynthClasses] = {0}, mult[kNumSynthClasses] = {0};
  int64_t count[kNumSynthClasses] = {0};
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = a.labels[i];
    ASSERT_GE(l, 0);
    ASSERT_LT(l, kNumSynthClasses);
    mass[l] += a.jet(i)[2];
    mult[l] += a.jet(i)[3];
    ++count[l];
    ASSERT_GE(a.jet(i)[0], 0.5 * cfg.pt_min);
    ASSERT_EQ(a.multiplicity(i), static_cast<int64_t>(a.jet(i)[3]));
  }
  for (int c = 0; c < kNumSynthClasses; ++c) {
    ASSERT_EQ(count[c], n / kNumSynthClasses) << jetClassName(c);
    mass[c] /= count[c];
    mult[c] /= count[c];
  }
  EXPECT_NEAR(mass[2], 80.4, 3.0) << "W";
  EXPECT_NEAR(mass[3], 91.2, 3.0) << "Z";
  EXPECT_NEAR(mass[4], 125.0, 4.0) << "H";
  EXPECT_NEAR(mass[5], 172.5, 5.0) << "top";
  EXPECT_GT(mult[1], 1.2 * mult[0]) << "gluon jets must have more particles than quark jets";
  // Particle types and charges are set.
  int64_t charged = 0, photons = 0;
  for (int64_t r = 0; r < a.n * a.P; ++r) {
    const float* f = a.particles.data() + r * kNumParticleFeatures;
    if (f[2] == 0) continue;
    charged += f[8] == 1 && std::fabs(f[7]) == 1;
    photons += f[10] == 1 && f[7] == 0;
  }
  EXPECT_GT(charged, 0);
  EXPECT_GT(photons, 0);
}

TEST(Synth, TunesDifferAndDetectorDegradesResolution) {
  const int64_t n = 1500;
  const UnfoldArrays sim = synthUnfold(SynthConfig::unfoldDefaults(Tune::kSim), 1, 0, n);
  const UnfoldArrays dat = synthUnfold(SynthConfig::unfoldDefaults(Tune::kData), 1, 0, n);
  auto mean = [&](const std::vector<float>& subs, int k) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += subs[i * kNumSubs + k];
    return s / n;
  };
  const double ms = mean(sim.gen_subs, kObsMultiplicity), md = mean(dat.gen_subs, kObsMultiplicity);
  EXPECT_GT(std::fabs(md - ms) / ms, 0.10) << "sim " << ms << " data " << md;
  // `alt` (another generator, a modelling variation's prior) differs from both.
  const UnfoldArrays alt = synthUnfold(SynthConfig::unfoldDefaults(Tune::kAlt), 1, 0, n);
  const double ma = mean(alt.gen_subs, kObsMultiplicity);
  EXPECT_GT(std::fabs(ma - ms) / ms, 0.03) << "sim " << ms << " alt " << ma;
  EXPECT_GT(std::fabs(ma - md) / md, 0.03) << "data " << md << " alt " << ma;
  EXPECT_EQ(parseTune(tuneName(Tune::kAlt)), Tune::kAlt);
  EXPECT_GT(std::fabs(mean(dat.gen_subs, kObsWidth) - mean(sim.gen_subs, kObsWidth)) /
                mean(sim.gen_subs, kObsWidth),
            0.03);
  // Reco loses particles (efficiency, thresholds) and differs from gen event by event.
  EXPECT_LT(mean(sim.reco_subs, kObsMultiplicity), ms);
  int64_t differ = 0, pass = 0;
  for (int64_t i = 0; i < n; ++i) {
    differ += sim.reco.jet(i)[0] != sim.gen.jet(i)[0];
    pass += sim.pass_gen[i];
  }
  EXPECT_GT(differ, n * 9 / 10);
  EXPECT_GT(pass, n / 2);
  EXPECT_LT(pass, n);  // the selection cuts somewhere
  // Stored subs are exactly the observables recomputed from the stored features.
  const auto recomputed = computeObservables(sim.gen.slice(0, 50));
  for (int64_t k = 0; k < 50 * kNumSubs; ++k) ASSERT_FLOAT_EQ(recomputed[k], sim.gen_subs[k]) << k;
}

// A detector variation keeps the generated events of its seed and changes the reco by the
// variation: an energy scale moves every reconstructed jet pT by that factor (the smearing
// random numbers are the nominal ones), a lower efficiency loses that share of particles.
TEST(Synth, DetectorVariationsKeepTheGeneratedEventsAndShiftTheReco) {
  SynthConfig nominal = SynthConfig::unfoldDefaults();
  const UnfoldArrays a = synthUnfold(nominal, 5, 0, 400);
  EXPECT_EQ(a.reco.particles, synthUnfold(nominal, 5, 0, 400).reco.particles);

  SynthConfig scaled = nominal;
  scaled.detector = DetectorVariation::parse("energy_scale=1.05");
  const UnfoldArrays b = synthUnfold(scaled, 5, 0, 400);
  EXPECT_EQ(b.gen.particles, a.gen.particles);
  EXPECT_EQ(b.gen.jets, a.gen.jets);
  EXPECT_EQ(b.gen_subs, a.gen_subs);
  EXPECT_EQ(b.pass_gen, a.pass_gen);
  EXPECT_NE(b.reco.jets, a.reco.jets);
  for (int64_t i = 0; i < a.n(); ++i) {
    if (a.reco.jet(i)[0] <= 0) continue;
    // Same particles, same smearing, every pT x 1.05: the jet pT too (float rounding aside),
    // and the shapes (multiplicity, mass / pT) unchanged.
    EXPECT_NEAR(b.reco.jet(i)[0] / a.reco.jet(i)[0], 1.05, 1e-4) << i;
    EXPECT_EQ(b.reco.jet(i)[3], a.reco.jet(i)[3]) << i;
  }

  SynthConfig lossy = nominal;
  lossy.detector = DetectorVariation::parse("efficiency=0.8");
  const UnfoldArrays c = synthUnfold(lossy, 5, 0, 400);
  EXPECT_EQ(c.gen.particles, a.gen.particles);
  double na = 0, nc = 0;
  for (int64_t i = 0; i < a.n(); ++i) {
    na += a.reco.jet(i)[3];
    nc += c.reco.jet(i)[3];
    EXPECT_LE(c.reco.jet(i)[3], a.reco.jet(i)[3]) << "a lower efficiency only loses particles";
  }
  EXPECT_NEAR(nc / na, 0.8, 0.03);

  SynthConfig better = nominal;
  better.detector = DetectorVariation::parse("efficiency=1.5,resolution=0.5,angular=2");
  const UnfoldArrays d = synthUnfold(better, 5, 0, 400);
  EXPECT_EQ(d.gen.particles, a.gen.particles);
  double nd = 0;
  for (int64_t i = 0; i < a.n(); ++i) {
    nd += d.reco.jet(i)[3];
    EXPECT_GE(d.reco.jet(i)[3], a.reco.jet(i)[3]) << "a higher efficiency only adds particles";
  }
  EXPECT_GT(nd, na);

  EXPECT_TRUE(DetectorVariation::parse("").nominal());
  EXPECT_THROW(DetectorVariation::parse("scale=1.1"), foldfarm::InputError);
  EXPECT_THROW(DetectorVariation::parse("resolution=-1"), foldfarm::InputError);
  EXPECT_THROW(DetectorVariation::parse("resolution=abc"), foldfarm::InputError);
  EXPECT_EQ(nominal.toJson()["detector"]["energy_scale"], 1.0);
}
