// Real OmniFold chain campaigns through the `foldfarm` executable (LibTorch; skipped when
// the app is not built): a tiny-preset campaign of 8 replicas x 2 members runs end to end
// on the local executor and aggregates into bands; a campaign whose orchestrator is
// killed -9 twice and resumed aggregates to exactly the same bands as an uninterrupted
// one; a campaign extended after it ran aggregates like one made with the larger counts.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>

#include "core/base/error.hpp"
#include "core/base/exit_codes.hpp"
#include "core/base/fd.hpp"
#include "core/base/sha256.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"
#include "jobs/campaign.hpp"
#include "tests/jobs/test_util.hpp"
#include "tests/support/run_child.hpp"

namespace foldfarm::jobs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace foldfarm::jobs::testing;

int runFoldfarm(const std::vector<std::string>& args, const std::string& scratch,
                const std::string& tag) {
  return waitExit(startProgram(FOLDFARM_BINARY, args, scratch, tag));
}

class ChainCampaign : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
    scratch_ = makeScratchDir("chain");
    ASSERT_EQ(runFoldfarm({"data", "synth", "--kind", "unfold", "--events", "400", "--tune", "sim",
                           "--seed", "11", "--out", scratch_ + "/mc.h5"},
                          scratch_, "mc"),
              0)
        << readText(scratch_ + "/mc.err");
    ASSERT_EQ(runFoldfarm({"data", "synth", "--kind", "unfold", "--events", "400", "--tune", "data",
                           "--seed", "12", "--out", scratch_ + "/data.h5"},
                          scratch_, "data"),
              0)
        << readText(scratch_ + "/data.err");
  }
  json spec(int replicas, int members) {
    return json{
        {"name", "tiny-chains"},
        {"task", "chain"},
        {"replicas", replicas},
        {"members", members},
        {"seed", 2024},
        {"inputs",
         {{"mc", scratch_ + "/mc.h5"},
          {"data", scratch_ + "/data.h5"},
          {"truth", scratch_ + "/data.h5"}}},
        {"chain",
         {{"iterations", 1},
          {"config", {{"preset", "tiny"}, {"epochs", 1}, {"batch_size", 200}, {"patience", 1}}}}},
        {"resources", {{"cpu_slots", 2}, {"threads_per_task", 1}}}};
  }
  // scratch_/<name>: 400 unfolding events of `tune` (a varied detector: `detector`).
  void synthFile(const std::string& name, const std::string& tune, const std::string& seed,
                 const std::string& detector = "") {
    std::vector<std::string> a = {"data",     "synth", "--kind", "unfold",
                                  "--events", "400",   "--tune", tune,
                                  "--seed",   seed,    "--out",  scratch_ + "/" + name};
    if (!detector.empty()) {
      a.push_back("--detector");
      a.push_back(detector);
    }
    ASSERT_EQ(runFoldfarm(a, scratch_, name), 0) << readText(scratch_ + "/" + name + ".err");
  }
  // spec(replicas, members) of `mlp` chains with a detector pair (±5% energy scale) and a
  // modelling variation (another tune), their simulations made here.
  json systematicsSpec(int replicas, int members) {
    synthFile("mc_up.h5", "sim", "11", "energy_scale=1.05");
    synthFile("mc_down.h5", "sim", "11", "energy_scale=0.95");
    synthFile("mc_alt.h5", "alt", "13");
    json s = spec(replicas, members);
    s["chain"]["config"] = {{"classifier", "mlp"}};
    s["variations"] = detectorPair();
    s["variations"]["alt"] = {{"type", "modelling"}, {"inputs", {{"mc", scratch_ + "/mc_alt.h5"}}}};
    return s;
  }
  // A detector pair on scratch_/mc_up.h5 and mc_down.h5 (synthFile makes them).
  json detectorPair() const {
    const auto side = [&](const std::string& direction) {
      return json{{"type", "detector"},
                  {"source", "det"},
                  {"direction", direction},
                  {"inputs", {{"mc", scratch_ + "/mc_" + direction + ".h5"}}}};
    };
    return json{{"det_up", side("up")}, {"det_down", side("down")}};
  }
  std::string init(const json& s, const std::string& name) {
    std::string dir = scratch_ + "/" + name;
    EXPECT_EQ(
        runFoldfarm({"campaign", "init", writeSpec(scratch_, s, name + ".json"), "--dir", dir},
                    scratch_, name + "-init"),
        0)
        << readText(scratch_ + "/" + name + "-init.err");
    return dir;
  }
  std::string scratch_;
};

// A campaign runs and aggregates; once its truth is replaced, aggregating again is refused.
// A campaign whose chains were all cancelled: the aggregation names the way to chains that
// are done (before: "run the campaign first", which runs nothing).
TEST_F(ChainCampaign, AnAggregationOfCancelledChainsSaysHowToRunThem) {
  const std::string dir = init(spec(2, 1), "cancelled");
  {
    // Nothing done while a run orchestrates it: wait for that run (before: "run the campaign
    // first", which that run refuses).
    Fd lock(::open((dir + "/orchestrator.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(lock.valid());
    ASSERT_EQ(::flock(lock.get(), LOCK_EX | LOCK_NB), 0);
    ASSERT_EQ(::pwrite(lock.get(), "node7 pid 4242\n", 15, 0), 15);
    EXPECT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "busy"), kExitBadInput);
    EXPECT_NE(readText(scratch_ + "/busy.err")
                  .find("no chain is done yet; a run orchestrates it now (node7 pid 4242): "
                        "aggregate once its chains are done"),
              std::string::npos)
        << readText(scratch_ + "/busy.err");
  }
  ASSERT_EQ(runFoldfarm({"campaign", "cancel", dir}, scratch_, "cancel"), 0)
      << readText(scratch_ + "/cancel.err");
  EXPECT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "agg"), kExitBadInput);
  EXPECT_NE(readText(scratch_ + "/agg.err")
                .find("no chain is done yet; its chains are 2 cancelled: `foldfarm campaign "
                      "retry " +
                      dir + " --cancelled` runs them"),
            std::string::npos)
      << readText(scratch_ + "/agg.err");
  // Some done, some cancelled: `run --aggregate` leaves the cancelled ones, aggregates nothing,
  // and says so with exit 79 (before: exit 0, so `run --aggregate && report` went on).
  ASSERT_EQ(runFoldfarm({"campaign", "retry", dir, "--cancelled"}, scratch_, "retry"), 0)
      << readText(scratch_ + "/retry.err");
  ASSERT_EQ(runFoldfarm({"campaign", "extend", dir, "--replicas", "3"}, scratch_, "extend"), 0)
      << readText(scratch_ + "/extend.err");
  ASSERT_EQ(runFoldfarm({"campaign", "cancel", dir}, scratch_, "cancel2"), 0);
  EXPECT_EQ(runFoldfarm({"campaign", "run", dir, "--aggregate"}, scratch_, "run-agg"),
            kExitCancelled);
  EXPECT_NE(readText(scratch_ + "/run-agg.err")
                .find(dir +
                      ": --aggregate: not aggregated, 2 of 3 task(s) done (the others "
                      "cancelled); `foldfarm campaign retry " +
                      dir + " --cancelled --aggregate` runs them and aggregates"),
            std::string::npos)
      << readText(scratch_ + "/run-agg.err");
  EXPECT_FALSE(fs::exists(dir + "/aggregate/summary.json"));
  // What the user asked for (a cancel) is no error (before: "foldfarm: error: ...").
  EXPECT_EQ(readText(scratch_ + "/run-agg.err").find("foldfarm: error:"), std::string::npos)
      << readText(scratch_ + "/run-agg.err");
}

