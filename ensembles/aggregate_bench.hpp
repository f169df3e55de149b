#pragma once
// The aggregation benchmark, as `foldfarm bench aggregate` runs it: a campaign's worth of
// synthetic chain outputs (histograms.h5 and result.json as chains write them: the six
// observables' binning, a smooth spectrum per observable with Poisson-sized noise per chain),
// aggregated as `foldfarm aggregate --no-plots --event-weights none` does, and timed:
//   write            writing the chains (context only: the chains' own cost, not aggregation's);
//   nominal          aggregating `replicas` x `members` nominal chains: seconds, chains/s,
//                    ms per chain;
//   with_variations  the same chains and `variation_replicas` replicas of a detector pair
//                    (half_difference), a modelling variation (one-sided) and an MC-statistics
//                    variation, `members` each but the MC one (1), with --shift-noise
//                    subtract: the systematics' share of the time;
//   rebinned         with rebin_events > 0: the nominal chains aggregated again with every
//                    observable rebinned from their weights (`aggregate --binning`, on their
//                    own edges): each chain also gets a weights.h5 (`final` and `iterations`
//                    rows of `push` over rebin_events events) and names a synthetic simulation
//                    of that many events; seconds, chains/s and events histogrammed per second
//                    (chains x events x (iterations + 2) histogram fills of six observables);
//   peak_rss_MB      of the process after both (the chains are read one at a time; what stays
//                    is one density set per chain, and when rebinning the simulation).
// Each aggregation is checked to have read every chain it was given (Error otherwise). The
// chains live in a fresh directory under `scratch`, removed afterwards unless `keep`.
// Errors: InputError for bad options.
#include <string>

#include <nlohmann/json.hpp>

namespace foldfarm::ensembles {

struct AggregateBenchOptions {
  int replicas = 1000;           // nominal bootstrap replicas (replica 0 and 1..replicas-1)
  int members = 2;               // ensemble members per replica
  int variation_replicas = 100;  // replicas of each variation (0: the nominal alone)
  int rebin_events = 0;          // > 0: time rebinning too, over a simulation of this many events
  int rebin_iterations = 4;      // push rows of each chain's weights.h5 when rebinning
  std::string scratch = "/tmp";
  bool keep = false;
};
// The figures as JSON; "dir" names the scratch directory when it is kept.
nlohmann::json benchAggregate(const AggregateBenchOptions& o);

}  // namespace foldfarm::ensembles
