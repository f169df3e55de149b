#pragma once
// The output directory of one OmniFold chain (one bootstrap replica r, ensemble member m).
//
//   weights.h5       push   (iterations x N_mc) float64: per-event push weight on the MC gen
//                           sample after each iteration (1 for events failing gen selection)
//                    pull   (iterations x N_mc) float64: step-1 weights of each iteration
//                    final  (N_mc) float64: per-event weight of the unfolded result on the MC
//                           gen sample (the simulation's event weight x its MC-bootstrap
//                           weight x the last push); absent in chains written before it
//                    root attributes: campaign_seed, replica, member, member_seed, init,
//                    init_sha256, mc, data, config (JSON text); bootstrap_seed (the data's
//                    Poisson draw: replicas r >= 1 of the data bootstrap) or bootstrap = "mc"
//                    and mc_bootstrap_seed (an MC-statistics replica)
//   histograms.h5    /unfolded/<obs>/{edges, sumw, sumw2}: MC gen histogrammed with the last
//                    push weights; /prior/<obs>/{...}: MC gen unweighted (pass_gen events)
//   history.json     loss per epoch per step per iteration, weight reports (ESS, clipping)
//   result.json      written last: the chain is complete when it exists. The chain's spec,
//                    status, init_sha256, inputs {mc, data: {size, mtime_ns}} (the version
//                    of each file it read), mc_events, data_events, final_ess (the
//                    effective sample size of `final` over the events passing the gen
//                    selection: those the histograms hold), device, build (the build that
//                    finished the chain: core/build_info/build_info.hpp) and, when earlier
//                    steps ran under other builds (stopped, rebuilt, resumed),
//                    earlier_builds (theirs; state/progress.json keeps them meanwhile),
//                    chain_format (kChainFormat below)
// Every file is written atomically (AtomicFile): a reader sees all of a file or nothing.
#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldfarm::ensembles {

inline constexpr const char* kChainWeightsFile = "weights.h5";
inline constexpr const char* kChainHistogramsFile = "histograms.h5";
inline constexpr const char* kChainHistoryFile = "history.json";
inline constexpr const char* kChainResultFile = "result.json";

// How this build computes a chain's OmniFold steps, recorded as "chain_format" in result.json
// and in the chain's state (state/progress.json, state/inputs.json). Raised by a change that
// makes the steps give other results (not by one that keeps their bits): 2 since the steps
// train on balanced classes (311b7d1, 2026-12-06 07:37 UTC; their weights normalised since
// baaf03b, the evening before). Chains of two formats are two unfoldings: a chain's state of
// another format is not resumed (the finished steps were computed the other way), and an
// aggregation refuses to put chains of both in its bands.
inline constexpr int kChainFormat = 2;

// The chain format of a chain's record (result.json, state/progress.json): its "chain_format";
// else what its step records tell (`steps`: history.json's "steps", progress.json's "history"):
// 2 when every one holds "class_balance" (written by the steps of format 2 from the start), 1
// when one does not; 0, not known, when there is no step record.
int chainFormatOf(const nlohmann::json& record, const nlohmann::json& steps);

// "chain format 1 (foldfarm builds before 2026-12-06 07:37 UTC, whose steps did not balance the
// classes)", for messages.
std::string chainFormatText(int format);

// One observable's histogram: edges (bins + 1), Σw and Σw² per bin (in-range entries only),
// and the Σw of the entries outside the binning: below its first edge and above its last (a
// NaN counts above). A unit-area density is over the bins alone, so what falls outside is
// left out of every density and Δ; `outside` says how much. nullopt in histograms.h5 written
// before it held them.
struct ObservableHistogram {
  std::string name;
  std::vector<double> edges, sumw, sumw2;
  std::optional<std::array<double, 2>> outside;
  size_t bins() const { return sumw.size(); }
};

// The six substructure observables (core/data/observables.hpp) of `subs` (n x 6: mass,
// width, multiplicity, ln rho, z_g, tau21) with per-event weights (empty: 1) over the events
// with pass[i] != 0 (empty: all), binned by `edges` (one per observable; empty: OmniLearn's,
// data::observableBinning).
std::vector<ObservableHistogram> histogramObservables(
    const std::vector<float>& subs, const std::vector<double>& weights,
    const std::vector<uint8_t>& pass, const std::vector<std::vector<double>>& edges = {});

