#pragma once
// What a campaign's input files were when it was made. `campaign init` records, for every
// input path of the spec (the nominal's and each variation's), what stat() says of it; every
// command that starts tasks, and every task attempt before it runs, compares the files with
// that record. A file replaced since (a regenerated simulation, a foundation pretrained
// again) is refused in one line naming it: the tasks already done read the old one, and a
// campaign mixing both would be found out only when aggregated (a chain's MC and data), or
// not at all (the truth, a foundation, other kinds' inputs).
//
// Record of one path (JSON, as frozen in the campaign's spec.json under "inputs_at_init"):
//   a file       {"size": bytes, "mtime_ns": modification time}
//   a directory  {"files": n, "bytes": total, "mtime_ns": newest, "digest": sha256 hex of
//                 the sorted listing "<relative path>\t<size>\t<mtime_ns>\n" of its regular
//                 files, recursively} (a checkpoint: meta.json and its payload); names
//                 starting with "." and atomic-write temporaries ("*.tmp.*") are not listed
//   missing      {"missing": true}
// As `make` does, a change is what stat() shows: a file rewritten with the same size within
// the file system's time resolution is not noticed, and `touch` counts as a change. A file's
// record made by `campaign init` also holds "sha256" of its bytes, a directory's "listing"
// {relative path: {"size", "mtime_ns", "sha256"}} of its files (recordInputs), never
// compared by the checks (which stat only): for inputs copied again (a scratch area purged
// and staged anew, `cp` without -p), `campaign repair` reads them, and when their bytes are
// the recorded ones gives them back their recorded times (restoreInputTimes); the checks'
// message says so. Records without them (campaigns made before) get the `touch` command.
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldfarm::jobs {

// The record of `path` now (never throws: an unreadable path is recorded as missing).
nlohmann::json recordInput(const std::string& path);

// What `campaign init` records of `paths`: recordInput of each and the checksums of a file's
// bytes ("sha256") or of a directory's files ("listing"), the files read in parallel, with
// progress when they are large. InputError naming a file that cannot be read or that changed
// while it was read.
nlohmann::json recordInputs(const std::vector<std::string>& paths);

// "" when every path of `record` (an object path -> recordInput) still matches it; else one
// clause naming the first path that does not and how: "/d/mc.h5 changed since `campaign
// init` (1000 bytes, modified 2026-12-02 20:01:02.000 UTC then; 1200 bytes, modified … now)".
// A file of the recorded size whose time alone differs, for the same bytes copied again: with
// a checksum, "(…now; if it holds the same bytes, copied again, `foldfarm campaign repair`
// checks them against the checksum taken at `campaign init` and gives the file back its
// time)"; without, the command that restores the time (restoreTimeCommand): "(…now; if it
// holds the same bytes, copied again, `touch -d @1764705662.000000000 '/d/mc.h5'` gives it
// back its time)".
std::string inputChangeSince(const nlohmann::json& record);

// Every path of `record` that does not match it now, with inputChangeSince's clause for it
// (without the advice about copies of the same bytes), in the record's order.
std::vector<std::pair<std::string, std::string>> changedInputs(const nlohmann::json& record);

// What a result names of the inputs it was computed from, for each path of `record` (as
// recordInputs made it): a file's {"size", "sha256"}, a directory's {"files", "bytes",
// "sha256"}, the last the sha256 of its sorted listing "<relative path>\t<sha256>\n" (its
// bytes, not its times). "sha256" is null in a record without checksums (a campaign made
// before they were taken).
nlohmann::json inputChecksums(const nlohmann::json& record);

// What restoreInputTimes did: the files given back their recorded time, and one clause for
// each file still not as recorded ("/d/mc.h5: its bytes differ from those of `campaign init`
// (sha256 ab12… then, cd34… now)", a time that could not be set and why, any other change).
struct InputTimesRestored {
  std::vector<std::string> restored;
  std::vector<std::string> left;
};

// For `campaign repair`: every file of `record` with a checksum, of its recorded size but
// another time, is read (a directory: every file of its listing whose time differs, when its
// files have the recorded names and sizes); when the bytes hash to the recorded checksums,
// the modification times are set back to the recorded ones (access times untouched; a
// directory's files all or none). Nothing else is written. `check_only` (a dry run): the bytes
// are read and compared, no time is set; `restored` names what would be.
InputTimesRestored restoreInputTimes(const nlohmann::json& record, bool check_only = false);

// InputError("<what>: <inputChangeSince>; <inputChangeAdvice>") when a recorded input changed;
// nothing when `record` is empty or null (a campaign made before records).
void requireInputsAsRecorded(const nlohmann::json& record, const std::string& what);

// The entries of `record` whose paths exist now, but for `except` (a command that reads only
// some inputs, such as the aggregation, names a missing one where it reads it).
nlohmann::json presentInputs(const nlohmann::json& record, const std::string& except = "");

// The advice that ends requireInputsAsRecorded's message (also for task attempts' reasons).
std::string inputChangeAdvice();

}  // namespace foldfarm::jobs
