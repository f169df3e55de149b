#pragma once
// Weighted 1-D histograms with the observables' binnings and the triangular discriminator.
// Thread-safety: plain values; fill from one thread at a time.
#include <cstdint>
#include <vector>

namespace foldfarm::data {

struct Binning {
  std::vector<double> edges;  // strictly increasing, at least 2

  // numpy.linspace(lo, hi, n_edges): n_edges edges, n_edges - 1 bins.
  static Binning linspace(double lo, double hi, int n_edges);
  int numBins() const { return static_cast<int>(edges.size()) - 1; }
  double width(int b) const { return edges[b + 1] - edges[b]; }
  // Bin of x: -1 underflow, numBins() overflow; the last edge belongs to the last bin
  // (numpy.histogram convention); NaN counts as overflow.
  int find(double x) const;
};

// Edges for observable index 0..5 (order of observables.hpp; those of OmniLearn's
// scripts/evaluate_omnifold.py with 50 edges): mass
// linspace(0,75,50), width (0,0.6,50), multiplicity (0,80,80), ln rho (-14,-2,50),
// z_g (0,0.5,50), tau21 (0,1.2,50). Throws std::out_of_range for other indices.
Binning observableBinning(int observable);

class Histogram1D {
 public:
  explicit Histogram1D(Binning b);
  void fill(double x, double w = 1.0);
  // Fills values[i] with weights[i] (weights empty = all 1). Sizes must match.
  void fill(const std::vector<double>& values, const std::vector<double>& weights = {});

  const Binning& binning() const { return binning_; }
  const std::vector<double>& sumW() const { return sumw_; }
  const std::vector<double>& sumW2() const { return sumw2_; }
  double underflow() const { return under_; }
  double overflow() const { return over_; }
  double inRangeSum() const;
  // Density normalised to unit area over the in-range bins: sumW_b / (sum * width_b)
  // (numpy density=True); all zeros when the in-range sum is 0. Errors: sqrt(sumW2_b)
  // scaled alike.
  std::vector<double> density() const;
  std::vector<double> densityErrors() const;

 private:
  Binning binning_;
  std::vector<double> sumw_, sumw2_;
  double under_ = 0, over_ = 0;
};

// Delta = 1/2 sum_b width_b (p_b - q_b)^2 / (p_b + q_b) on the unit-area densities of p and
// q (a negative density, from negative event weights, taken as 0; empty bins skipped),
// multiplied by 1e3. Throws std::invalid_argument when the
// binnings differ.
double triangularDiscriminator(const Histogram1D& p, const Histogram1D& q);
// Same, on density vectors with the given binning.
double triangularDiscriminator(const std::vector<double>& p, const std::vector<double>& q,
                               const Binning& b);

}  // namespace foldfarm::data
