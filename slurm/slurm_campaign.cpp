#include "slurm/slurm_campaign.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/log.hpp"
#include "core/base/stop_signal.hpp"
#include "core/base/text.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/cancel_request.hpp"
#include "jobs/executor.hpp"
#include "jobs/file_locks.hpp"
#include "jobs/task_lease.hpp"
#include "slurm/array_plan.hpp"
#include "slurm/sbatch_values.hpp"

namespace foldfarm::slurm {
namespace fs = std::filesystem;
namespace {

using jobs::TaskRecord;
using jobs::TaskState;

struct SettledSubmissions {
  int released = 0;
  int cancelled = 0;
  int tasksRequeued = 0;
};

struct RoundResult {
  int ingested = 0;
  int requeued = 0;
  int submittedArrays = 0;
  int submittedElements = 0;
  int submittedTasks = 0;
  std::vector<std::string> jobIds;
  std::vector<std::string> exhausted;  // tasks not resubmitted (maxSubmissions)
  std::vector<std::string> held;       // pending behind a failed dependency (task graph)
  int throttled = 0;                   // ready, left for a later round by --throttle
  int stopped = 0;                     // results of a task's own stop (75): pending again
  int notStarted = 0;                  // of `requeued`: never started (.lease-refused)
  int gaveUp = 0;                      // jobs ended without a result --max-submissions times
  bool changed() const { return ingested || requeued || submittedArrays || gaveUp; }
};

bool isDigits(const std::string& s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return c >= '0' && c <= '9'; });
}

// The array elements of this campaign that its journal has queued or running (what its own
// jobs count toward the user's submit limit).
int queuedElements(jobs::Campaign& c) {
  std::set<std::string> elements;
  for (const TaskRecord& t : c.tasks(TaskState::kRunning))
    if (!arrayJobIdOf(t.external_id).empty()) elements.insert(t.external_id);
  return static_cast<int>(elements.size());
}

// Which running tasks' jobs are still alive: steps 1 and 3 of the round need the squeue
// answer taken before the results are ingested (a result written before the job ended is
// on disk by the time squeue reports it ended).
struct JobView {
  std::map<std::string, QueuedJob> byExternalId;  // "123_4" -> element
  std::set<std::string> arraysSeen;               // arrays slurmctld still knows
};

JobView lookUpJobs(const SlurmClient& client, const std::vector<TaskRecord>& running) {
  std::set<std::string> arrays;
  for (const auto& t : running) {
    std::string a = arrayJobIdOf(t.external_id);
    if (!a.empty()) arrays.insert(a);
  }
  JobView v;
  if (arrays.empty()) return v;
  for (auto& j : client.queue(std::vector<std::string>(arrays.begin(), arrays.end()))) {
    v.arraysSeen.insert(j.arrayJobId);
    v.byExternalId[j.externalId()] = j;
  }
  return v;
}

// A running task's job ended: a terminal state, or slurmctld no longer lists it.
bool jobEnded(const JobView& v, const TaskRecord& t, std::string& why) {
  if (arrayJobIdOf(t.external_id).empty()) {
    why = "not a Slurm job id ('" + t.external_id + "')";
    return true;
  }
  auto it = v.byExternalId.find(t.external_id);
  if (it == v.byExternalId.end()) {
    why = "its Slurm job is no longer known to slurmctld";
    return true;
  }
  if (it->second.finished()) {
    why = "its Slurm job ended " + it->second.state + " without a result";
    return true;
  }
  return false;
}

int nextSubmissionNumber(const std::string& slurmDir) {
  int next = 1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(slurmDir, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("sub-", 0) == 0 && isDigits(name.substr(4))) {
      next = std::max(next, std::stoi(name.substr(4)) + 1);
    }
  }
  return next;
}

// sub-N/settled: the submission's job needs no further look; it says how it ended up:
// "released" (by the submitter, or adopted after it stopped between journal and release),
// "cancelled" (never recorded in the journal) or "ended". Best effort: without the marker
// the next sweep looks again.
void markSettled(const std::string& subDir, const std::string& how) {
  try {
    writeFileAtomic(subDir + "/settled", how + "\n");
  } catch (const std::exception& e) {
    logWarn("{}: {}", subDir, e.what());
  }
}

bool isHeld(const QueuedJob& j) {
  return j.state == "PENDING" && j.reason.rfind("JobHeld", 0) == 0;
}

// The task ids of each element of a submission (its manifest.tsv), with the attempt each entry
// names (0: none) when `attempts` is given.
std::vector<std::vector<std::string>> readManifest(const std::string& path,
                                                   std::map<std::string, int>* attempts = nullptr) {
  std::vector<std::vector<std::string>> shards;
  std::string text = readFile(path);
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    std::vector<std::string> ids;
    std::string line = text.substr(start, nl - start);
    size_t a = 0;
    while (a <= line.size()) {
      size_t tab = line.find('\t', a);
      if (tab == std::string::npos) tab = line.size();
      if (tab > a) {
        auto [id, attempt] = jobs::splitTaskAttempt(line.substr(a, tab - a));
        if (attempts) (*attempts)[id] = std::max((*attempts)[id], attempt);
        ids.push_back(std::move(id));
      }
      a = tab + 1;
    }
    shards.push_back(std::move(ids));
    start = nl + 1;
  }
  return shards;
}

// The resources of this round's array elements, checked (InputError naming the option).
SbatchResources submissionResources(const jobs::Campaign& c, const SlurmCampaignOptions& o) {
  SbatchResources res = o.resourcesFromSpec ? arrayElementResources(c.spec(), o.resources)
                                            : withDefaults(o.resources);
  if (res.foldfarm.empty() || res.foldfarm == "foldfarm") res.foldfarm = jobs::selfExecutable();
  validateResources(res);
  return res;
}

// Every option checked before Slurm is asked anything or a task directory is touched: the
// script of a one-element array is rendered and thrown away (before: a bad --time was found
// only when the first array was written, after its attempts were promised).
// The script of a one-element array with the options `o` (renderArrayScript checks them).
std::string probeScript(const jobs::Campaign& c, const SlurmCampaignOptions& o) {
  const SbatchResources res = submissionResources(c, o);
  ArrayJob probe;
  probe.campaignDir = c.dir();
  probe.manifestPath = c.dir() + "/slurm/sub-0000/manifest.tsv";
  probe.elements = 1;
  probe.lanes = arrayElementLanes(res);
  return renderArrayScript(res, probe);
}

void checkSubmissionOptions(const jobs::Campaign& c, const SlurmCampaignOptions& o) {
  (void)probeScript(c, o);
}

