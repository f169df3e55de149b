#include "jobs/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"

extern char** environ;

namespace foldfarm::jobs {

std::string describeWaitStatus(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")";
  }
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  return "wait status " + std::to_string(status);
}

ChildProcess ChildProcess::spawn(const std::vector<std::string>& argv_in,
                                 const std::vector<std::pair<std::string, std::string>>& env) {
  if (argv_in.empty()) throw Error("ChildProcess::spawn: empty argv");
  // [0] read end, [1] write end; closed on every way out unless handed to the ChildProcess.
  Fd to_child[2], from_child[2];
  auto makePipe = [](Fd(&ends)[2], const char* what) {
    int fds[2];
    FF_CHECK_SYS(::pipe2(fds, O_CLOEXEC), what);
    ends[0].reset(fds[0]);
    ends[1].reset(fds[1]);
  };
  makePipe(to_child, "pipe to worker");
  makePipe(from_child, "pipe from worker");
  // Reports a failed exec (its errno) from the child; closed by a successful exec (before: a
  // worker that could not be started showed only as "exit 127").
  Fd exec_error[2];
  makePipe(exec_error, "pipe for the worker's exec error");
  // Everything the child needs is built before fork: only async-signal-safe calls after.
  std::vector<std::string> args = argv_in;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    bool overridden = false;
    for (const auto& [k, v] : env) overridden |= (k == key);
    if (!overridden) envs.push_back(kv);
  }
  for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
  // The worker starts with its stop signals held: a Ctrl-C (the terminal's, to the whole
  // group) while it loads (LibTorch: seconds on a busy node) reaches its stop handler once it
  // has one, instead of killing it (kSignalsHeldEnv).
  envs.push_back(std::string(kSignalsHeldEnv) + "=1");
  const sigset_t held = heldSignalSet();
  std::vector<char*> envp;
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) throwSystemError("fork", __FILE__, __LINE__, "worker process");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);
    ::dup2(to_child[0].get(), 0);
    ::dup2(from_child[1].get(), 1);
    // A pipe end that is already 0 or 1 (foldfarm started with stdin or stdout closed): dup2
    // onto itself keeps its close-on-exec, and the worker would start without it.
    ::fcntl(0, F_SETFD, 0);
    ::fcntl(1, F_SETFD, 0);
    ::sigprocmask(SIG_SETMASK, &held, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    const int e = errno;
    const ssize_t n = ::write(exec_error[1].get(), &e, sizeof e);
    (void)n;
    ::_exit(127);
  }
  ChildProcess c;  // the child's ends close here, when the Fds go out of scope
  c.pid_ = pid;
  c.in_ = std::move(to_child[1]);
  c.out_ = std::move(from_child[0]);
  exec_error[1].reset();
  int exec_errno = 0;
  ssize_t got = 0;
  while ((got = ::read(exec_error[0].get(), &exec_errno, sizeof exec_errno)) == -1 &&
         errno == EINTR) {
  }
  if (got == static_cast<ssize_t>(sizeof exec_errno)) {
    c.killAndReap();
    throw Error("cannot start the worker '" + argv_in[0] + "': " + errnoMessage(exec_errno));
  }
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
