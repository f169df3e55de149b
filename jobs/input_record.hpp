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
// the file system's time resolution is not noticed, and `touch` counts as a change (the
// message then says how to give the file its recorded time back).
#include <string>

#include <nlohmann/json.hpp>

namespace foldfarm::jobs {

// The record of `path` now (never throws: an unreadable path is recorded as missing).
nlohmann::json recordInput(const std::string& path);

// "" when every path of `record` (an object path -> recordInput) still matches it; else one
// clause naming the first path that does not and how: "/d/mc.h5 changed since `campaign
// init` (1000 bytes, modified 2026-12-02 20:01:02.000 UTC then; 1200 bytes, modified … now)".
// A file of the recorded size whose time alone differs gets the command that restores the
// time (restoreTimeCommand), for the same bytes copied again: "(…now; if it holds the same
// bytes, copied again, `touch -d @1764705662.000000000 '/d/mc.h5'` gives it back its time)".
std::string inputChangeSince(const nlohmann::json& record);

// InputError("<what>: <inputChangeSince>; <inputChangeAdvice>") when a recorded input changed;
// nothing when `record` is empty or null (a campaign made before records).
void requireInputsAsRecorded(const nlohmann::json& record, const std::string& what);

// The entries of `record` whose paths exist now, but for `except` (a command that reads only
// some inputs, such as the aggregation, names a missing one where it reads it).
nlohmann::json presentInputs(const nlohmann::json& record, const std::string& except = "");

// The advice that ends requireInputsAsRecorded's message (also for task attempts' reasons).
std::string inputChangeAdvice();

}  // namespace foldfarm::jobs
