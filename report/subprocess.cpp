#include "report/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/base/error.hpp"
#include "core/base/log.hpp"

extern char** environ;

namespace foldfarm::report {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxStderr = 64 * 1024;

// One owner for a pipe's two ends.
struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() { FF_CHECK_SYS(::pipe2(fd, O_CLOEXEC), "pipe for a child process"); }
  ~Pipe() { closeAll(); }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  void closeEnd(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
  void closeAll() {
    closeEnd(0);
    closeEnd(1);
  }
};

// The child between fork and exec: only async-signal-safe calls.
[[noreturn]] void execChild(const std::vector<char*>& args, const std::vector<char*>& envp,
                            int out_w, int err_w, int err_pipe_w, const char* cwd) {
  ::dup2(out_w, 1);
  if (err_w >= 0) ::dup2(err_w, 2);
  int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0) ::dup2(devnull, 0);
  if (cwd && ::chdir(cwd) != 0) {
    int e = errno;
    ssize_t w = ::write(err_pipe_w, &e, sizeof e);
    (void)w;
    ::_exit(127);
  }
  ::execve(args[0], args.data(), envp.data());
  int e = errno;
  ssize_t w = ::write(err_pipe_w, &e, sizeof e);
  (void)w;
  ::_exit(127);
}

}  // namespace

std::string ProcessResult::describe() const {
  if (status > 128) return "signal " + std::to_string(status - 128);
  return "exit " + std::to_string(status);
}

std::string findProgram(const std::string& program) {
  if (program.empty()) return "";
  if (program.find('/') != std::string::npos)
    return ::access(program.c_str(), X_OK) == 0 ? program : "";
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string cand = dir + "/" + program;
    struct stat st {};
    if (::stat(cand.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(cand.c_str(), X_OK) == 0)
      return cand;
    start = end + 1;
  }
  return "";
}

bool programAvailable(const std::string& program) { return !findProgram(program).empty(); }

ProcessResult runProcess(const std::vector<std::string>& argv, const ProcessOptions& options) {
  if (argv.empty()) throw Error("runProcess: empty argv");
  const std::string exe = findProgram(argv[0]);
  if (exe.empty())
    throw Error(argv[0] + ": program not found on PATH; install it (scripts/setup.sh lists the "
                "packages)");
  Pipe out, err, exec_err;
  std::vector<std::string> args_s = argv;
  args_s[0] = exe;
  std::vector<char*> args;
  for (auto& a : args_s) args.push_back(a.data());
  args.push_back(nullptr);
  // The environment is prepared before fork: the child may only call async-signal-safe code.
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    bool replaced = false;
    for (const auto& [k, v] : options.env)
      if (kv.compare(0, k.size() + 1, k + "=") == 0) replaced = true;
    if (!replaced) env_s.push_back(kv);
  }
  for (const auto& [k, v] : options.env) env_s.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) throwSystemError("fork", __FILE__, __LINE__, "starting " + argv[0]);
  if (pid == 0) {
    execChild(args, envp, out.fd[1], options.capture_stderr ? err.fd[1] : -1, exec_err.fd[1],
              options.cwd.empty() ? nullptr : options.cwd.c_str());
  }
  out.closeEnd(1);
  err.closeEnd(1);
  exec_err.closeEnd(1);

  ProcessResult res;
  const auto start = std::chrono::steady_clock::now();
  bool killed = false;
  std::vector<pollfd> fds = {{out.fd[0], POLLIN, 0}};
  if (options.capture_stderr) fds.push_back({err.fd[0], POLLIN, 0});
  char buf[65536];
  size_t open_fds = fds.size();
  while (open_fds > 0) {
    int timeout_ms = -1;
    if (options.timeout_s > 0) {
      double left = options.timeout_s -
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (left <= 0 && !killed) {
        ::kill(pid, SIGKILL);
        killed = true;
      }
      timeout_ms = killed ? 1000 : static_cast<int>(left * 1000) + 1;
    }
    int rc = ::poll(fds.data(), fds.size(), timeout_ms);
    if (rc < 0) {
      if (errno == EINTR) continue;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      throwSystemError("poll", __FILE__, __LINE__, "reading the output of " + argv[0]);
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      if (i == 0) {
        res.out.append(buf, static_cast<size_t>(n));
      } else {
        res.err.append(buf, static_cast<size_t>(n));
        if (res.err.size() > 2 * kMaxStderr) res.err.erase(0, res.err.size() - kMaxStderr);
      }
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throwSystemError("waitpid", __FILE__, __LINE__, "waiting for " + argv[0]);
  }
  int exec_errno = 0;
  if (::read(exec_err.fd[0], &exec_errno, sizeof exec_errno) == sizeof exec_errno)
    throw Error("cannot start " + argv[0] + ": " + errnoMessage(exec_errno));
  if (res.err.size() > kMaxStderr) res.err.erase(0, res.err.size() - kMaxStderr);
  res.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (killed)
    res.err += "\n" + argv[0] + " killed after " + std::to_string(options.timeout_s) + " s";
  return res;
}

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    throwSystemError("mkdtemp", __FILE__, __LINE__, "creating a temporary directory " + tmpl);
  path_ = tmpl;
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }

TempDir::~TempDir() noexcept {
  if (path_.empty()) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
  if (ec) logWarn("could not remove {}: {}", path_, ec.message());
}

}  // namespace foldfarm::report
