#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/output_lock.hpp"
#include "core/base/process.hpp"
#include "core/build_info/build_info.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/jet_writer.hpp"
#include "core/plot/gnuplot.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/aggregate_bench.hpp"
#include "ensembles/aggregate_systematics.hpp"
#include "ensembles/chain_groups.hpp"
#include "ensembles/chain_output.hpp"
#include "tests/data/bad_files.hpp"
#include "tests/support/resource_limits.hpp"

namespace fs = std::filesystem;
using namespace foldfarm::ensembles;

namespace {

class AggregateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("ff_agg_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  // The InputError of aggregating the chains under root_/set into root_/set_agg ("" when
  // they were aggregated), and that nothing was written.
  std::string refusalOf(const std::string& set) {
    const fs::path out = root_ / (set + "_agg");
    std::string why;
    try {
      aggregateRunsWithOptions({(root_ / set).string()}, out.string(), std::nullopt, {false});
    } catch (const foldfarm::InputError& e) {
      why = e.what();
    }
    EXPECT_FALSE(fs::exists(out)) << set;
    return why;
  }

  // A completed chain whose unfolded mass histogram has `b0`, `b1` in its first two bins.
  // `extra` joins its result.json (variation, mc, data); a non-empty `final` goes into its
  // weights.h5 as the per-event weights of the unfolded result.
  void writeChain(const std::string& rel, int replica, int member, double b0, double b1,
                  uint64_t seed = 42, const nlohmann::json& extra = nlohmann::json::object(),
                  const std::vector<double>& final_weights = {}, bool other_binning = false,
                  std::pair<double, double> sumw2 = {0.0, 0.0},
                  const std::vector<std::pair<double, double>>& iterations = {}) {
    fs::path dir = root_ / rel;
    fs::create_directories(dir);
    ChainHistograms h;
    h.unfolded = histogramObservables({}, {}, {});
    h.prior = histogramObservables({}, {}, {});
    h.unfolded[0].sumw[0] = b0;
    h.unfolded[0].sumw[1] = b1;
    h.unfolded[0].sumw2[0] = sumw2.first;
    h.unfolded[0].sumw2[1] = sumw2.second;
    h.prior[0].sumw[0] = 1.0;
    h.prior[0].sumw2[0] = 0.01;  // 100 effective events (the prior's mean has an error)
    // The other observables: one bin each, alike in every chain (compared with the truth,
    // which an empty histogram is not).
    for (size_t o = 1; o < h.prior.size(); ++o)
      for (auto* hs : {&h.unfolded, &h.prior}) {
        (*hs)[o].sumw[0] = 1.0;
        (*hs)[o].sumw2[0] = 0.01;
      }
    if (other_binning)
      for (auto* hs : {&h.unfolded, &h.prior})
        for (double& e : (*hs)[0].edges) e *= 2;
    for (const auto& [i0, i1] : iterations) {  // each iteration's mass bins 0 and 1
      h.iterations.push_back(histogramObservables({}, {}, {}));
      h.iterations.back()[0].sumw[0] = i0;
      h.iterations.back()[0].sumw[1] = i1;
    }
    writeChainHistograms(dir.string(), h, {{"replica", replica}, {"member", member}});
    if (!final_weights.empty()) {
      const std::string path = (dir / kChainWeightsFile).string();
      foldfarm::data::H5Handle f = foldfarm::data::h5Create(path);
      const uint64_t n = final_weights.size();
      writeFloat64Dataset(f.get(), path, "push", std::vector<double>(n, 1.0), {1, n});
      writeFloat64Dataset(f.get(), path, "pull", std::vector<double>(n, 1.0), {1, n});
      writeFloat64Dataset(f.get(), path, "final", final_weights, {n});
      f.close(path);
    }
    nlohmann::json result = {{"replica", replica}, {"member", member}, {"campaign_seed", seed}};
    result.update(extra);
    writeJsonAtomic((dir / kChainResultFile).string(), result);
  }

  // An unfold-layout file whose gen-level masses fall in the first two mass bins (0.5 and
  // 2.0 GeV) with these event weights and pass_gen flags (empty: none written).
  std::string writeSample(const std::string& name, const std::vector<int>& bins,
                          const std::vector<float>& weights, const std::vector<uint8_t>& pass_gen) {
    const int64_t n = static_cast<int64_t>(bins.size());
    foldfarm::data::UnfoldArrays u;
    u.reco = foldfarm::data::JetArrays::zeros(n, 1);
    u.gen = foldfarm::data::JetArrays::zeros(n, 1);
    for (int b : bins)
      u.gen_subs.insert(u.gen_subs.end(), {b == 0 ? 0.5f : 2.0f, 0.1f, 10.f, -5.f, 0.2f, 0.5f});
    u.reco_subs = u.gen_subs;
    u.weights = weights;
    u.pass_gen = pass_gen;
    if (!pass_gen.empty()) u.pass_reco.assign(bins.size(), 1);
    const std::string path = (root_ / name).string();
    foldfarm::data::writeUnfoldFile(path, u);
    return path;
  }

  // A truth file `name` of one event per mass in `masses` (the other observables alike, in
  // range, the same at reco level).
  std::string writeTruthOfMasses(const std::string& name, const std::vector<float>& masses) {
    const auto n = static_cast<int64_t>(masses.size());
    foldfarm::data::UnfoldArrays u;
    u.reco = foldfarm::data::JetArrays::zeros(n, 1);
    u.gen = foldfarm::data::JetArrays::zeros(n, 1);
    for (float m : masses) u.gen_subs.insert(u.gen_subs.end(), {m, 0.1f, 10.f, -5.f, 0.2f, 0.5f});
    u.reco_subs = u.gen_subs;
    const std::string truth = (root_ / name).string();
    foldfarm::data::writeUnfoldFile(truth, u);
    return truth;
  }

  // Truth: two events, masses in the first two bins -> fractions [0.5, 0.5].
  std::string writeTruth() { return writeTruthOfMasses("truth.h5", {0.5f, 2.0f}); }

  // The nominal: replica 0 with members [1,3] and [3,1] (mass fractions [.5,.5]),
  // replica 1 [1,3] ([.25,.75]), replica 2 [3,1] ([.75,.25]).
  void writeNominal(const std::string& at) {
    writeChain(at + "/r0m0", 0, 0, 1, 3);
    writeChain(at + "/r0m1", 0, 1, 3, 1);
    writeChain(at + "/r1m0", 1, 0, 1, 3);
    writeChain(at + "/r2m0", 2, 0, 3, 1);
  }

  // Beside writeNominal's chains: a detector pair det (half_difference), a detector pair jes
  // (max), a modelling variation herwig (source generator), an mc_bootstrap variation with 3
  // replicas (replica 1 with two members) and a non-closure variation whose pseudo-data is
  // returned.
  std::string writeVariations(const std::string& at) {
    const std::string pseudo = writeSample("pseudo.h5", {0, 0, 1, 1}, {1, 2, 1, 5}, {1, 1, 1, 0});
    writeChain(at + "/det_up_r0", 0, 0, 3, 2, 42, variation("det_up", "detector", "det", "up"));
    writeChain(at + "/det_up_r1", 1, 0, 2, 3, 42, variation("det_up", "detector", "det", "up"));
    writeChain(at + "/det_down_r0", 0, 0, 2, 3, 42,
               variation("det_down", "detector", "det", "down"));
    // Replica 5 has no nominal partner: it counts in the variation's mean, not in its shift.
    writeChain(at + "/det_down_r5", 5, 0, 1, 1, 42,
               variation("det_down", "detector", "det", "down"));
    writeChain(at + "/jes_up_r0", 0, 0, 11, 9, 42,
               variation("jes_up", "detector", "jes", "up", "max"));
    writeChain(at + "/jes_down_r0", 0, 0, 2, 3, 42,
               variation("jes_down", "detector", "jes", "down", "max"));
    writeChain(at + "/herwig_r0", 0, 0, 3, 1, 42, variation("herwig", "modelling", "generator"));
    writeChain(at + "/herwig_r2", 2, 0, 3, 1, 42, variation("herwig", "modelling", "generator"));
    writeChain(at + "/mcstat_r0", 0, 0, 1, 1, 42, variation("mcstat", "mc_bootstrap"));
    writeChain(at + "/mcstat_r1m0", 1, 0, 13, 7, 42, variation("mcstat", "mc_bootstrap"));
    writeChain(at + "/mcstat_r1m1", 1, 1, 11, 9, 42, variation("mcstat", "mc_bootstrap"));
    writeChain(at + "/mcstat_r2", 2, 0, 2, 3, 42, variation("mcstat", "mc_bootstrap"));
    nlohmann::json closure = variation("closure", "non_closure");
    closure["data"] = pseudo;
    writeChain(at + "/closure_r0m0", 0, 0, 3, 1, 42, closure);
    writeChain(at + "/closure_r0m1", 0, 1, 1, 1, 42, closure);
    return pseudo;
  }

  static nlohmann::json variation(const std::string& name, const std::string& type,
                                  const std::string& source = "", const std::string& direction = "",
                                  const std::string& symmetrise = "half_difference") {
    return {{"variation",
             {{"name", name},
              {"type", type},
              {"source", source},
              {"direction", direction},
              {"symmetrise", symmetrise}}}};
  }

  // The one-line message of the InputError that aggregating `camp` throws ("" if none).
  std::string refusal(const std::string& camp, const std::string& out) {
    try {
      aggregateRunsWithOptions({(root_ / camp).string()}, out, std::nullopt, {false});
    } catch (const foldfarm::InputError& e) {
      return e.what();
    }
    return "";
  }

  fs::path root_;
};

// Reads float64 datasets of one HDF5 file.
class H5Reader {
 public:
  explicit H5Reader(std::string path)
      : path_(std::move(path)), f_(foldfarm::data::h5OpenRead(path_)) {}
  std::vector<double> operator()(const std::string& name, std::vector<uint64_t>* dims = nullptr) {
    return readFloat64Dataset(f_.get(), path_, name, dims);
  }
  bool has(const std::string& name) { return foldfarm::data::h5Exists(f_.get(), name); }
  // An attribute of the root ("/"), of a group or (dataset = true) of a dataset, as text.
  std::string attr(const std::string& object, const std::string& name, bool dataset = false) {
    using foldfarm::data::H5Kind;
    if (object == "/") return foldfarm::data::h5ReadAttrAsString(f_.get(), name);
    foldfarm::data::H5Handle o =
        dataset
            ? FF_H5_OWN(H5Dopen2(f_.get(), object.c_str(), H5P_DEFAULT), H5Kind::kDataset, object)
            : FF_H5_OWN(H5Gopen2(f_.get(), object.c_str(), H5P_DEFAULT), H5Kind::kGroup, object);
    return foldfarm::data::h5ReadAttrAsString(o.get(), name);
  }

 private:
  std::string path_;
  foldfarm::data::H5Handle f_;
};

}  // namespace

TEST_F(AggregateTest, MembersAveragedReplicasGiveMeanStdPercentilesCovariance) {
  // Replica 0: members [1,3] and [3,1] -> [2,2]; replica 1: [1,3]; replica 2: [3,1].
  writeChain("camp/r0/m0", 0, 0, 1, 3);
  writeChain("camp/r0/m1", 0, 1, 3, 1);
  writeChain("camp/r1/m0", 1, 0, 1, 3);
  writeChain("camp/r2/m0", 2, 0, 3, 1);
  const std::string out = (root_ / "agg").string();
  nlohmann::json summary = aggregateRunsWithOptions({(root_ / "camp").string()}, out, std::nullopt,
                                                    AggregateOptions{false});
  EXPECT_EQ(summary["replicas"], 3);
  EXPECT_EQ(summary["chains"], 4);
  EXPECT_TRUE(summary["observables"]["mass"]["delta_unfolded"].is_null());

  const std::string bands = out + "/bands.h5";
  foldfarm::data::H5Handle f = foldfarm::data::h5OpenRead(bands);
  auto read = [&](const std::string& name, std::vector<uint64_t>* dims = nullptr) {
    return readFloat64Dataset(f.get(), bands, name, dims);
  };
  const double w = 75.0 / 49.0;  // mass bin width
  auto nominal = read("mass/nominal");
  auto std_ = read("mass/std");
  auto p16 = read("mass/p16");
  auto p84 = read("mass/p84");
  std::vector<uint64_t> cov_dims, rep_dims;
  auto cov = read("mass/covariance", &cov_dims);
  auto corr = read("mass/correlation");
  ASSERT_EQ(nominal.size(), 49u);
  ASSERT_EQ(cov_dims, (std::vector<uint64_t>{49, 49}));
  // The nominal is the mean over all three replicas; the spread is that of the bootstrap
  // replicas 1 and 2 only (.25 and .75): replica 0, the data as measured, is no draw.
  EXPECT_NEAR(nominal[0] * w, 0.5, 1e-12);
  EXPECT_NEAR(nominal[1] * w, 0.5, 1e-12);
  EXPECT_NEAR(std_[0] * w, std::sqrt(0.125), 1e-12);  // with replica 0: 0.25
  // numpy.percentile([.25, .75], 16) = 0.33, 84 -> 0.67
  EXPECT_NEAR(p16[0] * w, 0.33, 1e-12);
  EXPECT_NEAR(p84[0] * w, 0.67, 1e-12);
  EXPECT_NEAR(cov[1] * w * w, -0.125, 1e-12);
  EXPECT_NEAR(corr[1], -1.0, 1e-12);
  read("mass/replicas", &rep_dims);
  EXPECT_EQ(rep_dims, (std::vector<uint64_t>{3, 49}));  // every replica's density
  EXPECT_EQ(foldfarm::data::h5ReadAttrAsString(f.get(), "replicas"), "3");
  EXPECT_EQ(foldfarm::data::h5ReadAttrAsString(f.get(), "band_replicas"), "2");
  EXPECT_EQ(summary["band_replicas"], 2);
  EXPECT_NE(foldfarm::data::h5ReadAttrAsString(f.get(), "content")
                .find("over the band_replicas bootstrap replicas (r >= 1)"),
            std::string::npos);
  EXPECT_THROW(read("mass/absent"), foldfarm::InputError);

  // One bootstrap replica beside replica 0: too few for a spread of their own, so the band is
  // that of both (.5 and .25), and says so.
  writeChain("two/r0/m0", 0, 0, 1, 1);
  writeChain("two/r1/m0", 1, 0, 1, 3);
  const std::string out2 = (root_ / "agg2").string();
  summary = aggregateRunsWithOptions({(root_ / "two").string()}, out2, std::nullopt,
                                     AggregateOptions{false});
  EXPECT_EQ(summary["band_replicas"], 2);
  const std::string bands2 = out2 + "/bands.h5";
  foldfarm::data::H5Handle f2 = foldfarm::data::h5OpenRead(bands2);
  EXPECT_NEAR(readFloat64Dataset(f2.get(), bands2, "mass/std")[0] * w, std::sqrt(2 * 0.125 * 0.125),
              1e-12);
  // (before: "over the band_replicas bootstrap replicas", here as elsewhere)
  EXPECT_NE(foldfarm::data::h5ReadAttrAsString(f2.get(), "content")
                .find("over the band_replicas replicas, replica 0 included"),
            std::string::npos);
}

// summary.json, bands.h5 and event_weights.h5 name the build that aggregated; summary.json also
// the builds that finished the chains (a campaign resumed by a rebuilt foldfarm holds chains of
// two builds, aggregated together), and chains written before builds were recorded.
TEST_F(AggregateTest, TheOutputsRecordTheBuildThatAggregatedAndThoseThatFinishedTheChains) {
  const std::string sim = writeSample("sim.h5", {0, 1, 0}, {}, {});
  nlohmann::json one = {{"mc", sim}}, other = one;
  one["build"] = foldfarm::buildInfoJson();
  other["build"] = foldfarm::buildInfoJson();
  other["build"]["commit"] = "0123abc";
  const std::vector<double> ones = {1, 1, 1};
  writeChain("builds/r0m0", 0, 0, 1, 3, 42, one, ones);
  writeChain("builds/r1m0", 1, 0, 3, 1, 42, other, ones);
  writeChain("builds/r2m0", 2, 0, 2, 2, 42, one, ones);
  writeChain("builds/r3m0", 3, 0, 2, 2, 42, {{"mc", sim}}, ones);  // no build recorded
  const std::string out = (root_ / "builds_agg").string();
  const nlohmann::json summary =
      aggregateRunsWithOptions({(root_ / "builds").string()}, out, std::nullopt, {false});
  EXPECT_EQ(summary.at("build"), foldfarm::buildInfoJson());
  EXPECT_EQ(summary.at("build").at("version"), FOLDFARM_VERSION);
  std::map<std::string, size_t> chains;
  for (const nlohmann::json& e : summary.at("chain_builds"))
    chains[e.at("build").is_null() ? "none" : e.at("build").at("commit").get<std::string>()] =
        e.at("chains").get<size_t>();
  EXPECT_EQ(chains, (std::map<std::string, size_t>{
                        {foldfarm::buildInfo().commit, 2}, {"0123abc", 1}, {"none", 1}}));
  EXPECT_EQ(nlohmann::json::parse(foldfarm::readFile(out + "/summary.json")), summary);
  for (const char* file : {"bands.h5", "event_weights.h5"}) {
    foldfarm::data::H5Handle f = foldfarm::data::h5OpenRead(out + "/" + file);
    EXPECT_EQ(nlohmann::json::parse(foldfarm::data::h5ReadAttrAsString(f.get(), "build")),
              foldfarm::buildInfoJson())
        << file;
  }
}