// The directories of the --output and --error patterns, made when missing (Slurm opens the
// file before the script runs: in a missing directory the job fails with no output anywhere,
// and every task's submissions end "without a result"). A directory named with a Slurm
// pattern (%j, %x, ...) is left to the user; a relative one is the job's working directory's.
void makeOutputDirectories(const SbatchResources& r) {
  for (const std::string& pattern : {r.output, r.error}) {
    const size_t slash = pattern.rfind('/');
    if (pattern.empty() || slash == std::string::npos || slash == 0) continue;
    std::string dir;
    bool patterned = false;  // a Slurm %-pattern in the directory's name
    for (size_t k = 0; k < slash; ++k) {
      if (pattern[k] != '%') {
        dir += pattern[k];
      } else if (k + 1 < slash && pattern[k + 1] == '%') {
        dir += '%';
        ++k;
      } else {
        patterned = true;
        break;
      }
    }
    if (patterned) continue;
    fs::path path(dir);
    if (path.is_relative())
      path = (r.workDir.empty() ? fs::current_path() : fs::path(r.workDir)) / path;
    std::error_code ec;
    if (fs::is_directory(path, ec)) continue;
    fs::create_directories(path, ec);
    if (ec)
      throw InputError("--output/--error " + pattern + ": its directory " + path.string() +
                       " is missing and cannot be made (" + ec.message() +
                       "); Slurm would fail every job before it starts: make it, or give another");
    logInfo("made {}, the directory of the job output pattern {}", path.string(), pattern);
  }
}

// What `sbatch --test-only` says of this campaign's element script with options `o` ("":
// it would take it). Nothing is submitted; the probe script is removed.
std::string optionsRefusedBySbatch(const jobs::Campaign& c, const SlurmCampaignOptions& o,
                                   const SlurmClient& client) {
  const std::string script = c.dir() + "/slurm/options-check.sbatch";
  writeFileAtomic(script, probeScript(c, o));
  std::string why;
  try {
    why = client.testOnly(script);
  } catch (...) {
    fs::remove(script);
    throw;
  }
  fs::remove(script);
  return why;
}

// Step 4 for one planned array. Throws Error when sbatch fails; nothing is recorded then.
// `attempts`: the attempt each pending task will have once recorded (the journal adds one on
// dispatch; this process is its only writer).
void submitArray(jobs::Campaign& c, const SlurmClient& client, const SbatchResources& base,
                 int lanes, const std::vector<std::string>& workArgv, const PlannedArray& array,
                 const std::map<std::string, int>& attempts, RoundResult& round) {
  const std::string slurmDir = c.dir() + "/slurm";
  std::error_code ec;
  fs::create_directories(slurmDir, ec);
  if (ec) throw Error(slurmDir + ": cannot create: " + ec.message());
  const int number = nextSubmissionNumber(slurmDir);
  char name[32];
  std::snprintf(name, sizeof name, "sub-%04d", number);
  const std::string subDir = slurmDir + "/" + name;
  if (::mkdir(subDir.c_str(), kNewDirectoryMode) != 0) {
    throw Error(subDir + ": cannot create: " + errnoMessage(errno));
  }
  SbatchResources r = base;
  if (r.output.empty()) r.output = outputPatternLiteral(subDir) + "/slurm-%A_%a.out";
  ArrayJob job;
  job.campaignDir = c.dir();
  job.manifestPath = subDir + "/manifest.tsv";
  job.elements = static_cast<int>(array.shards.size());
  job.throttle = array.throttle;
  job.lanes = lanes;
  job.workArgv = workArgv;
  const std::string scriptPath = subDir + "/array.sbatch";
  // Attempts are promised in the task directories before the job exists, so that an older
  // attempt still queued somewhere can never start after this one.
  SubmittedJob submitted;
  try {
    for (const auto& shard : array.shards) {
      for (const auto& id : shard) jobs::promiseAttempt(c.taskDir(id), attempts.at(id));
    }
    writeFileAtomic(job.manifestPath, manifestText(array, attempts));
    writeFileAtomic(scriptPath, renderArrayScript(r, job));
    submitted = client.submit(scriptPath, {"--hold"});
  } catch (const SlurmQueryError&) {
    // No answer: slurmctld may have accepted the held job. Keep the script (without a job
    // id) so that the next round's settling finds such a job by its path and cancels it.
    throw;
  } catch (const SbatchLimitError& e) {
    fs::remove_all(subDir, ec);  // nothing was submitted
    // With its size: the watch submits smaller arrays when this one can never fit the limit.
    throw SbatchLimitError(e.what(), e.limit, static_cast<int>(array.shards.size()));
  } catch (...) {
    fs::remove_all(subDir, ec);  // nothing was submitted: leave no trace
    throw;
  }
  try {
    writeFileAtomic(subDir + "/jobid", submitted.jobId + "\n");
    for (size_t e = 0; e < array.shards.size(); ++e) {
      const auto recorded =
          c.markSubmitted(array.shards[e], submitted.jobId + "_" + std::to_string(e));
      for (size_t i = 0; i < recorded.size(); ++i) {
        if (recorded[i] != attempts.at(array.shards[e][i])) {
          throw Error("task " + array.shards[e][i] + " was recorded as attempt " +
                      std::to_string(recorded[i]) + ", not the " +
                      std::to_string(attempts.at(array.shards[e][i])) + " its manifest names");
        }
      }
    }
  } catch (...) {
    // The journal could not record it: the held job must never run.
    try {
      client.cancel(submitted.jobId);
    } catch (const std::exception& e) {
      logError("could not cancel held job {} after a journal error: {}", submitted.jobId, e.what());
    }
    throw;
  }
  try {
    client.release(submitted.jobId);
  } catch (const SlurmQueryError& e) {
    // Recorded and held; the next round's settling releases it.
    throw SlurmQueryError(std::string(e.what()) + "; job " + submitted.jobId +
                          " is recorded but held until the next round releases it");
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + "; job " + submitted.jobId +
                " is recorded but held: run `foldfarm slurm submit " + shellWord(c.dir()) +
                "` again to release it");
  }
  markSettled(subDir, "released");
  logInfo(
      "submitted array job {} ({} element(s), {} task(s), throttle {}) from {}", submitted.jobId,
      array.shards.size(),
      [&] {
        size_t n = 0;
        for (const auto& s : array.shards) n += s.size();
        return n;
      }(),
      array.throttle, scriptPath);
  ++round.submittedArrays;
  round.submittedElements += static_cast<int>(array.shards.size());
  for (const auto& s : array.shards) round.submittedTasks += static_cast<int>(s.size());
  round.jobIds.push_back(submitted.jobId);
}

