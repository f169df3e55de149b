// OmniFold chains on small synthetic samples (tiny PET, few events): reproducibility of
// (replica, member), interruption + resume, bad input.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/exit_codes.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/log.hpp"
#include "core/base/process.hpp"
#include "core/base/sha256.hpp"
#include "core/base/stop_signal.hpp"
#include "core/build_info/build_info.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/histogram.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"
#include "core/model/threads.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/jet_batches.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/chain.hpp"
#include "ensembles/chain_output.hpp"
#include "ensembles/chain_task.hpp"
#include "ensembles/rebin.hpp"
#include "ensembles/truth_comparison.hpp"
#include "ensembles/weights.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;
using namespace foldfarm::ensembles;

namespace {

class ChainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    configureThreads(1);
    root_ = fs::temp_directory_path() / ("ff_chain_" + std::to_string(::getpid()));
    fs::create_directories(root_);
    for (auto tune : {data::Tune::kSim, data::Tune::kData})
      data::writeUnfoldFile((root_ / (std::string(data::tuneName(tune)) + ".h5")).string(),
                            sample(tune, 240));
  }
  // `n` events of the tests' simulation (seed 11) or data (seed 12), 24 particle slots: the
  // first n of the suite's files.
  static data::UnfoldArrays sample(data::Tune tune, int64_t n) {
    data::SynthConfig c = data::SynthConfig::unfoldDefaults(tune);
    c.P = 24;
    return data::synthUnfold(c, tune == data::Tune::kSim ? 11 : 12, 0, n);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static nlohmann::json params(int replica, int member) {
    return {{"mc", (root_ / "sim.h5").string()},
            {"data", (root_ / "data.h5").string()},
            {"init", "none"},
            {"replica", replica},
            {"member", member},
            {"campaign_seed", 7},
            {"iterations", 2},
            {"config", {{"epochs", 2}, {"batch_size", 64}, {"lr", 1e-3}, {"preset", "tiny"}}}};
  }
  // Runs the chain and requests a stop once its first step is committed (the stop lands
  // inside a later step); returns the chain's status (75 when it stopped).
  static int runChainStoppedAfterFirstStep(const nlohmann::json& p, const fs::path& out) {
    std::thread stopper([&] {
      for (int i = 0; i < 6000 && !fs::exists(out / "state" / "progress.json"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      requestStop();
    });
    const int rc = runChainTask(p, out.string());
    stopper.join();
    clearStopRequest();
    return rc;
  }
  static std::vector<std::vector<double>> push(const fs::path& dir) {
    return readChainWeights(dir.string()).push;
  }

  static fs::path root_;
};
fs::path ChainTest::root_;

}  // namespace

TEST_F(ChainTest, SameReplicaAndMemberGiveSameWeightsOthersDiffer) {
  ASSERT_EQ(runChainTask(params(1, 0), (root_ / "a").string()), 0);
  // A second later: HDF5 kept its objects' times to the second.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_EQ(runChainTask(params(1, 0), (root_ / "b").string()), 0);
  ASSERT_EQ(runChainTask(params(1, 1), (root_ / "c").string()), 0);
  auto a = push(root_ / "a");
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(a[0].size(), 240u);
  EXPECT_EQ(a, push(root_ / "b"));
  EXPECT_NE(a, push(root_ / "c"));
  // The same values in the same bytes: no modification times in the files' object headers
  // (before: each dataset's own, and the sha256 a campaign records changed with every run).
  for (const char* file : {kChainWeightsFile, kChainHistogramsFile})
    EXPECT_EQ(sha256File((root_ / "a" / file).string()), sha256File((root_ / "b" / file).string()))
        << file;
  // Weights are normalised by their global mean and were not all left at 1.
  double s = 0;
  for (double w : a[1]) s += w;
  EXPECT_NEAR(s / a[1].size(), 1.0, 1e-9);
  EXPECT_GT(*std::max_element(a[1].begin(), a[1].end()), 1.0);
  EXPECT_TRUE(fs::exists(root_ / "a" / kChainHistogramsFile));
  // histograms.h5 keeps the unfolded result of each iteration, the last the final one.
  const ChainHistograms h = readChainHistograms((root_ / "a").string());
  ASSERT_EQ(h.iterations.size(), 2u);
  for (size_t o = 0; o < h.unfolded.size(); ++o)
    EXPECT_EQ(h.iterations[1][o].sumw, h.unfolded[o].sumw) << h.unfolded[o].name;
  EXPECT_TRUE(fs::exists(root_ / "a" / kChainHistoryFile));
  EXPECT_FALSE(fs::exists(root_ / "a" / "state"));
  // Rerunning a finished chain is a no-op that succeeds.
  EXPECT_EQ(runChainTask(params(1, 0), (root_ / "a").string()), 0);
  // result.json records where PET trained (this process's device: auto, here the CPU
  // without a GPU); the device is not part of the chain's identity, so the same chain asked
  // for on the CPU explicitly is the same, complete chain.
  const auto result = nlohmann::json::parse(readFile((root_ / "a" / kChainResultFile).string()));
  EXPECT_EQ(result.at("device").at("requested"), "auto");
  EXPECT_FALSE(result.at("device").at("device").get<std::string>().empty());
  EXPECT_FALSE(result.at("device").at("reason").get<std::string>().empty());
  // ... and which version of each input it read (aggregate compares them).
  for (const char* k : {"mc", "data"}) {
    const std::string path = result.at(k).get<std::string>();
    EXPECT_EQ(result.at("inputs").at(k).at("size").get<int64_t>(),
              static_cast<int64_t>(fs::file_size(path)))
        << k;
    EXPECT_GT(result.at("inputs").at(k).at("mtime_ns").get<int64_t>(), 0) << k;
  }
  nlohmann::json on_cpu = params(1, 0);
  on_cpu["config"]["device"] = "cpu";
  EXPECT_EQ(runChainTask(on_cpu, (root_ / "a").string()), 0);
  on_cpu["config"]["device"] = "tpu";
  EXPECT_EQ(runChainTask(on_cpu, (root_ / "bad_device").string()), 2) << "an unknown device";
  EXPECT_FALSE(fs::exists(root_ / "bad_device" / kChainResultFile));
}

// Data written with more particle slots than the simulation unfolds exactly as with the same
// slots (the simulation's reco jets are padded; PET is padding invariant), with PET and with
// the observable MLP (before: refused, "write both with the same P").
TEST_F(ChainTest, DataWithMoreParticleSlotsUnfoldsAsWithTheSame) {
  data::SynthConfig c = data::SynthConfig::unfoldDefaults(data::Tune::kData);
  c.P = 24;
  data::UnfoldArrays wide = data::synthUnfold(c, 12, 0, 240);
  wide.reco = wide.reco.widened(40);
  wide.gen = wide.gen.widened(40);
  data::writeUnfoldFile((root_ / "data_p40.h5").string(), wide);
  for (const char* classifier : {"pet", "mlp"}) {
    nlohmann::json same = params(3, 0), more = params(3, 0);
    same["config"]["classifier"] = more["config"]["classifier"] = classifier;
    same["iterations"] = more["iterations"] = 1;
    more["data"] = (root_ / "data_p40.h5").string();
    const fs::path a = root_ / (std::string("slots24_") + classifier);
    const fs::path b = root_ / (std::string("slots40_") + classifier);
    ASSERT_EQ(runChainTask(same, a.string()), 0) << classifier;
    ASSERT_EQ(runChainTask(more, b.string()), 0) << classifier;
    const auto pa = push(a), pb = push(b);
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t k = 0; k < pa.size(); ++k) {
      ASSERT_EQ(pa[k].size(), pb[k].size());
      for (size_t i = 0; i < pa[k].size(); ++i)
        ASSERT_NEAR(pa[k][i], pb[k][i], 1e-5 * std::max(1.0, std::abs(pa[k][i])))
            << classifier << " iteration " << k << " event " << i;
    }
  }
}

// Experimental data holds its detector level only: a data file without `gen` unfolds
// exactly as the same events with their particle level (which a chain never reads), with PET
// and with the observable MLP. A simulation of one level is refused before anything is
// written, naming the file.
TEST_F(ChainTest, DataOfTheRecoLevelOnlyUnfoldsAsTheSameEventsWithBothLevels) {
  data::UnfoldArrays reco_only = data::readUnfoldFile((root_ / "data.h5").string());
  reco_only.gen = data::JetArrays{};
  reco_only.gen_subs.clear();
  reco_only.pass_gen.clear();
  data::writeUnfoldFile((root_ / "data_reco_only.h5").string(), reco_only);
  ASSERT_FALSE(data::JetFile((root_ / "data_reco_only.h5").string()).hasLevel("gen"));
  for (const char* classifier : {"pet", "mlp"}) {
    nlohmann::json both = params(2, 0), reco = params(2, 0);
    both["config"]["classifier"] = reco["config"]["classifier"] = classifier;
    both["iterations"] = reco["iterations"] = 1;
    reco["data"] = (root_ / "data_reco_only.h5").string();
    const fs::path a = root_ / (std::string("levels_both_") + classifier);
    const fs::path b = root_ / (std::string("levels_reco_") + classifier);
    ASSERT_EQ(runChainTask(both, a.string()), 0) << classifier;
    ASSERT_EQ(runChainTask(reco, b.string()), 0) << classifier;
    EXPECT_EQ(push(a), push(b)) << classifier;
    EXPECT_EQ(readChainWeights(a.string()).final, readChainWeights(b.string()).final);
  }
  // The simulation needs both levels: as the MC, the reco-only file is refused by name.
  nlohmann::json bad = params(2, 0);
  bad["mc"] = (root_ / "data_reco_only.h5").string();
  const fs::path out = root_ / "mc_reco_only";
  ASSERT_EQ(runChainTask(bad, out.string()), 2);
  EXPECT_FALSE(fs::exists(out / kChainResultFile));
  EXPECT_FALSE(fs::exists(out / "state")) << "refused before anything is written";
}

// The chain config's iteration_weights false: weights.h5 keeps `final` alone, the same
// weights as a chain that keeps every iteration's, and the same histograms. It is not part of
// the chain's identity (what is kept, not what is computed): a chain stopped while it kept
// them resumes without, and its state held every row it needed.
TEST_F(ChainTest, IterationWeightsFalseKeepsTheSameFinalWeightsAlone) {
  const fs::path all = root_ / "iteration_weights_all", lean = root_ / "iteration_weights_lean";
  ASSERT_EQ(runChainTask(params(1, 0), all.string()), 0);
  ASSERT_EQ(runChainStoppedAfterFirstStep(params(1, 0), lean), 75);
  nlohmann::json p = params(1, 0);
  p["config"]["iteration_weights"] = false;
  ASSERT_EQ(runChainTask(p, lean.string()), 0);
  const ChainWeights whole = readChainWeights(all.string());
  ASSERT_EQ(whole.push.size(), 2u);
  ASSERT_EQ(whole.pull.size(), 2u);
  EXPECT_EQ(readChainFinalWeights(lean.string()), whole.final);
  EXPECT_EQ(chainFinalWeightsRows(lean.string()), whole.final.size());
  try {
    (void)readChainWeights(lean.string());
    ADD_FAILURE() << "weights.h5 kept the iterations' weights";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'push'"), std::string::npos) << e.what();
  }
  const ChainHistograms a = readChainHistograms(all.string());
  const ChainHistograms b = readChainHistograms(lean.string());
  ASSERT_EQ(a.unfolded.size(), b.unfolded.size());
  for (size_t i = 0; i < a.unfolded.size(); ++i)
    EXPECT_EQ(a.unfolded[i].sumw, b.unfolded[i].sumw) << a.unfolded[i].name;
  // The four rows of the two iterations' push and pull weights, of 8 B per event, are gone.
  EXPECT_GE(fs::file_size(all / kChainWeightsFile) - fs::file_size(lean / kChainWeightsFile),
            4 * 8 * whole.final.size());
  // A config that says something else than true or false is refused by name.
  p["config"]["iteration_weights"] = "final";
  EXPECT_EQ(runChainTask(p, (root_ / "iteration_weights_bad").string()), 2);
}

