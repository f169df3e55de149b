#include "ensembles/chain.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>

#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/hash.hpp"
#include "core/base/json_value.hpp"
#include "core/base/log.hpp"
#include "core/base/seed.hpp"
#include "core/base/stop_signal.hpp"
#include "core/build_info/build_info.hpp"
#include "core/data/histogram.hpp"
#include "core/data/observables.hpp"
#include "core/model/pet_config.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/device.hpp"
#include "core/train/observable_classifier.hpp"
#include "core/train/optim.hpp"
#include "core/train/parallel.hpp"
#include "core/train/train_config.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/rebin.hpp"
#include "ensembles/seeds.hpp"
#include "jobs/campaign_spec.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Purpose tags of the per-step seeds derived from the member seed.
constexpr uint64_t kPurposeInit = 0x1A17;
constexpr uint64_t kPurposeFit = 0xF17;
constexpr uint64_t kPurposeMlpInit = 0x3171A17;
constexpr uint64_t kPurposeStepEnsemble = 0x57E9E5;

const std::vector<std::string>& knownObservableColumns() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& o : data::observableTable()) n.push_back(o.name);
    return n;
  }();
  return names;
}

// Per level (reco or gen) of a sample: n x k raw values of the configured columns. Subs are
// read from the file or computed from the particles once.
std::vector<float> observableColumns(const data::JetArrays& jets, const std::vector<float>& subs_in,
                                     const std::vector<std::string>& names) {
  std::vector<float> computed;
  const std::vector<float>* subs = &subs_in;
  bool need_subs = false;
  for (const auto& n : names) need_subs |= n.rfind("jet_", 0) != 0;
  if (need_subs && subs_in.empty()) {
    computed = data::computeObservables(jets);
    subs = &computed;
  }
  const auto k = names.size();
  std::vector<float> out(static_cast<size_t>(jets.n) * k);
  for (size_t c = 0; c < k; ++c) {
    const auto& all = knownObservableColumns();
    const auto idx = static_cast<size_t>(std::find(all.begin(), all.end(), names[c]) - all.begin());
    for (int64_t i = 0; i < jets.n; ++i) {
      const float v = idx < data::kNumSubs ? (*subs)[static_cast<size_t>(i) * data::kNumSubs + idx]
                                           : jets.jet(i)[idx - data::kNumSubs];
      out[static_cast<size_t>(i) * k + c] = v;
    }
  }
  return out;
}

// Rows `rows` of an n x k matrix, appended to `out`.
void appendRows(const std::vector<float>& m, size_t k, const std::vector<int64_t>& rows,
                std::vector<float>& out) {
  for (int64_t r : rows)
    out.insert(out.end(), m.begin() + static_cast<long>(static_cast<size_t>(r) * k),
               m.begin() + static_cast<long>(static_cast<size_t>(r + 1) * k));
}

template <typename T>
void take(const json& j, const char* key, T& out, const std::string& source,
          const std::string& where = "") {
  if (j.contains(key)) out = jsonValue<T>(j.at(key), source + ": '" + where + key + "'");
}

std::vector<uint8_t> passFlags(const std::vector<uint8_t>& flags, int64_t n) {
  return flags.empty() ? std::vector<uint8_t>(static_cast<size_t>(n), 1) : flags;
}

std::vector<int64_t> passingRows(const std::vector<uint8_t>& pass) {
  std::vector<int64_t> rows;
  for (size_t i = 0; i < pass.size(); ++i)
    if (pass[i]) rows.push_back(static_cast<int64_t>(i));
  return rows;
}

// Rows of `src` with labels `label` and weights `w[row]`.
data::JetArrays labelled(const data::JetArrays& src, const std::vector<int64_t>& rows,
                         int64_t label, const std::vector<double>& w) {
  data::JetArrays a = src.subset(rows);
  a.labels.assign(rows.size(), label);
  a.weights.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) a.weights[i] = static_cast<float>(w[rows[i]]);
  return a;
}

// The labels (0 for the rows of the first part, 1 for the second) and float weights of a
// two-part training set, as labelled() gives them.
void labelsAndWeights(const std::vector<int64_t>& rows0, const std::vector<double>& w0,
                      const std::vector<int64_t>& rows1, const std::vector<double>& w1,
                      std::vector<int64_t>& labels, std::vector<float>& weights) {
  labels.assign(rows0.size(), 0);
  labels.resize(rows0.size() + rows1.size(), 1);
  weights.clear();
  for (int64_t r : rows0) weights.push_back(static_cast<float>(w0[static_cast<size_t>(r)]));
  for (int64_t r : rows1) weights.push_back(static_cast<float>(w1[static_cast<size_t>(r)]));
}

// Divides by the global mean; returns the ESS.
double normaliseGlobal(std::vector<double>& w, const std::string& what) {
  double s = 0;
  for (double x : w) s += x;
  const double mean = s / static_cast<double>(w.size());
  if (!(mean > 0) || !std::isfinite(mean))
    throw Error(what + ": weights have mean " + std::to_string(mean) + "; the chain diverged");
  for (double& x : w) x /= mean;
  return effectiveSampleSize(w);
}

// (collective) Every rank trained the same model and predicted on the whole sample, so the
// weights must agree bit for bit. The FNV-1a hash of their bytes, cut into eight bytes, is
// summed over ranks together with the squares: (sum x)^2 == n * sum x^2 holds only when
// every rank holds the same byte, and all these sums are exact in double.
void requireRanksAgree(ParallelContext& ctx, const std::vector<double>& w,
                       const std::string& what) {
  const uint64_t h = fnv1a(w.data(), w.size() * sizeof(double));
  std::vector<double> sums(16);
  for (size_t k = 0; k < 8; ++k) {
    const double piece = static_cast<double>((h >> (8 * k)) & 0xFFULL);
    sums[k] = piece;
    sums[k + 8] = piece * piece;
  }
  ctx.allreduceSum(sums);
  const double n = static_cast<double>(ctx.worldSize());
  for (size_t k = 0; k < 8; ++k)
    if (sums[k] * sums[k] != n * sums[k + 8])
      throw Error(what + ": the " + std::to_string(ctx.worldSize()) +
                  " ranks computed different weights; run with the same foldfarm build, "
                  "threads and data on every rank");
  if (ctx.isRoot()) logInfo("{}: weights agree across {} ranks", what, ctx.worldSize());
}

struct ChainState {
  int done_steps = 0;  // steps finished: step k = 2 * iteration + (0 for step 1, 1 for step 2)
  ChainWeights weights;
  json history = json::array();
  // The builds that ran the finished steps (core/build_info), in the order they first did: a
  // chain stopped under one build may be resumed by another (a rebuild between a crash and
  // its resume). Recorded, never compared: the resume goes on.
  json builds = json::array();
};

std::string stateDir(const std::string& out) {
  return out + "/state";
}

// The MLP's logit offsets of step k's member (`sfx`), kept until the step commits.
std::string logitOffsetsFile(const std::string& out, int k, const std::string& sfx) {
  return stateDir(out) + "/mlp_offsets_step" + std::to_string(k) + sfx + ".h5";
}

void saveProgress(const std::string& out, const ChainSpec& spec, const ChainState& st) {
  // Weights first, then progress.json (the commit point of a finished step).
  writeChainWeights(stateDir(out), st.weights, json::object());
  json builds = st.builds;
  if (std::find(builds.begin(), builds.end(), buildInfoJson()) == builds.end())
    builds.push_back(buildInfoJson());
  writeJsonAtomic(stateDir(out) + "/progress.json", {{"spec", chainSpecToJson(spec)},
                                                     {"done_steps", st.done_steps},
                                                     {"history", st.history},
                                                     {"builds", builds},
                                                     {"chain_format", kChainFormat}});
}

// The chain format (kChainFormat) of the state in `state`: progress.json's once a step is
// finished (recorded, or told by its step records); else inputs.json's; 0 (not known) for a
// chain stopped in its first step by a build that recorded no format: the training state's own
// check of its data (weights' sums and values) then refuses a step trained otherwise.
int stateChainFormat(const std::string& state) {
  if (fs::exists(state + "/progress.json")) {
    const json p = readJson(state + "/progress.json");
    return chainFormatOf(p, p.is_object() ? p.value("history", json()) : json());
  }
  if (fs::exists(state + "/inputs.json"))
    return chainFormatOf(readJson(state + "/inputs.json"), {});
  return 0;
}

}  // namespace

ChainFormatError::ChainFormatError(const std::string& state, int format)
    : InputError(state + ": a chain stopped under a foldfarm build that computes its steps " +
                 "otherwise (" + chainFormatText(format) + "; this build: chain format " +
                 std::to_string(kChainFormat) +
                 "), so this build does not resume it: finish it with that build, or start it "
                 "over with this one (remove " +
                 state + ")") {}

