#pragma once
// Per-bin statistics of an observable over bootstrap replicas (SPEC §5): mean, standard
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

// q in [0, 100]; linear interpolation between closest ranks. `values` is copied and sorted.
double percentile(std::vector<double> values, double q);

// The positive semi-definite part of a symmetric n x n matrix (row-major): its eigenvalues
// below zero set to zero (the nearest such matrix in the Frobenius norm). The difference of
// two covariance estimates can have negative eigenvalues by chance; this keeps what is left
// a covariance. Cyclic Jacobi rotations, to a relative precision near that of a double; the
// input is symmetrised first. Throws Error if cov.size() != n * n.
std::vector<double> positivePart(const std::vector<double>& cov, size_t n);

}  // namespace foldfarm::ensembles
