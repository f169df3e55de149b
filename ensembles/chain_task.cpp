#include "ensembles/chain_task.hpp"

#include "core/train/parallel.hpp"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/lru_cache.hpp"
#include "core/base/progress.hpp"
#include "core/base/sha256.hpp"
#include "core/base/stop_signal.hpp"
#include "core/base/text.hpp"
#include "core/data/jet_reader.hpp"
#include "core/model/pet.hpp"
#include "core/model/pet_config.hpp"
#include "core/model/threads.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/device.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/parallel.hpp"
#include "core/train/torch_error.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/chain.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/event_weights.hpp"
#include "ensembles/truth_comparison.hpp"
#include "jobs/campaign_spec.hpp"
#include "jobs/disk_estimate.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;

// Identity of a file's content for the caches: path, size and modification time.
std::string fileKey(const std::string& path) {
  const FileStat st = statPath(path);
  if (!st.exists)
    throw InputError(path + ": cannot read (missing?); check the path in the task parameters");
  return path + "|" + std::to_string(st.size) + "|" + std::to_string(st.mtime_ns);
}

// What a persistent worker keeps from chain to chain, each bounded (least recently used
// first out), so that a worker meeting many files (one MC sample per detector variation)
// over thousands of tasks holds the latest few: the data sample, used by every chain, stays
// while the MC samples rotate.
//   datasets: unfolding files by (path, size, mtime): a chain reads two (MC, data);
//   checkpoints: the foundation (and its hash);
//   standardised: PET's inputs by (file content, level, rows, statistics, device), on the
//     GPU when they fit (placeStandardised): a chain uses three (MC reco and gen, data reco).
constexpr size_t kMaxDatasets = 4, kMaxCheckpoints = 2, kMaxStandardised = 6;
struct Cache {
  std::mutex mu;
  LruCache<std::string, std::shared_ptr<const data::UnfoldArrays>> datasets{kMaxDatasets};
  LruCache<std::string, std::pair<std::shared_ptr<const Checkpoint>, std::string>> checkpoints{
      kMaxCheckpoints};
  LruCache<std::string, std::shared_ptr<const JetTensors>> standardised{kMaxStandardised};
};
Cache& cache() {
  static Cache c;
  return c;
}

std::shared_ptr<const data::UnfoldArrays> loadDataset(const std::string& path) {
  const std::string key = fileKey(path);
  std::lock_guard<std::mutex> lock(cache().mu);
  if (const auto* hit = cache().datasets.find(key)) return *hit;
  // One version per path: a changed file replaces its stale entry.
  cache().datasets.eraseIf([&](const std::string& k) { return k.rfind(path + "|", 0) == 0; });
  data::JetFile file(path);
  if (file.layout() != data::FileLayout::kUnfold)
    throw InputError(path +
                     ": not an unfolding file (the simulation needs reco, reco_jets, gen and "
                     "gen_jets; the data reco and reco_jets)");
  auto arrays = std::make_shared<const data::UnfoldArrays>(file.readUnfold());
  logInfo("loaded {} ({} events)", path, arrays->n());
  cache().datasets.put(key, arrays);
  return arrays;
}

std::pair<std::shared_ptr<const Checkpoint>, std::string> loadInit(const std::string& init) {
  const std::string dir = resolveCheckpointDir(init);
  const std::string meta = dir + "/meta.json";
  const std::string key = fileKey(meta);
  std::lock_guard<std::mutex> lock(cache().mu);
  if (const auto* hit = cache().checkpoints.find(key)) return *hit;
  auto ck = std::make_shared<const Checkpoint>(readCheckpoint(dir));
  auto entry = std::make_pair(ck, sha256File(meta));
  cache().checkpoints.put(key, entry);
  return entry;
}

// The checkpoint directory a chain starts from (either form resolveCheckpointDir takes), ""
// for a chain without one; InputError naming it when it holds no checkpoint (yet).
std::string foundationDir(const ChainSpec& spec) {
  if (spec.init == "none") return "";
  try {
    return resolveCheckpointDir(spec.init);
  } catch (const InputError& e) {
    // What it holds instead (a training's state/) is said as resolveCheckpointDir says it
    // (before: "holds no checkpoint (no meta.json…)" beside its meta.json).
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::path(spec.init) / "meta.json", ec))
      throw InputError(std::string("foundation ") + e.what());
    throw InputError("foundation " + spec.init +
                     ": holds no checkpoint (no meta.json, nor model/meta.json); give the output "
                     "directory of `foldfarm pretrain` once it has written its model, or drop "
                     "inputs.foundation to train the chains from scratch");
  }
}

