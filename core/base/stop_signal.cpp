#include "core/base/stop_signal.hpp"

#include <csignal>

#include <atomic>

#include "core/base/atomic_file.hpp"

namespace foldfarm {
namespace {

volatile std::sig_atomic_t g_signal = 0;
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "signal-safe flag needed");

extern "C" void onStopSignal(int signo) {
  if (signo == SIGINT && g_stop.load()) {
    removeLiveTemporaryFiles();  // the second Ctrl-C ends the process without unwinding
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
    return;
  }
  g_signal = signo;
  g_stop.store(true);
}

}  // namespace

void installStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  // A terminal's hang-up (a dropped ssh session with the run in the foreground) stops as
  // Slurm's SIGTERM does: state saved, instead of a death that saves nothing.
  sigaction(SIGHUP, &sa, nullptr);
}

bool stopRequested() noexcept {
  return g_stop.load();
}
int stopSignal() noexcept {
  return g_signal;
}
void requestStop(int signo) noexcept {
  g_signal = signo;
  g_stop.store(true);
}
void clearStopRequest() noexcept {
  g_signal = 0;
  g_stop.store(false);
}

}  // namespace foldfarm
