#include "jobs/status_report.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/json_file.hpp"
#include "core/base/progress.hpp"
#include "core/base/text.hpp"
#include "jobs/aggregation_record.hpp"
#include "jobs/cancel_request.hpp"
#include "jobs/disk_estimate.hpp"
#include "jobs/input_record.hpp"
#include "jobs/task_lease.hpp"

namespace foldfarm::jobs {

using nlohmann::json;

namespace {

// How many chains the aggregation in D/aggregate read (summary.json "chains", the nominal's,
// each variation's and the warm reference's); null when there is none or it cannot be read.
json aggregatedChains(const std::string& dir) {
  const std::string path = dir + "/aggregate/summary.json";
  if (!statPath(path).exists) return json();
  try {
    const json summary = readJsonFile(path, "");
    int64_t n = summary.at("chains").get<int64_t>();
    for (const auto& v : summary.value("variations", json::array()))
      n += v.at("chains").get<int64_t>();
    if (summary.contains("warm_reference"))
      n += summary["warm_reference"].at("chains").get<int64_t>();
    return n;
  } catch (const std::exception&) {
    return json();
  }
}

// The time from the first to the last of `times` (sorted) that the campaign was at work: each
// interval between consecutive ones counted up to ten times their median (of those above 0),
// so that a pause between runs (a campaign extended or resumed after a day) is not read as
// slow work (before: the rate of a campaign extended by a few tasks was that of the whole
// day). All intervals 0: 0.
double workingSpan(const std::vector<double>& times) {
  std::vector<double> gaps;
  for (size_t i = 1; i < times.size(); ++i)
    if (times[i] > times[i - 1]) gaps.push_back(times[i] - times[i - 1]);
  if (gaps.empty()) return 0.0;
  std::vector<double> sorted = gaps;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2),
                   sorted.end());
  const double cap = 10.0 * sorted[sorted.size() / 2];
  double span = 0;
  for (double g : gaps) span += std::min(g, cap);
  return span;
}

}  // namespace

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
  // Rate: over the last kRateWindow tasks done (the recent throughput, whatever pauses the
  // campaign had before: a campaign resumed after a day is not read as slow), else over the
  // window in which tasks finished: (done) / (last finish - first start).
  constexpr size_t kRateWindow = 100;
  std::vector<double> finishes;
  double first_start = 0, last_finish = 0;
  int done = counts[TaskState::kDone];
  json failures = json::array();
  json running = json::array();
  // The task graph: pending tasks split into ready, waiting and held, and per group
  // (nominal and each variation) the counts by state.
  const CampaignSpec& spec = campaign.spec();
  const TaskGraph graph = campaign.journal().graph();
  const std::vector<TaskState> states = campaign.journal().states();
  int ready = 0, waiting = 0;
  json held = json::array();
  DoneTasksDigest digest;  // what the recorded aggregations are compared with
  // One pass over the tasks, streamed: a campaign of 400,000 tasks with their results is
  // hundreds of MB when read whole.
  campaign.forEachTask([&](const TaskRecord& t) {
    digest.add(t);
    if (t.state == TaskState::kPending) {
      auto b = graph.blocked(t.index, states);
      if (!b) {
        ++ready;
      } else if (!b->held) {
        ++waiting;
      } else {
        const std::string need = spec.taskPosition(b->culprit).id;
        held.push_back({{"task", t.id}, {"needs", need}, {"reason", TaskGraph::reason(*b, need)}});
      }
    } else if (t.state == TaskState::kDone) {
      if (first_start == 0 || (t.started_at > 0 && t.started_at < first_start))
        first_start = t.started_at;
      last_finish = std::max(last_finish, t.finished_at);
      if (t.finished_at > 0) finishes.push_back(t.finished_at);
    } else if (t.state == TaskState::kFailed) {
      // Attempts since its last fresh start (`retry`, a rerun), which its failure ended;
      // the attempt numbers go on counting from the first (attempts_total).
      failures.push_back({{"task", t.id},
                          {"attempts", t.attemptsSinceRetry()},
                          {"attempts_total", t.attempts},
                          {"exit_code", t.exit_code},
                          {"reason", t.reason}});
    } else if (t.state == TaskState::kRunning) {
      // Started: the attempt took its lease, which records its number in the task's .attempt
      // (read, not locked: a status polled often must not hold a lease a worker is taking). A
      // task sent to a local worker behind another (the local executor queues tasks under
      // 0.1 s) has not; a Slurm element's number is promised at submission, so those say
      // nothing here (`slurm status` does).
      const bool started =
          !t.external_id.empty() || newestAttempt(campaign.taskDir(t.id)) >= t.attempts;
      running.push_back({{"task", t.id},
                         {"host", t.host},
                         {"slot", t.slot},
                         {"external_id", t.external_id},
                         {"since", t.started_at},
                         {"started", started}});
    }
  });
  json groups = json::array();
  auto group = [&](const std::string& name, const std::string& type, int first, int n,
                   const std::string& after) {
    json g{{"name", name}, {"type", type}, {"tasks", n}, {"after", after}};
    json gc = json::object();
    for (int i = first; i < first + n && i < static_cast<int>(states.size()); ++i)
      gc[std::string(toString(states[i]))] = gc.value(std::string(toString(states[i])), 0) + 1;
    g["counts"] = gc;
    groups.push_back(g);
  };
  group("nominal", "", 0, spec.numNominalTasks(), "");
  for (const auto& v : spec.variations)
    group(v.name, v.type, v.first_index, v.numTasks(),
          v.warm_start ? "nominal (same replica and member)" : "");
  j["graph"] = {{"dependencies", graph.edges()},
                {"ready", ready},
                {"waiting", waiting},
                {"held", held.size()}};
  j["groups"] = groups;
  j["held"] = held;
  std::sort(finishes.begin(), finishes.end());
  double rate = 0.0;
  int64_t rate_tasks = done;
  if (finishes.size() > kRateWindow) {
    // kRateWindow - 1 intervals between the window's first and last completion.
    const std::vector<double> window(finishes.end() - static_cast<std::ptrdiff_t>(kRateWindow),
                                     finishes.end());
    const double span = workingSpan(window);
    if (span > 0) {
      rate = static_cast<double>(kRateWindow - 1) / span;
      rate_tasks = static_cast<int64_t>(kRateWindow);
    }
  }
  if (rate_tasks == done && done > 0 && last_finish > first_start) {
    std::vector<double> times = {first_start};
    times.insert(times.end(), finishes.begin(), finishes.end());
    rate = done / workingSpan(times);
  }
  j["rate_window_tasks"] = rate_tasks;
  int remaining =
      counts[TaskState::kPending] + counts[TaskState::kRunning] + counts[TaskState::kInterrupted];
  j["rate_tasks_per_s"] = rate;
  j["eta_s"] = rate > 0 ? remaining / rate : (remaining == 0 ? 0.0 : -1.0);
  j["failures"] = failures;
  j["running"] = running;
  j["inputs_changed"] = inputChangeSince(spec.inputs_at_init);
  j["outputs_in_use"] = campaignOutputsUser(campaign.dir());
  j["aggregated_chains"] = aggregatedChains(campaign.dir());
  // The aggregations `campaign aggregate` recorded whose outputs are still as it wrote them
  // (one removed, or written since by another command, is no longer its to judge): stale where
  // the done tasks it read are not those done now.
  {
    const std::string now = digest.hex();
    json list = json::array();
    for (const AggregationRecord& r : readAggregationRecords(campaign.dir())) {
      const std::string at = recordedOutPath(campaign.dir(), r);
      const FileStat summary = statPath(at + "/summary.json");
      if (!summary.regular || summary.mtime_ns != r.summary_mtime_ns) continue;
      list.push_back({{"out", at},
                      {"default", r.out == "aggregate"},  // D/aggregate
                      {"options", r.options},
                      {"command", aggregationCommand(campaign.dir(), r)},
                      {"chains", r.chains},
                      {"stale", r.done_digest != now}});
    }
    j["aggregations"] = std::move(list);
  }
  j["aggregation_interrupted"] =
      statPath(campaign.dir() + "/aggregate/" + kAggregateCommitRecord).exists;
  j["orchestrator"] = campaignOrchestrator(campaign.dir());
  j["last_orchestrator"] = campaignLastOrchestrator(campaign.dir());
  // The outputs commands moved aside: kept until removed by hand, so said here (before: a
  // campaign retried often grew without a word).
  json superseded = nullptr;
  if (const std::optional<SupersededUse> u = supersededUse(campaign.dir()))
    superseded = {{"sets", u->sets},     {"bytes", u->use.bytes}, {"files", u->use.files},
                  {"oldest", u->oldest}, {"newest", u->newest},   {"partial", u->partial}};
  j["superseded"] = superseded;
  // A `campaign cancel` the run that orchestrates D has not acted on yet.
  json cancel = nullptr;
  try {
    if (std::optional<CancelRequest> r = readCancelRequest(campaign.dir())) {
      cancel = {{"run", r->run}, {"by", r->by}, {"at", r->at}};
      // Whether the run asked has ended: known for a run of this host (/proc/locks), not for
      // one elsewhere (null).
      const std::string host_prefix = hostName() + " pid ";
      cancel["run_ended"] = r->run.rfind(host_prefix, 0) == 0
                                ? json(j["orchestrator"].get<std::string>() != r->run)
                                : json(nullptr);
    }
  } catch (const Error&) {
    // Unreadable for now (a status says what it can).
  }
  j["cancel_requested"] = cancel;
  return j;
}

