#include "report/weight_diagnostics.hpp"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"

namespace foldfarm::report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

double number(const json& j, const char* key, double fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

}  // namespace

WeightDiagnostics readWeightDiagnostics(const std::string& campaign_dir) {
  WeightDiagnostics out;
  const fs::path tasks = fs::path(campaign_dir) / "tasks";
  std::error_code ec;
  if (!fs::is_directory(tasks, ec)) return out;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(tasks, ec)) {
    fs::path h = e.path() / "history.json";
    if (fs::is_regular_file(h, ec)) files.push_back(h);
  }
  std::sort(files.begin(), files.end());
  std::map<std::pair<int, int>, StepWeightStats> steps;
  for (const auto& f : files) {
    const std::string task = f.parent_path().filename().string();
    const json j = readJsonFile(f.string(), "rerun task " + task, JsonWriter::kProgram);
    if (!j.is_object() || !j.contains("steps") || !j["steps"].is_array())
      throw InputError(f.string() + ": no \"steps\" array; not a chain history");
    ChainWeightStats c;
    c.task = task;
    c.min_ess_fraction = 1e300;
    for (const auto& st : j["steps"]) {
      if (!st.is_object()) continue;
      const int it = static_cast<int>(number(st, "iteration"));
      const int sp = static_cast<int>(number(st, "step"));
      const double frac = number(st, "ess_fraction");
      const json rw = st.value("reweighting", json::object());
      const long long clipped = static_cast<long long>(number(rw, "clipped"));
      const long long nonfin = static_cast<long long>(number(rw, "non_finite"));
      const double maxw = number(rw, "max_after");
      StepWeightStats& s = steps[{it, sp}];
      s.iteration = it;
      s.step = sp;
      if (s.chains == 0 || frac < s.min_ess_fraction) {
        s.min_ess_fraction = frac;
        s.min_ess_task = task;
      }
      s.mean_ess_fraction += frac;  // divided by chains below
      ++s.chains;
      if (rw.contains("ess_fraction")) {
        s.mean_factor_ess_fraction += number(rw, "ess_fraction");  // divided below
        ++s.factor_chains;
      }
      s.clipped += clipped;
      s.non_finite += nonfin;
      s.max_weight = std::max(s.max_weight, maxw);
      c.final_ess_fraction = frac;
      c.min_ess_fraction = std::min(c.min_ess_fraction, frac);
      c.clipped += clipped;
      c.non_finite += nonfin;
      c.max_weight = std::max(c.max_weight, maxw);
    }
    if (c.min_ess_fraction > 1e299) continue;
    out.chains.push_back(c);
  }
  for (auto& [k, s] : steps) {
    s.mean_ess_fraction /= s.chains;
    s.mean_factor_ess_fraction = s.factor_chains > 0 ? s.mean_factor_ess_fraction / s.factor_chains
                                                     : std::numeric_limits<double>::quiet_NaN();
    out.steps.push_back(s);
  }
  std::stable_sort(out.chains.begin(), out.chains.end(),
                   [](const ChainWeightStats& a, const ChainWeightStats& b) {
                     return a.min_ess_fraction < b.min_ess_fraction;
                   });
  return out;
}

}  // namespace foldfarm::report
