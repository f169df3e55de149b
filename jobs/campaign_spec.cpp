#include "jobs/campaign_spec.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/json_file.hpp"
#include "core/base/json_value.hpp"
#include "core/base/text.hpp"
#include "jobs/input_record.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;

std::string joinKeys(const std::set<std::string>& keys) {
  std::string s;
  for (const auto& k : keys) s += (s.empty() ? "" : ", ") + k;
  return s;
}

void rejectUnknownKeys(const json& obj, const std::set<std::string>& known,
                       const std::string& origin, const std::string& where) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (!known.count(it.key())) {
      throw InputError(origin + ": unknown key '" + where + it.key() +
                       "' (known: " + joinKeys(known) + "); fix the spelling or remove it");
    }
  }
}

template <typename T>
T getNumber(const json& obj, const char* key, T fallback, const std::string& origin,
            const std::string& where) {
  if (!obj.contains(key)) return fallback;
  return jsonValue<T>(obj.at(key), origin + ": '" + where + key + "'");
}

// Upper bound of a count or duration: a typo (an extra zero, seconds for minutes) would
// otherwise start a million workers or overflow a deadline.
template <typename T>
void requireAtMost(T value, T limit, const std::string& origin, const std::string& key,
                   const std::string& why) {
  if (value > limit) {
    throw InputError(origin + ": '" + key + "' = " + numberText(value) + " exceeds " +
                     numberText(limit) + " (" + why + "); lower it");
  }
}

std::string getString(const json& obj, const char* key, const std::string& fallback,
                      const std::string& origin) {
  if (!obj.contains(key)) return fallback;
  if (!obj.at(key).is_string()) {
    throw InputError(origin + ": '" + key + "' must be a string, got " + obj.at(key).dump());
  }
  return obj.at(key).get<std::string>();
}

// "aggregate": how the chains are aggregated by default (ensembles/aggregate.hpp's words).
json parseAggregateChoices(const json& a, const std::string& kind, const std::string& origin) {
  if (!a.is_object())
    throw InputError(origin +
                     ": 'aggregate' must be an object, e.g. {\"shift_noise\": "
                     "\"subtract\"}");
  if (kind != "chain")
    throw InputError(origin + ": 'aggregate' applies to campaigns of chain tasks (this one runs '" +
                     kind + "'); remove it");
  rejectUnknownKeys(a, {"shift_noise", "event_weights", "plots"}, origin, "aggregate.");
  const auto word = [&](const char* key, const std::set<std::string>& allowed) {
    if (!a.contains(key)) return;
    const std::string v = getString(a, key, "", origin);
    if (!allowed.count(v)) {
      std::string list;
      for (const auto& w : allowed) list += (list.empty() ? "" : ", ") + w;
      throw InputError(origin + ": 'aggregate." + key + "' = '" + v + "' (use " + list + ")");
    }
  };
  word("shift_noise", {"keep", "subtract"});
  word("event_weights", {"all", "central", "none"});
  if (a.contains("plots") && !a["plots"].is_boolean())
    throw InputError(origin + ": 'aggregate.plots' must be true or false");
  return a;
}

// The frozen spec's record of its inputs (jobs/input_record.hpp): {absolute path: object}.
json parseInputsAtInit(const json& r, const std::string& origin) {
  bool valid = r.is_object();
  // A file's record or a directory's; the listing of a directory holds its files' records.
  const auto validRecord = [](const json& v) {
    bool ok = v.is_object();
    for (const char* number : {"size", "mtime_ns", "files", "bytes"})
      ok = ok && (!v.contains(number) || v[number].is_number_integer());
    return ok && (!v.contains("sha256") ||
                  (v["sha256"].is_string() && v["sha256"].get<std::string>().size() == 64));
  };
  for (auto it = r.begin(); valid && it != r.end(); ++it) {
    const json& v = it.value();
    valid = !it.key().empty() && it.key()[0] == '/' && validRecord(v);
    if (valid && v.contains("listing")) {
      valid = v["listing"].is_object();
      for (auto f = v["listing"].begin(); valid && f != v["listing"].end(); ++f)
        valid = validRecord(f.value()) && f.value().contains("sha256") &&
                f.value().contains("size") && f.value().contains("mtime_ns");
    }
  }
  if (!valid)
    throw InputError(origin + ": 'inputs_at_init' is not {absolute path: record}; it is written " +
                     "by `campaign init` only: remove it");
  return r;
}

bool pathExists(const std::string& p) {
  const FileStat st = statPath(p);
  return st.regular || st.directory;
}

// `p` as written when absolute (a frozen spec's paths stay what its tasks and chains
// recorded), else against `base` (itself against the working directory) without "."
// components or doubled slashes: "mc.h5" in "./spec.json" is "/work/mc.h5", not
// "/work/./mc.h5", in records and messages. A ".." is resolved on disk, not lexically
// (through a symbolic link it is not the lexical parent): the directory up to the last ".."
// is taken as it really is (realpath), the rest as written. Before, "/work/run1/../mc.h5"
// was frozen as such, and removing run1 (the directory `campaign init` was run from) made
// the untouched mc.h5 "missing" for the campaign.
std::string absolutePath(const std::string& p, const std::string& base) {
  if (!p.empty() && p[0] == '/') return p;
  std::string b = base.empty() ? "." : base;
  if (b[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof(cwd))) b = std::string(cwd) + "/" + b;
  }
  std::vector<std::string> parts;
  for (const auto& part : std::filesystem::path(b + "/" + p)) {
    const std::string name = part.string();
    if (name == "/" || name == "." || name.empty()) continue;
    parts.push_back(name);
  }
  size_t rest = 0;  // parts[rest..] are appended as written
  std::string out;
  for (size_t k = parts.size(); k-- > 0;) {
    if (parts[k] != "..") continue;
    std::string upto;
    for (size_t i = 0; i <= k; ++i) upto += "/" + parts[i];
    if (char* real = ::realpath(upto.c_str(), nullptr)) {
      out = std::string(real) == "/" ? "" : real;
      std::free(real);
      rest = k + 1;
    }
    break;
  }
  for (size_t i = rest; i < parts.size(); ++i) out += "/" + parts[i];
  return out.empty() ? "/" : out;
}

