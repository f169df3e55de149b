#include "ensembles/chain_groups.hpp"

#include <filesystem>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "ensembles/band_stats.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;

// What every chain of a group (the nominal, or one variation) unfolds alike: its record but
// for its place (replica, member), its warm start and where it ran (chain.hpp). The
// foundation is compared by its hash when the record has one.
nlohmann::json unfoldingOf(const nlohmann::json& res) {
  nlohmann::json u = nlohmann::json::object();
  for (const char* k : {"mc", "data", "iterations", "config", "bootstrap"})
    if (res.contains(k)) u[k] = res[k];
  const auto sha = res.find("init_sha256");
  if (sha != res.end() && sha->is_string() && !sha->get<std::string>().empty())
    u["foundation"] = "sha256:" + sha->get<std::string>();
  else if (res.contains("init"))
    u["foundation"] = res["init"];
  return u;
}

// The foundation a chain's record names, for a person: "pre/model (sha256 0123456789ab…)",
// "none (no foundation)".
std::string foundationOf(const nlohmann::json& res) {
  const auto init = res.find("init");
  const std::string path = init != res.end() && init->is_string() ? init->get<std::string>() : "";
  if (path.empty() || path == "none") return "none (no foundation)";
  const auto sha = res.find("init_sha256");
  if (sha == res.end() || !sha->is_string() || sha->get<std::string>().empty()) return path;
  const std::string hex = sha->get<std::string>();
  return path + " (sha256 " + (hex.size() > 12 ? hex.substr(0, 12) + "..." : hex) + ")";
}

// The first key (dotted, e.g. "config.lr") where `a` and `b` differ, with both values.
std::string firstDifference(const nlohmann::json& a, const nlohmann::json& b,
                            const std::string& prefix = "") {
  if (a.is_object() && b.is_object()) {
    std::set<std::string> keys;
    for (auto it = a.begin(); it != a.end(); ++it) keys.insert(it.key());
    for (auto it = b.begin(); it != b.end(); ++it) keys.insert(it.key());
    for (const auto& k : keys) {
      const nlohmann::json none;
      const nlohmann::json& x = a.contains(k) ? a[k] : none;
      const nlohmann::json& y = b.contains(k) ? b[k] : none;
      if (x != y) return firstDifference(x, y, prefix + (prefix.empty() ? "" : ".") + k);
    }
    return prefix;
  }
  return prefix + " " + (a.is_null() ? std::string("(none)") : a.dump()) + " against " +
         (b.is_null() ? std::string("(none)") : b.dump());
}

