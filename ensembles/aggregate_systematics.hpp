#pragma once
// The systematic uncertainties of one aggregation (ensembles/aggregate.hpp, steps 5 to 9), per
// observable, from the chain groups (ensembles/chain_groups.hpp): each source's shift, its
// noise and covariance, the MC-statistics covariance less the chains' training noise, the
// non-closure, and the total covariance. All on unit-area densities per bin.
//
// Thread-safety: pure functions but for the log lines of checkVariations() and
// mcTrainingNoise().
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ensembles/aggregate.hpp"
#include "ensembles/band_stats.hpp"
#include "ensembles/chain_groups.hpp"
#include "ensembles/systematics.hpp"

namespace foldfarm::ensembles {

struct Systematics {
  SystematicsPlan plan;
  std::vector<Variation> variations;  // by name, the reference apart
  // The warm reference's group ("" when none ran), and the variations whose shifts are
  // measured from it, over the chains (r, m) both ran: warm-started detector and modelling
  // variations with at least one such pair. The others' shifts are measured from the nominal.
  std::string reference;
  std::set<std::string> from_reference;
  // Of each of those, the chains its shift is over (those with a reference partner); its
  // variations/<name>/nominal is over all of its chains.
  std::map<std::string, size_t> paired_chains;
  // Modelling variations that read the nominal's simulation itself (the same file, or the
  // same bytes by the campaign's checksums): their shifts compare no independent samples.
  std::set<std::string> same_simulation;
  // The non-closure's pseudo-data are the nominal's simulation (a technical closure): its shift
  // compares no independent samples either.
  bool closure_on_own_simulation = false;
};

// Fills sys.same_simulation: the modelling variations whose chains read the nominal's
// simulation file, or (with `inputs`, AggregateOptions::inputs of a campaign) a file of the
// same checksum; and sys.closure_on_own_simulation, the same test of the non-closure's
// pseudo-data. Logs each once.
void findSameSimulation(Systematics& sys, const std::map<std::string, ChainGroup>& groups,
                        const nlohmann::json& inputs);

// The refusals that need every chain read: binning against the nominal's, the pairing of
// sources, replicas shared with the nominal, the pseudo-data of the non-closure (InputError
// naming the variation and what to do). Warns about an mc_bootstrap variation of one replica,
// and about a warm-started variation whose shift is measured from the nominal (no warm
// reference, or one that lacks some of its chains): that shift holds the extra training of
// the warm start as well.
Systematics checkVariations(const std::map<std::string, ChainGroup>& groups);

// Where the training noise taken off the MC-statistics covariance is estimated from (decided
// once per aggregation): nowhere (no variation, one replica, or no replica with two members),
// the variation's own members, or the nominal's.
enum class McTrainingNoise { kNotRemoved, kFromMcBootstrap, kFromNominal };

struct McTrainingChoice {
  McTrainingNoise from = McTrainingNoise::kNotRemoved;
  // summary.json "mc_stat_training_noise": {"removed", "estimated_from"}; null without an
  // mc_bootstrap variation.
  nlohmann::json summary;
};

// The choice for this aggregation, logged (a warning when the noise stays counted twice, or
// when the variation's chains were warm-started from the nominal's).
McTrainingChoice mcTrainingNoise(const std::map<std::string, ChainGroup>& groups,
                                 const Systematics& sys);

// sqrt of the diagonal of a bins x bins covariance (negative entries as zero).
std::vector<double> sqrtDiagonal(const std::vector<double>& cov, size_t bins);

struct SourceResult {
  std::string name;
  std::vector<double> shift, covariance;
  std::vector<double> up, down;  // the raw shifts of a pair; empty otherwise
  // The covariance of the shift's estimate (the square root of its diagonal: shift_error):
  // training_noise + sample_noise, either of them empty where not known; empty: neither is.
  std::vector<double> noise;
  // The chains' training noise (the spread of their differences, or of the non-closure's
  // chains); empty with fewer than two chains to estimate it from.
  std::vector<double> training_noise;
  // The statistics of the independent samples the shift compares (first order, from Σw²): a
  // modelling variation's simulated events and its baseline's; the non-closure's unfolded
  // simulation and its truth. Empty for a detector variation (the same generated events).
  std::vector<double> sample_noise;
  std::vector<double> covariance_raw;  // s s^T, when the noise was taken off `covariance`
};

// One observable's systematic uncertainties, all unit-area densities per bin.
struct SystematicsResult {
  std::vector<SourceResult> sources;  // detector and modelling by name, then non_closure
  std::map<std::string, std::vector<double>> variation_mean;  // variation -> its mean result
  std::vector<double> covariance_mc_stat;                     // empty: not run
  // The MC-statistics covariance as its replicas spread, the chains' training noise
  // included; empty unless that noise was removed from covariance_mc_stat.
  std::vector<double> covariance_mc_stat_raw;
  std::vector<double> closure_shift, closure_truth, closure_unfolded;  // empty: not run
  // The warm start's own effect: the mean over the reference's chains of reference (r, m) -
  // nominal (r, m), and the covariance of that mean; empty without a reference.
  std::vector<double> warm_start_effect, warm_start_effect_noise;
  std::vector<double> covariance_total, std_total;
  // The share of the training noise's trace taken off covariance_mc_stat (NaN: none taken off).
  double mc_stat_noise_removed_fraction = std::nan("");
};

// Observable o's systematics: `nominal_rows` its nominal replica densities, `band` the
// statistical band over them, `closure_truth` the non-closure's pseudo-data truth density and
// `closure_truth_covariance` its sample covariance (with a non_closure variation),
// `nominal_member_cov` the nominal's memberCovariance().
SystematicsResult computeSystematics(
    size_t o, const std::vector<double>& edges,
    const std::map<int, std::vector<double>>& nominal_rows, const BandStats& band,
    const std::map<std::string, ChainGroup>& groups, const Systematics& sys,
    const std::vector<double>* closure_truth, const std::vector<double>* closure_truth_covariance,
    McTrainingNoise mc_training, const std::optional<std::vector<double>>& nominal_member_cov,
    ShiftNoise shift_noise);

// `<obs>_shifts.png`: each detector, modelling and non-closure source's signed shift of the
// unfolded result relative to it, per bin (a pair's up solid and down dashed in the source's
// colour of the breakdown figure, a one-sided source's shift solid), between the dashed
// statistical ±1σ (`stat_sigma`) for scale; the bins breakdownFigure leaves out are gaps here
// too. Drawn where the aggregation has such a source.
plot::LineFigure shiftsFigure(const std::string& name, const std::vector<double>& edges,
                              const std::vector<double>& nominal,
                              const std::vector<double>& stat_sigma,
                              const std::vector<SourceResult>& sources);

// Each uncertainty's sigma per bin (summary.json "uncertainty"), stat first, total last.
std::vector<std::pair<std::string, std::vector<double>>> uncertaintySigmas(
    const BandStats& band, const SystematicsResult& sys);

}  // namespace foldfarm::ensembles
