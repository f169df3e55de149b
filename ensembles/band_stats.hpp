#pragma once
// Per-bin statistics of an observable over bootstrap replicas: mean, standard
// deviation, the 16/84 and 2.5/97.5 percentiles, and the bin-to-bin covariance and
// correlation. Each replica contributes one vector of bin values (already averaged over its
// ensemble members); memory is one vector per replica, nothing per event or per chain.
//
// Conventions (those of numpy): std and covariance use the n-1 denominator (0 for a single
// replica); percentiles interpolate linearly between order statistics
// (numpy.percentile's default); correlation is 0 where either bin has zero spread.
#include <cstddef>
#include <vector>

namespace foldfarm::ensembles {

struct BandStats {
  size_t replicas = 0;
  size_t bins = 0;
  std::vector<double> mean, std, p16, p84, p2_5, p97_5;
  std::vector<double> covariance;   // bins x bins, row-major
  std::vector<double> correlation;  // bins x bins, row-major
};

class BandAccumulator {
 public:
  explicit BandAccumulator(size_t bins) : bins_(bins) {}
  // Throws Error if values.size() != bins.
  void add(std::vector<double> values);
  size_t replicas() const { return rows_.size(); }
  const std::vector<std::vector<double>>& rows() const { return rows_; }
  // Throws Error when no replica was added.
  BandStats compute() const;

 private:
  size_t bins_;
  std::vector<std::vector<double>> rows_;
};

// Mean and standard deviation of one value per replica (a Δ, two campaigns' difference), by
// the conventions above: n-1 denominator, std 0 below two values; mean NaN for none.
struct MeanStd {
  double mean = 0, std = 0;
};
MeanStd meanAndStd(const std::vector<double>& values);

// q in [0, 100]; linear interpolation between closest ranks. `values` is copied and sorted.
double percentile(std::vector<double> values, double q);

// The covariance (bins x bins, row-major) of the unit-area density d_b = S_b / (W width_b),
// W = Σ_b S_b, of a weighted histogram (Σw and Σw² per bin of `edges`), from the statistics of
// its entries: to first order, the weights held fixed and the bins independent, Cov(S_a, S_b)
// = δ_ab S2_a, so Cov(d_a, d_b) = [δ_ab S2_a - f_b S2_a - f_a S2_b + f_a f_b S2] /
// (W² width_a width_b), f = S / W, S2 = Σ_b S2_b. All zero when W <= 0.
std::vector<double> densityCovariance(const std::vector<double>& sumw,
                                      const std::vector<double>& sumw2,
                                      const std::vector<double>& edges);

// Eigenvalues and eigenvectors of a symmetric n x n matrix (row-major; symmetrised first):
// vectors holds eigenvector e in column e (vectors[i * n + e]). Cyclic Jacobi rotations, to a
// relative precision near that of a double. Throws Error if m.size() != n * n.
struct SymmetricEigen {
  std::vector<double> values;   // unordered
  std::vector<double> vectors;  // n x n, row-major
};
SymmetricEigen symmetricEigen(const std::vector<double>& m, size_t n);

// What is left of a covariance estimate `a` once a part `t` (a covariance too) is taken off,
// kept a covariance no larger than `a`: A^{1/2} (I - S)_+ A^{1/2}, S = T in the coordinates
// where A is the identity (on A's range; a part of T outside it has nothing to take from),
// (.)_+ setting negative eigenvalues to zero. It is A - T when T lies within A's range and
// below A; in every case 0 <= result <= A (Loewner order). A plain A - T can have negative
// eigenvalues when A is estimated from fewer replicas than bins, and its positive part can
// exceed A. Throws Error if a or t is not n x n.
std::vector<double> covarianceLess(const std::vector<double>& a, const std::vector<double>& t,
                                   size_t n);

}  // namespace foldfarm::ensembles