TEST_F(ChainCampaign, TinyCampaignRunsEndToEndAndAggregatesIntoBands) {
  std::string dir = init(spec(8, 2), "full");
  ASSERT_EQ(runFoldfarm({"campaign", "run", dir}, scratch_, "run"), 0)
      << readText(scratch_ + "/run.err");
  // Read the journal through the real command (this test binary knows no `chain` kind).
  ASSERT_EQ(runFoldfarm({"campaign", "status", dir, "--json"}, scratch_, "status"), 0)
      << readText(scratch_ + "/status.err");
  json status = json::parse(readText(scratch_ + "/status.out"));
  EXPECT_EQ(status["counts"].value("done", 0), 16) << status.dump();
  // The journal lost (a failed disk, a slip of rm): `campaign repair` rebuilds it from the
  // attempts' task_result.json, every chain done as it was (before, local chains wrote none and
  // every one was left to run again).
  for (const char* f : {"/journal.sqlite", "/journal.sqlite-wal", "/journal.sqlite-shm"})
    fs::remove(dir + f);
  ASSERT_EQ(runFoldfarm({"campaign", "repair", dir, "--json"}, scratch_, "repair"), 0)
      << readText(scratch_ + "/repair.err");
  const json repaired = json::parse(readText(scratch_ + "/repair.out"));
  EXPECT_EQ(repaired.value("done", -1), 16) << repaired.dump();
  EXPECT_EQ(repaired.value("pending", -1), 0) << repaired.dump();
  ASSERT_EQ(runFoldfarm({"campaign", "run", dir}, scratch_, "run-repaired"), 0)
      << readText(scratch_ + "/run-repaired.err");
  EXPECT_NE(readText(scratch_ + "/run-repaired.out").find(" 0 task(s) done in this run"),
            std::string::npos)
      << readText(scratch_ + "/run-repaired.out");
  // A chain's output lost after it was done: `campaign retry --task` through the real command
  // (which knows the chain kind only once it registers them: it was refused before) runs it
  // again, its damaged directory kept under superseded/.
  const std::string lost = dir + "/tasks/r0003m1/result.json";
  ASSERT_TRUE(exists(lost));
  fs::remove(lost);
  // On the slots given, as `run` takes them (before: no --slots; the spec's).
  ASSERT_EQ(runFoldfarm({"campaign", "retry", dir, "--task", "r0003m1", "--slots", "3"}, scratch_,
                        "retry-task"),
            0)
      << readText(scratch_ + "/retry-task.err");
  EXPECT_NE(readText(scratch_ + "/retry-task.err").find(" 3 slot(s) asked for"), std::string::npos)
      << readText(scratch_ + "/retry-task.err");
  EXPECT_NE(readText(scratch_ + "/retry-task.out").find("1 task(s) run again (r0003m1)"),
            std::string::npos)
      << readText(scratch_ + "/retry-task.out");
  EXPECT_TRUE(exists(lost));
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "agg"), 0)
      << readText(scratch_ + "/agg.err");
  EXPECT_TRUE(exists(dir + "/aggregate/bands.h5"));
  json summary = json::parse(readText(dir + "/aggregate/summary.json"));
  EXPECT_EQ(summary["replicas"], 8);
  EXPECT_EQ(summary["chains"], 16);
  // What the bands were computed from: each role's file and its checksum.
  const std::string mc = scratch_ + "/mc.h5";
  const json& nominal = summary["inputs"]["nominal"];
  EXPECT_EQ(nominal["mc"]["path"], mc) << summary["inputs"].dump();
  EXPECT_EQ(nominal["mc"]["sha256"], sha256File(mc)) << summary["inputs"].dump();
  EXPECT_EQ(nominal["truth"]["sha256"], sha256File(scratch_ + "/data.h5"));
  EXPECT_EQ(summary["inputs"]["variations"], json::object());

  // The truth replaced since `campaign init` (here only its time moved on): aggregating again
  // is refused naming it, and the aggregate written before stays as it was.
  const std::string truth = scratch_ + "/data.h5", bands = readText(dir + "/aggregate/bands.h5");
  const auto truth_time = fs::last_write_time(truth);
  fs::last_write_time(truth, truth_time + std::chrono::seconds(1));
  EXPECT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "agg-changed"), kExitBadInput);
  const std::string err = readText(scratch_ + "/agg-changed.err");
  EXPECT_NE(err.find(truth + " changed since `campaign init`"), std::string::npos) << err;
  EXPECT_EQ(foldfarm::testing::errorLines(err), 1) << err;
  EXPECT_EQ(readText(dir + "/aggregate/bands.h5"), bands);
  fs::last_write_time(truth, truth_time);
  // The spec's truth gone: named as the spec's (before: "<path>: no such file").
  fs::rename(truth, truth + ".away");
  EXPECT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "agg-no-truth"), kExitBadInput);
  EXPECT_NE(readText(scratch_ + "/agg-no-truth.err")
                .find(dir + "/spec.json: 'inputs.truth' = " + truth +
                      " does not exist; restore it, or aggregate with --truth OTHER.h5"),
            std::string::npos)
      << readText(scratch_ + "/agg-no-truth.err");
  EXPECT_EQ(readText(dir + "/aggregate/bands.h5"), bands);
  fs::rename(truth + ".away", truth);
  EXPECT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "agg-restored"), 0)
      << readText(scratch_ + "/agg-restored.err");
  // Rebinned without training again, into a directory of its own: mass on 30 bins, the other
  // observables as D/aggregate has them; D/aggregate itself left as it was.
  const std::string restored = readText(dir + "/aggregate/summary.json");
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", dir, "--no-plots", "--binning",
                         R"({"mass": {"lo": 0, "hi": 75, "bins": 30}})", "--out",
                         dir + "/aggregate_mass30"},
                        scratch_, "agg-rebinned"),
            0)
      << readText(scratch_ + "/agg-rebinned.err");
  EXPECT_EQ(readText(dir + "/aggregate/summary.json"), restored);
  const json rebinned = json::parse(readText(dir + "/aggregate_mass30/summary.json"));
  const json plain = json::parse(restored);
  EXPECT_EQ(rebinned["rebinned"], json::array({"mass"}));
  EXPECT_EQ(rebinned["observables"]["mass"]["bins"], 30);
  EXPECT_EQ(rebinned["observables"]["width"]["delta_unfolded"],
            plain["observables"]["width"]["delta_unfolded"]);
  EXPECT_NE(rebinned["observables"]["mass"]["delta_unfolded"],
            plain["observables"]["mass"]["delta_unfolded"]);
  // Not into the campaign's own directory, nor a task's.
  for (const std::string& out : {dir, dir + "/tasks/r0000m0"}) {
    EXPECT_EQ(runFoldfarm({"campaign", "aggregate", dir, "--out", out}, scratch_, "agg-out"),
              kExitBadInput);
    EXPECT_NE(readText(scratch_ + "/agg-out.err").find("--out " + out + ": is the campaign's"),
              std::string::npos)
        << readText(scratch_ + "/agg-out.err");
  }
  EXPECT_FALSE(exists(dir + "/bands.h5"));
  // Another truth, given by a relative path: recorded by its absolute path, size and checksum
  // (before: the path as given, and no checksum).
  EXPECT_EQ(runFoldfarm({"campaign", "aggregate", dir, "--truth",
                         fs::relative(mc, fs::current_path()).string()},
                        scratch_, "agg-other-truth"),
            0)
      << readText(scratch_ + "/agg-other-truth.err");
  const json other = json::parse(readText(dir + "/aggregate/summary.json"))["inputs"]["nominal"];
  EXPECT_EQ(other["truth"],
            (json{{"path", mc}, {"size", fs::file_size(mc)}, {"sha256", sha256File(mc)}}))
      << other.dump();
  // `campaign status` knows both aggregations, how each was made, and that neither is stale.
  ASSERT_EQ(runFoldfarm({"campaign", "status", dir, "--json"}, scratch_, "status-aggs"), 0);
  const json aggs = json::parse(readText(scratch_ + "/status-aggs.out"))["aggregations"];
  const std::string binning = R"({"mass": {"lo": 0, "hi": 75, "bins": 30}})";
  EXPECT_EQ(aggs,
            (json{{{"out", dir + "/aggregate_mass30"},
                   {"default", false},
                   {"options", "--no-plots --binning '" + binning + "'"},
                   {"command", "foldfarm campaign aggregate " + dir + " --no-plots --binning '" +
                                   binning + "' --out " + dir + "/aggregate_mass30"},
                   {"chains", 16},
                   {"stale", false}},
                  {{"out", dir + "/aggregate"},
                   {"default", true},
                   {"options", "--truth " + mc},
                   {"command", "foldfarm campaign aggregate " + dir + " --truth " + mc},
                   {"chains", 16},
                   {"stale", false}}}));
  // Recorded relative to the campaign where they lie in it: the same through another path to it
  // (a symbolic link, another mount), and D/aggregate known as the campaign's own.
  EXPECT_NE(readText(dir + "/aggregations.json").find("\"out\": \"aggregate_mass30\""),
            std::string::npos)
      << readText(dir + "/aggregations.json");
  const std::string link = scratch_ + "/full_link";
  fs::create_directory_symlink(dir, link);
  ASSERT_EQ(runFoldfarm({"campaign", "status", link, "--json"}, scratch_, "status-link"), 0);
  const json via_link = json::parse(readText(scratch_ + "/status-link.out"))["aggregations"];
  ASSERT_EQ(via_link.size(), 2u) << via_link.dump();
  EXPECT_EQ(via_link[0]["out"], link + "/aggregate_mass30");
  EXPECT_EQ(via_link[1]["default"], true);
  // A campaign this user may not write (here a read-only bind mount of it, where one can be
  // made): aggregated into a directory elsewhere, read unlocked as `report` reads it (before:
  // "aggregate.lock: cannot open"); into its own aggregate/ refused, naming --out.
  const std::string ro = scratch_ + "/full_ro";
  fs::create_directories(ro);
  if (::mount(dir.c_str(), ro.c_str(), nullptr, MS_BIND, nullptr) == 0) {
    struct Unmount {
      std::string path;
      ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
    } unmount{ro};
    if (::mount(nullptr, ro.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) == 0) {
      EXPECT_EQ(
          runFoldfarm({"campaign", "aggregate", ro, "--no-plots", "--out", scratch_ + "/ro_bands"},
                      scratch_, "agg-ro"),
          0)
          << readText(scratch_ + "/agg-ro.err");
      EXPECT_TRUE(exists(scratch_ + "/ro_bands/summary.json"));
      EXPECT_EQ(runFoldfarm({"campaign", "aggregate", ro}, scratch_, "agg-ro-own"), kExitBadInput);
      EXPECT_NE(readText(scratch_ + "/agg-ro-own.err")
                    .find(ro + ": cannot be written here (Read-only file system), so its "
                               "aggregate/ cannot; aggregate into a directory of yours with "
                               "--out DIR"),
                std::string::npos)
          << readText(scratch_ + "/agg-ro-own.err");
    }
  }

  // The simulation generated again and accepted: every chain runs again on it (each reads
  // it), the aggregate names its new checksum, the earlier one is kept under superseded/.
  ASSERT_EQ(runFoldfarm({"data", "synth", "--kind", "unfold", "--events", "400", "--tune", "sim",
                         "--seed", "21", "--out", mc, "--overwrite"},
                        scratch_, "mc-again"),
            0);
  ASSERT_EQ(runFoldfarm({"campaign", "accept-inputs", dir}, scratch_, "accept"), 0)
      << readText(scratch_ + "/accept.err");
  EXPECT_NE(readText(scratch_ + "/accept.out").find("16 task(s) run again (16 done)"),
            std::string::npos)
      << readText(scratch_ + "/accept.out");
  ASSERT_EQ(runFoldfarm({"campaign", "run", dir}, scratch_, "rerun"), 0)
      << readText(scratch_ + "/rerun.err");
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "agg-accepted"), 0)
      << readText(scratch_ + "/agg-accepted.err");
  // The rebinned bands under --out are of the chains before: as many, but not the same. Status
  // names them with the command that makes them again as they were made (D/aggregate, just
  // made, is not named), and once that has run, names nothing.
  const auto statusText = [&](const std::string& tag) {
    EXPECT_EQ(runFoldfarm({"campaign", "status", dir}, scratch_, tag), 0);
    return readText(scratch_ + "/" + tag + ".out");
  };
  const std::string stale = statusText("status-stale");
  EXPECT_NE(stale.find("  aggregate: " + dir +
                       "/aggregate_mass30 holds 16 chain(s) as they were before the campaign's "
                       "done chains changed (16 done now): `foldfarm campaign aggregate " +
                       dir + " --no-plots --binning '" + binning + "' --out " + dir +
                       "/aggregate_mass30` makes it again\n"),
            std::string::npos)
      << stale;
  EXPECT_EQ(stale.find(dir + "/aggregate holds"), std::string::npos) << stale;
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", dir, "--no-plots", "--binning", binning, "--out",
                         dir + "/aggregate_mass30"},
                        scratch_, "agg-rebinned-again"),
            0)
      << readText(scratch_ + "/agg-rebinned-again.err");
  EXPECT_EQ(statusText("status-fresh").find(" holds "), std::string::npos)
      << readText(scratch_ + "/status-fresh.out");
  const json again = json::parse(readText(dir + "/aggregate/summary.json"));
  EXPECT_EQ(again["chains"], 16);
  EXPECT_EQ(again["inputs"]["nominal"]["mc"]["sha256"], sha256File(mc));
  EXPECT_NE(again["inputs"]["nominal"]["mc"]["sha256"], nominal["mc"]["sha256"]);
  EXPECT_NE(again["observables"], summary["observables"]) << "the bands of the new simulation";
  int kept = 0;
  for (const auto& e : fs::directory_iterator(dir + "/superseded"))
    kept += exists(e.path().string() + "/aggregate/summary.json") ? 1 : 0;
  EXPECT_EQ(kept, 1);
}

