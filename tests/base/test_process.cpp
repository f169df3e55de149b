#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "core/base/atomic_file.hpp"
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

TEST(RunProcess, TimeoutEndsTheWholeProcessGroup) {
  TempDir tmp("ff_process");
  const std::string pidFile = tmp.path() + "/bg.pid";
  ProcessOptions o;
  o.timeout = 300ms;
  // The background sleep is a grandchild: signalling only the shell would leave it running.
  auto t0 = std::chrono::steady_clock::now();
  ProcessResult r = runProcess({"sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait"}, o);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(r.timedOut);
  EXPECT_LT(s, 10.0);
  pid_t bg = pidFrom(pidFile);
  ASSERT_GT(bg, 0);
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
