#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/base/error.hpp"
#include "ensembles/seeds.hpp"
#include "ensembles/weights.hpp"

using namespace foldfarm::ensembles;

TEST(BootstrapWeights, NominalReplicaIsAllOnes) {
  for (double w : bootstrapWeights(1000, 42, 0)) EXPECT_EQ(w, 1.0);
}

TEST(BootstrapWeights, SameReplicaSameWeightsDifferentReplicaDifferent) {
  auto a = bootstrapWeights(5000, 42, 3);
  EXPECT_EQ(a, bootstrapWeights(5000, 42, 3));
  EXPECT_NE(a, bootstrapWeights(5000, 42, 4));
  EXPECT_NE(a, bootstrapWeights(5000, 43, 3));
  // A prefix of a longer draw: event i's weight does not depend on how many events follow.
  auto longer = bootstrapWeights(6000, 42, 3);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), longer.begin()));
}

TEST(BootstrapWeights, ArePoissonOne) {
  auto w = bootstrapWeights(200000, 7, 1);
  double s1 = 0, s2 = 0, zeros = 0;
  for (double x : w) {
    EXPECT_EQ(x, std::floor(x));
    EXPECT_GE(x, 0.0);
    s1 += x;
    s2 += x * x;
    zeros += (x == 0);
  }
  const double n = static_cast<double>(w.size());
  const double mean = s1 / n, var = s2 / n - mean * mean;
  EXPECT_NEAR(mean, 1.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.02);
  EXPECT_NEAR(zeros / n, std::exp(-1.0), 0.005);
}

TEST(MemberSeeds, DependOnReplicaAndMember) {
  EXPECT_EQ(memberSeed(1, 2, 3), memberSeed(1, 2, 3));
  EXPECT_NE(memberSeed(1, 2, 3), memberSeed(1, 2, 4));
  EXPECT_NE(memberSeed(1, 2, 3), memberSeed(1, 3, 3));
  EXPECT_NE(memberSeed(1, 0, 0), bootstrapSeed(1, 0));
}

TEST(SanitizeWeights, NonFiniteAndExtremeWeightsAreCaughtAndCounted) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> w = {1.0, nan, inf, 1.0, 100.0, -inf, 1.0, 1.0};
  WeightLimits lim;
  lim.max_weight = 4.0;
  WeightReport r = sanitizeAndNormalise(w, {}, lim, "test step");
  EXPECT_EQ(r.events, 8);
  EXPECT_EQ(r.non_finite, 3);
  EXPECT_EQ(r.clipped, 1);  // 100 is 4.8 times the finite ones' mean, 20.8
  for (double x : w) EXPECT_TRUE(std::isfinite(x));
  // Normalised and sanitised: {1/20.8, 1, 4, 1/20.8, 4, 0, 1/20.8, 1/20.8}, then divided by
  // its mean.
  const double small = 1.0 / 20.8, mean_after = (4 * small + 1 + 4 + 4) / 8;
  EXPECT_DOUBLE_EQ(r.mean_before, 20.8 * mean_after);
  double sum = 0;
  for (double x : w) sum += x;
  EXPECT_NEAR(sum / w.size(), 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(w[2], 4.0 / mean_after);
  EXPECT_DOUBLE_EQ(w[4], w[2]) << "the clipped weight and +inf both go to the limit";
  EXPECT_DOUBLE_EQ(w[1], 1.0 / mean_after) << "NaN is the mean";
  EXPECT_DOUBLE_EQ(w[5], 0.0);
  EXPECT_NEAR(r.ess, effectiveSampleSize(w), 1e-9);
  EXPECT_LT(r.ess, 8.0);
}

// A likelihood ratio f/(1-f) carries the classes' prior (step 1: Σ data / Σ MC): the limits
// apply to the weights in units of their mean, so a scaled ratio gives the same weights and
// counts (before: the raw ratio was clipped, at 4.6 times the mean with 20 times more data
// than MC, and with 10 times more MC the clip never acted).
TEST(SanitizeWeights, AScaledRatioGivesTheSameWeightsAndCounts) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> ratio = {0.5, 1.0, 1.5, 2.0, 30.0, 0.2, nan, inf, 0.8};
  const std::vector<uint8_t> active = {1, 1, 1, 1, 1, 1, 1, 1, 0};
  const std::vector<double> push = {1.0, 2.0, 0.5, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0};
  WeightLimits lim;
  lim.max_weight = 5.0;
  std::vector<double> reference = ratio;
  const WeightReport r1 = sanitizeAndNormalise(reference, active, lim, "step 1", &push);
  EXPECT_EQ(r1.clipped, 1);
  EXPECT_EQ(r1.non_finite, 2);
  for (const double c : {0.01, 0.1, 20.0, 1e4}) {
    std::vector<double> w = ratio;
    for (double& x : w) x *= c;
    const WeightReport r = sanitizeAndNormalise(w, active, lim, "step 1", &push);
    EXPECT_EQ(r.clipped, r1.clipped) << "scale " << c;
    EXPECT_EQ(r.non_finite, r1.non_finite) << "scale " << c;
    EXPECT_NEAR(r.mean_before / c, r1.mean_before, 1e-12 * r1.mean_before) << "scale " << c;
    EXPECT_NEAR(r.max_after, r1.max_after, 1e-12) << "scale " << c;
    for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(w[i], reference[i], 1e-12) << i;
  }
}

