// A real OmniFold chain cut by its Slurm job's time limit, on the local one-node cluster,
// through the real commands (`foldfarm slurm submit`, which renders the array scripts with
// `--signal=B:USR1@<grace>`):
//   * every job gets `--time 1` (one minute, Slurm's smallest limit) and a 25 s grace.
//     slurmctld checks time limits every 30 s and sends the warning once
//     now + grace + 30 s >= end, so USR1 reaches the batch shell 5–35 s after the job
//     starts, and the limit itself (SIGTERM, then SIGKILL after KillWait) comes at least
//     25 s later — ample time to save at the next batch;
//   * the cut is certain only if the chain is still training 35 s into its first job, on
//     whatever machine runs the test. So the chain's size is not fixed: a short probe chain
//     measures this machine's seconds per epoch, and the chain is given enough epochs
//     (early stopping off) for about 75 s of training — twice the latest warning time —
//     which keeps the whole test near two minutes on fast and slow machines alike;
//   * the shell forwards it to `foldfarm campaign work`, the chain saves its state and exits
//     75, the job ends; `slurm submit` sees the task without a result back to pending and
//     submits it again, and the next job resumes from the saved state (possibly cut again);
//   * the final push weights equal, bit for bit, those of the same chain run uninterrupted
//     on the local executor (same spec, one thread).
// Skipped (77) when no local Slurm cluster can run here; skipped by GoogleTest when the
// foldfarm executable is not built.
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/data/h5_file.hpp"
#include "tests/slurm/slurm_fixture.hpp"

using namespace foldfarm;
using namespace foldfarm::slurm;
using namespace foldfarm::slurm::testing;
namespace fs = std::filesystem;

