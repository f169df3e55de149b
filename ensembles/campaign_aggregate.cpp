#include "ensembles/campaign_aggregate.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/fd.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/log.hpp"
#include "core/base/sha256.hpp"
#include "core/base/text.hpp"
#include "ensembles/chain_groups.hpp"
#include "ensembles/rebin.hpp"
#include "jobs/aggregation_record.hpp"
#include "jobs/campaign.hpp"
#include "jobs/input_record.hpp"

namespace foldfarm::ensembles {

using nlohmann::json;

AggregateOptions AggregateChoices::options(const json& defaults) const {
  const auto word = [&](const std::string& given, const char* key, const char* builtin) {
    if (!given.empty()) return given;
    return defaults.contains(key) ? defaults.at(key).get<std::string>() : std::string(builtin);
  };
  AggregateOptions o;
  o.plots = !no_plots && (!defaults.contains("plots") || defaults.at("plots").get<bool>());
  o.event_weights = parseEventWeightsChoice(word(event_weights, "event_weights", "all"));
  o.shift_noise = parseShiftNoise(word(shift_noise, "shift_noise", "keep"));
  if (!binning.empty()) o.rebin = readBinningArgument(binning);
  return o;
}

json CampaignAggregation::toJson() const {
  return {{"aggregated", aggregated}, {"chains", chains}, {"tasks", tasks}, {"out", out}};
}

namespace {

// summary.json's "inputs" of a campaign: each role's path and checksums (those `campaign
// init` or `campaign accept-inputs` took, which the chains' files were checked against), the
// nominal's and the roles each variation replaces; a --truth other than the spec's by its
// absolute path, size and checksum as it is now.
json inputsOfCampaign(const jobs::CampaignSpec& spec, const std::optional<std::string>& truth) {
  const json sums = jobs::inputChecksums(spec.inputs_at_init);
  const auto entry = [&](const std::string& path) {
    json e = {{"path", path}};
    if (sums.contains(path)) e.update(sums[path]);
    return e;
  };
  json nominal = json::object();
  for (const auto& [role, path] : spec.inputs) nominal[role] = entry(path);
  if (truth && (!spec.inputs.count("truth") || spec.inputs.at("truth") != *truth)) {
    // Not recorded at init: its size and checksum now, as it is read (before: its path as
    // given, relative perhaps, and no checksum).
    std::error_code ec;
    const auto size = std::filesystem::file_size(*truth, ec);
    nominal["truth"] = {{"path", *truth},  // one that cannot be read is refused below
                        {"size", ec ? json() : json(size)},
                        {"sha256", ec ? json() : json(sha256File(*truth))}};
  }
  json variations = json::object();
  for (const jobs::Variation& v : spec.variations) {
    variations[v.name] = json::object();
    for (const auto& [role, path] : v.inputs) variations[v.name][role] = entry(path);
  }
  return {{"nominal", nominal}, {"variations", variations}};
}

// What of the spec's variations is not done, said (the bands are those of the done chains,
// and a shift of fewer chains is noisier), with the way to the rest; a pair of which one side
// has no done chain cannot be symmetrised: the other side's chains are taken out of `runs`
// and the source left out. Returns summary.json's "incomplete" (null when all are done).
nlohmann::json incompleteVariations(jobs::Campaign& camp, std::vector<std::string>& runs) {
  const jobs::CampaignSpec& spec = camp.spec();
  struct Count {
    int done = 0, total = 0;
    std::map<std::string, int> other;  // state -> tasks
  };
  std::map<std::string, Count> by;
  std::map<std::string, std::vector<std::string>> dirs;  // variation -> its task directories
  camp.forEachTask([&](const jobs::TaskRecord& t) {
    const std::string variation = spec.taskPosition(t.index).variation;
    dirs[variation].push_back(camp.taskDir(t.id));
    Count& c = by[variation];
    ++c.total;
    if (t.state == jobs::TaskState::kDone)
      ++c.done;
    else
      ++c.other[std::string(jobs::toString(t.state))];
  });
  const std::string& dir = camp.dir();
  // A run that orchestrates the campaign now runs the pending ones (before: "`campaign run D`
  // then aggregate again", which that run refuses).
  const std::string orchestrator = jobs::campaignOrchestrator(dir);
  const auto rest = [&](const Count& c) {
    std::string s, how;
    for (const auto& [state, n] : c.other) {
      s += (s.empty() ? "" : ", ") + std::to_string(n) + " " + state;
      const std::string step =
          state == "failed"       ? "`foldfarm campaign retry " + shellWord(dir) + " --failed`"
          : state == "cancelled"  ? "`foldfarm campaign retry " + shellWord(dir) + " --cancelled`"
          : !orchestrator.empty() ? "wait for the run that orchestrates it (" + orchestrator + ")"
                                  : "`foldfarm campaign run " + shellWord(dir) + "`";
      if (how.find(step) == std::string::npos) how += (how.empty() ? "" : ", ") + step;
    }
    return s + "; " + how + ", then aggregate again";
  };
  nlohmann::json out = nlohmann::json::object();
  std::set<std::string> dropped;
  std::map<std::string, std::vector<const jobs::Variation*>> sources;
  for (const jobs::Variation& v : spec.variations)
    if (!v.direction.empty()) sources[v.source].push_back(&v);
  for (const auto& [source, sides] : sources) {
    if (sides.size() != 2) continue;
    const int a = by[sides[0]->name].done, b = by[sides[1]->name].done;
    if ((a == 0) == (b == 0)) continue;
    const jobs::Variation* none = a == 0 ? sides[0] : sides[1];
    const jobs::Variation* some = a == 0 ? sides[1] : sides[0];
    dropped.insert(some->name);
    logWarn(
        "campaign aggregate: source '{}' is left out: its {} variation '{}' has no done chain "
        "({}), so '{}' has nothing to be symmetrised with",
        source, none->direction, none->name, rest(by[none->name]), some->name);
    out["sources_left_out"][source] = none->name;
  }
  for (const jobs::Variation& v : spec.variations) {
    const Count& c = by[v.name];
    if (c.done == c.total) continue;
    if (!dropped.count(v.name) && v.type != "reference")  // the reference: aggregate says it
      logWarn("campaign aggregate: variation '{}' has {} of {} chain(s) done ({}){}", v.name,
              c.done, c.total, rest(c),
              c.done == 0 ? ": it is left out of the bands" : ": its shift is of those done");
    out["variations"][v.name] = {{"done", c.done}, {"tasks", c.total}};
  }
  const Count& n = by[""];
  if (n.done < n.total) {
    // Said like a variation's (before: not a word, and exit 0 with fewer replicas than planned).
    logWarn(
        "campaign aggregate: {} of {} nominal chain(s) done ({}): the bands are over the "
        "replicas of those done",
        n.done, n.total, rest(n));
    out["nominal"] = {{"done", n.done}, {"tasks", n.total}};
  }
  std::set<std::string> left_out;
  for (const std::string& v : dropped) left_out.insert(dirs[v].begin(), dirs[v].end());
  const size_t before = runs.size();
  runs.erase(std::remove_if(runs.begin(), runs.end(),
                            [&](const std::string& r) { return left_out.count(r) > 0; }),
             runs.end());
  if (before > runs.size()) out["chains_left_out"] = before - runs.size();
  return out.empty() ? nlohmann::json() : out;
}

// The task of `camp` whose directory `text` (a chain's path, a message) names first
// ("D/tasks/<id>/..." or "D/tasks/<id>: ..."); nullopt when it names none of its tasks.
std::optional<std::string> taskNamedIn(const jobs::Campaign& camp, const std::string& text) {
  const std::string tasks = camp.dir() + "/tasks/";
  const size_t at = text.find(tasks);
  if (at == std::string::npos) return std::nullopt;
  const size_t from = at + tasks.size();
  std::string id = text.substr(from, text.find_first_of("/: ", from) - from);
  if (camp.spec().indexOf(id) < 0) return std::nullopt;
  return id;
}

}  // namespace

CampaignAggregation aggregateCampaign(const std::string& dir, const std::string& truth,
                                      const AggregateChoices& choices, bool all_done,
                                      const std::string& out) {
  using jobs::Campaign;
  // 0. A --binning's mistakes, before anything is opened.
  if (!choices.binning.empty()) readBinningArgument(choices.binning);
  // 1. The outputs lock, then the spec and the done tasks read under it: `campaign extend` and
  //    `accept-inputs` are refused while an aggregation runs, and an aggregation while they
  //    do, so the bands never mix two states of the campaign. (The first open finds the
  //    campaign's directory and refuses what is not one before a lock file is made in it.)
  //    Into D/aggregate: held alone (one aggregation replaces it at a time). Into an --out
  //    elsewhere: shared, as a report reads (the --out itself is locked by the aggregation), so
  //    a campaign this user may not write (a read-only file system, another user's) is read
  //    unlocked, as `report` reads it.
  const std::string found = Campaign::open(dir, Campaign::Access::kReadOnly).dir();
  // Where --out lies: relative to the campaign inside it ("aggregate", "." for its root).
  const std::string place = out.empty() ? "aggregate" : jobs::recordedOut(found, out);
  const bool into_own = place == "aggregate";
  if (into_own && ::access(found.c_str(), W_OK) != 0) {
    const int err = errno;
    if (err == EROFS || err == EACCES)
      throw InputError(dir + ": cannot be written here (" + errnoMessage(err) +
                       "), so its aggregate/ cannot; aggregate into a directory of yours with "
                       "--out DIR");
  }
  const Fd lock = into_own
                      ? jobs::lockCampaignOutputs(found, "`foldfarm campaign aggregate`")
                      : jobs::readCampaignOutputs(found, "`foldfarm campaign aggregate --out`");
  Campaign camp = Campaign::open(dir, Campaign::Access::kReadOnly);
  const jobs::CampaignSpec& spec = camp.spec();
  if (spec.kind != "chain")
    throw InputError(dir + ": aggregate needs a campaign of chain tasks (this one runs '" +
                     spec.kind + "')");
  std::vector<std::string> runs;
  jobs::DoneTasksDigest digest;  // what `campaign status` compares the recorded bands with
  camp.forEachTask(
      [&](const jobs::TaskRecord& t) {
        runs.push_back(camp.taskDir(t.id));
        digest.add(t);
      },
      jobs::TaskState::kDone);
  if (runs.empty()) {
    // The way to chains that are done: a run, or for cancelled and failed ones a retry.
    const jobs::StateCounts counts = camp.counts();
    const auto count = [&](jobs::TaskState st) {
      auto it = counts.find(st);
      return it == counts.end() ? 0 : it->second;
    };
    const int cancelled = count(jobs::TaskState::kCancelled),
              failed = count(jobs::TaskState::kFailed);
    const std::string orchestrator = jobs::campaignOrchestrator(dir);
    std::string how = orchestrator.empty() ? "run the campaign first (`foldfarm campaign run " +
                                                 shellWord(dir) + "`)"
                                           : "a run orchestrates it now (" + orchestrator +
                                                 "): aggregate once its chains are done";
    if (cancelled > 0 || failed > 0)
      how = std::string("its chains are ") +
            (cancelled > 0 ? std::to_string(cancelled) + " cancelled" : "") +
            (cancelled > 0 && failed > 0 ? " and " : "") +
            (failed > 0 ? std::to_string(failed) + " failed" : "") +
            (count(jobs::TaskState::kPending) > 0 ? " (the others pending)" : "") +
            ": `foldfarm campaign retry " + shellWord(dir) + (cancelled > 0 ? " --cancelled" : "") +
            (failed > 0 ? " --failed" : "") + "` runs them";
    throw InputError(dir + ": no chain is done yet; " + how);
  }
  CampaignAggregation r;
  r.chains = static_cast<int>(runs.size());
  r.tasks = spec.numTasks();
  r.out = out.empty() ? camp.dir() + "/aggregate" : out;
  if (!out.empty()) {
    // Not among the campaign's own files: its root, its tasks, what it moved aside.
    const auto under = [&](const std::string& dir) {
      return place == dir || place.rfind(dir + "/", 0) == 0;
    };
    if (place == "." || under("tasks") || under("superseded"))
      throw InputError("--out " + out + ": is the campaign's directory or one of its tasks' or " +
                       "superseded outputs; give " + camp.dir() +
                       "/aggregate (the default), another directory in it, or one outside it");
  }
  if (all_done && r.chains < r.tasks) return r;

  // 2. The truth, and the simulations (whose events the publication weights belong to), read
  //    here again: one replaced since `campaign init` is not what the chains read. (One
  //    removed is named where it is read; the spec's truth is not read under another truth.)
  std::optional<std::string> truth_path;
  if (!truth.empty())
    truth_path = std::filesystem::absolute(truth).lexically_normal().string();
  else if (spec.inputs.count("truth"))
    truth_path = spec.inputs.at("truth");
  // The spec's truth gone: said as the spec's (before: "<path>: no such file", whose file?).
  if (truth.empty() && truth_path && !std::filesystem::exists(*truth_path))
    throw InputError(camp.dir() + "/spec.json: 'inputs.truth' = " + *truth_path +
                     " does not exist; restore it, or aggregate with --truth OTHER.h5");
  const std::string spec_truth =
      spec.inputs.count("truth") && !truth.empty() ? spec.inputs.at("truth") : "";
  jobs::requireInputsAsRecorded(jobs::presentInputs(spec.inputs_at_init, spec_truth),
                                camp.dir() + "/spec.json");

  // 3. The bands.
  AggregateOptions options = choices.options(spec.aggregate);
  options.rebin_hint = "`foldfarm campaign aggregate " + shellWord(dir) + " --binning`";
  options.inputs = inputsOfCampaign(spec, truth_path);
  options.incomplete = incompleteVariations(camp, runs);
  r.chains = static_cast<int>(runs.size());
  try {
    aggregateRunsWithOptions(runs, r.out, truth_path, options);
  } catch (const MixedChainFormatsError& e) {
    // Chains of an older build's format beside newer ones: the tasks to run again, by name
    // (all of them on one command line up to 50; past that the first 50, and how to find all).
    std::vector<std::string> ids;
    for (const std::string& dir : e.older)
      if (std::optional<std::string> id = taskNamedIn(camp, dir)) ids.push_back(std::move(*id));
    if (ids.empty()) throw;
    constexpr size_t kNamed = 50;
    std::string command = "foldfarm campaign retry " + shellWord(camp.dir()) + " --task";
    for (size_t i = 0; i < std::min(ids.size(), kNamed); ++i) command += " " + ids[i];
    throw InputError(std::string(e.what()) + "; in this campaign, run them again with `" + command +
                     "`" +
                     (ids.size() > kNamed
                          ? " and the rest of the " + std::to_string(ids.size()) +
                                " tasks whose result.json has no \"chain_format\" or one below " +
                                std::to_string(kChainFormat)
                          : std::string()) +
                     ", then aggregate again");
  } catch (const InputError& e) {
    // A done chain's outputs damaged or removed since it ran: the way to run it again here.
    const std::optional<std::string> id = taskNamedIn(camp, e.what());
    if (!id) throw;
    throw InputError(std::string(e.what()) +
                     "; in this campaign, run that chain again with `foldfarm campaign retry " +
                     shellWord(camp.dir()) + " --task " + *id + "`, then aggregate again");
  }
  r.aggregated = true;
  // 4. The record `campaign status` reads: the command's options, to make it again as it was.
  jobs::AggregationRecord record;
  record.out = jobs::recordedOut(camp.dir(), r.out);
  std::vector<std::string> words;
  if (!truth.empty()) words.push_back("--truth " + shellWord(*truth_path));  // made absolute
  if (choices.no_plots) words.push_back("--no-plots");
  if (!choices.event_weights.empty())
    words.push_back("--event-weights " + shellWord(choices.event_weights));
  if (!choices.shift_noise.empty())
    words.push_back("--shift-noise " + shellWord(choices.shift_noise));
  if (!choices.binning.empty())
    words.push_back(
        "--binning " +
        shellWord(binningArgumentIsJson(choices.binning)
                      ? choices.binning
                      : std::filesystem::absolute(choices.binning).lexically_normal().string()));
  for (const std::string& w : words) record.options += (record.options.empty() ? "" : " ") + w;
  record.chains = r.chains;
  record.done_digest = digest.hex();
  record.summary_mtime_ns = statPath(r.out + "/summary.json").mtime_ns;
  try {
    jobs::recordAggregation(camp.dir(), record);
  } catch (const std::exception& e) {
    // The bands are written: a record that could not be (a campaign this user may not write)
    // is said, not an error.
    logWarn("campaign aggregate: {} (`campaign status` will not judge {})", e.what(), r.out);
  }
  return r;
}

std::string aggregationLine(const std::string& dir, const nlohmann::json& r) {
  if (r.at("aggregated").get<bool>())
    return "aggregated " + std::to_string(r.at("chains").get<int>()) + " chain(s) of " +
           std::to_string(r.at("tasks").get<int>()) + " task(s) into " +
           r.at("out").get<std::string>();
  return "not aggregated: " + std::to_string(r.at("chains").get<int>()) + " of " +
         std::to_string(r.at("tasks").get<int>()) + " task(s) of " + dir +
         " are done; `foldfarm campaign aggregate " + shellWord(dir) + "` aggregates those";
}

}  // namespace foldfarm::ensembles
