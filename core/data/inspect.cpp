#include "core/data/inspect.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "core/data/features.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/observables.hpp"
#include "core/data/weight_sums.hpp"

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

// What a file's producer can get wrong without a NaN or a wrong shape: each check counts the
// jets (or particle slots) that fail it and keeps the first failing row, so that a warning can
// name it. Real particles are the slots whose feature 2 is non-zero (jet_arrays.hpp).
struct Check {
  const char* key;
  int64_t count = 0;
  int64_t first_row = -1;
  void fail(int64_t row) {
    if (count++ == 0) first_row = row;
  }
};

constexpr const char* kParticleFeatureNames[kNumParticleFeatures] = {"deta",
                                                                     "dphi",
                                                                     "log(1-pt/ptjet)",
                                                                     "log pt",
                                                                     "log(1-e/ejet)",
                                                                     "log e",
                                                                     "dr",
                                                                     "charge",
                                                                     "is charged hadron",
                                                                     "is neutral hadron",
                                                                     "is photon",
                                                                     "is electron",
                                                                     "is muon"};

nlohmann::json levelSummary(const JetFile& f, const std::string& level) {
  Moments mult;
  Moments jet[kNumJetFeatures];
  Moments part[kNumParticleFeatures];
  std::map<int64_t, int64_t> labels;
  Check empty{"jets_without_particles"}, pt{"jet_pt_not_positive"},
      count{"jet_multiplicity_not_the_particle_count"}, dphi{"dphi_outside_pi"},
      ratio{"log_ratio_not_negative"}, dr{"dr_not_hypot_deta_dphi"},
      onehot{"particle_type_not_one_hot"}, charge{"charge_not_unit"},
      hidden{"padding_slots_with_values"}, energy{"energy_fractions_above_one"},
      single{"one_particle_read_as_padding"};
  int64_t checked = 0;  // the jets the checks looked at (those passing the level's selection)
  constexpr double kPi = 3.14159265358979323846;
  for (int64_t b = 0; b < f.numJets(); b += kBlockRows) {
    const int64_t e = std::min(f.numJets(), b + kBlockRows);
    const JetArrays a = f.readJets(b, e, level);
    // An event that fails the level's selection may hold no jet there (zeros): not checked.
    const std::string flags = "pass_" + level;
    const std::vector<uint8_t> pass =
        !level.empty() && f.has(flags) ? f.readPassFlags(flags, b, e) : std::vector<uint8_t>{};
    for (int64_t i = 0; i < a.n; ++i) {
      const int64_t row = b + i;
      const int64_t m = a.multiplicity(i);
      mult.add(static_cast<double>(m));
      for (int k = 0; k < kNumJetFeatures; ++k) jet[k].add(a.jet(i)[k]);
      if (!a.labels.empty()) ++labels[a.labels[i]];
      if (!pass.empty() && pass[static_cast<size_t>(i)] == 0) continue;
      ++checked;
      if (!(a.jet(i)[0] > 0)) pt.fail(row);
      bool bad_dphi = false, bad_ratio = false, bad_dr = false, bad_type = false,
           bad_charge = false;
      int64_t hidden_slots = 0;  // slots read as padding (feature 2 is 0) that hold values
      double energy_sum = 0;     // Σ E/E_jet = Σ (1 - exp(feature 4)): at most 1
      for (int64_t j = 0; j < a.P; ++j) {
        const float* x = a.particle(i, j);
        if (x[2] == 0.0f) {
          bool values = false;
          for (int k = 0; k < kNumParticleFeatures; ++k) values |= x[k] != 0.0f;
          hidden_slots += values ? 1 : 0;
          continue;
        }
        for (int k = 0; k < kNumParticleFeatures; ++k) part[k].add(x[k]);
        energy_sum += 1.0 - std::exp(double(x[4]));
        // Float32 features of a wrapped angle may round a hair past pi.
        bad_dphi |= std::fabs(x[1]) > kPi + 1e-5;
        bad_ratio |= x[2] > 0.0f || x[4] > 0.0f;
        const double hyp = std::hypot(double(x[0]), double(x[1]));
        bad_dr |= std::fabs(x[6] - hyp) > 1e-4 + 1e-4 * hyp;
        float types = 0;
        for (int k = 8; k < kNumParticleFeatures; ++k) {
          bad_type |= x[k] != 0.0f && x[k] != 1.0f;
          types += x[k];
        }
        bad_type |= types > 1.0f;
        bad_charge |= x[7] != 0.0f && x[7] != 1.0f && x[7] != -1.0f;
      }
      if (bad_dphi) dphi.fail(row);
      if (bad_ratio) ratio.fail(row);
      if (bad_dr) dr.fail(row);
      if (bad_type) onehot.fail(row);
      if (bad_charge) charge.fail(row);
      // A jet of one particle, which carries all of the jet's pT: log(1 - pT/pT_jet) is -inf,
      // and a producer that fills it with 0 (np.ma.log(...).filled(0)) makes the particle
      // padding. One warning for it, not three (no particle, a multiplicity of 1 against 0, a
      // padding slot with values).
      const float column = a.jet(i)[3];
      if (m == 0 && hidden_slots == 1 && column == 1.0f) {
        single.fail(row);
      } else {
        if (m == 0) empty.fail(row);
        // A file cut to its P slots may keep the jet's full count in the column (a jet that
        // fills every slot and counts more).
        if (column != static_cast<float>(m) && !(m == a.P && column > static_cast<float>(m)))
          count.fail(row);
        if (hidden_slots > 0) hidden.fail(row);
      }
      // The particles' energies add up to the jet's (to less where a producer dropped some
      // after forming the jet): well above 1, feature 4 is not log(1 - E/E_jet) (log(E/E_jet)
      // gives m - 1 for m particles). Two particles cannot tell (either gives 1).
      if (m >= 3 && energy_sum > 1.5) energy.fail(row);
    }
  }
  static const char* names[kNumJetFeatures] = {"pt", "eta", "mass", "multiplicity"};
  nlohmann::json j;
  j["particle_multiplicity"] = mult.json();
  for (int k = 0; k < kNumJetFeatures; ++k) j["jet"][names[k]] = jet[k].json();
  for (int k = 0; k < kNumParticleFeatures; ++k)
    j["particles"][kParticleFeatureNames[k]] = part[k].json();
  j["checks"] = nlohmann::json::object();
  j["checked_jets"] = checked;
  for (const Check* c :
       {&empty, &pt, &count, &dphi, &ratio, &dr, &onehot, &charge, &hidden, &energy, &single})
    j["checks"][c->key] = {{"jets", c->count}, {"first_row", c->first_row}};
  // Standardised means of the continuous particle features (the network's inputs): far from
  // zero, the file's features are not those the standardisation was made for (other units).
  // Not features 2 and 4, whose means depend on the multiplicity (jets of two or three
  // particles sit 5-10 standard deviations out; the energy check above covers them).
  const FeatureStats stats = FeatureStats::jetClass();
  for (int k : {0, 1, 3, 5}) {
    if (part[k].n == 0) break;
    j["standardized_mean"][kParticleFeatureNames[k]] =
        (part[k].sum / part[k].n - stats.particle_mean[k]) / stats.particle_std[k];
  }
  if (!labels.empty()) {
    const int64_t classes = labels.rbegin()->first + 1;
    std::vector<int64_t> counts(static_cast<size_t>(classes), 0);
    for (auto& [l, c] : labels) counts[static_cast<size_t>(l)] = c;
    j["labels"] = {{"classes", classes}, {"counts", counts}};
  }
  return j;
}

