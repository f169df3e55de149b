#pragma once
// Checked calls into MPI (and, in nccl_*.cpp, NCCL and CUDA). Every status that is not
// success becomes a foldfarm::Error carrying the call, file:line, this process's rank and
// host, and the library's reason:
//   "MPI_Iallreduce(...) failed at dist/mpi_communicator.cpp:88 [node17 r1]: MPI_ERR_TRUNCATE: ..."
#include <string>

namespace foldfarm::dist {

// The rank shown in error messages (set once the launch is known; -1 before).
void setErrorRank(int rank) noexcept;
int errorRank() noexcept;
// "host r<rank>" (or "host" before the rank is known).
std::string processLabel();

[[noreturn]] void throwCallError(const char* library, const char* call, const char* file, int line,
                                 const std::string& reason);
std::string mpiErrorString(int code);

}  // namespace foldfarm::dist

#define FF_MPI_CHECK(expr)                                                            \
  do {                                                                                \
    const int ff_mpi_rc_ = (expr);                                                    \
    if (ff_mpi_rc_ != 0 /* MPI_SUCCESS */)                                            \
      ::foldfarm::dist::throwCallError("MPI", #expr, __FILE__, __LINE__,              \
                                       ::foldfarm::dist::mpiErrorString(ff_mpi_rc_)); \
  } while (0)