namespace {

// ChainFormatError when the state in `out` was written by a build that computes the chain's
// steps otherwise (another kChainFormat): resumed, the chain would be made of steps of two
// kinds (before: a partly trained step was refused as "written for different training data",
// and a chain stopped between steps went on, its finished steps those of the older build).
void requireChainFormat(const std::string& out) {
  const std::string state = stateDir(out);
  if (!fs::is_directory(state)) return;
  const int format = stateChainFormat(state);
  if (format == 0 || format == kChainFormat) return;
  throw ChainFormatError(state, format);
}

ChainState loadProgress(const std::string& out, const ChainSpec& spec) {
  ChainState st;
  const std::string p = stateDir(out) + "/progress.json";
  if (!fs::exists(p)) return st;
  json j = readJson(p);
  const json now = chainSpecToJson(spec), then = j.value("spec", json());
  if (then != now) {
    // Named with the first parameter that differs and both values.
    const jobs::JsonKeys at = jobs::jsonDifferences(then, now).front();
    throw InputError(out + ": holds the state of a chain with different parameters ('" +
                     jobs::jsonKeysText(at) + "' " + jobs::shortJsonText(jobs::jsonAt(then, at)) +
                     ", now " + jobs::shortJsonText(jobs::jsonAt(now, at)) +
                     "); rerun with the parameters it was started with, use another output "
                     "directory, or remove " +
                     stateDir(out));
  }
  st.done_steps = j.at("done_steps").get<int>();
  st.history = j.at("history");
  // A state written before builds were recorded names none.
  if (const json builds = j.value("builds", json::array()); builds.is_array()) st.builds = builds;
  if (st.done_steps > 0) {
    st.weights = readChainWeights(stateDir(out));
    // A stop between the weights' commit and progress.json's left the next step's row in
    // weights.h5 (before: kept, and the resumed step added its own beside it, a row twice).
    // progress.json is the commit point: rows past its steps are dropped, too few refused.
    const size_t pulls = static_cast<size_t>(st.done_steps + 1) / 2,
                 pushes = static_cast<size_t>(st.done_steps) / 2;
    if (st.weights.pull.size() < pulls || st.weights.push.size() < pushes)
      throw InputError(stateDir(out) + "/weights.h5: holds " +
                       std::to_string(st.weights.pull.size()) + " pull and " +
                       std::to_string(st.weights.push.size()) + " push rows for " +
                       std::to_string(st.done_steps) + " finished steps (" + std::to_string(pulls) +
                       " and " + std::to_string(pushes) + " expected); remove " + stateDir(out) +
                       " and run the chain again");
    if (st.weights.pull.size() > pulls || st.weights.push.size() > pushes)
      logInfo(
          "{}/weights.h5: the rows of a step stopped before its commit are dropped; it runs again",
          stateDir(out));
    st.weights.pull.resize(pulls);
    st.weights.push.resize(pushes);
  }
  std::string others;
  for (const json& b : st.builds)
    if (b != buildInfoJson()) others += (others.empty() ? "" : "; ") + buildLine(b);
  if (others.empty())
    logInfo("resuming chain after {} finished steps", st.done_steps);
  else
    logInfo(
        "resuming chain after {} finished steps, run by {} (this is {}); result.json records "
        "both",
        st.done_steps, others, buildLine(buildInfoJson()));
  return st;
}

// What a chain's saved state depends on besides its parameters: its input files (path,
// size, modification time in ns) and the foundation checkpoint (hash of its meta.json).
// A file rewritten in place with the same size and time is not noticed.
json inputFingerprint(const ChainSpec& spec, const ChainInputs& in) {
  auto file = [](const std::string& path) {
    const FileStat st = statPath(path);
    if (!st.exists) return json{{"path", path}, {"missing", true}};
    return json{{"path", path}, {"size", st.size}, {"mtime_ns", st.mtime_ns}};
  };
  return {{"mc", file(spec.mc_path)}, {"data", file(spec.data_path)}, {"init", in.init_sha256}};
}

// The first run of a chain records its inputs under state/; a resume refuses inputs that
// changed since (the saved weights and models were computed from the old ones). Returns the
// inputs' fingerprint.
json checkInputFingerprint(const std::string& out, const ChainSpec& spec, const ChainInputs& in,
                           bool root) {
  const std::string path = stateDir(out) + "/inputs.json";
  const json now = inputFingerprint(spec, in);
  // A state of the inputs alone (a run refused before it trained anything: too few events, a
  // bootstrap draw that leaves no event) holds nothing computed from them: a run on other
  // inputs starts the chain afresh (before: refused, for a file that had not changed).
  const auto onlyInputs = [&] {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(stateDir(out), ec))
      if (e.path().filename() != "inputs.json") return false;
    return !ec;
  };
  if (fs::exists(path) && onlyInputs()) {
    const json then = readJson(path);
    if (then.value("mc", json()) != now["mc"] || then.value("data", json()) != now["data"] ||
        then.value("init", std::string()) != now["init"].get<std::string>())
      logInfo("{}: the chain's earlier run trained nothing; it starts on the inputs given now",
              out);
  } else if (fs::exists(path)) {
    const json then = readJson(path);
    for (const char* k : {"mc", "data"}) {
      if (then.value(k, json()) != now[k]) {
        const json& a = then.value(k, json::object());
        const json& b = now[k];
        const std::string file = b.value("path", std::string("?"));
        const long long size = a.value("size", -1LL);
        const std::string was = a.value("path", std::string("?"));
        // The same file by another name (a relative path, a link): the same if its size and
        // time are.
        std::error_code ec;
        const bool same_file = was == file || fs::equivalent(was, file, ec);
        json a_unnamed = a, b_unnamed = b;
        a_unnamed.erase("path");
        b_unnamed.erase("path");
        if (same_file && a_unnamed == b_unnamed) continue;
        if (!same_file)
          throw InputError("this chain started on " + was + " (" + std::to_string(size) +
                           " bytes) as its " + k + " file and is given " + file + " now; give it " +
                           was + " again, or remove " + stateDir(out) +
                           " to start the chain over on " + file);
        // The same size, a later time: perhaps the same bytes copied again.
        const std::string same_bytes =
            b.value("size", -2LL) == size && a.value("path", std::string()) == file
                ? restoreTimeHint(file, a.value("mtime_ns", 0LL))
                : std::string();
        throw InputError("this chain started on " + file + " (" + std::to_string(size) +
                         " bytes), which has changed since (now " +
                         std::to_string(b.value("size", -1LL)) + " bytes, modified later" +
                         same_bytes + "); restore the file (its bytes and time: `cp -p`) or " +
                         "remove " + stateDir(out) + " to start the chain over");
      }
    }
    if (then.value("init", std::string()) != now["init"].get<std::string>()) {
      throw InputError("this chain started from another foundation checkpoint than " + spec.init +
                       " holds now; restore it or remove " + stateDir(out) + " to start over");
    }
    return now;
  }
  if (root) {
    json record = now;
    record["chain_format"] = kChainFormat;  // the chain's format before a step is finished
    writeJsonAtomic(path, record);
  }
  return now;
}

}  // namespace

data::JetArrays step1TrainingSet(const data::UnfoldArrays& mc, const data::UnfoldArrays& dat,
                                 const std::vector<double>& w_mc,
                                 const std::vector<double>& w_data) {
  data::JetArrays train = labelled(mc.reco, passingRows(passFlags(mc.pass_reco, mc.n())), 0, w_mc);
  data::JetArrays real =
      labelled(dat.reco, passingRows(passFlags(dat.pass_reco, dat.n())), 1, w_data);
  // Files written with different particle slots: the narrower set padded to the wider.
  if (train.P < real.P) train = train.widened(real.P);
  if (real.P < train.P) real = real.widened(train.P);
  train.append(real);
  return train;
}

ClassifierFitOptions stepFitOptions(const ChainConfig& c, uint64_t seed, const std::string& label,
                                    torch::Device device) {
  ClassifierFitOptions fo;
  fo.device = device;
  fo.precision = c.precision;
  fo.fixed_shapes = c.fixed_shapes;
  fo.cuda_graphs = c.cuda_graphs;
  fo.optimizer = c.optimizer;
  fo.lr = c.lr;
  fo.lr_factor = c.lr_factor;
  fo.weight_decay = c.weight_decay;
  fo.batch_size = c.batch_size;
  fo.max_epochs = c.epochs;
  fo.patience = c.patience;
  fo.val_fraction = c.val_fraction;
  fo.seed = seed;
  fo.label = label;
  // The step's state within an epoch too, every 10 minutes: a task killed outright (its
  // node lost) resumes there, with the same result (trainer.hpp).
  fo.save_every_s = 600;
  return fo;
}

data::FeatureStats chainFeatureStats(const ChainConfig& c, const Checkpoint* init,
                                     const std::vector<StatsSample>& samples) {
  if (c.feature_stats == "jetclass") return data::FeatureStats::jetClass();
  if (c.feature_stats == "zjets") return data::FeatureStats::zJets();
  if (c.feature_stats == "checkpoint") return init ? init->meta.stats : data::FeatureStats::zJets();
  // auto: the body keeps the particle statistics it was trained with; the jet features, which
  // only condition the classifier head, are standardised on this sample (reco and gen jets
  // of the MC). A foundation's JetClass jet statistics put ~200 GeV jets near -4 sigma.
  data::FeatureStats s = init ? init->meta.stats : data::FeatureStats::jetClass();
  for (int f = 0; f < data::kNumJetFeatures; ++f) {
    double sum = 0, sum2 = 0;
    int64_t n = 0;
    for (const StatsSample& sample : samples)
      for (int64_t i = 0; i < sample.jets->n; ++i) {
        if (sample.pass != nullptr && !sample.pass->empty() &&
            (*sample.pass)[static_cast<size_t>(i)] == 0)
          continue;
        const double v = sample.jets->jet(i)[f];
        if (!std::isfinite(v)) continue;
        sum += v;
        sum2 += v * v;
        ++n;
      }
    if (n == 0) continue;
    const double mean = sum / static_cast<double>(n);
    const double var = sum2 / static_cast<double>(n) - mean * mean;
    s.jet_mean[static_cast<size_t>(f)] = static_cast<float>(mean);
    s.jet_std[static_cast<size_t>(f)] = var > 1e-12 ? static_cast<float>(std::sqrt(var)) : 1.0f;
  }
  return s;
}

const std::vector<std::string>& chainConfigKeys() {
  static const std::vector<std::string> keys = {
      "classifier", "observables", "mlp", "preset", "model", "feature_stats", "epochs", "patience",
      "val_fraction", "batch_size", "lr", "lr_factor", "optimizer", "weight_decay", "max_weight",
      "max_mc_events", "max_data_events", "step_ensemble", "device", "precision", "fixed_shapes",
      "cuda_graphs",
      // What weights.h5 keeps and histograms.h5 bins, not what the chain computes.
      "iteration_weights", "binning"};
  return keys;
}

