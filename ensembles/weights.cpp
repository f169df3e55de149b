#include "ensembles/weights.hpp"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/seed.hpp"
#include "ensembles/seeds.hpp"

namespace foldfarm::ensembles {
namespace {

// SplitMix64 stream: portable, so a replica's weights do not depend on the standard
// library's distribution implementations.
class SplitMixStream {
 public:
  explicit SplitMixStream(uint64_t seed) : state_(seed) {}
  double uniform() {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
  }

 private:
  uint64_t state_;
};

}  // namespace

namespace {

std::vector<double> poissonOnes(size_t n, uint64_t seed) {
  std::vector<double> w(n, 1.0);
  SplitMixStream rng(seed);
  const double p0 = std::exp(-1.0);
  for (size_t i = 0; i < n; ++i) {
    // Inversion of the Poisson(1) CDF: P(k) = e^-1 / k!.
    double u = rng.uniform();
    int k = 0;
    double p = p0, cdf = p0;
    while (u > cdf && k < 64) {
      ++k;
      p /= k;
      cdf += p;
    }
    w[i] = k;
  }
  return w;
}

}  // namespace

std::vector<double> bootstrapWeights(size_t n, uint64_t campaign_seed, int replica) {
  if (replica == 0) return std::vector<double>(n, 1.0);
  return poissonOnes(n, bootstrapSeed(campaign_seed, replica));
}

std::vector<double> mcBootstrapWeights(size_t n, uint64_t campaign_seed, int replica) {
  return poissonOnes(n, mcBootstrapSeed(campaign_seed, replica));
}

void to_json(nlohmann::json& j, const WeightReport& r) {
  j = nlohmann::json{{"events", r.events},
                     {"non_finite", r.non_finite},
                     {"clipped", r.clipped},
                     {"mean_before", r.mean_before},
                     {"max_after", r.max_after},
                     {"ess", r.ess},
                     {"ess_fraction", r.ess_fraction}};
}

std::vector<double> likelihoodRatio(const std::vector<float>& prob) {
  std::vector<double> w(prob.size());
  for (size_t i = 0; i < prob.size(); ++i) {
    double f = prob[i];
    w[i] = f / (1.0 - f);  // f = 1 gives +inf, caught by sanitizeAndNormalise
  }
  return w;
}

WeightReport sanitizeAndNormalise(std::vector<double>& w, const std::vector<uint8_t>& active,
                                  const WeightLimits& limits, const std::string& what,
                                  const std::vector<double>* mean_weights) {
  if (!active.empty() && active.size() != w.size())
    throw Error(what + ": selection flags and weights differ in length");
  if (mean_weights != nullptr && mean_weights->size() != w.size())
    throw Error(what + ": the mean's weights and the weights differ in length");
  auto isActive = [&](size_t i) { return active.empty() || active[i] != 0; };
  auto weightOf = [&](size_t i) { return mean_weights != nullptr ? (*mean_weights)[i] : 1.0; };
  WeightReport rep;
  // 1. The (weighted) mean of the finite factors. It holds the classes' prior (step 1's ratio
  //    carries Σ data / Σ MC): the limits and the replacements apply to the factors divided by
  //    it, so that max_weight means "times the mean" whatever the samples' sizes (before: the
  //    raw factors were clipped, at 4.6 times the mean with 20 times more data than MC).
  double sum = 0, norm = 0, norm_all = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!isActive(i)) {
      w[i] = 1.0;
      continue;
    }
    ++rep.events;
    const double m = weightOf(i);
    norm_all += m;
    if (std::isfinite(w[i])) {
      sum += m * w[i];
      norm += m;
    }
  }
  if (rep.events == 0) throw Error(what + ": no event passes the selection");
  if (!(norm_all > 0))
    throw Error(what + ": the events that pass the selection have a total weight of " +
                std::to_string(norm_all));
  const double scale = norm > 0 ? sum / norm : 1.0;  // no finite factor: taken as normalised
  if (!(scale > 0)) throw Error(what + ": weights have non-positive mean " + std::to_string(scale));
  // 2. Normalised, then NaN -> 1 (the mean), +-inf and factors outside the limits -> the limit;
  //    when any was, normalised again (its mean moved).
  double sum_after = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!isActive(i)) continue;
    double& x = w[i];
    if (!std::isfinite(x)) {
      ++rep.non_finite;
      x = std::isnan(x) ? 1.0 : (x > 0 ? limits.max_weight : limits.min_weight);
    } else {
      x /= scale;
      if (x > limits.max_weight || x < limits.min_weight) {
        ++rep.clipped;
        x = std::min(std::max(x, limits.min_weight), limits.max_weight);
      }
    }
    sum_after += weightOf(i) * x;
  }
  rep.mean_before = scale;
  if (rep.non_finite > 0 || rep.clipped > 0) {
    const double mean_after = sum_after / norm_all;
    if (!(mean_after > 0))
      throw Error(what + ": weights have non-positive mean " + std::to_string(mean_after) +
                  " once the non-finite and extreme ones are replaced");
    for (size_t i = 0; i < w.size(); ++i)
      if (isActive(i)) w[i] /= mean_after;
    rep.mean_before = scale * mean_after;
  }
  double s1 = 0, s2 = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!isActive(i)) continue;
    s1 += w[i];
    s2 += w[i] * w[i];
    rep.max_after = std::max(rep.max_after, w[i]);
  }
  rep.ess = s2 > 0 ? s1 * s1 / s2 : 0.0;
  rep.ess_fraction = rep.ess / static_cast<double>(rep.events);
  if (rep.non_finite > 0 || rep.clipped > 0) {
    logWarn(
        "{}: {} non-finite and {} extreme weights of {} replaced or clipped to [{}, {}] times "
        "their mean",
        what, rep.non_finite, rep.clipped, rep.events, limits.min_weight, limits.max_weight);
  }
  return rep;
}

double effectiveSampleSize(const std::vector<double>& w) {
  double s1 = 0, s2 = 0;
  for (double x : w) {
    s1 += x;
    s2 += x * x;
  }
  return s2 > 0 ? s1 * s1 / s2 : 0.0;
}

double effectiveSampleSize(const std::vector<double>& w, const std::vector<uint8_t>& active) {
  double s1 = 0, s2 = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!active.empty() && active[i] == 0) continue;
    s1 += w[i];
    s2 += w[i] * w[i];
  }
  return s2 > 0 ? s1 * s1 / s2 : 0.0;
}

}  // namespace foldfarm::ensembles