// The PET preset of the checkpoint in `dir` (resolved), read once per version of its meta.json
// (every task of a campaign names the foundation; one rewritten meanwhile is read again).
// verify: the whole checkpoint is read once per version and both its checksums checked
// (InputError naming the file otherwise); else the metadata alone is parsed, and "" returned
// when it cannot be.
std::string foundationPreset(const std::string& dir, bool verify) {
  struct Entry {
    std::string preset;
    bool verified = false;
  };
  static std::mutex mu;
  static std::map<std::string, Entry> entries;
  const std::string meta = dir + "/meta.json";
  const std::string key = fileKey(meta);
  std::lock_guard<std::mutex> lock(mu);
  auto it = entries.find(key);
  if (it == entries.end()) {
    for (auto e = entries.begin(); e != entries.end();)  // one version per path
      e = e->first.rfind(meta + "|", 0) == 0 ? entries.erase(e) : std::next(e);
    const nlohmann::json j = nlohmann::json::parse(readFile(meta), nullptr, false);
    const nlohmann::json cfg =
        j.is_object() ? j.value("config", nlohmann::json::object()) : nlohmann::json();
    it = entries
             .emplace(key,
                      Entry{cfg.is_object() ? cfg.value("preset", std::string()) : std::string()})
             .first;
  }
  if (verify && !it->second.verified) {
    it->second.preset = readCheckpoint(dir).meta.config.preset;
    it->second.verified = true;
  }
  return it->second.preset;
}

}  // namespace

nlohmann::json chainParamsOfCampaignTask(const nlohmann::json& p, const std::string& task_dir) {
  using nlohmann::json;
  const json& in = p.at("inputs");
  json chain = p.value("chain", json::object());
  json out;
  out["mc"] = in.at("mc");
  out["data"] = in.at("data");
  out["init"] = in.contains("foundation") ? in["foundation"] : json("none");
  out["replica"] = p.at("replica");
  out["member"] = p.at("member");
  out["campaign_seed"] = p.at("seed");
  out["threads"] = p.value("threads", 0);
  if (chain.contains("iterations")) out["iterations"] = chain["iterations"];
  if (chain.contains("config")) {
    out["config"] = chain["config"];
  } else {
    json cfg = chain;
    cfg.erase("iterations");
    cfg.erase("keep_models");  // the campaign's: in the task's "keep_models" (below)
    if (!cfg.empty()) out["config"] = cfg;
  }
  if (p.contains("variation")) {
    out["variation"] = p["variation"];
    if (p["variation"].value("type", std::string()) == "mc_bootstrap") out["bootstrap"] = "mc";
  }
  // The task it warm-starts from is its sibling in the campaign's tasks/ directory.
  if (p.contains("warm_from_task"))
    out["warm_from"] =
        fs::absolute(fs::path(task_dir).parent_path() / p["warm_from_task"].get<std::string>())
            .lexically_normal()
            .string();
  if (p.value("keep_models", false)) out["keep_models"] = true;
  return out;
}

void refusePresetBesideFoundation(const nlohmann::json& params,
                                  const std::string& foundation_preset) {
  const std::string init = params.value("init", std::string("none"));
  const nlohmann::json config = params.value("config", nlohmann::json::object());
  if (init == "none" || !config.is_object() || !config.contains("preset") ||
      !config["preset"].is_string())
    return;
  const std::string preset = config["preset"].get<std::string>();
  if (preset == foundation_preset) return;
  throw InputError("chain config: 'preset' \"" + preset + "\" is not the foundation's (" + init +
                   " was pretrained as \"" + foundation_preset +
                   "\"), and the foundation fixes the model; remove 'preset' or name \"" +
                   foundation_preset + "\"");
}

void checkChainTaskParams(const nlohmann::json& params) {
  const ChainSpec spec = chainSpecFromJson(params);
  std::string dir;
  try {
    dir = foundationDir(spec);
  } catch (const InputError&) {
    return;  // not written yet (`campaign plan`): checkChainFoundation refuses it at init and run
  }
  if (dir.empty()) return;
  const std::string preset = foundationPreset(dir, /*verify=*/false);
  if (!preset.empty()) refusePresetBesideFoundation(params, preset);  // else: checked at run
}

void checkChainFoundation(const nlohmann::json& params) {
  const std::string dir = foundationDir(chainSpecFromJson(params));
  if (!dir.empty()) refusePresetBesideFoundation(params, foundationPreset(dir, /*verify=*/true));
}

