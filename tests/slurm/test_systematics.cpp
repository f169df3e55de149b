// A synthetic systematics campaign through the real local Slurm cluster and the real
// commands: nominal chains, a detector up/down pair, a modelling variation, MC-statistics
// replicas and a non-closure test. Only ready tasks are submitted, so every varied chain's
// job starts after the nominal chain it warm-starts from is done; the campaign's graph shows
// in `campaign status`, and the aggregation holds the total covariance beside the
// statistical one. Skips without the foldfarm executable.
#include <sys/stat.h>

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "core/data/h5_file.hpp"
#include "jobs/journal.hpp"
#include "tests/slurm/slurm_fixture.hpp"

using namespace foldfarm;
using namespace foldfarm::slurm;
using namespace foldfarm::slurm::testing;
namespace fs = std::filesystem;

namespace {

ProcessResult runFoldfarm(std::vector<std::string> args, int timeoutS) {
  args.insert(args.begin(), FOLDFARM_BINARY);
  ProcessOptions o;
  o.timeout = std::chrono::seconds(timeoutS);
  return runProcess(args, o);
}

class SlurmSystematics : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(FOLDFARM_BINARY).empty() || !fs::exists(FOLDFARM_BINARY)) {
      GTEST_SKIP() << "foldfarm executable not built";
    }
    ensureLocalCluster();
    base_ = makeTempDir("ff-slurm-sys");
    ::chmod(base_.c_str(), 0755);
  }
  void TearDown() override {
    if (!base_.empty()) cancelJobsUnder(base_);
    if (!base_.empty() && !HasFailure()) fs::remove_all(base_);
    if (HasFailure()) std::fprintf(stderr, "kept %s for inspection\n", base_.c_str());
  }
  void synth(const std::string& name, const std::string& tune, const std::string& seed,
             const std::string& detector = "") {
    std::vector<std::string> args = {
        "data", "synth",  "--kind", "unfold",      "--events", "800",   "--tune",
        tune,   "--seed", seed,     "--particles", "24",       "--out", base_ + "/" + name};
    if (!detector.empty()) {
      args.push_back("--detector");
      args.push_back(detector);
    }
    ProcessResult r = runFoldfarm(args, 120);
    ASSERT_TRUE(r.ok()) << r.err;
  }
  std::string base_;
};

}  // namespace

