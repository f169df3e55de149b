#include "jobs/extend_campaign.hpp"

#include <algorithm>
#include <set>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/fault_point.hpp"
#include "core/base/log.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_spec.hpp"
#include "jobs/disk_estimate.hpp"
#include "jobs/input_record.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;

constexpr const char* kExtendAdvice =
    "; `campaign extend` adds replicas, members, variations and overrides of new tasks, and "
    "changes time_limit_s and retry, but nothing else the campaign's tasks run with: for that, "
    "make a new campaign (`foldfarm campaign init`)";

// InputError naming the first key of `a` (the campaign's) and `b` (`from`'s) that differs.
void requireSame(const json& a, const json& b, const std::string& prefix, const std::string& from) {
  const std::vector<JsonKeys> diff = jsonDifferences(a, b);
  if (diff.empty()) return;
  const JsonKeys& at = diff.front();
  throw InputError(from + ": '" + jsonKeysText(at, prefix) + "' = " + shortJsonText(jsonAt(b, at)) +
                   " differs from the campaign's (" + shortJsonText(jsonAt(a, at)) + ")" +
                   kExtendAdvice);
}

// The spec without what an extension may change.
json fixedPart(const CampaignSpec& s) {
  json j = s.toJson();
  for (const char* k : {"replicas", "members", "overrides", "variations", "inputs_at_init"})
    j.erase(k);
  for (const char* k : kRunSettingKeys) j.erase(k);
  return j;
}

// "time_limit_s 600 -> 3600", "retry.max_attempts 3 -> 5": the run settings `next` changes.
std::vector<std::string> changedRunSettings(const CampaignSpec& old, const CampaignSpec& next) {
  const json a = old.toJson(), b = next.toJson();
  std::vector<std::string> changed;
  const auto add = [&](const std::string& key, const json& was, const json& now) {
    if (was != now) changed.push_back(key + " " + was.dump() + " -> " + now.dump());
  };
  for (const char* k : kRunSettingKeys) {
    const json was = a.value(k, json()), now = b.value(k, json());
    if (was.is_object() && now.is_object()) {
      for (auto it = now.begin(); it != now.end(); ++it)
        add(std::string(k) + "." + it.key(), was.value(it.key(), json()), it.value());
    } else {
      add(k, was, now);
    }
  }
  return changed;
}

json variationFixedPart(const json& v) {
  json j = v;
  j.erase("replicas");
  j.erase("members");
  return j;
}

void requireNotFewer(int before, int now, const std::string& key, const std::string& from) {
  if (now < before)
    throw InputError(from + ": '" + key + "' = " + std::to_string(now) + " is below the " +
                     "campaign's " + std::to_string(before) +
                     "; `campaign extend` adds tasks and removes none (a campaign of fewer "
                     "tasks is a new campaign: `foldfarm campaign init`)");
}

// Step 1: `next` may differ from `old` only as the header says.
void requireExtensionOf(const CampaignSpec& old, const CampaignSpec& next,
                        const std::string& from) {
  requireSame(fixedPart(old), fixedPart(next), "", from);
  requireNotFewer(old.replicas, next.replicas, "replicas", from);
  requireNotFewer(old.members, next.members, "members", from);
  const json old_vs = old.toJson().value("variations", json::object());
  const json next_vs = next.toJson().value("variations", json::object());
  for (const Variation& v : old.variations) {
    if (!next_vs.contains(v.name))
      throw InputError(from + ": 'variations." + v.name + "' is missing; the campaign has it, " +
                       "and `campaign extend` adds tasks and removes none");
    const json& nv = next_vs[v.name];
    requireSame(variationFixedPart(old_vs[v.name]), variationFixedPart(nv), "variations." + v.name,
                from);
    requireNotFewer(v.replicas, nv.value("replicas", 1), "variations." + v.name + ".replicas",
                    from);
    requireNotFewer(v.members, nv.value("members", 1), "variations." + v.name + ".members", from);
  }
  for (const auto& [id, ov] : old.overrides) {
    const auto it = next.overrides.find(id);
    if (it == next.overrides.end() || it->second != ov)
      throw InputError(from + ": 'overrides." + id +
                       "' = " + shortJsonText(it == next.overrides.end() ? nullptr : &it->second) +
                       " differs from the campaign's (" + shortJsonText(&ov) + ")" + kExtendAdvice);
  }
  for (const auto& [id, ov] : next.overrides)
    if (old.overrides.count(id) == 0 && old.indexOf(id) >= 0)
      throw InputError(from + ": 'overrides." + id + "' names task " + id +
                       ", which the campaign has (without it)" + kExtendAdvice);
}