void refuseUntrainableChainCampaign(const std::string& kind, int gpus, const nlohmann::json& chain,
                                    const std::string& origin) {
  if (kind != "chain") return;
  nlohmann::json config = chain.is_object() ? chain.value("config", chain) : nlohmann::json();
  if (!config.is_object()) config = nlohmann::json::object();
  const std::string device = config.value("device", std::string("auto"));
  const bool cuda = torchHasCuda();
  if (gpus > 0 && !cuda && device != "cpu")
    throw InputError(origin + ": resources.gpus is " + std::to_string(gpus) +
                     " but this foldfarm's LibTorch was built without CUDA, so its chains would "
                     "train on the CPU; build against a CUDA LibTorch (README: GPU build) or set "
                     "resources.gpus to 0");
  if (gpus > 0 && device == "cpu")
    throw InputError(origin + ": resources.gpus is " + std::to_string(gpus) +
                     " but the chain config trains on the CPU (device cpu), so the GPUs would "
                     "idle all campaign long; set device auto, or give the tasks CPU slots "
                     "(resources.gpus 0, cpu_slots)");
  // What needs a GPU: CUDA graphs, and bf16 for a classifier with PET (the MLP trains in
  // fp32 whatever the precision).
  const std::string no_gpu = !cuda       ? "this foldfarm's LibTorch was built without CUDA"
                             : gpus <= 0 ? "its tasks get no GPU (resources.gpus is 0)"
                                         : "";
  if (no_gpu.empty()) return;
  if (device == "cuda")
    throw InputError(origin + ": the chain config asks for device cuda but " + no_gpu +
                     "; use device auto (a task's GPU when it has one) or cpu, or give the tasks "
                     "GPUs");
  const nlohmann::json graphs = config.value("cuda_graphs", nlohmann::json(false));
  if (graphs.is_boolean() && graphs.get<bool>())
    throw InputError(origin + ": the chain config asks for cuda_graphs but " + no_gpu +
                     "; drop cuda_graphs or give the tasks GPUs");
  const nlohmann::json precision = config.value("precision", nlohmann::json("fp32"));
  const nlohmann::json classifier = config.value("classifier", nlohmann::json("pet+mlp"));
  if (precision == "bf16" && classifier != "mlp")
    throw InputError(origin + ": the chain config asks for precision bf16 but " + no_gpu +
                     "; use precision fp32 or give the tasks GPUs");
}

void clearChainTaskCache() {
  std::lock_guard<std::mutex> lock(cache().mu);
  cache().datasets.clear();
  cache().checkpoints.clear();
  cache().standardised.clear();
}

size_t chainTaskCachedSets() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().standardised.size();
}

size_t chainTaskCachedDatasets() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().datasets.size();
}

void runChainTaskOrThrow(const nlohmann::json& params, const std::string& task_dir,
                         ParallelContext* ctx) {
  SingleProcessContext alone;
  ParallelContext& ranks = ctx != nullptr ? *ctx : alone;
  ChainSpec spec;  // the same params on every rank: rank 0 reports what is wrong
  checkOnEveryRank(ranks, [&] { spec = chainSpecFromJson(params); });
  const int threads = params.value("threads", 0);
  if (threads > 0) configureThreads(threads);
  // Named as the campaign names the task (r0001m0, det_up.r0001m0; before: r1m0).
  setLogTask(jobs::taskIdFor(
      spec.variation.is_null() ? std::string() : spec.variation.value("name", std::string()),
      spec.replica, spec.member));
  const std::string result_path = task_dir + "/" + kChainResultFile;
  bool complete = false;  // every rank finds it alike: rank 0 says what is wrong
  checkOnEveryRank(ranks, [&] {
    if (fs::exists(result_path)) {
      nlohmann::json done = readJson(result_path);
      nlohmann::json same = chainSpecToJson(spec);
      // The parameters the finished chain recorded, against these: the first that differs
      // is named with both values.
      nlohmann::json recorded = nlohmann::json::object();
      for (auto it = same.begin(); it != same.end(); ++it)
        recorded[it.key()] = done.value(it.key(), nlohmann::json());
      const std::vector<jobs::JsonKeys> diff = jobs::jsonDifferences(recorded, same);
      if (!diff.empty())
        throw InputError(task_dir + ": already holds a chain with different parameters ('" +
                         jobs::jsonKeysText(diff.front()) + "' " +
                         jobs::shortJsonText(jobs::jsonAt(recorded, diff.front())) + ", now " +
                         jobs::shortJsonText(jobs::jsonAt(same, diff.front())) +
                         "); use another output directory");
      // The binning is not among the parameters (the weights do not depend on it), but the
      // histograms are of the binning they were written with: a finished chain asked for
      // another is not "complete" in silence (its old histograms were kept).
      // (Histograms that cannot be read are the aggregation's to name, as before.)
      ChainHistograms h;
      try {
        h = readChainHistograms(task_dir);
      } catch (const InputError&) {
      }
      const std::vector<std::vector<double>> edges = chainBinning(spec.config);
      for (size_t o = 0; o < h.unfolded.size() && o < edges.size(); ++o)
        if (h.unfolded[o].edges != edges[o])
          throw InputError(task_dir + ": holds a finished chain whose " + h.unfolded[o].name +
                           " histogram has " + std::to_string(h.unfolded[o].bins()) +
                           " bins over [" + fmt::format("{:g}", h.unfolded[o].edges.front()) +
                           ", " + fmt::format("{:g}", h.unfolded[o].edges.back()) +
                           "], not the config's binning; run it into another output directory");
      complete = true;
      return;
    }
    requireOutputDirectoryPath(task_dir, "--out");
  });
  if (complete) {
    logInfo("{}: chain already complete", task_dir);
    return;
  }
  ChainInputs in;
  in.ctx = ctx;
  // Every rank reads the inputs and takes its device; when one cannot (a file its node cannot
  // read, a GPU it lacks), every rank ends here, before anything is written. PET's device,
  // and whether the config's precision and CUDA graphs can run there, are refused before the
  // output directory exists.
  checkOnEveryRank(ranks, [&] {
    in.mc = loadDataset(spec.mc_path);
    in.data = loadDataset(spec.data_path);
    if (spec.init != "none") {
      std::tie(in.init, in.init_sha256) = loadInit(spec.init);
      refusePresetBesideFoundation(params, in.init->meta.config.preset);
    }
    in.device = selectDevice(spec.config.device);
    if (spec.config.classifier != "mlp")
      requirePrecision(spec.config.precision, in.device.device, "chain config");
    if (spec.config.cuda_graphs)
      requireCudaGraphs(in.device.device, ctx != nullptr ? ctx->worldSize() : 1, "chain config");
  });
  const std::string mc_key = fileKey(spec.mc_path), data_key = fileKey(spec.data_path);
  const torch::Device device = in.device.device;
  in.standardised = [mc_key, data_key, device](const std::string& level,
                                               const data::JetArrays& jets,
                                               const data::FeatureStats& stats) {
    const std::string key = (level.rfind("data.", 0) == 0 ? data_key : mc_key) + "|" + level + "|" +
                            std::to_string(jets.n) + "x" + std::to_string(jets.P) + "|" +
                            stats.toJson().dump() + "|" + device.str();
    std::lock_guard<std::mutex> lock(cache().mu);
    if (const auto* hit = cache().standardised.find(key)) return *hit;
    auto t = placeStandardised(jets, stats, device);
    cache().standardised.put(key, t);
    return t;
  };
  std::error_code ec;
  if (ctx == nullptr || ctx->isRoot()) fs::create_directories(task_dir, ec);
  if (ec) throw Error(task_dir + ": cannot create: " + ec.message());
  runChain(spec, in, task_dir);
  logInfo("{}: chain done", task_dir);
}