// Adds one chain to its group of `set`.
void addChain(ChainGroups& set, std::optional<uint64_t>& campaign_seed, const std::string& dir,
              ChainRebinner* rebin) {
  const std::string result_path = dir + "/" + kChainResultFile;
  nlohmann::json res = readJson(result_path);
  // A whole number >= 0 (parsed JSON holds those unsigned), in the file's words when it is not.
  const auto whole = [&](const char* key, uint64_t most) {
    const auto it = res.find(key);
    if (it == res.end() || !it->is_number_unsigned() || it->get<uint64_t>() > most)
      throw InputError(result_path + ": '" + key + "' is " +
                       (it == res.end() ? std::string("missing") : it->dump()) +
                       ", not a whole number in [0, " + std::to_string(most) +
                       "]; the file is damaged: rerun the chain");
    return it->get<uint64_t>();
  };
  const int r = static_cast<int>(whole("replica", INT32_MAX));
  const int m = static_cast<int>(whole("member", INT32_MAX));
  const uint64_t seed = whole("campaign_seed", UINT64_MAX);
  if (const auto st = res.find("status");
      st != res.end() && !(st->is_string() && st->get<std::string>() == "done"))
    throw InputError(result_path + ": status " + st->dump() +
                     ", not \"done\"; rerun the chain or leave it out");
  if (campaign_seed && *campaign_seed != seed)
    throw InputError(dir + ": campaign seed " + std::to_string(seed) + " differs from " +
                     std::to_string(*campaign_seed) +
                     " of the other chains; aggregate one "
                     "campaign at a time");
  campaign_seed = seed;
  // Chains written before the classifier choice existed trained PET.
  const std::string clf = res.contains("config") && res["config"].is_object()
                              ? res["config"].value("classifier", std::string("pet"))
                              : std::string("pet");
  set.classifiers.insert(clf);
  const std::optional<Variation> variation = parseVariation(res, result_path);
  ChainGroup& g = set.groups[variation ? variation->name : std::string()];
  if (g.first_chain.empty()) {
    g.variation = variation;
    g.first_chain = dir;
  } else if (!(g.variation == variation)) {
    throw InputError(result_path + ": variation '" + variation->name +
                     "' is described differently (type, source, direction or symmetrise) in " +
                     g.first_chain + "/" + kChainResultFile +
                     "; give every chain of a variation the same description");
  }
  const nlohmann::json unfolding = unfoldingOf(res);
  // Its chain format, from its record or, for an older build's, its steps' (history.json).
  nlohmann::json steps;
  if (!res.contains("chain_format")) {
    const std::string history = dir + "/" + kChainHistoryFile;
    if (std::error_code ec; fs::is_regular_file(history, ec)) {
      const nlohmann::json h = nlohmann::json::parse(readFile(history), nullptr, false);
      if (h.is_object()) steps = h.value("steps", nlohmann::json());
    }
  }
  if (const int format = chainFormatOf(res, steps); format != 0)
    set.chain_formats[format].push_back(dir);
  if (g.unfolding.is_null()) {
    g.unfolding = unfolding;
    g.foundation = foundationOf(res);
  } else if (unfolding.value("foundation", nlohmann::json()) !=
             g.unfolding.value("foundation", nlohmann::json())) {
    throw InputError(dir + ": foundation " + foundationOf(res) + ", where " + g.first_chain +
                     " had " + g.foundation + "; aggregate the chains of one foundation at a time");
  } else if (unfolding != g.unfolding) {
    // Replicas and members of one unfolding only: another input, iteration count,
    // configuration or foundation would enter the band as if it were a fluctuation.
    throw InputError(dir + ": unfolds otherwise than " + g.first_chain + " (" +
                     firstDifference(unfolding, g.unfolding) +
                     "); aggregate the chains of one unfolding at a time");
  }
  // The same paths, but did they hold the same files? (Chains written before the record
  // have none and are taken on their paths.)
  const nlohmann::json read = res.value("inputs", nlohmann::json());
  if (g.inputs.is_null()) {
    g.inputs = read;
  } else if (!read.is_null() && read != g.inputs) {
    const std::string key = firstDifference(read, g.inputs);
    const std::string file = key.substr(0, key.find('.'));
    throw InputError(dir + ": read another version of its " + file + " file " +
                     res.value(file, std::string("?")) + " than " + g.first_chain + " (" + key +
                     "): the file changed between the chains; rerun them on one version of it");
  }
  if (!g.seen.insert({r, m}).second) {
    logWarn("aggregate: {} repeats replica {} member {}; ignored", dir, r, m);
    return;
  }
  ++set.builds[res.value("build", nlohmann::json())];
  ChainHistograms h = rebin ? rebin->histograms(dir, res) : readChainHistograms(dir);
  if (g.prior.empty()) g.prior = h.prior;
  for (size_t o = 0; o < h.unfolded.size(); ++o)
    if (h.unfolded[o].edges != g.prior[o].edges)
      throw InputError(
          dir + ": binning of " + h.unfolded[o].name + " differs from " + g.first_chain +
          (variation ? " (both of variation '" + variation->name + "')" : std::string()) +
          "; aggregate with --binning to rebin every chain alike from its weights");
  if (g.unfolded_outside.empty())
    g.unfolded_outside.assign(h.unfolded.size(), std::array<double, 3>{0, 0, 0});
  for (size_t o = 0; o < h.unfolded.size(); ++o) {
    std::optional<std::array<double, 3>>& sum = g.unfolded_outside[o];
    const ObservableHistogram& u = h.unfolded[o];
    if (!u.outside) sum.reset();
    if (!sum) continue;
    (*sum)[0] += (*u.outside)[0];
    (*sum)[1] += (*u.outside)[1];
    for (double w : u.sumw) (*sum)[2] += w;
  }
  for (size_t o = 0; o < h.unfolded.size(); ++o)
    if (h.iterations_unknown.count(h.unfolded[o].name)) g.iterations_unknown.insert(o);
  ReplicaSum& acc = g.replicas[r];
  std::vector<std::vector<double>> member_density;
  for (const auto& u : h.unfolded) member_density.push_back(density(u.sumw, u.edges));
  acc.member_density[m] = std::move(member_density);
  if (acc.sumw.empty()) {
    for (const auto& u : h.unfolded) {
      acc.sumw.push_back(u.sumw);
      acc.sumw2.push_back(u.sumw2);
    }
  } else {
    for (size_t o = 0; o < h.unfolded.size(); ++o)
      for (size_t b = 0; b < h.unfolded[o].sumw.size(); ++b) {
        acc.sumw[o][b] += h.unfolded[o].sumw[b];
        acc.sumw2[o][b] += h.unfolded[o].sumw2[b];
      }
  }
  // Each iteration's unfolded Σw, where the chain kept them and every earlier member of the
  // replica had as many.
  if (!h.iterations.empty() && ((acc.iteration_members == 0 && acc.members == 0) ||
                                acc.iteration_sumw.size() == h.iterations.size())) {
    if (acc.iteration_sumw.empty()) {
      for (const auto& it : h.iterations) {
        std::vector<std::vector<double>> per_observable;
        for (const auto& u : it) per_observable.push_back(u.sumw);
        acc.iteration_sumw.push_back(std::move(per_observable));
      }
    } else {
      for (size_t i = 0; i < h.iterations.size(); ++i)
        for (size_t o = 0; o < h.iterations[i].size(); ++o)
          for (size_t b = 0; b < h.iterations[i][o].sumw.size(); ++b)
            acc.iteration_sumw[i][o][b] += h.iterations[i][o].sumw[b];
    }
    ++acc.iteration_members;
  }
  ++acc.members;
  ++g.chains;
  g.member_dirs[r].push_back(dir);
  g.mc.insert(res.contains("mc") && res["mc"].is_string() ? res["mc"].get<std::string>() : "");
  const auto warm = res.find("warm_from");
  g.warm_started = g.warm_started ||
                   (warm != res.end() && warm->is_string() && !warm->get<std::string>().empty());
  g.data.insert(res.contains("data") && res["data"].is_string() ? res["data"].get<std::string>()
                                                                : "");
}

}  // namespace

