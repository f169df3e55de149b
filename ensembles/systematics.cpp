#include "ensembles/systematics.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"

namespace foldfarm::ensembles {
namespace {

bool validName(const std::string& s) {
  if (s.empty() || s.front() == '.') return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '+' ||
          c == '-'))
      return false;
  return true;
}

std::string inQuotes(const std::string& s) {
  return "'" + s + "'";
}

}  // namespace

const char* variationTypeName(VariationType type) {
  switch (type) {
    case VariationType::kDetector:
      return "detector";
    case VariationType::kModelling:
      return "modelling";
    case VariationType::kMcBootstrap:
      return "mc_bootstrap";
    case VariationType::kNonClosure:
      return "non_closure";
    case VariationType::kReference:
      return "reference";
  }
  return "?";
}

std::optional<Variation> parseVariation(const nlohmann::json& result, const std::string& where) {
  auto it = result.find("variation");
  if (it == result.end() || it->is_null()) return std::nullopt;
  if (!it->is_object())
    throw InputError(where +
                     ": \"variation\" is not an object; write {\"name\": ..., \"type\": ...}");
  auto text = [&](const char* key) {
    auto f = it->find(key);
    if (f == it->end() || f->is_null()) return std::string();
    if (!f->is_string())
      throw InputError(where + ": variation." + key + " is not a string; write it as text");
    return f->get<std::string>();
  };
  Variation v;
  v.name = text("name");
  if (v.name.empty()) return std::nullopt;
  if (!validName(v.name))
    throw InputError(where + ": variation name " + inQuotes(v.name) +
                     " has characters other than [A-Za-z0-9_.+-] (or starts with '.'); rename it");
  if (v.name == "nominal" || v.name.rfind("replica_", 0) == 0)
    throw InputError(where + ": variation name " + inQuotes(v.name) +
                     " is reserved for the nominal's columns of event_weights.h5; rename it");
  const std::string type = text("type");
  if (type == "detector")
    v.type = VariationType::kDetector;
  else if (type == "modelling")
    v.type = VariationType::kModelling;
  else if (type == "mc_bootstrap")
    v.type = VariationType::kMcBootstrap;
  else if (type == "non_closure")
    v.type = VariationType::kNonClosure;
  else if (type == "reference")
    v.type = VariationType::kReference;
  else
    throw InputError(where + ": variation " + inQuotes(v.name) + " has unknown type " +
                     inQuotes(type) +
                     "; use detector, modelling, mc_bootstrap, non_closure or reference");
  v.source = text("source");
  if (v.source.empty()) v.source = v.name;
  if (!validName(v.source))
    throw InputError(where + ": variation " + inQuotes(v.name) + " has source " +
                     inQuotes(v.source) + " with characters other than [A-Za-z0-9_.+-]; rename it");
  const bool sourced = v.type == VariationType::kDetector || v.type == VariationType::kModelling;
  if (sourced && (v.source == "stat" || v.source == "mc_stat" || v.source == "non_closure" ||
                  v.source == "total"))
    throw InputError(where + ": variation " + inQuotes(v.name) + " names its source " +
                     inQuotes(v.source) +
                     ", which is reserved (stat, mc_stat, non_closure, total); rename the source");
  v.direction = text("direction");
  if (v.direction != "" && v.direction != "up" && v.direction != "down")
    throw InputError(where + ": variation " + inQuotes(v.name) + " has direction " +
                     inQuotes(v.direction) + "; use \"up\", \"down\" or \"\" (one-sided)");
  if (!sourced && !v.direction.empty())
    throw InputError(where + ": variation " + inQuotes(v.name) + " of type " + type +
                     " is one-sided; give it direction \"\"");
  v.symmetrise = text("symmetrise");
  if (v.symmetrise.empty()) v.symmetrise = "half_difference";
  if (v.symmetrise != "half_difference" && v.symmetrise != "max")
    throw InputError(where + ": variation " + inQuotes(v.name) + " has symmetrise " +
                     inQuotes(v.symmetrise) + "; use \"half_difference\" or \"max\"");
  return v;
}