namespace {

// The keys of a chain config `j` that its classifier never reads: PET's training keys for
// "mlp", the MLP's for "pet".
std::vector<std::string> unusedChainConfigKeys(const json& j, const std::string& classifier) {
  static const std::vector<std::string> pet_only = {
      "preset",    "model",     "feature_stats", "epochs",    "patience",     "batch_size", "lr",
      "lr_factor", "optimizer", "weight_decay",  "precision", "fixed_shapes", "cuda_graphs"};
  std::vector<std::string> unused;
  if (classifier == "mlp") {
    for (const auto& k : pet_only)
      if (j.contains(k)) unused.push_back(k);
  } else if (classifier == "pet") {
    for (const char* k : {"mlp", "observables"})
      if (j.contains(k)) unused.push_back(k);
  }
  return unused;
}

// Said once per process and `key`: a campaign parses its chain config for every task, and
// `unfold` its --config file and then the chain's parameters holding it (before: said once
// per source, so twice).
void warnOnce(const std::string& key, const std::string& message) {
  static std::mutex m;
  static std::set<std::string> said;
  std::lock_guard<std::mutex> lock(m);
  if (said.insert(key).second) logWarn("{}", message);
}

}  // namespace

namespace {
std::string knownKeysText() {
  std::string known;
  for (const auto& k : chainConfigKeys()) known += (known.empty() ? "" : ", ") + std::string(k);
  return known;
}
}  // namespace

namespace {}  // namespace

std::vector<std::vector<double>> chainBinning(const ChainConfig& c) {
  return observableEdges(c.binning);
}

ChainConfig chainConfigFromJson(const json& j, const std::string& source) {
  if (!j.is_object()) throw InputError(source + ": chain config must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find(chainConfigKeys().begin(), chainConfigKeys().end(), it.key()) ==
        chainConfigKeys().end())
      throw InputError(source + ": unknown chain config key '" + it.key() + "'" +
                       (it.key() == "keep_models" || it.key() == "iterations"
                            ? " (it is the chain's, not its config's: in a campaign spec put it "
                              "in 'chain' beside 'config'; `unfold` takes --iterations)"
                            : " (known: " + knownKeysText() + ")"));
  ChainConfig c;
  take(j, "classifier", c.classifier, source);
  take(j, "observables", c.observables, source);
  if (j.contains("mlp")) {
    const json& m = j.at("mlp");
    if (!m.is_object()) throw InputError(source + ": 'mlp' must be a JSON object");
    for (auto it = m.begin(); it != m.end(); ++it)
      if (std::string k = it.key(); k != "hidden" && k != "epochs" && k != "patience" &&
                                    k != "batch_size" && k != "lr" && k != "weight_decay")
        throw InputError(source + ": unknown key 'mlp." + k +
                         "' (hidden, epochs, patience, "
                         "batch_size, lr, weight_decay)");
    take(m, "hidden", c.mlp.hidden, source, "mlp.");
    take(m, "epochs", c.mlp.epochs, source, "mlp.");
    take(m, "patience", c.mlp.patience, source, "mlp.");
    take(m, "batch_size", c.mlp.batch_size, source, "mlp.");
    take(m, "lr", c.mlp.lr, source, "mlp.");
    take(m, "weight_decay", c.mlp.weight_decay, source, "mlp.");
  }
  take(j, "preset", c.preset, source);
  take(j, "model", c.model, source);
  take(j, "feature_stats", c.feature_stats, source);
  take(j, "epochs", c.epochs, source);
  take(j, "patience", c.patience, source);
  take(j, "val_fraction", c.val_fraction, source);
  take(j, "batch_size", c.batch_size, source);
  take(j, "lr", c.lr, source);
  take(j, "lr_factor", c.lr_factor, source);
  take(j, "optimizer", c.optimizer, source);
  take(j, "weight_decay", c.weight_decay, source);
  take(j, "max_weight", c.limits.max_weight, source);
  take(j, "max_mc_events", c.max_mc_events, source);
  take(j, "max_data_events", c.max_data_events, source);
  take(j, "step_ensemble", c.step_ensemble, source);
  take(j, "device", c.device, source);
  take(j, "precision", c.precision, source);
  take(j, "fixed_shapes", c.fixed_shapes, source);
  take(j, "cuda_graphs", c.cuda_graphs, source);
  take(j, "iteration_weights", c.iteration_weights, source);
  if (j.contains("binning")) c.binning = binningFromJson(j.at("binning"), source + ": 'binning'");
  if (c.cuda_graphs) c.fixed_shapes = true;  // graphs replay fixed shapes
  parseDeviceRequest(c.device, source + " device");
  if (c.precision != "fp32" && c.precision != "bf16")
    throw InputError(source + ": precision must be fp32 or bf16 (got '" + c.precision + "')");
  if (c.step_ensemble < 1 || c.step_ensemble > 64)
    throw InputError(source + ": step_ensemble must be from 1 to 64 (got " +
                     std::to_string(c.step_ensemble) + ")");
  // Named with the value given (a key of the file, or of its "mlp" object).
  const auto atLeast = [&source](const char* key, int64_t value, int64_t least,
                                 const char* meaning = "") {
    if (value < least)
      throw InputError(source + ": '" + key + "' must be >= " + std::to_string(least) + meaning +
                       " (got " + std::to_string(value) + ")");
  };
  atLeast("epochs", c.epochs, 1);
  atLeast("batch_size", c.batch_size, 1);
  atLeast("patience", c.patience, 0);
  atLeast("max_mc_events", c.max_mc_events, 0, " (0: every event)");
  atLeast("max_data_events", c.max_data_events, 0, " (0: every event)");
  if (!(c.val_fraction > 0 && c.val_fraction < 1))
    throw InputError(source + ": val_fraction must be in (0, 1)");
  // Written so that NaN fails too (before: a negative lr trained, and lr_factor 0 stopped
  // the first step classifier at run time, leaving its state behind).
  if (const std::string bad = learningRateProblem(c.lr, c.lr_factor); !bad.empty())
    throw InputError(source + ": " + bad);
  // The step classifiers train without a warm-up scale: the schedule peaks at lr.
  if (const std::string bad = weightDecayProblem(c.weight_decay, c.lr); !bad.empty())
    throw InputError(source + ": " + bad);
  if (c.optimizer != "lion" && c.optimizer != "adamw")
    throw InputError(source + ": optimizer must be lion or adamw (got '" + c.optimizer + "')");
  if (!(c.limits.max_weight > 1)) throw InputError(source + ": max_weight must be > 1");
  if (c.feature_stats != "auto" && c.feature_stats != "checkpoint" &&
      c.feature_stats != "jetclass" && c.feature_stats != "zjets")
    throw InputError(source + ": feature_stats must be auto, checkpoint, jetclass or zjets");
  if (c.classifier != "pet" && c.classifier != "mlp" && c.classifier != "pet+mlp")
    throw InputError(source + ": classifier must be pet, mlp or pet+mlp (got '" + c.classifier +
                     "')");
  // Given but never read (before: `"epochs": 2` with classifier mlp trained the MLP for its
  // own 60 epochs, silently).
  if (const std::vector<std::string> unused = unusedChainConfigKeys(j, c.classifier);
      !unused.empty()) {
    std::string keys;
    for (const auto& k : unused) keys += (keys.empty() ? "'" : ", '") + k + "'";
    warnOnce(
        keys + " " + c.classifier,
        source + ": " + keys + (unused.size() > 1 ? " are" : " is") + " not used by classifier '" +
            c.classifier + "'" +
            (c.classifier == "mlp"
                 ? " (they set PET's training; the MLP's are 'mlp': {hidden, epochs, patience, "
                   "batch_size, lr, weight_decay}, with val_fraction)"
                 : " (PET reads the particles; 'mlp' and 'observables' serve classifiers mlp "
                   "and pet+mlp)"));
  }
  if (c.observables.empty() && c.classifier != "pet")
    throw InputError(source + ": 'observables' must name at least one column for classifier " +
                     c.classifier);
  for (const auto& o : c.observables) {
    const auto& all = knownObservableColumns();
    if (std::find(all.begin(), all.end(), o) == all.end())
      throw InputError(source + ": unknown observable '" + o +
                       "' (mass, width, multiplicity, "
                       "lnrho, zg, tau21, jet_pt, jet_eta, jet_mass, jet_multiplicity)");
    if (std::count(c.observables.begin(), c.observables.end(), o) > 1)
      throw InputError(source + ": observable '" + o + "' is listed twice");
  }
  if (c.mlp.hidden.empty())
    throw InputError(source + ": 'mlp.hidden' must list at least one hidden layer's width");
  atLeast("mlp.epochs", c.mlp.epochs, 1);
  atLeast("mlp.batch_size", c.mlp.batch_size, 1);
  atLeast("mlp.patience", c.mlp.patience, 0);
  if (const std::string bad = learningRateProblem(c.mlp.lr, 1.0); !bad.empty())
    throw InputError(source + ": mlp: " + bad);
  if (const std::string bad = weightDecayProblem(c.mlp.weight_decay, c.mlp.lr); !bad.empty())
    throw InputError(source + ": mlp: " + bad);
  validateMlpShape(c.mlp.hidden, static_cast<int64_t>(c.observables.size()), source + ": mlp");
  // The preset and the model overrides, which a chain without --init builds its PET from: a
  // bad one was found only when every task of a campaign ran.
  PetConfig preset;
  try {
    preset = petPreset(c.preset);
  } catch (const InputError& e) {
    throw InputError(source + ": 'preset': " + e.what());
  }
  if (!c.model.is_object())
    throw InputError(source + ": 'model' must be an object of PET config overrides");
  refuseCommandSetPetKeys(c.model, source);
  applyPetOverrides(preset, c.model, source + ": 'model'");
  return c;
}