// The job id saved in submission directory `sub` (its `jobid` file); "" (logged) when the
// file cannot be read or does not hold a job id.
std::string savedJobId(const std::string& sub) {
  std::string id;
  try {
    id = readFile(sub + "/jobid");
  } catch (const std::exception& ex) {
    logWarn("{}: {}", sub, ex.what());
    return "";
  }
  while (!id.empty() && std::isspace(static_cast<unsigned char>(id.back()))) id.pop_back();
  if (!isDigits(id)) {
    logWarn("{}/jobid holds '{}', not a job id; ignored", sub, id);
    return "";
  }
  return id;
}

// The attempts that submission `sub` names in its manifest, reserved in the journal before it is
// settled: a job the journal never recorded may have run them (released by hand), and a task's
// next attempt must be newer so that such a job's element is superseded, or its finished result
// taken, instead of the task running twice (before: the same number again). Rows the journal
// runs or finished keep theirs. Best effort on an unreadable manifest (warned).
void reserveAttemptsOf(jobs::Campaign& c, const std::string& sub) {
  std::map<std::string, int> attempts;
  try {
    readManifest(sub + "/manifest.tsv", &attempts);
  } catch (const std::exception& ex) {
    logWarn("{}: {}", sub, ex.what());
    return;
  }
  std::vector<std::pair<int, int>> reserved;
  for (const auto& [id, attempt] : attempts) {
    const int idx = c.spec().indexOf(id);
    if (idx >= 0 && attempt > 0) reserved.emplace_back(idx, attempt);
  }
  if (const int n = c.journal().reserveAttempts(reserved); n > 0)
    logInfo("{}: {} task(s) get attempts newer than those its job may have run", sub, n);
}

// Submissions an earlier submitter left unfinished. Submitting is: sbatch --hold, save the
// id in sub-N/jobid, record the tasks in the journal, scontrol release, write
// sub-N/settled. A submitter that stopped (crash, kill -9, a failing scontrol) in between
// leaves a held job behind, which nothing else would ever cancel or release:
//   * held, and every task of its manifest recorded as running under it: released
//     (adopted — the journal already expects it to run);
//   * held, and not (fully) recorded: cancelled; tasks recorded under it go back to pending;
//   * running although no task of the journal names it (released by hand): cancelled, so no
//     task runs twice;
//   * ended or forgotten by slurmctld: nothing to do.
// One squeue call for all unsettled submissions. Throws SlurmQueryError when squeue fails.
SettledSubmissions settleEarlierSubmissions(jobs::Campaign& c, const SlurmClient& client) {
  SettledSubmissions out;
  const std::string slurmDir = c.dir() + "/slurm";
  std::map<std::string, std::string> subByJob;  // job id -> sub-N directory
  std::vector<std::string> withoutId;           // submitted (maybe) but no jobid saved
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(slurmDir, ec)) {
    const std::string sub = e.path().string();
    const std::string name = e.path().filename().string();
    if (name.rfind("sub-", 0) != 0 || !isDigits(name.substr(4))) continue;
    if (fs::exists(sub + "/settled")) continue;
    if (!fs::exists(sub + "/jobid")) {
      if (fs::exists(sub + "/array.sbatch")) withoutId.push_back(sub);
      continue;
    }
    const std::string id = savedJobId(sub);
    if (!id.empty()) subByJob[id] = sub;
  }
  if (!withoutId.empty()) {
    // Stopped between sbatch's answer and saving it: find the job by its script path. The
    // journal cannot name it (the id was never saved), so a pending one is cancelled.
    std::vector<SlurmClient::PendingScript> pending = client.pendingScripts();
    for (const auto& sub : withoutId) {
      std::set<std::string> paths = {
          sub + "/array.sbatch", fs::absolute(sub + "/array.sbatch").lexically_normal().string()};
      int found = 0;
      for (const auto& p : pending) {
        if (!paths.count(p.script)) continue;
        logWarn(
            "{}: job {} was submitted but its id was never saved (the submitter stopped first); "
            "cancelling it, held or released, so that no task runs twice",
            sub, p.arrayJobId);
        client.cancel(p.arrayJobId);
        ++found;
        ++out.cancelled;
      }
      reserveAttemptsOf(c, sub);
      markSettled(sub, found ? "cancelled" : "ended");
    }
  }
  if (subByJob.empty()) return out;
  std::vector<std::string> ids;
  for (const auto& [id, sub] : subByJob) ids.push_back(id);
  std::map<std::string, std::vector<QueuedJob>> live;  // array job id -> its unfinished elements
  for (auto& j : client.queue(ids)) {
    if (!j.finished()) live[j.arrayJobId].push_back(j);
  }
  // Which tasks the journal records under each array job.
  std::map<std::string, std::set<std::string>> runningUnder, namedBy;
  c.forEachTask([&](const jobs::TaskRecord& t) {
    std::string a = arrayJobIdOf(t.external_id);
    if (a.empty() || !subByJob.count(a)) return;
    namedBy[a].insert(t.id);
    if (t.state == TaskState::kRunning) runningUnder[a].insert(t.id);
  });
  for (const auto& [id, sub] : subByJob) {
    auto it = live.find(id);
    if (it == live.end()) {
      reserveAttemptsOf(c, sub);  // ended (or purged by slurmctld), perhaps after it ran
      markSettled(sub, "ended");
      continue;
    }
    const bool held = std::any_of(it->second.begin(), it->second.end(), isHeld);
    if (!held) {
      if (namedBy[id].empty()) {
        logWarn("{}: job {} runs although the journal records none of its tasks; cancelling it",
                sub, id);
        client.cancel(id);
        reserveAttemptsOf(c, sub);
        markSettled(sub, "cancelled");
        ++out.cancelled;
      } else {
        markSettled(sub, "released");
      }
      continue;
    }
    // Held: adopt it only when the journal records every task of its manifest under it.
    bool complete = true;
    try {
      const auto shards = readManifest(sub + "/manifest.tsv");
      for (size_t e = 0; e < shards.size() && complete; ++e) {
        for (const auto& t : shards[e]) {
          if (!runningUnder[id].count(t)) complete = false;
        }
      }
      complete = complete && !shards.empty();
    } catch (const std::exception& ex) {
      logWarn("{}: {}", sub, ex.what());
      complete = false;
    }
    if (complete) {
      client.release(id);
      markSettled(sub, "released");
      logInfo("{}: held job {} is recorded in the journal; released it", sub, id);
      ++out.released;
    } else {
      client.cancel(id);
      std::vector<std::string> recorded(runningUnder[id].begin(), runningUnder[id].end());
      const int back =
          c.requeue(recorded, "its held job " + id + " was never fully recorded; cancelled");
      reserveAttemptsOf(c, sub);
      markSettled(sub, "cancelled");
      logWarn(
          "{}: held job {} was submitted but {} in the journal (the submitter stopped in between); "
          "cancelled it{}",
          sub, id, recorded.empty() ? "never recorded" : "only partly recorded",
          back > 0 ? "; " + std::to_string(back) + " task(s) back to pending" : std::string());
      ++out.cancelled;
      out.tasksRequeued += back;
    }
  }
  return out;
}

