#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
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
