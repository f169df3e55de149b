#include "jobs/campaign.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/output_lock.hpp"
#include "core/base/text.hpp"
#include "core/base/utf8.hpp"
#include "jobs/cancel_request.hpp"
#include "jobs/disk_estimate.hpp"
#include "jobs/input_record.hpp"
#include "jobs/task_execution.hpp"
#include "jobs/task_kind.hpp"
#include "jobs/task_lease.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;

bool pathExists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

void removeTree(const std::string& dir) {
  // Only used on a half-built temporary campaign directory we created ourselves.
  for (const char* name : {"/journal.sqlite-wal", "/journal.sqlite-shm", "/journal.sqlite",
                           "/spec.json", "/orchestrator.lock", "/aggregate.lock"}) {
    ::unlink((dir + name).c_str());
  }
  ::rmdir((dir + "/tasks").c_str());
  ::rmdir((dir + "/aggregate").c_str());
  ::rmdir(dir.c_str());
}

// Whether `stale` holds only what `campaign init` makes in its staging directory: the lock
// files, the frozen spec and the journal (with their temporary and side files), and the empty
// tasks/ and aggregate/.
bool holdsOnlyWhatInitMakes(const std::string& stale) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::directory_iterator it(stale, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto startsWith = [&](const std::string& head) { return name.rfind(head, 0) == 0; };
    if (name == "tasks" || name == "aggregate") {
      std::error_code eec;
      if (!fs::is_empty(it->path(), eec) || eec) return false;
    } else if (!(name == "orchestrator.lock" || name == kOutputsLockFile ||
                 startsWith("spec.json") || startsWith(kJournalFile))) {
      return false;
    }
  }
  return !ec;
}

// The staging directories `<dir>.init.<pid>` that a `campaign init` of `dir` killed before its
// rename left (SIGKILL, the OOM killer, a node lost): removed, so that a later init leaves no
// trace of one that was killed (before: they stayed, and nothing named them). One whose
// orchestrator.lock is held is an init at work (a staging init holds it), one without a lock
// file younger than a minute may be one starting; one holding anything init does not make is
// left, and said.
void removeStaleStagingDirs(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path d(dir);
  const fs::path parent = d.has_parent_path() ? d.parent_path() : fs::path(".");
  const std::string prefix = d.filename().string() + ".init.";
  std::error_code ec;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.rfind(prefix, 0) != 0 ||
        name.find_first_not_of("0123456789", prefix.size()) != std::string::npos)
      continue;
    const std::string stale = d.has_parent_path() ? it->path().string() : name;
    std::error_code sec;
    if (!fs::is_directory(it->symlink_status(sec))) continue;
    Fd lock(::open((stale + "/orchestrator.lock").c_str(), O_RDONLY | O_CLOEXEC));
    if (lock.valid()) {
      if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) continue;  // an init at work
    } else {
      struct stat st {};
      if (::stat(stale.c_str(), &st) != 0 || std::time(nullptr) - st.st_mtime < 60) continue;
    }
    if (!holdsOnlyWhatInitMakes(stale)) {
      logWarn(
          "campaign init {}: {} looks left by a `campaign init` that was killed, but holds "
          "files init does not make: it is left as it is; remove it when nothing of it is "
          "wanted",
          dir, stale);
      continue;
    }
    lock.reset();
    std::error_code rec;
    fs::remove_all(stale, rec);
    if (rec)
      logWarn(
          "campaign init {}: could not remove {} (left by a `campaign init` that was killed): "
          "{}",
          dir, stale, rec.message());
    else
      logInfo("campaign init {}: removed {}, left by a `campaign init` of it that was killed", dir,
              stale);
  }
}

std::string trimSlashes(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

// The line a lock's holder wrote into the lock file `path`, without its newline; "" when it
// cannot be read.
std::string holderLine(const std::string& path) {
  std::string holder;
  try {
    holder = readFile(path);
  } catch (const Error&) {
  }
  while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
  return holder;
}

// `path` (made when missing) flocked exclusively, with `holder` written into it for whoever is
// refused; `tries` tries 50 ms apart. nullopt with the lock still open in `refused` when
// another open file holds it; Error when it cannot be opened or locked.
std::optional<Fd> lockFileNamingHolder(const std::string& path, const std::string& holder,
                                       int tries, Fd& refused) {
  Fd lock(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, kNewFileMode));
  // A lock file another member of the campaign's group made without group write (its umask
  // 022): flock needs no write access, so it still locks; only the holder line is not written.
  bool writable = true;
  if (!lock.valid() && errno == EACCES) {
    lock.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    writable = false;
  }
  if (!lock.valid()) throw Error(path + ": cannot open: " + errnoMessage(errno));
  if (!tryFlock(lock.get(), LOCK_EX, path, tries)) {
    refused = std::move(lock);
    return std::nullopt;
  }
  if (writable && ::ftruncate(lock.get(), 0) == 0) {
    ssize_t w = ::pwrite(lock.get(), holder.data(), holder.size(), 0);
    (void)w;  // informational only
  }
  return lock;
}