SystematicsPlan planSystematics(const std::vector<Variation>& variations) {
  SystematicsPlan plan;
  std::map<std::string, std::vector<const Variation*>> by_source;
  for (const auto& v : variations) {
    if (v.type == VariationType::kReference) continue;  // a baseline, not a source
    if (v.type == VariationType::kMcBootstrap || v.type == VariationType::kNonClosure) {
      std::string& slot =
          v.type == VariationType::kMcBootstrap ? plan.mc_bootstrap : plan.non_closure;
      if (!slot.empty())
        throw InputError("aggregate: variations " + inQuotes(slot) + " and " + inQuotes(v.name) +
                         " are both of type " + variationTypeName(v.type) +
                         "; aggregate one of them per campaign");
      slot = v.name;
      continue;
    }
    by_source[v.source].push_back(&v);
  }
  for (const auto& [source, vars] : by_source) {
    SourcePlan sp;
    sp.name = source;
    const Variation* up = nullptr;
    const Variation* down = nullptr;
    for (const Variation* v : vars) {
      if (vars.size() > 1 && v->direction.empty())
        throw InputError("aggregate: one-sided variation " + inQuotes(v->name) + " shares source " +
                         inQuotes(source) + " with " + inQuotes(vars[vars[0] == v ? 1 : 0]->name) +
                         "; give each one-sided variation its own source");
      const Variation*& slot = v->direction == "up" ? up : down;
      if (v->direction.empty()) {
        sp.one_sided = v->name;
        sp.symmetrise = v->symmetrise;
        continue;
      }
      if (slot != nullptr)
        throw InputError("aggregate: variations " + inQuotes(slot->name) + " and " +
                         inQuotes(v->name) + " are both the " + v->direction + " of source " +
                         inQuotes(source) + "; give one of them another source or direction");
      slot = v;
    }
    if (sp.one_sided.empty()) {
      if (up == nullptr || down == nullptr) {
        const Variation* alone = up != nullptr ? up : down;
        throw InputError("aggregate: variation " + inQuotes(alone->name) + " is the " +
                         alone->direction + " of source " + inQuotes(source) + " without a" +
                         (up != nullptr ? " down" : "n up") +
                         "; run the missing variation or make it one-sided (direction \"\")");
      }
      if (up->symmetrise != down->symmetrise)
        throw InputError("aggregate: variations " + inQuotes(up->name) + " (" + up->symmetrise +
                         ") and " + inQuotes(down->name) + " (" + down->symmetrise +
                         ") of source " + inQuotes(source) +
                         " disagree on symmetrise; give both the same");
      if (up->type != down->type)
        throw InputError("aggregate: variations " + inQuotes(up->name) + " (" +
                         variationTypeName(up->type) + ") and " + inQuotes(down->name) + " (" +
                         variationTypeName(down->type) + ") of source " + inQuotes(source) +
                         " disagree on type; give both the same");
      sp.up = up->name;
      sp.down = down->name;
      sp.symmetrise = up->symmetrise;
    }
    plan.sources.push_back(std::move(sp));
  }
  return plan;
}

std::vector<double> meanShift(const std::map<int, std::vector<double>>& varied,
                              const std::map<int, std::vector<double>>& nominal) {
  std::vector<double> sum;
  int shared = 0;
  for (const auto& [r, v] : varied) {
    auto n = nominal.find(r);
    if (n == nominal.end()) continue;
    if (n->second.size() != v.size()) throw Error("shift: replica " + std::to_string(r) + " bins");
    if (sum.empty()) sum.assign(v.size(), 0.0);
    for (size_t b = 0; b < v.size(); ++b) sum[b] += v[b] - n->second[b];
    ++shared;
  }
  for (double& x : sum) x /= shared;
  return sum;
}

std::vector<double> meanOverReplicas(const std::map<int, std::vector<double>>& rows) {
  std::vector<double> mean;
  for (const auto& [r, v] : rows) {
    if (mean.empty()) mean.assign(v.size(), 0.0);
    for (size_t b = 0; b < v.size(); ++b) mean[b] += v[b];
  }
  for (double& x : mean) x /= static_cast<double>(rows.size());
  return mean;
}

std::vector<double> symmetrisedShift(const std::vector<double>& up, const std::vector<double>& down,
                                     const std::string& rule) {
  if (up.size() != down.size()) throw Error("symmetrise: up and down differ in bins");
  std::vector<double> s(up.size());
  if (rule == "half_difference") {
    for (size_t b = 0; b < s.size(); ++b) s[b] = 0.5 * (up[b] - down[b]);
  } else if (rule == "max") {
    // Signed as the up shift; where up is exactly 0 the sign is arbitrary: taken as +.
    for (size_t b = 0; b < s.size(); ++b)
      s[b] = std::copysign(std::max(std::abs(up[b]), std::abs(down[b])), up[b] < 0 ? -1.0 : 1.0);
  } else {
    throw Error("symmetrise: unknown rule '" + rule + "'");
  }
  return s;
}

std::vector<double> outerProduct(const std::vector<double>& s) {
  const size_t n = s.size();
  std::vector<double> m(n * n);
  for (size_t a = 0; a < n; ++a)
    for (size_t b = 0; b < n; ++b) m[a * n + b] = s[a] * s[b];
  return m;
}

double relativeRms(const std::vector<double>& sigma, const std::vector<double>& nominal) {
  // Each bin's (sigma / nominal)^2 weighted by its nominal: sum sigma^2 / nominal over sum
  // nominal (the bins are of equal width). Unweighted, a tail bin of 0.03% of the events with
  // sigma 25 times its content made a 389% "total" of a distribution known to 40% or better.
  double num = 0, den = 0;
  for (size_t b = 0; b < nominal.size() && b < sigma.size(); ++b) {
    if (!(nominal[b] > 0)) continue;
    num += sigma[b] * sigma[b] / nominal[b];
    den += nominal[b];
  }
  return den > 0 ? std::sqrt(num / den) : std::nan("");
}

}  // namespace foldfarm::ensembles
