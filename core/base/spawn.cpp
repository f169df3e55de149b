#include "core/base/spawn.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/base/error.hpp"

extern char** environ;

namespace foldfarm {
namespace {

// The name part of a NAME=value entry (with the '=').
std::string envKey(const std::string& kv) {
  return kv.substr(0, kv.find('=') + 1);
}

}  // namespace

Pipe makePipe(const std::string& what) {
  int fds[2];
  FF_CHECK_SYS(::pipe2(fds, O_CLOEXEC), "pipe2 for " + what);
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

std::string describeSignal(int sig) {
  const char* name = ::strsignal(sig);
  return "signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")";
}

std::string describeWaitStatus(int status) {
  if (WIFSIGNALED(status)) return describeSignal(WTERMSIG(status));
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  return "wait status " + std::to_string(status);
}

pid_t spawnProcess(const std::vector<std::string>& argv_in, const SpawnOptions& options) {
  if (argv_in.empty()) throw Error("spawnProcess: empty argv");
  const std::string what = options.what.empty() ? "'" + argv_in[0] + "'" : options.what;
  // Reports a chdir/exec failure (errno) from the child; closed by a successful exec.
  Pipe exec_error = makePipe("starting " + what);

  // Everything the child needs is prepared before fork: it may only call async-signal-safe
  // functions.
  std::vector<std::string> env_store;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    bool replaced = false;
    for (const auto& x : options.extraEnv) replaced = replaced || envKey(x) == envKey(kv);
    for (const auto& name : options.unsetEnv) replaced = replaced || name + "=" == envKey(kv);
    if (!replaced) env_store.push_back(kv);
  }
  for (const auto& e : options.extraEnv) env_store.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_store = argv_in;
  std::vector<char*> args;
  for (auto& a : arg_store) args.push_back(a.data());
  args.push_back(nullptr);
  const char* cwd = options.cwd.empty() ? nullptr : options.cwd.c_str();
  sigset_t mask;
  if (options.signalMask)
    mask = *options.signalMask;
  else
    sigemptyset(&mask);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  FF_CHECK_SYS(pid, "fork for starting " + what);
  if (pid == 0) {
    if (options.ownProcessGroup) ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    int source[3] = {
        options.stdinFd < 0 ? ::open("/dev/null", O_RDONLY | O_CLOEXEC) : options.stdinFd,
        options.stdoutFd, options.stderrFd};
    // A source that is another standard stream (this process started with one closed, and a
    // pipe took its number) moves above 2 first, so that no dup2 below closes a later source.
    for (int fd = 0; fd <= 2; ++fd)
      if (source[fd] >= 0 && source[fd] <= 2 && source[fd] != fd)
        source[fd] = ::fcntl(source[fd], F_DUPFD_CLOEXEC, 3);
    for (int fd = 0; fd <= 2; ++fd)
      if (source[fd] >= 0) ::dup2(source[fd], fd);
    // dup2 onto itself (a source that already was that stream) keeps its close-on-exec, and
    // the child would start without it.
    for (int fd = 0; fd <= 2; ++fd) ::fcntl(fd, F_SETFD, 0);
    ::sigprocmask(SIG_SETMASK, &mask, nullptr);
    if (options.defaultSignals)
      for (const int sig : {SIGUSR1, SIGTERM, SIGINT, SIGPIPE}) ::signal(sig, SIG_DFL);
    if (cwd == nullptr || ::chdir(cwd) == 0) ::execve(args[0], args.data(), envp.data());
    const int e = errno;
    const ssize_t n = ::write(exec_error.write.get(), &e, sizeof e);
    (void)n;
    ::_exit(127);
  }
  if (options.ownProcessGroup) ::setpgid(pid, pid);
  exec_error.write.reset();
  int exec_errno = 0;
  ssize_t n = 0;
  while ((n = ::read(exec_error.read.get(), &exec_errno, sizeof exec_errno)) == -1 &&
         errno == EINTR) {
  }
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {
    int st = 0;
    while (::waitpid(pid, &st, 0) == -1 && errno == EINTR) {
    }
    throw Error("cannot start " + what + (cwd ? std::string(" in ") + cwd : std::string()) + ": " +
                errnoMessage(exec_errno));
  }
  return pid;
}

}  // namespace foldfarm
