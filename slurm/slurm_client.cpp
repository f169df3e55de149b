#include "slurm/slurm_client.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/text.hpp"

extern char** environ;

namespace foldfarm::slurm {
namespace {

std::string firstLine(const std::string& s) {
  std::string t = trim(s);
  return t.substr(0, t.find('\n'));
}

std::string envName(const std::string& kv) {
  return kv.substr(0, kv.find('='));
}

// This process's environment as NAME=value entries.
std::vector<std::string> processEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  return env;
}

std::string currentUser() {
  const struct passwd* pw = ::getpwuid(::geteuid());
  return pw && pw->pw_name ? pw->pw_name : std::to_string(::geteuid());
}

// Never passed to sbatch, whatever the script says: SBATCH_CLUSTERS and SLURM_CLUSTERS send
// the job to another cluster, whose queue the watch never asks (its squeue, scontrol and
// scancel go without SLURM_CLUSTERS too), and SBATCH_WAIT keeps sbatch from answering until
// the job ends, which a held job never does.
constexpr const char* kSbatchEnvNever[] = {"SBATCH_CLUSTERS", "SLURM_CLUSTERS", "SBATCH_WAIT"};

// sbatch's input variables (src/sbatch/opt.c's env_vars) by the option each stands for. Options
// of one kind share their variables: a script that sets the memory per node must not get a
// memory per CPU from the environment beside it, nor a GPU count per node beside its --gpus.
struct SbatchEnvOption {
  const char* option;
  std::vector<const char*> variables;
};
const std::vector<SbatchEnvOption>& sbatchEnvOptions() {
  static const char* const kMem[] = {"SBATCH_MEM_PER_NODE", "SBATCH_MEM_PER_CPU",
                                     "SBATCH_MEM_PER_GPU"};
  static const char* const kGpus[] = {"SBATCH_GPUS", "SBATCH_GPUS_PER_NODE",
                                      "SBATCH_GPUS_PER_SOCKET", "SBATCH_GPUS_PER_TASK"};
  static const char* const kRequeue[] = {"SBATCH_REQUEUE", "SBATCH_NO_REQUEUE"};
  static const std::vector<SbatchEnvOption> table = [] {
    std::vector<SbatchEnvOption> t = {
        {"account", {"SBATCH_ACCOUNT"}},
        {"acctg-freq", {"SBATCH_ACCTG_FREQ"}},
        {"array", {"SBATCH_ARRAY_INX"}},
        {"batch", {"SBATCH_BATCH"}},
        {"bb", {"SBATCH_BURST_BUFFER"}},
        {"cluster-constraint", {"SBATCH_CLUSTER_CONSTRAINT"}},
        {"constraint", {"SBATCH_CONSTRAINT"}},
        {"container", {"SBATCH_CONTAINER"}},
        {"container-id", {"SBATCH_CONTAINER_ID"}},
        {"core-spec", {"SBATCH_CORE_SPEC"}},
        {"cpu-freq", {"SBATCH_CPU_FREQ_REQ"}},
        {"cpus-per-gpu", {"SBATCH_CPUS_PER_GPU"}},
        {"delay-boot", {"SBATCH_DELAY_BOOT"}},
        {"distribution", {"SBATCH_DISTRIBUTION"}},
        {"error", {"SBATCH_ERROR"}},
        {"exclusive", {"SBATCH_EXCLUSIVE"}},
        {"export", {"SBATCH_EXPORT"}},
        {"get-user-env", {"SBATCH_GET_USER_ENV"}},
        {"gpu-bind", {"SBATCH_GPU_BIND"}},
        {"gpu-freq", {"SBATCH_GPU_FREQ"}},
        {"gres", {"SBATCH_GRES"}},
        {"gres-flags", {"SBATCH_GRES_FLAGS"}},
        {"hint", {"SBATCH_HINT", "SLURM_HINT"}},
        {"input", {"SBATCH_INPUT"}},
        {"job-name", {"SBATCH_JOB_NAME"}},
        {"mem-bind", {"SBATCH_MEM_BIND"}},
        {"network", {"SBATCH_NETWORK"}},
        {"no-kill", {"SBATCH_NO_KILL"}},
        {"open-mode", {"SBATCH_OPEN_MODE"}},
        {"output", {"SBATCH_OUTPUT"}},
        {"overcommit", {"SBATCH_OVERCOMMIT"}},
        {"partition", {"SBATCH_PARTITION"}},
        {"power", {"SBATCH_POWER"}},
        {"profile", {"SBATCH_PROFILE"}},
        {"qos", {"SBATCH_QOS"}},
        {"reservation", {"SBATCH_RESERVATION"}},
        {"signal", {"SBATCH_SIGNAL"}},
        {"spread-job", {"SBATCH_SPREAD_JOB"}},
        {"switches", {"SBATCH_REQ_SWITCH", "SBATCH_WAIT4SWITCH"}},
        {"thread-spec", {"SBATCH_THREAD_SPEC"}},
        {"threads-per-core", {"SBATCH_THREADS_PER_CORE"}},
        {"time", {"SBATCH_TIMELIMIT"}},
        {"tres-bind", {"SBATCH_TRES_BIND"}},
        {"tres-per-task", {"SBATCH_TRES_PER_TASK"}},
        {"use-min-nodes", {"SBATCH_USE_MIN_NODES"}},
        {"wait-all-nodes", {"SBATCH_WAIT_ALL_NODES"}},
        {"wckey", {"SBATCH_WCKEY"}},
    };
    for (const char* o : {"mem", "mem-per-cpu", "mem-per-gpu"})
      t.push_back({o, {std::begin(kMem), std::end(kMem)}});
    for (const char* o : {"gpus", "gpus-per-node", "gpus-per-socket", "gpus-per-task"})
      t.push_back({o, {std::begin(kGpus), std::end(kGpus)}});
    for (const char* o : {"requeue", "no-requeue"})
      t.push_back({o, {std::begin(kRequeue), std::end(kRequeue)}});
    return t;
  }();
  return table;
}

// The long name of a short sbatch option ("" for one foldfarm has no use to know).
std::string longOptionName(char letter) {
  static const std::pair<char, const char*> kShort[] = {
      {'A', "account"},   {'a', "array"},   {'C', "constraint"}, {'c', "cpus-per-task"},
      {'D', "chdir"},     {'e', "error"},   {'G', "gpus"},       {'i', "input"},
      {'J', "job-name"},  {'k', "no-kill"}, {'M', "clusters"},   {'m', "distribution"},
      {'N', "nodes"},     {'n', "ntasks"},  {'O', "overcommit"}, {'o', "output"},
      {'p', "partition"}, {'q', "qos"},     {'S', "core-spec"},  {'t', "time"},
      {'W', "wait"}};
  for (const auto& [c, name] : kShort)
    if (c == letter) return name;
  return "";
}

// The words of the rest of an #SBATCH line as sbatch splits them: blanks separate, quotes
// group, a backslash escapes, an unquoted '#' begins a comment.
std::vector<std::string> sbatchLineWords(const std::string& rest) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < rest.size()) {
    while (i < rest.size() && std::isspace(static_cast<unsigned char>(rest[i]))) ++i;
    if (i >= rest.size() || rest[i] == '#') break;
    std::string w;
    char quote = 0;
    for (; i < rest.size() && (quote || !std::isspace(static_cast<unsigned char>(rest[i]))); ++i) {
      const char ch = rest[i];
      if (ch == '\\' && i + 1 < rest.size()) {
        w += rest[++i];
      } else if (quote) {
        if (ch == quote)
          quote = 0;
        else
          w += ch;
      } else if (ch == '"' || ch == '\'') {
        quote = ch;
      } else if (ch == '#') {
        break;
      } else {
        w += ch;
      }
    }
    words.push_back(std::move(w));
    if (i < rest.size() && rest[i] == '#') break;
  }
  return words;
}

