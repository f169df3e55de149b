#pragma once
// Aggregation of OmniFold chains into uncertainty bands.
//
// Input: chain output directories (ensembles/chain_output.hpp: result.json + histograms.h5),
// given directly or found anywhere below the given directories. Chains are read one at a
// time; memory holds one histogram set per replica and group and one density set per chain
// (a few kB, for the training noise), nothing per event (event_weights.h5 holds one column
// at a time). Chains are grouped by the variation their
// result.json names (ensembles/systematics.hpp). The chains of a group are replicas and
// members of one unfolding: the same inputs, iteration count, chain configuration,
// foundation (by hash) and campaign seed; only the replica, the member, the warm start and
// the device may differ (InputError naming the first key that differs). The nominal group
// (no variation) is aggregated as follows, whether or not variations were run:
//
//  1. replica result = mean over its ensemble members of the unfolded histograms;
//  2. every histogram is normalised to unit area (density: divide by Σw and bin width);
//  3. nominal = mean over replicas; band = std and the 16/84 and 2.5/97.5 percentiles per
//     bin (ensembles/band_stats.hpp); bin-to-bin covariance and correlation: these over the
//     bootstrap replicas r >= 1 when there are two or more (replica 0, the data as measured,
//     is no draw and would narrow the band), else over every replica (logged);
//  4. with a truth file (unfold layout with `gen_subs`; `weights` and `pass_gen` honoured):
//     triangular discriminator x10^3 of the nominal vs truth, its uncertainty (std over
//     the band's replicas of each one's discriminator), that of the prior (MC gen, unweighted)
//     vs truth, and the per-bin coverage of the truth by the 68% and 95% bands (fraction
//     of bins where truth or nominal is non-zero whose truth lies inside the band);
//     the statistical floor of Δ (its expectation for a perfect unfolding of samples of
//     these sizes: from Σw² of the nominal replica's unfolded weights and of the truth), and
//     the fraction of the prior-to-truth shift of each observable's mean (bin centres, in
//     range) that the nominal recovered: 1 = all of it, 0 = none, < 0 = the wrong way.
//
// Systematics, per observable and bin on the same unit-area densities (a
// variation's replica result is the mean over its members, as in 1.):
//  5. detector and modelling variations: shift = mean over the replicas r it shares with the
//     nominal of (variation_r - nominal_r); per source, symmetrised (half_difference or max,
//     ensembles/systematics.hpp) or the one-sided shift s; the source's covariance s s^T;
//  6. mc_bootstrap: MC-statistics covariance = covariance over its replicas (n-1), less the
//     chains' training noise, which the statistical covariance holds already: one member's
//     (the pooled covariance of members about their replica's mean, from the variation's
//     replicas with two or more members, else from the nominal's) times the mean of 1/M_r
//     over its replicas; what is left is kept a covariance between zero and the spread
//     (band_stats.hpp covarianceLess). Without two members in any replica nothing is
//     removed (warning);
//  7. non_closure: n = its unfolded result (mean over its replicas) - the truth of its
//     pseudo-data file (result.json "data", histogrammed like the truth file); a source
//     named non_closure with covariance n n^T;
//  8. each source's noise (the covariance of its shift's estimate, from chains that differ in
//     their training only; with two or more): one-sided, the differences varied (r, m) -
//     baseline (r, m) (the warm reference for a warm-started variation, else the nominal);
//     half_difference, the half differences up (r, m) - down (r, m) (else the two sides'
//     differences from their baselines, as independent: an upper estimate); max, the chosen
//     side's difference, signed as the shift; non_closure, its chains'), plus the
//     statistics of the independent samples a shift compares (first order, the weights held
//     fixed: densityCovariance of the unfolded Σw, Σw²): a modelling source's simulated events
//     and its baseline's (a detector source reconstructs the same generated events: none, nor
//     a modelling variation reading the nominal's simulation); non_closure's unfolded
//     simulation and its pseudo-data truth (none when the pseudo-data are the nominal's
//     simulation). Its diagonal's square root
//     is the shift_error. E[s_b²] = t_b² + shift_error_b² for a true shift t:
//     with ShiftNoise::kSubtract the noise is taken off in quadrature bin by bin, s~_b =
//     sign(s_b) sqrt((s_b² - shift_error_b²)_+), and the source's covariance is s~ s~^T; with
//     kKeep (the default) s s^T as it is;
//  9. total covariance = statistical (`covariance`) + MC-statistics + every source's. With
//     kKeep, a modelling or non-closure source's s s^T holds its samples' statistics and
//     training noise again (summary.json shift_error_parts says how much); the training-noise
//     removal of 6. takes off only the part within the MC replicas' range (with fewer
//     replicas than bins, most of it stays: mc_stat_training_noise.removed_fraction).
//  The nominal's training noise (the part of `covariance` that is the training's): one
//  member's, as in 6., times the mean of 1/M_r over the band's replicas.
//
// Outputs in out_dir (each written atomically; out_dir created if missing):
//   bands.h5      /<observable>/{edges, nominal, std, p16, p84, p2_5, p97_5, covariance,
//                 correlation, replicas (R x bins, every replica), prior, truth, truth_std (the
//                 truth density's statistical error per bin)}; root attributes replicas,
//                 band_replicas (those the spread is over), chains (the nominal's), campaign_seed
//                 (decimal text), content (what the datasets hold), build (JSON text of the build
//                 that wrote it: core/build_info/build_info.hpp); and, per observable:
//                   covariance_total, std_total (sqrt of its diagonal): = covariance and std
//                     without variations;
//                   covariance_mc_stat                       (with an mc_bootstrap variation)
//                   covariance_mc_stat_raw                   (its replicas' spread, training
//                     noise included: when that noise was removed from covariance_mc_stat)
//                   covariance_training                      (the training noise within
//                     `covariance`: when a nominal replica has two or more members)
//                   sources/<source>/{shift, covariance}     (each detector/modelling source,
//                     and sources/non_closure)
//                   sources/<source>/{up, down}              (the raw shifts of a pair)
//                   sources/<source>/{noise_covariance, shift_error}  (the shift's own
//                     noise, 8., and the square root of its diagonal), and its parts
//                     training_noise_covariance (with two or more chains to estimate it from)
//                     and sample_noise_covariance (modelling and non_closure sources)
//                   sources/<source>/covariance_raw          (s s^T: when the noise was taken
//                     off `covariance`)
//                   variations/<name>/nominal                (each variation's mean result)
//                   non_closure/{shift, truth, unfolded}     (with a non_closure variation)
//                 (`covariance` stays the statistical one, from the data bootstrap)
//   summary.json  {"replicas", "band_replicas", "chains" (the nominal's), "classifier"
//                 (the chains' step model, or "mixed"), "build" (the build that aggregated:
//                 core/build_info/build_info.hpp), "chain_builds": [{"build", "chains"}] (the
//                 builds that finished the chains read, every group's, and how many each;
//                 "build" null for chains that recorded none), "variations": [{name, type, source,
//                 direction, chains, replicas}] ([] without variations), "mc_stat_training_noise":
//                 {"removed", "estimated_from": "mc_bootstrap" | "nominal" | null,
//                 "removed_fraction": {observable: share of the noise's trace taken off}
//                 (when removed)} (with an
//                 mc_bootstrap variation), "shift_noise": "kept" | "subtracted" (with a
//                 source), "observables": {name: {delta_prior, delta_unfolded,
//                 delta_unfolded_err, delta_floor, coverage_68, coverage_95, mean_prior,
//                 mean_unfolded, mean_truth, shift_recovered, shift_significance,
//                 coverage_68_total, coverage_95_total, replica_delta_unfolded,
//                 replica_shift_recovered (each {replica: value} over the band's replicas),
//                 delta_by_iteration ([Δ after iteration 1, 2, ...], the last delta_unfolded;
//                 also null for chains written before histograms.h5 kept their iterations),
//                 outside_binning: {"unfolded", "prior", "truth"}: each {"below", "above"},
//                 the shares of its Σw outside the binning, which the densities and Δ leave
//                 out (null: no truth, or chains written before their histograms kept them),
//                 uncertainty, training_noise, shift_error}}} (null
//                 without truth; shift_recovered null when prior and truth have the same
//                 mean; shift_significance = |mean_truth - mean_prior| over its standard
//                 error: below ~2 the recovered fraction is noise). coverage_68/95 are those
//                 of the statistical band; coverage_68_total / coverage_95_total: fraction of
//                 the same bins whose truth lies within nominal ± 1 / ± 1.96 sigma_total
//                 (sigma_total = std_total); uncertainty = {"stat", "mc_stat" (when run), each
//                 source, "non_closure" (when run), "total": root mean square over the bins
//                 with a positive nominal of sigma / nominal, each weighted by the nominal}
//                 (present without truth too); training_noise: the same measure of
//                 covariance_training (a part of "stat"; null without two members in a replica);
//                 shift_error: {source: the same measure of its shift_error} (null where it has
//                 none); shift_error_parts: {source: {"training", "samples"}} (the same measure of
//                 each part; null where it has none); "inputs":
//                 AggregateOptions::inputs when given (`campaign aggregate`: {"nominal": {role:
//                 {path, size, sha256}}, "variations": {name: {role: …}} (the roles each
//                 replaces)}; a directory's entry has files, bytes and the sha256 of its
//                 files' checksums)
//   event_weights.h5  per-event publication weights, when the chains' weights.h5 carry
//                 `final` (ensembles/event_weights.hpp); AggregateOptions::event_weights
//                 chooses all columns, the central ones only, or none
//   <observable>.png  unfolded with band, truth, prior; ratio panel (gnuplot)
//   <observable>_breakdown.png  relative uncertainty per bin of each source, the statistical,
//                 the MC-statistical, the non-closure and the total (gnuplot)
//   Figures are skipped with a warning when gnuplot is not installed.
// With AggregateOptions::rebin, the observables it names are binned anew from each chain's
// per-event weights and simulation (ensembles/rebin.hpp: weights.h5 `final`, `push`, the MC
// file the chain read, unchanged), the rest as the chains binned them; summary.json's
// "rebinned" lists them, and "edges" is then the new binning. Memory: the simulations' event
// weights and bins of the observables rebinned (4 bytes per event each) besides the above.
// An output of an earlier aggregation into the same directory that this one does not write
// (event_weights.h5, a figure) is removed once the new outputs are in place, so the directory
// never mixes two aggregations; summary.json's "outputs" lists what this one wrote.
//
// Throws InputError (exit 2) when no chain is found, chains disagree on binning or on the
// campaign seed, or the truth file is unreadable; for variations (one line naming the chain
// or variation and what to do): no nominal chain, an unknown type, an up without a down of
// the same source (or two ups), a pair disagreeing on symmetrise, a detector or modelling
// variation sharing no replica with the nominal, chains of a variation disagreeing on
// binning or description, a chain's `final` length differing from its simulation's rows.
// Nothing is written then.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/plot/gnuplot.hpp"
#include "ensembles/rebin.hpp"

