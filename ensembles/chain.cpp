#include "ensembles/chain.hpp"

#include <sys/stat.h>

#include <cmath>
#include <deque>
#include <filesystem>
#include <optional>

#include "core/base/error.hpp"
#include "core/base/hash.hpp"
#include "core/base/json_value.hpp"
#include "core/base/log.hpp"
#include "core/base/seed.hpp"
#include "core/base/stop_signal.hpp"
#include "core/data/observables.hpp"
#include "core/model/pet_config.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/device.hpp"
#include "core/train/observable_classifier.hpp"
#include "core/train/optim.hpp"
#include "core/train/parallel.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/seeds.hpp"

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
};

std::string stateDir(const std::string& out) {
  return out + "/state";
}

void saveProgress(const std::string& out, const ChainSpec& spec, const ChainState& st) {
  // Weights first, then progress.json (the commit point of a finished step).
  writeChainWeights(stateDir(out), st.weights, json::object());
  writeJsonAtomic(
      stateDir(out) + "/progress.json",
      {{"spec", chainSpecToJson(spec)}, {"done_steps", st.done_steps}, {"history", st.history}});
}

ChainState loadProgress(const std::string& out, const ChainSpec& spec) {
  ChainState st;
  const std::string p = stateDir(out) + "/progress.json";
  if (!fs::exists(p)) return st;
  json j = readJson(p);
  if (j.value("spec", json()) != chainSpecToJson(spec))
    throw InputError(out +
                     ": holds the state of a chain with different parameters; use another "
                     "output directory or remove " +
                     stateDir(out));
  st.done_steps = j.at("done_steps").get<int>();
  st.history = j.at("history");
  if (st.done_steps > 0) st.weights = readChainWeights(stateDir(out));
  logInfo("resuming chain after {} finished steps", st.done_steps);
  return st;
}

