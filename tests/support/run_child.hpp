#pragma once
// Test support: run a command (foldfarm, mpirun, srun) from an argv with one thread per
// process (OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1) and a time limit; run the foldfarm under
// test (FOLDFARM_BINARY, defined for every test target).
#include <chrono>
#include <sstream>
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

// `foldfarm --log-level warn ARGS` (FOLDFARM_BINARY) in `cwd`, with `env` (NAME=value)
// added to this process's environment.
inline ProcessResult runFoldfarm(const std::vector<std::string>& args, const std::string& cwd,
                                 const std::vector<std::string>& env = {}, int timeout_s = 300) {
  std::vector<std::string> argv = {FOLDFARM_BINARY, "--log-level", "warn"};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions o;
  o.extraEnv = env;
  o.cwd = cwd;
  o.timeout = std::chrono::seconds(timeout_s);
  return runProcess(argv, o);
}

// The lines of `err` that are foldfarm's errors ("foldfarm: error: ..."): one per failure
// that a command reports, and one only when mpirun's ranks agree that rank 0 says it.
inline int errorLines(const std::string& err) {
  std::istringstream in(err);
  int n = 0;
  for (std::string l; std::getline(in, l);) n += l.rfind("foldfarm: error:", 0) == 0;
  return n;
}

}  // namespace foldfarm::testing
