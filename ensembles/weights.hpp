#pragma once
// Per-event weight bookkeeping of an OmniFold chain: bootstrap data weights,
// the reweighting factor f/(1-f) of a classifier, sanitising (non-finite and extreme
// weights), normalisation by the global mean, and the effective sample size.
//
// Everything here is deterministic, single-threaded and independent of LibTorch.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace foldfarm::ensembles {

// Poisson(1) weights of bootstrap replica r for `n` data events, drawn from
// bootstrapSeed(campaign_seed, r) only (a portable generator: identical on every platform).
// Replica 0 is the nominal fit: all weights are 1.
std::vector<double> bootstrapWeights(size_t n, uint64_t campaign_seed, int replica);
// Poisson(1) weights of the simulation for MC-statistics replica r (every replica resamples).
std::vector<double> mcBootstrapWeights(size_t n, uint64_t campaign_seed, int replica);

// Limits applied to reweighting factors before normalisation.
struct WeightLimits {
  // In units of the factors' mean (sanitizeAndNormalise): the limits mean the same whatever
  // the samples' sizes.
  double max_weight = 100.0;  // factors above this times the mean are clipped (warned, counted)
  double min_weight = 0.0;    // factors below are raised to it (negative ones are a bug)
};

// What sanitising and normalising found; written into the chain's history and result.
struct WeightReport {
  int64_t events = 0;       // events the weights apply to (active ones)
  int64_t non_finite = 0;   // NaN or infinite factors, replaced (NaN -> 1, +inf -> max)
  int64_t clipped = 0;      // finite factors outside [min_weight, max_weight] times the mean
  double mean_before = 0;   // what the factors were divided by: their (weighted) mean
  double max_after = 0;     // largest normalised weight
  double ess = 0;           // effective sample size (Σw)²/Σw² of the normalised weights
  double ess_fraction = 0;  // ess / events
};
void to_json(nlohmann::json& j, const WeightReport& r);

// Reweighting factor f/(1-f) for classifier probabilities `prob` (label 1 = target).
std::vector<double> likelihoodRatio(const std::vector<float>& prob);

// Normalises `w` in place over the events with active[i] != 0 (all when `active` is empty):
// divides every active weight by the mean of the finite ones, weighted by `mean_weights` where
// given (the weights the step's classifier saw for the sample being reweighted: the ratio then
// keeps that sample's total weight over the active events, and with it their share against the
// inactive ones), else plain. Then sanitises the normalised weights: NaN -> 1, +-inf -> the
// limits, finite ones outside [min_weight, max_weight] clipped to them; when any was, divides
// by the mean again. The limits are thus in units of the mean (a factor f/(1-f) carries the
// classes' prior: in raw units the clip would depend on the samples' sizes), and a scaled `w`
// gives the same weights and counts. Inactive entries are set to 1 (events failing the step's
// selection keep weight 1). Logs one warning naming `what` when anything was replaced or
// clipped. Throws Error when no active event is left or the mean is not positive.
WeightReport sanitizeAndNormalise(std::vector<double>& w, const std::vector<uint8_t>& active,
                                  const WeightLimits& limits, const std::string& what,
                                  const std::vector<double>* mean_weights = nullptr);

// (Σw)² / Σw²; 0 for an empty or all-zero vector.
double effectiveSampleSize(const std::vector<double>& w);
// The same over the events with active[i] != 0 (all when `active` is empty).
double effectiveSampleSize(const std::vector<double>& w, const std::vector<uint8_t>& active);

}  // namespace foldfarm::ensembles