TEST_F(ChainTest, InterruptedAndResumedChainEndsWithIdenticalWeights) {
  const fs::path ref = root_ / "ref", cut = root_ / "cut";
  ASSERT_EQ(runChainTask(params(2, 0), ref.string()), 0);
  int rc = runChainStoppedAfterFirstStep(params(2, 0), cut);
  ASSERT_EQ(rc, 75);
  EXPECT_FALSE(fs::exists(cut / kChainResultFile));
  EXPECT_TRUE(fs::exists(cut / "state" / "progress.json"));
  // Rerun with another parameter: refused naming it and both values, the state kept.
  nlohmann::json other = params(2, 0);
  other["iterations"] = 3;
  try {
    runChainTaskOrThrow(other, cut.string());
    ADD_FAILURE() << "resumed a chain of other parameters";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("with different parameters ('iterations' 2, now 3)"),
              std::string::npos)
        << e.what();
  }
  // The steps done so far ran under this build (state/progress.json); say another one (a rebuild
  // between the stop and the resume): the resume goes on, and records both.
  const std::string progress = (cut / "state" / "progress.json").string();
  nlohmann::json state = readJson(progress);
  ASSERT_EQ(state.at("builds"), nlohmann::json::array({buildInfoJson()}));
  nlohmann::json other_build = buildInfoJson();
  other_build["commit"] = "0123abc";
  state["builds"] = {other_build};
  writeJsonAtomic(progress, state);
  ASSERT_EQ(runChainTask(params(2, 0), cut.string()), 0);
  EXPECT_EQ(push(ref), push(cut));
  EXPECT_EQ(readChainWeights(ref.string()).pull, readChainWeights(cut.string()).pull);
  // result.json: the build that finished the chain, and the other that ran its first steps.
  const nlohmann::json resumed = readJson((cut / kChainResultFile).string());
  EXPECT_EQ(resumed.at("build"), buildInfoJson());
  EXPECT_EQ(resumed.at("earlier_builds"), nlohmann::json::array({other_build}));
  const nlohmann::json whole = readJson((ref / kChainResultFile).string());
  EXPECT_EQ(whole.at("build"), buildInfoJson());
  EXPECT_FALSE(whole.contains("earlier_builds")) << "one build ran it all";
  // A finished chain run again with another parameter: named too (before: "different
  // parameters" alone).
  nlohmann::json replica = params(2, 0);
  replica["replica"] = 5;
  try {
    runChainTaskOrThrow(replica, ref.string());
    ADD_FAILURE() << "took a finished chain of other parameters";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a chain with different parameters "
                                         "('replica' 2, now 5); use another output directory"),
              std::string::npos)
        << e.what();
  }
}