// A campaign continued by a newer build after the way chains compute their steps changed
// (kChainFormat): its chains of both formats are refused together, in a group or across the
// nominal and a variation, naming the first older chain, how many more, and what to do; chains
// of one format aggregate. A result.json without "chain_format" is told by its steps'
// records in history.json (class_balance in every one: format 2; else 1); without either, its
// format is not known and not compared (before: the older and newer chains were put in one
// band without a word).
TEST_F(AggregateTest, ChainsOfTwoChainFormatsAreRefusedTogether) {
  const nlohmann::json marked = {{"chain_format", kChainFormat}};
  // history.json of two steps, with or without class_balance (an older build's).
  const auto steps = [&](const std::string& rel, bool balanced) {
    nlohmann::json step = {{"iteration", 1}, {"step", 1}};
    if (balanced) step["class_balance"] = 1.25;
    writeJsonAtomic((root_ / rel / kChainHistoryFile).string(),
                    {{"spec", nlohmann::json::object()}, {"steps", {step, step}}});
  };
  writeChain("mixed/r0m0", 0, 0, 1, 3, 42, marked);
  writeChain("mixed/r1m0", 1, 0, 3, 1);
  steps("mixed/r1m0", false);  // an older build's
  writeChain("mixed/r2m0", 2, 0, 2, 2);
  steps("mixed/r2m0", false);
  writeChain("mixed/r3m0", 3, 0, 2, 2);
  steps("mixed/r3m0", true);             // format 2 by its steps
  writeChain("mixed/r4m0", 4, 0, 2, 2);  // not known: no record, no history
  const std::string why = refusalOf("mixed");
  EXPECT_NE(why.find((root_ / "mixed/r1m0").string() +
                     " and 1 more chain(s): computed by a foldfarm build whose OmniFold steps "
                     "differ (chain format 1 (foldfarm builds before 2026-12-06 07:37 UTC"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("from those of 2 chain(s) such as " + (root_ / "mixed/r0m0").string() +
                     " (chain format 2)"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("run the 2 older chain(s) again with the newer build"), std::string::npos)
      << why;
  EXPECT_EQ(why.find('\n'), std::string::npos) << why;
  try {
    aggregateRunsWithOptions({(root_ / "mixed").string()}, (root_ / "mixed_agg2").string(),
                             std::nullopt, {false});
    ADD_FAILURE() << "not refused";
  } catch (const MixedChainFormatsError& e) {
    EXPECT_EQ(e.older, (std::vector<std::string>{(root_ / "mixed/r1m0").string(),
                                                 (root_ / "mixed/r2m0").string()}));
  }

  // The nominal of this format, a variation's chains of an older one: each group is of one
  // format, the shift would hold the change.
  const nlohmann::json up = variation("det_up", "detector", "det", "up");
  writeChain("across/nom_r0", 0, 0, 1, 3, 42, marked);
  writeChain("across/nom_r1", 1, 0, 3, 1, 42, marked);
  writeChain("across/up_r0", 0, 0, 2, 2, 42, up);
  steps("across/up_r0", false);
  writeChain("across/up_r1", 1, 0, 2, 2, 42, up);
  steps("across/up_r1", false);
  EXPECT_NE(refusalOf("across").find((root_ / "across/up_r0").string() + " and 1 more chain(s)"),
            std::string::npos);

  writeChain("newer/r0m0", 0, 0, 1, 3, 42, marked);
  writeChain("newer/r1m0", 1, 0, 3, 1, 42, {{"chain_format", kChainFormat + 1}});
  EXPECT_NE(refusalOf("newer").find("(a newer foldfarm build than this one)"), std::string::npos);

  writeChain("old/r0m0", 0, 0, 1, 3);
  steps("old/r0m0", false);
  writeChain("old/r1m0", 1, 0, 3, 1);
  steps("old/r1m0", false);
  EXPECT_NO_THROW(aggregateRunsWithOptions({(root_ / "old").string()}, (root_ / "old_agg").string(),
                                           std::nullopt, {false}));
  writeChain("new/r0m0", 0, 0, 1, 3);
  steps("new/r0m0", true);
  writeChain("new/r1m0", 1, 0, 3, 1, 42, marked);
  writeChain("new/r2m0", 2, 0, 3, 1);
  EXPECT_NO_THROW(aggregateRunsWithOptions({(root_ / "new").string()}, (root_ / "new_agg").string(),
                                           std::nullopt, {false}));
}

TEST_F(AggregateTest, TruthGivesDiscriminatorsAndCoverage) {
  writeChain("r0", 0, 0, 2, 2);
  writeChain("r1", 1, 0, 1, 3);
  writeChain("r2", 2, 0, 3, 1);
  const std::string truth = writeTruth();
  const std::string out = (root_ / "agg").string();
  AggregateOptions opt;
  opt.plots = foldfarm::plot::gnuplotAvailable();
  nlohmann::json s = aggregateRunsWithOptions({root_.string()}, out, truth, opt);
  const auto& mass = s["observables"]["mass"];
  EXPECT_NEAR(mass["delta_unfolded"].get<double>(), 0.0, 1e-9);
  // Prior [1, 0] vs truth [.5, .5]: 1/2 (0.25/1.5 + 0.25/0.5) x 1e3.
  EXPECT_NEAR(mass["delta_prior"].get<double>(), 1e3 / 3.0, 1e-6);
  // The bootstrap replicas 1 and 2 lie symmetrically about the truth: equal Δ, no spread.
  // (Replica 0's Δ of 0, the data as measured, is not a draw and does not enter.)
  EXPECT_NEAR(mass["delta_unfolded_err"].get<double>(), 0.0, 1e-9);
  EXPECT_DOUBLE_EQ(mass["coverage_68"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(mass["coverage_95"].get<double>(), 1.0);
  // The nominal [.5, .5] moved the mean all the way from the prior's bin 0 to the truth's.
  EXPECT_NEAR(mass["shift_recovered"].get<double>(), 1.0, 1e-9);
  EXPECT_LT(mass["mean_prior"].get<double>(), mass["mean_truth"].get<double>());
  // Floor: the chains carry no Σw², the truth two unit-weight events: per bin
  // Var q = [1 (1 - 2 * .5) + .25 * 2] / (2 width)^2 = .125 / width^2 at p + q = 1 / width,
  // so Δ_floor = 1/2 * 2 * .125 x 1e3.
  EXPECT_NEAR(mass["delta_floor"].get<double>(), 125.0, 1e-6);
  EXPECT_EQ(s["classifier"], "pet");
  EXPECT_TRUE(fs::exists(out + "/summary.json"));
  if (opt.plots) {
    std::ifstream png(out + "/mass.png", std::ios::binary);
    char magic[4] = {};
    png.read(magic, 4);
    EXPECT_EQ(std::string(magic + 1, 3), "PNG");
    EXPECT_TRUE(fs::exists(out + "/tau21.png"));
    EXPECT_TRUE(fs::exists(out + "/mass_breakdown.png"));
    EXPECT_FALSE(fs::exists(out + "/mass_shifts.png")) << "no systematic source to draw";
    // Aggregated again without figures: the earlier ones, of the earlier bands, are removed
    // rather than left beside the new summary.
    opt.plots = false;
    s = aggregateRunsWithOptions({root_.string()}, out, truth, opt);
    EXPECT_FALSE(fs::exists(out + "/mass.png"));
    EXPECT_FALSE(fs::exists(out + "/mass_breakdown.png"));
    EXPECT_FALSE(fs::exists(out + "/tau21.png"));
    EXPECT_TRUE(fs::exists(out + "/bands.h5"));
  }
}

TEST_F(AggregateTest, BadInputWritesNothing) {
  const std::string out = (root_ / "agg").string();
  EXPECT_THROW(aggregateRunsWithOptions({root_.string()}, out, std::nullopt, {false}),
               foldfarm::InputError);
  EXPECT_THROW(aggregateRunsWithOptions({(root_ / "missing").string()}, out, std::nullopt, {false}),
               foldfarm::InputError);
  writeChain("a", 0, 0, 1, 1, 42);
  writeChain("b", 1, 0, 1, 1, 43);  // another campaign
  EXPECT_THROW(aggregateRunsWithOptions({root_.string()}, out, std::nullopt, {false}),
               foldfarm::InputError);
  EXPECT_THROW(aggregateRunsWithOptions({(root_ / "a").string()}, out, (root_ / "nope.h5").string(),
                                        {false}),
               foldfarm::InputError);
  EXPECT_FALSE(fs::exists(out));
}

// The replicas and members of one band are chains of one unfolding: a chain of other data,
// another iteration count, configuration or foundation is refused (it was averaged into the
// band as if it were a fluctuation), naming the key; nothing is written. Where a chain ran
// and what it warm-started from may differ.
TEST_F(AggregateTest, ChainsOfAnotherUnfoldingAreRefusedNamingWhatDiffers) {
  const std::string out = (root_ / "agg").string();
  const nlohmann::json base = {
      {"mc", "/d/mc.h5"},      {"data", "/d/data.h5"},
      {"iterations", 4},       {"init", "/m/foundation"},
      {"init_sha256", "ab12"}, {"config", {{"classifier", "pet+mlp"}, {"lr", 3e-5}}}};
  writeChain("ok/r0", 0, 0, 1, 3, 42, base);
  nlohmann::json moved = base;
  moved["init"] = "/elsewhere/foundation";  // the same foundation, by its hash
  moved["warm_from"] = "/c/tasks/r0001m0";
  moved["device"] = {{"device", "cuda:0"}};
  writeChain("ok/r1", 1, 0, 3, 1, 42, moved);
  EXPECT_NO_THROW(aggregateRunsWithOptions({(root_ / "ok").string()}, out, std::nullopt, {false}));
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"data", "/d/mc.h5"}, {"iterations", 2}}) {
    nlohmann::json other = base;
    other[key] = value;
    const std::string set = "bad_" + key;
    writeChain(set + "/r0", 0, 0, 1, 3, 42, base);
    writeChain(set + "/r1", 1, 0, 3, 1, 42, other);
    const std::string why = refusalOf(set);
    EXPECT_NE(why.find(": unfolds otherwise than " + (root_ / set / "r0").string() + " (" + key +
                       " " + value.dump() + " against "),
              std::string::npos)
        << key << ": " << why;
  }
  // Another foundation (by its hash), or none: named by the paths and hashes of both.
  nlohmann::json other_hash = base, no_foundation = base;
  other_hash["init_sha256"] = "cd34567890abcdef";
  no_foundation["init"] = "none";
  no_foundation.erase("init_sha256");
  for (const auto& [set, other, says] :
       std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"bad_hash", other_hash, "/m/foundation (sha256 cd34567890ab...)"},
           {"bad_none", no_foundation, "none (no foundation)"}}) {
    writeChain(set + "/r0", 0, 0, 1, 3, 42, base);
    writeChain(set + "/r1", 1, 0, 3, 1, 42, other);
    const std::string why = refusalOf(set);
    EXPECT_NE(why.find((root_ / set / "r1").string() + ": foundation " + says + ", where " +
                       (root_ / set / "r0").string() +
                       " had /m/foundation (sha256 ab12); aggregate the chains of one "
                       "foundation at a time"),
              std::string::npos)
        << set << ": " << why;
  }
  // A configuration key, named with its path; a repeat of (replica, member) too.
  nlohmann::json mlp = base;
  mlp["config"]["classifier"] = "mlp";
  writeChain("bad_cfg/r0", 0, 0, 1, 3, 42, base);
  writeChain("bad_cfg/r0_again", 0, 0, 3, 1, 42, mlp);
  const std::string why = refusalOf("bad_cfg");
  EXPECT_NE(why.find("config.classifier \"mlp\" against \"pet+mlp\""), std::string::npos) << why;
}

// Chains of one path that read different versions of the file (it was regenerated between
// them) are refused, naming the file; a chain without the record (written before it) is
// taken on its path.
TEST_F(AggregateTest, ChainsThatReadAnotherVersionOfTheirInputsAreRefused) {
  const nlohmann::json base = {
      {"mc", "/d/mc.h5"},
      {"data", "/d/data.h5"},
      {"iterations", 4},
      {"inputs",
       {{"mc", {{"size", 1000}, {"mtime_ns", 5}}}, {"data", {{"size", 800}, {"mtime_ns", 6}}}}}};
  nlohmann::json older = base;
  older.erase("inputs");
  writeChain("versions_ok/r0", 0, 0, 1, 3, 42, base);
  writeChain("versions_ok/r1", 1, 0, 3, 1, 42, older);
  writeChain("versions_ok/r2", 2, 0, 2, 2, 42, base);
  EXPECT_NO_THROW(aggregateRunsWithOptions({(root_ / "versions_ok").string()},
                                           (root_ / "versions_ok_agg").string(), std::nullopt,
                                           {false}));
  nlohmann::json regenerated = base;
  regenerated["inputs"]["mc"]["mtime_ns"] = 9;
  writeChain("versions/r0", 0, 0, 1, 3, 42, base);
  writeChain("versions/r1", 1, 0, 3, 1, 42, regenerated);
  const std::string why = refusalOf("versions");
  EXPECT_NE(why.find("another version of its mc file /d/mc.h5"), std::string::npos) << why;
}

// An aggregation that fails late (here event_weights.h5 over a file-size limit, as on a full
// disk) changes nothing in its output directory: not a new bands.h5 beside the earlier
// summary.json. Every output is renamed into place together at the end.
TEST_F(AggregateTest, AFailedAggregationLeavesTheEarlierOutputsAsTheyWere) {
  const std::vector<int> bins(200000, 0);
  const std::string sim = writeSample("big_sim.h5", bins, {}, {});
  const nlohmann::json mc = {{"mc", sim}};
  const std::vector<double> ones(bins.size(), 1.0);
  writeChain("late/r0", 0, 0, 1, 3, 42, mc, ones);
  writeChain("late/r1", 1, 0, 3, 1, 42, mc, ones);
  const std::string out = (root_ / "late_agg").string();
  aggregateRunsWithOptions({(root_ / "late").string()}, out, std::nullopt, {false});
  std::map<std::string, std::string> before;
  for (const auto& e : fs::directory_iterator(out))
    before[e.path().filename().string()] = foldfarm::readFile(e.path().string());
  ASSERT_EQ(before.size(), 3u);  // bands.h5, summary.json, event_weights.h5
  ASSERT_LT(before["bands.h5"].size(), 1000000u) << "bands.h5 must fit under the limit";
  writeChain("late/r2", 2, 0, 2, 2, 42, mc, ones);  // another band
  try {
    foldfarm::testing::FileSizeLimit limit(1000000);  // below one column of 1.6 MB
    aggregateRunsWithOptions({(root_ / "late").string()}, out, std::nullopt, {false});
    ADD_FAILURE() << "event_weights.h5 was written past the limit";
  } catch (const foldfarm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("event_weights.h5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("File too large"), std::string::npos) << e.what();
  }
  std::map<std::string, std::string> after;
  for (const auto& e : fs::directory_iterator(out))
    after[e.path().filename().string()] = foldfarm::readFile(e.path().string());
  EXPECT_TRUE(after == before) << "the failed run changed or left files in " << out;

  // An aggregation into a directory that another one holds is refused before it reads a
  // chain, and changes nothing there; a temporary that a killed one left goes with the next.
  {
    foldfarm::OutputDirectoryLock other(out, "");
    try {
      aggregateRunsWithOptions({(root_ / "late").string()}, out, std::nullopt, {false});
      ADD_FAILURE() << "a second aggregation into a held directory ran";
    } catch (const foldfarm::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(out + ": another foldfarm run is writing"),
                std::string::npos)
          << e.what();
    }
  }
  std::map<std::string, std::string> held;
  for (const auto& e : fs::directory_iterator(out))
    held[e.path().filename().string()] = foldfarm::readFile(e.path().string());
  EXPECT_TRUE(held == before);
  std::ofstream(out + "/bands.h5.tmp.999999.0") << "partial";
  aggregateRunsWithOptions({(root_ / "late").string()}, out, std::nullopt, {false});
  EXPECT_FALSE(fs::exists(out + "/bands.h5.tmp.999999.0"));
}

