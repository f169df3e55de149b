#include "core/mpi/check.hpp"

#include <mpi.h>

#include <atomic>

#include "core/base/error.hpp"

namespace foldfarm::dist {
namespace {
std::atomic<int> g_rank{-1};
}

static_assert(MPI_SUCCESS == 0, "FF_MPI_CHECK compares against 0");

void setErrorRank(int rank) noexcept {
  g_rank.store(rank);
}
int errorRank() noexcept {
  return g_rank.load();
}

std::string processLabel() {
  std::string s = hostName();
  const int r = g_rank.load();
  if (r >= 0) s += " r" + std::to_string(r);
  return s;
}

void throwCallError(const char* library, const char* call, const char* file, int line,
                    const std::string& reason) {
  throw Error(std::string(call) + " failed at " + file + ":" + std::to_string(line) + " [" +
              processLabel() + "]: " + library + ": " + reason);
}

std::string mpiErrorString(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buf, static_cast<size_t>(len));
}

}  // namespace foldfarm::dist