TEST(SanitizeWeights, InactiveEventsKeepWeightOneAndMeanIsOverActiveOnes) {
  std::vector<double> w = {2.0, 100.0, 4.0, std::nan("")};
  std::vector<uint8_t> active = {1, 0, 1, 0};
  WeightReport r = sanitizeAndNormalise(w, active, WeightLimits{}, "step 2");
  EXPECT_EQ(r.events, 2);
  EXPECT_EQ(r.non_finite, 0);
  EXPECT_DOUBLE_EQ(w[0], 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(w[1], 1.0);
  EXPECT_DOUBLE_EQ(w[2], 4.0 / 3.0);
  EXPECT_DOUBLE_EQ(w[3], 1.0);
  EXPECT_NEAR(r.ess, 36.0 / 20.0, 1e-12);  // (2+4)^2 / (4+16) before scaling
}

// The ratio's mean weighted as its classifier saw the sample (push x MC weights): the active
// events keep their total weight against the inactive ones (weight 1), whatever the push. A
// plain mean over {2, 4} (3) would give the active events a total of 4 x (2/3) + 1 x (4/3) = 4,
// not the 5 they had: their share against the inactive event moved.
TEST(SanitizeWeights, AWeightedMeanKeepsTheActiveEventsTotalWeight) {
  std::vector<double> ratio = {2.0, 100.0, 4.0};
  const std::vector<uint8_t> active = {1, 0, 1};
  const std::vector<double> push = {4.0, 7.0, 1.0};
  WeightReport r = sanitizeAndNormalise(ratio, active, WeightLimits{}, "step 1", &push);
  EXPECT_DOUBLE_EQ(r.mean_before, (4.0 * 2.0 + 1.0 * 4.0) / 5.0);
  EXPECT_DOUBLE_EQ(ratio[1], 1.0);
  EXPECT_NEAR(push[0] * ratio[0] + push[2] * ratio[2], push[0] + push[2], 1e-12);
  // Without weights (or with equal ones), the plain mean as before.
  std::vector<double> plain = {2.0, 100.0, 4.0};
  const std::vector<double> ones(3, 1.0);
  std::vector<double> with_ones = plain;
  sanitizeAndNormalise(plain, active, WeightLimits{}, "step 1");
  sanitizeAndNormalise(with_ones, active, WeightLimits{}, "step 1", &ones);
  EXPECT_EQ(plain, with_ones);
  EXPECT_DOUBLE_EQ(plain[0], 2.0 / 3.0);
  // Active events of no weight at all: an error naming the step, not a division by zero.
  std::vector<double> w = {2.0, 3.0};
  const std::vector<double> zero = {0.0, 0.0};
  EXPECT_THROW(sanitizeAndNormalise(w, {}, WeightLimits{}, "x", &zero), foldfarm::Error);
}

// The effective sample size over the events a selection keeps: the events outside it (a fixed
// weight 1) do not count (before: a chain's final ESS counted them).
TEST(EffectiveSampleSize, OverTheSelectedEventsOnly) {
  const std::vector<double> w = {1.0, 3.0, 1.0, 1.0};
  EXPECT_DOUBLE_EQ(effectiveSampleSize(w, {0, 1, 1, 0}), 16.0 / 10.0);
  EXPECT_DOUBLE_EQ(effectiveSampleSize(w, {}), effectiveSampleSize(w));
  EXPECT_DOUBLE_EQ(effectiveSampleSize(w, {0, 0, 0, 0}), 0.0);
}

TEST(SanitizeWeights, NoActiveEventIsAnError) {
  std::vector<double> w = {1.0, 2.0};
  EXPECT_THROW(sanitizeAndNormalise(w, {0, 0}, WeightLimits{}, "x"), foldfarm::Error);
}

TEST(LikelihoodRatio, IsFOverOneMinusF) {
  auto w = likelihoodRatio({0.5f, 0.75f, 1.0f});
  EXPECT_DOUBLE_EQ(w[0], 1.0);
  EXPECT_DOUBLE_EQ(w[1], 3.0);
  EXPECT_TRUE(std::isinf(w[2]));
}
