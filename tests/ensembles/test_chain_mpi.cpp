// `foldfarm unfold` under mpirun -np 2: the chain's step classifiers train data-parallel
// (one context re-prepared for every step's new model), both ranks compute the same
// weights (checked by the chain itself after every step), rank 0 alone writes the chain
// output and prints the result, and no temporary file or state is left behind. SIGUSR1 to
// one rank stops both with the "interrupted" code; rerunning resumes and ends with the
// weights of the uninterrupted 2-rank chain, bit for bit. Skipped when the foldfarm
// executable is not built.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/process.hpp"
#include "ensembles/chain_output.hpp"
#include "tests/support/run_child.hpp"

namespace {

namespace fs = std::filesystem;
using foldfarm::ProcessResult;
using foldfarm::testing::runSingleThreaded;

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// Synthetic closure inputs and a chain config in `dir`.
struct Inputs {
  std::string mc, data, config;
};

Inputs makeInputs(const fs::path& dir, int events, int epochs) {
  Inputs in{(dir / "mc.h5").string(), (dir / "data.h5").string(), (dir / "config.json").string()};
  for (const auto& [tune, seed, out] :
       {std::tuple<std::string, std::string, std::string>{"sim", "11", in.mc},
        std::tuple<std::string, std::string, std::string>{"data", "12", in.data}}) {
    ProcessResult s =
        runSingleThreaded({FOLDFARM_BINARY, "data", "synth", "--kind", "unfold", "--events",
                           std::to_string(events), "--tune", tune, "--seed", seed, "--out", out},
                          120);
    EXPECT_TRUE(s.ok()) << s.describeFailure() << "\n" << s.err;
  }
  // patience == epochs: no early stopping, so every run trains the same number of steps.
  std::ofstream(in.config) << nlohmann::json{
      {"preset", "tiny"},
      {"epochs", epochs},
      {"patience", epochs},
      {"batch_size", 64}}.dump();
  return in;
}

std::vector<std::string> unfoldArgv(const Inputs& in, const std::string& out) {
  return {FOLDFARM_MPIRUN,
          "--allow-run-as-root",
          "--oversubscribe",
          "-np",
          "2",
          FOLDFARM_BINARY,
          "unfold",
          "--mc",
          in.mc,
          "--data",
          in.data,
          "--init",
          "none",
          "--out",
          out,
          "--replica",
          "2",
          "--member",
          "1",
          "--iterations",
          "1",
          "--config",
          in.config,
          "--threads",
          "1",
          "--collective-timeout",
          "60"};
}

// The pids of the foldfarm processes whose command line names `out`.
std::vector<pid_t> ranksWriting(const std::string& out) {
  std::vector<pid_t> pids;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = slurp(e.path().string() + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.rfind(std::string(FOLDFARM_BINARY) + " unfold", 0) == 0 &&
        cmd.find(" " + out + " ") != std::string::npos)
      pids.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return pids;
}

TEST(ChainMpi, TwoRanksTrainOneChainAndRankZeroWritesItOnce) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
  const fs::path dir =
      fs::temp_directory_path() / ("ff-chain-mpi-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Inputs in = makeInputs(dir, 300, 2);
  ASSERT_FALSE(HasFailure());
  const std::string out = (dir / "chain").string();
  ProcessResult r = runSingleThreaded(unfoldArgv(in, out), 240);
  ASSERT_TRUE(r.ok()) << r.describeFailure() << "\nstderr:\n" << r.err;

  // Both ranks joined, and every step's new model was prepared for data-parallel training
  // (2 steps x 2 ranks).
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_NE(r.err.find("rank " + std::to_string(rank) + " of 2"), std::string::npos)
        << "rank " << rank << " did not log its rank:\n"
        << r.err;
  EXPECT_EQ(count(r.err, "data-parallel: 2 ranks"), 4u) << r.err;
  // The chain compared the ranks' weights after both steps.
  EXPECT_EQ(count(r.err, "weights agree across 2 ranks"), 2u) << r.err;

  // Rank 0 alone printed the result: one JSON document on stdout.
  EXPECT_EQ(count(r.out, "\"status\""), 1u) << r.out;
  const nlohmann::json printed = nlohmann::json::parse(r.out);
  EXPECT_EQ(printed.at("status"), "done");
  EXPECT_EQ(printed.at("replica"), 2);

  // The output directory holds the chain output once, nothing temporary, no state.
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.insert(e.path().filename().string());
  const std::set<std::string> expected = {
      foldfarm::ensembles::kChainWeightsFile, foldfarm::ensembles::kChainHistogramsFile,
      foldfarm::ensembles::kChainHistoryFile, foldfarm::ensembles::kChainResultFile};
  EXPECT_EQ(names, expected);
  EXPECT_EQ(nlohmann::json::parse(slurp(out + "/result.json")), printed);

  // One iteration: push and pull weights, finite, positive and normalised to mean 1.
  const foldfarm::ensembles::ChainWeights w = foldfarm::ensembles::readChainWeights(out);
  ASSERT_EQ(w.push.size(), 1u);
  ASSERT_EQ(w.pull.size(), 1u);
  ASSERT_EQ(w.push[0].size(), 300u);
  for (const std::vector<double>* v : {&w.push[0], &w.pull[0]}) {
    double sum = 0;
    for (double x : *v) {
      ASSERT_TRUE(std::isfinite(x));
      ASSERT_GT(x, 0.0);
      sum += x;
    }
    EXPECT_NEAR(sum / static_cast<double>(v->size()), 1.0, 1e-9);
  }
  // The weights were reweighted, not left at 1.
  double spread = 0;
  for (double x : w.push[0]) spread = std::max(spread, std::abs(x - 1.0));
  EXPECT_GT(spread, 1e-6);
  fs::remove_all(dir);
}

TEST(ChainMpi, SignalToOneRankStopsBothAndResumeEndsLikeUninterrupted) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
  const fs::path dir = fs::temp_directory_path() /
                       ("ff-chain-mpi-stop-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Inputs in = makeInputs(dir, 600, 10);
  ASSERT_FALSE(HasFailure());

  // The uninterrupted 2-rank chain.
  const std::string ref = (dir / "ref").string();
  ProcessResult a = runSingleThreaded(unfoldArgv(in, ref), 240);
  ASSERT_TRUE(a.ok()) << a.describeFailure() << "\n" << a.err;

  // The same chain; once step 2 has trained an epoch, SIGUSR1 to one rank only: the stop
  // lands inside step 2's training (9 epochs remain, about 0.5 s each: room for a loaded
  // machine's test process to be late).
  const std::string cut = (dir / "cut").string();
  const fs::path log = dir / "cut.log";
  const pid_t mpirun = foldfarm::testing::spawnLogged(unfoldArgv(in, cut), log.string());
  ASSERT_GT(mpirun, 0);
  for (int i = 0;
       i < 2400 && slurp(log.string()).find("iteration 0 step 2: epoch 0") == std::string::npos;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  std::vector<pid_t> ranks = ranksWriting(cut);
  ASSERT_EQ(ranks.size(), 2u) << "expected the 2 ranks of the chain running\n"
                              << slurp(log.string());
  std::sort(ranks.begin(), ranks.end());
  ASSERT_EQ(::kill(ranks.back(), SIGUSR1), 0);
  const int rc = foldfarm::testing::waitExitWithin(mpirun, 240);
  const std::string cut_log = slurp(log.string());
  ASSERT_EQ(rc, 75) << "a stopped chain exits with the interrupted code on every rank\n" << cut_log;
  // Said once, by rank 0, and not as an error.
  EXPECT_EQ(count(cut_log, "interrupted; state saved"), 1u) << cut_log;
  EXPECT_EQ(count(cut_log, "error"), 0u) << cut_log;
  EXPECT_FALSE(fs::exists(cut + "/result.json"));
  // Step 1 committed, step 2's training state saved mid-fit.
  EXPECT_TRUE(fs::exists(cut + "/state/progress.json"));
  EXPECT_TRUE(fs::exists(cut + "/state/train_step1/meta.json")) << cut_log;

  // Rerunning the same command resumes and ends with the uninterrupted chain's weights.
  ProcessResult b = runSingleThreaded(unfoldArgv(in, cut), 240);
  ASSERT_TRUE(b.ok()) << b.describeFailure() << "\n" << b.err;
  EXPECT_NE(b.err.find("resuming chain after 1 finished steps"), std::string::npos) << b.err;
  const foldfarm::ensembles::ChainWeights wa = foldfarm::ensembles::readChainWeights(ref);
  const foldfarm::ensembles::ChainWeights wb = foldfarm::ensembles::readChainWeights(cut);
  EXPECT_EQ(wa.push, wb.push) << "resumed 2-rank chain differs from the uninterrupted one";
  EXPECT_EQ(wa.pull, wb.pull);
  fs::remove_all(dir);
}

// Rank 0 writes the chain's state and outputs; when a write fails there (here where step 1's
// classifiers are committed made a file while they train, as a full disk or a quota would),
// both ranks end at once, the error printed once (before: rank 0 ended alone and rank 1 waited
// out --collective-timeout, longer here than the test waits).
TEST(ChainMpi, AWriteThatFailsOnRankZeroEndsBothRanks) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
  const fs::path dir = fs::temp_directory_path() /
                       ("ff-chain-mpi-write-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Inputs in = makeInputs(dir, 600, 10);
  ASSERT_FALSE(HasFailure());
  const std::string out = (dir / "chain").string();
  std::vector<std::string> argv = unfoldArgv(in, out);
  argv.back() = "1000";  // --collective-timeout
  const fs::path log = dir / "run.log";
  const pid_t mpirun = foldfarm::testing::spawnLogged(argv, log.string());
  ASSERT_GT(mpirun, 0);
  for (int i = 0;
       i < 2400 && slurp(log.string()).find("iteration 0 step 1: epoch 0") == std::string::npos;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  ASSERT_NE(slurp(log.string()).find("iteration 0 step 1: epoch 0"), std::string::npos)
      << slurp(log.string());
  // Where rank 0 commits step 1's classifiers once they are trained.
  // (9 epochs of step 1 remain: room for a loaded machine's test process to be late; one that
  // came after the commit is said so, not taken for a run that ignored the failure.)
  for (const char* dir : {"/state/model_step1", "/state/mlp_step1"}) {
    std::ofstream(out + dir) << "not a directory\n";
    ASSERT_TRUE(fs::is_regular_file(out + dir))
        << "step 1 was committed before the test could block it\n"
        << slurp(log.string());
  }
  const int rc = foldfarm::testing::waitExitWithin(mpirun, 120);
  const std::string err = slurp(log.string());
  ASSERT_NE(rc, -1) << "the job did not end\n" << err;
  EXPECT_NE(rc, 0) << err;
  EXPECT_EQ(count(err, "foldfarm: error:"), 1u) << err;
  EXPECT_NE(err.find(out + "/state/m"), std::string::npos) << err;
  EXPECT_EQ(err.find("did not finish within"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(out + "/result.json"));
  fs::remove_all(dir);
}

// An input that one rank cannot read (its node's copy is corrupt; here mpirun's second program
// is given another --mc) is found by that rank before anything is written: every rank ends
// there, at once, with that rank's line alone (before: rank 1 ended alone and rank 0 went on
// to write the chain's state and waited out --collective-timeout, then ended with exit 3).
TEST(ChainMpi, AnInputOneRankCannotReadEndsBothRanksBeforeAnythingIsWritten) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
  const fs::path dir = fs::temp_directory_path() /
                       ("ff-chain-mpi-read-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Inputs in = makeInputs(dir, 300, 2);
  ASSERT_FALSE(HasFailure());
  const std::string bad = (dir / "bad.h5").string();
  std::ofstream(bad) << "not HDF5\n";
  const std::string out = (dir / "chain").string();
  std::vector<std::string> argv = unfoldArgv(in, out);
  argv.back() = "1000";  // --collective-timeout
  // "-np 2 foldfarm ..." becomes "-np 1 foldfarm ... : -np 1 foldfarm ... --mc bad.h5".
  const auto np = std::find(argv.begin(), argv.end(), "-np");
  *(np + 1) = "1";
  std::vector<std::string> second(np, argv.end());
  *(std::find(second.begin(), second.end(), "--mc") + 1) = bad;
  argv.push_back(":");
  argv.insert(argv.end(), second.begin(), second.end());
  const fs::path log = dir / "run.log";
  const pid_t mpirun = foldfarm::testing::spawnLogged(argv, log.string());
  ASSERT_GT(mpirun, 0);
  const int rc = foldfarm::testing::waitExitWithin(mpirun, 120);
  const std::string err = slurp(log.string());
  ASSERT_NE(rc, -1) << "the job did not end\n" << err;
  EXPECT_EQ(rc, 2) << err;
  EXPECT_EQ(count(err, "foldfarm: error:"), 1u) << err;
  EXPECT_NE(err.find("foldfarm: error: " + bad + ": cannot open as HDF5"), std::string::npos)
      << err;
  EXPECT_EQ(err.find("did not finish within"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(out)) << err;
  fs::remove_all(dir);
}

}  // namespace
