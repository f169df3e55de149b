#include "jobs/task_kind.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/fd.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/hash.hpp"
#include "core/base/process.hpp"
#include "core/base/spawn.hpp"
#include "core/base/stop_signal.hpp"
#include "jobs/task_lease.hpp"

namespace foldfarm::jobs {
namespace {

using nlohmann::json;

struct KindEntry {
  TaskRunner runner;
  TaskKindTraits traits;
};

std::map<std::string, KindEntry>& registry() {
  static std::map<std::string, KindEntry> r;
  return r;
}

// ---- noop -------------------------------------------------------------------------------
TaskOutcome runNoop(const json&, const std::string&) {
  return {};
}

// ---- sleep ------------------------------------------------------------------------------
void validateSleep(const json& p) {
  if (!p.contains("seconds") || !p["seconds"].is_number() ||
      !(p["seconds"].get<double>() >= 0 && p["seconds"].get<double>() <= kMaxSleepSeconds)) {
    throw InputError("the sleep task needs 'params.seconds', a number from 0 to 10^7");
  }
}

TaskOutcome runSleep(const json& p, const std::string&) {
  using clock = std::chrono::steady_clock;
  double seconds = p.at("seconds").get<double>();
  auto t0 = clock::now();
  auto end =
      t0 + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  while (clock::now() < end) {
    if (stopRequested()) {
      return {kTaskInterrupted,
              "stopped on request after " +
                  std::to_string(std::chrono::duration<double>(clock::now() - t0).count()) + " s",
              nullptr};
    }
    auto left = end - clock::now();
    std::this_thread::sleep_for(std::min<clock::duration>(left, std::chrono::milliseconds(20)));
  }
  return {kTaskDone, "", json{{"slept_s", seconds}}};
}

// ---- command ----------------------------------------------------------------------------
void validateCommand(const json& p) {
  if (!p.contains("argv") || !p["argv"].is_array() || p["argv"].empty()) {
    throw InputError(
        "the command task needs 'params.argv', a non-empty array of strings "
        "(run without a shell)");
  }
  for (const auto& a : p["argv"]) {
    if (!a.is_string()) throw InputError("'params.argv' must hold only strings");
  }
  // The lookup every program foldfarm starts goes through (an executable regular file; PATH
  // as execvp reads it): what validation accepts is what runs (before: a loop of its own that
  // took directories, and read an empty PATH entry otherwise).
  const std::string exe = p["argv"][0].get<std::string>();
  if (findProgram(exe).empty()) {
    if (exe.find('/') != std::string::npos)
      throw InputError("'params.argv[0]' = " + exe + " is not an executable file; fix the path");
    throw InputError("'params.argv[0]' = " + exe + " is not found on PATH; give its full path");
  }
}

// The command's supervisor, in the child the worker forked (only async-signal-safe calls, and
// sigwaitinfo, which glibc makes the bare system call; it never returns). It leads the command's
// process group, holds the attempt's lease, and runs the command in the group as its own child.
// When the worker dies (however: SIGKILL, the OOM killer) the supervisor is told by
// kSupervisorDeathSignal and ends the whole group, the processes the command started included: a
// process that closed the lease descriptor (Python's subprocess does by default) cannot outlive the
// attempt and run beside the next one. The signals the worker sends the group (SIGTERM to stop,
// SIGKILL) reach the command; the supervisor ignores SIGTERM, waits for the command and ends as it
// ended (its exit code, or the same signal). It takes the worker's death and the command's end
// synchronously (blocked, then sigwaitinfo), not in a handler: nothing can defer or interrupt them.
// Once the command is forked the supervisor closes `started_fd` (the write end of a pipe the
// worker reads): a stop signal sent to the group before then would reach only the supervisor,
// which ignores it, and the command forked after it would run on until the SIGKILL (before: a
// stop in those milliseconds was lost, and a short command finished after its orchestrator had
// died, only to be counted interrupted and run again). So the worker signals the group only once
// the command is in it.
constexpr int kSupervisorDeathSignal = SIGUSR2;

std::atomic<int> g_command_fork_delay_ms{0};  // setCommandForkDelayForTests

// Marks every descriptor from 3 up close-on-exec except `keep` (-1: none); async-signal-safe.
void inheritOnly(int keep) {
  bool marked = false;
#if defined(SYS_close_range) && defined(CLOSE_RANGE_CLOEXEC)
  marked = ::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == 0;
#endif
  if (!marked) {  // kernels before 5.11: one by one, up to the descriptor limit
    struct rlimit lim {};
    const rlim_t top = ::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY
                           ? std::min<rlim_t>(lim.rlim_cur, 1 << 20)
                           : 1 << 16;
    for (int fd = 3; fd < static_cast<int>(top); ++fd) {
      const int flags = ::fcntl(fd, F_GETFD);
      if (flags >= 0 && !(flags & FD_CLOEXEC)) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
  }
  if (keep >= 0) ::fcntl(keep, F_SETFD, 0);
}

[[noreturn]] void superviseCommand(char* const* argv, const char* dir, int log_fd, int lease_fd,
                                   int started_fd, pid_t worker, int fork_delay_ms) {
  ::setpgid(0, 0);
  // Blocked before the death signal is asked for: one sent from here on stays pending.
  sigset_t awaited;
  sigemptyset(&awaited);
  sigaddset(&awaited, kSupervisorDeathSignal);
  sigaddset(&awaited, SIGCHLD);
  ::sigprocmask(SIG_SETMASK, &awaited, nullptr);
  ::prctl(PR_SET_PDEATHSIG, kSupervisorDeathSignal);
  if (::getppid() != worker) ::_exit(126);
  if (::chdir(dir) != 0) ::_exit(126);
  ::dup2(log_fd, 1);
  ::dup2(log_fd, 2);
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) ::dup2(devnull, 0);
  for (int fd = 0; fd <= 2; ++fd) ::fcntl(fd, F_SETFD, 0);  // dup2 onto itself keeps the flag
  // The command gets stdin, stdout, stderr and the lease, nothing else: no descriptor the
  // worker, an MPI library or whoever started foldfarm left without close-on-exec (a pipe
  // a caller reads to its end, a socket), which a process the command leaves running would
  // keep open.
  inheritOnly(lease_fd);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP, SIGPIPE}) ::sigaction(sig, &ignore, nullptr);
  struct sigaction child_default {};  // not ignored: the command's end must be waitable
  child_default.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &child_default, nullptr);
  if (fork_delay_ms > 0) {
    struct timespec delay {
      fork_delay_ms / 1000, (fork_delay_ms % 1000) * 1000000L
    };
    while (::nanosleep(&delay, &delay) != 0 && errno == EINTR) {
    }
  }
  const pid_t supervisor = ::getpid();
  const pid_t command = ::fork();
  if (command < 0) ::_exit(126);
  if (command == 0) {
    // The command ends with its supervisor, should that be killed too.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != supervisor) ::_exit(126);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP, SIGPIPE, kSupervisorDeathSignal})
      ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(argv[0], argv);
    ::_exit(127);
  }
  ::close(started_fd);  // the command is in the group: the worker's stop signal reaches it
  int status = 0;
  for (;;) {
    siginfo_t info{};
    const int sig = ::sigwaitinfo(&awaited, &info);
    if (sig == kSupervisorDeathSignal) ::kill(0, SIGKILL);  // the worker died: the whole group
    if (sig == SIGCHLD || (sig < 0 && errno == EINTR)) {
      const pid_t ended = ::waitpid(command, &status, WNOHANG);
      if (ended == command) break;
      if (ended < 0 && errno != EINTR) ::_exit(126);
    } else if (sig < 0) {
      ::_exit(126);
    }
  }
  if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
  const int sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::raise(sig);
  ::_exit(128 + sig);
}

