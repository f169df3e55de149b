#include "ensembles/rebin.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/base/json_value.hpp"
#include "core/base/log.hpp"
#include "core/data/histogram.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/observables.hpp"
#include "ensembles/weights.hpp"

namespace foldfarm::ensembles {

using nlohmann::json;

namespace {

// "mass, width, multiplicity, lnrho, zg, tau21", for messages.
std::string knownObservables() {
  std::string known;
  for (const auto& n : data::substructureObservableNames())
    known += (known.empty() ? "" : ", ") + n;
  return known;
}

}  // namespace

ObservableBinnings binningFromJson(const json& b, const std::string& where) {
  if (!b.is_object())
    throw InputError(where +
                     " must be a JSON object of observables, e.g. {\"mass\": {\"lo\": 0, "
                     "\"hi\": 300, \"bins\": 60}}");
  const std::vector<std::string> names = data::substructureObservableNames();
  constexpr int64_t kMaxBins = 10000;
  ObservableBinnings out;
  for (auto it = b.begin(); it != b.end(); ++it) {
    const std::string at = where + " of '" + it.key() + "'";
    if (std::find(names.begin(), names.end(), it.key()) == names.end())
      throw InputError(where + ": unknown observable '" + it.key() +
                       "' (known: " + knownObservables() + ")");
    const json& v = it.value();
    if (!v.is_object())
      throw InputError(at + " must be {\"edges\": [...]} or {\"lo\", \"hi\", \"bins\"}");
    std::vector<double> edges;
    if (v.contains("edges")) {
      if (v.size() != 1)
        throw InputError(at + ": give \"edges\" alone, or \"lo\", \"hi\" and \"bins\"");
      edges = jsonValue<std::vector<double>>(v.at("edges"), at + " edges");
      if (edges.size() < 2 || static_cast<int64_t>(edges.size()) > kMaxBins + 1)
        throw InputError(at + ": \"edges\" must hold 2 to " + std::to_string(kMaxBins + 1) +
                         " numbers (got " + std::to_string(edges.size()) + ")");
    } else {
      for (auto k = v.begin(); k != v.end(); ++k)
        if (k.key() != "lo" && k.key() != "hi" && k.key() != "bins")
          throw InputError(at + ": unknown key '" + k.key() + "' (edges, or lo, hi and bins)");
      if (!v.contains("lo") || !v.contains("hi") || !v.contains("bins"))
        throw InputError(at + ": give \"lo\", \"hi\" and \"bins\" (or \"edges\")");
      const auto lo = jsonValue<double>(v.at("lo"), at + " lo");
      const auto hi = jsonValue<double>(v.at("hi"), at + " hi");
      const auto bins = jsonValue<int64_t>(v.at("bins"), at + " bins");
      if (bins < 1 || bins > kMaxBins)
        throw InputError(at + ": \"bins\" must be from 1 to " + std::to_string(kMaxBins) +
                         " (got " + std::to_string(bins) + ")");
      if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi))
        throw InputError(at + ": needs finite lo < hi (got " + fmt::format("{:g}, {:g}", lo, hi) +
                         ")");
      if (!std::isfinite(hi - lo))
        throw InputError(at +
                         ": lo and hi lie too far apart for their difference to be a number (" +
                         fmt::format("{:g}, {:g}", lo, hi) + "); give edges within ±1e300");
      edges = data::Binning::linspace(lo, hi, static_cast<int>(bins) + 1).edges;
    }
    for (size_t k = 0; k < edges.size(); ++k)
      if (!std::isfinite(edges[k]) || (k > 0 && !(edges[k - 1] < edges[k])))
        throw InputError(at + ": edges must be finite and increasing (edge " + std::to_string(k) +
                         " is " + fmt::format("{:g}", edges[k]) + ")");
    out[it.key()] = std::move(edges);
  }
  return out;
}

std::vector<std::vector<double>> observableEdges(const ObservableBinnings& b) {
  std::vector<std::vector<double>> edges;
  for (int o = 0; o < data::kNumSubs; ++o) {
    const auto it = b.find(data::observableName(o));
    edges.push_back(it != b.end() ? it->second : data::observableBinning(o).edges);
  }
  return edges;
}