// Inputs no chain can use are refused at `campaign init`, naming the spec, the key and the
// file: a simulation of one level (the nominal's, a variation's), a value no chain or
// aggregation can read (NaN, Inf). Data of its reco level only, as an experiment records it,
// is accepted. A chain that fails at run time leaves its
// own one-line error as the task's reason in `campaign status`, not only its exit code.
TEST_F(ChainCampaign, InputsNoChainCanUseAreRefusedAtInitAndAFailedChainsReasonIsItsError) {
  for (const char* levels : {"reco", "gen"})
    ASSERT_EQ(runFoldfarm({"data", "synth", "--kind", "unfold", "--events", "400", "--tune", "data",
                           "--seed", "12", "--levels", levels, "--out",
                           scratch_ + "/data_" + levels + ".h5"},
                          scratch_, std::string("synth-") + levels),
              0);
  auto refused = [&](const json& s, const std::string& name) {
    const std::string dir = scratch_ + "/" + name;
    EXPECT_EQ(
        runFoldfarm({"campaign", "init", writeSpec(scratch_, s, name + ".json"), "--dir", dir},
                    scratch_, name),
        kExitBadInput)
        << name;
    EXPECT_FALSE(exists(dir)) << name;
    return readText(scratch_ + "/" + name + ".err");
  };
  const auto says = [](const std::string& err, const std::string& text) {
    EXPECT_NE(err.find(text), std::string::npos) << err;
  };
  // The error of `campaign init` of spec(2, 1) with inputs.<key> = scratch/<file>.
  auto refusedWithInput = [&](const std::string& key, const std::string& file,
                              const std::string& name) {
    json s = spec(2, 1);
    s["inputs"][key] = scratch_ + "/" + file;
    return refused(s, name);
  };
  std::string err = refusedWithInput("mc", "data_reco.h5", "mc_reco");
  says(err, "mc_reco.json: inputs: " + scratch_ + "/data_reco.h5: holds its reco level only");
  json bad = spec(2, 1);
  bad["variations"] = {
      {"alt", {{"type", "modelling"}, {"inputs", {{"mc", scratch_ + "/data_gen.h5"}}}}}};
  err = refused(bad, "variation_gen");
  says(err, "variations.alt.inputs: " + scratch_ + "/data_gen.h5: holds its gen level only");
  // A detector variation of other generated events (another seed; fewer events): its shift
  // would pair unrelated events (before: accepted, the shift several times the band).
  ASSERT_NO_FATAL_FAILURE(synthFile("mc_up_other.h5", "sim", "99", "energy_scale=1.05"));
  bad["variations"] = detectorPair();
  bad["variations"]["det_up"]["inputs"]["mc"] = scratch_ + "/mc_up_other.h5";
  ASSERT_NO_FATAL_FAILURE(synthFile("mc_down.h5", "sim", "11", "energy_scale=0.95"));
  err = refused(bad, "detector_other_events");
  says(err, "variations.det_up.inputs: " + scratch_ +
                "/mc_up_other.h5: generated event 0 differs "
                "from the nominal " +
                scratch_ + "/mc.h5's");
  // Its generated events, but another generator-level selection or other event weights: the
  // shift would hold a change of the prior (before: accepted).
  {
    ASSERT_NO_FATAL_FAILURE(synthFile("mc_up.h5", "sim", "11", "energy_scale=1.05"));
    const data::UnfoldArrays up = data::JetFile(scratch_ + "/mc_up.h5").readUnfold();
    data::UnfoldArrays selected = up, weighted = up;
    const size_t passing = static_cast<size_t>(
        std::find(up.pass_gen.begin(), up.pass_gen.end(), 1) - up.pass_gen.begin());
    ASSERT_LT(passing, up.pass_gen.size());
    selected.pass_gen[passing] = 0;
    weighted.weights.assign(up.pass_gen.size(), up.weight(0));
    weighted.weights[7] = 2 * up.weight(7) + 1;
    data::writeUnfoldFile(scratch_ + "/mc_up_selected.h5", selected);
    data::writeUnfoldFile(scratch_ + "/mc_up_weighted.h5", weighted);
    bad["variations"]["det_up"]["inputs"]["mc"] = scratch_ + "/mc_up_selected.h5";
    says(refused(bad, "detector_other_selection"),
         "/mc_up_selected.h5: event " + std::to_string(passing) +
             " has pass_gen 0 where the nominal " + scratch_ + "/mc.h5 has 1");
    bad["variations"]["det_up"]["inputs"]["mc"] = scratch_ + "/mc_up_weighted.h5";
    says(refused(bad, "detector_other_weights"),
         "/mc_up_weighted.h5: event 7 has event weight (weights) " +
             fmt::format("{}", 2 * up.weight(7) + 1) + " where the nominal");
  }
  // Variation keys nothing reads, or that would make it another variation (before: accepted
  // silently; a truth was even listed among the aggregation's inputs).
  {
    json keys = spec(2, 1);
    keys["variations"] = detectorPair();
    keys["variations"]["det_up"]["inputs"]["truth"] = scratch_ + "/data.h5";
    says(refused(keys, "variation_truth"),
         "variation_truth.json: 'variations.det_up.inputs.truth' is not read");
    keys["variations"] = detectorPair();
    keys["variations"]["det_up"]["inputs"]["data"] = scratch_ + "/data.h5";
    says(refused(keys, "variation_data"),
         "'variations.det_up.inputs.data': a detector variation unfolds the nominal's data");
    keys["variations"] = {{"alt",
                           {{"type", "modelling"},
                            {"symmetrise", "max"},
                            {"inputs", {{"mc", scratch_ + "/mc_up_other.h5"}}}}}};
    says(refused(keys, "one_sided_max"),
         "'variations.alt.symmetrise' = max applies to an up/down pair");
  }

  // What the aggregation reads besides the chains, found before any chain trains: a truth of
  // its reco level only, a truth whose pass_gen passes no event, and non-closure pseudo-data
  // without a gen level (its truth).
  err = refusedWithInput("truth", "data_reco.h5", "truth_reco");
  says(err,
       "truth_reco.json: inputs: truth " + scratch_ + "/data_reco.h5: holds its reco level only");
  data::UnfoldArrays none_pass =
      data::synthUnfold(data::SynthConfig::unfoldDefaults(data::Tune::kData), 13, 0, 50);
  none_pass.pass_gen.assign(50, 0);
  none_pass.pass_reco.assign(50, 1);
  data::writeUnfoldFile(scratch_ + "/truth_none_pass.h5", none_pass);
  err = refusedWithInput("truth", "truth_none_pass.h5", "truth_none_pass");
  says(err, "inputs: truth " + scratch_ +
                "/truth_none_pass.h5: no event passes 'pass_gen' (all 50 are 0)");
  // As a simulation, the same file (pass_gen all 0) is refused at init too, not by each chain.
  err = refusedWithInput("mc", "truth_none_pass.h5", "mc_none_pass");
  says(err, "mc_none_pass.json: inputs: " + scratch_ +
                "/truth_none_pass.h5: no event passes 'pass_gen' (0 of 50)");
  bad = spec(2, 1);
  bad["variations"] = {{"closure",
                        {{"type", "non_closure"},
                         {"replicas", 1},
                         {"inputs", {{"data", scratch_ + "/data_reco.h5"}}}}}};
  err = refused(bad, "closure_reco");
  says(err,
       "variations.closure.inputs: data (the non_closure pseudo-data; its gen "
       "level is the truth) " +
           scratch_ + "/data_reco.h5: holds its reco level only");
  EXPECT_EQ(err.find('\n'), err.size() - 1) << err;

  json data_reco = spec(2, 1);
  data_reco["inputs"]["data"] = scratch_ + "/data_reco.h5";
  data_reco["inputs"]["truth"] = scratch_ + "/data_gen.h5";
  data_reco["chain"]["config"]["classifier"] = "mlp";
  const std::string ok = init(data_reco, "data_reco");
  ASSERT_EQ(runFoldfarm({"campaign", "run", ok, "--aggregate"}, scratch_, "data-reco-run"), 0)
      << readText(scratch_ + "/data-reco-run.err");
  EXPECT_TRUE(exists(ok + "/aggregate/bands.h5"));

  // A foundation directory that holds no checkpoint (its pretraining has not written it):
  // refused at init, naming it (before: accepted, and every chain failed when it started).
  json no_ckpt = spec(1, 1);
  ASSERT_EQ(::mkdir((scratch_ + "/empty_foundation").c_str(), 0755), 0);
  no_ckpt["inputs"]["foundation"] = scratch_ + "/empty_foundation";
  err = refused(no_ckpt, "no_ckpt");
  EXPECT_NE(err.find("no_ckpt.json: inputs: foundation " + scratch_ +
                     "/empty_foundation: holds no checkpoint"),
            std::string::npos)
      << err;

  // A value every chain or the aggregation would fail on is refused at init, naming the spec,
  // the file, the dataset and the row (before: a NaN in the simulation failed every chain when
  // it read it, one in the truth the aggregation, after all chains had trained): the nominal's
  // simulation, a variation's, the truth's observables.
  data::UnfoldArrays nan_mc =
      data::synthUnfold(data::SynthConfig::unfoldDefaults(data::Tune::kSim), 11, 0, 400);
  nan_mc.reco.particles[nan_mc.reco.particles.size() / 400 * 321 + 4] = std::nanf("");
  data::writeUnfoldFile(scratch_ + "/mc_nan.h5", nan_mc);
  err = refusedWithInput("mc", "mc_nan.h5", "nan_mc");
  says(err, "nan_mc.json: inputs: " + scratch_ +
                "/mc_nan.h5: dataset 'reco': row 321 holds a non-finite value (NaN)");
  EXPECT_EQ(foldfarm::testing::errorLines(err), 1) << err;
  bad = spec(2, 1);
  bad["variations"] = {
      {"alt", {{"type", "modelling"}, {"inputs", {{"mc", scratch_ + "/mc_nan.h5"}}}}}};
  err = refused(bad, "variation_nan");
  says(err, "variation_nan.json: variations.alt.inputs: " + scratch_ +
                "/mc_nan.h5: dataset 'reco': row 321 holds a non-finite value (NaN)");
  data::UnfoldArrays inf_truth =
      data::synthUnfold(data::SynthConfig::unfoldDefaults(data::Tune::kData), 13, 0, 400);
  inf_truth.gen_subs[6 * 77 + 2] = std::numeric_limits<float>::infinity();
  data::writeUnfoldFile(scratch_ + "/truth_inf.h5", inf_truth);
  err = refusedWithInput("truth", "truth_inf.h5", "truth_inf");
  says(err, "truth_inf.json: inputs: truth " + scratch_ +
                "/truth_inf.h5: dataset 'gen_subs': row 77 holds a non-finite value (Inf)");

  // A chain that fails at run time (here on a node whose memory cannot hold the simulation:
  // a read budget below its size) leaves its own one-line error as the task's reason, not
  // "task returned".
  json budget_spec = spec(1, 1);
  budget_spec["chain"]["config"]["classifier"] = "mlp";
  const std::string dir = init(budget_spec, "small_node");
  {
    struct Budget {
      // 10 KiB: the run's start reads the files' pass flags and weights (1.6 KiB) under it,
      // the chain's 400 events need more.
      Budget() { ::setenv("FOLDFARM_READ_BUDGET_GIB", "0.00001", 1); }
      ~Budget() { ::unsetenv("FOLDFARM_READ_BUDGET_GIB"); }
    } budget;
    EXPECT_NE(runFoldfarm({"campaign", "run", dir}, scratch_, "small-node-run"), 0);
  }
  ASSERT_EQ(runFoldfarm({"campaign", "status", dir, "--json"}, scratch_, "small-node-status"), 0);
  const json status = json::parse(readText(scratch_ + "/small-node-status.out"));
  ASSERT_EQ(status.at("failures").size(), 1u) << status.dump();
  const std::string reason = status["failures"][0].at("reason").get<std::string>();
  EXPECT_NE(reason.find(scratch_ + "/mc.h5: reading 400 events needs"), std::string::npos)
      << reason;
  EXPECT_NE(reason.find("more than the read budget"), std::string::npos) << reason;
  EXPECT_EQ(reason.find("task returned"), std::string::npos) << reason;
  EXPECT_EQ(reason.find('\n'), std::string::npos) << reason;
}