// One line per failed check of a level (levelSummary), naming the first row and what the
// producer likely did; empty when every check passed.
std::vector<std::string> levelWarnings(const std::string& level, const nlohmann::json& l) {
  const int64_t jets = l.value("checked_jets", int64_t{0});
  static const std::map<std::string, std::string> what = {
      {"jets_without_particles",
       "have no particle (every slot's feature 2 is 0): they train as empty jets; drop them or "
       "check the producer"},
      {"jet_pt_not_positive", "have jet pT <= 0 (jet column 0)"},
      {"jet_multiplicity_not_the_particle_count",
       "give a multiplicity (jet column 3) other than their count of particles (slots whose "
       "feature 2 is non-zero; a jet filling every slot may count more)"},
      {"one_particle_read_as_padding",
       "have one particle, whose feature 2 is 0: log(1 - pT/pT_jet) of the particle that "
       "carries all the jet's pT is -inf, filled with 0 (np.ma.log(...).filled(0)), which "
       "makes it padding (OmniLearn's mask drops it too): these jets train as empty; drop them "
       "or store a finite negative value (log of 1 - pT/pT_jet clipped at 1e-8)"},
      {"dphi_outside_pi",
       "have a particle with |dphi| > pi (feature 1): wrap phi - phi_jet into (-pi, pi]"},
      {"log_ratio_not_negative",
       "have a particle whose feature 2 or 4 is positive: they are log(1 - pT/pT_jet) and "
       "log(1 - E/E_jet), negative for a particle softer than its jet"},
      {"dr_not_hypot_deta_dphi",
       "have a particle whose dR (feature 6) is not hypot(deta, dphi) of features 0 and 1"},
      {"particle_type_not_one_hot",
       "have a particle whose type flags (features 8-12) are not 0/1 with at most one set"},
      {"charge_not_unit", "have a particle whose charge (feature 7) is not -1, 0 or +1"},
      {"padding_slots_with_values",
       "have a slot whose feature 2 is 0 but other features are not: foldfarm reads it as "
       "padding and drops it (a real particle needs feature 2 != 0)"},
      {"energy_fractions_above_one",
       "have particles whose energy fractions 1 - exp(feature 4) add up to more than 1.5: "
       "log(E/E_jet) stored where log(1 - E/E_jet) belongs? (and likewise feature 2)"}};
  std::vector<std::string> out;
  const std::string where = level.empty() ? "" : level + " level: ";
  for (auto& [key, c] : l["checks"].items()) {
    const int64_t n = c["jets"].get<int64_t>();
    if (n == 0) continue;
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.3g%%",
                  100.0 * double(n) / double(std::max<int64_t>(jets, 1)));
    out.push_back(where + std::to_string(n) + " jet(s) (" + pct + ", first row " +
                  std::to_string(c["first_row"].get<int64_t>()) + ") " + what.at(key));
  }
  if (l.contains("standardized_mean"))
    for (auto& [name, z] : l["standardized_mean"].items()) {
      const double v = z.get<double>();
      if (std::fabs(v) <= 3) continue;
      char buf[400];
      std::snprintf(buf, sizeof buf,
                    "feature '%s' lies %.1f standard deviations from the mean the "
                    "standardisation (JetClass statistics) expects",
                    name.c_str(), v);
      out.push_back(where + buf + ": other units (GeV expected) or another definition?");
    }
  return out;
}

}  // namespace