// One round into `round`, which keeps what was done when a later step throws (the arrays
// submitted before a submit limit refused the next one count). `maxElementsPerArray`:
// ArrayPlanOptions' (0: the cluster's caps only).
void reconcile(jobs::Campaign& c, const SlurmClient& client, const SlurmCampaignOptions& o,
               bool submit, RoundResult& round, int maxElementsPerArray = 0) {
  // 1. squeue first, 2. ingest, 3. requeue the running tasks whose job ended.
  const std::vector<TaskRecord> was_running = c.tasks(TaskState::kRunning);
  JobView view = lookUpJobs(client, was_running);
  round.ingested = c.ingestResults();
  // What the results said, by task: stopped with the state saved (75: a time limit, a
  // scancel; submitted again) or failed (before: neither was said, and the summary's
  // "requeued" counted only jobs that ended without a result).
  std::vector<std::string> stopped, failed, retried;
  if (round.ingested > 0) {
    // One query for every state (a watch of 10^4 submitted tasks polls this), then one for
    // each task whose result moved it.
    const std::vector<TaskState> states = c.journal().states();
    for (const TaskRecord& t : was_running) {
      const TaskState now = states.at(static_cast<size_t>(t.index));
      if (now == TaskState::kFailed) failed.push_back(t.id);
      if (now != TaskState::kPending) continue;
      const std::optional<TaskRecord> r = c.journal().task(t.id);
      if (r && r->exit_code == kExitInterrupted)
        stopped.push_back(t.id);
      else
        retried.push_back(t.id);
    }
  }
  const auto listed = [](const std::vector<std::string>& ids) {
    std::string out;
    for (size_t k = 0; k < ids.size() && k < 5; ++k) out += (k ? ", " : "") + ids[k];
    return ids.size() > 5 ? out + " and " + std::to_string(ids.size() - 5) + " more" : out;
  };
  // Who submits them again: this watch, or (`slurm status`, which only looks) the next
  // `slurm submit` (before: "to be submitted again" where nothing would).
  const std::string again =
      submit ? "to be submitted again"
             : "submitted again by `foldfarm slurm submit " + shellWord(c.dir()) + "`";
  if (!stopped.empty())
    logInfo(
        "{} task(s) stopped in their Slurm job with their state saved (exit 75: a time limit, a "
        "scancel) and go back to pending, {}: {}",
        stopped.size(), again, listed(stopped));
  for (const std::string& id : retried) {
    const std::optional<TaskRecord> t = c.journal().task(id);
    logWarn("task {} failed (exit {}), {} (retry.max_attempts): {}", id, t ? t->exit_code : -1,
            again, t ? t->reason : "");
  }
  for (const std::string& id : failed) {
    const std::optional<TaskRecord> t = c.journal().task(id);
    logWarn("task {} failed (exit {}): {}", id, t ? t->exit_code : -1, t ? t->reason : "");
  }
  round.stopped = static_cast<int>(stopped.size());
  std::map<std::string, std::vector<std::string>> endedByReason;
  std::map<std::string, int> lostBefore;  // jobs ended without a result since the last retry
  for (const auto& t : c.tasks(TaskState::kRunning)) {
    std::string why;
    if (!jobEnded(view, t, why)) continue;
    const auto r = jobs::readLeaseRefusal(c.taskDir(t.id));
    if (r && r->attempt == t.attempts) {
      // Not a lost attempt: another attempt's processes (another host's) held the task. It
      // is submitted again after the backoff, counted toward no cap, as locally.
      const int back = c.requeue({t.id}, "not started: " + r->reason, jobs::kEventLeaseRefused,
                                 jobs::wallClockNow() + c.spec().retry.backoff_s);
      round.requeued += back;
      round.notStarted += back;
      logInfo("task {} back to pending: {}", t.id, r->reason);
      continue;
    }
    endedByReason[why].push_back(t.id);
    lostBefore[t.id] = t.lost_since_retry;
  }
  for (const auto& [why, ids] : endedByReason) {
    // The --max-submissions-th such end: the task fails, saying why, and `campaign retry
    // --failed` runs it again (before: it stayed pending, unsaid, and the watch ended with an
    // error naming --max-submissions).
    std::vector<std::string> again, lost;
    for (const std::string& id : ids)
      (lostBefore[id] + 1 >= o.maxSubmissions ? lost : again).push_back(id);
    if (!again.empty()) {
      round.requeued += c.requeue(again, why);
      logInfo("{} task(s) back to pending: {}: {}", again.size(), why, listed(again));
    }
    if (lost.empty()) continue;
    const std::string reason =
        why + "; its Slurm jobs ended " +
        (o.maxSubmissions == 1 ? std::string("once")
                               : std::to_string(o.maxSubmissions) + " times") +
        " without a result (--max-submissions " + std::to_string(o.maxSubmissions) +
        "): see its task.log and the job output (" +
        (o.resources.output.empty() ? c.dir() + "/slurm/sub-*/"
                                    : "--output " + o.resources.output) +
        "); once the cause is mended, `foldfarm campaign retry " + shellWord(c.dir()) +
        " --failed` submits it again";
    round.gaveUp += c.giveUp(lost, reason);
    logWarn("{} task(s) failed: {}: {}", lost.size(), listed(lost), reason);
  }
  if (!submit) return;

  // 4. submit what is pending and ready: past its backoff, and every task it needs (the
  //    task graph) done. The others wait for a later round; those behind a failed task
  //    are held.
  const double now = jobs::wallClockNow();
  std::vector<std::string> ready;
  std::map<std::string, int> attempts;  // of the next dispatch
  const jobs::TaskGraph graph = c.journal().graph();
  const std::vector<TaskState> states = c.journal().states();
  for (const auto& t : c.tasks(TaskState::kPending)) {
    attempts[t.id] = t.attempts + 1;
    const auto blocked = graph.blocked(t.index, states);
    if (blocked) {
      if (blocked->held) round.held.push_back(t.id);
    } else if (t.lost_since_retry >= o.maxSubmissions) {
      round.exhausted.push_back(t.id);
    } else if (t.not_before <= now) {
      ready.push_back(t.id);
    }
  }
  if (ready.empty()) return;
  // The inputs as `campaign init` recorded them (jobs/input_record.hpp): one replaced during
  // a long watch stops the submissions (InputError naming it); what runs finishes and is
  // ingested by the next `slurm submit`.
  jobs::requireCampaignInputsAsRecorded(c.spec(), c.dir() + "/spec.json");
  const SbatchResources res = submissionResources(c, o);
  const int lanes = arrayElementLanes(res);
  ArrayPlanOptions po;
  po.lanes = lanes;
  po.tasksPerElement = o.tasksPerElement;
  po.throttle = o.throttle;
  if (o.throttle > 0) {
    // --throttle K caps the elements of all arrays together: the elements of earlier arrays
    // still queued or running (their tasks' rows) take their share first, and a new array
    // gets the rest; none left, the ready tasks wait for a later round (before: every round's
    // array had a throttle of its own, and a resubmission ran beside K others).
    std::set<std::string> live;
    for (const auto& t : c.tasks(TaskState::kRunning))
      if (!t.external_id.empty()) live.insert(t.external_id);
    const int room = o.throttle - static_cast<int>(live.size());
    if (room <= 0) {
      round.throttled = static_cast<int>(ready.size());
      return;
    }
    po.throttle = room;
  }
  po.limits = client.limits();
  po.queuedJobs = client.queuedJobCount();
  po.maxElementsPerArray = maxElementsPerArray;
  ArrayPlan plan = planArrays(ready, po);
  if (!plan.deferred.empty()) {
    logInfo("{} task(s) wait for room under MaxJobCount={} ({} job(s) queued){}",
            plan.deferred.size(), po.limits.maxJobCount, po.queuedJobs,
            po.maxElementsPerArray > 0 && po.throttle > 0
                ? " or under --throttle " + std::to_string(o.throttle) + " in arrays of at most " +
                      std::to_string(po.maxElementsPerArray) + " element(s)"
                : std::string());
  }
  for (const auto& a : plan.arrays)
    submitArray(c, client, res, lanes, o.workArgv, a, attempts, round);
}

