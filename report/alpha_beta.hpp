#pragma once
// The α–β (latency–bandwidth) model of data-parallel step time, used by `foldfarm study
// scaling` to extrapolate measured step times to many ranks.
//
// Assumptions (those of dist/: ring all-reduce of fp32 gradients in buckets, weak scaling
// with a fixed batch per rank):
//   all-reduce time  T_ar(n) = buckets · 2(n−1) · α  +  2(n−1)/n · bytes · β
//       (a ring all-reduce is a reduce-scatter plus an all-gather: 2(n−1) messages per
//        bucket, each rank sends and receives 2(n−1)/n of the data; nccl-tests' bus
//        bandwidth factor)
//   step time        T(n) = T_compute + (1 − overlap) · T_ar(n)
//       T_compute = the measured time of one step on one rank (forward, backward,
//       optimiser: what does not change with n); overlap = the fraction of the all-reduce
//       hidden behind the backward pass (buckets reduced while later gradients are being
//       computed), measured as 1 − comm_wait / comm on the multi-rank runs
//   throughput       n · batch / T(n);  efficiency  T_compute / T(n)
// The model ignores stragglers, contention between jobs and topology (tree vs ring
// crossover), so it is an upper bound on efficiency at large n.
//
// Thread-safety: plain values.
#include <vector>

namespace foldfarm::report {

struct AlphaBeta {
  double alpha_s = 0;          // latency per message [s]
  double beta_s_per_byte = 0;  // inverse bandwidth [s/byte]
  double allreduceSeconds(int ranks, double bytes, int buckets) const;
};

struct StepModel {
  double compute_s = 0;  // T_compute
  double overlap = 0;    // in [0, 1]
  double bytes = 0;      // gradient bytes all-reduced per step
  int buckets = 1;
  AlphaBeta link;
  double stepSeconds(int ranks) const;
  double efficiency(int ranks) const;
  double throughput(int ranks, double batch_per_rank) const;  // samples/s
};

// One measured all-reduce time per step at `ranks` (>= 2).
struct CommSample {
  int ranks = 0;
  double seconds = 0;
  double bytes = 0;
  int buckets = 1;
};

struct AlphaBetaFit {
  AlphaBeta link;
  bool alpha_fitted = false;  // false: α held at the given value, only β fitted
  double rms_residual_s = 0;
};

// Least squares of T_ar over the samples with α, β >= 0. With samples at fewer than two
// distinct rank counts, α is held at `alpha_fallback_s` and only β is fitted. Throws Error
// when there is no sample.
AlphaBetaFit fitAlphaBeta(const std::vector<CommSample>& samples, double alpha_fallback_s);

// 1, 2, 4, … up to max_ranks (inclusive when a power of two).
std::vector<int> powersOfTwo(int max_ranks);

}  // namespace foldfarm::report