std::vector<double> density(const std::vector<double>& sumw, const std::vector<double>& edges) {
  double total = 0;
  for (double v : sumw) total += v;
  std::vector<double> d(sumw.size(), 0.0);
  if (total <= 0) return d;
  for (size_t b = 0; b < sumw.size(); ++b) d[b] = sumw[b] / (total * (edges[b + 1] - edges[b]));
  return d;
}

MixedChainFormatsError::MixedChainFormatsError(
    const std::map<int, std::vector<std::string>>& formats)
    : InputError(message(formats)) {
  const int newest = formats.rbegin()->first;
  for (const auto& [format, dirs] : formats)
    if (format != newest) older.insert(older.end(), dirs.begin(), dirs.end());
}

std::string MixedChainFormatsError::message(
    const std::map<int, std::vector<std::string>>& formats) {
  const auto& [newest, newer] = *formats.rbegin();
  size_t n_older = 0;
  for (const auto& [format, dirs] : formats)
    if (format != newest) n_older += dirs.size();
  const auto& [oldest, first_older] = *formats.begin();
  const std::string more =
      n_older > 1 ? " and " + std::to_string(n_older - 1) + " more chain(s)" : std::string();
  return first_older.front() + more + ": computed by a foldfarm build whose OmniFold steps " +
         "differ (" + chainFormatText(oldest) + ") from those of " + std::to_string(newer.size()) +
         " chain(s) such as " + newer.front() + " (" + chainFormatText(newest) +
         "): chains of both make no band; run the " + std::to_string(n_older) +
         " older chain(s) again with the newer build, or aggregate " +
         "with the build that ran them";
}

