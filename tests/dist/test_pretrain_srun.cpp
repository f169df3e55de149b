// `foldfarm pretrain` launched by Slurm's srun (2 tasks on the local one-node cluster,
// PMIx): both ranks must take their rank and size from the SLURM_* variables, train
// data-parallel, and only rank 0 may write the checkpoint and print the result; the
// trained weights must be bit-identical to the same command under mpirun -np 2.
// A read that fails on one task in the middle of an epoch ends the other at once, and srun with
// that task's exit code. Exit 77 (skipped) where the local Slurm cluster cannot run.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/base/process.hpp"
#include "tests/dist/stream_pretrain.hpp"
#include "tests/slurm/slurm_fixture.hpp"
#include "tests/support/run_child.hpp"

using namespace foldfarm;
using namespace foldfarm::slurm;
using namespace foldfarm::slurm::testing;
using foldfarm::testing::runSingleThreaded;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> pretrainArgs(const std::string& data, const std::string& out) {
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
          "3",
          "--threads",
          "1",
          "--collective-timeout",
          "60"};
}

// The checkpoint of `dir`: meta.json, and the names of every file in the directory.
nlohmann::json readMeta(const std::string& dir, std::vector<std::string>* files) {
  for (const auto& e : fs::directory_iterator(dir)) files->push_back(e.path().filename().string());
  return nlohmann::json::parse(slurp(dir + "/meta.json"));
}

}  // namespace

TEST(PretrainSrun, TwoSrunTasksTrainLikeMpirun) {
  ensureLocalCluster();
  ASSERT_TRUE(programAvailable("srun"));
  const std::string dir = makeTempDir("ff-pretrain-srun");
  const std::string data = dir + "/jets.h5";
  ProcessResult synth = runSingleThreaded({FOLDFARM_BINARY, "data", "synth", "--kind", "pretrain",
                                           "--jets", "240", "--seed", "11", "--out", data},
                                          120);
  ASSERT_TRUE(synth.ok()) << synth.describeFailure();

  // 2 tasks with 1 CPU each, on the node the other Slurm tests share: small and short.
  std::vector<std::string> srun = {"srun",
                                   "-N1",
                                   "-n2",
                                   "-c1",
                                   "--mpi=pmix",
                                   "--job-name=foldfarm-test-pretrain-srun",
                                   "--time=5",
                                   "--kill-on-bad-exit=1",
                                   "--chdir=" + dir,
                                   "--output=" + dir + "/srun.out.%t",
                                   "--error=" + dir + "/srun.err.%t"};
  for (const std::string& a : pretrainArgs(data, dir + "/srun")) srun.push_back(a);
  ProcessResult s = runSingleThreaded(srun, 200);
  ASSERT_TRUE(s.ok()) << s.describeFailure() << "\nrank 0 stderr:\n"
                      << slurp(dir + "/srun.err.0") << "\nrank 1 stderr:\n"
                      << slurp(dir + "/srun.err.1");

  // Each task found its rank and the world size in Slurm's environment.
  for (int r = 0; r < 2; ++r) {
    const std::string err = slurp(dir + "/srun.err." + std::to_string(r));
    EXPECT_NE(err.find("launched by slurm: rank " + std::to_string(r) + " of 2 (local rank " +
                       std::to_string(r) + " of 2)"),
              std::string::npos)
        << "task " << r << " stderr:\n"
        << err;
  }
  // Only rank 0 reports and writes: one result on stdout, one checkpoint payload.
  const std::string out0 = slurp(dir + "/srun.out.0");
  const std::string out1 = slurp(dir + "/srun.out.1");
  EXPECT_NE(out0.find("\"test_loss\""), std::string::npos) << out0;
  EXPECT_EQ(out1.find('{'), std::string::npos) << "rank 1 printed a result:\n" << out1;
  std::vector<std::string> srun_files;
  const nlohmann::json srun_meta = readMeta(dir + "/srun/model", &srun_files);
  int payloads = 0;
  for (const std::string& f : srun_files) {
    EXPECT_EQ(f.find(".tmp."), std::string::npos) << "leftover temporary file " << f;
    if (f.rfind("tensors-", 0) == 0) ++payloads;
  }
  EXPECT_EQ(payloads, 1);
  EXPECT_EQ(srun_meta["payload"]["file"].get<std::string>().rfind("tensors-", 0), 0u);

  // The same command under mpirun -np 2 gives bit-identical weights (the payload is named
  // and hashed by its bytes): the launcher changes nothing but where rank/size come from.
  std::vector<std::string> mpirun = {FOLDFARM_MPIRUN, "--allow-run-as-root", "--oversubscribe",
                                     "-np", "2"};
  for (const std::string& a : pretrainArgs(data, dir + "/mpirun")) mpirun.push_back(a);
  ProcessResult m = runSingleThreaded(mpirun, 200);
  ASSERT_TRUE(m.ok()) << m.describeFailure() << "\n" << m.err;
  EXPECT_NE(m.err.find("launched by openmpi: rank 1 of 2"), std::string::npos) << m.err;
  std::vector<std::string> mpirun_files;
  const nlohmann::json mpirun_meta = readMeta(dir + "/mpirun/model", &mpirun_files);
  EXPECT_EQ(srun_meta["payload"]["sha256"], mpirun_meta["payload"]["sha256"])
      << "srun and mpirun runs of the same command trained different weights";
  EXPECT_EQ(srun_meta["training"]["test"], mpirun_meta["training"]["test"]);

  std::error_code ec;
  fs::remove_all(dir, ec);
}

