// `foldfarm unfold` under mpirun -np 2: the chain's step classifiers train data-parallel
// (one context re-prepared for every step's new model), both ranks compute the same
// weights, rank 0 alone writes the chain output and prints the result, and no temporary
// file or state is left behind. Skipped when the foldfarm executable is not built.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ensembles/chain_output.hpp"
#include "slurm/child_process.hpp"

namespace {

namespace fs = std::filesystem;
using foldfarm::slurm::ProcessOptions;
using foldfarm::slurm::ProcessResult;
using foldfarm::slurm::runProcess;

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

ProcessResult run(const std::vector<std::string>& argv, int timeout_s) {
  ProcessOptions o;
  o.timeout = std::chrono::seconds(timeout_s);
  o.extraEnv = {"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"};
  return runProcess(argv, o);
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

TEST(ChainMpi, TwoRanksTrainOneChainAndRankZeroWritesItOnce) {
  if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
  const fs::path dir = fs::temp_directory_path() /
                       ("ff-chain-mpi-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string mc = (dir / "mc.h5").string(), data = (dir / "data.h5").string();
  for (const auto& [tune, seed, out] :
       {std::tuple<std::string, std::string, std::string>{"sim", "11", mc},
        std::tuple<std::string, std::string, std::string>{"data", "12", data}}) {
    ProcessResult s = run({FOLDFARM_BINARY, "data", "synth", "--kind", "unfold", "--events", "300",
                           "--tune", tune, "--seed", seed, "--out", out},
                          120);
    ASSERT_TRUE(s.ok()) << s.describeFailure() << "\n" << s.err;
  }
  const std::string config = (dir / "config.json").string();
  {
    std::ofstream f(config);
    f << nlohmann::json{{"preset", "tiny"}, {"epochs", 2}, {"patience", 2}, {"batch_size", 64}}
             .dump();
  }
  const std::string out = (dir / "chain").string();
  ProcessResult r = run({FOLDFARM_MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2",
                         FOLDFARM_BINARY, "unfold", "--mc", mc, "--data", data, "--init", "none",
                         "--out", out, "--replica", "1", "--member", "0", "--iterations", "1",
                         "--config", config, "--threads", "1", "--collective-timeout", "60"},
                        240);
  ASSERT_TRUE(r.ok()) << r.describeFailure() << "\nstderr:\n" << r.err;

  // Both ranks joined, and every step's new model was prepared for data-parallel training
  // (2 steps x 2 ranks).
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_NE(r.err.find("rank " + std::to_string(rank) + " of 2"), std::string::npos)
        << "rank " << rank << " did not log its rank:\n"
        << r.err;
  EXPECT_EQ(count(r.err, "data-parallel: 2 ranks"), 4u) << r.err;

  // Rank 0 alone printed the result: one JSON document on stdout.
  EXPECT_EQ(count(r.out, "\"status\""), 1u) << r.out;
  const nlohmann::json printed = nlohmann::json::parse(r.out);
  EXPECT_EQ(printed.at("status"), "done");
  EXPECT_EQ(printed.at("replica"), 1);

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

}  // namespace
