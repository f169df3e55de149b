#include "jobs/disk_estimate.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "core/base/atomic_file.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/log.hpp"
#include "core/base/process.hpp"
#include "core/base/text.hpp"
#include "jobs/campaign.hpp"

namespace foldfarm::jobs {

namespace fs = std::filesystem;

DiskUse measureDiskUse(const std::string& path, double max_entries, bool* partial) {
  const auto allocated = [](const std::string& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 ? 512.0 * static_cast<double>(st.st_blocks) : 0.0;
  };
  DiskUse u{allocated(path), 1};
  std::error_code ec;
  fs::recursive_directory_iterator it(path, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (u.files >= max_entries) {
      if (partial) *partial = true;
      return u;
    }
    u.files += 1;
    u.bytes += allocated(it->path().string());
  }
  // A directory it could not read: what it holds is not counted.
  if (ec && ec != std::errc::not_a_directory && partial) *partial = true;
  return u;
}

namespace {

// Done tasks of plan --from measured per set of params: enough for a mean, few enough that a
// campaign of 10^5 done tasks on a parallel file system is not walked whole.
constexpr int kMeasuredPerKey = 50;

// The params of a task that do not change what it leaves on disk: which task it is, its seeds
// and threads.
std::string sizeKey(nlohmann::json params) {
  for (const char* k : {"task_id", "replica", "member", "warm_from_task", "seed", "threads"})
    params.erase(k);
  return params.dump();
}

struct Measured {
  int done = 0;
  DiskUse sum;
};

// The done tasks of `c`, up to kMeasuredPerKey per size key (in the journal's order).
std::map<std::string, Measured> measureDoneTasks(Campaign& c) {
  std::map<std::string, Measured> m;
  c.forEachTask([&](const TaskRecord& t) {
    if (t.state != TaskState::kDone) return;
    const int index = c.spec().indexOf(t.id);
    if (index < 0) return;
    Measured& g = m[sizeKey(c.spec().taskDef(index).params)];
    if (g.done >= kMeasuredPerKey) return;
    const std::string dir = c.taskDir(t.id);
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return;  // a kind without directories (noop)
    const DiskUse u = measureDiskUse(dir);
    ++g.done;
    g.sum.bytes += u.bytes;
    g.sum.files += u.files;
  });
  return m;
}

// What files of these sizes take on disk: a file's last block is half empty on average, and
// a directory takes a block (4 kB on ext4, XFS and Lustre's OSTs alike).
constexpr double kBlockSlackPerFile = 2048;
DiskUse withBlockSlack(DiskUse u) {
  u.bytes += kBlockSlackPerFile * u.files;
  return u;
}

void addAdvice(std::vector<std::string>& advice, const std::string& a) {
  if (!a.empty() && std::find(advice.begin(), advice.end(), a) == advice.end()) advice.push_back(a);
}

std::string groupName(const DiskGroup& g) {
  return g.variation.empty() ? std::string("nominal") : "variation " + g.variation;
}

std::string partText(const DiskPart& p, const std::string& measured_from) {
  if (p.measured_on > 0)
    return "measured: the mean of " + std::to_string(p.measured_on) + " done task(s) of " +
           measured_from + (p.how.empty() ? std::string() : "; " + p.how);
  return p.how;
}

}  // namespace

CampaignDiskEstimate estimateCampaignDisk(const CampaignSpec& spec, Campaign* measured_from,
                                          const std::function<bool(int)>& counted) {
  CampaignDiskEstimate e;
  const TaskKindTraits& traits = taskKindTraits(spec.kind);
  const std::map<std::string, Measured> measured = measured_from != nullptr
                                                       ? measureDoneTasks(*measured_from)
                                                       : std::map<std::string, Measured>{};
  if (measured_from != nullptr) e.measured_from = measured_from->dir();
  // Tasks of the same params but for which task they are take the same room: a campaign of
  // 10^5 tasks has a few of them, each estimated (or looked up) once.
  std::map<std::string, std::optional<DiskUseEstimate>> known;
  std::map<std::string, size_t> group_of;  // variation name -> index in e.groups
  for (int i = 0; i < spec.numTasks(); ++i) {
    if (counted && !counted(i)) continue;
    const Variation* v = spec.variationOf(i);
    const std::string name = v == nullptr ? std::string() : v->name;
    auto [gi, fresh] = group_of.emplace(name, e.groups.size());
    if (fresh) e.groups.push_back(DiskGroup{name, 0, 0, {}});
    DiskGroup& g = e.groups[gi->second];
    ++g.tasks;
    // A kind that estimates nothing, with nothing measured: not known, and its params are not
    // built (every run's start asks this of campaigns of 10^5 noop or command tasks too).
    if (!traits.estimate_task_output && measured.empty()) {
      ++g.unknown;
      continue;
    }
    const TaskDef t = spec.taskDef(i);
    const std::string key = sizeKey(t.params);
    auto hit = known.find(key);
    if (hit == known.end()) {
      std::optional<DiskUseEstimate> one;
      if (traits.estimate_task_output) {
        try {
          one = traits.estimate_task_output(t.params);
        } catch (const std::exception&) {
          one.reset();  // an input not readable yet: the commands that run tasks name it
        }
      }
      hit = known.emplace(key, std::move(one)).first;
    }
    const std::optional<DiskUseEstimate>& estimated = hit->second;
    DiskPart part;
    if (const auto m = measured.find(key); m != measured.end() && m->second.done > 0) {
      part.each = {m->second.sum.bytes / m->second.done, m->second.sum.files / m->second.done};
      part.measured_on = m->second.done;
      // Beside the estimate, which says what the measured tasks are.
      part.how = estimated ? "estimated " + formatBytes(withBlockSlack(estimated->use).bytes) +
                                 ": " + estimated->how
                           : std::string();
    } else if (estimated) {
      part.each = withBlockSlack(estimated->use);
      part.how = estimated->how;
    } else {
      ++g.unknown;
      continue;
    }
    if (estimated) {
      part.running_bytes = estimated->running_bytes;
      addAdvice(e.advice, estimated->advice);
    }
    e.tasks.bytes += part.each.bytes;
    e.tasks.files += part.each.files;
    const auto same = std::find_if(g.parts.begin(), g.parts.end(), [&](const DiskPart& p) {
      return p.how == part.how && p.measured_on == part.measured_on &&
             p.each.bytes == part.each.bytes;
    });
    if (same != g.parts.end()) {
      ++same->tasks;
    } else {
      part.tasks = 1;
      g.parts.push_back(std::move(part));
    }
  }
  for (const DiskGroup& g : e.groups) e.tasks_unknown += g.unknown;
  if (traits.estimate_aggregate_output) {
    try {
      e.aggregate = traits.estimate_aggregate_output(spec);
    } catch (const std::exception&) {
      e.aggregate.reset();
    }
    if (e.aggregate) {
      e.aggregate->use = withBlockSlack(e.aggregate->use);
      addAdvice(e.advice, e.aggregate->advice);
      if (!e.aggregate->warning.empty()) e.warnings.push_back(e.aggregate->warning);
    }
  }
  return e;
}

double CampaignDiskEstimate::runningBytesEach() const {
  double most = 0;
  for (const DiskGroup& g : groups)
    for (const DiskPart& p : g.parts) most = std::max(most, p.running_bytes);
  return most;
}

nlohmann::json CampaignDiskEstimate::toJson() const {
  const DiskUse all = total();
  nlohmann::json gs = nlohmann::json::array();
  for (const DiskGroup& g : groups) {
    nlohmann::json parts = nlohmann::json::array();
    for (const DiskPart& p : g.parts) {
      nlohmann::json j = {{"tasks", p.tasks},
                          {"bytes_each", p.each.bytes},
                          {"files_each", p.each.files},
                          {"running_bytes_each", p.running_bytes},
                          {"how", partText(p, measured_from)}};
      if (p.measured_on > 0) j["measured_on"] = p.measured_on;
      parts.push_back(std::move(j));
    }
    gs.push_back({{"variation", g.variation},
                  {"tasks", g.tasks},
                  {"unknown", g.unknown},
                  {"parts", std::move(parts)}});
  }
  nlohmann::json j = {{"bytes", all.bytes},
                      {"files", all.files},
                      {"tasks", {{"bytes", tasks.bytes}, {"files", tasks.files}}},
                      {"tasks_unknown", tasks_unknown},
                      {"running_bytes_each", runningBytesEach()},
                      {"groups", std::move(gs)},
                      {"advice", advice},
                      {"warnings", warnings}};
  if (aggregate)
    j["aggregate"] = {
        {"bytes", aggregate->use.bytes}, {"files", aggregate->use.files}, {"how", aggregate->how}};
  return j;
}

std::optional<FreeSpace> freeSpaceAt(const std::string& path) {
  struct statvfs s {};
  if (::statvfs(path.c_str(), &s) != 0) return std::nullopt;
  FreeSpace f;
  f.bytes = static_cast<double>(s.f_bavail) * static_cast<double>(s.f_frsize);
  f.files = static_cast<double>(s.f_favail);
  f.files_known = s.f_files > 0;  // btrfs and some network file systems report no inodes
  // A user on a shared scratch file system meets a quota long before the file system is full.
  if (const std::optional<QuotaRoom> q = lustreQuotaRoom(path)) {
    if (q->bytes >= 0 && q->bytes < f.bytes) {
      f.bytes = q->bytes;
      f.bytes_by = q->bytes_by;
    }
    if (q->files >= 0 && (!f.files_known || q->files < f.files)) {
      f.files = q->files;
      f.files_known = true;
      f.files_by = q->files_by;
    }
  }
  return f;
}

namespace {

// A value of `lfs quota`: "123", "123*" (over its limit), "[123]" (inaccurate: an OST did not
// answer), in kbytes or files; nullopt for anything else ("-", a grace time, a header word).
std::optional<double> lfsValue(std::string w) {
  // "123**": inaccurate (a remote error) and over its limit.
  while (!w.empty() && w.back() == '*') w.pop_back();
  if (w.size() >= 2 && w.front() == '[' && w.back() == ']') w = w.substr(1, w.size() - 2);
  if (w.empty() || w.size() > 19 || w.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stod(w);
}

// What the limits leave (0: none): < 0 for no limit. The soft one where it is set: writes
// are refused there once its grace (days) has run out, and a campaign runs for days.
double roomUnder(double used, double soft, double hard) {
  const double limit = soft > 0 && (hard <= 0 || soft < hard) ? soft : hard;
  return limit > 0 ? std::max(0.0, limit - used) : -1;
}

}  // namespace

std::optional<QuotaRoom> parseLfsQuota(const std::string& text, const std::string& path) {
  // lfs prints the path it was given as given (spaces and all), right-aligned in 15
  // characters or on a line of its own: taken off whole, not split into words.
  std::string rest = text;
  rest.erase(0, std::min(rest.size(), rest.find_first_not_of(" \t\n")));
  if (!path.empty() && rest.rfind(path, 0) == 0)
    rest = "- " + rest.substr(path.size());  // the mount's word
  std::istringstream in(rest);
  std::vector<std::string> w;
  for (std::string word; w.size() < 9 && in >> word;) w.push_back(word);
  if (w.size() < 9) return std::nullopt;
  double v[8] = {};
  for (int k : {1, 2, 3, 5, 6, 7}) {
    const std::optional<double> x = lfsValue(w[static_cast<size_t>(k)]);
    if (!x) return std::nullopt;
    v[k] = *x;
  }
  QuotaRoom r;
  const double kbytes = roomUnder(v[1], v[2], v[3]);
  r.bytes = kbytes < 0 ? -1 : 1024 * kbytes;
  r.files = roomUnder(v[5], v[6], v[7]);
  return r;
}

std::optional<QuotaRoom> lustreQuotaRoom(const std::string& path,
                                         std::chrono::milliseconds timeout) {
  const std::string lfs = findProgram("lfs");
  if (lfs.empty()) return std::nullopt;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  // Files made in a set-group-ID directory take its group, else this process's.
  const unsigned gid = S_ISDIR(st.st_mode) && (st.st_mode & S_ISGID) != 0
                           ? static_cast<unsigned>(st.st_gid)
                           : static_cast<unsigned>(::getegid());
  const std::pair<const char*, unsigned> asks[] = {{"-u", static_cast<unsigned>(::geteuid())},
                                                   {"-g", gid}};
  QuotaRoom room;
  bool limited = false;
  for (const auto& [flag, id] : asks) {
    const std::vector<std::string> argv = {lfs, "quota", "-q", flag, std::to_string(id), path};
    ProcessOptions options;
    options.timeout = timeout;
    ProcessResult r;
    try {
      r = runProcess(argv, options);
    } catch (const std::exception& e) {
      logDebug("{}: {}", path, e.what());
      return std::nullopt;
    }
    if (r.timedOut) {
      logInfo("{}: `lfs quota` did not answer within {} s: its quotas are not checked", path,
              timeout.count() / 1000.0);
      return std::nullopt;
    }
    // An inaccurate answer (an OST down) exits non-zero but says what it has.
    const std::optional<QuotaRoom> q = parseLfsQuota(r.out, path);
    if (!q) {
      logDebug("{}: {}", path, r.describeFailure());
      continue;
    }
    const std::string by = std::string("the Lustre quota of ") +
                           (flag[1] == 'u' ? "user " : "group ") + std::to_string(id) +
                           " (`lfs quota " + flag + " " + std::to_string(id) + " " +
                           shellWord(path) + "`)";
    if (q->bytes >= 0 && (room.bytes < 0 || q->bytes < room.bytes)) {
      room.bytes = q->bytes;
      room.bytes_by = by;
      limited = true;
    }
    if (q->files >= 0 && (room.files < 0 || q->files < room.files)) {
      room.files = q->files;
      room.files_by = by;
      limited = true;
    }
  }
  if (!limited) return std::nullopt;
  return room;
}

std::string formatBytes(double bytes) {
  static const char* const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (bytes >= 999.5 && u < 6) {
    bytes /= 1000;
    ++u;
  }
  if (u == 0) return fmt::format("{:.0f} B", bytes);
  return fmt::format(bytes < 9.95 ? "{:.1f} {}" : "{:.0f} {}", bytes, units[u]);
}

std::string formatCount(double n) {
  std::string digits = fmt::format("{:.0f}", std::max(0.0, std::round(n)));
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(i, ",");
  return digits;
}

std::string describeDiskEstimate(const CampaignDiskEstimate& disk, int slots) {
  const DiskUse all = disk.total();
  if (all.files == 0 && !disk.aggregate) {
    std::string why = "  disk: not estimated";
    if (!disk.groups.empty())
      why += " (" + formatCount(disk.tasks_unknown) + " task(s) of a kind without an estimate, " +
             "or whose inputs are not there yet)";
    return why + "\n";
  }
  std::string text =
      "  disk: about " + formatBytes(all.bytes) + " in " + formatCount(all.files) +
      " files once every task is done and aggregated" +
      (disk.tasks_unknown > 0 ? " (" + formatCount(disk.tasks_unknown) + " task(s) not estimated)"
                              : std::string()) +
      "\n";
  for (const DiskGroup& g : disk.groups) {
    std::string line = "    " + groupName(g) + ": " + formatCount(g.tasks) + " task(s)";
    if (g.parts.size() == 1 && g.unknown == 0) {
      const DiskPart& p = g.parts.front();
      text += line + ", " + formatBytes(p.each.bytes) + " each (" +
              partText(p, disk.measured_from) + ")\n";
      continue;
    }
    text += line + "\n";
    for (const DiskPart& p : g.parts)
      text += "      " + formatCount(p.tasks) + " x " + formatBytes(p.each.bytes) + " (" +
              partText(p, disk.measured_from) + ")\n";
    if (g.unknown > 0) text += "      " + formatCount(g.unknown) + " not estimated\n";
  }
  if (disk.aggregate)
    text += "    aggregate: " + formatBytes(disk.aggregate->use.bytes) + " (" +
            disk.aggregate->how + ")\n";
  if (const double running = disk.runningBytesEach(); running > 0) {
    int tasks = 0;
    for (const DiskGroup& g : disk.groups) tasks += g.tasks;
    const int at_once = std::clamp(slots, 1, std::max(tasks, 1));
    text += "    while tasks run: each running task's state/ adds up to about " +
            formatBytes(running) + " (" + formatCount(at_once) +
            " at once: " + formatBytes(running * at_once) + ")\n";
  }
  for (const std::string& w : disk.warnings) text += "    warning: " + w + "\n";
  for (const std::string& a : disk.advice) text += "    smaller: " + a + "\n";
  return text;
}

std::string diskShortfall(const CampaignDiskEstimate& estimate, const FreeSpace& free,
                          const std::string& dir, const std::string& whose) {
  const DiskUse need = estimate.total();
  std::vector<std::string> short_of;
  if (need.bytes > free.bytes)
    short_of.push_back(
        "about " + formatBytes(need.bytes) +
        (free.bytes_by.empty()
             ? " where the file system of " + dir + " has " + formatBytes(free.bytes) + " free"
             : " where " + free.bytes_by + " leaves " + formatBytes(free.bytes)));
  if (free.files_known && need.files > free.files)
    short_of.push_back("about " + formatCount(need.files) + " files where " +
                       (free.files_by.empty()
                            ? "it has " + formatCount(free.files) + " free inodes"
                            : free.files_by + " leaves " + formatCount(free.files)));
  if (short_of.empty()) return {};
  std::string what = short_of.front();
  if (short_of.size() > 1) what += ", and " + short_of[1];
  std::string advice;
  for (const std::string& a : estimate.advice) advice += (advice.empty() ? "" : "; ") + a;
  return "the outputs of " + whose + " will take " + what +
         (estimate.tasks_unknown > 0
              ? " (without the " + formatCount(estimate.tasks_unknown) + " task(s) not estimated)"
              : std::string()) +
         ": tasks will fail once it is full; free space or raise the quota first" +
         (advice.empty() ? std::string() : ", or make the outputs smaller (" + advice + ")") +
         "; `foldfarm campaign plan " + shellWord(dir + "/spec.json") +
         " --gpus 1 --task-minutes 1` says what takes it";
}

std::optional<DiskUse> readSupersededUse(const std::string& set_dir) {
  const std::string path = set_dir + "/" + kSupersededUseFile;
  if (!statPath(path).exists) return std::nullopt;
  try {
    const nlohmann::json j = nlohmann::json::parse(readFile(path));
    return DiskUse{j.at("bytes").get<double>(), j.at("files").get<double>()};
  } catch (const std::exception& e) {
    logDebug("{}: {}", path, e.what());
    return std::nullopt;
  }
}

void writeSupersededUse(const std::string& set_dir, const DiskUse& use) {
  writeFileAtomic(set_dir + "/" + kSupersededUseFile,
                  nlohmann::json{{"bytes", use.bytes}, {"files", use.files}}.dump() + "\n");
}

std::optional<SupersededUse> supersededUse(const std::string& campaign_dir, double max_entries) {
  const std::string root = campaign_dir + "/superseded";
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) names.push_back(it->path().filename().string());
  if (names.empty()) return std::nullopt;
  // <UTC time>-<pid>: in time order when sorted.
  std::sort(names.begin(), names.end());
  SupersededUse s;
  s.sets = static_cast<int>(names.size());
  s.oldest = names.front();
  s.newest = names.back();
  for (const std::string& name : names) {
    // What the command that made the set recorded (a walk of 10^5 task directories on a
    // parallel file system at every status is minutes), else (a set of an older build, or of
    // a command that did not finish) a walk.
    if (const std::optional<DiskUse> recorded = readSupersededUse(root + "/" + name)) {
      s.use.bytes += recorded->bytes;
      s.use.files += recorded->files;
      continue;
    }
    if (s.partial) continue;
    const DiskUse u = measureDiskUse(root + "/" + name, max_entries - s.use.files, &s.partial);
    s.use.bytes += u.bytes;
    s.use.files += u.files;
  }
  return s;
}

std::string tasksLeftShortfall(const CampaignSpec& spec, const std::vector<char>& left,
                               const std::string& dir, const std::string& when) {
  const CampaignDiskEstimate e = estimateCampaignDisk(spec, nullptr, [&](int i) {
    return static_cast<size_t>(i) < left.size() && left[static_cast<size_t>(i)] != 0;
  });
  const std::optional<FreeSpace> free = freeSpaceAt(dir);
  if (!free) return {};
  const auto n = std::count(left.begin(), left.end(), static_cast<char>(1));
  return diskShortfall(e, *free, dir,
                       "its " + formatCount(static_cast<double>(n)) + " task(s) not done yet" +
                           when + " and aggregation");
}

std::string outputsShortfall(const std::string& dir) {
  try {
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    // The states alone (one light query: every run's start asks this; the records with their
    // results are hundreds of MB at 400,000 tasks).
    const std::vector<TaskState> states = c.journal().states();
    std::vector<char> left(states.size(), 0);
    for (size_t i = 0; i < states.size(); ++i) left[i] = states[i] != TaskState::kDone;
    return tasksLeftShortfall(c.spec(), left, c.dir());
  } catch (const std::exception& e) {
    logDebug("campaign {}: its outputs are not sized: {}", dir, e.what());
    return {};
  }
}

void warnIfOutputsDoNotFit(const std::string& dir) {
  if (const std::string shortfall = outputsShortfall(dir); !shortfall.empty())
    logWarn("campaign {}: {}", dir, shortfall);
}

}  // namespace foldfarm::jobs
