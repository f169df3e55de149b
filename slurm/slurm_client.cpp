#include "slurm/slurm_client.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <regex>
#include <sstream>
#include <thread>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/text.hpp"

namespace foldfarm::slurm {
namespace {

std::string firstLine(const std::string& s) {
  std::string t = trim(s);
  return t.substr(0, t.find('\n'));
}

}  // namespace

std::string QueuedJob::externalId() const {
  return arrayTask >= 0 ? arrayJobId + "_" + std::to_string(arrayTask) : arrayJobId;
}

bool QueuedJob::finished() const {
  return isTerminalJobState(state);
}

bool isTerminalJobState(const std::string& state) {
  static const char* kTerminal[] = {"COMPLETED", "FAILED",        "TIMEOUT",   "NODE_FAIL",
                                    "PREEMPTED", "OUT_OF_MEMORY", "CANCELLED", "BOOT_FAIL",
                                    "DEADLINE",  "SPECIAL_EXIT",  "REVOKED"};
  for (const char* t : kTerminal) {
    if (state == t) return true;
  }
  return false;
}

SubmittedJob parseSbatchParsable(const std::string& out) {
  std::string line = trim(out);
  // sbatch may print warnings on stdout before the id on some sites; the id is the last line.
  auto nl = line.rfind('\n');
  if (nl != std::string::npos) line = trim(line.substr(nl + 1));
  SubmittedJob job;
  auto semi = line.find(';');
  job.jobId = line.substr(0, semi);
  if (semi != std::string::npos) job.cluster = line.substr(semi + 1);
  static const std::regex clusterRe("[A-Za-z0-9_.-]*");
  if (!allDigits(job.jobId) || !std::regex_match(job.cluster, clusterRe)) {
    throw Error("sbatch --parsable printed '" + firstLine(out) +
                "', not 'jobid[;cluster]'; cannot track the job (check the sbatch on PATH)");
  }
  return job;
}

std::vector<QueuedJob> parseSqueue(const std::string& out) {
  std::vector<QueuedJob> jobs;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty()) continue;
    std::vector<std::string> f;
    size_t start = 0;
    while (true) {
      auto bar = line.find('|', start);
      f.push_back(line.substr(start, bar - start));
      if (bar == std::string::npos) break;
      start = bar + 1;
    }
    if (f.size() != 5 || !allDigits(f[0]) || !allDigits(f[2]) || f[3].empty()) {
      throw Error("squeue printed an unexpected line '" + line + "' (expected %F|%K|%A|%T|%r)");
    }
    QueuedJob j;
    j.arrayJobId = f[0];
    if (f[1] == "N/A") {
      j.arrayTask = -1;
    } else if (allDigits(f[1]) && f[1].size() <= 9) {
      j.arrayTask = std::stoi(f[1]);
    } else {
      // An unexpanded range ("0-5%2") should not appear with -r; treat as a format error.
      throw Error("squeue printed an array task '" + f[1] +
                  "' that is not an index below 10^9 in line '" + line +
                  "' (an unexpanded range despite -r?)");
    }
    j.jobId = f[2];
    j.state = f[3];
    j.reason = f[4];
    jobs.push_back(std::move(j));
  }
  return jobs;
}

SlurmLimits parseSlurmConfig(const std::string& out) {
  SlurmLimits l;
  std::istringstream in(out);
  std::string line;
  auto value = [](const std::string& v) -> int {
    std::string t = trim(v);
    size_t n = 0;
    while (n < t.size() && std::isdigit(static_cast<unsigned char>(t[n]))) ++n;
    if (n == 0) return -1;
    if (n > 9) return 1 << 30;  // beyond any limit Slurm has; std::stoll would throw past 18
    return static_cast<int>(std::min<long long>(std::stoll(t.substr(0, n)), 1LL << 30));
  };
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = trim(line.substr(0, eq));
    int v = value(line.substr(eq + 1));
    if (v < 0) continue;
    if (key == "MaxArraySize" && v > 0)
      l.maxArraySize = v;
    else if (key == "MaxJobCount" && v > 0)
      l.maxJobCount = v;
    else if (key == "MinJobAge")
      l.minJobAge = v;
  }
  return l;
}

