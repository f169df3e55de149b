#include "ensembles/event_weights.hpp"

#include <hdf5.h>

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/sha256.hpp"
#include "core/build_info/build_info.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/jet_reader.hpp"
#include "ensembles/chain_output.hpp"

namespace foldfarm::ensembles {
namespace {

constexpr const char* kSelection =
    "Rows follow the events of the simulation file (attribute simulation), in its order. The "
    "unfolded distribution of a generator-level observable is the histogram of the file's "
    "gen-level values (e.g. gen_subs) weighted by a column over the events with pass_gen != 0 "
    "(all events when the file has no pass_gen). A column already includes the file's event "
    "weights (weights) and, for mc_bootstrap columns, the Poisson bootstrap weights of the "
    "simulation. Events failing the gen selection carry their push weight of 1 (times those "
    "factors): they are not part of the unfolded result. A column whose chains unfolded the "
    "file's first events only (the chain config's max_mc_events; its attribute "
    "events_unfolded) is 0 past them.";

std::string replicaName(int r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "replica_%04d", r);
  return buf;
}

// The one simulation of a group, or InputError.
std::string oneSimulation(const WeightGroup& g) {
  const std::string who =
      g.variation.empty() ? "the nominal chains" : "variation '" + g.variation + "'";
  if (g.simulations.count("") || g.simulations.empty())
    throw InputError("aggregate: " + who +
                     " name no simulation (result.json \"mc\"); event_weights.h5 needs it, rerun "
                     "them with this foldfarm");
  if (g.simulations.size() > 1)
    throw InputError("aggregate: " + who + " unfold different simulations (" +
                     *g.simulations.begin() + ", " + *g.simulations.rbegin() +
                     "); aggregate the chains of one simulation at a time");
  return *g.simulations.begin();
}

// The chain config's max_mc_events of the chain in `dir` (0: every event).
int64_t mcEventCap(const std::string& dir) {
  const nlohmann::json result = readJson(dir + "/" + kChainResultFile);
  const nlohmann::json config = result.value("config", nlohmann::json::object());
  const auto cap = config.is_object() ? config.find("max_mc_events") : config.end();
  return cap != config.end() && cap->is_number_integer() ? cap->get<int64_t>() : 0;
}

// True when every chain of the group has `final`; each length must equal `rows`, or the chain
// config's max_mc_events below it (the chain unfolded the simulation's first events).
bool checkFinal(const WeightGroup& g, const std::string& simulation, int64_t rows) {
  for (const auto& [r, dirs] : g.replicas)
    for (const auto& dir : dirs) {
      const std::optional<uint64_t> n = chainFinalWeightsRows(dir);
      if (!n) {
        logWarn("aggregate: {} has no per-event 'final' in {} (written before it existed); {}", dir,
                kChainWeightsFile,
                g.variation.empty() ? "event_weights.h5 is not written"
                                    : "event_weights.h5 leaves out variation " + g.variation);
        return false;
      }
      if (static_cast<int64_t>(*n) == rows) continue;
      const int64_t cap = mcEventCap(dir);
      if (cap > 0 && cap < rows && static_cast<int64_t>(*n) == cap) continue;
      throw InputError(
          dir + "/" + kChainWeightsFile + ": 'final' has " + std::to_string(*n) +
          " rows but the simulation " + simulation + " has " + std::to_string(rows) +
          (cap > 0 ? " and the chain's max_mc_events is " + std::to_string(cap) : std::string()) +
          "; rerun this chain on that simulation or aggregate without it");
    }
  return true;
}

int64_t simulationRows(const std::string& path) {
  return data::JetFile(path).numJets();
}

// Replica 0 (no bootstrap) when the group has it, else its lowest replica.
EventWeightColumn centralColumn(const WeightGroup& g, const std::string& dataset,
                                const std::string& simulation, int64_t rows) {
  const auto it = g.replicas.count(0) ? g.replicas.find(0) : g.replicas.begin();
  return {dataset, g.variation, g.type, simulation, it->first, rows, it->second, ""};
}

// The groups with their central replica's chains only: the nominal's replica 0 (its lowest
// replica when it has none, which gives no column but names its simulation), each other
// variation's centralColumn() replica; no mc_bootstrap variation.
std::vector<WeightGroup> centralGroups(const std::vector<WeightGroup>& groups) {
  std::vector<WeightGroup> central;
  for (const WeightGroup& g : groups) {
    if (eventWeightColumnsOf(g.type, 1, true) == 0) continue;  // mc_bootstrap
    WeightGroup c = g;
    c.replicas.clear();
    if (!g.replicas.empty())
      c.replicas.insert(g.replicas.count(0) ? *g.replicas.find(0) : *g.replicas.begin());
    central.push_back(std::move(c));
  }
  return central;
}

void writeColumnAttrs(hid_t file, const std::string& path, const EventWeightColumn& c,
                      int64_t unfolded) {
  const std::string ctx = path + ": attributes of " + c.dataset;
  data::H5Handle d =
      FF_H5_OWN(H5Dopen2(file, c.dataset.c_str(), H5P_DEFAULT), data::H5Kind::kDataset, ctx);
  data::h5WriteStringAttr(d.get(), "variation", c.variation);
  data::h5WriteStringAttr(d.get(), "type", c.type);
  data::h5WriteInt64Attr(d.get(), "replica", c.replica);
  data::h5WriteInt64Attr(d.get(), "members", static_cast<int64_t>(c.chains.size()));
  data::h5WriteStringAttr(d.get(), "simulation", c.simulation);
  data::h5WriteInt64Attr(d.get(), "events_unfolded", unfolded);
  if (!c.shift_from.empty()) data::h5WriteStringAttr(d.get(), "shift_from", c.shift_from);
  d.close(ctx);
}

}  // namespace

