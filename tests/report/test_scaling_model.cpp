// The α–β model behind `foldfarm study scaling`: the ring all-reduce cost, the fit
// recovering a known link from measured times, and the analysis of benchmark JSON.
#include <gtest/gtest.h>

#include <cmath>

#include "core/base/error.hpp"
#include "report/alpha_beta.hpp"
#include "report/scaling_study.hpp"

using namespace foldfarm;
using namespace foldfarm::report;
using nlohmann::json;

TEST(AlphaBeta, RingAllreduceCost) {
  const AlphaBeta link{10e-6, 1.0 / 10e9};  // 10 µs, 10 GB/s
  EXPECT_EQ(link.allreduceSeconds(1, 8e6, 3), 0.0);
  // n = 2: 2 messages per bucket, each rank moves 2(n-1)/n = 1 x the data.
  EXPECT_NEAR(link.allreduceSeconds(2, 8e6, 3), 3 * 2 * 10e-6 + 8e6 / 10e9, 1e-12);
  // Bandwidth term approaches 2 x bytes / bandwidth at large n.
  const double big = link.allreduceSeconds(1024, 8e6, 1) - 2 * 1023 * 10e-6;
  EXPECT_NEAR(big, 2.0 * 1023 / 1024 * 8e6 / 10e9, 1e-12);
}

TEST(AlphaBeta, StepModelEfficiencyFallsWithRanksAndOverlapHelps) {
  StepModel m;
  m.compute_s = 0.05;
  m.bytes = 8e6;
  m.buckets = 2;
  m.link = {5e-6, 1.0 / 12.5e9};
  EXPECT_DOUBLE_EQ(m.efficiency(1), 1.0);
  double prev = 1.0;
  for (int n : powersOfTwo(1024)) {
    EXPECT_LE(m.efficiency(n), prev + 1e-15);
    prev = m.efficiency(n);
  }
  StepModel hidden = m;
  hidden.overlap = 0.8;
  EXPECT_GT(hidden.efficiency(64), m.efficiency(64));
  // By hand: 64 ranks, 2 buckets: 2 * 2 * 63 messages of 5 µs, and 2 * 63/64 * 8 MB at
  // 12.5 GB/s; 80% of it hidden behind the backward pass.
  const double comm64 = 2 * 2 * 63 * 5e-6 + 2.0 * 63 / 64 * 8e6 / 12.5e9;
  EXPECT_NEAR(m.stepSeconds(64), 0.05 + comm64, 1e-12);
  EXPECT_NEAR(hidden.stepSeconds(64), 0.05 + 0.2 * comm64, 1e-12);
  EXPECT_NEAR(hidden.efficiency(64), 0.05 / (0.05 + 0.2 * comm64), 1e-12);
  // 4 ranks of 32 jets: 128 jets per step.
  const double comm4 = 2 * 2 * 3 * 5e-6 + 2.0 * 3 / 4 * 8e6 / 12.5e9;
  EXPECT_NEAR(m.throughput(4, 32), 128 / (0.05 + comm4), 1e-9);
}

TEST(AlphaBeta, FitRecoversAKnownLink) {
  const AlphaBeta truth{7e-6, 1.0 / 3e9};
  std::vector<CommSample> s;
  for (int n : {2, 3, 4, 8})
    for (double bytes : {1e6, 8e6}) s.push_back({n, truth.allreduceSeconds(n, bytes, 2), bytes, 2});
  AlphaBetaFit fit = fitAlphaBeta(s, 1e-6);
  EXPECT_TRUE(fit.alpha_fitted);
  EXPECT_NEAR(fit.link.alpha_s, truth.alpha_s, 1e-9);
  EXPECT_NEAR(fit.link.beta_s_per_byte * 3e9, 1.0, 1e-6);
  EXPECT_LT(fit.rms_residual_s, 1e-12);
  // One rank count: alpha is held, beta fitted from the rest.
  AlphaBetaFit one = fitAlphaBeta({{2, truth.allreduceSeconds(2, 8e6, 2), 8e6, 2}}, 7e-6);
  EXPECT_FALSE(one.alpha_fitted);
  EXPECT_NEAR(one.link.beta_s_per_byte * 3e9, 1.0, 1e-6);
  EXPECT_THROW(fitAlphaBeta({}, 1e-6), Error);
}