// Says once per process, at info level, which variables of the user's environment a Slurm
// command goes without, and why.
void logSetAside(const std::string& program, const std::vector<std::string>& names,
                 const std::string& why) {
  static std::mutex mutex;
  static std::set<std::string> said;
  std::string fresh;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (const auto& n : names)
      if (said.insert(program + " " + n).second) fresh += (fresh.empty() ? "" : ", ") + n;
  }
  if (!fresh.empty()) logInfo("{}: {} of your environment not passed on: {}", program, fresh, why);
}

}  // namespace

std::string submitLimitReason(const std::string& err) {
  std::string word;
  for (size_t i = 0; i <= err.size(); ++i) {
    const char ch = i < err.size() ? err[i] : ' ';
    if (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_') {
      word += ch;
      continue;
    }
    if (word.find("MaxSubmitJob") != std::string::npos ||
        word.find("GrpSubmitJobs") != std::string::npos)
      return word;
    word.clear();
  }
  return "";
}

bool isPerUserSubmitLimit(const std::string& reason) {
  return reason.find("PerUser") != std::string::npos || reason.rfind("AssocMaxSubmitJob", 0) == 0;
}

std::string sbatchRefusalMessage(const std::string& err) {
  std::string out;
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (!out.empty() && line.rfind("sbatch: error: ", 0) == 0) line = trim(line.substr(15));
    if (!line.empty()) out += (out.empty() ? "" : "; ") + line;
  }
  return out;
}

