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

namespace {

// A deterministic uniform draw in [-0.5, 0.5).
struct Draw {
  uint64_t state;
  double operator()() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
  }
};

// The covariance of `replicas` random rows of n bins, each value times `scale`.
std::vector<double> randomCovariance(Draw& draw, size_t n, int replicas, double scale) {
  BandAccumulator acc(n);
  for (int r = 0; r < replicas; ++r) {
    std::vector<double> row(n);
    for (double& x : row) x = scale * draw();
    acc.add(row);
  }
  return acc.compute().covariance;
}

double smallestEigenvalue(const std::vector<double>& m, size_t n) {
  const SymmetricEigen e = symmetricEigen(m, n);
  return *std::min_element(e.values.begin(), e.values.end());
}

}  // namespace

TEST(BandStats, SymmetricEigenReconstructsTheMatrix) {
  const SymmetricEigen two = symmetricEigen({2, 1, 1, 2}, 2);
  EXPECT_NEAR(std::min(two.values[0], two.values[1]), 1.0, 1e-14);
  EXPECT_NEAR(std::max(two.values[0], two.values[1]), 3.0, 1e-14);
  EXPECT_THROW(symmetricEigen({1, 2, 3}, 2), foldfarm::Error);
  Draw draw{7};
  const size_t n = 15;
  std::vector<double> m(n * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j <= i; ++j) m[i * n + j] = m[j * n + i] = draw();
  const SymmetricEigen e = symmetricEigen(m, n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      double back = 0, dot = 0;  // V diag V^T, and V^T V
      for (size_t k = 0; k < n; ++k) {
        back += e.vectors[i * n + k] * e.values[k] * e.vectors[j * n + k];
        dot += e.vectors[k * n + i] * e.vectors[k * n + j];
      }
      EXPECT_NEAR(back, m[i * n + j], 1e-13) << i << "," << j;
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-13) << i << "," << j;
    }
}

TEST(BandStats, CovarianceLessStaysBetweenZeroAndTheCovariance) {
  // T below A and within its range: A - T exactly.
  const std::vector<double> diag = covarianceLess({4, 0, 0, 1}, {1, 0, 0, 0.5}, 2);
  const std::vector<double> expected = {3, 0, 0, 0.5};
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(diag[i], expected[i], 1e-14) << i;
  // T above A: nothing left.
  for (double x : covarianceLess({1, 0, 0, 1}, {2, 0, 0, 3}, 2)) EXPECT_NEAR(x, 0.0, 1e-15);
  EXPECT_THROW(covarianceLess({1, 0, 0, 1}, {1}, 2), foldfarm::Error);
  EXPECT_TRUE(covarianceLess({}, {}, 0).empty());

  Draw draw{12345};
  const size_t n = 12;
  const std::vector<double> a = randomCovariance(draw, n, 5, 1.0);  // rank 4 of 12
  double largest = 0;
  for (double x : a) largest = std::max(largest, std::abs(x));
  // A part of A itself: the rest of it.
  std::vector<double> part = a;
  for (double& x : part) x *= 0.3;
  const std::vector<double> rest = covarianceLess(a, part, n);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(rest[i], 0.7 * a[i], 1e-12 * largest) << i;

  // A full-rank T of the size of A's spread: A - T is indefinite (and its positive part
  // could exceed A); what is left is a covariance, below A, and less than A.
  const std::vector<double> t = randomCovariance(draw, n, 40, 0.6);
  std::vector<double> minus = a;
  for (size_t i = 0; i < a.size(); ++i) minus[i] -= t[i];
  ASSERT_LT(smallestEigenvalue(minus, n), -0.01 * largest);
  const std::vector<double> left = covarianceLess(a, t, n);
  std::vector<double> taken = a;
  for (size_t i = 0; i < a.size(); ++i) taken[i] -= left[i];
  EXPECT_GE(smallestEigenvalue(left, n), -1e-12 * largest);
  EXPECT_GE(smallestEigenvalue(taken, n), -1e-12 * largest);
  double trace_a = 0, trace_left = 0;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_LE(left[i * n + i], a[i * n + i] + 1e-12 * largest) << i;
    EXPECT_DOUBLE_EQ(left[i * n + 1], left[1 * n + i]);
    trace_a += a[i * n + i];
    trace_left += left[i * n + i];
  }
  EXPECT_LT(trace_left, 0.99 * trace_a);
  EXPECT_GT(trace_left, 0.0);
}