int eventWeightColumnsOf(const std::string& type, int replicas, bool central_only) {
  if (type.empty() || type == "nominal") return central_only ? 1 : replicas;
  if (type == "mc_bootstrap") return central_only ? 0 : replicas;
  return 1;
}

std::optional<EventWeightsPlan> planEventWeights(const std::vector<WeightGroup>& all_groups,
                                                 bool central_only) {
  if (all_groups.empty() || !all_groups.front().variation.empty())
    throw Error("planEventWeights: the nominal group comes first");
  const std::vector<WeightGroup> groups = central_only ? centralGroups(all_groups) : all_groups;
  const WeightGroup& nominal = groups.front();
  bool any_final = false;
  for (const auto& [r, dirs] : nominal.replicas)
    for (const auto& dir : dirs) any_final = any_final || chainFinalWeightsRows(dir).has_value();
  if (!any_final) {
    logInfo("aggregate: the chains carry no per-event 'final' weights; no event_weights.h5");
    return std::nullopt;
  }
  EventWeightsPlan plan;
  plan.simulation = oneSimulation(nominal);
  plan.rows = simulationRows(plan.simulation);
  if (!checkFinal(nominal, plan.simulation, plan.rows)) return std::nullopt;
  plan.simulation_sha256 = sha256File(plan.simulation);

  if (nominal.replicas.count(0))
    plan.columns.push_back({"weights/nominal", "", "nominal", plan.simulation, 0, plan.rows,
                            nominal.replicas.at(0), ""});
  else
    logWarn(
        "aggregate: no chain of the nominal's replica 0 (no bootstrap) is among those "
        "aggregated; event_weights.h5 has no weights/nominal column");
  for (const auto& [r, dirs] : nominal.replicas)
    if (r != 0 && !central_only)
      plan.columns.push_back(
          {"weights/" + replicaName(r), "", "nominal", plan.simulation, r, plan.rows, dirs, ""});

  std::vector<EventWeightColumn> others;
  std::set<std::string> names;
  for (const auto& c : plan.columns) names.insert(c.dataset);
  auto add = [&](std::vector<EventWeightColumn>& to, EventWeightColumn c) {
    if (!names.insert(c.dataset).second)
      throw InputError("aggregate: two results of event_weights.h5 would both be " + c.dataset +
                       "; rename variation '" + c.variation + "'");
    to.push_back(std::move(c));
  };
  for (size_t i = 1; i < groups.size(); ++i) {
    const WeightGroup& g = groups[i];
    if (g.type == "modelling") {
      const std::string sim = oneSimulation(g);
      const int64_t rows = simulationRows(sim);
      if (!checkFinal(g, sim, rows)) continue;
      plan.others.push_back({g.variation, sim, sha256File(sim), rows});
      add(others, centralColumn(g, "other_simulations/" + g.variation + "/weights", sim, rows));
      continue;
    }
    // detector, mc_bootstrap, non_closure: the nominal's generated events.
    const std::string sim = oneSimulation(g);
    if (!checkFinal(g, sim, plan.rows)) continue;
    if (g.type == "mc_bootstrap") {
      for (const auto& [r, dirs] : g.replicas)
        add(plan.columns, {"weights/" + g.variation + "_" + replicaName(r), g.variation, g.type,
                           sim, r, plan.rows, dirs, ""});
    } else {
      add(plan.columns, centralColumn(g, "weights/" + g.variation, sim, plan.rows));
    }
  }
  plan.columns.insert(plan.columns.end(), others.begin(), others.end());
  return plan;
}

