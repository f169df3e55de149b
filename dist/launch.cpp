#include "dist/launch.hpp"

#include <cstdlib>
#include <string>

#include "core/base/error.hpp"

namespace foldfarm::dist {
namespace {

bool envInt(const char* name, int* out) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return false;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < 0 || x > (1 << 30)) {
    throw InputError(std::string("environment variable ") + name + "='" + v +
                     "' is not a non-negative integer");
  }
  *out = static_cast<int>(x);
  return true;
}

}  // namespace

const char* launcherName(Launcher l) {
  switch (l) {
    case Launcher::kSingle:
      return "single";
    case Launcher::kOpenMpi:
      return "openmpi";
    case Launcher::kMpich:
      return "mpich";
    case Launcher::kSlurm:
      return "slurm";
  }
  return "?";
}

LaunchInfo detectLaunch() {
  LaunchInfo info;
  info.host = hostName();
  int r = 0, n = 0;
  if (envInt("OMPI_COMM_WORLD_RANK", &r) && envInt("OMPI_COMM_WORLD_SIZE", &n)) {
    info.launcher = Launcher::kOpenMpi;
    info.rank = r;
    info.world_size = n;
    envInt("OMPI_COMM_WORLD_LOCAL_RANK", &info.local_rank);
    envInt("OMPI_COMM_WORLD_LOCAL_SIZE", &info.local_size);
  } else if (envInt("PMI_RANK", &r) && envInt("PMI_SIZE", &n)) {
    info.launcher = Launcher::kMpich;
    info.rank = r;
    info.world_size = n;
    if (!envInt("MPI_LOCALRANKID", &info.local_rank)) envInt("PMI_LOCAL_RANK", &info.local_rank);
    if (!envInt("MPI_LOCALNRANKS", &info.local_size)) envInt("PMI_LOCAL_SIZE", &info.local_size);
  } else if (std::getenv("SLURM_STEP_ID") != nullptr && envInt("SLURM_PROCID", &r) &&
             envInt("SLURM_NTASKS", &n)) {
    info.launcher = Launcher::kSlurm;
    info.rank = r;
    info.world_size = n;
    envInt("SLURM_LOCALID", &info.local_rank);
    int tasks_on_node = 0;
    if (envInt("SLURM_NTASKS_PER_NODE", &tasks_on_node)) info.local_size = tasks_on_node;
  }
  if (info.world_size < 1 || info.rank >= info.world_size) {
    throw InputError("launcher environment is inconsistent: rank " + std::to_string(info.rank) +
                     " of " + std::to_string(info.world_size) + " (" + launcherName(info.launcher) +
                     ")");
  }
  return info;
}

}  // namespace foldfarm::dist
