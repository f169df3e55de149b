#include "tests/report/campaign_fixture.hpp"

#include <hdf5.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <stdexcept>

#include "core/base/atomic_file.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/histogram.hpp"

namespace foldfarm::report::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

void writeDataset(hid_t file, const std::string& name, const std::vector<double>& v,
                  std::vector<hsize_t> dims) {
  data::H5Handle lcpl = FF_H5_OWN(H5Pcreate(H5P_LINK_CREATE), data::H5Kind::kPropList, name);
  FF_H5_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1), name);
  data::H5Handle space =
      FF_H5_OWN(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                data::H5Kind::kDataspace, name);
  data::H5Handle ds = FF_H5_OWN(H5Dcreate2(file, name.c_str(), H5T_IEEE_F64LE, space.get(),
                                           lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                                data::H5Kind::kDataset, name);
  FF_H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), name);
}

std::vector<double> readDataset(hid_t file, const std::string& name) {
  data::H5Handle ds =
      FF_H5_OWN(H5Dopen2(file, name.c_str(), H5P_DEFAULT), data::H5Kind::kDataset, name);
  std::vector<hsize_t> dims = data::h5Dims(ds.get(), nullptr);
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  std::vector<double> v(n);
  FF_H5_CHECK(H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), name);
  return v;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * (v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - lo) * (v[hi] - v[lo]);
}

std::vector<double> density(const std::vector<double>& counts, const std::vector<double>& edges) {
  double total = 0;
  for (double c : counts) total += c;
  std::vector<double> d(counts.size(), 0.0);
  for (size_t b = 0; b < counts.size(); ++b)
    if (total > 0) d[b] = counts[b] / (total * (edges[b + 1] - edges[b]));
  return d;
}

}  // namespace

void setBandsValue(const std::string& bands_path, const std::string& dataset, size_t index,
                   double value) {
  const std::string what = bands_path + ": " + dataset;
  data::H5Handle file =
      FF_H5_OWN(H5Fopen(bands_path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), data::H5Kind::kFile, what);
  data::H5Handle ds =
      FF_H5_OWN(H5Dopen2(file.get(), dataset.c_str(), H5P_DEFAULT), data::H5Kind::kDataset, what);
  std::vector<hsize_t> dims = data::h5Dims(ds.get(), nullptr);
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  std::vector<double> v(n);
  FF_H5_CHECK(H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), what);
  v.at(index) = value;
  FF_H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), what);
}

void removeBandsDataset(const std::string& bands_path, const std::string& dataset) {
  const std::string what = bands_path + ": " + dataset;
  data::H5Handle file =
      FF_H5_OWN(H5Fopen(bands_path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), data::H5Kind::kFile, what);
  FF_H5_CHECK(H5Ldelete(file.get(), dataset.c_str(), H5P_DEFAULT), what);
}