bool binningArgumentIsJson(const std::string& arg) {
  const size_t first = arg.find_first_not_of(" \t\n");
  return first != std::string::npos && (arg[first] == '{' || arg[first] == '[');
}

namespace {

constexpr const char* kBinningExample = "'{\"mass\": {\"lo\": 0, \"hi\": 300, \"bins\": 60}}'";

ObservableBinnings binningArgument(const std::string& arg) {
  if (binningArgumentIsJson(arg)) {
    return binningFromJson(
        parseJsonText(arg, "--binning",
                      std::string("give e.g. ") + kBinningExample + " or a file holding it"),
        "--binning");  // its mistakes: "--binning of 'mass': ..."
  }
  std::error_code ec;
  if (std::filesystem::is_directory(arg, ec))
    throw InputError(
        "--binning " + arg +
        ": is a directory; give a JSON file of binnings, or the JSON itself ('{...}')");
  if (!std::filesystem::is_regular_file(arg, ec))
    throw InputError("--binning " + arg +
                     ": no such file; give a JSON file of binnings, or the JSON itself ('{...}')");
  const json j = readJsonFile(arg, "check the file given to --binning");
  // A chain config holds its binning under "binning", a campaign spec under chain.config.
  if (j.is_object() && j.contains("binning"))
    return binningFromJson(j.at("binning"), arg + ": 'binning'");
  if (j.is_object() && j.contains("chain") && j.at("chain").is_object()) {
    const json& chain = j.at("chain");
    const json config = chain.contains("config") ? chain.at("config") : chain;
    if (config.is_object() && config.contains("binning"))
      return binningFromJson(config.at("binning"), arg + ": 'chain.config.binning'");
  }
  if (j.is_object()) {
    const std::vector<std::string> names = data::substructureObservableNames();
    for (auto it = j.begin(); it != j.end(); ++it)
      if (std::find(names.begin(), names.end(), it.key()) == names.end()) {
        throw InputError(arg + ": '" + it.key() +
                         "' is no observable (known: " + knownObservables() +
                         "); give a file of {observable: {\"lo\", \"hi\", \"bins\"} or "
                         "{\"edges\"}}, a chain config with \"binning\", or a campaign spec "
                         "whose chain.config has one");
      }
  }
  return binningFromJson(j, arg);
}

}  // namespace

ObservableBinnings readBinningArgument(const std::string& arg) {
  if (arg.empty())
    throw InputError(std::string("--binning is empty; give e.g. ") + kBinningExample +
                     " or a file holding it");
  ObservableBinnings b = binningArgument(arg);
  if (b.empty())
    throw InputError("--binning " + arg + ": names no observable; name those to rebin, e.g. " +
                     kBinningExample);
  return b;
}

ChainRebinner::ChainRebinner(ObservableBinnings binning) : binning_(std::move(binning)) {
  if (binning_.empty())
    throw InputError(std::string("--binning names no observable; name those to rebin, e.g. ") +
                     kBinningExample);
}

namespace {

// An event that fails pass_gen, in a Simulation's bin indices.
constexpr int32_t kFailsSelection = INT32_MIN;

// The histogram of `name` on `edges` of the events whose bins are `bin` (Binning::find: -1
// below, bins() and above past the last edge, NaN included) with weights `w` (its first
// w.size() events): as data::Histogram1D fills them, event by event, so the same sums.
ObservableHistogram histogramOfBins(const std::string& name, const std::vector<double>& edges,
                                    const std::vector<int32_t>& bin, const std::vector<double>& w) {
  const auto bins = static_cast<int32_t>(edges.size() - 1);
  ObservableHistogram h{name, edges, std::vector<double>(static_cast<size_t>(bins), 0.0),
                        std::vector<double>(static_cast<size_t>(bins), 0.0),
                        std::array<double, 2>{0.0, 0.0}};
  for (size_t i = 0; i < w.size(); ++i) {
    const int32_t b = bin[i];
    if (b == kFailsSelection) continue;
    if (b < 0) {
      (*h.outside)[0] += w[i];
    } else if (b >= bins) {
      (*h.outside)[1] += w[i];
    } else {
      h.sumw[static_cast<size_t>(b)] += w[i];
      h.sumw2[static_cast<size_t>(b)] += w[i] * w[i];
    }
  }
  return h;
}

}  // namespace