// The foundation is read whole (both checksums) and its preset compared at `campaign init`
// and again before any task starts: a foundation corrupted, or emptied, after init stops
// `campaign run` with one line naming it and exit 2, no task run (before: every chain
// failed when it started); so does a sound checkpoint written since (as `campaign init`
// recorded its files, it is another); restored as it was, the campaign runs.
TEST_F(ChainCampaign, AFoundationBrokenAfterInitStopsTheRunBeforeAnyTaskStarts) {
  ASSERT_EQ(runFoldfarm({"data", "synth", "--kind", "pretrain", "--jets", "120", "--particles",
                         "32", "--seed", "3", "--out", scratch_ + "/pre.h5"},
                        scratch_, "pre-synth"),
            0);
  const std::string found = scratch_ + "/found";
  ASSERT_EQ(runFoldfarm({"pretrain", "--data", scratch_ + "/pre.h5", "--out", found, "--preset",
                         "tiny", "--epochs", "1", "--threads", "1"},
                        scratch_, "pretrain"),
            0)
      << readText(scratch_ + "/pretrain.err");
  json s = spec(2, 1);
  s["inputs"]["foundation"] = found;
  s["chain"]["config"]["preset"] = "omnilearn";  // not the foundation's: refused at init
  EXPECT_EQ(runFoldfarm({"campaign", "init", writeSpec(scratch_, s, "omni.json"), "--dir",
                         scratch_ + "/omni"},
                        scratch_, "omni-init"),
            kExitBadInput);
  EXPECT_NE(readText(scratch_ + "/omni-init.err").find("is not the foundation's"),
            std::string::npos)
      << readText(scratch_ + "/omni-init.err");
  EXPECT_FALSE(exists(scratch_ + "/omni"));
  s["chain"]["config"]["preset"] = "tiny";
  const std::string dir = init(s, "camp");

  // The tensors' file corrupted (one byte flipped): named, nothing runs.
  std::string payload;
  for (const auto& e : fs::directory_iterator(found + "/model"))
    if (e.path().filename().string().rfind("tensors-", 0) == 0) payload = e.path().string();
  ASSERT_FALSE(payload.empty());
  const std::string good = readText(payload);
  const auto good_time = fs::last_write_time(payload);
  std::string bad = good;
  bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x5a);
  std::ofstream(payload, std::ios::binary | std::ios::trunc) << bad;
  const auto refusedRun = [&](const std::string& tag) -> std::string {
    EXPECT_EQ(runFoldfarm({"campaign", "run", dir}, scratch_, tag), kExitBadInput) << tag;
    EXPECT_EQ(runFoldfarm({"campaign", "status", dir, "--json"}, scratch_, tag + "-status"), 0);
    const json st = json::parse(readText(scratch_ + "/" + tag + "-status.out"));
    EXPECT_EQ(st["counts"].value("pending", 0), 2) << tag << st.dump();
    EXPECT_FALSE(exists(dir + "/tasks/r0000m0/task.log")) << tag;  // no task started
    return readText(scratch_ + "/" + tag + ".err");
  };
  std::string err = refusedRun("corrupt");
  EXPECT_NE(err.find(payload + ": checksum mismatch"), std::string::npos) << err;
  EXPECT_EQ(foldfarm::testing::errorLines(err), 1) << err;

  // The checkpoint moved away (a pretraining writing it anew): the directory named.
  std::ofstream(payload, std::ios::binary | std::ios::trunc) << good;
  fs::last_write_time(payload, good_time);
  fs::rename(found + "/model", scratch_ + "/model.moved");
  err = refusedRun("emptied");
  EXPECT_NE(err.find("foundation " + found + ": holds no checkpoint"), std::string::npos) << err;

  // Back, but not as it was (a sound checkpoint written since, as a pretraining run again
  // would): the foundation named as changed since `campaign init`.
  fs::rename(scratch_ + "/model.moved", found + "/model");
  const auto meta_time = fs::last_write_time(found + "/model/meta.json");
  fs::last_write_time(found + "/model/meta.json", meta_time + std::chrono::seconds(1));
  err = refusedRun("rewritten");
  EXPECT_NE(err.find(found + " (a directory: its files) changed since `campaign init`"),
            std::string::npos)
      << err;
  EXPECT_EQ(foldfarm::testing::errorLines(err), 1) << err;

  // Restored as it was: the same campaign runs.
  fs::last_write_time(found + "/model/meta.json", meta_time);
  ASSERT_EQ(runFoldfarm({"campaign", "run", dir}, scratch_, "restored"), 0)
      << readText(scratch_ + "/restored.err");
}