// A SIGKILL while the outputs are renamed into place one by one (the OOM killer, a lost
// node): until the next aggregation the directory holds files of two, and its commit record
// says so (`report` refuses it); the next aggregation finishes the killed one's renames first.
// Before: bands.h5 and event_weights.h5 of one beside the summary.json of another, and every
// later aggregation refused, the new names being "files no earlier aggregation wrote".
TEST_F(AggregateTest, AKillWhileTheOutputsAreRenamedIsFinishedByTheNextAggregation) {
  const std::string sim = writeSample("sim.h5", {0, 1, 0, 1}, {}, {});
  const nlohmann::json mc = {{"mc", sim}};
  writeChain("k/r0", 0, 0, 1, 3, 42, mc, {1, 2, 3, 4});
  writeChain("k/r1", 1, 0, 3, 1, 42, mc, {3, 2, 1, 0});
  const std::string out = (root_ / "k_agg").string(), ref = (root_ / "ref_agg").string();
  AggregateOptions no_weights;
  no_weights.plots = false;
  no_weights.event_weights = EventWeightsChoice::kNone;
  aggregateRunsWithOptions({(root_ / "k").string()}, out, std::nullopt, no_weights);
  writeChain("k/r2", 2, 0, 2, 2, 42, mc, {1, 1, 1, 1});
  const AggregateOptions all{false};
  const nlohmann::json expected =
      aggregateRunsWithOptions({(root_ / "k").string()}, ref, std::nullopt, all);

  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv("FOLDFARM_FAULT", "aggregate.commit:event_weights.h5", 1);
    try {
      aggregateRunsWithOptions({(root_ / "k").string()}, out, std::nullopt, all);
    } catch (...) {
    }
    ::_exit(0);  // not killed: the test fails below
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  // Mixed: the new event_weights.h5 beside the old summary.json (2 chains, not listing it).
  EXPECT_TRUE(fs::exists(out + "/event_weights.h5"));
  EXPECT_EQ(nlohmann::json::parse(foldfarm::readFile(out + "/summary.json")).at("chains"), 2);
  EXPECT_TRUE(fs::exists(out + "/.aggregate-commit.json"));

  const nlohmann::json again =
      aggregateRunsWithOptions({(root_ / "k").string()}, out, std::nullopt, all);
  EXPECT_FALSE(fs::exists(out + "/.aggregate-commit.json"));
  EXPECT_EQ(again.at("chains"), 3);
  EXPECT_EQ(again.at("observables"), expected.at("observables"));
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"bands.h5", "event_weights.h5", "summary.json"}));
}