json chainConfigToJson(const ChainConfig& c) {
  json j = {{"classifier", c.classifier},
            {"observables", c.observables},
            {"mlp",
             {{"hidden", c.mlp.hidden},
              {"epochs", c.mlp.epochs},
              {"patience", c.mlp.patience},
              {"batch_size", c.mlp.batch_size},
              {"lr", c.mlp.lr},
              {"weight_decay", c.mlp.weight_decay}}},
            {"preset", c.preset},
            {"model", c.model},
            {"feature_stats", c.feature_stats},
            {"epochs", c.epochs},
            {"patience", c.patience},
            {"val_fraction", c.val_fraction},
            {"batch_size", c.batch_size},
            {"lr", c.lr},
            {"lr_factor", c.lr_factor},
            {"optimizer", c.optimizer},
            {"weight_decay", c.weight_decay},
            {"max_weight", c.limits.max_weight},
            {"max_mc_events", c.max_mc_events},
            {"max_data_events", c.max_data_events}};
  if (c.step_ensemble != 1)
    j["step_ensemble"] = c.step_ensemble;  // plain chains keep their records
  if (c.precision != "fp32") j["precision"] = c.precision;
  if (c.fixed_shapes) j["fixed_shapes"] = true;
  if (c.cuda_graphs) j["cuda_graphs"] = true;
  // device: where, not what (result.json records the device used); iteration_weights: what
  // weights.h5 keeps (its datasets say it).
  return j;
}

ChainSpec chainSpecFromJson(const json& p) {
  // Named as a campaign spec names them: `chain`, its `config` (before: "chain params config").
  const std::string src = "chain";
  if (!p.is_object()) throw InputError(src + ": must be a JSON object");
  for (const char* key : {"mc", "data", "init", "replica", "member"})
    if (!p.contains(key)) throw InputError(src + ": missing '" + key + "'");
  ChainSpec s;
  take(p, "mc", s.mc_path, src);
  take(p, "data", s.data_path, src);
  take(p, "init", s.init, src);
  take(p, "replica", s.replica, src);
  take(p, "member", s.member, src);
  take(p, "campaign_seed", s.campaign_seed, src);
  take(p, "iterations", s.iterations, src);
  if (s.replica < 0 || s.member < 0) throw InputError(src + ": replica and member must be >= 0");
  if (s.iterations < 1 || s.iterations > kMaxChainIterations)
    throw InputError(src + ": iterations must be in [1, " + std::to_string(kMaxChainIterations) +
                     "], not " + std::to_string(s.iterations) +
                     " (OmniFold converges within tens; each iteration trains two classifiers)");
  if (p.contains("config")) s.config = chainConfigFromJson(p.at("config"), "chain.config");
  // With a foundation the model is the checkpoint's: size overrides would be ignored.
  if (s.init != "none" && !s.config.model.empty())
    throw InputError(
        "chain.config: 'model' size overrides apply with init none only (the "
        "foundation " +
        s.init + " fixes the model); remove 'model'");
  take(p, "bootstrap", s.bootstrap, src);
  if (s.bootstrap != "data" && s.bootstrap != "mc")
    throw InputError(src + ": bootstrap must be \"data\" or \"mc\", got \"" + s.bootstrap + "\"");
  if (p.contains("variation") && !p.at("variation").is_null()) {
    if (!p.at("variation").is_object() || !p.at("variation").contains("name"))
      throw InputError(src + ": variation must be an object with a name");
    s.variation = p.at("variation");
  }
  take(p, "warm_from", s.warm_from, src);
  take(p, "keep_models", s.keep_models, src);
  return s;
}

json chainSpecToJson(const ChainSpec& s) {
  json j = {{"mc", s.mc_path},
            {"data", s.data_path},
            {"init", s.init},
            {"replica", s.replica},
            {"member", s.member},
            {"campaign_seed", s.campaign_seed},
            {"iterations", s.iterations},
            {"config", chainConfigToJson(s.config)}};
  // Only what differs from a plain nominal chain, so nominal chains keep their records.
  if (s.bootstrap != "data") j["bootstrap"] = s.bootstrap;
  if (!s.variation.is_null()) j["variation"] = s.variation;
  if (!s.warm_from.empty()) j["warm_from"] = s.warm_from;
  return j;
}

void requireChainLevels(const std::string& path, bool mc, bool has_reco, bool has_gen) {
  if (mc && !(has_reco && has_gen))
    throw InputError(path + ": holds its " + (has_gen ? "gen" : "reco") +
                     " level only; the simulation (mc) needs both levels of each event (reco, "
                     "gen and their _jets) to unfold");
  if (!mc && !has_reco)
    throw InputError(path +
                     ": holds its gen level only; the data is unfolded from its detector level "
                     "('reco', 'reco_jets'), give a file that holds it");
}

InputError noEventPasses(const std::string& path, const char* flags, int64_t n, const char* cap) {
  if (cap != nullptr)
    return InputError(path + ": no event passes '" + flags + "' in the first " + std::to_string(n) +
                      " that the chain config's " + cap +
                      " reads: a chain needs selected events; raise " + cap);
  return InputError(path + ": no event passes '" + flags + "' (0 of " + std::to_string(n) +
                    "): a chain needs selected events; fix the file's selection flags");
}

InputWeights inputWeights(const std::vector<float>& weights, const std::vector<uint8_t>& pass,
                          int64_t n) {
  InputWeights w;
  for (int64_t i = 0; i < n; ++i)
    if (pass.empty() || pass[static_cast<size_t>(i)] != 0)
      w.add(weights.empty() ? 1.0 : weights[static_cast<size_t>(i)]);
  return w;
}

void requirePositiveWeightTotal(const std::string& path, const char* flags, const InputWeights& w,
                                const char* cap) {
  if (w.sum > 0) return;
  throw InputError(fmt::format(
      "{}: the event weights of the {} events passing '{}'{} sum to {:.6g} ({} of them negative, "
      "summing to {:.6g}); OmniFold needs a positive total: fix the file's weights{}",
      path, w.events, flags,
      cap != nullptr ? fmt::format(" in the rows the chain config's {} reads", cap) : "", w.sum,
      w.negative, w.sum_negative, cap != nullptr ? fmt::format(", or raise {}", cap) : ""));
}

namespace {

// Says once where a file's weights are negative (NLO generators give them).
void sayNegativeWeights(const std::string& path, const char* flags, const InputWeights& w) {
  if (w.negative == 0) return;
  logInfo(
      "{}: {} of the {} events passing '{}' ({:.1f}%) have negative weights (they sum to {:.4g}, "
      "all to {:.4g}; effective sample size {:.0f}): each counts in a classifier's loss only up "
      "to the loss of a reweighting factor at the clip limit (docs/unfolding.md, negative "
      "weights)",
      path, w.negative, w.events, flags,
      100.0 * static_cast<double>(w.negative) / static_cast<double>(w.events), w.sum_negative,
      w.sum, w.ess());
}

}  // namespace

std::string stepModelsDir(const std::string& chain_dir, int iteration, int step) {
  return chain_dir + "/models/iteration" + std::to_string(iteration) + "_step" +
         std::to_string(step);
}

std::shared_ptr<const JetTensors> placeStandardised(const data::JetArrays& jets,
                                                    const data::FeatureStats& stats,
                                                    const torch::Device& device) {
  JetTensors t = JetTensors::fromArrays(jets, stats);
  if (device.is_cuda() && t.bytes() <= kResidentLevelMiB * (int64_t{1} << 20)) t = t.to(device);
  return std::make_shared<const JetTensors>(std::move(t));
}

namespace {

// The first `cap` rows of `all`, kept in `storage`; `all` itself (not a copy) when the cap is
// 0 or not below its size.
const data::UnfoldArrays& capped(const data::UnfoldArrays& all, int64_t cap,
                                 std::optional<data::UnfoldArrays>& storage) {
  if (cap <= 0 || cap >= all.n()) return all;
  return storage.emplace(all.slice(0, cap));
}

std::vector<float> sigmoid(const std::vector<float>& logits) {
  std::vector<float> p(logits.size());
  for (size_t i = 0; i < p.size(); ++i)
    p[i] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(logits[i]))));
  return p;
}

// One run of a chain (runChain). Before the first step: the events (the config's caps, the
// rows passing each selection), their fixed weights (the files' own times the replica's
// bootstrap), the seeds and feature statistics, the state to resume from, and the
// classifiers' inputs (computed once). Then, for each step not yet committed:
//   1. its training set (trainingSet);
//   2. the observable MLP of each step-ensemble member (fitMlp; mlp, pet+mlp);
//   3. PET of each member, boosted on the MLP's logit in pet+mlp (fitPet);
//   4. the reweighting with the members' mean probability (reweight);
//   5. the commit: models, then progress (commit); a stop request ends the run here;
// and at the end 6., the outputs (writeOutputs).
class ChainRun {
 public:
  ChainRun(const ChainSpec& spec, const ChainInputs& in, const std::string& out);
  void run();

 private:
  // Step k of the chain: iteration k / 2, step k % 2 + 1.
  struct Step {
    int k = 0, iter = 0, step = 1;
    std::string tag;                 // "iteration <i> step <s>"
    std::string model_dir, mlp_dir;  // state/{model,mlp}_step<s>: the last committed models
    std::string warm_dir;            // warm_from's models of this iteration and step, or ""
  };
  // Member e of a step's ensemble (0: the chain's own, with the member seed).
  struct Member {
    int e = 0;
    std::string sfx;  // "" for member 0, else "_e<e>": its state and model directories
    uint64_t seed = 0, fit_seed = 0;
    std::string tag;  // the step's tag, naming the member when there are several
  };
  // A step's training set, events in the order of step1TrainingSet (step 1) or MC gen twice
  // (step 2): PET's standardised jets (pet, pet+mlp), labels and weights, the MLP's
  // observable rows (mlp, pet+mlp).
  struct TrainingSet {
    JetTensors pet;
    std::vector<int64_t> labels;
    std::vector<float> weights;
    std::vector<float> obs;
    double class_balance = 1;  // what label 1's weights were multiplied by (twoParts)
    double weight_scale = 1;   // what both classes' weights were then multiplied by (twoParts)
  };
  // A member's classifiers, fitted, and their probability on the step's evaluation set (MC
  // reco in step 1, MC gen in step 2).
  struct Fitted {
    std::optional<ObservableClassifier> mlp;
    std::optional<PetClassifier> pet;
    std::vector<float> prob;
  };