namespace foldfarm::ensembles {

// Which columns event_weights.h5 holds: every result (kAll); the central ones only
// (kCentral: weights/nominal, each detector and non-closure variation, each modelling
// variation's other_simulations/<name>/weights; no bootstrap replica, so a few columns
// instead of hundreds, enough for the shifts but not the statistical band of a new
// observable); or no file (kNone).
enum class EventWeightsChoice { kAll, kCentral, kNone };
// "all", "central", "none" (the command-line words); InputError for anything else.
EventWeightsChoice parseEventWeightsChoice(const std::string& word);

// What a systematic source's covariance does with the shift's own noise (8.): s s^T as it is
// (kKeep), or the shift less its noise in quadrature per bin (kSubtract: a source within its
// noise then adds little instead of its noise). Sources without a noise estimate stay s s^T
// either way.
enum class ShiftNoise { kKeep, kSubtract };
// "keep", "subtract" (the command-line words); InputError for anything else.
ShiftNoise parseShiftNoise(const std::string& word);

struct AggregateOptions {
  bool plots = true;  // render PNGs (needs gnuplot on PATH)
  EventWeightsChoice event_weights = EventWeightsChoice::kAll;
  ShiftNoise shift_noise = ShiftNoise::kKeep;
  // The input files the chains read, as summary.json's "inputs" (a campaign's: its role ->
  // path and checksum per set of inputs); null: not written (chains aggregated by directory).
  nlohmann::json inputs = nullptr;
  // What a campaign's aggregation left out (variations without done chains, sources of
  // which one side has none), as summary.json's "incomplete"; null: not written.
  nlohmann::json incomplete = nullptr;
  // Observables to rebin (ensembles/rebin.hpp): their histograms computed again from each
  // chain's weights.h5 and simulation on these edges instead of read from its histograms.h5;
  // empty: the chains' own. summary.json's "rebinned" names them.
  ObservableBinnings rebin = {};
  // The command that rebins these chains, for the warnings that advise it (a campaign's:
  // "`foldfarm campaign aggregate D --binning`").
  std::string rebin_hint = "`foldfarm aggregate --binning`";
};

// What bands.h5 takes, about (the aggregation takes one to two times as much memory while it
// makes it): per observable of B bins, `matrices` B x B matrices (covariance, correlation,
// total, training noise, each systematic source's) of 8-byte numbers, and (`replicas` + 12)
// rows of B. bandsMatrices counts the matrices.
struct BandsSize {
  double bytes = 0;
  // Beyond kLargeBands: "bands.h5 will take about 4.8 GB, and the aggregation one to two
  // times as much memory: the binnings of mass (10,000 bins) and width (10,000 bins) give each 3
  // matrices of bins x bins (10,000 x 10,000: 800 MB each); ..." with what to do; else "".
  std::string warning;
};
constexpr double kLargeBands = 1e9;
// `bins`: each observable's name and bins. `rebin_hint`: the command that rebins the chains
// (said in the warning), e.g. "`foldfarm campaign aggregate D --binning`".
// The bins x bins matrices of each observable in bands.h5: covariance, correlation and the
// total's; the training noise's (`members`: a replica of two members or more); the MC
// statistics' two (`mc_bootstrap`); each source's covariance and, where its shift's noise is
// known, that noise and its parts: the training's from two runs on (the fewest replicas a side
// of it shares with the nominal; a non-closure's chains), the samples' where it compares
// independent samples (a modelling variation of another simulation, a non-closure of other
// pseudo-data); and where noise is subtracted, the source's covariance_raw.
struct SourceShape {
  bool samples = false;  // compares independent samples
  size_t runs = 0;
};
size_t bandsMatrices(bool members, bool mc_bootstrap, const std::vector<SourceShape>& sources,
                     ShiftNoise shift_noise);
BandsSize bandsSize(const std::vector<std::pair<std::string, size_t>>& bins, size_t replicas,
                    size_t matrices, const std::string& rebin_hint);

// Aggregates the chains under run_dirs into out_dir; returns summary.json's content.
nlohmann::json aggregateRunsWithOptions(const std::vector<std::string>& run_dirs,
                                        const std::string& out_dir,
                                        const std::optional<std::string>& truth_path,
                                        const AggregateOptions& options);

// `<obs>_breakdown.png`: the relative uncertainty per bin of each of `sigmas` (label, σ per
// bin), over the bins holding at least 0.1% of `nominal` (unit-area densities on `edges`);
// the bins left out are a gap in each line (not a line across them), and the x range is
// that of the distribution figure (edges.front() to edges.back()). A "total" equal to "stat",
// with no other source beside them, is one line: "total = stat (no systematic variations)".
plot::LineFigure breakdownFigure(
    const std::string& name, const std::vector<double>& edges, const std::vector<double>& nominal,
    const std::vector<std::pair<std::string, std::vector<double>>>& sigmas);

// The title of `<obs>.png`: "<name>, <classifier>", and where the unfolded result, the prior or
// the truth (when given) has nothing inside the binning (an all-zero density: its figure shows
// no curve of it), "(no unfolded, prior inside [lo, hi]: see summary.json outside_binning)".
std::string distributionTitle(const std::string& name, const std::string& classifier,
                              const std::vector<double>& edges, const std::vector<double>& nominal,
                              const std::vector<double>& prior, const std::vector<double>* truth);

// Side-by-side comparison of aggregations of the same data with the same truth (e.g. the
// PET chains and the observable-level MLP baseline). Each input is an aggregation directory
// or a campaign directory (meaning its aggregate/), read from summary.json; `names` label
// them (empty: the summaries' "classifier"). Per observable: Δ of the prior, the floor (of
// the first input), and each input's Δ ± spread and recovered shift. Returns
// {"inputs": [{name, dir, classifier, chains, not_paired (why, when not paired)}],
// "observables": {obs: {delta_prior, delta_floor, <name>: {delta_unfolded, delta_unfolded_err,
// shift_recovered, paired}}}, "best": {obs: name of the smallest Δ}, "clear_best": {obs: that name
// where its Δ is below every other input's clearly, else null}}: where the two pair (one
// campaign seed and data file), their replica-by-replica difference exceeds Student's t at 97.5%
// for n - 1 degrees of freedom times its standard error over the n replicas both hold (12.7 for
// 2 replicas, 2.26 for 10, 2.0 from about 60); else the difference exceeds 2 sqrt(e1² + e2²) of
// their spreads.
// "paired" (inputs after the first of the same campaign seed and data file, so the same bootstrap
// draws): {vs, replicas, delta_diff, delta_diff_err, shift_diff, shift_diff_err}, each banded
// replica's Δ and recovered shift less the first input's, mean ± standard error over the replicas
// both hold. Throws InputError naming an input without truth comparison, or inputs whose priors
// differ (not the same data).
nlohmann::json compareAggregations(const std::vector<std::string>& dirs,
                                   const std::vector<std::string>& names);
// Aggregation b (its summary.json) paired with a replica by replica: where both are of one
// campaign seed and data file (the data's sha256 compared where both name it), so that their
// bootstrap replicas drew the same weights, {"observables": {obs: {replicas, delta_diff,
// delta_diff_err, shift_diff, shift_diff_err}}}: each banded replica's Δ and recovered shift
// in b less a's, mean ± standard error over the replicas both hold (null error below two);
// else {"not_paired": why, in words that name `a_name`}.
nlohmann::json pairReplicas(const nlohmann::json& a, const nlohmann::json& b,
                            const std::string& a_name);
// compareAggregations' result as a Markdown table (a recovered shift in brackets when the
// prior-to-truth shift is under 2 standard errors), then per later input its paired
// differences from the first (or why it is not paired).
std::string comparisonMarkdown(const nlohmann::json& comparison);

// Chain output directories under `root` (itself included), sorted; a directory counts when
// it holds a completed chain's result.json and histograms.h5. `unfinished` (when given)
// receives, sorted, those that hold one of them, or a chain's state/progress.json, but not both.
std::vector<std::string> findChainDirs(const std::string& root,
                                       std::vector<std::string>* unfinished = nullptr);

}  // namespace foldfarm::ensembles
