#pragma once
// A campaign's aggregation: the done chains of a chain campaign D into D/aggregate
// (`foldfarm campaign aggregate D`; `campaign run --aggregate` and `slurm submit --aggregate`
// once every task is done). The spec, the done tasks and their outputs are read under the
// campaign's outputs lock (jobs::lockCampaignOutputs), so `campaign extend` and `campaign
// accept-inputs` never change them under it; the inputs the chains read are checked as
// recorded, and summary.json names them with their checksums. The caller registers the task
// kinds the campaign's spec names before (as for jobs::Campaign::open).
#include <string>

#include <nlohmann/json.hpp>

#include "ensembles/aggregate.hpp"

namespace foldfarm::ensembles {

// The aggregation's choices as a command line gives them (false, "": not given).
struct AggregateChoices {
  bool no_plots = false;
  std::string event_weights;  // all, central, none
  std::string shift_noise;    // keep, subtract
  std::string binning;        // --binning: JSON text or a file (ensembles/rebin.hpp)

  // The choices given, else `defaults` (a campaign spec's "aggregate": shift_noise,
  // event_weights, plots), else the library's. InputError naming a word it does not know, or
  // the mistake of a --binning (readBinningArgument).
  AggregateOptions options(const nlohmann::json& defaults = nlohmann::json::object()) const;
};

struct CampaignAggregation {
  bool aggregated = false;  // false: `all_done` and not every task is done
  int chains = 0;           // the done chains
  int tasks = 0;            // the campaign's tasks
  std::string out;          // where the bands went (D/aggregate unless given)

  nlohmann::json toJson() const;  // {"aggregated", "chains", "tasks", "out"}
};

// Aggregates the done chains of campaign `dir` with the truth `truth` (else the spec's
// inputs.truth, when it has one) into `out` ("": D/aggregate, where `campaign run --aggregate`
// and `report` look). With `all_done`, only when every task is done. InputError when `dir` is
// not made of chains, when none is done, when an input changed since it was recorded, or when
// another command holds the campaign's outputs lock (naming it).
CampaignAggregation aggregateCampaign(const std::string& dir, const std::string& truth,
                                      const AggregateChoices& choices, bool all_done,
                                      const std::string& out = "");

// One line for a CampaignAggregation of campaign `dir` (its toJson()): "aggregated N chain(s) of
// M task(s) into OUT", or what is done and the command that aggregates those.
std::string aggregationLine(const std::string& dir, const nlohmann::json& aggregation);

}  // namespace foldfarm::ensembles