AtomicFile writeEventWeights(const EventWeightsPlan& plan, const std::string& path) {
  AtomicFile out(path);
  const std::string tmp = out.tempPath();
  {
    data::H5Handle f;
    try {
      f = data::h5Create(tmp);
    } catch (const Error&) {
      throw Error(h5CreateFailure(tmp));
    }
    nlohmann::json columns = nlohmann::json::array(), other_names = nlohmann::json::array();
    logInfo("aggregate: writing {}: {} columns of {} events, {:.1f} MiB", path, plan.columns.size(),
            plan.rows, 8.0 * static_cast<double>(plan.rows) * plan.columns.size() / (1 << 20));
    Progress progress("event_weights.h5", static_cast<int64_t>(plan.columns.size()), "columns");
    int64_t written = 0;
    for (const auto& c : plan.columns) {
      progress.update(written++);
      std::vector<double> sum(static_cast<size_t>(c.rows), 0.0);
      size_t unfolded = 0;  // the events the chains unfolded: the first ones (max_mc_events)
      for (const auto& dir : c.chains) {
        const std::vector<double> w = readChainFinalWeights(dir);
        if (w.size() > sum.size() || (unfolded != 0 && w.size() != unfolded))
          throw Error(dir + "/" + kChainWeightsFile + ": 'final' changed length while aggregating");
        unfolded = w.size();
        for (size_t i = 0; i < w.size(); ++i) sum[i] += w[i];
      }
      for (double& x : sum) x /= static_cast<double>(c.chains.size());
      writeFloat64Dataset(f.get(), tmp, c.dataset, sum, {sum.size()});
      writeColumnAttrs(f.get(), tmp, c, static_cast<int64_t>(unfolded));
      if (c.dataset.rfind("weights/", 0) == 0) columns.push_back(c.dataset.substr(8));
    }
    progress.update(written);
    progress.finish();
    for (const auto& o : plan.others) {
      const std::string g = "other_simulations/" + o.variation;
      data::H5Handle group = FF_H5_OWN(H5Gopen2(f.get(), g.c_str(), H5P_DEFAULT),
                                       data::H5Kind::kGroup, tmp + ": opening " + g);
      data::h5WriteStringAttr(group.get(), "simulation", o.simulation);
      data::h5WriteStringAttr(group.get(), "simulation_sha256", o.sha256);
      data::h5WriteInt64Attr(group.get(), "rows", o.rows);
      data::h5WriteStringAttr(group.get(), "selection", kSelection);
      other_names.push_back(o.variation);
    }
    data::h5WriteStringAttr(f.get(), "simulation", plan.simulation);
    data::h5WriteStringAttr(f.get(), "simulation_sha256", plan.simulation_sha256);
    data::h5WriteInt64Attr(f.get(), "rows", plan.rows);
    data::h5WriteStringAttr(f.get(), "selection", kSelection);
    data::h5WriteStringAttr(f.get(), "columns", columns.dump());
    data::h5WriteStringAttr(f.get(), "other_simulations", other_names.dump());
    data::h5WriteStringAttr(f.get(), "build", buildInfoJson().dump());
    f.close(tmp + ": closing");
  }
  return out;
}

}  // namespace foldfarm::ensembles
