#pragma once
// The build identity: which foldfarm made an output, exactly enough to cite it (its version,
// the commit it was built from, and how it was built). `foldfarm --version` prints it; every
// output that carries a result records it as its "build" object (a checkpoint's meta.json, a
// chain's result.json, an aggregation's summary.json and the root attribute "build" of its
// HDF5 files, the report's header).
//
// It is the same for every executable and test program of one build (the facts are fixed
// when the build is configured, the commit when it is built), and differs between builds:
// nothing compares it between outputs, so a campaign or a training that another build
// resumes goes on (it is recorded, not checked).
//
// The commit comes from build_commit.cpp, which cmake/FoldfarmBuildCommit.cmake writes at
// every build only when its content changes: a new commit recompiles that one file and relinks
// the programs, nothing else. Torch-free, no MPI call (the MPI named is the one whose headers
// the build compiled against). Thread-safe: every function reads constant data.
#include <string>

#include <nlohmann/json.hpp>

namespace foldfarm {

struct BuildInfo {
  std::string version;  // FOLDFARM_VERSION, "0.1.0"
  // The short hash of the commit the work tree was at when this build was made, with
  // "-dirty" when tracked files differed from it (git describe's rule: untracked files do
  // not count); "unknown" when the source tree is no git checkout (a tarball) or git could
  // not read it.
  std::string commit;
  std::string build_type;      // CMAKE_BUILD_TYPE ("Release"), "" when none was set
  std::string compiler;        // the C++ compiler, "GNU 12.2.0"
  int cxx_standard = 0;        // 17 or 20
  std::string libtorch;        // LibTorch's TORCH_VERSION, "" when built without LibTorch
  bool libtorch_cuda = false;  // that LibTorch has CUDA
  bool cuda_kernels = false;   // foldfarm's own CUDA kernels are compiled in
  std::string cuda_compiler;   // the CUDA compiler of those kernels, "" without them
  bool nccl = false;           // the NCCL communicator is compiled in
  std::string mpi;             // the MPI library of the headers, "Open MPI 4.1.4 (MPI 3.1)"
};

// This build's identity.
const BuildInfo& buildInfo();

// The "build" object outputs record: {"version", "commit", "build_type", "compiler",
// "cxx_standard", "libtorch" (null without LibTorch), "libtorch_cuda", "cuda_kernels",
// "cuda_compiler" (null without the kernels), "nccl", "mpi"}.
nlohmann::json buildInfoJson();

// What `foldfarm --version` prints: "foldfarm X.Y.Z" on the first line (what scripts read),
// then one "item: value" line per fact ("commit: e74c839"); no newline at the end.
std::string buildVersionText();

// One line naming the build a recorded "build" object describes, for a person (a report, a
// log line): "foldfarm 0.1.0, commit e74c839-dirty"; "" when `build` is not an object.
std::string buildLine(const nlohmann::json& build);

}  // namespace foldfarm