ScratchDir::ScratchDir() {
  std::string tmpl = (fs::temp_directory_path() / "ff-report-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

json commandSpec(int replicas, int members, const std::vector<std::string>& failing) {
  json spec = {{"name", "report-e2e"},
               {"task", "command"},
               {"replicas", replicas},
               {"members", members},
               {"seed", 42},
               {"params", {{"argv", {"/bin/true"}}}},
               {"resources", {{"cpu_slots", 2}, {"threads_per_task", 1}}},
               {"executor", "local"},
               {"retry", {{"max_attempts", 2}, {"backoff_s", 0.0}}}};
  for (const auto& id : failing) spec["overrides"][id] = {{"argv", {"/bin/false"}}};
  return spec;
}

void writeJson(const std::string& path, const json& j) {
  writeFileAtomic(path, j.dump(2));
}

AggregateFixture writeAggregate(const std::string& agg_dir, int replicas, bool with_truth,
                                unsigned seed) {
  fs::create_directories(agg_dir);
  AggregateFixture fx;
  fx.summary = {{"replicas", replicas},
                {"chains", replicas * 2},
                {"campaign_seed", 42},
                {"truth", with_truth ? json("truth.h5") : json()},
                {"observables", json::object()}};
  std::mt19937_64 rng(seed);
  struct Obs {
    const char* name;
    double lo, hi;
    int edges;
    double mean, sigma;
  };
  const int band_replicas = replicas >= 3 ? replicas - 1 : replicas;
  fx.summary["band_replicas"] = band_replicas;
  const std::vector<Obs> obs = {{"mass", 0, 75, 50, 22, 9},
                                {"width", 0, 0.6, 50, 0.14, 0.07},
                                {"multiplicity", 0, 80, 80, 30, 9}};
  const std::string path = agg_dir + "/bands.h5";
  AtomicFile out(path);
  data::H5Handle file = data::h5Create(out.tempPath());
  for (const auto& o : obs) {
    const data::Binning bin = data::Binning::linspace(o.lo, o.hi, o.edges);
    const size_t nb = static_cast<size_t>(bin.numBins());
    auto shape = [&](double mean, double sigma, double events) {
      std::vector<double> c(nb);
      for (size_t b = 0; b < nb; ++b) {
        const double x = 0.5 * (bin.edges[b] + bin.edges[b + 1]);
        c[b] = events * std::exp(-0.5 * std::pow((x - mean) / sigma, 2));
      }
      return c;
    };
    const std::vector<double> truth = density(shape(o.mean, o.sigma, 1), bin.edges);
    const std::vector<double> prior = density(shape(o.mean * 1.12, o.sigma * 1.1, 1), bin.edges);
    std::vector<std::vector<double>> rows;
    for (int r = 0; r < replicas; ++r) {
      std::vector<double> c = shape(o.mean * 1.01, o.sigma, 4000);
      for (double& v : c) v = std::poisson_distribution<long>(std::max(v, 1e-9))(rng);
      rows.push_back(density(c, bin.edges));
    }
    // The spread is over the bootstrap replicas (1 on) where there are two or more of them,
    // else over every replica; the mean over every replica.
    const std::vector<std::vector<double>> spread(rows.begin() + (band_replicas < replicas ? 1 : 0),
                                                  rows.end());
    const int dof = std::max(1, band_replicas - 1);
    std::vector<double> mean(nb), band_mean(nb), sd(nb), p16(nb), p84(nb), p2(nb), p97(nb),
        cov(nb * nb), corr(nb * nb);
    for (size_t b = 0; b < nb; ++b) {
      std::vector<double> col;
      for (const auto& row : spread) col.push_back(row[b]);
      for (const auto& row : rows) mean[b] += row[b] / replicas;
      for (double v : col) band_mean[b] += v / band_replicas;
      for (double v : col) sd[b] += (v - band_mean[b]) * (v - band_mean[b]) / dof;
      sd[b] = std::sqrt(sd[b]);
      p16[b] = percentile(col, 16);
      p84[b] = percentile(col, 84);
      p2[b] = percentile(col, 2.5);
      p97[b] = percentile(col, 97.5);
    }
    for (size_t i = 0; i < nb; ++i)
      for (size_t j = 0; j < nb; ++j) {
        double c = 0;
        for (const auto& row : spread) c += (row[i] - band_mean[i]) * (row[j] - band_mean[j]) / dof;
        cov[i * nb + j] = c;
        corr[i * nb + j] = sd[i] > 0 && sd[j] > 0 ? c / (sd[i] * sd[j]) : 0.0;
      }
    std::vector<double> flat;
    for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
    const std::string g = o.name;
    writeDataset(file.get(), g + "/edges", bin.edges, {nb + 1});
    writeDataset(file.get(), g + "/nominal", mean, {nb});
    writeDataset(file.get(), g + "/std", sd, {nb});
    writeDataset(file.get(), g + "/p16", p16, {nb});
    writeDataset(file.get(), g + "/p84", p84, {nb});
    writeDataset(file.get(), g + "/p2_5", p2, {nb});
    writeDataset(file.get(), g + "/p97_5", p97, {nb});
    writeDataset(file.get(), g + "/covariance", cov, {nb, nb});
    writeDataset(file.get(), g + "/correlation", corr, {nb, nb});
    writeDataset(file.get(), g + "/replicas", flat, {static_cast<hsize_t>(replicas), nb});
    writeDataset(file.get(), g + "/prior", prior, {nb});
    // Without variations the total covariance is the statistical one.
    writeDataset(file.get(), g + "/covariance_total", cov, {nb, nb});
    writeDataset(file.get(), g + "/std_total", sd, {nb});
    json js = {{"bins", nb}};
    if (with_truth) {
      writeDataset(file.get(), g + "/truth", truth, {nb});
      // Its statistical error, from a truth sample of 20000 events.
      std::vector<double> truth_std(nb);
      for (size_t b = 0; b < nb; ++b) {
        const double w = bin.edges[b + 1] - bin.edges[b], p = truth[b] * w;
        truth_std[b] = std::sqrt(p * (1 - p) / 20000) / w;
      }
      writeDataset(file.get(), g + "/truth_std", truth_std, {nb});
      js["delta_prior"] = data::triangularDiscriminator(prior, truth, bin);
      js["delta_unfolded"] = data::triangularDiscriminator(mean, truth, bin);
      js["delta_unfolded_err"] = 0.01;
      js["coverage_68"] = 0.5;
      js["coverage_95"] = 0.75;
      js["coverage_68_total"] = 0.6;
      js["coverage_95_total"] = 0.9;
    } else {
      for (const char* k : {"delta_prior", "delta_unfolded", "delta_unfolded_err", "coverage_68",
                            "coverage_95", "coverage_68_total", "coverage_95_total"})
        js[k] = nullptr;
    }
    // The root mean square of sd / mean weighted by the mean (ensembles/systematics.hpp).
    double num = 0, den = 0;
    for (size_t b = 0; b < nb; ++b)
      if (mean[b] > 0) {
        num += sd[b] * sd[b] / mean[b];
        den += mean[b];
      }
    const double stat = std::sqrt(num / den);
    js["uncertainty"] = {{"stat", stat}, {"total", stat}};
    fx.summary["observables"][g] = js;
    fx.observables.push_back(g);
  }
  data::h5WriteInt64Attr(file.get(), "replicas", replicas);
  data::h5WriteInt64Attr(file.get(), "band_replicas", band_replicas);
  data::h5WriteInt64Attr(file.get(), "chains", replicas * 2);
  file.close(path);
  out.commit();
  fx.summary["variations"] = json::array();
  writeJson(agg_dir + "/summary.json", fx.summary);
  return fx;
}

void addVariations(const std::string& agg_dir, AggregateFixture& fx) {
  fx.summary["variations"] = json::array({{{"name", "closure"},
                                           {"type", "non_closure"},
                                           {"source", "closure"},
                                           {"direction", ""},
                                           {"chains", 2},
                                           {"replicas", 1}},
                                          {{"name", "det_down"},
                                           {"type", "detector"},
                                           {"source", "det"},
                                           {"direction", "down"},
                                           {"chains", 2},
                                           {"replicas", 2},
                                           {"shift_from", "warm_reference"},
                                           {"chains_in_shift", 1}},
                                          {{"name", "det_up"},
                                           {"type", "detector"},
                                           {"source", "det"},
                                           {"direction", "up"},
                                           {"chains", 2},
                                           {"replicas", 2}},
                                          {{"name", "herwig"},
                                           {"type", "modelling"},
                                           {"source", "generator"},
                                           {"direction", ""},
                                           {"chains", 1},
                                           {"replicas", 1},
                                           {"shift_from", "warm_reference"}},
                                          {{"name", "mcstat"},
                                           {"type", "mc_bootstrap"},
                                           {"source", "mcstat"},
                                           {"direction", ""},
                                           {"chains", 3},
                                           {"replicas", 3}}});
  // A 1x1 PNG: the report embeds the aggregation's figure as it is.
  const std::string png(
      "\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01"
      "\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\x0d\x49\x44"
      "\x41\x54\x78\xda\x63\x64\x60\xf8\x5f\x0f\x00\x02\x87\x01\x80\xeb\x47\xba\x92"
      "\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82",
      70);
  fx.summary["shift_noise"] = "kept";
  // The systematics widen the total band: std_total = sqrt(std² + (6% of the nominal)²).
  {
    const std::string bands = agg_dir + "/bands.h5";
    data::H5Handle file =
        FF_H5_OWN(H5Fopen(bands.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), data::H5Kind::kFile, bands);
    for (const auto& name : fx.observables) {
      const std::vector<double> sd = readDataset(file.get(), name + "/std");
      const std::vector<double> nominal = readDataset(file.get(), name + "/nominal");
      std::vector<double> total(sd.size());
      for (size_t b = 0; b < sd.size(); ++b)
        total[b] = std::sqrt(sd[b] * sd[b] + 0.0036 * nominal[b] * nominal[b]);
      data::H5Handle ds =
          FF_H5_OWN(H5Dopen2(file.get(), (name + "/std_total").c_str(), H5P_DEFAULT),
                    data::H5Kind::kDataset, bands);
      FF_H5_CHECK(
          H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, total.data()),
          bands);
    }
  }
  for (const auto& name : fx.observables) {
    json& u = fx.summary["observables"][name]["uncertainty"];
    const double stat = u["stat"].get<double>();
    u["mc_stat"] = 0.012;
    fx.summary["observables"][name]["training_noise"] = name == "mass" ? json(0.007) : json();
    fx.summary["observables"][name]["shift_error"] = {{"generator", 0.013}, {"det", nullptr}};
    if (name == "mass")
      fx.summary["observables"][name]["warm_start_effect"] = {{"shift", 0.041},
                                                              {"shift_error", 0.009}};
    u["det"] = 0.034;
    u["generator"] = 0.051;
    u["non_closure"] = 0.02;
    u["total"] =
        std::sqrt(stat * stat + 0.012 * 0.012 + 0.034 * 0.034 + 0.051 * 0.051 + 0.02 * 0.02);
    if (fx.summary["observables"][name]["coverage_68_total"].is_number())
      fx.summary["observables"][name]["coverage_68_total"] = 0.7;
    writeFileAtomic(agg_dir + "/" + name + "_breakdown.png", png);
    if (name == "mass") writeFileAtomic(agg_dir + "/" + name + "_shifts.png", png);
  }
  writeJson(agg_dir + "/summary.json", fx.summary);
}

void writeChainHistory(const std::string& task_dir, int iterations, double ess_fraction,
                       int clipped) {
  fs::create_directories(task_dir);
  json steps = json::array();
  for (int it = 0; it < iterations; ++it)
    for (int st = 1; st <= 2; ++st) {
      const bool last = it == iterations - 1 && st == 2;
      const double frac = ess_fraction * (1.0 - 0.05 * it);
      steps.push_back({{"iteration", it},
                       {"step", st},
                       {"ess", frac * 1000},
                       {"ess_fraction", frac},
                       {"reweighting",
                        {{"events", 1000},
                         {"non_finite", 0},
                         {"clipped", last ? clipped : 0},
                         {"mean_before", 1.0},
                         {"max_after", 3.5 + it},
                         // The factors alone: not the weights' (no event weights of their
                         // own here would give the same), so that the report tells them apart.
                         {"ess", (frac + 0.1) * 1000},
                         {"ess_fraction", frac + 0.1}}}});
    }
  writeJson(task_dir + "/history.json", {{"spec", json::object()}, {"steps", steps}});
}

void writeWarmstart(const std::string& dir) {
  fs::create_directories(dir);
  json warm = json::array(), scratch = json::array();
  for (int e = 1; e <= 12; ++e) {
    warm.push_back(0.62 + 0.06 * std::exp(-e / 1.5));
    scratch.push_back(0.64 + 0.08 * std::exp(-e / 4.0));
  }
  writeJson(dir + "/warmstart.json", {{"scratch_best_val_loss", scratch.back()},
                                      {"warm_best_val_loss", warm.back()},
                                      {"epochs_scratch_to_best", 12},
                                      {"epochs_warm_to_scratch_best", 1},
                                      {"speedup", 12.0},
                                      {"val_loss_warm", warm},
                                      {"val_loss_scratch", scratch}});
}

}  // namespace foldfarm::report::testing