ProcessResult SlurmClient::run(const std::vector<std::string>& argv,
                               std::chrono::seconds timeout) const {
  ProcessOptions o;
  o.timeout = timeout;
  return runProcess(argv, o);
}

bool isTransientSlurmFailure(const ProcessResult& r) {
  if (r.ok()) return false;
  if (r.timedOut) return true;
  static const char* const kPatterns[] = {"Unable to contact slurm controller",
                                          "Socket timed out",
                                          "temporarily unable",
                                          "Slurm backup controller in standby mode",
                                          "Connection refused",
                                          "Transport endpoint is not connected",
                                          "Zero Bytes were transmitted or received"};
  for (const char* p : kPatterns) {
    if (r.err.find(p) != std::string::npos || r.out.find(p) != std::string::npos) return true;
  }
  return false;
}

ProcessResult SlurmClient::runRetrying(const std::vector<std::string>& argv) const {
  ProcessResult r = run(argv);
  for (size_t i = 0; i < retryDelays.size() && isTransientSlurmFailure(r); ++i) {
    logWarn("{}; retrying in {:.1f} s", r.describeFailure(), retryDelays[i].count() / 1000.0);
    std::this_thread::sleep_for(retryDelays[i]);
    r = run(argv);
  }
  return r;
}

std::string SlurmClient::testOnly(const std::string& scriptPath) const {
  ProcessResult r = run({programs_.sbatch, "--test-only", scriptPath}, std::chrono::seconds(60));
  if (isTransientSlurmFailure(r))
    throw SlurmQueryError("sbatch --test-only got no answer for " + scriptPath + ": " +
                          r.describeFailure());
  if (r.ok()) return "";
  // Its reason: the error line, not the "allocation failure" echo.
  std::string why;
  std::istringstream lines(r.err + "\n" + r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("error") != std::string::npos) return line;
    if (why.empty() && !line.empty()) why = line;
  }
  return why.empty() ? r.describeFailure() : why;
}

bool SlurmClient::available() const {
  if (!programAvailable(programs_.sbatch) || !programAvailable(programs_.squeue) ||
      !programAvailable(programs_.scontrol)) {
    return false;
  }
  ProcessResult r = run({programs_.scontrol, "ping"}, std::chrono::seconds(20));
  return r.ok() && r.out.find("UP") != std::string::npos;
}