// Keys that taskDef() sets for every task: a value under "params" or "overrides" would be
// overwritten without a word. Each names where the value comes from instead.
const std::map<std::string, std::string>& campaignSetKeys() {
  static const std::map<std::string, std::string> keys = {
      {"task_id", "the task's position (r<replica>m<member>)"},
      {"replica", "the task's position (r<replica>m<member>)"},
      {"member", "the task's position (r<replica>m<member>)"},
      {"seed", "the top-level 'seed'"},
      {"threads", "'resources.threads_per_task'"},
      {"inputs", "the top-level 'inputs'"},
      {"chain", "the top-level 'chain'"},
      {"variation", "the top-level 'variations'"},
      {"warm_from_task", "the variation's 'warm_start'"},
      {"keep_models", "the variations that warm-start from the task"},
  };
  return keys;
}

void rejectCampaignSetKeys(const json& obj, const std::string& origin, const std::string& where) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    auto set = campaignSetKeys().find(it.key());
    if (set != campaignSetKeys().end()) {
      throw InputError(origin + ": '" + where + it.key() + "' is set for every task from " +
                       set->second + " and cannot be given here; remove it");
    }
  }
}

// The "inputs" object at `where` ("" or "variations.x."): known names, each a path made
// absolute against base_dir (whether it exists: requireCampaignInputs).
std::map<std::string, std::string> parseInputs(const json& in, const std::string& origin,
                                               const std::string& where,
                                               const std::string& base_dir) {
  if (!in.is_object())
    throw InputError(origin + ": '" + where + "inputs' must be an object of paths");
  rejectUnknownKeys(in, {"mc", "data", "truth", "foundation"}, origin, where + "inputs.");
  std::map<std::string, std::string> out;
  for (auto it = in.begin(); it != in.end(); ++it) {
    if (!it.value().is_string())
      throw InputError(origin + ": '" + where + "inputs." + it.key() + "' must be a path string");
    out[it.key()] = absolutePath(it.value().get<std::string>(), base_dir);
  }
  return out;
}

// A variation name goes into task ids, directory names and HDF5 group names.
bool validVariationName(const std::string& n) {
  if (n.empty() || n.size() > 40) return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  return true;
}

