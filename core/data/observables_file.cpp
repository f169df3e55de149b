#include "core/data/observables_file.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/observables.hpp"

namespace foldfarm::data {

void writeObservablesFile(const std::string& in, const std::string& out, const std::string& level) {
  requireOutputDirectory(out);
  refuseOutputOverInput(out, in, "data observables");
  JetFile f(in);
  std::string lvl;
  if (f.layout() == FileLayout::kUnfold) {
    lvl = level.empty() ? (f.hasLevel("gen") ? "gen" : "reco") : level;
    if (lvl != "gen" && lvl != "reco")
      throw InputError("data observables: --level must be gen or reco");
  } else if (!level.empty()) {
    throw InputError(in + ": is a jets-layout file; --level applies to unfolding files only");
  }
  const int64_t n = f.numJets();
  std::vector<float> subs;
  subs.reserve(static_cast<size_t>(n * kNumSubs));
  Progress progress("observables", n, "jets");
  for (int64_t b = 0; b < n; b += 4096) {
    const JetArrays a = f.readJets(b, std::min(n, b + 4096), lvl);
    const auto s = computeObservables(a);
    subs.insert(subs.end(), s.begin(), s.end());
    progress.update(std::min(n, b + 4096));
  }
  progress.finish();
  nlohmann::json names = nlohmann::json::array();
  for (int k = 0; k < kNumSubs; ++k) names.push_back(observableName(k));
  writeArraysFile(
      out, {{"subs", std::move(subs), n, kNumSubs}},
      {{"source", in}, {"level", lvl.empty() ? "jets" : lvl}, {"columns", names.dump()}});
  logInfo("wrote {} (subs {}x{})", out, n, kNumSubs);
}

}  // namespace foldfarm::data
