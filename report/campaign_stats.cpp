#include "report/campaign_stats.hpp"

#include <algorithm>

#include "jobs/sqlite_db.hpp"
#include "jobs/task_state.hpp"

namespace foldfarm::report {

CampaignStats readCampaignStats(const std::string& campaign_dir) {
  jobs::Campaign campaign = jobs::Campaign::open(campaign_dir, jobs::Campaign::Access::kReadOnly);
  const jobs::CampaignSpec& spec = campaign.spec();
  CampaignStats s;
  s.name = spec.name;
  s.kind = spec.kind;
  s.executor = spec.executor;
  s.replicas = spec.replicas;
  s.members = spec.members;
  s.gpus = spec.resources.gpus;
  s.tasks_per_gpu = std::max(1, spec.resources.tasks_per_gpu);
  s.threads_per_task = std::max(1, spec.resources.threads_per_task);
  s.slots = spec.slotsPerNode();
  for (auto st : {jobs::TaskState::kPending, jobs::TaskState::kRunning, jobs::TaskState::kDone,
                  jobs::TaskState::kFailed, jobs::TaskState::kInterrupted,
                  jobs::TaskState::kCancelled})
    s.counts[std::string(jobs::toString(st))] = 0;

  std::vector<jobs::TaskRecord> tasks = campaign.tasks();
  s.tasks = static_cast<int>(tasks.size());
  for (const auto& t : tasks) {
    s.counts[std::string(jobs::toString(t.state))]++;
    if (t.attempts > 1) ++s.tasks_retried;
    if (t.failures > 0 || t.state == jobs::TaskState::kFailed)
      s.failures.push_back({t.id, std::string(jobs::toString(t.state)), t.attempts, t.failures,
                            t.exit_code, t.reason});
  }

  // Every attempt's running interval comes from the events: a `running` row opens it, the
  // next row of the same task leaving `running` closes it.
  jobs::SqliteDb db(campaign_dir + "/journal.sqlite", false);
  jobs::SqliteStatement ev(db,
                           "SELECT task_idx, from_state, to_state, at, host, exit_code, reason "
                           "FROM events ORDER BY seq");
  std::map<int64_t, double> open_since;
  while (ev.step()) {
    const int64_t task = ev.columnInt(0);
    const std::string from = ev.columnIsNull(1) ? "" : ev.columnText(1);
    const std::string to = ev.columnText(2);
    const double at = ev.columnDouble(3);
    const int exit_code = ev.columnIsNull(5) ? -1 : static_cast<int>(ev.columnInt(5));
    const std::string reason = ev.columnIsNull(6) ? "" : ev.columnText(6);
    if (to == "running") {
      ++s.attempts;
      open_since[task] = at;
      const std::string host = ev.columnIsNull(4) ? "" : ev.columnText(4);
      s.hosts[host.empty() ? "(unknown)" : host]++;
      if (s.first_start == 0 || at < s.first_start) s.first_start = at;
      continue;
    }
    if (from != "running") continue;
    auto it = open_since.find(task);
    if (it != open_since.end()) {
      s.run_s += std::max(0.0, at - it->second);
      open_since.erase(it);
    }
    s.last_end = std::max(s.last_end, at);
    if (to == "done") {
      s.done_at.push_back(at);
    } else if (to == "interrupted") {
      ++s.interrupted_attempts;
    } else if (to == "failed" || to == "pending") {
      ++s.failed_attempts;
      std::string r = reason.empty() ? "exit " + std::to_string(exit_code) : reason;
      if (r.size() > 160) r = r.substr(0, 157) + "...";
      s.failure_reasons[r]++;
    }
  }
  std::sort(s.done_at.begin(), s.done_at.end());
  s.gpu_hours = s.gpus > 0 ? s.run_s / s.tasks_per_gpu / 3600.0 : 0.0;
  s.cpu_hours = s.run_s * s.threads_per_task / 3600.0;
  return s;
}

}  // namespace foldfarm::report