TEST_F(ChainCampaign, KilledAndResumedCampaignAggregatesLikeAnUninterruptedOne) {
  std::string plain = init(spec(3, 1), "plain");
  ASSERT_EQ(runFoldfarm({"campaign", "run", plain}, scratch_, "plain-run"), 0)
      << readText(scratch_ + "/plain-run.err");
  std::string killed = init(spec(3, 1), "killed");
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> when_ms(300, 2500);
  for (int round = 0; round < 2; ++round) {
    std::vector<std::string> a{FOLDFARM_BINARY, "campaign", "resume", killed};
    pid_t pid = ::fork();
    if (pid == 0) {
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 2);
      std::vector<char*> argv;
      for (auto& s : a) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(when_ms(rng)));
    ::kill(pid, SIGKILL);
    waitExit(pid);
  }
  // The last resume aggregates too (--aggregate), once every task is done.
  ASSERT_EQ(runFoldfarm({"campaign", "resume", killed, "--aggregate"}, scratch_, "killed-run"), 0)
      << readText(scratch_ + "/killed-run.err");
  EXPECT_NE(readText(scratch_ + "/killed-run.out").find("aggregated 3 chain(s) of 3 task(s)"),
            std::string::npos)
      << readText(scratch_ + "/killed-run.out");
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", plain}, scratch_, "agg1"), 0);
  json a = json::parse(readText(plain + "/aggregate/summary.json"));
  json b = json::parse(readText(killed + "/aggregate/summary.json"));
  EXPECT_EQ(a["observables"], b["observables"]) << a.dump() << "\n" << b.dump();
}

// A systematics campaign on the local executor: nominal chains, a detector pair, a modelling
// variation, MC statistics and a non-closure test on one graph; its orchestrator killed -9
// while chains run, then resumed: every task done exactly once, each varied chain started
// after its nominal chain, and the aggregation holds the total covariance, the sources and
// the publication weights; it equals the aggregation of the same campaign run uninterrupted.
TEST_F(ChainCampaign, SystematicsGraphSurvivesKillMinus9AndAggregatesLikeAnUninterruptedOne) {
  json s;
  ASSERT_NO_FATAL_FAILURE(s = systematicsSpec(2, 2));
  s["variations"]["mcstat"] = {{"type", "mc_bootstrap"}, {"replicas", 3}, {"members", 1}};
  s["variations"]["closure"] = {{"type", "non_closure"},
                                {"inputs", {{"data", scratch_ + "/mc_alt.h5"}}}};
  const int total = 4 + 2 + 2 + 2 + 3 + 2 + 2;  // the last: the warm reference, 1 x 2
  std::string plain = init(s, "sys-plain");
  ASSERT_EQ(runFoldfarm({"campaign", "run", plain}, scratch_, "sys-plain-run"), 0)
      << readText(scratch_ + "/sys-plain-run.err");
  std::string killed = init(s, "sys-killed");
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> when_ms(300, 1500);
  for (int round = 0; round < 2; ++round) {
    pid_t pid = startProgram(FOLDFARM_BINARY, {"campaign", "resume", killed}, scratch_,
                             "sys-kill" + std::to_string(round));
    std::this_thread::sleep_for(std::chrono::milliseconds(when_ms(rng)));
    ::kill(pid, SIGKILL);
    waitExit(pid);
  }
  ASSERT_EQ(runFoldfarm({"campaign", "resume", killed}, scratch_, "sys-resume"), 0)
      << readText(scratch_ + "/sys-resume.err");
  {
    CampaignJournal j = CampaignJournal::open(killed + "/journal.sqlite");
    std::map<int, int> done_events;
    std::map<int, double> done_at, first_start;
    j.forEachEvent([&](const CampaignJournal::Event& e) {
      if (e.to == TaskState::kDone) {
        ++done_events[e.task];
        done_at[e.task] = e.at;
      }
      if (e.from == TaskState::kPending && e.to == TaskState::kRunning &&
          !first_start.count(e.task))
        first_start[e.task] = e.at;
    });
    EXPECT_EQ(j.counts()[TaskState::kDone], total);
    for (const auto& t : j.tasks()) EXPECT_EQ(done_events[t.index], 1) << t.id;
    const TaskGraph g = j.graph();
    for (const auto& t : j.tasks())
      for (int n : g.needs(t.index)) EXPECT_GE(first_start[t.index], done_at[n]) << t.id;
  }
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", plain}, scratch_, "sys-agg1"), 0)
      << readText(scratch_ + "/sys-agg1.err");
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", killed}, scratch_, "sys-agg2"), 0)
      << readText(scratch_ + "/sys-agg2.err");
  json a = json::parse(readText(plain + "/aggregate/summary.json"));
  json b = json::parse(readText(killed + "/aggregate/summary.json"));
  EXPECT_EQ(a["observables"], b["observables"]);
  ASSERT_EQ(b["variations"].size(), 5u) << b.dump();
  for (const char* key : {"coverage_68", "coverage_68_total", "uncertainty"})
    EXPECT_TRUE(b["observables"]["tau21"].contains(key)) << key;
  for (const char* source : {"det", "alt", "mc_stat", "non_closure", "stat", "total"})
    EXPECT_TRUE(b["observables"]["tau21"]["uncertainty"].contains(source)) << source;
  EXPECT_TRUE(exists(killed + "/aggregate/event_weights.h5"));
  // The command's output choices: no figures, no publication weights; the earlier run's are
  // removed and the bands are those of the full run.
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", killed, "--no-plots", "--event-weights", "none"},
                        scratch_, "sys-agg3"),
            0)
      << readText(scratch_ + "/sys-agg3.err");
  EXPECT_FALSE(exists(killed + "/aggregate/event_weights.h5"));
  EXPECT_FALSE(exists(killed + "/aggregate/tau21.png"));
  json c = json::parse(readText(killed + "/aggregate/summary.json"));
  EXPECT_EQ(c["observables"], b["observables"]);
  EXPECT_EQ(c["outputs"], json({"bands.h5", "summary.json"}));
}

// A campaign extended after it ran (`campaign extend`: a third replica, a second member, the
// detector variations' second member; the variations renumbered behind the new nominal
// tasks) runs only the new chains and aggregates to exactly the bands, shifts and chain count
// of the same campaign made with those counts from the start.
TEST_F(ChainCampaign, ExtendedCampaignAggregatesLikeOneMadeWhole) {
  ASSERT_NO_FATAL_FAILURE(synthFile("mc_up.h5", "sim", "11", "energy_scale=1.05"));
  ASSERT_NO_FATAL_FAILURE(synthFile("mc_down.h5", "sim", "11", "energy_scale=0.95"));
  json base = spec(2, 1);
  base["chain"]["config"] = {{"classifier", "mlp"}};
  base["variations"] = detectorPair();
  json more = base;
  more["replicas"] = 3;
  more["members"] = 2;
  const std::string extended = init(base, "extended");
  ASSERT_EQ(runFoldfarm({"campaign", "run", extended, "--aggregate"}, scratch_, "ext-run1"), 0)
      << readText(scratch_ + "/ext-run1.err");
  // While a change of the campaign holds its outputs' lock (here this process, as `campaign
  // extend` holds it), an aggregation is refused before it reads a chain, and changes nothing.
  {
    const std::string summary = readText(extended + "/aggregate/summary.json");
    const Fd held = lockCampaignOutputs(extended, "`foldfarm campaign extend`");
    EXPECT_EQ(runFoldfarm({"campaign", "aggregate", extended}, scratch_, "agg-refused"),
              kExitBadInput);
    const std::string err = readText(scratch_ + "/agg-refused.err");
    EXPECT_NE(
        err.find(extended + ": `foldfarm campaign extend` (pid " + std::to_string(::getpid()) +
                 " on " + hostName() + ") is using this campaign's outputs (" + extended +
                 "/aggregate.lock is locked); wait for it or stop it, then run `foldfarm "
                 "campaign aggregate` again (it changed nothing)"),
        std::string::npos)
        << err;
    EXPECT_EQ(readText(extended + "/aggregate/summary.json"), summary);
  }
  ASSERT_EQ(runFoldfarm({"campaign", "extend", extended, "--spec",
                         writeSpec(scratch_, more, "more.json"), "--json"},
                        scratch_, "extend"),
            0)
      << readText(scratch_ + "/extend.err");
  const json added = json::parse(readText(scratch_ + "/extend.out"));
  // Fewer members than it has now: refused as such (before: the warm reference, at the old
  // counts, was said to go beyond the nominal's).
  EXPECT_EQ(runFoldfarm({"campaign", "extend", extended, "--members", "1", "--dry-run"}, scratch_,
                        "fewer"),
            kExitBadInput);
  EXPECT_NE(readText(scratch_ + "/fewer.err").find("'members' = 1 is below the campaign's 2"),
            std::string::npos)
      << readText(scratch_ + "/fewer.err");
  // A warm-started variation grown past the nominal's members: its new tasks start cold, said
  // as `campaign init` says it (before: nothing).
  EXPECT_EQ(runFoldfarm({"campaign", "extend", extended, "--variation", "det_up", "--members", "3",
                         "--dry-run"},
                        scratch_, "cold"),
            0)
      << readText(scratch_ + "/cold.err");
  EXPECT_NE(readText(scratch_ + "/cold.err")
                .find("variation det_up grows to 1 x 3 tasks, the nominal has 3 x 2: those "
                      "beyond the nominal's start cold"),
            std::string::npos)
      << readText(scratch_ + "/cold.err");
  // The warm reference (1 x 1 before, 1 x 2 after) grows with the detector variations.
  EXPECT_EQ(added["tasks_before"], 5);
  EXPECT_EQ(added["tasks_after"], 12);
  EXPECT_EQ(added["renumbered"], 4);
  EXPECT_EQ(added["aggregate_moved"], true);
  ASSERT_EQ(runFoldfarm({"campaign", "run", extended, "--aggregate"}, scratch_, "ext-run2"), 0)
      << readText(scratch_ + "/ext-run2.err");
  EXPECT_NE(readText(scratch_ + "/ext-run2.out").find("7 task(s) done in this run"),
            std::string::npos)
      << readText(scratch_ + "/ext-run2.out");

  const std::string whole = init(more, "whole");
  ASSERT_EQ(runFoldfarm({"campaign", "run", whole, "--aggregate"}, scratch_, "whole-run"), 0)
      << readText(scratch_ + "/whole-run.err");
  const json a = json::parse(readText(extended + "/aggregate/summary.json"));
  const json b = json::parse(readText(whole + "/aggregate/summary.json"));
  EXPECT_EQ(a["chains"], 6);  // the nominal chains
  EXPECT_EQ(a["chains"], b["chains"]);
  EXPECT_EQ(a["variations"], b["variations"]);
  EXPECT_EQ(a["warm_reference"], b["warm_reference"]);
  EXPECT_EQ(a["observables"], b["observables"]);
}

