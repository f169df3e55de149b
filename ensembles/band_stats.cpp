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
  for (size_t b = 0; b < bins_; ++b) s.std[b] = std::sqrt(std::max(0.0, s.covariance[b * bins_ + b]));
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

}  // namespace foldfarm::ensembles