  void fixEventWeights();
  void checkWarmFrom() const;
  void checkDrawnWeights() const;
  void prepareClassifierInputs();
  Step stepOf(int k) const;
  Member memberOf(const Step& s, int e) const;
  void runStep(const Step& s);
  TrainingSet trainingSet(const Step& s, const std::vector<double>& push) const;
  // One part of a training set: events `rows` of PET's jets and the MLP's columns, with the
  // weights `w` (indexed by event).
  struct Part {
    const JetTensors* pet;
    const std::vector<int64_t>* rows;
    const std::vector<double>* w;
    const std::vector<float>* obs;
  };
  // p0's events with label 0, then p1's with label 1, whose weights are scaled to p0's total
  // over the rows given (the classes balanced), both then by the chain's weight scale.
  TrainingSet twoParts(const Part& p0, const Part& p1) const;
  // Reads (`read(dir)`) the `which` model of step `s` of the chain this one warm-starts from.
  // One missing or unreadable (a checksum, a shape) is NeedLostError: rerunning that chain
  // mends it, retrying this one cannot.
  template <class Read>
  auto readWarmModel(const Step& s, const std::string& which, const std::string& sfx,
                     Read&& read) const;
  void fitMember(const Step& s, const TrainingSet& train, int e, json& rec, Fitted& f) const;
  // True when the fit was kept under state/ by an earlier run (resumed), false when fitted now.
  bool fitMlp(const Step& s, const Member& m, const TrainingSet& train, json& rec,
              std::optional<ObservableClassifier>& mlp) const;
  std::vector<float> fitPet(const Step& s, const Member& m, const TrainingSet& train,
                            const std::vector<float>& train_offset,
                            const std::vector<float>& eval_offset, json& rec,
                            std::optional<PetClassifier>& pet) const;
  void reweight(const Step& s, const std::vector<float>& prob, const std::vector<double>& push,
                json& record);
  void commit(const Step& s, const std::deque<Fitted>& fitted);
  void writeOutputs();
  void writeOutputsOnRoot();
  // run()'s checks and state before the first step (no collective in it).
  void prepare();
  // write() (what rank 0 writes; no collective in it) and, over ranks, an agreement: every
  // rank ends with an error when it failed on any (checkOnEveryRank), none waits for it.
  template <class F>
  void onRootAgreed(F&& write) {
    if (ctx_ != nullptr)
      checkOnEveryRank(*ctx_, write);
    else
      write();
  }

  const ChainSpec& spec_;
  const ChainConfig& cfg_;
  const ChainInputs& in_;
  const std::string& out_;
  ParallelContext* const ctx_;
  const bool root_;  // writes the files (rank 0, or this process alone)
  const bool use_pet_, use_mlp_;
  // The events: the inputs' first max_*_events rows (the inputs themselves without caps).
  std::optional<data::UnfoldArrays> mc_capped_, data_capped_;
  const data::UnfoldArrays& mc_;
  const data::UnfoldArrays& dat_;
  const int64_t n_mc_, n_data_;
  const std::vector<uint8_t> mc_pass_reco_, mc_pass_gen_, data_pass_reco_;
  const std::vector<int64_t> mc_reco_rows_, mc_gen_rows_, data_rows_;
  // Fixed event weights: the files' own times the replica's Poisson resample of the data (or,
  // for an MC-statistics replica, of the simulation).
  const bool mc_boot_;
  std::vector<double> w_mc_, w_data_;
  bool signed_weights_ = false;  // some input event weights are negative
  double weight_scale_ = 1;      // both classes' weights times this (a power of two; prepare)
  uint64_t member_seed_ = 0;
  data::FeatureStats stats_;
  PetConfig pet_cfg_;
  json read_inputs_;  // the input files' fingerprint (checkInputFingerprint)
  ChainState st_;
  // The MLP's input columns per level (mlp, pet+mlp) and PET's standardised jets (pet,
  // pet+mlp; on the GPU when they fit): each step's training set is cut from them.
  std::vector<float> obs_mc_reco_, obs_mc_gen_, obs_data_reco_;
  std::shared_ptr<const JetTensors> pet_mc_reco_, pet_mc_gen_, pet_data_reco_;
};

ChainRun::ChainRun(const ChainSpec& spec, const ChainInputs& in, const std::string& out)
    : spec_(spec),
      cfg_(spec.config),
      in_(in),
      out_(out),
      ctx_(in.ctx),
      root_(ctx_ == nullptr || ctx_->isRoot()),
      use_pet_(cfg_.classifier != "mlp"),
      use_mlp_(cfg_.classifier != "pet"),
      mc_(capped(*in.mc, cfg_.max_mc_events, mc_capped_)),
      dat_(capped(*in.data, cfg_.max_data_events, data_capped_)),
      n_mc_(mc_.n()),
      n_data_(dat_.n()),
      mc_pass_reco_(passFlags(mc_.pass_reco, n_mc_)),
      mc_pass_gen_(passFlags(mc_.pass_gen, n_mc_)),
      data_pass_reco_(passFlags(dat_.pass_reco, n_data_)),
      mc_reco_rows_(passingRows(mc_pass_reco_)),
      mc_gen_rows_(passingRows(mc_pass_gen_)),
      data_rows_(passingRows(data_pass_reco_)),
      mc_boot_(spec.bootstrap == "mc") {}

void ChainRun::run() {
  // What every rank of a data-parallel chain finds alike (the directory, the inputs' levels
  // and flags, a saved state of other parameters): rank 0 says it, once.
  onRootAgreed([&] { prepare(); });
  prepareClassifierInputs();
  for (int k = st_.done_steps; k < 2 * spec_.iterations; ++k) runStep(stepOf(k));
  writeOutputs();
}

void ChainRun::prepare() {
  // An --out holding a pretraining's or fine-tuning's training (its model/, its state/ with a
  // checkpoint's meta.json): the chain's state/ would replace that training's state.
  if (fs::exists(fs::path(out_) / "model") || checkpointExists(stateDir(out_)))
    throw InputError(out_ +
                     ": holds a pretraining or fine-tuning (model/ or a training state in "
                     "state/), not an OmniFold chain; choose another --out (nothing there was "
                     "changed)");
  requireChainLevels(spec_.mc_path, true, mc_.hasReco(), mc_.hasGen());
  requireChainLevels(spec_.data_path, false, dat_.hasReco(), dat_.hasGen());
  // Named: which file's flags pass nothing (of the rows read, when max_*_events caps them).
  const char* mc_cap = mc_capped_ ? "max_mc_events" : nullptr;
  if (mc_reco_rows_.empty()) throw noEventPasses(spec_.mc_path, "pass_reco", n_mc_, mc_cap);
  if (mc_gen_rows_.empty()) throw noEventPasses(spec_.mc_path, "pass_gen", n_mc_, mc_cap);
  if (data_rows_.empty())
    throw noEventPasses(spec_.data_path, "pass_reco", n_data_,
                        data_capped_ ? "max_data_events" : nullptr);
  const InputWeights mc_reco = inputWeights(mc_.weights, mc_pass_reco_, n_mc_),
                     mc_gen = inputWeights(mc_.weights, mc_pass_gen_, n_mc_),
                     data_reco = inputWeights(dat_.weights, data_pass_reco_, n_data_);
  requirePositiveWeightTotal(spec_.mc_path, "pass_reco", mc_reco, mc_cap);
  requirePositiveWeightTotal(spec_.mc_path, "pass_gen", mc_gen, mc_cap);
  requirePositiveWeightTotal(spec_.data_path, "pass_reco", data_reco,
                             data_capped_ ? "max_data_events" : nullptr);
  if (root_) {
    sayNegativeWeights(spec_.mc_path, mc_reco.negative > 0 ? "pass_reco" : "pass_gen",
                       mc_reco.negative > 0 ? mc_reco : mc_gen);
    sayNegativeWeights(spec_.data_path, "pass_reco", data_reco);
  }
  signed_weights_ = mc_reco.negative > 0 || mc_gen.negative > 0 || data_reco.negative > 0;
  fixEventWeights();
  checkDrawnWeights();
  // The weights every step trains on brought to a mean of about 1 per event: a loss in
  // cross-section units (weights of 1e-8, Σw = σ) falls below the optimisers' epsilon and
  // nothing is learnt, and tiny weights underflow as floats. One power of two per chain, from
  // the simulation's weights (the replica's draw included) over the events passing reco: weights
  // already near a mean of 1 (within a factor of √2: unit weights, Poisson draws) train bit for
  // bit as before, every step of a chain at the same scale.
  double w_sum = 0;
  for (int64_t r : mc_reco_rows_) w_sum += w_mc_[static_cast<size_t>(r)];
  weight_scale_ =
      w_sum > 0
          ? std::exp2(std::round(std::log2(static_cast<double>(mc_reco_rows_.size()) / w_sum)))
          : 1.0;
  member_seed_ = memberSeed(spec_.campaign_seed, spec_.replica, spec_.member);
  stats_ = chainFeatureStats(cfg_, in_.init.get(),
                             {{&mc_.reco, &mc_.pass_reco}, {&mc_.gen, &mc_.pass_gen}});
  pet_cfg_ = in_.init ? in_.init->meta.config
                      : applyPetOverrides(petPreset(cfg_.preset), cfg_.model, "chain config");
  checkWarmFrom();
  requireChainFormat(out_);
  if (root_) fs::create_directories(stateDir(out_));
  read_inputs_ = checkInputFingerprint(out_, spec_, in_, root_);
  st_ = loadProgress(out_, spec_);
}