void parseVariations(const json& vs, CampaignSpec& s, const std::string& origin,
                     const std::string& base_dir) {
  if (!vs.is_object())
    throw InputError(origin + ": 'variations' must be an object {name: variation}");
  int next = s.numNominalTasks();
  std::map<std::string, std::vector<const Variation*>> by_source;
  for (auto it = vs.begin(); it != vs.end(); ++it) {
    const std::string where = "variations." + it.key() + ".";
    const json& o = it.value();
    if (!validVariationName(it.key())) {
      throw InputError(origin + ": variation name '" + it.key() +
                       "' must be 1-40 letters, digits, '_' or '-' (it names task ids and "
                       "directories)");
    }
    if (!o.is_object()) throw InputError(origin + ": '" + where + "' must be an object");
    rejectUnknownKeys(o,
                      {"type", "source", "direction", "symmetrise", "replicas", "members", "inputs",
                       "params", "warm_start"},
                      origin, where);
    Variation v;
    v.name = it.key();
    v.type = getString(o, "type", "", origin);
    v.source = getString(o, "source", v.name, origin);
    v.direction = getString(o, "direction", "", origin);
    v.symmetrise = getString(o, "symmetrise", "half_difference", origin);
    v.replicas = getNumber<int>(o, "replicas", 1, origin, where);
    v.members = getNumber<int>(o, "members", s.members, origin, where);
    // MC-statistics replicas start afresh by default: started from the nominal chain of their
    // replica r, trained on the data's bootstrap draw r, they would carry that draw's
    // fluctuation (and the chain's training noise) into the MC-statistics covariance.
    v.warm_start = v.type != "mc_bootstrap";
    if (o.contains("warm_start")) {
      if (!o["warm_start"].is_boolean())
        throw InputError(origin + ": '" + where + "warm_start' must be true or false");
      v.warm_start = o["warm_start"].get<bool>();
    }
    // The warm reference: that name with that type only, as the campaign adds it.
    if ((v.name == kWarmReference) != (v.type == "reference"))
      throw InputError(origin + ": variation '" + v.name + "': the name '" + kWarmReference +
                       "' and the type 'reference' go together (the nominal trained again as "
                       "the warm-started variations are, which `campaign init` adds itself); " +
                       (v.name == kWarmReference ? "rename the variation" : "use another type"));
    if (v.type == "reference") {
      if (s.kind != "chain")
        throw InputError(origin + ": the warm reference '" + v.name +
                         "' is for chain campaigns; remove it");
      for (const char* key : {"inputs", "params", "direction", "source", "symmetrise"})
        if (o.contains(key))
          throw InputError(origin + ": '" + where + key +
                           "': the warm reference runs the nominal's tasks as they are; remove it");
      if (!v.warm_start)
        throw InputError(origin + ": '" + where +
                         "warm_start' must be true for the warm reference (it is what it is for)");
      if (v.replicas > s.replicas || v.members > s.members)
        throw InputError(origin + ": '" + where + "replicas' and 'members' (" +
                         std::to_string(v.replicas) + " x " + std::to_string(v.members) +
                         ") go beyond the nominal's (" + std::to_string(s.replicas) + " x " +
                         std::to_string(s.members) +
                         "): a reference task starts from the nominal task of its replica and "
                         "member; give at most the nominal's counts");
    }
    const bool typed = v.type == "reference" ||
                       std::find(std::begin(kVariationTypes), std::end(kVariationTypes), v.type) !=
                           std::end(kVariationTypes);
    if (!typed && (s.kind == "chain" || !v.type.empty())) {
      throw InputError(origin + ": '" + where + "type' = '" + v.type +
                       "' (use detector, modelling, mc_bootstrap or non_closure)");
    }
    if (v.direction != "up" && v.direction != "down" && !v.direction.empty())
      throw InputError(origin + ": '" + where + "direction' must be \"up\", \"down\" or \"\"");
    if (v.symmetrise != "half_difference" && v.symmetrise != "max")
      throw InputError(origin + ": '" + where + "symmetrise' must be half_difference or max");
    if (!validVariationName(v.source))
      throw InputError(origin + ": '" + where + "source' must be 1-40 letters, digits, '_' or '-'");
    if (v.replicas < 1 || v.members < 1 || v.members > 99999 || v.replicas > 9999999)
      throw InputError(origin + ": '" + where +
                       "replicas' and 'members' must be 1 to 9999999 and " +
                       "1 to 99999 (task ids hold no more; got " + std::to_string(v.replicas) +
                       " x " + std::to_string(v.members) + ")");
    if (static_cast<int64_t>(next) + static_cast<int64_t>(v.replicas) * v.members > 10000000)
      throw InputError(origin + ": the campaign exceeds 10 million tasks; split it");
    if (o.contains("inputs")) v.inputs = parseInputs(o["inputs"], origin, where, base_dir);
    if (o.contains("params")) {
      if (!o["params"].is_object())
        throw InputError(origin + ": '" + where + "params' must be an object");
      rejectCampaignSetKeys(o["params"], origin, where + "params.");
      v.params = o["params"];
    }
    if (s.kind == "chain") {
      // What each type replaces: a variation that replaces nothing would repeat the nominal.
      const char* need = v.type == "detector" || v.type == "modelling" ? "mc"
                         : v.type == "non_closure"                     ? "data"
                                                                       : nullptr;
      if (need != nullptr && !v.inputs.count(need)) {
        throw InputError(origin + ": the " + v.type + " variation '" + v.name + "' needs '" +
                         where + "inputs." + need + "' (" +
                         (v.type == "non_closure" ? "the simulation to unfold as pseudo-data"
                                                  : "its simulation") +
                         ")");
      }
      if (need != nullptr && s.inputs.count(need) && v.inputs.at(need) == s.inputs.at(need))
        throw InputError(origin + ": the " + v.type + " variation '" + v.name + "' gives '" +
                         where + "inputs." + need + "' the nominal's own file (" +
                         v.inputs.at(need) + "): it would repeat the nominal; name the varied " +
                         (v.type == "non_closure" ? "pseudo-data" : "simulation"));
      if (v.type == "mc_bootstrap" && !v.inputs.empty())
        throw InputError(origin + ": the mc_bootstrap variation '" + v.name +
                         "' runs on the nominal files; remove '" + where + "inputs'");
      if (!v.params.empty())
        throw InputError(origin + ": '" + where + "params." + v.params.begin().key() +
                         "' is not read by the chain task; remove it");
      if ((v.type == "mc_bootstrap" || v.type == "non_closure") && !v.direction.empty())
        throw InputError(origin + ": the " + v.type + " variation '" + v.name +
                         "' has no direction; remove '" + where + "direction'");
    }
    // Names the aggregation gives its own columns and sources (ensembles/systematics.hpp).
    if (v.name == "nominal" || v.name.rfind("replica_", 0) == 0)
      throw InputError(origin + ": variation name '" + v.name +
                       "' is reserved for the nominal's columns of event_weights.h5; rename it");
    if ((v.type == "detector" || v.type == "modelling") &&
        (v.source == "stat" || v.source == "mc_stat" || v.source == "non_closure" ||
         v.source == "total"))
      throw InputError(origin + ": '" + where + "source' = '" + v.source +
                       "' is reserved (stat, mc_stat, non_closure, total); rename the source");
    if (v.type == "mc_bootstrap" || v.type == "non_closure") {
      for (const auto& w : s.variations)
        if (w.type == v.type)
          throw InputError(origin + ": variations '" + w.name + "' and '" + v.name + "' are both " +
                           v.type + "; a campaign has at most one");
    }
    v.first_index = next;
    next += v.numTasks();
    s.variations.push_back(std::move(v));
  }
  // Up/down pairs: one of each per source, agreeing on how to symmetrise.
  for (const auto& v : s.variations) by_source[v.source].push_back(&v);
  for (const auto& [source, list] : by_source) {
    int up = 0, down = 0, one_sided = 0;
    for (const Variation* v : list) {
      up += v->direction == "up";
      down += v->direction == "down";
      one_sided += v->direction.empty();
      if (v->type != list.front()->type) {
        throw InputError(origin + ": variations '" + list.front()->name + "' and '" + v->name +
                         "' of source '" + source + "' have different types (" +
                         list.front()->type + ", " + v->type + "); give them one type");
      }
      if (v->symmetrise != list.front()->symmetrise) {
        throw InputError(origin + ": variations '" + list.front()->name + "' and '" + v->name +
                         "' of source '" + source +
                         "' disagree on 'symmetrise'; give both the same");
      }
    }
    if (up + down > 0 && (up != 1 || down != 1 || one_sided > 0)) {
      throw InputError(origin + ": source '" + source +
                       "' needs exactly one 'up' and one 'down' variation (has " +
                       std::to_string(up) + " up, " + std::to_string(down) + " down, " +
                       std::to_string(one_sided) +
                       " one-sided); fix their 'direction' or 'source'");
    }
    if (one_sided > 1) {
      throw InputError(origin + ": source '" + source + "' has " + std::to_string(one_sided) +
                       " one-sided variations; give each its own 'source'");
    }
  }
}

}  // namespace

