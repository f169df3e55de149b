#include "ensembles/rebin.hpp"

#include <algorithm>
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
    if (std::find(names.begin(), names.end(), it.key()) == names.end()) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      throw InputError(where + ": unknown observable '" + it.key() + "' (known: " + known + ")");
    }
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

namespace {

ObservableBinnings binningArgument(const std::string& arg) {
  const size_t first = arg.find_first_not_of(" \t\n");
  if (first != std::string::npos && arg[first] == '{') {
    return binningFromJson(
        parseJsonText(arg, "--binning",
                      "give e.g. '{\"mass\": {\"lo\": 0, \"hi\": 300, \"bins\": 60}}' or a "
                      "file holding it"),
        "--binning");  // its mistakes: "--binning of 'mass': ..."
  }
  if (std::error_code ec; !std::filesystem::is_regular_file(arg, ec))
    throw InputError("--binning " + arg +
                     ": no such file; give a JSON file of binnings, or the JSON itself ('{...}')");
  const json j = readJsonFile(arg, "check the file given to --binning");
  // A chain config (or a campaign's chain.config) holds its binning under "binning".
  if (j.is_object() && j.contains("binning") && j.at("binning").is_object())
    return binningFromJson(j.at("binning"), arg + ": 'binning'");
  return binningFromJson(j, arg);
}

}  // namespace

ObservableBinnings readBinningArgument(const std::string& arg) {
  ObservableBinnings b = binningArgument(arg);
  if (b.empty())
    throw InputError("--binning " + arg +
                     ": names no observable; name those to rebin, e.g. '{\"mass\": {\"lo\": 0, "
                     "\"hi\": 300, \"bins\": 60}}'");
  return b;
}

ChainRebinner::ChainRebinner(ObservableBinnings binning) : binning_(std::move(binning)) {
  if (binning_.empty())
    throw InputError(
        "--binning names no observable; name those to rebin, e.g. '{\"mass\": "
        "{\"lo\": 0, \"hi\": 300, \"bins\": 60}}'");
}

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
  const int64_t rows = file.numJets();
  if (file.has("gen_subs")) {
    s.subs = file.readFloat("gen_subs");
  } else {
    if (!file.hasLevel("gen"))
      throw InputError(path + ": holds no generator level (gen_subs or gen jets), so " + chain +
                       " cannot be rebinned from it; aggregate without --binning");
    s.subs = data::computeObservables(file.readJets(0, -1, "gen"));
  }
  if (static_cast<int64_t>(s.subs.size()) != rows * data::kNumSubs)
    throw InputError(path + ": 'gen_subs' holds " + std::to_string(s.subs.size()) +
                     " values, not " + std::to_string(rows) + " x " +
                     std::to_string(data::kNumSubs) + "; check the file");
  if (file.has("weights")) s.weights = file.readFloat("weights");
  s.pass = file.readPassFlags("pass_gen");
  if (s.pass.empty()) s.pass.assign(static_cast<size_t>(rows), 1);
  s.read = st;
  logInfo("aggregate: rebinning from {} ({} events)", path, rows);
  return simulations_.emplace(path, std::move(s)).first->second;
}

ChainHistograms ChainRebinner::histograms(const std::string& dir, const json& result) {
  const std::string weights_file = dir + "/" + kChainWeightsFile;
  const std::optional<uint64_t> rows = chainFinalWeightsRows(dir);
  if (!rows)
    throw InputError(weights_file +
                     ": no per-event 'final' weights (the chain was written before weights.h5 "
                     "held them): it cannot be rebinned; aggregate without --binning, or run the "
                     "chain again");
  const std::string mc = result.value("mc", std::string());
  if (mc.empty())
    throw InputError(dir + "/" + kChainResultFile +
                     ": names no simulation (\"mc\"); the chain cannot be rebinned: aggregate "
                     "without --binning");
  const Simulation& sim = simulation(mc, dir);
  // The version of the simulation the chain read (its record of size and time), where it has
  // one: the weights belong to those events.
  if (const json rec = result.value("inputs", json::object()).value("mc", json());
      rec.is_object() && rec.contains("size") && rec.contains("mtime_ns") &&
      (rec["size"].get<long long>() != sim.read.size ||
       rec["mtime_ns"].get<long long>() != sim.read.mtime_ns)) {
    const long long size = rec["size"].get<long long>();
    throw InputError(dir + ": read its simulation " + mc + " as " + std::to_string(size) +
                     " bytes, which now holds " + std::to_string(sim.read.size) +
                     " bytes, modified " +
                     (sim.read.mtime_ns > rec["mtime_ns"].get<long long>() ? "later" : "earlier") +
                     ": its weights belong to the events it read; restore that file" +
                     (size == sim.read.size ? restoreTimeHint(mc, rec["mtime_ns"].get<long long>())
                                            : std::string()) +
                     ", or aggregate without --binning");
  }
  // The events the chain unfolded: the simulation's first max_mc_events (0: all).
  const auto n_file = static_cast<int64_t>(sim.pass.size());
  const json config = result.value("config", json::object());
  const int64_t cap = config.is_object() ? config.value("max_mc_events", int64_t{0}) : int64_t{0};
  const int64_t n = cap > 0 && cap < n_file ? cap : n_file;
  if (static_cast<int64_t>(*rows) != n)
    throw InputError(weights_file + ": 'final' has " + std::to_string(*rows) +
                     " rows, but the chain unfolded " + std::to_string(n) + " events of " + mc +
                     (cap > 0 && cap < n_file ? " (its max_mc_events)" : std::string()) +
                     ": the weights are not of these events; aggregate without --binning");
  const auto un = static_cast<size_t>(n);
  std::vector<float> subs(sim.subs.begin(), sim.subs.begin() + static_cast<long>(un * 6));
  std::vector<uint8_t> pass(sim.pass.begin(), sim.pass.begin() + static_cast<long>(un));
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
  std::vector<std::vector<double>> edges;
  std::vector<size_t> rebinned;
  for (size_t o = 0; o < h.prior.size(); ++o) {
    const auto it = binning_.find(h.prior[o].name);
    edges.push_back(it != binning_.end() ? it->second : h.prior[o].edges);
    if (it != binning_.end()) rebinned.push_back(o);
  }
  const auto replace = [&](std::vector<ObservableHistogram>& into,
                           const std::vector<double>& weights) {
    std::vector<ObservableHistogram> fresh = histogramObservables(subs, weights, pass, edges);
    for (size_t o : rebinned) into[o] = std::move(fresh[o]);
  };
  replace(h.unfolded, readChainFinalWeights(dir));
  replace(h.prior, w_mc);
  const std::vector<std::vector<double>> push = readChainPushWeights(dir);
  if (push.empty() || push.size() != h.iterations.size()) {
    // Its iterations' histograms cannot be rebinned without their weights.
    if (!h.iterations.empty()) ++without_iterations_;
    h.iterations.clear();
  } else {
    for (size_t i = 0; i < push.size(); ++i) {
      if (push[i].size() != un)
        throw InputError(weights_file + ": 'push' has rows of " + std::to_string(push[i].size()) +
                         " events, 'final' " + std::to_string(un) +
                         "; the file is damaged: run the chain again");
      std::vector<double> w(un);
      for (size_t k = 0; k < un; ++k) w[k] = push[i][k] * w_mc[k];
      replace(h.iterations[i], w);
    }
  }
  return h;
}

}  // namespace foldfarm::ensembles