std::string statusText(const json& s) {
  const std::string dir = s["dir"].get<std::string>();
  std::string out =
      "campaign " + s["name"].get<std::string>() + " (" + s["dir"].get<std::string>() + ")\n";
  out += "  tasks " + std::to_string(s["total"].get<int>()) + ":";
  for (auto it = s["counts"].begin(); it != s["counts"].end(); ++it) {
    if (it.value().get<int>() > 0)
      out += " " + it.key() + " " + std::to_string(it.value().get<int>());
  }
  // A task handed to a Slurm job is "running" from its submission on: say that some may still
  // wait in the queue (before: read as that many running).
  int in_slurm = 0;
  for (const auto& r : s["running"])
    if (!r.value("external_id", std::string()).empty()) ++in_slurm;
  if (in_slurm > 0)
    out += " (" + std::to_string(in_slurm) +
           " of the running in Slurm jobs, queued or running: `foldfarm slurm status " +
           shellWord(dir) + "` says which)";
  // Tasks sent to a local worker behind the one it runs (before: counted as running, more
  // than the slots).
  int waiting = 0;
  for (const auto& r : s["running"])
    if (r.value("external_id", std::string()).empty() && !r.value("started", true)) ++waiting;
  if (waiting > 0)
    out += " (" + std::to_string(waiting) +
           " of the running sent to a worker, waiting behind the task it runs)";
  out += "\n";
  char buf[160];
  double rate = s["rate_tasks_per_s"].get<double>();
  double eta = s["eta_s"].get<double>();
  const int64_t window = s.value("rate_window_tasks", int64_t{0});
  const int64_t done_all = s["counts"].value("done", int64_t{0});
  const std::string over = window > 0 && window < done_all
                               ? " (over the last " + std::to_string(window) + " done)"
                               : std::string();
  // Nothing runs it now (no run holds it, no Slurm job runs a task): the ETA is that of a run
  // started again (before: read as the time left).
  bool in_jobs = false;
  for (const auto& r : s["running"])
    in_jobs = in_jobs || !r.value("external_id", std::string()).empty();
  const bool idle = s.value("orchestrator", std::string()).empty() && !in_jobs && eta > 0;
  std::snprintf(buf, sizeof(buf), "  rate %.3g tasks/s%s, ETA %s%s\n", rate, over.c_str(),
                eta < 0 ? "unknown" : formatDuration(eta).c_str(),
                idle ? " once it runs again (nothing runs it now)" : "");
  out += buf;
  // Which process holds it (a run, a pilot's rank 0, a `slurm submit` watch): where to look,
  // or what to stop (before: said only by --json).
  if (const std::string by = s.value("orchestrator", std::string()); !by.empty())
    out += "  orchestrated by " + by + " (a run, a pilot's rank 0 or a `slurm submit` watch)\n";
  if (s.contains("groups") && s["groups"].size() > 1) {
    // The graph: one line per group (nominal, each variation) and what it runs after.
    const json& g = s["graph"];
    out += "  task graph: " + std::to_string(g["dependencies"].get<size_t>()) +
           " dependencies; pending: ready " + std::to_string(g["ready"].get<int>()) + ", waiting " +
           std::to_string(g["waiting"].get<int>()) + ", held " +
           std::to_string(g["held"].get<size_t>()) + "\n";
    for (const auto& grp : s["groups"]) {
      std::string line = "    " + grp["name"].get<std::string>();
      if (!grp["type"].get<std::string>().empty())
        line += " (" + grp["type"].get<std::string>() + ")";
      line += ": " + std::to_string(grp["tasks"].get<int>()) + " task(s):";
      for (auto it = grp["counts"].begin(); it != grp["counts"].end(); ++it)
        line += " " + it.key() + " " + std::to_string(it.value().get<int>());
      if (!grp["after"].get<std::string>().empty())
        line += "; each after " + grp["after"].get<std::string>();
      out += line + "\n";
    }
  }
  if (s.contains("held") && !s["held"].empty()) {
    out += "  held tasks (they run once what they need is retried and done):\n";
    size_t shown = 0;
    for (const auto& h : s["held"]) {
      if (++shown > 20) {
        out += "    … and " + std::to_string(s["held"].size() - 20) + " more\n";
        break;
      }
      out += "    " + h["task"].get<std::string>() + ": " + h["reason"].get<std::string>() + "\n";
    }
  }
  if (!s.value("inputs_changed", std::string()).empty()) {
    out += "  inputs: " + s["inputs_changed"].get<std::string>() +
           "; no task runs until it is restored as it was, or accepted (`foldfarm campaign "
           "accept-inputs " +
           shellWord(dir) + "`: the tasks that read it run again)\n";
  }
  if (!s.value("outputs_in_use", std::string()).empty()) {
    out += "  outputs: " + s["outputs_in_use"].get<std::string>() +
           " is using them (aggregating, or changing the campaign: `campaign extend`, "
           "`campaign accept-inputs`)\n";
  }
  // Rows running with no run of this host holding the campaign, and no Slurm job: left by an
  // orchestrator that ended, unless one runs on another node (an MPI pilot's rank 0).
  bool unowned = false;
  for (const auto& r : s["running"])
    unowned = unowned || r.value("external_id", std::string()).empty();
  if (unowned && s.value("orchestrator", std::string()).empty()) {
    const std::string last = s.value("last_orchestrator", std::string());
    out +=
        "  running: no process on this host orchestrates the campaign; if its run ended (a "
        "crash, a lost node), `foldfarm campaign resume " +
        shellWord(dir) + "` runs the tasks it left running again" +
        (last.empty() ? std::string()
                      : " (the last run to orchestrate it: " + last +
                            "; a run on another host is not seen from here)") +
        "\n";
  }
  const json& cancel = s.value("cancel_requested", json());
  if (cancel.is_object()) {
    out +=
        "  cancel: requested" +
        (cancel["by"].get<std::string>().empty() ? "" : " by " + cancel["by"].get<std::string>()) +
        (cancel["at"].get<double>() > 0 ? " at " + formatUtcTime(cancel["at"].get<double>()) : "") +
        " of the run " + cancel["run"].get<std::string>();
    if (cancel.value("run_ended", json()) == json(true))
      out += ", which has ended without reading it: `foldfarm campaign cancel " + shellWord(dir) +
             "` cancels the unfinished tasks now (the next run removes the request)\n";
    else
      out +=
          ", which stops its tasks and cancels the unfinished ones once it reads it (if that "
          "run ended, `foldfarm campaign cancel " +
          shellWord(dir) + "` cancels them)\n";
  }
  const json& aggregated = s.value("aggregated_chains", json());
  const int done = s["counts"].value("done", 0);
  if (s.value("aggregation_interrupted", false))
    out += "  aggregate: an aggregation was killed while it renamed its outputs into place, so " +
           dir + "/aggregate holds files of two aggregations; `foldfarm campaign aggregate " +
           shellWord(dir) + "` finishes it\n";
  // The recorded aggregations (D/aggregate among them) that the campaign has outgrown, each
  // with the command that makes it again as it was made; D/aggregate without a record (made
  // before records were kept) by its count of chains.
  // (An interrupted aggregation is said above, and its finish comes first.)
  bool own_recorded = false;
  for (const json& a : s.value("aggregations", json::array())) {
    own_recorded = own_recorded || a["default"].get<bool>();
    if (!a["stale"].get<bool>() || s.value("aggregation_interrupted", false)) continue;
    out += "  aggregate: " + a["out"].get<std::string>() + " holds " +
           std::to_string(a["chains"].get<int>()) +
           " chain(s) as they were before the campaign's done chains changed (" +
           std::to_string(done) + " done now): `" + a["command"].get<std::string>() +
           "` makes it again\n";
  }
  if (!s.value("aggregation_interrupted", false) && !own_recorded && aggregated.is_number() &&
      aggregated.get<int64_t>() != done)
    out += "  aggregate: of " + std::to_string(aggregated.get<int64_t>()) + " chain(s), " +
           std::to_string(done) + " done now: run `foldfarm campaign aggregate " + shellWord(dir) +
           "` again for bands of them all\n";
  if (const json& sup = s.value("superseded", json()); sup.is_object()) {
    const int sets = sup["sets"].get<int>();
    out += "  superseded: " + std::string(sup["partial"].get<bool>() ? "at least " : "") +
           formatBytes(sup["bytes"].get<double>()) + " in " + std::to_string(sets) +
           " set(s) of replaced outputs (" + dir + "/superseded/" +
           (sets == 1 ? sup["newest"].get<std::string>()
                      : ": the oldest " + sup["oldest"].get<std::string>() + ", the newest " +
                            sup["newest"].get<std::string>()) +
           "); nothing reads them: `rm -r` those no longer needed\n";
  }
  if (!s["failures"].empty()) {
    // Grouped by exit code and reason (one changed input fails thousands of tasks alike:
    // before, each was printed with its reason, megabytes of text), the groups by size; the
    // whole list is in --json's "failures".
    struct Group {
      std::vector<std::string> tasks;
      int attempts_min = 0, attempts_max = 0;
    };
    std::map<std::pair<int, std::string>, Group> groups;
    for (const auto& f : s["failures"]) {
      Group& g = groups[{f["exit_code"].get<int>(), f["reason"].get<std::string>()}];
      const int a = f["attempts"].get<int>();
      g.attempts_min = g.tasks.empty() ? a : std::min(g.attempts_min, a);
      g.attempts_max = std::max(g.attempts_max, a);
      g.tasks.push_back(f["task"].get<std::string>());
    }
    std::vector<const std::pair<const std::pair<int, std::string>, Group>*> order;
    for (const auto& g : groups) order.push_back(&g);
    std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
      return a->second.tasks.size() > b->second.tasks.size();
    });
    constexpr size_t kGroups = 10, kIds = 5;
    out +=
        "  failed tasks (rerun with `foldfarm campaign retry " + shellWord(dir) + " --failed`):\n";
    for (size_t k = 0; k < order.size() && k < kGroups; ++k) {
      const auto& [key, g] = *order[k];
      const std::string ids = listWithMore(g.tasks, kIds);
      const std::string attempts =
          g.attempts_min == g.attempts_max
              ? std::to_string(g.attempts_min)
              : std::to_string(g.attempts_min) + "-" + std::to_string(g.attempts_max);
      out += "    " + ids + " after " + attempts + " attempt(s), exit " +
             std::to_string(key.first) + ": " + key.second + "\n";
    }
    if (order.size() > kGroups) {
      size_t rest = 0;
      for (size_t k = kGroups; k < order.size(); ++k) rest += order[k]->second.tasks.size();
      out += "    and " + std::to_string(rest) + " more task(s) failing for " +
             std::to_string(order.size() - kGroups) +
             " other reason(s): `foldfarm campaign status " + shellWord(dir) +
             " --json` lists them all\n";
    }
  }
  return out;
}

