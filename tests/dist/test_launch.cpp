// Launch detection decides whether a command initialises MPI and which GPU it takes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.hpp"
#include "core/train/device.hpp"
#include "dist/launch.hpp"
#include "dist/make_context.hpp"

using foldfarm::dist::detectLaunch;
using foldfarm::dist::gpuOfLocalRank;
using foldfarm::dist::Launcher;

namespace {

void clearLaunchEnv() {
  for (const char* v :
       {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
        "PMI_LOCAL_RANK", "PMI_LOCAL_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
        "SLURM_STEP_ID", "SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_NODEID",
        "LOCAL_RANK"}) {
    unsetenv(v);
  }
}

}  // namespace

TEST(Launch, AloneIsSingle) {
  clearLaunchEnv();
  const auto info = detectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kSingle);
  EXPECT_FALSE(info.distributed());
  EXPECT_EQ(info.world_size, 1);
}

TEST(Launch, OpenMpi) {
  clearLaunchEnv();
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "8", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
  const auto info = detectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_TRUE(info.distributed());
}

TEST(Launch, MpichHydra) {
  clearLaunchEnv();
  setenv("PMI_RANK", "1", 1);
  setenv("PMI_SIZE", "2", 1);
  setenv("MPI_LOCALRANKID", "1", 1);
  const auto info = detectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kMpich);
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.local_rank, 1);
}

TEST(Launch, SrunOnlyInsideAStep) {
  clearLaunchEnv();
  setenv("SLURM_PROCID", "5", 1);
  setenv("SLURM_NTASKS", "6", 1);
  setenv("SLURM_LOCALID", "1", 1);
  // A batch shell has SLURM_PROCID=0 too, but is not a task of a step.
  EXPECT_EQ(detectLaunch().launcher, Launcher::kSingle);
  setenv("SLURM_STEP_ID", "0", 1);
  const auto info = detectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kSlurm);
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 6);
  EXPECT_EQ(info.local_rank, 1);
}

// srun -n2 without --ntasks-per-node sets only SLURM_STEP_TASKS_PER_NODE.
TEST(Launch, SrunTasksOnThisNode) {
  clearLaunchEnv();
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_PROCID", "1", 1);
  setenv("SLURM_NTASKS", "2", 1);
  setenv("SLURM_LOCALID", "1", 1);
  setenv("SLURM_STEP_TASKS_PER_NODE", "2", 1);
  EXPECT_EQ(detectLaunch().local_size, 2);
  setenv("SLURM_NTASKS", "14", 1);
  setenv("SLURM_STEP_TASKS_PER_NODE", "4(x3),2", 1);
  setenv("SLURM_NODEID", "3", 1);
  EXPECT_EQ(detectLaunch().local_size, 2);
  setenv("SLURM_NODEID", "1", 1);
  EXPECT_EQ(detectLaunch().local_size, 4);
  setenv("SLURM_STEP_TASKS_PER_NODE", "4(x", 1);  // unreadable: falls back
  setenv("SLURM_NTASKS_PER_NODE", "3", 1);
  EXPECT_EQ(detectLaunch().local_size, 3);
  clearLaunchEnv();
}

// srun --mpi=pmi2 sets PMI_RANK and PMI_SIZE but no local rank: the node's ranks and their
// number are Slurm's (before: local rank 0 on every rank, all on the node's first GPU).
TEST(Launch, SrunWithPmi2TakesTheLocalRankFromSlurm) {
  clearLaunchEnv();
  setenv("PMI_RANK", "5", 1);
  setenv("PMI_SIZE", "8", 1);
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_PROCID", "5", 1);
  setenv("SLURM_NTASKS", "8", 1);
  setenv("SLURM_LOCALID", "1", 1);
  setenv("SLURM_STEP_TASKS_PER_NODE", "4(x2)", 1);
  auto info = detectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kMpich);
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_size, 4);
  // MPICH's own numbers, where its launcher sets them, stand.
  setenv("MPI_LOCALRANKID", "3", 1);
  setenv("MPI_LOCALNRANKS", "6", 1);
  info = detectLaunch();
  EXPECT_EQ(info.local_rank, 3);
  EXPECT_EQ(info.local_size, 6);
  clearLaunchEnv();
}

