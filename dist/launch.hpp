#pragma once
// How this process was launched: mpirun/mpiexec (Open MPI, MPICH/Hydra, Intel MPI), srun
// (Slurm), or alone. Read from the environment only, before MPI_Init, so that a command
// can decide whether to initialise MPI at all and which GPU (local rank) to take.
#include <string>

namespace foldfarm::dist {

enum class Launcher { kSingle, kOpenMpi, kMpich, kSlurm };

struct LaunchInfo {
  Launcher launcher = Launcher::kSingle;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string host;

  bool distributed() const { return world_size > 1 || launcher != Launcher::kSingle; }
};

// Precedence: Open MPI (OMPI_COMM_WORLD_*), MPICH/Hydra and Intel MPI (PMI_RANK/PMI_SIZE,
// MPI_LOCALRANKID), then Slurm (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, only inside a job
// step: SLURM_STEP_ID set), else single. Throws InputError on inconsistent values.
LaunchInfo detectLaunch();
const char* launcherName(Launcher l);

// The GPU (an index among the `visible_gpus` >= 1 this process sees) that the process of
// local rank `local_rank` trains on: one GPU per rank, local ranks round-robin over the visible
// ones (a negative, unknown local rank takes GPU 0). The one rule for the trainer's device
// and the NCCL communicator's: they must agree.
inline int gpuOfLocalRank(int local_rank, int visible_gpus) {
  return (local_rank > 0 ? local_rank : 0) % visible_gpus;
}

}  // namespace foldfarm::dist
