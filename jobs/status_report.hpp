#pragma once
// What `foldfarm campaign status` prints: counts per state, throughput so far, an ETA,
// and the failed tasks with their reasons. Reads the journal only.
#include <string>

#include <nlohmann/json.hpp>

#include "jobs/campaign.hpp"

namespace foldfarm::jobs {

// {"name", "dir", "total", "counts": {state: n}, "rate_tasks_per_s", "eta_s" (-1 unknown),
//  "failures": [{"task", "attempts", "exit_code", "reason"}], "running": [{"task",
//  "host", "slot", "external_id", "since"}]}
nlohmann::json statusJson(Campaign& campaign);
std::string statusText(const nlohmann::json& status);

}  // namespace foldfarm::jobs
