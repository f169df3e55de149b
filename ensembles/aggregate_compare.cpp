// compareAggregations and comparisonMarkdown (ensembles/aggregate.hpp): aggregations side by
// side, read from their summary.json.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/band_stats.hpp"
#include "ensembles/chain_output.hpp"

namespace foldfarm::ensembles {

namespace fs = std::filesystem;

namespace {

// Mean and standard error of b[r] - a[r] over the replicas r both hold (objects keyed by
// replica number); n the count. {nan, nan, n} below two.
struct PairedDifference {
  double mean, error;
  size_t n;
};
PairedDifference pairedDifference(const nlohmann::json& a, const nlohmann::json& b) {
  std::vector<double> d;
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const auto other = b.find(it.key());
      if (other != b.end() && other->is_number() && it->is_number())
        d.push_back(other->get<double>() - it->get<double>());
    }
  }
  const double nan = std::nan("");
  if (d.size() < 2) return {nan, nan, d.size()};
  const MeanStd m = meanAndStd(d);
  return {m.mean, m.std / std::sqrt(static_cast<double>(d.size())), d.size()};
}

nlohmann::json numberOrNull(double x) {
  return std::isnan(x) ? nlohmann::json() : nlohmann::json(x);
}

// Student's t at 97.5% for `dof` degrees of freedom (two-sided 95%): 12.71 for 1, 2.23 for
// 10, 1.96 in the limit; the table to 30, the Cornish-Fisher expansion beyond (within 1e-3).
double studentT975(int dof) {
  static constexpr double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                                      2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
                                      2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                                      2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  if (dof < 1) return std::numeric_limits<double>::infinity();
  if (dof <= 30) return kTable[dof - 1];
  const double z = 1.959964, v = dof;
  return z + (z * z * z + z) / (4 * v) +
         (5 * std::pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * v * v);
}

// Whether input `lower`'s Δ lies below input `other`'s clearly, in observable row `row`: where
// the two inputs pair (one campaign seed and data file: the same bootstrap draws, so the data's
// fluctuation both share is out of it), whichever inputs they are, their replica-by-replica
// difference by more than studentT975(n - 1) of its standard errors over the n replicas both
// hold (a standard error from 2 or 3 replicas is itself rough: 12.7 and 4.3 of them, 2.26 for
// 10, 2.0 from about 60); else by more than 2 sqrt(e1² + e2²) of their spreads. False where an
// error is unknown (one replica).
bool clearlyBelow(const nlohmann::json& row, const std::string& observable,
                  const std::string& lower, const nlohmann::json& lower_summary,
                  const std::string& other, const nlohmann::json& other_summary) {
  const nlohmann::json& a = row[lower];
  const nlohmann::json& b = row[other];
  // other's Δ less lower's, replica by replica, where the two pair (any two inputs, not only
  // those paired with the first).
  const nlohmann::json p = pairReplicas(lower_summary, other_summary, lower);
  if (p.contains("observables") && p["observables"].contains(observable)) {
    const nlohmann::json& d = p["observables"][observable];
    if (d["delta_diff"].is_number() && d["delta_diff_err"].is_number())
      return d["delta_diff"].get<double>() >
             studentT975(d.value("replicas", 0) - 1) * d["delta_diff_err"].get<double>();
  }
  const nlohmann::json &e1 = a["delta_unfolded_err"], &e2 = b["delta_unfolded_err"];
  if (!e1.is_number() || !e2.is_number()) return false;
  const double diff = b["delta_unfolded"].get<double>() - a["delta_unfolded"].get<double>();
  return diff > 2 * std::hypot(e1.get<double>(), e2.get<double>());
}

}  // namespace

