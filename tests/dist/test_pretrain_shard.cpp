// `foldfarm pretrain --shard-data` under mpirun -np 2: each rank reads and holds only its
// half of the jets (every other row of the training, validation and test parts), the two
// halves add up to the whole, training ends with one checkpoint written by rank 0, and a
// resume on another number of ranks is refused with one clear line, the checkpoint untouched.
#include <gtest/gtest.h>
#include <unistd.h>

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
  return {FOLDFARM_BINARY, "pretrain", "--data", data, "--out", out, "--preset", "tiny",
          "--epochs", "1", "--batch", "16", "--seed", "4", "--threads", "1", "--shard-data",
          "--collective-timeout", "60"};
}

}  // namespace

TEST(PretrainShard, EachRankHoldsItsHalfAndResumeOnOtherRanksIsRefused) {
  const fs::path dir = fs::temp_directory_path() /
                       ("ff-pretrain-shard-" + std::to_string(static_cast<long>(::getpid())));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "jets.h5").string(), out = (dir / "run").string();
  ProcessResult s = runSingleThreaded({FOLDFARM_BINARY, "data", "synth", "--kind", "pretrain", "--jets", "301",
                         "--seed", "9", "--out", data},
                        120);
  ASSERT_TRUE(s.ok()) << s.describeFailure() << "\n" << s.err;

  std::vector<std::string> argv = {FOLDFARM_MPIRUN, "--allow-run-as-root", "--oversubscribe",
                                   "-np", "2"};
  for (const std::string& a : pretrain(data, out)) argv.push_back(a);
  ProcessResult r = runSingleThreaded(argv, 240);
  ASSERT_TRUE(r.ok()) << r.describeFailure() << "\n" << r.err;

  // Both ranks report their share; the shares add up to the parts in the result.
  const nlohmann::json result = nlohmann::json::parse(r.out);
  const std::regex held(R"(\[\S+ r(\d)\] --shard-data: this rank holds (\d+) training, (\d+) validation and (\d+) test jets of 301)");
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

  // The state was written on 2 ranks with sharded data: resuming alone is refused.
  const std::string meta_before = slurp(out + "/model/meta.json");
  std::vector<std::string> alone = pretrain(data, out);
  alone.push_back("--resume");
  ProcessResult a = runSingleThreaded(alone, 120);
  EXPECT_EQ(a.exitCode, 2) << a.err;
  EXPECT_NE(a.err.find("with --shard-data on 2 ranks"), std::string::npos) << a.err;
  EXPECT_EQ(slurp(out + "/model/meta.json"), meta_before);
  fs::remove_all(dir);
}
