// `foldfarm pretrain --shard-data` under mpirun -np 2: each rank reads and holds only its
// half of the jets (every other row of the training, validation and test parts), the two
// halves add up to the whole, training ends with one checkpoint written by rank 0; a resume
// without --shard-data is refused with one clear line, the checkpoint untouched; a resume on
// one rank deals the rows anew and continues the history.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/process.hpp"
#include "tests/support/run_child.hpp"

using foldfarm::ProcessResult;
using foldfarm::testing::runSingleThreaded;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<std::string> pretrain(const std::string& data, const std::string& out) {
  return {FOLDFARM_BINARY,
          "pretrain",
          "--data",
          data,
          "--out",
          out,
          "--preset",
          "tiny",
          "--epochs",
          "1",
          "--batch",
          "16",
          "--seed",
          "4",
          "--threads",
          "1",
          "--shard-data",
          "--collective-timeout",
          "60"};
}

}  // namespace

TEST(PretrainShard, EachRankHoldsItsHalfAndResumesOnAnotherRankCount) {
  const fs::path dir = fs::temp_directory_path() /
                       ("ff-pretrain-shard-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "jets.h5").string(), out = (dir / "run").string();
  ProcessResult s = runSingleThreaded({FOLDFARM_BINARY, "data", "synth", "--kind", "pretrain",
                                       "--jets", "301", "--seed", "9", "--out", data},
                                      120);
  ASSERT_TRUE(s.ok()) << s.describeFailure() << "\n" << s.err;

  std::vector<std::string> argv = {FOLDFARM_MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np",
                                   "2"};
  for (const std::string& a : pretrain(data, out)) argv.push_back(a);
  ProcessResult r = runSingleThreaded(argv, 240);
  ASSERT_TRUE(r.ok()) << r.describeFailure() << "\n" << r.err;

  // Both ranks report their share; the shares add up to the parts in the result.
  const nlohmann::json result = nlohmann::json::parse(r.out);
  const std::regex held(
      R"(\[\S+ r(\d)\] --shard-data: this rank holds (\d+) training, (\d+) validation and (\d+) test jets of 301)");
  int64_t train = 0, val = 0, test = 0;
  int ranks = 0;
  for (std::sregex_iterator it(r.err.begin(), r.err.end(), held), end; it != end; ++it) {
    ++ranks;
    const int64_t t = std::stoll((*it)[2]);
    EXPECT_GE(t, (result.at("train_jets").get<int64_t>()) / 2) << it->str();
    EXPECT_LE(t, (result.at("train_jets").get<int64_t>() + 1) / 2) << it->str();
    train += t;
    val += std::stoll((*it)[3]);
    test += std::stoll((*it)[4]);
  }
  EXPECT_EQ(ranks, 2) << r.err;
  EXPECT_EQ(train, result.at("train_jets").get<int64_t>());
  EXPECT_EQ(val, result.at("val_jets").get<int64_t>());
  EXPECT_EQ(test, result.at("test_jets").get<int64_t>());
  EXPECT_EQ(train + val + test, 301);
  EXPECT_NE(r.err.find("sharded data, " + std::to_string(train / 2) + " rows per rank per epoch"),
            std::string::npos)
      << r.err;
  // Validation and test metrics count every jet of their part, summed over the ranks.
  EXPECT_EQ(result.at("fit").at("history").at(0).at("metrics").at("jets").get<int64_t>(), val);

  // One checkpoint payload, written once.
  int payloads = 0;
  for (const auto& e : fs::directory_iterator(out + "/model")) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;
    payloads += name.rfind("tensors-", 0) == 0;
  }
  EXPECT_EQ(payloads, 1);

  // The state was written with sharded data: resuming without --shard-data is refused, the
  // checkpoint untouched.
  const std::string meta_before = slurp(out + "/model/meta.json");
  std::vector<std::string> whole = pretrain(data, out);
  whole.erase(std::find(whole.begin(), whole.end(), std::string("--shard-data")));
  whole.push_back("--resume");
  ProcessResult w = runSingleThreaded(whole, 120);
  EXPECT_EQ(w.exitCode, 2) << w.err;
  EXPECT_NE(w.err.find("resume with --shard-data"), std::string::npos) << w.err;
  EXPECT_EQ(slurp(out + "/model/meta.json"), meta_before);

  // Resumed alone (1 rank) for a second epoch: the rows are dealt anew over one rank, the
  // schedule moves to the new steps per epoch, and the history continues.
  std::vector<std::string> alone = pretrain(data, out);
  *(std::find(alone.begin(), alone.end(), std::string("--epochs")) + 1) = "2";
  alone.push_back("--resume");
  ProcessResult a = runSingleThreaded(alone, 240);
  ASSERT_TRUE(a.ok()) << a.describeFailure() << "\n" << a.err;
  EXPECT_NE(a.err.find("sharded data on 2 ranks; the rows are dealt anew over 1"),
            std::string::npos)
      << a.err;
  EXPECT_NE(a.err.find("resuming from"), std::string::npos) << a.err;
  const nlohmann::json resumed = nlohmann::json::parse(a.out);
  ASSERT_EQ(resumed.at("fit").at("history").size(), 2u) << a.out;
  EXPECT_EQ(resumed.at("fit").at("history").at(0), result.at("fit").at("history").at(0));
  EXPECT_TRUE(resumed.at("fit").at("resumed").get<bool>());
  // The step count is on the new scale: 2 epochs of ceil(train jets / 16) steps on one rank.
  const int64_t spe = (result.at("train_jets").get<int64_t>() + 15) / 16;
  EXPECT_EQ(resumed.at("fit").at("steps").get<int64_t>(), 2 * spe) << a.out;
  EXPECT_NE(a.err.find("continues at step 0, the schedule at step " + std::to_string(spe)),
            std::string::npos)
      << a.err;
  // The peak learning rate follows the ranks (sqrt 2 -> 1): said with both figures.
  EXPECT_NE(a.err.find("the peak learning rate is "), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("when the state was saved"), std::string::npos) << a.err;
  fs::remove_all(dir);
}