int countOf(const jobs::StateCounts& c, TaskState s) {
  auto it = c.find(s);
  return it == c.end() ? 0 : it->second;
}

nlohmann::json countsJson(const jobs::StateCounts& counts) {
  nlohmann::json j = nlohmann::json::object();
  for (TaskState s : {TaskState::kPending, TaskState::kRunning, TaskState::kDone,
                      TaskState::kFailed, TaskState::kInterrupted, TaskState::kCancelled}) {
    j[std::string(jobs::toString(s))] = countOf(counts, s);
  }
  return j;
}

}  // namespace

std::string arrayJobIdOf(const std::string& externalId) {
  std::string head = externalId.substr(0, externalId.find('_'));
  if (!isDigits(head)) return "";
  if (head.size() < externalId.size() && !isDigits(externalId.substr(head.size() + 1))) return "";
  return head;
}

void refuseTasksInLiveSlurmJobs(const std::string& dir, const SlurmClient::Programs& programs) {
  // A run or a `slurm submit` watch holds the campaign: its own refusal names it (Campaign::open
  // as a writer, exit 1; before: the tasks in its jobs were named, exit 2, with the advice to let
  // the `slurm submit` that was already watching carry on).
  if (!jobs::campaignOrchestrator(dir).empty()) return;
  std::vector<TaskRecord> in_jobs;  // the running rows only (not 10^5 tasks at every start)
  {
    jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly);
    for (TaskRecord& t : c.journal().tasks(TaskState::kRunning))
      if (!arrayJobIdOf(t.external_id).empty()) in_jobs.push_back(std::move(t));
  }
  if (in_jobs.empty()) return;
  const SlurmClient client(programs);
  JobView view;
  try {
    if (!client.available()) throw SlurmQueryError("Slurm does not answer here");
    view = lookUpJobs(client, in_jobs);
  } catch (const SlurmQueryError& e) {
    logWarn(
        "{}: {} task(s) were in Slurm jobs (e.g. {} in {}), and {}: they are run here; an "
        "element that still starts finds a newer attempt and ends (exit 76)",
        dir, in_jobs.size(), in_jobs.front().id, in_jobs.front().external_id, e.what());
    return;
  }
  std::map<std::string, std::string> live;  // task id -> its element, in task order
  for (const TaskRecord& t : in_jobs) {
    std::string why;
    if (!jobEnded(view, t, why)) live[t.id] = t.external_id;
  }
  if (live.empty()) return;
  const size_t n = live.size();
  std::string named;
  for (auto it = live.begin(); it != live.end() && std::distance(live.begin(), it) < 4; ++it)
    named += (named.empty() ? "" : ", ") + it->first + " in " + it->second;
  // Held by those jobs, as a run holds what it would write: exit 1, as such refusals end.
  throw Error(dir + ": " + std::to_string(n) + " task(s) are in Slurm jobs still queued or " +
              "running (" + named + (n > 4 ? ", …" : "") + "); let `foldfarm slurm submit " +
              shellWord(dir) + "` carry on with them, or `foldfarm campaign cancel " +
              shellWord(dir) + "` (it scancels them) and `foldfarm campaign retry " +
              shellWord(dir) + " --cancelled` to run them here");
}

nlohmann::json SlurmCampaignSummary::toJson() const {
  return {{"counts", countsJson(counts)},
          {"held", tasksHeld},
          {"submissions", submissions},
          {"elements_submitted", elementsSubmitted},
          {"tasks_submitted", tasksSubmitted},
          {"tasks_requeued", tasksRequeued},
          {"tasks_stopped", tasksStopped},
          {"tasks_not_started", tasksNotStarted},
          {"tasks_throttled", tasksThrottled},
          {"results_ingested", resultsIngested},
          {"job_ids", jobIds},
          {"interrupted", interrupted},
          {"orphans_cancelled", orphansCancelled},
          {"held_released", heldReleased},
          {"cancelled", cancelled},
          {"tasks_cancelled", tasksCancelled},
          {"jobs_cancelled", jobsCancelled}};
}

SbatchResources arrayElementResources(const jobs::CampaignSpec& spec, SbatchResources r) {
  const auto& res = spec.resources;
  r.gpusPerNode = res.gpus > 0 ? std::max(r.gpusPerNode, 1) : r.gpusPerNode;
  if (res.gpus > 0 && r.tasksPerGpu == 0) r.tasksPerGpu = res.tasks_per_gpu;
  if (r.cpusPerTask == 0) r.cpusPerTask = std::max(1, res.threads_per_task);
  if (r.jobName.empty()) r.jobName = "foldfarm-" + spec.name;
  return withDefaults(r);
}

