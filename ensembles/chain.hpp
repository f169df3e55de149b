#pragma once
// One OmniFold (MultiFold) chain: bootstrap replica r, ensemble member m, n iterations of
//   step 1: PET classifier, MC reco (weights push * w_mc, label 0) vs data reco
//           (w_data * Poisson(1) bootstrap weights of replica r, label 1), on events passing
//           reco; pull = push * f/(1-f) on MC reco (factor 1 for MC events failing reco);
//   step 2: PET classifier, MC gen (w_mc, label 0) vs MC gen (w_mc * pull, label 1), on
//           events passing gen; push = f/(1-f) on MC gen (1 for events failing gen).
// Reweighting factors are sanitised (non-finite replaced, extremes clipped, both counted
// and warned about) and normalised over the step's passing events to a mean of 1 weighted
// as the classifier saw that sample (push * w_mc in step 1, w_mc in step 2: the passing
// events keep their total weight against the failing ones); every weight vector is then
// normalised by its global mean. The effective sample size of each (over the step's passing
// events, the MC weights included) is recorded.
// Both step models start from the foundation checkpoint (every parameter of matching name
// and shape; the rest is initialised from the member seed) or from scratch (init "none");
// iteration i > 0 starts from iteration i-1's models. A chain with warm_from starts every
// step from that chain's model of the same iteration and step instead (kept under
// <warm_from>/models/iteration<i>_step<s>/{pet,mlp} by a chain run with keep_models). Member m's
// initialisation, validation split and data order come from memberSeed(campaign seed, r, m) only.
//
// Interruption: when stopRequested() the running step saves its state under
// <out>/state and the chain throws InterruptedError; running the same chain again resumes
// and produces the same weights as an uninterrupted run (same hardware and threads).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/data/features.hpp"
#include "core/data/jet_arrays.hpp"
#include "core/data/observables.hpp"
#include "core/data/weight_sums.hpp"
#include "core/train/device.hpp"
#include "core/train/jet_batches.hpp"
#include "ensembles/weights.hpp"

namespace foldfarm {
struct Checkpoint;
struct ClassifierFitOptions;
class ParallelContext;
}  // namespace foldfarm

