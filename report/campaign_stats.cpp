#include "report/campaign_stats.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <utility>
#include <vector>

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
  s.spec_truth = spec.inputs.count("truth") > 0;
  for (auto st :
       {jobs::TaskState::kPending, jobs::TaskState::kRunning, jobs::TaskState::kDone,
        jobs::TaskState::kFailed, jobs::TaskState::kInterrupted, jobs::TaskState::kCancelled})
    s.counts[std::string(jobs::toString(st))] = 0;

  // Each task's last attempt's start as its result says (the journal's task row): the
  // `running` event is written when the task is sent, and a short task may wait in its
  // worker's queue behind another first. Streamed: the tasks with their results, read whole,
  // are hundreds of MB at 400,000 tasks.
  std::map<int64_t, std::pair<int, double>> real_start;  // task index -> (attempt, start)
  campaign.forEachTask([&](const jobs::TaskRecord& t) {
    ++s.tasks;
    if (t.started_at > 0) real_start[t.index] = {t.attempts, t.started_at};
    s.counts[std::string(jobs::toString(t.state))]++;
    if (t.attempts > 1) ++s.tasks_retried;
    if (t.failures > 0 || t.state == jobs::TaskState::kFailed)
      s.failures.push_back({t.id, std::string(jobs::toString(t.state)), t.attempts, t.failures,
                            t.exit_code, t.reason});
  });

  // Every attempt's running interval comes from the events: a `running` row opens it, the
  // next row of the same task leaving `running` closes it; its start is the result's where the
  // task row has it (before: the dispatch, so that on 2 slots "at most 4 ran at once", and
  // the run time and CPU/GPU-hours held the time queued in a worker).
  std::map<int64_t, std::pair<int, double>> open_since;  // task -> (attempt, sent at)
  std::vector<std::pair<double, int>> edges;  // (time, +1 start / -1 end) of every attempt
  std::set<int64_t> done_before;
  campaign.journal().forEachEvent([&](const jobs::CampaignJournal::Event& e) {
    using jobs::TaskState;
    if (e.to == TaskState::kRunning) {
      ++s.attempts;
      open_since[e.task] = {e.attempt, e.at};
      s.hosts[e.host.empty() ? "(unknown)" : e.host]++;
      return;
    }
    if (e.from != TaskState::kRunning) return;
    auto it = open_since.find(e.task);
    if (it != open_since.end()) {
      double start = it->second.second;
      const auto real = real_start.find(e.task);
      if (real != real_start.end() && real->second.first == it->second.first &&
          real->second.second >= start && real->second.second <= e.at)
        start = real->second.second;
      s.run_s += std::max(0.0, e.at - start);
      edges.push_back({start, +1});
      edges.push_back({e.at, -1});
      if (s.first_start == 0 || start < s.first_start) s.first_start = start;
      open_since.erase(it);
    }
    s.last_end = std::max(s.last_end, e.at);
    if (e.to == TaskState::kDone) {
      s.done_at.push_back(e.at);
      if (!done_before.insert(e.task).second) ++s.runs_again;
    } else if (e.to == TaskState::kInterrupted) {
      ++s.interrupted_attempts;
    } else if (e.to == TaskState::kFailed || e.to == TaskState::kPending) {
      ++s.failed_attempts;
      std::string r = e.reason.empty() ? "exit " + std::to_string(e.exit_code) : e.reason;
      if (r.size() > 160) r = r.substr(0, 157) + "...";
      s.failure_reasons[r]++;
    }
  });
  // Attempts still running count from when they were sent (no result says otherwise).
  for (const auto& [task, sent] : open_since) {
    edges.push_back({sent.second, +1});
    if (s.first_start == 0 || sent.second < s.first_start) s.first_start = sent.second;
  }
  // The most attempts at once: ends before starts at the same moment.
  std::sort(edges.begin(), edges.end());
  int now = 0;
  for (const auto& edge : edges) {
    now += edge.second;
    s.peak_running = std::max(s.peak_running, now);
  }
  std::sort(s.done_at.begin(), s.done_at.end());
  s.gpu_hours = s.gpus > 0 ? s.run_s / s.tasks_per_gpu / 3600.0 : 0.0;
  s.cpu_hours = s.run_s * s.threads_per_task / 3600.0;
  return s;
}

}  // namespace foldfarm::report
