#pragma once
// Data-plane backends in order of preference, each saying whether it can run in this
// process (Horovod's operation manager): the first enabled one is used, unless the user
// names one (--dist-backend / FOLDFARM_DIST_BACKEND). Compile-time switches stay here, at
// the edge: NCCL is listed only when foldfarm was built with it.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.hpp"
#include "dist/launch.hpp"

namespace foldfarm::dist {

class ControlPlane;

struct CommBackend {
  std::string name;
  std::string description;
  // Empty when the backend can run here, else why not (shown when it is asked for).
  std::function<std::string(const LaunchInfo&)> unavailableReason;
  // (collective) Builds the communicator; all ranks call this with the same backend.
  std::function<std::unique_ptr<Communicator>(ControlPlane&, const LaunchInfo&)> create;
};

const std::vector<CommBackend>& commBackends();

// (collective) `requested`: "auto" (first enabled) or a backend name. Throws InputError
// for an unknown name, or one that cannot run here (with its reason).
std::unique_ptr<Communicator> createCommunicator(const std::string& requested,
                                                 ControlPlane& control, const LaunchInfo& launch);

#ifdef FOLDFARM_HAVE_NCCL
// dist/nccl_communicator.cpp
CommBackend ncclBackend();
#endif

}  // namespace foldfarm::dist