void ChainRun::fixEventWeights() {
  const auto n_mc = static_cast<size_t>(n_mc_), n_data = static_cast<size_t>(n_data_);
  const std::vector<double> boot_mc =
      mc_boot_ ? mcBootstrapWeights(n_mc, spec_.campaign_seed, spec_.replica)
               : std::vector<double>(n_mc, 1.0);
  const std::vector<double> boot_data =
      mc_boot_ ? std::vector<double>(n_data, 1.0)
               : bootstrapWeights(n_data, spec_.campaign_seed, spec_.replica);
  w_mc_.resize(n_mc);
  w_data_.resize(n_data);
  for (size_t i = 0; i < n_mc; ++i) w_mc_[i] = mc_.weight(static_cast<int64_t>(i)) * boot_mc[i];
  for (size_t i = 0; i < n_data; ++i)
    w_data_[i] = dat_.weight(static_cast<int64_t>(i)) * boot_data[i];
}

// The weights the chain trains on, the replica's bootstrap draw included: a draw that leaves a
// sample no weight is refused here, naming the replica and why (it failed as "the chain
// diverged" in the first step, exit 1, and a campaign retried it, though the draw depends on
// the seed and replica alone and repeats); a sample whose effective size is a handful of events
// is said (the unfolding rests on them).
void ChainRun::checkDrawnWeights() const {
  const auto sums = [](const std::vector<double>& w, const std::vector<int64_t>& rows) {
    InputWeights s;
    for (int64_t r : rows) s.add(w[static_cast<size_t>(r)]);
    return s;
  };
  // The events a file weighs 0 (its own weights), apart from those the draw gives 0.
  const auto fileZeros = [](const data::UnfoldArrays& u, const std::vector<int64_t>& rows) {
    int64_t n = 0;
    for (int64_t r : rows) n += u.weight(r) == 0;
    return n;
  };
  struct Sample {
    const std::string& path;
    const char* flags;
    InputWeights w;
    int64_t file_zero;
    bool drawn, said;  // said: warned of when few (the simulation once, at reco)
  };
  const Sample samples[] = {{spec_.mc_path, "pass_reco", sums(w_mc_, mc_reco_rows_),
                             fileZeros(mc_, mc_reco_rows_), mc_boot_, true},
                            {spec_.mc_path, "pass_gen", sums(w_mc_, mc_gen_rows_),
                             fileZeros(mc_, mc_gen_rows_), mc_boot_, false},
                            {spec_.data_path, "pass_reco", sums(w_data_, data_rows_),
                             fileZeros(dat_, data_rows_), !mc_boot_ && spec_.replica > 0, true}};
  for (const Sample& s : samples) {
    if (s.drawn && !(s.w.sum > 0))
      throw InputError(fmt::format(
          "{}: bootstrap replica {} (campaign seed {}) draws each of the {} events passing '{}' "
          "Poisson(1) times and leaves them a total weight of {:.6g} ({} drawn 0 times{}): too "
          "few events to bootstrap (with n events a draw leaves all out with probability e^-n); "
          "use a larger sample (the same draw repeats on every attempt)",
          s.path, spec_.replica, spec_.campaign_seed, s.w.events - s.file_zero, s.flags, s.w.sum,
          s.w.zero - s.file_zero,
          s.file_zero > 0 ? fmt::format(", and {} more weighted 0 in the file", s.file_zero)
                          : std::string()));
    // Few effective events: a handful of weights carry the sample (one huge weight, all but a
    // few zero, a tiny sample).
    const double ess = s.w.ess();
    constexpr double kFewEffectiveEvents = 20;
    if (!root_ || !s.said) continue;
    if (ess < kFewEffectiveEvents && ess < static_cast<double>(s.w.events))
      logWarn(
          "{}: the {} events passing '{}' weigh as {:.1f} effective events ((Σw)²/Σw²{}): the "
          "unfolding rests on these few{}",
          s.path, s.w.events, s.flags, ess,
          s.drawn ? fmt::format(", replica {}'s draw included", spec_.replica) : "",
          s.drawn ? "" : "; check the file's weights");
    else if (ess < kFewEffectiveEvents)
      logWarn("{}: {} event(s) pass '{}': the unfolding rests on these few", s.path, s.w.events,
              s.flags);
  }
}

// Before anything is written; later steps' models are checked as they are read.
void ChainRun::checkWarmFrom() const {
  if (spec_.warm_from.empty()) return;
  for (const char* m : {"pet", "mlp"}) {
    const bool needed = std::string(m) == "pet" ? use_pet_ : use_mlp_;
    if (needed && !checkpointExists(stepModelsDir(spec_.warm_from, 0, 1) + "/" + m))
      throw NeedLostError(spec_.warm_from + ": holds no kept " + m +
                          " models to warm-start from (not run with keep_models, not finished, "
                          "or removed since); rerun it, or start this chain cold (no warm_from; a "
                          "campaign variation: no 'warm_start')");
  }
}

void ChainRun::prepareClassifierInputs() {
  if (use_mlp_) {
    obs_mc_reco_ = observableColumns(mc_.reco, mc_.reco_subs, cfg_.observables);
    obs_mc_gen_ = observableColumns(mc_.gen, mc_.gen_subs, cfg_.observables);
    obs_data_reco_ = observableColumns(dat_.reco, dat_.reco_subs, cfg_.observables);
  }
  if (!use_pet_) return;
  // Step 1 trains PET on simulated and real reco jets together: files written with different
  // particle slots are brought to the larger count by padding the other (PET is padding
  // invariant: the same model and weights as with equal slots).
  const int64_t reco_slots = std::max(mc_.reco.P, dat_.reco.P);
  std::optional<data::JetArrays> mc_widened, data_widened;
  if (mc_.reco.P < reco_slots) mc_widened = mc_.reco.widened(reco_slots);
  if (dat_.reco.P < reco_slots) data_widened = dat_.reco.widened(reco_slots);
  // Standardised once per chain (per worker, when it keeps them).
  auto standardised = [&](const std::string& level, const data::JetArrays& jets) {
    return in_.standardised ? in_.standardised(level, jets, stats_)
                            : placeStandardised(jets, stats_, in_.device.device);
  };
  pet_mc_reco_ = standardised("mc.reco", mc_widened ? *mc_widened : mc_.reco);
  pet_mc_gen_ = standardised("mc.gen", mc_.gen);
  pet_data_reco_ = standardised("data.reco", data_widened ? *data_widened : dat_.reco);
}

ChainRun::Step ChainRun::stepOf(int k) const {
  Step s;
  s.k = k;
  s.iter = k / 2;
  s.step = k % 2 + 1;
  s.tag = "iteration " + std::to_string(s.iter) + " step " + std::to_string(s.step);
  s.model_dir = stateDir(out_) + "/model_step" + std::to_string(s.step);
  s.mlp_dir = stateDir(out_) + "/mlp_step" + std::to_string(s.step);
  // A varied chain starts each step from the chain it varies (the same iteration and step).
  if (!spec_.warm_from.empty()) s.warm_dir = stepModelsDir(spec_.warm_from, s.iter, s.step);
  return s;
}

// Step ensembling: member 0 is the chain's own (one member: exactly the plain chain); member
// e > 0 has seeds of its own and state and models under names ending _e<e>.
ChainRun::Member ChainRun::memberOf(const Step& s, int e) const {
  Member m;
  m.e = e;
  m.sfx = e == 0 ? std::string() : "_e" + std::to_string(e);
  m.seed = e == 0 ? member_seed_
                  : deriveSeed({member_seed_, kPurposeStepEnsemble, static_cast<uint64_t>(e)});
  m.fit_seed = deriveSeed({m.seed, kPurposeFit, static_cast<uint64_t>(s.k)});
  m.tag = cfg_.step_ensemble == 1 ? s.tag : s.tag + " ensemble member " + std::to_string(e);
  return m;
}

void ChainRun::runStep(const Step& s) {
  json record = {{"iteration", s.iter}, {"step", s.step}, {"classifier", cfg_.classifier}};
  if (!s.warm_dir.empty()) record["warm_from"] = s.warm_dir;
  const std::vector<double> push = st_.weights.push.empty()
                                       ? std::vector<double>(static_cast<size_t>(n_mc_), 1.0)
                                       : st_.weights.push.back();
  const TrainingSet train = trainingSet(s, push);
  record["class_balance"] = train.class_balance;
  if (train.weight_scale != 1) record["weight_scale"] = train.weight_scale;
  // The members fit on the same training set; their probabilities are averaged before the
  // weights are pushed.
  const int n_ens = cfg_.step_ensemble;
  std::deque<Fitted> fitted;  // in place: a classifier is not moved once made
  json ensemble_records = json::array();
  for (int e = 0; e < n_ens; ++e) {
    json& rec = n_ens == 1 ? record : ensemble_records.emplace_back(json::object());
    fitMember(s, train, e, rec, fitted.emplace_back());
  }
  std::vector<float> prob = std::move(fitted[0].prob);
  if (n_ens > 1) {
    for (size_t i = 0; i < prob.size(); ++i) {
      double sum = prob[i];
      for (int e = 1; e < n_ens; ++e) sum += fitted[static_cast<size_t>(e)].prob[i];
      prob[i] = static_cast<float>(sum / n_ens);
    }
    record["ensemble"] = ensemble_records;
  }
  reweight(s, prob, push, record);
  // Rank 0 writes the step; a write that fails there ends every rank (none waits for it).
  onRootAgreed([&] { commit(s, fitted); });
  const bool stop = ctx_ != nullptr ? ctx_->anyTrue(stopRequested()) : stopRequested();
  if (ctx_ != nullptr) ctx_->barrier();  // the next iteration reads model_dir
  if (stop && s.k + 1 < 2 * spec_.iterations) {
    // Agreed by every rank: rank 0 says it, once.
    if (!root_) throw ReportedByAnotherRank(kExitInterrupted);
    throw InterruptedError(
        out_ + ": stopped after " + s.tag +
        "; state saved: run again (a campaign task: its next attempt), it continues from there");
  }
}