// Under srun without --kill-on-bad-exit Slurm lets the other tasks run on when one fails: a
// read that fails on task 1 mid-epoch (FOLDFARM_FAULT, set for task 1 alone) must still end
// task 0 at once, and srun with task 1's exit code, not after --collective-timeout (longer
// here than the test waits).
TEST(PretrainSrun, AReadThatFailsOnOneTaskEndsTheStepAtOnce) {
  ensureLocalCluster();
  ASSERT_TRUE(programAvailable("srun"));
  const std::string dir = makeTempDir("ff-pretrain-srun-fail");
  const std::string data = dir + "/jets.h5";
  ProcessResult synth = foldfarm::testing::synthStreamJets(data, 3000);
  ASSERT_TRUE(synth.ok()) << synth.describeFailure();
  const std::vector<std::string> pretrain =
      foldfarm::testing::streamPretrainArgs(data, dir + "/run", "1000");
  std::string command =
      "if [ \"$SLURM_PROCID\" = 1 ]; then export FOLDFARM_FAULT=stream.read:11; fi; exec";
  for (const std::string& a : pretrain) command += " '" + a + "'";
  const std::vector<std::string> srun = {"srun",
                                         "-N1",
                                         "-n2",
                                         "-c1",
                                         "--mpi=pmix",
                                         "--job-name=foldfarm-test-pretrain-srun-fail",
                                         "--time=5",
                                         "--chdir=" + dir,
                                         "--output=" + dir + "/srun.out.%t",
                                         "--error=" + dir + "/srun.err.%t",
                                         "sh",
                                         "-c",
                                         command};
  const auto t0 = std::chrono::steady_clock::now();
  ProcessResult s = runSingleThreaded(srun, 150);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string err0 = slurp(dir + "/srun.err.0"), err1 = slurp(dir + "/srun.err.1");
  EXPECT_EQ(s.exitCode, 1) << s.describeFailure() << "\n" << s.err << "\ntask 0:\n" << err0;
  EXPECT_NE(err1.find("foldfarm: error: stream.read (11): failure injected by FOLDFARM_FAULT"),
            std::string::npos)
      << err1;
  EXPECT_NE(err0.find("foldfarm: error: rank 0 ("), std::string::npos) << err0;
  EXPECT_NE(err0.find("rank 1 ("), std::string::npos) << err0;
  EXPECT_NE(err0.find("its error: stream.read (11)"), std::string::npos) << err0;
  EXPECT_EQ(err0.find("did not finish within"), std::string::npos) << err0;
  EXPECT_FALSE(fs::exists(dir + "/run/model"));
  EXPECT_LT(secs, 120.0) << err0;
  std::error_code ec;
  fs::remove_all(dir, ec);
}