void writeTasksJson(std::FILE* out, Campaign& campaign, const std::string& indent) {
  const CampaignSpec& spec = campaign.spec();
  const char* separator = "";
  std::fputs("[", out);
  campaign.forEachTask([&](const TaskRecord& t) {
    const std::string group = spec.taskPosition(t.index).variation;
    const json row{{"task", t.id},
                   {"group", group.empty() ? "nominal" : group},
                   {"replica", t.replica},
                   {"member", t.member},
                   {"state", std::string(toString(t.state))},
                   {"attempts", t.attempts},
                   {"host", t.host},
                   {"exit_code", t.exit_code}};
    std::fprintf(out, "%s\n%s  %s", separator, indent.c_str(), row.dump().c_str());
    separator = ",";
  });
  std::fprintf(out, "%s]", *separator ? ("\n" + indent).c_str() : "");
}

void writeTasksText(std::FILE* out, Campaign& campaign) {
  const int width = std::max(4, campaign.journal().longestTaskId());
  std::fprintf(out, "%-*s  %-9s  %8s  %-20s  %s\n", width, "task", "state", "attempts", "host",
               "exit");
  campaign.forEachTask([&](const TaskRecord& t) {
    std::fprintf(out, "%-*s  %-9s  %8d  %-20s  %s\n", width, t.id.c_str(),
                 std::string(toString(t.state)).c_str(), t.attempts,
                 t.host.empty() ? "-" : t.host.c_str(),
                 t.exit_code < 0 ? "-" : std::to_string(t.exit_code).c_str());
  });
}

}  // namespace foldfarm::jobs
