#pragma once
// Running a program as a child process from an explicit argv, never through a shell, and
// collecting its exit status, stdout and stderr. Every helper program foldfarm starts to
// wait for it (sbatch, squeue, scontrol, scancel, gnuplot, mpirun, this executable) goes
// through here, so no value a user typed is ever parsed by a shell on our side.
//
// Thread-safety: runProcess may be called from several threads; each call owns its pipes
// and its child and reaps the child before returning (also when it throws).
#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace foldfarm {

struct ProcessResult {
  std::vector<std::string> argv;
  int exitCode = -1;   // the exit status, or -1 when ended by a signal
  int termSignal = 0;  // the signal that ended it (0: exited normally)
  bool timedOut = false;
  std::string out;  // everything the child wrote to stdout
  std::string err;  // its stderr (the last 1 MiB), "" when passed through

  bool ok() const { return exitCode == 0; }
  // The exit status, or 128 + the signal number (as a shell reports it).
  int status() const { return termSignal != 0 ? 128 + termSignal : exitCode; }
  // "exit 3", "signal 9", "timed out (signal 15)".
  std::string describe() const;
  // "sbatch --parsable x.sh", for messages.
  std::string commandLine() const;
  // One line: the command, how it ended and the first line of stderr (or stdout).
  std::string describeFailure() const;
};

struct ProcessOptions {
  // > 0: the child gets SIGTERM when it runs longer than this, and SIGKILL 2 s later.
  std::chrono::milliseconds timeout{0};
  // NAME=value entries added to this process's environment (replacing a NAME it has).
  std::vector<std::string> extraEnv;
  // Names of this process's environment left out of the child's (the Slurm commands: a
  // user's SQUEUE_FORMAT or SBATCH_ACCOUNT must not change what foldfarm asked for).
  std::vector<std::string> unsetEnv;
  std::string cwd;            // "" = ours
  bool captureStderr = true;  // false: stderr passes through to ours
};

// Starts argv[0] (looked up on PATH when it has no '/'), waits for it and returns what it
// did. Throws Error naming the program when it cannot be started (not found, not
// executable, bad cwd); a non-zero exit is returned, not thrown: callers check it.
ProcessResult runProcess(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Peak resident memory of this process (VmHWM of /proc/self/status) in MiB; 0 where the
// system does not say.
double peakRssMB();

// Full path of `program` on PATH, or `program` itself when it contains '/' and is a regular file,
// executable; "" when absent.
std::string findProgram(const std::string& program);
inline bool programAvailable(const std::string& program) {
  return !findProgram(program).empty();
}

// A private temporary directory (mkdtemp under `parent`, by default the system temp
// directory), removed with its content on destruction unless released.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "foldfarm", const std::string& parent = "");
  ~TempDir() noexcept;
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Keeps the directory: returns its path, and the destructor leaves it.
  std::string release() { return std::exchange(path_, {}); }

 private:
  std::string path_;
};

}  // namespace foldfarm