namespace {

struct PushWeights {
  std::vector<hsize_t> dims;
  std::vector<double> values;
};

// The `push` dataset (iterations × MC events) of a chain's weights.h5.
PushWeights readPush(const std::string& path) {
  data::H5Handle f = data::h5OpenRead(path);
  data::H5Handle d =
      FF_H5_OWN(H5Dopen2(f.get(), "push", H5P_DEFAULT), data::H5Kind::kDataset, path);
  PushWeights w;
  w.dims = data::h5Dims(d.get());
  size_t n = 1;
  for (hsize_t x : w.dims) n *= static_cast<size_t>(x);
  w.values.resize(n);
  FF_H5_CHECK(H5Dread(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.values.data()),
              path);
  return w;
}

std::string onlyTaskDir(const std::string& campaign) {
  std::vector<std::string> dirs;
  for (const auto& e : fs::directory_iterator(campaign + "/tasks")) {
    if (e.is_directory()) dirs.push_back(e.path().string());
  }
  return dirs.size() == 1 ? dirs[0] : std::string();
}

ProcessResult runFoldfarm(std::vector<std::string> args, int timeoutS) {
  args.insert(args.begin(), FOLDFARM_BINARY);
  ProcessOptions o;
  o.timeout = std::chrono::seconds(timeoutS);
  return runProcess(args, o);
}

// The chain settings of this test; `epochs` is also the patience (early stopping off), so
// the chain trains exactly `epochs` epochs per step.
nlohmann::json chainConfig(int epochs) {
  return {{"preset", "tiny"}, {"epochs", epochs}, {"patience", epochs}, {"batch_size", 100}};
}

// A one-task chain campaign `name` over dir/sim.h5 and dir/data.h5.
nlohmann::json chainSpec(const std::string& name, const std::string& dir, int iterations,
                         int epochs) {
  return {{"name", name},
          {"task", "chain"},
          {"replicas", 1},
          {"members", 1},
          {"seed", 4242},
          {"inputs", {{"mc", dir + "/sim.h5"}, {"data", dir + "/data.h5"}}},
          {"chain", {{"iterations", iterations}, {"config", chainConfig(epochs)}}},
          {"resources", {{"cpu_slots", 1}, {"threads_per_task", 1}}}};
}

// Runs a one-iteration, two-epoch chain on the local executor in dir/probe and returns the
// seconds of its fastest training epoch (from the chain's history.json): the first epochs
// carry warm-up, and the probe may run under more load than the chain, so the mean would
// plan too few epochs. Epoch time leaves out start-up, prediction and saving, so it
// underestimates the chain's wall time: the planned chain can only be longer than planned.
double probeEpochSeconds(const std::string& dir) {
  const nlohmann::json spec = chainSpec("probe", dir, 1, 2);
  std::ofstream(dir + "/probe.json") << spec.dump(2);
  const std::string camp = dir + "/probe";
  ProcessResult r = runFoldfarm({"campaign", "init", dir + "/probe.json", "--dir", camp}, 60);
  EXPECT_TRUE(r.ok()) << r.err;
  if (!r.ok()) return 0;
  r = runFoldfarm({"campaign", "run", camp, "--executor", "local"}, 300);
  EXPECT_TRUE(r.ok()) << r.describeFailure() << "\n" << r.err;
  if (!r.ok()) return 0;
  const std::string task = onlyTaskDir(camp);
  EXPECT_FALSE(task.empty()) << camp;
  if (task.empty()) return 0;
  const nlohmann::json history = nlohmann::json::parse(slurp(task + "/history.json"));
  double fastest = 0;
  int epochs = 0;
  for (const auto& step : history.at("steps")) {
    for (const auto& e : step.at("fit").at("history")) {
      const double s = e.at("seconds").get<double>();
      fastest = epochs == 0 ? s : std::min(fastest, s);
      ++epochs;
    }
  }
  EXPECT_EQ(epochs, 4) << "probe chain: 2 steps x 2 epochs expected in " << task << "/history.json";
  return fastest;
}

class SlurmChainTimeLimit : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(FOLDFARM_BINARY).empty() || !fs::exists(FOLDFARM_BINARY)) {
      GTEST_SKIP() << "foldfarm executable not built";
    }
    ensureLocalCluster();
    base_ = makeTempDir("ff-slurm-chain");
    // Slurm runs the job as root here, but keep the directory readable for any user.
    ::chmod(base_.c_str(), 0755);
  }
  void TearDown() override {
    if (!base_.empty()) cancelJobsUnder(base_);
    if (!base_.empty() && !HasFailure()) fs::remove_all(base_);
    if (HasFailure()) std::fprintf(stderr, "kept %s for inspection\n", base_.c_str());
  }
  std::string base_;
};

}  // namespace

