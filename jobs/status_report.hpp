#pragma once
// What `foldfarm campaign status` prints: counts per state, throughput so far, an ETA,
// and the failed tasks with their reasons. Reads the journal only.
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "jobs/campaign.hpp"

namespace foldfarm::jobs {

// {"name", "dir", "total", "counts": {state: n}, "rate_tasks_per_s", "eta_s" (-1 unknown),
//  "failures": [{"task", "attempts", "exit_code", "reason"}], "running": [{"task",
//  "host", "slot", "external_id", "since"}], "graph": {"dependencies", "ready", "waiting",
//  "held"} (pending tasks by readiness, jobs/task_graph.hpp), "groups": [{"name" (nominal
//  or a variation), "type", "tasks", "counts": {state: n}, "after"}], "held": [{"task",
//  "needs", "reason"}], "inputs_changed": the first input changed since `campaign init`
//  (jobs/input_record.hpp; "" when none), "outputs_in_use": what holds the campaign's outputs
//  lock ("" when nothing does: campaignOutputsUser), "aggregated_chains": how many chains the
//  aggregation in D/aggregate read (null: none), which the text compares with the done tasks,
//  "orchestrator": the run of this host that holds the campaign ("" when none:
//  campaignOrchestrator)}
nlohmann::json statusJson(Campaign& campaign);
std::string statusText(const nlohmann::json& status);

// `campaign status --tasks`: every task in the campaign's order (the ids `campaign retry
// --task` takes), streamed from the journal to `out` one task at a time (400,000 tasks read
// whole took 515 MB). JSON: an array, one object a line, [{"task", "group" (nominal or a
// variation), "replica", "member", "state", "attempts", "host", "exit_code" (-1: none yet)}],
// its closing bracket indented by `indent`. Text: a table, a line per task: its id, state,
// attempts, host and last exit code.
void writeTasksJson(std::FILE* out, Campaign& campaign, const std::string& indent = "");
void writeTasksText(std::FILE* out, Campaign& campaign);

}  // namespace foldfarm::jobs