int runChainTask(const nlohmann::json& params, const std::string& task_dir, std::string* reason,
                 bool campaign_task) {
  const auto failed = [&](int code, const std::string& why) {
    if (reason != nullptr) *reason = why;
    return code;
  };
  try {
    runChainTaskOrThrow(params, task_dir);
    return kExitOk;
  } catch (const InterruptedError& e) {
    logWarn("{}", e.what());
    return failed(kExitInterrupted, e.what());
  } catch (const NeedLostError& e) {
    if (!campaign_task) {
      logError("{}: {}", task_dir, e.what());
      return failed(kExitBadInput, e.what());
    }
    // The task it warm-starts from (its sibling in the campaign's tasks/, the only warm_from
    // a campaign task has) lacks its models, lost or damaged: retrying this one alone cannot
    // mend that; `retry --failed` reruns that one first (exit 66 says so to the journal).
    const fs::path from = fs::path(params.value("warm_from", std::string())).lexically_normal();
    const std::string why = std::string(e.what()) + "; `foldfarm campaign retry " +
                            shellWord(from.parent_path().parent_path().string()) +
                            " --failed` runs " + from.filename().string() +
                            " again, and this task after it";
    logError("{}: {}", task_dir, why);
    return failed(kExitNeedLost, why);
  } catch (const ChainFormatError& e) {
    // A campaign's task starts over by its retry (its directory moved aside), not by hand.
    const fs::path dir = fs::path(task_dir).lexically_normal();
    const std::string why =
        campaign_task ? std::string(e.what()) + "; in this campaign: `foldfarm campaign retry " +
                            shellWord(dir.parent_path().parent_path().string()) + " --task " +
                            dir.filename().string() + "`"
                      : std::string(e.what());
    logError("{}: {}", task_dir, why);
    return failed(kExitBadInput, why);
  } catch (const InputError& e) {
    logError("{}: {}", task_dir, e.what());
    return failed(kExitBadInput, e.what());
  } catch (const std::exception& e) {
    const std::string why = "chain failed: " + exceptionMessage(e);
    logError("{}: {}", task_dir, why);
    return failed(kExitFailure, why);
  }
}

void checkChainTaskInputs(const nlohmann::json& params) {
  const ChainSpec spec = chainSpecFromJson(params);
  for (const bool mc : {true, false}) {
    const std::string& path = mc ? spec.mc_path : spec.data_path;
    const data::JetFile file(path);
    if (file.layout() != data::FileLayout::kUnfold)
      throw InputError(path + ": is a jets-layout file; the " + (mc ? "simulation" : "data") +
                       " of a chain is an unfolding file (reco, reco_jets" +
                       (mc ? ", gen, gen_jets" : "") + ")");
    requireChainLevels(path, mc, file.hasLevel("reco"), file.hasLevel("gen"));
    // Selection flags that pass no event: one (N,) column each, read here rather than found
    // by every chain when it starts.
    // Weights whose total over those events is not positive, likewise.
    const std::vector<float> weights =
        file.has("weights") ? file.readFloat("weights") : std::vector<float>();
    for (const char* flags : {"pass_reco", "pass_gen"}) {
      if (!mc && std::string(flags) == "pass_gen") continue;
      const std::vector<uint8_t> pass = file.readPassFlags(flags);  // as the chain reads them
      if (!pass.empty() && std::all_of(pass.begin(), pass.end(), [](uint8_t f) { return f == 0; }))
        throw noEventPasses(path, flags, static_cast<int64_t>(pass.size()));
      // Over the rows the chain reads (max_*_events), as the chain sums them.
      const int64_t cap = mc ? spec.config.max_mc_events : spec.config.max_data_events;
      const bool capped = cap > 0 && cap < file.numJets();
      requirePositiveWeightTotal(path, flags,
                                 inputWeights(weights, pass, capped ? cap : file.numJets()),
                                 capped ? (mc ? "max_mc_events" : "max_data_events") : nullptr);
    }
  }
  checkChainFoundation(params);
}