// D/orchestrator.lock, flocked: one process writes the journal. CampaignBusy naming D and
// the holder when another holds it.
Fd lockOrchestrator(const std::string& dir) {
  const std::string lock_path = dir + "/orchestrator.lock";
  Fd refused;
  std::optional<Fd> lock =
      lockFileNamingHolder(lock_path, orchestratorIdentity() + "\n", 1, refused);
  if (!lock) {
    // Named by the line it wrote ("node7 pid 4242"), which says where to stop it; read again
    // once in the instant between its flock and its write.
    std::string holder = holderLine(lock_path);
    if (holder.empty()) {
      ::usleep(50000);
      holder = holderLine(lock_path);
    }
    throw CampaignBusy(
        dir + ": another foldfarm process is orchestrating this campaign (" +
            (holder.empty() ? std::string() : holder + "; ") + lock_path +
            " is locked); wait for it, stop it first (SIGTERM or Ctrl-C: a run or a pilot "
            "stops its tasks, which keep their state, and `foldfarm campaign resume " +
            shellWord(dir) +
            "` continues them; a `slurm submit` watch stops watching while its jobs keep "
            "running, and `foldfarm slurm submit " +
            shellWord(dir) + "` watches again), or cancel its tasks (`foldfarm campaign cancel " +
            shellWord(dir) + "`)",
        holder);
  }
  return std::move(*lock);
}

// Every task of `spec`, in index order.
std::vector<TaskDef> taskDefsOf(const CampaignSpec& spec) {
  std::vector<TaskDef> defs;
  defs.reserve(static_cast<size_t>(spec.numTasks()));
  for (int i = 0; i < spec.numTasks(); ++i) defs.push_back(spec.taskPosition(i));
  return defs;
}

// A new journal at `path` with the tasks `defs` of `spec`, all pending.
CampaignJournal createJournal(const CampaignSpec& spec, const std::vector<TaskDef>& defs,
                              const std::string& path, const std::string& spec_text) {
  CampaignJournal j = CampaignJournal::create(path, defs);
  j.setMeta("name", spec.name);
  j.setMeta("created_at", std::to_string(wallClockNow()));
  j.setMeta(kFrozenSpecMeta, spec_text);
  return j;
}

// The journal's copy of D/spec.json (meta "frozen_spec", `text`), parsed as the file would be
// before it replaces anything. Throws InputError.
CampaignSpec parseJournalSpecCopy(const std::string& text, const std::string& dir) {
  const std::string path = dir + "/spec.json";
  return parseCampaignSpec(parseJsonText(text, path + " (the journal's copy)", ""), path, dir,
                           /*require_inputs=*/false);
}

// D/spec.json, or (damaged or lost: `problem`) the journal's copy of it written back
// atomically, the damaged file kept beside it as spec.json.damaged-<time>-<pid>. InputError naming
// the file when the journal holds no sound copy.
CampaignSpec loadOrRestoreFrozenSpec(const std::string& dir, RepairSummary& sum) {
  const std::string path = dir + "/spec.json";
  try {
    return loadFrozenSpec(dir);
  } catch (const InputError& e) {
    // What was wrong, without loadFrozenSpec's advice to run this very repair.
    sum.spec_problem = e.what();
    for (const char* advice : {"; the campaign's frozen spec is damaged", "; restore it with"})
      sum.spec_problem = sum.spec_problem.substr(0, sum.spec_problem.find(advice));
  }
  std::string text;
  try {
    // Read as found: repair judges the journal next, and keeps a damaged one as it was.
    text = CampaignJournal::openAsFound(dir + "/" + kJournalFile).meta(kFrozenSpecMeta);
  } catch (const Error&) {
  }
  if (text.empty())
    throw InputError(path + ": damaged or missing, and the journal holds no copy of it (a " +
                     "campaign made before journals kept one, or a damaged journal): restore it "
                     "from a copy of the campaign directory (" +
                     sum.spec_problem + ")");
  (void)parseJournalSpecCopy(text, dir);  // checked before it replaces anything
  if (pathExists(path)) {
    const std::string kept = path + ".damaged-" + utcStamp() + "-" + std::to_string(::getpid());
    if (::rename(path.c_str(), kept.c_str()) != 0)
      throw Error(path + ": cannot move aside: " + errnoMessage(errno));
    sum.spec_damaged_copy = kept;
  }
  writeFileAtomic(path, text);
  sum.spec_restored = true;
  return loadFrozenSpec(dir);
}

// The spec a text of the journal's meta holds; nullopt when there is none or it does not parse.
std::optional<CampaignSpec> journalSpecCopy(const std::string& text, const std::string& dir) {
  if (text.empty()) return std::nullopt;
  try {
    return parseJournalSpecCopy(text, dir);
  } catch (const InputError&) {
    return std::nullopt;
  }
}

// The way back from an edited spec.json.
std::string editedSpecAdvice(const std::string& dir) {
  return "; a campaign's spec is not edited (its tasks ran with it): put it back with "
         "`foldfarm campaign repair " +
         shellWord(dir) +
         "` (the edited file is kept beside it), then grow the campaign with `foldfarm campaign "
         "extend`, take changed input files with `foldfarm campaign accept-inputs`, or make a new "
         "campaign";
}

// What D/spec.json (`spec`) is against the journal's copy of it (meta frozen_spec), which every
// change of the campaign (`campaign extend`, `campaign accept-inputs`) writes in its journal
// transaction, its commit point, with the spec before it (meta frozen_spec_before), and only
// then to spec.json.
struct SpecAgainstJournal {
  enum class Kind { kSame, kBehind, kEdited } kind = Kind::kSame;
  std::optional<CampaignSpec> copy;  // kBehind: the campaign's spec
  std::string text;                  // kBehind: its text, for spec.json
  bool settings_only = false;        // kBehind: the change was of run settings alone
  std::string edit;                  // kEdited: "'<key>' = <file's> differs ... (<copy's>)"
};