ChainRun::TrainingSet ChainRun::trainingSet(const Step& s, const std::vector<double>& push) const {
  if (s.step == 1) {
    // MC reco (label 0, the push times the MC weights) against data reco (label 1).
    std::vector<double> w0(static_cast<size_t>(n_mc_));
    for (size_t i = 0; i < w0.size(); ++i) w0[i] = push[i] * w_mc_[i];
    return twoParts({pet_mc_reco_.get(), &mc_reco_rows_, &w0, &obs_mc_reco_},
                    {pet_data_reco_.get(), &data_rows_, &w_data_, &obs_data_reco_});
  }
  // MC gen (label 0, the MC weights) against MC gen pulled (label 1).
  const std::vector<double>& pull = st_.weights.pull.back();
  std::vector<double> w1(static_cast<size_t>(n_mc_));
  for (size_t i = 0; i < w1.size(); ++i) w1[i] = pull[i] * w_mc_[i];
  return twoParts({pet_mc_gen_.get(), &mc_gen_rows_, &w_mc_, &obs_mc_gen_},
                  {pet_mc_gen_.get(), &mc_gen_rows_, &w1, &obs_mc_gen_});
}

ChainRun::TrainingSet ChainRun::twoParts(const Part& given0, const Part& given1) const {
  // The classes balanced: label 1's weights scaled to label 0's total over the events trained
  // on. The classifier then learns the density ratio itself rather than that times the
  // classes' prior (step 1: Σ data / Σ MC), which saturates f where the samples' sizes differ
  // (20 times more data than MC: an effective sample size of 10% of the events, against 80%
  // with equal sizes), and f/(1-f) is the ratio the weights need up to their normalisation.
  const auto total = [](const Part& p) {
    double sum = 0;
    for (int64_t r : *p.rows) sum += (*p.w)[static_cast<size_t>(r)];
    return sum;
  };
  const double t0 = total(given0), t1 = total(given1);
  if (!(t0 > 0 && t1 > 0 && std::isfinite(t0) && std::isfinite(t1)))
    throw Error(out_ + ": the events of a step's two classes weigh " + std::to_string(t0) +
                " and " + std::to_string(t1) + " in total" +
                (signed_weights_ ? " (the input files' weights have negative ones: where they "
                                   "outweigh the others the reweighting runs away)"
                                 : "") +
                "; the chain diverged");
  const double scale = weight_scale_;  // (prepare: one per chain)
  std::vector<double> w0, w1 = *given1.w;
  Part p0 = given0, p1 = given1;
  if (scale != 1) {
    w0 = *given0.w;
    for (double& x : w0) x *= scale;
    p0.w = &w0;
  }
  for (double& x : w1) x *= t0 / t1 * scale;
  p1.w = &w1;
  const size_t n_obs = cfg_.observables.size();
  TrainingSet t;
  t.class_balance = t0 / t1;
  t.weight_scale = scale;
  if (use_pet_) t.pet = labelledSet({{p0.pet, p0.rows, 0, p0.w}, {p1.pet, p1.rows, 1, p1.w}});
  labelsAndWeights(*p0.rows, *p0.w, *p1.rows, *p1.w, t.labels, t.weights);
  if (use_mlp_) {
    appendRows(*p0.obs, n_obs, *p0.rows, t.obs);
    appendRows(*p1.obs, n_obs, *p1.rows, t.obs);
  }
  return t;
}

template <class Read>
auto ChainRun::readWarmModel(const Step& s, const std::string& which, const std::string& sfx,
                             Read&& read) const {
  const std::string dir = s.warm_dir + "/" + which + sfx;
  if (!checkpointExists(dir))
    throw NeedLostError(spec_.warm_from + ": holds no " + which + sfx + " model of " + s.tag +
                        " to warm-start from (it was not run with keep_models, or did not "
                        "finish); rerun that chain, or start this one cold (no warm_from; a "
                        "campaign variation: no 'warm_start')");
  try {
    return read(dir);
  } catch (const NeedLostError&) {
    throw;
  } catch (const InputError& e) {
    throw NeedLostError(spec_.warm_from + ": its " + which + sfx + " model of " + s.tag +
                        " to warm-start from cannot be read (" + e.what() +
                        "); rerun that chain, or start this one cold (no warm_from; a campaign "
                        "variation: no 'warm_start')");
  }
}

void ChainRun::fitMember(const Step& s, const TrainingSet& train, int e, json& rec,
                         Fitted& f) const {
  const Member m = memberOf(s, e);
  std::vector<float> train_offset, eval_offset;  // the MLP's logits
  if (use_mlp_) {
    const bool kept_fit = fitMlp(s, m, train, rec, f.mlp);
    // Kept with the fit until the step commits, where a PET fit follows: resumed under another
    // thread count or on another CPU (whose kernels round the logits otherwise in the last
    // bits), it starts from the offsets it was started with, and its state's check of its
    // data holds (before: "written for different training data", and a campaign task failed
    // for good). Read only beside the kept fit they were computed from; a file that does not
    // read is computed again (it is a copy, not a record).
    const std::string kept = logitOffsetsFile(out_, s.k, m.sfx);
    const std::vector<float>& eval_obs = s.step == 1 ? obs_mc_reco_ : obs_mc_gen_;
    std::optional<LogitOffsets> read;
    if (use_pet_ && kept_fit) {
      try {
        read = readLogitOffsets(kept);
      } catch (const Error& e) {
        logWarn("{}: {}; the offsets are computed again", m.tag, e.what());
      }
    }
    const size_t obs_width = static_cast<size_t>(cfg_.observables.size());
    if (read && obs_width > 0 && read->train.size() * obs_width == train.obs.size() &&
        read->eval.size() * obs_width == eval_obs.size()) {
      train_offset = std::move(read->train);
      eval_offset = std::move(read->eval);
    } else {
      train_offset = f.mlp->logits(train.obs);
      eval_offset = f.mlp->logits(eval_obs);
      if (use_pet_ && root_) {
        try {  // a copy: a failure to keep it costs a resume its bits, not the chain
          writeLogitOffsets(kept, {train_offset, eval_offset});
        } catch (const Error& e) {
          logWarn("{}: {}; a resume of this step computes them again", m.tag, e.what());
        }
      }
    }
  }
  f.prob =
      use_pet_ ? fitPet(s, m, train, train_offset, eval_offset, rec, f.pet) : sigmoid(eval_offset);
}

// Iteration 0 from its seed, later ones from iteration i-1's; fitted with the PET fit's seed,
// so both validate on the same rows. The fit is kept under state/ until the step commits, so
// that a resumed PET fit sees the same logit offsets.
bool ChainRun::fitMlp(const Step& s, const Member& m, const TrainingSet& train, json& rec,
                      std::optional<ObservableClassifier>& mlp) const {
  const std::string fitted_dir = stateDir(out_) + "/mlp_fit_step" + std::to_string(s.k) + m.sfx;
  const bool fitted = checkpointExists(fitted_dir);
  if (ctx_ != nullptr) ctx_->barrier();        // every rank looked before rank 0 may write it
  const torch::Device on = in_.device.device;  // the task's device, as PET's
  if (fitted) {
    mlp.emplace(ObservableClassifier::load(fitted_dir, cfg_.observables, on));
    return true;
  }
  if (!s.warm_dir.empty())
    mlp.emplace(readWarmModel(s, "mlp", m.sfx, [&](const std::string& dir) {
      return ObservableClassifier::load(dir, cfg_.observables, on);
    }));
  else if (s.iter == 0)
    mlp.emplace(cfg_.observables, cfg_.mlp.hidden,
                deriveSeed({m.seed, kPurposeMlpInit, static_cast<uint64_t>(s.step)}), on);
  else
    mlp.emplace(ObservableClassifier::load(s.mlp_dir + m.sfx, cfg_.observables, on));
  MlpFitOptions mo;
  mo.epochs = cfg_.mlp.epochs;
  mo.patience = cfg_.mlp.patience;
  mo.batch_size = cfg_.mlp.batch_size;
  mo.lr = cfg_.mlp.lr;
  mo.weight_decay = cfg_.mlp.weight_decay;
  mo.val_fraction = cfg_.val_fraction;
  mo.seed = m.fit_seed;
  mo.label = m.tag + " mlp";
  try {
    rec["mlp_fit"] = toJson(mlp->fit(train.obs, train.labels, train.weights, mo));
  } catch (const InterruptedError&) {
    if (!root_) throw ReportedByAnotherRank(kExitInterrupted);  // rank 0 says it, once
    throw;
  }
  if (root_) mlp->save(fitted_dir);
  return false;
}

// Iteration 0 from the foundation (or scratch), later ones from iteration i-1's model (a
// varied chain: from warm_from's). Boosted on the MLP from scratch, the output layer starts at
// 0 in every step, so the fit starts exactly at the MLP and keeps an epoch only if it beats it
// on validation; warm, it keeps the varied-from chain's correction (its starting point still
// competing for the best epoch). Returns the probabilities on the evaluation set.
std::vector<float> ChainRun::fitPet(const Step& s, const Member& m, const TrainingSet& train,
                                    const std::vector<float>& train_offset,
                                    const std::vector<float>& eval_offset, json& rec,
                                    std::optional<PetClassifier>& pet) const {
  PetClassifier& clf = pet.emplace(
      pet_cfg_, deriveSeed({m.seed, kPurposeInit, static_cast<uint64_t>(s.step)}), stats_);
  if (!s.warm_dir.empty()) {
    readWarmModel(s, "pet", m.sfx, [&](const std::string& dir) {
      Checkpoint from = readCheckpoint(dir);
      loadModelTensors(clf.model(), from.tensors, "model.", dir);
      return 0;
    });
  } else if (s.iter == 0) {
    if (in_.init) {
      WarmStartReport rep = warmStart(clf.model(), *in_.init);
      logInfo("{}: warm start from {}: {}", m.tag, spec_.init, rep.summary());
      rec["warm_start_skipped"] = rep.skipped;
    }
  } else {
    Checkpoint prev = readCheckpoint(s.model_dir + m.sfx);
    loadModelTensors(clf.model(), prev.tensors, "model.", s.model_dir + m.sfx);
  }
  if (use_mlp_ && s.warm_dir.empty()) clf.zeroOutputLayer();
  ClassifierFitOptions fo = stepFitOptions(cfg_, m.fit_seed, m.tag, in_.device.device);
  fo.state_dir = stateDir(out_) + "/train_step" + std::to_string(s.k) + m.sfx;
  fo.resume = true;
  fo.validate_initial = use_mlp_;
  const FitResult fit = clf.fitStandardised(train.pet, nullptr, fo, ctx_, train_offset);
  rec["fit"] = toJson(fit);
  // The trainer said it with its early stop (before: the same words twice).
  if (!fit.early_stopped) logInfo("{}: {}", m.tag, bestEpochText(fit));
  const std::shared_ptr<const JetTensors>& eval_set = s.step == 1 ? pet_mc_reco_ : pet_mc_gen_;
  return clf.predictStandardised(*eval_set, 1024, eval_offset);
}