namespace {

// What the aggregation reads besides the chains' outputs: the truth, and the non-closure
// pseudo-data's gen level (its truth). check(path) for each that a campaign task's params
// name, its InputError prefixed with the file's role. The truth once, with the nominal's
// inputs (each variation's check would read it again; the aggregation reads the spec's truth
// only).
void checkTruths(const nlohmann::json& task_params,
                 const std::function<void(const std::string&)>& check) {
  const nlohmann::json& in = task_params.at("inputs");
  const auto truthOf = [&](const char* key, const std::string& role) {
    try {
      check(in.at(key).get<std::string>());
    } catch (const InputError& e) {
      throw InputError(role + " " + e.what());
    }
  };
  if (in.contains("truth") && !task_params.contains("variation")) truthOf("truth", "truth");
  if (task_params.contains("variation") &&
      task_params["variation"].value("type", std::string()) == "non_closure")
    truthOf("data", "data (the non_closure pseudo-data; its gen level is the truth)");
}

}  // namespace

void checkCampaignChainTaskInputs(const nlohmann::json& task_params) {
  checkChainTaskInputs(chainParamsOfCampaignTask(task_params, "tasks/t"));
  // Found here, not after every chain has trained.
  checkTruths(task_params, checkTruthFile);
}

namespace {

// Every value of an unfolding file the chain reads, with a progress line from 256 MiB.
void checkUnfoldValues(const std::string& path) {
  const data::JetFile file(path);
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  Progress progress("values of " + path, file.numJets(), "events");
  progress.setSilent(ec || bytes < (256u << 20));
  // Decompression is the cost (~0.5 GB/s a core): pieces on up to 8 threads, as the checksums.
  const int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  data::JetFile::ValueCheck how;
  how.threads = threads;
  how.on_rows = [&](int64_t done, int64_t) {
    progress.update(done);
    if (stopRequested())
      throw InterruptedError(path + ": reading stopped by signal " + std::to_string(stopSignal()));
  };
  file.checkValues(how);
  progress.finish();
}

}  // namespace

namespace {

// A detector variation reconstructs the nominal's generated events otherwise: its simulation
// must hold those events, in their order (the publication weights and the shifts pair them).
// Compared by their count, their generator-level selection (pass_gen), their event weights and
// their generated observables.
void checkSameGeneratedEvents(const std::string& varied, const std::string& nominal) {
  const data::JetFile v(varied), n(nominal);
  const std::string why =
      ": a detector variation reconstructs the nominal's generated events "
      "otherwise, so its simulation holds those events in their order; "
      "regenerate it from them, or make the variation a modelling one";
  if (v.numJets() != n.numJets())
    throw InputError(varied + " holds " + std::to_string(v.numJets()) + " events, the nominal " +
                     nominal + " " + std::to_string(n.numJets()) + why);
  if (v.hasLevel("gen") && n.hasLevel("gen") && data::fileHasDataset(varied, "gen_subs") &&
      data::fileHasDataset(nominal, "gen_subs")) {
    std::vector<int64_t> dv, dn;
    const std::vector<float> a = data::readFloatDataset(varied, "gen_subs", &dv);
    const std::vector<float> b = data::readFloatDataset(nominal, "gen_subs", &dn);
    const size_t width = dv.size() == 2 ? static_cast<size_t>(dv[1]) : 1;
    if (dv == dn)  // the layout check names other shapes
      for (size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i])
          throw InputError(varied + ": generated event " + std::to_string(i / width) +
                           " differs from the nominal " + nominal + "'s (gen_subs column " +
                           std::to_string(i % width) + ": " + fmt::format("{}", a[i]) +
                           " against " + fmt::format("{}", b[i]) + ")" + why);
  }
  // The generator-level selection and the event weights belong to the generated events too: a
  // variation that changed them would shift the prior, not the detector, and the publication
  // weights of the one would not apply to the other's events. Absent: every event passes,
  // every weight 1.
  const auto compare = [&](const auto& a, const auto& b, const char* what) {
    if (a.empty() && b.empty()) return;
    for (size_t i = 0; i < static_cast<size_t>(v.numJets()); ++i) {
      const double x = a.empty() ? 1.0 : static_cast<double>(a[i]);
      const double y = b.empty() ? 1.0 : static_cast<double>(b[i]);
      if (x != y)
        throw InputError(varied + ": event " + std::to_string(i) + " has " + what + " " +
                         fmt::format("{}", x) + " where the nominal " + nominal + " has " +
                         fmt::format("{}", y) + why);
    }
  };
  compare(v.readPassFlags("pass_gen"), n.readPassFlags("pass_gen"), "pass_gen");
  const auto weightsOf = [](const data::JetFile& f) {
    return f.has("weights") ? f.readFloat("weights") : std::vector<float>();
  };
  compare(weightsOf(v), weightsOf(n), "event weight (weights)");
}

}  // namespace