int arrayElementLanes(const SbatchResources& r) {
  return r.gpusPerNode > 0 ? r.tasksPerGpu : r.tasksPerNode;
}

SbatchResources pilotResources(const jobs::CampaignSpec& spec, SbatchResources r,
                               const std::string& origin) {
  const auto& res = spec.resources;
  if (res.gpus > 0) {
    if (r.gpusPerNode == 0) r.gpusPerNode = res.gpus;
    if (r.tasksPerGpu == 0) r.tasksPerGpu = res.tasks_per_gpu;
    // A worker rank binds GPU (its index on the node) / resources.tasks_per_gpu, which must
    // be one of resources.gpus (jobs/slots.hpp): other shapes leave ranks without a GPU.
    if (r.gpusPerNode > res.gpus)
      throw InputError(origin + ": --gpus-per-node " + std::to_string(r.gpusPerNode) +
                       " but the campaign's resources.gpus is " + std::to_string(res.gpus) +
                       "; its ranks bind at most that many GPUs of a node (drop the option)");
    if (r.tasksPerGpu != res.tasks_per_gpu)
      throw InputError(origin + ": --tasks-per-gpu " + std::to_string(r.tasksPerGpu) +
                       " but the campaign's resources.tasks_per_gpu is " +
                       std::to_string(res.tasks_per_gpu) +
                       "; its ranks share GPUs as the spec says (drop the option)");
  } else {
    if (r.gpusPerNode > 0)
      throw InputError(origin + ": --gpus-per-node " + std::to_string(r.gpusPerNode) +
                       " but the campaign's tasks run on CPUs (resources.gpus is 0), so the "
                       "GPUs would idle; drop the option");
    if (r.tasksPerNode == 0) r.tasksPerNode = spec.slotsPerNode();
  }
  if (r.cpusPerTask == 0) r.cpusPerTask = std::max(1, res.threads_per_task);
  if (r.jobName.empty()) r.jobName = "foldfarm-" + spec.name;
  return withDefaults(r);
}

namespace {

nlohmann::json submitOptionsJson(const SlurmCampaignOptions& o) {
  nlohmann::json j = nlohmann::json::object();
  forEachRecordedOption([&](const RecordedOption& opt, auto field) {
    (*opt.section ? j[opt.section] : j)[opt.key] = field(o);
  });
  return j;
}

}  // namespace

std::string submitOptionsPath(const std::string& dir) {
  return dir + "/slurm/submit-options.json";
}

std::optional<SlurmCampaignOptions> recordedSubmitOptions(const std::string& dir) {
  const std::string path = submitOptionsPath(dir);
  if (!statPath(path).exists) return std::nullopt;
  SlurmCampaignOptions o;
  try {
    const nlohmann::json j = nlohmann::json::parse(readFile(path));
    forEachRecordedOption([&](const RecordedOption& opt, auto field) {
      const nlohmann::json& from = *opt.section ? j.at(opt.section) : j;
      from.at(opt.key).get_to(field(o));
    });
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": damaged (" + std::string(e.what()) +
                     "); remove it and give the options again with `foldfarm slurm submit " +
                     shellWord(dir) + " [options]`");
  }
  return o;
}

