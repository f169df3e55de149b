#include "core/data/jet_files.hpp"

#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/text.hpp"

namespace foldfarm::data {

namespace {

bool isPattern(const std::string& s) {
  return s.find_first_of("*?[") != std::string::npos;
}

void expandEntry(const std::string& entry, const std::string& base, int depth,
                 std::vector<std::string>& out) {
  if (entry.empty()) return;
  if (entry[0] == '@') {
    if (depth > 4)
      throw InputError(entry + ": dataset lists nested too deep (a list naming itself?)");
    std::string list = entry.substr(1);
    if (!base.empty() && list[0] != '/') list = base + "/" + list;
    std::ifstream in(list);
    if (!in) throw InputError(list + ": cannot read the dataset list; check the path after '@'");
    const std::string dir = std::filesystem::path(list).parent_path().string();
    std::string line;
    while (std::getline(in, line)) {
      line = trim(line);
      if (line.empty() || line[0] == '#') continue;
      expandEntry(line, dir, depth + 1, out);
    }
    return;
  }
  std::string path = entry;
  if (!base.empty() && path[0] != '/') path = base + "/" + path;
  if (isPattern(path)) {
    glob_t g{};
    const int rc = ::glob(path.c_str(), 0, nullptr, &g);
    std::vector<std::string> found;
    if (rc == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i) found.emplace_back(g.gl_pathv[i]);
    }
    ::globfree(&g);
    if (found.empty()) throw InputError(path + ": the pattern matches no file");
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
    return;
  }
  const FileStat st = statPath(path);
  if (st.directory)
    throw InputError(path + ": is a directory; give its files (e.g. " + path + "/*.h5)");
  if (!st.regular)
    throw InputError(path + (st.exists ? ": is not a regular file" : ": no such file") +
                     "; check the path");
  out.push_back(path);
}

}  // namespace

std::vector<std::string> expandDatasetFiles(const std::string& spec) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    expandEntry(trim(spec.substr(start, comma - start)), "", 0, out);
    start = comma + 1;
  }
  if (out.empty()) throw InputError("'" + spec + "': no input files given");
  // One file twice (listed again, matched by two patterns, a link to it) would put its jets
  // into training and into the held-out sets at once.
  std::map<std::pair<dev_t, ino_t>, std::string> seen;
  for (const std::string& path : out) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;  // the reader names it
    const auto [it, fresh] = seen.emplace(std::make_pair(st.st_dev, st.st_ino), path);
    if (!fresh)
      throw InputError("'" + spec + "': names " + path +
                       (path == it->second ? std::string(" twice")
                                           : " and " + it->second + ", which are one file") +
                       "; give each file once (its jets would be trained on and held out at "
                       "once)");
  }
  return out;
}

JetFile openJetsFile(const std::string& path) {
  JetFile file(path);
  if (file.layout() != FileLayout::kJets)
    throw InputError(path + ": expected a jets file (data/jet/pid), found an unfolding file");
  return file;
}

JetArrays readJetsFiles(const std::vector<std::string>& files, int64_t max_jets) {
  if (files.empty()) throw InputError("no input files given");
  JetArrays all;
  for (const auto& f : files) {
    const JetFile file = openJetsFile(f);
    int64_t end = file.numJets();
    if (max_jets > 0) end = std::min(end, max_jets - all.n);
    if (end <= 0) break;
    JetArrays a = file.readJets(0, end);
    if (all.n == 0)
      all = std::move(a);
    else
      all.append(a);
  }
  return all;
}

JetArrays readJetsRows(const std::vector<std::string>& files, const std::vector<int64_t>& rows) {
  constexpr int64_t kBlock = 16384;
  JetArrays out;
  size_t next = 0;
  int64_t offset = 0;
  for (const auto& f : files) {
    const JetFile file = openJetsFile(f);
    const int64_t n = file.numJets();
    while (next < rows.size() && rows[next] < offset + n) {
      const int64_t begin = rows[next] - offset, end = std::min(n, begin + kBlock);
      std::vector<int64_t> pick;
      for (; next < rows.size() && rows[next] < offset + end; ++next)
        pick.push_back(rows[next] - offset - begin);
      JetArrays part = file.readJets(begin, end).subset(pick);
      if (out.n == 0)
        out = std::move(part);
      else
        out.append(part);
    }
    offset += n;
    if (next == rows.size()) break;
  }
  return out;
}

int64_t countJetsInFiles(const std::vector<std::string>& files, int64_t max_jets) {
  int64_t n = 0;
  for (int64_t k : countJetsPerFile(files)) n += k;
  return max_jets > 0 ? std::min(n, max_jets) : n;
}

std::vector<int64_t> countJetsPerFile(const std::vector<std::string>& files) {
  if (files.empty()) throw InputError("no input files given");
  const JetFile first = openJetsFile(files[0]);
  std::vector<int64_t> n{first.numJets()};
  for (size_t i = 1; i < files.size(); ++i) {
    const JetFile f = openJetsFile(files[i]);
    if (f.numParticles() != first.numParticles()) {
      throw InputError(files[i] + ": " + std::to_string(f.numParticles()) +
                       " particle slots per jet, but " + files[0] + " has " +
                       std::to_string(first.numParticles()) +
                       "; files of one dataset must share the layout (pad or cut them alike)");
    }
    if (f.hasLabels() != first.hasLabels()) {
      throw InputError(files[i] + ": " + (f.hasLabels() ? "has" : "has no") +
                       " class labels (pid), unlike " + files[0] +
                       "; files of one dataset must all have labels or none");
    }
    n.push_back(f.numJets());
  }
  return n;
}

}  // namespace foldfarm::data
