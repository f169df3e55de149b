#include "dist/backend_registry.hpp"

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "dist/control_plane.hpp"
#include "dist/mpi_communicator.hpp"

namespace foldfarm::dist {
namespace {

CommBackend mpiBackend() {
  CommBackend b;
  b.name = "mpi";
  b.description = "MPI non-blocking collectives on CPU tensors";
  b.unavailableReason = [](const LaunchInfo&) { return std::string(); };
  b.create = [](ControlPlane&, const LaunchInfo&) -> std::unique_ptr<Communicator> {
    return std::make_unique<MpiCommunicator>();
  };
  return b;
}

}  // namespace

const std::vector<CommBackend>& commBackends() {
  static const std::vector<CommBackend> list = [] {
    std::vector<CommBackend> v;
#ifdef FOLDFARM_HAVE_NCCL
    v.push_back(ncclBackend());
#endif
    v.push_back(mpiBackend());
    return v;
  }();
  return list;
}

std::unique_ptr<Communicator> createCommunicator(const std::string& requested,
                                                 ControlPlane& control, const LaunchInfo& launch) {
  std::string names;
  for (const CommBackend& b : commBackends()) {
    names += (names.empty() ? "" : ", ") + b.name;
    if (requested != "auto" && requested != b.name) continue;
    const std::string why = b.unavailableReason(launch);
    if (!why.empty()) {
      if (requested == b.name) {
        throw InputError("communication backend '" + requested + "' cannot run here: " + why);
      }
      logDebug("backend {} skipped: {}", b.name, why);
      continue;
    }
    // Every rank must pick the same backend: a mixed job would deadlock in the first
    // collective. Agree on it (the choice of rank 0 must be possible everywhere).
    const std::uint64_t index = static_cast<std::uint64_t>(&b - commBackends().data());
    const std::vector<std::uint64_t> all = control.allgather(index);
    for (size_t r = 0; r < all.size(); ++r) {
      if (all[r] != index) {
        throw Error("ranks disagree on the communication backend: rank 0 chose '" +
                    commBackends()[all[0]].name + "', rank " + std::to_string(r) + " chose '" +
                    commBackends()[all[r]].name + "'; give --dist-backend explicitly");
      }
    }
    logInfo("data-parallel backend: {} ({}), {} ranks", b.name, b.description, control.worldSize());
    return b.create(control, launch);
  }
  throw InputError("unknown communication backend '" + requested + "' (available: auto, " + names +
                   ")");
}

}  // namespace foldfarm::dist
