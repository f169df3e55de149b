#include "ensembles/aggregate_bench.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "core/base/clock.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/process.hpp"
#include "core/base/progress.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/observables.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/rebin.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Writes synthetic chains as `unfold` leaves them (histograms.h5, then result.json last).
class ChainWriter {
 public:
  explicit ChainWriter(std::string root) : root_(std::move(root)), rng_(2026) {
    shape_ = histogramObservables({}, {}, {});
    for (auto& h : shape_)
      for (size_t b = 0; b < h.bins(); ++b) {
        const double x = (b + 0.5) / static_cast<double>(h.bins());
        h.sumw[b] = 1000.0 * std::exp(-(x - 0.35) * (x - 0.35) / (2 * 0.15 * 0.15)) + 5.0;
        h.sumw2[b] = h.sumw[b];
      }
  }

  // With rebinning timed: the simulation the chains name (`events` events whose gen-level
  // observables spread over their binnings, weights 1, every event passing) and the push rows
  // each chain's weights.h5 holds.
  void withSimulation(int64_t events, int iterations) {
    events_ = events;
    iterations_ = iterations;
    const std::vector<std::vector<double>> edges = observableEdges({});
    data::UnfoldArrays u;
    u.reco = data::JetArrays::zeros(events, 1);
    u.gen = data::JetArrays::zeros(events, 1);
    u.gen_subs.resize(static_cast<size_t>(events) * data::kNumSubs);
    std::normal_distribution<double> normal(0.35, 0.15);
    for (size_t i = 0; i < u.gen_subs.size(); ++i) {
      const std::vector<double>& e = edges[i % data::kNumSubs];
      u.gen_subs[i] = static_cast<float>(e.front() + normal(rng_) * (e.back() - e.front()));
    }
    u.reco_subs = u.gen_subs;
    simulation_ = root_ + "/simulation.h5";
    data::writeUnfoldFile(simulation_, u);
  }

  // Chain (r, m) in root/rel: the spectrum tilted by `tilt` (a variation's effect), with
  // Poisson-sized noise of its own.
  void write(const std::string& rel, int r, int m, double tilt, const nlohmann::json& extra) {
    const std::string dir = root_ + "/" + rel;
    fs::create_directories(dir);
    ChainHistograms h{shape_, shape_, {}};
    std::normal_distribution<double> normal(0.0, 1.0);
    for (auto& obs : h.unfolded)
      for (size_t b = 0; b < obs.bins(); ++b) {
        const double x = (b + 0.5) / static_cast<double>(obs.bins());
        const double mean = obs.sumw[b] * (1.0 + tilt * (x - 0.5));
        obs.sumw[b] = std::max(0.0, mean + std::sqrt(mean) * normal(rng_));
      }
    writeChainHistograms(dir, h, {{"replica", r}, {"member", m}});
    nlohmann::json result = {{"replica", r}, {"member", m}, {"campaign_seed", 42}};
    if (events_ > 0) {
      ChainWeights w;
      std::gamma_distribution<double> push(4.0, 0.25);  // mean 1, as a chain's push weights
      for (int i = 0; i < iterations_; ++i) {
        w.push.emplace_back(static_cast<size_t>(events_));
        for (double& x : w.push.back()) x = push(rng_);
      }
      w.pull = w.push;
      w.final = w.push.back();
      writeChainWeights(dir, w, {{"replica", r}, {"member", m}});
      result["mc"] = simulation_;
    }
    result.update(extra);
    writeJsonAtomic(dir + "/" + kChainResultFile, result);
  }

 private:
  std::string root_;
  std::mt19937_64 rng_;
  std::vector<ObservableHistogram> shape_;
  int64_t events_ = 0;
  int iterations_ = 0;
  std::string simulation_;
};

nlohmann::json variationOf(const std::string& name, const std::string& type,
                           const std::string& source, const std::string& direction) {
  return {{"variation",
           {{"name", name},
            {"type", type},
            {"source", source},
            {"direction", direction},
            {"symmetrise", "half_difference"}}}};
}

// Aggregates `runs` into out and times it; Error when it did not read `chains` chains.
nlohmann::json timeAggregation(const std::vector<std::string>& runs, const std::string& out,
                               ShiftNoise shift_noise, int64_t chains,
                               const ObservableBinnings& rebin = {}) {
  AggregateOptions options;
  options.plots = false;
  options.event_weights = EventWeightsChoice::kNone;
  options.shift_noise = shift_noise;
  options.rebin = rebin;
  const Clock::time_point t0 = Clock::now();
  const nlohmann::json summary = aggregateRunsWithOptions(runs, out, std::nullopt, options);
  const double s = secondsSince(t0);
  int64_t read = summary.at("chains").get<int64_t>();
  for (const auto& v : summary.at("variations")) read += v.at("chains").get<int64_t>();
  if (read != chains)
    throw Error("bench aggregate: the aggregation of " + out + " read " + std::to_string(read) +
                " chains of the " + std::to_string(chains) + " written");
  return {{"chains", chains},
          {"seconds", s},
          {"chains_per_s", s > 0 ? chains / s : 0.0},
          {"ms_per_chain", 1e3 * s / static_cast<double>(chains)}};
}

}  // namespace

