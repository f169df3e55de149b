#pragma once
// An aggregation's comparison with the truth (ensembles/aggregate.hpp, step 4): the truth
// file histogrammed like the chains, and per observable the triangular discriminators of the
// prior and the unfolded against it, its statistical floor, the coverage of the bands, and how
// much of the prior-to-truth shift of the mean was recovered.
//
// Thread-safety: pure functions (readTruth reads a file).
#include <array>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ensembles/band_stats.hpp"
#include "ensembles/chain_groups.hpp"
#include "ensembles/chain_output.hpp"

namespace foldfarm::ensembles {

struct TruthHistograms {
  std::vector<std::vector<double>> density;   // per observable: unit-area density
  std::vector<std::vector<double>> variance;  // per observable: of each bin of the density
  // Per observable: the density's covariance from the sample's statistics (densityCovariance).
  std::vector<std::vector<double>> covariance;
  std::vector<double> mean_error;  // per observable: standard error of its mean
  // Per observable: the effective events inside the binning, (Σw)² / Σw² (0 for none).
  std::vector<double> entries;
  // Per observable: the truth's Σw below the binning, above it, and in it.
  std::vector<std::array<double, 3>> outside;
};

// The truth file (unfold layout with `gen_subs`; `weights` and `pass_gen` honoured),
// histogrammed as `like` (the chains' histograms) is binned. InputError naming the file for
// another layout or no `gen_subs`.
TruthHistograms readTruth(const std::string& path, const std::vector<ObservableHistogram>& like);
// What readTruth needs of the file that does not depend on the chains (`campaign init` and
// `run`, before any task starts): the unfold layout with its gen level, and a `pass_gen`, if
// given, that passes an event. Reads `pass_gen` only. InputError naming the file otherwise.
void checkTruthFile(const std::string& path);
// Every value readTruth reads (`gen_subs`, `weights`): InputError naming the row of a NaN or
// Inf, or weights that are all zero. Reads the file's N x 7 floats.
void checkTruthValues(const std::string& path);

// What observable o's comparison with the truth reads.
struct UnfoldedObservable {
  const ObservableHistogram& prior;                     // the chains' prior (Σw, Σw²)
  const std::vector<double>& prior_density;             // its unit-area density
  const BandStats& band;                                // band.mean: the unfolded nominal
  const std::vector<std::vector<double>>& spread_rows;  // the replicas the band is over
  const std::vector<int>& spread_replicas;              // their replica numbers, row by row
  const ReplicaSum& nominal_replica;                    // the lowest replica (the floor's Σw²)
  const std::vector<double>& std_total;                 // sigma of the total covariance
};

// summary.json's truth keys of observable o: delta_prior, delta_unfolded, delta_unfolded_err,
// delta_floor, coverage_68, coverage_95, mean_prior, mean_truth, mean_unfolded,
// shift_recovered, shift_significance, coverage_68_total, coverage_95_total, and per replica
// of the band (keyed by its number) replica_delta_unfolded and replica_shift_recovered: what
// a comparison of two campaigns of one campaign seed pairs replica by replica.
// Warns where the truth holds fewer than kFloorEntriesPerBin effective events per bin that
// it or the unfolded result fills: delta_floor is a second-order expansion, low there.
constexpr double kFloorEntriesPerBin = 10;
nlohmann::json truthComparison(const TruthHistograms& truth, size_t o,
                               const UnfoldedObservable& unfolded);
// The same keys, each null (an aggregation without truth).
nlohmann::json noTruthComparison();

}  // namespace foldfarm::ensembles
