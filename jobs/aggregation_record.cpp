#include "jobs/aggregation_record.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"

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
