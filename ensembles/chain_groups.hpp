#pragma once
// The chains of one aggregation (ensembles/aggregate.hpp), read once and grouped: the nominal
// (named "") and each variation, per replica the sums over its members' unfolded histograms and
// each member's unit-area densities. The refusals that one chain against the others can show
// (another campaign seed, unfolding, input file version, binning or variation description) are
// made while reading; those that need every chain are checkVariations()'s
// (ensembles/aggregate_systematics.hpp).
//
// Also the arithmetic over the groups that the bands and the shifts' noise share: replica
// densities, the members' pooled covariance (the chains' training noise), and the pairing of
// two groups' chains of the same replica and member.
//
// Thread-safety: plain data and pure functions.
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"

#include "ensembles/chain_output.hpp"
#include "ensembles/rebin.hpp"
#include "ensembles/systematics.hpp"

namespace foldfarm::ensembles {

// Unit-area density over the in-range bins (numpy density=True); zeros for an empty one.
std::vector<double> density(const std::vector<double>& sumw, const std::vector<double>& edges);

// Per replica: sum over members of the unfolded Σw (and Σw²) per observable, the member
// count, and each member's unit-area density per observable (for the training noise).
struct ReplicaSum {
  int members = 0;
  std::vector<std::vector<double>> sumw, sumw2;
  std::map<int, std::vector<std::vector<double>>> member_density;  // member -> [observable]
  // [iteration][observable]: the members' Σw after each iteration, summed over the
  // iteration_members of them whose histograms.h5 holds its iterations (of one count).
  std::vector<std::vector<std::vector<double>>> iteration_sumw;
  int iteration_members = 0;
};

// The chains of the nominal (variation nullopt) or of one variation.
struct ChainGroup {
  std::optional<Variation> variation;
  std::string first_chain;  // the description and binning every other chain must match
  std::map<int, ReplicaSum> replicas;
  std::set<std::pair<int, int>> seen;
  std::vector<ObservableHistogram> prior;  // the first chain's
  // Per observable, over every chain of the group: the unfolded Σw below the binning, above
  // it, and in it; nullopt where a chain's histogram does not say (histograms.h5 written
  // before `outside`, and the observable not rebinned).
  std::vector<std::optional<std::array<double, 3>>> unfolded_outside;
  // Observables (by index) of which a chain gave no histogram per iteration (rebinned from a
  // chain that kept no per-iteration weights): no Δ per iteration.
  std::set<size_t> iterations_unknown;
  size_t chains = 0;
  std::map<int, std::vector<std::string>> member_dirs;
  std::set<std::string> mc, data;  // result.json paths ("" when absent)
  bool warm_started = false;       // a chain started from another chain's models (warm_from)
  nlohmann::json unfolding;        // the first chain's (unfoldingOf)
  std::string foundation;          // the first chain's, for messages ("none (no foundation)")
  nlohmann::json inputs;           // the first recorded size and time of its mc and data files
};

struct ChainGroups {
  std::map<std::string, ChainGroup> groups;  // "" = the nominal (present: checked)
  uint64_t campaign_seed = 0;
  std::set<std::string> classifiers;  // the chains' step models ("pet" for older chains)
  // The builds that finished the chains (result.json "build"; null for chains written before
  // it was recorded) -> how many chains of every group each finished. Never compared: chains
  // of one campaign may be finished by several builds (a rebuild before a resume).
  std::map<nlohmann::json, size_t> builds;
  // Chain format (chain_output.hpp) -> the chains of it, of every group; chains whose format is
  // not known (no record of it, no step record) are not in it. One format in an aggregation.
  std::map<int, std::vector<std::string>> chain_formats;
};

// The refusal of chains of several chain formats in one aggregation: one line naming the first
// older chain, how many more, the newer format's chains and what to do; `older` lists every
// chain of a format other than the newest (a campaign's aggregation names their tasks).
class MixedChainFormatsError : public InputError {
 public:
  explicit MixedChainFormatsError(const std::map<int, std::vector<std::string>>& formats);
  std::vector<std::string> older;

 private:
  static std::string message(const std::map<int, std::vector<std::string>>& formats);
};

// Reads the chains (directories holding result.json and histograms.h5, `chain_dirs` sorted and
// unique), one at a time, with a progress line. A chain repeating a (replica, member) of its
// group is ignored (warning). Throws InputError naming the chain and what to do for a missing
// replica/member/campaign_seed, another campaign seed, a variation described differently, an
// unfolding that differs from its group's (the first differing key), another version of an
// input file, another binning, or no nominal chain at all; MixedChainFormatsError when the
// chains are of two chain formats.
// With `rebin`, each chain's histograms are its rebinner's (ensembles/rebin.hpp), not those of
// its histograms.h5.
ChainGroups readChainGroups(const std::vector<std::string>& chain_dirs,
                            ChainRebinner* rebin = nullptr);

// Replica -> unit-area density of observable o (the mean over the replica's members).
std::map<int, std::vector<double>> replicaDensities(const std::map<int, ReplicaSum>& replicas,
                                                    size_t o, const std::vector<double>& edges);

// The training noise of one member's result: the pooled covariance of the members' unit-area
// densities of observable o about their replica's mean, over the replicas with two or more
// members (Σ (M_r - 1) degrees of freedom). Members of a replica unfold the same weighted
// events and differ only in their seeds (initialisation of new layers, data order), so their
// spread is the training's alone. nullopt when no replica has two members.
std::optional<std::vector<double>> memberCovariance(const std::map<int, ReplicaSum>& replicas,
                                                    size_t o, size_t bins);

// Whether memberCovariance() has something to estimate from.
bool hasMemberPairs(const std::map<int, ReplicaSum>& replicas);

// The training noise in a covariance over replica results: a replica result is the mean of
// its M_r members, so each replica carries per_member / M_r; over the replicas `counted`
// accepts, on average per_member x mean(1 / M_r).
template <typename Counted>
std::vector<double> trainingNoiseOfReplicas(std::vector<double> per_member,
                                            const std::map<int, ReplicaSum>& replicas,
                                            Counted counted) {
  double inverse = 0;
  size_t n = 0;
  for (const auto& [r, rep] : replicas)
    if (counted(r)) {
      inverse += 1.0 / rep.members;
      ++n;
    }
  for (double& v : per_member) v *= n ? inverse / static_cast<double>(n) : 0.0;
  return per_member;
}

// The density set of chain (replica r, member m) of a group; null when it did not run.
const std::vector<std::vector<double>>* chainDensity(const std::map<int, ReplicaSum>& group, int r,
                                                     int m);

// Calls f(a's density set, b's, r, m) for each chain (replica r, member m) both groups ran.
template <class F>
void forSharedChains(const std::map<int, ReplicaSum>& a, const std::map<int, ReplicaSum>& b,
                     F&& f) {
  for (const auto& [r, ra] : a)
    for (const auto& [m, da] : ra.member_density)
      if (const auto* db = chainDensity(b, r, m)) f(da, *db, r, m);
}

// The per-chain differences scale * (a (r, m) - b (r, m)) of observable o: chains of the same
// replica and member saw the same data draw, so what differs besides the variation is the
// training.
std::vector<std::vector<double>> chainDifferences(const std::map<int, ReplicaSum>& a,
                                                  const std::map<int, ReplicaSum>& b, size_t o,
                                                  double scale);

}  // namespace foldfarm::ensembles