// The variation of `next` whose new tasks make nominal task (r, m) keep its models.
std::string warmStarterOf(const CampaignSpec& old, const CampaignSpec& next, int r, int m) {
  for (const Variation& v : next.variations) {
    if (!v.warm_start || r >= v.replicas || m >= v.members) continue;
    bool covered_before = false;
    for (const Variation& w : old.variations)
      covered_before = covered_before || (w.name == v.name && r < w.replicas && m < w.members);
    if (!covered_before) return v.name;
  }
  return "?";
}

// InputError when task `i` of `old` would be defined otherwise as task `k` of `next`.
void requireSameTask(const CampaignSpec& old, int i, const CampaignSpec& next, int k,
                     const std::string& from) {
  const TaskDef a = old.taskDef(i);
  const TaskDef b = next.taskDef(k);
  const std::vector<JsonKeys> diff = jsonDifferences(a.params, b.params);
  if (diff.empty()) return;
  const JsonKeys& at = diff.front();
  const std::string key = jsonKeysText(at);
  if (key == "keep_models")
    throw InputError(from + ": the new tasks of variation '" +
                     warmStarterOf(old, next, a.replica, a.member) + "' would start from task " +
                     a.id + ", which the campaign defines without keeping its per-step models " +
                     "(no variation of it starts from that task): give the variation " +
                     "\"warm_start\": false, or replicas and members within those of the " +
                     "campaign's warm-started variations (a campaign made with \"chain\": " +
                     "{\"keep_models\": true} keeps every nominal task's)");
  if (key == "warm_from_task")
    throw InputError(from + ": task " + a.id + " would start from the new nominal task " +
                     b.params.value("warm_from_task", std::string("?")) +
                     ", which it did not (the campaign has no such task): that changes a task "
                     "the campaign has; make a new campaign with these counts (`foldfarm "
                     "campaign init`), or give the variation \"warm_start\": false there");
  throw InputError(from + ": task " + a.id + " would change ('" + key +
                   "' = " + shortJsonText(jsonAt(b.params, at)) + ", not " +
                   shortJsonText(jsonAt(a.params, at)) + ")" + kExtendAdvice);
}