CampaignSpec withWarmReference(const CampaignSpec& s, bool* added) {
  if (added) *added = false;
  if (s.kind != "chain") return s;
  int replicas = 0, members = 0;
  const Variation* existing = nullptr;
  for (const Variation& v : s.variations) {
    if (v.type == "reference") existing = &v;
    if ((v.type != "detector" && v.type != "modelling") || !v.warm_start) continue;
    replicas = std::max(replicas, std::min(v.replicas, s.replicas));
    members = std::max(members, std::min(v.members, s.members));
  }
  if (replicas == 0) return s;
  if (existing && existing->replicas >= replicas && existing->members >= members) return s;
  json j = s.toJson();  // absolute paths: parsed again against no directory
  j["variations"][kWarmReference] = {
      {"type", "reference"},
      {"replicas", std::max(replicas, existing ? existing->replicas : 0)},
      {"members", std::max(members, existing ? existing->members : 0)}};
  if (added) *added = true;
  return parseCampaignSpec(j, "the spec with its warm reference", "/", /*require_inputs=*/false);
}

bool startsTasksCold(const CampaignSpec& s, const Variation& v) {
  return (v.type == "detector" || v.type == "modelling") && v.warm_start &&
         (v.replicas > s.replicas || v.members > s.members);
}

void refuseVariationKeysNotRead(const CampaignSpec& s, const std::string& origin) {
  if (s.kind != "chain") return;
  for (const Variation& v : s.variations) {
    const std::string where = origin + ": 'variations." + v.name + ".";
    if (v.direction.empty() && v.symmetrise == "max")
      throw InputError(where + "symmetrise' = max applies to an up/down pair; the one-sided '" +
                       v.name + "' counts its shift as it is: remove it");
    if (v.inputs.count("truth"))
      throw InputError(where +
                       "inputs.truth' is not read: every result is compared with the spec's "
                       "truth ('inputs.truth'); remove it");
    if ((v.type == "detector" || v.type == "modelling") && v.inputs.count("data"))
      throw InputError(where + "inputs.data': a " + v.type +
                       " variation unfolds the nominal's data with another simulation, so that "
                       "its shift is that of the simulation alone; remove it (other data is "
                       "another measurement: a campaign of its own)");
  }
}

std::string taskIdFor(int replica, int member) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "r%04dm%d", replica, member);
  return buf;
}

std::string taskIdFor(const std::string& variation, int replica, int member) {
  return variation.empty() ? taskIdFor(replica, member)
                           : variation + "." + taskIdFor(replica, member);
}

json Variation::describe() const {
  return {{"name", name},
          {"type", type},
          {"source", source},
          {"direction", direction},
          {"symmetrise", symmetrise}};
}

int CampaignSpec::numTasks() const {
  int n = numNominalTasks();
  for (const auto& v : variations) n += v.numTasks();
  return n;
}

const Variation* CampaignSpec::variationOf(int index) const {
  for (const auto& v : variations)
    if (index >= v.first_index && index < v.first_index + v.numTasks()) return &v;
  return nullptr;
}

int CampaignSpec::slotsPerNode() const {
  if (resources.gpus > 0) return resources.gpus * resources.tasks_per_gpu;
  if (resources.cpu_slots > 0) return resources.cpu_slots;
  unsigned hw = std::thread::hardware_concurrency();
  int per = std::max(1, resources.threads_per_task);
  return std::max(1, static_cast<int>(hw == 0 ? 1 : hw) / per);
}

TaskDef CampaignSpec::taskPosition(int index) const {
  TaskDef t;
  t.index = index;
  const Variation* v = variationOf(index);
  const int local = v ? index - v->first_index : index;
  const int m_count = v ? v->members : members;
  t.replica = local / m_count;
  t.member = local % m_count;
  t.variation = v ? v->name : "";
  t.id = taskIdFor(t.variation, t.replica, t.member);
  t.kind = kind;
  if (v && v->warm_start && t.replica < replicas && t.member < members)
    t.needs.push_back(t.replica * members + t.member);
  return t;
}

std::string CampaignSpec::idRangeText() const {
  std::string s = taskIdFor(0, 0) + " to " + taskIdFor(replicas - 1, members - 1);
  for (const auto& v : variations)
    s += ", " + taskIdFor(v.name, 0, 0) + " to " + taskIdFor(v.name, v.replicas - 1, v.members - 1);
  return s;
}