std::vector<std::string> queryEnvSetAside(const std::string& program,
                                          const std::vector<std::string>& env) {
  std::string prefix;
  for (char c : program) prefix += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  prefix += '_';
  std::vector<std::string> out;
  for (const auto& kv : env) {
    const std::string name = envName(kv);
    if (name.rfind(prefix, 0) == 0 || name == "SLURM_CLUSTERS") out.push_back(name);
  }
  return out;
}

std::vector<std::string> sbatchScriptOptions(const std::string& script) {
  std::vector<std::string> options;
  std::istringstream in(script);
  for (std::string line; std::getline(in, line);) {
    std::string rest;
    if (line.rfind("#SBATCH", 0) == 0) {
      rest = line.substr(7);
    } else if (line.rfind("#SLURM", 0) == 0) {
      rest = line.substr(6);
    } else {
      const std::string t = trim(line);
      if (t.empty() || t[0] == '#') continue;
      break;  // the first command: sbatch reads no #SBATCH line after it
    }
    for (const std::string& w : sbatchLineWords(rest)) {
      std::string name;
      if (w.rfind("--", 0) == 0)
        name = w.substr(2, w.find('=') == std::string::npos ? std::string::npos : w.find('=') - 2);
      else if (w.size() >= 2 && w[0] == '-')
        name = longOptionName(w[1]);
      if (!name.empty() && std::find(options.begin(), options.end(), name) == options.end())
        options.push_back(name);
    }
  }
  return options;
}

std::vector<std::string> sbatchEnvSetAside(const std::string& script,
                                           const std::vector<std::string>& env) {
  std::set<std::string> drop(std::begin(kSbatchEnvNever), std::end(kSbatchEnvNever));
  for (const std::string& option : sbatchScriptOptions(script)) {
    for (const SbatchEnvOption& o : sbatchEnvOptions())
      if (option == o.option) drop.insert(o.variables.begin(), o.variables.end());
  }
  std::vector<std::string> out;
  for (const auto& kv : env) {
    const std::string name = envName(kv);
    if (drop.count(name) && std::find(out.begin(), out.end(), name) == out.end())
      out.push_back(name);
  }
  return out;
}

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
    if (key == "ClusterName") {
      l.clusterName = trim(line.substr(eq + 1));
      continue;
    }
    if (key == "SchedulerParameters") {
      // A comma-separated list of key[=value]: "bf_continue,max_array_tasks=1000" or "(null)".
      std::istringstream params(trim(line.substr(eq + 1)));
      for (std::string p; std::getline(params, p, ',');) {
        const auto peq = p.find('=');
        if (peq == std::string::npos || trim(p.substr(0, peq)) != "max_array_tasks") continue;
        if (const int n = value(p.substr(peq + 1)); n > 0) l.maxArrayTasks = n;
      }
      continue;
    }
    int v = value(line.substr(eq + 1));
    if (v < 0) continue;
    if (key == "MaxArraySize")  // 0: job arrays disabled (before: taken for the default 1001)
      l.maxArraySize = v;
    else if (key == "MaxJobCount" && v > 0)
      l.maxJobCount = v;
    else if (key == "MinJobAge")
      l.minJobAge = v;
  }
  return l;
}