// The request as a spec: its file (or the campaign's own spec) with the counts over it.
CampaignSpec requestedCounts(const CampaignSpec& old, const ExtendRequest& req,
                             const std::string& origin, std::string& from) {
  from = req.spec_path.empty() ? origin : req.spec_path;
  if (req.replicas < 0 || req.members < 0)
    throw InputError("campaign extend: --replicas and --members take a count of 1 or more");
  CampaignSpec s =
      req.spec_path.empty() ? old : loadCampaignSpec(req.spec_path, /*require_inputs=*/false);
  if (!req.spec_path.empty()) refuseVariationKeysNotRead(s, req.spec_path);
  if (!req.variation.empty() && req.replicas == 0 && req.members == 0)
    throw InputError("campaign extend: --variation " + req.variation +
                     " says whose counts grow; give --replicas R or --members M with it");
  if (req.replicas == 0 && req.members == 0) return s;
  json j = s.toJson();  // absolute paths: parsed again against no directory
  json* counts = &j;
  if (!req.variation.empty()) {
    if (!j.contains("variations") || !j["variations"].contains(req.variation)) {
      std::string names;
      for (const Variation& v : s.variations) names += (names.empty() ? "" : ", ") + v.name;
      throw InputError(from + ": has no variation '" + req.variation + "' (" +
                       (names.empty() ? std::string("it has none") : "it has " + names) +
                       "); a new variation needs --spec with its inputs");
    }
    counts = &j["variations"][req.variation];
  }
  // A count given beside a spec file that says another one: the option wins, said so. One
  // below the campaign's is refused first (before: the warm reference's counts, raised to the
  // old ones, were named as going beyond the nominal's).
  for (const auto& [key, given] :
       {std::pair<const char*, int>{"replicas", req.replicas}, {"members", req.members}}) {
    if (given <= 0) continue;
    const bool replicas = std::string(key) == "replicas";
    if (req.variation.empty())
      requireNotFewer(replicas ? old.replicas : old.members, given, key, from);
    for (const Variation& v : old.variations)
      if (v.name == req.variation)
        requireNotFewer(replicas ? v.replicas : v.members, given,
                        "variations." + v.name + "." + key, from);
    const int in_file = counts->value(key, 1);
    if (!req.spec_path.empty() && in_file != given)
      logWarn("campaign extend: --{} {} replaces the {} {} of {}{}", key, given, key, in_file,
              req.spec_path, req.variation.empty() ? "" : " (variation " + req.variation + ")");
    (*counts)[key] = given;
  }
  const std::string what = from + " with" +
                           (req.variation.empty() ? "" : " --variation " + req.variation) +
                           (req.replicas > 0 ? " --replicas " + std::to_string(req.replicas) : "") +
                           (req.members > 0 ? " --members " + std::to_string(req.members) : "");
  return parseCampaignSpec(j, what, "/", /*require_inputs=*/false);
}

// The request with the warm reference `campaign init` would give it (a spec file written
// without it names it not), raised to cover new warm-started tasks.
CampaignSpec requestedSpec(const CampaignSpec& old, const ExtendRequest& req,
                           const std::string& origin, std::string& from) {
  CampaignSpec s = requestedCounts(old, req, origin, from);
  // A spec file without the reference that the campaign has keeps the campaign's counts of it.
  const bool named = std::any_of(s.variations.begin(), s.variations.end(),
                                 [](const Variation& v) { return v.type == "reference"; });
  for (const Variation& v : old.variations)
    if (v.type == "reference" && !named) {
      json j = s.toJson();
      j["variations"][v.name] = {
          {"type", "reference"}, {"replicas", v.replicas}, {"members", v.members}};
      s = parseCampaignSpec(j, from, "/", /*require_inputs=*/false);
    }
  return withWarmReference(s);
}

// The input paths of `s` (the nominal's, each variation's) not in `recorded`, once each.
std::vector<std::string> unrecordedInputs(const CampaignSpec& s, const json& recorded) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  const auto add = [&](const std::map<std::string, std::string>& inputs) {
    for (const auto& [key, path] : inputs)
      if (!recorded.contains(path) && seen.insert(path).second) out.push_back(path);
  };
  add(s.inputs);
  for (const Variation& v : s.variations) add(v.inputs);
  return out;
}