// The likelihood ratio sanitised and normalised on the step's passing events; step 1 pulls
// (push times ratio), step 2 pushes; every rank must hold the same weights. The ratio's mean
// is weighted as its classifier saw the sample it reweights (label 0: push x MC weights in step
// 1, the MC weights in step 2): so the passing events keep their total weight against those
// failing the step's selection (weight 1). A plain mean moved that share whenever the push
// or the MC weights vary (from iteration 1; MC-bootstrap replicas), by several percent.
// ess / ess_fraction: the effective sample size of the weights times the MC weights over the
// events the step reweights (its passing ones), and its share of them.
void ChainRun::reweight(const Step& s, const std::vector<float>& prob,
                        const std::vector<double>& push, json& record) {
  std::vector<double> ratio = likelihoodRatio(prob);
  const std::vector<uint8_t>& pass = s.step == 1 ? mc_pass_reco_ : mc_pass_gen_;
  std::vector<double> seen = w_mc_;
  if (s.step == 1)
    for (size_t i = 0; i < seen.size(); ++i) seen[i] *= push[i];
  const WeightReport rep = sanitizeAndNormalise(ratio, pass, cfg_.limits, s.tag, &seen);
  std::vector<double> w = std::move(ratio);
  if (s.step == 1)
    for (size_t i = 0; i < w.size(); ++i) w[i] *= push[i];
  normaliseGlobal(w, s.tag);
  if (ctx_ != nullptr && ctx_->worldSize() > 1) requireRanksAgree(*ctx_, w, s.tag);
  std::vector<double> histogrammed(w.size());
  for (size_t i = 0; i < w.size(); ++i) histogrammed[i] = w[i] * w_mc_[i];
  const double ess = effectiveSampleSize(histogrammed, pass);
  const int64_t events = pass.empty() ? n_mc_
                                      : static_cast<int64_t>(std::count_if(
                                            pass.begin(), pass.end(), [](uint8_t p) { return p; }));
  record["reweighting"] = rep;
  record["ess"] = ess;
  record["ess_fraction"] = events > 0 ? ess / static_cast<double>(events) : 0.0;
  logInfo("{}: ESS {:.0f} of {} passing events ({} non-finite, {} clipped)", s.tag, ess, events,
          rep.non_finite, rep.clipped);
  (s.step == 1 ? st_.weights.pull : st_.weights.push).push_back(std::move(w));
  st_.history.push_back(std::move(record));
}

// The models for the next iteration (and, with keep_models, for the chains that vary this
// one, kept after it completes), then the progress record; the step's fit states go.
void ChainRun::commit(const Step& s, const std::deque<Fitted>& fitted) {
  st_.done_steps = s.k + 1;
  if (!root_) return;
  for (int e = 0; e < cfg_.step_ensemble; ++e) {
    const Fitted& f = fitted[static_cast<size_t>(e)];
    const std::string sfx = e == 0 ? std::string() : "_e" + std::to_string(e);
    if (f.pet) f.pet->save(s.model_dir + sfx);
    if (f.mlp) f.mlp->save(s.mlp_dir + sfx);
    if (spec_.keep_models) {
      if (f.pet) f.pet->save(stepModelsDir(out_, s.iter, s.step) + "/pet" + sfx);
      if (f.mlp) f.mlp->save(stepModelsDir(out_, s.iter, s.step) + "/mlp" + sfx);
    }
  }
  saveProgress(out_, spec_, st_);
  std::error_code ec;
  for (int e = 0; e < cfg_.step_ensemble; ++e) {
    const std::string sfx = e == 0 ? std::string() : "_e" + std::to_string(e);
    fs::remove_all(stateDir(out_) + "/train_step" + std::to_string(s.k) + sfx, ec);
    fs::remove_all(stateDir(out_) + "/mlp_fit_step" + std::to_string(s.k) + sfx, ec);
    fs::remove(logitOffsetsFile(out_, s.k, sfx), ec);
  }
}

// Weights, histograms, history; result.json last (what marks the chain done); then state/
// goes. Rank 0 writes; the others return once it has, or end with an error when it failed.
void ChainRun::writeOutputs() {
  onRootAgreed([&] {
    if (root_) writeOutputsOnRoot();
  });
}

void ChainRun::writeOutputsOnRoot() {
  json meta = {{"campaign_seed", std::to_string(spec_.campaign_seed)},
               {"replica", spec_.replica},
               {"member", spec_.member},
               {"member_seed", std::to_string(member_seed_)},
               {"init", spec_.init},
               {"init_sha256", in_.init_sha256},
               {"mc", spec_.mc_path},
               {"data", spec_.data_path},
               {"config", chainConfigToJson(cfg_).dump()},
               {"iterations", spec_.iterations}};
  if (!spec_.variation.is_null()) meta["variation"] = spec_.variation.dump();
  // The seed of the Poisson weights this chain drew, and of which sample: none for replica 0
  // (before: a data seed recorded there, and for MC-bootstrap chains, where no draw used it).
  if (mc_boot_) {
    meta["bootstrap"] = "mc";
    meta["mc_bootstrap_seed"] = std::to_string(mcBootstrapSeed(spec_.campaign_seed, spec_.replica));
  } else if (spec_.replica > 0) {
    meta["bootstrap_seed"] = std::to_string(bootstrapSeed(spec_.campaign_seed, spec_.replica));
  }
  ChainWeights& weights = st_.weights;
  const std::vector<double>& push = weights.push.back();
  weights.final.resize(static_cast<size_t>(n_mc_));
  for (size_t i = 0; i < weights.final.size(); ++i) weights.final[i] = push[i] * w_mc_[i];
  writeChainWeights(out_, weights, meta, cfg_.iteration_weights);
  const std::vector<float> subs =
      mc_.gen_subs.empty() ? data::computeObservables(mc_.gen) : mc_.gen_subs;
  ChainHistograms h;
  const std::vector<std::vector<double>> edges = chainBinning(cfg_);
  h.unfolded = histogramObservables(subs, weights.final, mc_pass_gen_, edges);
  h.prior = histogramObservables(subs, w_mc_, mc_pass_gen_, edges);
  for (const std::vector<double>& p : weights.push) {
    std::vector<double> w(p.size());
    for (size_t i = 0; i < w.size(); ++i) w[i] = p[i] * w_mc_[i];
    h.iterations.push_back(histogramObservables(subs, w, mc_pass_gen_, edges));
  }
  writeChainHistograms(out_, h, meta);
  writeJsonAtomic(out_ + "/" + kChainHistoryFile,
                  {{"spec", chainSpecToJson(spec_)}, {"steps", st_.history}});
  json result = chainSpecToJson(spec_);
  result["status"] = "done";
  result["init_sha256"] = in_.init_sha256;
  // The build that finished the chain, and the others that ran its earlier steps (a resume by
  // another build).
  result["build"] = buildInfoJson();
  json earlier = json::array();
  for (const json& b : st_.builds)
    if (b != result["build"]) earlier.push_back(b);
  if (!earlier.empty()) result["earlier_builds"] = earlier;
  result["chain_format"] = kChainFormat;
  // Which version of each file the chain read (size, modification time): chains of one band
  // must have read the same (aggregate compares them; the paths alone do not tell).
  for (const char* k : {"mc", "data"}) {
    json file = read_inputs_.at(k);
    file.erase("path");
    result["inputs"][k] = file;
  }
  result["mc_events"] = n_mc_;
  result["data_events"] = n_data_;
  // The data weights the chain trained on (the file's times this replica's Poisson(1) draw):
  // their sum and how many events the draw left out, which say which resample it was.
  double data_sum = 0;
  int64_t data_zeros = 0;
  for (const double w : w_data_) {
    data_sum += w;
    data_zeros += w == 0 ? 1 : 0;
  }
  result["data_weights"] = {{"sum", data_sum}, {"zeros", data_zeros}};
  // Of the final weights over the events that fill the histograms (those passing the gen
  // selection; before: over every event, the failing ones' fixed weight 1 included).
  result["final_ess"] = effectiveSampleSize(weights.final, mc_pass_gen_);
  result["device"] = in_.device.toJson();
  // On a GPU: the process that trained the chain and the most memory its allocator held for
  // tensors since it started (a worker's earlier tasks included), to size tasks sharing a GPU,
  // and to see each task's process on it where nvidia-smi lists none (a container).
  if (in_.device.isCuda()) {
    const DeviceMemoryPeak peak = deviceMemoryPeak(in_.device.device);
    result["device"]["process"] = {
        {"pid", static_cast<int64_t>(::getpid())},
        {"peak_allocated_mb", static_cast<double>(peak.allocated) / 1048576.0}};
  }
  writeJsonAtomic(out_ + "/" + kChainResultFile, result);
  std::error_code ec;
  fs::remove_all(stateDir(out_), ec);
  if (ec) logWarn("could not remove {}: {}", stateDir(out_), ec.message());
}

}  // namespace

void runChain(const ChainSpec& spec, const ChainInputs& in, const std::string& out) {
  ChainRun(spec, in, out).run();
}

}  // namespace foldfarm::ensembles
