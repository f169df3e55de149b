#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/jet_writer.hpp"
#include "core/plot/gnuplot.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/chain_output.hpp"

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

  // A completed chain whose unfolded mass histogram has `b0`, `b1` in its first two bins.
  void writeChain(const std::string& rel, int replica, int member, double b0, double b1,
                  uint64_t seed = 42) {
    fs::path dir = root_ / rel;
    fs::create_directories(dir);
    ChainHistograms h;
    h.unfolded = histogramObservables({}, {}, {});
    h.prior = histogramObservables({}, {}, {});
    h.unfolded[0].sumw[0] = b0;
    h.unfolded[0].sumw[1] = b1;
    h.prior[0].sumw[0] = 1.0;
    writeChainHistograms(dir.string(), h, {{"replica", replica}, {"member", member}});
    writeJsonAtomic((dir / kChainResultFile).string(),
                    {{"replica", replica}, {"member", member}, {"campaign_seed", seed}});
  }

  // Truth: two events, masses in the first two bins -> fractions [0.5, 0.5].
  std::string writeTruth() {
    foldfarm::data::UnfoldArrays u;
    u.reco = foldfarm::data::JetArrays::zeros(2, 1);
    u.gen = foldfarm::data::JetArrays::zeros(2, 1);
    u.gen_subs = {0.5f, 0.1f, 10.f, -5.f, 0.2f, 0.5f, 2.0f, 0.1f, 10.f, -5.f, 0.2f, 0.5f};
    u.reco_subs = u.gen_subs;
    const std::string truth = (root_ / "truth.h5").string();
    foldfarm::data::writeUnfoldFile(truth, u);
    return truth;
  }

  fs::path root_;
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
  EXPECT_NEAR(nominal[0] * w, 0.5, 1e-12);
  EXPECT_NEAR(nominal[1] * w, 0.5, 1e-12);
  EXPECT_NEAR(std_[0] * w, 0.25, 1e-12);
  // numpy.percentile([.25, .5, .75], 16) = 0.33, 84 -> 0.67
  EXPECT_NEAR(p16[0] * w, 0.33, 1e-12);
  EXPECT_NEAR(p84[0] * w, 0.67, 1e-12);
  EXPECT_NEAR(cov[1] * w * w, -0.0625, 1e-12);
  EXPECT_NEAR(corr[1], -1.0, 1e-12);
  read("mass/replicas", &rep_dims);
  EXPECT_EQ(rep_dims, (std::vector<uint64_t>{3, 49}));
  EXPECT_EQ(foldfarm::data::h5ReadAttrAsString(f.get(), "replicas"), "3");
  EXPECT_THROW(read("mass/absent"), foldfarm::InputError);
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
  EXPECT_GT(mass["delta_unfolded_err"].get<double>(), 0.0);
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
  // Without truth there is nothing to compare; names must match the inputs.
  aggregateRunsWithOptions({(root_ / "b").string()}, (root_ / "agg_nt").string(), std::nullopt,
                           opt);
  EXPECT_THROW(compareAggregations({(root_ / "agg_nt").string()}, {}), foldfarm::InputError);
  EXPECT_THROW(compareAggregations({(root_ / "a").string()}, {"x", "y"}), foldfarm::InputError);
}
