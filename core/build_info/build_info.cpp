#include "core/build_info/build_info.hpp"

// The MPI library's name and version are read from its header's macros alone: no MPI call is
// made (and none of the C++ bindings some MPI headers pull in).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

namespace foldfarm {

namespace build_detail {
// Defined in build_commit.cpp, written at build time (cmake/FoldfarmBuildCommit.cmake).
const char* commit();
}  // namespace build_detail

namespace {

#define FOLDFARM_TEXT_OF(x) #x
#define FOLDFARM_TEXT(x) FOLDFARM_TEXT_OF(x)

// The implementation the header belongs to; MPICH's derivatives define MPICH_VERSION too, and
// are named first.
std::string mpiLibrary() {
  std::string name;
#if defined(OMPI_MAJOR_VERSION)
  name = "Open MPI " FOLDFARM_TEXT(OMPI_MAJOR_VERSION) "." FOLDFARM_TEXT(
      OMPI_MINOR_VERSION) "." FOLDFARM_TEXT(OMPI_RELEASE_VERSION);
#elif defined(I_MPI_VERSION)
  name = "Intel MPI " I_MPI_VERSION;
#elif defined(MVAPICH2_VERSION)
  name = "MVAPICH2 " MVAPICH2_VERSION;
#elif defined(MPICH_VERSION)
  name = "MPICH " MPICH_VERSION;
#else
  name = "unknown MPI library";
#endif
  return name + " (MPI " FOLDFARM_TEXT(MPI_VERSION) "." FOLDFARM_TEXT(MPI_SUBVERSION) ")";
}

BuildInfo makeBuildInfo() {
  BuildInfo b;
  b.version = FOLDFARM_VERSION;
  b.commit = build_detail::commit();
  b.build_type = FOLDFARM_BUILD_TYPE;
  b.compiler = FOLDFARM_BUILD_COMPILER;
  b.cxx_standard = FOLDFARM_BUILD_CXX_STANDARD;
  b.libtorch = FOLDFARM_BUILD_LIBTORCH;
  b.libtorch_cuda = FOLDFARM_BUILD_LIBTORCH_CUDA != 0;
  b.cuda_kernels = FOLDFARM_BUILD_CUDA_KERNELS != 0;
  b.cuda_compiler = FOLDFARM_BUILD_CUDA_COMPILER;
  b.nccl = FOLDFARM_BUILD_NCCL != 0;
  b.mpi = mpiLibrary();
  return b;
}

nlohmann::json textOrNull(const std::string& s) {
  return s.empty() ? nlohmann::json() : nlohmann::json(s);
}

const char* yesNo(bool b) {
  return b ? "yes" : "no";
}

}  // namespace

const BuildInfo& buildInfo() {
  static const BuildInfo info = makeBuildInfo();
  return info;
}

nlohmann::json buildInfoJson() {
  const BuildInfo& b = buildInfo();
  return {{"version", b.version},
          {"commit", b.commit},
          {"build_type", b.build_type},
          {"compiler", b.compiler},
          {"cxx_standard", b.cxx_standard},
          {"libtorch", textOrNull(b.libtorch)},
          {"libtorch_cuda", b.libtorch_cuda},
          {"cuda_kernels", b.cuda_kernels},
          {"cuda_compiler", textOrNull(b.cuda_compiler)},
          {"nccl", b.nccl},
          {"mpi", b.mpi}};
}

std::string buildVersionText() {
  const BuildInfo& b = buildInfo();
  std::string text = "foldfarm " + b.version;
  const auto line = [&](const char* item, const std::string& value) {
    text += std::string("\n") + item + ": " + value;
  };
  line("commit", b.commit);
  line("build type", b.build_type.empty() ? "none" : b.build_type);
  line("compiler", b.compiler + " (C++" + std::to_string(b.cxx_standard) + ")");
  line("LibTorch",
       b.libtorch.empty() ? "none" : b.libtorch + (b.libtorch_cuda ? " (CUDA)" : " (CPU only)"));
  line("CUDA kernels", b.cuda_kernels ? "yes (" + b.cuda_compiler + ")" : "no");
  line("NCCL", yesNo(b.nccl));
  line("MPI", b.mpi);
  return text;
}

std::string buildLine(const nlohmann::json& build) {
  if (!build.is_object()) return "";
  const auto text = [&](const char* key) {
    const auto it = build.find(key);
    return it != build.end() && it->is_string() ? it->get<std::string>() : std::string("?");
  };
  return "foldfarm " + text("version") + ", commit " + text("commit");
}

}  // namespace foldfarm
