// compareAggregations and comparisonMarkdown (ensembles/aggregate.hpp): aggregations side by
// side, read from their summary.json.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/chain_output.hpp"

namespace foldfarm::ensembles {

namespace fs = std::filesystem;

nlohmann::json compareAggregations(const std::vector<std::string>& dirs,
                                   const std::vector<std::string>& names_in) {
  using nlohmann::json;
  if (dirs.empty()) throw InputError("compare: give at least one aggregation directory");
  if (!names_in.empty() && names_in.size() != dirs.size())
    throw InputError("compare: " + std::to_string(names_in.size()) + " names for " +
                     std::to_string(dirs.size()) + " directories");
  json out = {{"inputs", json::array()}, {"observables", json::object()}, {"best", json::object()}};
  std::vector<std::string> names;
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
    if (!s.contains("observables") || !s["observables"].is_object())
      throw InputError(path + ": no \"observables\" object; not an aggregation summary");
    for (auto it = s["observables"].begin(); it != s["observables"].end(); ++it) {
      const json& o = it.value();
      if (!o.contains("delta_unfolded") || o["delta_unfolded"].is_null())
        throw InputError(path + ": no truth comparison for " + it.key() +
                         "; aggregate with --truth (or a spec input 'truth')");
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
      const bool best = c["best"].value(it.key(), std::string()) == n;
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
  return s;
}

}  // namespace foldfarm::ensembles