namespace {

// An HDF5 file of no jets nor events (no root dataset data, reco or gen): its datasets, in
// groups too (foldfarm's bands.h5, event_weights.h5, a chain's weights.h5), with their shapes,
// and the root's attributes. nullopt for a jets or unfolding file (JetFile reads it).
std::optional<nlohmann::json> summarizeOtherFile(H5Handle& file, const std::string& path,
                                                 const std::vector<std::string>& attrs) {
  for (const std::string& name : h5ListDatasets(file.get()))
    if (name == "data" || name == "reco" || name == "gen") return std::nullopt;
  nlohmann::json s;
  s["file"] = path;
  s["layout"] = "other";
  s["attributes"] = nlohmann::json::object();
  for (const std::string& k : attrs) s["attributes"][k] = h5ReadAttrAsString(file.get(), k);
  s["datasets"] = nlohmann::json::object();
  for (const std::string& name : h5ListDatasetsDeep(file.get())) {
    H5Handle ds = FF_H5_OWN(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Kind::kDataset,
                            path + ": " + name);
    H5T_class_t cls{};
    const std::vector<hsize_t> dims = h5Dims(ds.get(), &cls);
    s["datasets"][name] = {{"shape", dims},
                           {"type", cls == H5T_FLOAT     ? "float"
                                    : cls == H5T_INTEGER ? "integer"
                                    : cls == H5T_STRING  ? "string"
                                                         : "other"}};
  }
  return s;
}

// A file of float arrays written by foldfarm (writeArraysFile: `data observables`), told by its
// "layout" attribute: rows, each dataset's shape and its columns' moments (named by the
// "columns" attribute when it lists as many), read in blocks of rows; any other file that holds
// no jets nor events: summarizeOtherFile. nullopt for jets and unfolding files.
std::optional<nlohmann::json> summarizeArraysFile(const std::string& path) {
  H5Handle file = h5OpenInput(path, "");
  const std::vector<std::string> attrs = h5AttrNames(file.get());
  if (std::find(attrs.begin(), attrs.end(), "layout") == attrs.end() ||
      h5ReadAttrAsString(file.get(), "layout") != "arrays")
    return summarizeOtherFile(file, path, attrs);
  nlohmann::json s;
  s["file"] = path;
  s["layout"] = "arrays";
  s["attributes"] = nlohmann::json::object();
  for (const std::string& k : attrs) s["attributes"][k] = h5ReadAttrAsString(file.get(), k);
  const nlohmann::json names =
      nlohmann::json::parse(h5ReadAttrAsString(file.get(), "columns"), nullptr, false);
  int64_t rows = -1;
  for (const std::string& name : h5ListDatasets(file.get())) {
    H5Handle ds = FF_H5_OWN(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Kind::kDataset,
                            path + ": " + name);
    H5T_class_t cls{};
    const std::vector<hsize_t> dims = h5Dims(ds.get(), &cls);
    s["datasets"][name] = {{"shape", dims}, {"type", cls == H5T_FLOAT ? "float" : "other"}};
    if (dims.empty() || dims.size() > 2 || (cls != H5T_FLOAT && cls != H5T_INTEGER)) continue;
    const auto n = static_cast<int64_t>(dims[0]);
    const int64_t cols = dims.size() == 2 ? static_cast<int64_t>(dims[1]) : 1;
    rows = std::max(rows, n);
    std::vector<Moments> m(static_cast<size_t>(cols));
    H5Handle fspace =
        FF_H5_OWN(H5Dget_space(ds.get()), H5Kind::kDataspace, path + ": " + name + " space");
    std::vector<double> buf;
    for (int64_t b = 0; b < n; b += kBlockRows) {
      const int64_t e = std::min(n, b + kBlockRows);
      hsize_t start[2] = {static_cast<hsize_t>(b), 0};
      hsize_t count[2] = {static_cast<hsize_t>(e - b), static_cast<hsize_t>(cols)};
      FF_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
                  path + ": " + name);
      H5Handle mspace = FF_H5_OWN(H5Screate_simple(static_cast<int>(dims.size()), count, nullptr),
                                  H5Kind::kDataspace, path + ": " + name + " memory");
      buf.resize(static_cast<size_t>((e - b) * cols));
      FF_H5_CHECK(
          H5Dread(ds.get(), H5T_NATIVE_DOUBLE, mspace.get(), fspace.get(), H5P_DEFAULT, buf.data()),
          path + ": " + name);
      for (int64_t i = 0; i < e - b; ++i)
        for (int64_t k = 0; k < cols; ++k)
          m[static_cast<size_t>(k)].add(buf[static_cast<size_t>(i * cols + k)]);
    }
    const bool named = names.is_array() && static_cast<int64_t>(names.size()) == cols &&
                       std::all_of(names.begin(), names.end(),
                                   [](const nlohmann::json& x) { return x.is_string(); });
    // In the file's order: [{"name": "mass", "mean": ..., "std": ..., "min": ..., "max": ...}].
    nlohmann::json& out = s["levels"][name]["columns"];
    out = nlohmann::json::array();
    for (int64_t k = 0; k < cols; ++k) {
      nlohmann::json c = m[static_cast<size_t>(k)].json();
      if (c.is_null()) c = nlohmann::json::object();
      c["name"] = named ? names[static_cast<size_t>(k)].get<std::string>() : std::to_string(k);
      out.push_back(std::move(c));
    }
  }
  s["rows"] = std::max<int64_t>(rows, 0);
  return s;
}

}  // namespace

