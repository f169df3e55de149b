#include "core/base/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fstream>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/base/error.hpp"
#include "core/base/fd.hpp"
#include "core/base/log.hpp"
#include "core/base/spawn.hpp"

namespace foldfarm {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxStderr = 1 << 20;

// A started child that is always reaped: the destructor kills and reaps it when the
// caller leaves early through an exception.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  ~Child() noexcept {
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);  // its process group: what it started goes with it
      int st = 0;
      while (::waitpid(pid_, &st, 0) == -1 && errno == EINTR) {
      }
      logWarn("killed child process {} after an error", pid_);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // Blocks until the child exits; returns its wait status.
  int reap() {
    int st = 0;
    while (::waitpid(pid_, &st, 0) == -1) {
      if (errno != EINTR) throwSystemError("waitpid", __FILE__, __LINE__, "child process");
    }
    pid_ = -1;
    return st;
  }
  // Whether the child has exited, without reaping it (its pid, and so its process group,
  // stay reserved until reap()).
  bool exited() const {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
      return false;
    return info.si_pid == pid_;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

}  // namespace

std::string ProcessResult::describe() const {
  if (timedOut) return "timed out (signal " + std::to_string(termSignal) + ")";
  if (termSignal != 0) return describeSignal(termSignal);
  return "exit " + std::to_string(exitCode);
}

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
  if (timedOut)
    why = "timed out";
  else if (termSignal)
    why = "killed by " + describeSignal(termSignal);
  else
    why = "exited with status " + std::to_string(exitCode);
  std::string first = err.substr(0, err.find('\n'));
  if (first.empty()) first = out.substr(0, out.find('\n'));
  if (!first.empty()) why += ": " + first;
  return "'" + commandLine() + "' " + why;
}

namespace {

bool executableFile(const std::string& path) {
  struct stat sb {};
  return ::stat(path.c_str(), &sb) == 0 && S_ISREG(sb.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

}  // namespace

std::string findProgram(const std::string& program) {
  if (program.empty()) return "";
  if (program.find('/') != std::string::npos) return executableFile(program) ? program : "";
  const char* path = std::getenv("PATH");
  const std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (dir.empty()) dir = ".";
    const std::string full = dir + "/" + program;
    if (executableFile(full)) return full;
    start = end + 1;
  }
  return "";
}

ProcessResult runProcess(const std::vector<std::string>& argv, const ProcessOptions& options) {
  if (argv.empty()) throw Error("runProcess: empty argv");
  const std::string exe = findProgram(argv[0]);
  if (exe.empty())
    throw Error("cannot run '" + argv[0] +
                "': not found or not executable (is it installed and in "
                "PATH? scripts/setup.sh lists the packages)");
  ProcessResult result;
  result.argv = argv;

  Pipe outPipe = makePipe("the stdout of '" + argv[0] + "'");
  Pipe errPipe = makePipe("the stderr of '" + argv[0] + "'");
  SpawnOptions so;
  so.extraEnv = options.extraEnv;
  so.unsetEnv = options.unsetEnv;
  so.cwd = options.cwd;
  so.stdoutFd = outPipe.write.get();
  so.stderrFd = options.captureStderr ? errPipe.write.get() : -1;
  // Its own process group, so that a timeout ends everything it started.
  so.ownProcessGroup = true;
  so.what = "'" + argv[0] + "'";
  std::vector<std::string> args = argv;
  args[0] = exe;
  const pid_t pid = spawnProcess(args, so);
  Child child(pid);
  outPipe.write.reset();
  errPipe.write.reset();

  const bool limited = options.timeout.count() > 0;
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  bool termSent = false;
  auto killAt = std::chrono::steady_clock::time_point::max();
  pollfd fds[2] = {{outPipe.read.get(), POLLIN, 0},
                   {options.captureStderr ? errPipe.read.get() : -1, POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open = options.captureStderr ? 2 : 1;
  char buf[65536];
  // After a timeout: once the child itself has ended, descendants that left its process
  // group (and so escaped the signals) may still hold the pipes; stop reading after this.
  auto abandonAt = std::chrono::steady_clock::time_point::max();
  while (open > 0) {
    const auto now = std::chrono::steady_clock::now();
    if (limited && !termSent && now >= deadline) {
      ::kill(-pid, SIGTERM);
      termSent = true;
      result.timedOut = true;
      killAt = now + std::chrono::seconds(2);
    }
    if (termSent && now >= killAt) {
      ::kill(-pid, SIGKILL);
      killAt = std::chrono::steady_clock::time_point::max();
    }
    if (termSent && abandonAt == std::chrono::steady_clock::time_point::max() && child.exited()) {
      abandonAt = now + std::chrono::seconds(2);
    }
    if (now >= abandonAt) {
      logWarn("'{}' timed out; giving up on output still held open by its descendants", argv[0]);
      break;
    }
    const int r = ::poll(fds, 2, limited ? 200 : -1);
    if (r == -1) {
      if (errno == EINTR) continue;
      throwSystemError("poll", __FILE__, __LINE__, "output of '" + argv[0] + "'");
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<size_t>(got));
        if (i == 1 && result.err.size() > 2 * kMaxStderr)
          result.err.erase(0, result.err.size() - kMaxStderr);
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        fds[i].fd = -1;
        --open;
      }
    }
  }
  const int st = child.reap();
  if (result.err.size() > kMaxStderr) result.err.erase(0, result.err.size() - kMaxStderr);
  if (WIFEXITED(st))
    result.exitCode = WEXITSTATUS(st);
  else if (WIFSIGNALED(st))
    result.termSignal = WTERMSIG(st);
  return result;
}

TempDir::TempDir(const std::string& prefix, const std::string& parent) {
  // TMPDIR names where temporaries go (a job's scratch directory, gone in a later shell):
  // a problem with it is said as such (before: "internal error: filesystem error:
  // temp_directory_path", or "mkdtemp failed at core/base/process.cpp:276").
  const char* tmpdir = parent.empty() ? std::getenv("TMPDIR") : nullptr;
  // Set but empty (`TMPDIR=`): as unset, /tmp.
  const bool empty_tmpdir = tmpdir != nullptr && *tmpdir == '\0';
  const std::string which =
      tmpdir && *tmpdir ? "TMPDIR=" + std::string(tmpdir) : std::string("the temporary directory");
  fs::path where = parent;
  if (parent.empty() && empty_tmpdir) {
    where = "/tmp";
  } else if (parent.empty()) {
    std::error_code ec;
    where = fs::temp_directory_path(ec);
    if (ec)
      throw Error(which + ": " + ec.message() +
                  "; point TMPDIR at a directory you can write (or unset it for /tmp)");
  }
  std::string tmpl = (where / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    const int err = errno;
    if (parent.empty())
      throw Error(which + ": cannot create a temporary directory in it (" + errnoMessage(err) +
                  "); point TMPDIR at a directory you can write (or unset it for /tmp)");
    errno = err;
    throwSystemError("mkdtemp", __FILE__, __LINE__, "creating a temporary directory " + tmpl);
  }
  path_ = tmpl;
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

TempDir::~TempDir() noexcept {
  if (path_.empty()) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
  if (ec) logWarn("could not remove {}: {}", path_, ec.message());
}

double peakRssMB() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

}  // namespace foldfarm
