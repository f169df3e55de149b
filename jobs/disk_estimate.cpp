#include "jobs/disk_estimate.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "core/base/log.hpp"
#include "core/base/text.hpp"
#include "jobs/campaign.hpp"

namespace foldfarm::jobs {

namespace fs = std::filesystem;

namespace {

// Done tasks of plan --from measured per set of params: enough for a mean, few enough that a
// campaign of 10^5 done tasks on a parallel file system is not walked whole.
constexpr int kMeasuredPerKey = 50;

// What a task directory takes: the blocks allocated to it and to everything under it (as du
// counts them: a small file takes a whole block), and its entries with itself. Stops once
// `max_entries` are counted (then *partial, when given, is set).
DiskUse measureTree(const std::string& dir,
                    double max_entries = std::numeric_limits<double>::infinity(),
                    bool* partial = nullptr) {
  const auto allocated = [](const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 ? 512.0 * static_cast<double>(st.st_blocks) : 0.0;
  };
  DiskUse u{allocated(dir), 1};
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (u.files >= max_entries) {
      if (partial) *partial = true;
      break;
    }
    u.files += 1;
    u.bytes += allocated(it->path().string());
  }
  return u;
}

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
    const DiskUse u = measureTree(dir);
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
                      {"advice", advice}};
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
  return f;
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
  for (const std::string& a : disk.advice) text += "    smaller: " + a + "\n";
  return text;
}

std::string diskShortfall(const CampaignDiskEstimate& estimate, const FreeSpace& free,
                          const std::string& dir, const std::string& whose) {
  const DiskUse need = estimate.total();
  std::vector<std::string> short_of;
  if (need.bytes > free.bytes)
    short_of.push_back("about " + formatBytes(need.bytes) + " where the file system of " + dir +
                       " has " + formatBytes(free.bytes) + " free");
  if (free.files_known && need.files > free.files)
    short_of.push_back("about " + formatCount(need.files) + " files where it has " +
                       formatCount(free.files) + " free inodes");
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
    const DiskUse u = measureTree(root + "/" + name, max_entries - s.use.files, &s.partial);
    s.use.bytes += u.bytes;
    s.use.files += u.files;
    if (s.partial) break;
  }
  return s;
}

void warnIfOutputsDoNotFit(const std::string& dir) {
  try {
    Campaign c = Campaign::open(dir, Campaign::Access::kReadOnly);
    std::vector<bool> left(static_cast<size_t>(c.spec().numTasks()), false);
    int n = 0;
    // Streamed: every run's start reads this (a campaign's tasks read whole, with their
    // results, are hundreds of MB at 400,000 tasks).
    c.forEachTask([&](const TaskRecord& t) {
      const int index = c.spec().indexOf(t.id);
      if (index < 0 || t.state == TaskState::kDone) return;
      left[static_cast<size_t>(index)] = true;
      ++n;
    });
    const CampaignDiskEstimate e = estimateCampaignDisk(
        c.spec(), nullptr, [&](int i) { return left[static_cast<size_t>(i)]; });
    const std::optional<FreeSpace> free = freeSpaceAt(c.dir());
    if (!free) return;
    const std::string whose = "its " + formatCount(n) + " task(s) not done yet and aggregation";
    if (const std::string shortfall = diskShortfall(e, *free, c.dir(), whose); !shortfall.empty())
      logWarn("campaign {}: {}", c.dir(), shortfall);
  } catch (const std::exception& e) {
    logDebug("campaign {}: its outputs are not sized: {}", dir, e.what());
  }
}

}  // namespace foldfarm::jobs
