#include "jobs/input_record.hpp"

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/progress.hpp"
#include "core/base/sha256.hpp"

namespace foldfarm::jobs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Hidden names (".lease", NFS's ".nfs…" of files deleted while open) and the temporaries of
// atomic writes are not part of what a directory holds.
bool listed(const std::string& name) {
  return !name.empty() && name[0] != '.' && name.find(".tmp.") == std::string::npos;
}

json recordDirectory(const std::string& path) {
  struct Entry {
    std::string rel;
    long long size = 0, mtime_ns = 0;
  };
  std::vector<Entry> entries;
  std::error_code ec;
  fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!listed(name)) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    const FileStat st = statPath(it->path().string());
    if (!st.regular) continue;
    entries.push_back({it->path().lexically_relative(path).string(), st.size, st.mtime_ns});
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.rel < b.rel; });
  Sha256 digest;
  long long bytes = 0, newest = 0;
  for (const Entry& e : entries) {
    digest.update(e.rel + "\t" + std::to_string(e.size) + "\t" + std::to_string(e.mtime_ns) + "\n");
    bytes += e.size;
    newest = std::max(newest, e.mtime_ns);
  }
  return {{"files", static_cast<long long>(entries.size())},
          {"bytes", bytes},
          {"mtime_ns", newest},
          {"digest", digest.hexDigest()}};
}

// "1000 bytes, modified …", "3 files, 2048 bytes, newest modified …", "missing"
std::string describe(const json& r) {
  if (!r.is_object() || r.value("missing", false)) return "missing";
  std::string s;
  if (r.contains("files")) s = std::to_string(r.value("files", 0LL)) + " files, ";
  s += std::to_string(r.value("bytes", r.value("size", 0LL))) + " bytes, ";
  s += r.contains("files") ? "newest modified " : "modified ";
  return s + formatUtcTime(static_cast<double>(r.value("mtime_ns", 0LL)) * 1e-9,
                           /*milliseconds=*/true);
}

}  // namespace

json recordInput(const std::string& path) {
  const FileStat st = statPath(path);
  if (!st.exists) return {{"missing", true}};
  if (st.directory) return recordDirectory(path);
  return {{"size", st.size}, {"mtime_ns", st.mtime_ns}};
}

std::string inputChangeSince(const json& record) {
  if (!record.is_object()) return "";
  for (auto it = record.begin(); it != record.end(); ++it) {
    const json& then = it.value();
    const json now = recordInput(it.key());
    if (now == then) continue;
    std::string what = it.key();
    if (then.contains("files") && now.contains("files") &&
        now.value("digest", "") != then.value("digest", ""))
      what += " (a directory: its files)";
    std::string clause = what + " changed since `campaign init` (" + describe(then) + " then; " +
                         describe(now) + " now";
    // A file of the same size whose time alone moved on may be the same bytes copied again
    // (cp, rsync without -t, a staging script): say how to give it its time back.
    if (then.contains("size") && now.contains("size") && now["size"] == then["size"])
      clause += restoreTimeHint(it.key(), then.value("mtime_ns", 0LL));
    return clause + ")";
  }
  return "";
}

json presentInputs(const json& record, const std::string& except) {
  json present = json::object();
  if (!record.is_object()) return present;
  for (auto it = record.begin(); it != record.end(); ++it) {
    if (it.key() != except && statPath(it.key()).exists) present[it.key()] = it.value();
  }
  return present;
}

std::string inputChangeAdvice() {
  return "the tasks done so far read it as it was: restore it (its bytes and times: `cp -p`, "
         "`rsync -a`), or unfold the new version in a new campaign (`foldfarm campaign init`)";
}

void requireInputsAsRecorded(const json& record, const std::string& what) {
  const std::string change = inputChangeSince(record);
  if (!change.empty()) throw InputError(what + ": " + change + "; " + inputChangeAdvice());
}

}  // namespace foldfarm::jobs
