#include "slurm/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/base/error.hpp"
#include "core/base/log.hpp"

extern char** environ;

namespace foldfarm::slurm {
namespace {

// One owner per file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() noexcept { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  int get() const { return fd_; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read, write;
};

Pipe makePipe() {
  int fds[2];
  FF_CHECK_SYS(::pipe2(fds, O_CLOEXEC), "pipe2 for a child process");
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

// A started child that is always reaped: the destructor kills and reaps it if the caller
// left early through an exception.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  ~Child() noexcept {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      while (::waitpid(pid_, &st, 0) == -1 && errno == EINTR) {
      }
      logWarn("killed child process {} after an error", pid_);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  // Blocks until the child exits; returns its wait status.
  int reap() {
    int st = 0;
    while (::waitpid(pid_, &st, 0) == -1) {
      if (errno != EINTR) throwSystemError("waitpid", __FILE__, __LINE__, "child process");
    }
    pid_ = -1;
    return st;
  }

 private:
  pid_t pid_;
};

}  // namespace

std::string ProcessResult::commandLine() const {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

std::string ProcessResult::describeFailure() const {
  std::string why;
  if (timedOut) why = "timed out";
  else if (termSignal) why = std::string("killed by signal ") + std::to_string(termSignal);
  else why = "exited with status " + std::to_string(exitCode);
  std::string first = err.substr(0, err.find('\n'));
  if (first.empty()) first = out.substr(0, out.find('\n'));
  if (!first.empty()) why += ": " + first;
  return "'" + commandLine() + "' " + why;
}

bool programAvailable(const std::string& program) {
  if (program.empty()) return false;
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string full = dir + "/" + program;
    struct stat sb;
    if (::stat(full.c_str(), &sb) == 0 && S_ISREG(sb.st_mode) && ::access(full.c_str(), X_OK) == 0) {
      return true;
    }
    start = end + 1;
  }
  return false;
}

ProcessResult runProcess(const std::vector<std::string>& argv, const ProcessOptions& options) {
  if (argv.empty()) throw Error("runProcess: empty argv");
  ProcessResult result;
  result.argv = argv;

  Pipe outPipe = makePipe();
  Pipe errPipe = makePipe();
  // Reports an exec failure (errno) from the child; closed on a successful exec.
  Pipe execPipe = makePipe();

  std::vector<std::string> envStore;
  for (char** e = environ; e && *e; ++e) envStore.emplace_back(*e);
  for (const auto& e : options.extraEnv) envStore.push_back(e);
  std::vector<char*> envp;
  for (auto& e : envStore) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argStore = argv;
  std::vector<char*> args;
  for (auto& a : argStore) args.push_back(a.data());
  args.push_back(nullptr);

  pid_t pid = ::fork();
  FF_CHECK_SYS(pid, "fork for '" + argv[0] + "'");
  if (pid == 0) {
    // Child: only async-signal-safe calls from here on.
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(outPipe.write.get(), STDOUT_FILENO);
    ::dup2(errPipe.write.get(), STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGUSR1, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::execvpe(args[0], args.data(), envp.data());
    int e = errno;
    ssize_t n = ::write(execPipe.write.get(), &e, sizeof e);
    (void)n;
    ::_exit(127);
  }
  Child child(pid);
  outPipe.write.reset();
  errPipe.write.reset();
  execPipe.write.reset();

  int execErrno = 0;
  ssize_t n;
  while ((n = ::read(execPipe.read.get(), &execErrno, sizeof execErrno)) == -1 && errno == EINTR) {
  }
  if (n == static_cast<ssize_t>(sizeof execErrno)) {
    child.reap();
    throw Error("cannot run '" + argv[0] + "': " + errnoMessage(execErrno) +
                " (is it installed and in PATH?)");
  }

  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  bool termSent = false;
  auto killAt = std::chrono::steady_clock::time_point::max();
  pollfd fds[2] = {{outPipe.read.get(), POLLIN, 0}, {errPipe.read.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open = 2;
  char buf[8192];
  while (open > 0) {
    auto now = std::chrono::steady_clock::now();
    if (!termSent && now >= deadline) {
      ::kill(pid, SIGTERM);
      termSent = true;
      result.timedOut = true;
      killAt = now + std::chrono::seconds(2);
    }
    if (termSent && now >= killAt) {
      ::kill(pid, SIGKILL);
      killAt = std::chrono::steady_clock::time_point::max();
    }
    int waitMs = 200;
    int r = ::poll(fds, 2, waitMs);
    if (r == -1) {
      if (errno == EINTR) continue;
      throwSystemError("poll", __FILE__, __LINE__, "output of '" + argv[0] + "'");
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<size_t>(got));
      } else if (got == 0 || (got == -1 && errno != EINTR && errno != EAGAIN)) {
        fds[i].fd = -1;
        --open;
      }
    }
  }
  int st = child.reap();
  if (WIFEXITED(st)) {
    result.exitCode = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    result.termSignal = WTERMSIG(st);
  }
  return result;
}

}  // namespace foldfarm::slurm
