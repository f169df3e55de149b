#pragma once
// spawnProcess: the one fork/exec of foldfarm. runProcess (helper programs it waits for:
// sbatch, gnuplot, mpirun, …) and ChildProcess (the local executor's workers, which it talks
// to through pipes) start their children through it, so both get the same safeguards: no
// shell, everything prepared before fork, standard streams that survive a pipe end that
// already was 0, 1 or 2, a parent-death signal, and a chdir or exec failure reported with
// its errno instead of an "exit 127".
//
// Thread-safety: may be called from several threads; the descriptors it creates are
// close-on-exec, so a child started by another thread meanwhile inherits none of them.
#include <signal.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "core/base/fd.hpp"

namespace foldfarm {

// A pipe whose two ends are close-on-exec (a child gets one only through SpawnOptions).
struct Pipe {
  Fd read, write;
};
// Throws Error naming `what` when pipe2 fails.
Pipe makePipe(const std::string& what);

struct SpawnOptions {
  // NAME=value entries added to this process's environment (replacing a NAME it has).
  std::vector<std::string> extraEnv;
  // Names in this process's environment that the child does not inherit (extraEnv still sets
  // its own).
  std::vector<std::string> unsetEnv;
  std::string cwd;  // "" = ours
  // The child's standard streams (its 0, 1, 2): -1 gives stdin /dev/null and leaves stdout
  // and stderr ours. The descriptors stay the caller's (close your copy after the call).
  int stdinFd = -1;
  int stdoutFd = -1;
  int stderrFd = -1;
  // The child leads a process group of its own (set in the child and in the parent, so that
  // a signal to the group right after the call cannot miss it).
  bool ownProcessGroup = false;
  // The child's blocked signals: none unless given. Stop signals held here reach a program
  // once it has installed its handlers (a worker: kSignalsHeldEnv).
  std::optional<sigset_t> signalMask;
  // SIGINT, SIGTERM, SIGUSR1 and SIGPIPE back to their default action (an ignored signal
  // stays ignored across exec).
  bool defaultSignals = true;
  // The program in messages: "cannot start <what>: …" ("'argv[0]'" when empty).
  std::string what;
};

// Starts argv[0] (a path: no PATH lookup; see findProgram) with argv, and returns its pid once
// the exec has succeeded. The child gets SIGTERM when the calling thread's process dies
// (PR_SET_PDEATHSIG). Throws Error naming the program (and cwd) and why when fork, chdir or
// exec fail; the child is then reaped.
pid_t spawnProcess(const std::vector<std::string>& argv, const SpawnOptions& options);

// "signal 11 (Segmentation fault)".
std::string describeSignal(int sig);
// "exit 3", "signal 11 (Segmentation fault)" from a wait status.
std::string describeWaitStatus(int status);

}  // namespace foldfarm