TEST_F(SlurmSystematics, TheGraphRunsThroughSlurmAndAggregatesIntoATotalCovariance) {
  synth("mc.h5", "sim", "2");
  synth("mc_up.h5", "sim", "2", "energy_scale=1.03");
  synth("mc_down.h5", "sim", "2", "energy_scale=0.97");
  synth("mc_alt.h5", "alt", "4");
  synth("data.h5", "data", "3");
  const nlohmann::json spec = {
      {"name", "sys-slurm"},
      {"task", "chain"},
      {"replicas", 2},
      {"members", 1},
      {"seed", 11},
      {"inputs",
       {{"mc", base_ + "/mc.h5"}, {"data", base_ + "/data.h5"}, {"truth", base_ + "/data.h5"}}},
      {"chain", {{"iterations", 1}, {"config", {{"classifier", "mlp"}}}}},
      {"resources", {{"cpu_slots", 1}, {"threads_per_task", 1}}},
      // How this campaign is aggregated unless `campaign aggregate` says otherwise.
      {"aggregate", {{"shift_noise", "subtract"}}},
      {"variations",
       {{"det_up",
         {{"type", "detector"},
          {"source", "det"},
          {"direction", "up"},
          {"inputs", {{"mc", base_ + "/mc_up.h5"}}}}},
        {"det_down",
         {{"type", "detector"},
          {"source", "det"},
          {"direction", "down"},
          {"inputs", {{"mc", base_ + "/mc_down.h5"}}}}},
        {"alt", {{"type", "modelling"}, {"inputs", {{"mc", base_ + "/mc_alt.h5"}}}}},
        {"mcstat", {{"type", "mc_bootstrap"}, {"replicas", 2}}},
        {"closure", {{"type", "non_closure"}, {"inputs", {{"data", base_ + "/mc_alt.h5"}}}}}}}};
  std::ofstream(base_ + "/spec.json") << spec.dump(2);
  const std::string dir = base_ + "/c";
  ProcessResult r = runFoldfarm({"campaign", "init", base_ + "/spec.json", "--dir", dir}, 60);
  ASSERT_TRUE(r.ok()) << r.err;
  // --aggregate: the bands once every task is done, in the same command.
  r = runFoldfarm(
      {"slurm", "submit", dir, "--poll", "1", "--poll-max", "2", "--json", "--aggregate"}, 560);
  ASSERT_TRUE(r.ok()) << r.describeFailure() << "\n" << r.err;
  const nlohmann::json summary = nlohmann::json::parse(r.out);
  // The last 1: the warm reference that `campaign init` adds (det and alt start warm).
  EXPECT_EQ(summary["counts"].value("done", 0), 2 + 1 + 1 + 1 + 2 + 1 + 1) << r.out;
  const nlohmann::json aggregated = {
      {"aggregated", true}, {"chains", 9}, {"tasks", 9}, {"out", dir + "/aggregate"}};
  EXPECT_EQ(summary["aggregate"], aggregated) << r.out;
  EXPECT_GE(summary.value("submissions", 0), 2) << "the nominal chains, then what needs them";

  // Every varied chain's job started after its nominal chain was done (journal events).
  {
    // The journal alone (the chain kind is not registered in this test program).
    jobs::CampaignJournal j = jobs::CampaignJournal::open(dir + "/journal.sqlite");
    std::map<int, double> done_at, started_at;
    j.forEachEvent([&](const jobs::CampaignJournal::Event& e) {
      if (e.to == jobs::TaskState::kDone) done_at[e.task] = e.at;
      if (e.from == jobs::TaskState::kPending && e.to == jobs::TaskState::kRunning &&
          !started_at.count(e.task))
        started_at[e.task] = e.at;
    });
    const jobs::TaskGraph g = j.graph();
    EXPECT_EQ(g.edges(), 1u + 1u + 1u + 1u + 1u);  // the MC-statistics replicas start afresh
    for (const auto& t : j.tasks())
      for (int n : g.needs(t.index)) EXPECT_GE(started_at[t.index], done_at[n]) << t.id;
  }
  r = runFoldfarm({"campaign", "status", dir}, 60);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_NE(r.out.find("task graph: 5 dependencies"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("det_up (detector): 1 task(s): done 1"), std::string::npos) << r.out;

  const nlohmann::json s = nlohmann::json::parse(slurp(dir + "/aggregate/summary.json"));
  const nlohmann::json& tau = s.at("observables").at("tau21");
  EXPECT_TRUE(tau.contains("coverage_68")) << tau.dump();
  EXPECT_TRUE(tau.contains("coverage_68_total")) << tau.dump();
  EXPECT_GE(tau["coverage_68_total"].get<double>(), tau["coverage_68"].get<double>() - 1e-9)
      << "the total band is at least as wide as the statistical one";
  data::H5Handle f = data::h5OpenRead(dir + "/aggregate/bands.h5");
  for (const char* name : {"tau21/covariance", "tau21/covariance_total", "tau21/sources/det/shift",
                           "tau21/sources/alt/shift", "tau21/covariance_mc_stat"})
    EXPECT_GT(H5Lexists(f.get(), name, H5P_DEFAULT), 0) << name;
  EXPECT_TRUE(fs::exists(dir + "/aggregate/event_weights.h5"));
  // The spec's choice (with one chain per variation no source has a noise estimate to take
  // off, so the bands are those of "keep"), and the option that overrides it.
  EXPECT_EQ(s["shift_noise"], "subtracted");
  r = runFoldfarm({"campaign", "aggregate", dir, "--shift-noise", "keep", "--no-plots"}, 120);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(nlohmann::json::parse(slurp(dir + "/aggregate/summary.json"))["shift_noise"], "kept");
}
