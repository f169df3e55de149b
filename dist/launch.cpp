#include "dist/launch.hpp"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

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

// Tasks of this step on this node from SLURM_STEP_TASKS_PER_NODE ("2", "4(x3),2": per
// node of the step, in node order), taking entry SLURM_NODEID when the counts differ.
// 0 when the variable is absent or unreadable.
int slurmStepTasksOnThisNode() {
  const char* v = std::getenv("SLURM_STEP_TASKS_PER_NODE");
  if (v == nullptr) return 0;
  std::vector<int> per_node;
  const std::string s(v);
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t used = 0;
    int count = 0, repeat = 1;
    try {
      count = std::stoi(s.substr(pos), &used);
      pos += used;
      if (s.compare(pos, 2, "(x") == 0) {
        repeat = std::stoi(s.substr(pos + 2), &used);
        pos += 2 + used;
        if (pos >= s.size() || s[pos] != ')') return 0;
        ++pos;
      }
    } catch (const std::exception&) {
      return 0;
    }
    if (count < 1 || repeat < 1 || repeat > (1 << 20)) return 0;
    per_node.insert(per_node.end(), static_cast<std::size_t>(repeat), count);
    if (pos < s.size() && s[pos] != ',') return 0;
    if (pos < s.size()) ++pos;
  }
  if (per_node.empty()) return 0;
  if (std::all_of(per_node.begin(), per_node.end(), [&](int c) { return c == per_node[0]; }))
    return per_node[0];
  int node = 0;
  if (!envInt("SLURM_NODEID", &node) || node >= static_cast<int>(per_node.size())) return 0;
  return per_node[static_cast<std::size_t>(node)];
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
    const bool local_rank =
        envInt("MPI_LOCALRANKID", &info.local_rank) || envInt("PMI_LOCAL_RANK", &info.local_rank);
    const bool local_size =
        envInt("MPI_LOCALNRANKS", &info.local_size) || envInt("PMI_LOCAL_SIZE", &info.local_size);
    // srun --mpi=pmi2 sets PMI_RANK and PMI_SIZE alone: the node's ranks are Slurm's (before:
    // every rank took local rank 0, and so the node's first GPU).
    if (std::getenv("SLURM_STEP_ID") != nullptr) {
      if (!local_rank) envInt("SLURM_LOCALID", &info.local_rank);
      int tasks_on_node = 0;
      if (!local_size && (tasks_on_node = slurmStepTasksOnThisNode()) > 0)
        info.local_size = tasks_on_node;
    }
  } else if (std::getenv("SLURM_STEP_ID") != nullptr && envInt("SLURM_PROCID", &r) &&
             envInt("SLURM_NTASKS", &n)) {
    info.launcher = Launcher::kSlurm;
    info.rank = r;
    info.world_size = n;
    envInt("SLURM_LOCALID", &info.local_rank);
    int tasks_on_node = slurmStepTasksOnThisNode();
    if (tasks_on_node > 0 || envInt("SLURM_NTASKS_PER_NODE", &tasks_on_node))
      info.local_size = tasks_on_node;
  }
  if (info.world_size < 1 || info.rank >= info.world_size) {
    throw InputError("launcher environment is inconsistent: rank " + std::to_string(info.rank) +
                     " of " + std::to_string(info.world_size) + " (" + launcherName(info.launcher) +
                     ")");
  }
  return info;
}

}  // namespace foldfarm::dist