TaskOutcome runCommand(const json& p, const std::string& task_dir) {
  std::vector<std::string> args;
  for (const auto& a : p.at("argv")) args.push_back(a.get<std::string>());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string log_path = task_dir + "/task.log";
  Fd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, kNewFileMode));
  if (!log.valid()) throwSystemError("open", __FILE__, __LINE__, log_path);
  const int log_fd = log.get();
  const char* dir = task_dir.c_str();
  TaskLease* lease = currentTaskLease();
  const int lease_fd = lease ? lease->fd() : -1;
  // Closed by the supervisor once the command is forked (EOF here): see superviseCommand.
  Pipe started = makePipe("the command task's start");
  const int started_fd = started.write.get();
  const pid_t parent = ::getpid();
  const int fork_delay_ms = g_command_fork_delay_ms.load();
  pid_t pid = ::fork();
  if (pid < 0) throwSystemError("fork", __FILE__, __LINE__, "command task");
  if (pid == 0)
    superviseCommand(argv.data(), dir, log_fd, lease_fd, started_fd, parent, fork_delay_ms);
  log.reset();
  started.write.reset();
  ::fcntl(started.read.get(), F_SETFL, O_NONBLOCK);
  ::setpgid(pid, pid);  // also here, so that no signal below can miss the group
  if (lease) lease->setProcessGroup(pid);
  using clock = std::chrono::steady_clock;
  bool terminating = false;
  bool killed = false;  // SIGKILLed: no end within the grace after SIGTERM
  bool command_started = false;
  clock::time_point term_at;
  std::optional<clock::time_point> stop_seen_at;
  for (;;) {
    // Wait for the leader without reaping it: while it is a zombie its pid (the group's id)
    // cannot be reused, so the SIGKILL below reaches only what the command left behind.
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 &&
        errno != EINTR) {
      throwSystemError("waitid", __FILE__, __LINE__, "command task");
    }
    if (info.si_pid == pid) break;
    if (!command_started) {
      char byte = 0;
      const ssize_t n = ::read(started.read.get(), &byte, 1);
      command_started = n >= 0 || (errno != EAGAIN && errno != EINTR);  // EOF: forked
    }
    if (stopRequested() && !terminating) {
      if (!stop_seen_at) stop_seen_at = clock::now();
      // The command not forked 5 s after the stop (a supervisor stuck before it): the group
      // is ended as a command that ignored its SIGTERM would be.
      if (command_started || clock::now() - *stop_seen_at > std::chrono::seconds(5)) {
        ::kill(-pid, command_started ? SIGTERM : SIGKILL);
        terminating = true;
        killed = !command_started;
        term_at = clock::now();
      }
    }
    if (terminating && !killed && clock::now() - term_at > std::chrono::seconds(5)) {
      ::kill(-pid, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(terminating ? 20 : 5));
  }
  ::kill(-pid, SIGKILL);  // background processes of the command end with it
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throwSystemError("waitpid", __FILE__, __LINE__, "command task");
  }
  // Stopped: interrupted, and run again by its next attempt, whatever it exited with. A command
  // that exits 0 after the stop signal may have finished its work or given up cleanly (a
  // graceful-shutdown handler); foldfarm cannot tell, and taking a partial output as done
  // would lose work silently, while running a finished command again only repeats it
  // (README: commands are to be rerunnable).
  if (terminating)
    return {kTaskInterrupted,
            killed ? "command stopped on request: killed (SIGKILL), not ended within 5 s of "
                     "its SIGTERM"
                   : "command stopped on request: ended on its SIGTERM",
            nullptr};
  // A stop signal that reached the command itself as it reached this worker (Slurm's scancel
  // and preemption signal every process of the job; a terminal's Ctrl-C the foreground group)
  // before this loop passed the stop on: the command ended on the stop, as above, whatever it
  // exited with but 0 (before: "killed by signal 15", a failed attempt counted toward
  // retry.max_attempts). The worker's own signal may come a moment after the command's: it is
  // waited for a second when the command ended by one.
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGUSR1)
      for (int i = 0; i < 50 && !stopRequested(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (stopRequested() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    return {kTaskInterrupted,
            "command stopped on request: the stop reached it with this worker's (" +
                (WIFSIGNALED(status) ? "ended by " + describeSignal(WTERMSIG(status))
                                     : "exited with " + std::to_string(WEXITSTATUS(status))) +
                ")",
            nullptr};
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return {128 + sig, "command " + args[0] + " killed by " + describeSignal(sig),
            json{{"signal", sig}}};
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  if (code == 127) return {code, "command " + args[0] + " could not be executed", nullptr};
  TaskOutcome out{code,
                  code == 0 ? "" : "command " + args[0] + " exited with " + std::to_string(code),
                  json{{"exit_code", code}}};
  // A command's own 75 means "interrupted, rerun me"; 2 bad input: keep its meaning.
  return out;
}

// ---- load -------------------------------------------------------------------------------
void validateLoad(const json& p) {
  if (!p.contains("path") || !p["path"].is_string()) {
    throw InputError("the load task needs 'params.path', a file path");
  }
  const std::string path = p["path"].get<std::string>();
  if (!statPath(path).regular) {
    throw InputError("'params.path' = " + path + " does not exist; fix the path");
  }
}

TaskOutcome runLoad(const json& p, const std::string&) {
  using clock = std::chrono::steady_clock;
  std::string path = p.at("path").get<std::string>();
  bool cache = p.value("cache", true);
  auto t0 = clock::now();
  bool loaded = false;
  auto load = [&] {
    loaded = true;
    return std::make_shared<std::string>(readFile(path));
  };
  std::shared_ptr<std::string> bytes;
  if (cache) {
    // The version of the file as the other caches key it (size, ns time): a file rewritten
    // within the same second is read again. The worker keeps each file's latest version only
    // (NUL separates the path: no path holds one).
    const FileStat st = statPath(path);
    const std::string prefix = std::string("load") + '\0' + path + '\0';
    const std::string key = prefix + std::to_string(st.size) + ":" + std::to_string(st.mtime_ns);
    workerCache().dropOthers(prefix, key);
    bytes = workerCache().getOrLoad<std::string>(key, load);
  } else {
    bytes = load();
  }
  double load_s = std::chrono::duration<double>(clock::now() - t0).count();
  const uint64_t h = fnv1a(bytes->data(), bytes->size());  // proves the content was read
  return {kTaskDone, "",
          json{{"bytes", bytes->size()}, {"checksum", h}, {"loaded", loaded}, {"load_s", load_s}}};
}

}  // namespace

void setCommandForkDelayForTests(int ms) {
  g_command_fork_delay_ms.store(ms);
}

void registerTaskKind(const std::string& name, TaskRunner runner, TaskKindTraits traits) {
  registry()[name] = KindEntry{std::move(runner), std::move(traits)};
}

void registerTaskKind(const std::string& name,
                      std::function<int(const json&, const std::string&)> runner,
                      TaskKindTraits traits) {
  registerTaskKind(name,
                   TaskRunner([runner = std::move(runner)](const json& p, const std::string& dir) {
                     int code = runner(p, dir);
                     TaskOutcome o;
                     o.status = code;
                     if (code == kTaskInterrupted)
                       o.reason = "interrupted (exit 75)";
                     else if (code != 0)
                       o.reason = "task returned " + std::to_string(code);
                     return o;
                   }),
                   std::move(traits));
}

bool hasTaskKind(const std::string& name) {
  return registry().count(name) > 0;
}

std::vector<std::string> taskKindNames() {
  std::vector<std::string> names;
  for (const auto& [k, v] : registry()) names.push_back(k);
  return names;
}

const TaskKindTraits& taskKindTraits(const std::string& name) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    throw InputError("unknown task kind '" + name + "' (this executable knows " +
                     std::to_string(registry().size()) + " kinds)");
  }
  return it->second.traits;
}