// A chain stopped under an older build, whose steps were computed otherwise (kChainFormat),
// given to this one after a module update: refused in one line naming the state, the formats and
// what to do, the state kept as it was (before: "training state was written for different
// training data" for a step stopped midway, or the chain went on, its finished steps the older
// build's); as a campaign's task, with the `campaign retry` that starts it over. A state without
// chain_format whose steps record their class balance (builds of format 2 before the record)
// resumes as before.
TEST_F(ChainTest, AStateOfAnotherChainFormatIsRefusedAndKept) {
  const fs::path ref = root_ / "format_ref", cut = root_ / "format_cut";
  ASSERT_EQ(runChainTask(params(4, 0), ref.string()), 0);
  ASSERT_EQ(runChainStoppedAfterFirstStep(params(4, 0), cut), 75);
  const std::string progress = (cut / "state" / "progress.json").string();
  const std::string inputs = (cut / "state" / "inputs.json").string();
  const nlohmann::json state = readJson(progress), in = readJson(inputs);
  ASSERT_EQ(state.at("chain_format"), kChainFormat);
  ASSERT_EQ(in.at("chain_format"), kChainFormat);
  ASSERT_FALSE(state.at("history").empty());
  // An older build's: no chain_format, no builds, steps without their class balance.
  nlohmann::json older = state, older_in = in;
  older.erase("chain_format");
  older.erase("builds");
  for (nlohmann::json& step : older.at("history")) step.erase("class_balance");
  older_in.erase("chain_format");
  writeJsonAtomic(progress, older);
  writeJsonAtomic(inputs, older_in);
  const std::string before = readJson(progress).dump();
  std::string why;
  try {
    runChainTaskOrThrow(params(4, 0), cut.string());
  } catch (const InputError& e) {
    why = e.what();
  }
  EXPECT_NE(why.find((cut / "state").string() +
                     ": a chain stopped under a foldfarm build that computes its steps otherwise "
                     "(chain format 1"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("this build: chain format " + std::to_string(kChainFormat)), std::string::npos)
      << why;
  EXPECT_NE(why.find("remove " + (cut / "state").string()), std::string::npos) << why;
  EXPECT_EQ(why.find('\n'), std::string::npos) << why;
  EXPECT_EQ(readJson(progress).dump(), before);
  EXPECT_FALSE(fs::exists(cut / kChainResultFile));
  // As a campaign's task (D/tasks/ID): exit 2, the retry that starts it over named.
  std::string reason;
  EXPECT_EQ(runChainTask(params(4, 0), cut.string(), &reason, /*campaign_task=*/true),
            kExitBadInput);
  EXPECT_NE(reason.find("; in this campaign: `foldfarm campaign retry " +
                        root_.parent_path().string() + " --task format_cut`"),
            std::string::npos)
      << reason;
  EXPECT_EQ(readJson(progress).dump(), before);
  // Class balances recorded, no chain_format nor builds: format 2, resumed to the
  // uninterrupted chain's weights.
  nlohmann::json balanced = state;
  balanced.erase("chain_format");
  balanced.erase("builds");
  writeJsonAtomic(progress, balanced);
  ASSERT_EQ(runChainTask(params(4, 0), cut.string()), 0);
  EXPECT_EQ(push(ref), push(cut));
  EXPECT_EQ(readJson((cut / kChainResultFile).string()).at("chain_format"), kChainFormat);
}

// A chain resumed on an MC regenerated since it started is refused, its state kept. The same
// bytes copied back (a new modification time) are refused too, with the command that gives
// the file its time back; run, the chain resumes and ends as the uninterrupted one.
TEST_F(ChainTest, ResumeOnInputsThatChangedIsRefusedAndTheStateIsKept) {
  const fs::path dir = root_ / "fingerprint", cut = dir / "cut";
  fs::create_directories(dir);
  fs::copy_file(root_ / "sim.h5", dir / "sim.h5");
  nlohmann::json p = params(3, 0);
  p["mc"] = (dir / "sim.h5").string();
  int rc = runChainStoppedAfterFirstStep(p, cut);
  ASSERT_EQ(rc, 75);
  auto read = [](const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string sim_bytes = read(dir / "sim.h5");
  // The simulation is regenerated (another seed) between the interruption and the resume.
  data::SynthConfig c = data::SynthConfig::unfoldDefaults(data::Tune::kSim);
  c.P = 24;
  data::writeUnfoldFile((dir / "sim.new.h5").string(), data::synthUnfold(c, 99, 0, 240));
  fs::rename(dir / "sim.new.h5", dir / "sim.h5");
  const std::string before = read(cut / "state" / "progress.json");
  EXPECT_EQ(runChainTask(p, cut.string()), 2) << "a chain resumed on changed inputs";
  EXPECT_EQ(read(cut / "state" / "progress.json"), before);
  EXPECT_FALSE(fs::exists(cut / kChainResultFile));

  // The old bytes written again: the same size, a later time.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  { std::ofstream(dir / "sim.h5", std::ios::binary | std::ios::trunc) << sim_bytes; }
  std::string message;
  try {
    runChainTaskOrThrow(p, cut.string());
  } catch (const InputError& e) {
    message = e.what();
  }
  const auto at = message.find("`touch -d @");
  ASSERT_NE(at, std::string::npos) << message;
  const std::string command = message.substr(at + 1, message.find('`', at + 1) - at - 1);
  ASSERT_TRUE(runProcess({"sh", "-c", command}).ok()) << command;
  ASSERT_EQ(runChainTask(p, cut.string()), 0) << "resumed once the time is restored";
  const fs::path ref = dir / "ref";
  ASSERT_EQ(runChainTask(p, ref.string()), 0);
  EXPECT_EQ(push(ref), push(cut));
}

TEST_F(ChainTest, BadInputReturnsTwoAndWritesNothing) {
  auto p = params(0, 0);
  p["mc"] = (root_ / "missing.h5").string();
  EXPECT_EQ(runChainTask(p, (root_ / "bad").string()), 2);
  EXPECT_FALSE(fs::exists(root_ / "bad"));
  p = params(0, 0);
  p["config"]["epochs"] = 0;
  EXPECT_EQ(runChainTask(p, (root_ / "bad").string()), 2);
  p = params(0, 0);
  p.erase("replica");
  EXPECT_EQ(runChainTask(p, (root_ / "bad").string()), 2);
  EXPECT_FALSE(fs::exists(root_ / "bad"));
}

// Selection flags that pass no event are refused naming the file and the flags (before: one
// message naming both files, whichever held them).
TEST_F(ChainTest, FlagsThatPassNoEventAreRefusedNamingTheFileAndTheFlags) {
  struct Case {
    const char* file;
    bool sim;
    const char* flags;
  };
  for (const Case& c :
       {Case{"sim_no_gen.h5", true, "pass_gen"}, Case{"sim_no_reco.h5", true, "pass_reco"},
        Case{"data_no_reco.h5", false, "pass_reco"}}) {
    data::SynthConfig sc =
        data::SynthConfig::unfoldDefaults(c.sim ? data::Tune::kSim : data::Tune::kData);
    sc.P = 24;
    data::UnfoldArrays u = data::synthUnfold(sc, c.sim ? 11 : 12, 0, 240);
    u.pass_reco.assign(240, 1);
    u.pass_gen.assign(240, 1);
    (std::string(c.flags) == "pass_gen" ? u.pass_gen : u.pass_reco).assign(240, 0);
    const std::string path = (root_ / c.file).string();
    data::writeUnfoldFile(path, u);
    auto p = params(0, 0);
    p[c.sim ? "mc" : "data"] = path;
    std::string reason;
    EXPECT_EQ(runChainTask(p, (root_ / "none_pass").string(), &reason), 2) << c.file;
    EXPECT_NE(reason.find(path + ": no event passes '" + c.flags + "' (0 of 240)"),
              std::string::npos)
        << reason;
    EXPECT_FALSE(fs::exists(root_ / "none_pass" / "state")) << c.file;
  }
  // Events that pass only beyond the config's cap: the cap is named, not the file's flags.
  data::SynthConfig sc = data::SynthConfig::unfoldDefaults(data::Tune::kSim);
  sc.P = 24;
  data::UnfoldArrays late = data::synthUnfold(sc, 11, 0, 240);
  late.pass_reco.assign(240, 1);
  late.pass_gen.assign(240, 1);
  std::fill(late.pass_gen.begin(), late.pass_gen.begin() + 120, uint8_t{0});
  data::writeUnfoldFile((root_ / "sim_late_gen.h5").string(), late);
  auto p = params(0, 0);
  p["mc"] = (root_ / "sim_late_gen.h5").string();
  p["config"]["max_mc_events"] = 100;
  std::string reason;
  EXPECT_EQ(runChainTask(p, (root_ / "none_pass").string(), &reason), 2);
  EXPECT_NE(reason.find("sim_late_gen.h5: no event passes 'pass_gen' in the first 100 that the "
                        "chain config's max_mc_events reads: a chain needs selected events; "
                        "raise max_mc_events"),
            std::string::npos)
      << reason;
}

// Files of a few events cannot hold out a validation set: refused saying how many events and
// what fraction, and what to do.
TEST_F(ChainTest, TooFewEventsToHoldOutAValidationSetAreRefusedSayingSo) {
  for (auto tune : {data::Tune::kSim, data::Tune::kData})
    data::writeUnfoldFile((root_ / (std::string(data::tuneName(tune)) + "_3.h5")).string(),
                          sample(tune, 3));
  auto p = params(0, 0);
  p["mc"] = (root_ / "sim_3.h5").string();
  p["data"] = (root_ / "data_3.h5").string();
  p["config"]["classifier"] = "mlp";
  std::string reason;
  EXPECT_EQ(runChainTask(p, (root_ / "three").string(), &reason), 2);
  EXPECT_NE(reason.find("events are too few to hold out a validation fraction of 0.1 (it would "
                        "leave no training or no validation event); use more events"),
            std::string::npos)
      << reason;
  // The refused run trained nothing: the same --out with enough events runs (it was refused
  // as "this chain started on sim_3.h5 …, which has changed", naming the new file with the
  // old size).
  p = params(0, 0);
  p["config"]["classifier"] = "mlp";
  EXPECT_EQ(runChainTask(p, (root_ / "three").string(), &reason), 0) << reason;
}

// A bootstrap replica whose draw leaves the data no weight is refused, naming the replica and
// the seed, with exit 2 (a campaign does not retry it: the draw repeats); it failed in the
// first step as "the chain diverged", exit 1, retried in vain.
TEST_F(ChainTest, ABootstrapDrawThatLeavesTheDataNoEventIsRefusedNamingTheReplica) {
  data::UnfoldArrays two = sample(data::Tune::kData, 2);
  two.pass_reco.assign(2, 1);
  data::writeUnfoldFile((root_ / "data_2.h5").string(), two);
  int replica = 1;
  for (; replica < 1000; ++replica) {
    const std::vector<double> w = bootstrapWeights(2, 7, replica);
    if (w[0] == 0 && w[1] == 0) break;
  }
  ASSERT_LT(replica, 1000);
  auto p = params(replica, 0);
  p["data"] = (root_ / "data_2.h5").string();
  p["config"]["classifier"] = "mlp";
  std::string reason;
  EXPECT_EQ(runChainTask(p, (root_ / "draw_empty").string(), &reason), 2);
  EXPECT_NE(reason.find("data_2.h5: bootstrap replica " + std::to_string(replica) +
                        " (campaign seed 7) draws each of the 2 events passing 'pass_reco' "
                        "Poisson(1) times and leaves them a total weight of 0 (2 drawn 0 times)"),
            std::string::npos)
      << reason;
  EXPECT_NE(reason.find("the same draw repeats on every attempt"), std::string::npos) << reason;
  EXPECT_FALSE(fs::exists(root_ / "draw_empty" / kChainResultFile));
}

// A sample that a handful of weights carry is said before the chain trains on it: data whose
// one huge weight leaves 2 effective events of 400 (naming the file, its events and the
// effective count, and to check the file's weights), and data of 10 events (their count). A
// sample of many effective events is not said.
TEST_F(ChainTest, ASampleOfFewEffectiveEventsIsSaid) {
  foldfarm::initLogging("info");
  data::UnfoldArrays heavy = sample(data::Tune::kData, 400);
  heavy.pass_reco.assign(400, 1);
  heavy.weights.assign(400, 1.0f);
  heavy.weights[17] = 1000.0f;
  data::writeUnfoldFile((root_ / "data_heavy.h5").string(), heavy);
  data::UnfoldArrays ten = sample(data::Tune::kData, 10);
  ten.pass_reco.assign(10, 1);
  data::writeUnfoldFile((root_ / "data_10.h5").string(), ten);
  const auto said = [&](const std::string& data, const std::string& out) {
    auto p = params(0, 0);
    p["data"] = (root_ / data).string();
    p["iterations"] = 1;
    p["config"]["classifier"] = "mlp";
    std::string reason;
    ::testing::internal::CaptureStderr();
    const int code = runChainTask(p, (root_ / out).string(), &reason);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(code, 0) << reason << err;
    return err;
  };
  const std::string heavy_err = said("data_heavy.h5", "few_heavy");
  EXPECT_NE(heavy_err.find("data_heavy.h5: the 400 events passing 'pass_reco' weigh as 2.0 "
                           "effective events ((Σw)²/Σw²): the unfolding rests on these few; "
                           "check the file's weights"),
            std::string::npos)
      << heavy_err;
  const std::string ten_err = said("data_10.h5", "few_ten");
  EXPECT_NE(ten_err.find("data_10.h5: 10 event(s) pass 'pass_reco': the unfolding rests on "
                         "these few"),
            std::string::npos)
      << ten_err;
  EXPECT_EQ(said("data.h5", "few_none").find("the unfolding rests on these few"),
            std::string::npos);
}

// PET's training sets are cut from jets standardised once (labelledSet): the very tensors
// that standardising step1TrainingSet's arrays gives, so chains train on the same numbers.
TEST_F(ChainTest, StepSetsCutFromStandardisedJetsEqualStandardisedStepArrays) {
  data::JetFile fm((root_ / "sim.h5").string()), fd((root_ / "data.h5").string());
  const data::UnfoldArrays mc = fm.readUnfold(), dat = fd.readUnfold();
  const data::FeatureStats stats = data::FeatureStats::zJets();
  std::vector<int64_t> mc_rows, data_rows;
  for (int64_t i = 0; i < mc.n(); ++i)
    if (mc.passReco(i)) mc_rows.push_back(i);
  for (int64_t i = 0; i < dat.n(); ++i)
    if (dat.passReco(i)) data_rows.push_back(i);
  ASSERT_LT(mc_rows.size(), static_cast<size_t>(mc.n()));  // the selection drops some
  std::vector<double> w_mc(static_cast<size_t>(mc.n())), w_data(static_cast<size_t>(dat.n()));
  for (size_t i = 0; i < w_mc.size(); ++i) w_mc[i] = 0.5 + 0.01 * static_cast<double>(i % 77);
  for (size_t i = 0; i < w_data.size(); ++i) w_data[i] = 1.0 + 0.003 * static_cast<double>(i);
  const JetTensors expected =
      JetTensors::fromArrays(step1TrainingSet(mc, dat, w_mc, w_data), stats);
  const auto mc_reco = placeStandardised(mc.reco, stats, torch::kCPU);
  const auto data_reco = placeStandardised(dat.reco, stats, torch::kCPU);
  const JetTensors cut =
      labelledSet({{mc_reco.get(), &mc_rows, 0, &w_mc}, {data_reco.get(), &data_rows, 1, &w_data}});
  EXPECT_TRUE(torch::equal(cut.particles, expected.particles));
  EXPECT_TRUE(torch::equal(cut.mask, expected.mask));
  EXPECT_TRUE(torch::equal(cut.jets, expected.jets));
  EXPECT_TRUE(torch::equal(cut.labels, expected.labels));
  EXPECT_TRUE(torch::equal(cut.weights, expected.weights));
  EXPECT_EQ(cut.extent, expected.extent);
}

// A persistent worker standardises PET's inputs once: a second chain on the same files
// reuses them (and ends as a chain in a fresh process does: SameReplicaAndMember... ).
TEST_F(ChainTest, AWorkerStandardisesTheInputsOnceForAllItsChains) {
  clearChainTaskCache();
  EXPECT_EQ(chainTaskCachedSets(), 0u);
  ASSERT_EQ(runChainTask(params(3, 0), (root_ / "cache_a").string()), 0);
  EXPECT_EQ(chainTaskCachedSets(), 3u);  // mc.reco, mc.gen, data.reco
  ASSERT_EQ(runChainTask(params(4, 0), (root_ / "cache_b").string()), 0);
  EXPECT_EQ(chainTaskCachedSets(), 3u);
  // The same chain again in a "fresh process" (caches dropped) gives the same weights.
  clearChainTaskCache();
  ASSERT_EQ(runChainTask(params(4, 0), (root_ / "cache_c").string()), 0);
  EXPECT_EQ(push(root_ / "cache_b"), push(root_ / "cache_c"));
}

// A worker that meets a new MC file with every chain (one per detector variation) keeps the
// latest few, not all of them, and keeps the data sample that every chain uses: after four
// chains on four MC files, 4 files (of 5) and 6 standardised sets (of 9), the data's among
// them. (Before: every file stayed, and the standardised sets were all dropped when a 7th
// came, the data's with them: 5 files and 4 sets.)
TEST_F(ChainTest, AWorkerKeepsTheLatestInputsAndTheDataEveryChainUses) {
  clearChainTaskCache();
  for (int k = 0; k < 4; ++k) {
    const fs::path mc = root_ / ("sim_variation_" + std::to_string(k) + ".h5");
    fs::copy_file(root_ / "sim.h5", mc, fs::copy_options::overwrite_existing);
    nlohmann::json p = params(0, 0);
    p["mc"] = mc.string();
    p["iterations"] = 1;
    ASSERT_EQ(runChainTask(p, (root_ / ("rotating_" + std::to_string(k))).string()), 0) << k;
    EXPECT_LE(chainTaskCachedDatasets(), 4u) << k;
    EXPECT_LE(chainTaskCachedSets(), 6u) << k;
  }
  EXPECT_EQ(chainTaskCachedDatasets(), 4u);
  EXPECT_EQ(chainTaskCachedSets(), 6u);
  clearChainTaskCache();
}

// CUDA graphs in a chain config: they imply fixed shapes and are part of the identity (a
// graph's steps draw over the whole padded shape); off, the record is as before.
TEST_F(ChainTest, CudaGraphsImplyFixedShapesAndEnterTheIdentity) {
  const ChainConfig plain = chainConfigFromJson({{"preset", "tiny"}}, "test");
  EXPECT_FALSE(plain.cuda_graphs);
  EXPECT_FALSE(chainConfigToJson(plain).contains("cuda_graphs"));
  const ChainConfig graphs =
      chainConfigFromJson({{"preset", "tiny"}, {"cuda_graphs", true}}, "test");
  EXPECT_TRUE(graphs.cuda_graphs);
  EXPECT_TRUE(graphs.fixed_shapes);
  const nlohmann::json j = chainConfigToJson(graphs);
  EXPECT_EQ(j.at("cuda_graphs"), true);
  EXPECT_EQ(j.at("fixed_shapes"), true);
  EXPECT_TRUE(chainConfigFromJson(j, "round trip").cuda_graphs);
  EXPECT_THROW(chainConfigFromJson({{"cuda_graphs", "yes"}}, "test"), InputError);
  // Asked for on the CPU, the chain stops with exit 2 and writes nothing.
  auto p = params(0, 0);
  p["config"]["device"] = "cpu";
  p["config"]["cuda_graphs"] = true;
  EXPECT_EQ(runChainTask(p, (root_ / "graphs").string()), 2);
  EXPECT_FALSE(fs::exists(root_ / "graphs"));
}

// bf16 PET steps on the CPU: the chain stops with exit 2 before it writes anything (it once
// fitted the first MLP and wrote its state first). An MLP chain trains in fp32 and runs.
TEST_F(ChainTest, Bf16OnTheCpuIsRefusedBeforeAnythingIsWritten) {
  auto p = params(0, 0);
  p["config"]["device"] = "cpu";
  p["config"]["precision"] = "bf16";
  EXPECT_EQ(runChainTask(p, (root_ / "bf16").string()), 2);
  EXPECT_FALSE(fs::exists(root_ / "bf16"));
  p["config"]["classifier"] = "mlp";
  EXPECT_EQ(runChainTask(p, (root_ / "bf16_mlp").string()), 0);
  EXPECT_TRUE(fs::exists(root_ / "bf16_mlp" / kChainResultFile));
}

// A chain config that no step could train with is refused when it is read (at `campaign
// init`, or before `unfold` writes anything), naming the key.
TEST_F(ChainTest, ConfigsNoStepCouldTrainWithAreRefusedWhenRead) {
  for (const auto& [bad, key] : std::vector<std::pair<nlohmann::json, std::string>>{
           {{{"lr", -1.0}}, "lr"},
           // Beyond a float (was "internal error: value cannot be converted to type float").
           {{{"lr", 1e308}}, "lr must be in (0, 1], not 1e+308"},
           {{{"lr_factor", 0.0}}, "lr_factor"},
           // Truncated to 2 and wrapped to 1 by nlohmann's get<int>() before.
           {{{"epochs", 2.5}}, "'epochs' must be an integer, got 2.5"},
           {{{"epochs", 4294967297LL}}, "'epochs' = 4294967297 is beyond the 32-bit"},
           {{{"mlp", {{"hidden", {64, 1.5}}}}}, "cfg: 'mlp.hidden'[1] must be an integer"},
           // Found only when a campaign's tasks ran, before.
           {{{"model", {{"dim", "wide"}}}}, "'model': PET config key 'dim' must be an integer"},
           {{{"model", 5}}, "'model' must be an object"},
           {{{"preset", "gigantic"}}, "'preset': unknown PET preset 'gigantic'"},
           {{{"lr_factor", 1e-320}}, "lr_factor must be in [0.001, 1000]"},
           {{{"weight_decay", -1e-5}}, "weight_decay"},
           // Would zero or flip every weight each step (accepted before; the run then
           // diverged).
           {{{"lr", 0.01}, {"weight_decay", 100.0}},
            "weight_decay 100 at the peak learning rate 0.01"},
           {{{"mlp", {{"weight_decay", 1e308}}}}, "mlp: weight_decay 1e+308"},
           {{{"optimizer", "sgd"}}, "optimizer"},
           {{{"val_fraction", 1.2}}, "val_fraction"},
           {{{"mlp", {{"lr", 0.0}}}}, "mlp: lr must be in (0, 1], not 0"},
           {{{"mlp", {{"lr", 50.0}}}}, "mlp: lr must be in (0, 1], not 50"},
           {{{"mlp", {{"hidden", {1000000000}}}}}, "mlp: hidden layers of 8e+09 parameters"},
           // Each named with its value (before: one line for four keys, naming none).
           {{{"mlp", {{"epochs", -1}}}}, "'mlp.epochs' must be >= 1 (got -1)"},
           {{{"mlp", {{"hidden", nlohmann::json::array()}}}}, "'mlp.hidden' must list"},
           {{{"patience", -2}}, "'patience' must be >= 0 (got -2)"},
           {{{"batch_size", 0}}, "'batch_size' must be >= 1 (got 0)"},
           // Read as "every event" before.
           {{{"max_mc_events", -1}}, "'max_mc_events' must be >= 0 (0: every event) (got -1)"},
           {{{"max_data_events", -5}}, "'max_data_events' must be >= 0"},
           // Overwritten without a word before: a chain trains one logit, no generator.
           {{{"model", {{"num_classes", 3}}}}, "'model.num_classes' is not a config's to set"},
           {{{"model", {{"generator", true}}}}, "'model.generator' is not a config's to set"}}) {
    try {
      chainConfigFromJson(bad, "cfg");
      ADD_FAILURE() << bad.dump() << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("cfg: ", 0), 0u) << e.what();
    }
  }
  EXPECT_NO_THROW(
      chainConfigFromJson({{"lr", 1e-4}, {"lr_factor", 5}, {"optimizer", "adamw"}}, "cfg"));
}

// Keys the classifier never reads are said once per process (a campaign reads the config for
// every task): PET's training keys with classifier mlp (before: "epochs": 2 trained the MLP
// for its own 60 epochs, silently), the MLP's with classifier pet. pet+mlp reads both.
TEST(ChainConfigKeys, KeysTheClassifierDoesNotReadAreSaidOnce) {
  foldfarm::initLogging("info");  // to stderr, as the commands log
  const auto said = [](const nlohmann::json& j, const std::string& source) {
    ::testing::internal::CaptureStderr();
    for (int k = 0; k < 3; ++k) chainConfigFromJson(j, source);
    return ::testing::internal::GetCapturedStderr();
  };
  const std::string mlp =
      said({{"classifier", "mlp"}, {"epochs", 2}, {"lr", 1e-4}, {"mlp", {{"epochs", 3}}}}, "a");
  EXPECT_NE(mlp.find("a: 'epochs', 'lr' are not used by classifier 'mlp' (they set PET's "
                     "training; the MLP's are 'mlp'"),
            std::string::npos)
      << mlp;
  EXPECT_EQ(mlp.find("not used"), mlp.rfind("not used")) << "said once: " << mlp;
  // The same keys from another source (`unfold`: its --config file, then the chain's
  // parameters holding it): not said again (before: said twice, once per source).
  EXPECT_EQ(said({{"classifier", "mlp"}, {"epochs", 2}, {"lr", 1e-4}, {"mlp", {{"epochs", 3}}}},
                 "chain.config"),
            "");
  const std::string pet = said({{"classifier", "pet"}, {"mlp", {{"epochs", 3}}}}, "b");
  EXPECT_NE(pet.find("b: 'mlp' is not used by classifier 'pet'"), std::string::npos) << pet;
  EXPECT_EQ(said({{"classifier", "pet+mlp"}, {"epochs", 2}, {"mlp", {{"epochs", 3}}}}, "c"), "");
  EXPECT_EQ(said({{"classifier", "mlp"}, {"val_fraction", 0.2}, {"max_weight", 20}}, "d"), "");
}

// Size overrides with a foundation would be ignored (the checkpoint fixes the model): refused
// when the chain's parameters are read (at `campaign init`, or before `unfold` reads data).
TEST(ChainSpec, ModelOverridesWithAFoundationAreRefused) {
  nlohmann::json p = {{"mc", "mc.h5"},        {"data", "data.h5"},
                      {"init", "foundation"}, {"replica", 0},
                      {"member", 0},          {"campaign_seed", 1},
                      {"iterations", 1},      {"config", {{"model", {{"dim", 16}}}}}};
  try {
    chainSpecFromJson(p);
    ADD_FAILURE() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("the foundation foundation fixes the model"),
              std::string::npos)
        << e.what();
  }
  p["init"] = "none";
  EXPECT_EQ(chainSpecFromJson(p).config.model, (nlohmann::json{{"dim", 16}}));
  p["init"] = "foundation";
  p["config"] = {{"preset", "tiny"}};
  EXPECT_NO_THROW(chainSpecFromJson(p));
}

