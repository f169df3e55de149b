#pragma once
// Weight diagnostics of a campaign's OmniFold chains for the report: the effective sample
// size and the clipped / non-finite reweighting factors of every step of every chain, read
// from each chain's history.json (ensembles/chain_output.hpp: {"steps": [{"iteration",
// "step", "ess", "ess_fraction", "reweighting": {"events", "non_finite", "clipped",
// "max_after", ...}}, ...]}) under D/tasks/<id>/.
#include <string>
#include <vector>

namespace foldfarm::report {

// One (iteration, step) over all chains.
struct StepWeightStats {
  int iteration = 0;
  int step = 0;
  int chains = 0;
  double mean_ess_fraction = 0;
  double min_ess_fraction = 0;
  std::string min_ess_task;
  // The reweighting factors' own ESS fraction ("reweighting": {"ess_fraction"}), mean over the
  // chains: without the events' own weights, which (signed NLO weights) can make the first
  // small from the prior on. NaN where no chain recorded it.
  double mean_factor_ess_fraction = 0;
  int factor_chains = 0;
  long long clipped = 0;     // Σ over chains
  long long non_finite = 0;  // Σ over chains
  double max_weight = 0;     // largest normalised weight of any chain
};

// One chain's summary: its last step and its totals.
struct ChainWeightStats {
  std::string task;
  double final_ess_fraction = 0;
  double min_ess_fraction = 0;
  long long clipped = 0, non_finite = 0;
  double max_weight = 0;
};

struct WeightDiagnostics {
  std::vector<StepWeightStats> steps;    // ordered by iteration, then step
  std::vector<ChainWeightStats> chains;  // ordered by min_ess_fraction (worst first)
};

// Scans D/tasks/*/history.json. Returns an empty result when no chain history exists.
// Throws InputError naming the file when a history.json is not valid JSON or lacks "steps".
WeightDiagnostics readWeightDiagnostics(const std::string& campaign_dir);

}  // namespace foldfarm::report
