#include "core/base/stop_signal.hpp"

#include <csignal>
#include <ctime>

#include <atomic>
#include <cstdint>

#include "core/base/atomic_file.hpp"

namespace foldfarm {
namespace {

volatile std::sig_atomic_t g_signal = 0;
std::atomic<bool> g_stop{false};
// When the first SIGINT came (CLOCK_MONOTONIC ns; 0: none yet).
std::atomic<std::int64_t> g_first_sigint_ns{0};
static_assert(std::atomic<bool>::is_always_lock_free, "signal-safe flag needed");
static_assert(std::atomic<std::int64_t>::is_always_lock_free, "signal-safe time needed");

// A SIGINT this soon after the first is the same Ctrl-C delivered again (by `timeout`, a
// launcher that relays it), not a user's second one.
constexpr std::int64_t kSecondCtrlCNs = 1'000'000'000;

std::int64_t monotonicNs() noexcept {  // clock_gettime is async-signal-safe
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

extern "C" void onStopSignal(int signo) {
  if (signo == SIGINT) {
    const std::int64_t now = monotonicNs(), first = g_first_sigint_ns.load();
    if (first != 0 && now - first >= kSecondCtrlCNs) {
      removeLiveTemporaryFiles();  // the second Ctrl-C ends the process without unwinding
      std::signal(SIGINT, SIG_DFL);
      std::raise(SIGINT);
      return;
    }
    if (first == 0) g_first_sigint_ns.store(now);
    // Only a second Ctrl-C ends the process. Before: a SIGINT after any stop did, so the
    // terminal's Ctrl-C that reached a campaign's worker after its orchestrator's SIGTERM
    // killed it before it saved its task's state.
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
  g_first_sigint_ns.store(0);
}

}  // namespace foldfarm