namespace foldfarm::ensembles {

// The observable MLP of "mlp" and "pet+mlp" chains ("mlp" object of the chain config).
struct MlpSettings {
  std::vector<int64_t> hidden = {64, 64};
  int epochs = 60;
  int patience = 8;
  int64_t batch_size = 256;
  double lr = 1e-3;
  double weight_decay = 0.0;
};

// Chain configuration ("config" object of the task params / --config file). Unknown keys
// are refused.
//
// classifier: the model of each step.
//   "pet"      PET on the particles (and the 4 jet features), OmniLearn's set-up;
//   "mlp"      classic OmniFold: an MLP on jet-level observables (`observables`), fast;
//   "pet+mlp"  boosted: the observable MLP is fitted first, then PET learns the correction
//              to its logit (logit = mlp(obs) + pet(particles), PET's output layer starting
//              at 0, the starting point competing for the best epoch). It ends no worse on
//              the validation set than the MLP alone (what the particles add beyond the
//              MLP's observables: docs/unfolding.md).
// observables: input columns of the MLP, taken at the step's level (reco in step 1, gen in
//   step 2): the six substructure observables of `*_subs` (mass, width, multiplicity,
//   lnrho, zg, tau21; computed from the particles when the file lacks them) and the jet
//   features of `*_jets` (jet_pt, jet_eta, jet_mass, jet_multiplicity).
struct ChainConfig {
  std::string classifier = "pet+mlp";
  std::vector<std::string> observables = data::substructureObservableNames();
  MlpSettings mlp;
  std::string preset = "tiny";  // PET preset when init is "none" (else the checkpoint's)
  nlohmann::json model = nlohmann::json::object();  // PET config overrides (init "none")
  // auto: particle statistics of the checkpoint (JetClass without one), jet statistics
  //   measured on the MC sample; checkpoint: all of the checkpoint's (zjets without one);
  //   jetclass | zjets: data::FeatureStats::jetClass() | zJets() (core/data/features.hpp).
  std::string feature_stats = "auto";
  int epochs = 20;
  int patience = 3;
  double val_fraction = 0.1;
  int64_t batch_size = 512;
  double lr = 3e-5;
  double lr_factor = 5.0;
  std::string optimizer = "lion";
  double weight_decay = 1e-5;
  WeightLimits limits;
  int64_t max_mc_events = 0;    // 0: all
  int64_t max_data_events = 0;  // 0: all
  // Step ensembling: at every step, this many classifiers (member 0 the chain's own, the
  // others with seeds of their own) are fitted on the same training set and their
  // probabilities averaged before the weights are pushed; 1: a plain chain. An alternative
  // to independent ensemble members (the campaign's "members"), whose weights are averaged
  // only at the end.
  int step_ensemble = 1;
  // Where the steps' classifiers train, PET and the observable MLP (core/train/device.hpp):
  // auto (this process's GPU when there is one: a campaign slot's), cpu or cuda. Not part of
  // the chain's identity: a chain resumes on another device.
  std::string device = "auto";
  // PET's step training: "fp32" or "bf16" (CUDA), and fixed batch shapes (trainer.hpp).
  // Part of the identity when not the default (they change the numbers).
  std::string precision = "fp32";
  bool fixed_shapes = false;
  // CUDA graphs for PET's steps (core/train/gradient_step.hpp; implies fixed_shapes). Part
  // of the identity when on: a graph's steps draw over the whole padded shape.
  bool cuda_graphs = false;
  // What the chain's weights.h5 keeps: true, every iteration's push and pull weights beside
  // `final` ((2·iterations + 1) rows of N_mc doubles); false, `final` alone (what the
  // aggregation reads), 1/(2·iterations + 1) of the size, for campaigns of many chains on
  // large simulations. Not part of the chain's identity: what is kept, not what is computed
  // (a chain's state keeps every row whatever it says).
  bool iteration_weights = true;
  // The histograms' bin edges per observable name (histograms.h5, the aggregation's bands and
  // Δ), where they are not OmniLearn's (data::observableBinning): jets of another pT range
  // (mass above 75 GeV) need others. From {"edges": [...]} or {"lo", "hi", "bins"}
  // (numpy.linspace(lo, hi, bins + 1)). Not part of the chain's identity: what is histogrammed,
  // not what is trained (the aggregation refuses chains of other binnings side by side).
  std::map<std::string, std::vector<double>> binning;
};
// The edges of each observable (in data::observableName order) that a chain of config `c`
// histograms with: c.binning's, else OmniLearn's.
std::vector<std::vector<double>> chainBinning(const ChainConfig& c);
ChainConfig chainConfigFromJson(const nlohmann::json& j, const std::string& source);
// The keys a chain config may have (anything else is refused by chainConfigFromJson).
const std::vector<std::string>& chainConfigKeys();
nlohmann::json chainConfigToJson(const ChainConfig& c);

// The most OmniFold iterations a chain runs (2 steps each; a chain's step count is an int).
inline constexpr int kMaxChainIterations = 1000;

struct ChainSpec {
  std::string mc_path, data_path;
  std::string init = "none";  // checkpoint directory or "none"
  int replica = 0, member = 0;
  uint64_t campaign_seed = 1;
  int iterations = 4;
  ChainConfig config;
  // What is resampled per replica: "data" (Poisson weights on the data, replica 0 none) or
  // "mc" (Poisson weights on the simulation, every replica; data weights 1): an
  // MC-statistics variation.
  std::string bootstrap = "data";
  // The systematic variation this chain belongs to (jobs/campaign_spec.hpp Variation::
  // describe(): name, type, source, direction, symmetrise); null for a nominal chain.
  // Recorded in result.json for the aggregation.
  nlohmann::json variation;
  // A completed chain directory whose per-step models this chain starts each step from
  // (a varied chain warm-started from the nominal chain of its replica and member); "".
  std::string warm_from;
  // Keep every step's models under <out>/models/ (chains that others warm-start from).
  bool keep_models = false;
};

// Params JSON of chain_task.hpp -> spec; throws InputError naming the key.
ChainSpec chainSpecFromJson(const nlohmann::json& params);
nlohmann::json chainSpecToJson(const ChainSpec& s);

// Everything a chain reads, loaded once (a worker caches these across chains).
struct ChainInputs {
  std::shared_ptr<const data::UnfoldArrays> mc, data;
  std::shared_ptr<const Checkpoint> init;  // null for "none"
  std::string init_sha256;                 // hash of the checkpoint's meta.json ("" for none)
  // Data-parallel step training over the ranks of `ctx` (null: this process alone). Every
  // rank predicts with the same model and so holds the same weights; rank 0 alone writes
  // files, and the others wait at a barrier before reading what it wrote.
  ParallelContext* ctx = nullptr;
  // PET's device: this process's GPU (a campaign slot's, a rank's) or the CPU
  // (runChainTaskOrThrow resolves it, with the config's CUDA graphs, before anything is
  // written).
  DeviceChoice device;
  // PET's inputs, standardised: the jets of one level ("mc.reco", "mc.gen", "data.reco") of
  // `jets` (that level's arrays, after the config's event caps) with `stats`, placed by
  // placeStandardised. Unset: made for this chain alone. A persistent worker
  // (chain_task.cpp) keeps them, on its GPU, from task to task.
  std::function<std::shared_ptr<const JetTensors>(
      const std::string& level, const data::JetArrays& jets, const data::FeatureStats& stats)>
      standardised;
};

// `jets` standardised with `stats`, on `device` when it is a GPU and they take at most
// kResidentLevelMiB there (batches are then gathered on the GPU), else on the host.
constexpr int64_t kResidentLevelMiB = 1024;
std::shared_ptr<const JetTensors> placeStandardised(const data::JetArrays& jets,
                                                    const data::FeatureStats& stats,
                                                    const torch::Device& device);

// Step-1 training set: MC reco events passing reco (label 0, weight w_mc: the push times
// the simulation's event weights) followed by data reco events passing reco (label 1, weight
// w_data). Both weight vectors are indexed by event. Raw features.
data::JetArrays step1TrainingSet(const data::UnfoldArrays& mc, const data::UnfoldArrays& data,
                                 const std::vector<double>& w_mc,
                                 const std::vector<double>& w_data);

// The PET fit options of a step with this config (optimiser, learning rates, batch, epochs,
// patience, validation fraction), data order and split from `seed`.
ClassifierFitOptions stepFitOptions(const ChainConfig& c, uint64_t seed, const std::string& label,
                                    torch::Device device = torch::Device(torch::kCPU));

// Jets whose statistics a chain measures: those of `jets` that `pass` flags (empty or null:
// all of them).
struct StatsSample {
  const data::JetArrays* jets = nullptr;
  const std::vector<uint8_t>* pass = nullptr;
};
// Feature statistics of a chain's classifiers (ChainConfig::feature_stats); "auto" measures
// the jet statistics on `samples` (a chain: the MC's reco jets of the events that pass the
// reco selection and its gen jets of those that pass the gen one, the jets its steps train
// on: a failing event's jet may be zeros, which would shift the mean and widen the spread).
data::FeatureStats chainFeatureStats(const ChainConfig& c, const Checkpoint* init,
                                     const std::vector<StatsSample>& samples);

// Where a chain with keep_models keeps the models of iteration `iteration`, step `step`.
std::string stepModelsDir(const std::string& chain_dir, int iteration, int step);

// The levels a chain needs of its files: the simulation (`mc`) both, to pair each event's
// detector and particle level; the data its reco level (experimental data holds nothing
// else). InputError naming `path` and what it holds otherwise.
void requireChainLevels(const std::string& path, bool mc, bool has_reco, bool has_gen);
// The refusal of selection flags `flags` ("pass_reco", "pass_gen") of `path` that pass none
// of its `n` events (`cap`: the config key, max_mc_events or max_data_events, that read only
// the first n; nullptr: the whole file).
InputError noEventPasses(const std::string& path, const char* flags, int64_t n,
                         const char* cap = nullptr);

// A file's own event weights (empty: all 1) over its events passing `flags` ("pass_reco",
// "pass_gen"; `pass` empty: all pass).
using InputWeights = data::WeightSums;
InputWeights inputWeights(const std::vector<float>& weights, const std::vector<uint8_t>& pass,
                          int64_t n);
// Refuses (InputError naming `path`, `flags` and the negative weights) weights whose total over
// the events a step trains on is not positive: no density to fit, and the file's fault, so
// retrying the chain cannot mend it. Negative weights with a positive total (NLO generators)
// are taken.
// `cap` (the config key, max_mc_events or max_data_events, that read only the first rows;
// nullptr: the whole file) is named beside the file.
void requirePositiveWeightTotal(const std::string& path, const char* flags, const InputWeights& w,
                                const char* cap = nullptr);

// The refusal to resume a chain whose state (`state`, the directory) a build of another chain
// format (chain_output.hpp: kChainFormat) wrote: one line naming it, both formats and what to
// do. A campaign's task adds the `campaign retry` that starts it over.
class ChainFormatError : public InputError {
 public:
  ChainFormatError(const std::string& state, int format);
};

// Runs (or resumes) the chain and writes its output into out_dir (chain_output.hpp).
// Throws InputError for bad input (ChainFormatError: a state of another chain format),
// InterruptedError when stopped (state saved), Error.
void runChain(const ChainSpec& spec, const ChainInputs& inputs, const std::string& out_dir);

}  // namespace foldfarm::ensembles