SpecAgainstJournal specAgainstJournal(const std::string& dir, CampaignJournal& j,
                                      const CampaignSpec& spec, int journal_tasks) {
  SpecAgainstJournal r;
  const std::string text = j.meta(kFrozenSpecMeta);
  std::optional<CampaignSpec> copy = journalSpecCopy(text, dir);
  const json file = spec.toJson();
  if (!copy) {
    // A journal made before it kept a copy: the task count alone tells.
    if (journal_tasks != spec.numTasks())
      throw Error(dir + "/" + kJournalFile + ": holds " + std::to_string(journal_tasks) +
                  " tasks where " + dir + "/spec.json has " + std::to_string(spec.numTasks()) +
                  "; the task results are on disk: rebuild the journal with `foldfarm campaign "
                  "repair " +
                  shellWord(dir) + "`");
    return r;
  }
  const json committed = copy->toJson();
  if (committed == file) return r;
  const std::optional<CampaignSpec> before = journalSpecCopy(j.meta(kFrozenSpecBeforeMeta), dir);
  if (before && before->toJson() == file && copy->numTasks() == journal_tasks) {
    r.kind = SpecAgainstJournal::Kind::kBehind;
    // `extend --spec` of the time limit or the retry policy alone: no result changed.
    json a = file, b = committed;
    for (const char* k : kRunSettingKeys) {
      a.erase(k);
      b.erase(k);
    }
    r.settings_only = a == b;
    r.copy = std::move(copy);
    r.text = text;
    return r;
  }
  r.kind = SpecAgainstJournal::Kind::kEdited;
  // Every edit, up to a few (a tool that rewrites the file may change more than the user did:
  // jq 1.6 rounds the recorded times, integers of 19 digits, to doubles).
  const std::vector<JsonKeys> edits = jsonDifferences(committed, file, 4);
  const auto edit = [&](const JsonKeys& at) {
    return "'" + jsonKeysText(at) + "' = " + shortJsonText(jsonAt(file, at));
  };
  if (edits.size() == 1) {
    r.edit = edit(edits.front()) + " differs from the campaign's frozen spec (" +
             shortJsonText(jsonAt(committed, edits.front())) + ", its copy in " + dir + "/" +
             kJournalFile + ")";
  } else {
    for (const JsonKeys& at : edits)
      r.edit += (r.edit.empty() ? "" : ", ") + edit(at) +
                " (frozen: " + shortJsonText(jsonAt(committed, at)) + ")";
    r.edit += (edits.size() == 4 ? ", … differ" : " differ") +
              std::string(" from the campaign's frozen spec (its copy in ") + dir + "/" +
              kJournalFile + ")";
  }
  return r;
}

// A change (`campaign extend`, `accept-inputs`) stopped after its commit point: finished. The
// aggregation's outputs, which the change made stale, are moved aside unless an aggregation is
// running now (it reads the campaign as changed) or the change was of run settings alone (no
// result changed); then spec.json is written.
void finishInterruptedChange(const std::string& dir, const SpecAgainstJournal& state) {
  std::string moved;
  if (!state.settings_only) {
    try {
      const Fd outputs = lockCampaignOutputs(dir, "a command finishing `campaign extend`");
      SupersededOutputs aside(dir);
      if (aside.moveAggregate()) moved = aside.path();
      aside.recordUse();
    } catch (const InputError& e) {
      logInfo("{}: {}: its outputs stay where they are", dir, e.what());
    }
  }
  writeFileAtomic(dir + "/spec.json", state.text);
  logInfo(
      "{}: finished an interrupted `campaign extend` or `accept-inputs`: spec.json now holds its "
      "{} tasks{}",
      dir, state.copy->numTasks(),
      moved.empty() ? std::string() : "; the stale aggregate was moved to " + moved);
}

// A task_result.json as the journal ingests it, for task `index` running `attempt`.
Completion completionOf(const TaskResult& r, int index, int attempt) {
  Completion c;
  c.index = index;
  c.attempt = attempt;
  c.status = r.status;
  c.reason = r.reason;
  c.host = r.host;
  c.slot = r.slot;
  c.started_at = r.started_at;
  c.finished_at = r.finished_at;
  c.result = r.result;
  return c;
}

}  // namespace

CampaignSpec loadFrozenSpec(const std::string& dir) {
  std::string path = dir + "/spec.json";
  // Written once, by `campaign init`, and kept in the journal too: damage here is not the
  // user's to fix by hand.
  const std::string restore = "restore it with `foldfarm campaign repair " + shellWord(dir) +
                              "` (the journal keeps a copy) or from a copy of the campaign "
                              "directory";
  if (!pathExists(path)) {
    if (pathExists(dir + "/" + kJournalFile))
      throw InputError(path + ": missing: the campaign's frozen spec is lost; " + restore);
    throw InputError(dir +
                     ": not a campaign directory (no spec.json); create one with "
                     "`foldfarm campaign init SPEC --dir D`");
  }
  const json j = readJsonFile(path, "the campaign's frozen spec is damaged: " + restore);
  auto slash = path.rfind('/');
  return parseCampaignSpec(j, path, path.substr(0, slash), /*require_inputs=*/false);
}

json TaskResult::toJson() const {
  return json{{"task", task_id},
              {"attempt", attempt},
              {"status", status},
              {"reason", reason},
              {"host", host},
              {"slot", slot},
              {"started_at", started_at},
              {"finished_at", finished_at},
              {"result", result}};
}