TaskOutcome runTaskKind(const std::string& name, const json& params, const std::string& task_dir) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    return {kTaskBadInput, "unknown task kind '" + name + "' in this worker", nullptr};
  }
  try {
    return it->second.runner(params, task_dir);
  } catch (const InterruptedError& e) {
    return {kTaskInterrupted, e.what(), nullptr};
  } catch (const Error& e) {
    return {e.exitCode() == 0 ? 1 : e.exitCode(), e.what(), nullptr};
  } catch (const std::exception& e) {
    return {1, std::string("exception: ") + e.what(), nullptr};
  } catch (...) {
    return {1, "unknown exception", nullptr};
  }
}

void registerBuiltinTaskKinds() {
  using Keys = std::vector<std::string>;
  registerTaskKind("noop", TaskRunner(runNoop),
                   TaskKindTraits{false, nullptr, Keys{}, nullptr, nullptr, {}});
  registerTaskKind("sleep", TaskRunner(runSleep),
                   TaskKindTraits{true, validateSleep, Keys{"seconds"}, nullptr, nullptr, {}});
  registerTaskKind("command", TaskRunner(runCommand),
                   TaskKindTraits{true, validateCommand, Keys{"argv"}, nullptr, nullptr, {}});
  registerTaskKind(
      "load", TaskRunner(runLoad),
      TaskKindTraits{false, validateLoad, Keys{"path", "cache"}, nullptr, nullptr, {}});
}

void WorkerCache::dropOthers(const std::string& prefix, const std::string& keep) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.eraseIf(
      [&](const std::string& k) { return k != keep && k.compare(0, prefix.size(), prefix) == 0; });
}

void WorkerCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.clear();
}

size_t WorkerCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

WorkerCache& workerCache() {
  static WorkerCache c;
  return c;
}

}  // namespace foldfarm::jobs