void checkCampaignChainTaskInputValues(const nlohmann::json& task_params, const FirstRead& first) {
  const ChainSpec spec = chainSpecFromJson(chainParamsOfCampaignTask(task_params, "tasks/t"));
  for (const std::string& path : {spec.mc_path, spec.data_path})
    if (first(path, "")) checkUnfoldValues(path);
  const nlohmann::json variation = task_params.value("variation", nlohmann::json::object());
  const nlohmann::json nominal = task_params.value("nominal_inputs", nlohmann::json::object());
  if (variation.value("type", std::string()) == "detector" && nominal.contains("mc") &&
      nominal["mc"].get<std::string>() != spec.mc_path)
    checkSameGeneratedEvents(spec.mc_path, nominal["mc"].get<std::string>());
  // The truths: what the aggregation reads of them (a file read whole above may still hold
  // observables that a chain does not read: a truth's are checked as a truth's).
  checkTruths(task_params, [&](const std::string& path) {
    if (first(path, "truth")) checkTruthValues(path);
  });
}

namespace {

// Bytes of one step's saved PET classifier (PetClassifier::save): its tensors as they are
// written (each with about 270 B of its own in the archive) and about 2 kB of description.
// The model is the foundation's with one logit and no generator, or the config's preset;
// nullopt when the foundation is not there yet (a plan made before the pretraining).
std::optional<double> petStepModelBytes(const ChainSpec& spec) {
  PetConfig cfg;
  if (spec.init == "none") {
    cfg = applyPetOverrides(petPreset(spec.config.preset), spec.config.model, "chain config");
  } else {
    try {
      const std::string meta = resolveCheckpointDir(spec.init) + "/meta.json";
      cfg = petConfigFromJson(readJsonFile(meta, "").at("config"), meta);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  cfg.num_classes = 1;
  cfg.generator = false;
  Pet model(cfg);
  std::map<std::string, torch::Tensor> tensors;
  addModelTensors(model, "model.", tensors);
  double bytes = 2e3;
  for (const auto& [name, t] : tensors)
    bytes += static_cast<double>(t.numel() * t.element_size()) + 270;
  return bytes;
}

// Bytes of one step's saved observable MLP: its float32 weights and biases, and about 4 kB of
// description and archive.
double mlpStepModelBytes(const ChainConfig& c) {
  int64_t in = static_cast<int64_t>(c.observables.size()), params = 0;
  for (const int64_t h : c.mlp.hidden) {
    params += (in + 1) * h;
    in = h;
  }
  params += in + 1;
  return 4.0 * static_cast<double>(params) + 4e3;
}

// The events of an unfolding file, from its datasets' shapes (no event is read); nullopt when
// it is not there yet. Each version of a file (path, size, modification time) once per
// process: a plan sizes every group of tasks by it.
std::optional<int64_t> eventsOfFile(const std::string& path) {
  const FileStat st = statPath(path);
  if (!st.regular) return std::nullopt;
  static std::mutex m;
  static std::map<std::tuple<std::string, long long, long long>, int64_t> counts;
  const auto key = std::make_tuple(path, st.size, st.mtime_ns);
  std::lock_guard<std::mutex> lock(m);
  if (const auto it = counts.find(key); it != counts.end()) return it->second;
  const int64_t n = data::JetFile(path).numJets();
  counts.emplace(key, n);
  return n;
}

// Measured on the demo's chains (2 iterations, 2 PET epochs) and on one stopped in its third
// step: histograms.h5 about 1.8 kB per histogram (the unfolded, the prior and one per
// iteration, each of its three datasets) and 24 B per bin of it; history.json about 0.8 kB per
// step, 0.45 kB per PET epoch and 0.2 kB per MLP epoch it records (the MLP's stop early: about
// patience + 4 of them); result.json, task_result.json, task.log, .attempt and .lease about 8 kB
// together; an HDF5 file's header and attributes about 4 kB. A running chain's state/ holds every
// step's weights so far, the last two steps' models (one of each step, for the next iteration) and
// the step in progress: PET's training state (about 3 models: the model, the optimiser's
// moment, the best epoch's) and the MLP's fit (one MLP).
constexpr double kHistogramBytes = 1.8e3;
constexpr double kHistogramBytesPerBin = 24;
constexpr double kHistoryBytesPerStep = 0.8e3;
constexpr double kHistoryBytesPerPetEpoch = 0.45e3;
constexpr double kHistoryBytesPerMlpEpoch = 0.2e3;
constexpr double kRecordBytes = 8e3;
constexpr double kH5HeaderBytes = 4e3;
constexpr double kPetModelsInState = 2 + 3;
constexpr double kMlpModelsInState = 2 + 1;

}  // namespace

std::optional<jobs::DiskUseEstimate> estimateChainTaskOutput(const nlohmann::json& task_params) {
  const ChainSpec spec = chainSpecFromJson(chainParamsOfCampaignTask(task_params, "tasks/t"));
  std::optional<int64_t> in_file = eventsOfFile(spec.mc_path);
  if (!in_file) return std::nullopt;
  const ChainConfig& c = spec.config;
  const int64_t events = c.max_mc_events > 0 ? std::min(*in_file, c.max_mc_events) : *in_file;
  const int steps = 2 * spec.iterations;
  const auto weightsBytes = [&](int rows) {
    return 8.0 * static_cast<double>(events) * rows + kH5HeaderBytes;
  };
  const int rows = c.iteration_weights ? steps + 1 : 1;
  const double weights = weightsBytes(rows);
  double histograms = 0;  // the unfolded, the prior and one per iteration, of each observable
  for (const std::vector<double>& edges : chainBinning(c))
    histograms += (2 + spec.iterations) *
                  (kHistogramBytes + kHistogramBytesPerBin * static_cast<double>(edges.size() - 1));
  const bool pet = c.classifier != "mlp", mlp = c.classifier != "pet";
  const double history_per_step =
      kHistoryBytesPerStep + (pet ? kHistoryBytesPerPetEpoch * c.epochs : 0) +
      (mlp ? kHistoryBytesPerMlpEpoch * std::min(c.mlp.epochs, c.mlp.patience + 4) : 0);
  const double small =
      histograms + kH5HeaderBytes + steps * c.step_ensemble * history_per_step + kRecordBytes;
  const std::optional<double> pet_bytes =
      pet ? petStepModelBytes(spec) : std::optional<double>(0.0);
  const double mlp_bytes = mlp ? mlpStepModelBytes(c) : 0;
  jobs::DiskUseEstimate e;
  e.use.bytes = weights + small;
  // The directory, weights.h5, histograms.h5, history.json, result.json, task_result.json,
  // task.log, .attempt and .lease.
  e.use.files = 9;
  e.how = "weights.h5 " + jobs::formatBytes(weights) + " (" + jobs::formatCount(events) +
          " events x " + std::to_string(rows) + " row(s) x 8 B), histograms, history and " +
          "records about " + jobs::formatBytes(small);
  if (c.iteration_weights && steps > 0)
    e.advice =
        "\"iteration_weights\": false in the chain config keeps weights.h5's final row "
        "alone: " +
        jobs::formatBytes(weightsBytes(1)) + " a chain instead of " + jobs::formatBytes(weights);
  if (spec.keep_models) {
    // Each step's models, kept for the variations that start from them.
    const double models = steps * c.step_ensemble * (pet_bytes.value_or(0) + mlp_bytes);
    e.use.bytes += models;
    e.use.files += 1 + steps * (1 + c.step_ensemble * ((pet ? 3 : 0) + (mlp ? 3 : 0)));
    e.how += ", the steps' models (keep_models: variations start from them) " +
             jobs::formatBytes(models) +
             (pet_bytes ? std::string()
                        : " without PET's (its foundation " + spec.init + " is not there yet)");
  }
  e.running_bytes =
      weightsBytes(steps) +
      c.step_ensemble * (kPetModelsInState * pet_bytes.value_or(0) + kMlpModelsInState * mlp_bytes);
  return e;
}

std::optional<jobs::DiskUseEstimate> estimateChainAggregateOutput(const jobs::CampaignSpec& spec) {
  const auto eventsOf = [](const std::map<std::string, std::string>& inputs) {
    const auto it = inputs.find("mc");
    return it == inputs.end() ? std::nullopt : eventsOfFile(it->second);
  };
  const std::optional<int64_t> nominal = eventsOf(spec.inputs);
  if (!nominal) return std::nullopt;
  // event_weights.h5: a column of the simulation's events per result; a modelling variation's
  // of its own simulation's (eventWeightColumnsOf).
  const auto columnsIn = [&](bool central) {
    double columns = eventWeightColumnsOf("", spec.replicas, central);
    for (const jobs::Variation& v : spec.variations) {
      const int n = eventWeightColumnsOf(v.type, v.replicas, central);
      const std::optional<int64_t> own = v.type == "modelling" ? eventsOf(v.inputs) : nominal;
      columns += n * (own ? static_cast<double>(*own) / static_cast<double>(*nominal) : 1.0);
    }
    return columns;
  };
  const std::string mode = spec.aggregate.value("event_weights", std::string("all"));
  const double columns = mode == "none" ? 0 : columnsIn(mode == "central");
  const double weights = 8.0 * static_cast<double>(*nominal) * columns;
  // bands.h5 (per observable: its bins x bins matrices and the replicas' densities, on the
  // nominal chains' binning), summary.json, and two figures per observable unless "plots" is
  // false, three with systematic sources (the shifts'). The matrices as the aggregation counts
  // them (aggregateRunsWithOptions; a variation's source is its name where it names none).
  int replicas = spec.replicas;
  bool mc_bootstrap = false, shifts_figure = false;
  // A source's type and runs (the fewest replicas a variation of it shares with the nominal;
  // a non-closure's chains).
  std::map<std::string, SourceShape> sources;
  for (const jobs::Variation& v : spec.variations) {
    replicas += v.replicas;
    mc_bootstrap = mc_bootstrap || v.type == "mc_bootstrap";
    if (v.type != "detector" && v.type != "modelling" && v.type != "non_closure") continue;
    const std::string name = v.type == "non_closure" ? "non_closure" : v.source;
    const size_t runs = static_cast<size_t>(
        v.type == "non_closure" ? v.replicas * v.members : std::min(v.replicas, spec.replicas));
    // Independent samples: a modelling variation's own simulation, a non-closure's pseudo-data
    // (its data) other than the nominal's simulation.
    const auto input = [&](const char* role) {
      const auto at = v.inputs.find(role);
      return at == v.inputs.end() ? std::string() : at->second;
    };
    const std::string nominal_mc = spec.inputs.count("mc") ? spec.inputs.at("mc") : "";
    const bool samples =
        (v.type == "modelling" && !input("mc").empty() && input("mc") != nominal_mc) ||
        (v.type == "non_closure" && input("data") != nominal_mc);
    const auto [it, first] = sources.emplace(name, SourceShape{samples, runs});
    if (!first) {
      it->second.runs = std::min(it->second.runs, runs);
      it->second.samples = it->second.samples || samples;
    }
  }
  std::vector<SourceShape> shapes;
  for (const auto& [name, src] : sources) shapes.push_back(src);
  shifts_figure = !shapes.empty();
  const size_t matrices =
      bandsMatrices(spec.members > 1, mc_bootstrap, shapes,
                    parseShiftNoise(spec.aggregate.value("shift_noise", std::string("keep"))));
  std::vector<std::pair<std::string, size_t>> bins;
  {
    const ChainSpec nominal_chain =
        chainSpecFromJson(chainParamsOfCampaignTask(spec.taskDef(0).params, "tasks/t"));
    const std::vector<std::string> names = data::substructureObservableNames();
    const std::vector<std::vector<double>> edges = chainBinning(nominal_chain.config);
    for (size_t o = 0; o < names.size(); ++o) bins.emplace_back(names[o], edges[o].size() - 1);
  }
  const bool plots = spec.aggregate.value("plots", true);
  const double observables = static_cast<double>(bins.size());
  const BandsSize band_size = bandsSize(bins, static_cast<size_t>(replicas), matrices,
                                        "`foldfarm campaign aggregate D --binning`");
  const double figures = plots ? (shifts_figure ? 3 : 2) * observables : 0;
  const double bands = band_size.bytes + figures * 40e3;
  jobs::DiskUseEstimate e;
  e.use.bytes = weights + bands;
  // The directory, bands.h5, summary.json, event_weights.h5, the figures.
  e.use.files = 3 + (mode == "none" ? 0 : 1) + figures;
  e.how = (mode == "none" ? std::string("no event_weights.h5")
                          : "event_weights.h5 " + jobs::formatBytes(weights) + " (" +
                                jobs::formatCount(columns) + " column(s) of " +
                                jobs::formatCount(static_cast<double>(*nominal)) +
                                " events x 8 B, aggregate.event_weights " + mode + ")") +
          ", bands, summary and figures about " + jobs::formatBytes(bands);
  e.warning = band_size.warning;
  if (mode == "all")
    e.advice = "\"aggregate\": {\"event_weights\": \"central\"} in the spec keeps " +
               jobs::formatCount(columnsIn(true)) + " column(s) of event_weights.h5: " +
               jobs::formatBytes(8.0 * static_cast<double>(*nominal) * columnsIn(true)) +
               " instead of " + jobs::formatBytes(weights);
  return e;
}

void registerChainTaskKind() {
  jobs::registerTaskKind(
      "chain", jobs::TaskRunner([](const nlohmann::json& p, const std::string& dir) {
        // The chain's one-line error is the task's reason (`campaign status` shows it).
        jobs::TaskOutcome o;
        o.status = runChainTask(chainParamsOfCampaignTask(p, dir), dir, &o.reason,
                                /*campaign_task=*/true);
        // A result, so that the attempt's task_result.json is written beside the chain's
        // outputs on every executor: `campaign repair` rebuilds a lost journal from those.
        if (o.status == 0) o.result = nlohmann::json{{"outputs", "result.json"}};
        return o;
      }),
      jobs::TaskKindTraits{true,
                           [](const nlohmann::json& p) {
                             checkChainTaskParams(chainParamsOfCampaignTask(p, "tasks/t"));
                           },
                           std::nullopt,
                           checkCampaignChainTaskInputs,
                           [](const nlohmann::json& p, jobs::InputValueReads& reads) {
                             checkCampaignChainTaskInputValues(
                                 p, [&](const std::string& path, const std::string& role) {
                                   return reads.first(path, role);
                                 });
                           },
                           // The truth is checked by a task, read by the aggregation only.
                           {"truth"},
                           estimateChainTaskOutput,
                           estimateChainAggregateOutput});
}

}  // namespace foldfarm::ensembles