TaskDef CampaignSpec::taskDef(int index) const {
  TaskDef t = taskPosition(index);
  const Variation* v = variationOf(index);
  json p = params.is_object() ? params : json::object();
  if (v) p.merge_patch(v->params);
  auto ov = overrides.find(t.id);
  if (ov != overrides.end()) p.merge_patch(ov->second);
  p["task_id"] = t.id;
  p["replica"] = t.replica;
  p["member"] = t.member;
  p["seed"] = seed;
  p["threads"] = resources.threads_per_task;
  json in = json::object();
  for (const auto& [k, path] : inputs) in[k] = path;
  if (v)
    for (const auto& [k, path] : v->inputs) in[k] = path;
  for (auto it = in.begin(); it != in.end(); ++it) {
    const auto rec = inputs_at_init.find(it.value().get<std::string>());
    if (rec != inputs_at_init.end()) t.inputs_at_init[rec.key()] = *rec;
  }
  p["inputs"] = in;
  if (kind == "chain") p["chain"] = chain;
  if (v) {
    p["variation"] = v->describe();
    if (!t.needs.empty()) p["warm_from_task"] = taskIdFor(t.replica, t.member);
  } else {
    // Kept for the variations that start from it, or for all (chain.keep_models: variations
    // warm-started from it can be added later by `campaign extend`).
    bool keep = chain.value("keep_models", false);
    for (const auto& w : variations)
      keep = keep || (w.warm_start && t.replica < w.replicas && t.member < w.members);
    if (keep) p["keep_models"] = true;
  }
  t.params = std::move(p);
  return t;
}

int CampaignSpec::indexOf(const std::string& task_id) const {
  std::string name, pos = task_id;
  const auto dot = task_id.rfind('.');
  if (dot != std::string::npos) {
    name = task_id.substr(0, dot);
    pos = task_id.substr(dot + 1);
  }
  int r = 0, m = 0;
  char tail = 0;
  if (std::sscanf(pos.c_str(), "r%dm%d%c", &r, &m, &tail) != 2) return -1;
  if (taskIdFor(name, r, m) != task_id) return -1;
  if (name.empty()) {
    if (r < 0 || r >= replicas || m < 0 || m >= members) return -1;
    return r * members + m;
  }
  for (const auto& v : variations) {
    if (v.name != name) continue;
    if (r < 0 || r >= v.replicas || m < 0 || m >= v.members) return -1;
    return v.first_index + r * v.members + m;
  }
  return -1;
}

json CampaignSpec::toJson() const {
  json j;
  j["name"] = name;
  j["task"] = kind;
  j["replicas"] = replicas;
  j["members"] = members;
  j["seed"] = seed;
  json in = json::object();
  for (const auto& [k, v] : inputs) in[k] = v;
  j["inputs"] = in;
  j["chain"] = chain;
  j["params"] = params;
  json ov = json::object();
  for (const auto& [k, v] : overrides) ov[k] = v;
  j["overrides"] = ov;
  j["resources"] = {{"gpus", resources.gpus},
                    {"tasks_per_gpu", resources.tasks_per_gpu},
                    {"cpu_slots", resources.cpu_slots},
                    {"threads_per_task", resources.threads_per_task}};
  j["executor"] = executor;
  j["retry"] = {{"max_attempts", retry.max_attempts},
                {"backoff_s", retry.backoff_s},
                {"max_interruptions", retry.max_interruptions},
                {"lease_wait_s", retry.lease_wait_s}};
  j["time_limit_s"] = time_limit_s;
  if (!aggregate.empty()) j["aggregate"] = aggregate;
  if (!inputs_at_init.empty()) j["inputs_at_init"] = inputs_at_init;
  if (!variations.empty()) {
    json vs = json::object();
    for (const auto& v : variations) {
      if (v.type == "reference") {  // the nominal's tasks as they are: counts only
        vs[v.name] = {{"type", v.type},
                      {"replicas", v.replicas},
                      {"members", v.members},
                      {"warm_start", v.warm_start}};
        continue;
      }
      json vj = v.describe();
      vj.erase("name");
      vj["replicas"] = v.replicas;
      vj["members"] = v.members;
      json vin = json::object();
      for (const auto& [k, path] : v.inputs) vin[k] = path;
      vj["inputs"] = vin;
      vj["params"] = v.params;
      vj["warm_start"] = v.warm_start;
      vs[v.name] = vj;
    }
    j["variations"] = vs;
  }
  return j;
}

void requireCampaignInputs(const CampaignSpec& s, const std::string& origin) {
  requireCampaignInputFiles(s, origin);
  checkCampaignInputsForKind(s, origin);
  requireCampaignInputsAsRecorded(s, origin);
}

void requireCampaignInputFiles(const CampaignSpec& s, const std::string& origin) {
  const auto check = [&](const std::map<std::string, std::string>& inputs,
                         const std::string& where) {
    for (const auto& [key, path] : inputs)
      if (!pathExists(path))
        throw InputError(
            origin + ": input file '" + where + "inputs." + key + "' = " + path +
            " does not exist; " +
            // A campaign's input (its record has it): a new file would be refused as changed.
            (s.inputs_at_init.is_object() && s.inputs_at_init.contains(path)
                 ? "it was there at `campaign init`: " + inputChangeAdvice()
                 : std::string("fix the path or create it")));
  };
  check(s.inputs, "");
  for (const Variation& v : s.variations) check(v.inputs, "variations." + v.name + ".");
}

void requireCampaignInputsAsRecorded(const CampaignSpec& s, const std::string& origin) {
  requireInputsAsRecorded(s.inputs_at_init, origin);
}

namespace {

// check(params) for the first task of each set of inputs (the common one, each variation's
// own), its InputError prefixed with `origin` and the set's key.
void checkEachSetOfInputs(const CampaignSpec& s, const std::string& origin,
                          const std::function<void(const json&)>& check) {
  const json nominal = s.taskDef(0).params.value("inputs", json::object());
  const auto checkTask = [&](int index, const std::string& where, bool varied) {
    try {
      json params = s.taskDef(index).params;
      // A variation's set beside the nominal's, for the checks that compare them (a detector
      // variation's generated events); not part of the task.
      if (varied) params["nominal_inputs"] = nominal;
      check(params);
    } catch (const InputError& e) {
      throw InputError(origin + ": " + where + e.what());
    }
  };
  checkTask(0, "inputs: ", false);
  for (const Variation& v : s.variations)
    if (!v.inputs.empty()) checkTask(v.first_index, "variations." + v.name + ".inputs: ", true);
}

}  // namespace