const ChainRebinner::Simulation& ChainRebinner::simulation(const std::string& path,
                                                           const std::string& chain) {
  const auto it = simulations_.find(path);
  if (it != simulations_.end()) return it->second;
  const FileStat st = statPath(path);
  if (!st.exists)
    throw InputError(chain + ": its simulation " + path +
                     " does not exist; rebinning histograms its events again with the chain's "
                     "weights: restore it, or aggregate without --binning");
  data::JetFile file(path);
  Simulation s;
  s.rows = file.numJets();
  std::vector<float> subs;
  // As the chain reads it (data::JetFile::readUnfold): the file's gen_subs where it holds the
  // observables of every level, else those of its gen jets.
  if (file.hasSubs()) {
    subs = file.readFloat("gen_subs");
  } else {
    if (!file.hasLevel("gen"))
      throw InputError(path + ": holds no generator level (gen_subs or gen jets), so " + chain +
                       " cannot be rebinned from it; aggregate without --binning");
    subs = data::computeObservables(file.readJets(0, -1, "gen"));
  }
  if (static_cast<int64_t>(subs.size()) != s.rows * data::kNumSubs)
    throw InputError(path + ": the gen-level observables hold " + std::to_string(subs.size()) +
                     " values, not " + std::to_string(s.rows) + " x " +
                     std::to_string(data::kNumSubs) + "; check the file");
  if (file.has("weights")) s.weights = file.readFloat("weights");
  const std::vector<uint8_t> pass = file.readPassFlags("pass_gen");
  // Each event's bin of each observable rebinned, found once for every chain and weight set.
  for (int o = 0; o < data::kNumSubs; ++o) {
    const auto b = binning_.find(data::observableName(o));
    if (b == binning_.end()) continue;
    const data::Binning binning{b->second};
    std::vector<int32_t>& bins = s.bins[b->first];
    bins.resize(static_cast<size_t>(s.rows));
    for (size_t i = 0; i < bins.size(); ++i)
      bins[i] = !pass.empty() && !pass[i] ? kFailsSelection
                                          : binning.find(static_cast<double>(
                                                subs[i * data::kNumSubs + static_cast<size_t>(o)]));
  }
  s.read = st;
  logInfo("aggregate: rebinning from {} ({} events)", path, s.rows);
  return simulations_.emplace(path, std::move(s)).first->second;
}