// What a directory takes on disk, as `du` counts it: the blocks of everything under it, itself
// included; and its entries, itself included.
std::pair<double, double> diskUseOf(const std::string& dir) {
  const auto blocks = [](const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return 512.0 * static_cast<double>(st.st_blocks);
  };
  double bytes = blocks(dir), files = 1;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    files += 1;
    bytes += blocks(e.path());
  }
  return {bytes, files};
}

// `campaign plan` says what a campaign will take on disk before anything runs: its estimate of
// the tasks' directories (weights.h5 sized by the simulation's events, the histograms and
// records, the steps' models that the nominal chains keep for the warm-started variations) and
// of the aggregation is within a fifth of what the campaign then leaves; `--from` the campaign
// gives what its tasks took. `campaign init` says the total. The histograms and bands are
// sized by the binning (mass on 400 bins here: its bins x bins matrices are most of bands.h5);
// a binning whose matrices would take gigabytes is warned of, by `plan` and `init`.
TEST_F(ChainCampaign, PlanSaysWhatTheCampaignWillTakeOnDisk) {
  synthFile("mc_up.h5", "sim", "11", "energy_scale=1.05");
  synthFile("mc_down.h5", "sim", "11", "energy_scale=0.95");
  json s = spec(2, 1);
  s["variations"] = detectorPair();
  s["chain"]["config"]["binning"] = {{"mass", {{"lo", 0}, {"hi", 300}, {"bins", 400}}}};
  const std::string spec_path = writeSpec(scratch_, s, "disk-spec.json");
  const auto plan = [&](const std::vector<std::string>& more, const std::string& tag) {
    std::vector<std::string> a = {"campaign", "plan", spec_path, "--gpus", "1", "--json"};
    a.insert(a.end(), more.begin(), more.end());
    EXPECT_EQ(runFoldfarm(a, scratch_, tag), 0) << readText(scratch_ + "/" + tag + ".err");
    return json::parse(readText(scratch_ + "/" + tag + ".out")).at("disk");
  };
  const json estimate = plan({"--task-minutes", "1"}, "plan");
  EXPECT_EQ(estimate.value("tasks_unknown", -1), 0) << estimate.dump();
  const std::string dir = init(s, "disk");
  EXPECT_NE(readText(scratch_ + "/disk-init.out").find("outputs: about "), std::string::npos)
      << readText(scratch_ + "/disk-init.out");
  ASSERT_EQ(runFoldfarm({"campaign", "run", dir, "--aggregate"}, scratch_, "disk-run"), 0)
      << readText(scratch_ + "/disk-run.err");
  ASSERT_TRUE(fs::is_directory(dir + "/tasks/r0000m0/models")) << "kept for det_up, det_down";
  double task_bytes = 0, task_files = 0;
  for (const auto& t : fs::directory_iterator(dir + "/tasks")) {
    const auto [bytes, files] = diskUseOf(t.path().string());
    task_bytes += bytes;
    task_files += files;
  }
  const auto [aggregate_bytes, aggregate_files] = diskUseOf(dir + "/aggregate");
  const double tasks_estimated = estimate.at("tasks").at("bytes").get<double>();
  EXPECT_NEAR(tasks_estimated, task_bytes, 0.2 * task_bytes) << estimate.dump();
  EXPECT_NEAR(estimate.at("tasks").at("files").get<double>(), task_files, 0.2 * task_files)
      << estimate.dump();
  EXPECT_NEAR(estimate.at("aggregate").at("bytes").get<double>(), aggregate_bytes,
              0.25 * aggregate_bytes)
      << estimate.dump();
  EXPECT_NEAR(estimate.at("aggregate").at("files").get<double>(), aggregate_files,
              0.25 * aggregate_files)
      << estimate.dump();
  // Measured on the campaign itself: what its tasks take, exactly.
  const json measured = plan({"--from", dir}, "plan-from");
  EXPECT_NEAR(measured.at("tasks").at("bytes").get<double>(), task_bytes, 1.0) << measured.dump();
  // Each task measured on the done tasks of its own params: r0000m0 kept its models (det_up
  // and det_down start from it), r0001m0 did not.
  for (const json& g : measured.at("groups"))
    for (const json& p : g.at("parts")) EXPECT_GE(p.value("measured_on", 0), 1) << g.dump();
  EXPECT_EQ(measured.at("groups").at(0).at("parts").size(), 2u) << measured.dump();
  EXPECT_EQ(estimate.at("warnings"), json::array()) << estimate.dump();

  // 10,000 bins: 4 matrices of 800 MB for mass (its covariance, correlation and total
  // covariance, and the detector source's, whose shift has no noise estimate from one replica),
  // said before anything is made.
  s["chain"]["config"]["binning"]["mass"]["bins"] = 10000;
  ASSERT_NO_THROW(writeSpec(scratch_, s, "disk-spec.json"));
  const json fine = plan({"--task-minutes", "1"}, "plan-fine");
  ASSERT_EQ(fine.at("warnings").size(), 1u) << fine.dump();
  const std::string warning = fine.at("warnings").at(0).get<std::string>();
  for (const char* part :
       {"bands.h5 will take about 3.2 GB, and the aggregation one to two times as much "
        "memory: the binning of mass (10,000 bins) gives 4 matrices of bins "
        "x bins (10,000 x 10,000: 800 MB each)",
        "`foldfarm campaign aggregate D --binning` rebins"})
    EXPECT_NE(warning.find(part), std::string::npos) << part << " in " << warning;
  init(s, "disk-fine");
  EXPECT_NE(readText(scratch_ + "/disk-fine-init.err").find(warning), std::string::npos)
      << readText(scratch_ + "/disk-fine-init.err");
}

// On a file system with less room than the campaign's outputs will take (a 4 MB tmpfs, filled
// up), `campaign init` makes the campaign and warns, naming the directory and both figures;
// where they fit it says nothing; and `extend` (as `run`, `resume` and `slurm submit` do)
// warns of what the tasks not done yet will write. Skipped where a tmpfs cannot be mounted
// (not root, no CAP_SYS_ADMIN).
TEST_F(ChainCampaign, InitAndExtendWarnWhenTheFileSystemHasLessRoomThanTheOutputsTake) {
  const std::string small = scratch_ + "/small";
  fs::create_directories(small);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=4m") != 0)
    GTEST_SKIP() << "a tmpfs cannot be mounted here: " << std::strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  const std::string fits = init(spec(1, 1), "small/fits");
  EXPECT_EQ(readText(scratch_ + "/small/fits-init.err").find("will take"), std::string::npos)
      << readText(scratch_ + "/small/fits-init.err");
  // Fill it up but for about half a megabyte.
  {
    std::ofstream filler(small + "/filler", std::ios::binary);
    const std::string block(1 << 16, 'x');
    while (fs::space(small).available > 600 * 1000)
      filler.write(block.data(), block.size()), filler.flush();
  }
  // A dry run says what the added task will take and warns as the extension will, changing
  // nothing.
  const std::string spec_before = readText(fits + "/spec.json");
  ASSERT_EQ(runFoldfarm({"campaign", "extend", fits, "--replicas", "2", "--dry-run"}, scratch_,
                        "small/dry"),
            0)
      << readText(scratch_ + "/small/dry.err");
  const std::string dry_out = readText(scratch_ + "/small/dry.out");
  EXPECT_NE(dry_out.find("1 task(s) added (r0001m0), 2 in all; their outputs: about "),
            std::string::npos)
      << dry_out;
  const std::string dry_err = readText(scratch_ + "/small/dry.err");
  EXPECT_NE(dry_err.find("the outputs of its 2 task(s) not done yet once extended and aggregation "
                         "will take about "),
            std::string::npos)
      << dry_err;
  ASSERT_EQ(runFoldfarm({"campaign", "extend", fits, "--replicas", "2", "--dry-run", "--json"},
                        scratch_, "small/dry-json"),
            0);
  const json dry = json::parse(readText(scratch_ + "/small/dry-json.out"));
  EXPECT_GT(dry.at("added_outputs_bytes").get<double>(), 100e3) << dry.dump();
  EXPECT_EQ(dry.at("added_outputs_unknown"), 0) << dry.dump();
  EXPECT_NE(dry.at("disk_shortfall").get<std::string>(), "") << dry.dump();
  EXPECT_EQ(readText(fits + "/spec.json"), spec_before) << "a dry run changes nothing";
  EXPECT_EQ(CampaignJournal::open(fits + "/journal.sqlite").numTasks(), 1);
  ASSERT_EQ(runFoldfarm({"campaign", "extend", fits, "--replicas", "2"}, scratch_, "small/extend"),
            0)
      << readText(scratch_ + "/small/extend.err");
  const std::string extended = readText(scratch_ + "/small/extend.err");
  EXPECT_NE(extended.find("the outputs of its 2 task(s) not done yet and aggregation will take "
                          "about "),
            std::string::npos)
      << extended;
  const std::string dir = init(spec(4, 1), "small/disk");
  EXPECT_TRUE(fs::exists(dir + "/journal.sqlite"));
  const std::string err = readText(scratch_ + "/small/disk-init.err");
  EXPECT_NE(err.find("the outputs of its tasks and aggregation will take about "),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("where the file system of " + dir + " has "), std::string::npos) << err;
  EXPECT_NE(err.find(" free: tasks will fail once it is full"), std::string::npos) << err;
  EXPECT_NE(err.find("\"aggregate\": {\"event_weights\": \"central\"}"), std::string::npos) << err;
}

