#pragma once
// Jets spread over several files in the OmniLearn jets layout (data/jet/pid), read as one
// sequence: row r of the sequence is row r - (jets of the files before) of its file.
// An unfolding-layout file among them is refused naming it.
#include <string>
#include <vector>

#include "core/data/jet_arrays.hpp"
#include "core/data/jet_reader.hpp"

namespace foldfarm::data {

// The files of a dataset as a user gives it: comma-separated entries, each a path, a glob
// pattern (`*`, `?`, `[…]`; its matches sorted by name) or `@LIST` (a text file with one
// entry per line — paths or patterns, relative to the list's folder; blank lines and `#`
// comments skipped). InputError naming the entry when a path does not exist, a pattern
// matches nothing or a list cannot be read; also for an empty result, and for a file named
// twice (by any path or link: its jets would enter training and the held-out sets).
std::vector<std::string> expandDatasetFiles(const std::string& spec);

// Opens a jets-layout file; InputError naming it for an unfolding file.
JetFile openJetsFile(const std::string& path);
// The first `max_jets` jets of the files (0: all), in order. InputError for no files.
JetArrays readJetsFiles(const std::vector<std::string>& files, int64_t max_jets = 0);
// The rows `rows` (ascending, indices into the sequence) read block by block, so that only
// those rows are held in memory.
JetArrays readJetsRows(const std::vector<std::string>& files, const std::vector<int64_t>& rows);
// Jets in the files, at most max_jets (0: all), without reading the arrays. Every file must
// look like the first — the jets layout, the same particle slots, class labels in all or
// none: InputError naming the first file that differs and how, before any array is read.
int64_t countJetsInFiles(const std::vector<std::string>& files, int64_t max_jets = 0);
// The same checks; the jets of each file.
std::vector<int64_t> countJetsPerFile(const std::vector<std::string>& files);

}  // namespace foldfarm::data
