// The cooperative stop (core/base/stop_signal.hpp) in a child process of its own: a stop
// signal sets the flag; a second Ctrl-C ends the process; a SIGINT after another stop signal,
// or the same Ctrl-C delivered again at once (by `timeout`, a launcher), does not.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <thread>

#include "core/base/stop_signal.hpp"

namespace foldfarm {
namespace {

// Runs `signals` in a child with the stop handlers installed; its wait status. The child
// exits 0 when it is still alive after them with a stop requested, 1 without one.
int statusAfter(const std::function<void()>& signals) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    installStopHandlers();
    signals();
    ::_exit(stopRequested() ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

bool endedBySigint(int status) {
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGINT;
}
bool stoppedAlive(int status) {
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(StopSignal, OnlyASecondCtrlCEndsTheProcess) {
  // A campaign worker: its orchestrator's SIGTERM, then the terminal's Ctrl-C (before: it
  // died of the SIGINT before it saved its task's state).
  EXPECT_TRUE(stoppedAlive(statusAfter([] {
    std::raise(SIGTERM);
    std::raise(SIGINT);
  })));
  EXPECT_TRUE(stoppedAlive(statusAfter([] {
    std::raise(SIGUSR1);
    std::raise(SIGHUP);
    std::raise(SIGINT);
  })));
  // The same Ctrl-C delivered again at once.
  EXPECT_TRUE(stoppedAlive(statusAfter([] {
    std::raise(SIGINT);
    std::raise(SIGINT);
  })));
  // A user's second Ctrl-C, a while after the first: the process ends by it.
  EXPECT_TRUE(endedBySigint(statusAfter([] {
    std::raise(SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    std::raise(SIGINT);
  })));
  EXPECT_TRUE(endedBySigint(statusAfter([] {
    std::raise(SIGTERM);
    std::raise(SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    std::raise(SIGINT);
  })));
  // A cleared request (an in-process worker's next task) starts the count again.
  EXPECT_TRUE(stoppedAlive(statusAfter([] {
    std::raise(SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    clearStopRequest();
    std::raise(SIGINT);
  })));
}

// A worker's time limit asks its task to stop (requestStop(0)) and, the task ended, clears that
// stop to run the next one. A SIGTERM (Slurm's, the orchestrator's) before or meanwhile keeps
// its number and its stop (before: requestStop(0) wrote 0 over it, and the worker cleared the
// stop and went on running queued tasks).
TEST(StopSignal, ATimeLimitsStopNeverErasesASignalsStop) {
  EXPECT_TRUE(stoppedAlive(statusAfter([] {
    std::raise(SIGTERM);
    requestStop(0);
    if (stopSignal() != SIGTERM) ::_exit(2);
    if (clearStopRequestUnlessSignalled()) ::_exit(3);
  })));
  EXPECT_TRUE(stoppedAlive(statusAfter([] {
    requestStop(0);
    std::raise(SIGTERM);
    if (stopSignal() != SIGTERM) ::_exit(2);
    if (clearStopRequestUnlessSignalled()) ::_exit(3);
  })));
  // No signal: the time limit's stop is cleared (the child then has none: exit 1).
  const int status = statusAfter([] {
    requestStop(0);
    if (stopSignal() != 0 || !stopRequested()) ::_exit(2);
    if (!clearStopRequestUnlessSignalled()) ::_exit(3);
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  // A number given in the process is recorded where none is, and kept over a later one.
  EXPECT_TRUE(stoppedAlive(statusAfter([] {
    requestStop(SIGUSR1);
    requestStop(SIGTERM);
    if (stopSignal() != SIGUSR1) ::_exit(2);
  })));
}

}  // namespace
}  // namespace foldfarm