// On Lustre a user meets a quota long before the file system is full: `campaign init` (as
// every run's start and `extend`) reads `lfs quota` for the user and the directory's group and
// warns where either leaves less room than the outputs take, naming the quota and the command
// that shows it. An `lfs` that fails says nothing; one that does not answer is given up after
// 5 s, and the campaign is made. Here `lfs` is a script on PATH answering as Lustre's does.
TEST_F(ChainCampaign, InitWarnsWhereALustreQuotaLeavesLessRoomThanTheOutputsTake) {
  const std::string bin = scratch_ + "/bin";
  fs::create_directories(bin);
  auto fakeLfs = [&](const std::string& body) {
    writeText(bin + "/lfs", "#!/bin/sh\n" + body);
    fs::permissions(bin + "/lfs", fs::perms::owner_all);
  };
  const char* old_path = std::getenv("PATH");
  const std::string path_before = old_path ? old_path : "/usr/bin:/bin";
  ::setenv("PATH", (bin + ":" + path_before).c_str(), 1);
  struct RestorePath {
    std::string path;
    ~RestorePath() { ::setenv("PATH", path.c_str(), 1); }
  } restore{path_before};
  // lfs quota -q -u|-g ID DIR: a user limit of 2,000 kB with 1,500 used; a group limit of 20
  // files with 3 used. The mount is longer than 15 characters: on a line of its own.
  // As lfs prints it, the path as given (here with spaces), on a line of its own.
  fakeLfs(
      "echo \"$*\" >> \"$(dirname \"$0\")/asked\"\n"
      "case \"$3\" in\n"
      "  -u) printf '%s\\n      1500  0  2000  -  40  0  0  -\\n' \"$5\" ;;\n"
      "  -g) printf '%s\\n        10  0  0  -  3  0  20  -\\n' \"$5\" ;;\n"
      "esac\n");
  const std::string dir = init(spec(4, 1), "quota 1 2");
  EXPECT_TRUE(fs::exists(dir + "/journal.sqlite"));
  const std::string err = readText(scratch_ + "/quota 1 2-init.err");
  const std::string uid = std::to_string(::geteuid());
  EXPECT_NE(err.find("where the Lustre quota of user " + uid + " (`lfs quota -u " + uid + " '" +
                     dir + "'`) leaves 512 kB"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("files where the Lustre quota of group "), std::string::npos) << err;
  EXPECT_NE(err.find(") leaves 17: tasks will fail once it is full"), std::string::npos) << err;
  EXPECT_NE(readText(bin + "/asked").find("quota -q -u " + uid + " " + dir), std::string::npos);
  // Not Lustre: nothing said.
  fakeLfs("echo \"lfs: $5 is not on a Lustre file system\" >&2; exit 22\n");
  init(spec(4, 1), "not-lustre");
  EXPECT_EQ(readText(scratch_ + "/not-lustre-init.err").find("will take"), std::string::npos)
      << readText(scratch_ + "/not-lustre-init.err");
  // An lfs that hangs (an OST down) is given up: the campaign is made, nothing said of it.
  fakeLfs("exec sleep 60\n");
  const auto start = std::chrono::steady_clock::now();
  const std::string hung = init(spec(4, 1), "hung");
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(fs::exists(hung + "/journal.sqlite"));
  EXPECT_LT(took, 30) << "given up after 5 s (SIGKILL 2 s after SIGTERM)";
  EXPECT_EQ(readText(scratch_ + "/hung-init.err").find("will take"), std::string::npos)
      << readText(scratch_ + "/hung-init.err");
}

// An aggregation before every task is done says what it left out and how to finish it: a
// variation without a done chain is named (and listed in summary.json's "incomplete"); a pair
// of which one side has none leaves its source out (it was refused with advice no campaign
// can follow: "make it one-sided").
TEST_F(ChainCampaign, AnAggregationOfAPartlyRunCampaignSaysWhatItLeftOut) {
  json s;
  ASSERT_NO_FATAL_FAILURE(s = systematicsSpec(2, 1));
  const std::string dir = init(s, "partly");
  // Run, then two of its chains pending again in the journal (as a retry leaves them).
  ASSERT_EQ(runFoldfarm({"campaign", "run", dir}, scratch_, "partly-run"), 0)
      << readText(scratch_ + "/partly-run.err");
  {
    // The journal alone (the chain kind is not registered in this test program).
    CampaignJournal j = CampaignJournal::open(dir + "/journal.sqlite");
    std::vector<int> again;
    for (const auto& t : j.tasks())
      if (t.id == "det_down.r0000m0" || t.id == "alt.r0000m0") again.push_back(t.index);
    ASSERT_EQ(again.size(), 2u);
    j.rerun(again, "run again by the test", {});
  }
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "partly-agg"), 0)
      << readText(scratch_ + "/partly-agg.err");
  const std::string err = readText(scratch_ + "/partly-agg.err");
  EXPECT_NE(err.find("source 'det' is left out: its down variation 'det_down' has no done chain "
                     "(1 pending; `foldfarm campaign run " +
                     dir + "`, then aggregate again)"),
            std::string::npos)
      << err;
  {
    // While a run orchestrates the campaign (it holds orchestrator.lock): wait for it (before:
    // "`campaign run D`", which that run refuses).
    Fd lock(::open((dir + "/orchestrator.lock").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(lock.valid());
    ASSERT_EQ(::flock(lock.get(), LOCK_EX | LOCK_NB), 0);
    ASSERT_EQ(::ftruncate(lock.get(), 0), 0);
    ASSERT_EQ(::pwrite(lock.get(), "node7 pid 4242\n", 15, 0), 15);
    ASSERT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "busy-agg"), 0)
        << readText(scratch_ + "/busy-agg.err");
    const std::string busy = readText(scratch_ + "/busy-agg.err");
    EXPECT_NE(busy.find("variation 'alt' has 0 of 1 chain(s) done (1 pending; wait for the run "
                        "that orchestrates it (node7 pid 4242), then aggregate again)"),
              std::string::npos)
        << busy;
  }
  EXPECT_NE(err.find("variation 'alt' has 0 of 1 chain(s) done (1 pending;"), std::string::npos)
      << err;
  EXPECT_NE(readText(scratch_ + "/partly-agg.out").find("aggregated 3 chain(s) of 6 task(s)"),
            std::string::npos)
      << readText(scratch_ + "/partly-agg.out");
  const json sum = json::parse(readText(dir + "/aggregate/summary.json"));
  EXPECT_EQ(sum["incomplete"]["sources_left_out"], (json{{"det", "det_down"}})) << sum.dump();
  EXPECT_EQ(sum["incomplete"]["variations"]["alt"], (json{{"done", 0}, {"tasks", 1}}));
  EXPECT_TRUE(sum["variations"].empty()) << sum["variations"].dump();
  EXPECT_FALSE(sum["observables"]["mass"]["uncertainty"].contains("det"));
  // A nominal chain not done: said too (before: not a word, the bands over fewer replicas).
  {
    CampaignJournal j = CampaignJournal::open(dir + "/journal.sqlite");
    std::vector<int> again;
    for (const auto& t : j.tasks())
      if (t.id == "r0001m0") again.push_back(t.index);
    ASSERT_EQ(j.rerun(again, "run again by the test", {}), 1);
  }
  ASSERT_EQ(runFoldfarm({"campaign", "aggregate", dir}, scratch_, "nominal-agg"), 0)
      << readText(scratch_ + "/nominal-agg.err");
  EXPECT_NE(readText(scratch_ + "/nominal-agg.err")
                .find("1 of 2 nominal chain(s) done (1 pending; `foldfarm campaign run " + dir +
                      "`, then aggregate again): the bands are over the replicas of those done"),
            std::string::npos)
      << readText(scratch_ + "/nominal-agg.err");
}

