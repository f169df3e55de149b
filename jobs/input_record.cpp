#include "jobs/input_record.hpp"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/progress.hpp"
#include "core/base/run_threads.hpp"
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

struct Entry {
  std::string rel;  // path relative to the directory
  long long size = 0, mtime_ns = 0;
};

// The regular files under `path` (recursively, listed names only), sorted by relative path.
std::vector<Entry> listDirectory(const std::string& path) {
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
  return entries;
}

// A directory's record from its listing.
json directoryRecord(const std::vector<Entry>& entries) {
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

// recordInput, and for a directory its listing in `entries` (listed once for both).
json recordListing(const std::string& path, std::vector<Entry>& entries) {
  const FileStat st = statPath(path);
  if (!st.exists) return {{"missing", true}};
  if (st.directory) {
    entries = listDirectory(path);
    return directoryRecord(entries);
  }
  return {{"size", st.size}, {"mtime_ns", st.mtime_ns}};
}

// "1000 bytes, modified …", "3 files, 2048 bytes, newest modified …", "missing"; with
// `exact`, the time's nanoseconds too (two times alike to the millisecond).
std::string describe(const json& r, bool exact = false) {
  if (!r.is_object() || r.value("missing", false)) return "missing";
  std::string s;
  if (r.contains("files")) s = std::to_string(r.value("files", 0LL)) + " files, ";
  s += std::to_string(r.value("bytes", r.value("size", 0LL))) + " bytes, ";
  s += r.contains("files") ? "newest modified " : "modified ";
  s += formatUtcTime(static_cast<double>(r.value("mtime_ns", 0LL)) * 1e-9,
                     /*milliseconds=*/true);
  if (exact) s += " (mtime_ns " + std::to_string(r.value("mtime_ns", 0LL)) + ")";
  return s;
}

// The record without what the checks do not compare (the checksums of a file, of a
// directory's files).
json statPart(const json& r) {
  if (!r.is_object() || (!r.contains("sha256") && !r.contains("listing"))) return r;
  json s = r;
  s.erase("sha256");
  s.erase("listing");
  return s;
}

// The relative paths and sizes of a directory's files, as recorded in its "listing" and now.
bool sameNamesAndSizes(const json& listing, const std::vector<Entry>& now) {
  if (!listing.is_object() || listing.size() != now.size()) return false;
  for (const Entry& e : now) {
    const auto it = listing.find(e.rel);
    if (it == listing.end() || it->value("size", -1LL) != e.size) return false;
  }
  return true;
}

// How `path` differs from its record `then` (`now`: its record now) as one clause; "" when
// it does not. `advice`: with how to give a copy of the same bytes its time back.
std::string changeClause(const std::string& path, const json& then, const json& now,
                         bool advice = true) {
  if (statPart(then) == now) return "";
  std::string what = path;
  if (then.contains("files") && now.contains("files") &&
      now.value("digest", "") != then.value("digest", ""))
    what += " (a directory: its files)";
  // Alike to the millisecond (a time rounded by a tool, a copy with sub-millisecond times
  // changed): the nanoseconds tell them apart.
  const bool exact = describe(then) == describe(now);
  std::string clause = what + " changed since `campaign init` (" + describe(then, exact) +
                       " then; " + describe(now, exact) + " now";
  if (!advice) return clause + ")";
  // A file of the same size whose time alone moved on may be the same bytes copied again
  // (cp, rsync without -t, a staging script): say how to give it its time back.
  const bool same_size =
      then.contains("size") && now.contains("size") && now["size"] == then["size"];
  if (same_size && !then.contains("sha256"))
    clause += restoreTimeHint(path, then.value("mtime_ns", 0LL));
  else if ((same_size && then.contains("sha256")) ||
           (now.contains("files") && then.contains("listing") &&
            sameNamesAndSizes(then["listing"], listDirectory(path))))
    clause +=
        std::string("; if it holds the same bytes, copied again, `foldfarm campaign repair` ") +
        (then.contains("listing")
             ? "checks them against the checksums taken at `campaign init` and gives its files "
               "back their times"
             : "checks them against the checksum taken at `campaign init` and gives the file "
               "back its time");
  return clause + ")";
}

constexpr long long kMiB = 1LL << 20;
// Inputs smaller than this together are read without a progress line.
constexpr long long kQuietBytes = 256 * kMiB;

// sha256 of `path`, with a progress line (MiB) when it is large.
std::string checksum(const std::string& path, long long size, const std::string& label) {
  Progress progress(label, std::max(1LL, size / kMiB), "MiB");
  progress.setSilent(size < kQuietBytes);
  long long done = 0;
  const std::string sum = sha256File(path, [&](size_t n) {
    done += static_cast<long long>(n);
    progress.update(done / kMiB);
  });
  progress.finish();
  return sum;
}

// "" when `file` holds bytes of sha256 `recorded`; else a clause naming it and why not.
std::string sameBytes(const std::string& file, long long size, const std::string& recorded) {
  std::string sum;
  try {
    sum = checksum(file, size, "checking " + file);
  } catch (const InputError& e) {
    return e.what();
  }
  if (sum == recorded) return "";
  return file + ": its bytes differ from those read at `campaign init` (sha256 " +
         recorded.substr(0, 16) + "… then, " + sum.substr(0, 16) + "… now)";
}

}  // namespace