TaskResult TaskResult::fromJson(const json& j) {
  try {
    TaskResult r;
    r.task_id = j.at("task").get<std::string>();
    r.attempt = j.at("attempt").get<int>();
    r.status = j.at("status").get<int>();
    r.reason = j.value("reason", "");
    r.host = j.value("host", "");
    r.slot = j.value("slot", -1);
    r.started_at = j.value("started_at", 0.0);
    r.finished_at = j.value("finished_at", 0.0);
    r.result = j.contains("result") ? j["result"] : json();
    return r;
  } catch (const json::exception& e) {
    throw InputError("task_result.json: missing or ill-typed field (" + jsonErrorReason(e) + ")");
  }
}

std::optional<TaskResult> readTaskResult(const std::string& path) {
  if (!pathExists(path)) return std::nullopt;
  // Every caller says what happens then (the task runs again, or the file is ignored).
  const json j = readJsonFile(path, "");
  try {
    return TaskResult::fromJson(j);
  } catch (const InputError& e) {
    throw InputError(path + ": " + e.what());
  }
}

void writeTaskResult(const std::string& path, const TaskResult& r) {
  writeFileAtomic(path, r.toJson().dump() + "\n");
}

std::string utcStamp() {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &utc);
  return stamp;
}

Campaign::Campaign(std::string dir, CampaignSpec spec, CampaignJournal journal, Fd lock)
    : dir_(std::move(dir)),
      spec_(std::move(spec)),
      journal_(std::move(journal)),
      lock_(std::move(lock)) {
  struct stat st {};
  if (::stat((dir_ + "/" + kJournalFile).c_str(), &st) == 0) {
    journal_dev_ = static_cast<unsigned long long>(st.st_dev);
    journal_ino_ = static_cast<unsigned long long>(st.st_ino);
  }
}

void Campaign::requireJournalInPlace() const {
  const std::string path = dir_ + "/" + kJournalFile;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 &&
      static_cast<unsigned long long>(st.st_dev) == journal_dev_ &&
      static_cast<unsigned long long>(st.st_ino) == journal_ino_)
    return;
  throw Error(path +
              ": the journal this run recorded in is no longer there (the campaign directory was "
              "moved or renamed, or the journal deleted or replaced, while the run went on): "
              "tasks may have written their outputs under the old path; run `foldfarm campaign "
              "repair <its path now> --force` (its journal then agrees with the task results "
              "on disk), then `foldfarm campaign resume <its path now>`");
}

std::string taskDirOf(const std::string& campaign_dir, const std::string& task_id) {
  return campaign_dir + "/tasks/" + task_id;
}

std::string Campaign::taskDir(const std::string& task_id) const {
  return taskDirOf(dir_, task_id);
}
std::string Campaign::resultPath(const std::string& task_id) const {
  return taskDir(task_id) + "/" + kTaskResultFile;
}

SupersededOutputs::SupersededOutputs(std::string campaign_dir)
    : dir_(std::move(campaign_dir)),
      aside_(dir_ + "/superseded/" + utcStamp() + "-" + std::to_string(::getpid())) {}

void SupersededOutputs::move(const std::string& from, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // A first move that fails leaves no D/superseded/<time>-<pid>/ behind (a spec copy beside
  // nothing it was made under); later ones keep what moved before them.
  const bool first = moved_to_.empty();
  try {
    if (first) {
      fs::create_directories(dir_ + "/superseded", ec);
      if (ec) throw Error(dir_ + "/superseded: cannot create the directory: " + ec.message());
      // A name of its own: two sets made by one process in one second (a command that first
      // finishes an interrupted extend, then moves tasks) would share <time>-<pid>.
      const std::string base = aside_;
      for (int k = 2; !fs::create_directory(aside_, ec); ++k) {
        if (ec || k > 1000)
          throw Error(aside_ + ": cannot create the directory: " +
                      (ec ? ec.message() : std::string("it exists")));
        aside_ = base + "-" + std::to_string(k);
      }
      fs::copy_file(dir_ + "/spec.json", aside_ + "/spec.json", ec);
      if (ec) throw Error(aside_ + "/spec.json: cannot copy the campaign's spec: " + ec.message());
    }
    const std::string to = aside_ + "/" + name;
    fs::create_directories(fs::path(to).parent_path(), ec);
    if (ec) throw Error(to + ": cannot create its directory: " + ec.message());
    const DiskUse use = measureDiskUse(from);
    renameDurable(from, to);
    moved_to_ = aside_;
    moved_bytes_ += use.bytes;
    moved_files_ += use.files;
  } catch (...) {
    if (first) fs::remove_all(aside_, ec);  // best effort: the error says what failed
    throw;
  }
}

void SupersededOutputs::recordUse() noexcept {
  if (moved_to_.empty()) return;
  try {
    // With the set's own entries, as a walk of it counts them: itself, its spec copy, the
    // directory the tasks' moves made, and the record (a block).
    DiskUse use{moved_bytes_, moved_files_};
    for (const std::string& own : {aside_, aside_ + "/spec.json", aside_ + "/tasks"}) {
      struct stat st {};
      if (::lstat(own.c_str(), &st) != 0) continue;
      use.files += 1;
      use.bytes += 512.0 * static_cast<double>(st.st_blocks);
    }
    use.files += 1;
    use.bytes += 4096;
    writeSupersededUse(moved_to_, use);
  } catch (const std::exception& e) {
    logWarn("{}: what it holds is not recorded ({}): `campaign status` measures it instead",
            moved_to_, e.what());
  }
}

bool aggregateHoldsOutputs(const std::string& campaign_dir) {
  std::error_code ec;
  const std::string path = campaign_dir + "/aggregate";
  return std::filesystem::is_directory(path, ec) && !std::filesystem::is_empty(path, ec);
}

