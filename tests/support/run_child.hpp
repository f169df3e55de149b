#pragma once
// Test support: run a command (foldfarm, mpirun, srun) from an argv with one thread per
// process (OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1) and a time limit; run the foldfarm under
// test (FOLDFARM_BINARY, defined for every test target).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
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

// `argv` started in the background with one thread per process, its stdout and stderr in the
// file `log`; the pid (its caller waits for it with waitExitWithin).
inline pid_t spawnLogged(const std::vector<std::string>& argv, const std::string& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("OMP_NUM_THREADS", "1", 1);
    ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

// The exit code of the child `pid` (128 + the signal that ended it); -1, having killed it, when
// it is still running after `timeout_s`.
inline int waitExitWithin(pid_t pid, int timeout_s) {
  for (int i = 0; i < timeout_s * 20; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
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