json recordInputs(const std::vector<std::string>& paths) {
  json out = json::object();
  struct Job {
    std::string input, file, rel;  // rel "": the input is this file
  };
  std::vector<Job> jobs;
  long long bytes = 0;
  for (const std::string& p : paths) {
    if (out.contains(p)) continue;
    std::vector<Entry> entries;
    out[p] = recordListing(p, entries);
    if (out[p].contains("size")) {
      jobs.push_back({p, p, ""});
      bytes += out[p]["size"].get<long long>();
    } else if (out[p].contains("files")) {
      out[p]["listing"] = json::object();
      for (const Entry& e : entries) {
        out[p]["listing"][e.rel] = {{"size", e.size}, {"mtime_ns", e.mtime_ns}};
        jobs.push_back({p, (fs::path(p) / e.rel).string(), e.rel});
        bytes += e.size;
      }
    }
  }
  // Each file read whole on one thread, a few at once (a file system serves parallel reads
  // of large files faster than one stream).
  std::vector<std::string> sums(jobs.size());
  std::mutex mu;
  Progress progress("checksums of " + std::to_string(jobs.size()) + " input files",
                    std::max(1LL, bytes / kMiB), "MiB");
  progress.setSilent(bytes < kQuietBytes);
  long long done = 0;
  std::atomic<size_t> next{0};
  runThreads(static_cast<int>(std::min<size_t>(jobs.size(), 8)), [&](int) {
    for (size_t k = next++; k < jobs.size(); k = next++)
      sums[k] = sha256File(jobs[k].file, [&](size_t n) {
        const std::lock_guard<std::mutex> hold(mu);
        done += static_cast<long long>(n);
        progress.update(done / kMiB);
      });
  });
  progress.finish();
  for (size_t k = 0; k < jobs.size(); ++k) {
    json& rec = out[jobs[k].input];
    (jobs[k].rel.empty() ? rec : rec["listing"][jobs[k].rel])["sha256"] = sums[k];
  }
  // The checksums are of the bytes recorded only when nothing wrote the inputs meanwhile.
  for (auto it = out.begin(); it != out.end(); ++it)
    if (recordInput(it.key()) != statPart(it.value()))
      throw InputError(it.key() + ": changed while `campaign init` read it; run `campaign " +
                       "init` again once whatever writes it has finished");
  return out;
}