ProcessResult SlurmClient::run(const std::string& program, const std::vector<std::string>& argv,
                               std::chrono::seconds timeout, const std::string& script) const {
  ProcessOptions o;
  o.timeout = timeout;
  const std::vector<std::string> env = processEnvironment();
  if (program == "sbatch") {
    o.unsetEnv = sbatchEnvSetAside(script, env);
    std::vector<std::string> options, never;
    for (const auto& name : o.unsetEnv)
      (std::find(std::begin(kSbatchEnvNever), std::end(kSbatchEnvNever), name) !=
               std::end(kSbatchEnvNever)
           ? never
           : options)
          .push_back(name);
    logSetAside(program, options,
                "the submitted script sets their options, which sbatch would let them override");
    logSetAside(program, never,
                "they would send the job to another cluster than the one foldfarm watches, or "
                "keep sbatch from answering until the job ends");
  } else {
    o.unsetEnv = queryEnvSetAside(program, env);
    logSetAside(program, o.unsetEnv,
                "they would change which jobs or which cluster it looks at, or how it answers, "
                "for options foldfarm leaves out");
  }
  return runProcess(argv, o);
}

ProcessResult SlurmClient::runSbatch(std::vector<std::string> args, const std::string& scriptPath,
                                     std::chrono::seconds timeout) const {
  // The script's #SBATCH lines say which SBATCH_* variables would override it. One that cannot
  // be read is left for sbatch to refuse.
  std::string script;
  try {
    script = readFile(scriptPath);
  } catch (const std::exception& e) {
    logDebug("{}: {}", scriptPath, e.what());
  }
  args.insert(args.begin(), programs_.sbatch);
  args.push_back(scriptPath);
  return run("sbatch", args, timeout, script);
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

ProcessResult SlurmClient::runRetrying(const std::string& program,
                                       const std::vector<std::string>& argv) const {
  ProcessResult r = run(program, argv);
  for (size_t i = 0; i < retryDelays.size() && isTransientSlurmFailure(r); ++i) {
    logWarn("{}; retrying in {:.1f} s", r.describeFailure(), retryDelays[i].count() / 1000.0);
    std::this_thread::sleep_for(retryDelays[i]);
    r = run(program, argv);
  }
  return r;
}

std::string SlurmClient::testOnly(const std::string& scriptPath) const {
  ProcessResult r = runSbatch({"--test-only"}, scriptPath, std::chrono::seconds(60));
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
  ProcessResult r = run("scontrol", {programs_.scontrol, "ping"}, std::chrono::seconds(20));
  return r.ok() && r.out.find("UP") != std::string::npos;
}

SubmittedJob SlurmClient::submit(const std::string& scriptPath,
                                 const std::vector<std::string>& args) const {
  std::vector<std::string> sbatchArgs = {"--parsable"};
  sbatchArgs.insert(sbatchArgs.end(), args.begin(), args.end());
  ProcessResult r = runSbatch(sbatchArgs, scriptPath, std::chrono::seconds(120));
  if (isTransientSlurmFailure(r)) {
    throw SlurmQueryError("sbatch got no answer for " + scriptPath + ": " + r.describeFailure() +
                          " (slurmctld may have accepted it; it is looked for by its script "
                          "and settled next round)");
  }
  if (!r.ok()) {
    // A submit limit (the user's jobs, queued and running, at the QOS's or association's cap):
    // it clears as jobs end. Only the reason Slurm names tells it from a limit that never
    // clears (before: the generic "job submit limit" text, which comes with every one).
    if (const std::string limit = submitLimitReason(r.err); !limit.empty()) {
      std::string line;  // the one naming it: "sbatch: error: QOSMaxSubmitJobPerUserLimit"
      std::istringstream lines(r.err);
      while (std::getline(lines, line) && line.find(limit) == std::string::npos) {
      }
      throw SbatchLimitError("sbatch refused " + scriptPath + " for a submit limit: " + trim(line),
                             limit);
    }
    std::string msg = sbatchRefusalMessage(r.err);
    if (msg.empty()) msg = r.describeFailure();
    throw Error("sbatch rejected " + scriptPath + ": " + msg +
                " (fix the option it names, e.g. --partition, and submit again)");
  }
  SubmittedJob job = parseSbatchParsable(r.out);
  if (!job.cluster.empty()) {
    // sbatch names a cluster when it sent the job to one of its choosing (-M; the SBATCH_CLUSTERS
    // and SLURM_CLUSTERS of the environment are kept from it). The watch asks the local cluster
    // only: a job elsewhere would look lost, and its tasks would run twice.
    const std::string local = limits().clusterName;
    if (job.cluster != local) {
      const std::string what = "sbatch put " + scriptPath + " on cluster " + job.cluster +
                               " as job " + job.jobId + ", not on the local cluster" +
                               (local.empty() ? std::string() : " " + local);
      try {
        cancel(job.jobId, job.cluster);
      } catch (const std::exception& e) {
        throw Error(what + ", and cancelling it failed (" + e.what() + "): run `scancel -M " +
                    job.cluster + " " + job.jobId + "`; submit from a login node of the cluster " +
                    "that should run the campaign, without -M");
      }
      throw Error(what + " (cancelled it there: foldfarm watches the local cluster only); submit " +
                  "from a login node of the cluster that should run the campaign, without -M");
    }
  }
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
  ProcessResult r = run("squeue", {programs_.squeue, "--noheader", "--array", "--states=all",
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
  ProcessResult r = run("squeue", {programs_.squeue, "--noheader", "--user=" + currentUser(),
                                   "--states=PENDING", "--format=%F|%r|%o"});
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
  ProcessResult r = run("squeue", {programs_.squeue, "--noheader", "--array", "--format=%i"});
  if (!r.ok()) return -1;
  return static_cast<int>(std::count(r.out.begin(), r.out.end(), '\n'));
}

int SlurmClient::userQueuedJobCount() const {
  ProcessResult r = run("squeue", {programs_.squeue, "--noheader", "--array",
                                   "--user=" + currentUser(), "--format=%i"});
  if (!r.ok()) return -1;
  return static_cast<int>(std::count(r.out.begin(), r.out.end(), '\n'));
}

void SlurmClient::release(const std::string& jobId) const {
  ProcessResult r = runRetrying("scontrol", {programs_.scontrol, "release", jobId});
  if (isTransientSlurmFailure(r)) {
    throw SlurmQueryError("scontrol release " + jobId + " failed: " + r.describeFailure());
  }
  // A job that ended before its release (cancelled while held; or, when an earlier try's
  // answer was lost, released then and finished since): nothing left to release, and the next
  // round settles its tasks by what squeue and their results say (before: an error that ended
  // the watch, with the job's tasks already done).
  const std::string said = r.err + r.out;
  if (!r.ok() && (said.find("already completing or completed") != std::string::npos ||
                  said.find("Job has already finished") != std::string::npos)) {
    logInfo("scontrol release {}: the job has already ended ({})", jobId, trim(said));
    return;
  }
  if (!r.ok()) throw Error("scontrol release " + jobId + " failed: " + r.describeFailure());
}

void SlurmClient::cancel(const std::string& jobId, const std::string& cluster) const {
  std::vector<std::string> argv = {programs_.scancel};
  if (!cluster.empty()) argv.insert(argv.end(), {"-M", cluster});
  argv.push_back(jobId);
  ProcessResult r = runRetrying("scancel", argv);
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
  ProcessResult r =
      run("scontrol", {programs_.scontrol, "show", "config"}, std::chrono::seconds(20));
  if (!r.ok()) {
    logDebug("scontrol show config failed ({}); using Slurm's default limits", r.describeFailure());
    return SlurmLimits{};
  }
  SlurmLimits l = parseSlurmConfig(r.out);
  l.fromCluster = true;
  return l;
}

}  // namespace foldfarm::slurm
