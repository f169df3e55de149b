#include "core/data/histogram.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace foldfarm::data {

Binning Binning::linspace(double lo, double hi, int n_edges) {
  if (n_edges < 2 || !(hi > lo))
    throw std::invalid_argument("Binning::linspace needs hi > lo and >= 2 edges");
  Binning b;
  b.edges.resize(static_cast<size_t>(n_edges));
  const double step = (hi - lo) / (n_edges - 1);
  for (int i = 0; i < n_edges; ++i) b.edges[i] = lo + step * i;
  b.edges.back() = hi;
  return b;
}

int Binning::find(double x) const {
  if (std::isnan(x)) return numBins();
  if (x < edges.front()) return -1;
  if (x > edges.back()) return numBins();
  if (x == edges.back()) return numBins() - 1;
  return static_cast<int>(std::upper_bound(edges.begin(), edges.end(), x) - edges.begin()) - 1;
}

Binning observableBinning(int observable) {
  switch (observable) {
    case 0:
      return Binning::linspace(0, 75, 50);
    case 1:
      return Binning::linspace(0, 0.6, 50);
    case 2:
      return Binning::linspace(0, 80, 80);
    case 3:
      return Binning::linspace(-14, -2, 50);
    case 4:
      return Binning::linspace(0, 0.5, 50);
    case 5:
      return Binning::linspace(0, 1.2, 50);
    default:
      throw std::out_of_range("observable index " + std::to_string(observable) + " outside 0..5");
  }
}

Histogram1D::Histogram1D(Binning b) : binning_(std::move(b)) {
  if (binning_.edges.size() < 2) throw std::invalid_argument("Histogram1D needs at least 2 edges");
  sumw_.assign(static_cast<size_t>(binning_.numBins()), 0.0);
  sumw2_.assign(static_cast<size_t>(binning_.numBins()), 0.0);
}

void Histogram1D::fill(double x, double w) {
  const int b = binning_.find(x);
  if (b < 0) {
    under_ += w;
  } else if (b >= binning_.numBins()) {
    over_ += w;
  } else {
    sumw_[b] += w;
    sumw2_[b] += w * w;
  }
}

void Histogram1D::fill(const std::vector<double>& values, const std::vector<double>& weights) {
  if (!weights.empty() && weights.size() != values.size())
    throw std::invalid_argument("Histogram1D::fill: " + std::to_string(values.size()) +
                                " values but " + std::to_string(weights.size()) + " weights");
  for (size_t i = 0; i < values.size(); ++i) fill(values[i], weights.empty() ? 1.0 : weights[i]);
}

double Histogram1D::inRangeSum() const {
  double s = 0;
  for (double v : sumw_) s += v;
  return s;
}

std::vector<double> Histogram1D::density() const {
  std::vector<double> d(sumw_.size(), 0.0);
  const double s = inRangeSum();
  if (s == 0) return d;
  for (size_t b = 0; b < d.size(); ++b) d[b] = sumw_[b] / (s * binning_.width(static_cast<int>(b)));
  return d;
}

std::vector<double> Histogram1D::densityErrors() const {
  std::vector<double> d(sumw_.size(), 0.0);
  const double s = inRangeSum();
  if (s == 0) return d;
  for (size_t b = 0; b < d.size(); ++b)
    d[b] = std::sqrt(sumw2_[b]) / (s * binning_.width(static_cast<int>(b)));
  return d;
}

double triangularDiscriminator(const std::vector<double>& p, const std::vector<double>& q,
                               const Binning& b) {
  if (p.size() != q.size() || static_cast<int>(p.size()) != b.numBins())
    throw std::invalid_argument("triangularDiscriminator: densities and binning differ in size");
  double d = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    // A bin's density negative (negative event weights in its events) counts as 0, as no
    // density can be less: a tail bin at -0.002 beside a truth of 0.003 would otherwise weigh
    // (p-q)²/(p+q), 25 times its truth, or be left out where p + q < 0. Empty bins are left out,
    // as the statistical floor does.
    const double pi = std::max(p[i], 0.0), qi = std::max(q[i], 0.0), s = pi + qi;
    if (!(s > 0)) continue;
    d += b.width(static_cast<int>(i)) * (pi - qi) * (pi - qi) / s;
  }
  return 0.5 * d * 1e3;
}

double triangularDiscriminator(const Histogram1D& p, const Histogram1D& q) {
  if (p.binning().edges != q.binning().edges)
    throw std::invalid_argument("triangularDiscriminator: histograms have different binnings");
  return triangularDiscriminator(p.density(), q.density(), p.binning());
}

}  // namespace foldfarm::data