struct ChainHistograms {
  std::vector<ObservableHistogram> unfolded, prior;
  // The unfolded distribution after each iteration (push weights of iteration i times the
  // MC weights), the last equal to `unfolded`: how far the unfolding had converged. Groups
  // iterations/1, iterations/2, ... of histograms.h5; empty for chains written before.
  std::vector<std::vector<ObservableHistogram>> iterations;
  // Observables whose `iterations` hold no result (zeros on their edges): rebinned from a chain
  // that kept no per-iteration weights (ensembles/rebin.hpp). Never written.
  std::set<std::string> iterations_unknown = {};
};

// Writes histograms.h5 atomically into `dir`; `meta` keys become root attributes.
void writeChainHistograms(const std::string& dir, const ChainHistograms& h,
                          const nlohmann::json& meta);
// Throws InputError naming the file when it is unreadable or malformed.
ChainHistograms readChainHistograms(const std::string& dir);

// Per-event weights of a chain (weights.h5), rows = iterations.
struct ChainWeights {
  std::vector<std::vector<double>> push, pull;
  std::vector<double> final;  // empty: not written (the chain's state files)
};
// `iterations`: push and pull are written (a chain's state always; its weights.h5 unless the
// config's iteration_weights is false, when `final` alone is).
void writeChainWeights(const std::string& dir, const ChainWeights& w, const nlohmann::json& meta,
                       bool iterations = true);
ChainWeights readChainWeights(const std::string& dir);
// weights.h5's `push` and `final` in one reading, each empty where the file lacks it (`push`:
// the config's iteration_weights false; `final`: chains written before it); `pull` is not read.
// What rebinning a chain reads (ensembles/rebin.hpp).
ChainWeights readChainPushAndFinal(const std::string& dir);

// The MLP's logits on a step's training and evaluation sets (the offsets a boosted PET fit
// starts from), kept with the step's MLP fit under state/: `file` written atomically; read
// back nullopt when it does not exist, InputError naming it when it is unreadable.
struct LogitOffsets {
  std::vector<float> train, eval;
};
void writeLogitOffsets(const std::string& file, const LogitOffsets& o);
std::optional<LogitOffsets> readLogitOffsets(const std::string& file);
// weights.h5's `final`: its length, nullopt when the chain has no weights.h5 or no `final`
// (chains written before it existed); readChainFinalWeights reads it. Both throw
// InputError naming the file when it is unreadable or `final` is not 1-D.
std::optional<uint64_t> chainFinalWeightsRows(const std::string& dir);
std::vector<double> readChainFinalWeights(const std::string& dir);

// float64 datasets of the ensembles' HDF5 files (weights.h5, histograms.h5, bands.h5), on the
// checked handles of core/data/h5_file.hpp. `file` is an open HDF5 file id (hid_t); `path`
// names the file in errors. writeFloat64Dataset creates intermediate groups ("a/b/c");
// the product of `dims` must equal values.size(). readFloat64Dataset converts any numeric
// dataset and throws InputError("<path>: missing dataset '<name>'") when it is absent.
void writeFloat64Dataset(int64_t file, const std::string& path, const std::string& name,
                         const std::vector<double>& values, const std::vector<uint64_t>& dims);
std::vector<double> readFloat64Dataset(int64_t file, const std::string& path,
                                       const std::string& name,
                                       std::vector<uint64_t>* dims = nullptr);

// JSON files of the chain directory, atomically; readJson throws InputError on bad JSON.
// jsonText is the text they hold (indented by 2, a final newline).
std::string jsonText(const nlohmann::json& j);

// Why HDF5 could not create the file at `path`: a full file system (no block or no inode left,
// by statvfs of its directory) said as such, else "check the directory is writable" (before:
// that hint on a full disk too). The whole line, "<path>: cannot create HDF5 file (…)".
std::string h5CreateFailure(const std::string& path);
void writeJsonAtomic(const std::string& path, const nlohmann::json& j);
nlohmann::json readJson(const std::string& path);

}  // namespace foldfarm::ensembles