namespace {

// Eleven tries over half a second: `campaign status` takes the outputs lock shared for an
// instant to see whether it is held.
constexpr int kOutputsLockTries = 11;

// What the holder of D/aggregate.lock (`lock`, held elsewhere) does: a reader (a shared lock,
// readCampaignOutputs, which writes nothing into the file) as this host's /proc/locks names
// it; else what the holder wrote there once it held it, or its pid in the instant before.
std::string outputsLockHolder(const std::string& path, int lock) {
  bool shared = false;
  const long pid = flockHolder(lock, &shared);
  const std::string pid_host =
      pid > 0 ? "pid " + std::to_string(pid) + " on " + hostName() : std::string();
  // A reader (readCampaignOutputs): `foldfarm report` or `campaign aggregate --out`, told
  // apart by the holder's command line where it is a process of this host; a reader writes no
  // holder line (the file's is the last writer's).
  if (shared) {
    std::string who = "a reader (`foldfarm report` or `foldfarm campaign aggregate --out`)";
    if (pid > 0) {
      std::string argv;
      try {
        argv = readFile("/proc/" + std::to_string(pid) + "/cmdline");
      } catch (const std::exception&) {
      }
      std::vector<std::string> args;
      for (size_t at = 0; at < argv.size();) {
        const size_t end = std::min(argv.find('\0', at), argv.size());
        args.push_back(argv.substr(at, end - at));
        at = end + 1;
      }
      const auto has = [&](const char* word) {
        return std::find(args.begin(), args.end(), word) != args.end();
      };
      if (has("report") && !has("aggregate"))
        who = "`foldfarm report`";
      else if (has("campaign") && has("aggregate"))
        who = "`foldfarm campaign aggregate --out`";
    }
    return who + " (" + (pid > 0 ? pid_host + ", " : "") + "reading them)";
  }
  const std::string holder = holderLine(path);
  if (!holder.empty()) return holder;
  return "another foldfarm process" + (pid > 0 ? " (" + pid_host + ")" : std::string());
}

// "D: <holder> is using this campaign's outputs (D/aggregate.lock is locked); wait for it or
// stop it, then run <doing> again (it changed nothing)".
InputError outputsLockRefusal(const std::string& campaign_dir, const std::string& path, int refused,
                              const std::string& doing) {
  return InputError(campaign_dir + ": " + outputsLockHolder(path, refused) +
                    " is using this campaign's outputs (" + path +
                    " is locked); wait for it or stop it, then run " + doing +
                    " again (it changed nothing)");
}

}  // namespace

Fd lockCampaignOutputs(const std::string& campaign_dir, const std::string& doing) {
  const std::string path = campaign_dir + "/" + kOutputsLockFile;
  Fd refused;
  std::optional<Fd> lock = lockFileNamingHolder(
      path, doing + " (pid " + std::to_string(::getpid()) + " on " + hostName() + ")\n",
      kOutputsLockTries, refused);
  if (!lock) throw outputsLockRefusal(campaign_dir, path, refused.get(), doing);
  return std::move(*lock);
}

Fd readCampaignOutputs(const std::string& campaign_dir, const std::string& doing) {
  const std::string path = campaign_dir + "/" + kOutputsLockFile;
  Fd lock(::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, kNewFileMode));
  if (!lock.valid()) {
    const int err = errno;
    if (err == EACCES || err == EROFS || err == EPERM) {
      logInfo("{}: cannot open ({}): reading the campaign's outputs without its lock", path,
              errnoMessage(err));
      return Fd();
    }
    throw Error(path + ": cannot open: " + errnoMessage(err));
  }
  // As many tries as lockCampaignOutputs makes: `campaign status` glances at it too.
  if (!tryFlock(lock.get(), LOCK_SH, path, kOutputsLockTries))
    throw outputsLockRefusal(campaign_dir, path, lock.get(), doing);
  return lock;
}

