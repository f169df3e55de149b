#include "jobs/status_report.hpp"

#include <algorithm>
#include <cstdio>

#include "core/base/progress.hpp"

namespace foldfarm::jobs {

using nlohmann::json;

json statusJson(Campaign& campaign) {
  json j;
  j["name"] = campaign.spec().name;
  j["dir"] = campaign.dir();
  StateCounts counts = campaign.counts();
  int total = 0;
  json c = json::object();
  for (const auto& [s, n] : counts) {
    c[std::string(toString(s))] = n;
    total += n;
  }
  j["total"] = total;
  j["counts"] = c;
  // Rate over the window in which tasks finished: (done) / (last finish - first start).
  double first_start = 0, last_finish = 0;
  int done = counts[TaskState::kDone];
  json failures = json::array();
  json running = json::array();
  for (const auto& t : campaign.tasks()) {
    if (t.state == TaskState::kDone) {
      if (first_start == 0 || (t.started_at > 0 && t.started_at < first_start)) first_start = t.started_at;
      last_finish = std::max(last_finish, t.finished_at);
    } else if (t.state == TaskState::kFailed) {
      failures.push_back({{"task", t.id}, {"attempts", t.attempts}, {"exit_code", t.exit_code},
                          {"reason", t.reason}});
    } else if (t.state == TaskState::kRunning) {
      running.push_back({{"task", t.id}, {"host", t.host}, {"slot", t.slot},
                         {"external_id", t.external_id}, {"since", t.started_at}});
    }
  }
  double rate = (done > 0 && last_finish > first_start) ? done / (last_finish - first_start) : 0.0;
  int remaining = counts[TaskState::kPending] + counts[TaskState::kRunning] +
                  counts[TaskState::kInterrupted];
  j["rate_tasks_per_s"] = rate;
  j["eta_s"] = rate > 0 ? remaining / rate : (remaining == 0 ? 0.0 : -1.0);
  j["failures"] = failures;
  j["running"] = running;
  return j;
}

std::string statusText(const json& s) {
  std::string out = "campaign " + s["name"].get<std::string>() + " (" + s["dir"].get<std::string>() + ")\n";
  out += "  tasks " + std::to_string(s["total"].get<int>()) + ":";
  for (auto it = s["counts"].begin(); it != s["counts"].end(); ++it) {
    if (it.value().get<int>() > 0) out += " " + it.key() + " " + std::to_string(it.value().get<int>());
  }
  out += "\n";
  char buf[160];
  double rate = s["rate_tasks_per_s"].get<double>();
  double eta = s["eta_s"].get<double>();
  std::snprintf(buf, sizeof(buf), "  rate %.3g tasks/s, ETA %s\n", rate,
                eta < 0 ? "unknown" : formatDuration(eta).c_str());
  out += buf;
  if (!s["failures"].empty()) {
    out += "  failed tasks (rerun with `foldfarm campaign retry DIR --failed`):\n";
    for (const auto& f : s["failures"]) {
      out += "    " + f["task"].get<std::string>() + " after " +
             std::to_string(f["attempts"].get<int>()) + " attempt(s), exit " +
             std::to_string(f["exit_code"].get<int>()) + ": " + f["reason"].get<std::string>() + "\n";
    }
  }
  return out;
}

}  // namespace foldfarm::jobs
