#pragma once
// Builders for the report tests: campaign inputs in the real file formats — the spec,
// bands.h5 and summary.json as ensembles/aggregate.hpp writes them (densities of sampled
// bootstrap replicas with their true statistics), chain history.json files as
// ensembles/chain.cpp writes them, and a warm-start study JSON.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldfarm::report::testing {

// A fresh directory under the system temp dir, removed by the destructor.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A spec of `kind` command: every task runs /bin/true, the tasks in `failing` run
// /bin/false (exit 1) and fail after max_attempts = 2.
nlohmann::json commandSpec(int replicas, int members, const std::vector<std::string>& failing);
void writeJson(const std::string& path, const nlohmann::json& j);

struct AggregateFixture {
  std::vector<std::string> observables;  // names written
  nlohmann::json summary;                // summary.json as written
};
// Writes agg_dir/bands.h5 and agg_dir/summary.json for observables mass, width and
// multiplicity (core/data/histogram.hpp binnings) from `replicas` sampled replicas; the
// spread over band_replicas of them, the bootstrap replicas 1 on (replicas - 1) from 3
// replicas, else every replica; std_total = std (no variations); with_truth adds the truth
// datasets (truth, truth_std) and the Δ/coverage figures.
AggregateFixture writeAggregate(const std::string& agg_dir, int replicas, bool with_truth,
                                unsigned seed = 7);

// Sets value `index` of dataset `dataset` (e.g. "mass/std") of an existing bands.h5 in place,
// as damage would.
void setBandsValue(const std::string& bands_path, const std::string& dataset, size_t index,
                   double value);
// Removes dataset `dataset` of an existing bands.h5 (a file written before it existed).
void removeBandsDataset(const std::string& bands_path, const std::string& dataset);

// Adds what a campaign with systematic variations adds to an aggregation written by
// writeAggregate: summary.json's "variations" (det_up/det_down, herwig, mcstat, closure),
// each observable's "uncertainty" per source (stat, mc_stat, det, generator, non_closure,
// total) and coverage_68_total = 0.7 (with truth), <obs>_breakdown.png (a 1x1 PNG each), and
// in bands.h5 a total band wider than the statistical one (std_total = sqrt(std² + (0.06
// nominal)²)).
void addVariations(const std::string& agg_dir, AggregateFixture& fx);

// D/tasks/<id>/history.json with `iterations` x 2 steps; `clipped` factors in the last step.
void writeChainHistory(const std::string& task_dir, int iterations, double ess_fraction,
                       int clipped);

// D/warmstart/warmstart.json as ensembles/studies.hpp writes it (curves and epochs to reach
// the scratch model's best validation loss), without its PNG: the report draws the curves.
void writeWarmstart(const std::string& dir);

}  // namespace foldfarm::report::testing
