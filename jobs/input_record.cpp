#include "jobs/input_record.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/progress.hpp"
#include "core/base/sha256.hpp"

namespace foldfarm::jobs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

long long mtimeNs(const struct stat& st) {
  return static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
}

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
    struct stat st {};
    if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    entries.push_back({it->path().lexically_relative(path).string(),
                       static_cast<long long>(st.st_size), mtimeNs(st)});
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
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {{"missing", true}};
  if (S_ISDIR(st.st_mode)) return recordDirectory(path);
  return {{"size", static_cast<long long>(st.st_size)}, {"mtime_ns", mtimeNs(st)}};
}

std::string inputChangeSince(const json& record) {
  if (!record.is_object()) return "";
  for (auto it = record.begin(); it != record.end(); ++it) {
    const json now = recordInput(it.key());
    if (now == it.value()) continue;
    std::string what = it.key();
    if (it.value().contains("files") && now.contains("files") &&
        now.value("digest", "") != it.value().value("digest", ""))
      what += " (a directory: its files)";
    return what + " changed since `campaign init` (" + describe(it.value()) + " then; " +
           describe(now) + " now)";
  }
  return "";
}

json presentInputs(const json& record, const std::string& except) {
  json present = json::object();
  if (!record.is_object()) return present;
  for (auto it = record.begin(); it != record.end(); ++it) {
    struct stat st {};
    if (it.key() != except && ::stat(it.key().c_str(), &st) == 0) present[it.key()] = it.value();
  }
  return present;
}

std::string inputChangeAdvice() {
  return "the tasks done so far read it as it was: restore it, or unfold the new version in a "
         "new campaign (`foldfarm campaign init`)";
}

void requireInputsAsRecorded(const json& record, const std::string& what) {
  const std::string change = inputChangeSince(record);
  if (!change.empty()) throw InputError(what + ": " + change + "; " + inputChangeAdvice());
}

}  // namespace foldfarm::jobs