TEST(Launch, InconsistentIsBadInput) {
  clearLaunchEnv();
  setenv("OMPI_COMM_WORLD_RANK", "4", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  EXPECT_THROW(detectLaunch(), foldfarm::InputError);
  setenv("OMPI_COMM_WORLD_RANK", "x", 1);
  EXPECT_THROW(detectLaunch(), foldfarm::InputError);
  clearLaunchEnv();
}

// The GPU a rank trains on (core/train/device) and the one its NCCL communicator takes
// (dist/nccl_communicator) are both local rank modulo the visible GPUs: they must read the
// same local rank, or the model and its collectives sit on different GPUs. Before, the
// device code read the environment itself and disagreed where launchers leave more than
// one trace (an srun step inside which MPI_LOCALRANKID is set; LOCAL_RANK in the shell of a
// process started alone).
TEST(Launch, ARanksGpuIsTheOneItsCommunicatorTakes) {
  struct Case {
    const char* what;
    std::vector<std::pair<const char*, const char*>> env;
    int local_rank;
  };
  const std::vector<Case> cases = {
      {"alone", {}, 0},
      {"alone, LOCAL_RANK in the shell", {{"LOCAL_RANK", "5"}}, 0},
      {"alone, MPI_LOCALRANKID without PMI_RANK", {{"MPI_LOCALRANKID", "3"}}, 0},
      {"Open MPI",
       {{"OMPI_COMM_WORLD_RANK", "5"},
        {"OMPI_COMM_WORLD_SIZE", "8"},
        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
        {"LOCAL_RANK", "3"}},
       1},
      {"MPICH, PMI_LOCAL_RANK only",
       {{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}, {"PMI_LOCAL_RANK", "2"}},
       2},
      {"srun step, MPI_LOCALRANKID left by an outer launcher",
       {{"SLURM_STEP_ID", "0"},
        {"SLURM_PROCID", "6"},
        {"SLURM_NTASKS", "8"},
        {"SLURM_LOCALID", "2"},
        {"MPI_LOCALRANKID", "0"}},
       2},
      {"batch shell, not a step", {{"SLURM_PROCID", "0"}, {"SLURM_LOCALID", "1"}}, 0},
      {"srun --mpi=pmi2: PMI_RANK and PMI_SIZE alone, the node's ranks Slurm's",
       {{"PMI_RANK", "5"},
        {"PMI_SIZE", "8"},
        {"SLURM_STEP_ID", "0"},
        {"SLURM_PROCID", "5"},
        {"SLURM_NTASKS", "8"},
        {"SLURM_LOCALID", "1"}},
       1},
  };
  for (const Case& c : cases) {
    clearLaunchEnv();
    for (const auto& [k, v] : c.env) setenv(k, v, 1);
    EXPECT_EQ(detectLaunch().local_rank, c.local_rank) << c.what;
    const foldfarm::DeviceFacts f = foldfarm::probeDeviceFacts();
    EXPECT_EQ(f.local_rank, c.local_rank) << c.what;
    // On a node that sees 4 GPUs, the GPU is the one the communicator's local rank modulo
    // the device count gives.
    foldfarm::DeviceFacts node = f;
    node.torch_cuda = true;
    node.visible_gpus = 4;
    node.cvd_set = false;
    EXPECT_EQ(foldfarm::resolveDevice(foldfarm::DeviceRequest::kCuda, node).device.index(),
              gpuOfLocalRank(c.local_rank, 4))
        << c.what;
    EXPECT_EQ(gpuOfLocalRank(c.local_rank, 4), c.local_rank % 4) << c.what;
  }
  clearLaunchEnv();
  // One rule for both, also for a local rank nothing told (negative): GPU 0 (before, the
  // communicator's own modulo gave -1 there, and the device code 0).
  foldfarm::DeviceFacts unknown;
  unknown.torch_cuda = true;
  unknown.visible_gpus = 4;
  unknown.local_rank = -1;
  EXPECT_EQ(gpuOfLocalRank(-1, 4), 0);
  EXPECT_EQ(foldfarm::resolveDevice(foldfarm::DeviceRequest::kCuda, unknown).device.index(),
            gpuOfLocalRank(-1, 4));
  EXPECT_EQ(gpuOfLocalRank(9, 4), 1);
}

// The data-parallel settings from the environment: a value beyond its range names the
// variable (before: FOLDFARM_BUCKET_CAP_MB=1e308 overflowed the cast of its bytes to size_t).
TEST(DistOptions, EnvironmentValuesOutOfRangeNameTheVariable) {
  setenv("FOLDFARM_BUCKET_CAP_MB", "50", 1);
  EXPECT_EQ(foldfarm::dist::distOptionsFromEnv().buckets.bucket_cap_bytes, size_t{50} << 20);
  for (const char* bad : {"1e308", "inf", "0", "-3", "nan", "25MB"}) {
    setenv("FOLDFARM_BUCKET_CAP_MB", bad, 1);
    try {
      foldfarm::dist::distOptionsFromEnv();
      ADD_FAILURE() << bad << " accepted";
    } catch (const foldfarm::InputError& e) {
      EXPECT_NE(std::string(e.what()).find("FOLDFARM_BUCKET_CAP_MB"), std::string::npos) << bad;
    }
  }
  unsetenv("FOLDFARM_BUCKET_CAP_MB");
  setenv("FOLDFARM_COLLECTIVE_TIMEOUT", "inf", 1);  // never time out: allowed
  EXPECT_TRUE(std::isinf(foldfarm::dist::distOptionsFromEnv().collective_timeout_s));
  unsetenv("FOLDFARM_COLLECTIVE_TIMEOUT");
}

// An option given on the command line replaces its variable, which is then not read: a
// malformed one beside it is no error (before: `--bucket-cap-mb 10` with
// FOLDFARM_BUCKET_CAP_MB=25MB in the job's environment was refused, naming the variable).
TEST(DistOptions, AnOptionGivenReplacesItsVariableUnread) {
  setenv("FOLDFARM_BUCKET_CAP_MB", "25MB", 1);
  setenv("FOLDFARM_COLLECTIVE_TIMEOUT", "soon", 1);
  setenv("FOLDFARM_DIST_BACKEND", "nccl", 1);
  foldfarm::dist::DistOverrides given;
  given.bucket_cap_mb = 10;
  given.collective_timeout_s = 30;
  given.backend = "mpi";
  const foldfarm::dist::DistOptions o = foldfarm::dist::distOptionsFromEnv(given);
  EXPECT_EQ(o.buckets.bucket_cap_bytes, size_t{10} << 20);
  EXPECT_EQ(o.collective_timeout_s, 30);
  EXPECT_EQ(o.backend, "mpi");
  // Not given: the variable is read, and a malformed one refused.
  given.bucket_cap_mb.reset();
  EXPECT_THROW(foldfarm::dist::distOptionsFromEnv(given), foldfarm::InputError);
  given.bucket_cap_mb = 10;
  given.collective_timeout_s.reset();
  EXPECT_THROW(foldfarm::dist::distOptionsFromEnv(given), foldfarm::InputError);
  given.collective_timeout_s = 30;
  given.backend.reset();
  EXPECT_EQ(foldfarm::dist::distOptionsFromEnv(given).backend, "nccl");
  unsetenv("FOLDFARM_BUCKET_CAP_MB");
  unsetenv("FOLDFARM_COLLECTIVE_TIMEOUT");
  unsetenv("FOLDFARM_DIST_BACKEND");
}
