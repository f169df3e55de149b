#include "core/data/jet_files.hpp"

#include <algorithm>

#include "core/base/error.hpp"

namespace foldfarm::data {

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
  if (files.empty()) throw InputError("no input files given");
  int64_t n = 0;
  for (const auto& f : files) n += openJetsFile(f).numJets();
  return max_jets > 0 ? std::min(n, max_jets) : n;
}

}  // namespace foldfarm::data