TEST(ScalingAnalysis, DerivesEfficienciesAndExtrapolates) {
  auto row = [](int n, double jps, double step, double comm, double wait) {
    return json{{"ranks", n},      {"jets_per_s", jps},    {"step_ms", step},
                {"comm_ms", comm}, {"comm_wait_ms", wait}, {"gradient_bytes", 400000},
                {"buckets", 1},    {"batch_per_rank", 32}};
  };
  json ddp = json::array(
      {row(1, 1000, 32, 0, 0), row(2, 1800, 35.5, 1.0, 0.5), row(4, 3200, 40, 2.0, 1.0)});
  json sched =
      json::array({{{"slots", 1}, {"tasks_per_s", 500}}, {{"slots", 2}, {"tasks_per_s", 900}}});
  ScalingOptions o;
  o.extrapolate_to = 64;
  json s = analyseScaling(ddp, sched, o);
  ASSERT_EQ(s["ddp_derived"].size(), 3u);
  EXPECT_NEAR(s["ddp_derived"][1]["efficiency"].get<double>(), 0.9, 1e-12);
  EXPECT_NEAR(s["ddp_derived"][2]["speedup"].get<double>(), 3.2, 1e-12);
  EXPECT_NEAR(s["model"]["overlap"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(s["model"]["compute_ms"].get<double>(), 32.0, 1e-12);
  const json& ext = s["model"]["extrapolation"];
  ASSERT_EQ(ext.size(), 7u);  // 1 … 64
  EXPECT_NEAR(ext[0]["interconnect"]["efficiency"].get<double>(), 1.0, 1e-12);
  EXPECT_LT(ext[6]["interconnect"]["efficiency"].get<double>(), 1.0);
  EXPECT_TRUE(ext[6].contains("this node (fitted)"));
  EXPECT_NEAR(s["scheduler_derived"][1]["efficiency"].get<double>(), 0.9, 1e-12);
  const std::string md = scalingMarkdown(s);
  EXPECT_NE(md.find("| 2 | 1800.0 | 1.80 | 0.900 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 2 | 900.0 | 1.111 | 1.80 | 0.900 |"), std::string::npos) << md;
  // No 1-rank measurement: nothing to compare with.
  EXPECT_THROW(analyseScaling(json::array({row(2, 1800, 35.5, 1.0, 0.5)}), json::array(), o),
               Error);
}

// Interconnect and timing values beyond what the model can use are refused by name before
// any benchmark runs (before: --bandwidth-gbps 1e-320 and --compute-ms inf wrote inf and NaN
// figures, and --timeout inf converted infinity to milliseconds).
TEST(ScalingStudy, ValuesTheModelCannotUseAreRefusedByName) {
  struct Case {
    const char* option;
    void (*set)(ScalingOptions&);
  };
  const Case cases[] = {
      {"--compute-ms", [](ScalingOptions& o) { o.compute_ms = INFINITY; }},
      {"--compute-ms", [](ScalingOptions& o) { o.compute_ms = NAN; }},
      {"--alpha-us", [](ScalingOptions& o) { o.alpha_us = 1e308; }},
      {"--alpha-us", [](ScalingOptions& o) { o.alpha_us = -1; }},
      {"--bandwidth-gbps", [](ScalingOptions& o) { o.bandwidth_gbps = 1e-320; }},
      {"--bandwidth-gbps", [](ScalingOptions& o) { o.bandwidth_gbps = INFINITY; }},
      {"--timeout", [](ScalingOptions& o) { o.timeout_s = INFINITY; }},
      {"--timeout", [](ScalingOptions& o) { o.timeout_s = 1e-320; }},
  };
  for (const Case& c : cases) {
    ScalingOptions o;
    o.exe = "/nonexistent/foldfarm";  // reached only if the value were accepted
    c.set(o);
    try {
      runScalingStudy(o);
      ADD_FAILURE() << c.option << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.option), std::string::npos) << e.what();
    }
  }
}