void checkCampaignInputsForKind(const CampaignSpec& s, const std::string& origin) {
  // What the kind needs of its files, once per set of inputs: a campaign whose every task
  // would fail on them does not start.
  const auto& traits = taskKindTraits(s.kind);
  if (traits.check_inputs) checkEachSetOfInputs(s, origin, traits.check_inputs);
}

void checkCampaignInputValues(const CampaignSpec& s, const std::string& origin,
                              const std::set<std::string>& unchanged) {
  const auto& traits = taskKindTraits(s.kind);
  if (!traits.check_input_values) return;
  InputValueReads reads(unchanged);  // each file once, whichever sets name it
  checkEachSetOfInputs(s, origin,
                       [&](const json& params) { traits.check_input_values(params, reads); });
}

CampaignSpec parseCampaignSpec(const json& j, const std::string& origin,
                               const std::string& base_dir, bool require_inputs) {
  if (!j.is_object()) throw InputError(origin + ": a campaign spec must be a JSON object");
  rejectUnknownKeys(j,
                    {"name", "task", "replicas", "members", "seed", "inputs", "chain", "params",
                     "overrides", "resources", "executor", "retry", "time_limit_s", "variations",
                     "aggregate", "inputs_at_init"},
                    origin, "");
  CampaignSpec s;
  s.name = getString(j, "name", "campaign", origin);
  for (char c : s.name) {
    // The name goes into log lines, the report and Slurm job names: one printable line.
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      throw InputError(origin + ": 'name' holds a control character (line break, tab, ...); " +
                       "use one printable line");
    }
  }
  if (s.name.empty()) throw InputError(origin + ": 'name' is empty; give the campaign a name");
  if (!j.contains("task")) {
    throw InputError(origin + ": missing key 'task' (the task kind: " + [] {
      std::string k;
      for (const auto& n : taskKindNames()) k += (k.empty() ? "" : ", ") + n;
      return k;
    }() + ")");
  }
  s.kind = getString(j, "task", "", origin);
  if (!hasTaskKind(s.kind)) {
    std::string k;
    for (const auto& n : taskKindNames()) k += (k.empty() ? "" : ", ") + n;
    throw InputError(origin + ": 'task' = '" + s.kind + "' is not a known task kind (known: " + k +
                     ")");
  }
  s.replicas = getNumber<int>(j, "replicas", 1, origin, "");
  s.members = getNumber<int>(j, "members", 1, origin, "");
  if (s.replicas < 1 || s.members < 1) {
    throw InputError(origin + ": 'replicas' and 'members' must be >= 1 (got " +
                     std::to_string(s.replicas) + " × " + std::to_string(s.members) + ")");
  }
  if (static_cast<int64_t>(s.replicas) * s.members > 10000000) {
    throw InputError(origin + ": replicas × members exceeds 10 million tasks; split the campaign");
  }
  if (s.members > 99999 || s.replicas > 9999999) {
    throw InputError(origin + ": 'members' or 'replicas' too large for task ids");
  }
  if (j.contains("seed")) {
    // An integer beyond 64 bits reaches here as a float and is refused like 1.5.
    if ((!j["seed"].is_number_integer() && !j["seed"].is_number_unsigned()) ||
        (j["seed"].is_number_integer() && j["seed"].get<int64_t>() < 0)) {
      throw InputError(origin + ": 'seed' = " + j["seed"].dump() +
                       " must be an integer from 0 to 18446744073709551615");
    }
    s.seed = j["seed"].get<uint64_t>();
  }

  if (j.contains("inputs")) s.inputs = parseInputs(j["inputs"], origin, "", base_dir);
  if (s.kind == "chain") {
    for (const char* need : {"mc", "data"}) {
      if (!s.inputs.count(need)) {
        throw InputError(origin + ": the chain task needs 'inputs." + std::string(need) +
                         "' (a file path)");
      }
    }
  }
  if (j.contains("chain")) {
    if (!j["chain"].is_object()) throw InputError(origin + ": 'chain' must be an object");
    s.chain = j["chain"];
    if (s.chain.contains("keep_models") && !s.chain["keep_models"].is_boolean())
      throw InputError(origin + ": 'chain.keep_models' must be true or false");
    // With 'config', the chain object holds only what is the chain's own: its keys beside
    // the config would be dropped (without it they are the config, which checks them).
    if (s.chain.contains("config"))
      for (auto it = s.chain.begin(); it != s.chain.end(); ++it)
        if (it.key() != "config" && it.key() != "iterations" && it.key() != "keep_models")
          throw InputError(origin + ": unknown key 'chain." + it.key() +
                           "' (beside 'chain.config' the chain object holds 'iterations' and "
                           "'keep_models'; the training settings go in 'chain.config')");
  }
  if (j.contains("params")) {
    if (!j["params"].is_object()) throw InputError(origin + ": 'params' must be an object");
    rejectCampaignSetKeys(j["params"], origin, "params.");
    s.params = j["params"];
  }
  if (j.contains("overrides")) {
    if (!j["overrides"].is_object()) {
      throw InputError(origin + ": 'overrides' must be an object {task id: params}");
    }
    for (auto it = j["overrides"].begin(); it != j["overrides"].end(); ++it) {
      if (!it.value().is_object()) {
        throw InputError(origin + ": 'overrides." + it.key() + "' must be an object");
      }
      rejectCampaignSetKeys(it.value(), origin, "overrides." + it.key() + ".");
      s.overrides[it.key()] = it.value();
    }
  }
  if (j.contains("variations")) parseVariations(j["variations"], s, origin, base_dir);
  if (j.contains("aggregate")) s.aggregate = parseAggregateChoices(j["aggregate"], s.kind, origin);
  if (j.contains("inputs_at_init"))
    s.inputs_at_init = parseInputsAtInit(j["inputs_at_init"], origin);
  if (s.kind == "chain") {
    // A chain reads its inputs, its position, the seed and the top-level "chain" object and
    // nothing else (every chain of a campaign fits the same way, so replicas stay
    // comparable): a parameter here would be dropped.
    auto refuse = [&](const json& obj, const std::string& where) {
      if (obj.empty()) return;
      throw InputError(origin + ": '" + where + obj.begin().key() +
                       "' is not read by the chain task (its configuration is the top-level "
                       "'chain' object, the same for every task); remove it, or run the "
                       "variant as a campaign of its own");
    };
    refuse(s.params, "params.");
    for (const auto& [id, ov] : s.overrides) refuse(ov, "overrides." + id + ".");
  }
  if (const auto& keys = taskKindTraits(s.kind).param_keys) {
    // Keys the kind does not read would be dropped without a word (a misspelt "second").
    auto check = [&](const json& obj, const std::string& where) {
      for (auto it = obj.begin(); it != obj.end(); ++it) {
        if (std::find(keys->begin(), keys->end(), it.key()) != keys->end()) continue;
        std::string list;
        for (const auto& k : *keys) list += (list.empty() ? "" : ", ") + k;
        throw InputError(origin + ": '" + where + it.key() + "' is not read by the " + s.kind +
                         " task (it reads " + (list.empty() ? std::string("nothing") : list) +
                         "); remove it or fix its spelling");
      }
    };
    check(s.params, "params.");
    for (const auto& v : s.variations) check(v.params, "variations." + v.name + ".params.");
    for (const auto& [id, ov] : s.overrides) check(ov, "overrides." + id + ".");
  }

  if (j.contains("resources")) {
    const json& r = j["resources"];
    if (!r.is_object()) throw InputError(origin + ": 'resources' must be an object");
    rejectUnknownKeys(r, {"gpus", "tasks_per_gpu", "cpu_slots", "threads_per_task"}, origin,
                      "resources.");
    s.resources.gpus = getNumber<int>(r, "gpus", 0, origin, "resources.");
    s.resources.tasks_per_gpu = getNumber<int>(r, "tasks_per_gpu", 1, origin, "resources.");
    s.resources.cpu_slots = getNumber<int>(r, "cpu_slots", 0, origin, "resources.");
    s.resources.threads_per_task = getNumber<int>(r, "threads_per_task", 1, origin, "resources.");
  }
  const auto& res = s.resources;
  if (res.gpus < 0) throw InputError(origin + ": 'resources.gpus' must be >= 0");
  requireAtMost(res.gpus, kMaxGpusPerNode, origin, "resources.gpus", "GPUs of one node");
  if (res.tasks_per_gpu < 1 || res.tasks_per_gpu > kMaxTasksPerGpu) {
    throw InputError(origin + ": 'resources.tasks_per_gpu' must be between 1 and " +
                     std::to_string(kMaxTasksPerGpu) + " (got " +
                     std::to_string(res.tasks_per_gpu) + ")");
  }
  if (res.cpu_slots < 0) throw InputError(origin + ": 'resources.cpu_slots' must be >= 0");
  requireAtMost(res.cpu_slots, kMaxCpuSlots, origin, "resources.cpu_slots",
                "worker processes on one node");
  if (res.threads_per_task < 1) {
    throw InputError(origin + ": 'resources.threads_per_task' must be >= 1 (got " +
                     std::to_string(res.threads_per_task) + ")");
  }
  requireAtMost(res.threads_per_task, kMaxThreadsPerTask, origin, "resources.threads_per_task",
                "threads of one task");
  if (res.gpus > 0 && res.cpu_slots > 0) {
    throw InputError(origin +
                     ": set either 'resources.gpus' (GPU slots) or "
                     "'resources.cpu_slots' (CPU slots), not both");
  }

  s.executor = getString(j, "executor", "local", origin);
  if (s.executor != "local" && s.executor != "mpi" && s.executor != "slurm") {
    throw InputError(origin + ": 'executor' = '" + s.executor + "' (use local, mpi or slurm)");
  }
  if (j.contains("retry")) {
    const json& r = j["retry"];
    if (!r.is_object()) throw InputError(origin + ": 'retry' must be an object");
    rejectUnknownKeys(r, {"max_attempts", "backoff_s", "max_interruptions", "lease_wait_s"}, origin,
                      "retry.");
    s.retry.lease_wait_s = getNumber<double>(r, "lease_wait_s", 60.0, origin, "retry.");
    s.retry.max_interruptions = getNumber<int>(r, "max_interruptions", 20, origin, "retry.");
    s.retry.max_attempts = getNumber<int>(r, "max_attempts", 3, origin, "retry.");
    s.retry.backoff_s = getNumber<double>(r, "backoff_s", 0.0, origin, "retry.");
  }
  if (s.retry.max_attempts < 1) throw InputError(origin + ": 'retry.max_attempts' must be >= 1");
  requireAtMost(s.retry.max_attempts, kMaxAttempts, origin, "retry.max_attempts",
                "attempts of one task");
  if (s.retry.backoff_s < 0) throw InputError(origin + ": 'retry.backoff_s' must be >= 0");
  requireAtMost(s.retry.backoff_s, kMaxBackoffSeconds, origin, "retry.backoff_s",
                "one day before the first retry");
  if (s.retry.max_interruptions < 1)
    throw InputError(origin + ": 'retry.max_interruptions' must be >= 1");
  requireAtMost(s.retry.max_interruptions, kMaxInterruptions, origin, "retry.max_interruptions",
                "interruptions of one task");
  if (!(s.retry.lease_wait_s >= 0 && s.retry.lease_wait_s <= 86400))
    throw InputError(origin + ": 'retry.lease_wait_s' must be in [0, 86400] seconds");
  s.time_limit_s = getNumber<double>(j, "time_limit_s", 0.0, origin, "");
  if (s.time_limit_s < 0) throw InputError(origin + ": 'time_limit_s' must be >= 0 (0: none)");
  requireAtMost(s.time_limit_s, kMaxTimeLimitSeconds, origin, "time_limit_s",
                "365 days per task; 0 means no limit");

  for (const auto& [id, ov] : s.overrides) {
    if (s.indexOf(id) < 0) {
      throw InputError(origin + ": 'overrides." + id +
                       "' names no task of this campaign (ids run from " + s.idRangeText() + ")");
    }
  }
  // Validate every distinct parameter set the kind will see (the common one, each
  // variation's and the overrides).
  const auto& traits = taskKindTraits(s.kind);
  if (traits.validate) {
    auto check = [&](int index) {
      try {
        traits.validate(s.taskDef(index).params);
      } catch (const InputError& e) {
        throw InputError(origin + ": " + e.what());
      }
    };
    check(0);
    for (const auto& v : s.variations) check(v.first_index);
    for (const auto& [id, ov] : s.overrides) check(s.indexOf(id));
  }
  if (require_inputs) {
    // A new spec (say, one copied from a campaign's spec.json): its campaign gets a record of
    // its own at `campaign init`.
    s.inputs_at_init = json::object();
    requireCampaignInputs(s, origin);
  }
  return s;
}

