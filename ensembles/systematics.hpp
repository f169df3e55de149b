#pragma once
// Systematic variations of a campaign: what a chain's result.json says about the
// variation it belongs to, how variations pair into uncertainty sources, and the per-bin
// arithmetic of shifts and covariances that the aggregation (ensembles/aggregate.hpp) uses.
//
// result.json of a variation chain carries
//   "variation": {"name": "det_up", "type": "detector"|"modelling"|"mc_bootstrap"|"non_closure",
//                 "source": "det", "direction": "up"|"down"|"", "symmetrise":
//                 "half_difference"|"max"}
// and a nominal chain has no "variation" (or a name ""). `source` defaults to the name,
// `symmetrise` to half_difference; mc_bootstrap and non_closure are one-sided (direction "").
//
// Sources (detector and modelling variations): an up/down pair sharing `source` with the
// same type and `symmetrise`, or one one-sided variation. With up and down the shifts from
// the nominal, the symmetrised shift is s = (up - down) / 2 (half_difference) or
// s_i = sign(up_i) max(|up_i|, |down_i|) (max); a one-sided source's s is its shift. A
// source's covariance is s s^T.
//
// Thread-safety: pure functions.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace foldfarm::ensembles {

// kReference: the nominal's inputs, warm-started as the detector and modelling variations are
// (campaigns add it as "warm_reference", jobs/campaign_spec.hpp): the baseline of their
// shifts, not a source.
enum class VariationType { kDetector, kModelling, kMcBootstrap, kNonClosure, kReference };

// "detector", "modelling", "mc_bootstrap", "non_closure", "reference".
const char* variationTypeName(VariationType type);

struct Variation {
  std::string name;
  VariationType type = VariationType::kDetector;
  std::string source;      // the name when not given
  std::string direction;   // "up", "down" or ""
  std::string symmetrise;  // "half_difference" or "max"
  bool operator==(const Variation& o) const {
    return name == o.name && type == o.type && source == o.source && direction == o.direction &&
           symmetrise == o.symmetrise;
  }
};

// The variation of a chain from its result.json; nullopt for a nominal chain. Names and
// sources are [A-Za-z0-9_.+-] (not starting with '.'); a variation may not be called
// "nominal" or "replica_*" (event_weights.h5 columns), nor may a detector or modelling
// source be called "stat", "mc_stat", "non_closure" or "total" (summary.json's
// "uncertainty" keys). Throws InputError naming `where` (the result.json) for an unknown
// type, direction or symmetrisation, or a malformed value.
std::optional<Variation> parseVariation(const nlohmann::json& result, const std::string& where);

// A source: `up` and `down` variation names for a pair, or `one_sided` alone.
struct SourcePlan {
  std::string name;
  std::string up, down, one_sided;
  std::string symmetrise;
};

struct SystematicsPlan {
  std::vector<SourcePlan> sources;  // by name
  std::string mc_bootstrap;         // variation name, "" when none was run
  std::string non_closure;          // variation name, "" when none was run
};

// Pairs the detector and modelling variations into sources and finds the mc_bootstrap and
// non_closure variations (one each at most). Throws InputError (one line naming the
// variations and what to do) for an up without a down of the same source or the reverse,
// two ups or two downs of one source, a one-sided variation sharing its source with another,
// a pair disagreeing on symmetrise or type, or a second mc_bootstrap or non_closure.
SystematicsPlan planSystematics(const std::vector<Variation>& variations);

// Mean over the replicas present in both maps (replica -> per-bin values) of
// varied_r - nominal_r; empty when they share no replica.
std::vector<double> meanShift(const std::map<int, std::vector<double>>& varied,
                              const std::map<int, std::vector<double>>& nominal);
// Per-bin mean over the replicas of `rows`; empty for no replica.
std::vector<double> meanOverReplicas(const std::map<int, std::vector<double>>& rows);
// The symmetrised shift of a pair (`rule`: "half_difference" or "max"; Error otherwise).
std::vector<double> symmetrisedShift(const std::vector<double>& up, const std::vector<double>& down,
                                     const std::string& rule);
// s s^T, row-major.
std::vector<double> outerProduct(const std::vector<double>& s);
// Root mean square over the bins with nominal_b > 0 of sigma_b / nominal_b, each bin weighted
// by nominal_b (its share of the events: the bins are of equal width), so that the figure is
// that of where the events are, not of the emptiest tail bin; NaN when there is no such bin.
double relativeRms(const std::vector<double>& sigma, const std::vector<double>& nominal);

}  // namespace foldfarm::ensembles
