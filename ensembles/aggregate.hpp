#pragma once
// Aggregation of OmniFold chains into uncertainty bands (SPEC §5).
//
// Input: chain output directories (ensembles/chain_output.hpp: result.json + histograms.h5),
// given directly or found anywhere below the given directories. Chains are read one at a
// time; memory holds one histogram set per replica, nothing per event or per chain.
//
//  1. replica result = mean over its ensemble members of the unfolded histograms;
//  2. every histogram is normalised to unit area (density: divide by Σw and bin width);
//  3. nominal = mean over replicas; band = std and the 16/84 and 2.5/97.5 percentiles per
//     bin (ensembles/band_stats.hpp); bin-to-bin covariance and correlation;
//  4. with a truth file (unfold layout with `gen_subs`; `weights` and `pass_gen` honoured):
//     triangular discriminator x10^3 of the nominal vs truth, its uncertainty (std over
//     replicas of each replica's discriminator), that of the prior (MC gen, unweighted)
//     vs truth, and the per-bin coverage of the truth by the 68% and 95% bands (fraction
//     of bins where truth or nominal is non-zero whose truth lies inside the band);
//     the statistical floor of Δ (its expectation for a perfect unfolding of samples of
//     these sizes: from Σw² of the nominal replica's unfolded weights and of the truth), and
//     the fraction of the prior-to-truth shift of each observable's mean (bin centres, in
//     range) that the nominal recovered: 1 = all of it, 0 = none, < 0 = the wrong way.
//
// Outputs in out_dir (each written atomically; out_dir created if missing):
//   bands.h5      /<observable>/{edges, nominal, std, p16, p84, p2_5, p97_5, covariance,
//                 correlation, replicas (R x bins), prior, truth}; root attributes
//                 replicas, chains, observables
//   summary.json  {"replicas", "chains", "classifier" (the chains' step model, or "mixed"),
//                 "observables": {name: {delta_prior, delta_unfolded,
//                 delta_unfolded_err, delta_floor, coverage_68, coverage_95, mean_prior,
//                 mean_unfolded, mean_truth, shift_recovered, shift_significance}}} (null
//                 without truth; shift_recovered null when prior and truth have the same
//                 mean; shift_significance = |mean_truth - mean_prior| over its standard
//                 error: below ~2 the recovered fraction is noise)
//   <observable>.png  unfolded with band, truth, prior; ratio panel (gnuplot)
//
// Throws InputError (exit 2) when no chain is found, chains disagree on binning or on the
// campaign seed, or the truth file is unreadable; nothing is written then.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace foldfarm::ensembles {

struct AggregateOptions {
  bool plots = true;  // render PNGs (needs gnuplot on PATH)
};

void aggregateRuns(const std::vector<std::string>& run_dirs, const std::string& out_dir,
                   const std::optional<std::string>& truth_path);
// Same, returning summary.json's content.
nlohmann::json aggregateRunsWithOptions(const std::vector<std::string>& run_dirs,
                                        const std::string& out_dir,
                                        const std::optional<std::string>& truth_path,
                                        const AggregateOptions& options);

// Side-by-side comparison of aggregations of the same data with the same truth (e.g. the
// PET chains and the observable-level MLP baseline). Each input is an aggregation directory
// or a campaign directory (meaning its aggregate/), read from summary.json; `names` label
// them (empty: the summaries' "classifier"). Per observable: Δ of the prior, the floor (of
// the first input), and each input's Δ ± spread and recovered shift. Returns
// {"inputs": [{name, dir, classifier, chains}], "observables": {obs: {delta_prior,
// delta_floor, <name>: {delta_unfolded, delta_unfolded_err, shift_recovered}}}, "best":
// {obs: name of the smallest Δ}}. Throws InputError naming an input without truth
// comparison, or inputs whose priors differ (not the same data).
nlohmann::json compareAggregations(const std::vector<std::string>& dirs,
                                   const std::vector<std::string>& names);
// compareAggregations' result as a Markdown table (a recovered shift in brackets when the
// prior-to-truth shift is under 2 standard errors).
std::string comparisonMarkdown(const nlohmann::json& comparison);

// Chain output directories under `root` (itself included), sorted; a directory counts when
// it holds a completed chain's result.json and histograms.h5.
std::vector<std::string> findChainDirs(const std::string& root);

}  // namespace foldfarm::ensembles