nlohmann::json pairReplicas(const nlohmann::json& a, const nlohmann::json& b,
                            const std::string& a_name) {
  using nlohmann::json;
  const json seed_a = a.value("campaign_seed", json()), seed_b = b.value("campaign_seed", json());
  if (seed_a.is_null() || seed_b.is_null())
    return {{"not_paired", "no campaign seed recorded (an aggregation of chains run alone)"}};
  if (seed_a != seed_b)
    return {{"not_paired", "campaign seed " + seed_b.dump() + ", " + a_name + "'s " +
                               seed_a.dump() + ": other bootstrap draws"}};
  // The data file the replicas drew from, where the summaries name it (a campaign's).
  const auto dataSum = [](const json& s) {
    return s.contains("inputs") && s["inputs"].is_object()
               ? s["inputs"].value(json::json_pointer("/nominal/data/sha256"), json())
               : json();
  };
  const json sum_a = dataSum(a), sum_b = dataSum(b);
  if (sum_a.is_string() && sum_b.is_string() && sum_a != sum_b)
    return {{"not_paired", "another data file than " + a_name + "'s (sha256 " +
                               sum_b.get<std::string>().substr(0, 12) + " against " +
                               sum_a.get<std::string>().substr(0, 12) +
                               "): the same seed draws other bootstrap samples of it"}};
  json out = {{"observables", json::object()}};
  const json none = json::object();
  const json& oa =
      a.contains("observables") && a["observables"].is_object() ? a["observables"] : none;
  const json& ob =
      b.contains("observables") && b["observables"].is_object() ? b["observables"] : none;
  size_t other_binning = 0;
  for (auto it = oa.begin(); it != oa.end(); ++it) {
    if (!ob.contains(it.key())) continue;
    const json& x = it.value();
    const json& y = ob[it.key()];
    // Δ of two binnings differ by the binning alone: not paired.
    if (x.contains("edges") && y.contains("edges") && x["edges"] != y["edges"]) {
      ++other_binning;
      continue;
    }
    const PairedDifference delta = pairedDifference(x.value("replica_delta_unfolded", json()),
                                                    y.value("replica_delta_unfolded", json()));
    const PairedDifference shift = pairedDifference(x.value("replica_shift_recovered", json()),
                                                    y.value("replica_shift_recovered", json()));
    if (delta.n < 2) continue;
    out["observables"][it.key()] = {{"replicas", delta.n},
                                    {"delta_diff", numberOrNull(delta.mean)},
                                    {"delta_diff_err", numberOrNull(delta.error)},
                                    {"shift_diff", numberOrNull(shift.mean)},
                                    {"shift_diff_err", numberOrNull(shift.error)}};
  }
  if (out["observables"].empty())
    return {{"not_paired",
             other_binning > 0
                 ? "another binning than " + a_name + "'s: Δ of two binnings are not comparable"
                 : "fewer than two bootstrap replicas in common with " + a_name +
                       " (or an aggregation written before replicas were recorded)"}};
  return out;
}

namespace {

// Each input after the first, paired with it replica by replica (pairReplicas): per observable
// "paired": {vs, replicas, delta_diff, …}; an input that cannot be paired says why
// ("not_paired" in its entry).
void pairWithTheFirst(nlohmann::json& out, const std::vector<std::string>& names,
                      const std::vector<nlohmann::json>& summaries) {
  for (size_t i = 1; i < names.size(); ++i) {
    const nlohmann::json p = pairReplicas(summaries[0], summaries[i], names[0]);
    if (p.contains("not_paired")) {
      out["inputs"][i]["not_paired"] = p["not_paired"];
      continue;
    }
    for (auto it = p["observables"].begin(); it != p["observables"].end(); ++it) {
      if (!out["observables"].contains(it.key()) ||
          !out["observables"][it.key()].contains(names[i]))
        continue;
      nlohmann::json paired = it.value();
      paired["vs"] = names[0];
      out["observables"][it.key()][names[i]]["paired"] = paired;
    }
  }
}

}  // namespace

