#pragma once
// Binnings of the substructure observables (a chain config's "binning", `aggregate --binning`),
// and the rebinning of finished chains: a chain's histograms (unfolded, prior, each iteration)
// computed again from its per-event weights (weights.h5 `final`, `push`) and its simulation's
// generator-level observables on other edges, as the chain computed them on its own edges
// (the unfolded: `final`; the prior: the simulation's weights times the chain's MC bootstrap
// draw; iteration i: push row i times those), over the events passing pass_gen. The weights do
// not depend on the binning, so a campaign is rebinned without training it again; on the
// chain's own edges the histograms are those of its histograms.h5, bit for bit.
//
// Thread-safety: ChainRebinner keeps the simulations it read; one thread at a time.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/file_stat.hpp"
#include "ensembles/chain_output.hpp"

namespace foldfarm::ensembles {

// Observable name -> bin edges (increasing, finite, 2 to 10001 of them).
using ObservableBinnings = std::map<std::string, std::vector<double>>;

// {observable: {"edges": [...]} | {"lo", "hi", "bins"}} (numpy.linspace(lo, hi, bins + 1)):
// InputError "<where> of '<observable>': ..." for each mistake (an unknown observable, both
// forms or neither, edges not increasing, bins out of range); `where` names the object
// ("chain.json: 'binning'", "--binning").
ObservableBinnings binningFromJson(const nlohmann::json& b, const std::string& where);

// The edges of each observable in data::observableName order: `b`'s where it names the
// observable, else OmniLearn's (data::observableBinning).
std::vector<std::vector<double>> observableEdges(const ObservableBinnings& b);

// What `--binning ARG` means: the JSON object itself when ARG starts with '{', else the file
// ARG holding it (or a chain config holding it as "binning"). InputError naming the argument
// or the file for a file that cannot be read, bad JSON or a mistake of binningFromJson.
ObservableBinnings readBinningArgument(const std::string& arg);
// Whether `--binning ARG` is the JSON itself (its first non-blank character '{' or '['), not a
// file.
bool binningArgumentIsJson(const std::string& arg);

// Rebins finished chains (their directories in any order; simulations read once each, kept
// for the chains that follow: per event its weight and its bin of each observable rebinned,
// 4 bytes each).
class ChainRebinner {
 public:
  // `binning`: the observables to rebin (at least one); the others keep each chain's own
  // binning (its config's, else OmniLearn's).
  explicit ChainRebinner(ObservableBinnings binning);

  // The histograms of the finished chain in `dir` whose result.json is `result`. InputError
  // naming the chain and what to do when its weights.h5 holds no `final` (written before it
  // did), when its simulation (result.json "mc") is gone or is not the version the chain read
  // (result.json "inputs".mc: size, modification time), or when `final` does not have a row per
  // event the chain unfolded (the simulation's, up to its config's max_mc_events). Without
  // `push` (iteration_weights false) the iterations are left empty.
  ChainHistograms histograms(const std::string& dir, const nlohmann::json& result);

  const ObservableBinnings& binning() const { return binning_; }
  // Chains rebinned without their iterations (their weights.h5 holds `final` alone).
  int64_t withoutIterations() const { return without_iterations_; }

 private:
  struct Simulation {
    int64_t rows = 0;
    // Observable rebinned -> each event's bin on its new edges (data::Binning::find), or
    // INT32_MIN where the event fails pass_gen: found once for every chain and weight set.
    std::map<std::string, std::vector<int32_t>> bins;
    std::vector<float> weights;  // N, or empty: every event weighs 1
    FileStat read;               // the file when it was read
  };
  const Simulation& simulation(const std::string& path, const std::string& chain);

  ObservableBinnings binning_;
  std::map<std::string, Simulation> simulations_;
  int64_t without_iterations_ = 0;
};

}  // namespace foldfarm::ensembles