nlohmann::json summarizeFile(const std::string& path) {
  if (std::optional<nlohmann::json> arrays = summarizeArraysFile(path)) return *arrays;
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
    WeightSums w;
    for (int64_t b = 0; b < f.numJets(); b += kBlockRows) {
      const UnfoldArrays u = f.readUnfold(b, std::min(f.numJets(), b + kBlockRows));
      for (int64_t i = 0; i < u.n(); ++i) {
        pass_reco += u.passReco(i);
        pass_gen += u.passGen(i);
        wsum += u.weight(i);
        if (!u.weights.empty()) w.add(u.weight(i));
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
    // The file's event weights, where it has them: generators at NLO give negative ones, and
    // their share and the effective sample size (Σw)²/Σw² say what an unfolding can do.
    if (w.events > 0) {
      const double n = static_cast<double>(w.events);
      s["weights"] = {{"mean", w.mean()},
                      {"std", w.stddev()},
                      {"min", w.lo},
                      {"max", w.hi},
                      {"events", w.events},
                      {"sum", w.sum},
                      {"negative", w.negative},
                      {"negative_fraction", static_cast<double>(w.negative) / n},
                      {"negative_sum", w.sum_negative},
                      {"zero", w.zero},
                      {"ess", w.ess()},
                      {"ess_fraction", w.ess() / n}};
    }
    if (f.hasSubs())
      for (int k = 0; k < kNumSubs; ++k) {
        if (f.hasLevel("gen")) s["levels"]["gen"]["subs"][observableName(k)] = subs[0][k].json();
        if (f.hasLevel("reco")) s["levels"]["reco"]["subs"][observableName(k)] = subs[1][k].json();
      }
  }
  s["warnings"] = nlohmann::json::array();
  for (auto& [level, l] : s["levels"].items())
    for (std::string& w : levelWarnings(level == "jets" ? "" : level, l))
      s["warnings"].push_back(std::move(w));
  return s;
}

std::string formatSummary(const nlohmann::json& s) {
  std::ostringstream os;
  char buf[512];
  if (s["layout"] == "other")
    os << s["file"].get<std::string>() << ": holds no jets nor events (" << s["datasets"].size()
       << " dataset(s), e.g. foldfarm's bands, weights or histograms; h5py or h5dump read them)\n";
  else if (s["layout"] == "arrays")
    os << s["file"].get<std::string>() << ": arrays layout (float arrays written by foldfarm, "
       << "e.g. `data observables`), " << s["rows"].get<int64_t>() << " rows\n";
  else
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
  if (s.contains("weights")) {
    const nlohmann::json& w = s["weights"];
    std::snprintf(buf, sizeof buf,
                  "weights: sum %.6g over %lld events, mean %.4g, min %.4g, max %.4g; %lld "
                  "negative (%.1f%%, summing to %.4g), %lld zero; effective sample size %.0f "
                  "(%.1f%%)\n",
                  w["sum"].get<double>(), static_cast<long long>(w["events"].get<int64_t>()),
                  w["mean"].get<double>(), w["min"].get<double>(), w["max"].get<double>(),
                  static_cast<long long>(w["negative"].get<int64_t>()),
                  100 * w["negative_fraction"].get<double>(), w["negative_sum"].get<double>(),
                  static_cast<long long>(w["zero"].get<int64_t>()), w["ess"].get<double>(),
                  100 * w["ess_fraction"].get<double>());
    os << buf;
    if (!(w["sum"].get<double>() > 0))
      os << "  their total is not positive: an unfolding refuses these weights\n";
  }
  const nlohmann::json levels = s.value("levels", nlohmann::json::object());
  for (auto& [level, l] : levels.items()) {
    std::snprintf(buf, sizeof buf, "%-22s %10s %10s %10s %10s\n", ("[" + level + "]").c_str(),
                  "mean", "std", "min", "max");
    os << buf;
    auto row = [&](const std::string& name, const nlohmann::json& m) {
      if (m.is_null()) return;
      std::snprintf(buf, sizeof buf, "  %-20s %10.4g %10.4g %10.4g %10.4g\n", name.c_str(),
                    m["mean"].get<double>(), m["std"].get<double>(), m["min"].get<double>(),
                    m["max"].get<double>());
      os << buf;
    };
    if (l.contains("columns"))
      for (const auto& c : l["columns"])
        if (c.contains("mean")) row(c["name"].get<std::string>(), c);
    if (l.contains("particle_multiplicity")) row("particles", l["particle_multiplicity"]);
    if (l.contains("jet"))
      for (auto& [k, m] : l["jet"].items()) row("jet " + k, m);
    if (l.contains("subs"))
      for (auto& [k, m] : l["subs"].items()) row("obs " + k, m);
    if (l.contains("particles"))
      for (int k = 0; k < kNumParticleFeatures; ++k)
        if (l["particles"].contains(kParticleFeatureNames[k]))
          row(std::to_string(k) + " " + kParticleFeatureNames[k],
              l["particles"][kParticleFeatureNames[k]]);
  }
  if (s.contains("warnings")) {
    if (s["warnings"].empty())
      os << "checks: passed (particle features as OmniLearn defines them, jets with particles, "
            "multiplicity = particle count)\n";
    for (const auto& w : s["warnings"]) os << "warning: " << w.get<std::string>() << "\n";
  }
  return os.str();
}

}  // namespace foldfarm::data