SubmittedJob SlurmClient::submit(const std::string& scriptPath,
                                 const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {programs_.sbatch, "--parsable"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(scriptPath);
  ProcessResult r = run(argv, std::chrono::seconds(120));
  if (isTransientSlurmFailure(r)) {
    throw SlurmQueryError("sbatch got no answer for " + scriptPath + ": " + r.describeFailure() +
                          " (slurmctld may have accepted it; it is looked for by its script "
                          "and settled next round)");
  }
  if (!r.ok()) {
    std::string msg = firstLine(r.err);
    if (msg.empty()) msg = r.describeFailure();
    // A submit limit (the user's jobs, queued and running, at the QOS's or account's cap):
    // it clears as jobs end.
    for (const char* p :
         {"MaxSubmitJob", "MaxSubmitJobs", "job submit limit", "AssocMaxSubmitJobLimit",
          "QOSMaxSubmitJobPerUserLimit", "QOSMaxSubmitJobPerAccountLimit"}) {
      if (r.err.find(p) != std::string::npos)
        throw SbatchLimitError("sbatch refused " + scriptPath + " for a submit limit: " + msg);
    }
    throw Error("sbatch rejected " + scriptPath + ": " + msg +
                " (fix the option it names, e.g. --partition, and submit again)");
  }
  SubmittedJob job = parseSbatchParsable(r.out);
  logDebug("sbatch: submitted {} as job {}", scriptPath, job.jobId);
  return job;
}

std::vector<QueuedJob> SlurmClient::queue(const std::vector<std::string>& jobIds) const {
  if (jobIds.empty()) return {};
  std::string list;
  for (const auto& id : jobIds) {
    if (!allDigits(id)) throw Error("squeue: '" + id + "' is not a job id");
    if (!list.empty()) list += ',';
    list += id;
  }
  ProcessResult r = run({programs_.squeue, "--noheader", "--array", "--states=all",
                         "--jobs=" + list, "--format=%F|%K|%A|%T|%r"});
  if (!r.ok()) {
    // squeue fails when every id given is unknown (all purged after MinJobAge).
    if (r.exitCode == 1 && r.err.find("Invalid job id") != std::string::npos) return {};
    throw SlurmQueryError("squeue failed: " + r.describeFailure() + " (is slurmctld reachable?)");
  }
  std::vector<QueuedJob> jobs = parseSqueue(r.out);
  // Keep only the requested arrays (a plain job id may also match an element's own id).
  jobs.erase(std::remove_if(jobs.begin(), jobs.end(),
                            [&](const QueuedJob& j) {
                              return std::find(jobIds.begin(), jobIds.end(), j.arrayJobId) ==
                                     jobIds.end();
                            }),
             jobs.end());
  return jobs;
}

std::vector<SlurmClient::PendingScript> SlurmClient::pendingScripts() const {
  const struct passwd* pw = ::getpwuid(::geteuid());
  const std::string user = pw && pw->pw_name ? pw->pw_name : std::to_string(::geteuid());
  ProcessResult r = run(
      {programs_.squeue, "--noheader", "--user=" + user, "--states=PENDING", "--format=%F|%r|%o"});
  if (!r.ok())
    throw SlurmQueryError("squeue failed: " + r.describeFailure() + " (is slurmctld reachable?)");
  std::vector<PendingScript> out;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    auto a = line.find('|');
    auto b = a == std::string::npos ? a : line.find('|', a + 1);
    if (b == std::string::npos || !allDigits(line.substr(0, a))) continue;
    out.push_back({line.substr(0, a), line.substr(b + 1), line.substr(a + 1, b - a - 1)});
  }
  return out;
}

int SlurmClient::queuedJobCount() const {
  ProcessResult r = run({programs_.squeue, "--noheader", "--array", "--format=%i"});
  if (!r.ok()) return -1;
  return static_cast<int>(std::count(r.out.begin(), r.out.end(), '\n'));
}

void SlurmClient::release(const std::string& jobId) const {
  ProcessResult r = runRetrying({programs_.scontrol, "release", jobId});
  if (isTransientSlurmFailure(r)) {
    throw SlurmQueryError("scontrol release " + jobId + " failed: " + r.describeFailure());
  }
  if (!r.ok()) throw Error("scontrol release " + jobId + " failed: " + r.describeFailure());
}

void SlurmClient::cancel(const std::string& jobId) const {
  ProcessResult r = runRetrying({programs_.scancel, jobId});
  if (r.ok() || r.err.find("already completed") != std::string::npos ||
      r.err.find("Invalid job id") != std::string::npos) {
    return;
  }
  if (isTransientSlurmFailure(r)) {
    throw SlurmQueryError("scancel " + jobId + " failed: " + r.describeFailure());
  }
  throw Error("scancel " + jobId + " failed: " + r.describeFailure());
}

SlurmLimits SlurmClient::limits() const {
  if (!programAvailable(programs_.scontrol)) return SlurmLimits{};
  ProcessResult r = run({programs_.scontrol, "show", "config"}, std::chrono::seconds(20));
  if (!r.ok()) {
    logDebug("scontrol show config failed ({}); using Slurm's default limits", r.describeFailure());
    return SlurmLimits{};
  }
  SlurmLimits l = parseSlurmConfig(r.out);
  l.fromCluster = true;
  return l;
}

}  // namespace foldfarm::slurm
