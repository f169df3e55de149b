#pragma once
// D/aggregations.json: what `foldfarm campaign aggregate D` made, so that `campaign status D`
// can say which aggregations the campaign has outgrown and how to make each again. One entry per
// output directory (D/aggregate, or the --out given), replaced by the next aggregation into it:
// the options it was made with (--binning, --truth, --no-plots, ...), the chains it read, and
// a digest of the done tasks it read (each one's id, attempts and finish time), which changes
// whenever a task is done again (`retry`, `accept-inputs`) or newly (`run`, `extend`): an
// aggregation whose digest is not the campaign's is stale, however many chains it holds.
// Written under the campaign's outputs lock (jobs::lockCampaignOutputs), atomically.
//
// Thread-safety: functions of files; DoneTasksDigest is one caller's.
#include <cstdint>
#include <string>
#include <vector>

#include "core/base/sha256.hpp"
#include "jobs/journal.hpp"

namespace foldfarm::jobs {

constexpr const char* kAggregationsFile = "aggregations.json";

// The digest of the done tasks, fed in the campaign's task order (Campaign::forEachTask).
class DoneTasksDigest {
 public:
  void add(const TaskRecord& t);  // ignores tasks that are not done
  int done() const { return done_; }
  std::string hex();  // once, after the last add

 private:
  Sha256 sha_;
  int done_ = 0;
};

struct AggregationRecord {
  // Relative to the campaign's directory where it lies in it ("aggregate", "agg_mass60": the
  // same from every mount of the file system and through a symbolic link), else absolute; both
  // with symbolic links resolved (recordedOut).
  std::string out;
  std::string options;  // the command's options but the campaign and --out: "--binning m.json"
  int chains = 0;
  std::string done_digest;
  int64_t summary_mtime_ns = 0;  // of out/summary.json as written (another writer changes it)
};

// AggregationRecord::out of the output directory `out` of campaign `campaign_dir`: relative to
// it inside it ("aggregate", "tasks/r0000m0", "." for the campaign's own directory), else
// absolute; symbolic links resolved as far as the path exists.
std::string recordedOut(const std::string& campaign_dir, const std::string& out);
// The directory a record names, for a user who named the campaign `campaign_dir`.
std::string recordedOutPath(const std::string& campaign_dir, const AggregationRecord& r);
// `foldfarm campaign aggregate DIR OPTIONS [--out OUT]`: the command that makes it again.
std::string aggregationCommand(const std::string& campaign_dir, const AggregationRecord& r);

// The records of campaign `dir` (none where it has no file; a damaged file is read as none,
// logged: it only serves `status`).
std::vector<AggregationRecord> readAggregationRecords(const std::string& dir);
// Adds `r` (replacing the entry of the same `out`) to dir/aggregations.json.
void recordAggregation(const std::string& dir, const AggregationRecord& r);

}  // namespace foldfarm::jobs
