#include "report/alpha_beta.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/base/error.hpp"

namespace foldfarm::report {

double AlphaBeta::allreduceSeconds(int ranks, double bytes, int buckets) const {
  if (ranks <= 1) return 0.0;
  const double n = ranks;
  return std::max(1, buckets) * 2.0 * (n - 1) * alpha_s +
         2.0 * (n - 1) / n * bytes * beta_s_per_byte;
}

double StepModel::stepSeconds(int ranks) const {
  const double hidden = std::clamp(overlap, 0.0, 1.0);
  return compute_s + (1.0 - hidden) * link.allreduceSeconds(ranks, bytes, buckets);
}

double StepModel::efficiency(int ranks) const {
  const double t = stepSeconds(ranks);
  return t > 0 ? compute_s / t : 0.0;
}

double StepModel::throughput(int ranks, double batch_per_rank) const {
  const double t = stepSeconds(ranks);
  return t > 0 ? ranks * batch_per_rank / t : 0.0;
}

AlphaBetaFit fitAlphaBeta(const std::vector<CommSample>& samples, double alpha_fallback_s) {
  std::vector<CommSample> s;
  for (const auto& c : samples)
    if (c.ranks >= 2 && std::isfinite(c.seconds)) s.push_back(c);
  if (s.empty()) throw Error("α–β fit: no all-reduce measurement with 2 or more ranks");
  std::set<int> distinct;
  for (const auto& c : s) distinct.insert(c.ranks);
  // T = a·x1 + b·x2 with x1 = buckets·2(n−1), x2 = 2(n−1)/n·bytes.
  auto x1 = [](const CommSample& c) { return std::max(1, c.buckets) * 2.0 * (c.ranks - 1); };
  auto x2 = [](const CommSample& c) { return 2.0 * (c.ranks - 1) / c.ranks * c.bytes; };
  auto betaOnly = [&](double a) {
    double num = 0, den = 0;
    for (const auto& c : s) {
      num += x2(c) * (c.seconds - a * x1(c));
      den += x2(c) * x2(c);
    }
    return den > 0 ? std::max(0.0, num / den) : 0.0;
  };
  auto alphaOnly = [&](double b) {
    double num = 0, den = 0;
    for (const auto& c : s) {
      num += x1(c) * (c.seconds - b * x2(c));
      den += x1(c) * x1(c);
    }
    return den > 0 ? std::max(0.0, num / den) : 0.0;
  };
  AlphaBetaFit fit;
  if (distinct.size() >= 2) {
    double s11 = 0, s12 = 0, s22 = 0, t1 = 0, t2 = 0;
    for (const auto& c : s) {
      s11 += x1(c) * x1(c);
      s12 += x1(c) * x2(c);
      s22 += x2(c) * x2(c);
      t1 += x1(c) * c.seconds;
      t2 += x2(c) * c.seconds;
    }
    const double det = s11 * s22 - s12 * s12;
    double a = -1, b = -1;
    if (std::fabs(det) > 1e-30 * s11 * s22) {
      a = (t1 * s22 - t2 * s12) / det;
      b = (s11 * t2 - s12 * t1) / det;
    }
    // Non-negative least squares in two variables: the optimum is interior or on an axis.
    if (a < 0 || b < 0) {
      const double b0 = betaOnly(0.0), a0 = alphaOnly(0.0);
      double r_b = 0, r_a = 0;
      for (const auto& c : s) {
        r_b += std::pow(c.seconds - b0 * x2(c), 2);
        r_a += std::pow(c.seconds - a0 * x1(c), 2);
      }
      if (r_b <= r_a)
        a = 0, b = b0;
      else
        a = a0, b = 0;
    }
    fit.link = {a, b};
    fit.alpha_fitted = true;
  } else {
    fit.link = {alpha_fallback_s, betaOnly(alpha_fallback_s)};
  }
  double ss = 0;
  for (const auto& c : s)
    ss += std::pow(c.seconds - fit.link.allreduceSeconds(c.ranks, c.bytes, c.buckets), 2);
  fit.rms_residual_s = std::sqrt(ss / s.size());
  return fit;
}

std::vector<int> powersOfTwo(int max_ranks) {
  std::vector<int> out;
  for (int n = 1; n <= max_ranks && n > 0; n *= 2) out.push_back(n);
  return out;
}

}  // namespace foldfarm::report