// A chain config's "preset" beside a foundation must name the foundation's preset (the
// foundation fixes the model; before, another preset was ignored without a word). Checked
// at campaign init from the foundation's meta.json, and when the chain starts.
TEST(ChainSpec, APresetBesideAFoundationMustBeTheFoundations) {
  const fs::path dir = fs::temp_directory_path() / ("ff_preset_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  CheckpointMeta meta;
  meta.config = petPreset("tiny");
  writeCheckpoint((dir / "found" / "model").string(), meta, {});
  nlohmann::json p = {{"mc", "mc.h5"},
                      {"data", "data.h5"},
                      {"init", (dir / "found").string()},
                      {"replica", 0},
                      {"member", 0},
                      {"campaign_seed", 1},
                      {"iterations", 1},
                      {"config", {{"preset", "omnilearn"}}}};
  try {
    checkChainTaskParams(p);
    ADD_FAILURE() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'preset' \"omnilearn\" is not the foundation's (" +
                                         (dir / "found").string() + " was pretrained as \"tiny\")"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(refusePresetBesideFoundation(p, "tiny"), InputError);
  p["config"] = {{"preset", "tiny"}};
  EXPECT_NO_THROW(checkChainTaskParams(p));
  p["config"] = {{"epochs", 2}};  // no preset: the foundation's model
  EXPECT_NO_THROW(checkChainTaskParams(p));
  // The foundation pretrained again, as omnilearn: read again, not the first preset cached.
  meta.config = petPreset("omnilearn");
  writeCheckpoint((dir / "found" / "model").string(), meta, {});
  p["config"] = {{"preset", "omnilearn"}};
  EXPECT_NO_THROW(checkChainTaskParams(p));
  p["config"] = {{"preset", "tiny"}};
  EXPECT_THROW(checkChainTaskParams(p), InputError);
  p["config"] = {{"preset", "omnilearn"}};
  p["init"] = (dir / "not_yet").string();  // pretrained later: checked when the chain starts
  EXPECT_NO_THROW(checkChainTaskParams(p));
  p["init"] = "none";  // the preset builds the model
  EXPECT_NO_THROW(checkChainTaskParams(p));
  EXPECT_NO_THROW(refusePresetBesideFoundation(p, "tiny"));
  EXPECT_NO_THROW(checkChainFoundation(p));

  // checkChainFoundation (campaign init, and before tasks start): the same preset check, and
  // a foundation that is not pretrained yet, or whose tensors are corrupt, refused naming it.
  p["init"] = (dir / "found").string();
  EXPECT_NO_THROW(checkChainFoundation(p));  // omnilearn, as rewritten above
  p["config"] = {{"preset", "tiny"}};
  EXPECT_THROW(checkChainFoundation(p), InputError);
  p["config"] = nlohmann::json::object();
  const auto refused = [&](const std::string& init, const std::string& what) {
    p["init"] = init;
    try {
      checkChainFoundation(p);
      ADD_FAILURE() << init << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  refused((dir / "not_yet").string(),
          "foundation " + (dir / "not_yet").string() +
              ": holds no checkpoint (no meta.json, nor model/meta.json)");
  fs::create_directories(dir / "empty");
  refused((dir / "empty").string(), "foundation " + (dir / "empty").string() + ": holds no");
  // A training's state (it holds a meta.json) is said to be one (before: "holds no checkpoint
  // (no meta.json, …)").
  CheckpointMeta state_meta = meta;
  state_meta.training = {{"optimizer_state", nlohmann::json::object()}};
  writeCheckpoint((dir / "pretraining" / "state").string(), state_meta,
                  {{"model.w", torch::ones({64})}});
  refused((dir / "pretraining" / "state").string(),
          "foundation " + (dir / "pretraining" / "state").string() + ": the state of a training");
  writeCheckpoint((dir / "corrupt").string(), meta, {{"model.w", torch::ones({64})}});
  fs::path payload;
  for (const auto& e : fs::directory_iterator(dir / "corrupt"))
    if (e.path().filename().string().rfind("tensors-", 0) == 0) payload = e.path();
  ASSERT_FALSE(payload.empty());
  {
    std::fstream f(payload, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(fs::file_size(payload) / 2);
    char byte = 0;
    f.seekg(at);
    f.get(byte);
    f.seekp(at);
    f.put(static_cast<char>(byte ^ 0x5a));
  }
  refused((dir / "corrupt").string(), payload.string() + ": checksum mismatch");
  EXPECT_NO_THROW(checkChainTaskParams(p));  // (the metadata alone: `campaign plan`)
  fs::remove_all(dir);
}

// Every key of a chain config, with a value of any JSON type or an extreme number: accepted,
// or refused as bad input that starts with the config's name and names the key; never
// another exception (a nlohmann type error, std::length_error) or a silently changed value.
TEST(ChainConfig, EveryKeyWithAnyValueIsAcceptedOrRefusedNamingIt) {
  const std::vector<nlohmann::json> values = {nullptr,
                                              true,
                                              -1,
                                              0,
                                              1,
                                              2147483648LL,
                                              -2147483649LL,
                                              18446744073709551615ULL,
                                              0.5,
                                              -1e308,
                                              1e308,
                                              "",
                                              "x",
                                              "pet",
                                              nlohmann::json::array(),
                                              nlohmann::json::array({1, "a"}),
                                              nlohmann::json::object(),
                                              nlohmann::json{{"dim", "wide"}},
                                              nlohmann::json{{"hidden", 5}}};
  int accepted = 0;
  for (const std::string& key : chainConfigKeys()) {
    for (const nlohmann::json& v : values) {
      const nlohmann::json cfg = {{key, v}};
      try {
        const ChainConfig c = chainConfigFromJson(cfg, "cfg.json");
        ++accepted;
        // What was accepted reads back as given (no truncation or wrap-around).
        const nlohmann::json back = chainConfigToJson(c);
        if (back.contains(key) && v.is_number() && back.at(key).is_number()) {
          EXPECT_EQ(back.at(key).get<double>(), v.get<double>()) << cfg.dump();
        }
      } catch (const InputError& e) {
        const std::string m = e.what();
        EXPECT_EQ(m.rfind("cfg.json", 0), 0u) << cfg.dump() << ": " << m;
        EXPECT_NE(m.find(key), std::string::npos) << cfg.dump() << ": " << m;
      } catch (const std::exception& e) {
        ADD_FAILURE() << cfg.dump() << ": not an InputError: " << e.what();
      }
    }
  }
  EXPECT_GT(accepted, 10);
}

// The config's binning: {"lo", "hi", "bins"} as numpy.linspace(lo, hi, bins + 1), or the
// edges; each mistake named with the observable; the other observables keep OmniLearn's.
TEST(ChainConfig, BinningIsReadAsEdgesOrLoHiBinsAndEachMistakeIsNamed) {
  const ChainConfig c = chainConfigFromJson(
      {{"binning",
        {{"mass", {{"lo", 0}, {"hi", 300}, {"bins", 60}}}, {"zg", {{"edges", {0, 0.1, 0.5}}}}}}},
      "cfg.json");
  const auto edges = chainBinning(c);
  ASSERT_EQ(edges.size(), 6u);
  EXPECT_EQ(edges[0], data::Binning::linspace(0, 300, 61).edges);
  EXPECT_EQ(edges[4], (std::vector<double>{0, 0.1, 0.5}));
  EXPECT_EQ(edges[1], data::observableBinning(1).edges);
  const std::vector<std::pair<nlohmann::json, std::string>> bad = {
      {{{"energy", {{"edges", {0, 1}}}}}, "'binning': unknown observable 'energy'"},
      {{{"mass", {{"edges", {0, 2, 1}}}}}, "'binning' of 'mass': edges must be finite and"},
      {{{"mass", {{"edges", {1}}}}}, "'binning' of 'mass': \"edges\" must hold 2 to"},
      {{{"mass", {{"lo", 5}, {"hi", 5}, {"bins", 3}}}}, "needs finite lo < hi (got 5, 5)"},
      {{{"mass", {{"lo", 0}, {"hi", 5}, {"bins", 0}}}}, "\"bins\" must be from 1 to 10000"},
      {{{"mass", {{"lo", 0}, {"hi", 5}}}}, "give \"lo\", \"hi\" and \"bins\""},
      {{{"mass", {{"edges", {0, 1}}, {"bins", 3}}}}, "give \"edges\" alone"},
      {{{"mass", {{"step", 1}}}}, "unknown key 'step'"},
      {{{"mass", {0, 1}}}, "'binning' of 'mass' must be"}};
  for (const auto& [b, want] : bad) {
    try {
      chainConfigFromJson({{"binning", b}}, "cfg.json");
      ADD_FAILURE() << b.dump() << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

// A chain histograms with its config's binning (histograms.h5, every iteration too), and an
// aggregation bins the truth as its chains are (it refused a truth of other edges before:
// there was no other).
TEST_F(ChainTest, AChainsBinningIsItsHistogramsAndTheTruthIsBinnedAlike) {
  auto p = params(0, 0);
  p["config"]["classifier"] = "mlp";
  p["config"]["binning"] = {{"mass", {{"lo", 0}, {"hi", 300}, {"bins", 30}}}};
  const fs::path out = root_ / "binned";
  ASSERT_EQ(runChainTask(p, out.string()), 0);
  const ChainHistograms h = readChainHistograms(out.string());
  const std::vector<double> mass = data::Binning::linspace(0, 300, 31).edges;
  EXPECT_EQ(h.unfolded[0].edges, mass);
  EXPECT_EQ(h.prior[0].edges, mass);
  ASSERT_FALSE(h.iterations.empty());
  EXPECT_EQ(h.iterations.back()[0].edges, mass);
  EXPECT_EQ(h.unfolded[1].edges, data::observableBinning(1).edges);
  const TruthHistograms t = readTruth((root_ / "data.h5").string(), h.unfolded);
  EXPECT_EQ(t.density[0].size(), 30u);
  EXPECT_EQ(t.density[1].size(), data::observableBinning(1).edges.size() - 1);
  // The finished chain asked for another binning: refused, not "complete" with the old one.
  p["config"].erase("binning");
  std::string reason;
  EXPECT_EQ(runChainTask(p, out.string(), &reason), 2);
  EXPECT_NE(reason.find("holds a finished chain whose mass histogram has 30 bins over [0, 300], "
                        "not the config's binning"),
            std::string::npos)
      << reason;
  EXPECT_EQ(readChainHistograms(out.string()).unfolded[0].edges, mass);
}

namespace {

// Two chains' histograms, bin for bin and bit for bit (edges, Σw, Σw², what falls outside).
void expectSameHistograms(const ChainHistograms& a, const ChainHistograms& b,
                          const std::string& what) {
  const auto same = [&](const std::vector<ObservableHistogram>& x,
                        const std::vector<ObservableHistogram>& y, const std::string& part) {
    ASSERT_EQ(x.size(), y.size()) << what << " " << part;
    for (size_t o = 0; o < x.size(); ++o) {
      const std::string at = what + " " + part + " " + x[o].name;
      EXPECT_EQ(x[o].name, y[o].name) << at;
      EXPECT_EQ(x[o].edges, y[o].edges) << at;
      EXPECT_EQ(x[o].sumw, y[o].sumw) << at;
      EXPECT_EQ(x[o].sumw2, y[o].sumw2) << at;
      ASSERT_EQ(x[o].outside.has_value(), y[o].outside.has_value()) << at;
      if (x[o].outside) {
        EXPECT_EQ(*x[o].outside, *y[o].outside) << at;
      }
    }
  };
  same(a.unfolded, b.unfolded, "unfolded");
  same(a.prior, b.prior, "prior");
  ASSERT_EQ(a.iterations.size(), b.iterations.size()) << what;
  for (size_t i = 0; i < a.iterations.size(); ++i)
    same(a.iterations[i], b.iterations[i], "iteration " + std::to_string(i + 1));
}

}  // namespace

// A finished chain rebinned from its weights (ensembles/rebin.hpp) is, bit for bit, the chain
// run with that binning: its unfolded, its prior (the file's event weights) and every iteration;
// on its own edges it is its histograms.h5. So is an MC-statistics replica's (whose prior holds
// the Poisson draw) and a chain of the first max_mc_events of a simulation without gen_subs (the
// observables computed from its jets). An aggregation rebinned is the aggregation of chains run
// with that binning. A simulation changed since the chain read it is refused; a chain that kept
// `final` alone is rebinned without its iterations.
TEST_F(ChainTest, ARebinnedChainIsTheChainRunWithThatBinning) {
  data::UnfoldArrays u = sample(data::Tune::kSim, 240);
  u.weights.resize(240);
  for (size_t i = 0; i < u.weights.size(); ++i) u.weights[i] = 0.5f + static_cast<float>(i % 7) / 4;
  const std::string sim = (root_ / "sim_rebin.h5").string();
  const std::string bare = (root_ / "sim_bare.h5").string();
  data::writeUnfoldFile(sim, u);
  data::WriteOptions no_subs;
  no_subs.with_subs = false;
  data::writeUnfoldFile(bare, u, nlohmann::json::object(), no_subs);
  ASSERT_FALSE(data::JetFile(bare).has("gen_subs"));
  ObservableBinnings own;
  for (int o = 0; o < data::kNumSubs; ++o)
    own[data::observableName(o)] = data::observableBinning(o).edges;
  const ObservableBinnings mass30 = {{"mass", data::Binning::linspace(0, 300, 31).edges}};
  const auto rebinned = [](const ObservableBinnings& b, const fs::path& dir) {
    return ChainRebinner(b).histograms(dir.string(), readJson((dir / kChainResultFile).string()));
  };

  nlohmann::json p = params(0, 0);
  p["mc"] = sim;
  p["config"]["classifier"] = "mlp";
  for (int r : {0, 1}) {
    p["replica"] = r;
    ASSERT_EQ(runChainTask(p, (root_ / ("rb_plain" + std::to_string(r))).string()), 0);
  }
  p["config"]["binning"] = {{"mass", {{"lo", 0}, {"hi", 300}, {"bins", 30}}}};
  for (int r : {0, 1}) {
    p["replica"] = r;
    ASSERT_EQ(runChainTask(p, (root_ / ("rb_binned" + std::to_string(r))).string()), 0);
  }
  const fs::path plain = root_ / "rb_plain1", binned = root_ / "rb_binned1";
  ASSERT_EQ(readChainFinalWeights(plain.string()), readChainFinalWeights(binned.string()))
      << "the binning is not part of what a chain trains";
  expectSameHistograms(rebinned(own, plain), readChainHistograms(plain.string()), "own edges");
  expectSameHistograms(rebinned(mass30, plain), readChainHistograms(binned.string()), "mass30");

  // The aggregation of the chains rebinned is that of the chains run with the binning.
  AggregateOptions options;
  options.plots = false;
  options.event_weights = EventWeightsChoice::kNone;
  const std::string truth = (root_ / "data.h5").string();
  nlohmann::json run_binned =
      aggregateRunsWithOptions({(root_ / "rb_binned0").string(), binned.string()},
                               (root_ / "rb_agg_run").string(), truth, options);
  options.rebin = mass30;
  nlohmann::json rebinned_agg =
      aggregateRunsWithOptions({(root_ / "rb_plain0").string(), plain.string()},
                               (root_ / "rb_agg_rebinned").string(), truth, options);
  EXPECT_EQ(rebinned_agg["rebinned"], nlohmann::json::array({"mass"}));
  EXPECT_FALSE(run_binned.contains("rebinned"));
  for (const char* key : {"build", "chain_builds", "outputs", "rebinned"}) {
    rebinned_agg.erase(key);
    run_binned.erase(key);
  }
  EXPECT_EQ(rebinned_agg["observables"]["mass"]["edges"],
            nlohmann::json(data::Binning::linspace(0, 300, 31).edges));
  EXPECT_EQ(rebinned_agg, run_binned);

  // An MC-statistics replica: its prior is the simulation drawn Poisson(1).
  nlohmann::json q = params(1, 0);
  q["mc"] = sim;
  q["config"]["classifier"] = "mlp";
  q["bootstrap"] = "mc";
  q["variation"] = {{"name", "mcstat"}, {"type", "mc_bootstrap"}};
  ASSERT_EQ(runChainTask(q, (root_ / "rb_mcboot").string()), 0);
  const ChainHistograms boot = readChainHistograms((root_ / "rb_mcboot").string());
  EXPECT_NE(boot.prior[0].sumw, readChainHistograms(plain.string()).prior[0].sumw);
  expectSameHistograms(rebinned(own, root_ / "rb_mcboot"), boot, "mc bootstrap");

  // The first 200 events of a simulation without gen_subs.
  nlohmann::json c = params(0, 0);
  c["mc"] = bare;
  c["config"]["classifier"] = "mlp";
  c["config"]["max_mc_events"] = 200;
  ASSERT_EQ(runChainTask(c, (root_ / "rb_capped").string()), 0);
  ASSERT_EQ(readChainFinalWeights((root_ / "rb_capped").string()).size(), 200u);
  expectSameHistograms(rebinned(own, root_ / "rb_capped"),
                       readChainHistograms((root_ / "rb_capped").string()), "capped, no subs");

  // Its publication weights: the first 200 rows the chain's, the 40 it did not unfold 0.
  {
    AggregateOptions with_weights;
    with_weights.plots = false;
    aggregateRunsWithOptions({(root_ / "rb_capped").string()}, (root_ / "rb_capped_agg").string(),
                             std::nullopt, with_weights);
    const std::string ew = (root_ / "rb_capped_agg" / "event_weights.h5").string();
    data::H5Handle file = data::h5OpenInput(ew, "aggregate again");
    const std::vector<double> column = readFloat64Dataset(file.get(), ew, "weights/nominal");
    ASSERT_EQ(column.size(), 240u);
    const std::vector<double> final_weights = readChainFinalWeights((root_ / "rb_capped").string());
    EXPECT_TRUE(std::equal(final_weights.begin(), final_weights.end(), column.begin()));
    EXPECT_TRUE(std::all_of(column.begin() + 200, column.end(), [](double x) { return x == 0; }));
  }

  // Only `final` kept: the same unfolded; no iterations of mass, the others' kept.
  nlohmann::json f = params(1, 0);
  f["mc"] = sim;
  f["config"]["classifier"] = "mlp";
  f["config"]["iteration_weights"] = false;
  ASSERT_EQ(runChainTask(f, (root_ / "rb_final_only").string()), 0);
  ChainRebinner final_only(mass30);
  const fs::path fo = root_ / "rb_final_only";
  const ChainHistograms h =
      final_only.histograms(fo.string(), readJson((fo / kChainResultFile).string()));
  const ChainHistograms stored = readChainHistograms(fo.string());
  ASSERT_EQ(h.iterations.size(), stored.iterations.size());
  ASSERT_FALSE(h.iterations.empty());
  EXPECT_EQ(h.iterations_unknown, std::set<std::string>{"mass"});
  EXPECT_EQ(h.iterations[0][1].sumw, stored.iterations[0][1].sumw) << "width's are kept";
  EXPECT_EQ(h.iterations[0][0].edges, mass30.at("mass"));
  EXPECT_EQ(final_only.withoutIterations(), 1);
  EXPECT_EQ(h.unfolded[0].sumw, readChainHistograms(binned.string()).unfolded[0].sumw);

  // A chain that kept its push but not `final` (written before `final` was): its final weights
  // are the last push times the simulation's, as the chain computed them.
  fs::copy(plain, root_ / "rb_no_final", fs::copy_options::recursive);
  {
    const std::string w = (root_ / "rb_no_final" / kChainWeightsFile).string();
    const hid_t file = H5Fopen(w.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    ASSERT_GE(H5Ldelete(file, "final", H5P_DEFAULT), 0);
    H5Fclose(file);
  }
  ASSERT_FALSE(chainFinalWeightsRows((root_ / "rb_no_final").string()).has_value());
  expectSameHistograms(rebinned(mass30, root_ / "rb_no_final"),
                       readChainHistograms(binned.string()), "no final");

  // gen_subs beside no reco_subs: the chain computes the observables from the jets (it reads
  // the *_subs only where every level has them), and so does the rebinning.
  data::UnfoldArrays odd = u;
  for (float& x : odd.gen_subs) x *= 1.01f;
  const std::string gen_only = (root_ / "sim_gen_subs_only.h5").string();
  data::writeUnfoldFile(gen_only, odd);
  {
    const hid_t file = H5Fopen(gen_only.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    ASSERT_GE(H5Ldelete(file, "reco_subs", H5P_DEFAULT), 0);
    H5Fclose(file);
  }
  nlohmann::json g = params(0, 0);
  g["mc"] = gen_only;
  g["config"]["classifier"] = "mlp";
  ASSERT_EQ(runChainTask(g, (root_ / "rb_gen_only").string()), 0);
  expectSameHistograms(rebinned(own, root_ / "rb_gen_only"),
                       readChainHistograms((root_ / "rb_gen_only").string()), "gen_subs only");

  // The simulation modified since the chains read it: refused, naming the chain and the file.
  const FileStat before = statPath(sim);
  ASSERT_EQ(setModificationTime(sim, before.mtime_ns + 1000000000LL), "");
  std::string why;
  try {
    rebinned(mass30, plain);
  } catch (const InputError& e) {
    why = e.what();
  }
  EXPECT_NE(why.find(plain.string() + ": read its simulation " + sim), std::string::npos) << why;
  EXPECT_NE(why.find("modified later"), std::string::npos) << why;
  EXPECT_NE(why.find("touch -d"), std::string::npos) << why;
  ASSERT_EQ(setModificationTime(sim, before.mtime_ns), "");
}

// The final per-event weights of weights.h5 are the simulation's weight times the last push;
// a nominal chain's records carry none of the variation keys.
// Each step's classifier trains on balanced classes (label 1's weights scaled to label 0's
// total over the events trained on): data whose event weights are all 8 (another
// normalisation) unfold exactly as the same data weighted 1 (a power of two: the balanced
// weights are the same bits). Before, step 1 also had to learn the classes' prior, 8 times
// another one, and the weights moved.
TEST_F(ChainTest, DataWeightsScaledByAConstantUnfoldAlike) {
  data::UnfoldArrays u = sample(data::Tune::kData, 240);
  u.weights.assign(240, 8.0f);
  data::writeUnfoldFile((root_ / "data_w8.h5").string(), u);
  nlohmann::json p = params(0, 0);
  p["config"]["classifier"] = "pet+mlp";
  ASSERT_EQ(runChainTask(p, (root_ / "w1").string()), 0);
  p["data"] = (root_ / "data_w8.h5").string();
  ASSERT_EQ(runChainTask(p, (root_ / "w8").string()), 0);
  EXPECT_EQ(push(root_ / "w1"), push(root_ / "w8"));
  const auto h1 = readJson((root_ / "w1" / kChainHistoryFile).string());
  const auto h8 = readJson((root_ / "w8" / kChainHistoryFile).string());
  const double b1 = h1.at("steps").at(0).at("class_balance").get<double>();
  EXPECT_GT(b1, 0.5);
  EXPECT_LT(b1, 2.0);
  EXPECT_EQ(h8.at("steps").at(0).at("class_balance").get<double>(), b1 / 8);
}

// Simulation weights in cross-section units (Σw = σ: 1e-9 per event) train as unit weights:
// both classes' weights are brought to a mean near 1 by a power of two, here 2^30, the same bits
// as unit weights. Before, the loss fell below AdamW's epsilon and the MLP learnt almost
// nothing (a ratio near 1: the prior back).
TEST_F(ChainTest, SimulationWeightsInCrossSectionUnitsUnfoldAsUnitWeights) {
  data::UnfoldArrays u = sample(data::Tune::kSim, 240);
  u.weights.assign(240, std::ldexp(1.0f, -30));
  data::writeUnfoldFile((root_ / "sim_xs.h5").string(), u);
  nlohmann::json p = params(0, 0);
  p["config"]["classifier"] = "pet+mlp";
  ASSERT_EQ(runChainTask(p, (root_ / "xs1").string()), 0);
  p["mc"] = (root_ / "sim_xs.h5").string();
  ASSERT_EQ(runChainTask(p, (root_ / "xs").string()), 0);
  EXPECT_EQ(push(root_ / "xs1"), push(root_ / "xs"));
  const auto h = readJson((root_ / "xs" / kChainHistoryFile).string());
  EXPECT_EQ(h.at("steps").at(0).at("weight_scale").get<double>(), std::ldexp(1.0, 30));
  EXPECT_FALSE(readJson((root_ / "xs1" / kChainHistoryFile).string())
                   .at("steps")
                   .at(0)
                   .contains("weight_scale"));
}

// Simulation weights whose total over the events a step trains on is not positive leave no
// density to fit: refused as bad input (exit 2, nothing written, no retry), naming the file and
// the negative ones; before, the chain ran and failed as "diverged" (a campaign retried it).
// Negative weights whose total is positive train, and the chain says how many there are.
TEST_F(ChainTest, SimulationWeightsOfANonPositiveTotalAreRefusedNegativeOnesTrain) {
  data::UnfoldArrays u = sample(data::Tune::kSim, 240);
  u.weights.assign(240, 1.0f);
  for (size_t i = 0; i < 240; i += 2) u.weights[i] = -1.0f;
  data::writeUnfoldFile((root_ / "sim_zero_sum.h5").string(), u);
  nlohmann::json p = params(0, 0);
  p["config"]["classifier"] = "mlp";
  p["mc"] = (root_ / "sim_zero_sum.h5").string();
  std::string reason;
  EXPECT_EQ(runChainTask(p, (root_ / "zero_sum").string(), &reason), 2);
  EXPECT_NE(reason.find("sim_zero_sum.h5: the event weights of the "), std::string::npos) << reason;
  EXPECT_NE(reason.find("OmniFold needs a positive total: fix the file's weights"),
            std::string::npos)
      << reason;
  EXPECT_FALSE(fs::exists(root_ / "zero_sum" / "state"));
  // `campaign init` finds it too (checkChainTaskInputs), before any chain starts.
  try {
    checkChainTaskInputs(p);
    ADD_FAILURE() << "not refused";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sim_zero_sum.h5: the event weights of the "),
              std::string::npos)
        << e.what();
  }
  for (size_t i = 0; i < 240; i += 2) u.weights[i] = i % 10 == 0 ? -0.5f : 1.5f;  // 1 in 5
  data::writeUnfoldFile((root_ / "sim_signed.h5").string(), u);
  p["mc"] = (root_ / "sim_signed.h5").string();
  ASSERT_EQ(runChainTask(p, (root_ / "signed").string()), 0);
  for (const std::vector<double>& w : push(root_ / "signed"))
    for (const double x : w) ASSERT_TRUE(std::isfinite(x) && x >= 0);
}

TEST_F(ChainTest, FinalWeightsAreThePushTimesTheSimulationWeights) {
  const fs::path dir = root_ / "final";
  ASSERT_EQ(runChainTask(params(0, 0), dir.string()), 0);
  const ChainWeights w = readChainWeights(dir.string());
  ASSERT_EQ(w.final.size(), 240u);
  EXPECT_EQ(w.final, w.push.back()) << "the synthetic simulation's event weights are 1";
  const nlohmann::json result = readJson((dir / kChainResultFile).string());
  for (const char* key : {"bootstrap", "variation", "warm_from"})
    EXPECT_FALSE(result.contains(key)) << key;
  EXPECT_FALSE(fs::exists(dir / "models")) << "models are kept only when asked";
}

// Replica r >= 1 trains on the data weighted by its Poisson(1) draw, a function of (campaign
// seed, r) only: the members of a replica share it, replica 0 takes the data as it is
// (README "Concepts"). result.json's data_weights say which draw a chain trained on.
TEST_F(ChainTest, DataBootstrapWeightsComeFromTheCampaignSeedAndTheReplicaOnly) {
  const auto dataWeights = [](int replica, int member) {
    nlohmann::json p = params(replica, member);
    p["config"]["classifier"] = "mlp";
    p["iterations"] = 1;
    const fs::path dir =
        root_ / ("boot_r" + std::to_string(replica) + "m" + std::to_string(member));
    EXPECT_EQ(runChainTask(p, dir.string()), 0);
    return readJson((dir / kChainResultFile).string()).at("data_weights");
  };
  const nlohmann::json r0 = dataWeights(0, 0);
  EXPECT_EQ(r0.at("sum").get<double>(), 240.0) << "replica 0 fits the data unweighted";
  EXPECT_EQ(r0.at("zeros").get<int64_t>(), 0);
  for (const int replica : {2, 3}) {
    const std::vector<double> draw = bootstrapWeights(240, 7, replica);
    double sum = 0;
    int64_t zeros = 0;
    for (const double w : draw) {
      sum += w;
      zeros += w == 0 ? 1 : 0;
    }
    ASSERT_GT(zeros, 40) << "about e^-1 of the events are not drawn";
    for (const int member : {0, 1}) {
      const nlohmann::json got = dataWeights(replica, member);
      EXPECT_EQ(got.at("sum").get<double>(), sum) << "replica " << replica << " member " << member;
      EXPECT_EQ(got.at("zeros").get<int64_t>(), zeros)
          << "replica " << replica << " member " << member;
    }
  }
}

// An MC-statistics replica resamples the simulation (every replica, 0 included) and leaves
// the data unweighted: replica 0 differs from the nominal chain, and its final weights carry
// the Poisson weights (0 where an event was not drawn).
TEST_F(ChainTest, McBootstrapResamplesTheSimulationNotTheData) {
  nlohmann::json p = params(0, 0);
  p["config"]["classifier"] = "mlp";
  ASSERT_EQ(runChainTask(p, (root_ / "mc_nominal").string()), 0);
  p["bootstrap"] = "mc";
  p["variation"] = {{"name", "mcstat"}, {"type", "mc_bootstrap"}};
  ASSERT_EQ(runChainTask(p, (root_ / "mc_boot").string()), 0);
  const ChainWeights nom = readChainWeights((root_ / "mc_nominal").string());
  const ChainWeights boot = readChainWeights((root_ / "mc_boot").string());
  EXPECT_NE(nom.final, boot.final);
  const std::vector<double> poisson = mcBootstrapWeights(240, 7, 0);
  int zeros = 0;
  for (size_t i = 0; i < poisson.size(); ++i) {
    if (poisson[i] == 0) {
      ++zeros;
      EXPECT_EQ(boot.final[i], 0.0) << i;
    }
    EXPECT_DOUBLE_EQ(boot.final[i], poisson[i] * boot.push.back()[i]) << i;
  }
  EXPECT_GT(zeros, 40) << "about e^-1 of the events are not drawn";
  // Each step-1 ratio keeps the reco-passing events' total weight against the failing ones (its
  // mean weighted as its classifier saw them: the push times the Poisson weights). Before,
  // a plain mean moved that share by a few percent for MC-bootstrap chains and from
  // iteration 1 on.
  const std::vector<uint8_t> pass_reco =
      data::JetFile((root_ / "sim.h5").string()).readPassFlags("pass_reco");
  const std::vector<uint8_t> pass_gen =
      data::JetFile((root_ / "sim.h5").string()).readPassFlags("pass_gen");
  ASSERT_EQ(pass_reco.size(), 240u);
  ASSERT_GT(std::count(pass_reco.begin(), pass_reco.end(), uint8_t{0}), 0)
      << "the test needs events failing the reco selection";
  for (size_t k = 0; k < boot.pull.size(); ++k) {
    const auto share = [&](const std::vector<double>& w) {
      double in = 0, all = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        all += w[i] * poisson[i];
        if (pass_reco[i]) in += w[i] * poisson[i];
      }
      return in / all;
    };
    const std::vector<double> before = k == 0 ? std::vector<double>(240, 1.0) : boot.push[k - 1];
    EXPECT_NEAR(share(boot.pull[k]), share(before), 1e-12) << "iteration " << k;
  }
  // The final effective sample size counts the events the histograms hold (passing gen).
  std::vector<double> held;
  for (size_t i = 0; i < boot.final.size(); ++i)
    if (pass_gen.empty() || pass_gen[i]) held.push_back(boot.final[i]);
  const nlohmann::json result = readJson((root_ / "mc_boot" / kChainResultFile).string());
  EXPECT_NEAR(result["final_ess"].get<double>(), effectiveSampleSize(held), 1e-9);
  EXPECT_EQ(result["bootstrap"], "mc");
  EXPECT_EQ(result["variation"]["name"], "mcstat");
  p["bootstrap"] = "both";
  EXPECT_EQ(runChainTask(p, (root_ / "mc_bad").string()), 2);
}

// A campaign's "chain": {"keep_models": true} reaches a nominal task as the chain's own
// keep_models, never as a chain config key, whether the config is the chain object's own
// keys or its "config"; a variation's task keeps nothing for it.
TEST(ChainTask, TheCampaignsKeepModelsIsTheChainsNotAConfigKey) {
  for (const nlohmann::json& chain :
       {nlohmann::json{{"iterations", 2}, {"keep_models", true}, {"classifier", "mlp"}},
        nlohmann::json{
            {"iterations", 2}, {"keep_models", true}, {"config", {{"classifier", "mlp"}}}}}) {
    nlohmann::json p = {{"inputs", {{"mc", "/m.h5"}, {"data", "/d.h5"}}},
                        {"replica", 0},
                        {"member", 0},
                        {"seed", 1},
                        {"chain", chain},
                        {"keep_models", true}};
    const nlohmann::json task = chainParamsOfCampaignTask(p, "/c/tasks/r0000m0");
    EXPECT_TRUE(task.value("keep_models", false)) << task.dump();
    EXPECT_EQ(task.at("config"), (nlohmann::json{{"classifier", "mlp"}})) << task.dump();
    p.erase("keep_models");
    p["variation"] = {{"name", "alt"}, {"type", "modelling"}};
    EXPECT_FALSE(chainParamsOfCampaignTask(p, "/c/tasks/alt.r0000m0").contains("keep_models"));
  }
}

// A varied chain starts every step from the models its nominal chain kept: on the nominal's
// own inputs its first MLP fit starts where the nominal's ended (a validated start no epoch
// needs to beat); without kept models it is refused naming the directory.
TEST_F(ChainTest, AVariedChainStartsEachStepFromTheNominalChainsModels) {
  nlohmann::json p = params(0, 1);
  p["config"]["classifier"] = "pet+mlp";
  p["keep_models"] = true;
  const fs::path nominal = root_ / "warm_nominal";
  ASSERT_EQ(runChainTask(p, nominal.string()), 0);
  for (int it = 0; it < 2; ++it)
    for (int step = 1; step <= 2; ++step)
      for (const char* m : {"pet", "mlp"})
        EXPECT_TRUE(
            fs::exists(fs::path(stepModelsDir(nominal.string(), it, step)) / m / "meta.json"))
            << it << " " << step << " " << m;
  nlohmann::json v = params(0, 1);
  v["config"]["classifier"] = "pet+mlp";
  v["variation"] = {{"name", "same"}, {"type", "detector"}};
  v["warm_from"] = nominal.string();
  const fs::path varied = root_ / "warm_varied";
  ASSERT_EQ(runChainTask(v, varied.string()), 0);
  const nlohmann::json history = readJson((varied / kChainHistoryFile).string());
  ASSERT_EQ(history["steps"].size(), 4u);
  for (const auto& step : history["steps"]) {
    EXPECT_NE(step.value("warm_from", std::string()).find(nominal.string() + "/models/"),
              std::string::npos)
        << step.dump();
  }
  const nlohmann::json result = readJson((varied / kChainResultFile).string());
  EXPECT_EQ(result["warm_from"], nominal.string());

  v["warm_from"] = (root_ / "final").string();  // a chain that kept no models
  EXPECT_EQ(runChainTask(v, (root_ / "warm_missing").string()), 2);
  // As a campaign's task (warm_from its sibling task): 66, which `retry --failed` mends.
  std::string why;
  EXPECT_EQ(runChainTask(v, (root_ / "warm_missing").string(), &why, true), 66);
  EXPECT_NE(why.find("--failed` runs final again, and this task after it"), std::string::npos)
      << why;
  EXPECT_TRUE(fs::is_empty(root_ / "warm_missing")) << "refused before anything is written";
}

// Step ensembling: member 0 of the ensemble is the chain's own classifier (the same fit as a
// plain chain's first step), the others have seeds of their own, and the pushed weights come
// from their averaged probabilities; step_ensemble 1 is exactly the plain chain.
TEST_F(ChainTest, StepEnsemblingAveragesClassifiersWhoseFirstIsThePlainChains) {
  nlohmann::json p = params(4, 0);
  p["config"]["classifier"] = "mlp";
  ASSERT_EQ(runChainTask(p, (root_ / "ens_plain").string()), 0);
  p["config"]["step_ensemble"] = 1;
  ASSERT_EQ(runChainTask(p, (root_ / "ens_one").string()), 0);
  EXPECT_EQ(push(root_ / "ens_plain"), push(root_ / "ens_one"));
  p["config"]["step_ensemble"] = 3;
  ASSERT_EQ(runChainTask(p, (root_ / "ens_three").string()), 0);
  EXPECT_NE(push(root_ / "ens_plain"), push(root_ / "ens_three"));
  const nlohmann::json plain = readJson((root_ / "ens_plain" / kChainHistoryFile).string());
  const nlohmann::json three = readJson((root_ / "ens_three" / kChainHistoryFile).string());
  ASSERT_EQ(three["steps"].size(), 4u);
  for (const auto& step : three["steps"]) ASSERT_EQ(step["ensemble"].size(), 3u) << step.dump();
  // The validation losses of a fit, epoch by epoch (its timings aside).
  auto losses = [](const nlohmann::json& fit) {
    std::vector<double> v;
    for (const auto& e : fit["history"]) v.push_back(e["val_loss"].get<double>());
    return v;
  };
  const auto& members = three["steps"][0]["ensemble"];
  EXPECT_EQ(losses(members[0]["mlp_fit"]), losses(plain["steps"][0]["mlp_fit"]));
  EXPECT_NE(losses(members[1]["mlp_fit"]), losses(members[0]["mlp_fit"]));
  EXPECT_NE(losses(members[2]["mlp_fit"]), losses(members[1]["mlp_fit"]));
  p["config"]["step_ensemble"] = 0;
  EXPECT_EQ(runChainTask(p, (root_ / "ens_zero").string()), 2);
}

// A stop after the state's weights were committed and before progress.json (the step's
// commit point): state/weights.h5 holds the stopped step's row, which the resume drops and
// computes again (before: kept, and the step's row added beside it, one iteration's row
// twice in weights.h5). Fewer rows than the finished steps are refused, naming the file.
TEST_F(ChainTest, AStopBetweenTheWeightsAndTheCommitLeavesNoRowTwice) {
  const fs::path ref = root_ / "commit_ref", cut = root_ / "commit_cut";
  ASSERT_EQ(runChainTask(params(3, 0), ref.string()), 0);
  ASSERT_EQ(runChainStoppedAfterFirstStep(params(3, 0), cut), 75);
  ChainWeights w = readChainWeights((cut / "state").string());
  ASSERT_EQ(w.pull.size(), 1u);
  ASSERT_EQ(w.push.size(), 0u);
  ChainWeights uncommitted = w;
  uncommitted.push.push_back(std::vector<double>(w.pull[0].size(), 2.0));
  writeChainWeights((cut / "state").string(), uncommitted, nlohmann::json::object());
  ASSERT_EQ(runChainTask(params(3, 0), cut.string()), 0);
  const ChainWeights whole = readChainWeights(ref.string()),
                     resumed = readChainWeights(cut.string());
  EXPECT_EQ(resumed.push.size(), 2u);
  EXPECT_EQ(resumed.push, whole.push);
  EXPECT_EQ(resumed.pull, whole.pull);
  // Too few rows: refused, naming the file.
  const fs::path few = root_ / "commit_few";
  ASSERT_EQ(runChainStoppedAfterFirstStep(params(3, 0), few), 75);
  ChainWeights none = readChainWeights((few / "state").string());
  none.pull.clear();
  writeChainWeights((few / "state").string(), none, nlohmann::json::object());
  std::string why;
  try {
    runChainTaskOrThrow(params(3, 0), few.string());
  } catch (const InputError& e) {
    why = e.what();
  }
  EXPECT_NE(why.find((few / "state").string() + "/weights.h5: holds 0 pull and 0 push rows for 1 "
                                                "finished steps"),
            std::string::npos)
      << why;
}

// A boosted PET fit stopped midway resumes from the MLP's logits it started with, kept beside
// the MLP's fit: logits computed again under another thread count or CPU differ in their last
// bits (stood in for here by a nudge to the kept MLP), and the PET state's check of its data
// refused the resume for good ("written for different training data").
TEST_F(ChainTest, APetFitResumedWhereTheMlpRoundsOtherwiseStartsFromItsOffsets) {
  nlohmann::json p = params(6, 0);
  p["config"]["classifier"] = "pet+mlp";
  p["config"]["epochs"] = 4;  // a PET fit long enough for the stop to land inside it
  const fs::path ref = root_ / "offsets_ref", cut = root_ / "offsets_cut";
  ASSERT_EQ(runChainTask(p, ref.string()), 0);
  // Stopped inside the second step's PET fit, once its MLP and offsets are kept.
  const fs::path kept = cut / "state" / "mlp_offsets_step1.h5";
  std::thread stopper([&] {
    for (int i = 0; i < 6000 && !fs::exists(kept); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    requestStop();
  });
  const int rc = runChainTask(p, cut.string());
  stopper.join();
  clearStopRequest();
  ASSERT_EQ(rc, 75) << "the chain was to stop in its second step";
  ASSERT_TRUE(fs::exists(kept));
  const std::string fit = (cut / "state" / "mlp_fit_step1").string();
  Checkpoint ck = readCheckpoint(fit);
  for (auto& [name, t] : ck.tensors)
    if (name.find("bias") != std::string::npos) t.mul_(1.0f + 1e-6f);
  writeCheckpoint(fit, ck.meta, ck.tensors);
  ASSERT_EQ(runChainTask(p, cut.string()), 0);
  const ChainWeights whole = readChainWeights(ref.string()),
                     resumed = readChainWeights(cut.string());
  // The stopped step ends as the uninterrupted one's (its later steps start from the nudged MLP).
  EXPECT_EQ(resumed.push.at(0), whole.push.at(0));
  EXPECT_FALSE(fs::exists(kept)) << "removed when the step commits";
}

// An interrupted step-ensembled chain resumes to the same weights (each member's fit state
// and models under names of their own).
TEST_F(ChainTest, InterruptedStepEnsembleResumesToIdenticalWeights) {
  nlohmann::json p = params(5, 0);
  p["config"]["step_ensemble"] = 2;
  const fs::path ref = root_ / "ens_ref", cut = root_ / "ens_cut";
  ASSERT_EQ(runChainTask(p, ref.string()), 0);
  int rc = runChainStoppedAfterFirstStep(p, cut);
  ASSERT_EQ(rc, 75);
  EXPECT_TRUE(fs::exists(cut / "state" / "model_step1_e1" / "meta.json"));
  ASSERT_EQ(runChainTask(p, cut.string()), 0);
  EXPECT_EQ(push(ref), push(cut));
}

// feature_stats "auto" measures the jets the steps train on: the reco jets of the events that
// pass the reco selection and the gen jets of those that pass the gen one. A file may hold
// zeros for a failing event's jet; measured with them, the mean moved and the spread widened.
TEST(ChainFeatureStats, AutoMeasuresTheJetsOfTheEventsThatPassTheirSelection) {
  data::SynthConfig c = data::SynthConfig::unfoldDefaults(data::Tune::kSim);
  c.P = 16;
  data::UnfoldArrays u = data::synthUnfold(c, 5, 0, 300);
  u.pass_reco.assign(static_cast<size_t>(u.n()), 1);
  u.pass_gen.assign(static_cast<size_t>(u.n()), 1);
  std::vector<int64_t> reco_rows, gen_rows;
  for (int64_t i = 0; i < u.n(); ++i) {
    if (i % 4 == 1) {  // fails reco, its reco jet zeros
      u.pass_reco[static_cast<size_t>(i)] = 0;
      std::fill(u.reco.jet(i), u.reco.jet(i) + data::kNumJetFeatures, 0.0f);
    } else {
      reco_rows.push_back(i);
    }
    if (i % 7 == 3) {
      u.pass_gen[static_cast<size_t>(i)] = 0;
      std::fill(u.gen.jet(i), u.gen.jet(i) + data::kNumJetFeatures, 0.0f);
    } else {
      gen_rows.push_back(i);
    }
  }
  ChainConfig cfg;
  ASSERT_EQ(cfg.feature_stats, "auto");
  const data::FeatureStats got =
      chainFeatureStats(cfg, nullptr, {{&u.reco, &u.pass_reco}, {&u.gen, &u.pass_gen}});
  // The same as the statistics of the passing jets alone, in one set.
  data::JetArrays passing = u.reco.subset(reco_rows);
  passing.append(u.gen.subset(gen_rows));
  const data::FeatureStats want = chainFeatureStats(cfg, nullptr, {{&passing}});
  // With the failing events' zeros: another mean and a wider spread of the mass.
  const data::FeatureStats with_zeros = chainFeatureStats(cfg, nullptr, {{&u.reco}, {&u.gen}});
  for (int f = 0; f < data::kNumJetFeatures; ++f) {
    EXPECT_FLOAT_EQ(got.jet_mean[static_cast<size_t>(f)], want.jet_mean[static_cast<size_t>(f)])
        << f;
    EXPECT_FLOAT_EQ(got.jet_std[static_cast<size_t>(f)], want.jet_std[static_cast<size_t>(f)]) << f;
  }
  EXPECT_LT(with_zeros.jet_mean[0], 0.9f * got.jet_mean[0]) << "pT";
  EXPECT_GT(with_zeros.jet_std[2], 1.1f * got.jet_std[2]) << "mass";
}