// Ranks given other data (an MPMD launch; in real life a node's stale copy of the files):
// refused before any step, in one line that says which ranks hold what, nothing written.
// Before: the same number of jets trained together silently, and another number failed
// in a later collective (MPI_ERR_TRUNCATE) that blamed the transport.
TEST(PretrainShard, RanksGivenOtherDataAreRefusedBeforeTraining) {
  const fs::path dir = fs::temp_directory_path() /
                       ("ff-pretrain-other-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto synth = [&](const std::string& name, const char* jets, const char* seed) {
    const std::string path = (dir / name).string();
    const ProcessResult s =
        runSingleThreaded({FOLDFARM_BINARY, "data", "synth", "--kind", "pretrain", "--jets", jets,
                           "--seed", seed, "--out", path},
                          120);
    EXPECT_TRUE(s.ok()) << s.describeFailure() << "\n" << s.err;
    return path;
  };
  const std::string a = synth("a.h5", "301", "9"), b = synth("b.h5", "301", "10"),
                    c = synth("c.h5", "200", "9");
  for (const auto& [other, said] :
       {std::pair<std::string, std::string>{b,
                                            "rank(s) 1 hold as many as rank 0 with other "
                                            "values or another --seed"},
        std::pair<std::string, std::string>{c, "training jets, rank 1 "}}) {
    const std::string out = (dir / "run").string();
    std::vector<std::string> argv = {FOLDFARM_MPIRUN, "--allow-run-as-root", "--oversubscribe",
                                     "-np", "1"};
    std::vector<std::string> one = pretrain(a, out);
    one.erase(std::find(one.begin(), one.end(), std::string("--shard-data")));
    argv.insert(argv.end(), one.begin(), one.end());
    argv.insert(argv.end(), {":", "-np", "1"});
    std::vector<std::string> two = pretrain(other, out);
    two.erase(std::find(two.begin(), two.end(), std::string("--shard-data")));
    argv.insert(argv.end(), two.begin(), two.end());
    const ProcessResult r = runSingleThreaded(argv, 240);
    EXPECT_EQ(r.exitCode, 2) << r.describeFailure() << "\n" << r.err;
    EXPECT_NE(r.err.find("the ranks were given other training data: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out + "/model")) << r.err;
  }
  fs::remove_all(dir);
}

// Fewer training jets than ranks (without --shard-data too, where each rank's batches still
// take a share): refused once, by rank 0, before training (every rank said "cannot shard 1 jets
// over 2 ranks" from its first epoch).
TEST(PretrainShard, FewerTrainingJetsThanRanksAreRefusedOnce) {
  const fs::path dir = fs::temp_directory_path() /
                       ("ff-pretrain-few-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string one = (dir / "one.h5").string();
  const ProcessResult s = runSingleThreaded(
      {FOLDFARM_BINARY, "data", "synth", "--kind", "pretrain", "--jets", "1", "--out", one}, 120);
  ASSERT_TRUE(s.ok()) << s.describeFailure() << "\n" << s.err;
  std::vector<std::string> argv = {FOLDFARM_MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np",
                                   "2"};
  std::vector<std::string> run = pretrain(one, (dir / "out").string());
  run.erase(std::find(run.begin(), run.end(), std::string("--shard-data")));
  argv.insert(argv.end(), run.begin(), run.end());
  const ProcessResult r = runSingleThreaded(argv, 240);
  EXPECT_EQ(r.exitCode, 2) << r.describeFailure() << "\n" << r.err;
  const std::string said = "1 jets leave 1 training jets for 2 ranks; use more jets or fewer ranks";
  const size_t at = r.err.find(said);
  EXPECT_NE(at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(said, at + 1), std::string::npos) << "said once: " << r.err;
  EXPECT_EQ(r.err.find("cannot shard"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out" / "model"));
  fs::remove_all(dir);
}