// What the added tasks (those not `existing` in `next`) will take, and for a dry run whether
// what is then not done yet fits on the campaign's file system. An estimate that fails is
// left out (logged): it never stops an extension.
void sizeExtension(Campaign& c, const CampaignSpec& next, const std::vector<int>& new_index_of,
                   const std::vector<char>& existing, ExtendSummary& sum) {
  try {
    const CampaignDiskEstimate added = estimateCampaignDisk(
        next, nullptr, [&](int k) { return existing[static_cast<size_t>(k)] == 0; });
    sum.added_unknown = added.tasks_unknown;
    if (added.tasks_unknown < sum.added()) sum.added_bytes = added.tasks.bytes;
    // A real extension is sized as the campaign is once extended (extendCommand).
    if (!sum.dry_run) return;
    std::vector<char> left(existing.size(), 1);
    const std::vector<TaskState> states = c.journal().states();
    for (size_t i = 0; i < states.size() && i < new_index_of.size(); ++i)
      if (states[i] == TaskState::kDone) left[static_cast<size_t>(new_index_of[i])] = 0;
    sum.disk_shortfall = tasksLeftShortfall(next, left, c.dir(), " once extended");
  } catch (const std::exception& e) {
    logDebug("campaign {}: the extension's outputs are not sized: {}", c.dir(), e.what());
  }
}

}  // namespace

json ExtendSummary::toJson() const {
  json sets_json = json::array();
  for (const ExtendedSet& s : sets)
    sets_json.push_back(
        {{"variation", s.variation},
         {"before", {{"replicas", s.replicas_before}, {"members", s.members_before}}},
         {"after", {{"replicas", s.replicas}, {"members", s.members}}},
         {"added", s.added}});
  return {{"dry_run", dry_run},
          {"tasks_before", tasks_before},
          {"tasks_after", tasks_after},
          {"added", added()},
          {"sets", sets_json},
          {"first_added", first_added},
          {"renumbered", renumbered},
          {"new_inputs", new_inputs},
          {"settings", settings},
          {"aggregate_moved", aggregate_moved},
          {"moved_to", moved_to},
          {"added_outputs_bytes", added_bytes < 0 ? json(nullptr) : json(added_bytes)},
          {"added_outputs_unknown", added_unknown},
          {"disk_shortfall", disk_shortfall}};
}

