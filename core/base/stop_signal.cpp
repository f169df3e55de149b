#include "core/base/stop_signal.hpp"

#include <csignal>
#include <ctime>

#include <atomic>
#include <cstdint>
#include <string>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"

namespace foldfarm {
namespace {

// Written by the handler (a signal's number) and read by any thread; a stop requested in the
// process (requestStop(0): a worker's time limit) leaves it 0 and never overwrites a signal's.
std::atomic<int> g_signal{0};
std::atomic<bool> g_stop{false};
static_assert(std::atomic<int>::is_always_lock_free, "signal-safe number needed");
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
  g_signal.store(signo);
  g_stop.store(true);
}

// A SIGUSR1 before the command installed its handlers (recordStopOnUsr1): kept for
// installStopHandlers, which makes it the stop; a command that never installs them ignores it.
std::atomic<bool> g_early_usr1{false};

extern "C" void onEarlyUsr1(int) {
  g_early_usr1.store(true);
}

}  // namespace

void installStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  // A terminal's hang-up (a dropped ssh session with the run in the foreground) stops as
  // Slurm's SIGTERM does: state saved, instead of a death that saves nothing.
  for (const int sig : {SIGUSR1, SIGTERM, SIGINT, SIGHUP})
    if (::sigaction(sig, &sa, nullptr) != 0)
      throwSystemError("sigaction", __FILE__, __LINE__,
                       "stop handler of signal " + std::to_string(sig));
  if (g_early_usr1.exchange(false)) requestStop(SIGUSR1);
}

void recordStopOnUsr1() {
  struct sigaction sa {};
  sa.sa_handler = onEarlyUsr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (::sigaction(SIGUSR1, &sa, nullptr) != 0)
    throwSystemError("sigaction", __FILE__, __LINE__, "stop handler of SIGUSR1");
}

bool stopRequested() noexcept {
  return g_stop.load();
}
int stopSignal() noexcept {
  return g_signal.load();
}
void requestStop(int signo) noexcept {
  // A number only where none is recorded: a signal that came first stays the reason (before:
  // a time limit's requestStop(0) erased a SIGTERM, and the worker went on to its next task).
  int none = 0;
  if (signo != 0) g_signal.compare_exchange_strong(none, signo);
  g_stop.store(true);
}
void clearStopRequest() noexcept {
  g_signal.store(0);
  g_stop.store(false);
  g_early_usr1.store(false);
  g_first_sigint_ns.store(0);
}
bool clearStopRequestUnlessSignalled() noexcept {
  if (g_signal.load() != 0) return false;
  g_stop.store(false);
  // A signal between the test and the store: its stop stands.
  if (g_signal.load() != 0) {
    g_stop.store(true);
    return false;
  }
  return true;
}

}  // namespace foldfarm