CampaignSpec loadCampaignSpec(const std::string& path, bool require_inputs) {
  // A key given twice and a number beyond double's range are refused naming the key.
  const json j = parseJsonText(readFile(path), path, "fix the spec");
  auto slash = path.rfind('/');
  std::string base = slash == std::string::npos ? "." : path.substr(0, slash);
  return parseCampaignSpec(j, path, base, require_inputs);
}

int gpusOnThisNode() {
  if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string s = cvd;
    if (s.empty() || s == "-1" || s == "NoDevFiles") return 0;
    int n = 1;
    for (char c : s) n += c == ',';
    return n;
  }
  int n = 0;
  std::error_code ec;  // no /dev listing: no GPU seen
  for (std::filesystem::directory_iterator it("/dev", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() > 6 && name.compare(0, 6, "nvidia") == 0 &&
        name.find_first_not_of("0123456789", 6) == std::string::npos)
      ++n;
  }
  return n;
}

void checkResourcesOnThisNode(const CampaignSpec& spec, const std::string& origin) {
  const auto& r = spec.resources;
  if (r.gpus > 0) {
    int have = gpusOnThisNode();
    if (r.gpus > have) {
      throw InputError(origin + ": 'resources.gpus' = " + std::to_string(r.gpus) +
                       " but this node has " + std::to_string(have) +
                       " GPU(s); lower it, use cpu_slots, or run inside a GPU allocation");
    }
  }
  unsigned hw = std::thread::hardware_concurrency();
  if (hw > 0 && static_cast<unsigned>(r.threads_per_task) > hw) {
    throw InputError(origin +
                     ": 'resources.threads_per_task' = " + std::to_string(r.threads_per_task) +
                     " exceeds the " + std::to_string(hw) + " cores of this node; lower it");
  }
}