nlohmann::json benchAggregate(const AggregateBenchOptions& o) {
  if (o.replicas < 2) throw InputError("bench aggregate: --replicas must be at least 2");
  if (o.members < 1) throw InputError("bench aggregate: --members must be at least 1");
  if (o.variation_replicas < 0 || o.variation_replicas > o.replicas)
    throw InputError("bench aggregate: --variation-replicas must be between 0 and --replicas");
  if (o.rebin_events < 0 || o.rebin_iterations < 1)
    throw InputError(
        "bench aggregate: --rebin-events must be 0 or more and --rebin-iterations 1 or more");
  TempDir scratch("ff_bench_aggregate", o.scratch);  // kept, also after a failure, with `keep`
  const std::string root = o.keep ? scratch.release() : scratch.path();
  nlohmann::json out = {{"replicas", o.replicas},
                        {"members", o.members},
                        {"variation_replicas", o.variation_replicas}};
  if (o.keep) out["dir"] = root;

  // The chains: the nominal, then the variations of the first variation_replicas replicas.
  ChainWriter writer(root);
  if (o.rebin_events > 0) {
    writer.withSimulation(o.rebin_events, o.rebin_iterations);
    out["rebin_events"] = o.rebin_events;
    out["rebin_iterations"] = o.rebin_iterations;
  }
  const int64_t nominal_chains = static_cast<int64_t>(o.replicas) * o.members;
  const int64_t pair_chains = static_cast<int64_t>(o.variation_replicas) * o.members;
  const int64_t all_chains = nominal_chains + 3 * pair_chains + o.variation_replicas;
  Progress progress("bench aggregate: writing", all_chains, "chains");
  int64_t written = 0;
  const Clock::time_point t0 = Clock::now();
  auto name = [](const char* what, int r, int m) {
    return std::string(what) + ".r" + std::to_string(r) + "m" + std::to_string(m);
  };
  for (int r = 0; r < o.replicas; ++r)
    for (int m = 0; m < o.members; ++m) {
      writer.write("nominal/" + name("nominal", r, m), r, m, 0.0, nlohmann::json::object());
      progress.update(++written);
    }
  for (int r = 0; r < o.variation_replicas; ++r) {
    for (int m = 0; m < o.members; ++m) {
      writer.write("variations/" + name("det_up", r, m), r, m, 0.05,
                   variationOf("det_up", "detector", "det", "up"));
      writer.write("variations/" + name("det_down", r, m), r, m, -0.05,
                   variationOf("det_down", "detector", "det", "down"));
      writer.write("variations/" + name("alt", r, m), r, m, 0.2,
                   variationOf("alt", "modelling", "generator", ""));
      written += 3;
    }
    writer.write("variations/" + name("mc_stat", r, 0), r, 0, 0.0,
                 variationOf("mc_stat", "mc_bootstrap", "", ""));
    progress.update(++written);
  }
  progress.finish();
  const double write_s = secondsSince(t0);
  out["write"] = {{"chains", all_chains},
                  {"seconds", write_s},
                  {"chains_per_s", write_s > 0 ? all_chains / write_s : 0.0}};

  out["nominal"] = timeAggregation({root + "/nominal"}, root + "/agg_nominal", ShiftNoise::kKeep,
                                   nominal_chains);
  if (o.variation_replicas > 0)
    out["with_variations"] =
        timeAggregation({root + "/nominal", root + "/variations"}, root + "/agg_variations",
                        ShiftNoise::kSubtract, all_chains);
  if (o.rebin_events > 0) {
    ObservableBinnings own;
    const std::vector<std::vector<double>> edges = observableEdges({});
    for (int k = 0; k < data::kNumSubs; ++k) own[data::observableName(k)] = edges[k];
    nlohmann::json& t = out["rebinned"] = timeAggregation(
        {root + "/nominal"}, root + "/agg_rebinned", ShiftNoise::kKeep, nominal_chains, own);
    const double fills =
        static_cast<double>(nominal_chains) * o.rebin_events * (o.rebin_iterations + 2);
    t["events_per_s"] = t["seconds"].get<double>() > 0 ? fills / t["seconds"].get<double>() : 0.0;
  }
  out["peak_rss_MB"] = peakRssMB();
  logInfo("bench aggregate: {} chains in {:.1f} s ({:.0f} chains/s){}", nominal_chains,
          out["nominal"]["seconds"].get<double>(), out["nominal"]["chains_per_s"].get<double>(),
          o.keep ? "; kept in " + root : std::string());
  return out;
}

}  // namespace foldfarm::ensembles