std::string campaignOrchestrator(const std::string& campaign_dir) {
  const std::string path = campaign_dir + "/orchestrator.lock";
  const Fd lock(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  // Read from this host's /proc/locks, not by taking the lock: a look that held it for an
  // instant would refuse a run starting then (it tries once).
  if (!lock.valid() || flockHolder(lock.get()) <= 0) return "";
  const std::string holder = holderLine(path);
  return holder.empty() ? "a process on " + hostName() : holder;
}

std::string campaignLastOrchestrator(const std::string& campaign_dir) {
  return holderLine(campaign_dir + "/orchestrator.lock");
}

std::string campaignOutputsUser(const std::string& campaign_dir) {
  const std::string path = campaign_dir + "/" + kOutputsLockFile;
  const Fd lock(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!lock.valid()) return "";  // never locked (or not readable: nothing to say)
  // Free, or held by readers only: released when closed.
  if (::flock(lock.get(), LOCK_SH | LOCK_NB) == 0) return "";
  if (errno != EWOULDBLOCK) return "";
  return outputsLockHolder(path, lock.get());
}

bool SupersededOutputs::moveAggregate() {
  if (!aggregateHoldsOutputs(dir_)) return false;
  move(dir_ + "/aggregate", "aggregate");
  makeDirectory(dir_ + "/aggregate");
  // The page `foldfarm report D` wrote shows those numbers: it goes with them (before: left in
  // place, stale, beside an empty aggregate).
  if (pathExists(dir_ + "/report.html")) move(dir_ + "/report.html", "report.html");
  return true;
}

Campaign Campaign::init(const CampaignSpec& spec_in, const std::string& dir_in) {
  const std::string dir = trimSlashes(dir_in);
  const size_t slash = dir.rfind('/');
  const size_t name_len = dir.size() - (slash == std::string::npos ? 0 : slash + 1);
  if (name_len > 255)
    throw InputError(dir + ": the campaign directory's name is " + std::to_string(name_len) +
                     " bytes long (at most 255 bytes per name): choose a shorter --dir");
  if (pathExists(dir)) {
    if (pathExists(dir + "/spec.json") || pathExists(dir + "/" + kJournalFile))
      throw InputError(dir +
                       ": already exists; choose a new --dir, or continue that campaign "
                       "with `foldfarm campaign resume " +
                       shellWord(dir) + "`");
    throw InputError(dir +
                     ": already exists and is no campaign (a file, or a directory `campaign "
                     "init` did not make); choose a new --dir: init makes it");
  }
  // The journal and the task parameters record paths in JSON, which holds UTF-8 only: a
  // campaign at a path of other bytes could be made but never run (each run failed on it).
  const auto requireUtf8 = [&](const std::string& path, const std::string& what) {
    const std::string absolute = std::filesystem::absolute(path).string();
    if (const size_t at = invalidUtf8At(absolute); at != std::string::npos)
      throw InputError(path + ": " + what + " is not valid UTF-8 (byte " + std::to_string(at) +
                       " of " + absolute +
                       "); the campaign records its paths in JSON: move it, or the directories "
                       "above it, to names in UTF-8");
  };
  requireUtf8(dir, "the campaign directory's path");
  for (const auto& [key, path] : spec_in.inputs)
    requireUtf8(path, "the path of input '" + key + "'");
  // Its parent must exist (init makes D alone): said before the inputs are read.
  requireOutputDirectory(dir);
  // What every input is now: the tasks check their files against it before they run.
  CampaignSpec spec = spec_in;
  std::vector<std::string> inputs;
  for (const auto& [key, path] : spec.inputs) inputs.push_back(path);
  for (const Variation& v : spec.variations)
    for (const auto& [key, path] : v.inputs) inputs.push_back(path);
  spec.inputs_at_init = recordInputs(inputs);
  // Made beside D and renamed onto it. A name near NAME_MAX (255 bytes) leaves no room for the
  // suffix: the staging directory takes the name's beginning (the suffix marks it), so a legal
  // name is not refused as "File name too long" (before: a D of 250 bytes could not be made).
  const std::string suffix = ".init." + std::to_string(::getpid());
  std::string tmp = dir + suffix;
  if (name_len + suffix.size() > 255)
    tmp = dir.substr(0, dir.size() - (name_len + suffix.size() - 255)) + suffix;
  removeStaleStagingDirs(dir);
  makeDirectory(tmp);
  // Held while the campaign is staged: a later init that finds this directory left (this one
  // killed) takes the lock and removes it; while this one works it leaves it alone.
  Fd staging_lock;
  try {
    // The lock files with the campaign, of its creator's mode: made later by a reader of
    // another umask (`report` under 022 in a group's campaign), they could lock the group out.
    staging_lock.reset(
        ::open((tmp + "/orchestrator.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, kNewFileMode));
    if (!staging_lock.valid() || ::flock(staging_lock.get(), LOCK_EX | LOCK_NB) != 0)
      throw Error(tmp + "/orchestrator.lock: cannot make and lock it: " + errnoMessage(errno));
    Fd(::open((tmp + "/" + kOutputsLockFile).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC,
              kNewFileMode));
    makeDirectory(tmp + "/tasks");
    makeDirectory(tmp + "/aggregate");
    const std::string spec_text = spec.toJson().dump(2) + "\n";
    writeFileAtomic(tmp + "/spec.json", spec_text);
    // Closed at once: WAL mode's side files are checkpointed into the main file before the
    // rename.
    createJournal(spec, taskDefsOf(spec), tmp + "/" + kJournalFile, spec_text);
    if (::rename(tmp.c_str(), dir.c_str()) != 0) {
      throw Error(dir + ": cannot create the campaign directory: " + errnoMessage(errno));
    }
    // Durable before `init` says it made the campaign (a crash could otherwise lose it).
    fsyncDirectoryOf(dir);
  } catch (...) {
    removeTree(tmp);
    throw;
  }
  staging_lock.reset();  // open() takes the campaign's lock itself
  return open(dir, Access::kWriter);
}

Campaign Campaign::open(const std::string& dir_in, Access access) {
  const std::string dir = trimSlashes(dir_in);
  CampaignSpec spec = loadFrozenSpec(dir);
  Fd lock;
  if (access == Access::kWriter) lock = lockOrchestrator(dir);
  const std::string path = dir + "/" + kJournalFile;
  if (!pathExists(path)) {
    throw Error(path + ": the campaign journal is missing; the task results are on disk: " +
                "rebuild it with `foldfarm campaign repair " + shellWord(dir) + "`");
  }
  try {
    CampaignJournal j =
        access == Access::kWriter ? CampaignJournal::open(path) : CampaignJournal::openToRead(path);
    const SpecAgainstJournal state = specAgainstJournal(dir, j, spec, j.numTasks());
    if (state.kind == SpecAgainstJournal::Kind::kEdited)
      throw InputError(dir + "/spec.json: " + state.edit + editedSpecAdvice(dir));
    if (state.kind == SpecAgainstJournal::Kind::kBehind) {
      if (access == Access::kWriter) finishInterruptedChange(dir, state);
      spec = *state.copy;
    }
    return Campaign(dir, std::move(spec), std::move(j), std::move(lock));
  } catch (const SqliteCorruptError& e) {
    throw Error(path + ": the campaign journal is damaged (" + e.what() +
                "); the task results are on disk: rebuild it with `foldfarm campaign repair " +
                shellWord(dir) + "`");
  }
}

RepairSummary Campaign::repair(const std::string& dir_in, bool force) {
  const std::string dir = trimSlashes(dir_in);
  const std::string path = dir + "/" + kJournalFile;
  if (!pathExists(dir + "/spec.json") && !pathExists(path))
    loadFrozenSpec(dir);  // not a campaign directory: says so (no lock file is made)
  const Fd lock = lockOrchestrator(dir);
  RepairSummary sum;
  // 0. The frozen spec, from the journal's copy when it is damaged or lost.
  CampaignSpec spec = loadOrRestoreFrozenSpec(dir, sum);
  SpecAgainstJournal spec_state;
  std::string committed_text;
  if (!pathExists(path)) {
    sum.problem = "missing";
  } else {
    try {
      CampaignJournal j = CampaignJournal::openAsFound(path);
      sum.problem = j.integrityProblem();
      const int journal_tasks = sum.problem.empty() ? j.numTasks() : 0;
      if (sum.problem.empty()) {
        try {
          spec_state = specAgainstJournal(dir, j, spec, journal_tasks);
          committed_text = j.meta(kFrozenSpecMeta);
        } catch (const Error&) {
          sum.problem = std::to_string(journal_tasks) + " tasks where the spec has " +
                        std::to_string(spec.numTasks());
        }
      }
    } catch (const Error& e) {
      sum.problem = e.what();
    }
  }
  if (spec_state.kind == SpecAgainstJournal::Kind::kBehind) {
    // An interrupted extend or accept-inputs: the journal's copy is the newer.
    finishInterruptedChange(dir, spec_state);
    spec = *spec_state.copy;
    sum.spec_problem =
        "older than the journal (an interrupted `campaign extend` or `accept-inputs`)";
    sum.spec_restored = true;
  } else if (spec_state.kind == SpecAgainstJournal::Kind::kEdited) {
    // Edited by hand: the journal's copy back, the edited file kept beside it.
    const std::string spec_path = dir + "/spec.json";
    const std::string kept = spec_path + ".edited-" + utcStamp() + "-" + std::to_string(::getpid());
    (void)parseJournalSpecCopy(committed_text, dir);  // checked before it replaces anything
    if (::rename(spec_path.c_str(), kept.c_str()) != 0)
      throw Error(spec_path + ": cannot move aside: " + errnoMessage(errno));
    writeFileAtomic(spec_path, committed_text);
    spec = loadFrozenSpec(dir);
    sum.spec_problem = "edited: " + spec_state.edit;
    sum.spec_restored = true;
    sum.spec_damaged_copy = kept;
  }
  // 0b. Inputs copied again with the same bytes, given back the time the campaign's spec
  //     recorded: its own, the journal's copy once an edited spec.json was put aside (before:
  //     the edited file's times, written onto the inputs of every campaign sharing them).
  InputTimesRestored inputs = restoreInputTimes(spec.inputs_at_init);
  sum.inputs_restored = std::move(inputs.restored);
  sum.inputs_changed = std::move(inputs.left);
  if (sum.problem.empty() && !force) return sum;

  // 1. The new journal, beside the old one: every task pending, then the results on disk.
  const std::string rebuilt = path + ".rebuild." + std::to_string(::getpid());
  for (const char* side : {"", "-wal", "-shm"}) ::unlink((rebuilt + side).c_str());
  try {
    const std::vector<TaskDef> defs = taskDefsOf(spec);
    CampaignJournal j = createJournal(spec, defs, rebuilt, readFile(dir + "/spec.json"));
    j.setMeta("rebuilt_from", sum.problem.empty() ? "campaign repair --force" : sum.problem);
    std::vector<Dispatch> dispatches;
    std::vector<Completion> completions;
    for (const TaskDef& t : defs) {
      const std::string task_dir = taskDirOf(dir, t.id);
      std::optional<TaskResult> r;
      try {
        r = readTaskResult(task_dir + "/" + kTaskResultFile);
      } catch (const InputError& e) {
        logWarn("{}; task {} runs again", e.what(), t.id);
        ++sum.unreadable;
      }
      if (r && r->task_id == t.id && r->status == 0) {
        const int attempt = std::max(r->attempt, 1);
        j.setPendingAttempts(t.index, attempt - 1, "");
        Dispatch d;
        d.index = t.index;
        d.host = r->host;
        d.slot = r->slot;
        d.external_id = "journal rebuilt";
        dispatches.push_back(d);
        completions.push_back(completionOf(*r, t.index, attempt));
        ++sum.done;
      } else {
        const int newest = std::max(newestAttempt(task_dir), r ? r->attempt : 0);
        if (newest > 0)
          j.setPendingAttempts(
              t.index, newest,
              "journal rebuilt; attempt " + std::to_string(newest) + " left no successful result");
        ++sum.pending;
      }
    }
    j.markRunning(dispatches);
    j.recordCompletions(completions, spec.retry);
    const std::string problem = j.integrityProblem();
    if (!problem.empty())
      throw Error(rebuilt + ": the rebuilt journal fails its check: " + problem);
  } catch (...) {
    for (const char* side : {"", "-wal", "-shm"}) ::unlink((rebuilt + side).c_str());
    throw;
  }
  // Closed: its write-ahead log is checkpointed into the file and removed.
  fsyncPath(rebuilt);

  // 2. The damaged files aside (side files first: left beside the new journal, SQLite would
  // apply the old log to it), then the new journal into place in one rename.
  if (pathExists(path) || pathExists(path + "-wal")) {
    sum.damaged_copy = dir + "/journal.damaged-" + utcStamp() + "-" + std::to_string(::getpid());
    makeDirectory(sum.damaged_copy);
    for (const char* side : {"-wal", "-shm"}) {
      const std::string from = path + side;
      if (pathExists(from)) renameDurable(from, sum.damaged_copy + "/" + kJournalFile + side);
    }
    if (pathExists(path) &&
        ::link(path.c_str(), (sum.damaged_copy + "/" + kJournalFile).c_str()) != 0)
      throw Error(path + ": cannot keep a copy of the damaged journal in " + sum.damaged_copy +
                  ": " + errnoMessage(errno));
  }
  renameDurable(rebuilt, path);
  sum.rebuilt = true;
  return sum;
}

json RepairSummary::toJson() const {
  return {{"problem", problem},
          {"rebuilt", rebuilt},
          {"damaged_copy", damaged_copy},
          {"done", done},
          {"pending", pending},
          {"unreadable", unreadable},
          {"spec_problem", spec_problem},
          {"spec_restored", spec_restored},
          {"spec_damaged_copy", spec_damaged_copy},
          {"inputs_restored", inputs_restored},
          {"inputs_changed", inputs_changed}};
}

std::vector<int> Campaign::markSubmitted(const std::vector<std::string>& task_ids,
                                         const std::string& external_id, const std::string& host) {
  std::vector<Dispatch> ds;
  for (const auto& id : task_ids) {
    int idx = spec_.indexOf(id);
    if (idx < 0) throw InputError(dir_ + ": no task '" + id + "' in this campaign");
    Dispatch d;
    d.index = idx;
    d.host = host;
    d.external_id = external_id;
    ds.push_back(d);
  }
  journal_.markRunning(ds);
  std::vector<int> attempts;
  for (const auto& d : ds) attempts.push_back(d.attempt);
  return attempts;
}

int Campaign::requeue(const std::vector<std::string>& task_ids, const std::string& reason,
                      int event_exit_code, double not_before) {
  std::vector<int> idx;
  for (const auto& id : task_ids) {
    int i = spec_.indexOf(id);
    if (i < 0) throw InputError(dir_ + ": no task '" + id + "' in this campaign");
    idx.push_back(i);
  }
  return journal_.requeue(idx, reason, event_exit_code, not_before);
}

int Campaign::giveUp(const std::vector<std::string>& task_ids, const std::string& reason) {
  std::vector<int> idx;
  for (const auto& id : task_ids) {
    const int i = spec_.indexOf(id);
    if (i < 0) throw InputError(dir_ + ": no task '" + id + "' in this campaign");
    idx.push_back(i);
  }
  return journal_.giveUp(idx, reason);
}

int Campaign::retry(const std::vector<TaskState>& from) {
  int moved = 0;
  for (TaskState s : from)
    moved += journal_.retry(
        s, s == TaskState::kCancelled ? "retry of a cancelled task requested" : "retry requested");
  return moved;
}

int Campaign::ingestResults() {
  std::vector<Completion> found;
  for (const auto& t : journal_.tasks(TaskState::kRunning)) {
    std::optional<TaskResult> r;
    try {
      r = readTaskResult(resultPath(t.id));
    } catch (const InputError& e) {
      logWarn("ignoring {}", e.what());
      continue;
    }
    if (!r || r->task_id != t.id) continue;
    if (r->attempt != t.attempts)
      continue;  // another attempt's file (matched by number, never by clock)
    found.push_back(completionOf(*r, t.index, t.attempts));
  }
  return journal_.recordCompletions(found, spec_.retry);
}

int Campaign::cancel(const std::string& reason) {
  if (const int ingested = ingestResults(); ingested > 0)
    logInfo("{} task(s) that finished before the cancel taken as they ended", ingested);
  return journal_.cancelUnfinished(reason);
}

int Campaign::recoverAfterCrash() {
  int ingested = ingestResults();
  if (ingested > 0) logInfo("ingested {} result(s) found on disk", ingested);
  std::vector<int> still;
  for (const auto& t : journal_.tasks(TaskState::kRunning)) still.push_back(t.index);
  for (const auto& t : journal_.tasks(TaskState::kInterrupted)) still.push_back(t.index);
  return journal_.requeue(still, "orchestrator restarted");
}

TaskResult runTaskStandalone(const std::string& campaign_dir, const std::string& task_id,
                             int attempt) {
  CampaignSpec spec = loadFrozenSpec(campaign_dir);
  int idx = spec.indexOf(task_id);
  if (idx < 0) {
    throw InputError(campaign_dir + ": no task '" + task_id + "' (ids run from " +
                     spec.idRangeText() + ")");
  }
  TaskDef def = spec.taskDef(idx);
  TaskExecution e;
  e.kind = def.kind;
  e.params = def.params;
  e.task_id = def.id;
  e.task_dir = taskDirOf(campaign_dir, def.id);
  e.attempt = attempt;
  e.always_write_result = true;
  e.lease.wait_s = spec.retry.lease_wait_s;
  e.inputs_at_init = std::move(def.inputs_at_init);
  return executeTask(e);
}

}  // namespace foldfarm::jobs