namespace {
void collectDifferences(const json& a, const json& b, JsonKeys& at, std::vector<JsonKeys>& out,
                        size_t max) {
  if (out.size() >= max || a == b) return;
  if (!a.is_object() || !b.is_object()) {
    out.push_back(at);
    return;
  }
  std::set<std::string> keys;
  for (auto it = a.begin(); it != a.end(); ++it) keys.insert(it.key());
  for (auto it = b.begin(); it != b.end(); ++it) keys.insert(it.key());
  for (const std::string& k : keys) {
    at.push_back(k);
    if (!a.contains(k) || !b.contains(k)) {
      if (out.size() < max) out.push_back(at);
    } else {
      collectDifferences(a[k], b[k], at, out, max);
    }
    at.pop_back();
  }
}
}  // namespace

std::vector<JsonKeys> jsonDifferences(const json& a, const json& b, size_t max) {
  std::vector<JsonKeys> out;
  JsonKeys at;
  collectDifferences(a, b, at, out, max);
  return out;
}

// A value for a message: its JSON, cut short.
std::string shortJsonText(const json* value) {
  if (value == nullptr) return "absent";
  std::string s = value->dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

const json* jsonAt(const json& j, const JsonKeys& keys) {
  const json* p = &j;
  for (const std::string& k : keys) {
    if (!p->is_object() || !p->contains(k)) return nullptr;
    p = &(*p)[k];
  }
  return p;
}

std::string jsonKeysText(const JsonKeys& keys, const std::string& prefix) {
  std::string text = prefix;
  for (const std::string& k : keys) {
    const bool plain = !k.empty() && k.find_first_of("./[]\" ") == std::string::npos;
    if (plain)
      text += (text.empty() ? "" : ".") + k;
    else
      text += "[" + json(k).dump() + "]";
  }
  return text.empty() ? "(the whole value)" : text;
}

}  // namespace foldfarm::jobs
