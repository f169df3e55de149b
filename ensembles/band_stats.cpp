#include "ensembles/band_stats.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/base/error.hpp"

namespace foldfarm::ensembles {

void BandAccumulator::add(std::vector<double> values) {
  if (values.size() != bins_)
    throw Error("band: replica has " + std::to_string(values.size()) + " bins, expected " +
                std::to_string(bins_));
  rows_.push_back(std::move(values));
}

std::vector<double> densityCovariance(const std::vector<double>& sumw,
                                      const std::vector<double>& sumw2,
                                      const std::vector<double>& edges) {
  const size_t n = sumw.size();
  if (sumw2.size() != n || edges.size() != n + 1)
    throw Error("densityCovariance: " + std::to_string(n) + " bins, " +
                std::to_string(sumw2.size()) + " sums of squares and " +
                std::to_string(edges.size()) + " edges");
  double w = 0, w2 = 0;
  for (size_t b = 0; b < n; ++b) {
    w += sumw[b];
    w2 += sumw2[b];
  }
  std::vector<double> cov(n * n, 0.0);
  if (w <= 0) return cov;
  for (size_t a = 0; a < n; ++a) {
    const double fa = sumw[a] / w, wa = edges[a + 1] - edges[a];
    for (size_t b = 0; b < n; ++b) {
      const double fb = sumw[b] / w, wb = edges[b + 1] - edges[b];
      const double s = (a == b ? sumw2[a] : 0.0) - fb * sumw2[a] - fa * sumw2[b] + fa * fb * w2;
      cov[a * n + b] = s / (w * w * wa * wb);
    }
    cov[a * n + a] = std::max(0.0, cov[a * n + a]);
  }
  return cov;
}

MeanStd meanAndStd(const std::vector<double>& values) {
  MeanStd m;
  for (double v : values) m.mean += v;
  m.mean /= static_cast<double>(values.size());
  if (values.size() < 2) return m;
  double var = 0;
  for (double v : values) var += (v - m.mean) * (v - m.mean);
  m.std = std::sqrt(var / static_cast<double>(values.size() - 1));
  return m;
}

double percentile(std::vector<double> values, double q) {
  if (values.empty()) throw Error("percentile of an empty set");
  std::sort(values.begin(), values.end());
  double pos = q / 100.0 * static_cast<double>(values.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, values.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

BandStats BandAccumulator::compute() const {
  if (rows_.empty()) throw Error("band: no replica to aggregate");
  BandStats s;
  s.replicas = rows_.size();
  s.bins = bins_;
  const double n = static_cast<double>(rows_.size());
  s.mean.assign(bins_, 0.0);
  for (const auto& r : rows_)
    for (size_t b = 0; b < bins_; ++b) s.mean[b] += r[b];
  for (double& m : s.mean) m /= n;

  s.covariance.assign(bins_ * bins_, 0.0);
  if (rows_.size() > 1) {
    for (const auto& r : rows_)
      for (size_t a = 0; a < bins_; ++a) {
        double da = r[a] - s.mean[a];
        if (da == 0) continue;
        for (size_t b = 0; b < bins_; ++b) s.covariance[a * bins_ + b] += da * (r[b] - s.mean[b]);
      }
    for (double& c : s.covariance) c /= (n - 1.0);
  }
  s.std.resize(bins_);
  for (size_t b = 0; b < bins_; ++b)
    s.std[b] = std::sqrt(std::max(0.0, s.covariance[b * bins_ + b]));
  s.correlation.assign(bins_ * bins_, 0.0);
  for (size_t a = 0; a < bins_; ++a)
    for (size_t b = 0; b < bins_; ++b) {
      double d = s.std[a] * s.std[b];
      s.correlation[a * bins_ + b] = d > 0 ? s.covariance[a * bins_ + b] / d : 0.0;
    }

  s.p16.resize(bins_);
  s.p84.resize(bins_);
  s.p2_5.resize(bins_);
  s.p97_5.resize(bins_);
  std::vector<double> column(rows_.size());
  for (size_t b = 0; b < bins_; ++b) {
    for (size_t i = 0; i < rows_.size(); ++i) column[i] = rows_[i][b];
    std::sort(column.begin(), column.end());
    s.p16[b] = percentile(column, 16.0);
    s.p84[b] = percentile(column, 84.0);
    s.p2_5[b] = percentile(column, 2.5);
    s.p97_5[b] = percentile(column, 97.5);
  }
  return s;
}

SymmetricEigen symmetricEigen(const std::vector<double>& m, size_t n) {
  if (m.size() != n * n)
    throw Error("symmetricEigen: a matrix of " + std::to_string(m.size()) + " values is not " +
                std::to_string(n) + " x " + std::to_string(n));
  std::vector<double> a(n * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) a[i * n + j] = 0.5 * (m[i * n + j] + m[j * n + i]);
  SymmetricEigen out;
  out.vectors.assign(n * n, 0.0);
  std::vector<double>& v = out.vectors;
  for (size_t i = 0; i < n; ++i) v[i * n + i] = 1.0;
  double scale = 0;
  for (double x : a) scale += x * x;
  // Cyclic Jacobi: rotate away each off-diagonal element in turn; A -> J^T A J, V -> V J.
  for (int sweep = 0; sweep < 100 && scale > 0; ++sweep) {
    double off = 0;
    for (size_t p = 0; p < n; ++p)
      for (size_t q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    if (off <= 1e-32 * scale) break;
    for (size_t p = 0; p < n; ++p)
      for (size_t q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (apq == 0) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::hypot(theta, 1.0));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        auto rotate = [&](std::vector<double>& x, size_t i_p, size_t i_q) {
          const double xp = x[i_p], xq = x[i_q];
          x[i_p] = c * xp - s * xq;
          x[i_q] = s * xp + c * xq;
        };
        for (size_t k = 0; k < n; ++k) rotate(a, k * n + p, k * n + q);  // columns
        for (size_t k = 0; k < n; ++k) rotate(a, p * n + k, q * n + k);  // rows
        for (size_t k = 0; k < n; ++k) rotate(v, k * n + p, k * n + q);
      }
  }
  out.values.resize(n);
  for (size_t i = 0; i < n; ++i) out.values[i] = a[i * n + i];
  return out;
}

std::vector<double> covarianceLess(const std::vector<double>& a, const std::vector<double>& t,
                                   size_t n) {
  if (t.size() != n * n)
    throw Error("covarianceLess: a matrix of " + std::to_string(t.size()) + " values is not " +
                std::to_string(n) + " x " + std::to_string(n));
  const SymmetricEigen ea = symmetricEigen(a, n);
  double largest = 0;
  for (double l : ea.values) largest = std::max(largest, l);
  // A's range: U (n x k) with the eigenvalues above rounding; W = U Λ^{1/2} (A = W W^T).
  std::vector<size_t> kept;
  for (size_t e = 0; e < n; ++e)
    if (ea.values[e] > 1e-12 * largest) kept.push_back(e);
  const size_t k = kept.size();
  std::vector<double> w(n * k);
  for (size_t i = 0; i < n; ++i)
    for (size_t c = 0; c < k; ++c)
      w[i * k + c] = ea.vectors[i * n + kept[c]] * std::sqrt(ea.values[kept[c]]);
  // S = Λ^{-1/2} U^T T U Λ^{-1/2}: T in the coordinates where A is the identity.
  std::vector<double> tu(n * k, 0.0);  // T U
  for (size_t i = 0; i < n; ++i)
    for (size_t c = 0; c < k; ++c) {
      double x = 0;
      for (size_t j = 0; j < n; ++j) x += t[i * n + j] * ea.vectors[j * n + kept[c]];
      tu[i * k + c] = x;
    }
  std::vector<double> s(k * k, 0.0);
  for (size_t r = 0; r < k; ++r)
    for (size_t c = 0; c < k; ++c) {
      double x = 0;
      for (size_t i = 0; i < n; ++i) x += ea.vectors[i * n + kept[r]] * tu[i * k + c];
      s[r * k + c] = x / std::sqrt(ea.values[kept[r]] * ea.values[kept[c]]);
    }
  // A^{1/2} (I - S)_+ A^{1/2} = W V diag(max(1 - s_e, 0)) V^T W^T.
  const SymmetricEigen es = symmetricEigen(s, k);
  std::vector<double> wv(n * k, 0.0);  // W V, column e scaled by sqrt(max(1 - s_e, 0))
  for (size_t e = 0; e < k; ++e) {
    const double keep = std::sqrt(std::max(0.0, 1.0 - es.values[e]));
    if (keep == 0) continue;
    for (size_t i = 0; i < n; ++i) {
      double x = 0;
      for (size_t c = 0; c < k; ++c) x += w[i * k + c] * es.vectors[c * k + e];
      wv[i * k + e] = x * keep;
    }
  }
  std::vector<double> out(n * n, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i; j < n; ++j) {
      double x = 0;
      for (size_t e = 0; e < k; ++e) x += wv[i * k + e] * wv[j * k + e];
      out[i * n + j] = out[j * n + i] = x;
    }
  return out;
}

}  // namespace foldfarm::ensembles