// A variation warm-started from the nominal chains trains each step further than the nominal
// did: on the nominal's own inputs (a copy of its simulation) its shift from the nominal was
// as large as the statistical band. `campaign init` adds the warm reference (the nominal
// trained again as the variations are), and every warm-started shift is measured from it: the
// copy's is exactly zero, the warm start's own effect is reported beside, not counted.
TEST_F(ChainCampaign, AWarmStartedVariationOfTheNominalsOwnInputsShiftsNothing) {
  ASSERT_NO_FATAL_FAILURE(synthFile("mc_up.h5", "sim", "11", "energy_scale=1.05"));
  ASSERT_NO_FATAL_FAILURE(synthFile("mc_down.h5", "sim", "11", "energy_scale=0.95"));
  fs::copy_file(scratch_ + "/mc.h5", scratch_ + "/mc_copy.h5");
  json s = spec(3, 2);
  s["chain"]["iterations"] = 2;
  s["chain"]["config"] = {{"classifier", "mlp"}};
  s["variations"] = detectorPair();
  s["variations"]["same"] = {
      {"type", "modelling"}, {"replicas", 2}, {"inputs", {{"mc", scratch_ + "/mc_copy.h5"}}}};
  const std::string dir = init(s, "warm-ref");
  EXPECT_NE(readText(scratch_ + "/warm-ref-init.out")
                .find("with the warm reference warm_reference (4 task(s), added)"),
            std::string::npos)
      << readText(scratch_ + "/warm-ref-init.out");
  const json frozen = json::parse(readText(dir + "/spec.json"));
  EXPECT_EQ(frozen["variations"]["warm_reference"],
            (json{{"type", "reference"}, {"replicas", 2}, {"members", 2}, {"warm_start", true}}));
  ASSERT_EQ(runFoldfarm({"campaign", "run", dir, "--aggregate"}, scratch_, "warm-ref-run"), 0)
      << readText(scratch_ + "/warm-ref-run.err");
  const json sum = json::parse(readText(dir + "/aggregate/summary.json"));
  EXPECT_EQ(sum["warm_reference"]["chains"], 4) << sum.dump();
  ASSERT_EQ(sum["variations"].size(), 3u) << sum["variations"].dump();
  for (const json& v : sum["variations"]) EXPECT_EQ(v["shift_from"], "warm_reference") << v.dump();
  for (const auto& [name, o] : sum["observables"].items()) {
    EXPECT_EQ(o["uncertainty"]["same"].get<double>(), 0.0) << name;
    EXPECT_EQ(o["shift_error"]["same"].get<double>(), 0.0) << name;
    EXPECT_GT(o["uncertainty"]["det"].get<double>(), 0.0) << name;
    ASSERT_TRUE(o["warm_start_effect"]["shift"].is_number()) << name << o.dump();
    // Not an uncertainty: the total is stat and the sources in quadrature.
    double sq = 0;
    for (const char* k : {"stat", "det", "same"})
      sq += std::pow(o["uncertainty"][k].get<double>(), 2);
    EXPECT_NEAR(o["uncertainty"]["total"].get<double>(), std::sqrt(sq), 1e-9) << name;
  }

  // The models a variation warm-starts from lost: a retry of the variation alone cannot mend
  // that. It fails at once with exit 66, its reason names `retry --failed` (which `campaign
  // status` offers too), and that command runs the nominal task again first (before: exit 2,
  // and `retry --failed` failed the same way forever).
  const auto failure = [&](const std::string& name) {
    EXPECT_NE(runFoldfarm({"campaign", "retry", dir, "--task", "same.r0001m0"}, scratch_, name), 0);
    EXPECT_EQ(runFoldfarm({"campaign", "status", dir, "--json"}, scratch_, name + "-status"), 0);
    const json st = json::parse(readText(scratch_ + "/" + name + "-status.out"));
    EXPECT_EQ(st["failures"].size(), 1u) << st.dump();
    return st["failures"].empty() ? json::object() : st["failures"][0];
  };
  const auto allDone = [&](const std::string& name) {
    ASSERT_EQ(runFoldfarm({"campaign", "status", dir, "--json"}, scratch_, name), 0);
    const json counts = json::parse(readText(scratch_ + "/" + name + ".out"))["counts"];
    EXPECT_EQ(counts["done"], 4 * 3 + 6) << counts.dump();  // 6 nominal, 2 x 2 of 4 variations
  };
  fs::remove_all(dir + "/tasks/r0001m0/models");
  json f = failure("lost");
  EXPECT_EQ(f["exit_code"], 66) << f.dump();
  EXPECT_EQ(f["attempts"], 1) << f.dump();
  EXPECT_NE(f["reason"].get<std::string>().find("; `foldfarm campaign retry " + dir +
                                                " --failed` runs r0001m0 again, and this task "
                                                "after it"),
            std::string::npos)
      << f.dump();
  ASSERT_EQ(runFoldfarm({"campaign", "retry", dir, "--failed"}, scratch_, "mended"), 0)
      << readText(scratch_ + "/mended.err");
  EXPECT_NE(readText(scratch_ + "/mended.out")
                .find("failed tasks found the models they warm-start from lost or damaged: "
                      "r0001m0 runs again first"),
            std::string::npos)
      << readText(scratch_ + "/mended.out");
  allDone("mended-status");
  // Its progress counts the tasks done before as done, not as this run's work: the rate times
  // the elapsed time of its last line is the number it ran again (before: all 18).
  {
    const std::string out = readText(scratch_ + "/mended.out");
    const std::string said = "campaign " + dir + ": ";
    int ran = 0;
    for (size_t at = out.find(said); at != std::string::npos; at = out.find(said, at + 1))
      if (std::sscanf(out.c_str() + at + said.size(), "%d task(s) run again", &ran) == 1) break;
    ASSERT_GT(ran, 0) << out;
    ASSERT_LT(ran, 18) << out;
    const std::string err = readText(scratch_ + "/mended.err");
    const size_t at = err.rfind("18/18 tasks  ");
    ASSERT_NE(at, std::string::npos) << err;
    double rate = 0, elapsed = 0;
    char unit[16] = {0};
    ASSERT_EQ(std::sscanf(err.c_str() + at, "18/18 tasks  %lf tasks/%15s", &rate, unit), 2) << err;
    rate /= std::string(unit) == "min" ? 60.0 : std::string(unit) == "h" ? 3600.0 : 1.0;
    const size_t el = err.find("elapsed ", at);
    ASSERT_NE(el, std::string::npos) << err;
    int m = 0;
    double sec = 0;
    if (std::sscanf(err.c_str() + el, "elapsed %dm%lfs", &m, &sec) == 2)
      elapsed = 60.0 * m + sec;
    else
      ASSERT_EQ(std::sscanf(err.c_str() + el, "elapsed %lfs", &elapsed), 1) << err;
    EXPECT_NEAR(rate * elapsed, ran, 0.1 * ran + 0.3) << err.substr(at, 120);
  }

  // Damaged rather than lost (every tensor file of the nominal's models changed in one byte):
  // the same failure, saying which model cannot be read; `retry --task r0001m0` mends it too.
  for (const auto& e : fs::recursive_directory_iterator(dir + "/tasks/r0001m0/models")) {
    if (!e.is_regular_file() || e.path().filename().string().rfind("tensors-", 0) != 0) continue;
    std::fstream t(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    t.seekg(static_cast<std::streamoff>(fs::file_size(e.path()) / 2));
    const char was = static_cast<char>(t.get());
    t.seekp(static_cast<std::streamoff>(fs::file_size(e.path()) / 2));
    t.put(static_cast<char>(was ^ 0x5a));
  }
  f = failure("damaged");
  EXPECT_EQ(f["exit_code"], 66) << f.dump();
  EXPECT_NE(f["reason"].get<std::string>().find("to warm-start from cannot be read ("),
            std::string::npos)
      << f.dump();
  ASSERT_EQ(runFoldfarm({"campaign", "retry", dir, "--task", "r0001m0"}, scratch_, "mended2"), 0)
      << readText(scratch_ + "/mended2.err");
  allDone("mended2-status");
}

// `campaign work` (a Slurm array element) stopped by a signal (scancel, the time limit): the
// task saved its state, so the element says it stopped and exits 75, not "a task failed
// (status 75)" with foldfarm: error.
TEST(CampaignWork, AStoppedTaskIsSaidToHaveStoppedNotFailed) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
  const std::string scratch = makeScratchDir("work-stop");
  const std::string dir = scratch + "/camp";
  const json spec = {{"task", "sleep"}, {"replicas", 1}, {"params", {{"seconds", 60}}}};
  ASSERT_EQ(runFoldfarm({"campaign", "init", writeSpec(scratch, spec, "sleep.json"), "--dir", dir},
                        scratch, "init"),
            0)
      << readText(scratch + "/init.err");
  const pid_t pid = startProgram(FOLDFARM_BINARY, {"campaign", "work", dir, "--task", "r0000m0"},
                                 scratch, "work");
  const std::string log = dir + "/tasks/r0000m0/task.log";
  for (int k = 0; k < 600 && !exists(log); ++k)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  EXPECT_EQ(waitExit(pid), 75) << readText(scratch + "/work.err");
  const std::string err = readText(scratch + "/work.err");
  EXPECT_NE(err.find("a task stopped (a stop signal: its state is saved"), std::string::npos)
      << err;
  EXPECT_EQ(err.find("error"), std::string::npos) << err;
  fs::remove_all(scratch);
}

}  // namespace
}  // namespace foldfarm::jobs