ChainGroups readChainGroups(const std::vector<std::string>& chain_dirs, ChainRebinner* rebin) {
  ChainGroups set;
  std::optional<uint64_t> campaign_seed;
  Progress progress("aggregate", static_cast<int64_t>(chain_dirs.size()), "chains");
  int64_t read_chains = 0;
  for (const auto& dir : chain_dirs) {
    progress.update(read_chains++);
    addChain(set, campaign_seed, dir, rebin);
  }
  progress.update(read_chains);
  progress.finish();
  // Steps computed two ways (a campaign continued by a newer build) are two unfoldings, in a
  // group or across the nominal and its variations (each shift would hold the change): no
  // band of both (before: aggregated without a word).
  if (set.chain_formats.size() > 1) throw MixedChainFormatsError(set.chain_formats);
  if (!set.groups.count(""))
    throw InputError(
        "aggregate: only variation chains under the given directories; the nominal chains "
        "(result.json without \"variation\") are needed to aggregate variations");
  set.campaign_seed = *campaign_seed;
  return set;
}

std::map<int, std::vector<double>> replicaDensities(const std::map<int, ReplicaSum>& replicas,
                                                    size_t o, const std::vector<double>& edges) {
  std::map<int, std::vector<double>> out;
  for (const auto& [r, rep] : replicas) {
    std::vector<double> mean = rep.sumw[o];
    for (double& v : mean) v /= rep.members;
    out[r] = density(mean, edges);
  }
  return out;
}

std::optional<std::vector<double>> memberCovariance(const std::map<int, ReplicaSum>& replicas,
                                                    size_t o, size_t bins) {
  std::vector<double> cov(bins * bins, 0.0);
  size_t dof = 0;
  for (const auto& [r, rep] : replicas) {
    if (rep.member_density.size() < 2) continue;
    BandAccumulator members(bins);
    for (const auto& [m, density] : rep.member_density) members.add(density[o]);
    const size_t replica_dof = rep.member_density.size() - 1;
    const std::vector<double> c = members.compute().covariance;
    for (size_t i = 0; i < c.size(); ++i) cov[i] += c[i] * static_cast<double>(replica_dof);
    dof += replica_dof;
  }
  if (dof == 0) return std::nullopt;
  for (double& v : cov) v /= static_cast<double>(dof);
  return cov;
}

bool hasMemberPairs(const std::map<int, ReplicaSum>& replicas) {
  for (const auto& [r, rep] : replicas)
    if (rep.member_density.size() >= 2) return true;
  return false;
}

const std::vector<std::vector<double>>* chainDensity(const std::map<int, ReplicaSum>& group, int r,
                                                     int m) {
  const auto rep = group.find(r);
  if (rep == group.end()) return nullptr;
  const auto d = rep->second.member_density.find(m);
  return d == rep->second.member_density.end() ? nullptr : &d->second;
}

std::vector<std::vector<double>> chainDifferences(const std::map<int, ReplicaSum>& a,
                                                  const std::map<int, ReplicaSum>& b, size_t o,
                                                  double scale) {
  std::vector<std::vector<double>> out;
  forSharedChains(a, b, [&](const auto& da, const auto& db, int, int) {
    std::vector<double> d(da[o].size());
    for (size_t bin = 0; bin < d.size(); ++bin) d[bin] = scale * (da[o][bin] - db[o][bin]);
    out.push_back(std::move(d));
  });
  return out;
}

}  // namespace foldfarm::ensembles
