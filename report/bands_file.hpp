#pragma once
// Reading the aggregation's bands.h5 (ensembles/aggregate.hpp writes it):
//   /<observable>/{edges, nominal, std, p16, p84, p2_5, p97_5, covariance, correlation,
//                  replicas (R x bins), prior, truth (only with a truth file)}
//   root attributes replicas, band_replicas (those the spread is over), chains.
// Values are unit-area densities per bin. Only what the report shows is read (replicas and
// covariance are not).
//
// Thread-safety: HDF5 is not thread-safe; one reader at a time.
#include <cstdint>
#include <string>
#include <vector>

namespace foldfarm::report {

struct ObservableBands {
  std::string name;
  std::vector<double> edges;  // bins + 1
  std::vector<double> nominal, std, p16, p84, p2_5, p97_5, prior;
  std::vector<double> truth;        // empty: aggregated without a truth file
  std::vector<double> correlation;  // bins x bins, row-major
  size_t bins() const { return nominal.size(); }
};

struct BandsFile {
  int64_t replicas = 0;
  int64_t band_replicas = 0;  // the bootstrap replicas the band's spread is over
  int64_t chains = 0;
  // core/data/observables.hpp's order first, then by name
  std::vector<ObservableBands> observables;
};

// Throws InputError naming the file (and dataset) when it is not HDF5, has no observable
// group, or a dataset is missing or has the wrong length.
BandsFile readBandsFile(const std::string& path);

}  // namespace foldfarm::report
