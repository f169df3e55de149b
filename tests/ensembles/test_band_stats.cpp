#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

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
  EXPECT_DOUBLE_EQ(s.std[0], 2.0);              // sqrt((4+0+4)/2)
  EXPECT_DOUBLE_EQ(s.std[1], std::sqrt(13.0));  // sqrt((9+1+16)/2)
  EXPECT_DOUBLE_EQ(s.covariance[1], 7.0);       // ((-2)(-3) + 0 + 2*4)/2
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

TEST(BandStats, PositivePartClipsNegativeEigenvaluesOnly) {
  // [[1, 2], [2, 1]]: eigenvalues 3 (along (1, 1)) and -1 (along (1, -1)).
  const std::vector<double> p = positivePart({1, 2, 2, 1}, 2);
  for (double x : p) EXPECT_NEAR(x, 1.5, 1e-14);
  EXPECT_THROW(positivePart({1, 2, 3}, 2), foldfarm::Error);
  EXPECT_EQ(positivePart({}, 0).size(), 0u);

  // A covariance of replicas is positive semi-definite already: returned as it is.
  uint64_t state = 12345;
  auto uniform = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
  };
  const size_t n = 12;
  BandAccumulator acc(n);
  for (int r = 0; r < 5; ++r) {  // 5 replicas of 12 bins: rank 4, singular
    std::vector<double> row(n);
    for (double& x : row) x = uniform();
    acc.add(row);
  }
  const std::vector<double> cov = acc.compute().covariance;
  EXPECT_EQ(positivePart(cov, n), cov);

  // A difference of two such estimates: indefinite. Its positive part P is positive
  // semi-definite (its own positive part), orthogonal to what was removed (P (A - P) = 0),
  // and keeps the positive eigenvalues (trace P = trace A + the removed ones' magnitude).
  BandAccumulator other(n);
  for (int r = 0; r < 7; ++r) {
    std::vector<double> row(n);
    for (double& x : row) x = 1.5 * uniform();
    other.add(row);
  }
  std::vector<double> a = cov;
  const std::vector<double> b = other.compute().covariance;
  for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
  const std::vector<double> pp = positivePart(a, n);
  double largest = 0;
  for (double x : a) largest = std::max(largest, std::abs(x));
  const std::vector<double> again = positivePart(pp, n);
  for (size_t i = 0; i < pp.size(); ++i) EXPECT_NEAR(again[i], pp[i], 1e-12 * largest) << i;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      EXPECT_DOUBLE_EQ(pp[i * n + j], pp[j * n + i]);
      double prod = 0;
      for (size_t k = 0; k < n; ++k) prod += pp[i * n + k] * (a[k * n + j] - pp[k * n + j]);
      EXPECT_NEAR(prod, 0.0, 1e-12 * largest * largest) << i << "," << j;
    }
  double trace_a = 0, trace_p = 0;
  for (size_t i = 0; i < n; ++i) {
    trace_a += a[i * n + i];
    trace_p += pp[i * n + i];
    EXPECT_GE(pp[i * n + i], 0.0);
  }
  EXPECT_GT(trace_p, trace_a);  // something negative was removed
  EXPECT_NE(pp, a);
}
