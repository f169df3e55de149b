#include <gtest/gtest.h>

#include <cmath>

#include "core/base/error.hpp"
#include "ensembles/band_stats.hpp"

using namespace foldfarm::ensembles;

TEST(BandStats, MeanStdCovarianceOfHandMadeReplicas) {
  BandAccumulator acc(2);
  acc.add({1, 2});
  acc.add({3, 4});
  acc.add({5, 9});
  BandStats s = acc.compute();
  ASSERT_EQ(s.replicas, 3u);
  EXPECT_DOUBLE_EQ(s.mean[0], 3.0);
  EXPECT_DOUBLE_EQ(s.mean[1], 5.0);
  EXPECT_DOUBLE_EQ(s.std[0], 2.0);               // sqrt((4+0+4)/2)
  EXPECT_DOUBLE_EQ(s.std[1], std::sqrt(13.0));   // sqrt((9+1+16)/2)
  EXPECT_DOUBLE_EQ(s.covariance[1], 7.0);        // ((-2)(-3) + 0 + 2*4)/2
  EXPECT_DOUBLE_EQ(s.covariance[2], 7.0);
  EXPECT_DOUBLE_EQ(s.correlation[0], 1.0);
  EXPECT_NEAR(s.correlation[1], 7.0 / (2.0 * std::sqrt(13.0)), 1e-12);
}

TEST(BandStats, PercentilesInterpolateLikeNumpy) {
  // numpy.percentile([1, 3, 5], [16, 84, 2.5, 97.5]) = [1.64, 4.36, 1.1, 4.9]
  BandAccumulator acc(1);
  for (double v : {5.0, 1.0, 3.0}) acc.add({v});
  BandStats s = acc.compute();
  EXPECT_NEAR(s.p16[0], 1.64, 1e-12);
  EXPECT_NEAR(s.p84[0], 4.36, 1e-12);
  EXPECT_NEAR(s.p2_5[0], 1.1, 1e-12);
  EXPECT_NEAR(s.p97_5[0], 4.9, 1e-12);
  // numpy.percentile(range(10), 16) = 1.44
  std::vector<double> ten;
  for (int i = 9; i >= 0; --i) ten.push_back(i);
  EXPECT_NEAR(percentile(ten, 16), 1.44, 1e-12);
  EXPECT_DOUBLE_EQ(percentile(ten, 100), 9.0);
  EXPECT_DOUBLE_EQ(percentile(ten, 0), 0.0);
}

TEST(BandStats, SingleReplicaHasZeroSpreadAndBadInputThrows) {
  BandAccumulator acc(3);
  EXPECT_THROW(acc.compute(), foldfarm::Error);
  EXPECT_THROW(acc.add({1, 2}), foldfarm::Error);
  acc.add({1, 2, 3});
  BandStats s = acc.compute();
  for (size_t b = 0; b < 3; ++b) {
    EXPECT_EQ(s.std[b], 0.0);
    EXPECT_EQ(s.p16[b], s.mean[b]);
    EXPECT_EQ(s.p97_5[b], s.mean[b]);
  }
}
