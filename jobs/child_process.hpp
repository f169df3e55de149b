#pragma once
// ChildProcess: one owner for a child process and the two pipes to it (its stdin, its
// stdout); stderr is inherited. The destructor kills (SIGKILL) and reaps a child that is
// still running, logging instead of throwing.
#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/fd.hpp"

namespace foldfarm::jobs {

class ChildProcess {
 public:
  ChildProcess() = default;
  // Starts argv (argv[0] a path, no shell; spawnProcess) with `env` added to this process's
  // environment, its stdin and stdout pipes to us, its stop signals held. The child gets
  // SIGTERM when this process dies (PR_SET_PDEATHSIG). Throws Error naming the worker and why
  // when it cannot be started.
  static ChildProcess spawn(const std::vector<std::string>& argv,
                            const std::vector<std::pair<std::string, std::string>>& env);
  ~ChildProcess() noexcept;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  int stdinFd() const { return in_.get(); }    // write end: frames to the child
  int stdoutFd() const { return out_.get(); }  // read end: frames from the child
  bool running() const { return pid_ > 0; }
  void closeStdin();
  void signal(int sig);
  // Reaps without blocking; returns the wait status when the child has ended.
  std::optional<int> tryWait();
  int wait();

 private:
  void killAndReap() noexcept;
  pid_t pid_ = -1;
  Fd in_;
  Fd out_;
};

}  // namespace foldfarm::jobs