nlohmann::json compareAggregations(const std::vector<std::string>& dirs,
                                   const std::vector<std::string>& names_in) {
  using nlohmann::json;
  if (dirs.empty()) throw InputError("compare: give at least one aggregation directory");
  if (!names_in.empty() && names_in.size() != dirs.size())
    throw InputError("compare: " + std::to_string(names_in.size()) + " names for " +
                     std::to_string(dirs.size()) + " directories");
  json out = {{"inputs", json::array()},
              {"observables", json::object()},
              {"best", json::object()},
              {"clear_best", json::object()}};
  std::vector<std::string> names;
  std::vector<json> summaries;  // each input's summary.json
  for (size_t i = 0; i < dirs.size(); ++i) {
    std::string d = dirs[i];
    std::error_code ec;
    if (!fs::is_regular_file(d + "/summary.json", ec) &&
        fs::is_regular_file(d + "/aggregate/summary.json", ec))
      d += "/aggregate";
    const std::string path = d + "/summary.json";
    if (!fs::is_regular_file(path, ec))
      throw InputError(dirs[i] +
                       ": no summary.json (nor aggregate/summary.json); aggregate it "
                       "first (`foldfarm campaign aggregate` or `foldfarm aggregate`)");
    const json s = readJson(path);
    const std::string clf = s.value("classifier", std::string("pet"));
    std::string name = names_in.empty() ? clf : names_in[i];
    if (std::find(names.begin(), names.end(), name) != names.end())
      name += "#" + std::to_string(i + 1);
    names.push_back(name);
    out["inputs"].push_back(
        {{"name", name}, {"dir", d}, {"classifier", clf}, {"chains", s.value("chains", 0)}});
    summaries.push_back(s);
    if (!s.contains("observables") || !s["observables"].is_object())
      throw InputError(path + ": no \"observables\" object; not an aggregation summary");
    const bool compared =
        std::any_of(s["observables"].begin(), s["observables"].end(), [](const json& o) {
          return o.is_object() && o.contains("delta_unfolded") && o["delta_unfolded"].is_number();
        });
    if (!compared)
      throw InputError(path +
                       ": no truth comparison; aggregate with --truth (or a spec input "
                       "'truth')");
    for (auto it = s["observables"].begin(); it != s["observables"].end(); ++it) {
      const json& o = it.value();
      // Δ of two binnings differ by the binning alone.
      if (i > 0 && o.contains("edges") && summaries[0]["observables"].contains(it.key()) &&
          summaries[0]["observables"][it.key()].contains("edges") &&
          summaries[0]["observables"][it.key()]["edges"] != o["edges"])
        throw InputError(path + ": " + it.key() + " is binned otherwise than in " + dirs[0] +
                         ": Δ of two binnings are not comparable; compare aggregations of one "
                         "binning (rebin one with `aggregate --binning`: the other's edges are "
                         "its summary.json's observables." +
                         it.key() + ".edges)");
      // An observable without a comparison (nothing inside its binning): left out of the row.
      if (!o.contains("delta_unfolded") || o["delta_unfolded"].is_null()) continue;
      json& row = out["observables"][it.key()];
      if (row.is_null()) {
        row["delta_prior"] = o["delta_prior"];
        row["delta_floor"] = o.value("delta_floor", json());
        row["shift_significance"] = o.value("shift_significance", json());
      } else if (std::abs(row["delta_prior"].get<double>() - o["delta_prior"].get<double>()) >
                 1e-6 * std::max(1.0, std::abs(o["delta_prior"].get<double>()))) {
        throw InputError(path + ": Δ of the prior for " + it.key() +
                         " differs from the first "
                         "input's; compare unfoldings of the same MC, data and truth");
      }
      // One replica has no spread: its error is unknown, not zero.
      const bool spread = s.value("replicas", 2) >= 2;
      row[name] = {{"delta_unfolded", o["delta_unfolded"]},
                   {"delta_unfolded_err", spread ? o.value("delta_unfolded_err", json()) : json()},
                   {"shift_recovered", o.value("shift_recovered", json())}};
    }
  }
  pairWithTheFirst(out, names, summaries);
  const auto index = [&](const std::string& name) {
    return static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
  };
  for (auto it = out["observables"].begin(); it != out["observables"].end(); ++it) {
    std::string best;
    double best_delta = 0;
    for (const auto& n : names) {
      if (!it->contains(n)) continue;
      const double d = (*it)[n]["delta_unfolded"].get<double>();
      if (best.empty() || d < best_delta) {
        best = n;
        best_delta = d;
      }
    }
    out["best"][it.key()] = best;
    // The smallest Δ is a winner only where it is below every other input's by more than 2
    // errors of the difference (before: 19.6 against 19.6 was bolded).
    bool clear = !best.empty();
    size_t others = 0;
    for (const auto& n : names) {
      if (n == best || !it->contains(n)) continue;
      ++others;
      clear = clear &&
              clearlyBelow(*it, it.key(), best, summaries[index(best)], n, summaries[index(n)]);
    }
    out["clear_best"][it.key()] = clear && others > 0 ? json(best) : json();
  }
  return out;
}

