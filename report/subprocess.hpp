#pragma once
// Running a helper program (gnuplot, mpirun, this executable) as a child process from an
// argv, never through a shell. stdout is captured into a string; stderr is captured too
// (last 64 KiB) or passed through to ours.
//
// Thread-safety: one call per thread; the child inherits this process's environment plus
// `env`.
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace foldfarm::report {

struct ProcessResult {
  int status = -1;          // exit code, or 128 + signal number when killed
  std::string out;          // everything the child wrote to stdout
  std::string err;          // the last 64 KiB of its stderr ("" when passed through)
  std::string describe() const;  // "exit 3" / "signal 9"
};

struct ProcessOptions {
  std::string cwd;                                         // "" = ours
  std::vector<std::pair<std::string, std::string>> env;   // added to / replacing ours
  bool capture_stderr = true;                             // false: stderr passes through
  double timeout_s = 0;                                   // > 0: SIGKILL after this long
};

// Starts argv[0] (looked up on PATH when it has no '/'), waits for it and returns what it
// did. Throws Error naming the program when it cannot be started (not found, not
// executable) or when a pipe fails; a non-zero exit status is returned, not thrown.
ProcessResult runProcess(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Whether `program` can be found (on PATH, or as given when it contains '/').
bool programAvailable(const std::string& program);
// Full path of `program` on PATH ("" when absent).
std::string findProgram(const std::string& program);

// A private temporary directory (mkdtemp), removed with its content on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "foldfarm-report");
  ~TempDir() noexcept;
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace foldfarm::report
