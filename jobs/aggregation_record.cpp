#include "jobs/aggregation_record.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/fd.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/text.hpp"

namespace foldfarm::jobs {

using nlohmann::json;

void DoneTasksDigest::add(const TaskRecord& t) {
  if (t.state != TaskState::kDone) return;
  // finished_at as the shortest text that reads back as the same double (one format for the
  // aggregation and for status, both reading the journal).
  sha_.update(fmt::format("{}\t{}\t{}\n", t.id, t.attempts, t.finished_at));
  ++done_;
}

std::string DoneTasksDigest::hex() {
  return sha_.hexDigest();
}

namespace {

namespace fs = std::filesystem;

// Absolute, symbolic links resolved as far as the path exists, no trailing separator.
fs::path resolved(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path), ec);
  if (ec) p = fs::absolute(path).lexically_normal();
  while (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

}  // namespace

std::string recordedOut(const std::string& campaign_dir, const std::string& out) {
  const fs::path root = resolved(campaign_dir), to = resolved(out);
  const auto [in_root, in_to] = std::mismatch(root.begin(), root.end(), to.begin(), to.end());
  if (in_root == root.end()) return to.lexically_relative(root).string();  // "." for the root
  return to.string();
}

std::string recordedOutPath(const std::string& campaign_dir, const AggregationRecord& r) {
  return fs::path(r.out).is_absolute() ? r.out : campaign_dir + "/" + r.out;
}

std::string aggregationCommand(const std::string& campaign_dir, const AggregationRecord& r) {
  std::string c = "foldfarm campaign aggregate " + shellWord(campaign_dir);
  if (!r.options.empty()) c += " " + r.options;
  if (r.out != "aggregate") c += " --out " + shellWord(recordedOutPath(campaign_dir, r));
  return c;
}

std::vector<AggregationRecord> readAggregationRecords(const std::string& dir) {
  const std::string path = dir + "/" + kAggregationsFile;
  std::vector<AggregationRecord> out;
  if (!statPath(path).exists) return out;
  try {
    const json j = readJsonFile(path, "");
    for (const json& e : j.at("aggregations")) {
      AggregationRecord r;
      r.out = e.at("out").get<std::string>();
      r.options = e.at("options").get<std::string>();
      r.chains = e.at("chains").get<int>();
      r.done_digest = e.at("done_digest").get<std::string>();
      r.summary_mtime_ns = e.at("summary_mtime_ns").get<int64_t>();
      out.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    logWarn("{}: not read ({}); `foldfarm campaign aggregate` writes it again", path, e.what());
    return {};
  }
  return out;
}

void recordAggregation(const std::string& dir, const AggregationRecord& r) {
  // Aggregations into several --out directories run side by side (each holds the outputs
  // lock shared): one at a time reads, changes and replaces the file.
  const std::string lock_path = dir + "/" + kAggregationsFile + ".lock";
  const Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, kNewFileMode));
  if (!lock.valid()) throw Error(lock_path + ": cannot open: " + errnoMessage(errno));
  while (::flock(lock.get(), LOCK_EX) != 0)
    if (errno != EINTR) throw Error(lock_path + ": cannot lock: " + errnoMessage(errno));
  std::vector<AggregationRecord> all = readAggregationRecords(dir);
  json list = json::array();
  for (const AggregationRecord& e : all)
    if (e.out != r.out)
      list.push_back({{"out", e.out},
                      {"options", e.options},
                      {"chains", e.chains},
                      {"done_digest", e.done_digest},
                      {"summary_mtime_ns", e.summary_mtime_ns}});
  list.push_back({{"out", r.out},
                  {"options", r.options},
                  {"chains", r.chains},
                  {"done_digest", r.done_digest},
                  {"summary_mtime_ns", r.summary_mtime_ns}});
  writeFileAtomic(dir + "/" + kAggregationsFile,
                  json{{"format", 1}, {"aggregations", std::move(list)}}.dump(2) + "\n");
}

}  // namespace foldfarm::jobs