std::string comparisonMarkdown(const nlohmann::json& c) {
  auto num = [](const nlohmann::json& v, int digits) {
    if (!v.is_number()) return std::string("-");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v.get<double>());
    return std::string(buf);
  };
  std::vector<std::string> names;
  for (const auto& in : c["inputs"]) names.push_back(in["name"].get<std::string>());
  std::string s = "| Δ×10³ | prior | floor |";
  for (const auto& n : names) s += " " + n + " | shift " + n + " |";
  s += "\n|---|---:|---:|";
  for (size_t i = 0; i < names.size(); ++i) s += "---:|---:|";
  s += "\n";
  for (auto it = c["observables"].begin(); it != c["observables"].end(); ++it) {
    const auto& r = it.value();
    s += "| " + it.key() + " | " + num(r["delta_prior"], 1) + " | " + num(r["delta_floor"], 1) +
         " |";
    for (const auto& n : names) {
      if (!r.contains(n)) {
        s += " - | - |";
        continue;
      }
      const auto& e = r[n];
      // Bold only a clear winner (compareAggregations' "clear_best"); none where the inputs'
      // Δ are within the errors of their difference (clearlyBelow).
      const nlohmann::json clear = c.contains("clear_best")
                                       ? c["clear_best"].value(it.key(), nlohmann::json())
                                       : nlohmann::json();
      const bool best = clear.is_string() && clear.get<std::string>() == n;
      std::string cell =
          num(e["delta_unfolded"], 1) + (e["delta_unfolded_err"].is_number()
                                             ? " ± " + num(e["delta_unfolded_err"], 1)
                                             : std::string(" (no spread)"));
      s += " " + (best ? "**" + cell + "**" : cell) + " | ";
      // In brackets when the prior-to-truth shift is under 2 standard errors (noise).
      const bool noise =
          r["shift_significance"].is_number() && r["shift_significance"].get<double>() < 2;
      const std::string shift =
          e["shift_recovered"].is_number()
              ? num(nlohmann::json(100 * e["shift_recovered"].get<double>()), 0) + "%"
              : std::string("-");
      s += noise ? "(" + shift + ")" : shift;
      s += " |";
    }
    s += "\n";
  }
  if (names.size() > 1)
    s += "\nIn bold: the smallest Δ, where it is below every other input's by more than 2 "
         "errors of the difference (paired replica by replica where the inputs pair, else "
         "√(e1² + e2²) of their spreads); none in bold: no input is clearly the closest.\n";
  // Replica by replica against the first input, where they share the campaign seed.
  for (size_t i = 1; i < names.size(); ++i) {
    const auto& input = c["inputs"][i];
    if (input.contains("not_paired")) {
      s += "\n" + names[i] + " is not paired with " + names[0] + ": " +
           input["not_paired"].get<std::string>() + ".\n";
      continue;
    }
    s += "\n" + names[i] + " less " + names[0] +
         ", replica by replica (the same bootstrap draws; mean ± standard error):\n\n"
         "| Δ×10³ | ΔΔ | shift | replicas |\n|---|---:|---:|---:|\n";
    for (auto it = c["observables"].begin(); it != c["observables"].end(); ++it) {
      if (!it->contains(names[i]) || !(*it)[names[i]].contains("paired")) continue;
      const auto& p = (*it)[names[i]]["paired"];
      const auto signedNum = [&](const nlohmann::json& v, int digits) {
        const std::string t = num(v, digits);
        return v.is_number() && v.get<double>() >= 0 ? "+" + t : t;
      };
      const auto pct = [](const nlohmann::json& v) {
        return v.is_number() ? nlohmann::json(100 * v.get<double>()) : v;
      };
      // In brackets, as above, where the prior is within 2 standard errors of the truth.
      const auto& sig = (*it)["shift_significance"];
      const bool noise = sig.is_number() && sig.get<double>() < 2;
      const std::string shift = p["shift_diff"].is_number()
                                    ? signedNum(pct(p["shift_diff"]), 1) + " ± " +
                                          num(pct(p["shift_diff_err"]), 1) + " points"
                                    : std::string("-");
      s += "| " + it.key() + " | " + signedNum(p["delta_diff"], 1) + " ± " +
           num(p["delta_diff_err"], 1) + " | " + (noise ? "(" + shift + ")" : shift) + " | " +
           std::to_string(p["replicas"].get<size_t>()) + " |\n";
    }
  }
  return s;
}

}  // namespace foldfarm::ensembles