SlurmCampaignSummary runCampaignOnSlurm(const std::string& dir, const SlurmCampaignOptions& o) {
  if (!(o.pollInitialS > 0 && o.pollMaxS >= o.pollInitialS && std::isfinite(o.pollMaxS))) {
    throw InputError("--poll: need 0 < initial interval <= maximum interval");
  }
  if (o.maxSubmissions < 1) throw InputError("--max-submissions must be >= 1");
  // Absolute: the scripts, manifests and output patterns name it, and a job may run in
  // another directory (--chdir).
  jobs::Campaign c = jobs::Campaign::open(fs::absolute(dir).lexically_normal().string(),
                                          jobs::Campaign::Access::kWriter);
  jobs::requireCampaignInputs(c.spec(), dir + "/spec.json");  // named as given
  jobs::requireClusterWideLocks(c.dir(), "the Slurm array elements run its tasks on any node");
  checkSubmissionOptions(c, o);
  makeOutputDirectories(submissionResources(c, o));
  SlurmClient client(o.programs);
  if (!client.available()) {
    throw Error("Slurm is not reachable from " + hostName() +
                " (sbatch/squeue missing or `scontrol ping` fails); run this on a login node");
  }
  SlurmCampaignSummary sum;
  sum.tasksRetried = c.retry(o.retry);
  if (sum.tasksRetried > 0) logInfo("{} task(s) back to pending for the retry", sum.tasksRetried);
  installStopHandlers();
  // `campaign cancel D` while this watch holds D asks it (jobs/cancel_request.hpp): it cancels
  // the tasks and scancels their jobs, then answers.
  jobs::CancelWatch cancelWatch(c.dir());
  const auto cancelled = [&](const jobs::CancelRequest& request) {
    SlurmCancelSummary cs = cancelOnSlurm(c, o.programs);
    cancelWatch.done();
    logWarn(
        "campaign {}: cancelled by {}: {} unfinished task(s) cancelled, {} Slurm job(s) "
        "scancelled (`foldfarm campaign retry {} --cancelled` submits them again)",
        c.spec().name, request.by.empty() ? "`foldfarm campaign cancel`" : request.by,
        cs.tasksCancelled, cs.jobsCancelled.size(), shellWord(dir));
    sum.cancelled = true;
    sum.tasksCancelled = cs.tasksCancelled;
    sum.jobsCancelled = cs.jobsCancelled;
    sum.counts = c.counts();
    return sum;
  };
  double interval = o.pollInitialS;
  auto lastReport = std::chrono::steady_clock::now();
  int queryFailures = 0, limitRounds = 0;
  // Elements per array at most, learned from submit limits (0: the cluster's caps), and the
  // rounds in a row whose one-element array a per-user submit limit refused while none of the
  // user's jobs was queued.
  int arrayCap = 0, refusedAlone = 0;
  bool settled = false, recorded = false;
  while (true) {
    RoundResult r;
    bool smaller = false;  // a submit limit refused an array too large for it: smaller, at once
    try {
      if (!settled) {
        SettledSubmissions s = settleEarlierSubmissions(c, client);
        sum.orphansCancelled += s.cancelled;
        sum.heldReleased += s.released;
        sum.tasksRequeued += s.tasksRequeued;
        settled = true;
      }
      reconcile(c, client, o, /*submit=*/true, r, arrayCap);
      queryFailures = 0;
      refusedAlone = 0;
      if (!recorded && o.record) {
        // What a later `campaign retry` submits with: options Slurm took (an sbatch that
        // refused them threw above, and nothing is recorded). A round that submitted nothing
        // asks sbatch to check them first (--test-only; before: recorded unchecked, and the
        // next submission pended for ever on a --mem no node has).
        std::error_code ec;
        fs::create_directories(c.dir() + "/slurm", ec);
        if (ec) throw Error(c.dir() + "/slurm: cannot create: " + ec.message());
        const std::string refused =
            r.submittedArrays == 0 ? optionsRefusedBySbatch(c, o, client) : std::string();
        if (refused.empty())
          writeFileAtomic(submitOptionsPath(c.dir()), submitOptionsJson(o).dump(2) + "\n");
        else
          logWarn(
              "{}: these options are not recorded: `sbatch --test-only` refuses them ({}); fix "
              "them before the tasks are submitted",
              dir, refused);
        recorded = true;
      }
    } catch (const SlurmQueryError& e) {
      // slurmctld did not answer: try again later, settling first what this round may have
      // left between sbatch and release.
      settled = false;
      if (!o.wait) throw;
      // Given up: say where things stand and how to go on (before: scontrol's words only).
      if (++queryFailures >= 10)
        throw SlurmQueryError(std::string(e.what()) +
                              "; Slurm did not answer 10 times in a row: what was submitted is "
                              "recorded (a job held by this submitter is released, or "
                              "cancelled, by the next round): `foldfarm slurm submit " +
                              shellWord(dir) + "` carries on once Slurm answers");
      logWarn("{} (attempt {} of 10; retrying)", e.what(), queryFailures);
    } catch (const SbatchLimitError& e) {
      // A submit limit: what is not submitted stays pending, and a later round submits it
      // once jobs have ended (before: the watch ended with "fix the option it names").
      // MaxSubmitJobs counts an array as its elements, so one with more elements than the user
      // may queue is refused however long this waits (before: submitted again at the same size
      // for ever). While the refused array has more elements than this campaign has queued
      // (whose end could make room for it), the arrays are halved, down to one element, and
      // the round runs again at once.
      const int queued = queuedElements(c);
      if (e.elements > 1 && e.elements > queued) {
        arrayCap = e.elements / 2;
        smaller = true;
        refusedAlone = 0;
        logWarn(
            "{}; an array counts as its {} elements toward that limit, and this campaign has {} "
            "queued: submitting arrays of at most {} element(s) from now on",
            e.what(), e.elements, queued, arrayCap);
      } else {
        // One element refused while none of the user's jobs is queued: a per-user limit below
        // one job, which no wait clears. Twice in a row, rounds apart, so that a job that ended
        // between sbatch and squeue does not end the watch; a group limit (GrpSubmitJobs,
        // per account) also counts other users' jobs, and is waited for.
        const bool alone = e.elements == 1 && queued == 0 && isPerUserSubmitLimit(e.limit) &&
                           client.userQueuedJobCount() == 0;
        refusedAlone = alone ? refusedAlone + 1 : 0;
        if (refusedAlone >= 2)
          throw Error(dir + ": sbatch refused a one-element array for " + e.limit +
                      " twice while none of your jobs was queued: your submit limit is below "
                      "one job, which no wait clears; ask your Slurm administrators to raise it "
                      "(`sacctmgr show assoc user=$USER`, `sacctmgr show qos`), or submit with "
                      "another --account or --qos");
        if (!o.wait)
          throw Error(std::string(e.what()) + "; its tasks stay pending: `foldfarm slurm submit " +
                      shellWord(dir) + "` submits them once some of your jobs have ended");
        // Said each time while nothing of this campaign is queued to make room.
        if (limitRounds++ == 0 || queued == 0)
          logWarn(
              "{} (an array of {} element(s)); its tasks stay pending and are submitted at a "
              "later round, once some of your jobs have ended",
              e.what(), e.elements);
        else
          logInfo("{} (an array of {} element(s), round {}); still waiting", e.what(), e.elements,
                  limitRounds);
      }
    }
    sum.submissions += r.submittedArrays;
    sum.elementsSubmitted += r.submittedElements;
    sum.tasksSubmitted += r.submittedTasks;
    sum.tasksRequeued += r.requeued - r.notStarted;
    sum.tasksNotStarted += r.notStarted;
    sum.tasksStopped += r.stopped;
    sum.tasksThrottled = r.throttled;
    sum.resultsIngested += r.ingested;
    sum.jobIds.insert(sum.jobIds.end(), r.jobIds.begin(), r.jobIds.end());
    if (smaller && !stopRequested()) continue;  // the smaller arrays, without the poll's wait
    jobs::StateCounts counts = c.counts();
    const int pending = countOf(counts, TaskState::kPending);
    const int running =
        countOf(counts, TaskState::kRunning) + countOf(counts, TaskState::kInterrupted);
    const int stuck = static_cast<int>(r.exhausted.size() + r.held.size());
    if (running == 0 && pending > 0 && stuck == pending && r.exhausted.empty()) {
      // Only tasks behind failed dependencies are left: the campaign ends here.
      sum.counts = counts;
      sum.tasksHeld = static_cast<int>(r.held.size());
      logWarn(
          "{} task(s) held by failed dependencies (first: {}); fix those and run `foldfarm "
          "campaign retry {} --failed` (it submits them again)",
          r.held.size(), r.held.front(), dir);
      return sum;
    }
    if (running == 0 && pending > 0 && stuck == pending) {
      sum.counts = counts;
      throw Error(
          "task " + r.exhausted.front() +
          (r.exhausted.size() > 1 ? " (and " + std::to_string(r.exhausted.size() - 1) + " more)"
                                  : std::string()) +
          ": its Slurm jobs ended " +
          (o.maxSubmissions == 1 ? std::string("once")
                                 : std::to_string(o.maxSubmissions) + " times") +
          " without a result (--max-submissions " + std::to_string(o.maxSubmissions) + "); see " +
          c.taskDir(r.exhausted.front()) + "/task.log and the job output (" +
          (o.resources.output.empty() ? dir + "/slurm/sub-*/" : "--output " + o.resources.output) +
          "); once the cause is mended, `foldfarm slurm submit " + shellWord(dir) +
          " --max-submissions " + std::to_string(o.maxSubmissions + 1) + "` submits it again");
    }
    if (!o.wait || (pending == 0 && running == 0)) {
      sum.counts = counts;
      if (o.wait)  // the watch's last line says how it ended (before: the last change's)
        logInfo("campaign {}: {} done, {} failed, {} cancelled: nothing left to watch",
                c.spec().name, countOf(counts, TaskState::kDone),
                countOf(counts, TaskState::kFailed), countOf(counts, TaskState::kCancelled));
      return sum;
    }
    auto nowTp = std::chrono::steady_clock::now();
    if (r.changed() || nowTp - lastReport > std::chrono::seconds(60)) {
      logInfo("campaign {}: {} done, {} running, {} pending{}, {} failed", c.spec().name,
              countOf(counts, TaskState::kDone), running, pending,
              r.throttled > 0 ? " (" + std::to_string(r.throttled) +
                                    " ready, waiting for room "
                                    "under --throttle " +
                                    std::to_string(o.throttle) + ")"
                              : std::string(),
              countOf(counts, TaskState::kFailed));
      lastReport = nowTp;
    }
    interval = r.changed() ? o.pollInitialS : std::min(o.pollMaxS, interval * 1.5);
    // Sleep in short slices so a stop or cancel request ends the watch promptly.
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(interval);
    while (std::chrono::steady_clock::now() < until && !stopRequested()) {
      if (std::optional<jobs::CancelRequest> request = cancelWatch.poll())
        return cancelled(*request);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (stopRequested()) {
      logWarn(
          "stopped watching campaign {}; its Slurm jobs keep running: run `foldfarm slurm submit "
          "{}` to keep watching",
          c.spec().name, shellWord(dir));
      sum.counts = c.counts();
      sum.interrupted = true;
      return sum;
    }
  }
}

nlohmann::json slurmCampaignStatus(const std::string& dir, const SlurmClient::Programs& programs) {
  SlurmClient client(programs);
  nlohmann::json out;
  std::optional<jobs::Campaign> c;
  bool elsewhere = false;
  try {
    c.emplace(jobs::Campaign::open(dir, jobs::Campaign::Access::kWriter));
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {
    // Another process holds the writer lock (a `slurm submit` watching D): only look.
    logDebug("{}: read-only status ({})", dir, e.what());
    c.emplace(jobs::Campaign::open(dir, jobs::Campaign::Access::kReadOnly));
    elsewhere = true;
  }
  RoundResult r;
  const bool slurmUp = client.available();
  SettledSubmissions settled;
  if (!elsewhere && slurmUp) {
    settled = settleEarlierSubmissions(*c, client);
    SlurmCampaignOptions o;
    reconcile(*c, client, o, /*submit=*/false, r);
  }
  std::vector<TaskRecord> running = c->tasks(TaskState::kRunning);
  std::map<std::string, int> tasksPerElement;
  for (const auto& t : running) tasksPerElement[t.external_id]++;
  nlohmann::json jobsJson = nlohmann::json::array();
  if (slurmUp) {
    JobView v = lookUpJobs(client, running);
    for (const auto& [ext, n] : tasksPerElement) {
      auto it = v.byExternalId.find(ext);
      jobsJson.push_back({{"id", ext},
                          {"state", it == v.byExternalId.end() ? "GONE" : it->second.state},
                          {"reason", it == v.byExternalId.end() ? "" : it->second.reason},
                          {"tasks", n}});
    }
  }
  out["campaign"] = c->spec().name;
  out["dir"] = dir;
  out["counts"] = countsJson(c->counts());
  out["jobs"] = jobsJson;
  out["requeued"] = r.requeued + settled.tasksRequeued;
  out["orphans_cancelled"] = settled.cancelled;
  out["held_released"] = settled.released;
  out["ingested"] = r.ingested;
  out["watched_elsewhere"] = elsewhere;
  out["slurm_reachable"] = slurmUp;
  return out;
}

bool campaignUsedSlurm(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir + "/slurm", ec)) {
    if (e.path().filename().string().rfind("sub-", 0) == 0) return true;
  }
  return false;
}

