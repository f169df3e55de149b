#include "core/data/inspect.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

#include "core/data/jet_reader.hpp"
#include "core/data/observables.hpp"

namespace foldfarm::data {
namespace {

constexpr int64_t kBlockRows = 4096;

struct Moments {
  double n = 0, sum = 0, sum2 = 0;
  double lo = std::numeric_limits<double>::infinity(),
         hi = -std::numeric_limits<double>::infinity();
  void add(double x) {
    n += 1;
    sum += x;
    sum2 += x * x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  nlohmann::json json() const {
    if (n == 0) return nullptr;
    const double mean = sum / n;
    return {{"mean", mean},
            {"std", std::sqrt(std::max(0.0, sum2 / n - mean * mean))},
            {"min", lo},
            {"max", hi}};
  }
};

nlohmann::json levelSummary(const JetFile& f, const std::string& level) {
  Moments mult;
  Moments jet[kNumJetFeatures];
  std::map<int64_t, int64_t> labels;
  for (int64_t b = 0; b < f.numJets(); b += kBlockRows) {
    const JetArrays a = f.readJets(b, std::min(f.numJets(), b + kBlockRows), level);
    for (int64_t i = 0; i < a.n; ++i) {
      mult.add(static_cast<double>(a.multiplicity(i)));
      for (int k = 0; k < kNumJetFeatures; ++k) jet[k].add(a.jet(i)[k]);
      if (!a.labels.empty()) ++labels[a.labels[i]];
    }
  }
  static const char* names[kNumJetFeatures] = {"pt", "eta", "mass", "multiplicity"};
  nlohmann::json j;
  j["particle_multiplicity"] = mult.json();
  for (int k = 0; k < kNumJetFeatures; ++k) j["jet"][names[k]] = jet[k].json();
  if (!labels.empty()) {
    const int64_t classes = labels.rbegin()->first + 1;
    std::vector<int64_t> counts(static_cast<size_t>(classes), 0);
    for (auto& [l, c] : labels) counts[static_cast<size_t>(l)] = c;
    j["labels"] = {{"classes", classes}, {"counts", counts}};
  }
  return j;
}

}  // namespace

nlohmann::json summarizeFile(const std::string& path) {
  JetFile f(path);
  nlohmann::json s;
  s["file"] = path;
  s["layout"] = f.layout() == FileLayout::kJets ? "jets" : "unfold";
  s["jets"] = f.numJets();
  s["particles_per_jet"] = f.numParticles();
  for (const auto& d : f.datasets()) s["datasets"][d.name] = {{"shape", d.dims}, {"type", d.type}};
  s["attributes"] = nlohmann::json::object();
  for (const auto& [k, v] : f.attributes()) s["attributes"][k] = v;
  if (f.layout() == FileLayout::kJets) {
    nlohmann::json l = levelSummary(f, "");
    if (l.contains("labels")) s["labels"] = l["labels"];
    l.erase("labels");
    s["levels"]["jets"] = l;
  } else {
    // Experimental data holds its reco level only, a truth sample its gen level only.
    for (const char* level : {"gen", "reco"})
      if (f.hasLevel(level)) s["levels"][level] = levelSummary(f, level);
    Moments subs[2][kNumSubs];
    int64_t pass_reco = 0, pass_gen = 0;
    double wsum = 0;
    for (int64_t b = 0; b < f.numJets(); b += kBlockRows) {
      const UnfoldArrays u = f.readUnfold(b, std::min(f.numJets(), b + kBlockRows));
      for (int64_t i = 0; i < u.n(); ++i) {
        pass_reco += u.passReco(i);
        pass_gen += u.passGen(i);
        wsum += u.weight(i);
        for (int k = 0; k < kNumSubs; ++k) {
          if (!u.gen_subs.empty()) subs[0][k].add(u.gen_subs[i * kNumSubs + k]);
          if (!u.reco_subs.empty()) subs[1][k].add(u.reco_subs[i * kNumSubs + k]);
        }
      }
    }
    s["pass_fraction"] = nlohmann::json::object();
    if (f.hasLevel("reco")) s["pass_fraction"]["reco"] = double(pass_reco) / f.numJets();
    if (f.hasLevel("gen")) s["pass_fraction"]["gen"] = double(pass_gen) / f.numJets();
    s["weight_sum"] = wsum;
    if (f.hasSubs())
      for (int k = 0; k < kNumSubs; ++k) {
        if (f.hasLevel("gen")) s["levels"]["gen"]["subs"][observableName(k)] = subs[0][k].json();
        if (f.hasLevel("reco")) s["levels"]["reco"]["subs"][observableName(k)] = subs[1][k].json();
      }
  }
  return s;
}

std::string formatSummary(const nlohmann::json& s) {
  std::ostringstream os;
  char buf[256];
  os << s["file"].get<std::string>() << ": " << s["layout"].get<std::string>() << " layout, "
     << s["jets"].get<int64_t>() << " jets, " << s["particles_per_jet"].get<int64_t>()
     << " particle slots\n";
  os << "datasets:\n";
  for (auto& [name, d] : s["datasets"].items()) {
    std::string shape = "(";
    for (size_t k = 0; k < d["shape"].size(); ++k)
      shape += (k ? "," : "") + std::to_string(d["shape"][k].get<int64_t>());
    shape += d["shape"].size() == 1 ? ",)" : ")";
    std::snprintf(buf, sizeof buf, "  %-14s %-16s %s\n", name.c_str(), shape.c_str(),
                  d["type"].get<std::string>().c_str());
    os << buf;
  }
  if (!s["attributes"].empty()) {
    os << "attributes:\n";
    for (auto& [k, v] : s["attributes"].items()) {
      std::string text = v.get<std::string>();
      if (text.size() > 70) text = text.substr(0, 67) + "...";
      os << "  " << k << " = " << text << "\n";
    }
  }
  if (s.contains("labels")) {
    os << "labels:";
    const auto& c = s["labels"]["counts"];
    for (size_t k = 0; k < c.size(); ++k) os << " " << k << ":" << c[k].get<int64_t>();
    os << "\n";
  }
  if (s.contains("pass_fraction") && !s["pass_fraction"].empty()) {
    os << "pass fraction:";
    const char* sep = " ";
    for (const char* level : {"reco", "gen"})
      if (s["pass_fraction"].contains(level)) {
        os << sep << level << " " << s["pass_fraction"][level].get<double>();
        sep = ", ";
      }
    if (s["pass_fraction"].size() == 1)
      os << " (the file holds its " << s["pass_fraction"].begin().key() << " level only)";
    os << "\n";
  }
  for (auto& [level, l] : s["levels"].items()) {
    std::snprintf(buf, sizeof buf, "%-18s %10s %10s %10s %10s\n", ("[" + level + "]").c_str(),
                  "mean", "std", "min", "max");
    os << buf;
    auto row = [&](const std::string& name, const nlohmann::json& m) {
      if (m.is_null()) return;
      std::snprintf(buf, sizeof buf, "  %-16s %10.4g %10.4g %10.4g %10.4g\n", name.c_str(),
                    m["mean"].get<double>(), m["std"].get<double>(), m["min"].get<double>(),
                    m["max"].get<double>());
      os << buf;
    };
    row("particles", l["particle_multiplicity"]);
    for (auto& [k, m] : l["jet"].items()) row("jet " + k, m);
    if (l.contains("subs"))
      for (auto& [k, m] : l["subs"].items()) row("obs " + k, m);
  }
  return os.str();
}

}  // namespace foldfarm::data
