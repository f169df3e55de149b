#include "jobs/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/spawn.hpp"

namespace foldfarm::jobs {

ChildProcess ChildProcess::spawn(const std::vector<std::string>& argv,
                                 const std::vector<std::pair<std::string, std::string>>& env) {
  if (argv.empty()) throw Error("ChildProcess::spawn: empty argv");
  // The child's ends close when the Pipes go out of scope.
  Pipe to_child = makePipe("the worker's stdin"), from_child = makePipe("the worker's stdout");
  SpawnOptions o;
  for (const auto& [k, v] : env) o.extraEnv.push_back(k + "=" + v);
  // The worker starts with its stop signals held: a Ctrl-C (the terminal's, to the whole
  // group) while it loads (LibTorch: seconds on a busy node) reaches its stop handler once it
  // has one, instead of killing it (kSignalsHeldEnv).
  o.extraEnv.push_back(signalsHeldValue());
  o.signalMask = heldSignalSet();
  o.defaultSignals = false;
  o.stdinFd = to_child.read.get();
  o.stdoutFd = from_child.write.get();  // stderr: ours
  o.what = "the worker '" + argv[0] + "'";
  ChildProcess c;
  c.pid_ = spawnProcess(argv, o);
  c.in_ = std::move(to_child.write);
  c.out_ = std::move(from_child.read);
  return c;
}

void ChildProcess::killAndReap() noexcept {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
}

ChildProcess::~ChildProcess() noexcept {
  in_.reset();
  out_.reset();
  if (pid_ > 0) {
    const pid_t pid = pid_;
    killAndReap();
    logDebug("killed and reaped worker {}", pid);
  }
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), in_(std::move(o.in_)), out_(std::move(o.out_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    in_.reset();
    out_.reset();
    killAndReap();
    pid_ = std::exchange(o.pid_, -1);
    in_ = std::move(o.in_);
    out_ = std::move(o.out_);
  }
  return *this;
}

void ChildProcess::closeStdin() {
  in_.reset();
}

void ChildProcess::signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

std::optional<int> ChildProcess::tryWait() {
  if (pid_ <= 0) return std::nullopt;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return st;
  }
  if (r < 0 && errno != EINTR) throwSystemError("waitpid", __FILE__, __LINE__, "worker");
  return std::nullopt;
}

int ChildProcess::wait() {
  if (pid_ <= 0) return 0;
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0) {
    if (errno != EINTR) throwSystemError("waitpid", __FILE__, __LINE__, "worker");
  }
  pid_ = -1;
  return st;
}

}  // namespace foldfarm::jobs