// What a chain's saved state depends on besides its parameters: its input files (path,
// size, modification time in ns) and the foundation checkpoint (hash of its meta.json).
// A file rewritten in place with the same size and time is not noticed.
json inputFingerprint(const ChainSpec& spec, const ChainInputs& in) {
  auto file = [](const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return json{{"path", path}, {"missing", true}};
    const long long mtime_ns =
        static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    return json{
        {"path", path}, {"size", static_cast<long long>(st.st_size)}, {"mtime_ns", mtime_ns}};
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
  if (fs::exists(path)) {
    const json then = readJson(path);
    for (const char* k : {"mc", "data"}) {
      if (then.value(k, json()) != now[k]) {
        const json& a = then.value(k, json::object());
        const json& b = now[k];
        throw InputError("this chain started on " + b.value("path", std::string("?")) + " (" +
                         std::to_string(a.value("size", -1LL)) +
                         " bytes), which has changed since (now " +
                         std::to_string(b.value("size", -1LL)) +
                         " bytes, modified later); restore the file or remove " + stateDir(out) +
                         " to start the chain over");
      }
    }
    if (then.value("init", std::string()) != now["init"].get<std::string>()) {
      throw InputError("this chain started from another foundation checkpoint than " + spec.init +
                       " holds now; restore it or remove " + stateDir(out) + " to start over");
    }
    return now;
  }
  if (root) writeJsonAtomic(path, now);
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
  return fo;
}

data::FeatureStats chainFeatureStats(const ChainConfig& c, const Checkpoint* init,
                                     const std::vector<const data::JetArrays*>& samples) {
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
    for (const data::JetArrays* a : samples)
      for (int64_t i = 0; i < a->n; ++i) {
        const double v = a->jet(i)[f];
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
      "classifier",      "observables",   "mlp",        "preset",
      "model",           "feature_stats", "epochs",     "patience",
      "val_fraction",    "batch_size",    "lr",         "lr_factor",
      "optimizer",       "weight_decay",  "max_weight", "max_mc_events",
      "max_data_events", "step_ensemble", "device",     "precision",
      "fixed_shapes",    "cuda_graphs"};
  return keys;
}

ChainConfig chainConfigFromJson(const json& j, const std::string& source) {
  if (!j.is_object()) throw InputError(source + ": chain config must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find(chainConfigKeys().begin(), chainConfigKeys().end(), it.key()) ==
        chainConfigKeys().end())
      throw InputError(source + ": unknown chain config key '" + it.key() + "'");
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
  if (c.cuda_graphs) c.fixed_shapes = true;  // graphs replay fixed shapes
  parseDeviceRequest(c.device, source + " device");
  if (c.precision != "fp32" && c.precision != "bf16")
    throw InputError(source + ": precision must be fp32 or bf16 (got '" + c.precision + "')");
  if (c.step_ensemble < 1 || c.step_ensemble > 64)
    throw InputError(source + ": step_ensemble must be from 1 to 64 (got " +
                     std::to_string(c.step_ensemble) + ")");
  if (c.epochs < 1 || c.batch_size < 1 || c.patience < 0)
    throw InputError(source + ": epochs and batch_size must be >= 1, patience >= 0");
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
  if (c.mlp.hidden.empty() || c.mlp.epochs < 1 || c.mlp.batch_size < 1 || c.mlp.patience < 0)
    throw InputError(source +
                     ": mlp needs at least one hidden layer, epochs and batch_size >= 1, "
                     "patience >= 0");
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
  // device: where, not what (result.json records the device used).
  return j;
}

ChainSpec chainSpecFromJson(const json& p) {
  const std::string src = "chain params";
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
  if (p.contains("config")) s.config = chainConfigFromJson(p.at("config"), src + " config");
  // With a foundation the model is the checkpoint's: size overrides would be ignored.
  if (s.init != "none" && !s.config.model.empty())
    throw InputError(src +
                     " config: 'model' size overrides apply with init none only (the "
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

void runChain(const ChainSpec& spec, const ChainInputs& in, const std::string& out) {
  const ChainConfig& cfg = spec.config;
  const data::UnfoldArrays& mc_all = *in.mc;
  const data::UnfoldArrays& data_all = *in.data;
  // Optional caps (demos, tests): the first rows.
  const data::UnfoldArrays mc = cfg.max_mc_events > 0 && cfg.max_mc_events < mc_all.n()
                                    ? mc_all.slice(0, cfg.max_mc_events)
                                    : mc_all;
  const data::UnfoldArrays dat = cfg.max_data_events > 0 && cfg.max_data_events < data_all.n()
                                     ? data_all.slice(0, cfg.max_data_events)
                                     : data_all;
  const int64_t n_mc = mc.n(), n_data = dat.n();
  const DeviceChoice& device = in.device;
  const std::vector<uint8_t> mc_pass_reco = passFlags(mc.pass_reco, n_mc);
  const std::vector<uint8_t> mc_pass_gen = passFlags(mc.pass_gen, n_mc);
  const std::vector<uint8_t> data_pass_reco = passFlags(dat.pass_reco, n_data);
  const std::vector<int64_t> mc_reco_rows = passingRows(mc_pass_reco);
  const std::vector<int64_t> mc_gen_rows = passingRows(mc_pass_gen);
  const std::vector<int64_t> data_rows = passingRows(data_pass_reco);
  if (mc_reco_rows.empty() || mc_gen_rows.empty() || data_rows.empty())
    throw InputError(spec.mc_path + " / " + spec.data_path + ": no event passes the selection");

  // Event weights: the files' own, times the replica's Poisson resample of the data (or, for
  // an MC-statistics replica, of the simulation).
  std::vector<double> w_mc(static_cast<size_t>(n_mc)), w_data(static_cast<size_t>(n_data));
  const bool mc_boot = spec.bootstrap == "mc";
  const std::vector<double> boot_mc =
      mc_boot ? mcBootstrapWeights(static_cast<size_t>(n_mc), spec.campaign_seed, spec.replica)
              : std::vector<double>(static_cast<size_t>(n_mc), 1.0);
  const std::vector<double> boot =
      mc_boot ? std::vector<double>(static_cast<size_t>(n_data), 1.0)
              : bootstrapWeights(static_cast<size_t>(n_data), spec.campaign_seed, spec.replica);
  for (int64_t i = 0; i < n_mc; ++i) w_mc[i] = mc.weight(i) * boot_mc[i];
  for (int64_t i = 0; i < n_data; ++i) w_data[i] = dat.weight(i) * boot[i];

  const uint64_t member_seed = memberSeed(spec.campaign_seed, spec.replica, spec.member);
  const data::FeatureStats stats = chainFeatureStats(cfg, in.init.get(), {&mc.reco, &mc.gen});
  PetConfig pet_cfg = in.init ? in.init->meta.config
                              : applyPetOverrides(petPreset(cfg.preset), cfg.model, "chain config");
  ParallelContext* ctx = in.ctx;
  const bool root = ctx == nullptr || ctx->isRoot();
  if (!spec.warm_from.empty()) {
    // Checked before anything is written; later steps' models are checked as they are read.
    for (const char* m : {"pet", "mlp"}) {
      const bool needed =
          std::string(m) == "pet" ? cfg.classifier != "mlp" : cfg.classifier != "pet";
      if (needed && !checkpointExists(stepModelsDir(spec.warm_from, 0, 1) + "/" + m))
        throw InputError(spec.warm_from + ": holds no kept " + m +
                         " models to warm-start from (the chain was not run with keep_models, or "
                         "has not finished); rerun it, or start this chain without warm_from");
    }
  }
  if (root) fs::create_directories(stateDir(out));
  const json read_inputs = checkInputFingerprint(out, spec, in, root);
  ChainState st = loadProgress(out, spec);

  const bool use_pet = cfg.classifier != "mlp";
  const bool use_mlp = cfg.classifier != "pet";
  // Step 1 trains PET on simulated and real reco jets together: files written with different
  // particle slots are brought to the larger count by padding the other (PET is padding
  // invariant: the same model and weights as with equal slots).
  const int64_t reco_slots = std::max(mc.reco.P, dat.reco.P);
  std::optional<data::JetArrays> mc_reco_widened, data_reco_widened;
  if (use_pet && mc.reco.P < reco_slots) mc_reco_widened = mc.reco.widened(reco_slots);
  if (use_pet && dat.reco.P < reco_slots) data_reco_widened = dat.reco.widened(reco_slots);
  const data::JetArrays& mc_reco_jets = mc_reco_widened ? *mc_reco_widened : mc.reco;
  const data::JetArrays& data_reco_jets = data_reco_widened ? *data_reco_widened : dat.reco;
  // Observable columns of each level, computed once (the MLP's inputs).
  std::vector<float> obs_mc_reco, obs_mc_gen, obs_data_reco;
  if (use_mlp) {
    obs_mc_reco = observableColumns(mc.reco, mc.reco_subs, cfg.observables);
    obs_mc_gen = observableColumns(mc.gen, mc.gen_subs, cfg.observables);
    obs_data_reco = observableColumns(dat.reco, dat.reco_subs, cfg.observables);
  }
  const size_t n_obs = cfg.observables.size();
  // PET's inputs standardised once per chain (per worker, when it keeps them), on its GPU
  // when they fit: each step's training set is cut from them.
  std::shared_ptr<const JetTensors> pet_mc_reco, pet_mc_gen, pet_data_reco;
  if (use_pet) {
    auto standardised = [&](const std::string& level, const data::JetArrays& jets) {
      return in.standardised ? in.standardised(level, jets, stats)
                             : placeStandardised(jets, stats, device.device);
    };
    pet_mc_reco = standardised("mc.reco", mc_reco_jets);
    pet_mc_gen = standardised("mc.gen", mc.gen);
    pet_data_reco = standardised("data.reco", data_reco_jets);
  }

  for (int k = st.done_steps; k < 2 * spec.iterations; ++k) {
    const int iter = k / 2, step = k % 2 + 1;
    const std::string tag = "iteration " + std::to_string(iter) + " step " + std::to_string(step);
    const std::string model_dir = stateDir(out) + "/model_step" + std::to_string(step);
    const std::string mlp_dir = stateDir(out) + "/mlp_step" + std::to_string(step);
    json step_record = {{"iteration", iter}, {"step", step}, {"classifier", cfg.classifier}};
    // 1. The training set of this step (events in the order of step1TrainingSet / step 2).
    const std::vector<double> push = st.weights.push.empty()
                                         ? std::vector<double>(static_cast<size_t>(n_mc), 1.0)
                                         : st.weights.push.back();
    // PET's set is cut from the standardised jets (the same tensors as standardising
    // step1TrainingSet's arrays); the MLP's from the observable columns.
    JetTensors train;
    std::vector<int64_t> train_labels;
    std::vector<float> train_weights;
    std::vector<float> train_obs;
    if (step == 1) {
      std::vector<double> w0(static_cast<size_t>(n_mc));
      for (int64_t i = 0; i < n_mc; ++i) w0[i] = push[i] * w_mc[i];
      if (use_pet)
        train = labelledSet({{pet_mc_reco.get(), &mc_reco_rows, 0, &w0},
                             {pet_data_reco.get(), &data_rows, 1, &w_data}});
      labelsAndWeights(mc_reco_rows, w0, data_rows, w_data, train_labels, train_weights);
      if (use_mlp) {
        appendRows(obs_mc_reco, n_obs, mc_reco_rows, train_obs);
        appendRows(obs_data_reco, n_obs, data_rows, train_obs);
      }
    } else {
      const std::vector<double>& pull = st.weights.pull.back();
      std::vector<double> w1(static_cast<size_t>(n_mc));
      for (int64_t i = 0; i < n_mc; ++i) w1[i] = pull[i] * w_mc[i];
      if (use_pet)
        train = labelledSet(
            {{pet_mc_gen.get(), &mc_gen_rows, 0, &w_mc}, {pet_mc_gen.get(), &mc_gen_rows, 1, &w1}});
      labelsAndWeights(mc_gen_rows, w_mc, mc_gen_rows, w1, train_labels, train_weights);
      if (use_mlp) {
        appendRows(obs_mc_gen, n_obs, mc_gen_rows, train_obs);
        appendRows(obs_mc_gen, n_obs, mc_gen_rows, train_obs);
      }
    }
    const std::shared_ptr<const JetTensors>& eval_set = step == 1 ? pet_mc_reco : pet_mc_gen;
    // A varied chain starts each step from the chain it varies (the same iteration and step).
    const std::string warm_dir =
        spec.warm_from.empty() ? std::string() : stepModelsDir(spec.warm_from, iter, step);
    if (!warm_dir.empty()) step_record["warm_from"] = warm_dir;
    // Step ensembling: E members fitted on the same training set, their classifiers averaged
    // before the weights are pushed. Member 0 is the chain's own (E = 1: exactly the plain
    // chain); member e > 0 has seeds of its own and state and models under names ending _e<e>.
    const int n_ens = cfg.step_ensemble;
    std::deque<std::optional<ObservableClassifier>> mlps;
    std::deque<std::optional<PetClassifier>> pets;
    std::vector<std::vector<float>> probs;
    json ensemble_records = json::array();
    for (int e = 0; e < n_ens; ++e) {
      const std::string sfx = e == 0 ? std::string() : "_e" + std::to_string(e);
      const uint64_t seed_e =
          e == 0 ? member_seed
                 : deriveSeed({member_seed, kPurposeStepEnsemble, static_cast<uint64_t>(e)});
      json& rec = n_ens == 1 ? step_record : ensemble_records.emplace_back(json::object());
      const uint64_t fit_seed = deriveSeed({seed_e, kPurposeFit, static_cast<uint64_t>(k)});
      const std::string etag = n_ens == 1 ? tag : tag + " ensemble member " + std::to_string(e);
      auto warmModel = [&](const std::string& which) {
        const std::string dir = warm_dir + "/" + which + sfx;
        if (!checkpointExists(dir))
          throw InputError(spec.warm_from + ": holds no " + which + sfx + " model of " + tag +
                           " to warm-start from (it was not run with keep_models, or did not "
                           "finish); rerun that chain, or start this one without warm_from");
        return dir;
      };

      // 2. The observable MLP (mlp, pet+mlp): iteration 0 from its seed, later ones from
      //    iteration i-1's; fitted with the PET fit's seed, so both validate on the same rows.
      //    Its fit is kept under state/ until the step commits, so that a resumed PET fit sees
      //    the same logit offsets.
      std::vector<float> train_offset, eval_offset;
      std::optional<ObservableClassifier>& mlp = mlps.emplace_back();
      if (use_mlp) {
        const std::string fitted_dir = stateDir(out) + "/mlp_fit_step" + std::to_string(k) + sfx;
        const bool fitted = checkpointExists(fitted_dir);
        if (ctx != nullptr) ctx->barrier();      // every rank looked before rank 0 may write it
        const torch::Device on = device.device;  // the task's device, as PET's
        if (fitted) {
          mlp.emplace(ObservableClassifier::load(fitted_dir, cfg.observables, on));
        } else {
          if (!warm_dir.empty())
            mlp.emplace(ObservableClassifier::load(warmModel("mlp"), cfg.observables, on));
          else if (iter == 0)
            mlp.emplace(cfg.observables, cfg.mlp.hidden,
                        deriveSeed({seed_e, kPurposeMlpInit, static_cast<uint64_t>(step)}), on);
          else
            mlp.emplace(ObservableClassifier::load(mlp_dir + sfx, cfg.observables, on));
          MlpFitOptions mo;
          mo.epochs = cfg.mlp.epochs;
          mo.patience = cfg.mlp.patience;
          mo.batch_size = cfg.mlp.batch_size;
          mo.lr = cfg.mlp.lr;
          mo.weight_decay = cfg.mlp.weight_decay;
          mo.val_fraction = cfg.val_fraction;
          mo.seed = fit_seed;
          mo.label = etag + " mlp";
          rec["mlp_fit"] = toJson(mlp->fit(train_obs, train_labels, train_weights, mo));
          if (root) mlp->save(fitted_dir);
        }
        train_offset = mlp->logits(train_obs);
        eval_offset = mlp->logits(step == 1 ? obs_mc_reco : obs_mc_gen);
      }

      // 3. PET (pet, pet+mlp): iteration 0 from the foundation (or scratch), later ones from
      //    i-1's model. Boosted on the MLP, its output layer starts at 0 in every step, so the
      //    fit starts exactly at the MLP and keeps an epoch only if it beats it on validation.
      std::vector<float>& prob = probs.emplace_back();
      std::optional<PetClassifier>& pet = pets.emplace_back();
      if (use_pet) {
        PetClassifier& clf = pet.emplace(
            pet_cfg, deriveSeed({seed_e, kPurposeInit, static_cast<uint64_t>(step)}), stats);
        if (!warm_dir.empty()) {
          const std::string dir = warmModel("pet");
          Checkpoint from = readCheckpoint(dir);
          loadModelTensors(clf.model(), from.tensors, "model.", dir);
        } else if (iter == 0) {
          if (in.init) {
            WarmStartReport rep = warmStart(clf.model(), *in.init);
            logInfo("{}: warm start from {}: {}", etag, spec.init, rep.summary());
            rec["warm_start_skipped"] = rep.skipped;
          }
        } else {
          Checkpoint prev = readCheckpoint(model_dir + sfx);
          loadModelTensors(clf.model(), prev.tensors, "model.", model_dir + sfx);
        }
        // Boosted from scratch, PET's correction starts at 0; warm, it keeps the varied-from
        // chain's correction (its starting point still competes for the best epoch).
        if (use_mlp && warm_dir.empty()) clf.zeroOutputLayer();
        ClassifierFitOptions fo = stepFitOptions(cfg, fit_seed, etag, device.device);
        fo.state_dir = stateDir(out) + "/train_step" + std::to_string(k) + sfx;
        fo.resume = true;
        fo.validate_initial = use_mlp;
        FitResult fit = clf.fitStandardised(train, nullptr, fo, ctx, train_offset);
        rec["fit"] = toJson(fit);
        logInfo("{}: best epoch {} val loss {:.5f}", etag, fit.best_epoch, fit.best_val_loss);
        prob = clf.predictStandardised(*eval_set, 1024, eval_offset);
      } else {
        prob.resize(eval_offset.size());
        for (size_t i = 0; i < prob.size(); ++i)
          prob[i] =
              static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(eval_offset[i]))));
      }
    }
    std::vector<float> prob = std::move(probs[0]);
    if (n_ens > 1) {
      // The ensemble's classifier: the mean of the members' probabilities.
      for (size_t i = 0; i < prob.size(); ++i) {
        double sum = 0;
        for (int e = 0; e < n_ens; ++e) sum += e == 0 ? prob[i] : probs[e][i];
        prob[i] = static_cast<float>(sum / n_ens);
      }
      step_record["ensemble"] = ensemble_records;
    }

    // 4. Reweight.
    std::vector<double> ratio = likelihoodRatio(prob);
    WeightReport rep =
        sanitizeAndNormalise(ratio, step == 1 ? mc_pass_reco : mc_pass_gen, cfg.limits, tag);
    std::vector<double> w = ratio;
    if (step == 1)
      for (int64_t i = 0; i < n_mc; ++i) w[i] = push[i] * ratio[i];
    const double ess = normaliseGlobal(w, tag);
    if (ctx != nullptr && ctx->worldSize() > 1) requireRanksAgree(*ctx, w, tag);
    step_record["reweighting"] = rep;
    step_record["ess"] = ess;
    step_record["ess_fraction"] = ess / static_cast<double>(n_mc);
    logInfo("{}: ESS {:.0f} of {} ({} non-finite, {} clipped)", tag, ess, n_mc, rep.non_finite,
            rep.clipped);
    (step == 1 ? st.weights.pull : st.weights.push).push_back(std::move(w));
    st.history.push_back(step_record);

    // 5. Commit the step: the models for the next iteration, then the progress record;
    //    the step's fit states go.
    st.done_steps = k + 1;
    if (root) {
      for (int e = 0; e < n_ens; ++e) {
        const std::string sfx = e == 0 ? std::string() : "_e" + std::to_string(e);
        if (pets[e]) pets[e]->save(model_dir + sfx);
        if (mlps[e]) mlps[e]->save(mlp_dir + sfx);
        if (spec.keep_models) {
          // Kept after the chain completes: the chains that vary this one start from them.
          if (pets[e]) pets[e]->save(stepModelsDir(out, iter, step) + "/pet" + sfx);
          if (mlps[e]) mlps[e]->save(stepModelsDir(out, iter, step) + "/mlp" + sfx);
        }
      }
      saveProgress(out, spec, st);
      std::error_code ec;
      for (int e = 0; e < n_ens; ++e) {
        const std::string sfx = e == 0 ? std::string() : "_e" + std::to_string(e);
        fs::remove_all(stateDir(out) + "/train_step" + std::to_string(k) + sfx, ec);
        fs::remove_all(stateDir(out) + "/mlp_fit_step" + std::to_string(k) + sfx, ec);
      }
    }
    const bool stop = ctx != nullptr ? ctx->anyTrue(stopRequested()) : stopRequested();
    if (ctx != nullptr) ctx->barrier();  // the next iteration reads model_dir
    if (stop && k + 1 < 2 * spec.iterations)
      throw InterruptedError(out + ": stopped after " + tag + "; state saved, rerun to resume");
  }

  // 6. Outputs: weights, histograms, history; result.json last.
  json meta = {{"campaign_seed", std::to_string(spec.campaign_seed)},
               {"replica", spec.replica},
               {"member", spec.member},
               {"bootstrap_seed", std::to_string(bootstrapSeed(spec.campaign_seed, spec.replica))},
               {"member_seed", std::to_string(member_seed)},
               {"init", spec.init},
               {"init_sha256", in.init_sha256},
               {"mc", spec.mc_path},
               {"data", spec.data_path},
               {"config", chainConfigToJson(cfg).dump()},
               {"iterations", spec.iterations}};
  if (!root) {
    ctx->barrier();  // returns once rank 0 wrote the outputs
    return;
  }
  std::vector<double> final_w(static_cast<size_t>(n_mc));
  for (int64_t i = 0; i < n_mc; ++i) final_w[i] = st.weights.push.back()[i] * w_mc[i];
  st.weights.final = final_w;
  if (!spec.variation.is_null()) meta["variation"] = spec.variation.dump();
  if (mc_boot) meta["bootstrap"] = "mc";
  writeChainWeights(out, st.weights, meta);
  std::vector<float> subs = mc.gen_subs.empty() ? data::computeObservables(mc.gen) : mc.gen_subs;
  ChainHistograms h;
  h.unfolded = histogramObservables(subs, final_w, mc_pass_gen);
  h.prior = histogramObservables(subs, w_mc, mc_pass_gen);
  writeChainHistograms(out, h, meta);
  writeJsonAtomic(out + "/" + kChainHistoryFile,
                  {{"spec", chainSpecToJson(spec)}, {"steps", st.history}});
  json result = chainSpecToJson(spec);
  result["status"] = "done";
  result["init_sha256"] = in.init_sha256;
  // Which version of each file the chain read (size, modification time): chains of one band
  // must have read the same (aggregate compares them; the paths alone do not tell).
  for (const char* k : {"mc", "data"}) {
    json file = read_inputs.at(k);
    file.erase("path");
    result["inputs"][k] = file;
  }
  result["mc_events"] = n_mc;
  result["data_events"] = n_data;
  result["final_ess"] = effectiveSampleSize(st.weights.push.back());
  result["device"] = device.toJson();
  writeJsonAtomic(out + "/" + kChainResultFile, result);
  std::error_code ec;
  fs::remove_all(stateDir(out), ec);
  if (ec) logWarn("could not remove {}: {}", stateDir(out), ec.message());
  if (ctx != nullptr) ctx->barrier();
}

}  // namespace foldfarm::ensembles
