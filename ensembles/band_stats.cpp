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

std::vector<double> positivePart(const std::vector<double>& cov, size_t n) {
  if (cov.size() != n * n)
    throw Error("positivePart: a matrix of " + std::to_string(cov.size()) + " values is not " +
                std::to_string(n) + " x " + std::to_string(n));
  std::vector<double> a(n * n), v(n * n, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) a[i * n + j] = 0.5 * (cov[i * n + j] + cov[j * n + i]);
  const std::vector<double> symmetric = a;
  for (size_t i = 0; i < n; ++i) v[i * n + i] = 1.0;
  double scale = 0;
  for (double x : a) scale += x * x;
  if (scale == 0) return symmetric;
  // Cyclic Jacobi: rotate away each off-diagonal element in turn; A -> J^T A J, V -> V J.
  for (int sweep = 0; sweep < 100; ++sweep) {
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
        for (size_t k = 0; k < n; ++k) {
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (size_t k = 0; k < n; ++k) {
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (size_t k = 0; k < n; ++k) {
          const double vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  double largest = 0;
  for (size_t i = 0; i < n; ++i) largest = std::max(largest, std::abs(a[i * n + i]));
  bool negative = false;
  for (size_t i = 0; i < n; ++i) negative = negative || a[i * n + i] < -1e-14 * largest;
  if (!negative) return symmetric;  // already positive semi-definite: unchanged
  std::vector<double> out(n * n, 0.0);
  for (size_t e = 0; e < n; ++e) {
    const double lambda = a[e * n + e];
    if (lambda <= 0) continue;
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) out[i * n + j] += lambda * v[i * n + e] * v[j * n + e];
  }
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j)
      out[i * n + j] = out[j * n + i] = 0.5 * (out[i * n + j] + out[j * n + i]);
  return out;
}

}  // namespace foldfarm::ensembles
