#include "jobs/accept_inputs.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/fault_point.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/progress.hpp"
#include "jobs/campaign.hpp"
#include "jobs/input_record.hpp"
#include "jobs/task_kind.hpp"
#include "jobs/task_lease.hpp"
#include "jobs/task_rerun.hpp"

namespace foldfarm::jobs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The paths each set of inputs (the nominal's: nullptr; a variation's) has its tasks read:
// every input but the kind's aggregation_inputs.
std::map<const Variation*, std::set<std::string>> pathsReadBySet(const CampaignSpec& spec) {
  const std::vector<std::string>& skip = taskKindTraits(spec.kind).aggregation_inputs;
  const auto read = [&](const std::map<std::string, std::string>& inputs,
                        std::set<std::string>& into) {
    for (const auto& [key, path] : inputs)
      if (std::find(skip.begin(), skip.end(), key) == skip.end()) into.insert(path);
  };
  std::map<const Variation*, std::set<std::string>> sets;
  read(spec.inputs, sets[nullptr]);
  for (const Variation& v : spec.variations) {
    // A variation's inputs replace the nominal's of the same key.
    std::map<std::string, std::string> merged = spec.inputs;
    for (const auto& [key, path] : v.inputs) merged[key] = path;
    read(merged, sets[&v]);
  }
  return sets;
}

}  // namespace

json AcceptSummary::toJson() const {
  json changed_json = json::array();
  for (const AcceptedInput& c : changed)
    changed_json.push_back({{"path", c.path}, {"change", c.change}, {"tasks", c.tasks}});
  return {{"dry_run", dry_run},
          {"restored", restored},
          {"changed", changed_json},
          {"rerun", rerun},
          {"needed_only", needed_only},
          {"was",
           {{"done", done},
            {"failed", failed},
            {"pending", pending},
            {"cancelled", cancelled},
            {"left_running", left_running}}},
          {"aggregate_moved", aggregate_moved},
          {"moved_to", moved_to}};
}

AcceptSummary acceptInputs(const std::string& dir_in, bool dry_run) {
  AcceptSummary sum;
  sum.dry_run = dry_run;
  Campaign c =
      Campaign::open(dir_in, dry_run ? Campaign::Access::kReadOnly : Campaign::Access::kWriter);
  const std::string& dir = c.dir();
  // No aggregation reads the outputs while they are made stale and moved (held to the end).
  Fd outputs_lock;
  if (!dry_run) outputs_lock = lockCampaignOutputs(dir, "`foldfarm campaign accept-inputs`");
  const std::string origin = dir + "/spec.json";
  CampaignSpec spec = c.spec();
  if (spec.inputs_at_init.empty())
    throw InputError(origin + ": holds no record of its inputs (a campaign made before " +
                     "`campaign init` recorded them): there is nothing to compare them with");

  // 1. Inputs copied again with their recorded bytes: their time back; unchanged then (a dry
  // run reads and compares them, and sets no time: they are not what it would accept).
  sum.restored = restoreInputTimes(spec.inputs_at_init, /*check_only=*/dry_run).restored;
  const std::set<std::string> same_bytes(sum.restored.begin(), sum.restored.end());
  // 2. What changed.
  std::set<std::string> changed_paths;
  for (auto& [path, clause] : changedInputs(spec.inputs_at_init)) {
    if (same_bytes.count(path) > 0) continue;  // dry run: its time would be restored
    if (!statPath(path).exists)
      throw InputError(origin + ": input " + path + " is missing; put it back (the version " +
                       "the campaign is to read), then accept the inputs again");
    changed_paths.insert(path);
    sum.changed.push_back({path, clause, 0});
  }
  if (sum.changed.empty()) return sum;

  // 3. The tasks that read a changed input, and those that need them.
  const auto read_by_set = pathsReadBySet(spec);
  const int n = spec.numTasks();
  std::vector<char> rerun(static_cast<size_t>(n), 0);
  std::vector<char> reads(static_cast<size_t>(n), 0);
  for (int i = 0; i < n; ++i) {
    const std::set<std::string>& paths = read_by_set.at(spec.variationOf(i));
    for (AcceptedInput& a : sum.changed)
      if (paths.count(a.path) > 0) {
        ++a.tasks;
        reads[static_cast<size_t>(i)] = rerun[static_cast<size_t>(i)] = 1;
      }
  }
  c.journal().graph().markDependents(rerun);

  // 4. None of them may be running.
  const RerunSet set =
      checkRerunnable(c, rerun, "which runs again with the new inputs", "accept the inputs");
  sum.rerun = set.ids;
  for (int i : set.indices)
    if (!reads[static_cast<size_t>(i)]) ++sum.needed_only;
  sum.done = set.done;
  sum.failed = set.failed;
  sum.pending = set.pending;
  sum.cancelled = set.cancelled;
  sum.left_running = static_cast<int>(set.left_running.size());
  sum.aggregate_moved = aggregateHoldsOutputs(dir);
  if (dry_run) return sum;

  // 5. The new files checked as `campaign init` checks them, then recorded.
  std::set<std::string> unchanged;
  for (auto it = spec.inputs_at_init.begin(); it != spec.inputs_at_init.end(); ++it)
    if (changed_paths.count(it.key()) == 0) unchanged.insert(it.key());
  checkCampaignInputsForKind(spec, origin);
  checkCampaignInputValues(spec, origin, unchanged);
  const json now = recordInputs({changed_paths.begin(), changed_paths.end()});
  for (auto it = now.begin(); it != now.end(); ++it) spec.inputs_at_init[it.key()] = it.value();
  const std::string spec_text = spec.toJson().dump(2) + "\n";

  // 6. What the old inputs made, out of the way, and 7. the journal: the tasks to run again
  //    pending, and its copy of the new spec (with the spec before it).
  std::string reason = "input changed and accepted (`campaign accept-inputs`):";
  for (const AcceptedInput& a : sum.changed) reason += " " + a.path;
  std::string before_text = c.journal().meta(kFrozenSpecMeta);
  if (before_text.empty()) before_text = readFile(origin);
  sum.moved_to =
      rerunTasks(c, set, reason,
                 {{kFrozenSpecMeta, spec_text}, {kFrozenSpecBeforeMeta, before_text}}, nullptr);
  faultPoint("accept.journal");
  // 8. The records the tasks check against.
  writeFileAtomic(origin, spec_text);
  return sum;
}

}  // namespace foldfarm::jobs
