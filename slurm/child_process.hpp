#pragma once
// Runs a program as a child process with an explicit argv (never through a shell) and
// collects its exit status, stdout and stderr. The Slurm client commands (sbatch, squeue,
// scontrol, scancel) all go through here, so no value a user typed is ever parsed by a
// shell on the submitting side.
//
// Thread-safety: runProcess may be called from several threads; each call owns its pipes
// and its child and reaps the child before returning.
#include <chrono>
#include <string>
#include <vector>

namespace foldfarm::slurm {

struct ProcessResult {
  std::vector<std::string> argv;
  int exitCode = -1;    // the exit status, or -1 when ended by a signal
  int termSignal = 0;   // the signal that ended it (0: exited normally)
  bool timedOut = false;
  std::string out;
  std::string err;

  bool ok() const { return exitCode == 0; }
  // "sbatch --parsable x.sh" for messages.
  std::string commandLine() const;
  // One line describing how it ended and the first line of stderr, for error messages.
  std::string describeFailure() const;
};

struct ProcessOptions {
  // The child is sent SIGTERM, then SIGKILL after 2 s, when it runs longer than this.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // Appended to the inherited environment as NAME=value entries.
  std::vector<std::string> extraEnv;
};

// Throws Error when the program cannot be started (not found, not executable): the
// message names the program. A non-zero exit is not an exception: callers check it.
ProcessResult runProcess(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Whether `program` (a name looked up in PATH, or a path) exists and is executable.
bool programAvailable(const std::string& program);

}  // namespace foldfarm::slurm
