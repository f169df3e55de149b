#pragma once
// `foldfarm campaign extend D`: more of the same campaign. A campaign of 100 bootstrap
// replicas whose bands are still noisy gets 400 more; a second ensemble member per replica; a
// systematic variation that was forgotten. The tasks already done stay done (their results,
// attempts and history kept); only the new ones run. A task's definition depends on its
// position (replica, member, variation) and the campaign seed, never on the counts, so an
// extended campaign runs exactly the tasks a campaign made with the larger counts from the
// start would, and its results are those of that campaign.
//
// The new spec (a spec file, or the campaign's own) may differ from the campaign's only in:
//   replicas, members          the nominal counts, not below the campaign's;
//   variations                 new ones; an existing one's replicas and members, not below
//                              its own (everything else of it unchanged);
//   overrides                  of new tasks only;
//   time_limit_s, retry        how tasks are run, not what they compute (a time limit too
//                              short for the tasks, more attempts): the new values apply to
//                              every attempt from then on, with or without tasks added, and
//                              leave the aggregation as it is.
// Anything else (inputs, chain, params, seed, resources, …) is refused with the key named:
// the tasks done so far ran without it. So is a change of an existing task's definition that
// the new tasks would cause: a nominal task a new warm-started variation would start from
// must keep its per-step models (keep_models), which a task run before it did not.
//
// Steps, under the orchestrator lock (refused while a run holds the campaign):
//   1. the new spec checked against the campaign's (above); the inputs recorded at
//      `campaign init` must be as recorded (else `campaign accept-inputs` first);
//   2. each task's index in the new spec: the nominal tasks come first and each variation's
//      follow in the order of their names, so more nominal tasks (or a variation whose name
//      sorts first) renumber the tasks behind them; task ids, directories and Slurm jobs
//      name tasks by id and are untouched;
//   3. new input files (a new variation's simulation) checked as `campaign init` checks
//      them (the kind's layout check, every value) and recorded (size, time, sha256);
//   4. one journal transaction (the commit point): the existing tasks renumbered (rows,
//      events, task graph), the new ones created pending with their dependencies, the
//      journal's copy of the new spec and of the spec before it;
//   5. D/aggregate, which the new tasks make stale, moved to D/superseded/<time>-<pid>/;
//   6. D/spec.json written atomically.
// A crash before 4 changes nothing (D/aggregate included). One after 4 is finished by the next
// command that writes the campaign: D/spec.json is the spec before (the journal's copy tells),
// so Campaign::open moves D/aggregate aside and writes the journal's copy to spec.json; a
// command that only reads sees the extended campaign meanwhile. Tasks running in Slurm jobs
// meanwhile keep running: their ids, directories and definitions do not change.
// With `dry_run`: steps 1-2 on the campaign opened read-only, what would be added reported.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldfarm::jobs {

struct ExtendRequest {
  std::string spec_path;  // the new spec; "": the campaign's own (with the counts below)
  // The counts below override the new spec's (InputError naming the spec when `variation`
  // is not one of its variations: a new one needs its inputs, so a spec).
  int replicas = 0;       // > 0: the nominal replicas (over the spec's)
  int members = 0;        // > 0: the nominal members (over the spec's)
  std::string variation;  // not "": replicas and members are this variation's, not the nominal's
};

// One set of tasks (the nominal ones, a variation's) that grows or is new.
struct ExtendedSet {
  std::string variation;                        // "" for the nominal tasks
  int replicas_before = 0, members_before = 0;  // 0 × 0 for a new variation
  int replicas = 0, members = 0;
  int added = 0;
};

struct ExtendSummary {
  bool dry_run = false;
  int tasks_before = 0, tasks_after = 0;
  std::vector<ExtendedSet> sets;         // the sets that grow or are new, in index order
  std::vector<std::string> first_added;  // ids of the first new tasks (up to 8), for messages
  int renumbered = 0;                    // existing tasks whose index changes
  std::vector<std::string> new_inputs;   // input paths checked and recorded
  // The run settings changed ("time_limit_s 600 -> 3600", "retry.max_attempts 3 -> 5").
  std::vector<std::string> settings;
  // What the added tasks' directories will take once done (jobs/disk_estimate.hpp): bytes
  // < 0 when no added task could be sized; `added_unknown` of them were not.
  double added_bytes = -1;
  int added_unknown = 0;
  // The warning (warnIfOutputsDoNotFit) when what is not done yet and the aggregation would
  // not fit on the campaign's file system once extended ("" fits, or could not be sized);
  // --dry-run: the one a real extension would give.
  std::string disk_shortfall;
  bool aggregate_moved = false;  // D/aggregate held outputs (dry run: holds)
  std::string moved_to;          // D/superseded/<time>-<pid> ("" when nothing moved)
  int added() const { return tasks_after - tasks_before; }
  nlohmann::json toJson() const;
};

// Steps 1-6 above on campaign directory `dir`. Throws InputError (an incompatible spec, a
// changed or missing input, a new file that fails the kind's checks: nothing changed) or Error.
ExtendSummary extendCampaign(const std::string& dir, const ExtendRequest& request, bool dry_run);

}  // namespace foldfarm::jobs
