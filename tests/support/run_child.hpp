#pragma once
// Test support: run a command (foldfarm, mpirun, srun) from an argv with one thread per
// process (OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1) and a time limit.
#include <chrono>
#include <string>
#include <vector>

#include "core/base/process.hpp"

namespace foldfarm::testing {

inline ProcessResult runSingleThreaded(const std::vector<std::string>& argv, int timeout_s) {
  ProcessOptions o;
  o.timeout = std::chrono::seconds(timeout_s);
  o.extraEnv = {"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"};
  return runProcess(argv, o);
}

}  // namespace foldfarm::testing
