#pragma once
// What a campaign will leave on disk, known before anything runs: `campaign plan` prints it,
// and `campaign init` says it and warns when the file system it is made on has less free. A
// finished task's directory and the aggregation's outputs are estimated by the task kind from
// the spec and the shapes of its inputs (TaskKindTraits::estimate_task_output,
// estimate_aggregate_output), or measured on the done tasks of a campaign (plan --from) whose
// tasks ran with the same params.
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobs/campaign_spec.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::jobs {

class Campaign;

// Bytes are what files take on disk (their blocks, as du counts them): a kind's estimate of
// their sizes plus half a block per file; a measured task's allocated blocks.
//
// Tasks of one group (the nominal, or one variation) of one estimate: the same size each.
struct DiskPart {
  int tasks = 0;
  DiskUse each;
  double running_bytes = 0;  // what one of them adds while it runs (its state)
  std::string how;
  int measured_on = 0;  // done tasks of plan --from it was measured on; 0: estimated
};

struct DiskGroup {
  std::string variation;  // "" for the nominal
  int tasks = 0;
  int unknown = 0;  // not estimated: the kind has no estimate, or an input is not there yet
  std::vector<DiskPart> parts;
};

struct CampaignDiskEstimate {
  std::vector<DiskGroup> groups;
  DiskUse tasks;  // every task's directory once finished (the known ones)
  int tasks_unknown = 0;
  std::optional<DiskUseEstimate> aggregate;  // D/aggregate; nullopt: not known
  std::string measured_from;                 // plan --from's directory, or ""
  // How to make the outputs smaller (the kind's advice; each once).
  std::vector<std::string> advice;
  // What to know before they are made (DiskUseEstimate::warning: the aggregation's memory).
  std::vector<std::string> warnings;

  DiskUse total() const {
    return {tasks.bytes + (aggregate ? aggregate->use.bytes : 0),
            tasks.files + (aggregate ? aggregate->use.files : 0)};
  }
  // The most one running task adds (its state) beyond its finished directory.
  double runningBytesEach() const;
  nlohmann::json toJson() const;
};

// The estimate of `spec`'s campaign. With `measured_from`, the tasks whose params (but for
// which task they are) are those of done tasks there take the mean directory of up to 50 of
// them instead of the kind's estimate. Never throws for an input that is not there or that
// the kind cannot size: those tasks are not known.
// `counted` (when set) says which tasks, by index, are counted: the others are left out (done
// tasks, whose outputs are on disk already).
CampaignDiskEstimate estimateCampaignDisk(const CampaignSpec& spec,
                                          Campaign* measured_from = nullptr,
                                          const std::function<bool(int)>& counted = nullptr);

// The room left for this user on the file system holding `path`: statvfs (f_bavail blocks,
// f_favail inodes; files_known false where the file system reports no inode count), less
// where a Lustre quota leaves less (lustreQuotaRoom). nullopt where statvfs fails.
struct FreeSpace {
  double bytes = 0;
  double files = 0;
  bool files_known = false;
  // What limits each figure, for messages: "" the file system's free space, else the quota
  // ("the Lustre quota of user 1000 (`lfs quota -u 1000 /scratch`)").
  std::string bytes_by, files_by;
};
std::optional<FreeSpace> freeSpaceAt(const std::string& path);

// The room Lustre quotas leave under `path`: `lfs quota -q -u UID path` and `-g GID` (the
// group the files made in `path` get), each limit (the soft one where set, else the hard one;
// 0: none) less what is used. Read when `lfs` is on PATH; nullopt where it is not, fails (not
// Lustre, quotas off) or does not answer within `timeout` (an OST down), or no limit is set.
struct QuotaRoom {
  double bytes = -1, files = -1;  // < 0: no limit
  std::string bytes_by, files_by;
};
std::optional<QuotaRoom> lustreQuotaRoom(
    const std::string& path, std::chrono::milliseconds timeout = std::chrono::seconds(5));
// One answer of `lfs quota -q -u|-g ID path`: `path` as given (or, when it does not start
// the text, one word), then kbytes, quota, limit, grace, files, quota, limit, grace ('*' marks
// a value over its limit, "[ ]" an inaccurate one). The room as QuotaRoom (without `*_by`);
// nullopt where it is not that.
std::optional<QuotaRoom> parseLfsQuota(const std::string& text, const std::string& path = "");

// "4.2 GB", "880 kB", "312 B" (powers of 1000, as df -H and du --si print them).
std::string formatBytes(double bytes);
// "12,345".
std::string formatCount(double n);

// The lines `campaign plan` prints: the total, then each group and the aggregation, what
// running tasks add when `slots` run at once, and how to make it smaller.
std::string describeDiskEstimate(const CampaignDiskEstimate& estimate, int slots);

// The warning `campaign init` gives when `estimate` does not fit in `free` (empty when it
// does): names the directory, the figures that do not fit (bytes, inodes), the kind's advice
// and the command that says what takes the room.
// `whose`: what takes it ("its tasks and aggregation").
std::string diskShortfall(const CampaignDiskEstimate& estimate, const FreeSpace& free,
                          const std::string& dir,
                          const std::string& whose = "its tasks and aggregation");

// D/superseded/: the sets of outputs that `campaign retry --task`, `extend` and `accept-inputs`
// moved aside (one directory each, <UTC time>-<pid>, kept until removed by hand) and what they
// take on disk (allocated blocks, as du counts them). The walk stops after `max_entries`
// entries (then `partial`: the figures are a floor). nullopt when there is no such set.
// What a path takes on disk: the blocks allocated to it and to everything under it (as du
// counts them: a small file takes a whole block), and its entries with itself. Stops once
// `max_entries` are counted; *partial (when given) is set then, or when a directory under it
// could not be read (the figures are a floor).
DiskUse measureDiskUse(const std::string& path,
                       double max_entries = std::numeric_limits<double>::infinity(),
                       bool* partial = nullptr);
// D/superseded/<set>/disk_use.json: what the outputs moved into a set take, recorded by the
// command that moved them (SupersededOutputs::recordUse), so that `status` need not walk them.
// nullopt where there is no such record (or it is not one).
constexpr const char* kSupersededUseFile = "disk_use.json";
std::optional<DiskUse> readSupersededUse(const std::string& set_dir);
void writeSupersededUse(const std::string& set_dir, const DiskUse& use);

struct SupersededUse {
  int sets = 0;
  DiskUse use;
  std::string oldest, newest;  // the sets' names
  bool partial = false;
};
std::optional<SupersededUse> supersededUse(const std::string& campaign_dir,
                                           double max_entries = 200000);

// The check of a run's start (local, the pilot's rank 0, a Slurm submission) and of `extend`:
// what the tasks not done yet and the aggregation will still write, against the free space of
// the campaign's file system, which the tasks done so far and everything else on it have
// taken since `campaign init`. Logs the warning diskShortfall gives, or nothing; never throws
// (a campaign that cannot be read here is for the run to say).
void warnIfOutputsDoNotFit(const std::string& dir);
// The warning warnIfOutputsDoNotFit logs ("" when the outputs fit or cannot be sized).
std::string outputsShortfall(const std::string& dir);
// The warning for the tasks of `spec` that `left` marks (by index: those not done yet) and the
// aggregation, against the free space of `dir` ("" when they fit; `when` qualifies "not done
// yet" in it). Throws where the estimate does.
std::string tasksLeftShortfall(const CampaignSpec& spec, const std::vector<char>& left,
                               const std::string& dir, const std::string& when = "");

}  // namespace foldfarm::jobs
