#pragma once
// Cooperative stop on SIGUSR1 / SIGTERM / SIGINT / SIGHUP (Slurm's --signal=B:USR1@grace, scancel,
// preemption, Ctrl-C). The handler only sets a flag; long work polls stopRequested() at
// safe points (between batches), saves its state and exits with kExitInterrupted.
// A second SIGINT (a second Ctrl-C: a second or more after the first) ends the process, so
// Ctrl-C twice always does; any other stop signal before or after the first SIGINT does not
// count as one (a worker that gets its orchestrator's SIGTERM and the terminal's SIGINT
// stops, saving its state).
//
// Thread-safety: every function may be called from any thread; the handler touches only
// lock-free atomics (and, on a second Ctrl-C, the live temporary files' list, which is
// async-signal-safe).
namespace foldfarm {

void installStopHandlers();
// SIGUSR1 (Slurm's --signal, the README's stop for mpirun) kept from the start of main, before
// a command installs its handlers: its default action ends the process, so a USR1 while
// LibTorch loaded ended a pretraining with 138, which a job script does not requeue. A command
// that stops on signals gets it as its stop when it installs its handlers (installStopHandlers:
// exit 75 at its first check); one that never does (bench, study, data) ignores it. Held
// across the front end's hand-over (heldSignalSet) until then.
void recordStopOnUsr1();
bool stopRequested() noexcept;
// The signal number that requested the stop (0: none).
int stopSignal() noexcept;
// Sets the flag (from any thread): a stop asked for in the process (0: a time limit) or as by
// signal `signo`. A signal's number already recorded is kept.
void requestStop(int signo = 0) noexcept;
// Clears the flag and the recorded signal (tests; a process that starts over).
void clearStopRequest() noexcept;
// Clears a stop that no signal asked for (a time limit's, once its task ended); false, the stop
// kept, when a signal asked for one, also one arriving meanwhile.
bool clearStopRequestUnlessSignalled() noexcept;

}  // namespace foldfarm
