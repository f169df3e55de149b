#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/process.hpp"

using namespace foldfarm;
using namespace std::chrono_literals;

namespace {

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

// The pid a child wrote into `path`, waiting for it to appear.
pid_t pidFrom(const std::string& path) {
  for (int i = 0; i < 200; ++i) {
    try {
      std::string s = readFile(path);
      if (!s.empty() && s.back() == '\n') return static_cast<pid_t>(std::stol(s));
    } catch (...) {
    }
    std::this_thread::sleep_for(10ms);
  }
  return -1;
}

}  // namespace

// The background sleep is a grandchild: signalling only the shell would leave it running. A try
// whose timeout ended the shell before it wrote the sleep's pid (a machine slow to start it)
// shows nothing either way: it is made again with a longer timeout.
TEST(RunProcess, TimeoutEndsTheWholeProcessGroup) {
  TempDir tmp("ff_process");
  const std::string pidFile = tmp.path() + "/bg.pid";
  pid_t bg = -1;
  for (const auto timeout : {300ms, 2000ms, 8000ms}) {
    SCOPED_TRACE("timeout " + std::to_string(timeout.count()) + " ms");
    ProcessOptions o;
    o.timeout = timeout;
    auto t0 = std::chrono::steady_clock::now();
    ProcessResult r = runProcess({"sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait"}, o);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_TRUE(r.timedOut);
    // Not the 30 s of the sleep: the group's TERM (then KILL 2 s on) ends it.
    EXPECT_LT(s, std::chrono::duration<double>(timeout).count() + 10.0);
    bg = pidFrom(pidFile);
    if (bg > 0) break;
  }
  ASSERT_GT(bg, 0) << "the shell never wrote the sleep's pid";
  for (int i = 0; i < 100 && alive(bg); ++i) std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(alive(bg)) << "the grandchild of a timed-out command survived";
}

TEST(RunProcess, TimeoutDoesNotWaitForDescendantsThatLeftTheGroup) {
  TempDir tmp("ff_process");
  const std::string pidFile = tmp.path() + "/escaped.pid";
  ProcessOptions o;
  o.timeout = 300ms;
  // setsid puts the sleep in a session of its own: it keeps our stdout pipe open and the
  // group's signals do not reach it. runProcess must still return soon after the timeout.
  auto t0 = std::chrono::steady_clock::now();
  ProcessResult r = runProcess(
      {"sh", "-c", "setsid sh -c 'echo $$ > " + pidFile + "; exec sleep 30' & sleep 30"}, o);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(r.timedOut);
  EXPECT_LT(s, 10.0) << "runProcess waited for every writer of the pipe";
  pid_t escaped = pidFrom(pidFile);
  if (escaped > 0) ::kill(escaped, SIGKILL);
}

TEST(RunProcess, ExitStatusAndOutput) {
  ProcessResult r = runProcess({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.exitCode, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_FALSE(r.timedOut);
}

// The child gets its standard streams and what this process passes on (descriptors without
// close-on-exec), nothing runProcess opened for itself: before, every child (sbatch, squeue,
// ...) held a second /dev/null.
TEST(RunProcess, PassesNoDescriptorOfItsOwn) {
  std::set<int> passed{0, 1, 2};
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::stoi(e.path().filename().string());
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0 && !(flags & FD_CLOEXEC)) passed.insert(fd);
  }
  const ProcessResult r = runProcess({"/bin/ls", "-l", "/proc/self/fd"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  std::set<int> seen;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const auto arrow = line.find(" -> ");
    if (arrow == std::string::npos) continue;
    const int fd = std::stoi(line.substr(line.rfind(' ', arrow - 1) + 1));
    const std::string target = line.substr(arrow + 4);
    seen.insert(fd);
    const bool own_listing = target.rfind("/proc/", 0) == 0 && target.size() > 3 &&
                             target.compare(target.size() - 3, 3, "/fd") == 0;
    EXPECT_TRUE(passed.count(fd) || own_listing) << "descriptor " << fd << " -> " << target << "\n"
                                                 << r.out;
  }
  EXPECT_EQ(seen.count(0) + seen.count(1) + seen.count(2), 3u) << r.out;
}

// A process started with its standard streams closed (a daemon, a job step's odd launcher)
// still runs helper programs: the pipes then take the numbers 0, 1 and 2, and the child gets
// its output pipes as 1 and 2 and /dev/null as 0. A program that cannot start is named.
TEST(RunProcess, ClosedStandardStreamsAreNoObstacleAndAFailedStartIsNamed) {
  try {
    ProcessOptions o;
    o.cwd = "/nonexistent-dir";
    runProcess({"/bin/true"}, o);
    ADD_FAILURE() << "started in a directory that does not exist";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "cannot start '/bin/true' in /nonexistent-dir: No such file or directory"),
              std::string::npos)
        << e.what();
  }
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(report[0]);
    ::close(0);
    ::close(1);
    ::close(2);
    std::string got;
    try {
      const ProcessResult r = runProcess({"sh", "-c", "cat; echo out; echo err >&2; exit 4"});
      got = std::to_string(r.exitCode) + "|" + r.out + "|" + r.err;
    } catch (const std::exception& e) {
      got = std::string("threw: ") + e.what();
    }
    const ssize_t n = ::write(report[1], got.data(), got.size());
    ::_exit(n == static_cast<ssize_t>(got.size()) ? 0 : 1);
  }
  ::close(report[1]);
  std::string got;
  char buf[256];
  for (ssize_t n; (n = ::read(report[0], buf, sizeof buf)) > 0;)
    got.append(buf, static_cast<size_t>(n));
  ::close(report[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(got, "4|out\n|err\n");
}