ChainHistograms ChainRebinner::histograms(const std::string& dir, const json& result) {
  const std::string weights_file = dir + "/" + kChainWeightsFile;
  const std::string mc = result.value("mc", std::string());
  if (mc.empty())
    throw InputError(dir + "/" + kChainResultFile +
                     ": names no simulation (\"mc\"); the chain cannot be rebinned: aggregate "
                     "without --binning");
  // The push of each iteration (none where weights.h5 keeps `final` alone) and `final`, the
  // last push times the simulation's weights (computed so where a chain written before `final`
  // kept its push alone).
  std::error_code ec;
  if (!std::filesystem::is_regular_file(weights_file, ec))
    throw InputError(weights_file +
                     ": missing; the chain's per-event weights are what rebinning histograms: "
                     "aggregate without --binning, or run the chain again");
  const ChainWeights saved = readChainPushAndFinal(dir);
  const std::vector<std::vector<double>>& push = saved.push;
  const bool has_final = !saved.final.empty();
  if (!has_final && push.empty())
    throw InputError(weights_file +
                     ": holds neither 'final' nor 'push' weights: the chain cannot be rebinned; "
                     "aggregate without --binning, or run the chain again");
  const uint64_t events = has_final ? saved.final.size() : push.back().size();
  const Simulation& sim = simulation(mc, dir);
  // The version of the simulation the chain read (its record of size and time), where it has
  // one: the weights belong to those events.
  if (const json rec = result.value("inputs", json::object()).value("mc", json());
      rec.is_object() && rec.contains("size") && rec.contains("mtime_ns") &&
      (rec["size"].get<long long>() != sim.read.size ||
       rec["mtime_ns"].get<long long>() != sim.read.mtime_ns)) {
    const long long size = rec["size"].get<long long>();
    const long long mtime = rec["mtime_ns"].get<long long>();
    const std::string when = sim.read.mtime_ns > mtime ? "later" : "earlier";
    throw InputError(
        dir + ": read its simulation " + mc + " of " + std::to_string(size) + " bytes, " +
        (size == sim.read.size
             ? "which was modified " + when + " (the same size)"
             : "which now holds " + std::to_string(sim.read.size) + " bytes, modified " + when) +
        ": its weights belong to the events it read; restore that file" +
        (size == sim.read.size ? restoreTimeHint(mc, mtime) : std::string()) +
        ", or aggregate without --binning");
  }
  // The events the chain unfolded: the simulation's first max_mc_events (0: all).
  const json config = result.value("config", json::object());
  const int64_t cap = config.is_object() ? config.value("max_mc_events", int64_t{0}) : int64_t{0};
  const int64_t n = cap > 0 && cap < sim.rows ? cap : sim.rows;
  if (static_cast<int64_t>(events) != n)
    throw InputError(weights_file + ": '" + (has_final ? "final" : "push") + "' has " +
                     std::to_string(events) + " rows, but the chain unfolded " + std::to_string(n) +
                     " events of " + mc +
                     (cap > 0 && cap < sim.rows ? " (its max_mc_events)" : std::string()) +
                     ": the weights are not of these events; aggregate without --binning");
  const auto un = static_cast<size_t>(n);
  for (const std::vector<double>& p : push)
    if (p.size() != un)
      throw InputError(weights_file + ": 'push' has rows of " + std::to_string(p.size()) +
                       " events, the chain unfolded " + std::to_string(un) +
                       "; the file is damaged: run the chain again");
  // The prior's weights as the chain fixed them: the file's, times the MC-statistics
  // replica's Poisson draw.
  std::vector<double> w_mc(un);
  const bool mc_bootstrap = result.value("bootstrap", std::string()) == "mc";
  const std::vector<double> boot =
      mc_bootstrap ? mcBootstrapWeights(un, result.at("campaign_seed").get<uint64_t>(),
                                        result.at("replica").get<int>())
                   : std::vector<double>();
  for (size_t i = 0; i < un; ++i)
    w_mc[i] = static_cast<double>(sim.weights.empty() ? 1.0f : sim.weights[i]) *
              (mc_bootstrap ? boot[i] : 1.0);

  ChainHistograms h = readChainHistograms(dir);
  const auto replace = [&](std::vector<ObservableHistogram>& into,
                           const std::vector<double>& weights) {
    for (ObservableHistogram& o : into)
      if (const auto b = sim.bins.find(o.name); b != sim.bins.end())
        o = histogramOfBins(o.name, binning_.at(o.name), b->second, weights);
  };
  std::vector<double> w(un);
  if (has_final) {
    replace(h.unfolded, saved.final);
  } else {
    for (size_t k = 0; k < un; ++k) w[k] = push.back()[k] * w_mc[k];
    replace(h.unfolded, w);
  }
  replace(h.prior, w_mc);
  if (push.empty() || push.size() != h.iterations.size()) {
    // Without their weights the observables rebinned have no histogram per iteration; the
    // others keep theirs.
    if (!h.iterations.empty()) {
      ++without_iterations_;
      for (std::vector<ObservableHistogram>& it : h.iterations)
        for (ObservableHistogram& o : it)
          if (const auto b = binning_.find(o.name); b != binning_.end()) {
            const size_t bins = b->second.size() - 1;
            o = {o.name, b->second, std::vector<double>(bins, 0.0), std::vector<double>(bins, 0.0),
                 std::nullopt};
            h.iterations_unknown.insert(o.name);
          }
    }
  } else {
    for (size_t i = 0; i < push.size(); ++i) {
      for (size_t k = 0; k < un; ++k) w[k] = push[i][k] * w_mc[k];
      replace(h.iterations[i], w);
    }
  }
  return h;
}

}  // namespace foldfarm::ensembles