ExtendSummary extendCampaign(const std::string& dir_in, const ExtendRequest& req, bool dry_run) {
  ExtendSummary sum;
  sum.dry_run = dry_run;
  // An extension stopped before its spec.json was written is finished here (Campaign::open).
  Campaign c =
      Campaign::open(dir_in, dry_run ? Campaign::Access::kReadOnly : Campaign::Access::kWriter);
  const std::string& dir = c.dir();
  // No aggregation reads the outputs while the extension makes them stale (held to the end).
  Fd outputs_lock;
  if (!dry_run) outputs_lock = lockCampaignOutputs(dir, "`foldfarm campaign extend`");
  const std::string origin = dir + "/spec.json";
  const CampaignSpec& old = c.spec();
  std::string from;
  CampaignSpec next = requestedSpec(old, req, origin, from);

  // 1. Only what an extension may change; the inputs as the tasks done so far read them.
  requireExtensionOf(old, next, from);
  requireCampaignInputsAsRecorded(old, origin);
  requireCampaignInputFiles(next, from);

  // 2. Each task's index in the new spec, its definition unchanged; the new tasks.
  sum.tasks_before = old.numTasks();
  sum.tasks_after = next.numTasks();
  std::vector<int> new_index_of(static_cast<size_t>(sum.tasks_before));
  std::vector<char> existing(static_cast<size_t>(sum.tasks_after), 0);
  for (int i = 0; i < sum.tasks_before; ++i) {
    const std::string id = old.taskPosition(i).id;
    const int k = next.indexOf(id);
    if (k < 0) throw Error(from + ": task " + id + " is not in it");
    requireSameTask(old, i, next, k, from);
    new_index_of[static_cast<size_t>(i)] = k;
    existing[static_cast<size_t>(k)] = 1;
    if (k != i) ++sum.renumbered;
  }
  std::vector<TaskDef> added;
  for (int k = 0; k < sum.tasks_after; ++k) {
    if (existing[static_cast<size_t>(k)]) continue;
    added.push_back(next.taskPosition(k));
    if (sum.first_added.size() < 8) sum.first_added.push_back(added.back().id);
  }
  if (next.numNominalTasks() > old.numNominalTasks())
    sum.sets.push_back({"", old.replicas, old.members, next.replicas, next.members,
                        next.numNominalTasks() - old.numNominalTasks()});
  for (const Variation& v : next.variations) {
    const Variation* before = nullptr;
    for (const Variation& w : old.variations)
      if (w.name == v.name) before = &w;
    const int had = before ? before->numTasks() : 0;
    if (v.numTasks() > had)
      sum.sets.push_back({v.name, before ? before->replicas : 0, before ? before->members : 0,
                          v.replicas, v.members, v.numTasks() - had});
    // New tasks of a warm-started variation beyond the nominal's counts have no nominal task
    // to start from, as `campaign init` warns (before: said nothing here).
    if (v.numTasks() > had && startsTasksCold(next, v) &&
        (!before || !startsTasksCold(old, *before) || v.replicas > before->replicas ||
         v.members > before->members))
      logWarn(
          "campaign {}: variation {} grows to {} x {} tasks, the nominal has {} x {}: those beyond "
          "the nominal's start cold, and its shift is measured over the others only",
          dir, v.name, v.replicas, v.members, next.replicas, next.members);
  }
  next.inputs_at_init = old.inputs_at_init;
  if (!old.inputs_at_init.empty()) sum.new_inputs = unrecordedInputs(next, old.inputs_at_init);
  sum.settings = changedRunSettings(old, next);
  if (added.empty() && sum.settings.empty()) return sum;
  if (!added.empty()) sizeExtension(c, next, new_index_of, existing, sum);
  if (dry_run) {
    sum.aggregate_moved = !added.empty() && aggregateHoldsOutputs(dir);
    return sum;
  }

  // 3. New input files, checked as `campaign init` checks them, and recorded.
  if (!sum.new_inputs.empty()) {
    std::set<std::string> recorded;
    for (auto it = old.inputs_at_init.begin(); it != old.inputs_at_init.end(); ++it)
      recorded.insert(it.key());
    checkCampaignInputsForKind(next, from);
    checkCampaignInputValues(next, from, recorded);
    const json now = recordInputs(sum.new_inputs);
    for (auto it = now.begin(); it != now.end(); ++it) next.inputs_at_init[it.key()] = it.value();
  }
  const std::string spec_text = next.toJson().dump(2) + "\n";

  // 4. The journal: the commit point (with the spec before, which tells an extension stopped
  //    after it from a spec.json edited by hand).
  std::string before_text = c.journal().meta(kFrozenSpecMeta);
  if (before_text.empty()) before_text = readFile(origin);
  faultPoint("extend.commit");
  c.journal().extend(new_index_of, added, "created by `campaign extend`",
                     {{kFrozenSpecMeta, spec_text}, {kFrozenSpecBeforeMeta, before_text}});
  faultPoint("extend.journal");
  // 5. The aggregation's outputs, which the new tasks make stale, out of the way (run settings
  //    alone change no result).
  // A failure from here on is after the commit point: the campaign is extended, and the next
  // command that writes it finishes what is left (finishInterruptedChange). Said so (before:
  // a bare "cannot rename", exit 1, as if nothing had changed).
  try {
    if (!added.empty()) {
      SupersededOutputs aside(dir);
      sum.aggregate_moved = aside.moveAggregate();
      aside.recordUse();
      sum.moved_to = aside.path();
    }
    faultPoint("extend.aggregate");
    // 6. The spec the tasks and every command read.
    writeFileAtomic(origin, spec_text);
  } catch (const Error& e) {
    throw Error("campaign " + dir + " is extended (" + std::to_string(added.size()) +
                " task(s) added to its journal), but its last step failed: " + e.what() +
                "; once that is mended, the next command that writes the campaign (`foldfarm "
                "campaign run " +
                dir + "`) finishes it" +
                (added.empty() ? std::string()
                               : "; until then " + dir +
                                     "/aggregate holds the bands of the campaign before"));
  }
  return sum;
}

}  // namespace foldfarm::jobs