TEST_F(SlurmChainTimeLimit, ChainCutByTheTimeLimitResumesToTheSameWeights) {
  for (const char* tune : {"sim", "data"}) {
    ProcessResult r =
        runFoldfarm({"data", "synth", "--kind", "unfold", "--events", "1000", "--tune", tune,
                     "--seed", tune[0] == 's' ? "11" : "12", "--out", base_ + "/" + tune + ".h5"},
                    120);
    ASSERT_TRUE(r.ok()) << r.err;
  }
  // Seconds per epoch here and now (the fastest), from a probe chain (1 iteration, 2 epochs
  // per step) on the same data and settings.
  const double epochSeconds = probeEpochSeconds(base_);
  ASSERT_GT(epochSeconds, 0.0);
  const int kIterations = 2;
  const double kTrainingTargetS = 90;  // > 2.5 x the 35 s by which the first warning arrives
  const int epochs = static_cast<int>(
      std::clamp(std::ceil(kTrainingTargetS / (2.0 * kIterations * epochSeconds)), 2.0, 200.0));
  const double plannedS = 2.0 * kIterations * epochs * epochSeconds;
  std::fprintf(stderr,
               "probe: %.2f s per epoch; chain of %d iterations x %d epochs per step, about %.0f s "
               "of training\n",
               epochSeconds, kIterations, epochs, plannedS);
  const nlohmann::json spec = chainSpec("cut-chain", base_, kIterations, epochs);
  { std::ofstream(base_ + "/spec.json") << spec.dump(2); }
  const std::string cut = base_ + "/cut", plain = base_ + "/plain";
  for (const std::string& d : {cut, plain}) {
    ProcessResult r = runFoldfarm({"campaign", "init", base_ + "/spec.json", "--dir", d}, 60);
    ASSERT_TRUE(r.ok()) << r.err;
  }

  // The uninterrupted reference, beside the Slurm run (the node has 2 CPUs).
  ProcessResult reference;
  std::thread ref([&] {
    reference = runFoldfarm({"campaign", "run", plain, "--executor", "local"}, 560);
  });

  ProcessResult sub =
      runFoldfarm({"slurm", "submit", cut, "--time", "1", "--signal-grace", "25", "--poll", "1",
                   "--poll-max", "2", "--max-submissions", "1", "--json"},
                  560);
  ref.join();
  ASSERT_TRUE(reference.ok()) << reference.describeFailure() << "\n" << reference.err;
  ASSERT_TRUE(sub.ok()) << sub.describeFailure() << "\n" << sub.err;
  nlohmann::json summary = nlohmann::json::parse(sub.out);
  std::fprintf(stderr, "slurm submit: %d submissions\n", summary.value("submissions", 0));
  EXPECT_EQ(summary["counts"].value("done", 0), 1) << sub.out;
  // Cut at least once: the chain needed more than one job.
  ASSERT_GE(summary.value("submissions", 0), 2)
      << "the chain finished inside its first 1-minute job, so the time limit never cut it: the "
         "probe "
         "measured "
      << epochSeconds << " s per epoch and planned " << plannedS
      << " s of training, but the chain ran more than twice as fast as the probe predicted; "
         "raise kTrainingTargetS\n"
      << sub.out << "\n"
      << sub.err;

  // The scripts asked for the warning, and a job ended interrupted (75) by it.
  bool askedForSignal = false, interruptedJob = false;
  for (const auto& e : fs::recursive_directory_iterator(cut + "/slurm")) {
    const std::string name = e.path().filename().string();
    if (name == "array.sbatch") {
      const std::string script = slurp(e.path().string());
      askedForSignal =
          askedForSignal || (script.find("#SBATCH --signal=B:USR1@25\n") != std::string::npos &&
                             script.find("#SBATCH --time=1\n") != std::string::npos);
    } else if (name.rfind("slurm-", 0) == 0) {
      interruptedJob = interruptedJob || slurp(e.path().string()).find("finished with status 75") !=
                                             std::string::npos;
    }
  }
  EXPECT_TRUE(askedForSignal);
  EXPECT_TRUE(interruptedJob) << "no job output under " << cut << "/slurm says it ended with 75";

  const std::string cutTask = onlyTaskDir(cut), plainTask = onlyTaskDir(plain);
  ASSERT_FALSE(cutTask.empty());
  ASSERT_FALSE(plainTask.empty());
  // The chain itself saw the stop and resumed from its saved state.
  const std::string log = slurp(cutTask + "/task.log");
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
  EXPECT_NE(log.find("resum"), std::string::npos) << log;

  PushWeights a = readPush(cutTask + "/weights.h5");
  PushWeights b = readPush(plainTask + "/weights.h5");
  ASSERT_EQ(a.dims, b.dims);
  ASSERT_EQ(a.dims.size(), 2u);
  EXPECT_EQ(a.dims[0], 2u);  // one push row per iteration
  double maxDiff = 0;
  for (size_t i = 0; i < a.values.size(); ++i)
    maxDiff = std::max(maxDiff, std::fabs(a.values[i] - b.values[i]));
  EXPECT_EQ(maxDiff, 0.0);
  EXPECT_EQ(std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(double)), 0)
      << "push weights differ bitwise";
}
