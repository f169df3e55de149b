// Faults under a real launcher: this test starts mpirun itself with a small training
// program (dist_train_worker) and injects a killed rank or a preemption signal.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/process.hpp"

namespace fs = std::filesystem;

namespace {

// mpirun with the options every run here needs: the command's argv starts with these.
std::vector<std::string> mpirun(int np) {
  return {FOLDFARM_MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(np)};
}

// mpirun's switch that lets the survivors of a dead rank run on: an MCA parameter of Open
// MPI 4's runtime (ORTE), an option of Open MPI 5's (PRRTE), which ignores the former.
std::vector<std::string> recoveryOption() {
  const foldfarm::ProcessResult v = foldfarm::runProcess({FOLDFARM_MPIRUN, "--version"});
  const std::string text = v.out + v.err;
  const auto at = text.find("(Open MPI) ");
  const int major = at == std::string::npos ? 0 : std::atoi(text.c_str() + at + 11);
  return major >= 5 ? std::vector<std::string>{"--enable-recovery"}
                    : std::vector<std::string>{"--mca", "orte_enable_recovery", "1"};
}

fs::path freshDir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("foldfarm_dist_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Runs `argv` (no shell) with `env` (NAME=value) added to the environment, appends its
// stdout and stderr to dir/log and returns its exit status (128 + the signal that ended it).
// Two minutes at most: a launcher that hangs fails the test instead of stalling it.
int launch(const std::vector<std::string>& argv, const fs::path& dir,
           const std::vector<std::string>& env = {}, double* seconds = nullptr) {
  const auto t0 = std::chrono::steady_clock::now();
  foldfarm::ProcessOptions o;
  o.extraEnv = env;
  o.timeout = std::chrono::minutes(2);
  const foldfarm::ProcessResult r = foldfarm::runProcess(argv, o);
  if (seconds) {
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::ofstream(dir / "log", std::ios::app) << "$ " << r.commandLine() << "\n"
                                            << r.out << r.err << "(" << r.describe() << ")\n";
  return r.status();
}

// One argv of the parts in order.
std::vector<std::string> joined(std::initializer_list<std::vector<std::string>> parts) {
  std::vector<std::string> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

int resultCode(const fs::path& dir, int rank) {
  std::ifstream f(dir / ("result." + std::to_string(rank)));
  int code = -1;
  f >> code;
  return code;
}

std::vector<torch::Tensor> loadParams(const fs::path& file) {
  torch::serialize::InputArchive ar;
  ar.load_from(file.string());
  std::vector<torch::Tensor> out;
  for (const char* layer : {"fc1", "fc2"}) {
    torch::serialize::InputArchive sub;
    ar.read(layer, sub);
    for (const char* k : {"weight", "bias"}) {
      torch::Tensor t;
      sub.read(k, t);
      out.push_back(t);
    }
  }
  return out;
}

}  // namespace

TEST(DistFaults, StalledRankIsNamedAndJobEndsWithPeerLost) {
  const fs::path dir = freshDir("hang");
  // 1500 steps take > 30 s; rank 1 stops (SIGSTOP) at step 5 and never arrives. The
  // survivor must name it after the 4 s timeout and end the job with exit code 3.
  double secs = 0;
  const int rc = launch(joined({mpirun(2),
                                {FOLDFARM_DIST_WORKER, "--dir", dir.string(), "--steps", "1500",
                                 "--hang-rank", "1", "--hang-step", "5"}}),
                        dir, {"FOLDFARM_COLLECTIVE_TIMEOUT=4"}, &secs);
  const std::string log = slurp(dir / "log");
  EXPECT_EQ(rc, 3) << log;  // MPI_Abort(kExitPeerLost) from the survivor
  ASSERT_EQ(resultCode(dir, 0), 3) << log;
  const std::string msg = slurp(dir / "result.0");
  EXPECT_NE(msg.find("late or lost: rank 1 ("), std::string::npos) << msg;
  // Without the timeout the survivor waits for the stopped rank until launch's 2 minutes; the
  // bound leaves a loaded machine its start-up (mpirun, LibTorch twice: about 6 s here).
  EXPECT_LT(secs, 100.0) << "the survivor must give up after the 4 s timeout\n" << log;
  fs::remove_all(dir);
}

TEST(DistFaults, KilledRankIsNamedBySurvivorWithinTimeout) {
  const fs::path dir = freshDir("kill");
  // Rank 1 is killed at step 5. By default mpirun ends the job itself (naming the rank);
  // with recovery on it lets the survivor run into the deadline and say who is missing
  // (mpirun's own status is then 0: Open MPI 4.1 and 5.0 ignore failures in that mode).
  double secs = 0;
  launch(joined({mpirun(2),
                 recoveryOption(),
                 {FOLDFARM_DIST_WORKER, "--dir", dir.string(), "--steps", "1500", "--kill-rank",
                  "1", "--kill-step", "5"}}),
         dir, {"FOLDFARM_COLLECTIVE_TIMEOUT=4"}, &secs);
  const std::string log = slurp(dir / "log");
  ASSERT_EQ(resultCode(dir, 0), 3) << log;  // PeerLostError on the survivor
  EXPECT_FALSE(fs::exists(dir / "result.1"));
  const std::string msg = slurp(dir / "result.0");
  EXPECT_NE(msg.find("late or lost: rank 1 ("), std::string::npos) << msg;
  // Without the timeout the survivor waits for the stopped rank until launch's 2 minutes; the
  // bound leaves a loaded machine its start-up (mpirun, LibTorch twice: about 6 s here).
  EXPECT_LT(secs, 100.0) << "the survivor must give up after the 4 s timeout\n" << log;
  fs::remove_all(dir);
}

TEST(DistFaults, AnErrorOnOneRankEndsTheOthersAtOnceWithItsExitCode) {
  const fs::path dir = freshDir("fail");
  // Rank 1 meets a bad input at step 5 that rank 0 does not: rank 0 must not wait out the
  // collective timeout (600 s) at step 5's gradient all-reduce, but end at once, say which
  // rank ended and why, and the job must end with rank 1's exit code (2, bad input).
  double secs = 0;
  const int rc = launch(joined({mpirun(2),
                                {FOLDFARM_DIST_WORKER, "--dir", dir.string(), "--steps", "1500",
                                 "--fail-rank", "1", "--fail-step", "5"}}),
                        dir, {"FOLDFARM_COLLECTIVE_TIMEOUT=600"}, &secs);
  const std::string log = slurp(dir / "log");
  EXPECT_EQ(rc, 2) << log;
  ASSERT_EQ(resultCode(dir, 1), 2) << log;
  EXPECT_NE(slurp(dir / "result.1").find("rank 1 met a bad input at step 5"), std::string::npos);
  ASSERT_EQ(resultCode(dir, 0), 2) << log;
  const std::string msg = slurp(dir / "result.0");
  EXPECT_NE(msg.find("rank 1 ("), std::string::npos) << msg;
  EXPECT_NE(msg.find("ended with exit 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("its error: rank 1 met a bad input at step 5"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("did not finish within"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir / "final.pt"));
  EXPECT_LT(secs, 100.0) << "rank 0 must end when rank 1 leaves, not at the 600 s timeout\n" << log;
  fs::remove_all(dir);
}

// The same error in code that does not tell the others (no leaveOnError): the rank still
// departs, when its control plane is destroyed while the error unwinds, as one that ended
// with an error (exit 1, its message in its own output), not as one that ended normally.
TEST(DistFaults, AnErrorNotToldStillEndsTheOthersAtOnceAsAnError) {
  const fs::path dir = freshDir("fail_unwrapped");
  double secs = 0;
  const int rc = launch(joined({mpirun(2),
                                {FOLDFARM_DIST_WORKER, "--dir", dir.string(), "--steps", "1500",
                                 "--fail-rank", "1", "--fail-step", "5", "--unwrapped"}}),
                        dir, {"FOLDFARM_COLLECTIVE_TIMEOUT=600"}, &secs);
  const std::string log = slurp(dir / "log");
  EXPECT_EQ(rc, 1) << log;
  ASSERT_EQ(resultCode(dir, 1), 2) << log;
  ASSERT_EQ(resultCode(dir, 0), 1) << log;
  const std::string msg = slurp(dir / "result.0");
  EXPECT_NE(msg.find("rank 1 ("), std::string::npos) << msg;
  EXPECT_NE(msg.find("ended with exit 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("see that rank's output"), std::string::npos) << msg;
  EXPECT_LT(secs, 100.0) << "not at the 600 s timeout\n" << log;
  fs::remove_all(dir);
}

TEST(DistFaults, SignalOnOneRankStopsAllThenResumeOnOtherRankCount) {
  const fs::path dir = freshDir("preempt");
  const std::string worker = FOLDFARM_DIST_WORKER;
  // 2 ranks; SIGUSR1 to rank 1 after step 4: every rank must stop at the next step with 75.
  const int rc = launch(joined({mpirun(2),
                                {worker, "--dir", dir.string(), "--steps", "12", "--signal-rank",
                                 "1", "--signal-step", "4"}}),
                        dir, {"FOLDFARM_COLLECTIVE_TIMEOUT=30"});
  const std::string log = slurp(dir / "log");
  EXPECT_EQ(rc, 75) << log;
  EXPECT_EQ(resultCode(dir, 0), 75) << log;
  EXPECT_EQ(resultCode(dir, 1), 75) << log;
  // Both ranks ended after the same collective: their departures change nothing, and MPI
  // is finalised as usual (no abort).
  EXPECT_EQ(log.find("MPI_ABORT"), std::string::npos) << log;
  ASSERT_TRUE(fs::exists(dir / "ckpt.pt")) << log;
  EXPECT_FALSE(fs::exists(dir / "final.pt"));
  EXPECT_NE(slurp(dir / "result.0").find("stopped at step 5"), std::string::npos);

  // Resume on 1 rank (same global batch): continues from step 5 to the end.
  EXPECT_EQ(
      launch(joined({mpirun(1), {worker, "--dir", dir.string(), "--steps", "12", "--resume"}}),
             dir),
      0)
      << slurp(dir / "log");
  ASSERT_TRUE(fs::exists(dir / "final.pt"));

  // The same 12 steps alone, without interruption (no launcher: single process).
  const fs::path ref = freshDir("preempt_ref");
  ASSERT_EQ(launch({worker, "--dir", ref.string(), "--steps", "12"}, ref), 0) << slurp(ref / "log");
  const auto a = loadParams(dir / "final.pt");
  const auto b = loadParams(ref / "final.pt");
  for (size_t i = 0; i < a.size(); ++i) {
    const double rel = ((a[i] - b[i]).abs().max() / b[i].abs().max()).item<double>();
    EXPECT_LE(rel, 1e-5) << "parameter " << i;
  }
  fs::remove_all(dir);
  fs::remove_all(ref);
}
