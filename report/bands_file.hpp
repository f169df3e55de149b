#pragma once
// Reading the aggregation's bands.h5 (ensembles/aggregate.hpp writes it):
//   /<observable>/{edges, nominal, std, p16, p84, p2_5, p97_5, covariance, correlation,
//                  replicas (R x bins), prior, std_total, truth and truth_std (only with a
//                  truth file)}
//   root attributes replicas, band_replicas (those the spread is over), band_from_bootstrap,
//   chains.
// Values are unit-area densities per bin. Only what the report shows is read (replicas and
// covariance are not); std_total and truth_std are read where present (files written before
// them have none).
//
// Thread-safety: HDF5 is not thread-safe; one reader at a time.
#include <cstdint>
#include <string>
#include <vector>

#include "core/plot/gnuplot.hpp"

namespace foldfarm::report {

struct ObservableBands {
  std::string name;
  std::vector<double> edges;  // bins + 1
  std::vector<double> nominal, std, p16, p84, p2_5, p97_5, prior;
  // The total uncertainty (statistical and systematic) per bin; = std without variations.
  // Empty: a file written before it existed.
  std::vector<double> std_total;
  std::vector<double> truth;  // empty: aggregated without a truth file
  // The truth's own statistical error per bin; empty: no truth, or a file written before it.
  std::vector<double> truth_std;
  std::vector<double> correlation;  // bins x bins, row-major
  size_t bins() const { return nominal.size(); }
};

struct BandsFile {
  int64_t replicas = 0;
  int64_t band_replicas = 0;  // the bootstrap replicas the band's spread is over
  // 1: the band is over bootstrap replicas alone; 0: over every replica, replica 0 among them;
  // -1: not recorded (bands.h5 written before), told by band_replicas == replicas.
  int64_t band_from_bootstrap = -1;
  bool replica0InBand() const {
    return band_from_bootstrap >= 0 ? band_from_bootstrap == 0 : band_replicas == replicas;
  }
  int64_t chains = 0;
  // core/data/observables.hpp's order first, then by name
  std::vector<ObservableBands> observables;
};

// Throws InputError naming the file (and dataset) when it is not HDF5, has no observable
// group, or a dataset is missing or has the wrong length.
BandsFile readBandsFile(const std::string& path);

// The figures the report draws of observable `o` of `bands` itself.
// Its distribution with the statistical bands of the band_replicas (replica 0 among them when
// they are every replica), the total band where it differs from the statistical one (the
// aggregation draws none without variations either) and the truth with its error: drawn
// where the aggregation drew no figure.
plot::BandPlot bandFigure(const BandsFile& bands, const ObservableBands& o);
// The statistical correlation of its bins. A bin without variance (empty in every replica)
// has no correlation: its row and column are NaN, drawn grey, not 0 (white, "uncorrelated").
plot::Heatmap correlationFigure(const BandsFile& bands, const ObservableBands& o);

}  // namespace foldfarm::report