InputTimesRestored restoreInputTimes(const json& record, bool check_only) {
  InputTimesRestored r;
  if (!record.is_object()) return r;
  for (auto it = record.begin(); it != record.end(); ++it) {
    const std::string& path = it.key();
    const json& then = it.value();
    std::vector<Entry> entries;  // a directory's files now
    const json now = recordListing(path, entries);
    if (statPart(then) == now) continue;
    // The files to give their recorded time back, once all their bytes are the recorded ones
    // (a directory's files all, or none of them).
    std::vector<std::pair<std::string, long long>> retime;
    std::string problem;
    const bool directory = then.contains("listing") && now.contains("files");
    if (then.contains("sha256") && now.contains("size") && now["size"] == then["size"]) {
      problem = sameBytes(path, now["size"].get<long long>(), then["sha256"].get<std::string>());
      retime.emplace_back(path, then.value("mtime_ns", 0LL));
    } else if (directory && sameNamesAndSizes(then["listing"], entries)) {
      for (const Entry& e : entries) {
        const json& was = then["listing"][e.rel];
        if (was.value("mtime_ns", 0LL) == e.mtime_ns) continue;
        const std::string file = (fs::path(path) / e.rel).string();
        problem = sameBytes(file, e.size, was.value("sha256", ""));
        if (!problem.empty()) break;
        retime.emplace_back(file, was.value("mtime_ns", 0LL));
      }
    } else {
      r.left.push_back(changeClause(path, then, now));
      continue;
    }
    if (!problem.empty()) {
      r.left.push_back(problem + ": restore the " + (directory ? "directory" : "file") +
                       " it was, or unfold this one in a new campaign");
      continue;
    }
    if (check_only) {
      r.restored.push_back(path);
      continue;
    }
    for (const auto& [file, mtime_ns] : retime)
      if (const std::string why = setModificationTime(file, mtime_ns); !why.empty()) {
        problem = file + ": holds the bytes read at `campaign init`, but its time cannot be " +
                  "set back (" + why + "): run `" + restoreTimeCommand(file, mtime_ns) +
                  "` as its owner, or copy it again with its times (`cp -p`, `rsync -a`)";
        break;
      }
    if (problem.empty()) problem = changeClause(path, then, recordInput(path));  // coarser times
    if (!problem.empty()) {
      r.left.push_back(problem);
      continue;
    }
    r.restored.push_back(path);
  }
  return r;
}

json recordInput(const std::string& path) {
  std::vector<Entry> entries;
  return recordListing(path, entries);
}

std::string inputChangeSince(const json& record) {
  if (!record.is_object()) return "";
  for (auto it = record.begin(); it != record.end(); ++it)
    if (std::string clause = changeClause(it.key(), it.value(), recordInput(it.key()));
        !clause.empty())
      return clause;
  return "";
}

std::vector<std::pair<std::string, std::string>> changedInputs(const json& record) {
  std::vector<std::pair<std::string, std::string>> changed;
  if (!record.is_object()) return changed;
  for (auto it = record.begin(); it != record.end(); ++it)
    if (std::string clause =
            changeClause(it.key(), it.value(), recordInput(it.key()), /*advice=*/false);
        !clause.empty())
      changed.emplace_back(it.key(), std::move(clause));
  return changed;
}

json inputChecksums(const json& record) {
  json out = json::object();
  if (!record.is_object()) return out;
  for (auto it = record.begin(); it != record.end(); ++it) {
    const json& r = it.value();
    json& c = out[it.key()];
    if (r.contains("files")) {
      c = {{"files", r.value("files", 0LL)}, {"bytes", r.value("bytes", 0LL)}, {"sha256", nullptr}};
      if (!r.contains("listing") || !r["listing"].is_object()) continue;
      Sha256 digest;  // nlohmann::json keeps object keys sorted
      bool complete = true;
      for (auto f = r["listing"].begin(); f != r["listing"].end(); ++f) {
        complete = complete && f.value().contains("sha256");
        digest.update(f.key() + "\t" + f.value().value("sha256", "") + "\n");
      }
      if (complete) c["sha256"] = digest.hexDigest();
    } else if (r.contains("size")) {
      c = {{"size", r.value("size", 0LL)},
           {"sha256", r.contains("sha256") ? r["sha256"] : json(nullptr)}};
    } else {
      c = {{"missing", true}};
    }
  }
  return out;
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
  return "the campaign's tasks read it as recorded (at `campaign init`, or its last "
         "`accept-inputs`): restore it (its bytes and times: `cp -p`, "
         "`rsync -a`), accept the new version (`foldfarm campaign accept-inputs` with the "
         "campaign's directory: the tasks that read it run again), or unfold it in a new "
         "campaign (`foldfarm campaign init`)";
}

void requireInputsAsRecorded(const json& record, const std::string& what) {
  const std::string change = inputChangeSince(record);
  if (!change.empty()) throw InputError(what + ": " + change + "; " + inputChangeAdvice());
}

}  // namespace foldfarm::jobs