SlurmCancelSummary cancelCampaignOnSlurm(const std::string& dir,
                                         const SlurmClient::Programs& programs) {
  jobs::Campaign c = jobs::Campaign::open(dir, jobs::Campaign::Access::kWriter);
  return cancelOnSlurm(c, programs);
}

SlurmCancelSummary cancelOnSlurm(jobs::Campaign& c, const SlurmClient::Programs& programs) {
  const std::string& dir = c.dir();
  // 1. The jobs that may run a task: named by running tasks, or submitted and not settled.
  std::set<std::string> jobs;
  for (const auto& t : c.tasks(TaskState::kRunning)) {
    const std::string a = arrayJobIdOf(t.external_id);
    if (!a.empty()) jobs.insert(a);
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir + "/slurm", ec)) {
    const std::string sub = e.path().string();
    const std::string name = e.path().filename().string();
    if (name.rfind("sub-", 0) != 0 || !isDigits(name.substr(4))) continue;
    if (fs::exists(sub + "/settled") || !fs::exists(sub + "/jobid")) continue;
    const std::string id = savedJobId(sub);
    if (!id.empty()) jobs.insert(id);
  }
  // 2. The journal first: whatever the jobs still do is never ingested.
  SlurmCancelSummary out;
  out.tasksCancelled = c.cancel("cancelled by the user");
  // 3. scancel each.
  SlurmClient client(programs);
  std::vector<std::string> failed;
  for (const auto& id : jobs) {
    try {
      client.cancel(id);
      out.jobsCancelled.push_back(id);
    } catch (const Error& e) {
      logError("{}", e.what());
      failed.push_back(id);
    }
  }
  if (!failed.empty()) {
    std::string list;
    for (const auto& id : failed) list += (list.empty() ? "" : " ") + id;
    throw Error(dir + ": " + std::to_string(out.tasksCancelled) +
                " task(s) cancelled in the journal, but scancel failed for job(s) " + list +
                "; run `scancel " + list + "`");
  }
  return out;
}

SlurmCampaignOptions withRecordedOptions(const SlurmCampaignOptions& given,
                                         const SlurmCampaignOptions& recorded,
                                         const std::set<std::string>& given_names) {
  SlurmCampaignOptions o = given;
  forEachRecordedOption([&](const RecordedOption& opt, auto field) {
    for (const char* name : opt.options)
      if (name != nullptr && given_names.count(name) > 0) return;
    field(o) = field(recorded);
  });
  return o;
}

SbatchResources resolveResources(SbatchResources given,
                                 const std::vector<std::string>& setup_files) {
  for (const auto& f : setup_files) {
    const std::string text = readFile(f);
    size_t start = 0;
    while (start < text.size()) {
      size_t nl = text.find('\n', start);
      if (nl == std::string::npos) nl = text.size();
      given.setupLines.push_back(text.substr(start, nl - start));
      start = nl + 1;
    }
  }
  if (given.foldfarm.empty() || given.foldfarm == "foldfarm")
    given.foldfarm = jobs::selfExecutable();
  return given;
}

}  // namespace foldfarm::slurm
