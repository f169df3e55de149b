// Weighted histograms and the triangular discriminator on hand-computed cases.
#include <gtest/gtest.h>

#include "core/data/histogram.hpp"

using namespace foldfarm::data;

TEST(Histogram, SumsOfWeightsAndSquaresWithUnderOverflow) {
  Histogram1D h(Binning::linspace(0, 4, 5));  // 4 bins of width 1
  h.fill(0.5, 2.0);
  h.fill(0.7, 3.0);
  h.fill(3.9, 1.5);
  h.fill(4.0, 1.0);  // last edge belongs to the last bin
  h.fill(-1, 7.0);   // underflow
  h.fill(9, 5.0);    // overflow
  EXPECT_DOUBLE_EQ(h.sumW()[0], 5.0);
  EXPECT_DOUBLE_EQ(h.sumW2()[0], 13.0);
  EXPECT_DOUBLE_EQ(h.sumW()[3], 2.5);
  EXPECT_DOUBLE_EQ(h.sumW2()[3], 3.25);
  EXPECT_DOUBLE_EQ(h.underflow(), 7.0);
  EXPECT_DOUBLE_EQ(h.overflow(), 5.0);
  EXPECT_DOUBLE_EQ(h.inRangeSum(), 7.5);
  const auto d = h.density();
  EXPECT_DOUBLE_EQ(d[0], 5.0 / 7.5);
  double area = 0;
  for (int b = 0; b < 4; ++b) area += d[b] * h.binning().width(b);
  EXPECT_NEAR(area, 1.0, 1e-12);
}

TEST(Histogram, TriangularDiscriminatorHandComputed) {
  const Binning b = Binning::linspace(0, 2, 3);  // two unit bins
  Histogram1D p(b), q(b);
  p.fill(0.5, 1.0);
  p.fill(1.5, 3.0);  // density 0.25, 0.75
  q.fill(0.5, 1.0);
  q.fill(1.5, 1.0);  // density 0.5, 0.5
  // 1/2 [ (0.25-0.5)^2/0.75 + (0.75-0.5)^2/1.25 ] = 1/2 [0.083333 + 0.05] = 0.0666667
  EXPECT_NEAR(triangularDiscriminator(p, q), 66.6666667, 1e-6);
  EXPECT_DOUBLE_EQ(triangularDiscriminator(p, p), 0.0);
  // Disjoint supports: maximal value 1/2 * (1 + 1) = 1 -> 1000; empty bins skipped.
  const Binning c = Binning::linspace(0, 3, 4);
  Histogram1D r(c), s(c);
  r.fill(0.5);
  s.fill(1.5);
  EXPECT_NEAR(triangularDiscriminator(r, s), 1000.0, 1e-9);
  EXPECT_THROW(triangularDiscriminator(p, r), std::invalid_argument);
  // Negative event weights: a bin's negative density counts as 0, as no density can be less.
  // Left out where p + q < 0 (before), the bin below would count nothing; taken as it is where
  // p + q is small and positive, -0.002 beside 0.003 would count 12.1 (x1e3) where 0 beside
  // 0.003 counts 1.5.
  const std::vector<double> neg_p = {1.5, -0.5}, neg_q = {0.75, 0.25};
  EXPECT_NEAR(triangularDiscriminator(neg_p, neg_q, b),
              0.5 * (0.75 * 0.75 / 2.25 + 0.25 * 0.25 / 0.25) * 1e3, 1e-9);
  const std::vector<double> tail_p = {1.002, -0.002}, tail_q = {0.997, 0.003};
  EXPECT_NEAR(triangularDiscriminator(tail_p, tail_q, b),
              0.5 * (0.005 * 0.005 / 1.999 + 0.003) * 1e3, 1e-9);
}

TEST(Histogram, SpecBinnings) {
  EXPECT_EQ(observableBinning(0).edges.size(), 50u);
  EXPECT_DOUBLE_EQ(observableBinning(0).edges.back(), 75.0);
  EXPECT_EQ(observableBinning(2).numBins(), 79);
  EXPECT_DOUBLE_EQ(observableBinning(3).edges.front(), -14.0);
  EXPECT_DOUBLE_EQ(observableBinning(5).edges.back(), 1.2);
  EXPECT_THROW(observableBinning(6), std::out_of_range);
}