TEST_F(AggregateTest, UnreadableChainFilesGiveOneLineNamingTheFile) {
  const fs::path dir = root_ / "broken";
  fs::create_directories(dir);
  std::ofstream(dir / kChainWeightsFile) << "not hdf5";
  try {
    readChainWeights(dir.string());
    FAIL() << "expected InputError";
  } catch (const foldfarm::InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find((dir / kChainWeightsFile).string()), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_THROW(readChainHistograms((root_ / "missing").string()), foldfarm::InputError);
  // A histograms file without the observables' groups.
  writeChain("partial", 0, 0, 1, 1);
  ChainHistograms h = readChainHistograms((root_ / "partial").string());
  EXPECT_EQ(h.unfolded.size(), 6u);
  EXPECT_EQ(h.unfolded[0].sumw[0], 1.0);
}

// A chain named on its own that did not finish (no result.json, or no histograms.h5) is
// refused naming it, not left out unsaid; below a parent it is left out (warned). A chain
// whose files hold NaN or infinite values, or whose result.json is not "done" or names a
// negative replica, is refused naming the file; nothing is written.
TEST_F(AggregateTest, UnfinishedOrDamagedChainsAreRefusedNamingThem) {
  const std::string out = (root_ / "agg").string();
  writeChain("set/r0", 0, 0, 1, 3);
  writeChain("set/r1", 1, 0, 3, 1);
  writeChain("set/r2", 2, 0, 1, 1);
  const auto refusal = [&](const std::vector<std::string>& runs) {
    std::string why;
    try {
      aggregateRunsWithOptions(runs, out, std::nullopt, {false});
      ADD_FAILURE() << "aggregated " << runs.back();
    } catch (const foldfarm::InputError& e) {
      why = e.what();
    }
    EXPECT_FALSE(fs::exists(out)) << runs.back();
    EXPECT_EQ(why.find('\n'), std::string::npos) << why;
    return why;
  };
  const std::string r2 = (root_ / "set/r2").string();
  fs::remove(r2 + "/" + kChainHistogramsFile);
  EXPECT_NE(refusal({(root_ / "set/r0").string(), r2})
                .find(r2 + ": an unfinished chain (no histograms.h5)"),
            std::string::npos);
  // Below a parent: the two complete chains are aggregated.
  EXPECT_EQ(
      aggregateRunsWithOptions({(root_ / "set").string()}, out, std::nullopt, {false}).at("chains"),
      2);
  fs::remove_all(out);
  fs::remove_all(r2);
  fs::create_directories(r2 + "/state");
  std::ofstream(r2 + "/state/progress.json") << "{}";  // started, stopped before its end
  EXPECT_NE(refusal({r2}).find(r2 + ": an unfinished chain (no result.json)"), std::string::npos);
  fs::remove_all(r2);

  // NaN in a histogram, infinity in the per-event weights.
  writeChain("nan/r0", 0, 0, 1, 3);
  writeChain("nan/r1", 1, 0, std::nan(""), 1);
  EXPECT_NE(refusal({(root_ / "nan").string()})
                .find((root_ / "nan/r1" / kChainHistogramsFile).string() +
                      ": 'unfolded/mass/sumw' holds nan at index 0"),
            std::string::npos);
  const nlohmann::json mc = {{"mc", writeSample("inf_sim.h5", {0, 1}, {}, {})}};
  writeChain("inf/r0", 0, 0, 1, 3, 42, mc, {1.0, 2.0});
  writeChain("inf/r1", 1, 0, 3, 1, 42, mc, {1.0, HUGE_VAL});
  EXPECT_NE(
      refusal({(root_ / "inf").string()})
          .find((root_ / "inf/r1" / kChainWeightsFile).string() + ": 'final' holds inf at index 1"),
      std::string::npos);

  // result.json of a chain that is not done, or of a negative replica.
  writeChain("status/r0", 0, 0, 1, 3);
  writeChain("status/r1", 1, 0, 3, 1, 42, {{"status", "running"}});
  EXPECT_NE(refusal({(root_ / "status").string()})
                .find((root_ / "status/r1" / kChainResultFile).string() +
                      ": status \"running\", not \"done\""),
            std::string::npos);
  writeChain("negative/r0", 0, 0, 1, 3);
  writeChain("negative/r1", -3, 0, 3, 1);
  EXPECT_NE(refusal({(root_ / "negative").string()})
                .find((root_ / "negative/r1" / kChainResultFile).string() +
                      ": 'replica' is -3, not a whole number in [0, 2147483647]"),
            std::string::npos);
  // A replica written as a string, a member missing: named in the file's words, not the JSON
  // library's.
  writeChain("string/r0", 0, 0, 1, 3);
  writeChain("string/r1", 1, 0, 3, 1, 42, {{"replica", "1"}});
  const std::string as_string = refusal({(root_ / "string").string()});
  EXPECT_NE(as_string.find((root_ / "string/r1" / kChainResultFile).string() +
                           ": 'replica' is \"1\", not a whole number"),
            std::string::npos)
      << as_string;
  EXPECT_EQ(as_string.find("type_error"), std::string::npos) << as_string;
  writeChain("no_member/r0", 0, 0, 1, 3);
  writeChain("no_member/r1", 1, 0, 3, 1, 42, {{"member", nullptr}});
  EXPECT_NE(refusal({(root_ / "no_member").string()})
                .find((root_ / "no_member/r1" / kChainResultFile).string() +
                      ": 'member' is null, not a whole number"),
            std::string::npos);

  // Into a chain's own directory: refused, the chain left as it was.
  try {
    aggregateRunsWithOptions({(root_ / "set").string()}, (root_ / "set/r0").string(), std::nullopt,
                             {false});
    ADD_FAILURE() << "aggregated into a chain directory";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("set/r0: holds a chain"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(root_ / "set/r0/bands.h5"));

  // A truth sample in which no event passes the selection: no figure of merit against it.
  const std::string truth = writeSample("nopass_truth.h5", {0, 1}, {}, {0, 0});
  try {
    aggregateRunsWithOptions({(root_ / "set").string()}, out, truth, {false});
    ADD_FAILURE() << "aggregated against an empty truth";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(truth + ": no event passes 'pass_gen'"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(out));

  // Flags stored as floats are read as the chains read them: 0.5 is no flag (the truth read
  // it as passing, the chains as failing); 0/1 as floats select as 0/1 bytes do.
  const std::string half = writeSample("half_truth.h5", {0, 1}, {}, {1, 1});
  const std::vector<float> flags = {1.0f, 0.5f};
  foldfarm::data::badfiles::replaceDataset(half, "pass_gen", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                                           flags.data(), flags.size());
  try {
    aggregateRunsWithOptions({(root_ / "set").string()}, out, half, {false});
    ADD_FAILURE() << "aggregated against a truth whose flag is 0.5";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(half + ": dataset 'pass_gen': row 1 holds 0.5, not a "
                                                "selection flag"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(out));
}

// The unfolded result's Δ after each iteration: the nominal's mean over every replica, as
// delta_unfolded, the last iteration's delta_unfolded itself and an earlier one's the Δ an
// aggregation of chains that stopped there gives. Null where a chain did not keep its
// iterations (written before histograms.h5 held them), and in an aggregation without truth.
TEST_F(AggregateTest, DeltaAfterEachIterationEndsAtTheUnfoldedDelta) {
  const std::vector<std::pair<double, double>> r0 = {{2, 2}, {1, 3}}, r1 = {{3, 2}, {2, 3}};
  const nlohmann::json none = nlohmann::json::object();
  writeChain("iter/r0", 0, 0, 1, 3, 42, none, {}, false, {0, 0}, r0);
  writeChain("iter/r1", 1, 0, 2, 3, 42, none, {}, false, {0, 0}, r1);
  writeChain("first/r0", 0, 0, 2, 2);  // the chains as they stood after iteration 1
  writeChain("first/r1", 1, 0, 3, 2);
  const std::string truth = writeTruth();
  AggregateOptions opt;
  opt.plots = false;
  auto summaryOf = [&](const std::string& runs, const std::string& out,
                       const std::optional<std::string>& t) {
    aggregateRunsWithOptions({(root_ / runs).string()}, (root_ / out).string(), t, opt);
    return nlohmann::json::parse(foldfarm::readFile((root_ / out / "summary.json").string()));
  };
  const nlohmann::json it = summaryOf("iter", "agg_iter", truth)["observables"]["mass"];
  const nlohmann::json first = summaryOf("first", "agg_first", truth)["observables"]["mass"];
  ASSERT_TRUE(it["delta_by_iteration"].is_array()) << it.dump();
  ASSERT_EQ(it["delta_by_iteration"].size(), 2u);
  EXPECT_EQ(it["delta_by_iteration"][1], it["delta_unfolded"]);
  EXPECT_EQ(it["delta_by_iteration"][0], first["delta_unfolded"]);
  EXPECT_NE(it["delta_by_iteration"][0], it["delta_by_iteration"][1]);
  EXPECT_TRUE(first["delta_by_iteration"].is_null()) << "chains without their iterations";
  EXPECT_TRUE(summaryOf("iter", "agg_iter_no_truth",
                        std::nullopt)["observables"]["mass"]["delta_by_iteration"]
                  .is_null());
}

// What falls outside an observable's binning (left out of its unit-area density and Δ) is
// kept by each chain's histograms and summed into summary.json's outside_binning, for the
// unfolded result (over every chain), the prior and the truth; null for chains written before
// their histograms kept it.
TEST_F(AggregateTest, TheSharesOutsideTheBinningAreReportedForUnfoldedPriorAndTruth) {
  // histogramObservables counts them: mass edges are linspace(0, 75, 50).
  const std::vector<float> subs = {-1.f, 0.1f, 10.f, -5.f, 0.2f, 0.5f,  //
                                   80.f, 0.1f, 10.f, -5.f, 0.2f, 0.5f,  //
                                   1.f,  0.1f, 10.f, -5.f, 0.2f, 0.5f};
  const std::vector<ObservableHistogram> h = histogramObservables(subs, {2.0, 3.0, 5.0}, {});
  ASSERT_TRUE(h[0].outside.has_value());
  EXPECT_EQ(*h[0].outside, (std::array<double, 2>{2.0, 3.0}));
  EXPECT_EQ(*h[1].outside, (std::array<double, 2>{0.0, 0.0}));

  writeChain("out/r0", 0, 0, 2, 2);
  writeChain("out/r1", 1, 0, 1, 3);
  for (const auto& [rel, replica, below, above] :
       {std::tuple{"out/r0", 0, 1.0, 3.0}, std::tuple{"out/r1", 1, 0.0, 2.0}}) {
    ChainHistograms c = readChainHistograms((root_ / rel).string());
    c.unfolded[0].outside = std::array<double, 2>{below, above};
    c.prior[0].outside = std::array<double, 2>{0.5, 0.0};  // the prior's mass: 1 in bin 0
    writeChainHistograms((root_ / rel).string(), c, {{"replica", replica}, {"member", 0}});
  }
  // Truth: masses -1, 80, 0.5, 2: one below, one above.
  const std::string truth = writeTruthOfMasses("truth_outside.h5", {-1.f, 80.f, 0.5f, 2.f});
  AggregateOptions opt;
  opt.plots = false;
  aggregateRunsWithOptions({(root_ / "out").string()}, (root_ / "agg_out").string(), truth, opt);
  const nlohmann::json s =
      nlohmann::json::parse(foldfarm::readFile((root_ / "agg_out/summary.json").string()));
  const nlohmann::json& mass = s["observables"]["mass"]["outside_binning"];
  // Unfolded over both chains: 1 below, 5 above, 8 in the bins.
  EXPECT_DOUBLE_EQ(mass["unfolded"]["below"].get<double>(), 1.0 / 14);
  EXPECT_DOUBLE_EQ(mass["unfolded"]["above"].get<double>(), 5.0 / 14);
  EXPECT_DOUBLE_EQ(mass["prior"]["below"].get<double>(), 0.5 / 1.5);
  EXPECT_DOUBLE_EQ(mass["prior"]["above"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(mass["truth"]["below"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(mass["truth"]["above"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(s["observables"]["width"]["outside_binning"]["truth"]["above"].get<double>(),
                   0.0);
  // A chain whose histograms.h5 does not hold them (written before): unknown, not 0.
  {
    const std::string path = (root_ / "out/r1" / kChainHistogramsFile).string();
    foldfarm::data::H5Handle f = FF_H5_OWN(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT),
                                           foldfarm::data::H5Kind::kFile, path);
    ASSERT_GE(H5Ldelete(f.get(), "unfolded/mass/outside", H5P_DEFAULT), 0);
  }
  ASSERT_FALSE(readChainHistograms((root_ / "out/r1").string()).unfolded[0].outside);
  aggregateRunsWithOptions({(root_ / "out").string()}, (root_ / "agg_old").string(), truth, opt);
  const nlohmann::json old =
      nlohmann::json::parse(foldfarm::readFile((root_ / "agg_old/summary.json").string()));
  EXPECT_TRUE(old["observables"]["mass"]["outside_binning"]["unfolded"].is_null()) << old.dump();
  EXPECT_FALSE(old["observables"]["mass"]["outside_binning"]["truth"].is_null());
}

// A truth of one event has a mean without a known error: the prior-to-truth shift gets no
// significance (it read 60 standard errors) and no recovered fraction; of two events in two
// bins, both; all of many events in one bin, the spread within the bin bounds its error (it
// read 0).
TEST_F(AggregateTest, AShiftGetsNoSignificanceAgainstATruthOfOneEvent) {
  writeChain("sig/r0", 0, 0, 2, 2);
  writeChain("sig/r1", 1, 0, 1, 3);
  AggregateOptions opt;
  opt.plots = false;
  const auto massOf = [&](const std::string& truth, const std::string& out) {
    aggregateRunsWithOptions({(root_ / "sig").string()}, (root_ / out).string(), truth, opt);
    return readJson((root_ / out / "summary.json").string())["observables"]["mass"];
  };
  const nlohmann::json one = massOf(writeSample("one.h5", {1}, {}, {}), "agg_one");
  EXPECT_TRUE(one["shift_significance"].is_null()) << one.dump();
  EXPECT_TRUE(one["shift_recovered"].is_null()) << "no shift measured against one event";
  EXPECT_TRUE(one["delta_unfolded"].is_number());
  EXPECT_TRUE(massOf(writeTruth(), "agg_two")["shift_significance"].is_number());
  const nlohmann::json bin = massOf(writeSample("bin.h5", {1, 1, 1, 1}, {}, {}), "agg_bin");
  ASSERT_TRUE(bin["shift_significance"].is_number()) << bin.dump();
  EXPECT_TRUE(std::isfinite(bin["shift_significance"].get<double>()));
}

// Where no event of the truth falls inside an observable's binning, its density is all zeros:
// Δ against the prior's read 0 (a perfect unfolding) and the means 0. Nothing is compared.
TEST_F(AggregateTest, ATruthEntirelyOutsideTheBinningIsNotCompared) {
  writeChain("allout/r0", 0, 0, 2, 2);
  writeChain("allout/r1", 1, 0, 1, 3);
  const std::string truth = writeTruthOfMasses("truth_allout.h5", {200.f, 300.f});
  AggregateOptions opt;
  opt.plots = false;
  aggregateRunsWithOptions({(root_ / "allout").string()}, (root_ / "agg_allout").string(), truth,
                           opt);
  const nlohmann::json s = readJson((root_ / "agg_allout/summary.json").string());
  const nlohmann::json& mass = s["observables"]["mass"];
  for (const char* k : {"delta_prior", "delta_unfolded", "mean_truth", "shift_recovered",
                        "coverage_68", "delta_by_iteration"})
    EXPECT_TRUE(mass[k].is_null()) << k << ": " << mass.dump();
  EXPECT_DOUBLE_EQ(mass["outside_binning"]["truth"]["above"].get<double>(), 1.0);
  // The other observables are compared as before.
  EXPECT_TRUE(s["observables"]["width"]["delta_unfolded"].is_number());
  // study compare leaves the observable out and compares the others (it refused the whole
  // comparison: "no truth comparison for mass").
  const nlohmann::json c = compareAggregations(
      {(root_ / "agg_allout").string(), (root_ / "agg_allout").string()}, {"A", "B"});
  EXPECT_FALSE(c["observables"].contains("mass")) << c.dump();
  EXPECT_TRUE(c["observables"]["width"].contains("B"));
}

// Aggregations of two binnings are not compared: Δ differ by the binning alone. study compare
// refuses naming the observable and the binning (it blamed the inputs: "Δ of the prior
// differs"); the pairing of replicas says why it does not pair.
TEST_F(AggregateTest, AggregationsOfTwoBinningsAreNotComparedNorPaired) {
  const std::vector<std::pair<double, double>> v = {{2, 2}, {1, 3}, {3, 1}, {1, 2}};
  for (int r = 0; r < 4; ++r) {
    writeChain("b1/r" + std::to_string(r), r, 0, v[r].first, v[r].second);
    writeChain("b2/r" + std::to_string(r), r, 0, v[r].first, v[r].second, 42,
               nlohmann::json::object(), {}, /*other_binning=*/true);
  }
  const std::string truth = writeTruth();
  AggregateOptions opt;
  opt.plots = false;
  for (const char* d : {"b1", "b2"})
    aggregateRunsWithOptions({(root_ / d).string()}, (root_ / d / "aggregate").string(), truth,
                             opt);
  const nlohmann::json s1 = readJson((root_ / "b1/aggregate/summary.json").string());
  const nlohmann::json s2 = readJson((root_ / "b2/aggregate/summary.json").string());
  EXPECT_EQ(s1["observables"]["mass"]["edges"].size(), 50u);
  EXPECT_NE(s1["observables"]["mass"]["edges"], s2["observables"]["mass"]["edges"]);
  try {
    compareAggregations({(root_ / "b1").string(), (root_ / "b2").string()}, {});
    ADD_FAILURE() << "two binnings compared";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("mass is binned otherwise than in"), std::string::npos)
        << e.what();
  }
  // Only mass is binned otherwise: the others pair, mass does not.
  const nlohmann::json p = pairReplicas(s1, s2, "b1");
  EXPECT_FALSE(p.contains("not_paired")) << p.dump();
  EXPECT_FALSE(p["observables"].contains("mass"));
  EXPECT_TRUE(p["observables"].contains("width"));
  nlohmann::json m1 = s1, m2 = s2;  // mass alone
  m1["observables"] = {{"mass", s1["observables"]["mass"]}};
  m2["observables"] = {{"mass", s2["observables"]["mass"]}};
  const nlohmann::json none = pairReplicas(m1, m2, "b1");
  EXPECT_EQ(none.value("not_paired", std::string()).rfind("another binning than b1's", 0), 0u)
      << none.dump();
}

TEST_F(AggregateTest, CompareShowsUnfoldingsOfTheSameDataSideBySide) {
  writeChain("a/r0", 0, 0, 2, 2);
  writeChain("b/r0", 0, 0, 1, 3);
  const std::string truth = writeTruth();
  AggregateOptions opt;
  opt.plots = false;
  aggregateRunsWithOptions({(root_ / "a").string()}, (root_ / "a/aggregate").string(), truth, opt);
  aggregateRunsWithOptions({(root_ / "b").string()}, (root_ / "agg_b").string(), truth, opt);
  // A campaign-like directory (its aggregate/) and an aggregation directory.
  const nlohmann::json c =
      compareAggregations({(root_ / "a").string(), (root_ / "agg_b").string()}, {"PET", "MLP"});
  EXPECT_EQ(c["best"]["mass"], "PET");
  EXPECT_NEAR(c["observables"]["mass"]["PET"]["delta_unfolded"].get<double>(), 0.0, 1e-9);
  EXPECT_GT(c["observables"]["mass"]["MLP"]["delta_unfolded"].get<double>(), 0.0);
  const std::string md = comparisonMarkdown(c);
  EXPECT_NE(md.find("| mass |"), std::string::npos) << md;
  EXPECT_NE(md.find("shift MLP"), std::string::npos) << md;
  // One replica each: no spread to give an error from (it read "± 0.0").
  EXPECT_TRUE(c["observables"]["mass"]["PET"]["delta_unfolded_err"].is_null());
  EXPECT_NE(md.find("(no spread)"), std::string::npos) << md;
  EXPECT_EQ(md.find("± 0.0"), std::string::npos) << md;
  // No spread, so no error of the difference: nothing in bold.
  EXPECT_TRUE(c["clear_best"]["mass"].is_null()) << c.dump();
  EXPECT_EQ(md.find("**"), std::string::npos) << md;
  // Without truth there is nothing to compare; names must match the inputs.
  aggregateRunsWithOptions({(root_ / "b").string()}, (root_ / "agg_nt").string(), std::nullopt,
                           opt);
  EXPECT_THROW(compareAggregations({(root_ / "agg_nt").string()}, {}), foldfarm::InputError);
  EXPECT_THROW(compareAggregations({(root_ / "a").string()}, {"x", "y"}), foldfarm::InputError);
}

// Campaigns of one campaign seed share their bootstrap draws: `study compare` pairs each later
// input with the first replica by replica (its Δ and recovered shift less the first's, mean ±
// standard error), from the per-replica values summary.json now records; which the spread of
// Δ is taken over. Identical chains pair to 0 ± 0 however wide their spreads; another seed is
// not paired, and says why.
TEST_F(AggregateTest, CompareOfOneCampaignSeedPairsTheInputsReplicaByReplica) {
  const std::vector<std::pair<double, double>> a = {{2, 2}, {1, 3}, {3, 1}, {1, 2}, {5, 1}};
  const std::vector<std::pair<double, double>> b = {{2, 2}, {2, 3}, {3, 2}, {1, 1}, {4, 1}};
  for (int r = 0; r < 5; ++r) {
    writeChain("pa/r" + std::to_string(r), r, 0, a[r].first, a[r].second);
    writeChain("pa_same/r" + std::to_string(r), r, 0, a[r].first, a[r].second);
    writeChain("pb/r" + std::to_string(r), r, 0, b[r].first, b[r].second);
    writeChain("pc/r" + std::to_string(r), r, 0, b[r].first, b[r].second, /*seed=*/7);
  }
  const std::string truth = writeTruth();
  AggregateOptions opt;
  opt.plots = false;
  for (const char* c : {"pa", "pa_same", "pb", "pc"})
    aggregateRunsWithOptions({(root_ / c).string()}, (root_ / c / "aggregate").string(), truth,
                             opt);
  const auto summary = [&](const char* c) {
    return readJson((root_ / c / "aggregate/summary.json").string())["observables"]["mass"];
  };
  const nlohmann::json sa = summary("pa"), sb = summary("pb");
  // The band's replicas (1-4; replica 0 is the data as measured), whose Δ's spread is the ±.
  ASSERT_EQ(sa["replica_delta_unfolded"].size(), 4u) << sa.dump();
  EXPECT_FALSE(sa["replica_delta_unfolded"].contains("0"));
  double mean = 0, var = 0;
  for (const auto& d : sa["replica_delta_unfolded"]) mean += d.get<double>() / 4;
  for (const auto& d : sa["replica_delta_unfolded"])
    var += (d.get<double>() - mean) * (d.get<double>() - mean) / 3;
  EXPECT_NEAR(std::sqrt(var), sa["delta_unfolded_err"].get<double>(), 1e-12);
  ASSERT_EQ(sa["replica_shift_recovered"].size(), 4u) << sa.dump();

  const nlohmann::json c =
      compareAggregations({(root_ / "pa").string(), (root_ / "pa_same").string(),
                           (root_ / "pb").string(), (root_ / "pc").string()},
                          {"A", "same", "B", "C"});
  const nlohmann::json& mass = c["observables"]["mass"];
  // The same chains: no difference at all, where the spreads are wide.
  EXPECT_GT(mass["A"]["delta_unfolded_err"].get<double>(), 10);
  EXPECT_EQ(mass["same"]["paired"]["delta_diff"], 0.0) << mass.dump();
  EXPECT_EQ(mass["same"]["paired"]["delta_diff_err"], 0.0);
  EXPECT_EQ(mass["same"]["paired"]["replicas"], 4);
  EXPECT_EQ(mass["same"]["paired"]["vs"], "A");
  // Other chains: each replica's value less A's, mean ± standard error.
  std::vector<double> dd, ds;
  for (const char* r : {"1", "2", "3", "4"}) {
    dd.push_back(sb["replica_delta_unfolded"][r].get<double>() -
                 sa["replica_delta_unfolded"][r].get<double>());
    ds.push_back(sb["replica_shift_recovered"][r].get<double>() -
                 sa["replica_shift_recovered"][r].get<double>());
  }
  const auto meanAndError = [](const std::vector<double>& x) {
    double m = 0, v = 0;
    for (double e : x) m += e / x.size();
    for (double e : x) v += (e - m) * (e - m) / (x.size() - 1);
    return std::make_pair(m, std::sqrt(v / x.size()));
  };
  const auto [d_mean, d_err] = meanAndError(dd);
  const auto [s_mean, s_err] = meanAndError(ds);
  EXPECT_NE(d_mean, 0.0);
  EXPECT_NEAR(mass["B"]["paired"]["delta_diff"].get<double>(), d_mean, 1e-12);
  EXPECT_NEAR(mass["B"]["paired"]["delta_diff_err"].get<double>(), d_err, 1e-12);
  EXPECT_NEAR(mass["B"]["paired"]["shift_diff"].get<double>(), s_mean, 1e-12);
  EXPECT_NEAR(mass["B"]["paired"]["shift_diff_err"].get<double>(), s_err, 1e-12);
  // Another campaign seed: other bootstrap draws, not paired; said in the table too.
  EXPECT_FALSE(mass["C"].contains("paired"));
  EXPECT_EQ(c["inputs"][3]["not_paired"], "campaign seed 7, A's 42: other bootstrap draws");
  EXPECT_FALSE(c["inputs"][2].contains("not_paired"));
  // Campaigns name their data file: one seed over another file draws other samples of it.
  const auto withData = [&](const char* from, const char* to, const std::string& sum) {
    nlohmann::json js = readJson((root_ / from / "aggregate/summary.json").string());
    js["inputs"] = {{"nominal", {{"data", {{"path", "d.h5"}, {"sha256", sum}}}}}};
    fs::create_directories(root_ / to);
    writeJsonAtomic((root_ / to / "summary.json").string(), js);
    return (root_ / to).string();
  };
  const std::string one(64, 'a'), other(64, 'b');
  const nlohmann::json files = compareAggregations(
      {withData("pa", "fa", one), withData("pb", "fb", other), withData("pb", "fb1", one)},
      {"A", "B", "B1"});
  EXPECT_EQ(files["inputs"][1]["not_paired"],
            "another data file than A's (sha256 bbbbbbbbbbbb against aaaaaaaaaaaa): the same seed "
            "draws other bootstrap samples of it");
  EXPECT_EQ(files["observables"]["mass"]["B1"]["paired"], mass["B"]["paired"]);
  const std::string md = comparisonMarkdown(c);
  EXPECT_NE(md.find("B less A, replica by replica"), std::string::npos) << md;
  // A and same are one unfolding (paired 0 ± 0): neither is bolded.
  EXPECT_TRUE(c["clear_best"]["mass"].is_null()) << c.dump();
  EXPECT_EQ(md.find("**"), std::string::npos) << md;
  // The shift in brackets: two truth events put the prior within 2 standard errors of it.
  ASSERT_LT(mass["shift_significance"].get<double>(), 2);
  EXPECT_NE(md.find("| mass | +0.0 ± 0.0 | (+0.0 ± 0.0 points) | 4 |"), std::string::npos) << md;
  EXPECT_NE(md.find("C is not paired with A: campaign seed 7, A's 42"), std::string::npos) << md;
}

// With three or more inputs, the smallest Δ is bold only where it is clearly below every other
// input's, each pair compared replica by replica where the two pair: here C lies below B in
// every replica by a little while both spread widely, which the spreads alone cannot tell
// (C and B were compared unpaired when neither was the first input).
TEST_F(AggregateTest, CompareOfThreeInputsPairsTheBestWithEachOtherNotOnlyWithTheFirst) {
  const std::vector<std::pair<double, double>> c = {{5, 5}, {6, 4}, {4, 6}, {7, 3}, {3, 7}};
  const std::vector<std::pair<double, double>> b = {
      {5.2, 4.8}, {6.2, 3.8}, {3.8, 6.2}, {7.2, 2.8}, {2.8, 7.2}};
  for (int r = 0; r < 5; ++r) {
    writeChain("tx/r" + std::to_string(r), r, 0, 9, 1);
    writeChain("tb/r" + std::to_string(r), r, 0, b[r].first, b[r].second);
    writeChain("tc/r" + std::to_string(r), r, 0, c[r].first, c[r].second);
  }
  const std::string truth = writeTruth();
  AggregateOptions opt;
  opt.plots = false;
  for (const char* d : {"tx", "tb", "tc"})
    aggregateRunsWithOptions({(root_ / d).string()}, (root_ / d / "aggregate").string(), truth,
                             opt);
  const nlohmann::json cmp = compareAggregations(
      {(root_ / "tx").string(), (root_ / "tb").string(), (root_ / "tc").string()}, {"X", "B", "C"});
  const nlohmann::json& mass = cmp["observables"]["mass"];
  ASSERT_EQ(cmp["best"]["mass"], "C") << mass.dump();
  // Unpaired, B and C are within the errors of their difference...
  const double diff =
      mass["B"]["delta_unfolded"].get<double>() - mass["C"]["delta_unfolded"].get<double>();
  ASSERT_LT(diff, 2 * std::hypot(mass["B"]["delta_unfolded_err"].get<double>(),
                                 mass["C"]["delta_unfolded_err"].get<double>()));
  // ... paired, C is below B in every replica.
  const nlohmann::json p =
      pairReplicas(readJson((root_ / "tc/aggregate/summary.json").string()),
                   readJson((root_ / "tb/aggregate/summary.json").string()), "C");
  ASSERT_GT(p["observables"]["mass"]["delta_diff"].get<double>(),
            2 * p["observables"]["mass"]["delta_diff_err"].get<double>())
      << p.dump();
  EXPECT_EQ(cmp["clear_best"]["mass"], "C") << cmp.dump();
  EXPECT_NE(comparisonMarkdown(cmp).find("**"), std::string::npos);
}

// A distribution figure whose curves of the unfolded result, prior or truth are empty (nothing
// inside the binning) says so in its title, instead of drawing zeros without a word.
TEST(AggregateFigures, ATitleSaysWhatHasNothingInsideTheBinning) {
  const std::vector<double> edges{0, 1, 2}, some{0.5, 0.5}, zeros{0, 0};
  EXPECT_EQ(distributionTitle("mass", "pet", edges, some, some, &some), "mass, pet");
  EXPECT_EQ(distributionTitle("mass", "pet", edges, some, some, nullptr), "mass, pet");
  EXPECT_EQ(distributionTitle("mass", "mlp", edges, zeros, some, &zeros),
            "mass, mlp (no unfolded, truth inside [0, 2]: see summary.json outside_binning)");
}

// The floor is an expansion for many truth events a bin: a truth of two events over the two
// mass bins it and the unfolded fill is warned of, naming the observable, the events a bin and
// the floor; 40 events over them are not.
TEST_F(AggregateTest, AFloorOfTooFewTruthEventsABinIsWarnedOf) {
  foldfarm::initLogging("info");
  writeChain("r0", 0, 0, 2, 2);
  writeChain("r1", 1, 0, 1, 3);
  const auto warned = [&](const std::string& truth, const std::string& out) {
    ::testing::internal::CaptureStderr();
    aggregateRunsWithOptions({root_.string()}, (root_ / out).string(), truth,
                             AggregateOptions{false});
    return ::testing::internal::GetCapturedStderr();
  };
  const std::string two = warned(writeTruth(), "agg_two");
  EXPECT_NE(two.find("aggregate: mass: the truth holds 2 effective event(s) over the 2 bins that "
                     "it or the unfolded result fills (1.0 a bin): delta_floor ("),
            std::string::npos)
      << two;
  std::vector<float> forty(20, 0.5f);
  forty.insert(forty.end(), 20, 2.0f);
  const std::string many = warned(writeTruthOfMasses("truth40.h5", forty), "agg_forty");
  EXPECT_EQ(many.find("mass: the truth holds"), std::string::npos) << many;
}

// What bands.h5 takes grows with the square of the bins: at OmniLearn's 49 bins a few hundred
// kB, nothing said; beyond a gigabyte the observables that make it so are named, with the size
// of one matrix and how to make it smaller. (`ChainCampaign.PlanSaysWhatTheCampaignWillTakeOnDisk`
// compares the figure with a real campaign's bands.h5.)
TEST(BandsSize, ABinningWhoseMatricesTakeGigabytesIsWarnedOf) {
  using foldfarm::ensembles::bandsSize;
  const std::vector<std::pair<std::string, size_t>> omnilearn = {
      {"mass", 49}, {"width", 49}, {"multiplicity", 79}};
  const auto small = bandsSize(omnilearn, 100, 4, "`aggregate --binning`");
  EXPECT_NEAR(small.bytes, 8.0 * (4 * (49 * 49 * 2 + 79 * 79) + 112 * (49 * 2 + 79)) + 3 * 20e3,
              1e-6);
  EXPECT_EQ(small.warning, "");
  const auto one = bandsSize({{"mass", 10000}, {"width", 49}}, 2, 3, "`aggregate --binning`");
  EXPECT_EQ(
      one.warning,
      "bands.h5 will take about 2.4 GB, and the aggregation one to two times as much memory: the "
      "binning of mass (10,000 bins) gives 3 matrices of bins x bins (10,000 x 10,000: 800 "
      "MB each); fewer bins make them smaller (the weights do not depend on the binning: "
      "`aggregate --binning` rebins finished chains without training again)");
  const auto three =
      bandsSize({{"mass", 5000}, {"width", 10000}, {"zg", 999}, {"tau21", 1000}}, 2, 3, "X");
  EXPECT_NE(three.warning.find("the binnings of mass (5,000 bins), width (10,000 bins) and tau21 "
                               "(1,000 bins) give each 3 matrices"),
            std::string::npos)
      << three.warning;
  // Just below and above the line.
  EXPECT_EQ(bandsSize({{"mass", 5000}}, 0, 4, "X").warning, "");  // 0.8 GB
  EXPECT_NE(bandsSize({{"mass", 5000}}, 0, 5, "X").warning, "");  // 1.0 GB and 20 kB
}

// A paired difference is clear only beyond Student's t of its replicas: over 2 replicas a
// difference of 4 standard errors is not (t = 12.7 for 1 degree of freedom; it was bold at 2),
// over 8 replicas of the same pattern it is (t = 2.36).
TEST_F(AggregateTest, AClearBestOverFewPairedReplicasNeedsStudentsT) {
  const auto write = [&](const std::string& set, int replicas) {
    for (int r = 0; r <= replicas; ++r) {
      const bool up = r % 2 == 1;
      writeChain(set + "/a/r" + std::to_string(r), r, 0,
                 r == 0 ? 5
                 : up   ? 5.5
                        : 4.5,
                 r == 0 ? 5
                 : up   ? 4.5
                        : 5.5);
      writeChain(set + "/b/r" + std::to_string(r), r, 0,
                 r == 0 ? 5
                 : up   ? 5.7
                        : 4.2,
                 r == 0 ? 5
                 : up   ? 4.3
                        : 5.8);
    }
    const std::string truth = writeTruth();
    AggregateOptions opt;
    opt.plots = false;
    for (const char* d : {"/a", "/b"})
      aggregateRunsWithOptions({(root_ / (set + d)).string()},
                               (root_ / (set + d) / "aggregate").string(), truth, opt);
    return compareAggregations({(root_ / (set + "/a")).string(), (root_ / (set + "/b")).string()},
                               {"A", "B"});
  };
  const nlohmann::json two = write("two", 2);
  const nlohmann::json& paired = two["observables"]["mass"]["B"]["paired"];
  ASSERT_EQ(paired["replicas"], 2) << paired.dump();
  const double ratio = paired["delta_diff"].get<double>() / paired["delta_diff_err"].get<double>();
  ASSERT_GT(ratio, 2.0) << paired.dump();
  ASSERT_LT(ratio, 12.7) << paired.dump();
  EXPECT_EQ(two["best"]["mass"], "A");
  EXPECT_TRUE(two["clear_best"]["mass"].is_null()) << two["clear_best"].dump();
  const nlohmann::json eight = write("eight", 8);
  ASSERT_EQ(eight["observables"]["mass"]["B"]["paired"]["replicas"], 8);
  EXPECT_EQ(eight["clear_best"]["mass"], "A") << eight["observables"]["mass"].dump();
}

// Warm-started shifts are measured from the warm reference, chain by chain, over the chains
// both ran (a chain without a partner left out); from the nominal otherwise (a cold variation,
// or one no chain of which has a partner). The reference is no source: its distance from the
// nominal is the warm start's own effect, reported beside.
TEST_F(AggregateTest, AWarmStartedShiftIsMeasuredFromTheWarmReferenceChainByChain) {
  const auto variation = [](const std::string& name, const std::string& type, bool warm) {
    nlohmann::json j = {{"variation", {{"name", name}, {"type", type}}}};
    if (warm) j["warm_from"] = "/c/tasks/r0000m0";
    return j;
  };
  // Fractions of the unit area in bin 0 (bin 1 holds the rest).
  writeChain("c/r0m0", 0, 0, 1, 1);                                                      // .5
  writeChain("c/r0m1", 0, 1, 1, 1);                                                      // .5
  writeChain("c/r1m0", 1, 0, 1, 3);                                                      // .25
  writeChain("c/r1m1", 1, 1, 1, 3);                                                      // .25
  writeChain("c/ref0", 0, 0, 3, 1, 42, variation("warm_reference", "reference", true));  // .75
  writeChain("c/ref1", 0, 1, 1, 1, 42, variation("warm_reference", "reference", true));  // .5
  writeChain("c/alt0", 0, 0, 3, 1, 42, variation("alt", "modelling", true));             // .75
  writeChain("c/alt1", 0, 1, 3, 1, 42, variation("alt", "modelling", true));             // .75
  writeChain("c/cold0", 0, 0, 3, 1, 42, variation("cold", "modelling", false));          // .75
  writeChain("c/wide0", 0, 0, 3, 1, 42, variation("wide", "modelling", true));           // .75
  writeChain("c/wide1", 1, 0, 1, 1, 42, variation("wide", "modelling", true));  // .5, no reference
  const std::string out = (root_ / "agg").string();
  const nlohmann::json s =
      aggregateRunsWithOptions({(root_ / "c").string()}, out, std::nullopt, {false});
  const double w = 75.0 / 49.0;
  H5Reader read(out + "/bands.h5");
  const auto bin0 = [&](const std::string& name) { return read("mass/" + name).at(0) * w; };
  // alt: chain by chain from the reference, (.75 - .75 + .75 - .5) / 2; from the nominal it
  // would be .75 - .5. Its noise: the two differences 0 and .25, standard error .125.
  EXPECT_NEAR(bin0("sources/alt/shift"), 0.125, 1e-12);
  EXPECT_NEAR(bin0("sources/alt/shift_error"), 0.125, 1e-12);
  // cold (not warm-started): from the nominal, replica by replica, .75 - .5. wide: over the
  // one chain the reference has a partner for, .75 - .75 (its replica 1's chain, without one,
  // is left out; from the nominal it was (.75 - .5 + .5 - .25) / 2).
  EXPECT_NEAR(bin0("sources/cold/shift"), 0.25, 1e-12);
  EXPECT_NEAR(bin0("sources/wide/shift"), 0.0, 1e-12);
  // The warm start's own effect: reference - nominal, chains .25 and 0.
  EXPECT_NEAR(bin0("warm_start_effect/shift"), 0.125, 1e-12);
  EXPECT_NEAR(bin0("warm_start_effect/shift_error"), 0.125, 1e-12);
  EXPECT_NEAR(bin0("variations/warm_reference/nominal"), 4.0 / 6.0, 1e-12);
  // No source of its own, not in the list of variations, named as the baseline.
  EXPECT_FALSE(s["observables"]["mass"]["uncertainty"].contains("warm_reference"));
  EXPECT_EQ(s["warm_reference"],
            (nlohmann::json{{"name", "warm_reference"}, {"chains", 2}, {"replicas", 1}}));
  std::map<std::string, std::string> from;
  for (const auto& v : s["variations"]) from[v["name"]] = v["shift_from"];
  EXPECT_EQ(from, (std::map<std::string, std::string>{
                      {"alt", "warm_reference"}, {"cold", "nominal"}, {"wide", "warm_reference"}}));
  // wide's shift is over its one chain with a partner; its variations/wide/nominal over both.
  std::map<std::string, nlohmann::json> in_shift;
  for (const auto& v : s["variations"])
    in_shift[v["name"]] = v.value("chains_in_shift", nlohmann::json());
  EXPECT_EQ(in_shift["alt"], 2);
  EXPECT_EQ(in_shift["wide"], 1);
  EXPECT_TRUE(in_shift["cold"].is_null());
  EXPECT_NEAR(s["observables"]["mass"]["warm_start_effect"]["shift"].get<double>(),
              std::sqrt((0.125 * 0.125 / 0.375 + 0.125 * 0.125 / 0.625) / (0.375 + 0.625)),
              1e-12);  // weighted by the nominal's mean: .375 and .625
}

// A modelling shift compares unfoldings on two independent simulated samples: its noise holds
// their statistics (the unfolded Σw² of each, to first order) beside the chains' training
// noise. Before, only the training noise: in a campaign whose "modelling" sample was the same
// generator with another seed, shifts of 27-72% stood beside a shift_error of 2-11%.
TEST_F(AggregateTest, AModellingShiftsNoiseHoldsBothSamplesStatistics) {
  const nlohmann::json alt = {{"variation", {{"name", "herwig"}, {"type", "modelling"}}}};
  // Nominal: Σw [3, 1], Σw² [5, 1] (bin-0 fraction .75) and Σw [1, 1], Σw² [1, 1] (.5).
  writeChain("m/r0", 0, 0, 3, 1, 42, nlohmann::json::object(), {}, false, {5, 1});
  writeChain("m/r1", 1, 0, 1, 1, 42, nlohmann::json::object(), {}, false, {1, 1});
  // The other generator: Σw [1, 3], Σw² [1, 9] (.25) in both replicas.
  writeChain("m/h0", 0, 0, 1, 3, 42, alt, {}, false, {1, 9});
  writeChain("m/h1", 1, 0, 1, 3, 42, alt, {}, false, {1, 9});
  const std::string out = (root_ / "agg").string();
  const nlohmann::json s =
      aggregateRunsWithOptions({(root_ / "m").string()}, out, std::nullopt, {false});
  // Bin 0's variance of a unit-area fraction: (Q0 (1 - 2 f) + f² W2) / W², f = S0 / W.
  const auto var = [](double s0, double s1, double q0, double q1) {
    const double w = s0 + s1, f = s0 / w;
    return (q0 * (1 - 2 * f) + f * f * (q0 + q1)) / (w * w);
  };
  const double nominal = (var(3, 1, 5, 1) + var(1, 1, 1, 1)) / 2;  // averaged over replicas
  const double herwig = var(1, 3, 1, 9);
  const double samples = nominal + herwig;
  // Training: the chains' differences -.5 and -.25, the variance of their mean.
  const double training = (0.125 * 0.125 * 2) / 1 / 2;
  const double w = 75.0 / 49.0;
  H5Reader read(out + "/bands.h5");
  const auto bin0 = [&](const std::string& name) { return read("mass/" + name).at(0) * w * w; };
  EXPECT_NEAR(bin0("sources/herwig/sample_noise_covariance"), samples, 1e-12);
  EXPECT_NEAR(bin0("sources/herwig/training_noise_covariance"), training, 1e-12);
  EXPECT_NEAR(bin0("sources/herwig/noise_covariance"), samples + training, 1e-12);
  EXPECT_NEAR(read("mass/sources/herwig/shift_error").at(0) * w, std::sqrt(samples + training),
              1e-12);
  EXPECT_NEAR(read("mass/sources/herwig/sample_noise_covariance").at(1) * w * w, -samples, 1e-12)
      << "bin 1 moves against bin 0 (two bins of unit area)";
  // summary.json, in the measure of "uncertainty": the root mean square over the bins of
  // sigma / nominal weighted by the nominal (.625 and .375): sum 1 / nominal over sum nominal.
  const double rms = std::sqrt((1 / 0.625 + 1 / 0.375) / (0.625 + 0.375));
  const auto& parts = s["observables"]["mass"]["shift_error_parts"]["herwig"];
  EXPECT_NEAR(parts["samples"].get<double>(), std::sqrt(samples) * rms, 1e-12);
  EXPECT_NEAR(parts["training"].get<double>(), std::sqrt(training) * rms, 1e-12);
  EXPECT_NEAR(s["observables"]["mass"]["shift_error"]["herwig"].get<double>(),
              std::sqrt(samples + training) * rms, 1e-12);
}

// A technical closure (the non-closure unfolds the nominal's own simulation): the unfolded
// result and the truth are the same events, so its noise is the training's alone (before: the
// two samples' statistics were added as if independent, an error 4-20 times the shift's noise).
TEST_F(AggregateTest, ATechnicalClosuresNoiseIsTheTrainingsAlone) {
  const std::string sim = writeSample("sim.h5", {0, 0, 1, 1}, {1, 2, 1, 5}, {1, 1, 1, 0});
  nlohmann::json nominal = nlohmann::json::object();
  nominal["mc"] = sim;
  writeChain("t/r0m0", 0, 0, 1, 3, 42, nominal, {}, false, {1, 3});
  writeChain("t/r1m0", 1, 0, 3, 1, 42, nominal, {}, false, {3, 1});
  nlohmann::json closure = variation("closure", "non_closure");
  closure["data"] = sim;
  writeChain("t/closure_r0m0", 0, 0, 3, 1, 42, closure, {}, false, {3, 1});
  writeChain("t/closure_r0m1", 0, 1, 1, 1, 42, closure, {}, false, {1, 1});
  const std::string out = (root_ / "agg").string();
  const nlohmann::json s =
      aggregateRunsWithOptions({(root_ / "t").string()}, out, std::nullopt, {false});
  H5Reader read(out + "/bands.h5");
  EXPECT_FALSE(read.has("mass/sources/non_closure/sample_noise_covariance"));
  EXPECT_TRUE(read.has("mass/sources/non_closure/training_noise_covariance"));
  const double w = 75.0 / 49.0;
  // The closure's chains .75 and .5: the standard error of their mean, .125.
  EXPECT_NEAR(read("mass/sources/non_closure/shift_error").at(0) * w, 0.125, 1e-12);
  EXPECT_TRUE(s["observables"]["mass"]["shift_error_parts"]["non_closure"]["samples"].is_null());
  // The same chains unfolding another file: both samples' statistics are in its noise.
  const std::string other = writeSample("other.h5", {0, 0, 1, 1}, {1, 2, 1, 5}, {1, 1, 1, 0});
  closure["data"] = other;
  writeChain("t/closure_r0m0", 0, 0, 3, 1, 42, closure, {}, false, {3, 1});
  writeChain("t/closure_r0m1", 0, 1, 1, 1, 42, closure, {}, false, {1, 1});
  const std::string out2 = (root_ / "agg2").string();
  const nlohmann::json s2 =
      aggregateRunsWithOptions({(root_ / "t").string()}, out2, std::nullopt, {false});
  EXPECT_TRUE(H5Reader(out2 + "/bands.h5").has("mass/sources/non_closure/sample_noise_covariance"));
  EXPECT_TRUE(s2["observables"]["mass"]["shift_error_parts"]["non_closure"]["samples"].is_number());
}

TEST_F(AggregateTest, SystematicSourcesCovariancesAndTotalAsComputedByHand) {
  writeNominal("camp");
  writeVariations("camp");
  // The measurement's truth: mass fractions [.7, .3].
  const std::string truth = writeSample("truth.h5", {0, 1}, {7, 3}, {});
  const std::string out = (root_ / "agg").string();
  AggregateOptions opt;
  opt.plots = foldfarm::plot::gnuplotAvailable();
  const nlohmann::json s = aggregateRunsWithOptions({(root_ / "camp").string()}, out, truth, opt);
  {
    // The matrices bands.h5 holds per observable are those the size estimate counts
    // (bandsMatrices): covariance, correlation, total, training noise (members), mc_stat and
    // its raw form, det's (its down side shares one replica with the nominal: covariance
    // alone), jes's (1: covariance), generator's (modelling, 2 replicas, of a simulation its
    // chains do not name apart from the nominal's: covariance, noise, training),
    // non_closure's (2 chains, other pseudo-data: covariance, noise, samples, training).
    const std::string bands = out + "/bands.h5";
    foldfarm::data::H5Handle f = foldfarm::data::h5OpenRead(bands);
    size_t square = 0;
    std::string names;
    for (const std::string& path : foldfarm::data::h5ListDatasetsDeep(f.get())) {
      if (path.rfind("mass/", 0) != 0) continue;
      std::vector<uint64_t> dims;
      readFloat64Dataset(f.get(), bands, path, &dims);
      if (dims.size() == 2 && dims[0] == dims[1] && path != "mass/replicas") {
        ++square;
        names += " " + path;
      }
    }
    EXPECT_EQ(square, foldfarm::ensembles::bandsMatrices(
                          true, true, {{false, 1}, {false, 1}, {false, 2}, {true, 2}},
                          foldfarm::ensembles::ShiftNoise::kKeep))
        << names;
  }

  // Everything below in fractions of the unit area (density x bin width w). Every shift has
  // x in bin 0 and -x in bin 1 (two bins of unit area), so bin 0 tells all.
  const double w = 75.0 / 49.0;
  // Statistical: the bootstrap replicas .25, .75 (replica 0's .5 is the central fit).
  const double stat_var = (0.25 * 0.25 + 0.25 * 0.25) / 1;
  // det (half_difference): up shifts r0 .6 - .5, r1 .4 - .25; down r0 .4 - .5 (its replica 5
  // has no nominal partner).
  const double det_up = (0.1 + 0.15) / 2, det_down = -0.1, det = (det_up - det_down) / 2;
  // jes (max): up .55 - .5, down .4 - .5: sign(up) x max(|up|, |down|).
  const double jes_up = 0.05, jes_down = -0.1, jes = 0.1;
  // herwig (modelling, one-sided, source generator): r0 .75 - .5, r2 .75 - .75.
  const double generator = (0.25 + 0.0) / 2;
  // mcstat: replicas .5, .6 (members .65 and .55), .4. Their spread holds the chains'
  // training noise as the statistical one does; one member's, from replica 1's pair,
  // ((.65 - .6)² + (.55 - .6)²) / 1, divided by the replicas' members on average
  // (1 + 1/2 + 1) / 3, is taken off.
  const double mc_var_raw = (0.0 + 0.01 + 0.01) / 2;
  const double mc_training = 0.005 * (1 + 0.5 + 1) / 3;
  const double mc_var = mc_var_raw - mc_training;
  // The nominal's training noise (in the statistical covariance): one member's from replica
  // 0's pair ((.25 - .5)² + (.75 - .5)²) / 1, the band's replicas 1 and 2 one member each.
  const double stat_training = 0.125;
  // closure: members [3,1] and [1,1] -> [2,1] -> 2/3; the pseudo-data's truth has weights
  // 1 + 2 in bin 0 and 1 in bin 1 (its weight-5 event fails pass_gen) -> .75.
  const double closure = 2.0 / 3.0 - 0.75;
  const double total_var =
      stat_var + mc_var + det * det + jes * jes + generator * generator + closure * closure;

  H5Reader read(out + "/bands.h5");
  auto frac = [&](const std::string& name) {
    std::vector<double> v = read("mass/" + name);
    for (double& x : v) x *= w;
    return v;
  };
  auto cov = [&](const std::string& name) {
    std::vector<double> v = read("mass/" + name);
    for (double& x : v) x *= w * w;
    return v;
  };
  auto expectShift = [](const std::vector<double>& v, double x0, const std::string& what) {
    ASSERT_EQ(v.size(), 49u) << what;
    EXPECT_NEAR(v[0], x0, 1e-12) << what;
    EXPECT_NEAR(v[1], -x0, 1e-12) << what;
    EXPECT_NEAR(v[2], 0.0, 1e-12) << what;
  };
  auto expectCov = [](const std::vector<double>& c, double c00, const std::string& what) {
    ASSERT_EQ(c.size(), 49u * 49u) << what;
    EXPECT_NEAR(c[0], c00, 1e-12) << what;
    EXPECT_NEAR(c[1], -c00, 1e-12) << what;
    EXPECT_NEAR(c[49], -c00, 1e-12) << what;
    EXPECT_NEAR(c[50], c00, 1e-12) << what;
    EXPECT_NEAR(c[2], 0.0, 1e-12) << what;
  };
  expectShift(frac("sources/det/up"), det_up, "det up");
  expectShift(frac("sources/det/down"), det_down, "det down");
  expectShift(frac("sources/det/shift"), det, "det shift");
  expectCov(cov("sources/det/covariance"), det * det, "det covariance");
  expectShift(frac("sources/jes/up"), jes_up, "jes up");
  expectShift(frac("sources/jes/down"), jes_down, "jes down");
  expectShift(frac("sources/jes/shift"), jes, "jes shift");
  expectCov(cov("sources/jes/covariance"), jes * jes, "jes covariance");
  expectShift(frac("sources/generator/shift"), generator, "generator shift");
  expectCov(cov("sources/generator/covariance"), generator * generator, "generator covariance");
  EXPECT_FALSE(read.has("mass/sources/generator/up"));  // one-sided: no raw up/down
  // The shifts' noise, from chains paired with the nominal's: herwig r0 .75 - .25 and r2
  // .75 - .75 (standard error .25); the closure's members .75 and .5 (.125), and its truth
  // sample's statistics: Σw [3, 1], Σw² [5, 1] (W 4, W2 6, f .75), a variance of
  // (5 (1 - 2 f) + f² W2) / W² = .0546875 in bin 0 (the chains here write no Σw²: no more);
  // det_down and both jes variations have one pair each: no estimate.
  const double closure_samples = 0.875 / 16;
  const double closure_se = std::sqrt(0.125 * 0.125 + closure_samples);
  for (const auto& [source, se] :
       {std::pair<std::string, double>{"generator", 0.25}, {"non_closure", closure_se}}) {
    const std::vector<double> e = frac("sources/" + source + "/shift_error");
    ASSERT_EQ(e.size(), 49u) << source;
    EXPECT_NEAR(e[0], se, 1e-12) << source;
    EXPECT_NEAR(e[1], se, 1e-12) << source;
    EXPECT_NEAR(e[2], 0.0, 1e-12) << source;
    EXPECT_NEAR(s["observables"]["mass"]["shift_error"][source].get<double>(), se / 0.5, 1e-12)
        << source;
  }
  for (const char* none : {"det", "jes"})
    EXPECT_FALSE(read.has(std::string("mass/sources/") + none + "/shift_error")) << none;
  expectCov(cov("sources/non_closure/training_noise_covariance"), 0.125 * 0.125,
            "non-closure training noise");
  expectCov(cov("sources/non_closure/sample_noise_covariance"), closure_samples,
            "non-closure samples");
  EXPECT_NEAR(s["observables"]["mass"]["shift_error_parts"]["non_closure"]["samples"].get<double>(),
              std::sqrt(closure_samples) / 0.5, 1e-12);
  EXPECT_TRUE(s["observables"]["mass"]["shift_error_parts"]["generator"]["samples"].is_null());
  expectCov(cov("covariance_mc_stat"), mc_var, "MC statistics");
  expectCov(cov("covariance_mc_stat_raw"), mc_var_raw, "MC statistics with the training noise");
  expectCov(cov("covariance_training"), stat_training, "training noise in the statistical");
  expectShift(frac("non_closure/shift"), closure, "non-closure");
  expectCov(cov("sources/non_closure/covariance"), closure * closure, "non-closure covariance");
  const std::vector<double> closure_truth = frac("non_closure/truth");
  const std::vector<double> closure_unfolded = frac("non_closure/unfolded");
  EXPECT_NEAR(closure_truth[0], 0.75, 1e-12);
  EXPECT_NEAR(closure_unfolded[0], 2.0 / 3.0, 1e-12);
  expectCov(cov("covariance"), stat_var, "statistical");  // stays the data bootstrap's
  expectCov(cov("covariance_total"), total_var, "total");
  EXPECT_NEAR(frac("std_total")[0], std::sqrt(total_var), 1e-12);
  // A variation's mean result counts all its replicas: det_down r0 .4 and r5 .5.
  EXPECT_NEAR(frac("variations/det_down/nominal")[0], 0.45, 1e-12);
  EXPECT_NEAR(frac("variations/mcstat/nominal")[0], 0.5, 1e-12);
  EXPECT_NEAR(frac("variations/herwig/nominal")[0], 0.75, 1e-12);

  const auto& mass = s["observables"]["mass"];
  // The statistical 68% band [p16, p84] = [.33, .67] misses the truth .7 (and .3 in bin 1);
  // nominal ± sigma_total covers it when |.7 - .5| <= sigma_total.
  const double sigma = std::sqrt(total_var);
  EXPECT_DOUBLE_EQ(mass["coverage_68"].get<double>(), 0.0);
  ASSERT_LE(0.2, sigma);
  EXPECT_DOUBLE_EQ(mass["coverage_68_total"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(mass["coverage_95_total"].get<double>(), 0.2 <= 1.96 * sigma ? 1.0 : 0.0);
  // Relative sizes: sigma / nominal in both counted bins (nominal .5 each).
  const auto& u = mass["uncertainty"];
  EXPECT_NEAR(u["stat"].get<double>(), std::sqrt(stat_var) / 0.5, 1e-12);
  EXPECT_NEAR(u["mc_stat"].get<double>(), std::sqrt(mc_var) / 0.5, 1e-12);
  EXPECT_NEAR(mass["training_noise"].get<double>(), std::sqrt(stat_training) / 0.5, 1e-12);
  // All of the training noise was taken off: within the replicas' range (two bins, rank 1).
  const nlohmann::json& treated = s["mc_stat_training_noise"];
  EXPECT_EQ(treated["removed"], true);
  EXPECT_EQ(treated["estimated_from"], "mc_bootstrap");
  EXPECT_NEAR(treated["removed_fraction"]["mass"].get<double>(), 1.0, 1e-12);
  EXPECT_TRUE(treated["removed_fraction"]["width"].is_null()) << "no noise to take off there";
  EXPECT_NEAR(u["det"].get<double>(), det / 0.5, 1e-12);
  EXPECT_NEAR(u["jes"].get<double>(), jes / 0.5, 1e-12);
  EXPECT_NEAR(u["generator"].get<double>(), generator / 0.5, 1e-12);
  EXPECT_NEAR(u["non_closure"].get<double>(), std::abs(closure) / 0.5, 1e-12);
  EXPECT_NEAR(u["total"].get<double>(), sigma / 0.5, 1e-12);
  EXPECT_EQ(u.size(), 7u);

  // The nominal's counts; the variations listed with theirs.
  EXPECT_EQ(s["replicas"], 3);
  EXPECT_EQ(s["chains"], 4);
  ASSERT_EQ(s["variations"].size(), 7u);
  const nlohmann::json det_down_entry = {
      {"name", "det_down"}, {"type", "detector"}, {"source", "det"},        {"direction", "down"},
      {"chains", 2},        {"replicas", 2},      {"shift_from", "nominal"}};
  EXPECT_EQ(s["variations"][1], det_down_entry) << s["variations"].dump();
  EXPECT_EQ(s["variations"][0]["type"], "non_closure");
  EXPECT_EQ(s["variations"][0]["chains"], 2);
  EXPECT_EQ(s["variations"][0]["replicas"], 1);
  // Without `final` in the chains there are no publication weights.
  EXPECT_FALSE(fs::exists(out + "/event_weights.h5"));
  if (opt.plots) {
    std::ifstream png(out + "/mass_breakdown.png", std::ios::binary);
    char magic[4] = {};
    png.read(magic, 4);
    EXPECT_EQ(std::string(magic + 1, 3), "PNG");
    EXPECT_TRUE(fs::exists(out + "/tau21_breakdown.png"));
    EXPECT_TRUE(fs::exists(out + "/mass_shifts.png"));  // detector, modelling, non-closure
  }
}

// Chains drawn from known parts: each replica's data (or simulation) fluctuation, and each
// chain's own training noise. The statistical and the MC-statistics spreads both contain the
// training noise; the total must count it once (it counted it twice before).
TEST_F(AggregateTest, TheTotalCountsTheTrainingNoiseOnce) {
  const int replicas = 300, members = 4;
  const double sigma_data = 0.02, sigma_mc = 0.02, sigma_train = 0.04;
  std::mt19937_64 rng(2026);
  std::normal_distribution<double> normal(0.0, 1.0);
  // A chain's mass fraction in the first of the two bins: f (and 1 - f in the second).
  auto chain = [&](const std::string& rel, int r, int m, double f, const nlohmann::json& extra) {
    writeChain(rel, r, m, 100 * f, 100 * (1 - f), 42, extra);
  };
  for (int r = 0; r <= replicas; ++r) {  // replica 0 and `replicas` bootstrap replicas
    const double data = r == 0 ? 0.0 : sigma_data * normal(rng);
    for (int m = 0; m < members; ++m)
      chain("camp/r" + std::to_string(r) + "m" + std::to_string(m), r, m,
            0.5 + data + sigma_train * normal(rng), nlohmann::json::object());
  }
  // The MC-statistics variation with one member per replica, as the README's example.
  for (int r = 0; r < replicas; ++r)
    chain("camp/mc" + std::to_string(r), r, 0,
          0.5 + sigma_mc * normal(rng) + sigma_train * normal(rng),
          variation("mcstat", "mc_bootstrap"));
  const std::string out = (root_ / "agg").string();
  const nlohmann::json s =
      aggregateRunsWithOptions({(root_ / "camp").string()}, out, std::nullopt, {false});

  const double w = 75.0 / 49.0;  // density -> fraction of the unit area in a mass bin
  H5Reader read(out + "/bands.h5");
  auto variance = [&](const std::string& name) { return read("mass/" + name)[0] * w * w; };
  const double train = sigma_train * sigma_train;
  // Each estimate is within about 10% (300 replicas); the margins are 3 to 4 of its errors.
  EXPECT_NEAR(variance("covariance"), sigma_data * sigma_data + train / members, 2.5e-4);
  EXPECT_NEAR(variance("covariance_training"), train / members, 1e-4);
  EXPECT_NEAR(variance("covariance_mc_stat_raw"), sigma_mc * sigma_mc + train, 6e-4);
  EXPECT_NEAR(variance("covariance_mc_stat"), sigma_mc * sigma_mc, 6e-4);
  const double once = sigma_data * sigma_data + sigma_mc * sigma_mc + train / members;
  EXPECT_NEAR(variance("covariance_total"), once, 7e-4);  // twice: once + 16e-4
  const nlohmann::json& treated = s["mc_stat_training_noise"];
  EXPECT_EQ(treated["removed"], true);
  EXPECT_EQ(treated["estimated_from"], "nominal");
  EXPECT_NEAR(treated["removed_fraction"]["mass"].get<double>(), 1.0, 1e-12);

  // Without two members anywhere nothing can be estimated: the MC-statistics covariance is
  // its replicas' spread, and summary.json says the noise was not removed.
  for (int r = 0; r < 3; ++r) {
    chain("single/r" + std::to_string(r), r, 0, 0.5 + 0.1 * r, nlohmann::json::object());
    chain("single/mc" + std::to_string(r), r, 0, 0.5 - 0.1 * r,
          variation("mcstat", "mc_bootstrap"));
  }
  const std::string out1 = (root_ / "agg1").string();
  const nlohmann::json s1 =
      aggregateRunsWithOptions({(root_ / "single").string()}, out1, std::nullopt, {false});
  H5Reader read1(out1 + "/bands.h5");
  EXPECT_NEAR(read1("mass/covariance_mc_stat")[0] * w * w, 0.01, 1e-12);
  EXPECT_FALSE(read1.has("mass/covariance_mc_stat_raw"));
  EXPECT_FALSE(read1.has("mass/covariance_training"));
  EXPECT_TRUE(s1["observables"]["mass"]["training_noise"].is_null());
  const nlohmann::json kept = {{"removed", false}, {"estimated_from", nullptr}};
  EXPECT_EQ(s1["mc_stat_training_noise"], kept);
}

// A source's shift has noise of its own (the varied and the nominal chains train apart): its
// covariance from the per-chain differences varied (r, m) - nominal (r, m) (a half difference:
// up (r, m) - down (r, m)), its standard error reported, and with --shift-noise subtract taken
// off the source's s s^T.
TEST_F(AggregateTest, ShiftNoiseComesFromPairedChainsAndCanBeSubtracted) {
  auto chain = [&](const std::string& rel, int r, int m, double f, const nlohmann::json& extra) {
    writeChain(rel, r, m, 100 * f, 100 * (1 - f), 42, extra);
  };
  for (int r = 0; r < 2; ++r)
    for (int m = 0; m < 2; ++m)
      chain("camp/r" + std::to_string(r) + "m" + std::to_string(m), r, m, 0.5,
            nlohmann::json::object());
  // det (half_difference): up differences .1 .2 .1 0, down -.05 -.05 -.15 -.15.
  // jes (max): up as det's, down -.15 -.15 -.25 -.25 (the larger: its error is taken).
  const double up[2][2] = {{0.6, 0.7}, {0.6, 0.5}}, down[2][2] = {{0.45, 0.45}, {0.35, 0.35}},
               jes_down[2][2] = {{0.35, 0.35}, {0.25, 0.25}};
  for (int r = 0; r < 2; ++r)
    for (int m = 0; m < 2; ++m) {
      const std::string at = "r" + std::to_string(r) + "m" + std::to_string(m);
      chain("camp/det_up_" + at, r, m, up[r][m], variation("det_up", "detector", "det", "up"));
      chain("camp/det_down_" + at, r, m, down[r][m],
            variation("det_down", "detector", "det", "down"));
      chain("camp/jes_up_" + at, r, m, up[r][m],
            variation("jes_up", "detector", "jes", "up", "max"));
      chain("camp/jes_down_" + at, r, m, jes_down[r][m],
            variation("jes_down", "detector", "jes", "down", "max"));
    }
  // gen (one-sided): differences .3 and .1; tiny: .05 and -.03 (a shift of .01, its noise
  // .04); alt: one pair, nothing to estimate from.
  chain("camp/gen_r0m0", 0, 0, 0.8, variation("gen", "modelling"));
  chain("camp/gen_r1m1", 1, 1, 0.6, variation("gen", "modelling"));
  chain("camp/tiny_r0m0", 0, 0, 0.55, variation("tiny", "modelling"));
  chain("camp/tiny_r1m1", 1, 1, 0.47, variation("tiny", "modelling"));
  chain("camp/alt_r0m0", 0, 0, 0.7, variation("alt", "modelling"));
  // apart (half_difference): up in replica 0 only (differences .1 .2), down in replica 1 only
  // (-.05 -.15): no chain to pair, so the sides' noises are added as independent.
  chain("camp/apart_up_r0m0", 0, 0, 0.6, variation("apart_up", "detector", "apart", "up"));
  chain("camp/apart_up_r0m1", 0, 1, 0.7, variation("apart_up", "detector", "apart", "up"));
  chain("camp/apart_down_r1m0", 1, 0, 0.45, variation("apart_down", "detector", "apart", "down"));
  chain("camp/apart_down_r1m1", 1, 1, 0.35, variation("apart_down", "detector", "apart", "down"));
  const std::string out = (root_ / "agg").string();
  const nlohmann::json s =
      aggregateRunsWithOptions({(root_ / "camp").string()}, out, std::nullopt, {false});

  const double w = 75.0 / 49.0;  // density -> fraction of the unit area in a mass bin
  // Shifts (fractions, bin 0): det .1 (up .1, down -.1), jes .2 (the down side's), gen .2,
  // tiny .01, apart (.15 + .1) / 2, alt .2. Their standard errors: det's half differences
  // .075 .125 .125 .075 (the nominal cancels); jes's chosen side -.15 -.15 -.25 -.25, signed
  // as the shift; apart's (.005 / 2 + .005 / 2) / 4.
  const int n_sources = 5;
  const double shift[] = {0.1, 0.2, 0.2, 0.01, 0.125};
  const double se[] = {std::sqrt(0.0025 / 3 / 4), std::sqrt(0.01 / 3 / 4), 0.1, 0.04,
                       std::sqrt(0.005 / 4)};
  const std::string names[] = {"det", "jes", "gen", "tiny", "apart"};
  double kept_total = 0.04;  // alt's; the nominal chains agree: no statistical spread
  H5Reader read(out + "/bands.h5");
  for (int i = 0; i < n_sources; ++i) {
    const std::string& source = names[i];
    std::vector<double> e = read("mass/sources/" + source + "/shift_error");
    ASSERT_EQ(e.size(), 49u) << source;
    EXPECT_NEAR(e[0] * w, se[i], 1e-12) << source;
    EXPECT_NEAR(e[1] * w, se[i], 1e-12) << source;
    EXPECT_NEAR(e[2], 0.0, 1e-12) << source;
    const std::vector<double> n = read("mass/sources/" + source + "/noise_covariance");
    ASSERT_EQ(n.size(), 49u * 49u) << source;
    EXPECT_NEAR(n[0] * w * w, se[i] * se[i], 1e-12) << source;
    EXPECT_NEAR(n[1] * w * w, -se[i] * se[i], 1e-12) << source;  // bin 1 moves against bin 0
    // summary.json: the measure of "uncertainty" (nominal .5 in both bins).
    EXPECT_NEAR(s["observables"]["mass"]["shift_error"][source].get<double>(), se[i] / 0.5, 1e-12)
        << source;
    // Kept (the default): the source's covariance is s s^T, noise and all.
    EXPECT_NEAR(read("mass/sources/" + source + "/covariance")[0] * w * w, shift[i] * shift[i],
                1e-12)
        << source;
    EXPECT_FALSE(read.has("mass/sources/" + source + "/covariance_raw")) << source;
    kept_total += shift[i] * shift[i];
  }
  EXPECT_FALSE(read.has("mass/sources/alt/shift_error"));
  EXPECT_FALSE(read.has("mass/sources/alt/noise_covariance"));
  EXPECT_TRUE(s["observables"]["mass"]["shift_error"]["alt"].is_null());
  EXPECT_EQ(s["shift_noise"], "kept");

  // Subtracted in quadrature per bin: s~ = sign(s) sqrt((s² - se²)_+), covariance s~ s~^T:
  // s² - se² in bins 0 and 1 (anticorrelated), zero where the noise is larger (tiny); alt has
  // no noise estimate and stays.
  AggregateOptions subtract;
  subtract.plots = false;
  subtract.shift_noise = ShiftNoise::kSubtract;
  const std::string out2 = (root_ / "agg_subtracted").string();
  const nlohmann::json s2 =
      aggregateRunsWithOptions({(root_ / "camp").string()}, out2, std::nullopt, subtract);
  EXPECT_EQ(s2["shift_noise"], "subtracted");
  H5Reader read2(out2 + "/bands.h5");
  double total = 0.04;  // alt's, as it was
  for (int i = 0; i < n_sources; ++i) {
    const std::string& source = names[i];
    const double left = std::max(0.0, shift[i] * shift[i] - se[i] * se[i]);
    const std::vector<double> c = read2("mass/sources/" + source + "/covariance");
    EXPECT_NEAR(c[0] * w * w, left, 1e-12) << source;
    EXPECT_NEAR(c[1] * w * w, -left, 1e-12) << source;
    EXPECT_NEAR(c[50] * w * w, left, 1e-12) << source;
    EXPECT_NEAR(read2("mass/sources/" + source + "/covariance_raw")[0] * w * w, shift[i] * shift[i],
                1e-12)
        << source;
    EXPECT_NEAR(s2["observables"]["mass"]["uncertainty"][source].get<double>(),
                std::sqrt(left) / 0.5, 1e-6)
        << source;
    total += left;
  }
  EXPECT_LT(shift[3] * shift[3], se[3] * se[3]);  // tiny is all noise: nothing left
  EXPECT_NEAR(read2("mass/sources/alt/covariance")[0] * w * w, 0.04, 1e-12);
  EXPECT_FALSE(read2.has("mass/sources/alt/covariance_raw"));
  EXPECT_NEAR(read2("mass/covariance_total")[0] * w * w, total, 1e-12);
  EXPECT_NEAR(read("mass/covariance_total")[0] * w * w, kept_total, 1e-12);
}

// bench aggregate: every chain it writes is aggregated (it checks the counts itself), the
// figures are there, and the scratch directory goes unless kept.
TEST_F(AggregateTest, TheBenchmarkAggregatesEveryChainItWrote) {
  AggregateBenchOptions o;
  o.replicas = 4;
  o.members = 2;
  o.variation_replicas = 2;
  o.scratch = root_.string();
  const nlohmann::json r = benchAggregate(o);
  EXPECT_EQ(r["nominal"]["chains"], 8);
  EXPECT_EQ(r["with_variations"]["chains"], 8 + 3 * 4 + 2);  // det pair, alt, mc_stat
  EXPECT_EQ(r["write"]["chains"], 22);
  for (const char* k : {"nominal", "with_variations"}) {
    EXPECT_GT(r[k]["seconds"].get<double>(), 0.0) << k;
    EXPECT_NEAR(r[k]["ms_per_chain"].get<double>(),
                1e3 * r[k]["seconds"].get<double>() / r[k]["chains"].get<double>(), 1e-9)
        << k;
  }
  EXPECT_GT(r["peak_rss_MB"].get<double>(), 0.0);
  EXPECT_FALSE(r.contains("dir"));
  EXPECT_TRUE(fs::is_empty(root_)) << "the scratch directory was left behind";

  o.keep = true;
  o.variation_replicas = 0;  // the nominal alone
  const nlohmann::json kept = benchAggregate(o);
  EXPECT_FALSE(kept.contains("with_variations"));
  const std::string dir = kept["dir"].get<std::string>();
  const nlohmann::json summary = readJson(dir + "/agg_nominal/summary.json");
  EXPECT_EQ(summary["chains"], 8);
  EXPECT_EQ(summary["replicas"], 4);

  // Rebinning timed too: every nominal chain rebinned from its weights (each fill counted).
  o.keep = false;
  o.rebin_events = 500;
  o.rebin_iterations = 2;
  const nlohmann::json rebinned = benchAggregate(o);
  EXPECT_EQ(rebinned["rebinned"]["chains"], 8);
  EXPECT_NEAR(rebinned["rebinned"]["events_per_s"].get<double>(),
              8.0 * 500 * 4 / rebinned["rebinned"]["seconds"].get<double>(), 1e-6);

  o.replicas = 1;
  EXPECT_THROW(benchAggregate(o), foldfarm::InputError);
}

TEST_F(AggregateTest, VariationsLeaveTheNominalResultsAsTheyWere) {
  writeNominal("plain");
  writeNominal("varied");
  writeVariations("varied");
  const std::string truth = writeSample("truth.h5", {0, 1}, {7, 3}, {});
  const std::string out_a = (root_ / "agg_plain").string(), out_b = (root_ / "agg_varied").string();
  const nlohmann::json a =
      aggregateRunsWithOptions({(root_ / "plain").string()}, out_a, truth, {false});
  const nlohmann::json b =
      aggregateRunsWithOptions({(root_ / "varied").string()}, out_b, truth, {false});
  H5Reader ra(out_a + "/bands.h5"), rb(out_b + "/bands.h5");
  for (const char* obs : {"mass", "width", "multiplicity", "lnrho", "zg", "tau21"}) {
    const std::string o = obs;
    for (const char* ds : {"edges", "nominal", "std", "p16", "p84", "p2_5", "p97_5", "covariance",
                           "correlation", "replicas", "prior", "truth"})
      EXPECT_EQ(ra(o + "/" + ds), rb(o + "/" + ds)) << o << "/" << ds;
    // Without variations the total is the statistical band.
    EXPECT_EQ(ra(o + "/covariance_total"), ra(o + "/covariance")) << o;
    EXPECT_EQ(ra(o + "/std_total"), ra(o + "/std")) << o;
    for (const char* absent : {"sources", "variations", "non_closure", "covariance_mc_stat"})
      EXPECT_FALSE(ra.has(o + "/" + absent)) << o << "/" << absent;
    for (const char* key : {"bins", "delta_prior", "delta_unfolded", "delta_unfolded_err",
                            "delta_floor", "coverage_68", "coverage_95", "mean_prior",
                            "mean_unfolded", "mean_truth", "shift_recovered", "shift_significance"})
      EXPECT_EQ(a["observables"][o][key], b["observables"][o][key]) << o << "." << key;
  }
  EXPECT_EQ(ra.attr("/", "replicas"), rb.attr("/", "replicas"));
  EXPECT_EQ(ra.attr("/", "chains"), rb.attr("/", "chains"));
  for (const char* key : {"replicas", "chains", "campaign_seed", "classifier", "truth"})
    EXPECT_EQ(a[key], b[key]) << key;
  EXPECT_EQ(a["variations"], nlohmann::json::array());
  const auto& u = a["observables"]["mass"]["uncertainty"];
  EXPECT_EQ(u.size(), 2u) << u.dump();
  EXPECT_EQ(u["stat"], u["total"]);
  EXPECT_TRUE(a["observables"]["mass"]["coverage_68_total"].is_number());
}

TEST_F(AggregateTest, VariationRefusalsAreOneLineAndWriteNothing) {
  struct Case {
    std::string camp, expect;
  };
  std::vector<Case> cases;
  auto add = [&](const std::string& camp, const std::string& expect) {
    writeNominal(camp);
    cases.push_back({camp, expect});
  };
  add("up_only", "is the up of source 'det' without a down");
  writeChain("up_only/v", 0, 0, 1, 1, 42, variation("det_up", "detector", "det", "up"));
  add("two_ups", "are both the up of source 'det'");
  writeChain("two_ups/a", 0, 0, 1, 1, 42, variation("det_up", "detector", "det", "up"));
  writeChain("two_ups/b", 0, 0, 1, 1, 42, variation("det_up2", "detector", "det", "up"));
  writeChain("two_ups/c", 0, 0, 1, 1, 42, variation("det_down", "detector", "det", "down"));
  add("symmetrise", "disagree on symmetrise");
  writeChain("symmetrise/a", 0, 0, 1, 1, 42, variation("det_up", "detector", "det", "up", "max"));
  writeChain("symmetrise/b", 0, 0, 1, 1, 42, variation("det_down", "detector", "det", "down"));
  add("type", "unknown type 'theory'");
  writeChain("type/a", 0, 0, 1, 1, 42, variation("scale", "theory"));
  add("unshared", "none of which the nominal has");
  writeChain("unshared/a", 7, 0, 1, 1, 42, variation("det", "detector"));
  add("binning", "(both of variation 'det')");
  writeChain("binning/a", 0, 0, 1, 1, 42, variation("det", "detector"));
  writeChain("binning/b", 1, 0, 1, 1, 42, variation("det", "detector"), {}, true);
  add("nominal_binning", "bins mass differently from the nominal");
  writeChain("nominal_binning/a", 0, 0, 1, 1, 42, variation("det", "detector"), {}, true);
  add("described", "is described differently");
  writeChain("described/a", 0, 0, 1, 1, 42, variation("det", "detector"));
  writeChain("described/b", 1, 0, 1, 1, 42, variation("det", "modelling"));
  for (const auto& c : cases) {
    const std::string out = (root_ / ("out_" + c.camp)).string();
    const std::string msg = refusal(c.camp, out);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.camp << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.camp << ": " << msg;
    EXPECT_FALSE(fs::exists(out)) << c.camp;
  }
  // Variations without the nominal.
  writeChain("only_variation/a", 0, 0, 1, 1, 42, variation("det", "detector"));
  EXPECT_NE(refusal("only_variation", (root_ / "out_only").string()).find("nominal"),
            std::string::npos);
}

TEST_F(AggregateTest, EventWeightsAreMemberMeansOfFinalWithTheSimulationsHash) {
  const std::string sim = writeSample("sim.h5", {0, 1, 0, 1}, {}, {});
  const std::string sim_det = writeSample("sim_det.h5", {0, 1, 1, 1}, {}, {});
  const std::string herwig = writeSample("herwig.h5", {0, 0, 1}, {}, {});
  const nlohmann::json mc = {{"mc", sim}};
  writeChain("c/r0m0", 0, 0, 1, 3, 42, mc, {1, 2, 3, 4});
  writeChain("c/r0m1", 0, 1, 3, 1, 42, mc, {3, 2, 1, 0});
  writeChain("c/r1m0", 1, 0, 1, 3, 42, mc, {1, 1, 1, 1});
  writeChain("c/r2m0", 2, 0, 3, 1, 42, mc, {0, 0, 0, 4});
  writeChain("c/r2m1", 2, 1, 3, 1, 42, mc, {2, 2, 2, 0});
  nlohmann::json det = variation("det", "detector");
  det["mc"] = sim_det;
  det["warm_from"] = "/c/tasks/r0000m0";  // its shift is measured from the warm reference
  writeChain("c/det_r0", 0, 0, 2, 2, 42, det, {5, 5, 5, 5});
  writeChain("c/det_r1", 1, 0, 2, 2, 42, det, {9, 9, 9, 9});
  nlohmann::json ref = variation("warm_reference", "reference");
  ref["mc"] = sim;
  ref["warm_from"] = "/c/tasks/r0000m0";
  writeChain("c/ref_r0", 0, 0, 2, 2, 42, ref, {4, 4, 4, 4});
  writeChain("c/ref_r1", 1, 0, 2, 2, 42, ref, {8, 8, 8, 8});
  nlohmann::json mcstat = variation("mcstat", "mc_bootstrap");
  mcstat["mc"] = sim;
  writeChain("c/mcstat_r0", 0, 0, 2, 2, 42, mcstat, {1, 0, 2, 0});
  writeChain("c/mcstat_r1", 1, 0, 2, 2, 42, mcstat, {0, 1, 0, 2});
  nlohmann::json hw = variation("herwig", "modelling");
  hw["mc"] = herwig;
  writeChain("c/herwig_r0m0", 0, 0, 2, 2, 42, hw, {1, 2, 3});
  writeChain("c/herwig_r0m1", 0, 1, 2, 2, 42, hw, {3, 4, 5});
  const std::string out = (root_ / "agg").string();
  aggregateRunsWithOptions({(root_ / "c").string()}, out, std::nullopt, {false});

  auto sha256sum = [](const std::string& path) {
    return foldfarm::runProcess({"sha256sum", path}).out.substr(0, 64);
  };
  H5Reader read(out + "/event_weights.h5");
  EXPECT_EQ(read("weights/nominal"), (std::vector<double>{2, 2, 2, 2}));
  EXPECT_EQ(read("weights/replica_0001"), (std::vector<double>{1, 1, 1, 1}));
  EXPECT_EQ(read("weights/replica_0002"), (std::vector<double>{1, 1, 1, 2}));
  EXPECT_FALSE(read.has("weights/replica_0000"));
  EXPECT_EQ(read("weights/det"), (std::vector<double>{5, 5, 5, 5}));  // its replica 0
  EXPECT_EQ(read.attr("weights/det", "replica", true), "0");
  EXPECT_EQ(read.attr("weights/det", "simulation", true), sim_det);
  EXPECT_EQ(read.attr("weights/det", "type", true), "detector");
  // What a variation's shift is measured from (a warm-started one's: the warm reference, not
  // the nominal, whose difference holds the warm start's extra training too).
  EXPECT_EQ(read.attr("weights/det", "shift_from", true), "weights/warm_reference");
  EXPECT_EQ(read.attr("other_simulations/herwig/weights", "shift_from", true), "weights/nominal");
  EXPECT_EQ(read("weights/warm_reference"), (std::vector<double>{4, 4, 4, 4}));
  EXPECT_EQ(read("weights/mcstat_replica_0000"), (std::vector<double>{1, 0, 2, 0}));
  EXPECT_EQ(read("weights/mcstat_replica_0001"), (std::vector<double>{0, 1, 0, 2}));
  EXPECT_EQ(read.attr("weights/nominal", "members", true), "2");
  EXPECT_EQ(read("other_simulations/herwig/weights"), (std::vector<double>{2, 3, 4}));
  EXPECT_EQ(read.attr("other_simulations/herwig", "rows"), "3");
  EXPECT_EQ(read.attr("other_simulations/herwig", "simulation"), herwig);
  EXPECT_EQ(read.attr("other_simulations/herwig", "simulation_sha256"), sha256sum(herwig));
  EXPECT_EQ(read.attr("/", "simulation"), sim);
  EXPECT_EQ(read.attr("/", "simulation_sha256"), sha256sum(sim));
  EXPECT_EQ(read.attr("/", "rows"), "4");
  EXPECT_EQ(nlohmann::json::parse(read.attr("/", "columns")),
            nlohmann::json({"nominal", "replica_0001", "replica_0002", "det", "mcstat_replica_0000",
                            "mcstat_replica_0001", "warm_reference"}));
  const std::string selection = read.attr("/", "selection");
  EXPECT_NE(selection.find("pass_gen"), std::string::npos) << selection;
  EXPECT_NE(selection.find("push weight of 1"), std::string::npos) << selection;

  // The central columns only: the nominal and each variation's, no bootstrap replica.
  AggregateOptions central;
  central.plots = false;
  central.event_weights = EventWeightsChoice::kCentral;
  const std::string out_c = (root_ / "agg_central").string();
  nlohmann::json summary =
      aggregateRunsWithOptions({(root_ / "c").string()}, out_c, std::nullopt, central);
  {
    H5Reader c(out_c + "/event_weights.h5");
    EXPECT_EQ(nlohmann::json::parse(c.attr("/", "columns")),
              nlohmann::json({"nominal", "det", "warm_reference"}));
    EXPECT_EQ(c("weights/nominal"), (std::vector<double>{2, 2, 2, 2}));
    EXPECT_FALSE(c.has("weights/replica_0001"));
    EXPECT_FALSE(c.has("weights/mcstat_replica_0000"));
    EXPECT_EQ(c("other_simulations/herwig/weights"), (std::vector<double>{2, 3, 4}));
  }
  EXPECT_EQ(summary["outputs"], nlohmann::json({"bands.h5", "event_weights.h5", "summary.json"}));
  // None: the earlier event_weights.h5 in that directory goes too (it would describe another
  // aggregation); bands.h5 and summary.json are rewritten.
  AggregateOptions none = central;
  none.event_weights = EventWeightsChoice::kNone;
  summary = aggregateRunsWithOptions({(root_ / "c").string()}, out_c, std::nullopt, none);
  EXPECT_FALSE(fs::exists(out_c + "/event_weights.h5"));
  EXPECT_TRUE(fs::exists(out_c + "/bands.h5"));
  EXPECT_EQ(summary["outputs"], nlohmann::json({"bands.h5", "summary.json"}));
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(out_c + "/summary.json"))["outputs"],
            summary["outputs"]);
  EXPECT_THROW(parseEventWeightsChoice("some"), foldfarm::InputError);

  // A directory no aggregation wrote: files of the user's named like its outputs are refused,
  // not overwritten (or, for names this run does not write, removed); the others are kept.
  const std::string out_u = (root_ / "paper").string();
  fs::create_directories(out_u);
  foldfarm::writeFileAtomic(out_u + "/event_weights.h5", "weights of campaign A");
  foldfarm::writeFileAtomic(out_u + "/mass.png", "my figure");
  foldfarm::writeFileAtomic(out_u + "/paper.tex", "x");
  std::string why = refusal("c", out_u);  // plots off: bands.h5, event_weights.h5, summary.json
  EXPECT_NE(why.find(out_u + ": holds event_weights.h5, which no earlier aggregation"),
            std::string::npos)
      << why;
  EXPECT_EQ(foldfarm::readFile(out_u + "/event_weights.h5"), "weights of campaign A");
  EXPECT_FALSE(fs::exists(out_u + "/bands.h5"));
  EXPECT_FALSE(fs::exists(out_u + "/summary.json"));
  fs::remove(out_u + "/event_weights.h5");
  summary = aggregateRunsWithOptions({(root_ / "c").string()}, out_u, std::nullopt, central);
  // The next aggregation removes what this one wrote and it does not, not the user's files.
  aggregateRunsWithOptions({(root_ / "c").string()}, out_u, std::nullopt, none);
  EXPECT_FALSE(fs::exists(out_u + "/event_weights.h5"));
  EXPECT_EQ(foldfarm::readFile(out_u + "/mass.png"), "my figure");
  EXPECT_EQ(foldfarm::readFile(out_u + "/paper.tex"), "x");
  // A summary.json that lists a file of another kind (edited, or another tool's): only names
  // an aggregation writes are ever removed.
  nlohmann::json listed = nlohmann::json::parse(foldfarm::readFile(out_u + "/summary.json"));
  listed["outputs"].push_back("paper.tex");
  foldfarm::writeFileAtomic(out_u + "/summary.json", listed.dump());
  aggregateRunsWithOptions({(root_ / "c").string()}, out_u, std::nullopt, none);
  EXPECT_EQ(foldfarm::readFile(out_u + "/paper.tex"), "x");
  // Another tool's summary.json (no aggregation's keys): not ours, so refused, not replaced.
  foldfarm::writeFileAtomic(out_u + "/summary.json", R"({"outputs": ["paper.tex"]})");
  why = refusal("c", out_u);
  EXPECT_NE(why.find("summary.json, which no earlier aggregation"), std::string::npos) << why;
  EXPECT_EQ(foldfarm::readFile(out_u + "/paper.tex"), "x");

  // A chain whose `final` does not fit the simulation is refused by name; nothing written.
  writeChain("c/r3m0", 3, 0, 1, 3, 42, mc, {1, 1, 1});
  const std::string out2 = (root_ / "agg2").string();
  const std::string msg = refusal("c", out2);
  EXPECT_NE(msg.find((root_ / "c/r3m0").string() + "/weights.h5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has 3 rows"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(out2));
  // A foreign bands.h5 or summary.json is refused before the chains are read (so before that
  // chain's refusal); event_weights.h5 and the figures once the chains say they are written.
  const std::string out_f = (root_ / "foreign").string();
  fs::create_directories(out_f);
  foldfarm::writeFileAtomic(out_f + "/bands.h5", "mine");
  EXPECT_NE(refusal("c", out_f).find(out_f + ": holds bands.h5, which no earlier aggregation"),
            std::string::npos);
  EXPECT_EQ(foldfarm::readFile(out_f + "/bands.h5"), "mine");
  // A missing --truth too (before: after every chain was read).
  try {
    aggregateRunsWithOptions({(root_ / "c").string()}, (root_ / "no_truth").string(),
                             (root_ / "nope.h5").string(), {false});
    ADD_FAILURE() << "a missing --truth was taken";
  } catch (const foldfarm::InputError& e) {
    EXPECT_NE(
        std::string(e.what()).find("--truth " + (root_ / "nope.h5").string() + ": no such file"),
        std::string::npos)
        << e.what();
  }
  // The central columns read the central chains only: that bootstrap replica is not one.
  aggregateRunsWithOptions({(root_ / "c").string()}, out2, std::nullopt, central);
  EXPECT_EQ(nlohmann::json::parse(H5Reader(out2 + "/event_weights.h5").attr("/", "columns")),
            nlohmann::json({"nominal", "det", "warm_reference"}));

  // Bootstrap replicas only (no replica 0): no central column, so no event_weights.h5; a
  // variation's central column is still written.
  writeChain("boot/r1m0", 1, 0, 1, 3, 42, mc, {1, 1, 1, 1});
  writeChain("boot/r2m0", 2, 0, 1, 3, 42, mc, {2, 2, 2, 2});
  const std::string out3 = (root_ / "agg3").string();
  summary = aggregateRunsWithOptions({(root_ / "boot").string()}, out3, std::nullopt, central);
  EXPECT_EQ(summary["outputs"], nlohmann::json({"bands.h5", "summary.json"}));
  EXPECT_FALSE(fs::exists(out3 + "/event_weights.h5"));
  writeChain("boot/det_r1", 1, 0, 2, 2, 42, det, {5, 5, 5, 5});
  aggregateRunsWithOptions({(root_ / "boot").string()}, out3, std::nullopt, central);
  EXPECT_EQ(nlohmann::json::parse(H5Reader(out3 + "/event_weights.h5").attr("/", "columns")),
            nlohmann::json({"det"}));

  // The warm reference's chain of replica 0 failed: its column is replica 1's, so det's column
  // (replica 0) minus it is no shift, and det names no shift_from (before: the pair was named).
  fs::remove_all(root_ / "c/ref_r0");
  fs::remove_all(root_ / "c/r3m0");
  const std::string out4 = (root_ / "agg4").string();
  aggregateRunsWithOptions({(root_ / "c").string()}, out4, std::nullopt, {false});
  H5Reader four(out4 + "/event_weights.h5");
  EXPECT_EQ(four.attr("weights/warm_reference", "replica", true), "1");
  EXPECT_EQ(four.attr("weights/det", "shift_from", true), "");  // none written
  EXPECT_EQ(four.attr("other_simulations/herwig/weights", "shift_from", true), "weights/nominal");
}

// The shifts figure: the statistical ±1σ dashed for scale, then each source's signed shift
// relative to the unfolded result: a pair's up and down in the source's colour of the breakdown
// figure (down dashed), a one-sided source's shift; the bins left out are gaps as there.
TEST(ShiftsFigure, EachSourceIsDrawnSignedInItsBreakdownColour) {
  using foldfarm::ensembles::SourceResult;
  const std::vector<double> edges{0, 1, 2, 3};
  const std::vector<double> nominal{0.5, 0.5, 0.0};  // bin 2 left out
  const std::vector<double> stat{0.05, 0.1, 0.0};
  SourceResult det, herwig;
  det.name = "det";
  det.up = {0.1, -0.05, 0.0};
  det.down = {-0.08, 0.04, 0.0};
  det.shift = {0.09, -0.045, 0.0};
  herwig.name = "herwig";
  herwig.shift = {-0.2, 0.2, 0.0};
  const foldfarm::plot::LineFigure fig = shiftsFigure("mass", edges, nominal, stat, {det, herwig});
  std::vector<std::string> labels;
  for (const foldfarm::plot::Series& series : fig.series) labels.push_back(series.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"stat ±1σ", "", "det up", "det down", "herwig"}));
  const auto& plus = fig.series[0].y;
  const auto& minus = fig.series[1].y;
  ASSERT_EQ(plus.size(), 4u);  // bins 0 and 1: the gap at bin 2 is the end, dropped
  EXPECT_DOUBLE_EQ(plus[0], 0.1);
  EXPECT_DOUBLE_EQ(minus[3], -0.2);
  EXPECT_DOUBLE_EQ(fig.series[2].y[0], 0.2);   // det up: +0.1 / 0.5
  EXPECT_DOUBLE_EQ(fig.series[3].y[2], 0.08);  // det down in bin 1: 0.04 / 0.5
  EXPECT_DOUBLE_EQ(fig.series[4].y[0], -0.4);  // herwig, signed
  EXPECT_EQ(fig.series[2].color, fig.series[3].color);
  EXPECT_FALSE(fig.series[2].dashed);
  EXPECT_TRUE(fig.series[3].dashed);
  EXPECT_NE(fig.series[4].color, fig.series[2].color);
  // The breakdown figure of the same sources draws them in the same colours.
  std::map<std::string, std::string> breakdown;
  for (const foldfarm::plot::Series& series :
       breakdownFigure(
           "mass", edges, nominal,
           {{"stat", stat}, {"det", det.shift}, {"herwig", herwig.shift}, {"total", stat}})
           .series)
    breakdown[series.label] = series.color;
  EXPECT_EQ(breakdown.at("det"), fig.series[2].color);
  EXPECT_EQ(breakdown.at("herwig"), fig.series[4].color);
  EXPECT_EQ(fig.xmin, 0.0);
  EXPECT_EQ(fig.xmax, 3.0);
}

// A breakdown line has a gap where bins are left out (before: a line drawn across the empty
// bins, read as an uncertainty varying smoothly through them), and the distribution figure's
// x range (before: gnuplot's own from the bins drawn).
TEST(BreakdownFigure, BinsLeftOutAreAGapAndTheRangeIsTheDistributions) {
  const std::vector<double> edges{0, 1, 2, 3, 4, 5};
  const std::vector<double> nominal{0.4, 0.3, 0.0, 0.3, 1e-5};  // bins 2 and 4 left out
  const foldfarm::plot::LineFigure fig =
      breakdownFigure("zg", edges, nominal, {{"stat", {0.04, 0.03, 0.0, 0.06, 1e-6}}});
  ASSERT_EQ(fig.series.size(), 1u);
  const foldfarm::plot::Series& s = fig.series[0];
  EXPECT_EQ(s.x, (std::vector<double>{0, 1, 1, 2, 2, 3, 4}));
  ASSERT_EQ(s.y.size(), 7u);
  EXPECT_DOUBLE_EQ(s.y[0], 0.1);
  EXPECT_DOUBLE_EQ(s.y[3], 0.1);
  EXPECT_TRUE(std::isnan(s.y[4])) << "the gap at bin 2";
  EXPECT_DOUBLE_EQ(s.y[5], 0.2);
  EXPECT_DOUBLE_EQ(s.y[6], 0.2);
  EXPECT_EQ(fig.xmin, 0.0);
  EXPECT_EQ(fig.xmax, 5.0);
}

// Without systematic variations the total is the statistical line: one line named as both, in
// the total's black (before: the black total hid the blue stat line that the legend named).
TEST(BreakdownFigure, ATotalThatIsTheStatisticalBandIsOneLine) {
  const std::vector<double> edges{0, 1, 2};
  const std::vector<double> nominal{0.5, 0.5};
  const std::vector<double> stat{0.1, 0.2}, noise{0.05, 0.05};
  const auto labels = [&](const std::vector<std::pair<std::string, std::vector<double>>>& sigmas) {
    std::vector<std::string> out;
    for (const foldfarm::plot::Series& s : breakdownFigure("mass", edges, nominal, sigmas).series)
      out.push_back(s.label + " " + s.color);
    return out;
  };
  EXPECT_EQ(labels({{"stat", stat}, {"stat: training noise", noise}, {"total", stat}}),
            (std::vector<std::string>{"stat: training noise #1f77b4",
                                      "total = stat (no systematic variations) #000000"}));
  // With a source beside it, or a total that differs, each line is drawn.
  EXPECT_EQ(labels({{"stat", stat}, {"mc_stat", noise}, {"total", stat}}).size(), 3u);
  EXPECT_EQ(labels({{"stat", stat}, {"total", noise}}).size(), 2u);
}

// A line's colour follows its name: a source is drawn alike whichever sources stand beside it
// (before: by position, `det` orange in one campaign and green in another), the total black.
TEST(BreakdownFigure, ASourceKeepsItsColourInEveryCampaign) {
  const std::vector<double> edges{0, 1, 2};
  const std::vector<double> nominal{0.5, 0.5};
  const std::vector<double> sigma{0.1, 0.1};
  const auto colours = [&](const std::vector<std::string>& names) {
    std::vector<std::pair<std::string, std::vector<double>>> sigmas;
    for (const std::string& n : names) sigmas.emplace_back(n, sigma);
    std::map<std::string, std::string> by_name;
    for (const foldfarm::plot::Series& s : breakdownFigure("mass", edges, nominal, sigmas).series)
      by_name[s.label] = s.color + (s.dashed ? " dashed" : "");
    return by_name;
  };
  const auto a = colours({"stat", "det", "total"});
  const auto b = colours({"stat", "stat: training noise", "mc_stat", "alt", "det", "total"});
  EXPECT_EQ(a.at("det"), b.at("det"));
  EXPECT_EQ(a.at("total"), "#000000");
  EXPECT_EQ(b.at("total"), "#000000");
  EXPECT_EQ(a.at("stat"), b.at("stat"));
  EXPECT_NE(b.at("alt"), b.at("det"));
  EXPECT_EQ(b.at("stat: training noise"), b.at("stat") + " dashed");
  // Sources in one figure never share a colour while the palette lasts.
  std::vector<std::string> many{"stat"};
  for (int k = 0; k < 8; ++k) many.push_back("src" + std::to_string(k));
  std::set<std::string> seen;
  for (const auto& [name, colour] : colours(many)) {
    if (name == "stat") continue;
    EXPECT_TRUE(seen.insert(colour).second) << name << " " << colour;
  }
}
